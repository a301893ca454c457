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
(shared/reference/stack.md). Workers that may not have this project installed
(``scheduler``, batch, ``gateway``) receive the ``processors`` package by value
(``cloudpickle.register_pickle_by_value``), so an edited processor runs remotely.

:func:`render_job_script` shows the batch script a jobqueue backend would
submit, without starting anything (``--dry-run``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ClusterError",
    "ClusterHandle",
    "JOBQUEUE_BACKENDS",
    "available",
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

# executor.cluster keys consumed here (the rest go to dask-jobqueue).
_OWN_KEYS = ("scale", "adapt", "partition", "wait_timeout", "min_workers", "malloc_trim_threshold")
# dask-jobqueue keys that belong to the cluster (scheduler side), not the job.
_CLUSTER_ONLY = ("scheduler_options", "shared_temp_directory", "silence_logs", "name", "security")


class ClusterError(RuntimeError):
    """A cluster could not be started or reached (no workers joined, package missing, ...)."""


@dataclass
class ClusterHandle:
    """A connected client and what the run report says about it."""

    client: Any
    backend: str
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def dashboard_link(self) -> str | None:
        return getattr(self.client, "dashboard_link", None)


_BACKENDS: dict[str, Callable[..., contextlib.AbstractContextManager[ClusterHandle]]] = {}


def register(name: str):
    """Decorator: register a backend factory ``f(executor_config) -> context manager``."""

    def deco(factory):
        _BACKENDS[name] = factory
        return factory

    return deco


def available() -> tuple[str, ...]:
    """Names of the registered backends."""
    return tuple(_BACKENDS)


def worker_environment() -> None:
    """Dask settings every cluster we start gets.

    distributed sets ``MALLOC_TRIM_THRESHOLD_=65536`` in nanny-spawned workers,
    which made uproot's metadata reads ~2.7x slower here (stack.md); drop it.
    (A value exported in the worker's environment wins over this setting, which
    is how batch jobs get theirs: see :func:`jobqueue_options`.)
    """
    import dask

    dask.config.set({"distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": None}})


def ship_processors() -> list[str]:
    """Pickle the ``processors`` package by value, for workers that lack this project.

    coffea's Runner cloudpickles the processor instance; with the package
    registered, its classes and functions travel with it (what they import from
    ``jettracks``, coffea, ... must still be importable on the worker). Returns
    the registered module names (empty if ``processors`` is not importable).
    """
    import cloudpickle

    try:
        processors = importlib.import_module("processors")
    except ImportError:
        return []
    if "processors" not in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.register_pickle_by_value(processors)
    return ["processors"]


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


