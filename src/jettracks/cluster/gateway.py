"""``backend: gateway``: a dask-gateway cluster (created, or attached to by name)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from . import ClusterError, ClusterHandle, _n_workers, _wait_for_workers, register
from .options import GatewayOptions


@register("gateway", options=GatewayOptions, remote=True)
@contextlib.contextmanager
def _gateway(executor, opts: GatewayOptions) -> Iterator[ClusterHandle]:
    """Create a gateway cluster (``opts.cluster_options``; ``MALLOC_TRIM_THRESHOLD_`` added to
    its ``environment`` option when it has one) or attach to ``opts.cluster_name``; scale it to
    ``opts.scale`` (default ``executor.workers`` or 1) workers or adapt. A cluster created here
    is shut down on exit, an attached one only disconnected."""
    try:
        from dask_gateway import Gateway
    except ImportError:
        raise ClusterError(
            "backend 'gateway' needs the dask-gateway package, which is not installed: "
            "pip install dask-gateway"
        ) from None
    gateway = Gateway(address=opts.address, proxy_address=opts.proxy_address, auth=opts.auth)
    try:
        with _gateway_cluster(gateway, executor, opts) as handle:
            yield handle
    finally:
        close_gateway(gateway)


def close_gateway(gateway) -> None:
    """Close a ``dask_gateway.Gateway`` (its event loop thread and HTTP session) once.

    dask-gateway 2026.3's ``Gateway.__del__`` closes again and then raises (its loop has
    stopped), which pytest reports as an unraisable exception: the loop runner is dropped
    after the close so ``__del__`` has nothing left to do.
    """
    try:
        gateway.close()
    finally:
        vars(gateway).pop("_loop_runner", None)


@contextlib.contextmanager
def _gateway_cluster(gateway, executor, opts: GatewayOptions) -> Iterator[ClusterHandle]:
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
        try:
            if owned:
                cluster.shutdown()
            else:
                cluster.close()
        finally:  # the cluster's own Gateway client, closed by shutdown/close: see close_gateway
            vars(cluster.gateway).pop("_loop_runner", None)
