"""The project's pytest plugin: real services (XRootD, Slurm) and the real CMS data.

Registered by ``tests/conftest.py`` (``pytest_plugins = ["jettracks_testing.plugin"]``),
so every test module can request these fixtures without importing them:

``xrootd_server`` (session)
    A running XRootD server (:class:`jettracks_testing.services.xrootd.XRootDServer`)
    serving a fresh 755 temp directory. Write files under ``xrootd_server.root_dir``,
    read them at ``xrootd_server.url_for("a.root")`` (``'root://127.0.0.1:PORT//a.root'``).
``slurm_cluster`` (session)
    A running single-node Slurm (:class:`jettracks_testing.services.slurm.SlurmCluster`);
    ``SLURM_CONF`` is exported while it runs (sbatch/squeue/scancel find it).
``chromium`` (session)
    A running headless Chromium (:class:`jettracks_testing.services.chromium.Chromium`)
    driven over the DevTools protocol on a pipe: ``chromium.open_page(url)`` returns a
    page that records console errors and network requests, evaluates JavaScript and
    takes screenshots. Tests using it are marked ``service``.
``namespaced_hosts`` (module)
    Hosts without a shared disk (:class:`jettracks_testing.services.hosts.Hosts`, root
    only): a Dask scheduler, two workers and an XRootD server, each in its own network
    and mount namespace, joined to the client's namespace by veth pairs.
``cms_dir`` (session)
    The directory of the real CMS files (:func:`jettracks_testing.data.cms_data_dir`);
    the test is skipped when they are absent.

Each service is started at most once per test process and stopped at the end of the
session. The service code itself is ``jettracks_testing/services/{xrootd,slurm,chromium}.py``
(standard library only; the benchmarks in ``scripts/`` import it too), and
``services/install.sh`` installs the Debian packages (``make services``).

``JETTRACKS_REQUIRE_SERVICES=1`` (set by ``.ci/run``): when a service cannot start
(not root, binary missing, daemon failure) the test is skipped with the exact reason
-- unless this is set, where it fails instead; likewise any skip of a test marked
``service``. CI cannot pass with the service tests skipped.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from jettracks_testing.data import absent_reason, cms_data_dir

REQUIRE_VAR = "JETTRACKS_REQUIRE_SERVICES"

__all__ = ["require_services", "service_unavailable"]


def require_services() -> bool:
    """True when a service that cannot start must fail the test (CI)."""
    return os.environ.get(REQUIRE_VAR, "").strip().lower() in ("1", "true", "yes", "on")


def service_unavailable(reason: str) -> None:
    """``pytest.skip(reason)``, or ``pytest.fail(reason)`` under ``JETTRACKS_REQUIRE_SERVICES=1``."""
    if require_services():
        pytest.fail(f"{reason} ({REQUIRE_VAR}=1: service tests must not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``JETTRACKS_REQUIRE_SERVICES=1`` a skipped ``@pytest.mark.service`` test fails."""
    outcome = yield
    report = outcome.get_result()
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and require_services()
        and item.get_closest_marker("service") is not None
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped service test: {reason} ({REQUIRE_VAR}=1: service tests must not skip)"


def _run_cleanup(cleanup: list) -> None:
    while cleanup:
        fn = cleanup.pop()
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - teardown must go on
            print(f"jettracks_testing: cleanup {fn!r} failed: {err}", file=sys.stderr)


def _start_or_skip(start, cleanup: list):
    """``start(cleanup)``, or skip/fail (see :func:`service_unavailable`) with its error."""
    try:
        return start(cleanup)
    except Exception as err:  # noqa: BLE001 - the service modules raise ServiceUnavailable
        _run_cleanup(cleanup)
        service_unavailable(f"{type(err).__name__}: {err}")


