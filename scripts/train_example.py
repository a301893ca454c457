#!/usr/bin/env python
"""Worked example: train classifiers on a finalized jettracks ML dataset.

Two tasks, each only where the dataset holds the classes:

- ``flavour``: b / c / uds / g jets of the non-signal datasets (multi-class);
- ``llp_vs_qcd``: jets of signal datasets (``is_signal``) against the rest.

Inputs come from :func:`jettracks.ml.batches`, standardised with the training
split's statistics (``manifest.json``): jet-level track summaries (counts,
max/median |dxy| in cm, counts above dxy-significance thresholds), jet pT/η, and
the padded per-track dxy significances where the dataset has them. Training
weights flatten each class's (pT, |η|) distribution, so the classifier cannot
separate classes by kinematics alone: the dataset's ``weight_flat`` for
``flavour``; for ``llp_vs_qcd`` the same tables computed here with the classes
signal/background (:func:`jettracks.ml.weights.compute_reweighting`).

scikit-learn's ``HistGradientBoostingClassifier`` is trained on ``split ==
train`` (``--kfold``: also k models on the training split's ``fold`` column,
reporting the spread of their AUCs) and evaluated on ``split == test``: ROC AUC
for every pair of classes i_vs_j (score p_i / (p_i + p_j) on the jets of the
two classes, i positive), with a bootstrap uncertainty (std over ``--bootstrap`` resamplings of
the test jets). ``--shuffle-labels`` permutes the training labels: a control
whose AUCs, averaged over ``--shuffles`` permutations, must be ~0.5. Identical seeds give identical results. Writes
``roc_<task>.png``, ``scores_<task>.png``, ``importance_<task>.png`` and ``metrics.json``.

    python scripts/train_example.py outputs/llp_vs_qcd/ml --out outputs/llp_vs_qcd/train
    python scripts/train_example.py DIR --shuffle-labels   # control: AUCs fall to ~0.5
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

SUMMARY_FEATURES = [
    "jet_pt", "jet_eta", "n_tracks", "n_tracks_valid_dxy", "max_abs_dxy", "median_abs_dxy",
    "n_tracks_sig_gt_2", "n_tracks_sig_gt_3", "n_tracks_sig_gt_5",
]
PADDED = "pad_track_dxy_sig"
FLAVOURS = ("b", "c", "uds", "g")
LABELS = ("flavour", "is_signal", "fold", "weight_flat")


def load(ml_dir: Path) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Every split as ``{column: array}`` (standardised features, labels) and the feature names."""
    import jettracks.ml

    manifest = jettracks.ml.load_manifest(ml_dir)
    # The datasets holding the most features (a JetNtuple has no dxy: left out when PFNano is there).
    feats = {d: {f["name"] for f in fs} for d, fs in manifest["features"].items()}
    best = max(len(set(SUMMARY_FEATURES + [PADDED]) & f) for f in feats.values())
    datasets = sorted(d for d, f in feats.items() if len(set(SUMMARY_FEATURES + [PADDED]) & f) == best)
    common = set.intersection(*(feats[d] for d in datasets))
    features = [f for f in SUMMARY_FEATURES + [PADDED] if f in common]
    out = {}
    for split in ("train", "test"):
        parts = list(jettracks.ml.batches(ml_dir, split=split, features=features, batch_size=1 << 20,
                                          labels=[c for c in LABELS if c in common], datasets=datasets))
        out[split] = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
        raw = list(jettracks.ml.batches(ml_dir, split=split, features=["jet_pt", "jet_eta"], batch_size=1 << 20,
                                        standardize=False, labels=[], datasets=datasets))
        for k in ("jet_pt", "jet_eta"):  # the same rows in the same order, not standardised
            out[split][f"{k}_raw"] = np.concatenate([p[k] for p in raw]) if raw else np.zeros(0)
    return out, features


def design(data: dict[str, np.ndarray], features: list[str]) -> tuple[np.ndarray, list[str]]:
    """The feature matrix (padded tracks unrolled: ``pad_track_dxy_sig[i]``, i-th track of the jet)."""
    cols, names = [], []
    for f in features:
        x = data[f]
        if x.ndim == 2:
            cols += [x[:, i] for i in range(x.shape[1])]
            names += [f"{f}[{i}]" for i in range(x.shape[1])]
        else:
            cols.append(x)
            names.append(f)
    return np.stack(cols, axis=1).astype(np.float64), names


