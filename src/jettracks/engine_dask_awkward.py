"""The dask-awkward engine: one lazy graph for every dataset, one ``dask.compute``.

The ``runner`` engine (coffea ``Runner`` + ``DaskExecutor``) calls
``processor.process`` once per chunk and sums the returned dicts. This engine
builds the same analysis as a lazy dask-awkward graph instead:

1. chunk every file with coffea's :func:`coffea.dataset_tools.preprocess`
   (``step_size=chunksize``; the steps are the Runner's chunks: both use
   ``n = max(round(entries / chunksize), 1)`` steps of ``ceil(entries / n)``);
2. per dataset, ``NanoEventsFactory.from_root(..., mode="dask",
   schemaclass=BaseSchema)`` over those steps (one partition per chunk), reading
   only the reader's branches;
3. ``dak.map_partitions`` runs :class:`_PartitionAnalysis` on every partition:
   the concrete branch calls ``processor.analyse`` once (reader + selection +
   numba association + flavour; the Runner's per-chunk code), then
   ``processor.process`` with ``analyse`` bound to that result, and returns
   **one row per partition**: the flat per-jet and per-track arrays the
   histograms need, plus everything else ``process`` returned (cut flow, entries
   read, notices, ML part written on the worker, ...) pickled, so those are the
   processor's own outputs. The typetracer branch touches every column the
   concrete branch reads (else dask-awkward's column projection drops them:
   "buffer ... excluded during a pre-run phase") and returns the output form by
   running the same code on a length-zero concrete array;
4. fills ``hist.dask`` histograms from those flat arrays (flavour as an
   ``IntCategory`` of :data:`jettracks.physics.flavour.CODES`; which array fills which
   histogram mirrors ``JetTrackProcessor.fill``: :data:`HIST_SOURCES`), computes
   everything of every dataset in one call, sums the non-histogram outputs with
   coffea's ``accumulate`` and converts the histograms into the processor's layout
   (``dataset`` x ``flavour`` StrCategory x variable, the axes of
   ``processor.fill``), so ``h.values(flow=True)`` equals the Runner's.

Not supported on this engine: per-chunk failures (``skip_bad_files``), retries
of single chunks beyond Dask's own task retries, and checkpoints/resume. A chunk
that fails fails the run with :class:`DaskAwkwardEngineError`, one line naming the
file, the entry range and the reason: read errors are caught by uproot's read
report (``allow_read_errors_with_report``; the other chunks still run), errors of
the processor in the partition function are re-raised with the chunk's file.

Only processors with the :class:`~processors.jet_tracks.JetTrackProcessor`
interface (``analyse``, ``fill``, ``cutflow``) can run here: the engine does
what ``process`` does, split into a lazy part and a final conversion.
"""

from __future__ import annotations

import copy
import hashlib
import pickle
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import awkward as ak
import numpy as np

from .physics import flavour as flav

__all__ = [
    "HIST_SOURCES",
    "DaskAwkwardEngineError",
    "LazyRun",
    "build_graph",
    "chunk_steps",
    "process_dask_awkward",
    "read_failures",
    "run_dask_awkward",
    "smoke_test",
]

#: Flavour codes in the order of :data:`jettracks.physics.flavour.LABELS` (IntCategory bins ↔ StrCategory bins).
FLAVOUR_CODES: tuple[int, ...] = tuple(flav.CODES[label] for label in flav.LABELS)

#: Histogram name -> (collection, quantity) it is filled from, mirroring ``JetTrackProcessor.fill``:
#: ``jet``: every selected jet; ``track``: every associated track; ``valid``: tracks with a
#: valid dxy (``dxy_err > 0``, finite dxy); ``valid_sig``: those with a finite ``dxy_err`` too.
HIST_SOURCES: dict[str, tuple[str, str]] = {
    "jet_pt": ("jet", "pt"),
    "jet_eta": ("jet", "eta"),
    "jet_n_tracks": ("jet", "n_tracks"),
    "track_jet_dr": ("track", "dr"),
    "track_dxy": ("valid", "dxy"),
    "track_abs_dxy": ("valid", "absdxy"),
    "track_dxy_significance": ("valid_sig", "sig"),
}


class DaskAwkwardEngineError(RuntimeError):
    """The dask-awkward stack or the processor cannot run this engine."""


