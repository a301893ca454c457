"""ML-ready per-jet datasets: columns (computed on the workers), manifest, README, HDF5.

Workers write one Parquet part per chunk (:func:`write_part`); at the end of a
run the client writes ``manifest.json`` and ``README.md`` describing every column
(:data:`COLUMNS`), the selection, rows per split and per label, and optionally
an HDF5 file of the fixed-length (padded) track arrays (:func:`finalize`).
Parts are read from disk; no column travels through the Dask scheduler.

Units: GeV, cm, radians. Train/validation/test split: from a 64-bit mix
(splitmix64) of ``(run, lumi, event)``, so every jet of an event lands in the
same split and the assignment does not depend on chunking or ordering.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from .atomic import atomic_path

__all__ = ["COLUMNS", "Column", "event_split", "finalize", "jet_columns", "write_part"]

SPLITS = ("train", "validation", "test")
#: Fractions of events in each split (train, validation, test).
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
#: |dxy|/σ thresholds of the ``n_tracks_sig_gt_*`` summaries.
SIG_THRESHOLDS = (2.0, 3.0, 5.0)


@dataclass(frozen=True)
class Column:
    """One documented column: name, dtype, unit, meaning and how it is computed."""

    name: str
    dtype: str
    unit: str
    meaning: str
    computed: str


def _cols() -> list[Column]:
    c = Column
    cols = [
        c("dataset", "string", "", "Dataset name from the run config", "config key"),
        c("run", "int64", "", "Run number", "file branch run"),
        c("lumi", "int64", "", "Luminosity block", "file branch luminosityBlock / lumi"),
        c("event", "uint64", "", "Event number", "file branch event"),
        c("jet_index", "int64", "", "Jet's position in its event's jet collection in the file (0-based)",
          "local index (PFNano) or jetPtOrder (JetNtuple)"),
        c("jet_pt", "float32", "GeV", "Jet transverse momentum", "file jet pt"),
        c("jet_eta", "float32", "", "Jet pseudorapidity", "file jet eta"),
        c("jet_phi", "float32", "rad", "Jet azimuth", "file jet phi"),
        c("jet_mass", "float32", "GeV", "Jet mass", "file jet mass"),
        c("flavour", "string", "", "Jet flavour label b/c/uds/g/unmatched/data under the run's definition",
          "jettracks.physics.flavour with the definition in flavour_definition"),
        c("flavour_code", "int8", "", "Integer code of flavour (b=5, c=4, uds=1, g=21, unmatched=0, data=-1)",
          "jettracks.physics.flavour.CODES"),
        c("flavour_definition", "string", "", "Flavour definition used for flavour (hadron/parton/physics/data)", "processor option flavour"),
        c("label_hadron", "string", "", "Flavour label under the hadron definition (hadronFlavour, light split by partonFlavour)",
          "jettracks.physics.flavour definition=hadron; absent when the file has no hadron flavour"),
        c("label_parton", "string", "", "Flavour label under the parton definition (|partonFlavour|)",
          "jettracks.physics.flavour definition=parton; absent without parton flavour"),
        c("label_physics", "string", "", "Flavour label under the physics definition (|physFlav|, ΔR<0.4 generator match)",
          "jettracks.physics.flavour definition=physics; JetNtuple only"),
        c("hadron_flavour", "int32", "", "Raw hadron flavour (0, 4, 5)", "file branch, where present"),
        c("parton_flavour", "int32", "", "Raw parton flavour (signed pdgId, 0 = none)", "file branch, where present"),
        c("physics_flavour", "int32", "", "Raw physics flavour physFlav (signed pdgId)", "file branch, JetNtuple"),
        c("is_signal", "bool", "", "Dataset is signal (config metadata is_signal)", "dataset metadata"),
        c("split", "string", "", "train / validation / test (70/15/15 % of events)",
          "splitmix64(run, lumi, event) mod 2^20 compared with the cumulative fractions"),
        c("n_tracks", "int32", "", "Tracks associated with the jet (charged, pT ≥ track_pt_min, ΔR < cone_dr)", "len(track_pt)"),
        c("n_tracks_valid_dxy", "int32", "", "Associated tracks with a valid dxy: finite dxy and dxy_err > 0 (the cut flow's tracks_valid_dxy)",
          "count of jettracks.physics.impact.valid_dxy"),
        c("max_abs_dxy", "float32", "cm", "Largest |dxy| of the jet's tracks with a valid dxy; NaN if none", "max over tracks"),
        c("median_abs_dxy", "float32", "cm", "Median |dxy| of the jet's tracks with a valid dxy; NaN if none", "median over tracks"),
    ]
    for t in SIG_THRESHOLDS:
        cols.append(c(f"n_tracks_sig_gt_{t:g}", "int32", "", f"Tracks with |dxy|/σ(dxy) > {t:g}",
                      "count over tracks with a valid dxy and a finite σ(dxy)"))
    cols += [
        c("track_pt", "list<float32>", "GeV", "Associated tracks' pT, collection order", "file candidates"),
        c("track_eta", "list<float32>", "", "Associated tracks' η", "file candidates"),
        c("track_phi", "list<float32>", "rad", "Associated tracks' φ", "file candidates"),
        c("track_charge", "list<int32>", "e", "Associated tracks' charge", "file candidates (JetNtuple: from PF_id)"),
        c("track_dr", "list<float32>", "", "ΔR(track, jet), ΔR² = Δη² + Δφ² (float64, Δφ wrapped)", "numba kernel or stored PF_dR"),
        c("track_dxy", "list<float32>", "cm", "Signed transverse impact parameter; NaN where not valid (valid: finite dxy and dxy_err > 0)",
          "PFCands_d0 etc.; jettracks.physics.impact.valid_dxy; absent without impact parameters"),
        c("track_dxy_err", "list<float32>", "cm", "Uncertainty of dxy; NaN where dxy is not valid; +inf = measured dxy, unknown error (NanoAOD IsoTrack)",
          "PFCands_d0Err etc."),
        c("track_dxy_sig", "list<float32>", "", "dxy / dxy_err; NaN where dxy is not valid or its error not finite",
          "jettracks.physics.impact.dxy_significance"),
        c("pad_track_*", "fixed_size_list<float32>[N]", "as the track column",
          "Fixed-length copies of the track columns: the N tracks with the largest sort key, zero padded",
          "processor option ml_pad_tracks=N, sorted by ml_sort_key (abs_dxy_sig default)"),
        c("pad_mask", "fixed_size_list<bool>[N]", "", "True where pad_track_* holds a real track", "padding"),
    ]
    return cols


#: Every column an ML part may hold (name -> :class:`Column`).
COLUMNS: dict[str, Column] = {c.name: c for c in _cols()}


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x += np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def event_split(run: np.ndarray, lumi: np.ndarray, event: np.ndarray) -> np.ndarray:
    """``train``/``validation``/``test`` per entry from (run, lumi, event); deterministic."""
    with np.errstate(over="ignore"):
        h = _splitmix64(np.asarray(run, dtype=np.uint64))
        h = _splitmix64(h ^ np.asarray(lumi, dtype=np.uint64))
        h = _splitmix64(h ^ np.asarray(event, dtype=np.uint64))
    u = (h >> np.uint64(44)).astype(np.float64) / float(1 << 20)
    edges = np.cumsum(SPLIT_FRACTIONS)
    idx = np.searchsorted(edges, u, side="right")
    return np.asarray(SPLITS, dtype=object)[np.minimum(idx, 2)].astype(str)


def _per_jet_reduce(values: ak.Array, kind: str) -> np.ndarray:
    if kind == "max":
        out = ak.max(values, axis=1)
    else:
        sorted_v = ak.sort(values, axis=1)
        n = ak.num(sorted_v, axis=1)
        lo = ak.to_numpy(ak.fill_none(ak.firsts(sorted_v[ak.local_index(sorted_v) == (n - 1) // 2]), np.nan))
        hi = ak.to_numpy(ak.fill_none(ak.firsts(sorted_v[ak.local_index(sorted_v) == n // 2]), np.nan))
        return ((lo + hi) / 2).astype(np.float32)
    return ak.to_numpy(ak.fill_none(out, np.nan)).astype(np.float32)


def jet_columns(
    *,
    dataset: str,
    run: np.ndarray,
    lumi: np.ndarray,
    event: np.ndarray,
    jets: ak.Array,
    jet_tracks: ak.Array,
    flavour_codes: np.ndarray,
    flavour_labels: np.ndarray | None = None,
    flavour_definition: str,
    labels_by_definition: Mapping[str, np.ndarray],
    flavour_fields: tuple[str, ...],
    has_dxy: bool,
    is_signal: bool = False,
    pad_tracks: int | None = None,
    sort_key: str = "abs_dxy_sig",
) -> dict[str, Any]:
    """The per-jet ML columns of one chunk (flat over selected jets); see :data:`COLUMNS`.

    A track's dxy is valid per :func:`jettracks.physics.impact.valid_dxy` (finite dxy and
    ``dxy_err > 0``, cm), the cut flow's definition; where it is not, ``track_dxy``,
    ``track_dxy_err`` and ``track_dxy_sig`` are NaN and the track is left out of
    ``n_tracks_valid_dxy``, ``max_abs_dxy``, ``median_abs_dxy`` and ``n_tracks_sig_gt_*``.

    ``flavour_labels``: the labels of ``flavour_codes`` when the caller has them
    already (else computed here); ``labels_by_definition``: ``label_<definition>`` columns.
    """
    from ..physics.flavour import flavour_labels as labels_of
    from ..physics.impact import dxy_significance, valid_dxy

    n = len(jets)
    cols: dict[str, Any] = {
        "dataset": np.full(n, dataset),
        "run": np.asarray(run, dtype=np.int64),
        "lumi": np.asarray(lumi, dtype=np.int64),
        "event": np.asarray(event, dtype=np.uint64),
        "jet_index": ak.to_numpy(jets["index"]).astype(np.int64),
        "jet_pt": ak.to_numpy(jets["pt"]).astype(np.float32),
        "jet_eta": ak.to_numpy(jets["eta"]).astype(np.float32),
        "jet_phi": ak.to_numpy(jets["phi"]).astype(np.float32),
        "jet_mass": ak.to_numpy(jets["mass"]).astype(np.float32),
        "flavour": np.asarray(labels_of(flavour_codes) if flavour_labels is None else flavour_labels).astype(str),
        "flavour_code": np.asarray(flavour_codes, dtype=np.int8),
        "flavour_definition": np.full(n, flavour_definition),
    }
    for definition, labels in labels_by_definition.items():
        cols[f"label_{definition}"] = np.asarray(labels).astype(str)
    for field in ("hadron_flavour", "parton_flavour", "physics_flavour"):
        if field in flavour_fields:
            cols[field] = ak.to_numpy(jets[field]).astype(np.int32)
    cols["is_signal"] = np.full(n, bool(is_signal))
    cols["split"] = event_split(run, lumi, event)
    cols["n_tracks"] = ak.to_numpy(ak.num(jet_tracks, axis=1)).astype(np.int32)
    for field in ("pt", "eta", "phi", "dr"):
        cols[f"track_{field}"] = ak.values_astype(jet_tracks[field], np.float32)
    cols["track_charge"] = ak.values_astype(jet_tracks["charge"], np.int32)
    if has_dxy:
        dxy = ak.values_astype(jet_tracks["dxy"], np.float64)
        err = ak.values_astype(jet_tracks["dxy_err"], np.float64)
        # One definition with the cut flow and the histograms (jettracks.physics.impact).
        valid = valid_dxy(dxy, err)
        sig = dxy_significance(dxy, err)
        abs_valid = abs(dxy[valid])
        cols["n_tracks_valid_dxy"] = ak.to_numpy(ak.sum(valid, axis=1)).astype(np.int32)
        cols["max_abs_dxy"] = _per_jet_reduce(abs_valid, "max")
        cols["median_abs_dxy"] = _per_jet_reduce(abs_valid, "median")
        for t in SIG_THRESHOLDS:
            cols[f"n_tracks_sig_gt_{t:g}"] = ak.to_numpy(ak.sum(abs(sig) > t, axis=1)).astype(np.int32)
        cols["track_dxy"] = ak.values_astype(ak.where(valid, dxy, np.nan), np.float32)
        cols["track_dxy_err"] = ak.values_astype(ak.where(valid, err, np.nan), np.float32)
        cols["track_dxy_sig"] = ak.values_astype(sig, np.float32)
    if pad_tracks:
        cols.update(_padded(cols, pad_tracks, sort_key, has_dxy))
    return cols


_SORT_KEYS = ("abs_dxy_sig", "abs_dxy", "pt", "dr")


def _padded(cols: dict[str, Any], n_pad: int, sort_key: str, has_dxy: bool) -> dict[str, Any]:
    if sort_key not in _SORT_KEYS:
        raise ValueError(f"ml_sort_key must be one of {_SORT_KEYS}, got {sort_key!r}")
    if sort_key.startswith("abs_dxy") and not has_dxy:
        sort_key = "pt"  # no impact parameters in this format: fall back, documented in the manifest
    key = {
        "abs_dxy_sig": lambda: abs(cols["track_dxy_sig"]),
        "abs_dxy": lambda: abs(cols["track_dxy"]),
        "pt": lambda: cols["track_pt"],
        "dr": lambda: -cols["track_dr"],  # nearest first
    }[sort_key]()
    key = ak.fill_none(ak.nan_to_none(key), -np.inf, axis=-1)
    order = ak.argsort(key, axis=1, ascending=False, stable=True)
    out: dict[str, Any] = {}
    names = ["pt", "eta", "phi", "dr"] + (["dxy", "dxy_err", "dxy_sig"] if has_dxy else [])
    for name in names:
        values = cols[f"track_{name}"][order]
        padded = ak.pad_none(values, n_pad, axis=1, clip=True)
        out[f"pad_track_{name}"] = ak.to_regular(ak.values_astype(ak.fill_none(padded, 0.0), np.float32), axis=1)
    mask = ak.pad_none(ak.ones_like(cols["track_pt"][order], dtype=bool), n_pad, axis=1, clip=True)
    out["pad_mask"] = ak.to_regular(ak.fill_none(mask, False), axis=1)
    return out


def write_part(ml_dir: str | os.PathLike, name: str, columns: Mapping[str, Any]) -> str:
    """Write one Parquet part atomically (temporary name, then rename); return its path.

    A column without missing values is written as a non-nullable Arrow field
    (every column, as :func:`jet_columns` makes them): readers then see plain
    types, not option types (``ak.from_parquet`` gives ``float32``, not ``?float32``,
    and filtering rows keeps records, not ``?{...}``). Invalid values are NaN, never null.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {
        k: ak.to_arrow(v, extensionarray=False) if isinstance(v, ak.Array) else pa.array(v)
        for k, v in columns.items()
    }
    schema = pa.schema([pa.field(k, a.type, nullable=a.null_count > 0) for k, a in arrays.items()])
    table = pa.Table.from_arrays(list(arrays.values()), schema=schema)
    final = os.path.join(ml_dir, name)
    with atomic_path(final) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return final


