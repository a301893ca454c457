"""Execution: config → file list → cluster → coffea Runner → processor → outputs.

:func:`run_config` is the library's entry point; ``python -m runner`` and
``jettracks.run`` are thin shells over it. It

1. validates the config and resolves each dataset's files (globs, URLs,
   ``files_from``; relative paths against the config file's directory, sent to
   the workers absolute), generating synthetic samples where the config says so;
   a file listed twice is processed once, a file in two datasets is refused;
2. detects formats (``format: auto``) and checks that each dataset's first
   readable file has the branches its reader needs (a file of the wrong format
   fails with one line naming it; one that does not open is a bad file);
3. connects to the cluster backend (:mod:`jettracks.cluster`) or uses the
   caller's ``Client``;
4. runs coffea's ``Runner`` with a ``DaskExecutor`` (``backend: serial``:
   ``IterativeExecutor`` in this process), reading only the branches the readers
   declare;
5. writes histograms, plots and ``report.json``; the workers have written the
   per-jet ML Parquet parts themselves.

Every entry is accounted for: the report lists, per file, the entries the
metadata promises and the entries the processor read.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import cluster, readers
from .config import ConfigError, DatasetConfig, RunConfig, load_config, parse_config

__all__ = ["RunError", "RunResult", "resolve_files", "run_config"]


class RunError(RuntimeError):
    """A run that cannot go on; the message is one line naming the file or key."""


@dataclass
class RunResult:
    """What a run produced.

    Attributes:
        hists: name -> ``hist.Hist`` (axes: dataset, flavour, variable).
        cutflow: dataset -> step -> count.
        report: the content of ``report.json``.
        output_dir: the run directory.
        ml_dir: directory of the per-jet Parquet parts (None when disabled).
    """

    hists: dict[str, Any]
    cutflow: dict[str, dict[str, int]]
    report: dict[str, Any]
    output_dir: Path
    ml_dir: Path | None = None
    files: dict[str, list[str]] = field(default_factory=dict)

    def ml_dataset(self, dataset: str | None = None):
        """The per-jet ML columns as one awkward array (reads the Parquet parts).

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
            arrays = [a[a.dataset == dataset] for a in arrays]
        return ak.concatenate(arrays)


def resolve_files(
    name: str, ds: DatasetConfig, *, base_dir: str | os.PathLike | None = None, timeout: int = 60
) -> list[str]:
    """The dataset's file list: globs and ``files_from`` expanded, order kept, each file once.

    Relative local paths (in ``files``, the ``files_from`` path and its entries)
    are relative to ``base_dir`` -- the config file's directory -- or to the
    working directory when None, and are returned absolute, so workers started in
    any directory open the same files (:func:`jettracks.files.dataset_files`).
    A file named twice (also as ``./f.root`` and ``f.root``, or a symlink and its
    target) is kept at its first place.

    Raises:
        RunError: a pattern that matches nothing, or an unreadable index file.
    """
    from .files import deduplicate, file_identity

    kept, _ = deduplicate({name: _listed_files(name, ds, base_dir, timeout)},
                          lambda _ds, f: file_identity(f), by="path")
    return kept[name]


def _listed_files(name: str, ds: DatasetConfig, base_dir, timeout: int) -> list[str]:
    """:func:`jettracks.files.dataset_files` of a dataset, repeats included; errors as ``RunError``."""
    from .files import FileListError, dataset_files

    try:
        return dataset_files(name, ds.files, ds.files_from, base_dir=base_dir, timeout=timeout)
    except FileListError as err:
        raise RunError(str(err)) from None