def _start_xrootd(cleanup: list):
    from jettracks_testing.services.xrootd import start_xrootd

    # pytest's tmp dirs (/tmp/pytest-of-root, mode 700) are not readable by the
    # server's user (nobody); serve a dedicated 755 directory instead.
    root = Path(tempfile.mkdtemp(prefix="jettracks-xrootd-data-"))
    root.chmod(0o755)
    cleanup.append(lambda: shutil.rmtree(root, ignore_errors=True))
    server = start_xrootd(root)
    cleanup.append(server.cleanup)
    try:  # fail fast on a stopped server and reconnect at once after a restart
        from jettracks.io.files import configure_xrootd_client

        configure_xrootd_client(connection_retry=1, stream_error_window=0)
    except ImportError:  # pragma: no cover - XRootD bindings missing
        pass
    return server


def _start_slurm(cleanup: list):
    from jettracks_testing.services.slurm import start_slurm

    workdir = Path(tempfile.mkdtemp(prefix="jettracks-slurm-"))
    cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
    cluster = start_slurm(workdir, timeout=60)
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)  # sbatch/squeue/scancel (dask-jobqueue) find this cluster

    def restore() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    cleanup.append(cluster.stop)
    cleanup.append(restore)
    return cluster


@pytest.fixture(scope="session")
def xrootd_server():
    """A running XRootD server (``XRootDServer``) serving a fresh 755 temp directory.

    Write files under ``xrootd_server.root_dir``; read them at
    ``xrootd_server.url_for(path)``. Tests that stop it must start it again.
    """
    cleanup: list = []
    server = _start_or_skip(_start_xrootd, cleanup)
    try:
        yield server
    finally:
        _run_cleanup(cleanup)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node Slurm (``SlurmCluster``); ``SLURM_CONF`` is exported meanwhile."""
    cleanup: list = []
    cluster = _start_or_skip(_start_slurm, cleanup)
    try:
        yield cluster
    finally:
        _run_cleanup(cleanup)


def _start_chromium(cleanup: list):
    from jettracks_testing.services.chromium import start_chromium

    workdir = Path(tempfile.mkdtemp(prefix="jettracks-chromium-"))
    cleanup.append(lambda: shutil.rmtree(workdir, ignore_errors=True))
    browser = start_chromium(workdir)
    cleanup.append(browser.stop)
    return browser


@pytest.fixture(scope="session")
def chromium():
    """A running headless Chromium (``Chromium``): ``chromium.open_page(url)`` -> ``Page``."""
    cleanup: list = []
    browser = _start_or_skip(_start_chromium, cleanup)
    try:
        yield browser
    finally:
        _run_cleanup(cleanup)


def _start_hosts(cleanup: list):
    from jettracks_testing.services.hosts import start_hosts

    data = Path(tempfile.mkdtemp(prefix="jettracks-hosts-data-"))
    data.chmod(0o755)  # served by XRootD (user nobody) from its own namespace
    cleanup.append(lambda: shutil.rmtree(data, ignore_errors=True))
    hosts = start_hosts(2, hide=[tempfile.gettempdir()], serve_dir=data)
    cleanup.append(hosts.stop)
    return hosts


@pytest.fixture(scope="module")
def namespaced_hosts():
    """Hosts without a shared disk (:class:`jettracks_testing.services.hosts.Hosts`, root only):
    a Dask scheduler and two workers, each in its own network and mount namespace (private
    ``/tmp``: no view of the client's output directory under it), an XRootD server in a
    namespace of its own serving ``namespaced_hosts.serve_dir``, all joined to this (the
    client's) namespace by veth pairs on a bridge; removed after the module. Tests using it
    are marked ``service``."""
    cleanup: list = []
    hosts = _start_or_skip(_start_hosts, cleanup)
    try:  # fail fast on a stopped server (as the xrootd_server fixture does)
        from jettracks.io.files import configure_xrootd_client

        configure_xrootd_client(connection_retry=1, stream_error_window=0)
    except ImportError:  # pragma: no cover
        pass
    try:
        yield hosts
    finally:
        _run_cleanup(cleanup)


@pytest.fixture(scope="session")
def cms_dir() -> Path:
    """The directory of the real CMS files (``pfnano.root``, ...); skips the test when absent."""
    path = cms_data_dir()
    if path is None:
        pytest.skip(absent_reason())
    return path
