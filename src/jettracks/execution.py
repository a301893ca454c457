"""The run pipeline: config → datasets → file metadata → engine → report → outputs.

:func:`run_config` is the library's entry point; ``python -m runner`` and
``jettracks.run`` are thin shells over it. It is a sequence of named steps,
each a function of the module that owns its job:

1. overrides: :func:`jettracks.config.apply_overrides` (command-line options, validated
   like the file);
2. the run directory: :class:`jettracks.io.rundir.RunDirectory` (marker, lock, overwrite
   rules, the fingerprint that decides resume);
3. the cluster: :func:`jettracks.cluster.connect` (or the caller's ``Client``; the
   output directory must be visible to every worker: :mod:`jettracks.cluster.shared_output`);
4. datasets and formats: :func:`jettracks.datasets.prepare_datasets`;
5. file metadata: :func:`jettracks.metadata.collect_metadata` (entries, UUIDs, bad files);
6. the engine: :func:`jettracks.engines.run_engine` (``runner`` or ``dask-awkward``; both
   capture per-chunk failures, retry, checkpoint and resume the same way);
7. the report: :func:`jettracks.report.build_report`, checked (accounting, failures);
8. outputs: :func:`jettracks.io.outputs.write_outputs`, then ``report.json`` and the page
   ``report.html`` (:mod:`jettracks.io.report_html`; a failed run's page too).

Every entry is accounted for: the report lists, per file, the entries the
metadata promises and the entries the processor read or skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cluster, datasets, metadata
from .config import ConfigError, RunConfig, apply_overrides, load_config
from .errors import RunError
from .report import RunReport

__all__ = ["RunError", "RunResult", "fingerprint_config", "resolve_files", "run_config"]

resolve_files = datasets.resolve_files


@dataclass
class RunResult:
    """What a run produced.

    Attributes:
        hists: name -> ``hist.Hist`` (axes: dataset, flavour, variable).
        cutflow: dataset -> step -> count.
        report: the run's :class:`~jettracks.report.RunReport` (what ``report.json`` holds).
        output_dir: the run directory (a ``Path``, or a :class:`~jettracks.io.outfs.RemotePath`
            for a ``root://`` ``output.dir``).
        ml_dir: directory of the per-jet ML dataset (None when disabled).
    """

    hists: dict[str, Any]
    cutflow: dict[str, dict[str, int]]
    report: RunReport
    output_dir: Path
    ml_dir: Path | None = None
    files: dict[str, list[str]] = field(default_factory=dict)

    def ml_dataset(self, dataset: str | None = None):
        """The per-jet ML columns as one awkward array (reads the finalized Parquet files the manifest lists).

        Args:
            dataset: only this dataset's rows. Datasets of different formats have
                different columns (no dxy in JetNtuple): all together they form a union.
        """
        import awkward as ak

        if self.ml_dir is None:
            raise RunError("this run wrote no ML columns (output.ml: false)")
        # Exactly this run's parts, as listed in the manifest.
        manifest = json.loads((self.ml_dir / "manifest.json").read_text())
        prefix = f"part-{dataset}-" if dataset else "part-"
        parts = [str(self.ml_dir / n) for n in manifest["part_files"] if n.startswith(prefix)]
        if not parts:
            return ak.Array([])
        arrays = [ak.from_parquet(p) for p in parts]
        if dataset:  # a name like "qcd" also globs "qcd-2"'s parts
            arrays = [a[ak.fill_none(a.dataset == dataset, False)] for a in arrays]
        return ak.concatenate(arrays)


def run_config(
    config: str | os.PathLike | dict | RunConfig,
    *,
    client: Any = None,
    workers: int | None = None,
    chunksize: int | None = None,
    max_files: int | None = None,
    output_dir: str | os.PathLike | None = None,
    scheduler: str | None = None,
    backend: str | None = None,
    progress: bool = True,
    plots: bool | None = None,
    cache: str | os.PathLike | None = None,
    skip_bad_files: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    refresh: bool = False,
    console: Any = None,
    verbose: bool = False,
) -> RunResult:
    """Run a config end to end and write its outputs.

    Args:
        config: YAML path, mapping, or :class:`~jettracks.config.RunConfig`.
        client: an existing ``distributed.Client`` to run on (not closed afterwards).
        workers: override ``executor.workers``.
        chunksize: override ``executor.chunksize`` (entries per chunk).
        max_files: override ``executor.max_files`` (files per dataset).
        output_dir: override ``output.dir``.
        cache: override ``executor.cache`` (a column cache directory, ``--cache``).
        scheduler: attach to this Dask scheduler address (sets ``backend: scheduler``).
        backend: override ``executor.backend``.
        progress: show a progress bar.
        plots: override ``output.plots``.
        skip_bad_files: finish the run past files/chunks that keep failing and
            report what was skipped (default: stop, naming the first failure, once
            every other chunk has finished and been checkpointed).
        overwrite: replace an output directory left by a different config/processor, and
            regenerate ``generate:`` samples this generator wrote with other parameters.
        resume: require an earlier run of the same config to resume from (rerunning
            the same command resumes anyway).
        refresh: ignore the cached file metadata (entries per file).
        console: a ``rich.console.Console`` for messages (default: stderr).
        verbose: also show Dask's scheduler and worker logs on the console; they
            always go to ``<output dir>/logs/dask.log`` (:func:`cluster.capture_dask_logs`).

    Raises:
        ConfigError: bad config (one line naming the key).
        RunError: bad input file or failed run (one line naming the file).
    """
    from rich.console import Console

    from .io.outfs import out_path
    from .io.outputs import package_versions
    from .io.rundir import RunDirectory, RunDirError, describe_removal, run_fingerprint
    from .loading import load_processor

    console = console or Console(stderr=True)
    cfg = load_config(config)
    cfg = apply_overrides(
        cfg, workers=workers, chunksize=chunksize, max_files=max_files, scheduler=scheduler,
        backend=backend, output_dir=output_dir, plots=plots, cache=cache,
    )
    out_dir = out_path(cfg.output.dir).expanduser().absolute()  # a local Path or a root:// RemotePath
    if datasets.uses_xrootd(cfg):  # before the first remote access: a dead server fails in seconds
        from .io.files import configure_xrootd_client

        configure_xrootd_client(**datasets.xrootd_settings(cfg.executor))
    proc = load_processor(cfg, out_dir / "ml" if cfg.output.ml else None)
    state = RunDirectory(out_dir, run_fingerprint(type(proc), fingerprint_config(cfg), package_versions()))
    try:
        claimed = state.claim(overwrite=overwrite, resume=resume)
    except RunDirError as err:
        raise RunError(str(err)) from None
    if claimed.removed or claimed.kept:
        console.print(describe_removal(claimed.removed, claimed.kept))
    with state, cluster.capture_dask_logs(out_dir / "logs" / "dask.log", verbose=verbose):
        try:
            return _run_claimed(
                cfg, state, proc, client=client, progress=progress,
                skip_bad_files=skip_bad_files, refresh=refresh, console=console, regenerate=overwrite,
            )
        except (RunError, ConfigError) as err:
            # Whatever stopped the run, report.json must not keep an earlier run's "ok".
            _record_failure(out_dir, cfg.name, state.fingerprint, str(err))
            _write_page(out_dir, console)  # a failed run's page says why
            raise


def _write_page(out_dir: Path, console: Any, report: RunReport | None = None) -> None:
    """``report.html`` from the run's report (:mod:`jettracks.io.report_html`); a page that
    cannot be written is a warning, never the run's failure (``report.json`` is the record)."""
    from .io.report_html import write_report_html
    from .summary import SummaryError

    try:
        write_report_html(out_dir, report)
    except (OSError, SummaryError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        console.print(f"warning: {out_dir / 'report.html'} not written: {reason}",
                      markup=False, highlight=False, soft_wrap=True)


def _record_failure(out_dir: Path, name: str, fingerprint: str, message: str) -> None:
    """A minimal failed ``report.json``, unless the run already wrote its full failed report."""
    from .io.outputs import save_report

    try:
        old = json.loads((out_dir / "report.json").read_text())
    except (OSError, ValueError):
        old = {}
    if old.get("status") == "failed" and old.get("error") == message:
        return
    try:
        save_report(out_dir, {"name": name, "status": "failed", "error": message, "fingerprint": fingerprint})
    except OSError:
        pass  # the one-line error still reaches the user; the disk may be full


def _check_cache(ex) -> None:
    """A column cache directory that cannot be used stops the run with one line, before any chunk."""
    if not ex.cache:
        return
    from .engines import reading_options
    from .io.column_cache import CacheError, ColumnCache

    opts = reading_options(ex)
    try:
        ColumnCache(opts["cache_dir"], max_bytes=opts["cache_max_bytes"], compression=opts["cache_compression"])
    except CacheError as err:
        raise RunError(f"executor.cache: {err}") from None


def fingerprint_config(cfg: RunConfig) -> dict[str, Any]:
    """Every config option that changes an output: part of the run's fingerprint.

    Not included: where and how fast chunks run (backend, workers, retries, ...),
    ``max_files`` (per-chunk checkpoints are keyed by file; the ML manifest lists
    exactly this run's parts) and ``output.plots`` (plots are redrawn each run).
    """
    dumped = cfg.model_dump(mode="json", by_alias=True)
    return {
        "datasets": dumped["datasets"],
        "processor": dumped["processor"],
        "chunksize": cfg.executor.chunksize,
        "engine": cfg.executor.engine,
        "ml": cfg.output.ml,
        "ml_dataset": dumped["output"]["ml_dataset"],
    }


def _run_claimed(cfg: RunConfig, state, proc, *, client, progress: bool, skip_bad_files: bool,
                 refresh: bool, console, regenerate: bool = False) -> RunResult:
    """Steps 3-8, inside the claimed and locked run directory ``state``."""
    from .cluster.shared_output import OutputGuard
    from .engines import run_engine
    from .io.checkpoints import RunCheckpointer

    ex, out_dir = cfg.executor, state.path
    checkpointer = RunCheckpointer(state.checkpoint_dir)
    scanner = None
    times = {"start": time.perf_counter()}
    from .report import provenance_soon

    provenance_of_run = provenance_soon()  # git and versions, while the chunks run
    serial = ex.backend == "serial" and client is None
    cluster_ctx = OutputGuard(  # every worker must see out_dir
        cluster.serial() if serial else cluster.connect(ex, client=client, processor_class=cfg.processor.class_),
        out_dir, console=console, transfer=cfg.output.transfer,
    )
    with contextlib.ExitStack() as stack:  # the ML part scanner stops however the run ends
        try:
            with cluster_ctx as handle:
                if handle.dashboard_link:
                    console.print(f"[bold]Dask dashboard:[/bold] {handle.dashboard_link}")
                plan = datasets.prepare_datasets(cfg, proc, client=handle.client, console=console,
                                                 regenerate=regenerate, refresh=refresh)
                times["prepared"] = time.perf_counter()
                files = metadata.collect_metadata(
                    plan.fileset, client=handle.client, ex=ex, refresh=refresh, console=console,
                    deduplicated=plan.deduplicated,
                )
                times["metadata"] = time.perf_counter()
                _check_cache(ex)
                if cfg.output.ml:
                    # ML parts are scanned as chunks finish: finalize then only merges and writes.
                    from .io.mldata import PartScanner

                    scanner = stack.enter_context(PartScanner(out_dir / "ml"))
                result = run_engine(
                    ex.engine, plan.fileset, files.meta, proc, client=handle.client, ex=ex,
                    branches=plan.branches, checkpointer=checkpointer, progress=progress,
                    transfer_bytes=_transfer_bytes(cfg, handle.client),
                    on_output=_part_observer(scanner),
                )
                times["done"] = time.perf_counter()
                backend = {"backend": "serial" if serial else handle.backend, **handle.description}
        except cluster.ClusterError as err:
            raise RunError(f"executor.backend {ex.backend}: {err}") from None
        except KeyboardInterrupt:
            raise RunError(
                f"interrupted; finished chunks are checkpointed in {state.checkpoint_dir}: "
                "rerun the same command to resume"
            ) from None
        return _finish(cfg, state, plan, files, result, backend, times, checkpointer, cluster_ctx, scanner,
                       skip_bad_files=skip_bad_files, console=console, provenance_of_run=provenance_of_run.result())


def _part_observer(scanner: Any):
    """``on_output`` for the engine: each finished chunk's ML parts to the scanner."""
    if scanner is None:
        return None

    def observe(output: Any) -> None:
        if isinstance(output, dict) and output.get("ml_parts"):
            scanner.add(output["ml_parts"])

    return observe


def _finish(cfg, state, plan, files, result, backend, times, checkpointer, cluster_ctx, scanner, *,
            skip_bad_files: bool, console, provenance_of_run: Any = None) -> RunResult:
    """Steps 6-8 (report, checks, outputs) of a run whose chunks have all finished."""
    from .io.outputs import save_report, write_outputs
    from .report import build_report

    out_dir = state.path
    report = build_report(
        name=cfg.name, config=cfg.model_dump(mode="json", by_alias=True), fingerprint=state.fingerprint,
        plan=plan, metadata=files, result=result, cluster=backend, times=times,
        provenance_of_run=provenance_of_run,
    )
    output = result.output or {}
    cluster_ctx.verify(  # the workers' ML parts and checkpoints must be at the client
        report, output, fileset=plan.fileset, meta=files.meta, chunk_times=result.chunk_times(),
        checkpointer=checkpointer,
    )
    ent = report.entries
    if ent.processed + ent.skipped != ent.expected:  # an invariant: anything else is a bug
        _fail(out_dir, report, (
            f"accounting mismatch: processed {ent.processed} + skipped {ent.skipped} != expected "
            f"{ent.expected}; see {out_dir / 'report.json'}"
        ))
    failures = files.bad + result.failures_as_chunkfailures()
    if failures and not skip_bad_files:
        more = len(failures) - 1
        _fail(out_dir, report, (
            f"{failures[0].line()}"
            + (f" (and {more} more)" if more else "")
            + "; other chunks are checkpointed: fix or pass --skip-bad-files, then rerun"
        ))
    try:
        write_outputs(cfg, out_dir, report, output, console=console, scanner=scanner)
    except FileNotFoundError as err:  # a part a worker reported is not at the client
        _fail(out_dir, report, f"ML dataset incomplete: {err}")
    except OSError as err:
        _fail(out_dir, report, f"cannot write outputs in {out_dir}: {_os_reason(err)}; rerun to resume")
    report.status = "partial" if failures else "ok"
    try:
        save_report(out_dir, report)
    except OSError as err:
        raise RunError(f"cannot write {out_dir / 'report.json'}: {_os_reason(err)}; rerun to resume") from None
    _write_page(out_dir, console, report)
    return RunResult(
        hists=output.get("hists", {}),
        cutflow=output.get("cutflow", {}),
        report=report,
        output_dir=out_dir,
        ml_dir=out_dir / "ml" if cfg.output.ml else None,
        files={k: v["files"] for k, v in plan.fileset.items()},
    )


def _transfer_bytes(cfg: RunConfig, client: Any) -> int | None:
    """``output.transfer: dask`` on a cluster: the most ML-part bytes a chunk sends back; else None."""
    if cfg.output.transfer != "dask" or client is None:
        return None
    return int(cfg.output.transfer_mb * 1e6)


def _os_reason(err: OSError) -> str:
    return err.strerror or f"{err.__class__.__name__}: {err}"


def _fail(out_dir: Path, report: RunReport, message: str) -> None:
    """Record a failed run in ``report.json`` (status and error agree with the exit code), then raise."""
    from .io.outputs import save_report

    report.status = "failed"
    report.error = message
    try:
        save_report(out_dir, report)
    except OSError as err:
        message += f" (report.json not written: {_os_reason(err)})"
    raise RunError(message)