def _files_or_generate(name: str, ds: DatasetConfig, cfg: RunConfig, client, console=None) -> list[str]:
    """The dataset's files, repeats included (the caller drops and reports them), generating
    the files first when a pattern matches nothing and ``generate`` is set.

    ``generate.out`` (default: the directory of the first ``files`` pattern) is
    relative to the config file's directory, as the patterns are.
    """
    timeout = cfg.executor.xrootd_timeout
    if ds.generate is None:
        return _listed_files(name, ds, cfg.base_dir, timeout)
    # Always asked, not only when nothing matches: the generator reuses files made with
    # the same parameters and refuses files made with others (another seed or size).
    from . import generate
    from .files import resolve_local

    gen = ds.generate
    if gen.out is not None:
        out = resolve_local(gen.out, cfg.base_dir)
    elif ds.files:
        out = os.path.dirname(resolve_local(ds.files[0], cfg.base_dir))
    else:
        raise RunError(f"datasets.{name}.generate.out: give the directory to generate the files in")
    if ds.format not in generate.FORMATS:
        raise RunError(f"datasets.{name}.generate: format {ds.format!r} cannot be generated")
    try:
        made = generate.generate_dataset(
            out,
            format=ds.format,
            n_files=gen.files,
            events_per_file=gen.events_per_file,
            seed=gen.seed,
            process=gen.process,
            client=client,
            **gen.options,
        )
    except ValueError as err:
        raise ConfigError(f"datasets.{name}.generate: {' '.join(str(err).split())}") from None
    if getattr(made, "action", "") != "reused" and getattr(made, "message", None) and console is not None:
        console.print(f"datasets.{name}: {made.message}")
    return _listed_files(name, ds, cfg.base_dir, timeout)


def _load_processor(cfg: RunConfig, ml_dir: Path | None):
    module_name, _, class_name = cfg.processor.class_.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"processor.class: cannot import {cfg.processor.class_!r}: {err}") from None
    options = dict(cfg.processor.options)
    accepted = _accepted_options(cls)
    if ml_dir is not None and "ml_dir" in accepted:
        options.setdefault("ml_dir", str(ml_dir))
        ml = cfg.output.ml_dataset
        if ml.pad_tracks and "ml_pad_tracks" in accepted:
            options.setdefault("ml_pad_tracks", ml.pad_tracks)
            options.setdefault("ml_sort_key", ml.sort_key)
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"processor.options: {err}") from None


def _accepted_options(cls) -> set[str]:
    """Keyword options a processor class takes (``{"*"}`` plus names when it takes ``**kw``)."""
    import inspect

    params = inspect.signature(cls).parameters
    names = set(params)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        names |= {"ml_dir", "ml_pad_tracks", "ml_sort_key"}
    return names


