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

    def ml_dataset(self):
        """The per-jet ML columns as one awkward array (reads the Parquet parts)."""
        import awkward as ak

        if self.ml_dir is None:
            raise RunError("this run wrote no ML columns (output.ml: false)")
        parts = sorted(str(p) for p in self.ml_dir.glob("part-*.parquet"))
        return ak.concatenate([ak.from_parquet(p) for p in parts]) if parts else ak.Array([])


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
    if files_mod is not None and hasattr(files_mod, "expand_files"):
        try:
            return files_mod.expand_files(patterns)
        except FileNotFoundError as err:
            raise RunError(f"datasets.{name}.files: {err}") from None
    out: list[str] = []
    for pattern in patterns:
        matches = [pattern] if _is_url(pattern) else sorted(glob.glob(pattern))
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
    if ml_dir is not None and "ml_dir" in _accepted_options(cls):
        options.setdefault("ml_dir", str(ml_dir))
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"processor.options: {err}") from None


def _accepted_options(cls) -> set[str]:
    import inspect

    return set(inspect.signature(cls).parameters)


def _check_first_file(name: str, files: list[str], fmt: str, reader, treename: str, timeout: int) -> None:
    """Open the dataset's first file and check the reader's branches are there."""
    import uproot

    path = files[0]
    try:
        with uproot.open(path, timeout=timeout) as f:
            try:
                tree = f[treename]
            except Exception:
                raise readers.ReaderError(
                    f"{path}: not readable as format {fmt!r}: no tree {treename!r}"
                ) from None
            reader.check(set(tree.keys(recursive=True)), filename=path)
    except readers.ReaderError as err:
        raise RunError(str(err)) from None
    except Exception as err:
        raise RunError(f"{path}: cannot open: {err.__class__.__name__}: {err}") from None


