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

import math
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
    "NormalisationConfig",
    "OutputConfig",
    "ProcessorConfig",
    "RunConfig",
    "apply_overrides",
    "dump_yaml",
    "load_config",
    "parse_config",
    "validation_error_line",
]

#: Upper bound of ``executor.workers`` (local worker processes or batch jobs): far
#: beyond any cluster here, low enough that a typo fails instead of hanging.
MAX_WORKERS = 1024
#: Upper bound of ``executor.retries``: a chunk that fails 10 times will fail again.
MAX_RETRIES = 10
#: Upper bound of ``executor.threads_per_worker``.
MAX_THREADS_PER_WORKER = 256


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
        out: directory to write the files in (relative to the config file's
            directory); default: the directory of the dataset's first pattern.
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
            globs allowed on XRootD too). Relative local paths are relative to the
            directory of the config file -- not the working directory -- (to the
            working directory for a config given as a mapping), and are sent to the
            workers as absolute paths. A file listed twice is processed once.
        files_from: a text file listing one path or URL a line (as CMS open-data
            records publish); relative to the config file's directory, as are the
            relative paths in it; ``#`` at a line's start or after whitespace
            starts a comment.
        format: a reader name of :mod:`jettracks.readers` or ``auto``.
        treename: override the reader's default tree.
        metadata: free-form metadata passed to the processor (``is_mc``, ...).
        generate: when set and no file matches, generate the files first.
        xsec: cross section of a simulated dataset (pb): its weighted histograms are
            normalised to ``normalisation.lumi`` (:mod:`jettracks.normalisation`).
        lumi_mask: collision data: a CMS certification JSON (``{"run": [[first, last], ...]}``,
            relative to the config file's directory): events outside are cut (cut-flow step
            ``events_certified``) and the per-lumisection rows are labelled good/bad.
        lumi_csv: collision data: brilcalc ``--byls`` CSV output: the report gives the
            integrated luminosity of the processed lumisections.
    """

    files: list[str] = Field(default_factory=list)
    files_from: str | None = None
    format: str = "auto"
    treename: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    generate: GenerateConfig | None = None
    xsec: float | None = Field(default=None, gt=0)
    lumi_mask: str | None = None
    lumi_csv: str | None = None

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
        retries: extra attempts of a chunk that failed (0-10); errors a retry cannot fix
            (missing tree or branch, not a ROOT file, missing local file) run once.
        xrootd_timeout: seconds before a remote open gives up.
        engine: ``runner`` (one Dask task per chunk) or ``dask-awkward``
            (``dask_awkward.from_map`` over the same chunks); same checkpoints, retries,
            failure capture and results (:mod:`jettracks.engines`).
        cluster: extra options for the backend (jobqueue: cores, memory, walltime, ...).
        batch_mb: target uncompressed MiB of the heavy branches (PF candidates) a worker
            holds at once: a chunk is read and processed in sub-batches of about this size,
            cut at basket boundaries (:mod:`jettracks.engines.reading`). Default 64: each
            sub-batch costs a fixed ~60 ms of array bookkeeping, so at 16 MiB (~170 PFNano
            events) a rerun from the column cache spent half its time there; measured on
            3,000 realistic PFNano events (serial), 16 -> 64 MiB: first run -7% CPU, cached
            rerun -45%, peak memory 410 -> 510 MB (about 2x the sub-batch's bytes).
        cache: a column cache directory (:mod:`jettracks.io.column_cache`) every worker
            sees: a path (local, a shared file system) or a ``root://`` URL (workers on
            hosts without a shared file system), or None (default): the columns a run
            reads are stored there and reruns read them instead of decompressing the ROOT
            files again.
        cache_max_gb: the cache's size bound (GB, 1e9 bytes); least recently used entries
            go first. Default 20.
        cache_compression: Arrow IPC compression of cache entries: ``none`` (default,
            fastest), ``lz4`` or ``zstd`` (~40% smaller for PF candidates, ~6x slower to read).
    """

    backend: str = "local"
    workers: int | None = Field(default=None, ge=1, le=MAX_WORKERS)
    threads_per_worker: int = Field(default=1, ge=1, le=MAX_THREADS_PER_WORKER)
    memory_limit: str | None = None
    scheduler: str | None = None
    chunksize: int = Field(default=100_000, ge=1)
    max_files: int | None = Field(default=None, ge=1)
    retries: int = Field(default=3, ge=0, le=MAX_RETRIES)
    xrootd_timeout: int = Field(default=60, ge=1, le=3600)
    engine: Literal["runner", "dask-awkward"] = "runner"
    cluster: dict[str, Any] = Field(default_factory=dict)
    batch_mb: float = Field(default=64.0, gt=0, le=65536)
    cache: str | None = None
    cache_max_gb: float = Field(default=20.0, gt=0)
    cache_compression: Literal["none", "lz4", "zstd"] = "none"

    @field_validator("cache")
    @classmethod
    def _cache_path(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("empty path; give a directory or leave the key out")
        if value is not None and "://" in value:
            from .io.xrootd import is_xrootd

            if not is_xrootd(value.strip()):
                # Path() would make a local directory named after the URL.
                raise ValueError(f"{value!r}: a URL of a scheme the cache cannot use; give a directory "
                                 "every worker sees (local, a shared file system) or a root:// URL")
        return value

    @field_validator("memory_limit")
    @classmethod
    def _bytes(cls, value: str | None) -> str | None:
        if value is None or value == "auto":  # "auto": dask's share of the machine's memory
            return value
        try:
            parsed = parse_bytes_text(value) if value.strip() else 0
        except ValueError:
            raise ValueError("expected a size like '2GB' or '1.5GiB' (or 'auto')") from None
        if parsed <= 0:
            raise ValueError("must be a positive size like '2GB'")
        return value

    @field_validator("scheduler")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not is_scheduler_address(value):
            raise ValueError(
                "expected a Dask scheduler address like tcp://host:8786 (tcp, tls, ws, wss with a "
                "port; inproc://...)"
            )
        return value


_ADDRESS = re.compile(
    r"(?P<scheme>tcp|tls|ws|wss)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})/?"
    r"|inproc://[^\s]+"
)


def is_scheduler_address(text: str) -> bool:
    """True for an address ``distributed`` can connect to: ``tcp://host:port`` and the like.

    ``tcp``, ``tls``, ``ws`` and ``wss`` need a host and a port (1-65535); ``inproc://``
    (a scheduler in this process) anything after the scheme.
    """
    m = _ADDRESS.fullmatch(text.strip())
    if m is None:
        return False
    return m.group("port") is None or 1 <= int(m.group("port")) <= 65535


def parse_bytes_text(value: str) -> int:
    """``"2GB"`` -> 2000000000 (dask's units); ``ValueError`` for anything else."""
    from dask.utils import parse_bytes

    if not isinstance(value, str):
        raise ValueError(f"expected a size like '2GB', got {value!r}")
    return int(parse_bytes(value))


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
        dir: run output directory (relative paths are relative to the working directory), or
            a ``root://host[:port]//path`` URL that the client and every worker reach (XRootD
            with writes allowed): ML parts, checkpoints, histograms, plots, logs and the report
            are written there (atomically: temporary name, then ``mv`` on the server), and a
            rerun resumes from the checkpoints there.
        plots: write ``plots/*.png``.
        ml: write per-jet ML columns: one part per chunk from the workers (``ml/part-*.arrow``,
            Arrow IPC), finalized into ``ml/part-DATASET-SPLIT-*.parquet``, with
            ``manifest.json`` and ``README.md`` describing every column.
        ml_dataset: options of the ML export (padding, HDF5).
        transfer: how the workers' outputs (ML parts, checkpoints) reach ``dir``: ``shared``
            (default: the workers write them; a worker that cannot see ``dir`` stops the run
            at start with one line) or ``dask`` (for workers without the client's disk: parts
            come back through Dask, the client writes them and the checkpoints).
        transfer_mb: with ``transfer: dask``, the most ML-part MB one chunk may send back
            (a larger chunk fails with one line; default 256).
    """

    dir: str = "outputs/run"
    plots: bool = True
    ml: bool = True
    ml_dataset: MLDatasetConfig = Field(default_factory=MLDatasetConfig)
    transfer: Literal["shared", "dask"] = "shared"
    transfer_mb: float = Field(default=256.0, gt=0)

    @field_validator("dir")
    @classmethod
    def _local_or_xrootd(cls, v: str) -> str:
        from .io.xrootd import is_url, is_xrootd, split_xrootd_url

        if is_url(v):
            if not is_xrootd(v):
                raise ValueError("a local directory or a root:// URL (no other URL scheme)")
            if split_xrootd_url(v)[2]:
                raise ValueError("a root:// URL without a query (?...)")
        return v


class NormalisationConfig(_Strict):
    """Simulation normalisation and the data/simulation comparison (``normalisation``).

    Attributes:
        lumi: target integrated luminosity (pb⁻¹): a simulated dataset with ``xsec`` is
            scaled to ``xsec · lumi · genWeight / Σ genWeight``; with collision data, its
            luminosity (the label of the data/simulation plots).
        sqrt_s_tev: centre-of-mass energy for the plot labels (TeV).
    """

    lumi: float | None = Field(default=None, gt=0)
    sqrt_s_tev: float = Field(default=13.0, gt=0)


class RunConfig(_Strict):
    """A whole run: ``name``, ``datasets``, ``processor``, ``executor``, ``output``, ``normalisation``."""

    name: str = "run"
    datasets: dict[str, DatasetConfig]
    normalisation: NormalisationConfig = Field(default_factory=NormalisationConfig)
    processor: ProcessorConfig = Field(default_factory=ProcessorConfig)
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    # Directory the config was read from: relative data paths (`files`, `files_from`,
    # `generate.out`) resolve against it; None (a mapping): the working directory.
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


def validation_error_line(err: ValidationError, *, prefix: tuple[str, ...] = ()) -> str:
    """One line for a pydantic error: the first error's key path (under ``prefix``) and message."""
    return _format_error(err, prefix=prefix)


def _format_error(err: ValidationError, *, prefix: tuple[str, ...] = ()) -> str:
    first = err.errors()[0]
    loc = ".".join(_key_text(part) for part in (*prefix, *first.get("loc", ()))) or "(top level)"
    loc = loc.replace("class_", "class")
    msg = " ".join(str(first.get("msg", "invalid")).split())
    if msg.startswith("Value error, "):  # our validators' messages stand on their own
        msg = msg[len("Value error, "):]
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


def _non_finite(data: Any, path: tuple[str, ...] = ()) -> tuple[tuple[str, ...], float] | None:
    """The first float that is inf or nan anywhere in ``data`` (YAML ``.inf``, ``.nan``), with its key path."""
    if isinstance(data, float) and not math.isfinite(data):
        return path, data
    if isinstance(data, dict):
        items = ((str(k), v) for k, v in data.items())
    elif isinstance(data, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(data))
    else:
        return None
    for key, value in items:
        found = _non_finite(value, (*path, key))
        if found is not None:
            return found
    return None


def _key_path(path: tuple[Any, ...]) -> str:
    return ".".join(_key_text(part) for part in path) or "(top level)"


def check_executor(ex: ExecutorConfig) -> None:
    """Checks across ``executor`` keys: backend known, scheduler address, ``cluster`` options.

    ``executor.cluster`` is validated by the backend's own options model (see
    :func:`jettracks.cluster.backend_options`); ``serial`` uses no cluster and ignores it.

    Raises:
        ConfigError: one line naming the key (``executor.cluster.adapt.minimum: ...``).
    """
    from jettracks import cluster  # the backend registry; cluster imports config lazily too

    if ex.backend not in (*cluster.available(), "serial"):
        raise ConfigError(
            f"executor.backend: unknown backend {ex.backend!r}; known: serial, {', '.join(cluster.available())}"
        )
    if ex.backend == "scheduler" and not ex.scheduler:
        raise ConfigError(
            "executor.scheduler: backend 'scheduler' needs the scheduler's address tcp://host:port "
            "(executor.scheduler or --scheduler)"
        )
    if ex.backend != "serial":
        cluster.backend_options(ex)


def parse_config(data: Any, *, base_dir: str | os.PathLike | None = None) -> RunConfig:
    """Validate a mapping (as read from YAML) into a :class:`RunConfig`.

    Besides the models' own checks: no float anywhere may be inf or nan (free-form
    ``processor.options`` included), the executor's keys must fit together
    (:func:`check_executor`).

    Raises:
        ConfigError: one line naming the offending key.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"(top level): expected a mapping of keys, got {type(data).__name__}")
    bad = _non_finite(data)
    if bad is not None:
        raise ConfigError(f"{_key_path(bad[0])}: must be a finite number; got {bad[1]!r}")
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
    check_executor(cfg.executor)
    return cfg


def apply_overrides(
    cfg: RunConfig,
    *,
    workers: int | None = None,
    chunksize: int | None = None,
    max_files: int | None = None,
    scheduler: str | None = None,
    backend: str | None = None,
    output_dir: str | os.PathLike | None = None,
    plots: bool | None = None,
    cache: str | os.PathLike | None = None,
) -> RunConfig:
    """A copy of ``cfg`` with command-line overrides, validated like the file.

    Args:
        workers, chunksize, max_files: replace ``executor.<key>`` (None: keep).
        scheduler: a scheduler address; sets ``backend: scheduler`` too.
        output_dir: replace ``output.dir`` (an empty path is an error, never the cwd).
        plots: replace ``output.plots``.
        cache: replace ``executor.cache`` (a column cache directory).
        backend: replace ``executor.backend`` (applied after ``scheduler``). The
            config's ``executor.cluster`` options are validated against the new
            backend.

    Raises:
        ConfigError: one line naming the key (e.g. ``executor.backend: unknown backend 'x'``).
    """
    data = cfg.executor.model_dump()
    for key, value in (("workers", workers), ("chunksize", chunksize), ("max_files", max_files)):
        if value is not None:
            data[key] = value
    if scheduler is not None:
        data["backend"], data["scheduler"] = "scheduler", scheduler
    if backend is not None:
        data["backend"] = backend
    if cache is not None:
        data["cache"] = os.fspath(cache)
    try:
        ex = ExecutorConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, prefix=("executor",))) from None
    check_executor(ex)
    out = cfg.model_copy(deep=True)
    out.executor = ex
    if output_dir is not None:
        out.output.dir = os.fspath(output_dir)
    if plots is not None:
        out.output.plots = bool(plots)
    if not out.output.dir.strip():
        raise ConfigError("output.dir: empty path; give the run's output directory")
    return out


def dump_yaml(data: Any, **options: Any) -> str:
    """``yaml.safe_dump(data, **options)`` with libyaml's dumper where PyYAML has it
    (the same text, ~10x faster: the ML cards and the report page dump YAML on every run)."""
    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), **options)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader; :func:`_duplicate_key` finds repeated mapping keys before construction."""


def _duplicate_key(node: yaml.Node, path: tuple[str, ...] = (), seen: set[int] | None = None) -> str | None:
    """``key.path: duplicate key (line N; first at line M)`` for the first repeated key, else None.

    PyYAML keeps the last of two equal keys silently, which drops e.g. a dataset.
    """
    seen = set() if seen is None else seen
    if id(node) in seen:  # an alias of a node already walked
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, str(key_node.value)) if isinstance(key_node, yaml.ScalarNode) else None
            name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            if key is not None:
                line = key_node.start_mark.line + 1
                if key in first_line:
                    return (
                        f"{_key_path((*path, name))}: duplicate key (line {line}; first at line "
                        f"{first_line[key]})"
                    )
                first_line[key] = line
            found = _duplicate_key(value_node, (*path, name), seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, (*path, str(i)), seen)
            if found:
                return found
    return None


def load_config(source: str | os.PathLike | dict | RunConfig) -> RunConfig:
    """Read and validate a run config from a YAML file path (or an already-read mapping;
    a :class:`RunConfig` comes back as a deep copy, so callers may change it).

    Raises:
        ConfigError: file unreadable, YAML malformed, a key repeated, or a key
            invalid; one line.
    """
    if isinstance(source, RunConfig):
        return source.model_copy(deep=True)
    if isinstance(source, dict):
        return parse_config(source)
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read config: {err.__class__.__name__}: {err}") from None
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        duplicate = _duplicate_key(node) if node is not None else None
        data = None if duplicate else yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        problem = " ".join(str(problem).split())
        raise ConfigError(f"{path}:{where}: malformed YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deeply") from None
    if duplicate:
        raise ConfigError(duplicate)
    return parse_config(data, base_dir=path.parent)
