"""Cluster factory: one registry of Dask cluster backends.

``connect(executor_config)`` is a context manager yielding a :class:`ClusterHandle`
(a ``distributed.Client`` plus a description for the run report). Backends
register themselves with :func:`register`; the executor config's ``backend``
key picks one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ClusterHandle", "available", "connect", "register", "worker_environment"]


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
    """
    import dask

    dask.config.set({"distributed.nanny.pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": None}})


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
    if executor.memory_limit:
        kwargs["memory_limit"] = executor.memory_limit
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        yield ClusterHandle(
            client,
            "local",
            {"workers": n_workers, "threads_per_worker": executor.threads_per_worker},
        )


@register("scheduler")
@contextlib.contextmanager
def _scheduler(executor) -> Iterator[ClusterHandle]:
    from distributed import Client

    if not executor.scheduler:
        raise ValueError("executor.scheduler: backend 'scheduler' needs an address tcp://host:port")
    with Client(executor.scheduler) as client:
        n = len(client.scheduler_info().get("workers", {}))
        yield ClusterHandle(client, "scheduler", {"address": executor.scheduler, "workers": n})


@contextlib.contextmanager
def connect(executor, *, client=None) -> Iterator[ClusterHandle]:
    """Start or attach to the cluster an :class:`~jettracks.config.ExecutorConfig` names.

    Args:
        executor: the executor config (``backend``, ``workers``, ``scheduler``, ...).
        client: an existing ``distributed.Client`` (notebooks): used as is, not closed.
    """
    if client is not None:
        n = len(client.scheduler_info().get("workers", {}))
        yield ClusterHandle(client, "client", {"address": client.scheduler.address, "workers": n})
        return
    try:
        factory = _BACKENDS[executor.backend]
    except KeyError:
        raise ValueError(
            f"executor.backend: unknown backend {executor.backend!r}; known: {', '.join(_BACKENDS)}"
        ) from None
    with factory(executor) as handle:
        yield handle
