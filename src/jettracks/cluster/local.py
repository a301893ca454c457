"""``backend: local``: a ``LocalCluster`` of worker processes on this machine."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from . import ClusterHandle, register
from .logs import _worker_console_level
from .options import LOCAL_WORKERS_PER_CORE_WARN, LocalOptions
from .shipping import worker_environment

logger = logging.getLogger(__name__)


@register("local", options=LocalOptions, remote=False)
@contextlib.contextmanager
def _local(executor, opts: LocalOptions) -> Iterator[ClusterHandle]:
    """A ``LocalCluster``: ``executor.workers`` processes (default: cores // threads_per_worker)
    of ``executor.threads_per_worker`` threads, ``executor.memory_limit`` each (default: dask's)."""
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
