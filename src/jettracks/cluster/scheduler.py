"""``backend: scheduler``: attach to a running Dask scheduler and its workers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..config import ConfigError
from . import ClusterError, ClusterHandle, _wait_for_workers, register
from .options import SchedulerOptions


@register("scheduler", options=SchedulerOptions, remote=True)
@contextlib.contextmanager
def _scheduler(executor, opts: SchedulerOptions) -> Iterator[ClusterHandle]:
    """Connect to ``executor.scheduler`` (``tcp://host:port``) within ``opts.connect_timeout``
    seconds, then wait ``opts.wait_timeout`` seconds for ``opts.min_workers`` workers.
    Leaving the context closes the client only: the scheduler and its workers keep running."""
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