def _prepare_datasets(
    cfg: RunConfig, client, max_files: int | None, processor, console=None, deduplicated: list | None = None
) -> tuple[dict, dict, set]:
    """Resolve every dataset's files, drop repeats, detect formats and check one readable file each.

    Files: see :func:`resolve_files` (absolute from here on). A file named twice
    within a dataset (``./f.root`` and ``f.root``, a symlink and its target,
    relative and absolute) is kept once, at its first place, and the repeat is
    appended to ``deduplicated``; a file in two datasets is a ``ConfigError``
    naming both, raised before any file is opened.

    Format: detected in the first file that opens. Files before it that do not
    open stay in the list: the run counts them as bad files like any other
    (skipped with ``--skip-bad-files``, else named when every other chunk has
    finished). Only when no file of a dataset opens: ``RunError`` naming the first.
    A readable file of the wrong format (or missing the reader's branches) is a
    ``RunError`` naming it.
    """
    from .files import SharedFileError, deduplicate, file_identity

    timeout = cfg.executor.xrootd_timeout
    lists = {name: _files_or_generate(name, ds, cfg, client, console) for name, ds in cfg.datasets.items()}
    try:
        lists, dropped = deduplicate(lists, lambda ds, f: file_identity(f), by="path")
    except SharedFileError as err:
        raise ConfigError(str(err)) from None
    _note_duplicates(dropped, deduplicated, console)
    if max_files is not None:
        lists = {name: files[:max_files] for name, files in lists.items()}
    if console is not None:
        for name, files in lists.items():
            console.print(
                f"datasets.{name}: {len(files)} file{'s' if len(files) != 1 else ''}, first {files[0]}",
                markup=False, highlight=False, soft_wrap=True,
            )
    # before the first remote open: short XRootD reconnect windows (an unreachable
    # server then costs seconds, not minutes)
    _configure_remote_reading({name: {"files": files} for name, files in lists.items()}, client, cfg.executor)

    fileset: dict[str, dict[str, Any]] = {}
    formats: dict[str, str] = {}
    branches: set[str] = set()
    for name, files in lists.items():
        ds = cfg.datasets[name]
        found, used, unreadable = None, None, []
        for fname in files:
            found, why = _detect(fname, ds.format, timeout)
            if found is not None:
                used = fname
                break
            unreadable.append(why)
        if found is None:
            raise RunError(f"{unreadable[0]}; no file of dataset {name} is readable")
        if unreadable and console is not None:
            console.print(
                f"note datasets.{name}: format from {used}; {len(unreadable)} file(s) before it "
                "could not be opened (counted as bad files)",
                markup=False, highlight=False, soft_wrap=True,
            )
        fmt = found.format
        if console is not None:
            for note in found.notes:
                console.print(f"[yellow]note[/yellow] datasets.{name}: {note}")
        try:
            reader = processor.reader_for(fmt) if hasattr(processor, "reader_for") else readers.get(fmt)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"processor.options.reader_options: format {fmt}: {err}") from None
        # Config beats reader options beats detection (a format's tree may sit at several paths).
        treename = ds.treename or (reader.treename if reader.treename in found.trees else found.treename)
        if treename not in found.trees:
            raise RunError(f"{used}: not readable as format {fmt!r}: no tree {treename!r}")
        try:
            reader.check(found.trees[treename], filename=used)
        except readers.ReaderError as err:
            raise RunError(str(err)) from None
        branches.update(reader.branches(found.trees[treename]))
        formats[name] = fmt
        fileset[name] = {
            "files": files,
            "treename": treename,
            "metadata": {**ds.metadata, "format": fmt},
        }
    return fileset, formats, branches


def _detect(fname: str, fmt: str, timeout: int):
    """(detection, None) for a file that opens, (None, one-line reason) for one that does not.

    Raises:
        RunError: the file opens but is not of the format (or of any format, for ``auto``).
    """
    from .accounting import error_line
    from .readers.detect import open_file

    try:
        handle = open_file(fname, timeout=timeout)
    except readers.ReaderError as err:
        return None, str(err)
    try:
        with handle:
            return readers.detect_details(handle, fmt=fmt), None
    except readers.ReaderError as err:
        raise RunError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - it opens, but its trees cannot be read (truncated, corrupt)
        return None, f"{fname}: cannot read: {error_line(err)}"


