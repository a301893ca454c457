"""``python -m runner plan CONFIG``: what a run would read, and whether it would start, without processing.

:func:`plan_run` goes through the run's own first steps -- the config and its
overrides, :func:`jettracks.datasets.prepare_datasets` (files, repeats dropped,
formats detected, branches to read; samples are *not* generated) and
:func:`jettracks.metadata.collect_metadata` (entries and UUID per file, from the
file-metadata cache where present) -- then opens each readable file once to
check its format and to sum the compressed and uncompressed bytes of the branches
read (uproot's ``branch.compressed_bytes`` / ``uncompressed_bytes``). It returns a
:class:`RunPlan`: per dataset its format, files, entries, chunks (the engines'
:func:`~jettracks.engines.chunk_steps`), branches and bytes, the estimated worker
memory per chunk (:func:`estimate_worker_memory`), warnings, and the problems that
would stop the run (``RunPlan.ok`` is False then).

Memory model: a worker holds :data:`BASE_BYTES` plus ``factor`` x the
uncompressed bytes per entry of the branches read x the entries of its largest
chunk, ``factor`` from :data:`FACTORS` by format (:data:`FACTOR` for the others).
Measured with ``scripts/measure_memory_model.py`` on files generated like the
demo's (qcd, seed 12100; chunks of 1k-8k events, 1.7k-14k JetNtuple entries):
the resident set of a fresh process running one chunk through the engines'
guarded call grows by 18.1 kB per PFNano event (8.56 kB uncompressed: factor
2.11) and 4.6 kB per JetNtuple entry (0.99 kB: factor 4.63; many small per-jet
objects), from 345 MB (PFNano) / 256 MB (JetNtuple) before the chunk. On the real
PFNano file (1,820 candidates, 51 kB uncompressed per event) the model gives
~108 kB per event, against the ~90 kB per event measured on workers
(``executor.chunksize``'s doc): a little conservative, as it should be.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .config import ConfigError, RunConfig, apply_overrides, load_config, parse_bytes_text
from .errors import RunError

__all__ = [
    "BASE_BYTES",
    "FACTOR",
    "FACTORS",
    "DatasetPlanInfo",
    "FilePlan",
    "RunPlan",
    "branch_bytes",
    "estimate_worker_memory",
    "plan_run",
    "print_plan",
    "worker_memory_limit",
]

#: Worker memory before any chunk: Python, numba, coffea, uproot and the processor loaded (bytes; measured 345 MB).
BASE_BYTES = 350_000_000
#: Peak worker memory per uncompressed byte of the branches read in a chunk, by format (measured; module doc).
FACTORS: dict[str, float] = {"pfnano": 2.1, "jetntuple": 4.6}
#: The factor of formats not measured: the largest measured one.
FACTOR = max(FACTORS.values())


@dataclass
class FilePlan:
    """One input file.

    Attributes:
        dataset, file: where it is listed.
        format: the format detected in it on its own (``auto`` detection), None when unreadable.
        entries: entries of the dataset's tree (None when unreadable).
        entries_from: ``cache`` (the file-metadata cache) or ``file`` (read now); None when unreadable.
        chunks: chunks the run would make of it.
        compressed_bytes, uncompressed_bytes: of the branches read, in this file (None when unknown).
        error: why the file cannot be used (one line), else None.
    """

    dataset: str
    file: str
    format: str | None = None
    entries: int | None = None
    entries_from: str | None = None
    chunks: int = 0
    compressed_bytes: int | None = None
    uncompressed_bytes: int | None = None
    error: str | None = None


@dataclass
class DatasetPlanInfo:
    """One dataset.

    Attributes:
        name: the dataset.
        format: the dataset's format (detected for ``auto``).
        treename: the tree read.
        files: every file, in order.
        branches: the branches read (present in its first readable file).
        entries, chunks: totals over its readable files.
        max_chunk_entries: entries of its largest chunk.
        compressed_bytes, uncompressed_bytes: of the branches read, over its files (bytes).
        est_worker_memory_bytes: :func:`estimate_worker_memory` for its largest chunk (None when unknown).
    """

    name: str
    format: str
    treename: str
    files: list[FilePlan] = field(default_factory=list)
    branches: list[str] = field(default_factory=list)
    entries: int = 0
    chunks: int = 0
    max_chunk_entries: int = 0
    compressed_bytes: int = 0
    uncompressed_bytes: int = 0
    est_worker_memory_bytes: int | None = None

    @property
    def uncompressed_bytes_per_entry(self) -> float:
        """Uncompressed bytes of the branches read per entry (0 without entries)."""
        return self.uncompressed_bytes / self.entries if self.entries else 0.0


@dataclass
class RunPlan:
    """What a run of the config would do.

    Attributes:
        name: the config's name.
        chunksize: target entries per chunk.
        worker_memory_bytes: memory per worker (None when the backend does not say).
        worker_memory_source: where that figure comes from (``executor.memory_limit``, ...).
        datasets: per dataset.
        warnings: what deserves attention but does not stop the run.
        problems: what would stop the run (one line each); empty when it would start.
    """

    name: str
    chunksize: int
    worker_memory_bytes: int | None
    worker_memory_source: str
    datasets: list[DatasetPlanInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the run would start and find no problem in its inputs."""
        return not self.problems

    @property
    def files(self) -> int:
        return sum(len(d.files) for d in self.datasets)

    @property
    def chunks(self) -> int:
        return sum(d.chunks for d in self.datasets)

    @property
    def entries(self) -> int:
        return sum(d.entries for d in self.datasets)


