"""ML-ready per-jet datasets: columns (computed on the workers), finalized files, manifest.

Workers write one part per chunk (:func:`write_part`: an Arrow IPC file,
``part-*.arrow``; parts of older versions are Parquet, and both are read). At the end of a
run (and with ``python -m runner ml-finalize DIR``) :func:`finalize` compacts the
parts into a few files per dataset and split (``part-DATASET-SPLIT-NNN-HASH.parquet``,
row groups of :data:`ROW_GROUP_ROWS` jets, :data:`COMPRESSION`), adds the ``fold``
and weight columns, and writes ``manifest.json`` (rows, content hash, the
standardisation statistics and weight tables of the training split, and which
file rows each chunk's part became), ``README.md`` (column documentation under a
Hugging Face dataset card), ``weaver.yaml`` (a weaver-core data config) and
optionally an HDF5 file of the fixed-length (padded) track arrays.
Parts are read from disk; no column travels through the Dask scheduler.

Units: GeV, cm, radians. Train/validation/test split: from a 64-bit mix
(splitmix64) of ``(run, lumi, event)``, so every jet of an event lands in the
same split (and fold) and the assignment does not depend on chunking or ordering.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from .atomic import atomic_path
from .outfs import RemotePath, out_path, readable

__all__ = [
    "COLUMNS", "Column", "ContentHash", "PartScanner", "event_fold", "event_split", "finalize", "jet_columns",
    "key_hash", "part_available", "parts_leave_the_machine", "read_part", "refinalize", "write_part",
]

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
        c("track_sdxy", "list<float32>", "cm",
          "Lifetime-signed transverse impact parameter: |dxy| with the sign of the projection of the track's point of "
          "closest approach (PCA = dxy·(−sin φ_trk, cos φ_trk), CMS dxy sign convention) onto the jet axis in the "
          "transverse plane, i.e. sdxy = |dxy|·sign(dxy·sin(φ_jet − φ_trk)) (0 counts as +); positive for decays in "
          "flight along the jet; NaN where dxy is not valid",
          "jettracks.physics.impact.signed_dxy"),
        c("track_sdxy_sig", "list<float32>", "", "sdxy / dxy_err (lifetime-signed significance); NaN where track_dxy_sig is NaN",
          "jettracks.physics.impact.signed_dxy"),
        c("track_dz", "list<float32>", "cm", "Longitudinal impact parameter dz (CMS sign: z of the PCA minus PV z); NaN where dxy is not valid (no track details)",
          "PFCands_dz etc.; absent where the format has no dz"),
        c("track_dz_err", "list<float32>", "cm", "Uncertainty of dz; NaN without track details", "PFCands_dzErr; absent where the format has none"),
        c("track_dz_sig", "list<float32>", "", "dz / dz_err; NaN where dz is not valid or its error not in (0, inf)",
          "jettracks.physics.impact.significance; absent without dz_err"),
        c("track_sip3d", "list<float32>", "cm",
          "Signed 3-D impact parameter of the jet–candidate link (b-tagging sign: positive in front of the PV along the jet axis); "
          "NaN for a track in the ΔR cone that is not a constituent of the jet and where the producer wrote 0 (no track)",
          "PFNano JetPFCands_btagSip3dVal per (jet, candidate) link; absent where the file has none"),
        c("track_sip3d_sig", "list<float32>", "", "Significance of track_sip3d; NaN as track_sip3d",
          "PFNano JetPFCands_btagSip3dSig per link; absent where the file has none"),
        c("track_lost_inner_hits", "list<int32>", "",
          "Lost inner hits as stored: -1 valid hit in the first pixel barrel layer, 0 none lost, 1 one, 2 more",
          "PFCands_lostInnerHits; absent where the format has none"),
        c("track_pv_assoc_quality", "list<int32>", "",
          "Primary-vertex association quality as stored (pat::PackedCandidate, 0-7; 7 = used in the PV fit)",
          "PFCands_pvAssocQuality; absent where the format has none"),
        c("track_trk_quality", "list<int32>", "", "Track quality mask as stored (0 without track details)",
          "PFCands_trkQuality; absent where the format has none"),
        c("track_trk_chi2", "list<float32>", "", "Track normalised χ²; NaN without track details (the file's -1 fill)",
          "PFCands_trkChi2; absent where the format has none"),
        c("pad_track_*", "fixed_size_list<float32>[N]", "as the track column",
          "Fixed-length copies of the track columns: the N tracks with the largest sort key, zero padded",
          "processor option ml_pad_tracks=N, sorted by ml_sort_key (abs_dxy_sig default)"),
        c("pad_mask", "fixed_size_list<bool>[N]", "", "True where pad_track_* holds a real track", "padding"),
        c("fold", "int8", "", "k-fold index 0..k-1 (k in the manifest's folds); every jet of an event shares it",
          "floor(k · bits 24-43 of the split's event hash / 2^20), at finalize"),
        c("weight_flat", "float32", "", "Weight making the flavour's (pT, |η|) distribution flat; 0 in bins without training jets of the flavour",
          "jettracks.ml.weights from the training split, bins in the manifest's weights"),
        c("weight_reference", "float32", "", "Weight giving the flavour the (pT, |η|) shape of the reference flavour (manifest weights.reference)",
          "jettracks.ml.weights from the training split"),
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


def _event_hash(run: np.ndarray, lumi: np.ndarray, event: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = _splitmix64(np.asarray(run, dtype=np.uint64))
        h = _splitmix64(h ^ np.asarray(lumi, dtype=np.uint64))
        return _splitmix64(h ^ np.asarray(event, dtype=np.uint64))


def event_split(run: np.ndarray, lumi: np.ndarray, event: np.ndarray) -> np.ndarray:
    """``train``/``validation``/``test`` per entry from (run, lumi, event); deterministic.

    The top 20 bits of the event hash, as a fraction u in [0, 1), against the
    cumulative :data:`SPLIT_FRACTIONS`.
    """
    h = _event_hash(run, lumi, event)
    u = (h >> np.uint64(44)).astype(np.float64) / float(1 << 20)
    edges = np.cumsum(SPLIT_FRACTIONS)
    idx = np.searchsorted(edges, u, side="right")
    return np.asarray(SPLITS, dtype=object)[np.minimum(idx, 2)].astype(str)


def event_fold(run: np.ndarray, lumi: np.ndarray, event: np.ndarray, k: int) -> np.ndarray:
    """Fold 0..k-1 per entry (int8) from the event hash of :func:`event_split`.

    Bits 24-43 of the hash (the split uses bits 44-63), as a fraction v in [0, 1):
    fold = floor(v · k). Every jet of an event gets the same fold, in every split.

    Args:
        run, lumi, event: per-entry identifiers; k: number of folds (2..127).
    """
    h = _event_hash(run, lumi, event)
    v = ((h >> np.uint64(24)) & np.uint64((1 << 20) - 1)).astype(np.float64) / float(1 << 20)
    return np.minimum((v * k).astype(np.int64), k - 1).astype(np.int8)


def _jagged(offsets: np.ndarray, values: np.ndarray) -> ak.Array:
    """A [jet][track] awkward array over flat ``values`` with per-jet ``offsets`` (no copy)."""
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), ak.contents.NumpyArray(values)))


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
    signed: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The per-jet ML columns of one chunk (flat over selected jets); see :data:`COLUMNS`.

    A track's dxy is valid per :func:`jettracks.physics.impact.valid_dxy` (finite dxy and
    ``dxy_err > 0``, cm), the cut flow's definition; where it is not, ``track_dxy``,
    ``track_dxy_err`` and ``track_dxy_sig`` are NaN and the track is left out of
    ``n_tracks_valid_dxy``, ``max_abs_dxy``, ``median_abs_dxy`` and ``n_tracks_sig_gt_*``.

    ``flavour_labels``: the labels of ``flavour_codes`` when the caller has them
    already (else computed here); ``labels_by_definition``: ``label_<definition>`` columns.
    ``signed``: flat ``(sdxy, sdxy_sig)`` over the tracks when the caller has them
    (:func:`jettracks.physics.impact.signed_dxy`; else computed here). Every per-track float
    column is NaN where the track has no valid dxy (no track details); optional track
    fields the format lacks are absent columns.

    Per-jet columns are numpy arrays; per-track columns are ``[jet][track]`` awkward arrays
    over flat numpy buffers. Computed on the flat track arrays in numpy (a fixed number of
    array operations a chunk, whatever its size: per-jet reductions by ``bincount`` and one
    sort, not awkward's per-call dispatch).
    """
    from ..physics.flavour import flavour_labels as labels_of
    from ..physics.impact import dxy_significance, valid_dxy
    from ..physics.reductions import segment_max_median
    from ..readers.base import jagged_fields

    n = len(jets)
    counts, field_of = jagged_fields(jet_tracks)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    fields = set(jet_tracks.fields)

    def flat(name: str, dtype) -> np.ndarray:
        return field_of(name).astype(dtype, copy=False)

    def jagged(values: np.ndarray, dtype=np.float32) -> ak.Array:
        return _jagged(offsets, np.ascontiguousarray(values, dtype=dtype))

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
    for name in ("hadron_flavour", "parton_flavour", "physics_flavour"):
        if name in flavour_fields:
            cols[name] = ak.to_numpy(jets[name]).astype(np.int32)
    cols["is_signal"] = np.full(n, bool(is_signal))
    cols["split"] = event_split(run, lumi, event)
    cols["n_tracks"] = counts.astype(np.int32)
    for name in ("pt", "eta", "phi", "dr"):
        cols[f"track_{name}"] = jagged(flat(name, np.float32))
    cols["track_charge"] = jagged(flat("charge", np.int32), np.int32)
    if has_dxy:
        dxy = flat("dxy", np.float64)
        err = flat("dxy_err", np.float64)
        # One definition with the cut flow and the histograms (jettracks.physics.impact).
        valid = valid_dxy(dxy, err)
        sig = dxy_significance(dxy, err)
        jet_of = np.repeat(np.arange(n, dtype=np.int64), counts)
        cols["n_tracks_valid_dxy"] = np.bincount(jet_of[valid], minlength=n).astype(np.int32)
        cols["max_abs_dxy"], cols["median_abs_dxy"] = segment_max_median(jet_of[valid], np.abs(dxy[valid]), n)
        with np.errstate(invalid="ignore"):
            abs_sig = np.abs(sig)
            for t in SIG_THRESHOLDS:
                cols[f"n_tracks_sig_gt_{t:g}"] = np.bincount(jet_of[abs_sig > t], minlength=n).astype(np.int32)
        cols["track_dxy"] = jagged(np.where(valid, dxy, np.nan))
        cols["track_dxy_err"] = jagged(np.where(valid, err, np.nan))
        cols["track_dxy_sig"] = jagged(sig)
        cols.update(_track_details(jets, counts, flat, fields, dxy, err, valid, signed, jagged))
    if pad_tracks:
        cols.update(_padded(cols, pad_tracks, sort_key, has_dxy))
    return cols


