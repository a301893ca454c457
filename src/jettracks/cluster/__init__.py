"""Dask clusters for a run: the backend registry, :func:`connect` and :func:`serial`.

``connect(executor_config)`` is a context manager yielding a :class:`ClusterHandle`
(a ``distributed.Client`` plus a description for the run report). Backends
register themselves with :func:`register` when their module is imported (this
package imports them all at its end); the executor config's ``backend`` key picks one:

``local`` (:mod:`.local`)
    a ``LocalCluster`` on this machine (default): ``workers``,
    ``threads_per_worker``, ``memory_limit``.
``scheduler`` (:mod:`.scheduler`)
    attach to a running scheduler at ``executor.scheduler`` (``tcp://host:port``).
``slurm``, ``htcondor``, ``pbs``, ``lsf``, ``sge`` (:mod:`.jobqueue`)
    dask-jobqueue: each batch job runs Dask worker(s) that connect back to a
    scheduler in this process; options in ``executor.cluster`` (see the module).
``gateway`` (:mod:`.gateway`)
    dask-gateway (only when the ``dask-gateway`` package is installed).

Each backend's ``executor.cluster`` options are a pydantic model registered with
it (:mod:`.options`, :func:`backend_options`); a bad option is a
:class:`~jettracks.config.ConfigError` naming ``executor.cluster.<key>``. Workers
that may not have this project installed (``scheduler``, batch, ``gateway``)
receive the processor's top-level package by value (:mod:`.shipping`). Dask's own
logs go to a file (:mod:`.logs`); :mod:`.shared_output` checks that every worker
sees the output directory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ..config import ConfigError, validation_error_line
from .logs import _forward_worker_logs, capture_dask_logs
from .options import (
    ATTACH_WAIT_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    DASHBOARD_ADDRESS,
    DEFAULT_HTCONDOR_DISK,
    DEFAULT_JOB_MEMORY,
    DEFAULT_JOB_NAME,
    JOBQUEUE_BACKENDS,
    LOCAL_WORKERS_PER_CORE_WARN,
    MALLOC_TRIM_THRESHOLD,
    MAX_JOBS,
    MAX_WAIT_S,
    WAIT_TIMEOUT_S,
    AdaptOptions,
    BackendOptions,
    GatewayOptions,
    HTCondorOptions,
    JobqueueOptions,
    LocalOptions,
    LSFOptions,
    SchedulerOptions,
)
from .shipping import ship_processors, worker_environment

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
    "ClusterError",
    "ClusterHandle",
    "GatewayOptions",
    "HTCondorOptions",
    "JobqueueOptions",
    "LSFOptions",
    "LocalOptions",
    "SchedulerOptions",
    "available",
    "backend_options",
    "capture_dask_logs",
    "connect",
    "jobqueue_options",
    "register",
    "render_job_script",
    "serial",
    "ship_processors",
    "worker_environment",
]


class ClusterError(RuntimeError):
    """A cluster could not be started or reached (no workers joined, package missing, ...)."""


@dataclass
class ClusterHandle:
    """A connected client and what the run report says about it.

    Attributes:
        client: the ``distributed.Client`` (None for ``serial``).
        backend: the backend's name (str; ``"client"`` for a caller's client).
        description: the run report's ``cluster`` section (dict).
    """

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
        name: the ``executor.backend`` value (str).
        options: the pydantic model of its ``executor.cluster`` options (a :class:`BackendOptions` subclass).
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
    """Names of the registered backends (tuple of str, in registration order)."""
    return tuple(_BACKENDS)


def backend_options(executor) -> BackendOptions:
    """``executor.cluster`` validated by its backend's model, defaults filled in.

    Args:
        executor: an :class:`~jettracks.config.ExecutorConfig` (``backend``, ``cluster``).

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


def _n_workers(client) -> int:
    return len(client.scheduler_info().get("workers", {}))


def _wait_for_workers(client, n: int, timeout: float, backend: str, hint: str = "") -> None:
    """Wait until ``n`` workers (int) joined; :class:`ClusterError` after ``timeout`` seconds (float)."""
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


# -- entry points --------------------------------------------------------------------------


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


# -- the backends register themselves on import (they import the names above) -------------
# One import per line, in this order: available() and the "known: ..." messages list the
# backends in registration order.

from . import local  # noqa: F401, I001
from . import scheduler  # noqa: F401
from . import jobqueue  # noqa: F401
from . import gateway  # noqa: F401
from .jobqueue import jobqueue_options, render_job_script
