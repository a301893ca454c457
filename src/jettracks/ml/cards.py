"""Text files that describe a finalized ML dataset to other tools.

- :func:`hf_card`: the Hugging Face dataset-card YAML header of the dataset's
  ``README.md`` (``configs`` with ``data_files`` per split, ``dataset_info`` with
  features and split sizes), so ``datasets.load_dataset(ML_DIR)`` returns
  train / validation / test. Datasets with the same columns form one config; the
  config with the most rows is ``default``, others are named by their datasets
  joined with ``+`` (a run mixing formats, e.g. PFNano and JetNtuple, has two).
- :func:`weaver_config`: a weaver-core data configuration (``weaver.yaml``) for the
  default config's files: per-jet and per-track inputs standardised with the
  training split's statistics, one-hot labels from ``flavour_code``, observers,
  and the precomputed ``weight_flat`` as training weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import dump_yaml

__all__ = ["DEFAULT_TRACK_LENGTH", "config_groups", "hf_card", "hf_features", "weaver_config"]

#: Tracks per jet of weaver's padded track inputs when the run did not pad (``pad_tracks``).
DEFAULT_TRACK_LENGTH = 16
#: weaver label per flavour code (the classes of the weaver config, where present in training).
WEAVER_CLASSES = {"b": 5, "c": 4, "uds": 1, "g": 21}
_ARROW_TO_HF = {"float": "float32", "double": "float64", "halffloat": "float16"}


def _hf_dtype(arrow_type: Any) -> str:
    text = str(arrow_type)
    return _ARROW_TO_HF.get(text, text)


def hf_features(schema: Any) -> list[dict[str, Any]]:
    """Dataset-card ``features`` of a ``pyarrow.Schema``.

    Scalars: ``dtype``; lists: ``list: T``; fixed-size lists: ``list: T`` with
    ``length: N`` (the ``datasets`` YAML form of ``List(Value(T), length=N)``).
    """
    import pyarrow as pa

    out = []
    for f in schema:
        t = f.type
        if pa.types.is_fixed_size_list(t):
            out.append({"name": f.name, "list": _hf_dtype(t.value_type), "length": t.list_size})
        elif pa.types.is_list(t) or pa.types.is_large_list(t):
            out.append({"name": f.name, "list": _hf_dtype(t.value_type)})
        else:
            out.append({"name": f.name, "dtype": _hf_dtype(t)})
    return out


def config_groups(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Datasets with identical columns, most rows first: ``[{"name", "datasets", "features", "rows"}]``."""
    by_schema: dict[str, dict[str, Any]] = {}
    for dataset, features in sorted(manifest.get("features", {}).items()):
        g = by_schema.setdefault(repr(features), {"datasets": [], "features": features, "rows": 0})
        g["datasets"].append(dataset)
        g["rows"] += manifest["rows_per_dataset"].get(dataset, 0)
    groups = sorted(by_schema.values(), key=lambda g: (-g["rows"], g["datasets"]))
    for i, g in enumerate(groups):
        g["name"] = "default" if i == 0 else "+".join(g["datasets"])
    return groups


def hf_card(manifest: Mapping[str, Any]) -> str:
    """The ``---``-delimited YAML header for the dataset's README.md ('' without rows)."""
    groups = config_groups(manifest)
    if not groups:
        return ""
    dataset_of = manifest["dataset_per_file"]
    configs, infos = [], []
    for g in groups:
        files = {s: [f for f in manifest["files_per_split"][s] if dataset_of[f] in g["datasets"]]
                 for s in manifest["files_per_split"]}
        rows = {s: sum(manifest["rows_per_file"][f] for f in fs) for s, fs in files.items()}
        nbytes = {s: sum(manifest["arrow_bytes_per_file"][f] for f in fs) for s, fs in files.items()}
        conf: dict[str, Any] = {"config_name": g["name"],
                                "data_files": [{"split": s, "path": fs} for s, fs in files.items() if fs]}
        if g["name"] == "default":
            conf["default"] = True
        configs.append(conf)
        infos.append({"config_name": g["name"], "features": g["features"],
                      "splits": [{"name": s, "num_bytes": nbytes[s], "num_examples": n} for s, n in rows.items() if n]})
    header = {"pretty_name": "jettracks per-jet ML dataset", "tags": ["physics", "jet-tagging", "tabular"],
              "configs": configs, "dataset_info": infos if len(infos) > 1 else infos[0]}
    return "---\n" + dump_yaml(header, sort_keys=False, width=1000) + "---\n\n"


