"""Pytest helpers for tests that need a real service (XRootD server, Slurm).

Usage in a test module (tests/ is on ``sys.path``, see conftest.py)::

    from services import slurm_cluster, xrootd_server  # noqa: F401  (pytest fixtures)

    @pytest.mark.service
    def test_x(xrootd_server):
        (xrootd_server.root_dir / "a.root")...           # files it serves
        xrootd_server.url_for("a.root")                   # 'root://127.0.0.1:PORT//a.root'

Both fixtures are session-scoped and share one running service per test process,
even when several modules import them (each import makes its own fixture
definition; the service itself is started once and stopped after the last user).

When a service cannot start (not root, binary missing, daemon failure) the test
is skipped with the exact reason -- unless ``JETTRACKS_REQUIRE_SERVICES=1`` (set by
``.ci/run``), where it fails instead, so CI cannot pass with these tests skipped.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

PROJECT = Path(__file__).resolve().parents[1]
SERVICES_DIR = PROJECT / "scripts" / "services"
REQUIRE_VAR = "JETTRACKS_REQUIRE_SERVICES"

__all__ = [
    "load_service_module",
    "require_services",
    "service_unavailable",
    "slurm_cluster",
    "xrootd_server",
]


def load_service_module(name: str) -> ModuleType:
    """Import ``scripts/services/<name>.py`` (not a package) as ``jettracks_services_<name>``."""
    modname = f"jettracks_services_{name}"
    if modname in sys.modules:
        return sys.modules[modname]
    path = SERVICES_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:  # pragma: no cover
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def require_services() -> bool:
    """True when a service that cannot start must fail the test (CI)."""
    return os.environ.get(REQUIRE_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def service_unavailable(reason: str) -> None:
    """``pytest.skip(reason)``, or ``pytest.fail(reason)`` under ``JETTRACKS_REQUIRE_SERVICES=1``."""
    if require_services():
        pytest.fail(f"{reason} ({REQUIRE_VAR}=1: service tests must not skip)", pytrace=False)
    pytest.skip(reason)


class _Shared:
    """One service per process, shared by every fixture definition that uses it."""

    def __init__(self) -> None:
        self.obj: Any = None
        self.error: str | None = None
        self.users = 0
        self.cleanup: list = []

    def acquire(self, start) -> Any:
        if self.obj is None and self.error is None:
            try:
                self.obj = start(self)
            except Exception as err:  # the service modules raise ServiceUnavailable
                self.error = f"{type(err).__name__}: {err}"
                self._run_cleanup()
        if self.error is not None:
            service_unavailable(self.error)
        self.users += 1
        return self.obj

    def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            self._run_cleanup()
            self.obj = None

    def _run_cleanup(self) -> None:
        while self.cleanup:
            fn = self.cleanup.pop()
            try:
                fn()
            except Exception as err:  # noqa: BLE001 - teardown must go on
                print(f"services: cleanup {fn!r} failed: {err}", file=sys.stderr)


_XROOTD = _Shared()
_SLURM = _Shared()


def _start_xrootd(shared: _Shared):
    mod = load_service_module("xrootd")
    # pytest's tmp dirs (/tmp/pytest-of-root, mode 700) are not readable by the
    # server's user (nobody); serve a dedicated 755 directory instead.
    root = Path(tempfile.mkdtemp(prefix="jettracks-xrootd-data-"))
    root.chmod(0o755)
    shared.cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
    server = mod.start_xrootd(root)
    shared.cleanup.append(server.cleanup)
    try:  # fail fast on a stopped server and reconnect at once after a restart
        from jettracks.files import configure_xrootd_client

        configure_xrootd_client(connection_retry=1, stream_error_window=0)
    except ImportError:  # pragma: no cover - XRootD bindings missing
        pass
    return server


def _start_slurm(shared: _Shared):
    mod = load_service_module("slurm")
    workdir = Path(tempfile.mkdtemp(prefix="jettracks-slurm-"))
    shared.cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
    cluster = mod.start_slurm(workdir, timeout=60)
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)  # sbatch/squeue/scancel (dask-jobqueue) find this cluster

    def restore() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    shared.cleanup.append(cluster.stop)
    shared.cleanup.append(restore)
    return cluster


@pytest.fixture(scope="session")
def xrootd_server():
    """A running XRootD server (``XRootDServer``) serving a fresh 755 temp directory.

    Write files under ``xrootd_server.root_dir``; read them at
    ``xrootd_server.url_for(path)``. Tests that stop it must start it again.
    """
    server = _XROOTD.acquire(_start_xrootd)
    try:
        yield server
    finally:
        _XROOTD.release()


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node Slurm (``SlurmCluster``); ``SLURM_CONF`` is exported meanwhile."""
    cluster = _SLURM.acquire(_start_slurm)
    try:
        yield cluster
    finally:
        _SLURM.release()