def estimate_worker_memory(uncompressed_bytes_per_entry: float, chunk_entries: int, fmt: str | None = None) -> int:
    """Peak memory of a worker running one chunk (bytes): ``BASE_BYTES + factor x bytes/entry x entries``.

    Args:
        uncompressed_bytes_per_entry: uncompressed bytes of the branches read, per entry.
        chunk_entries: entries in the chunk.
        fmt: the input format (its factor in :data:`FACTORS`; default and others: :data:`FACTOR`).
    """
    return int(BASE_BYTES + FACTORS.get(fmt or "", FACTOR) * uncompressed_bytes_per_entry * chunk_entries)


def worker_memory_limit(cfg: RunConfig) -> tuple[int | None, str]:
    """Memory per worker the config gives (bytes) and where it comes from.

    ``executor.memory_limit`` when set; batch backends: ``executor.cluster.memory`` / ``processes``;
    ``local`` without a limit: Dask's default, the machine's memory shared by the workers;
    otherwise unknown (None).
    """
    ex = cfg.executor
    if ex.memory_limit and ex.memory_limit != "auto":
        return parse_bytes_text(ex.memory_limit), "executor.memory_limit"
    mem = ex.cluster.get("memory") if isinstance(ex.cluster, dict) else None
    if mem:
        try:
            return parse_bytes_text(str(mem)) // max(1, int(ex.cluster.get("processes", 1) or 1)), \
                "executor.cluster.memory / processes"
        except (ValueError, TypeError):
            pass
    if ex.backend in ("local", "serial"):
        try:
            import psutil

            total = int(psutil.virtual_memory().total)
        except (ImportError, OSError):
            return None, "unknown"
        if ex.backend == "serial":
            return total, "this machine's memory (serial)"
        workers = ex.workers or max(1, (os.cpu_count() or 1) // ex.threads_per_worker)
        return total // workers, f"this machine's memory / {workers} workers (Dask's default)"
    return None, f"not known for backend {ex.backend}"


def branch_bytes(tree: Any, branches: list[str] | set[str]) -> tuple[int | None, int | None]:
    """``(compressed, uncompressed)`` bytes of the named branches present in an uproot ``TTree``
    (``None, None`` for a tree without per-branch sizes, e.g. an RNTuple)."""
    comp = uncomp = 0
    try:
        for name in branches:
            if name in tree:
                b = tree[name]
                comp += int(b.compressed_bytes)
                uncomp += int(b.uncompressed_bytes)
    except (AttributeError, TypeError, NotImplementedError):
        return None, None
    return comp, uncomp


def _scan_file(fname: str, fmt: str, treename: str, branches: list[str], timeout: int) -> dict[str, Any]:
    """Open one file: its own format, whether it reads as ``fmt``, bytes of ``branches``."""
    from . import readers
    from .failures import error_line
    from .readers.detect import open_file

    try:
        with open_file(fname, timeout=timeout) as handle:
            try:
                own = readers.detect_details(handle, fmt="auto").format
            except readers.ReaderError:
                own = None
            try:
                readers.detect_details(handle, fmt=fmt)
            except readers.ReaderError as err:
                return {"format": own, "error": str(err)}
            comp, uncomp = branch_bytes(handle[treename], branches) if treename in handle else (None, None)
            return {"format": own or fmt, "compressed": comp, "uncompressed": uncomp}
    except readers.ReaderError as err:
        return {"error": str(err)}
    except Exception as err:  # noqa: BLE001 - damaged, unreachable: the file's one-line reason
        return {"error": f"{fname}: cannot read: {error_line(err)}"}


def _without_generate(cfg: RunConfig) -> RunConfig:
    out = cfg.model_copy(deep=True)
    for ds in out.datasets.values():
        ds.generate = None
    return out


def _prepare(cfg: RunConfig, proc, problems: list[str], warnings: list[str]):
    """The run's dataset step (no generation): every dataset that prepares, problems for the others."""
    from .datasets import DatasetPlan, prepare_datasets

    bare = _without_generate(cfg)
    try:
        return prepare_datasets(bare, proc, client=None, console=None)
    except (RunError, ConfigError) as err:
        whole = str(err)
    plans, failed = [], 0
    for name in cfg.datasets:
        one = bare.model_copy(update={"datasets": {name: bare.datasets[name]}})
        try:
            plans.append(prepare_datasets(one, proc, client=None, console=None))
        except (RunError, ConfigError) as err:
            failed += 1
            if cfg.datasets[name].generate is not None:
                warnings.append(f"datasets.{name}: files not generated yet; the run generates them first ({err})")
            else:
                problems.append(f"datasets.{name}: {err}")
    if not failed:  # each dataset prepares alone: the problem is between them (a file in two)
        problems.append(whole)
    merged = DatasetPlan({}, {}, set(), [])
    for p in plans:
        merged.fileset.update(p.fileset)
        merged.formats.update(p.formats)
        merged.branches |= p.branches
        merged.deduplicated += p.deduplicated
    return merged


def plan_run(
    config: str | os.PathLike | dict | RunConfig,
    *,
    chunksize: int | None = None,
    max_files: int | None = None,
    skip_bad_files: bool = False,
    refresh: bool = False,
    threads: int = 4,
) -> RunPlan:
    """Plan a run of ``config`` without processing anything.

    Args:
        config: YAML path, mapping, or :class:`~jettracks.config.RunConfig`.
        chunksize: override ``executor.chunksize`` (entries per chunk).
        max_files: override ``executor.max_files`` (files per dataset).
        skip_bad_files: as the run's ``--skip-bad-files``: an unreadable file is then a
            warning (the run would skip it), not a problem (the run would stop on it).
        refresh: ignore the file-metadata cache.
        threads: files opened at once (default 4; remote files wait on the network).

    Raises:
        ConfigError: a bad config (one line naming the key).
    """
    from . import metadata
    from .engines import chunk_steps
    from .io.files import EntryCache
    from .loading import load_processor

    cfg = load_config(config)
    cfg = apply_overrides(cfg, chunksize=chunksize, max_files=max_files)
    proc = load_processor(cfg, None)
    limit, source = worker_memory_limit(cfg)
    plan = RunPlan(cfg.name, int(cfg.executor.chunksize), limit, source)
    prepared = _prepare(cfg, proc, plan.problems, plan.warnings)

    cache = EntryCache(refresh=refresh)
    cached = {(ds, f) for ds, spec in prepared.fileset.items() for f in spec["files"]
              if cache.get(f, spec["treename"]) is not None}
    try:
        files = metadata.collect_metadata(prepared.fileset, client=None, ex=cfg.executor, refresh=refresh,
                                          deduplicated=prepared.deduplicated)
    except RunError as err:  # the same file (UUID) in two datasets
        plan.problems.append(str(err))
        return plan
    bad = {(b.dataset, b.filename): b.line() for b in files.bad}

    jobs = []
    for ds, spec in prepared.fileset.items():
        fmt = prepared.formats[ds]
        info = DatasetPlanInfo(ds, fmt, spec["treename"])
        plan.datasets.append(info)
        for fname in spec["files"]:
            fp = FilePlan(ds, fname)
            info.files.append(fp)
            m = files.meta.get((ds, fname))
            if m is None:  # the run counts it as a bad file; its own format may say why
                fp.error = bad.get((ds, fname), f"{fname}: unreadable")
                jobs.append((fp, fmt, spec["treename"]))
                continue
            fp.entries = int(m["numentries"])
            fp.entries_from = "cache" if (ds, fname) in cached else "file"
            steps = chunk_steps(fp.entries, cfg.executor.chunksize)
            fp.chunks = len(steps)
            info.entries += fp.entries
            info.chunks += fp.chunks
            info.max_chunk_entries = max(info.max_chunk_entries, *(b - a for a, b in steps))
            jobs.append((fp, fmt, spec["treename"]))
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(
            lambda j: _scan_file(j[0].file, j[1], j[2], sorted(prepared.branches), cfg.executor.xrootd_timeout),
            jobs,
        ))
    for (fp, fmt, _tree), res in zip(jobs, results):
        fp.format = res.get("format")
        if fp.entries is None:  # unreadable for the run: keep the metadata step's reason
            if fp.format and fp.format != fmt:
                fp.error += f" (it is a {fp.format} file)"
            continue
        fp.error = res.get("error")
        fp.compressed_bytes, fp.uncompressed_bytes = res.get("compressed"), res.get("uncompressed")
    for info in plan.datasets:
        _finish_dataset(plan, info, prepared, skip_bad_files)
    return plan


