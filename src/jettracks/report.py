"""The run report: one typed model, written as ``report.json`` and read back by the CLI and notebooks.

:class:`RunReport` is what a run returns (``RunResult.report``) and what
``report.json`` holds (``RunReport.model_dump_json``); :func:`load_report` reads
it back. Fields give units in their names (``_s`` seconds).

Accounting invariant, per file and in total: ``entries_expected`` (from the
file's metadata) = ``entries_processed`` + ``entries_skipped``. ``status``
agrees with the exit code: ``ok`` and ``partial`` (``--skip-bad-files`` skipped
something) exit 0, ``failed`` exits 1 and carries ``error``.

For reading code written against the JSON, every model also answers
``report["key"]`` like the JSON mapping does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChunkTiming",
    "EntryTotals",
    "FileReport",
    "MLDatasetSummary",
    "RunReport",
    "Skip",
    "Timing",
    "build_report",
    "load_report",
    "provenance",
    "provenance_soon",
]


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", validate_assignment=False)

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def __contains__(self, key: str) -> bool:  # as for the JSON: a key whose value is null is absent
        return getattr(self, key, None) is not None

    def keys(self) -> list[str]:
        """The keys of the JSON object (so ``{**record}`` and ``dict(record)`` work)."""
        return [k for k in (*type(self).model_fields, *(self.model_extra or {})) if getattr(self, k, None) is not None]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):  # compares like the JSON object it is written as
            return self.model_dump(mode="json", exclude_none=True) == _json_like(other)
        return super().__eq__(other)

    __hash__ = None  # mutable, like the dict it stands for


def _json_like(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json", exclude_none=True)
    if isinstance(obj, Mapping):
        return {k: _json_like(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_json_like(v) for v in obj]
    return obj


class Skip(_Record):
    """Entries of one file not processed, and why.

    Attributes:
        stage: ``open`` (the file could not be opened or its metadata read; ``entries``
            is None: how many the file holds is unknown) or ``process`` (a chunk failed).
        entries: entries skipped (None for ``open``).
        range: ``[start, stop)`` of the failed chunk (``process`` only).
        reason: the error, one line.
    """

    stage: Literal["open", "process"]
    entries: int | None = None
    range: list[int] | None = None
    reason: str


class FileReport(_Record):
    """One input file's accounting."""

    dataset: str
    file: str
    uuid: str | None = None
    entries_expected: int | None = None
    entries_processed: int = 0
    entries_skipped: int = 0
    skipped: list[Skip] = Field(default_factory=list)


class EntryTotals(_Record):
    """Entries over every file: ``expected == processed + skipped``."""

    expected: int = 0
    processed: int = 0
    skipped: int = 0
    files_unreadable: int = 0


class ChunkTiming(_Record):
    """Wall time of one chunk on its worker (seconds).

    Attributes:
        file: the input file.
        range: ``[start, stop)`` entries.
        seconds: wall time of the guarded call (read + process + checkpoint, every attempt).
        worker: the Dask worker's address (None in-process, or in reports written before it was recorded).
        attempts: attempts made (None in reports written before it was recorded).
        peak_rss_mb: peak resident memory (MiB) of the process that ran it, when it finished.
    """

    file: str
    range: list[int]
    seconds: float
    worker: str | None = None
    attempts: int | None = None
    peak_rss_mb: float | None = None


class Timing(_Record):
    """Wall times of the run's steps (seconds) and the processing rate (entries per second)."""

    prepare_s: float = 0.0
    metadata_s: float = 0.0
    process_s: float = 0.0
    total_s: float = 0.0
    entries_per_s: float = 0.0
    chunks: list[ChunkTiming] = Field(default_factory=list)
    #: Largest peak resident memory (MiB, ``VmHWM``) of any process that ran chunks
    #: (a worker, or this process when serial); None when no chunk was processed.
    peak_worker_memory_mib: float | None = None
    #: The same per worker address (``local``: in-process).
    peak_worker_memory_by_worker_mib: dict[str, float] = Field(default_factory=dict)