def _track_details(jets, counts, flat, fields, dxy, err, valid, signed, jagged) -> dict[str, Any]:
    """Signed dxy, dz and its significance, 3-D IP and track quality columns (see :data:`COLUMNS`)."""
    from ..physics.impact import signed_dxy, significance

    out: dict[str, Any] = {}
    if signed is None:
        jet_phi = np.repeat(ak.to_numpy(jets["phi"]).astype(np.float64), counts)
        signed = signed_dxy(dxy, err, flat("phi", np.float64), jet_phi)
    out["track_sdxy"] = jagged(signed[0])
    out["track_sdxy_sig"] = jagged(signed[1])
    if "dz" in fields:
        dz = np.where(valid, flat("dz", np.float64), np.nan)
        out["track_dz"] = jagged(dz)
        if "dz_err" in fields:
            dz_err = np.where(valid, flat("dz_err", np.float64), np.nan)
            out["track_dz_err"] = jagged(dz_err)
            out["track_dz_sig"] = jagged(significance(dz, dz_err))
    for name in ("sip3d", "sip3d_sig"):
        if name in fields:
            out[f"track_{name}"] = jagged(np.where(valid, flat(name, np.float64), np.nan))
    for name in ("lost_inner_hits", "pv_assoc_quality", "trk_quality"):
        if name in fields:
            out[f"track_{name}"] = jagged(flat(name, np.int32), np.int32)
    if "trk_chi2" in fields:
        out["track_trk_chi2"] = jagged(np.where(valid, flat("trk_chi2", np.float64), np.nan))
    return out


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


def _to_arrow(values: Any) -> Any:
    """One column as an Arrow array; ``[jet][track]`` columns as ``list<item: T not null>``
    (32-bit offsets, what the finalized files hold: finalize need not cast them), built
    directly from the buffers for the plain jagged case (no per-call awkward conversion)."""
    import pyarrow as pa

    if not isinstance(values, ak.Array):
        return pa.array(values)
    layout = values.layout
    if (
        isinstance(layout, ak.contents.ListOffsetArray)
        and isinstance(layout.content, ak.contents.NumpyArray)
        and layout.content.data.ndim == 1
        and not layout.parameters
        and not layout.content.parameters
    ):
        offsets = np.asarray(layout.offsets.data, dtype=np.int64)
        flat = pa.array(np.asarray(layout.content.data)[offsets[0] : offsets[-1]])
        item = pa.list_(pa.field("item", flat.type, nullable=False))
        return pa.ListArray.from_arrays(pa.array((offsets - offsets[0]).astype(np.int32)), flat, type=item)
    return ak.to_arrow(values, extensionarray=False, list_to32=True)


