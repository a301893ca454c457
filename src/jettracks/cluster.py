"""Cluster factory: one registry of Dask cluster backends.

``connect(executor_config)`` is a context manager yielding a :class:`ClusterHandle`
(a ``distributed.Client`` plus a description for the run report). Backends
register themselves with :func:`register`; the executor config's ``backend``
key picks one:

``local``
    a ``LocalCluster`` on this machine (default): ``workers``,
    ``threads_per_worker``, ``memory_limit``.
``scheduler``
    attach to a running scheduler at ``executor.scheduler`` (``tcp://host:port``).
``slurm``, ``htcondor``, ``pbs``, ``lsf``, ``sge``
    dask-jobqueue: each batch job runs Dask worker(s) that connect back to a
    scheduler in this process. Options in ``executor.cluster``::

        cores: 4                  # cores per job (default: threads_per_worker)
        processes: 1              # worker processes per job
        memory: 8GB               # memory per job (default: memory_limit or 2GB)
        walltime: "01:00:00"
        queue: short              # or `partition:` (Slurm's name for it)
        account: myproject
        job_extra_directives: ["--qos=normal"]       # HTCondor: a mapping
        job_script_prologue: ["source /cvmfs/.../setup.sh"]
        scale: 4                  # number of jobs (default: executor.workers or 1)
        adapt: {minimum: 1, maximum: 20}             # instead of scale (jobs)
        local_directory: $TMPDIR
        log_directory: logs/dask
        python: /path/to/python   # default: this interpreter (sys.executable)
        wait_timeout: 300         # seconds to wait for the first worker
        min_workers: 1            # workers to wait for before computing

    any other key is passed to the dask-jobqueue cluster class (``disk`` for
    HTCondor, ``resource_spec``, ``worker_extra_args``, ``interface``, ...).
``gateway``
    dask-gateway (only when the ``dask-gateway`` package is installed):
    ``address``, ``proxy_address``, ``auth``, ``cluster_options: {...}``,
    ``cluster_name`` (attach to an existing one), ``scale``/``adapt``.

Batch workers get ``MALLOC_TRIM_THRESHOLD_`` exported in the job prologue:
distributed's default (65536) made uproot's metadata reads ~2.7x slower
(measured on a 2-core machine). Workers that may not have this project installed
(``scheduler``, batch, ``gateway``) receive the top-level package of the configured
processor class (``processor.class``) by value (:func:`ship_processors`,
``cloudpickle.register_pickle_by_value``), so an edited or uninstalled analysis
package runs remotely. Each backend's ``executor.cluster`` options are a pydantic
model registered with it (:func:`backend_options`); a bad option is a
:class:`~jettracks.config.ConfigError` naming ``executor.cluster.<key>``.

:func:`render_job_script` shows the batch script a jobqueue backend would
submit, without starting anything (``--dry-run``).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import logging
import os
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config import ConfigError, parse_bytes_text, validation_error_line

__all__ = [
    "AdaptOptions",
    "BackendOptions",
    "ClusterError",
    "ClusterHandle",
    "GatewayOptions",
    "JOBQUEUE_BACKENDS",
    "JobqueueOptions",
    "LocalOptions",
    "SchedulerOptions",
    "available",
    "backend_options",
    "capture_dask_logs",
    "connect",
    "jobqueue_options",
    "register",
    "render_job_script",
    "ship_processors",
    "worker_environment",
]

#: ``MALLOC_TRIM_THRESHOLD_`` exported in batch job prologues (bytes).
MALLOC_TRIM_THRESHOLD = 256 * 1024 * 1024

#: jobqueue backends: name -> (cluster class, job class) in ``dask_jobqueue``.
JOBQUEUE_BACKENDS: dict[str, tuple[str, str]] = {
    "slurm": ("SLURMCluster", "SLURMJob"),
    "htcondor": ("HTCondorCluster", "HTCondorJob"),
    "pbs": ("PBSCluster", "PBSJob"),
    "lsf": ("LSFCluster", "LSFJob"),
    "sge": ("SGECluster", "SGEJob"),
}

# dask-jobqueue keys that belong to the cluster (scheduler side), not the job.
_CLUSTER_ONLY = ("scheduler_options", "shared_temp_directory", "silence_logs", "name", "security")

# -- defaults of executor.cluster, each named once ----------------------------------------

#: Seconds to wait for the first worker(s) of a cluster we start (batch queues, gateway).
WAIT_TIMEOUT_S = 300.0
#: Seconds to wait for workers of a running scheduler (``backend: scheduler``): they
#: are already up, so a long wait would only hide a scheduler without workers.
ATTACH_WAIT_TIMEOUT_S = 60.0
#: Seconds to reach a running scheduler.
CONNECT_TIMEOUT_S = 30.0
#: Upper bound of any wait (one day).
MAX_WAIT_S = 86_400.0
#: Upper bound of jobs (scale, adapt) and of workers waited for.
MAX_JOBS = 1024
#: Memory per batch job when neither ``memory`` nor ``executor.memory_limit`` is given.
DEFAULT_JOB_MEMORY = "2GB"
#: Local worker processes per core above which ``backend: local`` warns (oversubscription).
LOCAL_WORKERS_PER_CORE_WARN = 4

logger = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """A cluster could not be started or reached (no workers joined, package missing, ...)."""


# -- executor.cluster: one options model per backend --------------------------------------


class BackendOptions(BaseModel):
    """Base of the ``executor.cluster`` models; unknown keys are errors unless a backend passes them on."""

    model_config = ConfigDict(extra="forbid")

    #: backend name, set by :func:`register` (for messages).
    backend: ClassVar[str] = ""


class AdaptOptions(BaseModel):
    """``adapt: {minimum, maximum}``: adaptive scaling between these many jobs (gateway: workers).

    Attributes:
        minimum: jobs kept when idle (int, default 1, 0-1024).
        maximum: jobs at most (int, default 1, 1-1024; not below ``minimum``).
    """

    model_config = ConfigDict(extra="forbid")

    minimum: int = Field(default=1, ge=0, le=MAX_JOBS)
    maximum: int = Field(default=1, ge=1, le=MAX_JOBS)

    @model_validator(mode="after")
    def _ordered(self) -> AdaptOptions:
        if self.maximum < self.minimum:
            raise ValueError(f"maximum ({self.maximum}) is below minimum ({self.minimum})")
        return self


class _WaitOptions(BackendOptions):
    """Options of backends that wait for workers to join.

    Attributes:
        wait_timeout: seconds to wait for ``min_workers`` workers (float, default
            :data:`WAIT_TIMEOUT_S` = 300; the ``scheduler`` backend 60).
        min_workers: workers to wait for before computing (int, default 1; 0: do not wait).
    """

    wait_timeout: float = Field(default=WAIT_TIMEOUT_S, gt=0, le=MAX_WAIT_S)
    min_workers: int = Field(default=1, ge=0, le=MAX_JOBS)


class LocalOptions(BackendOptions):
    """``backend: local`` (a ``LocalCluster``).

    Attributes:
        dashboard_address: the dashboard's ``host:port`` (str, default ``":0"``: a free port).
        local_directory: workers' scratch directory (str, default: dask's).
        scheduler_port: the scheduler's port (int, default 0: a free port).
        host: the interface to listen on (str, default: localhost).
    """

    dashboard_address: str = ":0"
    local_directory: str | None = None
    scheduler_port: int | None = Field(default=None, ge=0, le=65535)
    host: str | None = None


class SchedulerOptions(_WaitOptions):
    """``backend: scheduler`` (attach to ``executor.scheduler``).

    Attributes:
        connect_timeout: seconds to reach the scheduler (float, default 30).
        wait_timeout: seconds to wait for its workers (float, default 60).
        min_workers: workers to wait for (int, default 1).
    """

    connect_timeout: float = Field(default=CONNECT_TIMEOUT_S, gt=0, le=MAX_WAIT_S)
    wait_timeout: float = Field(default=ATTACH_WAIT_TIMEOUT_S, gt=0, le=MAX_WAIT_S)


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class JobqueueOptions(_WaitOptions):
    """dask-jobqueue backends (``slurm``, ``htcondor``, ``pbs``, ``lsf``, ``sge``).

    Attributes (None: the dask-jobqueue config's value, then the default given):
        scale: jobs to submit (int, default ``executor.workers`` or 1; not with ``adapt``).
        adapt: adaptive number of jobs (:class:`AdaptOptions`; not with ``scale``).
        cores: cores per job (int, default ``threads_per_worker x processes``).
        processes: worker processes per job (int, default 1).
        memory: memory per job (str like ``"8GB"``, default ``memory_limit x processes`` or 2GB).
        walltime: job walltime (``"HH:MM:SS"``; HTCondor/LSF: converted).
        queue / partition: the queue (``partition`` is Slurm's name; not both).
        python: worker interpreter (str, default this one).
        job_name: batch job name (str, default ``jettracks-worker``).
        job_script_prologue: shell lines run before the worker (after our
            ``export MALLOC_TRIM_THRESHOLD_``).
        job_extra_directives: extra scheduler directives (HTCondor: a mapping).
        malloc_trim_threshold: bytes exported as ``MALLOC_TRIM_THRESHOLD_`` (int, default 256 MiB).
        scheduler_options: options of the scheduler in this process (mapping).
        log_directory, local_directory: job logs, worker scratch (str).
        wait_timeout, min_workers: see :class:`_WaitOptions` (default 300 s, 1).

    Any other key dask-jobqueue's cluster or job class takes (``account``,
    ``resource_spec``, ``disk``, ``worker_extra_args``, ``interface``, ...) is passed on.
    """

    model_config = ConfigDict(extra="allow")

    scale: int | None = Field(default=None, ge=1, le=MAX_JOBS)
    adapt: AdaptOptions | None = None
    cores: int | None = Field(default=None, ge=1, le=1024)
    processes: int | None = Field(default=None, ge=1, le=1024)
    memory: str | None = None
    walltime: str | int | None = None
    queue: str | None = None
    partition: str | None = None
    python: str | None = None
    job_name: str | None = None
    job_script_prologue: list[str] | None = None
    job_extra_directives: list[str] | dict[str, Any] | None = None
    malloc_trim_threshold: int = Field(default=MALLOC_TRIM_THRESHOLD, ge=0)
    scheduler_options: dict[str, Any] | None = None
    log_directory: str | None = None
    local_directory: str | None = None

    @field_validator("job_script_prologue", "job_extra_directives", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _one_or_many(value)

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                if parse_bytes_text(value) <= 0:
                    raise ValueError
            except ValueError:
                raise ValueError("expected a positive size like '8GB'") from None
        return value

    @model_validator(mode="after")
    def _exclusive(self) -> JobqueueOptions:
        if self.queue is not None and self.partition is not None and self.queue != self.partition:
            raise ValueError("give either queue or partition, not both")
        if self.scale is not None and self.adapt is not None:
            raise ValueError("give either scale or adapt, not both")
        unknown = sorted(set(self.model_extra or ()) - _jobqueue_keywords(self.backend))
        if unknown:
            raise ValueError(
                f"unknown option {unknown[0]!r}: not one of ours nor taken by dask-jobqueue's "
                f"{JOBQUEUE_BACKENDS[self.backend][1]}"
            )
        return self


class HTCondorOptions(JobqueueOptions):
    """``htcondor``: no queues; ``job_extra_directives`` are ``key = value`` submit commands."""

    @model_validator(mode="after")
    def _condor(self) -> HTCondorOptions:
        if self.queue is not None or self.partition is not None:
            raise ValueError(
                "HTCondor has no queues: use job_extra_directives (e.g. {'+JobFlavour': '\"longlunch\"'})"
            )
        if isinstance(self.job_extra_directives, list):
            for line in self.job_extra_directives:
                if "=" not in line:
                    raise ValueError(f"job_extra_directives: HTCondor needs 'key = value', got {line!r}")
        if self.walltime is not None:
            _walltime_seconds(self.walltime)
        return self


class LSFOptions(JobqueueOptions):
    """``lsf``: ``walltime`` becomes bsub's ``[HH:]MM``."""

    @model_validator(mode="after")
    def _lsf(self) -> LSFOptions:
        if self.walltime is not None:
            _walltime_seconds(self.walltime)
        return self


class GatewayOptions(_WaitOptions):
    """``backend: gateway`` (dask-gateway).

    Attributes:
        address, proxy_address: the gateway (str, default: dask-gateway's config).
        auth: authentication (``jupyterhub``, ``kerberos``, ...; default: its config).
        cluster_name: attach to this running cluster instead of creating one.
        cluster_options: options of a new cluster (mapping; the gateway defines them).
        scale: workers (int, default ``executor.workers`` or 1; not with ``adapt``).
        adapt: adaptive number of workers (:class:`AdaptOptions`).
        malloc_trim_threshold: bytes exported to workers where the gateway has an
            ``environment`` option (int, default 256 MiB).
        wait_timeout, min_workers: default 300 s, 1.
    """

    address: str | None = None
    proxy_address: str | None = None
    auth: str | None = None
    cluster_name: str | None = None
    cluster_options: dict[str, Any] = Field(default_factory=dict)
    scale: int | None = Field(default=None, ge=1, le=MAX_JOBS)
    adapt: AdaptOptions | None = None
    malloc_trim_threshold: int = Field(default=MALLOC_TRIM_THRESHOLD, ge=0)

    @model_validator(mode="after")
    def _exclusive(self) -> GatewayOptions:
        if self.scale is not None and self.adapt is not None:
            raise ValueError("give either scale or adapt, not both")
        return self


def _jobqueue_keywords(backend: str) -> set[str]:
    """Keywords dask-jobqueue's cluster and job classes of ``backend`` take (empty without it)."""
    try:
        mod = importlib.import_module(f"dask_jobqueue.{backend}")
        core = importlib.import_module("dask_jobqueue.core")
    except ImportError:  # checked when the cluster starts (ClusterError naming the package)
        return set()
    names: set[str] = set()
    for fn in (getattr(mod, JOBQUEUE_BACKENDS[backend][1]).__init__, core.Job.__init__, core.JobQueueCluster.__init__):
        names.update(inspect.signature(fn).parameters)
    return names - {"self", "scheduler", "job_cls", "loop", "asynchronous", "base_class_kwargs", "job_kwargs"}


@dataclass
class ClusterHandle:
    """A connected client and what the run report says about it."""

    client: Any
    backend: str
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def dashboard_link(self) -> str | None:
        return getattr(self.client, "dashboard_link", None)


@dataclass(frozen=True)
class _Backend:
    factory: Callable[..., contextlib.AbstractContextManager[ClusterHandle]]
    options: type[BackendOptions]
    remote: bool  # workers may lack this project: ship the processor package by value


_BACKENDS: dict[str, _Backend] = {}


def register(name: str, *, options: type[BackendOptions], remote: bool):
    """Decorator: register a backend ``factory(executor, options) -> context manager of ClusterHandle``.

    Args:
        name: the ``executor.backend`` value.
        options: the pydantic model of its ``executor.cluster`` options.
        remote: True when its workers may not have this project installed (the
            processor's package is then pickled by value).
    """

    def deco(factory):
        model = type(f"{options.__name__}[{name}]", (options,), {"__doc__": options.__doc__})
        model.backend = name
        _BACKENDS[name] = _Backend(factory, model, remote)
        return factory

    return deco


def available() -> tuple[str, ...]:
    """Names of the registered backends."""
    return tuple(_BACKENDS)


def backend_options(executor) -> BackendOptions:
    """``executor.cluster`` validated by its backend's model, defaults filled in.

    Raises:
        ConfigError: unknown backend, or one line naming the bad option
            (``executor.cluster.adapt.minimum: ...``).
    """
    try:
        entry = _BACKENDS[executor.backend]
    except KeyError:
        raise ConfigError(
            f"executor.backend: unknown backend {executor.backend!r}; known: {', '.join(_BACKENDS)}"
        ) from None
    try:
        return entry.options.model_validate(dict(executor.cluster or {}))
    except ValidationError as err:
        line = validation_error_line(err, prefix=("executor", "cluster"))
        if err.errors()[0].get("type") == "extra_forbidden":
            line = line.replace(": unknown key", f": unknown key for backend {executor.backend!r}", 1)
        raise ConfigError(line) from None


def worker_environment() -> None:
    """Dask settings every cluster we start gets.

    distributed sets ``MALLOC_TRIM_THRESHOLD_=65536`` in nanny-spawned workers,
    which made uproot's metadata reads ~2.7x slower (measured); drop it.
    (A value exported in the worker's environment wins over this setting, which
    is how batch jobs get theirs: see :func:`jobqueue_options`.)
    """
    import dask

    dask.config.set({"distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": None}})


