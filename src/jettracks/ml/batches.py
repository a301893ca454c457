"""Streaming numpy batches from a finalized ML dataset (no PyTorch needed).

Reads one Parquet row group at a time (:data:`jettracks.io.mldata.ROW_GROUP_ROWS`
jets), so memory stays at about one row group plus one batch whatever the
dataset's size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["batches", "load_manifest"]


def load_manifest(ml_dir: str | os.PathLike) -> dict[str, Any]:
    """The dataset's ``manifest.json``.

    Raises:
        ValueError: no finalized manifest in ``ml_dir`` (one line).
    """
    path = Path(ml_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a jettracks ML dataset ({type(err).__name__})") from None
    if "files_per_split" not in manifest:
        raise ValueError(f"{path}: dataset not finalized; run: python -m runner ml-finalize {Path(ml_dir)}")
    return manifest


def _column(table: Any, name: str) -> np.ndarray:
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        raise ValueError(f"column {name} is a variable-length list: use its padded form pad_{name} "
                         "(output.ml_dataset.pad_tracks) or read it with awkward")
    return col.to_numpy(zero_copy_only=False)


def batches(
    ml_dir: str | os.PathLike,
    *,
    split: str = "train",
    features: Sequence[str],
    batch_size: int = 1024,
    standardize: bool = True,
    weights: str | None = None,
    labels: Sequence[str] = ("flavour_code",),
    datasets: Sequence[str] | None = None,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
    nan: float | None = 0.0,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``{feature: array, label: array, "weight": array}`` dicts of ``batch_size`` jets.

    Args:
        ml_dir: the finalized dataset directory (``ml/`` of a run).
        split: ``train``, ``validation`` or ``test`` (default ``train``).
        features: columns to return as float32: per-jet numbers (shape ``(n,)``) or
            padded track arrays ``pad_track_*`` (shape ``(n, N)``).
        batch_size: jets per batch (default 1024); the last batch may be shorter.
        standardize: ``clip((x - median) / scale, ±clip)`` with the training split's
            statistics from the manifest (default True); padding entries of
            ``pad_track_*`` stay 0.
        weights: None (no ``weight`` key), ``"flat"``, ``"reference"`` (the
            ``weight_flat`` / ``weight_reference`` columns), ``"class"`` (the manifest's
            class weights by flavour) or any numeric column name.
        labels: columns returned unchanged (default ``("flavour_code",)``).
        datasets: only these datasets' files (default: every dataset of the split).
        shuffle: shuffle the order of files, of row groups and of jets within a
            row group (default False: file order).
        seed: seed of the shuffling (default 0).
        drop_last: drop a last batch shorter than ``batch_size`` (default False).
        nan: value replacing NaN after standardisation (default 0.0, the median);
            None keeps NaN.

    Raises:
        ValueError: unknown split or weights kind, a feature missing from a file,
            a variable-length feature, a name both feature and label, or an unfinalized
            directory (one line each).
    """
    import pyarrow.parquet as pq

    from .weights import Reweighting

    manifest = load_manifest(ml_dir)
    if split not in manifest["files_per_split"]:
        raise ValueError(f"split must be one of {', '.join(manifest['files_per_split'])}, got {split!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    files = [f for f in manifest["files_per_split"][split]
             if datasets is None or manifest["dataset_per_file"][f] in set(datasets)]
    stats = manifest.get("standardization", {})
    weight_col = {"flat": "weight_flat", "reference": "weight_reference", "class": "flavour"}.get(weights or "", weights)
    reweighting = Reweighting.from_dict(manifest["weights"]) if weights == "class" else None
    features, labels = list(features), list(labels)
    if set(features) & set(labels):
        raise ValueError(f"{sorted(set(features) & set(labels))[0]} is both a feature and a label: ask for it once")
    needed = list(dict.fromkeys(features + labels + ([weight_col] if weight_col else [])))
    if standardize and any(f.startswith("pad_track_") for f in features):
        needed.append("pad_mask")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files)) if shuffle else range(len(files))
    buffer: list[dict[str, np.ndarray]] = []
    buffered = 0

    def convert(table: Any) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        mask = _column(table, "pad_mask") if "pad_mask" in table.column_names else None
        for f in features:
            x = _column(table, f).astype(np.float32)
            if standardize and f in stats:
                s = stats[f]
                x = np.clip((x - s["median"]) / s["scale"], -s["clip"], s["clip"]).astype(np.float32)
                if f.startswith("pad_track_") and mask is not None:
                    x[~mask] = 0.0
            if nan is not None:
                x[np.isnan(x)] = nan
            out[f] = x
        for name in labels:
            out[name] = _column(table, name)
        if weights == "class":
            out["weight"] = reweighting.weights("class", None, None, _column(table, "flavour"))
        elif weight_col:
            out["weight"] = _column(table, weight_col).astype(np.float32)
        return out

    for i in order:
        path = Path(ml_dir) / files[i]
        pf = pq.ParquetFile(path)
        absent = [c for c in needed if c not in pf.schema_arrow.names]
        if absent:
            raise ValueError(f"{path.name}: no column {absent[0]} (dataset "
                             f"{manifest['dataset_per_file'][files[i]]}; pass datasets=[...] to choose)")
        groups = rng.permutation(pf.metadata.num_row_groups) if shuffle else range(pf.metadata.num_row_groups)
        for g in groups:
            chunk = convert(pf.read_row_group(int(g), columns=needed))
            if shuffle:
                perm = rng.permutation(len(next(iter(chunk.values()))))
                chunk = {k: v[perm] for k, v in chunk.items()}
            buffer.append(chunk)
            buffered += len(next(iter(chunk.values())))
            if buffered >= batch_size:
                merged = {k: np.concatenate([b[k] for b in buffer]) for k in buffer[0]}
                start = 0
                while buffered - start >= batch_size:
                    yield {k: v[start:start + batch_size] for k, v in merged.items()}
                    start += batch_size
                buffered -= start
                buffer = [{k: v[start:] for k, v in merged.items()}] if buffered else []
    if buffered and not drop_last:
        yield {k: np.concatenate([b[k] for b in buffer]) for k in buffer[0]}
