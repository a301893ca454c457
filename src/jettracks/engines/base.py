"""One engine contract: chunks in, the processor's summed output and one record per chunk out.

Every engine runs the same chunks (:func:`plan_chunks`, coffea's chunking rule)
through the same guarded per-chunk call (:func:`run_chunk`): checkpoint load,
read, ``processor.process``, checkpoint save, retries, timing and failure capture
live here once. Engines differ only in *where* ``run_chunk`` runs and how its
results come back to the client:

- ``runner`` (:mod:`jettracks.engines.runner`): one Dask task per chunk, or
  in-process chunk by chunk without a client (the serial reference);
- ``dask-awkward`` (:mod:`jettracks.engines.dask_awkward`): a
  ``dask_awkward.from_map`` collection with one partition per chunk.

Both return an :class:`EngineResult`: the processor's own output (its
histograms, cut flow, ... summed with coffea's accumulator rules) and one
:class:`ChunkRecord` per chunk (``ok``, ``failed`` with a one-line error, or
``checkpoint``).
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import sys
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ContextManager, Literal

from ..failures import error_line, is_permanent
from .progress import Progress, ProgressState
from ..io import rntuple as _rntuple
from . import handles as _handles
from . import reading as _reading

if TYPE_CHECKING:  # pragma: no cover
    from ..failures import ChunkFailure

__all__ = [
    "ENGINES",
    "ChunkReader",
    "ChunkRecord",
    "ChunkSpec",
    "Engine",
    "EngineResult",
    "Progress",
    "ProgressState",
    "Totals",
    "accumulate_into",
    "chunk_steps",
    "get_engine",
    "plan_chunks",
    "run_chunk",
    "transfer_outputs",
    "uuid_text",
]

#: What became of a chunk: processed now, failed after its attempts, or taken from its checkpoint.
Status = Literal["ok", "failed", "checkpoint"]


# -- chunks ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChunkSpec:
    """One chunk: entries ``[entrystart, entrystop)`` of one file's tree.

    Attributes:
        dataset: dataset name (the fileset key).
        filename: file path or URL, as listed in the fileset.
        treename: path of the tree in the file.
        entrystart: first entry (inclusive).
        entrystop: last entry (exclusive); ``entrystart == entrystop == 0`` for an empty file.
        fileuuid: the file's UUID as coffea's Runner writes it into ``events.metadata``
            (``str(uuid.UUID(bytes=...))``, 36 hex characters with dashes; ``""`` when
            unknown). It names the checkpoint and the ML part, so both must agree across engines.
        metadata: the dataset's metadata (``format``, ``is_mc``, ...); not part of the
            chunk's identity (not compared, not hashed).
    """

    dataset: str
    filename: str
    treename: str
    entrystart: int
    entrystop: int
    fileuuid: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def entries(self) -> int:
        """Entries in the chunk."""
        return self.entrystop - self.entrystart

    @property
    def key(self) -> tuple[str, str, int, int]:
        """``(dataset, filename, entrystart, entrystop)``: the chunk's identity within a run."""
        return (self.dataset, self.filename, self.entrystart, self.entrystop)

    def events_metadata(self) -> dict[str, Any]:
        """``events.metadata`` for this chunk, built as coffea's Runner builds it: the chunk's
        fields, then the dataset's metadata on top. Also the checkpoint key's input."""
        meta: dict[str, Any] = {
            "dataset": self.dataset,
            "filename": self.filename,
            "treename": self.treename,
            "entrystart": self.entrystart,
            "entrystop": self.entrystop,
            "fileuuid": self.fileuuid,
        }
        meta.update(self.metadata)
        return meta


