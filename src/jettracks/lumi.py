"""Collision data: certification JSON (lumi mask), processed lumisections, luminosity, per-lumisection summaries.

Certification JSON
    ``datasets.NAME.lumi_mask: PATH``: the JSON CMS publishes with its open data
    (``{"RUN": [[first_ls, last_ls], ...], ...}``, inclusive ranges). It is read once at the
    client (:func:`load_certification`) and travels to the workers in the chunk metadata
    (``lumi_mask``), where coffea's :class:`coffea.lumi_tools.LumiMask` evaluates it
    (:func:`mask_events`). Events outside are counted in the cut flow
    (``events_certified`` = events inside) and take no further part: no jets, tracks,
    histograms or ML rows from them.

Processed lumisections
    The report lists the lumisections that had at least one processed event (inside the
    mask when there is one) as a LumiList JSON in the same format (:func:`compact_lumilist`:
    sorted runs, merged contiguous ranges), written to ``lumis/DATASET.processed.json`` so
    the official tools (``brilcalc lumi -i FILE``) give its luminosity. With
    ``datasets.NAME.lumi_csv`` (brilcalc ``--byls --output-style csv`` output) the report
    also gives the integrated recorded luminosity of those lumisections
    (:func:`integrated_luminosity`: coffea's ``LumiData``, converted to pb⁻¹ from the unit in
    the CSV header: ``/ub``, ``/nb``, ``/pb`` or ``/fb``).

Per-lumisection summaries (:data:`SUMMARY_COLUMNS`)
    For collision data (``metadata.is_mc: false``, or ``metadata.lumi_summary: true``) every
    chunk adds, per ``(run, lumi)``, a vector of counts (:func:`chunk_summary`) to the
    output under ``lumisections[dataset]["RUN:LS"]``; coffea's accumulate sums the vectors
    of the same lumisection from every chunk and sub-batch, so a lumisection split across
    chunks or files is merged exactly. They are computed on **all** events, before the
    mask (the certification use: bad lumisections are summarised and labelled too).
    Quantiles are not mergeable; the vectors carry histograms instead, and the quantiles
    are derived after the merge (:func:`summary_table`):

    - ``|dxy|``: 60 log-spaced bins from 1e-4 to 10 cm (factor 10^(1/12) ≈ 1.21 a bin),
      interpolated log-linearly within the bin: the q-quantile lies in the bin of the
      ⌈qN⌉-th smallest value (the inverted-CDF quantile), so it is within ±21 % of it
      (typically a few %); with few tracks in a lumisection, other quantile definitions
      (e.g. numpy's default, interpolating between order statistics) can differ by more,
      as the tail is sparse; values below 1e-4 cm count in the first bin.
    - lifetime-signed ``dxy/σ``: 160 bins of 0.25 from −20 to 20 (linear interpolation;
      exact to ±0.25); values beyond ±20 count in the edge bins.

    The merged table is written as ``lumis/DATASET.summary.parquet`` and ``.npz`` (one
    array per column) and documented column by column in ``lumis/README.md``.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ABS_DXY_EDGES",
    "SDXY_SIG_EDGES",
    "SUMMARY_COLUMNS",
    "chunk_summary",
    "compact_lumilist",
    "integrated_luminosity",
    "load_certification",
    "mask_events",
    "resolve",
    "summary_table",
    "write_lumi_outputs",
]

#: |dxy| histogram edges (cm) of the per-lumisection summaries.
ABS_DXY_EDGES = np.logspace(-4, 1, 61)
#: Lifetime-signed dxy/σ histogram edges of the per-lumisection summaries.
SDXY_SIG_EDGES = np.linspace(-20.0, 20.0, 161)
_COUNTS = ("events", "jets", "selected_jets", "tracks", "tracks_valid_dxy", "tracks_abs_sig_gt3",
           "tracks_sdxy_sig_gt3", "tracks_sdxy_sig_lt_m3")
_N_ABS = len(ABS_DXY_EDGES) - 1
_N_SIG = len(SDXY_SIG_EDGES) - 1
VECTOR_LENGTH = len(_COUNTS) + _N_ABS + _N_SIG

#: Column -> (dtype, unit, meaning) of the per-lumisection table.
SUMMARY_COLUMNS: dict[str, tuple[str, str, str]] = {
    "run": ("int64", "", "Run number"),
    "lumi": ("int64", "", "Luminosity section"),
    "certified": ("int8", "", "1 inside the certification JSON, 0 outside, -1 no JSON given"),
    "events": ("int64", "", "Events processed in the lumisection (all, before the mask)"),
    "jets": ("int64", "", "Jets before selection"),
    "selected_jets": ("int64", "", "Jets passing pT > jet_pt_min and |η| < jet_abs_eta_max"),
    "tracks": ("int64", "", "Tracks associated with selected jets (charged, pT ≥ track_pt_min, ΔR < cone_dr)"),
    "tracks_per_jet": ("float64", "", "tracks / selected_jets (NaN without selected jets)"),
    "tracks_valid_dxy": ("int64", "", "Associated tracks with a valid dxy (finite, dxy_err > 0)"),
    "frac_abs_dxy_sig_gt3": ("float64", "", "Fraction of valid-dxy tracks with |dxy/σ| > 3"),
    "frac_sdxy_sig_gt3": ("float64", "", "Fraction of valid-dxy tracks with lifetime-signed dxy/σ > 3"),
    "frac_sdxy_sig_lt_m3": ("float64", "", "Fraction of valid-dxy tracks with lifetime-signed dxy/σ < −3"),
    "abs_dxy_q50": ("float64", "cm", "Median |dxy| of valid-dxy tracks (from the log histogram; ±21 % at worst)"),
    "abs_dxy_q90": ("float64", "cm", "90 % quantile of |dxy| (same precision)"),
    "abs_dxy_q99": ("float64", "cm", "99 % quantile of |dxy| (same precision)"),
    "sdxy_sig_q10": ("float64", "", "10 % quantile of the lifetime-signed dxy/σ (±0.25)"),
    "sdxy_sig_q50": ("float64", "", "Median lifetime-signed dxy/σ (±0.25)"),
    "sdxy_sig_q90": ("float64", "", "90 % quantile of the lifetime-signed dxy/σ (±0.25)"),
}


# --------------------------------------------------------------------------- certification
def load_certification(path: str | Path) -> dict[str, list[list[int]]]:
    """A CMS certification JSON as ``{"run": [[first, last], ...]}`` (validated, ints).

    Raises:
        ValueError: unreadable file or not of that shape (the message names the file).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        out = {str(int(run)): [[int(a), int(b)] for a, b in ranges] for run, ranges in data.items()}
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path}: not a CMS certification JSON ({{\"run\": [[first, last], ...]}}): {err}") from None
    return out


_MASKS: dict[str, Any] = {}


def mask_events(certification: Mapping[str, list[list[int]]], run: np.ndarray, lumi: np.ndarray) -> np.ndarray:
    """Boolean per event: ``(run, lumi)`` inside the certification (coffea's ``LumiMask``).

    The JSON content is handed to ``LumiMask`` through an fsspec in-memory file, so the
    workers need no access to the client's file; masks are cached per content.
    """
    import fsspec
    from coffea.lumi_tools import LumiMask

    text = json.dumps(dict(certification), sort_keys=True)
    key = hashlib.sha1(text.encode()).hexdigest()
    mask = _MASKS.get(key)
    if mask is None:
        url = f"memory://jettracks-lumimask-{key}.json"
        with fsspec.open(url, "w") as f:
            f.write(text)
        mask = _MASKS[key] = LumiMask(url)
    if len(run) == 0:
        return np.zeros(0, dtype=bool)
    return np.asarray(mask(np.asarray(run, dtype=np.uint32), np.asarray(lumi, dtype=np.uint32)), dtype=bool)


def compact_lumilist(pairs: Iterable[tuple[int, int]]) -> dict[str, list[list[int]]]:
    """``{(run, ls), ...}`` -> the CMS JSON form: runs as strings in ascending order, each a list
    of inclusive ``[first, last]`` ranges of contiguous lumisections."""
    by_run: dict[int, list[int]] = {}
    for run, ls in pairs:
        by_run.setdefault(int(run), []).append(int(ls))
    out: dict[str, list[list[int]]] = {}
    for run in sorted(by_run):
        lss = np.unique(np.asarray(by_run[run], dtype=np.int64))
        breaks = np.flatnonzero(np.diff(lss) != 1)
        starts = np.r_[lss[0], lss[breaks + 1]]
        ends = np.r_[lss[breaks], lss[-1]]
        out[str(run)] = [[int(a), int(b)] for a, b in zip(starts, ends)]
    return out


_UNIT_TO_PB = {"/ub": 1e-6, "/nb": 1e-3, "/pb": 1.0, "/fb": 1e3}


def _csv_unit(path: str | Path) -> str:
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f):
            text = ",".join(row)
            if text.startswith("#run") or "recorded(" in text:
                for unit in _UNIT_TO_PB:
                    if f"recorded({unit})" in text:
                        return unit
    raise ValueError(f"{path}: no 'recorded(/ub|/nb|/pb|/fb)' column in the header: not brilcalc --byls CSV output")


def integrated_luminosity(pairs: Iterable[tuple[int, int]], lumi_csv: str | Path) -> dict[str, Any]:
    """Recorded luminosity (pb⁻¹) of the lumisections ``pairs`` from a brilcalc ``--byls`` CSV.

    Returns ``{"recorded_pb": float, "unit_in_csv": "/ub"..., "lumisections": n,
    "lumisections_not_in_csv": m}``; the sum is coffea's ``LumiData.get_lumi``.
    """
    from coffea.lumi_tools import LumiData

    unit = _csv_unit(lumi_csv)
    pairs = sorted({(int(r), int(ls)) for r, ls in pairs})
    data = LumiData(str(lumi_csv))
    known = {(int(r), int(ls)) for r, ls in data._lumidata[:, :2]}
    inside = [p for p in pairs if p in known]
    value = float(data.get_lumi(np.asarray(inside, dtype=np.uint32).reshape(-1, 2))) if inside else 0.0
    return {
        "recorded_pb": value * _UNIT_TO_PB[unit],
        "unit_in_csv": unit,
        "lumisections": len(pairs),
        "lumisections_not_in_csv": len(pairs) - len(inside),
    }


# --------------------------------------------------------------------------- per-lumisection summaries
def chunk_summary(
    run: np.ndarray,
    lumi: np.ndarray,
    *,
    jets_per_event: np.ndarray,
    sel_jet_event: np.ndarray,
    tracks_per_sel_jet: np.ndarray,
    dxy: np.ndarray,
    dxy_sig: np.ndarray,
    sdxy_sig: np.ndarray,
    valid: np.ndarray,
) -> dict[str, np.ndarray]:
    """One chunk's per-lumisection vectors ``{"RUN:LS": float64[VECTOR_LENGTH]}`` (additive).

    Args:
        run, lumi: per event.
        jets_per_event: jets before selection, per event.
        sel_jet_event: event index of each selected jet.
        tracks_per_sel_jet: associated tracks per selected jet.
        dxy, dxy_sig, sdxy_sig, valid: flat over the associated tracks (jet order).
    """
    run = np.asarray(run, dtype=np.int64)
    lumi = np.asarray(lumi, dtype=np.int64)
    if run.size == 0:
        return {}
    keys, ev_ls = np.unique(np.stack([run, lumi], axis=1), axis=0, return_inverse=True)
    ev_ls = ev_ls.reshape(-1)
    n = len(keys)
    jet_ls = ev_ls[np.asarray(sel_jet_event, dtype=np.int64)]
    trk_ls = np.repeat(jet_ls, np.asarray(tracks_per_sel_jet, dtype=np.int64))
    v = np.asarray(valid, dtype=bool)
    with np.errstate(invalid="ignore"):
        counts = [
            np.bincount(ev_ls, minlength=n),
            np.bincount(ev_ls, weights=np.asarray(jets_per_event, dtype=np.float64), minlength=n),
            np.bincount(jet_ls, minlength=n),
            np.bincount(trk_ls, minlength=n),
            np.bincount(trk_ls[v], minlength=n),
            np.bincount(trk_ls[v & (np.abs(dxy_sig) > 3)], minlength=n),
            np.bincount(trk_ls[v & (sdxy_sig > 3)], minlength=n),
            np.bincount(trk_ls[v & (sdxy_sig < -3)], minlength=n),
        ]
    vec = np.zeros((n, VECTOR_LENGTH))
    for i, c in enumerate(counts):
        vec[:, i] = c
    a = np.abs(np.asarray(dxy, dtype=np.float64)[v])
    ia = np.clip(np.searchsorted(ABS_DXY_EDGES, a, side="right") - 1, 0, _N_ABS - 1)
    vec[:, len(_COUNTS):len(_COUNTS) + _N_ABS] = np.bincount(
        trk_ls[v] * _N_ABS + ia, minlength=n * _N_ABS).reshape(n, _N_ABS)
    s = np.asarray(sdxy_sig, dtype=np.float64)
    has = v & np.isfinite(s)
    isg = np.clip(np.searchsorted(SDXY_SIG_EDGES, s[has], side="right") - 1, 0, _N_SIG - 1)
    vec[:, len(_COUNTS) + _N_ABS:] = np.bincount(
        trk_ls[has] * _N_SIG + isg, minlength=n * _N_SIG).reshape(n, _N_SIG)
    return {f"{int(r)}:{int(ls)}": vec[i] for i, (r, ls) in enumerate(keys)}


def _quantile(hist: np.ndarray, edges: np.ndarray, q: float, *, log: bool) -> float:
    total = hist.sum()
    if total <= 0:
        return float("nan")
    cum = np.cumsum(hist)
    target = q * total
    i = int(np.searchsorted(cum, target, side="left"))
    i = min(i, len(hist) - 1)
    before = cum[i - 1] if i > 0 else 0.0
    frac = (target - before) / hist[i] if hist[i] > 0 else 0.0
    lo, hi = edges[i], edges[i + 1]
    if log:
        return float(np.exp(np.log(lo) + frac * (np.log(hi) - np.log(lo))))
    return float(lo + frac * (hi - lo))


def summary_table(
    vectors: Mapping[str, np.ndarray], certification: Mapping[str, list[list[int]]] | None = None
) -> dict[str, np.ndarray]:
    """The merged per-lumisection table (columns of :data:`SUMMARY_COLUMNS`), sorted by (run, lumi)."""
    items = sorted(((tuple(int(x) for x in k.split(":")), np.asarray(v)) for k, v in vectors.items()))
    n = len(items)
    runs = np.array([k[0] for k, _ in items], dtype=np.int64)
    lumis = np.array([k[1] for k, _ in items], dtype=np.int64)
    mat = np.stack([v for _, v in items]) if n else np.zeros((0, VECTOR_LENGTH))
    c = {name: mat[:, i] for i, name in enumerate(_COUNTS)}
    if certification is None:
        certified = np.full(n, -1, dtype=np.int8)
    else:
        certified = mask_events(certification, runs, lumis).astype(np.int8)
    habs = mat[:, len(_COUNTS):len(_COUNTS) + _N_ABS]
    hsig = mat[:, len(_COUNTS) + _N_ABS:]
    with np.errstate(invalid="ignore", divide="ignore"):
        valid = c["tracks_valid_dxy"]
        out = {
            "run": runs, "lumi": lumis, "certified": certified,
            "events": c["events"].astype(np.int64), "jets": c["jets"].astype(np.int64),
            "selected_jets": c["selected_jets"].astype(np.int64), "tracks": c["tracks"].astype(np.int64),
            "tracks_per_jet": np.where(c["selected_jets"] > 0, c["tracks"] / c["selected_jets"], np.nan),
            "tracks_valid_dxy": valid.astype(np.int64),
            "frac_abs_dxy_sig_gt3": np.where(valid > 0, c["tracks_abs_sig_gt3"] / valid, np.nan),
            "frac_sdxy_sig_gt3": np.where(valid > 0, c["tracks_sdxy_sig_gt3"] / valid, np.nan),
            "frac_sdxy_sig_lt_m3": np.where(valid > 0, c["tracks_sdxy_sig_lt_m3"] / valid, np.nan),
        }
    for q in (50, 90, 99):
        out[f"abs_dxy_q{q}"] = np.array([_quantile(h, ABS_DXY_EDGES, q / 100, log=True) for h in habs])
    for q in (10, 50, 90):
        out[f"sdxy_sig_q{q}"] = np.array([_quantile(h, SDXY_SIG_EDGES, q / 100, log=False) for h in hsig])
    return out


def _readme() -> str:
    lines = [
        "# Per-lumisection summaries and processed lumisections",
        "",
        "`DATASET.processed.json`: the lumisections with at least one processed event (inside the",
        "certification JSON when one was given), CMS JSON format (`brilcalc lumi -i FILE`).",
        "`DATASET.summary.parquet` / `DATASET.summary.npz`: one row per (run, lumi), all events",
        "(before the certification mask); quantiles are derived from per-lumisection histograms",
        "merged across chunks (|dxy|: 60 log bins 1e-4..10 cm, exact to within a bin, ±21 %;",
        "signed dxy/σ: bins of 0.25 in [-20, 20]).",
        "",
        "| column | dtype | unit | meaning |",
        "|---|---|---|---|",
    ]
    lines += [f"| `{k}` | {d} | {u} | {m} |" for k, (d, u, m) in SUMMARY_COLUMNS.items()]
    return "\n".join(lines) + "\n"


def write_lumi_outputs(
    out_dir: Path,
    dataset: str,
    vectors: Mapping[str, np.ndarray],
    *,
    certification: Mapping[str, list[list[int]]] | None,
    lumi_csv: str | Path | None,
) -> dict[str, Any]:
    """Write ``lumis/DATASET.processed.json``, ``.summary.parquet``, ``.summary.npz`` and
    ``lumis/README.md``; return the report entry of the dataset."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .io.atomic import atomic_path
    from .io.outfs import out_path

    lumi_dir = out_path(out_dir) / "lumis"
    lumi_dir.mkdir(parents=True, exist_ok=True)
    table = summary_table(vectors, certification)
    if certification is None:
        keep = table["events"] > 0
    else:
        keep = table["certified"] == 1
    processed = compact_lumilist(zip(table["run"][keep], table["lumi"][keep]))
    paths = {
        "processed_json": lumi_dir / f"{dataset}.processed.json",
        "summary_parquet": lumi_dir / f"{dataset}.summary.parquet",
        "summary_npz": lumi_dir / f"{dataset}.summary.npz",
    }
    with atomic_path(paths["processed_json"]) as tmp:
        tmp.write_text(json.dumps(processed, indent=None))
    with atomic_path(paths["summary_parquet"]) as tmp:
        pq.write_table(pa.table({k: v for k, v in table.items()}), tmp, compression="zstd")
    with atomic_path(paths["summary_npz"]) as tmp, open(tmp, "wb") as f:
        np.savez(f, **table)
    with atomic_path(lumi_dir / "README.md") as tmp:
        tmp.write_text(_readme())
    entry: dict[str, Any] = {
        "lumisections_seen": int(len(table["run"])),
        "lumisections_processed": int(keep.sum()),
        "certification": certification is not None,
        "lumisections_outside_certification": int((table["certified"] == 0).sum()),
        "processed": processed,
        **{k: str(v) for k, v in paths.items()},
    }
    if lumi_csv is not None:
        entry["luminosity"] = integrated_luminosity(zip(table["run"][keep], table["lumi"][keep]), lumi_csv)
    return entry


def resolve(cfg: Any, path: str | Path) -> Path:
    """A config path (``lumi_mask``, ``lumi_csv``): relative to the config file's directory
    (the working directory for a config given as a mapping)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    return Path(getattr(cfg, "base_dir", None) or ".").resolve() / p