def _finish_dataset(plan: RunPlan, info: DatasetPlanInfo, prepared, skip_bad_files: bool) -> None:
    """Totals, the memory estimate and the warnings/problems of one dataset."""
    from .readers.detect import list_trees, open_file

    usable = [f for f in info.files if f.error is None]
    info.compressed_bytes = sum(f.compressed_bytes or 0 for f in usable)
    info.uncompressed_bytes = sum(f.uncompressed_bytes or 0 for f in usable)
    if usable:
        try:
            with open_file(usable[0].file) as handle:
                present = list_trees(handle).get(info.treename, set())
            info.branches = sorted(b for b in prepared.branches if b in present)
        except Exception:  # noqa: BLE001 - it opened a moment ago; the list is only informative
            info.branches = sorted(prepared.branches)
    sized = [f for f in usable if f.uncompressed_bytes is not None and f.entries]
    if sized and info.max_chunk_entries:
        per_entry = max(f.uncompressed_bytes / f.entries for f in sized)  # the heaviest file decides
        info.est_worker_memory_bytes = estimate_worker_memory(per_entry, info.max_chunk_entries, info.format)
        limit = plan.worker_memory_bytes
        if limit is not None and info.est_worker_memory_bytes > limit:
            factor = FACTORS.get(info.format, FACTOR)
            fit = int((limit - BASE_BYTES) / (factor * per_entry)) if limit > BASE_BYTES else 0
            plan.warnings.append(
                f"datasets.{info.name}: a chunk of {info.max_chunk_entries:,} entries needs about "
                f"{info.est_worker_memory_bytes / 1e9:.2f} GB per worker (memory model) > "
                f"{limit / 1e9:.2f} GB ({plan.worker_memory_source}): "
                + (f"set executor.chunksize to at most {fit:,}" if fit else "give the workers more memory")
            )
    formats = sorted({f.format for f in info.files if f.format})
    if len(formats) > 1:
        counts = ", ".join(f"{sum(f.format == x for f in info.files)} {x}" for x in formats)
        plan.warnings.append(f"datasets.{info.name}: mixed formats ({counts}); the run reads them all as {info.format}")
    for f in info.files:
        if f.error is None:
            continue
        if f.entries is not None:  # it opened for its metadata but is not readable as the dataset's format
            plan.problems.append(f.error)
        elif skip_bad_files:
            plan.warnings.append(f"{f.error} (the run skips it: --skip-bad-files)")
        else:
            plan.problems.append(f"{f.error} (the run stops on it; --skip-bad-files skips it)")