def chunk_steps(num_entries: int, chunksize: int) -> list[tuple[int, int]]:
    """Entry ranges ``(start, stop)`` of one file: coffea's rule, the same for every engine.

    ``n = max(round(entries / chunksize), 1)`` steps of ``ceil(entries / n)`` entries
    (coffea's ``FileMeta.chunks`` and ``dataset_tools.preprocess`` alike); an empty
    file is one empty step ``(0, 0)`` (coffea yields it too: the file is accounted for).

    Args:
        num_entries: entries in the file's tree (>= 0).
        chunksize: target entries per chunk (> 0).
    """
    if chunksize <= 0:
        raise ValueError(f"chunksize must be > 0, got {chunksize!r}")
    if num_entries <= 0:
        return [(0, 0)]
    n = max(round(num_entries / chunksize), 1)
    size = -(-num_entries // n)  # ceil
    return [(i * size, min((i + 1) * size, num_entries)) for i in range(n) if i * size < num_entries]


def uuid_text(file_meta: Mapping[str, Any]) -> str:
    """A file's UUID (``meta[(dataset, file)]``: ``uuid`` bytes or ``uuid_hex``) as
    ``str(uuid.UUID)``, the form coffea's Runner puts in ``events.metadata["fileuuid"]``;
    ``""`` when the metadata has none."""
    raw = file_meta.get("uuid")
    if isinstance(raw, (bytes, bytearray)) and len(raw) == 16:
        return str(uuidlib.UUID(bytes=bytes(raw)))
    text = file_meta.get("uuid_hex") or (raw if isinstance(raw, str) else "")
    if not text:
        return ""
    try:
        return str(uuidlib.UUID(hex=str(text)))
    except ValueError:  # not a UUID: keep it, it still names the file consistently
        return str(text)


def plan_chunks(
    fileset: Mapping[str, Mapping[str, Any]],
    meta: Mapping[tuple[str, str], Mapping[str, Any]],
    chunksize: int,
) -> list[ChunkSpec]:
    """Every chunk of every file whose metadata was read, in fileset order.

    Args:
        fileset: ``{dataset: {"files": [...], "treename": str, "metadata": {...}}}``.
        meta: ``{(dataset, file): {"numentries": int, "uuid": bytes, "uuid_hex": str}}``;
            files absent here (unreadable at metadata time) get no chunk.
        chunksize: target entries per chunk (see :func:`chunk_steps`).
    """
    specs: list[ChunkSpec] = []
    for ds, spec in fileset.items():
        ds_meta = dict(spec.get("metadata") or {})
        for fname in spec["files"]:
            m = meta.get((ds, fname))
            if m is None:
                continue
            fileuuid = uuid_text(m)
            for start, stop in chunk_steps(int(m["numentries"]), chunksize):
                specs.append(ChunkSpec(ds, fname, spec["treename"], start, stop, fileuuid, ds_meta))
    return specs


# -- records and results ---------------------------------------------------------------------
@dataclass
class ChunkRecord:
    """What happened to one chunk.

    Attributes:
        spec: the chunk.
        status: ``ok`` (processed in this run), ``failed`` (every attempt failed, or the
            error is permanent: :func:`jettracks.failures.is_permanent`) or
            ``checkpoint`` (output loaded from this run directory's checkpoint).
        error: the last attempt's error, one line ``Type: message`` (innermost cause);
            ``None`` unless failed.
        seconds: wall time of the whole guarded call (checkpoint load, every attempt's
            read + process, checkpoint save), in seconds.
        attempts: ``process`` attempts made (0 for a checkpoint).
        worker: the Dask worker that ran the chunk (its address; ``None`` in-process);
            not part of the record's equality (engines place chunks differently).
        peak_rss_mb: peak resident memory of the process that ran the chunk (a worker, or
            this process when serial), MiB, read when the chunk finished; ``None`` unless ok.
    """

    spec: ChunkSpec
    status: Status
    error: str | None = None
    seconds: float = 0.0
    attempts: int = 0
    worker: str | None = field(default=None, compare=False)
    peak_rss_mb: float | None = field(default=None, compare=False)
    #: ML part files a worker sends back through Dask (``{client path: bytes}``; output.transfer: dask)
    payload: dict[str, bytes] | None = field(default=None, compare=False, repr=False)

    @property
    def error_type(self) -> str | None:
        """The exception class name of :attr:`error` (``KeyInFileError``, ...), or None."""
        if self.error is None:
            return None
        return self.error.split(":", 1)[0].strip()

    def line(self) -> str:
        """``file entries a-b: <status or error>`` on one line."""
        s = self.spec
        what = self.error if self.status == "failed" else self.status
        return f"{s.filename} entries {s.entrystart}-{s.entrystop}: {what}"

    def as_failure(self) -> ChunkFailure:
        """This failed chunk as :class:`jettracks.failures.ChunkFailure` (the run report's type)."""
        from ..failures import ChunkFailure

        s = self.spec
        return ChunkFailure(s.dataset, s.filename, s.entrystart, s.entrystop, self.error or "", stage="process")


@dataclass
class EngineResult:
    """An engine's answer: the processor's summed output and one record per chunk.

    Attributes:
        output: the processor's outputs of every ``ok`` and ``checkpoint`` chunk, summed
            with coffea's accumulator rules, then passed through ``processor.postprocess``;
            ``{}`` when no chunk gave an output.
        records: one :class:`ChunkRecord` per planned chunk, in plan order.
        engine: the engine's name.
    """

    output: dict[str, Any]
    records: list[ChunkRecord]
    engine: str = ""

    @property
    def n_chunks(self) -> int:
        """Chunks planned (every record)."""
        return len(self.records)

    @property
    def failures(self) -> list[ChunkRecord]:
        """Records of the chunks that failed."""
        return [r for r in self.records if r.status == "failed"]

    @property
    def from_checkpoint(self) -> int:
        """How many chunks were taken from their checkpoint (the report's ``chunks_from_checkpoint``)."""
        return sum(r.status == "checkpoint" for r in self.records)

    def failures_as_chunkfailures(self) -> list[ChunkFailure]:
        """The failures as :class:`jettracks.failures.ChunkFailure`, for the run report."""
        return [r.as_failure() for r in self.failures]

    def peak_memory_by_worker(self) -> dict[str, float]:
        """Peak resident memory (MiB) of each process that ran chunks: the largest
        ``peak_rss_mb`` of its records, keyed by worker address (``"local"`` in-process)."""
        out: dict[str, float] = {}
        for r in self.records:
            if r.peak_rss_mb is not None:
                key = r.worker or "local"
                out[key] = max(out.get(key, 0.0), float(r.peak_rss_mb))
        return out

    def chunk_timings(self) -> list[dict[str, Any]]:
        """The chunks of :meth:`chunk_times` with their worker and attempts, sorted as
        ``sorted(chunk_times())``: ``{"file", "range": [start, stop], "seconds", "worker", "attempts",
        "peak_rss_mb"}``."""
        rows = [
            {"file": r.spec.filename, "range": [r.spec.entrystart, r.spec.entrystop],
             "seconds": round(r.seconds, 4), "worker": r.worker, "attempts": r.attempts,
             "peak_rss_mb": r.peak_rss_mb}
            for r in self.records
            if r.status == "ok"
        ]
        return sorted(rows, key=lambda d: (d["file"], *d["range"], d["seconds"]))

    def chunk_times(self) -> list[tuple[str, int, int, float]]:
        """``(file, start, stop, seconds)`` of the chunks processed in this run (the report's
        ``timing.chunks``; checkpoints and failures excluded, as before)."""
        return [
            (r.spec.filename, r.spec.entrystart, r.spec.entrystop, round(r.seconds, 4))
            for r in self.records
            if r.status == "ok"
        ]


# -- reading and the guarded per-chunk call ------------------------------------------------------

#: Share of a Dask worker's memory limit its kept cache maps may take (:func:`kept_maps_budget`).
KEPT_MAPS_SHARE = 0.1


def kept_maps_budget() -> int:
    """Bytes of column-cache memory maps this process may keep between chunks and runs:
    :data:`jettracks.io.column_cache.KEEP_MAPPED_BYTES`, and in a Dask worker with a memory
    limit at most :data:`KEPT_MAPS_SHARE` of it. Mapped pages count in the resident memory
    that the worker's memory monitor compares with the limit (pausing the worker at 80%)."""
    import sys

    from ..io.column_cache import KEEP_MAPPED_BYTES

    if "distributed" not in sys.modules:  # not a worker: not worth importing Dask (~0.3 s) to learn it
        return KEEP_MAPPED_BYTES
    try:
        from distributed import get_worker

        limit = get_worker().memory_manager.memory_limit
    except Exception:  # noqa: BLE001 - not in a worker (serial backend, a notebook's own process)
        return KEEP_MAPPED_BYTES
    return min(KEEP_MAPPED_BYTES, int(limit * KEPT_MAPS_SHARE)) if limit else KEEP_MAPPED_BYTES

@dataclass(frozen=True)
class ChunkReader:
    """Opens a chunk as NanoEvents, as coffea's Runner does (``BaseSchema``, ``mode="virtual"``:
    only the branches the processor touches are read, when it touches them).

    Called with a :class:`ChunkSpec`; a context manager yielding the events, whose file
    stays open until the block ends (virtual arrays read lazily).

    Attributes:
        branches: branches that may be read (``iteritems_options={"filter_name": ...}``);
            ``None`` (default): every branch of the tree.
        timeout: ``uproot.open`` timeout in seconds (XRootD); ``None`` (default): uproot's.
        uproot_options: extra ``uproot.open`` options; by default the project's
            ``handler`` (:class:`jettracks.io.files.AutoSource`: direct XRootD for ``root://``).
        batch_bytes: target uncompressed bytes of a sub-batch when a processor declares a
            column plan (:meth:`batches`; default
            :data:`~jettracks.engines.reading.DEFAULT_BATCH_BYTES`, 64 MiB).
        cache_dir: a column cache directory (:mod:`jettracks.io.column_cache`) for
            :meth:`batches`, or None (default).
        cache_max_bytes: the cache's size bound (bytes), or None (unbounded).
        cache_compression: Arrow IPC compression of cache entries: None, ``lz4`` or ``zstd``.
    """

    branches: tuple[str, ...] | None = None
    timeout: float | None = None
    uproot_options: Mapping[str, Any] | None = None
    batch_bytes: int = _reading.DEFAULT_BATCH_BYTES
    #: keep opened files for the next chunk of the same file (:mod:`jettracks.engines.handles`)
    reuse_files: bool = True
    #: ML parts come back through Dask, at most this many bytes a chunk (:func:`transfer_outputs`)
    transfer_bytes: int | None = None
    cache_dir: str | None = None
    cache_max_bytes: int | None = None
    cache_compression: str | None = None

    def _open_options(self) -> dict[str, Any]:
        from ..readers.codecs import use_fast_codecs

        use_fast_codecs()  # LZMA ~1.4x and ZLIB ~1.5x faster than uproot's decoders, same bytes
        options = dict(self.uproot_options) if self.uproot_options is not None else _default_uproot_options()
        # uproot keeps up to 100 MB of read arrays in a global cache by default: a chunk's
        # columns are read once, so the cache only holds memory (measured: +110 MB RSS).
        options.setdefault("array_cache", None)
        if self.timeout is not None:
            options["timeout"] = self.timeout
        return options

    def open_file(self, spec: ChunkSpec) -> ContextManager[Any]:
        """The chunk's file (the dict form keeps a ':' in a path from being read as
        "file:object"); with :attr:`reuse_files`, opened once per worker process and reused by
        the file's later chunks (:mod:`jettracks.engines.handles`: keyed by name, UUID and
        options, bounded, closed when the run ends)."""
        if not self.reuse_files:
            import uproot

            return uproot.open({spec.filename: None}, **_handles.open_options(spec.filename, self._open_options()))
        return _handles.handles.open(spec.filename, spec.fileuuid, self._open_options())

    @contextlib.contextmanager
    def batches(self, spec: ChunkSpec, columns: Iterable[str], *,
                any_int_width: Iterable[str] = ()) -> Iterator[Iterator[Any]]:
        """The chunk read by a column plan, in sub-batches (:mod:`jettracks.engines.reading`).

        A context manager yielding an iterator of :class:`~jettracks.engines.reading.ChunkColumns`;
        an RNTuple, which has no baskets to align on, comes as one NanoEvents batch.
        ``any_int_width``: branches of the plan the processor takes at any integer width
        (:func:`narrow_plan`).
        """

        cache = self.column_cache()
        with contextlib.ExitStack() as stack:
            opened: list[Any] = []

            def open_tree() -> Any:  # opened only when something must come from the file
                if not opened:
                    rootfile = stack.enter_context(self.open_file(spec))
                    opened.append(rootfile[spec.treename])
                return opened[0]

            known = cache.layout(spec.fileuuid, spec.treename) if cache is not None and spec.fileuuid else None
            if not known and _rntuple.is_rntuple(open_tree()):
                with self(spec) as events:
                    yield iter([events])
                return
            with _reading.read_batches(
                open_tree, spec.events_metadata(), list(columns),
                entry_start=spec.entrystart, entry_stop=spec.entrystop, batch_bytes=self.batch_bytes,
                cache=cache, layout=known, any_int_width=frozenset(any_int_width),
            ) as batches:
                yield batches

    def column_cache(self) -> Any:
        """The :class:`~jettracks.io.column_cache.ColumnCache` of :attr:`cache_dir`, or None."""
        if self.cache_dir is None:
            return None
        from ..io.column_cache import ColumnCache

        return ColumnCache(self.cache_dir, max_bytes=self.cache_max_bytes, compression=self.cache_compression,
                           keep_mapped_bytes=kept_maps_budget())

    @contextlib.contextmanager
    def __call__(self, spec: ChunkSpec) -> Iterator[Any]:
        from coffea.nanoevents import BaseSchema, NanoEventsFactory

        iteritems = {"filter_name": list(self.branches)} if self.branches is not None else {}
        # The dict form keeps a ':' in a path from being read as "file:object".
        with self.open_file(spec) as rootfile:
            # An RNTuple: its fields under the TTree names the readers use (jettracks.io.rntuple).
            source = rootfile[spec.treename]
            is_rntuple = _rntuple.is_rntuple(source)
            if is_rntuple and self.branches is not None:
                iteritems = {"filter_name": _rntuple.top_fields(source, self.branches)}
            if not is_rntuple:  # the tree's form built once per open file, not per chunk
                from .nanoevents import chunk_events

                yield chunk_events(rootfile, spec.treename, entry_start=spec.entrystart,
                                   entry_stop=spec.entrystop, metadata=spec.events_metadata(),
                                   iteritems_options=iteritems)
                return
            events = NanoEventsFactory.from_root(
                rootfile,
                treepath=spec.treename,
                schemaclass=BaseSchema,
                metadata=spec.events_metadata(),
                mode="virtual",
                entry_start=spec.entrystart,
                entry_stop=spec.entrystop,
                iteritems_options=iteritems,
            ).events()
            yield _rntuple.field_view(events)


def _default_uproot_options() -> dict[str, Any]:
    from ..io.files import AutoSource

    return {"handler": AutoSource} if AutoSource is not None else {}


#: A chunk reader: ``read_events(spec)`` is a context manager yielding the chunk's events.
ReadEvents = Callable[[ChunkSpec], ContextManager[Any]]


def run_chunk(
    processor: Any,
    spec: ChunkSpec,
    read_events: ReadEvents,
    checkpointer: Any = None,
    retries: int = 0,
) -> tuple[Any | None, ChunkRecord]:
    """Run one chunk under the guard every engine shares; never raises ``Exception``.

    1. ``checkpointer.load`` (when given): a checkpoint that loads is the chunk's output
       (status ``checkpoint``; :class:`~jettracks.io.checkpoints.RunCheckpointer` already
       refuses damaged ones and those whose ML parts are gone);
    2. otherwise up to ``retries + 1`` attempts of: read (``read_events``), ``process``,
       ``checkpointer.save``; an error that a retry cannot fix (:func:`jettracks.failures.is_permanent`:
       missing file, tree or branch, not a ROOT file) ends the attempts at once.

    ``KeyboardInterrupt``/``SystemExit`` are not caught: an interrupted run stops.

    Args:
        processor: a coffea ``ProcessorABC`` (``process(events) -> accumulatable``).
        spec: the chunk.
        read_events: ``read_events(spec)`` -> context manager yielding the events
            (:class:`ChunkReader`).
        checkpointer: a coffea ``CheckpointerABC`` (``load``/``save`` with the chunk's
            ``events.metadata``), normally :class:`~jettracks.io.checkpoints.RunCheckpointer`;
            ``None`` (default): no checkpoints.
        retries: extra attempts after a failure that is not permanent (default 0).

    Returns:
        ``(output, record)``: the processor's output (``None`` when failed) and the record.
    """
    limit = getattr(read_events, "transfer_bytes", None)
    if limit is not None and getattr(processor, "ml_dir", None):
        return _run_chunk_shipping_parts(processor, spec, read_events, retries, int(limit))
    t0 = time.perf_counter()
    worker = _worker_address()
    metadata = spec.events_metadata()
    if checkpointer is not None:
        saved = _load_checkpoint(checkpointer, metadata, processor)
        if saved is not None:
            return saved, ChunkRecord(spec, "checkpoint", None, time.perf_counter() - t0, 0, worker)
    attempts = 0
    while True:
        attempts += 1
        try:
            t_read = time.perf_counter()
            out = _process(processor, spec, read_events)
            if checkpointer is not None:
                # coffea's Runner checkpoint layout ({"out", "metrics"}): checkpoints written
                # before the engines existed keep loading, and these load there.
                checkpointer.save(
                    {"out": out, "metrics": {"entries": spec.entries,
                                             "processtime": time.perf_counter() - t_read}},
                    metadata,
                    processor,
                )
            return out, ChunkRecord(
                spec, "ok", None, time.perf_counter() - t0, attempts, worker, peak_rss_mb=peak_rss_mb()
            )
        except Exception as err:  # noqa: BLE001 - the chunk's failure is recorded, not raised
            if attempts > retries or is_permanent(err):
                return None, ChunkRecord(spec, "failed", error_line(err), time.perf_counter() - t0, attempts, worker)


# -- outputs through Dask (workers without the client's disk) ----------------------------------------
def _run_chunk_shipping_parts(processor: Any, spec: ChunkSpec, read_events: Any, retries: int,
                              limit: int) -> tuple[Any | None, ChunkRecord]:
    """:func:`run_chunk` with the processor's ML parts written to a private temporary
    directory of this worker, then carried back in the record (:attr:`ChunkRecord.payload`,
    ``{client path: bytes}``) instead of being left on a disk the client does not see."""
    import copy
    import dataclasses
    import os
    import shutil
    import tempfile

    client_dir = str(processor.ml_dir)
    local = tempfile.mkdtemp(prefix="jettracks-parts-")
    try:
        mine = copy.copy(processor)
        mine.ml_dir = local
        plain = dataclasses.replace(read_events, transfer_bytes=None)
        from ..io.mldata import parts_leave_the_machine

        with parts_leave_the_machine():  # compressed: their bytes count against the limit
            out, record = run_chunk(mine, spec, plain, None, retries)
        parts = (out or {}).get("ml_parts") if isinstance(out, dict) else None
        if parts:
            payload: dict[str, bytes] = {}
            for p in parts:
                with open(p, "rb") as f:
                    payload[os.path.join(client_dir, os.path.basename(p))] = f.read()
            size = sum(len(b) for b in payload.values())
            if size > limit:
                return None, ChunkRecord(
                    spec, "failed",
                    f"TransferLimit: the chunk's ML parts are {size / 1e6:.1f} MB, over the "
                    f"{limit / 1e6:.1f} MB a chunk may send back through Dask (output.transfer_mb): "
                    "use smaller chunks or a shared output directory",
                    record.seconds, record.attempts, record.worker)
            out["ml_parts"] = list(payload)
            record.payload = payload
        return out, record
    finally:
        shutil.rmtree(local, ignore_errors=True)


def transfer_outputs(specs: list[ChunkSpec], processor: Any, checkpointer: Any, done: Callable,
                     reader: Any, limit: int) -> tuple[list[ChunkSpec], Any, Callable, Any]:
    """Outputs through Dask, for workers that cannot see the output directory.

    The client loads the checkpoints (chunks with one are done at once, as ``checkpoint``
    records), the workers get no checkpointer and a reader with ``transfer_bytes``, and each
    finished chunk's ML parts (its record's ``payload``) and then its checkpoint are written
    here, atomically, before the chunk counts as done.

    Returns:
        ``(specs to run, checkpointer for the workers (None), done callback, reader)``.
    """
    import dataclasses

    from ..io.atomic import write_bytes_atomic

    todo: list[int] = []
    for i, spec in enumerate(specs):
        saved = _load_checkpoint(checkpointer, spec.events_metadata(), processor) if checkpointer else None
        if saved is not None:
            done(i, saved, ChunkRecord(spec, "checkpoint", None, 0.0, 0, None))
        else:
            todo.append(i)

    def finished(j: int, output: Any, record: ChunkRecord) -> None:
        i = todo[j]
        payload = record.payload or {}
        record.payload = None
        try:
            for path, data in payload.items():
                write_bytes_atomic(path, data)
            if checkpointer is not None and record.status == "ok":
                checkpointer.save({"out": output, "metrics": {"entries": specs[i].entries,
                                                              "processtime": record.seconds}},
                                  specs[i].events_metadata(), processor)
        except OSError as err:
            output, record = None, ChunkRecord(specs[i], "failed", error_line(err), record.seconds,
                                               record.attempts, record.worker)
        done(i, output, record)

    shipped = dataclasses.replace(reader, transfer_bytes=int(limit)) if dataclasses.is_dataclass(reader) else reader
    return [specs[i] for i in todo], None, finished, shipped

def _worker_address() -> str | None:
    """The Dask worker running this call (its address), or None outside a worker."""
    if "distributed" not in sys.modules:  # not in a worker; importing it costs ~0.4 s and ~50 MB
        return None
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None


def column_plan(processor: Any, spec: ChunkSpec) -> list[str] | None:
    """The branches ``processor`` needs for this chunk (``processor.columns(format)``), or
    ``None`` when it declares no plan (then the chunk is read lazily as NanoEvents)."""
    columns = _declared(processor, spec, "columns")
    return None if columns is None else list(columns)


def narrow_plan(processor: Any, spec: ChunkSpec) -> frozenset[str]:
    """Branches of the column plan ``processor`` takes at any integer width
    (``processor.columns_any_int_width(format)``, optional; empty without it): the column
    cache serves those in its stored, narrower type without widening them."""
    return frozenset(_declared(processor, spec, "columns_any_int_width") or ())


def _declared(processor: Any, spec: ChunkSpec, method: str) -> Any:
    """``processor.<method>(format)`` for the chunk's format, or None (no such method, or
    no format in the chunk's metadata)."""
    declared = getattr(processor, method, None)
    fmt = spec.metadata.get("format")
    return declared(fmt) if callable(declared) and fmt else None


def _process(processor: Any, spec: ChunkSpec, read_events: ReadEvents) -> Any:
    """:func:`_process_once`; when that failed on a file handle kept from an earlier chunk
    (a connection broken meanwhile: :mod:`jettracks.engines.handles`), once more on a fresh
    open, without counting an attempt."""
    _handles.last_failure_reused()  # reset this thread's flag
    try:
        return _process_once(processor, spec, read_events)
    except Exception:
        if not _handles.last_failure_reused():
            raise
    return _process_once(processor, spec, read_events)


def _process_once(processor: Any, spec: ChunkSpec, read_events: ReadEvents) -> Any:
    """``processor.process`` over the chunk: sub-batch by sub-batch with a column plan
    (outputs summed), else once over the lazily read NanoEvents."""
    plan = column_plan(processor, spec)
    if plan is not None and hasattr(read_events, "batches"):
        out = None
        with read_events.batches(spec, plan, any_int_width=narrow_plan(processor, spec)) as batches:
            for events in batches:
                part = processor.process(events)
                if part is None:
                    raise ValueError("process() returned None; it must return an accumulatable")
                out = accumulate_into(out, part)
                del events, part
        if out is None:  # pragma: no cover - read_batches always yields a batch
            raise ValueError("the chunk gave no batch")
        _add_notices(out, getattr(batches, "notices", ()))  # what the column cache could not do
        return out
    with read_events(spec) as events:
        out = processor.process(events)
    if out is None:
        raise ValueError("process() returned None; it must return an accumulatable")
    return out


def _add_notices(out: Any, notices: Iterable[str]) -> None:
    """Add ``notices`` to a dict output's ``notices`` set (made when absent)."""
    notices = set(notices)
    if not notices or not isinstance(out, dict):
        return
    existing = out.setdefault("notices", set())
    if isinstance(existing, set):
        existing.update(notices)


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far (MiB), or None where unknown.

    ``VmHWM`` of ``/proc/self/status`` where it exists: ``ru_maxrss`` would report the
    parent's peak after a fork (a Dask nanny's worker, a subprocess), not this process's.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):  # pragma: no cover - not POSIX
        return None
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def _load_checkpoint(checkpointer: Any, metadata: dict[str, Any], processor: Any) -> Any | None:
    """The chunk's saved output, or None (absent, damaged, or a checkpointer that raised:
    redoing a chunk is always safe, trusting a bad checkpoint is not)."""
    try:
        saved = checkpointer.load(metadata, processor)
    except Exception:  # noqa: BLE001
        return None
    if isinstance(saved, Mapping) and "out" in saved:
        return saved["out"]
    return None