def weaver_config(manifest: Mapping[str, Any]) -> str:
    """weaver-core data configuration (YAML text) for the default config's files ('' without rows).

    Inputs: ``jet_features`` (every standardised per-jet numeric column),
    ``track_features`` (every standardised ``track_*`` list column, padded to the
    run's ``pad_tracks`` or :data:`DEFAULT_TRACK_LENGTH` tracks, constant padding)
    and ``track_mask``. Each var is ``[name, median, 1/scale, -clip, clip, 0]``
    (weaver: ``clip((x - center) * scale, min, max)``, pad value 0).
    """
    groups = config_groups(manifest)
    stats = manifest.get("standardization", {})
    if not groups:
        return ""
    g = groups[0]
    feats = {f["name"]: f for f in g["features"]}
    jet_vars = [n for n, f in feats.items() if n in stats and "dtype" in f]
    track_vars = [n for n, f in feats.items() if n.startswith("track_") and n in stats and "list" in f and "length" not in f]
    pad = (manifest.get("config", {}).get("output", {}).get("ml_dataset", {}) or {}).get("pad_tracks")
    length = int(pad or DEFAULT_TRACK_LENGTH)

    def var(name: str) -> list:
        s = stats[name]
        return [name, round(s["median"], 8), round(1.0 / s["scale"], 8), -s["clip"], s["clip"], 0]

    trained = manifest.get("weights", {}).get("train_counts", {})
    classes = [c for c in WEAVER_CLASSES if trained.get(c)] or [c for c in WEAVER_CLASSES]
    cfg: dict[str, Any] = {
        "selection": " | ".join(f"(flavour_code == {WEAVER_CLASSES[c]})" for c in classes),
        "new_variables": {
            "track_mask": "ak.ones_like(track_pt)",
            **{f"label_{c}": f"flavour_code == {WEAVER_CLASSES[c]}" for c in classes},
        },
        "preprocess": {"method": "manual", "data_fraction": 0.5},
        "inputs": {
            "jet_features": {"length": None, "vars": [var(n) for n in jet_vars]},
            "track_features": {"length": length, "pad_mode": "constant", "vars": [var(n) for n in track_vars]},
            "track_mask": {"length": length, "pad_mode": "constant", "vars": [["track_mask", None]]},
        },
        "labels": {"type": "simple", "value": [f"label_{c}" for c in classes]},
        "observers": ["run", "lumi", "event", "jet_index", "jet_pt", "jet_eta", "fold"],
        "weights": {"use_precomputed_weights": True, "weight_branches": ["weight_flat"]},
    }
    if not track_vars:
        del cfg["inputs"]["track_features"], cfg["inputs"]["track_mask"], cfg["new_variables"]["track_mask"]
    files = {s: [f for f in manifest["files_per_split"][s] if manifest["dataset_per_file"][f] in g["datasets"]]
             for s in manifest["files_per_split"]}
    head = [
        "# weaver-core data config written by jettracks (ML finalize) for the datasets "
        + ", ".join(g["datasets"]) + ".",
        "# Standardisation: median and scale of the training split (manifest.json standardization).",
        "# From the ml/ directory:",
        "#   weaver --data-config weaver.yaml --data-train " + " ".join(files["train"][:3])
        + (" ..." if len(files["train"]) > 3 else ""),
        "#          --data-val " + " ".join(files["validation"][:3]) + " --data-test " + " ".join(files["test"][:3]),
    ]
    return "\n".join(head) + "\n" + dump_yaml(cfg, sort_keys=False, width=1000, default_flow_style=None)
