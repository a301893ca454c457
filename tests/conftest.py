"""Shared fixtures: paths, small generated samples, one LocalCluster for the session."""

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
if str(TESTS) not in sys.path:  # tests import helpers such as `services`
    sys.path.insert(0, str(TESTS))


def shared_dir() -> Path:
    """The sibling ``shared/`` of the project root (or $JETTRACKS_SHARED)."""
    env = os.environ.get("JETTRACKS_SHARED")
    return Path(env) if env else PROJECT.parent / "shared"


def cms_data_dir() -> Path | None:
    """The real CMS files (``shared/data/cms``; $JETTRACKS_SHARED may point at shared/ or at them)."""
    primary = PROJECT.parent / "shared" / "data" / "cms"
    if primary.is_dir():
        return primary
    env = os.environ.get("JETTRACKS_SHARED")
    if env:
        for cand in (Path(env) / "data" / "cms", Path(env)):
            if (cand / "pfnano.root").is_file():
                return cand
    return None


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT


@pytest.fixture(scope="session")
def cms_dir() -> Path:
    path = shared_dir() / "data" / "cms"
    if not path.is_dir():
        pytest.skip(f"real CMS files not available: {path} is absent")
    return path


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