# -- accumulation and progress ----------------------------------------------------------------------
def accumulate_into(total: Any | None, out: Any | None) -> Any | None:
    """``total + out`` with coffea's accumulator rules (in place into ``total``; ``out`` is
    adopted as the total when ``total`` is None)."""
    from coffea.processor import accumulate

    return accumulate([out], total)


class Totals:
    """The run's output: one running sum per dataset, merged in fileset order at the end.

    Chunks arrive in completion order; summing per dataset and merging in a fixed order
    makes the output's layout (a histogram's growing ``dataset`` categories, the order of
    dataset keys) the same on every engine and every run, not just its values.

    Args:
        datasets: dataset names in fileset order (repeats ignored).
    """

    def __init__(self, datasets: Iterable[str]) -> None:
        self._order = list(dict.fromkeys(datasets))
        self._sums: dict[str, Any] = {}

    def add(self, dataset: str, out: Any | None) -> None:
        """Add one chunk's output (``None``: a failed chunk, nothing to add)."""
        if out is not None:
            self._sums[dataset] = accumulate_into(self._sums.get(dataset), out)

    def result(self, processor: Any) -> dict[str, Any]:
        """The sum over datasets passed through ``processor.postprocess`` (as coffea's Runner
        does); ``{}`` when no chunk gave an output."""
        total: Any = None
        for ds in self._order + [d for d in self._sums if d not in self._order]:
            total = accumulate_into(total, self._sums.get(ds))
        if total is None:
            return {}
        post = getattr(processor, "postprocess", None)
        if callable(post):
            done = post(total)
            if done is not None:
                total = done
        return total


