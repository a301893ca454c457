"""Run configuration: pydantic models for the YAML run configs.

A config names the datasets (files and their format), the processor (import path
and options), the executor (cluster backend, chunk size) and the output. Every
model forbids unknown keys, so a typo is an error that names the key rather than
a silently ignored option.

>>> cfg = load_config("configs/demo.yaml")          # doctest: +SKIP
>>> cfg.datasets["qcd"].format
'pfnano'

Errors are raised as :class:`ConfigError`, whose message is one line naming the
key path (``datasets.qcd.format``) and what is wrong with it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ConfigError",
    "DatasetConfig",
    "ExecutorConfig",
    "GenerateConfig",
    "MLDatasetConfig",
    "OutputConfig",
    "ProcessorConfig",
    "RunConfig",
    "load_config",
    "parse_config",
]


_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")


class ConfigError(ValueError):
    """A run config that cannot be used; the message is one line naming the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GenerateConfig(_Strict):
    """How to make a dataset's files when they are absent (synthetic samples).

    Attributes:
        process: physics process of :mod:`jettracks.generate` (``qcd``; ``llp`` for
            the displaced-jet signal where the generator offers it).
        files: number of files.
        events_per_file: events per file.
        seed: base random seed; file ``i`` uses ``(seed, i)``.
        options: extra keyword options for the generator (e.g. pile-up density).
    """

    process: str = "qcd"
    files: int = Field(default=4, ge=1)
    events_per_file: int = Field(default=1000, ge=0)
    seed: int = 1
    out: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class DatasetConfig(_Strict):
    """One dataset: its files, format and metadata.

    Attributes:
        files: local paths, globs (``data/*.root``) or URLs (``root://host//path``,
            globs allowed on XRootD too).
        files_from: a text file listing one path or URL a line (as CMS open-data
            records publish); relative to the config file.
        format: a reader name of :mod:`jettracks.readers` or ``auto``.
        treename: override the reader's default tree.
        metadata: free-form metadata passed to the processor (``is_mc``, ...).
        generate: when set and no file matches, generate the files first.
    """

    files: list[str] = Field(default_factory=list)
    files_from: str | None = None
    format: str = "auto"
    treename: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    generate: GenerateConfig | None = None

    @field_validator("files", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ProcessorConfig(_Strict):
    """The processor: ``module:Class`` import path and its keyword options."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_: str = Field(default="processors.jet_tracks:JetTrackProcessor", alias="class")
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("class_")
    @classmethod
    def _import_path(cls, value: str) -> str:
        if ":" not in value or not all(value.split(":", 1)):
            raise ValueError("must be 'module.path:ClassName'")
        return value


class ExecutorConfig(_Strict):
    """Where and how chunks run.

    Attributes:
        backend: cluster backend of :mod:`jettracks.cluster` (``local``,
            ``scheduler``, ``slurm``, ``htcondor``, ``pbs``, ``lsf``, ``sge``,
            ``gateway``), or ``serial``: no Dask, every chunk in this process
            (coffea's ``IterativeExecutor``; the reference for equality tests).
        workers: number of workers (``local``) or jobs (batch backends); ``None``
            sizes a local cluster to the machine.
        threads_per_worker: threads per worker process (1: numba and uproot are
            not GIL-free throughout).
        memory_limit: per-worker memory limit, e.g. ``"2GB"``; ``None`` = dask's default.
        scheduler: address ``tcp://host:port`` for ``backend: scheduler``.
        chunksize: entries per chunk (per file, coffea's chunking). Memory model,
            measured: a worker holds ~300 MB plus ~47 B per PF candidate in the chunk
            (~90 kB per real PFNano event of ~1,900 candidates), so keep
            ``chunksize x candidates per entry`` under ~20M for 1.5-2 GB workers
            (real PFNano: <= 10k events; the demo's 500-event files: whole files).
        max_files: process at most this many files per dataset.
        retries: Dask retries of a failed chunk.
        xrootd_timeout: seconds before a remote open gives up.
        engine: ``runner`` (coffea ``Runner`` + ``DaskExecutor``) or ``dask-awkward``.
        cluster: extra options for the backend (jobqueue: cores, memory, walltime, ...).
    """

    backend: str = "local"
    workers: int | None = Field(default=None, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str | None = None
    scheduler: str | None = None
    chunksize: int = Field(default=100_000, ge=1)
    max_files: int | None = Field(default=None, ge=1)
    retries: int = Field(default=3, ge=0)
    xrootd_timeout: int = Field(default=60, ge=1)
    engine: Literal["runner", "dask-awkward"] = "runner"
    cluster: dict[str, Any] = Field(default_factory=dict)


class MLDatasetConfig(_Strict):
    """The ML dataset export (``output.ml_dataset``).

    Attributes:
        pad_tracks: also write fixed-length padded track arrays of this many tracks.
        sort_key: order of padded tracks (``abs_dxy_sig``, ``abs_dxy``, ``pt``, ``dr``).
        hdf5: also write the padded form as ``jets_padded.h5`` (needs ``pad_tracks``).
    """

    pad_tracks: int | None = Field(default=None, ge=1, le=1000)
    sort_key: Literal["abs_dxy_sig", "abs_dxy", "pt", "dr"] = "abs_dxy_sig"
    hdf5: bool = False


class OutputConfig(_Strict):
    """Where outputs go and which to write.

    Attributes:
        dir: run output directory (relative paths are relative to the working directory).
        plots: write ``plots/*.png``.
        ml: write per-jet ML columns as ``ml/part-*.parquet`` (written by the workers),
            with ``manifest.json`` and ``README.md`` describing every column.
        ml_dataset: options of the ML export (padding, HDF5).
    """

    dir: str = "outputs/run"
    plots: bool = True
    ml: bool = True
    ml_dataset: MLDatasetConfig = Field(default_factory=MLDatasetConfig)


class RunConfig(_Strict):
    """A whole run: ``name``, ``datasets``, ``processor``, ``executor``, ``output``."""

    name: str = "run"
    datasets: dict[str, DatasetConfig]
    processor: ProcessorConfig = Field(default_factory=ProcessorConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    # Directory the config was read from; relative data paths resolve against the
    # working directory (as the demo expects), `files_from` against this.
    base_dir: str | None = Field(default=None, exclude=True)

    @field_validator("datasets")
    @classmethod
    def _not_empty(cls, value: dict[str, DatasetConfig]) -> dict[str, DatasetConfig]:
        if not value:
            raise ValueError("needs at least one dataset")
        for key in value:
            # Dataset names become file names (ML parts, checkpoints, plots): no path
            # separators or leading dots, so nothing is written outside output.dir.
            if not _SAFE_NAME.fullmatch(key):
                raise ValueError(
                    f"dataset name {key!r} must be letters, digits, '_', '-', '.' "
                    "(not starting with '.'), at most 100 characters"
                )
        return value


def _key_text(part: Any) -> str:
    text = str(part)
    # Keys are shown bare when printable, quoted otherwise, so the message stays one line.
    return text if text and text.isprintable() and "." not in text and " " not in text else repr(text)


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(_key_text(part) for part in first.get("loc", ())) or "(top level)"
    loc = loc.replace("class_", "class")
    msg = " ".join(str(first.get("msg", "invalid")).split())
    if first.get("type") == "extra_forbidden":
        msg = "unknown key"
    elif first.get("type") == "missing":
        msg = "required key is missing"
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    got = first.get("input")
    shown = "" if first.get("type") in ("missing", "extra_forbidden") else f"; got {got!r}"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return " ".join(f"{loc}: {msg}{shown}{extra}".splitlines())


def parse_config(data: Any, *, base_dir: str | os.PathLike | None = None) -> RunConfig:
    """Validate a mapping (as read from YAML) into a :class:`RunConfig`.

    Raises:
        ConfigError: one line naming the offending key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"(top level): expected a mapping of keys, got {type(data).__name__}")
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None
    if base_dir is not None:
        cfg.base_dir = str(base_dir)
    from jettracks import readers  # registry lookup; readers import nothing of config

    for name, ds in cfg.datasets.items():
        if ds.format != "auto" and ds.format not in readers.available():
            raise ConfigError(
                f"datasets.{_key_text(name)}.format: unknown format {ds.format!r}; "
                f"known: auto, {', '.join(readers.available())}"
            )
        if not ds.files and not ds.files_from:
            raise ConfigError(f"datasets.{_key_text(name)}.files: give files or files_from")
    from jettracks import cluster

    if cfg.executor.backend not in (*cluster.available(), "serial"):
        raise ConfigError(
            f"executor.backend: unknown backend {cfg.executor.backend!r}; "
            f"known: serial, {', '.join(cluster.available())}"
        )
    return cfg


def load_config(source: str | os.PathLike | dict) -> RunConfig:
    """Read and validate a run config from a YAML file path (or an already-read mapping).

    Raises:
        ConfigError: file unreadable, YAML malformed, or a key invalid; one line.
    """
    if isinstance(source, dict):
        return parse_config(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config: {err.__class__.__name__}: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        problem = " ".join(str(problem).split())
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    return parse_config(data, base_dir=path.parent)
