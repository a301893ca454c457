"""Execution: config → file list → cluster → coffea Runner → processor → outputs.

:func:`run_config` is the library's entry point; ``python -m runner`` and
``jettracks.run`` are thin shells over it. It

1. validates the config and resolves each dataset's files (globs, URLs,
   ``files_from``), generating synthetic samples where the config says so;
2. detects formats (``format: auto``) and checks each dataset's first file has
   the branches its reader needs (a bad file fails with one line naming it);
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

import glob
import importlib
import json
import os
import shutil
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
        pattern = f"part-{dataset}-*.parquet" if dataset else "part-*.parquet"
        parts = sorted(str(p) for p in self.ml_dir.glob(pattern))
        if not parts:
            return ak.Array([])
        arrays = [ak.from_parquet(p) for p in parts]
        if dataset:  # a name like "qcd" also globs "qcd-2"'s parts
            arrays = [a[a.dataset == dataset] for a in arrays]
        return ak.concatenate(arrays)


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def resolve_files(name: str, ds: DatasetConfig, *, base_dir: str | None = None) -> list[str]:
    """The dataset's file list: globs and ``files_from`` expanded, order kept, no duplicates.

    Raises:
        RunError: a pattern that matches nothing, or an unreadable index file.
    """
    try:
        from . import files as files_mod
    except ImportError:  # pragma: no cover - files module always ships
        files_mod = None
    patterns = list(ds.files)
    if ds.files_from:
        index = Path(ds.files_from)
        if not index.is_absolute() and base_dir is not None and not index.exists():
            index = Path(base_dir) / index
        try:
            lines = index.read_text().splitlines()
        except OSError as err:
            raise RunError(f"datasets.{name}.files_from: cannot read {index}: {err.strerror}") from None
        patterns += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    out: list[str] = []
    for pattern in patterns:
        if not glob.has_magic(pattern):
            # A named file is kept even when absent: the run then counts it as a bad
            # file (stop, or skip with --skip-bad-files) rather than failing here.
            matches = [pattern]
        elif files_mod is not None and hasattr(files_mod, "expand_files"):
            try:
                matches = files_mod.expand_files([pattern])
            except FileNotFoundError:
                matches = []
        else:
            matches = sorted(glob.glob(pattern))
        if not matches:
            raise RunError(f"datasets.{name}.files: no file matches {pattern!r}")
        out.extend(m for m in matches if m not in out)
    return out


def _files_or_generate(name: str, ds: DatasetConfig, cfg: RunConfig, client) -> list[str]:
    try:
        return resolve_files(name, ds, base_dir=cfg.base_dir)
    except RunError:
        if ds.generate is None:
            raise
    from . import generate

    gen = ds.generate
    out = gen.out or str(Path(ds.files[0]).parent)
    if ds.format not in generate.FORMATS:
        raise RunError(f"datasets.{name}.generate: format {ds.format!r} cannot be generated")
    generate.generate_dataset(
        out,
        format=ds.format,
        n_files=gen.files,
        events_per_file=gen.events_per_file,
        seed=gen.seed,
        process=gen.process,
        client=client,
        **gen.options,
    )
    return resolve_files(name, ds, base_dir=cfg.base_dir)


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


def _prepare_datasets(cfg: RunConfig, client, max_files: int | None, processor, console=None) -> tuple[dict, dict, set]:
    """Resolve files, detect formats and check each dataset's first file (one open per dataset)."""
    fileset: dict[str, dict[str, Any]] = {}
    formats: dict[str, str] = {}
    branches: set[str] = set()
    for name, ds in cfg.datasets.items():
        files = _files_or_generate(name, ds, cfg, client)
        if max_files is not None:
            files = files[:max_files]
        first = files[0]
        try:
            found = readers.detect_details(first, fmt=ds.format, timeout=cfg.executor.xrootd_timeout)
        except readers.ReaderError as err:
            raise RunError(str(err)) from None
        except Exception as err:
            # The first file is unreadable: let the run count it as a bad file, but we
            # need some readable file to learn the format and tree from.
            found = None
            for other in files[1:]:
                try:
                    found = readers.detect_details(other, fmt=ds.format, timeout=cfg.executor.xrootd_timeout)
                    break
                except Exception:
                    continue
            if found is None:
                raise RunError(f"{first}: cannot open: {err.__class__.__name__}: {err}") from None
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
            raise RunError(f"{first}: not readable as format {fmt!r}: no tree {treename!r}")
        try:
            reader.check(found.trees[treename], filename=first)
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
    ex = cfg.executor
    for key, value in (("workers", workers), ("chunksize", chunksize), ("max_files", max_files)):
        if value is not None:
            setattr(ex, key, value)
    if scheduler is not None:
        ex.backend, ex.scheduler = "scheduler", scheduler
    if backend is not None:
        ex.backend = backend
    if output_dir is not None:
        cfg.output.dir = str(output_dir)
    if plots is not None:
        cfg.output.plots = plots

    out_dir = Path(cfg.output.dir).absolute()
    ml_dir = out_dir / "ml" if cfg.output.ml else None
    proc = _load_processor(cfg, ml_dir)
    if ex.engine == "dask-awkward" and (skip_bad_files or resume):
        raise ConfigError(
            "executor.engine: dask-awkward has no per-chunk failure capture or checkpoints; "
            "--skip-bad-files and --resume need engine: runner"
        )
    state = _RunState(out_dir, proc, cfg)
    state.claim(overwrite=overwrite, resume=resume, console=console)

    t_start = time.perf_counter()
    serial = ex.backend == "serial" and client is None
    cluster_ctx = _serial_cluster() if serial else cluster.connect(ex, client=client)
    try:
        with cluster_ctx as handle:
            if handle.dashboard_link:
                console.print(f"[bold]Dask dashboard:[/bold] {handle.dashboard_link}")
            fileset, formats, branches = _prepare_datasets(cfg, handle.client, ex.max_files, proc, console)
            _configure_remote_reading(fileset, handle.client, ex)
            for name, fmt in formats.items():
                if cfg.datasets[name].format == "auto":
                    console.print(f"datasets.{name}: format auto -> detected [bold]{fmt}[/bold]")
            t_pre = time.perf_counter()
            meta, bad_files = _file_metadata(fileset, handle.client, ex, refresh=refresh, cache_dir=out_dir)
            t_run = time.perf_counter()
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
                output, failures, chunk_times, n_chunks = _process(
                    fileset, meta, proc, handle.client, ex, branches, state.checkpointer, progress
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
        "status": "ok" if not (bad_files or failures) else ("partial" if skip_bad_files else "failed"),
        "config": cfg.model_dump(mode="json", by_alias=True),
        "fingerprint": state.fingerprint,
        "formats": formats,
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
        "chunks_from_checkpoint": state.reused_chunks(),
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
    from .outputs import save_hists, save_plots, save_report

    if n_processed + n_skipped != n_expected:  # an invariant: anything else is a bug
        save_report(out_dir, report)
        raise RunError(
            f"accounting mismatch: processed {n_processed} + skipped {n_skipped} != expected "
            f"{n_expected}; see {out_dir / 'report.json'}"
        )
    if (bad_files or failures) and not skip_bad_files:
        save_report(out_dir, report)
        first = (bad_files + failures)[0]
        more = len(bad_files) + len(failures) - 1
        raise RunError(
            f"{first.line()}"
            + (f" (and {more} more)" if more else "")
            + "; other chunks are checkpointed: fix or pass --skip-bad-files, then rerun"
        )
    if hists:
        save_hists(out_dir, hists, cutflow)
    if ml_dir is not None and ml_dir.exists():
        from . import mldata

        manifest = mldata.finalize(
            ml_dir,
            config=report["config"],
            selection=dict(cfg.processor.options),
            versions=report["provenance"]["versions"],
            hdf5=cfg.output.ml_dataset.hdf5,
        )
        report["ml_dataset"] = {
            "dir": str(ml_dir),
            "rows": manifest["rows"],
            "rows_per_split": manifest["rows_per_split"],
            "hdf5": manifest.get("hdf5"),
        }
    if cfg.output.plots and hists:
        is_mc = all(ds.metadata.get("is_mc", True) for ds in cfg.datasets.values())
        report["plots"] = [p.name for p in save_plots(out_dir, hists, is_data=not is_mc)]
    save_report(out_dir, report)
    return RunResult(
        hists=hists,
        cutflow=cutflow,
        report=report,
        output_dir=out_dir,
        ml_dir=ml_dir,
        files={k: v["files"] for k, v in fileset.items()},
    )


class _RunState:
    """The run directory's identity: fingerprint file, checkpoints, overwrite rules."""

    STATE = ".jettracks-run.json"

    def __init__(self, out_dir: Path, proc, cfg: RunConfig) -> None:
        from .accounting import RunCheckpointer, run_fingerprint

        self.out_dir = out_dir
        part = {
            "datasets": cfg.model_dump(mode="json", by_alias=True)["datasets"],
            "processor": cfg.processor.model_dump(mode="json", by_alias=True),
            "chunksize": cfg.executor.chunksize,
            "engine": cfg.executor.engine,
            "ml": cfg.output.ml,
        }
        self.fingerprint = run_fingerprint(proc, part)
        self.engine = cfg.executor.engine
        self.checkpoint_dir = out_dir / "checkpoints" / self.fingerprint
        self.checkpointer = RunCheckpointer(self.checkpoint_dir)
        self._before = 0

    def claim(self, *, overwrite: bool, resume: bool, console) -> None:
        state_file = self.out_dir / self.STATE
        if state_file.exists():
            try:
                old = json.loads(state_file.read_text()).get("fingerprint")
            except (OSError, ValueError):
                old = None
            if old != self.fingerprint:
                if not overwrite:
                    raise RunError(
                        f"{self.out_dir} holds a run of a different config or processor; "
                        "pass --overwrite to replace it or choose another --output"
                    )
                self._wipe()
            elif overwrite:
                self._wipe()
            else:
                use = self.engine == "runner"  # dask-awkward writes no checkpoints
                self._before = self.checkpointer.count() if use and self.checkpoint_dir.exists() else 0
                if self._before:
                    console.print(f"resuming: {self._before} chunk(s) checkpointed in {self.checkpoint_dir}")
        elif self.out_dir.exists() and any(self.out_dir.iterdir()):
            if not overwrite:
                raise RunError(
                    f"{self.out_dir} exists and is not a jettracks run directory; "
                    "pass --overwrite to replace it or choose another --output"
                )
            self._wipe()
        elif resume:
            raise RunError(f"--resume: no earlier run in {self.out_dir}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        from .outputs import atomic_path

        with atomic_path(state_file) as tmp:
            tmp.write_text(json.dumps({"fingerprint": self.fingerprint}) + "\n")

    def reused_chunks(self) -> int:
        return self._before

    def _wipe(self) -> None:
        for child in self.out_dir.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()


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


def _file_metadata(fileset, client, ex, *, refresh: bool, cache_dir: Path):
    """Entries + UUID per file; unreadable files become failures, not exceptions."""
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
                bad.append(ChunkFailure(ds, fname, 0, 0, error_line(res)))
                continue
            meta[(ds, fname)] = res
            if cache is not None:
                cache.put(fname, tree, res)
        if cache is not None:
            cache.save()
    for m in meta.values():
        m["uuid_hex"] = bytes(m["uuid"]).hex() if not isinstance(m["uuid"], str) else m["uuid"]
    return meta, bad


def _entry_cache(refresh: bool):
    """The persistent entries-per-file cache of :mod:`jettracks.files`, if available."""
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
        return {}, [], [], 0
    if client is None:
        executor = coffea_processor.IterativeExecutor(status=False)
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
    iteritems = {"filter_name": sorted(branches)}
    failures: list = []
    if client is None:  # in-process reference: chunk by chunk, failures recorded per chunk
        from coffea.processor.accumulator import iadd

        output, times = None, []
        for c in chunks:
            t0 = time.perf_counter()
            try:
                out, _metrics = runner([c], proc, iteritems_options=iteritems, uproot_options=_uproot_options())
            except Exception as err:
                failures.append(ChunkFailure(c.dataset, c.filename, c.entrystart, c.entrystop, error_line(err)))
                continue
            times.append((c.filename, c.entrystart, c.entrystop, round(time.perf_counter() - t0, 4)))
            output = out if output is None else iadd(output, out)
        return output or {}, failures, times, len(chunks)
    output = {}
    try:
        output, _metrics = runner(chunks, proc, iteritems_options=iteritems, uproot_options=_uproot_options())
    except ValueError as err:
        if "No chunks returned results" not in str(err):
            raise
    return output, executor.failures, executor.chunk_seconds, len(chunks)


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