# -- the engine interface and registry ---------------------------------------------------------------
class Engine(abc.ABC):
    """An execution engine: runs every chunk of a fileset through :func:`run_chunk`.

    Subclasses set :attr:`name` and implement :meth:`process_chunks`; :meth:`run` plans
    the chunks, sums the outputs per dataset and keeps one record per chunk for both.
    """

    #: The name in ``executor.engine`` and :data:`ENGINES`.
    name: str = ""

    def run(
        self,
        fileset: Mapping[str, Mapping[str, Any]],
        meta: Mapping[tuple[str, str], Mapping[str, Any]],
        processor: Any,
        *,
        client: Any = None,
        chunksize: int,
        retries: int = 0,
        branches: set[str] | list[str] | tuple[str, ...] | None = None,
        checkpointer: Any = None,
        progress: bool = False,
        xrootd_timeout: float | None = None,
        transfer_bytes: int | None = None,
        reading: Mapping[str, Any] | None = None,
        on_output: Callable[[Any], None] | None = None,
    ) -> EngineResult:
        """Process every chunk of every file in ``meta``; failures are records, not exceptions.

        Args:
            fileset: ``{dataset: {"files": [...], "treename": str, "metadata": {...}}}``;
                ``metadata`` must carry what the processor reads (``format``, ``is_mc``, ...).
            meta: ``{(dataset, file): {"numentries": int, "uuid": bytes, "uuid_hex": str}}``
                (:func:`jettracks.metadata.file_metadata` per file); files absent here
                were unreadable and are not run.
            processor: a coffea ``ProcessorABC`` instance (pickled to workers).
            client: a ``distributed.Client``; ``None`` (default): run in this process.
            chunksize: target entries per chunk (:func:`chunk_steps`).
            retries: extra attempts per chunk after a non-permanent error (default 0).
            branches: branches that may be read; ``None`` (default): all.
            checkpointer: :class:`~jettracks.io.checkpoints.RunCheckpointer` (or any coffea
                ``CheckpointerABC``); ``None`` (default): no checkpoints.
            progress: show progress (default False): chunks and files done, entries/s, ETA,
                failures, dashboard link (:class:`~jettracks.engines.progress.Progress`).
            xrootd_timeout: ``uproot.open`` timeout in seconds; ``None`` (default): uproot's.
            transfer_bytes: the workers cannot see the output directory (``output.transfer:
                dask``): ML parts come back through Dask (at most this many bytes a chunk) and
                checkpoints are loaded and saved here, at the client (:func:`transfer_outputs`).
            reading: further :class:`ChunkReader` settings (``batch_bytes``, ``cache_dir``,
                ``cache_max_bytes``, ``cache_compression``); ``None``: the defaults.
            on_output: called with each finished chunk's output as it arrives (e.g. to scan
                its ML part while other chunks run); its errors are ignored. ``None``: nothing.

        Returns:
            :class:`EngineResult` with one record per planned chunk.
        """
        specs = plan_chunks(fileset, meta, chunksize)
        if not specs:
            return EngineResult({}, [], self.name)
        records: dict[int, ChunkRecord] = {}
        totals = Totals(s.dataset for s in specs)
        with Progress(progress, len(specs), "Processing", files=[s.filename for s in specs],
                      dashboard=getattr(client, "dashboard_link", None)) as bar:

            def done(i: int, output: Any, record: ChunkRecord) -> None:
                records[i] = record
                totals.add(specs[i].dataset, output)
                bar.advance(record)
                if on_output is not None and output is not None:
                    try:
                        on_output(output)
                    except Exception:  # noqa: BLE001 - an observer never fails the run
                        pass

            reader = reader_for(branches, xrootd_timeout, **(reading or {}))
            run_specs = specs
            if transfer_bytes is not None:  # the workers do not see the output directory
                run_specs, checkpointer, done, reader = transfer_outputs(
                    specs, processor, checkpointer, done, reader, transfer_bytes)
            if run_specs:
                self.process_chunks(
                    run_specs, processor, reader=reader, checkpointer=checkpointer,
                    retries=retries, client=client, done=done,
                )
        return EngineResult(totals.result(processor), [records[i] for i in range(len(specs))], self.name)

    @abc.abstractmethod
    def process_chunks(
        self,
        specs: list[ChunkSpec],
        processor: Any,
        *,
        reader: ReadEvents,
        checkpointer: Any,
        retries: int,
        client: Any,
        done: Callable[[int, Any, ChunkRecord], None],
    ) -> None:
        """Run every chunk through :func:`run_chunk`; call ``done(i, output, record)`` once per
        chunk (``i``: its index in ``specs``) as it finishes, in any order."""


