"""Shared fixtures: paths, small generated samples, one LocalCluster for the session.

The services (``xrootd_server``, ``slurm_cluster``), the real CMS data (``cms_dir``) and
the ``JETTRACKS_REQUIRE_SERVICES`` rule come from the plugin ``jettracks_testing.plugin``
(``tests/jettracks_testing/``), registered below.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
# Keep the entries-per-file cache of test runs out of the user's ~/.cache.
if "JETTRACKS_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JETTRACKS_CACHE_DIR"] = tempfile.mkdtemp(prefix="jettracks-cache-")
TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # the package jettracks_testing (plugin, services, data locator)
    sys.path.insert(0, str(TESTS))

pytest_plugins = ["jettracks_testing.plugin"]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT


@pytest.fixture(scope="session")
def small_sample(tmp_path_factory) -> dict[str, list[Path]]:
    """A small generated QCD sample in both formats (4 files × 150 events each)."""
    from jettracks import generate

    out = tmp_path_factory.mktemp("sample")
    return {
        fmt: generate.generate_dataset(
            out, format=fmt, n_files=4, events_per_file=150, seed=7, pileup_candidates=150
        )
        for fmt in ("pfnano", "jetntuple")
    }


@pytest.fixture(scope="session")
def local_client():
    """One 2-worker LocalCluster shared by the tests that need real Dask workers."""
    from distributed import Client, LocalCluster

    from jettracks.cluster import worker_environment

    worker_environment()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            yield client


@pytest.fixture
def small_tmpfs(tmp_path):
    """``small_tmpfs(size)``: a tmpfs of ``size`` (mount's syntax, e.g. ``"4m"``) mounted
    under tmp_path, for full-disk and read-only tests (needs root); unmounted afterwards."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"tmpfs{len(mounted)}"
        mnt.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {res.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def file_opens(monkeypatch):
    """Counts the chunk reader's opens of ROOT files in this process (the column cache's
    whole point is to avoid them; chunks must run here: serial backend or engine calls)."""
    from jettracks.engines.base import ChunkReader

    calls: list[int] = []
    original = ChunkReader._open_options

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(ChunkReader, "_open_options", counting)
    return calls
