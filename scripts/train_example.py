#!/usr/bin/env python
"""Worked example: train gradient-boosted classifiers on a jettracks ML dataset.

Two tasks, each only where the dataset holds both classes:

- ``b_vs_light``: b jets (flavour == "b") against light jets ("uds", "g"), among
  the jets of non-signal datasets;
- ``llp_vs_qcd``: jets of signal datasets (``is_signal``) against the rest.

Features are jet-level summaries of the tracks (counts, max/median |dxy| in cm,
counts above dxy-significance thresholds) plus jet pT/η, and the padded
per-track |dxy| significances where the dataset has them. scikit-learn's
``HistGradientBoostingClassifier`` (no download), trained on ``split == train``
and evaluated on ``split == test``. Writes ``roc_<task>.png`` (ROC with AUC),
``confusion_<task>.png``, ``importance_<task>.png`` (permutation importance) and
``metrics.json``.

    python scripts/train_example.py outputs/demo/ml --out outputs/demo/train
    python scripts/train_example.py DIR --shuffle-labels   # control: AUC must fall to ~0.5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SUMMARY_FEATURES = [
    "jet_pt", "jet_eta", "n_tracks", "n_tracks_valid_dxy", "max_abs_dxy", "median_abs_dxy",
    "n_tracks_sig_gt_2", "n_tracks_sig_gt_3", "n_tracks_sig_gt_5",
]


def load(ml_dir: Path):
    """The per-jet table as pandas (list columns dropped, padded significance unrolled)."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(ml_dir), format="parquet", exclude_invalid_files=True).to_table()
    cols = [c for c in table.column_names if c in SUMMARY_FEATURES or c in ("flavour", "is_signal", "split", "dataset")]
    df = table.select(cols).to_pandas()
    if "pad_track_dxy_sig" in table.column_names:
        pad = np.stack(table.column("pad_track_dxy_sig").to_numpy(zero_copy_only=False))
        for i in range(pad.shape[1]):
            df[f"abs_dxy_sig_{i}"] = np.abs(pad[:, i])
    return df


def tasks(df):
    out = {}
    background = ~df["is_signal"] if "is_signal" in df else True  # flavour task on SM jets only
    light = df["flavour"].isin(["uds", "g"]) & background
    b = (df["flavour"] == "b") & background
    if b.any() and light.any():
        sel = b | light
        out["b_vs_light"] = (sel.to_numpy(), b[sel].to_numpy().astype(int))
    if "is_signal" in df and df["is_signal"].any() and (~df["is_signal"]).any():
        sel = np.ones(len(df), dtype=bool)
        out["llp_vs_qcd"] = (sel, df["is_signal"].to_numpy().astype(int))
    return out


def train_task(name, df, sel, y, features, out_dir: Path, *, shuffle_labels: bool, seed: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

    sub = df[sel].reset_index(drop=True)
    X = sub[features].to_numpy(dtype=np.float64)
    if shuffle_labels:
        y = np.random.default_rng(seed).permutation(y)
    train = (sub["split"] == "train").to_numpy()
    test = (sub["split"] == "test").to_numpy()
    if len(np.unique(y[train])) < 2 or len(np.unique(y[test])) < 2:
        return {"skipped": "one class only in train or test"}
    clf = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, random_state=seed)
    clf.fit(X[train], y[train])
    score = clf.predict_proba(X[test])[:, 1]
    auc = float(roc_auc_score(y[test], score))
    fpr, tpr, _ = roc_curve(y[test], score)

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.plot(fpr, tpr, label=f"HistGradientBoosting (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="random (AUC = 0.5)")
    ax.set_xlabel("False positive rate (background efficiency)")
    ax.set_ylabel("True positive rate (signal efficiency)")
    ax.set_title(name.replace("_", " "))
    ax.legend(loc="lower right")
    fig.savefig(out_dir / f"roc_{name}.png", dpi=80)
    plt.close(fig)

    cm = confusion_matrix(y[test], (score > 0.5).astype(int))
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v:,}", ha="center", va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks([0, 1])
    ax.set_yticks([0, 1])
    fig.savefig(out_dir / f"confusion_{name}.png", dpi=80)
    plt.close(fig)

    n_imp = min(int(test.sum()), 5000)
    imp = permutation_importance(clf, X[test][:n_imp], y[test][:n_imp], n_repeats=3, random_state=seed, scoring="roc_auc")
    importances = dict(sorted(zip(features, imp.importances_mean.round(5).tolist()), key=lambda kv: -kv[1]))
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(features) + 1))
    ax.barh(list(importances)[::-1], list(importances.values())[::-1])
    ax.set_xlabel("Permutation importance (drop in ROC AUC)")
    fig.tight_layout()
    fig.savefig(out_dir / f"importance_{name}.png", dpi=80)
    plt.close(fig)
    return {
        "auc": auc,
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "positives_test": int(y[test].sum()),
        "confusion_matrix": cm.tolist(),
        "feature_importance": importances,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ml_dir", type=Path, help="ML dataset directory (part-*.parquet)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: ML_DIR/../train)")
    parser.add_argument("--shuffle-labels", action="store_true", help="control: train on permuted labels")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    out_dir = args.out or args.ml_dir.parent / "train"
    out_dir.mkdir(parents=True, exist_ok=True)
    df = load(args.ml_dir)
    features = [c for c in df.columns if c in SUMMARY_FEATURES or c.startswith("abs_dxy_sig_")]
    todo = tasks(df)
    if not todo:
        print("no task has both classes in this dataset", file=sys.stderr)
        return 1
    metrics = {"features": features, "shuffled_labels": args.shuffle_labels, "tasks": {}}
    for name, (sel, y) in todo.items():
        metrics["tasks"][name] = train_task(name, df, sel, y, features, out_dir, shuffle_labels=args.shuffle_labels, seed=args.seed)
        print(f"{name}: AUC = {metrics['tasks'][name].get('auc', float('nan')):.3f}")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