def _installed_paths() -> list[Path]:
    """Directories of the standard library and installed distributions."""
    paths = sysconfig.get_paths()
    return [Path(paths[k]).resolve() for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]


def ship_processors(processor_class: str | None) -> list[str]:
    """Pickle the processor's top-level package by value, for workers that lack it.

    coffea's Runner cloudpickles the processor instance; with its package
    registered (``cloudpickle.register_pickle_by_value``), the classes and
    functions of that package travel with it, so a worker without the package
    (a ``dask worker`` started elsewhere, a batch job) runs it. What the package
    imports from elsewhere (``jettracks``, coffea, ...) must still be importable
    on the worker.

    Args:
        processor_class: ``"package.module:Class"`` (``processor.class``); None: nothing.

    Returns:
        The registered top-level module names: empty when there is no class, when
        its package cannot be imported here, or when it is this framework or an
        installed distribution (the workers' environment has those; shipping e.g.
        coffea by value would duplicate its classes).
    """
    import cloudpickle

    if not processor_class:
        return []
    top = processor_class.partition(":")[0].split(".")[0]
    if not top or top == __name__.split(".")[0]:
        return []
    try:
        module = importlib.import_module(top)
    except ImportError:
        return []
    origin = getattr(module, "__file__", None)
    if origin is None:  # a namespace package: no single file to judge by; ship it
        origin_path = None
    else:
        origin_path = Path(origin).resolve()
    if origin_path is not None and any(root in origin_path.parents for root in _installed_paths()):
        return []
    if top not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(module)
    return [top]