def write_part(ml_dir: str | os.PathLike, name: str, columns: Mapping[str, Any], *,
               compression: str | None = "auto") -> str:
    """Write one part atomically (temporary name, then rename); return its path.

    The part is an Arrow IPC file: ``name`` must end in :data:`PART_SUFFIX`. Parts live
    only until finalize reads them, and IPC writes and reads them far faster than Parquet
    (measured on 11 parts, 15.7k jets: write 29 vs 79 ms, read 10 vs 32 ms, 10.1 vs 9.0 MB,
    both LZ4): its buffers are the arrays' own, with no encoding pass.

    ``compression`` (keyword-only): the buffers' codec, ``None`` or ``"lz4"``; ``"auto"``
    (default): :data:`PART_COMPRESSION` where the part leaves the machine (a ``root://``
    directory, or inside :func:`parts_leave_the_machine`), none on a disk (local or shared),
    where the client reads it back at once: a cached rerun's 16 parts were 11.4 MB with LZ4
    against 16.2 MB raw, and the client read them in 0.037 s against 0.009 s, while the
    workers used its cores.

    A column without missing values is written as a non-nullable Arrow field
    (every column, as :func:`jet_columns` makes them): readers then see plain
    types, not option types (``ak.from_parquet`` gives ``float32``, not ``?float32``,
    and filtering rows keeps records, not ``?{...}``). Invalid values are NaN, never null.

    Raises:
        ValueError: ``name`` does not end in :data:`PART_SUFFIX`.
    """
    import pyarrow as pa

    if not name.endswith(PART_SUFFIX):
        raise ValueError(f"ML part {name!r}: the name must end in {PART_SUFFIX!r}")
    arrays = {k: _to_arrow(v) for k, v in columns.items()}
    schema = pa.schema([pa.field(k, a.type, nullable=a.null_count > 0) for k, a in arrays.items()])
    table = pa.Table.from_arrays(list(arrays.values()), schema=schema)
    if "split" in schema.names:
        # Rows grouped by split (order kept within each): the scan and finalize then take
        # each split as a slice instead of filtering every column (see :func:`_by_split`).
        code = _split_codes(table.column("split").to_numpy(zero_copy_only=False))
        if np.any(np.diff(code) < 0):
            table = table.take(pa.array(np.argsort(code, kind="stable")))
    final = os.path.join(ml_dir, name)
    if compression == "auto":
        leaves = _PARTS_LEAVE.get() or isinstance(out_path(final), RemotePath)
        compression = PART_COMPRESSION if leaves else None
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with atomic_path(final) as tmp, pa.OSFile(str(tmp), "wb") as sink, \
            pa.ipc.new_file(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return final


_PARTS_LEAVE: contextvars.ContextVar[bool] = contextvars.ContextVar("jettracks_parts_leave", default=False)


@contextlib.contextmanager
def parts_leave_the_machine() -> Iterator[None]:
    """Parts written inside (``compression="auto"``) are compressed: they are carried back
    through Dask (``output.transfer: dask``), where their bytes count against
    ``output.transfer_mb``, though written to a local directory first."""
    token = _PARTS_LEAVE.set(True)
    try:
        yield
    finally:
        _PARTS_LEAVE.reset(token)


def read_part(path: Any) -> Any:
    """A part as a ``pyarrow.Table``: an Arrow IPC part (:func:`write_part`) or a Parquet
    one (written by versions before IPC parts), told apart by the name's suffix.

    Args:
        path: the part (a local path or a :class:`~jettracks.io.outfs.RemotePath`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if str(path).endswith(".parquet"):
        return pq.read_table(readable(path))
    if isinstance(path, RemotePath):
        with path.open("rb") as fh:
            return pa.ipc.open_file(pa.py_buffer(fh.read())).read_all()
    return pa.ipc.open_file(str(path)).read_all()


def _split_codes(split: np.ndarray) -> np.ndarray:
    """Index of each row's split in :data:`SPLITS` (int8); ``len(SPLITS)`` for any other value."""
    code = np.full(len(split), len(SPLITS), dtype=np.int8)
    for i, s in enumerate(SPLITS):
        code[split == s] = i
    return code


def _by_split(table: Any) -> dict[str, Any]:
    """``split`` -> the table's rows of that split, in their order (splits without rows left out).

    A part written by :func:`write_part` holds its rows grouped by split: each is then a
    zero-copy slice. Any other order (a part of an older version) is filtered.
    """
    split = table.column("split").to_numpy(zero_copy_only=False)
    code = _split_codes(split)
    if (code == len(SPLITS)).any():
        raise ValueError(f"ML part: unknown split value {split[code == len(SPLITS)][0]!r} (expected one of {SPLITS})")
    out = {}
    if np.all(np.diff(code) >= 0):
        bounds = np.searchsorted(code, np.arange(len(SPLITS) + 1))
        for i, s in enumerate(SPLITS):
            if bounds[i + 1] > bounds[i]:
                out[s] = table.slice(bounds[i], bounds[i + 1] - bounds[i])
        return out
    for i, s in enumerate(SPLITS):
        if (code == i).any():
            out[s] = table.filter(_mask(code == i))
    return out


def _string_columns(schema: Any) -> list[str]:
    """Columns worth Parquet's dictionary encoding: the strings (dataset, labels, split).
    Dictionary-encoding the float columns cost a third of the writing time and made files
    ~13% larger (measured on 15.7k jets, zstd: 81 vs 128 ms, 7.4 vs 8.4 MB)."""
    import pyarrow as pa

    return [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]


def _scalar_columns(schema: Any) -> list[str]:
    """Columns whose Parquet statistics (min / max per row group) the finalized files keep:
    the per-jet ones, which a reader's filter (``pt > 100``) can use. A track list's
    statistics serve no filter (measured on 15.7k jets: written with no statistics at all,
    65 against 76 ms)."""
    import pyarrow as pa

    return [f.name for f in schema if not pa.types.is_nested(f.type)]


#: Rows per Parquet row group of the finalized files. Measured (scripts/benchmark.py --only ml):
#: decoding 1,000-jet groups is ~45 % slower than 5,000; 10,000 is no faster; every choice decodes
#: at > 1.5 M jets/s, far above what a loader converts (~0.2 M jets/s), and 5,000 keeps shuffling fine.
ROW_GROUP_ROWS = 5_000
#: At most this many rows per finalized file (a few files per split and dataset).
ROWS_PER_FILE = 250_000
#: Compression of the finalized files: zstd is ~14 % smaller than lz4; lz4 decodes ~35 % faster,
#: which a loader does not see (decoding is < 10 % of its time).
COMPRESSION = "zstd"
#: Compression of the per-chunk parts' Arrow IPC buffers where they leave the machine
#: (a ``root://`` output directory, Dask transfer); on a disk they are written raw (:func:`write_part`).
PART_COMPRESSION = "lz4"
#: Suffix of the per-chunk parts (Arrow IPC files); parts of older versions end in ``.parquet``.
PART_SUFFIX = ".arrow"
#: Default number of folds of the ``fold`` column.
DEFAULT_FOLDS = 5
#: Columns identifying a jet; the content hash runs over them.
KEY_COLUMNS = ("run", "lumi", "event", "jet_index")
#: Columns finalize adds (recomputed at every finalize).
DERIVED_COLUMNS = ("fold", "weight_flat", "weight_reference")
#: Columns that are identifiers or labels, never standardised inputs.
NOT_FEATURES = frozenset({
    "run", "lumi", "event", "jet_index", "flavour_code", "hadron_flavour", "parton_flavour",
    "physics_flavour", "is_signal", "pad_mask", *DERIVED_COLUMNS,
})


def key_hash(run: np.ndarray, lumi: np.ndarray, event: np.ndarray, jet_index: np.ndarray) -> np.ndarray:
    """A 64-bit splitmix64 mix of (run, lumi, event, jet_index) per jet (uint64)."""
    with np.errstate(over="ignore"):
        h = _splitmix64(np.asarray(run, dtype=np.int64).astype(np.uint64))
        for x in (lumi, event, jet_index):
            h = _splitmix64(h ^ np.asarray(x).astype(np.int64).astype(np.uint64))
    return h


@dataclass
class ContentHash:
    """Order-independent hash of a multiset of jets: row count and the sum (mod 2^64) of :func:`key_hash`."""

    rows: int = 0
    total: int = 0

    def add(self, table: Any) -> None:
        """Add the rows of a ``pyarrow.Table`` holding :data:`KEY_COLUMNS`."""
        if table.num_rows == 0:
            return
        h = key_hash(*(table.column(c).to_numpy() for c in KEY_COLUMNS))
        with np.errstate(over="ignore"):
            self.total = (self.total + int(h.sum(dtype=np.uint64))) % (1 << 64)
        self.rows += table.num_rows

    def merge(self, other: ContentHash) -> None:
        """Add another hash's jets (the hash of the union of the two multisets)."""
        self.total = (self.total + other.total) % (1 << 64)
        self.rows += other.rows

    def __str__(self) -> str:
        return f"{self.rows}:{self.total:016x}"


def part_available(path: str | os.PathLike) -> bool:
    """True when the rows of ML part ``path`` are on disk: the part itself, or the
    finalized files its ``manifest.json`` says hold its rows (every one present).

    Checkpoints keep the path of their chunk's part; after :func:`finalize` the part
    lives on inside the finalized files, so a resumed chunk is not redone.
    """
    p = out_path(path)
    if p.is_file():
        return True
    sources = _manifest(p.parent).get("sources") or {}
    if p.name not in sources:
        return False
    return all((p.parent / seg[0]).is_file() for seg in sources[p.name])


def _manifest(ml_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((ml_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


class _Sources:
    """Rows of a part: its own file when present, else its segments in the finalized files."""

    #: Tables read by the scan are kept for the write pass up to this many bytes in all
    #: (each part is then read once; larger datasets read their parts twice).
    KEEP_BYTES = 512 << 20

    def __init__(self, ml_dir: Path, sources: Mapping[str, list]) -> None:
        self.ml_dir, self.sources = ml_dir, sources
        self._files: dict[str, Any] = {}
        self._kept: dict[str, Any] = {}
        self._kept_bytes = 0

    def has(self, name: str) -> bool:
        return (self.ml_dir / name).is_file() or (
            name in self.sources and all((self.ml_dir / s[0]).is_file() for s in self.sources[name]))

    def adopt(self, other: _Sources, names: Mapping[str, Any]) -> None:
        """Take ``other``'s kept tables of ``names`` (a scanner's reads of this run's parts)."""
        for name in names:
            table = other._kept.pop(name, None)
            if table is not None and self._kept_bytes + table.nbytes <= self.KEEP_BYTES:
                self._kept[name] = table
                self._kept_bytes += table.nbytes

    def read(self, name: str) -> Any:
        kept = self._kept.pop(name, None)
        if kept is not None:
            return kept
        table = self._read(name)
        if table is not None and self._kept_bytes + table.nbytes <= self.KEEP_BYTES:
            self._kept[name] = table
            self._kept_bytes += table.nbytes
        return table

    def _read(self, name: str) -> Any:
        import pyarrow as pa

        path = self.ml_dir / name
        if path.is_file():
            table = read_part(path)
        else:
            pieces = [self._slice(f, start, stop) for f, start, stop in self.sources[name]]
            if not pieces:
                return None  # a chunk without selected jets
            table = pa.concat_tables(pieces)
        drop = [c for c in DERIVED_COLUMNS if c in table.column_names]
        table = table.drop_columns(drop) if drop else table
        for i, f in enumerate(table.schema):  # plain lists: every reader (weaver, datasets) takes them
            if pa.types.is_large_list(f.type):
                table = table.set_column(i, pa.field(f.name, pa.list_(f.type.value_field), nullable=f.nullable),
                                         table.column(i).cast(pa.list_(f.type.value_field)))
        return table.replace_schema_metadata(None)

    def _slice(self, file: str, start: int, stop: int) -> Any:
        import pyarrow.parquet as pq

        pf = self._files.get(file)
        if pf is None:
            pf = self._files[file] = pq.ParquetFile(readable(self.ml_dir / file))
        groups, first, offset = [], None, 0
        for i in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(i).num_rows
            if offset + n > start and offset < stop:
                groups.append(i)
                first = offset if first is None else first
            offset += n
        return pf.read_row_groups(groups).slice(start - first, stop - start)


@dataclass
class _Plan:
    """Pass 1's findings: what each part holds, per dataset and split."""

    schemas: dict[str, Any] = field(default_factory=dict)  # dataset -> pyarrow schema
    rows: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (dataset, split, part) -> rows
    parts: dict[str, list[str]] = field(default_factory=dict)  # dataset -> parts in order
    content: ContentHash = field(default_factory=ContentHash)
    train: dict[str, list] = field(default_factory=dict)  # feature -> training values
    train_pt: list = field(default_factory=list)
    train_abs_eta: list = field(default_factory=list)
    train_label: list = field(default_factory=list)
    rows_split: dict[str, int] = field(default_factory=dict)
    rows_label: dict[str, int] = field(default_factory=dict)
    rows_dataset: dict[str, int] = field(default_factory=dict)


def _train_values(table: Any, name: str) -> np.ndarray | None:
    """Finite-or-not values of a numeric feature column for stats (tracks flattened; pad: real
    tracks), in the column's own type (:func:`~jettracks.ml.stats.feature_stats` takes any, and
    sorts float32 faster than float64)."""
    import pyarrow as pa

    col = table.column(name)
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return col.to_numpy()
    if (pa.types.is_list(t) or pa.types.is_fixed_size_list(t)) and (
            pa.types.is_integer(t.value_type) or pa.types.is_floating(t.value_type)):
        # Arrow's own flatten (offsets honoured, no conversion to awkward): the scan's hot loop.
        values = col.combine_chunks().flatten().to_numpy(zero_copy_only=False)
        if name.startswith("pad_track_") and "pad_mask" in table.column_names:
            mask = table.column("pad_mask").combine_chunks().flatten().to_numpy(zero_copy_only=False)
            values = values[mask.astype(bool)]
        return values
    return None


@dataclass
class _PartScan:
    """What one part holds (pass 1 of :func:`finalize`, per part; merged in name order)."""

    dataset: str
    schema: Any
    content: ContentHash
    counts: dict[str, dict[str, int]]  # "split" / "flavour" / "dataset" -> value -> rows
    rows: dict[str, int]  # split -> rows
    train_pt: np.ndarray | None = None
    train_abs_eta: np.ndarray | None = None
    train_label: np.ndarray | None = None
    train: dict[str, np.ndarray] = field(default_factory=dict)  # feature -> training values


def _scan_part(table: Any) -> _PartScan | None:
    """Scan one part's table; None for a part without rows."""
    if table is None or table.num_rows == 0:
        return None
    content = ContentHash()
    content.add(table)
    by_split = _by_split(table)
    counts: dict[str, dict[str, int]] = {"split": {s: by_split[s].num_rows for s in sorted(by_split)}}
    for col in ("flavour", "dataset"):
        values, n = np.unique(table.column(col).to_numpy(zero_copy_only=False).astype(str), return_counts=True)
        counts[col] = {str(v): int(c) for v, c in zip(values, n)}
    part = _PartScan(table.column("dataset")[0].as_py(), table.schema, content, counts,
                     {s: by_split[s].num_rows if s in by_split else 0 for s in SPLITS})
    train = by_split.get("train")
    if train is None:
        return part
    part.train_pt = train.column("jet_pt").to_numpy()
    part.train_abs_eta = np.abs(train.column("jet_eta").to_numpy())
    part.train_label = train.column("flavour").to_numpy(zero_copy_only=False).astype(str)
    for col in train.column_names:
        if col in NOT_FEATURES:
            continue
        values = _train_values(train, col)
        if values is not None:
            part.train[col] = values
    return part


def _scan(names: list[str], src: _Sources, scanned: Mapping[str, _PartScan | None] | None = None) -> _Plan:
    """Pass 1 over the parts, in name order; ``scanned``: parts scanned already (by a
    :class:`PartScanner` while the run went on), the others are read and scanned here."""
    plan = _Plan()
    scanned = scanned or {}
    for name in names:
        part = scanned[name] if name in scanned else _scan_part(src.read(name))
        if part is None:
            continue
        dataset = part.dataset
        schema = plan.schemas.setdefault(dataset, part.schema)
        if not schema.equals(part.schema):
            raise ValueError(f"ML part {name} has other columns than the other parts of dataset {dataset!r}")
        plan.parts.setdefault(dataset, []).append(name)
        plan.content.merge(part.content)
        for col, acc in (("split", plan.rows_split), ("flavour", plan.rows_label), ("dataset", plan.rows_dataset)):
            for v, c in part.counts[col].items():
                acc[v] = acc.get(v, 0) + c
        for s in SPLITS:
            plan.rows[(dataset, s, name)] = part.rows[s]
        if part.train_pt is None:
            continue
        plan.train_pt.append(part.train_pt)
        plan.train_abs_eta.append(part.train_abs_eta)
        plan.train_label.append(part.train_label)
        for col, values in part.train.items():
            plan.train.setdefault(col, []).append(values)
    return plan


class PartScanner:
    """Reads and scans this run's ML parts on a background thread while chunks still run,
    so that :func:`finalize` at the end only merges and writes (its first pass was a third
    of the finalize time, on the client's critical path after the last chunk).

    :meth:`add` the part paths of each finished chunk (any order, repeats ignored); pass the
    scanner to :func:`finalize`, which uses what it scanned and scans the rest itself; a part
    the scanner could not read or scan is simply scanned again there (with its error then).
    Tables are kept for finalize's write pass up to :attr:`_Sources.KEEP_BYTES` in all.

    Args:
        ml_dir: the run's ``ml/`` directory (local path or ``root://`` URL).
    """

    def __init__(self, ml_dir: str | os.PathLike) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.ml_dir = out_path(ml_dir)
        self.src = _Sources(self.ml_dir, {})
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jettracks-ml-scan")
        self._futures: dict[str, Any] = {}

    def add(self, parts: Sequence[str]) -> None:
        """Scan these parts (paths or names in ``ml_dir``) in the background."""
        for p in parts:
            name = Path(str(p)).name
            if name not in self._futures:
                self._futures[name] = self._pool.submit(self._scan_one, name)

    def _scan_one(self, name: str) -> _PartScan | None:
        if not (self.ml_dir / name).is_file():
            raise FileNotFoundError(name)
        return _scan_part(self.src.read(name))

    def results(self, names: Sequence[str]) -> dict[str, _PartScan | None]:
        """Scans of those ``names`` that succeeded (waiting for the ones under way)."""
        out = {}
        for name in names:
            future = self._futures.get(name)
            if future is None:
                continue
            try:
                out[name] = future.result()
            except Exception:  # noqa: BLE001 - finalize scans it again and reports its error
                continue
        return out

    def close(self) -> None:
        """Stop: scans not started are dropped, the kept tables released."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.src = _Sources(self.ml_dir, {})
        self._futures.clear()

    def __enter__(self) -> PartScanner:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _mask(mask: np.ndarray) -> Any:
    import pyarrow as pa

    return pa.array(np.asarray(mask, dtype=bool))


def _file_plan(plan: _Plan, tag: str) -> tuple[dict[str, dict[str, Any]], dict[str, list]]:
    """Finalized files and each part's segments.

    Returns:
        files: name -> ``{"dataset", "split", "rows", "pieces": [(part, rows)]}``, names
            ``part-DATASET-SPLIT-NNN-HASH.parquet`` with HASH over everything that makes
            the file's content (so an existing file of that name holds the same rows);
        sources: part -> ``[[file, start, stop], ...]`` (rows of the part in each file).
    """
    import hashlib

    files: dict[str, dict[str, Any]] = {}
    sources: dict[str, list] = {}
    for dataset in sorted(plan.parts):
        for split in SPLITS:
            groups: list[list[tuple[str, int, int]]] = [[]]
            filled = 0
            for part in plan.parts[dataset]:
                n, done = plan.rows[(dataset, split, part)], 0
                while done < n:
                    if filled == ROWS_PER_FILE:
                        groups.append([])
                        filled = 0
                    take = min(n - done, ROWS_PER_FILE - filled)
                    groups[-1].append((part, done, done + take))
                    done += take
                    filled += take
            for i, group in enumerate(g for g in groups if g):
                digest = hashlib.sha1(json.dumps([tag, dataset, split, group]).encode()).hexdigest()[:10]
                fname = f"part-{dataset}-{split}-{i:03d}-{digest}.parquet"
                pieces = [(part, b - a) for part, a, b in group]
                files[fname] = {"dataset": dataset, "split": split, "rows": sum(n for _, n in pieces), "pieces": pieces}
                row = 0
                for part, n in pieces:
                    sources.setdefault(part, []).append([fname, row, row + n])
                    row += n
    return files, sources


class _FileWriter:
    """Writes the planned finalized files in order, row groups of :data:`ROW_GROUP_ROWS`.

    Row groups are encoded and written, and finished files closed and renamed into place,
    on a thread of the writer's own (in order: one thread), so the splits' files are
    compressed side by side and while the next part is read; :meth:`finish` waits for
    them and raises their error.
    """

    def __init__(self, ml_dir: Path, files: list[tuple[str, int]], schema: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.ml_dir, self.files, self.schema = ml_dir, list(files), schema
        self.buffer: list = []
        self.buffered = 0
        self.written = 0  # rows in the open file
        self._atomic = self._writer = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jettracks-ml-write")
        self._pending: list[Any] = []

    def add(self, table: Any) -> None:
        while table.num_rows:
            if self._writer is None:
                self._open()
            room = self.files[0][1] - self.written - self.buffered
            head, table = table.slice(0, room), table.slice(room)
            self.buffer.append(head)
            self.buffered += head.num_rows
            while self.buffered >= ROW_GROUP_ROWS:
                self._flush(ROW_GROUP_ROWS)
            if self.written + self.buffered == self.files[0][1]:
                self._flush(self.buffered)
                self._close()

    def _open(self) -> None:
        import pyarrow.parquet as pq

        self._atomic = atomic_path(self.ml_dir / self.files[0][0])
        tmp = self._atomic.__enter__()
        self._writer = pq.ParquetWriter(tmp, self.schema, compression=COMPRESSION,
                                        use_dictionary=_string_columns(self.schema),
                                        write_statistics=_scalar_columns(self.schema))

    def _flush(self, n: int) -> None:
        import pyarrow as pa

        if n == 0:
            return
        table = pa.concat_tables(self.buffer)
        writer, group = self._writer, table.slice(0, n).combine_chunks()
        self._pending.append(self._pool.submit(lambda: writer.write_table(group, row_group_size=n)))
        rest = table.slice(n)
        self.buffer, self.buffered = ([rest] if rest.num_rows else []), rest.num_rows
        self.written += n

    def _wait(self) -> None:
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()  # in order; the first error raises

    def _close(self) -> None:
        writer, atomic = self._writer, self._atomic
        self._writer = self._atomic = None

        def close() -> None:
            try:
                writer.close()
                atomic.__exit__(None, None, None)  # renamed into place
            except BaseException:
                atomic.__exit__(RuntimeError, None, None)  # removes the temporary file
                raise

        self._pending.append(self._pool.submit(close))  # after the file's row groups
        self.files.pop(0)
        self.written = 0

    def finish(self) -> None:
        """Wait for the writes under way (raising their error) and stop the writer's thread."""
        self._wait()
        self._pool.shutdown(wait=True)

    def abort(self) -> None:
        """Stop: wait for the thread, remove the temporary file of a file not closed yet.
        (Files closed already are in place: :func:`finalize` removes the new ones.)"""
        try:
            self._wait()
        except BaseException:  # noqa: BLE001 - aborting anyway: the file is removed below
            pass
        if self._writer is not None:
            self._writer.close()
            self._atomic.__exit__(RuntimeError, None, None)  # removes the temporary file
            self._writer = self._atomic = None
        self._pool.shutdown(wait=True)


def _with_derived(table: Any, *, folds: int, reweighting: Any) -> Any:
    import pyarrow as pa

    run, lumi, event = (table.column(c).to_numpy() for c in ("run", "lumi", "event"))
    pt = table.column("jet_pt").to_numpy()
    abs_eta = np.abs(table.column("jet_eta").to_numpy())
    labels = table.column("flavour").to_numpy(zero_copy_only=False).astype(str)
    table = table.append_column(pa.field("fold", pa.int8(), nullable=False), pa.array(event_fold(run, lumi, event, folds)))
    weights = reweighting.weights_of(("flat", "reference"), pt, abs_eta, labels)
    for kind, col in (("flat", "weight_flat"), ("reference", "weight_reference")):
        table = table.append_column(pa.field(col, pa.float32(), nullable=False), pa.array(weights[kind]))
    return table


def finalize(
    ml_dir: str | os.PathLike,
    *,
    parts: Sequence[str],
    config: Mapping[str, Any],
    selection: Mapping[str, Any],
    versions: Mapping[str, str],
    hdf5: bool = False,
    folds: int = DEFAULT_FOLDS,
    reference_flavour: str | None = None,
    scanner: PartScanner | None = None,
    meanwhile: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Compact this run's parts into a few Parquet files per dataset and split, and
    write ``manifest.json``, ``README.md`` (with the Hugging Face dataset card),
    ``weaver.yaml`` (weaver-core data config) and optionally ``jets_padded.h5``.

    The dataset is exactly ``parts``: the parts this run's chunks wrote or resumed
    from checkpoints. A part's rows come from its own file or, for a part finalized
    before, from the finalized files the old manifest lists for it (``sources``).
    Order: the new files are written (atomically, content-addressed names), their
    rows are checked (count and :class:`ContentHash` over (run, lumi, event,
    jet_index) equal to the parts'), then the manifest is switched, then the parts
    and the files of the old manifest are removed. A crash at any point leaves the
    old manifest and its files, or the new ones, complete. Other ``part-*.parquet``
    files (left by earlier runs in this run directory) are removed last; so is a
    ``jets_padded.h5`` this run does not write.

    Added columns: ``fold`` (k-fold index from the event hash of the split: every
    jet of an event in the same fold), ``weight_flat`` and ``weight_reference``
    (:mod:`jettracks.ml.weights`, from the training split). The manifest gets the
    standardisation statistics of every numeric feature over the training split
    (:mod:`jettracks.ml.stats`), the weight tables and the class weights.

    Args:
        ml_dir: the run's ``ml/`` directory.
        parts: file names (in ``ml_dir``) of this run's parts.
        config, selection, versions: recorded in the manifest.
        hdf5: also write ``jets_padded.h5`` (needs padded columns); default False.
        folds: number of folds k of the ``fold`` column (default :data:`DEFAULT_FOLDS`).
        reference_flavour: reference class of ``weight_reference`` (default ``b``
            when present, else the most populous flavour).
        scanner: a :class:`PartScanner` of this ``ml_dir`` that scanned parts while the run
            went on (its scans of parts that are not from old-manifest sources are used).
        meanwhile: work for the calling thread while the writer threads encode the last
            dataset's files (the run writes its histogram files then), or None. It runs
            once, before anything is switched; its error aborts the finalize (nothing
            switched or removed) and is raised.

    Returns:
        The manifest, plus ``removed_stale``: names of the stale parts removed.

    Raises:
        FileNotFoundError: a part of this run is missing (never silently dropped).
        ValueError: ``folds`` < 2, an unknown ``reference_flavour``, or parts of one
            dataset with different columns.
        RuntimeError: the finalized files do not hold exactly the parts' rows
            (nothing is switched or removed then).
    """
    from ..ml.cards import hf_card, hf_features, weaver_config
    from ..ml.stats import feature_stats
    from ..ml.weights import compute_reweighting

    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    ml_dir = out_path(ml_dir)
    ml_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(set(parts))
    old = _manifest(ml_dir)
    src = _Sources(ml_dir, old.get("sources") or {})
    missing = [n for n in names if not src.has(n)]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} ML part(s) of this run are missing from {ml_dir} (e.g. {missing[0]})"
        )

    scanned: dict[str, _PartScan | None] = {}
    if scanner is not None and str(scanner.ml_dir) == str(ml_dir):
        scanned = scanner.results(names)
        src.adopt(scanner.src, scanned)
    plan = _scan(names, src, scanned)
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
    reweighting = compute_reweighting(cat(plan.train_pt), cat(plan.train_abs_eta),
                                      cat(plan.train_label).astype(str), reference=reference_flavour)
    from concurrent.futures import ThreadPoolExecutor

    # Only the manifest needs the statistics: computed while the files are written.
    stats_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jettracks-ml-stats")
    stats_future = stats_pool.submit(
        lambda: {k: feature_stats(np.concatenate(v)).as_dict() for k, v in sorted(plan.train.items())})
    stats_pool.shutdown(wait=False)
    tag = json.dumps([folds, reweighting.as_dict(), COMPRESSION, ROW_GROUP_ROWS,
                      {d: hf_features(s) for d, s in sorted(plan.schemas.items())}], sort_keys=True)
    files, sources = _file_plan(plan, tag)
    for n in names:
        sources.setdefault(n, [])  # a part without rows is finalized too
    old_files = set(old.get("part_files") or []) if old.get("sources") is not None else set()
    new_here = [f for f in files if not (ml_dir / f).exists()]
    try:
        schemas = _write_files(ml_dir, plan, files, src, folds=folds, reweighting=reweighting, meanwhile=meanwhile)
        check = ContentHash()
        import pyarrow.parquet as pq

        for f in files:
            check.add(pq.read_table(readable(ml_dir / f), columns=list(KEY_COLUMNS)))
        if str(check) != str(plan.content):
            raise RuntimeError(
                f"ML finalize: the finalized files hold {check} (rows:hash), the parts {plan.content}; nothing changed")
    except BaseException:
        for f in new_here:
            (ml_dir / f).unlink(missing_ok=True)
        raise
    stats = stats_future.result()

    columns = []
    all_fields: dict[str, str] = {}
    for schema in schemas.values():
        for f in schema:
            all_fields.setdefault(f.name, str(f.type))
    for name, arrow_type in all_fields.items():
        doc = COLUMNS.get(name) or COLUMNS.get("pad_track_*" if name.startswith("pad_track_") else name)
        columns.append({"name": name, "dtype": arrow_type, "unit": doc.unit if doc else "",
                        "meaning": doc.meaning if doc else "undocumented", "computed": doc.computed if doc else ""})
    part_files = sorted(files)
    manifest: dict[str, Any] = {
        "format": "parquet, finalized: part-DATASET-SPLIT-NNN-HASH.parquet (one dataset and split per file)",
        "rows": plan.content.rows,
        "parts": len(part_files),
        "part_files": part_files,
        "files_per_split": {s: [f for f in part_files if files[f]["split"] == s] for s in SPLITS},
        "rows_per_split": plan.rows_split,
        "rows_per_label": plan.rows_label,
        "rows_per_dataset": plan.rows_dataset,
        "rows_per_file": {f: files[f]["rows"] for f in part_files},
        "arrow_bytes_per_file": {f: files[f]["nbytes"] for f in part_files},
        "dataset_per_file": {f: files[f]["dataset"] for f in part_files},
        "content_hash": str(plan.content),
        "content_hash_definition": "rows:sum mod 2^64 of splitmix64(run, lumi, event, jet_index), hex",
        "split_fractions": dict(zip(SPLITS, SPLIT_FRACTIONS)),
        "folds": folds,
        "row_group_rows": ROW_GROUP_ROWS,
        "compression": COMPRESSION,
        "standardization": stats,
        "weights": reweighting.as_dict(),
        "selection": dict(selection),
        "columns": columns,
        "config": dict(config),
        "versions": dict(versions),
        "sources": {n: sources[n] for n in names},
    }
    manifest["features"] = {d: hf_features(s) for d, s in sorted(schemas.items())}
    h5_path = None
    if hdf5 and "pad_mask" in all_fields:
        h5_path = _write_hdf5(ml_dir, [ml_dir / f for f in part_files])
        manifest["hdf5"] = h5_path.name
    weaver = weaver_config(manifest)
    if weaver:
        with atomic_path(ml_dir / "weaver.yaml") as tmp:
            tmp.write_text(weaver)
    else:
        (ml_dir / "weaver.yaml").unlink(missing_ok=True)
    with atomic_path(ml_dir / "manifest.json") as tmp:  # the switch
        tmp.write_text(json.dumps(manifest, indent=1, default=str) + "\n")
    with atomic_path(ml_dir / "README.md") as tmp:
        tmp.write_text(hf_card(manifest) + _readme(manifest))
    if h5_path is None:
        (ml_dir / "jets_padded.h5").unlink(missing_ok=True)  # an earlier run's, not this one's
    keep = set(part_files)
    finalized = [n for n in names if n not in keep]
    ours = keep | set(names) | old_files
    stale = sorted(p.name for p in ml_dir.glob("part-*")  # one listing: parts of both formats
                   if p.suffix in (".parquet", PART_SUFFIX) and p.name not in ours)
    for name in [*finalized, *sorted(old_files - keep), *stale]:
        (ml_dir / name).unlink(missing_ok=True)
    return {**manifest, "removed_stale": stale}


def refinalize(
    path: str | os.PathLike, *, folds: int | None = None, reference_flavour: str | None = None,
) -> dict[str, Any]:
    """Finalize an existing dataset again (``python -m runner ml-finalize DIR``).

    The dataset is what its manifest lists: the parts of a dataset never finalized
    (``part_files``), or the parts of a finalized one (``sources``). Holds the run
    directory's lock (when ``DIR`` is in a jettracks run directory) meanwhile.

    Args:
        path: the ``ml/`` directory, or the run directory holding it.
        folds: k of the ``fold`` column (default: the manifest's, else :data:`DEFAULT_FOLDS`).
        reference_flavour: reference of ``weight_reference`` (default: the manifest's).

    Raises:
        ValueError: no ``manifest.json`` there; OSError: the run directory is locked
            by a run; FileNotFoundError: a listed part is missing.
    """
    from .rundir import MARKER, RunDirectory, RunDirError

    ml_dir = out_path(path)
    if not (ml_dir / "manifest.json").is_file() and (ml_dir / "ml" / "manifest.json").is_file():
        ml_dir = ml_dir / "ml"
    old = _manifest(ml_dir)
    if not old:
        raise ValueError(f"{ml_dir}: no readable manifest.json (not a jettracks ML dataset)")
    parts = list(old["sources"]) if old.get("sources") is not None else list(old.get("part_files") or [])
    run_dir = ml_dir.parent
    lock = RunDirectory(run_dir, "") if (run_dir / MARKER).is_file() else None
    try:
        if lock is not None:
            lock._lock()  # one writer per run directory, as for a run
    except RunDirError as err:
        raise OSError(str(err)) from None
    try:
        return finalize(
            ml_dir, parts=parts, config=old.get("config", {}), selection=old.get("selection", {}),
            versions=old.get("versions", {}), hdf5=bool(old.get("hdf5")),
            folds=folds or old.get("folds") or DEFAULT_FOLDS,
            reference_flavour=reference_flavour or (old.get("weights") or {}).get("reference"),
        )
    finally:
        if lock is not None:
            lock.release()


def _write_files(ml_dir: Path, plan: _Plan, files: Mapping[str, dict[str, Any]], src: _Sources, *, folds: int,
                 reweighting: Any, meanwhile: Callable[[], Any] | None = None) -> dict[str, Any]:
    """Write every planned file, one dataset at a time, each part read once; return dataset -> schema.

    Adds each file's in-memory (Arrow) size as ``files[name]["nbytes"]``. ``meanwhile`` is
    called once, when every row is handed to the writer threads, before waiting for them.
    """
    schemas: dict[str, Any] = {}
    for v in files.values():
        v["nbytes"] = 0
    datasets = sorted(plan.parts)
    if not datasets and meanwhile is not None:
        meanwhile()
    for dataset in datasets:
        writers: dict[str, _FileWriter] = {}
        try:
            for name in plan.parts[dataset]:
                table = _with_derived(src.read(name), folds=folds, reweighting=reweighting)
                schemas.setdefault(dataset, table.schema)
                for s, rows in _by_split(table).items():
                    if s not in writers:
                        todo = [(f, v["rows"]) for f, v in sorted(files.items())
                                if v["dataset"] == dataset and v["split"] == s]
                        writers[s] = _FileWriter(ml_dir, todo, table.schema)
                    files[writers[s].files[0][0]]["nbytes"] += rows.nbytes  # approximate across file edges
                    writers[s].add(rows)
            if meanwhile is not None and dataset == datasets[-1]:
                meanwhile()
            for w in writers.values():
                w.finish()
            if any(w.files or w.buffered for w in writers.values()):
                raise RuntimeError(f"ML finalize: dataset {dataset!r}: fewer rows read than planned")
        except BaseException:
            for w in writers.values():
                w.abort()
            raise
    return schemas


def _write_hdf5(ml_dir: Path, parts: list[Path]) -> Path:
    import h5py
    import pyarrow.parquet as pq

    path = ml_dir / "jets_padded.h5"
    scalar = ["jet_pt", "jet_eta", "jet_phi", "jet_mass", "flavour_code", "is_signal", "run", "lumi", "event", "jet_index"]
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for part in parts:
            table = pq.read_table(readable(part))
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
    ds = _first_dataset(m)
    lines = [
        "# jettracks ML dataset",
        "",
        "One row per selected jet; track columns are variable-length lists (or fixed-length",
        "`pad_*` arrays with `pad_mask`). Units: GeV, cm, radians. Files: one dataset and one",
        "split each, `part-DATASET-SPLIT-NNN-HASH.parquet`, listed in `manifest.json`.",
        "",
        "Read it back in one line (from the run directory, the parent of `ml/`). Datasets of",
        "different formats have different columns: take the union of the columns (absent",
        "values NaN/None) or read one dataset's files (`ml/part-DATASET-*.parquet`):",
        "",
        "```python",
        "import glob; parts = glob.glob('ml/part-*.parquet')  # every dataset's files",
        "import pandas as pd; df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)  # pandas, union of columns",
        "import pyarrow as pa, pyarrow.dataset as ds, pyarrow.parquet as pq; t = ds.dataset(parts, schema=pa.unify_schemas([pq.read_schema(p) for p in parts])).to_table()  # pyarrow",
        f"import awkward as ak; a = ak.from_parquet('ml/part-{ds}-*.parquet')  # awkward, one dataset",
        "```",
        "",
        "Hugging Face `datasets` (the card above: train / validation / test), jettracks'",
        "streaming loader (numpy batches, standardised with the training split's statistics,",
        "weights), and weaver-core (`weaver.yaml`):",
        "",
        "```python",
        "import datasets; dd = datasets.load_dataset('ml')  # DatasetDict: train, validation, test",
        "import jettracks.ml; batch = next(jettracks.ml.batches('ml', split='train', features=['jet_pt', 'n_tracks'], weights='flat'))",
        "```",
        "",
        "```bash",
        "cd ml && weaver --data-config weaver.yaml --data-train 'part-*-train-*.parquet' --data-val 'part-*-validation-*.parquet' ...",
        "```",
        "",
        f"Rows: {m['rows']:,} in {m['parts']} files; content hash {m.get('content_hash', '')} (rows:hash over run, lumi, event, jet_index).",
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
        "## Standardisation, weights, folds",
        "",
        "`manifest.json` holds, from the training split only: `standardization` (per numeric",
        "feature: median, p16, p84, mean, std, scale = max(p84 - median, median - p16), clip;",
        "z = clip((x - median) / scale, -clip, clip)), `weights` (the (pT, |η|) bins, the",
        "`flat` and `to_reference` tables per flavour behind the `weight_flat` and",
        "`weight_reference` columns, `class_weights` = N / (K · N_class)). `fold` (0..k-1,",
        f"k = {m.get('folds', '')}) comes from the same event hash as `split`.",
        "",
        "## Columns",
        "",
        "| name | dtype | unit | meaning | how computed |",
        "|---|---|---|---|---|",
        *[f"| `{c['name']}` | {c['dtype']} | {c['unit']} | {c['meaning']} | {c['computed']} |" for c in m["columns"]],
        "",
    ]
    return "\n".join(lines)
