"""A whole run on the real single-node Slurm (``executor.backend: slurm``, dask-jobqueue).

The run submits a real batch job whose Dask worker processes every chunk; its
histograms and cut flow must equal the serial in-process run over the same files.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jettracks.execution import run_config

pytestmark = pytest.mark.service

N_FILES = 4
EVENTS_PER_FILE = 100
CHUNKSIZE = 50


@pytest.fixture
def by_value_registry():
    """Undo ``ship_processors()`` after the test (the cloudpickle registry is process-wide)."""
    import cloudpickle

    before = "processors" in cloudpickle.list_registry_pickle_by_value()
    yield
    if not before and "processors" in cloudpickle.list_registry_pickle_by_value():
        import processors

        cloudpickle.unregister_pickle_by_value(processors)


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> list[Path]:
    from jettracks.generate import generate_dataset

    return generate_dataset(
        tmp_path_factory.mktemp("slurm-sample"), format="pfnano", n_files=N_FILES,
        events_per_file=EVENTS_PER_FILE, seed=31, pileup_candidates=100, compression="zlib",
    )


def _cfg(files, out: Path, executor: dict) -> dict:
    return {
        "name": "slurm-run",
        "datasets": {"qcd": {"files": [str(f) for f in files], "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {}},
        "executor": {"chunksize": CHUNKSIZE, **executor},
        "output": {"dir": str(out), "plots": False, "ml": False},
    }


class QueueWatch(threading.Thread):
    """Poll ``squeue`` while the run goes on; remember every job seen RUNNING."""

    def __init__(self, cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.running: dict[str, dict] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(Exception):  # a squeue hiccup: poll again
                for job in self.cluster.jobs():
                    if job["state"] == "RUNNING":
                        self.running[job["id"]] = job
            self.stop_event.wait(0.5)


def test_slurm_run_equals_serial_run(slurm_cluster, sample, tmp_path, by_value_registry):
    ref = run_config(_cfg(sample, tmp_path / "serial", {"backend": "serial"}), progress=False)

    logs = tmp_path / "joblogs"
    executor = {
        "backend": "slurm",
        "retries": 1,
        "cluster": {
            "cores": 1,
            "processes": 1,
            "memory": "1GB",  # well below the node's RealMemory
            "walltime": "00:10:00",
            "partition": slurm_cluster.partition,
            "scale": 1,
            "local_directory": str(tmp_path / "dask-local"),
            "log_directory": str(logs),
            "wait_timeout": 60,
        },
    }
    watch = QueueWatch(slurm_cluster)
    watch.start()
    t0 = time.monotonic()
    try:
        result = run_config(_cfg(sample, tmp_path / "slurm", executor), progress=False)
    finally:
        watch.stop_event.set()
        watch.join(timeout=10)
    elapsed = time.monotonic() - t0

    rep = result.report
    cl = rep["cluster"]
    assert cl["backend"] == "slurm" and cl["queue"] == slurm_cluster.partition
    assert cl["cores_per_job"] == 1 and cl["memory_per_job"] == "1GB"
    job_ids = cl["job_ids"]
    assert len(job_ids) == 1, cl
    # a real Slurm job ran the worker: seen RUNNING in squeue under the jobqueue name, on this node
    seen = watch.running.get(job_ids[0])
    assert seen is not None, (job_ids, watch.running)
    assert seen["name"] == "jettracks-worker" and seen["nodes"] == slurm_cluster.node
    # ... and its log shows its worker registered with the run's scheduler
    err_log = logs / f"jettracks-worker-{job_ids[0]}.err"
    assert err_log.exists(), sorted(p.name for p in logs.glob("*"))
    assert cl["scheduler"] in err_log.read_text(errors="replace")
    assert cl["workers"] >= 1

    # every chunk processed by that worker (the only one the scheduler had), nothing lost
    n = N_FILES * EVENTS_PER_FILE
    assert rep["status"] == "ok" and rep["chunks_failed"] == 0
    assert rep["chunks"] == N_FILES * (EVENTS_PER_FILE // CHUNKSIZE) == len(rep["timing"]["chunks"])
    assert rep["entries"] == {"expected": n, "processed": n, "skipped": 0, "files_unreadable": 0}

    assert set(result.hists) == set(ref.hists) and ref.hists
    for name in ref.hists:
        np.testing.assert_array_equal(
            result.hists[name].values(flow=True), ref.hists[name].values(flow=True), err_msg=name
        )
    assert result.cutflow == ref.cutflow
    assert [f["entries_processed"] for f in rep["files"]] == [f["entries_processed"] for f in ref.report["files"]]

    # leaving the run cancelled the job
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(j["id"] == job_ids[0] for j in slurm_cluster.jobs()):
        time.sleep(0.5)
    assert not any(j["id"] == job_ids[0] and j["state"] == "RUNNING" for j in slurm_cluster.jobs())
    assert elapsed < 90, elapsed