def _note_duplicates(dropped: list[dict], deduplicated: list | None, console) -> None:
    """Record dropped repeats for the report and say so, one line each."""
    if deduplicated is not None:
        deduplicated.extend(dropped)
    if console is not None:
        for d in dropped:
            console.print(
                f"note datasets.{d['dataset']}: {d['file']} is the same file as {d['same_as']} "
                f"(by {d['by']}): processed once",
                markup=False, highlight=False, soft_wrap=True,
            )


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
        scheduler: attach to this Dask scheduler address (sets ``backend: scheduler``).
        backend: override ``executor.backend``.
        progress: show a progress bar.
        plots: override ``output.plots``.
        skip_bad_files: finish the run past files/chunks that keep failing and
            report what was skipped (default: stop, naming the first failure, once
            every other chunk has finished and been checkpointed).
        overwrite: replace an output directory left by a different config/processor.
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

    console = console or Console(stderr=True)
    if isinstance(config, RunConfig):
        cfg = config.model_copy(deep=True)
    elif isinstance(config, dict):
        cfg = parse_config(config)
    else:
        cfg = load_config(config)
    from .config import apply_overrides

    cfg = apply_overrides(
        cfg, workers=workers, chunksize=chunksize, max_files=max_files, scheduler=scheduler, backend=backend
    )
    ex = cfg.executor
    if output_dir is not None:
        cfg.output.dir = str(output_dir)
    if plots is not None:
        cfg.output.plots = plots

    if not str(cfg.output.dir).strip():
        raise ConfigError("output.dir: empty path; give the run's output directory")
    out_dir = Path(cfg.output.dir).expanduser().absolute()
    ml_dir = out_dir / "ml" if cfg.output.ml else None
    proc = _load_processor(cfg, ml_dir)
    if ex.engine == "dask-awkward" and (skip_bad_files or resume):
        raise ConfigError(
            "executor.engine: dask-awkward has no per-chunk failure capture or checkpoints; "
            "--skip-bad-files and --resume need engine: runner"
        )
    from .outputs import package_versions
    from .rundir import RunDirectory, RunDirError, describe_removal, run_fingerprint

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
                cfg, state, proc, ml_dir, client=client, progress=progress,
                skip_bad_files=skip_bad_files, refresh=refresh, console=console,
            )
        except (RunError, ConfigError) as err:
            # Whatever stopped the run, report.json must not keep an earlier run's "ok".
            _record_failure(out_dir, cfg.name, state.fingerprint, str(err))
            raise


def _record_failure(out_dir: Path, name: str, fingerprint: str, message: str) -> None:
    """A minimal failed ``report.json``, unless the run already wrote its full failed report."""
    from .outputs import save_report

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