def print_plan(plan: RunPlan, console: Any) -> None:
    """Print ``plan`` on a ``rich`` console: datasets, files, branches, memory, warnings, problems."""
    from rich.table import Table

    from .summary import human_bytes

    mem = f"{human_bytes(plan.worker_memory_bytes)} ({plan.worker_memory_source})" \
        if plan.worker_memory_bytes else plan.worker_memory_source
    console.print(f"[bold]plan[/bold] {plan.name}: {plan.files} files, {plan.entries:,} entries, "
                  f"{plan.chunks} chunks of ≤ {plan.chunksize:,} entries; worker memory {mem}",
                  highlight=False, soft_wrap=True)
    t = Table(title="Datasets")  # one column per dataset: fits a narrow terminal
    t.add_column("")
    for d in plan.datasets:
        t.add_column(d.name, justify="right", overflow="fold")
    rows = [
        ("format", lambda d: d.format),
        ("files", lambda d: f"{len(d.files)} ({sum(f.error is not None for f in d.files)} unusable)"),
        ("entries", lambda d: f"{d.entries:,}"),
        ("entries from cache", lambda d: f"{sum(f.entries_from == 'cache' for f in d.files)} files"),
        ("chunks", lambda d: f"{d.chunks:,}"),
        ("largest chunk", lambda d: f"{d.max_chunk_entries:,} entries"),
        ("branches read", lambda d: str(len(d.branches))),
        ("compressed", lambda d: human_bytes(d.compressed_bytes)),
        ("uncompressed", lambda d: human_bytes(d.uncompressed_bytes)),
        ("uncompressed / entry", lambda d: human_bytes(d.uncompressed_bytes_per_entry)),
        ("worker memory / chunk", lambda d: human_bytes(d.est_worker_memory_bytes) if d.est_worker_memory_bytes else "–"),
    ]
    for label, value in rows:
        t.add_row(label, *(value(d) for d in plan.datasets))
    console.print(t)
    for d in plan.datasets:
        ft = Table(title=f"Files of {d.name}")
        ft.add_column("file", overflow="fold")
        ft.add_column("entries", justify="right")
        ft.add_column("chunks", justify="right")
        ft.add_column("compressed", justify="right")
        ft.add_column("format / problem", overflow="fold")
        for f in d.files:
            entries = f"{f.entries:,}" if f.entries is not None else "–"
            ft.add_row(f.file, entries + (" (cache)" if f.entries_from == "cache" else ""), str(f.chunks),
                       human_bytes(f.compressed_bytes) if f.compressed_bytes is not None else "–",
                       f"[red]{f.error}[/red]" if f.error else (f.format or ""))
        console.print(ft)
    for d in plan.datasets:
        if d.branches:
            console.print(f"branches read, {d.name}: {', '.join(d.branches)}", highlight=False, soft_wrap=True)
    for w in plan.warnings:
        console.print(f"[yellow]warning[/yellow] {w}", highlight=False, soft_wrap=True)
    for p in plan.problems:
        console.print(f"[red]problem[/red] {p}", highlight=False, soft_wrap=True)
    console.print(
        "[green]the run would start[/green]" if plan.ok
        else f"[red]the run would not start or would fail[/red]: {len(plan.problems)} problem(s)",
    )