def finalize(
    ml_dir: str | os.PathLike,
    *,
    parts: Sequence[str],
    config: Mapping[str, Any],
    selection: Mapping[str, Any],
    versions: Mapping[str, str],
    hdf5: bool = False,
) -> dict[str, Any]:
    """Write ``manifest.json`` and ``README.md`` (and ``jets_padded.h5``) for this run's parts.

    The dataset is exactly ``parts``: the parts this run's chunks wrote or resumed
    from checkpoints. Other ``part-*.parquet`` files in ``ml_dir`` were left by
    earlier runs in this run directory (other files, other entry ranges, a
    replaced input file) and are removed, so a loader that globs the directory
    reads what the manifest lists; so is a ``jets_padded.h5`` this run does not write.

    Args:
        ml_dir: the run's ``ml/`` directory.
        parts: file names (in ``ml_dir``) of this run's parts.
        config, selection, versions: recorded in the manifest.
        hdf5: also write ``jets_padded.h5`` (needs padded columns).

    Returns:
        The manifest, plus ``removed_stale``: names of the parts removed.

    Raises:
        FileNotFoundError: a part of this run is missing (never silently dropped).
    """
    import pyarrow.parquet as pq



    ml_dir = Path(ml_dir)
    ml_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(set(parts))
    missing = [n for n in names if not (ml_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} ML part(s) of this run are missing from {ml_dir} (e.g. {missing[0]})"
        )
    stale = sorted(p.name for p in ml_dir.glob("part-*.parquet") if p.name not in set(names))
    for name in stale:
        (ml_dir / name).unlink()
    parts = [ml_dir / n for n in names]
    present: dict[str, str] = {}
    rows_split: dict[str, int] = {}
    rows_label: dict[str, int] = {}
    rows_dataset: dict[str, int] = {}
    n_rows = 0
    for part in parts:
        table = pq.read_table(part, columns=None)
        for field in table.schema:
            present.setdefault(field.name, str(field.type))
        n_rows += table.num_rows
        for col, acc in (("split", rows_split), ("flavour", rows_label), ("dataset", rows_dataset)):
            if col in table.column_names:
                values, counts = np.unique(table.column(col).to_numpy(zero_copy_only=False), return_counts=True)
                for v, c in zip(values, counts):
                    acc[str(v)] = acc.get(str(v), 0) + int(c)
    columns = []
    for name, arrow_type in present.items():
        doc = COLUMNS.get(name) or COLUMNS.get("pad_track_*" if name.startswith("pad_track_") else name)
        columns.append(
            {
                "name": name,
                "dtype": arrow_type,
                "unit": doc.unit if doc else "",
                "meaning": doc.meaning if doc else "undocumented",
                "computed": doc.computed if doc else "",
            }
        )
    manifest = {
        "format": "parquet parts, one per chunk (part-*.parquet)",
        "rows": n_rows,
        "parts": len(parts),
        "part_files": names,
        "rows_per_split": rows_split,
        "rows_per_label": rows_label,
        "rows_per_dataset": rows_dataset,
        "split_fractions": dict(zip(SPLITS, SPLIT_FRACTIONS)),
        "selection": dict(selection),
        "columns": columns,
        "config": dict(config),
        "versions": dict(versions),
    }
    h5_path = None
    if hdf5 and any(c["name"] == "pad_mask" for c in columns):
        h5_path = _write_hdf5(ml_dir, parts)
        manifest["hdf5"] = h5_path.name
    else:
        (ml_dir / "jets_padded.h5").unlink(missing_ok=True)  # an earlier run's, not this one's
    with atomic_path(ml_dir / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    with atomic_path(ml_dir / "README.md") as tmp:
        tmp.write_text(_readme(manifest))
    return {**manifest, "removed_stale": stale}


def _write_hdf5(ml_dir: Path, parts: list[Path]) -> Path:
    import h5py
    import pyarrow.parquet as pq

    path = ml_dir / "jets_padded.h5"


    scalar = ["jet_pt", "jet_eta", "jet_phi", "jet_mass", "flavour_code", "is_signal", "run", "lumi", "event", "jet_index"]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for part in parts:
            table = pq.read_table(part)
            names = [n for n in table.column_names if n.startswith("pad_") or n in scalar or n == "split"]
            for name in names:
                col = table.column(name)
                if name.startswith("pad_"):
                    arr = np.asarray(ak.to_numpy(ak.from_arrow(col)))
                elif name == "split":
                    arr = np.asarray([{"train": 0, "validation": 1, "test": 2}[s] for s in col.to_pylist()], dtype=np.int8)
                    name = "split_code"
                else:
                    arr = col.to_numpy()
                if name not in h5:
                    h5.create_dataset(name, data=arr, maxshape=(None, *arr.shape[1:]), chunks=True, compression="gzip")
                else:
                    ds = h5[name]
                    ds.resize(ds.shape[0] + arr.shape[0], axis=0)
                    ds[-arr.shape[0]:] = arr
        h5.attrs["split_code"] = "0=train, 1=validation, 2=test"
        h5.attrs["units"] = "GeV, cm, rad"
    return path


def _first_dataset(m: Mapping[str, Any]) -> str:
    """A dataset of the manifest for the README's one-dataset example (``DATASET`` if none)."""
    names = sorted(m.get("rows_per_dataset") or {})
    return names[0] if names else "DATASET"


def _readme(m: Mapping[str, Any]) -> str:
    lines = [
        "# jettracks ML dataset",
        "",
        "One row per selected jet; track columns are variable-length lists (or fixed-length",
        "`pad_*` arrays with `pad_mask`). Units: GeV, cm, radians.",
        "",
        "Read it back in one line (from the run directory, the parent of `ml/`). Datasets of",
        "different formats have different columns: take the union of the columns (absent",
        "values NaN/None) or read one dataset's parts (`ml/part-DATASET-*.parquet`):",
        "",
        "```python",
        "import glob; parts = glob.glob('ml/part-*.parquet')  # every dataset's parts",
        "import pandas as pd; df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)  # pandas, union of columns",
        "import pyarrow as pa, pyarrow.dataset as ds, pyarrow.parquet as pq; t = ds.dataset(parts, schema=pa.unify_schemas([pq.read_schema(p) for p in parts])).to_table()  # pyarrow",
        f"import awkward as ak; a = ak.from_parquet('ml/part-{_first_dataset(m)}-*.parquet')  # awkward, one dataset",
        "```",
        "",
        f"Rows: {m['rows']:,} in {m['parts']} parts.",
        "",
        "| split | rows |",
        "|---|---|",
        *[f"| {k} | {v:,} |" for k, v in sorted(m["rows_per_split"].items())],
        "",
        "| label | rows |",
        "|---|---|",
        *[f"| {k} | {v:,} |" for k, v in sorted(m["rows_per_label"].items())],
        "",
        "Selection: " + ", ".join(f"{k} = {v}" for k, v in m["selection"].items()),
        "",
        "## Columns",
        "",
        "| name | dtype | unit | meaning | how computed |",
        "|---|---|---|---|---|",
        *[f"| `{c['name']}` | {c['dtype']} | {c['unit']} | {c['meaning']} | {c['computed']} |" for c in m["columns"]],
        "",
    ]
    return "\n".join(lines)