def _prepare_datasets(cfg: RunConfig, client, max_files: int | None, processor) -> tuple[dict, dict, set]:
    fileset: dict[str, dict[str, Any]] = {}
    formats: dict[str, str] = {}
    branches: set[str] = set()
    for name, ds in cfg.datasets.items():
        files = _files_or_generate(name, ds, cfg, client)
        if max_files is not None:
            files = files[:max_files]
        fmt = ds.format
        if fmt == "auto":
            try:
                fmt = readers.detect(files[0])
            except readers.ReaderError as err:
                raise RunError(str(err)) from None
        reader = processor.reader_for(fmt) if hasattr(processor, "reader_for") else readers.get(fmt)
        treename = ds.treename or reader.treename
        _check_first_file(name, files, fmt, reader, treename, cfg.executor.xrootd_timeout)
        branches.update(reader.branches())
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
        console: a ``rich.console.Console`` for messages (default: stderr).

    Raises:
        ConfigError: bad config (one line naming the key).
        RunError: bad input file or failed run (one line naming the file).
    """
    from coffea import processor as coffea_processor
    from coffea.nanoevents import BaseSchema
    from rich.console import Console

    console = console or Console(stderr=True)
    if isinstance(config, RunConfig):
        cfg = config.model_copy(deep=True)
    elif isinstance(config, dict):
        cfg = parse_config(config)
    else:
        cfg = load_config(config)
    ex = cfg.executor
    if workers is not None:
        ex.workers = workers
    if chunksize is not None:
        ex.chunksize = chunksize
    if max_files is not None:
        ex.max_files = max_files
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
    if ml_dir is not None and ml_dir.exists():
        shutil.rmtree(ml_dir)  # parts of an earlier run must not mix with this one
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = _load_processor(cfg, ml_dir)

    t_start = time.perf_counter()
    serial = ex.backend == "serial" and client is None
    cluster_ctx = _serial_cluster() if serial else cluster.connect(ex, client=client)
    with cluster_ctx as handle:
        if handle.dashboard_link:
            console.print(f"[bold]Dask dashboard:[/bold] {handle.dashboard_link}")
        fileset, formats, branches = _prepare_datasets(cfg, handle.client, ex.max_files, proc)
        if serial:
            executor = coffea_processor.IterativeExecutor(status=progress)
        else:
            executor = coffea_processor.DaskExecutor(
                client=handle.client, status=progress, retries=ex.retries, treereduction=8
            )
        runner = coffea_processor.Runner(
            executor=executor,
            schema=BaseSchema,
            chunksize=ex.chunksize,
            savemetrics=True,
            xrootdtimeout=ex.xrootd_timeout,
        )
        t_pre = time.perf_counter()
        try:
            chunks = list(runner.preprocess(fileset))
        except Exception as err:
            raise RunError(_one_line(err, "preprocessing")) from None
        expected: dict[str, int] = {}
        for chunk in chunks:
            expected[chunk.filename] = expected.get(chunk.filename, 0) + (chunk.entrystop - chunk.entrystart)
        t_run = time.perf_counter()
        iteritems = {"filter_name": sorted(branches)}
        try:
            output, metrics = runner(chunks, proc, iteritems_options=iteritems)
        except Exception as err:
            raise RunError(_one_line(err, "processing")) from None
        t_done = time.perf_counter()
        description = dict(handle.description)

    hists = output.get("hists", {})
    cutflow = output.get("cutflow", {})
    processed = output.get("entries", {})
    for filename in expected:
        processed.setdefault(filename, 0)
    files_report = [
        {
            "dataset": ds_name,
            "file": f,
            "entries_expected": expected.get(f, 0),
            "entries_processed": processed.get(f, 0),
        }
        for ds_name, spec in fileset.items()
        for f in spec["files"]
    ]
    n_expected = sum(expected.values())
    n_processed = sum(processed.get(f, 0) for f in expected)
    report = {
        "name": cfg.name,
        "config": cfg.model_dump(mode="json", by_alias=True),
        "formats": formats,
        "cluster": {"backend": "serial" if serial else handle.backend, **description},
        "host": socket.gethostname(),
        "versions": _versions(),
        "files": files_report,
        "entries": {
            "expected": n_expected,
            "processed": n_processed,
            "skipped": n_expected - n_processed,
        },
        "chunks": len(chunks),
        "cutflow": cutflow,
        "notices": sorted(output.get("notices", set())),
        "histograms": sorted(hists),
        "ml_parts": len(output.get("ml_parts", [])),
        "timing": {
            "prepare_s": round(t_pre - t_start, 3),
            "preprocess_s": round(t_run - t_pre, 3),
            "process_s": round(t_done - t_run, 3),
            "total_s": round(t_done - t_start, 3),
            "entries_per_s": round(n_processed / max(t_done - t_run, 1e-9), 1),
        },
        "metrics": {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))},
    }
    if n_processed != n_expected:
        raise RunError(
            f"entries processed ({n_processed}) differ from entries expected ({n_expected}); "
            "see report.json"
        )
    from .outputs import save_hists, save_plots, save_report

    save_hists(out_dir, hists, cutflow)
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


class _serial_cluster:
    """Context manager standing in for a cluster when running in-process."""

    def __enter__(self):
        return cluster.ClusterHandle(None, "serial", {"workers": 1, "processes": "this one"})

    def __exit__(self, *exc):
        return False


def _versions() -> dict[str, str]:
    from .outputs import package_versions

    return package_versions()


def _one_line(err: BaseException, stage: str) -> str:
    """The innermost useful message of a (coffea-wrapped) exception, on one line."""
    chain = []
    e: BaseException | None = err
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    inner = chain[-1]
    text = f"{inner.__class__.__name__}: {inner}".replace("\n", " ")
    outer = str(chain[0]).replace("\n", " ")
    where = ""
    import re

    m = re.search(r"filename='([^']+)'.*?entrystart=(\d+), entrystop=(\d+)", outer)
    if m:
        where = f"{m.group(1)} entries {m.group(2)}-{m.group(3)}: "
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{stage} failed: {where}{text}"