def _run_claimed(cfg: RunConfig, state, proc, ml_dir: Path | None, *, client, progress: bool,
                 skip_bad_files: bool, refresh: bool, console) -> RunResult:
    """The run proper, inside the claimed and locked run directory ``state``."""
    ex = cfg.executor
    out_dir = state.path
    from .accounting import RunCheckpointer

    checkpointer = RunCheckpointer(state.checkpoint_dir) if ex.engine == "runner" else None
    t_start = time.perf_counter()
    serial = ex.backend == "serial" and client is None
    cluster_ctx = _serial_cluster() if serial else cluster.connect(ex, client=client, processor_class=cfg.processor.class_)
    from .shared_output import OutputGuard  # every worker must see out_dir (issue #9)

    cluster_ctx = OutputGuard(cluster_ctx, out_dir, console=console)
    try:
        with cluster_ctx as handle:
            if handle.dashboard_link:
                console.print(f"[bold]Dask dashboard:[/bold] {handle.dashboard_link}")
            deduplicated: list[dict[str, str]] = []  # repeated files dropped (report.json)
            fileset, formats, branches = _prepare_datasets(
                cfg, handle.client, ex.max_files, proc, console, deduplicated=deduplicated
            )
            _configure_remote_reading(fileset, handle.client, ex)
            for name, fmt in formats.items():
                if cfg.datasets[name].format == "auto":
                    console.print(f"datasets.{name}: format auto -> detected [bold]{fmt}[/bold]")
            t_pre = time.perf_counter()
            meta, bad_files = _file_metadata(
                fileset, handle.client, ex, refresh=refresh, cache_dir=out_dir,
                console=console, deduplicated=deduplicated,
            )
            t_run = time.perf_counter()
            n_from_checkpoint = 0
            if ex.engine == "dask-awkward":
                from .accounting import error_line
                from .engine_dask_awkward import process_dask_awkward

                try:
                    output, failures, chunk_times, n_chunks = process_dask_awkward(
                        fileset, meta, proc, handle.client, ex, branches, None, progress
                    )
                except Exception as err:  # this engine has no per-chunk failure capture
                    raise RunError(f"engine dask-awkward: {error_line(err)}") from None
            else:
                output, failures, chunk_times, n_chunks, n_from_checkpoint = _process(
                    fileset, meta, proc, handle.client, ex, branches, checkpointer, progress
                )
            t_done = time.perf_counter()
            description = dict(handle.description)
            backend_name = "serial" if serial else handle.backend
    except cluster.ClusterError as err:
        raise RunError(f"executor.backend {ex.backend}: {err}") from None
    except KeyboardInterrupt:
        raise RunError(
            f"interrupted; finished chunks are checkpointed in {state.checkpoint_dir}: "
            "rerun the same command to resume"
        ) from None
    from .outputs import save_report

    output = output or {}
    hists = output.get("hists", {})
    cutflow = output.get("cutflow", {})
    processed = output.get("entries", {})
    skipped: dict[str, list[dict[str, Any]]] = {}
    for f in bad_files:
        skipped.setdefault(f.filename, []).append({"entries": None, "reason": f.error, "stage": "open"})
    for f in failures:
        skipped.setdefault(f.filename, []).append(
            {"entries": f.entries, "range": [f.entrystart, f.entrystop], "reason": f.error, "stage": "process"}
        )
    files_report = []
    for ds_name, spec in fileset.items():
        for fname in spec["files"]:
            m = meta.get((ds_name, fname))
            files_report.append(
                {
                    "dataset": ds_name,
                    "file": fname,
                    "uuid": m["uuid_hex"] if m else None,
                    "entries_expected": m["numentries"] if m else None,
                    "entries_processed": processed.get(fname, 0),
                    "entries_skipped": sum(s["entries"] or 0 for s in skipped.get(fname, [])),
                    "skipped": skipped.get(fname, []),
                }
            )
    n_expected = sum(f["entries_expected"] or 0 for f in files_report)
    n_processed = sum(f["entries_processed"] for f in files_report)
    n_skipped = sum(f["entries_skipped"] for f in files_report)
    report = {
        "name": cfg.name,
        "status": "running",
        "config": cfg.model_dump(mode="json", by_alias=True),
        "fingerprint": state.fingerprint,
        "formats": formats,
        "deduplicated": deduplicated,
        "cluster": {"backend": backend_name, **description},
        "host": socket.gethostname(),
        "provenance": _provenance(),
        "files": files_report,
        "entries": {
            "expected": n_expected,
            "processed": n_processed,
            "skipped": n_skipped,
            "files_unreadable": len(bad_files),
        },
        "chunks": n_chunks,
        "chunks_failed": len(failures),
        "chunks_from_checkpoint": n_from_checkpoint,
        "cutflow": cutflow,
        "association_comparison": output.get("association_comparison", {}),
        "notices": sorted(output.get("notices", set())),
        "histograms": sorted(hists),
        "ml_parts": len(output.get("ml_parts", [])),
        "timing": {
            "prepare_s": round(t_pre - t_start, 3),
            "metadata_s": round(t_run - t_pre, 3),
            "process_s": round(t_done - t_run, 3),
            "total_s": round(t_done - t_start, 3),
            "entries_per_s": round(n_processed / max(t_done - t_run, 1e-9), 1),
            "chunks": [
                {"file": f, "range": [a, b], "seconds": s} for f, a, b, s in sorted(chunk_times)
            ],
        },
    }
    cluster_ctx.verify(  # the workers' ML parts and checkpoints must be at the client
        report, output, fileset=fileset, meta=meta, chunk_times=chunk_times, checkpointer=checkpointer
    )
    if n_processed + n_skipped != n_expected:  # an invariant: anything else is a bug
        _fail(out_dir, report, (
            f"accounting mismatch: processed {n_processed} + skipped {n_skipped} != expected "
            f"{n_expected}; see {out_dir / 'report.json'}"
        ))
    if (bad_files or failures) and not skip_bad_files:
        first = (bad_files + failures)[0]
        more = len(bad_files) + len(failures) - 1
        _fail(out_dir, report, (
            f"{first.line()}"
            + (f" (and {more} more)" if more else "")
            + "; other chunks are checkpointed: fix or pass --skip-bad-files, then rerun"
        ))
    try:
        _write_outputs(cfg, out_dir, ml_dir, report, hists, cutflow, output.get("ml_parts", []), console)
    except FileNotFoundError as err:  # a part a worker reported is not at the client
        _fail(out_dir, report, f"ML dataset incomplete: {err}")
    except OSError as err:
        _fail(out_dir, report, f"cannot write outputs in {out_dir}: {_os_reason(err)}; rerun to resume")
    report["status"] = "partial" if (bad_files or failures) else "ok"
    try:
        save_report(out_dir, report)
    except OSError as err:
        raise RunError(f"cannot write {out_dir / 'report.json'}: {_os_reason(err)}; rerun to resume") from None
    return RunResult(
        hists=hists,
        cutflow=cutflow,
        report=report,
        output_dir=out_dir,
        ml_dir=ml_dir,
        files={k: v["files"] for k, v in fileset.items()},
    )