class MLDatasetSummary(_Record):
    """The ML dataset written by the run (``ml/``; ``manifest.json`` has the details)."""

    dir: str
    rows: int
    parts: int
    rows_per_split: dict[str, int] = Field(default_factory=dict)
    hdf5: str | None = None


class RunReport(_Record):
    """Everything ``report.json`` says about a run.

    Attributes:
        name: the config's ``name``.
        status: ``running`` (only while the run writes it), ``ok``, ``partial`` or ``failed``.
        error: the one-line error of a failed run.
        config: the resolved config (JSON form).
        fingerprint: hash of the code, versions and output-shaping options.
        formats: dataset -> detected format.
        deduplicated: files listed more than once and dropped (``dataset``, ``file``,
            ``same_as``, ``by``: ``path`` or ``uuid``).
        cluster: backend and its description (workers, address, ...).
        files: per-file accounting.
        entries: totals.
        chunks, chunks_failed, chunks_from_checkpoint: chunk counts of this run.
        cutflow: dataset -> step -> count.
        notices: what the run noticed (missing fields, flavour definition, ...).
        histograms: names of the histograms written.
        ml_parts: ML parts of this run; ml_dataset: the dataset summary.
        timing: step times.
    """

    name: str = "run"
    status: Literal["running", "ok", "partial", "failed"] = "running"
    error: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    fingerprint: str = ""
    formats: dict[str, str] = Field(default_factory=dict)
    deduplicated: list[dict[str, str]] = Field(default_factory=list)
    engine: str | None = None
    cluster: dict[str, Any] = Field(default_factory=dict)
    host: str | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)
    files: list[FileReport] = Field(default_factory=list)
    entries: EntryTotals = Field(default_factory=EntryTotals)
    chunks: int = 0
    chunks_failed: int = 0
    chunks_from_checkpoint: int = 0
    cutflow: dict[str, dict[str, int]] = Field(default_factory=dict)
    association_comparison: dict[str, Any] = Field(default_factory=dict)
    notices: list[str] = Field(default_factory=list)
    histograms: list[str] = Field(default_factory=list)
    ml_parts: int = 0
    ml_dataset: MLDatasetSummary | None = None
    plots: list[str] = Field(default_factory=list)
    missing_outputs: dict[str, Any] | None = None
    timing: Timing = Field(default_factory=Timing)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    @property
    def ok(self) -> bool:
        """True for ``ok`` and ``partial`` (the run finished; ``partial`` skipped something)."""
        return self.status in ("ok", "partial")

    def skipped(self) -> list[tuple[str, Skip]]:
        """Every skip as ``(file, skip)``, in file order."""
        return [(f.file, s) for f in self.files for s in f.skipped]

    def to_json(self) -> str:
        """``report.json``'s text (indented; ``None`` fields kept so the schema is stable)."""
        return self.model_dump_json(indent=2) + "\n"


def load_report(path: str | os.PathLike) -> RunReport:
    """Read a ``report.json`` (or a run directory holding one)."""
    from .io.outfs import out_path

    p = out_path(path)
    if p.is_dir():
        p = p / "report.json"
    return RunReport.model_validate_json(p.read_text())


