"""Issue #9: a worker that cannot see the output directory must not lose the ML dataset.

A real ``distributed`` scheduler runs in a subprocess; the "other host" is a
worker in its own mount namespace with a private tmpfs over the parent of the
client's output directory (network namespace shared: loopback works). The input
files live outside the masked directory, so that worker can read them and
would happily write its ML parts and checkpoints where the client never looks.

- a bad worker present at the start stops the run before anything is read;
- a bad worker joining after the probe is refused by the worker plugin: it runs
  no task, and the ML rows at the client equal the jets processed;
- with the checks bypassed, the post-run verification still fails the run;
- a good worker passes, and the run leaves no probe file or plugin behind;
- a plugin left by a client that has gone rejects nobody.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import awkward as ak
import pytest
from jettracks_testing.plugin import service_unavailable

from jettracks.cluster.shared_output import PROBE_PREFIX, OutputGuard, OutputProbePlugin
from jettracks.execution import RunError, run_config

PY = sys.executable
START_TIMEOUT = 60  # s for a scheduler or worker process to come up


# -- processes -------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


class Cluster:
    """A scheduler subprocess and the worker subprocesses a test starts; stopped on close."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen] = []
        self.address = f"tcp://127.0.0.1:{_free_port()}"
        port = self.address.rsplit(":", 1)[1]
        self.scheduler = self._spawn(
            "scheduler",
            [PY, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", port,
             "--no-dashboard"],
        )

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def worker(self, name: str, masked: Path | None = None) -> subprocess.Popen:
        """Start a worker; with ``masked``, in its own mount namespace with a tmpfs over it."""
        cmd = [PY, "-m", "distributed.cli.dask_worker", self.address, "--nthreads", "1",
               "--no-nanny", "--no-dashboard", "--name", name]
        if masked is not None:
            line = f"mount -t tmpfs tmpfs {masked} && exec " + " ".join(cmd)
            cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", line]
        return self._spawn(name, cmd)

    def close(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)


def _wait_for_names(client, names: set[str], timeout: float = START_TIMEOUT) -> dict[str, str]:
    """Worker name -> address once every name has registered (any status)."""
    deadline = time.monotonic() + timeout
    while True:
        workers = client.scheduler_info()["workers"]
        found = {w["name"]: addr for addr, w in workers.items() if w["name"] in names}
        if set(found) == names:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers {sorted(names - set(found))} did not join")
        time.sleep(0.1)


def _can_mask(path: Path) -> str | None:
    """None if a private tmpfs can be mounted over ``path`` in a new mount namespace, else why not."""
    try:
        res = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs tmpfs {path} && umount {path}"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.SubprocessError) as err:
        return f"unshare unavailable: {err}"
    if res.returncode != 0:
        return f"cannot mount a tmpfs in a private mount namespace (needs root): {res.stderr.strip()}"
    return None


@pytest.fixture
def cluster(tmp_path):
    from distributed import Client

    logs = tmp_path / "logs"
    logs.mkdir()
    c = Cluster(logs)
    try:
        client = Client(c.address, timeout=START_TIMEOUT)
        try:
            c.client = client
            yield c
        finally:
            client.close()
    finally:
        c.close()


@pytest.fixture
def masked(tmp_path):
    """The directory masked for the "other host" worker; the output directory lies inside it."""
    path = tmp_path / "masked"
    path.mkdir()
    reason = _can_mask(path)
    if reason:
        service_unavailable(reason)
    return path


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> list[str]:
    from jettracks.generate import generate_dataset

    out = tmp_path_factory.mktemp("shared-output-inputs")
    return [str(p) for p in generate_dataset(out, format="pfnano", n_files=2, events_per_file=100, seed=3)]


def _config(files, out) -> dict:
    return {
        "name": "shared-output",
        "datasets": {"qcd": {"files": files, "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {
            "class": "processors.jet_tracks:JetTrackProcessor",
            "options": {"cone_dr": 0.5, "jet_pt_min": 30.0, "jet_abs_eta_max": 2.5, "track_pt_min": 1.0},
        },
        "executor": {"backend": "local", "chunksize": 25, "retries": 1},
        "output": {"dir": str(out), "plots": False},
    }


def _our_plugins(client) -> list[str]:
    names = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.worker_plugins))
    return [n for n in names if n.startswith("jettracks-output-probe")]


