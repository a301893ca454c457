"""``backend: gateway`` against a real dask-gateway server (local-process backend).

The gateway (``jettracks_testing.services.gateway``) is started by the test: the run
creates a cluster through it, scales it to 2 workers, runs, and shuts the cluster
down; its result equals the serial run. Without the ``dask-gateway`` package the
backend is still registered and its absence is one line at connect time.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

from jettracks_testing.plugin import service_unavailable


@pytest.fixture(scope="module")
def gateway():
    from jettracks_testing.services.gateway import ServiceUnavailable, start_gateway

    workdir = tempfile.mkdtemp(prefix="jettracks-gateway-")
    try:
        gw = start_gateway(workdir)
    except ServiceUnavailable as err:
        service_unavailable(f"ServiceUnavailable: {err}")
    try:
        yield gw
    finally:
        gw.stop()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


def _cfg(files, out, executor: dict) -> dict:
    return {
        "name": "gateway",
        "datasets": {"qcd": {"files": [str(f) for f in files], "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {}},
        "executor": {"chunksize": 100, "retries": 1, **executor},
        "output": {"dir": str(out), "plots": False, "ml": True},
    }


@pytest.mark.service
def test_run_through_a_real_gateway_equals_serial_and_shuts_the_cluster_down(gateway, small_sample, tmp_path):
    from dask_gateway import Gateway

    from jettracks.cluster.gateway import close_gateway
    from jettracks.execution import run_config

    files = small_sample["pfnano"][:2]
    serial = run_config(_cfg(files, tmp_path / "serial", {"backend": "serial"}), progress=False)
    opts = {"address": gateway.address, "proxy_address": gateway.proxy_address, "auth": "basic",
            "scale": 2, "min_workers": 2, "wait_timeout": 120}
    run = run_config(_cfg(files, tmp_path / "gw", {"backend": "gateway", "cluster": opts}), progress=False)
    rep = run.report
    assert rep["status"] == "ok" and rep["entries"] == serial.report["entries"]
    assert rep["cluster"]["backend"] == "gateway" and rep["cluster"]["workers"] == 2
    assert len({c["worker"] for c in rep["timing"]["chunks"]}) >= 1
    for name, h in serial.hists.items():
        np.testing.assert_array_equal(h.values(flow=True), run.hists[name].values(flow=True), err_msg=name)
    assert run.cutflow == serial.cutflow
    cols = ["event", "jet_index", "jet_pt"]
    rows = lambda r: sorted(tuple(d.values()) for d in r.ml_dataset("qcd")[cols].to_list())  # noqa: E731
    assert rows(run) == rows(serial)
    # the cluster the run created is gone
    g = Gateway(address=gateway.address, proxy_address=gateway.proxy_address, auth="basic")
    try:
        assert g.list_clusters() == []
    finally:
        close_gateway(g)


def test_gateway_backend_needs_no_package_at_import_time():
    code = textwrap.dedent("""
        import sys
        sys.modules["dask_gateway"] = None  # not installed
        import jettracks.cluster as c
        assert "gateway" in c.available()
        from jettracks.config import ExecutorConfig
        try:
            with c.connect(ExecutorConfig(backend="gateway")):
                pass
        except c.ClusterError as err:
            print(err)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "needs the dask-gateway package" in res.stdout and "pip install dask-gateway" in res.stdout