@register("local")
@contextlib.contextmanager
def _local(executor) -> Iterator[ClusterHandle]:
    from distributed import Client, LocalCluster

    worker_environment()
    n_workers = executor.workers or max(1, (os.cpu_count() or 1) // executor.threads_per_worker)
    kwargs: dict[str, Any] = dict(
        n_workers=n_workers,
        threads_per_worker=executor.threads_per_worker,
        processes=True,
        dashboard_address=executor.cluster.get("dashboard_address", ":0"),
    )
    for key in ("local_directory", "scheduler_port", "host"):
        if key in executor.cluster:
            kwargs[key] = executor.cluster[key]
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


@register("scheduler")
@contextlib.contextmanager
def _scheduler(executor) -> Iterator[ClusterHandle]:
    from distributed import Client

    if not executor.scheduler:
        raise ValueError("executor.scheduler: backend 'scheduler' needs an address tcp://host:port")
    opts = executor.cluster
    timeout = float(opts.get("connect_timeout", 30))
    try:
        client = Client(executor.scheduler, timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise ClusterError(
            f"backend 'scheduler': cannot reach the scheduler {executor.scheduler} "
            f"within {timeout:g} s: {err}"
        ) from None
    with client:
        shipped = ship_processors()
        _wait_for_workers(
            client,
            int(opts.get("min_workers", 1)),
            float(opts.get("wait_timeout", 60)),
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
                "shipped_by_value": shipped,
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
    """``"HH:MM:SS"``, ``"MM:SS"``, ``"D-HH:MM:SS"`` or a number of seconds -> seconds."""
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"executor.cluster.walltime: expected HH:MM:SS, got {value!r}")
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, sec = parts
    return ((days * 24 + h) * 60 + m) * 60 + sec


def _job_class(backend: str):
    _jobqueue_module()
    mod = importlib.import_module(f"dask_jobqueue.{backend}")
    return getattr(mod, JOBQUEUE_BACKENDS[backend][1])


def jobqueue_options(backend: str, executor) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``executor.cluster`` into (dask-jobqueue cluster kwargs, our own options).

    Our own options: ``scale`` (jobs), ``adapt`` ({minimum, maximum} jobs),
    ``wait_timeout``, ``min_workers``. ``partition`` is an alias of ``queue``.
    The job prologue starts with ``export MALLOC_TRIM_THRESHOLD_=...``.
    """
    import dask
    from dask.utils import format_bytes, parse_bytes

    if backend not in JOBQUEUE_BACKENDS:
        raise ValueError(f"not a jobqueue backend: {backend!r}; known: {', '.join(JOBQUEUE_BACKENDS)}")
    opts = dict(executor.cluster)
    own = {k: opts.pop(k) for k in _OWN_KEYS if k in opts}
    kw: dict[str, Any] = {}
    if "partition" in own:
        if "queue" in opts and opts["queue"] != own["partition"]:
            raise ValueError("executor.cluster: give either queue or partition, not both")
        opts["queue"] = own.pop("partition")
    if backend == "htcondor" and "queue" in opts:
        raise ValueError(
            "executor.cluster.queue: HTCondor has no queues; use job_extra_directives "
            "(e.g. {'+JobFlavour': '\"longlunch\"'})"
        )
    cfg = f"jobqueue.{backend}"
    # cores and memory are per job; a job runs `processes` workers that share them
    kw["processes"] = int(opts.pop("processes", None) or dask.config.get(f"{cfg}.processes", None) or 1)
    kw["cores"] = (
        opts.pop("cores", None)
        or dask.config.get(f"{cfg}.cores", None)
        or executor.threads_per_worker * kw["processes"]
    )
    memory = opts.pop("memory", None) or dask.config.get(f"{cfg}.memory", None)
    if memory is None and executor.memory_limit:
        memory = format_bytes(parse_bytes(executor.memory_limit) * kw["processes"]).replace(" ", "")
    kw["memory"] = memory or "2GB"
    kw["python"] = opts.pop("python", None) or dask.config.get(f"{cfg}.python", None) or sys.executable
    kw["job_name"] = opts.pop("job_name", None) or "jettracks-worker"
    threshold = int(own.pop("malloc_trim_threshold", MALLOC_TRIM_THRESHOLD))
    prologue = opts.pop("job_script_prologue", None)
    if prologue is None:
        prologue = dask.config.get(f"{cfg}.job-script-prologue", None) or []
    if isinstance(prologue, str):
        prologue = [prologue]
    kw["job_script_prologue"] = [f"export MALLOC_TRIM_THRESHOLD_={threshold}", *prologue]
    extra = opts.pop("job_extra_directives", None)
    if extra is not None:
        if isinstance(extra, str):
            extra = [extra]
        if backend == "htcondor" and not isinstance(extra, dict):
            pairs = {}
            for line in extra:
                key, sep, value = str(line).partition("=")
                if not sep:
                    raise ValueError(f"executor.cluster.job_extra_directives: HTCondor needs 'key = value', got {line!r}")
                pairs[key.strip()] = value.strip()
            extra = pairs
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
    adapt = own.get("adapt")
    if adapt is not None:
        if not isinstance(adapt, dict) or not set(adapt) <= {"minimum", "maximum"}:
            raise ValueError("executor.cluster.adapt: expected {minimum: N, maximum: M} (jobs)")
        if "scale" in own:
            raise ValueError("executor.cluster: give either scale or adapt, not both")
    else:
        own["scale"] = int(own.get("scale") or executor.workers or 1)
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
        ValueError: not a jobqueue backend, or an option dask-jobqueue does not take.
    """
    backend = executor.backend
    if backend not in JOBQUEUE_BACKENDS:
        raise ValueError(
            f"executor.backend: {backend!r} submits no batch jobs; job scripts exist for "
            f"{', '.join(JOBQUEUE_BACKENDS)}"
        )
    cluster_kwargs, _ = jobqueue_options(backend, executor)
    job_cls = _job_class(backend)
    try:
        job = job_cls(scheduler_address, name="dummy-name", **_job_kwargs(backend, cluster_kwargs))
    except TypeError as err:
        raise ValueError(f"executor.cluster: option not accepted by dask-jobqueue's {job_cls.__name__}: {err}") from None
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
        "shipped_by_value": own.get("_shipped", []),
    }
    if "adapt" in own:
        desc["adapt_jobs"] = dict(own["adapt"])
    else:
        desc["jobs"] = own["scale"]
    return {k: v for k, v in desc.items() if v is not None}


def _jobqueue_factory(backend: str):
    @contextlib.contextmanager
    def factory(executor) -> Iterator[ClusterHandle]:
        from distributed import Client

        mod = _jobqueue_module()
        cls = getattr(mod, JOBQUEUE_BACKENDS[backend][0])
        kw, own = jobqueue_options(backend, executor)
        for d in ("log_directory", "local_directory"):
            if kw.get(d) and not str(kw[d]).startswith("$"):
                os.makedirs(os.path.expandvars(str(kw[d])), exist_ok=True)
        try:
            cluster = cls(**kw)
        except (TypeError, ValueError) as err:
            raise ValueError(f"executor.cluster: {cls.__name__} rejected the options: {err}") from None
        with cluster:
            own["_shipped"] = ship_processors()
            if "adapt" in own:
                cluster.adapt(
                    minimum_jobs=own["adapt"].get("minimum", 1), maximum_jobs=own["adapt"].get("maximum", 1)
                )
            else:
                cluster.scale(jobs=own["scale"])
            with Client(cluster) as client:
                minimum = int(own.get("min_workers", 1))
                hint = (
                    f"jobs are submitted with `{cluster._dummy_job.submit_command}`; check the queue "
                    f"and the job logs ({kw.get('log_directory') or 'log_directory not set: the batch default'})"
                )
                _wait_for_workers(client, minimum, float(own.get("wait_timeout", 300)), backend, hint)
                yield ClusterHandle(client, backend, _jobqueue_description(backend, cluster, kw, own, client))

    factory.__name__ = f"_{backend}"
    factory.__doc__ = f"dask-jobqueue {JOBQUEUE_BACKENDS[backend][0]} backend."
    return factory


for _name in JOBQUEUE_BACKENDS:
    register(_name)(_jobqueue_factory(_name))


# -- dask-gateway --------------------------------------------------------------------------


@register("gateway")
@contextlib.contextmanager
def _gateway(executor) -> Iterator[ClusterHandle]:
    try:
        from dask_gateway import Gateway
    except ImportError:
        raise ClusterError(
            "backend 'gateway' needs the dask-gateway package, which is not installed: "
            "pip install dask-gateway"
        ) from None
    opts = dict(executor.cluster)
    auth = opts.pop("auth", None)
    gateway = Gateway(
        address=opts.pop("address", None),
        proxy_address=opts.pop("proxy_address", None),
        auth=auth,
    )
    name = opts.pop("cluster_name", None)
    cluster_options = dict(opts.pop("cluster_options", None) or {})
    if name:
        cluster = gateway.connect(name)
        owned = False
    else:
        options = gateway.cluster_options()
        env_field = "environment" if "environment" in options else None
        for key, value in cluster_options.items():
            options[key] = value
        if env_field is not None:
            env = dict(options[env_field] or {})
            env.setdefault("MALLOC_TRIM_THRESHOLD_", str(opts.pop("malloc_trim_threshold", MALLOC_TRIM_THRESHOLD)))
            options[env_field] = env
        cluster = gateway.new_cluster(options)
        owned = True
    try:
        if "adapt" in opts:
            cluster.adapt(**opts["adapt"])
        else:
            cluster.scale(int(opts.get("scale") or executor.workers or 1))
        client = cluster.get_client()
        try:
            shipped = ship_processors()
            _wait_for_workers(
                client, int(opts.get("min_workers", 1)), float(opts.get("wait_timeout", 300)), "gateway"
            )
            yield ClusterHandle(
                client,
                "gateway",
                {
                    "backend": "gateway",
                    "cluster": cluster.name,
                    "dashboard": cluster.dashboard_link,
                    "workers": _n_workers(client),
                    "shipped_by_value": shipped,
                },
            )
        finally:
            client.close()
    finally:
        if owned:
            cluster.shutdown()
        else:
            cluster.close()


# -- entry point ---------------------------------------------------------------------------


@contextlib.contextmanager
def connect(executor, *, client=None) -> Iterator[ClusterHandle]:
    """Start or attach to the cluster an :class:`~jettracks.config.ExecutorConfig` names.

    Args:
        executor: the executor config (``backend``, ``workers``, ``scheduler``, ``cluster``, ...).
        client: an existing ``distributed.Client`` (notebooks): used as is, not closed.

    Raises:
        ValueError: unknown backend or invalid ``executor.cluster`` options.
        ClusterError: the cluster could not be started or no worker joined in time.
    """
    if client is not None:
        n = _n_workers(client)
        yield ClusterHandle(client, "client", {"backend": "client", "address": client.scheduler.address, "workers": n})
        return
    try:
        factory = _BACKENDS[executor.backend]
    except KeyError:
        raise ValueError(
            f"executor.backend: unknown backend {executor.backend!r}; known: {', '.join(_BACKENDS)}"
        ) from None
    with factory(executor) as handle:
        yield handle