def _rows_at_client(out: Path) -> int:
    parts = sorted((out / "ml").glob("part-*.parquet"))
    return sum(len(ak.from_parquet(str(p))) for p in parts)


# -- tests -----------------------------------------------------------------------------------
@pytest.mark.service
def test_worker_without_the_output_directory_stops_the_run(cluster, masked, sample, tmp_path):
    out = masked / "out"
    worker = cluster.worker("bad", masked=masked)
    addr = _wait_for_names(cluster.client, {"bad"})["bad"]

    with pytest.raises(RunError) as info:
        run_config(_config(sample, out), client=cluster.client, output_dir=out, progress=False)

    msg = str(info.value)
    assert "\n" not in msg
    assert f"worker {addr} cannot see the output directory {out}" in msg
    assert "shared with the client" in msg and "--backend serial/local" in msg
    # Nothing processed: the report says failed with that line; no outputs at the client or the worker.
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed" and report["error"] == msg and report["files"] == []
    assert not (out / "ml").exists() and not (out / "checkpoints").exists()
    assert cluster.client.run(os.path.exists, str(out / "ml")) == {addr: False}
    assert cluster.client.run(os.path.exists, str(out / "checkpoints")) == {addr: False}
    # Only our probe was removed; the plugin is gone; the worker was not harmed.
    assert not list(out.glob(f"{PROBE_PREFIX}*"))
    assert _our_plugins(cluster.client) == []
    assert worker.poll() is None


@pytest.mark.service
def test_worker_joining_after_the_probe_is_refused(cluster, masked, sample, monkeypatch):
    from distributed import get_task_stream

    from jettracks import datasets

    out = masked / "out"
    cluster.worker("good")
    good = _wait_for_names(cluster.client, {"good"})["good"]
    started: dict[str, object] = {}
    prepare = datasets.prepare_datasets

    def prepare_then_add_bad_worker(*args, **kwargs):
        # Runs after the probe and the plugin registration, before any chunk is submitted.
        assert _our_plugins(cluster.client), "plugin not registered before processing"
        started["proc"] = cluster.worker("bad-late", masked=masked)
        started["addr"] = _wait_for_names(cluster.client, {"good", "bad-late"})["bad-late"]
        return prepare(*args, **kwargs)

    monkeypatch.setattr(datasets, "prepare_datasets", prepare_then_add_bad_worker)
    with get_task_stream(cluster.client) as stream:
        run = run_config(_config(sample, out), client=cluster.client, output_dir=out, progress=False)

    bad = started["addr"]
    assert run.report["status"] == "ok"
    # The bad worker was closed (its process ended) and ran no task.
    assert started["proc"].wait(timeout=30) is not None
    assert bad not in cluster.client.scheduler_info()["workers"]
    assert {t["worker"] for t in stream.data} == {good}
    assert any(n.startswith(f"worker {bad} cannot see the output directory {out}") for n in run.report["notices"])
    # Nothing lost: every jet processed is a row at the client, every chunk checkpointed.
    jets = sum(flow["selected_jets"] for flow in run.cutflow.values())
    assert jets > 0 and _rows_at_client(out) == jets == run.report["ml_dataset"]["rows"]
    assert run.report["entries"]["processed"] == 200
    assert sum(1 for _ in (out / "checkpoints").rglob("*.pkl")) == run.report["chunks"]
    assert not list(out.glob(f"{PROBE_PREFIX}*"))
    assert _our_plugins(cluster.client) == []


