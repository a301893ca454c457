"""Batch backends (``slurm``, ``htcondor``, ``pbs``, ``lsf``, ``sge``) through dask-jobqueue, and their job scripts.

Each batch job runs Dask worker(s) that connect back to a scheduler in this
process. Options in ``executor.cluster`` (:class:`~.options.JobqueueOptions`)::

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

Any other key is passed to the dask-jobqueue cluster class (``disk`` for
HTCondor, ``resource_spec``, ``worker_extra_args``, ``interface``, ...). Batch
workers get ``MALLOC_TRIM_THRESHOLD_`` exported in the job prologue:
distributed's default (65536) made uproot's metadata reads ~2.7x slower
(measured on a 2-core machine). :func:`render_job_script` shows the batch script
a backend would submit, without starting anything (``--dry-run``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from ..config import ConfigError
from . import (
    ClusterError,
    ClusterHandle,
    _n_workers,
    _wait_for_workers,
    backend_options,
    register,
)
from .logs import _worker_console_level
from .options import (
    DASHBOARD_ADDRESS,
    DEFAULT_HTCONDOR_DISK,
    DEFAULT_JOB_MEMORY,
    DEFAULT_JOB_NAME,
    JOBQUEUE_BACKENDS,
    HTCondorOptions,
    JobqueueOptions,
    LSFOptions,
    import_jobqueue,
    walltime_seconds,
)

__all__ = ["jobqueue_options", "render_job_script"]

# dask-jobqueue keys that belong to the cluster (scheduler side), not the job.
_CLUSTER_ONLY = ("scheduler_options", "shared_temp_directory", "silence_logs", "name", "security")

# JobqueueOptions fields consumed here rather than passed to dask-jobqueue.
_OWN_KEYS = frozenset({"scale", "adapt", "partition", "wait_timeout", "min_workers", "malloc_trim_threshold"})


def _jobqueue_module():
    try:
        import_jobqueue("dask_jobqueue.slurm")  # the Job classes live in the submodules
        return import_jobqueue("dask_jobqueue")
    except ImportError:
        raise ClusterError(
            "batch backends need the dask-jobqueue package: pip install dask-jobqueue"
        ) from None


def _job_class(backend: str):
    _jobqueue_module()
    mod = import_jobqueue(f"dask_jobqueue.{backend}")
    return getattr(mod, JOBQUEUE_BACKENDS[backend][1])


def jobqueue_options(backend: str, executor) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``executor.cluster`` into (dask-jobqueue cluster kwargs, our own options).

    Our own options: ``scale`` (jobs), ``adapt`` (an :class:`~.options.AdaptOptions`
    dumped to a dict), ``wait_timeout`` (seconds), ``min_workers``. ``partition`` is
    an alias of ``queue``. The job prologue starts with ``export MALLOC_TRIM_THRESHOLD_=...``.

    Args:
        backend: a key of :data:`~.options.JOBQUEUE_BACKENDS` (str).
        executor: the :class:`~jettracks.config.ExecutorConfig`.

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
    kw["job_name"] = opts.pop("job_name", None) or DEFAULT_JOB_NAME
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
        seconds = walltime_seconds(opts.pop("walltime"))
        extra = dict(kw.get("job_extra_directives") or dask.config.get(f"{cfg}.job-extra-directives", None) or {})
        extra.setdefault("+MaxRuntime", str(seconds))
        kw["job_extra_directives"] = extra
    if backend == "lsf" and "walltime" in opts:
        # bsub -W takes [HH:]MM; round seconds up to the next minute
        minutes = -(-walltime_seconds(opts["walltime"]) // 60)
        opts["walltime"] = f"{minutes // 60:02d}:{minutes % 60:02d}"
    if backend == "htcondor" and "disk" not in opts and dask.config.get(f"{cfg}.disk", None) is None:
        opts["disk"] = DEFAULT_HTCONDOR_DISK
    if backend == "lsf" and "use_stdin" not in opts and dask.config.get(f"{cfg}.use-stdin", None) is None:
        opts["use_stdin"] = True  # else LSFJob asks `lsid` for the LSF version
    sched = dict(opts.pop("scheduler_options", None) or {})
    sched.setdefault("dashboard_address", DASHBOARD_ADDRESS)
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

    Args:
        executor: the :class:`~jettracks.config.ExecutorConfig` (``backend`` a batch backend).
        scheduler_address: the address written into the script (str).

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