def _os_reason(err: OSError) -> str:
    return err.strerror or f"{err.__class__.__name__}: {err}"


def _fail(out_dir: Path, report: dict[str, Any], message: str) -> None:
    """Record a failed run in ``report.json`` (status and error agree with the exit code), then raise."""
    from .outputs import save_report

    report["status"] = "failed"
    report["error"] = message
    try:
        save_report(out_dir, report)
    except OSError as err:
        message += f" (report.json not written: {_os_reason(err)})"
    raise RunError(message)


def _write_outputs(cfg: RunConfig, out_dir: Path, ml_dir: Path | None, report: dict[str, Any],
                   hists: dict, cutflow: dict, ml_parts, console) -> None:
    """Histograms, the ML dataset's manifest (exactly this run's parts) and plots."""
    from .outputs import save_hists, save_plots

    if hists:
        save_hists(out_dir, hists, cutflow)
    if ml_dir is not None and (ml_dir.exists() or ml_parts):
        from . import mldata

        manifest = mldata.finalize(
            ml_dir,
            parts=[Path(p).name for p in ml_parts],
            config=report["config"],
            selection=dict(cfg.processor.options),
            versions=report["provenance"]["versions"],
            hdf5=cfg.output.ml_dataset.hdf5,
        )
        if manifest["removed_stale"]:
            console.print(
                f"ml: removed {len(manifest['removed_stale'])} part(s) left by earlier runs "
                "that are not part of this run"
            )
        report["ml_dataset"] = {
            "dir": str(ml_dir),
            "rows": manifest["rows"],
            "parts": len(manifest["part_files"]),
            "rows_per_split": manifest["rows_per_split"],
            "hdf5": manifest.get("hdf5"),
        }
    if cfg.output.plots and hists:
        is_mc = all(ds.metadata.get("is_mc", True) for ds in cfg.datasets.values())
        report["plots"] = [p.name for p in save_plots(out_dir, hists, is_data=not is_mc)]


def _configure_remote_reading(fileset, client, ex) -> None:
    """XRootD client settings in this process and every worker, before any remote open.

    The client's defaults refuse to reconnect to a server for 30 min after one
    broken stream and wait out a 120 s connection window after a refused connect;
    Dask's retries are immediate, so both windows are made short (measured: a 3 s
    server outage then loses nothing). Timeouts follow ``executor.xrootd_timeout``.
    """
    if not any(f.startswith("root://") for spec in fileset.values() for f in spec["files"]):
        return
    from .files import configure_xrootd_client

    settings = {
        "stream_error_window": 0,
        "connection_window": 5,
        "connection_retry": 3,
        "request_timeout": ex.xrootd_timeout,
    }
    configure_xrootd_client(**settings)
    if client is not None:
        client.run(configure_xrootd_client, **settings)