# -- smoke test ----------------------------------------------------------------------------
def smoke_test(scheduler: Any = "sync") -> None:
    """A minimal dask-awkward compute (map_partitions + reduction + hist.dask fill).

    Why: an unpinned resolver once picked dask-awkward 2025.3.0 with
    dask 2026.x, where *every* dask-awkward compute fails ("Cannot fuse tasks with
    multiple outputs") while ``pip check`` is clean. Raises
    :class:`DaskAwkwardEngineError` naming the versions when such a stack is installed.
    """
    import dask
    import dask_awkward as dak
    import hist
    import hist.dask

    try:
        arr = dak.from_awkward(ak.Array([[1.0, 2.0], [], [3.0], [4.0, 5.0]]), npartitions=2)
        doubled = dak.map_partitions(_double, arr, label="smoke-double")
        h = hist.dask.Hist(hist.axis.Regular(5, 0, 20, name="x"))
        h.fill(x=dak.flatten(doubled))
        total, counts = dask.compute(dak.sum(doubled), h, scheduler=scheduler)
    except Exception as err:  # pragma: no cover - only on a broken stack
        raise DaskAwkwardEngineError(
            f"dask-awkward smoke test failed ({err.__class__.__name__}: {err}); "
            f"versions: {_versions()}; install coffea[dask,dask-awkward] (its extras pin a working dask)"
        ) from err
    if float(total) != 30.0 or counts.sum() != 5:  # pragma: no cover
        raise DaskAwkwardEngineError(
            f"dask-awkward smoke test gave wrong results (sum {total}, entries {counts.sum()}); "
            f"versions: {_versions()}"
        )


def _double(a):
    return a * 2


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("dask", "distributed", "dask-awkward", "dask-histogram", "awkward", "coffea"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} absent")
    return ", ".join(out)