@pytest.mark.service
def test_lost_outputs_fail_the_run_even_without_the_probe(cluster, masked, sample, monkeypatch):
    """The post-run check alone: probe and plugin bypassed, the only worker writes elsewhere."""
    out = masked / "out"
    cluster.worker("bad", masked=masked)
    _wait_for_names(cluster.client, {"bad"})
    monkeypatch.setattr(OutputGuard, "_start", lambda self, client: None)

    with pytest.raises(RunError) as info:
        run_config(_config(sample, out), client=cluster.client, output_dir=out, progress=False)

    msg = str(info.value)
    assert "\n" not in msg
    assert "ML part(s) and 8 checkpoint(s) the workers wrote are missing in" in msg
    assert str(out) in msg and "shared with the client" in msg
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "failed"
    assert report["missing_outputs"]["ml_parts"] == report["ml_parts"] == 8
    assert report["missing_outputs"]["checkpoints"] == 8
    assert not (out / "ml").exists()


@pytest.mark.service
def test_worker_sharing_the_filesystem_passes(cluster, sample, tmp_path):
    out = tmp_path / "masked" / "out"
    cluster.worker("good")
    _wait_for_names(cluster.client, {"good"})

    run = run_config(_config(sample, out), client=cluster.client, output_dir=out, progress=False)

    assert run.report["status"] == "ok"
    jets = sum(flow["selected_jets"] for flow in run.cutflow.values())
    assert jets > 0 and _rows_at_client(out) == jets
    # 8 per-chunk parts written by the workers, compacted at the end into the manifest's files
    assert run.report["ml_parts"] == 8
    manifest = json.loads((out / "ml" / "manifest.json").read_text())
    assert sorted(p.name for p in (out / "ml").glob("part-*.parquet")) == sorted(manifest["part_files"])
    assert sum(1 for _ in (out / "checkpoints").rglob("*.pkl")) == 8
    assert "missing_outputs" not in run.report
    assert not list(out.glob(f"{PROBE_PREFIX}*"))
    assert _our_plugins(cluster.client) == []


@pytest.mark.service
def test_plugin_of_a_departed_client_rejects_nobody(cluster, tmp_path):
    """A plugin left registered by a client that died refuses no worker; a live one does."""
    from distributed import Client

    probe = tmp_path / f"{PROBE_PREFIX}absent"  # never written: every worker fails the probe
    gone = Client(cluster.address, timeout=START_TIMEOUT)
    gone_id = gone.id
    gone.close()
    cluster.client.register_plugin(
        OutputProbePlugin(str(probe), "t", gone_id, "jettracks-output-probe-left", wait_s=0.2),
        name="jettracks-output-probe-left",
    )
    kept = cluster.worker("kept")
    addr = _wait_for_names(cluster.client, {"kept"})["kept"]
    time.sleep(2)  # the plugin's setup has long finished
    assert kept.poll() is None
    assert cluster.client.scheduler_info()["workers"][addr]["status"] == "running"
    assert cluster.client.get_events("jettracks-output-probe-left") == ()

    cluster.client.register_plugin(
        OutputProbePlugin(str(probe), "t", cluster.client.id, "jettracks-output-probe-live", wait_s=0.2),
        name="jettracks-output-probe-live",
    )  # also set up on the running worker: it is refused and closes
    assert kept.wait(timeout=30) is not None
    events = cluster.client.get_events("jettracks-output-probe-live")
    assert [e[1]["worker"] for e in events] == [addr]
    assert events[0][1]["reason"] == "probe file absent"


def test_missing_ml_part_fails_the_report(tmp_path):
    """verify() without a cluster: a reported part absent at the client -> status failed."""
    import contextlib
    import json

    guard = OutputGuard(contextlib.nullcontext(), tmp_path)
    present = tmp_path / "part-a.parquet"
    present.write_bytes(b"x")
    report = {"status": "running", "notices": []}
    guard.verify(report, {"ml_parts": [str(present)]})
    assert report["status"] == "running"
    with pytest.raises(RunError, match=r"1 of 2 ML part\(s\) the workers wrote are missing"):
        guard.verify(report, {"ml_parts": [str(present), str(tmp_path / "part-b.parquet")]})
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["status"] == "failed" and saved["missing_outputs"]["ml_parts"] == 1
    assert present.exists()