def _n_workers(client) -> int:
    return len(client.scheduler_info().get("workers", {}))


def _wait_for_workers(client, n: int, timeout: float, backend: str, hint: str = "") -> None:
    """Wait until ``n`` workers joined; :class:`ClusterError` after ``timeout`` seconds."""
    if n <= 0:
        return
    try:
        client.wait_for_workers(n, timeout=timeout)
    except (TimeoutError, OSError) as err:
        have = _n_workers(client)
        raise ClusterError(
            f"backend {backend!r}: {have} of {n} Dask worker(s) joined the scheduler "
            f"{client.scheduler.address} within {timeout:g} s (executor.cluster.wait_timeout)"
            f"{'; ' + hint if hint else ''}"
        ) from err


# -- local ---------------------------------------------------------------------------------


@register("local", options=LocalOptions, remote=False)
@contextlib.contextmanager
def _local(executor, opts: LocalOptions) -> Iterator[ClusterHandle]:
    from distributed import Client, LocalCluster

    worker_environment()
    cores = os.cpu_count() or 1
    n_workers = executor.workers or max(1, cores // executor.threads_per_worker)
    if n_workers * executor.threads_per_worker > LOCAL_WORKERS_PER_CORE_WARN * cores:
        # Not an error: the config may be meant for a bigger machine; but say why it crawls.
        logger.warning(
            "executor.workers: %d local workers x %d threads on %d cores oversubscribe this machine",
            n_workers, executor.threads_per_worker, cores,
        )
    kwargs: dict[str, Any] = dict(
        n_workers=n_workers,
        threads_per_worker=executor.threads_per_worker,
        processes=True,
        dashboard_address=opts.dashboard_address,
        silence_logs=_worker_console_level(),
    )
    for key in ("local_directory", "scheduler_port", "host"):
        if getattr(opts, key) is not None:
            kwargs[key] = getattr(opts, key)
    if executor.memory_limit:
        kwargs["memory_limit"] = executor.memory_limit
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        yield ClusterHandle(
            client,
            "local",
            {
                "backend": "local",
                "workers": n_workers,
                "threads_per_worker": executor.threads_per_worker,
                "memory_limit": executor.memory_limit or "auto",
                "scheduler": cluster.scheduler_address,
            },
        )


# -- scheduler -----------------------------------------------------------------------------


@register("scheduler", options=SchedulerOptions, remote=True)
@contextlib.contextmanager
def _scheduler(executor, opts: SchedulerOptions) -> Iterator[ClusterHandle]:
    from distributed import Client

    if not executor.scheduler:
        raise ConfigError("executor.scheduler: backend 'scheduler' needs an address tcp://host:port")
    try:
        client = Client(executor.scheduler, timeout=opts.connect_timeout)
    except (OSError, TimeoutError) as err:
        raise ClusterError(
            f"backend 'scheduler': cannot reach the scheduler {executor.scheduler} "
            f"within {opts.connect_timeout:g} s: {err}"
        ) from None
    with client:
        _wait_for_workers(
            client,
            opts.min_workers,
            opts.wait_timeout,
            "scheduler",
            "start workers with `dask worker " + executor.scheduler + "`",
        )
        info = client.scheduler_info().get("workers", {})
        yield ClusterHandle(
            client,
            "scheduler",
            {
                "backend": "scheduler",
                "address": executor.scheduler,
                "workers": len(info),
                "threads": sum(w.get("nthreads", 0) for w in info.values()),
            },
        )


# -- dask-jobqueue -------------------------------------------------------------------------


def _jobqueue_module():
    try:
        importlib.import_module("dask_jobqueue.slurm")  # the Job classes live in the submodules
        return importlib.import_module("dask_jobqueue")
    except ImportError:
        raise ClusterError(
            "batch backends need the dask-jobqueue package: pip install dask-jobqueue"
        ) from None


def _walltime_seconds(value: Any) -> int:
    """``"HH:MM:SS"``, ``"MM:SS"``, ``"D-HH:MM:SS"`` or a number of seconds -> seconds.

    Raises:
        ValueError: any other text (a pydantic validator turns it into ``executor.cluster.walltime: ...``).
    """
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    days = 0
    try:
        if "-" in text:
            d, text = text.split("-", 1)
            days = int(d)
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"walltime: expected HH:MM:SS, got {value!r}")
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, sec = parts
    return ((days * 24 + h) * 60 + m) * 60 + sec


