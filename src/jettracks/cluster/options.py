"""The ``executor.cluster`` options: one pydantic model per backend family, and every default named once.

A backend's model is registered with it (:func:`jettracks.cluster.register`) and
validated by :func:`jettracks.cluster.backend_options`; a bad option is a
:class:`~jettracks.config.ConfigError` naming ``executor.cluster.<key>``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..config import parse_bytes_text

__all__ = [
    "ATTACH_WAIT_TIMEOUT_S",
    "CONNECT_TIMEOUT_S",
    "DASHBOARD_ADDRESS",
    "DEFAULT_HTCONDOR_DISK",
    "DEFAULT_JOB_MEMORY",
    "DEFAULT_JOB_NAME",
    "JOBQUEUE_BACKENDS",
    "LOCAL_WORKERS_PER_CORE_WARN",
    "MALLOC_TRIM_THRESHOLD",
    "MAX_JOBS",
    "MAX_WAIT_S",
    "WAIT_TIMEOUT_S",
    "AdaptOptions",
    "BackendOptions",
    "GatewayOptions",
    "HTCondorOptions",
    "JobqueueOptions",
    "LSFOptions",
    "LocalOptions",
    "SchedulerOptions",
]

#: jobqueue backends: name -> (cluster class, job class) in ``dask_jobqueue``.
JOBQUEUE_BACKENDS: dict[str, tuple[str, str]] = {
    "slurm": ("SLURMCluster", "SLURMJob"),
    "htcondor": ("HTCondorCluster", "HTCondorJob"),
    "pbs": ("PBSCluster", "PBSJob"),
    "lsf": ("LSFCluster", "LSFJob"),
    "sge": ("SGECluster", "SGEJob"),
}

# -- defaults of executor.cluster, each named once ----------------------------------------

#: ``MALLOC_TRIM_THRESHOLD_`` exported in batch job prologues and gateway workers (bytes).
MALLOC_TRIM_THRESHOLD = 256 * 1024 * 1024
#: Seconds to wait for the first worker(s) of a cluster we start (batch queues, gateway).
WAIT_TIMEOUT_S = 300.0
#: Seconds to wait for workers of a running scheduler (``backend: scheduler``): they
#: are already up, so a long wait would only hide a scheduler without workers.
ATTACH_WAIT_TIMEOUT_S = 60.0
#: Seconds to reach a running scheduler.
CONNECT_TIMEOUT_S = 30.0
#: Upper bound of any wait (seconds; one day).
MAX_WAIT_S = 86_400.0
#: Upper bound of jobs (scale, adapt) and of workers waited for.
MAX_JOBS = 1024
#: Memory per batch job when neither ``memory`` nor ``executor.memory_limit`` is given.
DEFAULT_JOB_MEMORY = "2GB"
#: Batch job name when ``job_name`` is not given.
DEFAULT_JOB_NAME = "jettracks-worker"
#: HTCondor ``disk`` request when neither the options nor dask-jobqueue's config give one.
DEFAULT_HTCONDOR_DISK = "1GB"
#: Dashboard address of the schedulers we start (``":0"``: a free port).
DASHBOARD_ADDRESS = ":0"
#: Local worker processes per core above which ``backend: local`` warns (oversubscription).
LOCAL_WORKERS_PER_CORE_WARN = 4


# -- executor.cluster: one options model per backend --------------------------------------


class BackendOptions(BaseModel):
    """Base of the ``executor.cluster`` models; unknown keys are errors unless a backend passes them on."""

    model_config = ConfigDict(extra="forbid")

    #: backend name, set by :func:`jettracks.cluster.register` (for messages).
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

    dashboard_address: str = DASHBOARD_ADDRESS
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
            walltime_seconds(self.walltime)
        return self


class LSFOptions(JobqueueOptions):
    """``lsf``: ``walltime`` becomes bsub's ``[HH:]MM``."""

    @model_validator(mode="after")
    def _lsf(self) -> LSFOptions:
        if self.walltime is not None:
            walltime_seconds(self.walltime)
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


def import_jobqueue(module: str = "dask_jobqueue"):
    """Import a dask-jobqueue module, keeping this process's Ctrl-C handler.

    ``dask_jobqueue.runner`` (imported by ``import dask_jobqueue``) replaces the SIGINT
    handler with ``sys.exit()`` at import time: Ctrl-C would then raise ``SystemExit``
    instead of ``KeyboardInterrupt``, and an interrupted run would not say where its
    checkpoints are. The handler is put back (only the main thread can set one).

    Raises:
        ImportError: dask-jobqueue is not installed.
    """
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        return importlib.import_module(module)
    finally:
        if main and handler is not None and signal.getsignal(signal.SIGINT) is not handler:
            signal.signal(signal.SIGINT, handler)


def _jobqueue_keywords(backend: str) -> set[str]:
    """Keywords dask-jobqueue's cluster and job classes of ``backend`` take (empty without it)."""
    try:
        mod = import_jobqueue(f"dask_jobqueue.{backend}")
        core = import_jobqueue("dask_jobqueue.core")
    except ImportError:  # checked when the cluster starts (ClusterError naming the package)
        return set()
    names: set[str] = set()
    for fn in (getattr(mod, JOBQUEUE_BACKENDS[backend][1]).__init__, core.Job.__init__, core.JobQueueCluster.__init__):
        names.update(inspect.signature(fn).parameters)
    return names - {"self", "scheduler", "job_cls", "loop", "asynchronous", "base_class_kwargs", "job_kwargs"}


def walltime_seconds(value: Any) -> int:
    """A walltime in seconds.

    Args:
        value: ``"HH:MM:SS"``, ``"MM:SS"``, ``"SS"``, ``"D-HH:MM:SS"`` (str) or seconds (int/float).

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