# -- chunking ------------------------------------------------------------------------------
def chunk_steps(num_entries: int, chunksize: int) -> list[list[int]]:
    """Steps ``[start, stop)`` of one file: coffea's rule (Runner and ``preprocess`` alike).

    ``n = max(round(entries / chunksize), 1)`` steps of ``ceil(entries / n)`` entries;
    an empty file is one empty step ``[0, 0]``.
    """
    if num_entries <= 0:
        return [[0, 0]]
    n = max(round(num_entries / chunksize), 1)
    size = -(-num_entries // n)
    return [[i * size, min((i + 1) * size, num_entries)] for i in range(n) if i * size < num_entries]


def _preprocess(
    fileset: Mapping[str, Mapping[str, Any]], chunksize: int, client, uproot_options=None
) -> dict[str, dict[str, dict]]:
    """``{dataset: {file: {"steps", "num_entries", "uuid"}}}`` from coffea's preprocess."""
    from coffea.dataset_tools import DataGroupSpec, preprocess

    spec = DataGroupSpec.model_validate(
        {
            name: {
                "files": {f: {"object_path": ds["treename"]} for f in ds["files"]},
                "metadata": dict(ds.get("metadata") or {}),
            }
            for name, ds in fileset.items()
        }
    )
    available, _updated = preprocess(
        spec,
        step_size=chunksize,
        save_form=False,  # the form comes from the first file, filtered to our branches
        scheduler=client if client is not None else "sync",
        uproot_options=dict(uproot_options or {}),
    )
    out: dict[str, dict[str, dict]] = {}
    for name, ds in fileset.items():
        files = available[name].files.model_dump() if name in available else {}
        out[name] = {}
        for f in ds["files"]:
            info = files.get(f)
            if info is None:
                raise DaskAwkwardEngineError(f"{f}: preprocess could not open the file (dataset {name})")
            out[name][f] = {
                "steps": [list(map(int, s)) for s in info["steps"]],
                "num_entries": int(info["num_entries"]),
                "uuid": info.get("uuid"),
            }
    return out


# -- the per-partition function ------------------------------------------------------------
class _EventsView:
    """A partition's events plus the per-chunk metadata ``process`` reads (``events.metadata``)."""

    def __init__(self, events, metadata: dict[str, Any]) -> None:
        self._events = events
        self.metadata = metadata

    def __getattr__(self, name):
        return getattr(self._events, name)

    def __getitem__(self, key):
        return self._events[key]

    def __len__(self) -> int:
        return len(self._events)


class _PartitionAnalysis:
    """Mapped over the partitions of one dataset: ``(events, info) -> 1 row``.

    ``info`` is a one-row partition ``{file, start, stop, uuid}`` naming the chunk.
    The row holds the flat per-jet/per-track arrays the lazy histograms need and,
    pickled in ``extras``, everything else ``processor.process`` returns for the chunk
    (cut flow, entries, notices, ML part, ...): ``process`` runs with ``analyse``
    bound to this chunk's analysis, so those outputs are the processor's own.
    """

    def __init__(self, processor, dataset: str, metadata: dict[str, Any], columns: list[str]) -> None:
        self.processor = processor
        self.dataset = dataset
        self.metadata = dict(metadata)
        self.fmt = self.metadata["format"]
        self.is_mc = bool(self.metadata.get("is_mc", True))
        self.columns = list(columns)

    def __call__(self, events, info):
        if ak.backend(events) == "typetracer":
            # Touch what the concrete branch reads: the reader's branches and the chunk info
            # (untouched columns are projected away and never read).
            for name in self.columns:
                if name in events.fields:
                    ak.typetracer.touch_data(events[name])
            ak.typetracer.touch_data(info)
            # The output form: the same code on a length-zero concrete array.
            row = self.row(length_zero(events), None)
            return ak.Array(row.layout.to_typetracer(forget_length=True))
        try:
            return self.row(events, info)
        except Exception as err:  # noqa: BLE001 - any failure: name the chunk (dask's traceback does not)
            message = f"{_chunk_name(info)}: {_error_text(err)}"
        # Raised outside the except block: no chained context, so the line is the error.
        raise DaskAwkwardEngineError(message)

    def analyse(self, events):
        return self.processor.analyse(events, fmt=self.fmt, is_mc=self.is_mc)

    def process(self, events, chunk, info) -> dict[str, Any]:
        """``processor.process`` on this chunk, reusing ``chunk`` (no second analysis)."""
        meta = {**self.metadata, "dataset": self.dataset}
        proc = copy.copy(self.processor)
        proc.analyse = lambda *_args, **_kwargs: chunk
        if info is None:  # length-zero probe: no ML part
            proc.ml_dir = None
            meta.update(filename="", entrystart=0, entrystop=0, fileuuid="")
        else:
            rec = info[0]
            meta.update(
                filename=str(rec["file"]),
                treename=str(rec["tree"]),
                entrystart=int(rec["start"]),
                entrystop=int(rec["stop"]),
                fileuuid=str(rec["uuid"]),
            )
        return proc.process(_EventsView(events, meta))

    def row(self, events, info) -> ak.Array:
        t0 = time.perf_counter()
        chunk = self.analyse(events)
        output = self.process(events, chunk, info)
        hists_made = sorted(output.pop("hists", {}))
        codes = np.asarray(chunk.flavour_codes).astype(np.int64)
        jets, jet_tracks = chunk.jets, chunk.jet_tracks
        n_per_jet = ak.to_numpy(ak.num(jet_tracks, axis=1)).astype(np.int64)
        flat_tracks = ak.flatten(jet_tracks, axis=1)
        dxy, dxy_err, valid = chunk.track_dxy()
        if not chunk.batch.has_dxy:
            valid = np.zeros(len(dxy), dtype=bool)
        fields = {
            "jet_pt": ak.to_numpy(jets["pt"]).astype(np.float64),
            "jet_eta": ak.to_numpy(jets["eta"]).astype(np.float64),
            "jet_flavour": codes,
            "jet_n_tracks": n_per_jet,
            "trk_dr": ak.to_numpy(flat_tracks["dr"]).astype(np.float64),
            "trk_flavour": np.repeat(codes, n_per_jet),
            "trk_dxy": np.asarray(dxy, dtype=np.float64),
            "trk_dxy_err": np.asarray(dxy_err, dtype=np.float64),
            "trk_valid": np.asarray(valid, dtype=bool),
        }
        row: dict[str, Any] = {
            k: ak.unflatten(ak.Array(v), np.array([len(v)], dtype=np.int64)) for k, v in fields.items()
        }
        row["extras"] = ak.Array([pickle.dumps({"output": output, "hists": hists_made})])
        row["seconds"] = np.array([time.perf_counter() - t0], dtype=np.float64)
        return ak.zip(row, depth_limit=1)


def _error_text(err: BaseException) -> str:
    """``Type: message`` on one line (at most 300 characters)."""
    text = " ".join(f"{err.__class__.__name__}: {err}".split())
    return text if len(text) <= 300 else text[:297] + "..."


def _chunk_name(info) -> str:
    """``file entries a-b`` of a partition's one-row info (``?`` when absent)."""
    try:
        rec = info[0]
        return f"{rec['file']} entries {int(rec['start'])}-{int(rec['stop'])}"
    except Exception:  # noqa: BLE001  # pragma: no cover - info is always one row
        return "?"


def read_failures(report, parts: list[tuple[str, int, int]]) -> list[str]:
    """One line per failed chunk of uproot's read report (``file entries a-b: Type: message``).

    ``report`` has one row per partition, in partition order (``parts``); a row whose
    ``exception`` is set is a chunk uproot could not read (missing branch, corrupt
    basket, file gone since the metadata pass, ...).
    """
    out = []
    for (f, a, b), exc, msg in zip(parts, report["exception"].to_list(), report["message"].to_list()):
        if exc is not None:
            hint = " (no such branch in this file)" if exc in ("KeyError", "KeyInFileError") else ""
            out.append(" ".join(f"{f} entries {a}-{b}: {exc}: {msg}{hint}".split()))
    return out


def length_zero(events) -> ak.Array:
    """A length-zero concrete array of the same form as ``events`` (typetracer or dak)."""
    form = events.form if hasattr(events, "form") else events.layout.form
    return ak.Array(form.length_zero_array(highlevel=False), behavior=getattr(events, "behavior", None))


# -- the engine ------------------------------------------------------------------------------
def run_dask_awkward(
    fileset: Mapping[str, Mapping[str, Any]],
    processor,
    *,
    client=None,
    chunksize: int,
    branches: set[str] | list[str],
    progress: bool = True,
    num_entries: Mapping[str, int] | None = None,
    file_uuids: Mapping[str, str] | None = None,
    uproot_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run ``processor`` over ``fileset`` as one dask-awkward graph.

    Args:
        fileset: ``{dataset: {"files": [...], "treename": ..., "metadata": {"format": ..., "is_mc": ...}}}``
            (as :func:`jettracks.execution._prepare_datasets` builds it).
        processor: a :class:`~processors.jet_tracks.JetTrackProcessor` (``analyse``, ``fill``,
            ``cutflow``; ``ml_dir`` set: every chunk writes its Parquet part on the worker).
        client: a ``distributed.Client``; ``None`` computes in this process (sync scheduler).
        chunksize: entries per chunk (coffea's chunking; equal to the Runner's chunks).
        branches: branches to read (the readers' ``branches()``); anything else is never read.
        progress: show Dask's progress bar while computing.
        num_entries: optional entries per file (e.g. the run's metadata cache); when it covers
            every file, the steps are computed here and ``preprocess`` (which opens every file)
            is skipped.
        file_uuids: optional file UUIDs (``str(uuid.UUID)``) naming the ML parts, with ``num_entries``.
        uproot_options: extra options for ``uproot.open`` of every chunk (e.g. ``{"timeout": 60}``
            for XRootD); ``filter_name`` is set from ``branches``.

    Returns:
        The Runner engine's output (``hists``, ``cutflow``, ``entries`` (file -> entries
        read), ``notices``, ``ml_parts`` and any other key ``process`` returns, e.g.
        ``association_comparison``) plus ``chunks``: one ``(file, start, stop, seconds)``
        per chunk (seconds inside the partition function; reading excluded).

    Raises:
        DaskAwkwardEngineError: broken dask-awkward stack or unsuitable processor.
        Exception: whatever a chunk raised (the whole compute stops; no per-chunk failures).
    """
    import dask

    smoke_test(client if client is not None else "sync")
    plan = build_graph(
        fileset, processor, client=client, chunksize=chunksize, branches=branches,
        num_entries=num_entries, file_uuids=file_uuids, uproot_options=uproot_options,
    )
    if plan is None:
        return {"hists": {}, "cutflow": {}, "entries": {}, "notices": set(), "ml_parts": [], "chunks": []}
    lazy_hists, summaries, templates, partitions = (
        plan.lazy_hists, plan.summaries, plan.templates, plan.partitions
    )

    # Every dataset in one compute: one graph, one optimisation (column projection) pass.
    keys = (
        [("h", ds, h) for ds in lazy_hists for h in lazy_hists[ds]]
        + [("s", ds, None) for ds in summaries]
        + [("r", ds, None) for ds in plan.read_reports]
    )
    lazy = {"s": summaries, "r": plan.read_reports}
    collections = [lazy_hists[ds][h] if kind == "h" else lazy[kind][ds] for kind, ds, h in keys]
    if client is not None and progress:
        from distributed import progress as dask_progress

        futures = client.compute(collections)
        dask_progress(futures)
        results = client.gather(futures)
    elif client is None and progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar():
            results = dask.compute(*collections, scheduler="sync")
    else:
        results = dask.compute(*collections, scheduler=client if client is not None else "sync")
    hists_done: dict[str, dict[str, Any]] = {ds: {} for ds in lazy_hists}
    summaries_done: dict[str, Any] = {}
    failed: list[str] = []
    for (kind, ds, h), res in zip(keys, results):
        if kind == "h":
            hists_done[ds][h] = res
        elif kind == "s":
            summaries_done[ds] = res
        else:
            failed += read_failures(res, partitions[ds])
    if failed:
        more = f" (and {len(failed) - 1} more failed chunks)" if len(failed) > 1 else ""
        raise DaskAwkwardEngineError(f"cannot read {failed[0]}{more}")
    return _assemble(hists_done, summaries_done, templates, partitions)


@dataclass
class LazyRun:
    """The lazy graph of a run (see :func:`build_graph`).

    Attributes:
        lazy_hists: dataset -> histogram name -> ``hist.dask.Hist`` (flavour IntCategory x variable).
        summaries: dataset -> dask-awkward array, one row per chunk (cutflow, entries, notices, ...).
        templates: dataset -> the processor's empty histograms for that dataset's format.
        partitions: dataset -> ``(file, start, stop)`` of each partition, in partition order.
        read_reports: dataset -> uproot's read report, one row per partition (``exception``
            and ``message`` set where the chunk could not be read; see :func:`read_failures`).
    """

    lazy_hists: dict[str, dict[str, Any]]
    summaries: dict[str, Any]
    templates: dict[str, dict[str, Any]]
    partitions: dict[str, list[tuple[str, int, int]]]
    read_reports: dict[str, Any] = None  # type: ignore[assignment]


def build_graph(
    fileset: Mapping[str, Mapping[str, Any]],
    processor,
    *,
    client=None,
    chunksize: int,
    branches: set[str] | list[str],
    num_entries: Mapping[str, int] | None = None,
    file_uuids: Mapping[str, str] | None = None,
    uproot_options: Mapping[str, Any] | None = None,
) -> LazyRun | None:
    """Build (do not compute) the lazy graph of :func:`run_dask_awkward`; ``None``: no files.

    ``client`` is used only by ``preprocess`` (when ``num_entries`` does not cover every file).
    """
    import dask_awkward as dak
    import hist
    import hist.dask
    from coffea.nanoevents import BaseSchema, NanoEventsFactory

    for attr in ("analyse", "fill", "cutflow"):
        if not callable(getattr(processor, attr, None)):
            raise DaskAwkwardEngineError(
                f"engine dask-awkward needs a processor with {attr}() (JetTrackProcessor); "
                f"{type(processor).__name__} has none: use engine runner"
            )
    branches = sorted(set(branches))
    fileset = {k: v for k, v in fileset.items() if v.get("files")}
    if not fileset:
        return None

    all_files = [f for ds in fileset.values() for f in ds["files"]]
    if num_entries is not None and all(f in num_entries for f in all_files):
        uuids = dict(file_uuids or {})
        steps = {
            name: {
                f: {"steps": chunk_steps(int(num_entries[f]), chunksize), "num_entries": int(num_entries[f]),
                    "uuid": uuids.get(f)}
                for f in ds["files"]
            }
            for name, ds in fileset.items()
        }
    else:
        steps = _preprocess(fileset, chunksize, client, uproot_options)

    run_token = uuid.uuid4().hex  # distinct keys per run: never reuse a previous run's results
    lazy_hists: dict[str, dict[str, Any]] = {}
    summaries: dict[str, Any] = {}
    templates: dict[str, dict[str, hist.Hist]] = {}
    partitions: dict[str, list[tuple[str, int, int]]] = {}
    read_reports: dict[str, Any] = {}
    for name, ds in fileset.items():
        meta = dict(ds.get("metadata") or {})
        fmt = meta["format"]
        files_spec = {
            f: {"object_path": ds["treename"], "steps": steps[name][f]["steps"]} for f in ds["files"]
        }
        made = NanoEventsFactory.from_root(
            files_spec,
            mode="dask",
            schemaclass=BaseSchema,
            metadata={**meta, "dataset": name},
            uproot_options={
                **dict(uproot_options or {}),
                "filter_name": branches,
                # A chunk that cannot be read becomes a report row naming its file (and an
                # empty partition) instead of an anonymous exception from dask.compute.
                "allow_read_errors_with_report": (Exception,),
            },
        ).events()
        events, read_reports[name] = made if isinstance(made, tuple) else (made, None)
        if read_reports[name] is None:
            del read_reports[name]
        parts = [(f, a, b) for f in ds["files"] for a, b in steps[name][f]["steps"]]
        if events.npartitions != len(parts):
            raise DaskAwkwardEngineError(
                f"dataset {name}: {events.npartitions} partitions for {len(parts)} chunks"
            )
        partitions[name] = parts
        info = dak.from_lists(
            [
                [{"file": f, "tree": ds["treename"], "start": a, "stop": b,
                  "uuid": str(steps[name][f]["uuid"] or _path_uuid(f))}]
                for f, a, b in parts
            ]
        )
        reader = processor.reader_for(fmt) if hasattr(processor, "reader_for") else None
        columns = reader.branches() if reader is not None else list(branches)
        columns = [c for c in columns if c in set(branches)] or list(branches)
        fn = _PartitionAnalysis(processor, name, meta, columns)

        # Templates: the processor's own empty histograms for this dataset's format.
        zero_chunk = fn.analyse(length_zero(events))
        templates[name] = processor.fill(name, zero_chunk)

        out = dak.map_partitions(fn, events, info, label=f"jettracks-{name}", token=f"{name}-{run_token}")
        jet_flav = dak.flatten(out.jet_flavour)
        trk_flav = dak.flatten(out.trk_flavour)
        valid = dak.flatten(out.trk_valid)
        v_flav = trk_flav[valid]
        v_dxy = dak.flatten(out.trk_dxy)[valid]
        v_err = dak.flatten(out.trk_dxy_err)[valid]
        has_sig = np.isfinite(v_err)  # IsoTracks carry no dxy error (+inf): no significance
        sources = {
            "jet": (jet_flav, {"pt": dak.flatten(out.jet_pt), "eta": dak.flatten(out.jet_eta),
                               "n_tracks": dak.flatten(out.jet_n_tracks)}),
            "track": (trk_flav, {"dr": dak.flatten(out.trk_dr)}),
            "valid": (v_flav, {"dxy": v_dxy, "absdxy": np.abs(v_dxy)}),
            "valid_sig": (v_flav[has_sig], {"sig": v_dxy[has_sig] / v_err[has_sig]}),
        }
        lazy_hists[name] = {}
        for hname, tmpl in templates[name].items():
            if hname not in HIST_SOURCES:
                raise DaskAwkwardEngineError(
                    f"histogram {hname!r} of {type(processor).__name__}.fill has no lazy fill in "
                    "engine dask-awkward (HIST_SOURCES): use engine runner or extend the engine"
                )
            coll, quantity = HIST_SOURCES[hname]
            flavour, values = sources[coll]
            var_axis = tmpl.axes[2]
            lazy = hist.dask.Hist(
                hist.axis.IntCategory(list(FLAVOUR_CODES), name="flavour"),
                _copy_axis(var_axis),
                storage=tmpl.storage_type(),
            )
            lazy.fill(**{"flavour": flavour, var_axis.name: values[quantity]})
            lazy_hists[name][hname] = lazy
        summaries[name] = out[["extras", "seconds"]]

    return LazyRun(lazy_hists, summaries, templates, partitions, read_reports)


def _assemble(hists_done, summaries_done, templates, partitions) -> dict[str, Any]:
    """Convert computed lazy histograms + per-chunk rows into the Runner's output layout."""
    import hist
    from coffea.processor import accumulate

    outputs: list[dict[str, Any]] = []
    made: dict[str, set[str]] = {}
    chunks: list[tuple[str, int, int, float]] = []
    for name, rows in summaries_done.items():
        if len(rows) != len(partitions[name]):
            raise DaskAwkwardEngineError(
                f"dataset {name}: {len(rows)} chunk results for {len(partitions[name])} chunks"
            )
        made[name] = set()
        for extras, seconds, (f, a, b) in zip(rows["extras"].to_list(), rows["seconds"].to_list(),
                                              partitions[name]):
            extra = pickle.loads(extras)
            outputs.append(extra["output"])
            made[name].update(extra["hists"])
            chunks.append((f, a, b, round(float(seconds), 4)))
        unknown = made[name] - set(templates[name])
        if unknown:
            raise DaskAwkwardEngineError(
                f"dataset {name}: chunks made histograms {sorted(unknown)} absent from the "
                "length-zero template (format-dependent histograms must not depend on the data)"
            )
    result: dict[str, Any] = accumulate(outputs) if outputs else {}
    result.setdefault("cutflow", {})
    result.setdefault("entries", {})
    result.setdefault("notices", set())
    result.setdefault("ml_parts", [])

    # A histogram exists when some chunk's fill() made it (Runner: union of the chunks'
    # dicts); a dataset is a category of it when at least one entry was filled (growth).
    names: list[str] = []
    for name in templates:
        names += [h for h in templates[name] if h in made[name] and h not in names]
    hists: dict[str, hist.Hist] = {}
    for hname in names:
        owners = [ds for ds in templates if hname in made[ds]]
        tmpl = templates[owners[0]][hname]
        filled = [ds for ds in owners if hists_done[ds][hname].values(flow=True).sum() > 0]
        h = hist.Hist(
            hist.axis.StrCategory(filled, growth=True, name=tmpl.axes[0].name, label=tmpl.axes[0].label),
            *[_copy_axis(ax) for ax in tmpl.axes[1:]],
            storage=tmpl.storage_type(),
        )
        view = h.view(flow=True)
        for i, ds in enumerate(filled):
            lazy_view = hists_done[ds][hname].view(flow=True)
            if lazy_view.shape != view.shape[1:]:
                raise DaskAwkwardEngineError(f"{hname}: shape {lazy_view.shape} != {view.shape[1:]}")
            view[i] = lazy_view
        hists[hname] = h
    result["hists"] = hists
    result["chunks"] = chunks
    return result


def _copy_axis(axis):
    return copy.deepcopy(axis)


def _uuid_text(value) -> str | None:
    """A file UUID as the Runner puts it in ``events.metadata["fileuuid"]`` (``str(uuid.UUID)``),
    so both engines name the ML parts alike."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (bytes, bytearray)) and len(value) == 16:
            return str(uuid.UUID(bytes=bytes(value)))
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(value)


def _path_uuid(path: str) -> str:
    """A stable stand-in file UUID (ML part names must not change on a task retry)."""
    return hashlib.sha1(path.encode()).hexdigest()[:32]


# -- drop-in for execution._process ------------------------------------------------------------
def process_dask_awkward(fileset, meta, proc, client, ex, branches, checkpointer=None, progress=True):
    """Same signature and return value as ``execution._process``: ``(output, failures, chunk_times, n_chunks)``.

    Uses the run's file metadata (``meta[(dataset, file)]["numentries"]``) for the steps,
    so no file is opened twice. ``checkpointer`` is ignored (no checkpoints on this
    engine) and ``failures`` is always empty: a failing chunk raises.
    """
    del checkpointer
    from .failures import readable_fileset

    good = readable_fileset(fileset, meta)
    num_entries: dict[str, int] = {}
    uuids: dict[str, str] = {}
    for ds, spec in good.items():
        for f in spec["files"]:
            m = meta[(ds, f)]
            num_entries[f] = int(m["numentries"])
            uuids[f] = _uuid_text(m.get("uuid") or m.get("uuid_hex"))
    if not good:
        return {}, [], [], 0
    output = run_dask_awkward(
        good,
        proc,
        client=client,
        chunksize=ex.chunksize,
        branches=branches,
        progress=progress,
        num_entries=num_entries,
        file_uuids=uuids,
        uproot_options={"timeout": ex.xrootd_timeout},
    )
    chunks = output.pop("chunks")
    return output, [], chunks, len(chunks)