def _file_metadata(
    fileset, client, ex, *, refresh: bool, cache_dir: Path, console=None, deduplicated: list | None = None
):
    """Entries + UUID per file; unreadable files become failures, not exceptions.

    Files with one file UUID are one file, whatever their names (a copy, a local
    path and a ``root://`` URL of it): within a dataset only the first is kept --
    the others leave ``fileset`` and are appended to ``deduplicated`` -- and one
    in two datasets is a ``RunError`` naming both, before any chunk runs.
    """
    from .accounting import ChunkFailure, error_line, file_metadata

    cache = _entry_cache(refresh)
    meta: dict[tuple[str, str], dict[str, Any]] = {}
    todo = []
    for ds, spec in fileset.items():
        for fname in spec["files"]:
            hit = cache.get(fname, spec["treename"]) if cache is not None else None
            if hit is not None:
                meta[(ds, fname)] = hit
            else:
                todo.append((ds, fname, spec["treename"]))
    bad: list = []
    if todo:
        if client is None:
            results = []
            for _, fname, tree in todo:
                try:
                    results.append(file_metadata(fname, tree, ex.xrootd_timeout))
                except Exception as err:
                    results.append(err)
        else:
            futures = client.map(
                file_metadata,
                [t[1] for t in todo],
                [t[2] for t in todo],
                [ex.xrootd_timeout] * len(todo),
                pure=False,
                retries=ex.retries,
            )
            results = []
            for fut in futures:
                try:
                    results.append(fut.result())
                except Exception as err:
                    results.append(err)
        for (ds, fname, tree), res in zip(todo, results):
            if isinstance(res, BaseException):
                bad.append(ChunkFailure(ds, fname, 0, 0, error_line(res), stage="open"))
                continue
            meta[(ds, fname)] = res
            if cache is not None:
                cache.put(fname, tree, res)
        if cache is not None:
            _save_cache(cache, console)
    for m in meta.values():
        m["uuid_hex"] = bytes(m["uuid"]).hex() if not isinstance(m["uuid"], str) else m["uuid"]
    _drop_same_uuid(fileset, meta, console, deduplicated)
    return meta, bad


def _drop_same_uuid(fileset, meta, console, deduplicated: list | None) -> None:
    """Keep one file per file UUID in each dataset (in place); a UUID in two datasets is a RunError."""
    from .files import SharedFileError, deduplicate

    def uuid_of(ds: str, fname: str) -> str | None:
        m = meta.get((ds, fname))
        if m is None or not m["uuid_hex"].strip("0"):  # unreadable, or no UUID written
            return None
        return m["uuid_hex"]

    try:
        kept, dropped = deduplicate({ds: spec["files"] for ds, spec in fileset.items()}, uuid_of, by="uuid")
    except SharedFileError as err:
        raise RunError(str(err)) from None
    for d in dropped:
        meta.pop((d["dataset"], d["file"]), None)
    for ds, files in kept.items():
        fileset[ds]["files"] = files
    _note_duplicates(dropped, deduplicated, console)


def _save_cache(cache, console) -> None:
    """Save the entries cache; one warning, not a failure, when it cannot be written."""
    try:
        cache.save()
    except OSError as err:
        reason = err.strerror or f"{err.__class__.__name__}: {err}"
        line = (
            f"warning: cannot write the file-metadata cache {cache.path}: {reason}; running without it "
            "(set JETTRACKS_CACHE_DIR to a writable directory)"
        )
        if console is not None:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            import sys

            print(line, file=sys.stderr)


def _entry_cache(refresh: bool):
    """The persistent entries-per-file cache of :mod:`jettracks.files` (``$JETTRACKS_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/jettracks`` or ``~/.cache/jettracks``), if available."""
    try:
        from .files import EntryCache
    except ImportError:
        return None
    try:
        return EntryCache(refresh=refresh)
    except TypeError:
        return None