def gather(client: Any, futures: list[Any], specs: list[ChunkSpec],
           done: Callable[[int, Any, ChunkRecord], None], unpack: Callable[[Any], Any],
           groups: list[list[int]] | None = None) -> None:
    """Collect the futures as they complete, in batches, releasing each.

    Without ``groups``, future ``i`` is chunk ``i`` and ``unpack(result) -> (output, record)``;
    with ``groups``, future ``i`` ran the chunks ``groups[i]`` and ``unpack(result)`` is one
    ``(output, record)`` per chunk, in that order. A task that died (``KilledWorker``, ...)
    is a failed record for each of its chunks; an interrupt cancels what is left, so no
    task keeps running. A client that lost its scheduler for good (it closes itself after
    ``distributed.comm.timeouts.connect`` of failed reconnects) raises
    :class:`~jettracks.cluster.ClusterError`: its futures would never complete.
    """
    from distributed import as_completed

    members = groups if groups is not None else [[i] for i in range(len(futures))]
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        # On the futures' own client loop: by default as_completed tracks them on the loop of
        # distributed's *default* client (the newest), and with two clients in one process
        # (a notebook, the tests) it then used this client's comms from another thread; a
        # corrupted write (tornado's AssertionError) lost a result and the run hung.
        completed = as_completed(futures, loop=getattr(client, "loop", None), with_results=True,
                                 raise_errors=False)
        for batch in _batches(completed, client):  # every result already here: no round trip each
            for future, result in batch:
                chunks = members[index[future.key]]
                try:
                    if future.status != "finished":
                        raise future.exception()
                    pairs = unpack(result)
                    pairs = [pairs] if groups is None else list(pairs)
                    if len(pairs) != len(chunks):
                        raise RuntimeError(f"a task returned {len(pairs)} results for {len(chunks)} chunks")
                except Exception as err:  # noqa: BLE001 - the task itself died
                    pairs = [(None, ChunkRecord(specs[i], "failed", error_line(err), 0.0, 1)) for i in chunks]
                future.release()  # summed by ``done``: the cluster need not keep it
                for i, (out, record) in zip(chunks, pairs):
                    done(i, out, record)
    except BaseException:
        if getattr(client, "status", "running") == "running":  # a closed client would wait
            client.cancel(futures)
        raise