def tasks(train: dict, test: dict) -> dict[str, tuple]:
    """task -> (class names, train class index (-1: not used), test class index)."""
    out = {}

    def flavour_index(d):
        bkg = ~d["is_signal"].astype(bool) if "is_signal" in d else np.ones(len(d["flavour"]), bool)
        idx = np.full(len(d["flavour"]), -1)
        for i, c in enumerate(present):
            idx[(d["flavour"] == c) & bkg] = i
        return idx

    present = [c for c in FLAVOURS if np.any(train["flavour"] == c) and np.any(test["flavour"] == c)]
    if len(present) >= 2:
        out["flavour"] = (present, flavour_index(train), flavour_index(test))
    if "is_signal" in train and len(np.unique(train["is_signal"])) == 2 and len(np.unique(test["is_signal"])) == 2:
        out["llp_vs_qcd"] = (["llp", "qcd"], 1 - train["is_signal"].astype(int), 1 - test["is_signal"].astype(int))
    return out


def bootstrap_auc(y: np.ndarray, score: np.ndarray, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """ROC AUC and its bootstrap standard deviation over ``n`` resamplings of the jets."""
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, score))
    values = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        if 0 < y[i].sum() < len(i):
            values.append(roc_auc_score(y[i], score[i]))
    return auc, float(np.std(values)) if values else float("nan")


def pair_aucs(classes, y, proba, n_boot, rng, w=None):
    """AUC ± bootstrap std per pair of classes (score p_i / (p_i + p_j)); b vs light as well."""
    out = {}
    for i, j in itertools.combinations(range(len(classes)), 2):
        sel = (y == i) | (y == j)
        s = proba[sel, i] / np.clip(proba[sel, i] + proba[sel, j], 1e-12, None)
        auc, err = bootstrap_auc((y[sel] == i).astype(int), s, n_boot, rng)
        out[f"{classes[i]}_vs_{classes[j]}"] = {"auc": auc, "auc_err": err, "n_test": int(sel.sum())}
    if "b" in classes and {"uds", "g"} & set(classes):
        b = classes.index("b")
        light = [classes.index(c) for c in ("uds", "g") if c in classes]
        sel = (y == b) | np.isin(y, light)
        s = proba[sel, b] / np.clip(proba[sel][:, [b, *light]].sum(axis=1), 1e-12, None)
        auc, err = bootstrap_auc((y[sel] == b).astype(int), s, n_boot, rng)
        out["b_vs_light"] = {"auc": auc, "auc_err": err, "n_test": int(sel.sum())}
    return out