def _job_class(backend: str):
    _jobqueue_module()
    mod = importlib.import_module(f"dask_jobqueue.{backend}")
    return getattr(mod, JOBQUEUE_BACKENDS[backend][1])


# JobqueueOptions fields consumed here rather than passed to dask-jobqueue.
_OWN_KEYS = frozenset({"scale", "adapt", "partition", "wait_timeout", "min_workers", "malloc_trim_threshold"})


def jobqueue_options(backend: str, executor) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``executor.cluster`` into (dask-jobqueue cluster kwargs, our own options).

    Our own options: ``scale`` (jobs), ``adapt`` (an :class:`AdaptOptions`),
    ``wait_timeout``, ``min_workers``. ``partition`` is an alias of ``queue``.
    The job prologue starts with ``export MALLOC_TRIM_THRESHOLD_=...``.

    Raises:
        ConfigError: not a jobqueue backend, or a bad option (one line naming it).
    """
    import dask
    from dask.utils import format_bytes, parse_bytes

    if backend not in JOBQUEUE_BACKENDS:
        raise ConfigError(f"executor.backend: not a jobqueue backend: {backend!r}; known: {', '.join(JOBQUEUE_BACKENDS)}")
    model = backend_options(executor.model_copy(update={"backend": backend}))
    assert isinstance(model, JobqueueOptions)
    # only what the config sets: unset keys fall back to dask-jobqueue's config below
    opts = {k: v for k, v in model.model_dump(exclude_none=True).items() if k not in _OWN_KEYS}
    own: dict[str, Any] = {
        "wait_timeout": model.wait_timeout,
        "min_workers": model.min_workers,
    }
    if model.partition is not None:
        opts["queue"] = model.partition
    kw: dict[str, Any] = {}
    cfg = f"jobqueue.{backend}"
    # cores and memory are per job; a job runs `processes` workers that share them
    kw["processes"] = int(opts.pop("processes", None) or dask.config.get(f"{cfg}.processes", None) or 1)
    kw["cores"] = (
        opts.pop("cores", None)
        or dask.config.get(f"{cfg}.cores", None)
        or executor.threads_per_worker * kw["processes"]
    )
    memory = opts.pop("memory", None) or dask.config.get(f"{cfg}.memory", None)
    if memory is None and executor.memory_limit and executor.memory_limit != "auto":
        memory = format_bytes(parse_bytes(executor.memory_limit) * kw["processes"]).replace(" ", "")
    kw["memory"] = memory or DEFAULT_JOB_MEMORY
    kw["python"] = opts.pop("python", None) or dask.config.get(f"{cfg}.python", None) or sys.executable
    kw["job_name"] = opts.pop("job_name", None) or "jettracks-worker"
    prologue = opts.pop("job_script_prologue", None)
    if prologue is None:
        prologue = dask.config.get(f"{cfg}.job-script-prologue", None) or []
    kw["job_script_prologue"] = [f"export MALLOC_TRIM_THRESHOLD_={model.malloc_trim_threshold}", *prologue]
    extra = opts.pop("job_extra_directives", None)
    if extra is not None:
        if backend == "htcondor" and not isinstance(extra, dict):
            extra = {k.strip(): v.strip() for k, _, v in (str(line).partition("=") for line in extra)}
        kw["job_extra_directives"] = extra
    if backend == "htcondor" and "walltime" in opts:
        # HTCondor has no walltime option: the common ClassAd is +MaxRuntime (seconds)
        seconds = _walltime_seconds(opts.pop("walltime"))
        extra = dict(kw.get("job_extra_directives") or dask.config.get(f"{cfg}.job-extra-directives", None) or {})
        extra.setdefault("+MaxRuntime", str(seconds))
        kw["job_extra_directives"] = extra
    if backend == "lsf" and "walltime" in opts:
        # bsub -W takes [HH:]MM; round seconds up to the next minute
        minutes = -(-_walltime_seconds(opts["walltime"]) // 60)
        opts["walltime"] = f"{minutes // 60:02d}:{minutes % 60:02d}"
    if backend == "htcondor" and "disk" not in opts and dask.config.get(f"{cfg}.disk", None) is None:
        opts["disk"] = "1GB"
    if backend == "lsf" and "use_stdin" not in opts and dask.config.get(f"{cfg}.use-stdin", None) is None:
        opts["use_stdin"] = True  # else LSFJob asks `lsid` for the LSF version
    sched = dict(opts.pop("scheduler_options", None) or {})
    sched.setdefault("dashboard_address", ":0")
    kw["scheduler_options"] = sched
    kw.update(opts)
    if model.adapt is not None:
        own["adapt"] = model.adapt.model_dump()
    else:
        own["scale"] = int(model.scale or executor.workers or 1)
    return kw, own


def _job_kwargs(backend: str, cluster_kwargs: dict[str, Any]) -> dict[str, Any]:
    """What the jobqueue cluster passes to its Job class (see JobQueueCluster.__init__)."""
    import dask

    job_cls = _job_class(backend)
    kw = {k: v for k, v in cluster_kwargs.items() if k not in _CLUSTER_ONLY}
    config_name = kw.setdefault("config_name", job_cls.default_config_name())
    kw.setdefault("interface", dask.config.get(f"jobqueue.{config_name}.interface", None))
    kw.setdefault("protocol", None)
    kw.setdefault("security", None)
    return kw


def render_job_script(executor, *, scheduler_address: str = "tcp://<scheduler-address>:8786") -> str:
    """The batch script a jobqueue backend would submit for ``executor`` (nothing is started).

    Same text as the dask-jobqueue cluster's ``.job_script()`` (it builds the same
    Job object), with ``scheduler_address`` in place of the not-yet-started scheduler.

    Raises:
        ConfigError: (a ``ValueError``) not a jobqueue backend, or an option
            dask-jobqueue does not take.
    """
    backend = executor.backend
    if backend not in JOBQUEUE_BACKENDS:
        raise ConfigError(
            f"executor.backend: {backend!r} submits no batch jobs; job scripts exist for "
            f"{', '.join(JOBQUEUE_BACKENDS)}"
        )
    cluster_kwargs, _ = jobqueue_options(backend, executor)
    job_cls = _job_class(backend)
    try:
        job = job_cls(scheduler_address, name="dummy-name", **_job_kwargs(backend, cluster_kwargs))
    except (TypeError, ValueError) as err:
        raise ConfigError(
            f"executor.cluster: option not accepted by dask-jobqueue's {job_cls.__name__}: {err}"
        ) from None
    return job.job_script()


def _config_default(backend: str, key: str) -> Any:
    import dask

    return dask.config.get(f"jobqueue.{backend}.{key}", None)


def _jobqueue_description(backend: str, cluster, kw: dict[str, Any], own: dict[str, Any], client) -> dict[str, Any]:
    desc: dict[str, Any] = {
        "backend": backend,
        "scheduler": cluster.scheduler_address,
        "cores_per_job": kw["cores"],
        "memory_per_job": kw["memory"],
        "processes_per_job": kw["processes"],
        "walltime": kw.get("walltime") or _config_default(backend, "walltime"),
        "queue": kw.get("queue"),
        "workers": _n_workers(client),
        "job_ids": sorted(str(j.job_id) for j in cluster.workers.values() if getattr(j, "job_id", None)),
    }
    if "adapt" in own:
        desc["adapt_jobs"] = dict(own["adapt"])
    else:
        desc["jobs"] = own["scale"]
    return {k: v for k, v in desc.items() if v is not None}


def _jobqueue_factory(backend: str):
    @contextlib.contextmanager
    def factory(executor, opts: JobqueueOptions) -> Iterator[ClusterHandle]:
        from distributed import Client

        mod = _jobqueue_module()
        cls = getattr(mod, JOBQUEUE_BACKENDS[backend][0])
        kw, own = jobqueue_options(backend, executor)
        for d in ("log_directory", "local_directory"):
            if kw.get(d) and not str(kw[d]).startswith("$"):
                os.makedirs(os.path.expandvars(str(kw[d])), exist_ok=True)
        try:
            cluster = cls(silence_logs=_worker_console_level(), **kw)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"executor.cluster: {cls.__name__} rejected the options: {err}") from None
        with cluster:
            if "adapt" in own:
                cluster.adapt(minimum_jobs=own["adapt"]["minimum"], maximum_jobs=own["adapt"]["maximum"])
            else:
                cluster.scale(jobs=own["scale"])
            with Client(cluster) as client:
                hint = (
                    f"jobs are submitted with `{cluster._dummy_job.submit_command}`; check the queue "
                    f"and the job logs ({kw.get('log_directory') or 'log_directory not set: the batch default'})"
                )
                _wait_for_workers(client, own["min_workers"], own["wait_timeout"], backend, hint)
                yield ClusterHandle(client, backend, _jobqueue_description(backend, cluster, kw, own, client))

    factory.__name__ = f"_{backend}"
    factory.__doc__ = f"dask-jobqueue {JOBQUEUE_BACKENDS[backend][0]} backend."
    return factory


_JOBQUEUE_OPTIONS: dict[str, type[JobqueueOptions]] = {"htcondor": HTCondorOptions, "lsf": LSFOptions}
for _name in JOBQUEUE_BACKENDS:
    register(_name, options=_JOBQUEUE_OPTIONS.get(_name, JobqueueOptions), remote=True)(_jobqueue_factory(_name))


# -- dask-gateway --------------------------------------------------------------------------


@register("gateway", options=GatewayOptions, remote=True)
@contextlib.contextmanager
def _gateway(executor, opts: GatewayOptions) -> Iterator[ClusterHandle]:
    try:
        from dask_gateway import Gateway
    except ImportError:
        raise ClusterError(
            "backend 'gateway' needs the dask-gateway package, which is not installed: "
            "pip install dask-gateway"
        ) from None
    gateway = Gateway(address=opts.address, proxy_address=opts.proxy_address, auth=opts.auth)
    if opts.cluster_name:
        cluster = gateway.connect(opts.cluster_name)
        owned = False
    else:
        options = gateway.cluster_options()
        env_field = "environment" if "environment" in options else None
        for key, value in opts.cluster_options.items():
            options[key] = value
        if env_field is not None:
            env = dict(options[env_field] or {})
            env.setdefault("MALLOC_TRIM_THRESHOLD_", str(opts.malloc_trim_threshold))
            options[env_field] = env
        cluster = gateway.new_cluster(options)
        owned = True
    try:
        if opts.adapt is not None:
            cluster.adapt(minimum=opts.adapt.minimum, maximum=opts.adapt.maximum)
        else:
            cluster.scale(int(opts.scale or executor.workers or 1))
        client = cluster.get_client()
        try:
            _wait_for_workers(client, opts.min_workers, opts.wait_timeout, "gateway")
            yield ClusterHandle(
                client,
                "gateway",
                {
                    "backend": "gateway",
                    "cluster": cluster.name,
                    "dashboard": cluster.dashboard_link,
                    "workers": _n_workers(client),
                },
            )
        finally:
            client.close()
    finally:
        if owned:
            cluster.shutdown()
        else:
            cluster.close()


# -- Dask's own logs -----------------------------------------------------------------------


@dataclass
class _LogCapture:
    verbose: bool
    handler: logging.Handler | None


_CAPTURE: contextvars.ContextVar[_LogCapture | None] = contextvars.ContextVar("jettracks_dask_logs", default=None)

#: Loggers whose records (scheduler, nanny, and workers' forwarded ones) the capture sees.
_DASK_LOGGERS = ("distributed", "dask_jobqueue", "dask_gateway")


def _worker_console_level() -> int | bool:
    """``silence_logs`` for clusters we start: their workers' console handlers' level.

    Inside :func:`capture_dask_logs` without ``verbose``: CRITICAL (the workers'
    warnings and errors reach the log file by forwarding instead); with ``verbose``:
    nothing silenced; outside: dask's default (WARNING).
    """
    capture = _CAPTURE.get()
    if capture is None:
        return logging.WARNING
    return False if capture.verbose else logging.CRITICAL


class _LazyFileHandler(logging.Handler):
    """Writes records to a file created (with its directory) at the first record.

    A run without Dask (``serial``) leaves no empty file. Deliberately not a
    ``logging.StreamHandler``: distributed's ``silence_logs`` turns down every
    StreamHandler of its loggers, which would silence the file too.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._file: logging.FileHandler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = logging.FileHandler(self.path, encoding="utf-8")
                self._file.setFormatter(self.formatter)
            self._file.emit(record)
        except Exception:  # logging must never end the run
            self.handleError(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


@contextlib.contextmanager
def capture_dask_logs(log_path: Path | None, *, verbose: bool = False) -> Iterator[Path | None]:
    """Route Dask's logs (scheduler, workers) to ``log_path`` and, unless ``verbose``, off the console.

    Without it, a failing chunk prints distributed's multi-line ``Compute Failed``
    (with the task's arguments) on the console next to the run's one-line error.
    Inside this context, clusters that :func:`connect` starts keep their workers'
    console quiet (``silence_logs``), and workers' warnings and errors are
    forwarded to this process (``Client.forward_logging``), where they are written
    to ``log_path`` with the scheduler's and the nannies' own records.

    Args:
        log_path: the log file (appended to; created with its directory at the first record), e.g.
            ``<output dir>/logs/dask.log``; None: no file.
        verbose: also keep Dask's logs on the console (workers' INFO included).

    Yields:
        ``log_path``.
    """
    handler: logging.Handler | None = None
    if log_path is not None:
        log_path = Path(log_path)
        handler = _LazyFileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
    consoles: list[tuple[logging.Handler, int]] = []
    for name in _DASK_LOGGERS:
        lg = logging.getLogger(name)
        if handler is not None:
            lg.addHandler(handler)
        if not verbose:
            for h in lg.handlers:
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    consoles.append((h, h.level))
                    h.setLevel(logging.CRITICAL + 1)
    token = _CAPTURE.set(_LogCapture(verbose, handler))
    try:
        yield log_path
    finally:
        _CAPTURE.reset(token)
        for h, level in consoles:
            h.setLevel(level)
        if handler is not None:
            for name in _DASK_LOGGERS:
                logging.getLogger(name).removeHandler(handler)
            handler.close()


@contextlib.contextmanager
def _forward_worker_logs(client) -> Iterator[None]:
    """Workers' distributed warnings and errors -> this process's loggers (captured only)."""
    capture = _CAPTURE.get()
    if capture is None or client is None:
        yield
        return
    try:
        client.forward_logging("distributed", level=logging.WARNING)
    except Exception as err:  # an old scheduler, a closed client: the logs stay on the workers
        logger.debug("cannot forward worker logs: %s", err)
        yield
        return
    try:
        yield
    finally:
        # an attached scheduler outlives the run: do not leave our plugin on its workers
        with contextlib.suppress(Exception):
            client.unforward_logging("distributed")


# -- entry point ---------------------------------------------------------------------------


@contextlib.contextmanager
def serial() -> Iterator[ClusterHandle]:
    """No cluster: every chunk runs in this process (``backend: serial``; the reference run)."""
    yield ClusterHandle(None, "serial", {"workers": 1, "processes": "this one"})


@contextlib.contextmanager
def connect(executor, *, client=None, processor_class: str | None = None) -> Iterator[ClusterHandle]:
    """Start or attach to the cluster an :class:`~jettracks.config.ExecutorConfig` names.

    Args:
        executor: the executor config (``backend``, ``workers``, ``scheduler``, ``cluster``, ...).
        client: an existing ``distributed.Client`` (notebooks): used as is, not closed.
        processor_class: the processor's ``module:Class`` (``processor.class``); on
            backends whose workers may lack it its top-level package is shipped by
            value (:func:`ship_processors`). None: nothing is shipped.

    Raises:
        ConfigError: (a ``ValueError``) unknown backend or invalid ``executor.cluster``
            options, one line naming the key.
        ClusterError: the cluster could not be started or no worker joined in time.
    """
    if client is not None:
        n = _n_workers(client)
        yield ClusterHandle(client, "client", {"backend": "client", "address": client.scheduler.address, "workers": n})
        return
    opts = backend_options(executor)
    entry = _BACKENDS[executor.backend]
    # before any task is pickled: the registry is consulted at pickling time
    shipped = ship_processors(processor_class) if entry.remote else []
    with entry.factory(executor, opts) as handle, _forward_worker_logs(handle.client):
        if entry.remote:
            handle.description["shipped_by_value"] = shipped
        yield handle