#: Client states after which no future of it completes (``distributed.Client.status``).
_CLIENT_GONE = frozenset({"closing", "closed", "failed"})


def _batches(completed: Any, client: Any, poll_s: float = 0.1) -> Iterator[list[Any]]:
    """``completed.batches()`` that also ends when ``client`` is gone.

    ``as_completed`` waits forever on the futures of a client that closed itself after
    its scheduler died (they are never resolved); so wait on its condition in slices of
    ``poll_s`` seconds and look at the client's status between them (0.1 s, as
    ``as_completed`` itself: an interrupt from another thread lands between slices).
    """
    from jettracks.cluster import ClusterError

    condition = getattr(completed, "thread_condition", None)
    while not completed.is_empty():
        if completed.has_ready():
            yield completed.next_batch(block=False)
            continue
        status = str(getattr(client, "status", "running"))
        if status in _CLIENT_GONE:
            address = getattr(getattr(client, "scheduler", None), "address", "?")
            raise ClusterError(
                f"the Dask client lost its scheduler {address} (client {status}) with {completed.count()} task(s)"
                " unfinished: finished chunks are checkpointed; run the same command again once the scheduler"
                " is back to resume"
            )
        if condition is None:  # pragma: no cover - another distributed: poll
            time.sleep(min(poll_s, 0.05))
        else:
            with condition:
                if not completed.has_ready():
                    condition.wait(timeout=poll_s)


#: Engine name -> ``"module:Class"`` (imported on first use: the engine modules import this one).
ENGINES: dict[str, str] = {
    "runner": "jettracks.engines.runner:RunnerEngine",
    "dask-awkward": "jettracks.engines.dask_awkward:DaskAwkwardEngine",
}


def get_engine(name: str) -> Engine:
    """A new instance of the engine called ``name`` (a key of :data:`ENGINES`).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    try:
        target = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(sorted(ENGINES))}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)()


def reader_for(branches: Any, xrootd_timeout: float | None, **reading: Any) -> ChunkReader:
    """The :class:`ChunkReader` an engine's ``run`` arguments describe (sorted branches: the
    same reader, so the same reads, on every engine; ``reading``: its other settings)."""
    return ChunkReader(
        branches=tuple(sorted(set(branches))) if branches is not None else None,
        timeout=xrootd_timeout,
        **reading,
    )