def provenance_soon() -> Any:
    """:func:`provenance` computed on a thread (a ``concurrent.futures.Future``): a run starts
    it with its chunks, so the two ``git`` calls (tens of ms) are not on its tail."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jettracks-provenance")
    try:
        return pool.submit(provenance)
    finally:
        pool.shutdown(wait=False)


def provenance() -> dict[str, Any]:
    """Package versions, Python, and the project's git commit + dirty flag (when in a checkout)."""
    import platform
    import subprocess

    from .io.outputs import package_versions

    root = Path(__file__).resolve().parents[2]
    git: dict[str, Any] = {}
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=10,
            )
            git = {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        pass
    from .readers.codecs import active_codecs

    # The client's decoders; workers import the same readers, so they switch the same way.
    return {"python": platform.python_version(), "versions": package_versions(), "git": git,
            "codecs": active_codecs()}


def build_report(
    *,
    name: str,
    config: dict[str, Any],
    fingerprint: str,
    plan: Any,
    metadata: Any,
    result: Any,
    cluster: dict[str, Any],
    times: dict[str, float],
    provenance_of_run: Mapping[str, Any] | None = None,
) -> RunReport:
    """The report of a run that got through its engine (``status`` still ``running``).

    Args:
        name: the config's name.
        config: the resolved config (JSON form).
        fingerprint: the run's fingerprint.
        plan: the :class:`~jettracks.datasets.DatasetPlan` (files, formats, repeats dropped).
        metadata: the :class:`~jettracks.metadata.FileMetadata` (entries, UUIDs, unreadable files).
        result: the :class:`~jettracks.engines.EngineResult`.
        cluster: backend name and description.
        times: ``start``, ``prepared``, ``metadata``, ``done`` (``time.perf_counter`` seconds).
        provenance_of_run: :func:`provenance` taken earlier in the run (None: taken here).
    """
    import socket

    output = result.output or {}
    processed = output.get("entries", {})
    skipped: dict[str, list[Skip]] = {}
    for f in metadata.bad:
        skipped.setdefault(f.filename, []).append(Skip(stage="open", entries=None, reason=f.error))
    for r in result.failures:
        s = r.spec
        skipped.setdefault(s.filename, []).append(
            Skip(stage="process", entries=s.entries, range=[s.entrystart, s.entrystop], reason=r.error or "")
        )
    files = []
    for ds_name, spec in plan.fileset.items():
        for fname in spec["files"]:
            m = metadata.meta.get((ds_name, fname))
            files.append(FileReport(
                dataset=ds_name,
                file=fname,
                uuid=m["uuid_hex"] if m else None,
                entries_expected=m["numentries"] if m else None,
                entries_processed=processed.get(fname, 0),
                entries_skipped=sum(s.entries or 0 for s in skipped.get(fname, [])),
                skipped=skipped.get(fname, []),
            ))
    n_processed = sum(f.entries_processed for f in files)
    process_s = times["done"] - times["metadata"]
    return RunReport(
        name=name,
        status="running",
        config=config,
        fingerprint=fingerprint,
        formats=plan.formats,
        deduplicated=plan.deduplicated,
        engine=result.engine,
        cluster=cluster,
        host=socket.gethostname(),
        provenance=dict(provenance_of_run) if provenance_of_run is not None else provenance(),
        files=files,
        entries=EntryTotals(
            expected=sum(f.entries_expected or 0 for f in files),
            processed=n_processed,
            skipped=sum(f.entries_skipped for f in files),
            files_unreadable=len(metadata.bad),
        ),
        chunks=result.n_chunks,
        chunks_failed=len(result.failures),
        chunks_from_checkpoint=result.from_checkpoint,
        cutflow=output.get("cutflow", {}),
        association_comparison=output.get("association_comparison", {}),
        notices=sorted(output.get("notices", set())),
        histograms=sorted(output.get("hists", {})),
        ml_parts=len(output.get("ml_parts", [])),
        timing=Timing(
            prepare_s=round(times["prepared"] - times["start"], 3),
            metadata_s=round(times["metadata"] - times["prepared"], 3),
            process_s=round(process_s, 3),
            total_s=round(times["done"] - times["start"], 3),
            entries_per_s=round(n_processed / max(process_s, 1e-9), 1),
            chunks=[ChunkTiming(**c) for c in result.chunk_timings()],
            peak_worker_memory_mib=max(result.peak_memory_by_worker().values(), default=None),
            peak_worker_memory_by_worker_mib=result.peak_memory_by_worker(),
        ),
    )
