"""Fault 6: the XRootD server goes away for a few seconds in the middle of a run.

Files are served by the session ``xrootd_server``; the run (``SlowJetTrackProcessor``,
so chunks are in flight) reads them over ``root://`` on the session ``local_client``.
Once a few chunks have finished, a thread stops the server, waits ~3 s and starts it
again on the same port. The run must recover through its retries and lose nothing:
every entry processed, no chunk failed, histograms and cut flow identical to a
reference run over the same files' local paths.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jettracks.execution import run_config
from jettracks.io import files as files_mod

pytestmark = pytest.mark.service

N_FILES = 12
EVENTS_PER_FILE = 40
CHUNKSIZE = 10  # 4 chunks a file, 48 in all
N_CHUNKS = N_FILES * EVENTS_PER_FILE // CHUNKSIZE
OUTAGE_S = 3.0
SUBDIR = "fault6"


@pytest.fixture(scope="module")
def served_files(xrootd_server):
    from jettracks.generate import generate_dataset

    out = Path(xrootd_server.root_dir) / SUBDIR
    paths = generate_dataset(
        out, format="pfnano", n_files=N_FILES, events_per_file=EVENTS_PER_FILE, seed=606,
        pileup_candidates=20, compression="zlib", links=False,
    )
    out.chmod(0o755)  # the server runs as `nobody`
    for p in paths:
        p.chmod(0o644)
    yield paths
    if not xrootd_server.is_running():  # leave the shared server as we found it
        xrootd_server.start()
    files_mod.configure_xrootd_client(connection_retry=1, stream_error_window=0)


def _cfg(files: list[str], out: Path, *, processor: str, options: dict, backend: str = "local",
         engine: str = "runner") -> dict:
    executor = {"backend": backend, "chunksize": CHUNKSIZE, "engine": engine}
    if backend != "serial":
        executor |= {"workers": 2, "retries": 5, "xrootd_timeout": 20}
    return {
        "name": "fault6",
        "datasets": {"qcd": {"files": files, "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": processor, "options": options},
        "executor": executor,
        "output": {"dir": str(out), "plots": False, "ml": False},
    }


class Outage(threading.Thread):
    """Stop the server once ``after_chunks`` chunks are checkpointed; start it ``seconds`` later."""

    def __init__(self, server, checkpoints: Path, *, after_chunks: int, seconds: float, deadline_s: float = 180):
        super().__init__(daemon=True)
        self.server, self.checkpoints = server, checkpoints
        self.after_chunks, self.seconds, self.deadline_s = after_chunks, seconds, deadline_s
        self.done_at_stop: int | None = None
        self.done_at_start: int | None = None
        self.port_before = server.port
        self.error: BaseException | None = None

    def _done(self) -> int:
        return sum(1 for _ in self.checkpoints.rglob("*.pkl")) if self.checkpoints.exists() else 0

    def run(self) -> None:
        try:
            deadline = time.monotonic() + self.deadline_s
            while self._done() < self.after_chunks:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.02)
            self.done_at_stop = self._done()
            self.server.stop()
            time.sleep(self.seconds)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            self.error = err
        finally:
            if self.done_at_stop is not None:
                try:
                    self.server.start()
                except BaseException as err:  # noqa: BLE001
                    self.error = self.error or err
                self.done_at_start = self._done()


@pytest.mark.parametrize("engine", ["runner", "dask-awkward"])
def test_server_restart_mid_run_loses_nothing(engine, served_files, xrootd_server, local_client, tmp_path):
    paths = served_files
    ref = run_config(
        _cfg([str(p) for p in paths], tmp_path / "ref", processor="processors.jet_tracks:JetTrackProcessor",
             options={}, backend="serial"),
        progress=False,
    )
    assert ref.report["entries"]["processed"] == N_FILES * EVENTS_PER_FILE

    out = tmp_path / "remote"
    outage = Outage(xrootd_server, out / "checkpoints", after_chunks=4, seconds=OUTAGE_S)
    outage.start()
    t0 = time.monotonic()
    try:
        result = run_config(
            _cfg([xrootd_server.url_for(SUBDIR) + "/pfnano_*.root"], out,
                 processor="processors.testing:SlowJetTrackProcessor", options={"delay_s": 0.3}, engine=engine),
            client=local_client, progress=False, skip_bad_files=True,
        )
    finally:
        outage.join(timeout=60)
    elapsed = time.monotonic() - t0
    assert outage.error is None, outage.error
    assert xrootd_server.is_running() and xrootd_server.port == outage.port_before
    # the outage really happened mid-run: chunks done before it, and chunks still to do after it
    assert outage.done_at_stop is not None, "the run finished before the outage could start"
    assert 4 <= outage.done_at_stop < N_CHUNKS
    assert outage.done_at_start < N_CHUNKS, (outage.done_at_start, N_CHUNKS)

    rep = result.report
    lost = [(f["file"], f["skipped"]) for f in rep["files"] if f["skipped"]]
    assert rep["status"] == "ok" and rep["chunks_failed"] == 0, lost
    assert rep["entries"] == {
        "expected": N_FILES * EVENTS_PER_FILE,
        "processed": N_FILES * EVENTS_PER_FILE,
        "skipped": 0,
        "files_unreadable": 0,
    }
    assert rep["chunks"] == N_CHUNKS
    for f in rep["files"]:
        assert f["entries_processed"] == f["entries_expected"] == EVENTS_PER_FILE, f
    assert set(ref.hists) == set(result.hists)
    for name in ref.hists:
        np.testing.assert_array_equal(
            result.hists[name].values(flow=True), ref.hists[name].values(flow=True), err_msg=name
        )
    assert result.cutflow == ref.cutflow
    # recovery is prompt, not a wait for the XRootD request timeout or connection window
    assert elapsed < 90, elapsed
