"""``output.dir`` as a ``root://`` URL on a real XRootD server (fixture ``xrootd_server``).

- a run writing everything (ML parts, checkpoints, histograms, plots, report, logs) to the
  URL equals the serial run with a local output directory: histograms, cut flow, ML rows,
  accounting; nothing half-written, no probe or lock left; a rerun resumes from the
  checkpoints at the URL;
- a run killed mid-way (SIGKILL: its lock stays behind) and started again with the same
  command takes the finished chunks from the checkpoints at the URL and equals the
  uninterrupted run;
- ``--overwrite`` on a URL directory that jettracks did not write is refused, its file kept;
- a server that is down stops the run in one line with XRootD's reason (not minutes of the
  client's default reconnect windows).
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from jettracks_testing.compare import (
    assert_equal_runs,
    checkpoints,
    wait_for_checkpoints,
)
from jettracks_testing.samples import generated_pfnano

pytestmark = pytest.mark.service

PROJECT = Path(__file__).resolve().parents[1]
N_FILES, EVENTS, CHUNK = 4, 60, 20


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    return generated_pfnano(tmp_path_factory.mktemp("xrout-in"), n_files=N_FILES, events_per_file=EVENTS, seed=20261130)


def _cfg(files, out, *, backend: str = "serial", plots: bool = False,
         processor: str = "processors.jet_tracks:JetTrackProcessor", options: dict | None = None) -> dict:
    return {
        "name": "xrootd-output",
        "datasets": {"qcd": {"files": list(files), "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": processor, "options": options or {}},
        "executor": {"backend": backend, "workers": 2, "chunksize": CHUNK, "retries": 1},
        "output": {"dir": str(out), "plots": plots, "ml": True},
    }


@pytest.fixture(scope="module")
def serial(inputs, tmp_path_factory):
    from jettracks.execution import run_config

    return run_config(_cfg(inputs, tmp_path_factory.mktemp("xrout-serial") / "out"), progress=False)


def _remote_dir(server) -> tuple[str, Path]:
    """A fresh directory the server may write into: (its URL + ``/run``, the run dir on the server's disk)."""
    rel = f"xrout-{secrets.token_hex(4)}"
    return server.writable_dir(rel) + "/run", server.root_dir / rel / "run"


def _files(local: Path) -> list[str]:
    return sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())


def test_root_url_output_equals_the_serial_local_run_and_resumes(xrootd_server, inputs, serial):
    from jettracks.execution import run_config
    from jettracks.io.outfs import RemotePath

    url, local = _remote_dir(xrootd_server)
    cfg = _cfg(inputs, url, backend="local", plots=True)  # two worker processes write parts + checkpoints
    result = run_config(cfg, progress=False)
    assert isinstance(result.output_dir, RemotePath) and str(result.output_dir) == url
    report = assert_equal_runs(local, serial, N_FILES * EVENTS)
    assert report["chunks"] == N_FILES * EVENTS // CHUNK and report["chunks_from_checkpoint"] == 0
    files = _files(local)
    for name in (".jettracks-run.json", "report.json", "report.html", "hists.coffea", "hists.root",
                 "ml/manifest.json", "ml/README.md", "ml/weaver.yaml"):
        assert name in files, (name, files)
    assert [f for f in files if f.startswith("plots/") and f.endswith(".png")]
    assert len([f for f in files if f.startswith("checkpoints/")]) == report["chunks"]
    # atomic writes and cleanup: no temporary, probe or lock file left on the server
    assert not [f for f in files if ".tmp-" in f or ".jettracks-probe-" in f or f.endswith(".jettracks-run.lock")]
    assert json.loads((local / "report.json").read_text())["ml_dataset"]["dir"] == url + "/ml"
    assert len(result.ml_dataset("qcd")) == report["ml_dataset"]["rows"] > 0
    assert "<img" in (local / "report.html").read_text()  # the plots read back from the server
    # the same run again: every chunk from the checkpoints at the URL, the same outputs
    again = run_config(cfg, progress=False)
    assert again.report["chunks_from_checkpoint"] == again.report["chunks"] == report["chunks"]
    assert_equal_runs(local, serial, N_FILES * EVENTS)


def _runner(cfg_path: Path, *extra: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(cfg_path), "--no-progress", *extra],
        cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )


def test_rerun_after_a_killed_run_resumes_from_the_checkpoints_at_the_url(xrootd_server, inputs, serial, tmp_path):
    import yaml

    url, local = _remote_dir(xrootd_server)
    cfg = _cfg(inputs, url, processor="processors.testing:SlowJetTrackProcessor", options={"delay_s": 0.4})
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    proc = _runner(cfg_path, start_new_session=True)
    try:
        wait_for_checkpoints(local, 3, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    done = checkpoints(local)
    total = N_FILES * EVENTS // CHUNK
    assert 3 <= done < total and not (local / "report.json").exists()
    assert (local / ".jettracks-run.lock").exists()  # the killed run's lock: its process is gone
    rerun = _runner(cfg_path)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-3000:]
    report = assert_equal_runs(local, serial, N_FILES * EVENTS)
    assert report["chunks"] == total and done <= report["chunks_from_checkpoint"] < total
    assert not (local / ".jettracks-run.lock").exists()


def test_overwrite_of_a_url_directory_jettracks_did_not_write_is_refused(xrootd_server, inputs, tmp_path):
    import yaml

    url, local = _remote_dir(xrootd_server)
    local.mkdir()
    (local / "thesis.tex").write_text("mine")
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(yaml.safe_dump(_cfg(inputs, url)))
    res = _runner(cfg_path, "--overwrite")
    _, err = res.communicate(timeout=120)
    assert res.returncode == 1, err[-2000:]
    lines = [ln for ln in err.splitlines() if "was not written by jettracks" in ln]
    assert len(lines) == 1 and url in lines[0] and "thesis.tex" in lines[0], err[-2000:]
    assert sorted(p.name for p in local.iterdir()) == ["thesis.tex"]
    assert (local / "thesis.tex").read_text() == "mine"


@pytest.mark.timeout(240)  # a liveness bound: the client's default windows took > 5 min here
def test_a_dead_output_server_stops_the_run_in_one_line_with_its_reason(inputs, tmp_path):
    import socket

    from jettracks.execution import RunError, run_config

    with socket.socket() as s:  # a port nothing listens on: the server is down
        s.bind(("127.0.0.1", 0))
        url = f"root://127.0.0.1:{s.getsockname()[1]}//data/run"
    with pytest.raises(RunError) as err:
        run_config(_cfg(inputs, url), progress=False)
    msg = str(err.value)
    assert msg.startswith(f"cannot create output directory {url}: ") and "\n" not in msg, msg
    reason = msg.split(f"{url}: ", 1)[1]
    assert reason not in ("", "OSError") and "connection" in reason.lower(), reason  # XRootD's own words