def train_task(name, classes, data, y_train, y_test, X_train, X_test, names, out_dir: Path, args, *,
               plots: bool = True):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import roc_curve

    from jettracks.ml.weights import compute_reweighting

    tr, te = y_train >= 0, y_test >= 0
    X, y = X_train[tr], y_train[tr].copy()
    if args.shuffle_labels:
        y = np.random.default_rng(args.shuffle_seed).permutation(y)
    train = data["train"]
    if name == "flavour":
        w = train["weight_flat"][tr].astype(np.float64)
    else:  # classes signal / background: flat (pT, |η|) per class, from these training jets
        labels = np.asarray(classes)[y_train[tr]]
        pt, eta = train["jet_pt_raw"][tr], np.abs(train["jet_eta_raw"][tr])
        w = compute_reweighting(pt, eta, labels).weights("flat", pt, eta, labels).astype(np.float64)
    w = w / w.mean() if w.sum() > 0 else np.ones(len(y))
    w = np.minimum(w, args.max_weight)  # a few jets in a sparse bin must not dominate the fit

    def model():
        return HistGradientBoostingClassifier(max_iter=args.max_iter, learning_rate=0.1, random_state=args.seed,
                                              early_stopping=False, min_samples_leaf=50)

    clf = model().fit(X, y, sample_weight=w)
    proba = clf.predict_proba(X_test[te])
    rng = np.random.default_rng(args.seed + 1)
    pairs = pair_aucs(classes, y_test[te], proba, args.bootstrap, rng)
    result = {"classes": classes, "n_train": int(tr.sum()), "n_test": int(te.sum()), "pairs": pairs}

    if args.kfold and "fold" in train:
        folds = train["fold"][tr]
        aucs = {}
        for k in np.unique(folds):
            fit, val = folds != k, folds == k
            if len(np.unique(y[val])) < 2:
                continue
            p = model().fit(X[fit], y[fit], sample_weight=w[fit]).predict_proba(X[val])
            for pair, v in pair_aucs(classes, y[val], p, 0, rng).items():
                aucs.setdefault(pair, []).append(v["auc"])
        result["kfold"] = {pair: {"mean": float(np.mean(v)), "std": float(np.std(v)), "folds": len(v)}
                           for pair, v in aucs.items()}

    yt = y_test[te]
    if not plots:  # another permutation of the control: AUCs only
        return result
    fig, ax = plt.subplots(figsize=(6, 6))
    for i, j in itertools.combinations(range(len(classes)), 2):
        sel = (yt == i) | (yt == j)
        s = proba[sel, i] / np.clip(proba[sel, i] + proba[sel, j], 1e-12, None)
        fpr, tpr, _ = roc_curve((yt[sel] == i).astype(int), s)
        v = pairs[f"{classes[i]}_vs_{classes[j]}"]
        ax.plot(fpr, tpr, label=f"{classes[i]} vs {classes[j]}: AUC {v['auc']:.3f} ± {v['auc_err']:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="random (AUC 0.5)")
    ax.set_xlabel("False positive rate (background efficiency)")
    ax.set_ylabel("True positive rate (signal efficiency)")
    ax.set_title(name.replace("_", " ") + (" (shuffled labels)" if args.shuffle_labels else ""))
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(out_dir / f"roc_{name}.png", dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(classes), figsize=(4 * len(classes), 3.5), squeeze=False)
    for c, ax in enumerate(axes[0]):
        for k, cls in enumerate(classes):
            ax.hist(proba[yt == k, c], bins=40, range=(0, 1), histtype="step", density=True, label=f"true {cls}")
        ax.set_xlabel(f"score p({classes[c]})")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("jets (normalised)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / f"scores_{name}.png", dpi=80)
    plt.close(fig)

    n_imp = min(int(te.sum()), 2000)
    imp = permutation_importance(clf, X_test[te][:n_imp], yt[:n_imp], n_repeats=2, random_state=args.seed,
                                 scoring="roc_auc_ovr" if len(classes) > 2 else "roc_auc")
    importances = dict(sorted(zip(names, imp.importances_mean.round(5).tolist()), key=lambda kv: -kv[1]))
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(names) + 1))
    ax.barh(list(importances)[::-1], list(importances.values())[::-1])
    ax.set_xlabel("Permutation importance (drop in ROC AUC)")
    fig.tight_layout()
    fig.savefig(out_dir / f"importance_{name}.png", dpi=80)
    plt.close(fig)
    result["feature_importance"] = importances
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ml_dir", type=Path, help="finalized ML dataset directory (a run's ml/)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: ML_DIR/../train)")
    parser.add_argument("--shuffle-labels", action="store_true", help="control: train on permuted labels")
    parser.add_argument("--shuffles", type=int, default=3,
                        help="with --shuffle-labels: independent permutations averaged (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of training, bootstrap and shuffling (default 1)")
    parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamplings of the test jets (default 100)")
    parser.add_argument("--kfold", action="store_true", help="also train on the k folds of the training split")
    parser.add_argument("--max-iter", type=int, default=150, help="boosting iterations (default 150)")
    parser.add_argument("--max-weight", type=float, default=10.0,
                        help="training weights (mean 1) are capped at this value (default 10)")
    args = parser.parse_args(argv)
    out_dir = args.out or args.ml_dir.parent / "train"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        data, features = load(args.ml_dir)
    except ValueError as err:
        print(f"train_example: {err}", file=sys.stderr)
        return 2
    if not data["train"] or not data["test"]:
        print("train_example: the dataset has no training or no test jets", file=sys.stderr)
        return 1
    X_train, names = design(data["train"], features)
    X_test, _ = design(data["test"], features)
    todo = tasks(data["train"], data["test"])
    if not todo:
        print("train_example: no task has two classes in both training and test jets", file=sys.stderr)
        return 1
    metrics = {"features": names, "shuffled_labels": args.shuffle_labels, "seed": args.seed, "tasks": {}}
    for name, (classes, y_train, y_test) in todo.items():
        # The control: a model of permuted labels is a random function of the inputs, whose AUC
        # scatters around 0.5 by more than the test bootstrap says; its mean over --shuffles
        # permutations (and their spread, ``auc_spread``) is what must be ~0.5.
        runs = []
        for k in range(args.shuffles if args.shuffle_labels else 1):
            args.shuffle_seed = args.seed + 1000 * k
            runs.append(train_task(name, classes, data, y_train, y_test, X_train, X_test, names, out_dir, args,
                                   plots=k == 0))
        res = runs[0]
        if len(runs) > 1:
            for pair, v in res["pairs"].items():
                aucs = [r["pairs"][pair]["auc"] for r in runs]
                v.update(auc=float(np.mean(aucs)), auc_spread=float(np.std(aucs)), aucs=aucs)
        metrics["tasks"][name] = res
        for pair, v in res["pairs"].items():
            print(f"{name} {pair}: AUC = {v['auc']:.3f} ± {v['auc_err']:.3f}")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