def _process(fileset, meta, proc, client, ex, branches, checkpointer, progress):
    from coffea import processor as coffea_processor
    from coffea.nanoevents import BaseSchema
    from coffea.processor.executor import FileMeta

    from .accounting import AccountingDaskExecutor, ChunkFailure, error_line, readable_fileset

    good = readable_fileset(fileset, meta)
    metadata_cache = {}
    for ds, spec in good.items():
        for f in spec["files"]:
            m = meta[(ds, f)]
            metadata_cache[FileMeta(ds, f, spec["treename"])] = {
                **spec["metadata"],
                "numentries": m["numentries"],
                "uuid": m["uuid"] if isinstance(m["uuid"], bytes) else bytes.fromhex(m["uuid_hex"]),
            }
    if not good:
        return {}, [], [], 0, 0
    if client is None:
        executor = _serial_executor(status=progress)
    else:
        executor = AccountingDaskExecutor(client=client, status=progress, retries=ex.retries)
    runner = coffea_processor.Runner(
        executor=executor,
        schema=BaseSchema,
        chunksize=ex.chunksize,
        savemetrics=True,
        xrootdtimeout=ex.xrootd_timeout,
        metadata_cache=metadata_cache,
        checkpointer=checkpointer,
    )
    chunks = list(runner.preprocess(good))
    n_from_checkpoint = checkpointer.count_existing(chunks) if checkpointer is not None else 0
    iteritems = {"filter_name": sorted(branches)}
    failures: list = []
    if client is None:  # in-process reference: chunk by chunk, failures recorded per chunk
        from coffea.processor.accumulator import iadd

        from .accounting import is_permanent

        executor.retries = 0  # retried here: permanent errors once, others up to ex.retries times
        output, times = None, []
        for c in chunks:
            t0 = time.perf_counter()
            for attempt in range(ex.retries + 1):
                try:
                    out, _metrics = runner([c], proc, iteritems_options=iteritems, uproot_options=_uproot_options())
                    break
                except Exception as err:
                    if attempt == ex.retries or is_permanent(err):
                        failures.append(ChunkFailure(c.dataset, c.filename, c.entrystart, c.entrystop, error_line(err)))
                        out = None
                        break
            if out is None:
                continue
            times.append((c.filename, c.entrystart, c.entrystop, round(time.perf_counter() - t0, 4)))
            output = out if output is None else iadd(output, out)
        return output or {}, failures, times, len(chunks), n_from_checkpoint
    output = {}
    try:
        output, _metrics = runner(chunks, proc, iteritems_options=iteritems, uproot_options=_uproot_options())
    except ValueError as err:
        if "No chunks returned results" not in str(err):
            raise
    return output, executor.failures, executor.chunk_seconds, len(chunks), n_from_checkpoint


def _serial_executor(*, status: bool):
    """coffea's ``IterativeExecutor``, without its progress bar when ``status`` is False.

    coffea's own draws the bar even with ``status=False`` (stack.md), so
    ``--no-progress`` did nothing on the serial backend.
    """
    from coffea.processor import IterativeExecutor
    from coffea.processor.accumulator import accumulate

    class _QuietIterativeExecutor(IterativeExecutor):
        def __call__(self, items, function, accumulator):
            if self.status:
                return super().__call__(items, function, accumulator)
            if len(items) == 0:
                return accumulator
            return accumulate(map(function, items), accumulator), 0

    return _QuietIterativeExecutor(status=status)


def _uproot_options() -> dict[str, Any]:
    from .files import AutoSource

    return {"handler": AutoSource} if AutoSource is not None else {}


def _provenance() -> dict[str, Any]:
    """Package versions, Python, and the project's git commit + dirty flag."""
    import platform
    import subprocess

    from .outputs import package_versions

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
    return {"python": platform.python_version(), "versions": package_versions(), "git": git}


class _serial_cluster:
    """Context manager standing in for a cluster when running in-process."""

    def __enter__(self):
        return cluster.ClusterHandle(None, "serial", {"workers": 1, "processes": "this one"})

    def __exit__(self, *exc):
        return False
