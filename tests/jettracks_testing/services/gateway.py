#!/usr/bin/env python3
"""A real dask-gateway server on loopback (``dask-gateway-server``, local-process backend).

Python::

    from jettracks_testing.services.gateway import start_gateway
    with start_gateway(workdir) as gw:
        gw.address          # 'http://127.0.0.1:PORT' (the API)
        gw.proxy_address    # 'gateway://127.0.0.1:PORT' (schedulers, TLS through the proxy)

Configuration (see ``docs/reference/stack.md``): ``UnsafeLocalBackend`` (clusters are
processes of this user), ``SimpleAuthenticator`` (HTTP basic auth, any user name), the
scheduler and worker started as ``python -m distributed.cli.dask_scheduler`` /
``dask_worker`` of this interpreter (the ``dask-scheduler`` console scripts are gone).
Needs ``pip install dask-gateway-server dask-gateway sqlalchemy`` (the test extras);
otherwise :class:`ServiceUnavailable`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["Gateway", "ServiceUnavailable", "start_gateway"]

HOST = "127.0.0.1"


class ServiceUnavailable(RuntimeError):
    """The gateway cannot be started here; ``str(err)`` says why."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Gateway:
    """A running ``dask-gateway-server`` process."""

    def __init__(self, workdir: str | os.PathLike) -> None:
        self.workdir = Path(workdir)
        self.port, self.proxy_port, self.api_port = _free_port(), _free_port(), _free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def proxy_address(self) -> str:
        return f"gateway://{HOST}:{self.proxy_port}"

    def start(self, timeout: float = 60.0) -> Gateway:
        for mod in ("dask_gateway_server", "dask_gateway", "sqlalchemy"):
            if importlib.util.find_spec(mod) is None:
                raise ServiceUnavailable(
                    f"{mod} is not installed (pip install dask-gateway-server dask-gateway sqlalchemy)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        py = sys.executable
        config = self.workdir / "dask_gateway_config.py"
        config.write_text(
            'c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"\n'
            'c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"\n'
            f'c.DaskGateway.address = "{HOST}:{self.api_port}"\n'
            f'c.Proxy.address = "{HOST}:{self.port}"\n'
            f'c.Proxy.tcp_address = "{HOST}:{self.proxy_port}"\n'
            f'c.LocalBackend.clusters_directory = "{self.workdir / "clusters"}"\n'
            f'c.ClusterConfig.scheduler_cmd = ["{py}", "-m", "distributed.cli.dask_scheduler"]\n'
            f'c.ClusterConfig.worker_cmd = ["{py}", "-m", "distributed.cli.dask_worker"]\n'
            'c.ClusterConfig.worker_threads = 1\n'
            'c.ClusterConfig.environment = {"MALLOC_TRIM_THRESHOLD_": "268435456"}\n'
            'c.ClusterConfig.idle_timeout = 600\n'
        )
        log = open(self.workdir / "gateway.log", "ab")  # noqa: SIM115 - kept by the child
        try:
            self.proc = subprocess.Popen(
                [py, "-m", "dask_gateway_server", "-f", str(config)], cwd=self.workdir,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self._healthy():
                return self
            time.sleep(0.2)
        tail = (self.workdir / "gateway.log").read_text(errors="replace")[-1500:]
        self.stop()
        raise ServiceUnavailable(f"dask-gateway-server did not start: {tail}")

    def _healthy(self) -> bool:
        """True once the API answers through the proxy (the proxy's routes are in place)."""
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.address}/api/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server (its clusters are stopped by it; then the process group is killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_gateway(workdir: str | os.PathLike, timeout: float = 60.0) -> Gateway:
    """Start a gateway serving from ``workdir``; raises :class:`ServiceUnavailable`."""
    gw = Gateway(workdir)
    try:
        return gw.start(timeout)
    except BaseException:
        gw.stop()
        raise
