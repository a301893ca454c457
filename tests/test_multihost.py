"""Hosts without a shared disk: a scheduler, two workers and the XRootD input server each
in its own network and mount namespace (fixture ``namespaced_hosts``, root only).

- ``python -m runner run CFG --scheduler tcp://ADDR`` with a local ``output.dir`` the
  workers cannot see refuses at start with one line naming the fix;
- the same with ``output.transfer: dask`` delivers the complete outputs to the client
  (ML parts through Dask, checkpoints written by the client), equal to the serial run:
  histograms, ML rows, accounting; a rerun resumes from those checkpoints;
- a worker's link cut mid-run (``ip link set ... down``): the run finishes on the other
  worker with exact accounting and the same result;
- ``executor.cache`` as a ``root://`` URL on the XRootD host: the workers fill it, and a rerun
  with another cut takes its columns from it (a damaged entry is seen and stored again),
  equal to the serial run without a cache.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from jettracks_testing.compare import (
    assert_equal_runs,
    checkpoints,
    ml_frame,
    wait_for_checkpoints,
)

pytestmark = pytest.mark.service

PROJECT = Path(__file__).resolve().parents[1]
N_FILES, EVENTS = 6, 60
GEN = {"pileup_candidates": 20, "compression": "zlib", "links": False}


@pytest.fixture(scope="module")
def inputs(namespaced_hosts) -> list[str]:
    """root:// URLs of generated PFNano files served from the XRootD host."""
    from jettracks.generate import generate_dataset

    out = Path(namespaced_hosts.serve_dir) / "mh"
    paths = generate_dataset(out, format="pfnano", n_files=N_FILES, events_per_file=EVENTS, seed=20261214, **GEN)
    out.chmod(0o755)
    for p in paths:
        p.chmod(0o644)
    return [namespaced_hosts.url_for(p) for p in paths]


def _cfg(files, out: Path, *, transfer: str | None = None, processor: str = "processors.jet_tracks:JetTrackProcessor",
         options: dict | None = None) -> dict:
    cfg = {
        "name": "multihost",
        "datasets": {"qcd": {"files": list(files), "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": processor, "options": options or {}},
        "executor": {"backend": "serial", "chunksize": 20, "retries": 1},
        "output": {"dir": str(out), "plots": False, "ml": True},
    }
    if transfer:
        cfg["output"]["transfer"] = transfer
    return cfg


@pytest.fixture(scope="module")
def serial(inputs, tmp_path_factory):
    from jettracks.execution import run_config

    out = tmp_path_factory.mktemp("serial") / "out"
    return run_config(_cfg(inputs, out), progress=False)


def _write_cfg(path: Path, cfg: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


def _runner(cfg_path: Path, address: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", "run", str(cfg_path), "--scheduler", address, "--no-progress", *extra],
        cwd=PROJECT, capture_output=True, text=True, timeout=240, check=False,
    )


def _assert_equal_runs(out_dir: Path, serial) -> dict:
    return assert_equal_runs(out_dir, serial, N_FILES * EVENTS)


def test_local_output_dir_workers_cannot_see_is_refused_in_one_line(namespaced_hosts, inputs, tmp_path):
    out = tmp_path / "out"  # under /tmp: hidden from every worker (private tmpfs)
    cfg = _write_cfg(tmp_path / "run.yaml", _cfg(inputs, out))
    res = _runner(cfg, namespaced_hosts.scheduler_address)
    assert res.returncode == 1, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if "cannot see the output directory" in ln]
    assert len(lines) == 1, res.stderr[-2000:]
    assert f"cannot see the output directory {out}" in lines[0] and "output.transfer: dask" in lines[0]
    assert not (out / "hists.coffea").exists() and not list((out / "ml").glob("part-*")) if (out / "ml").exists() else True


def test_outputs_through_dask_equal_the_serial_run_and_resume(namespaced_hosts, inputs, serial, tmp_path):
    out = tmp_path / "out"
    cfg = _write_cfg(tmp_path / "run.yaml", _cfg(inputs, out, transfer="dask"))
    t0 = time.perf_counter()
    res = _runner(cfg, namespaced_hosts.scheduler_address)
    assert res.returncode == 0, res.stderr[-3000:]
    report = _assert_equal_runs(out, serial)
    workers = {c["worker"] for c in report["timing"]["chunks"]}
    assert workers <= {f"tcp://{namespaced_hosts.ip[w]}" for w in namespaced_hosts.workers} | workers
    assert len(workers) == 2, workers  # both namespaced workers did chunks
    assert all(w.startswith(f"tcp://{namespaced_hosts.subnet}.") for w in workers)
    assert list((out / "checkpoints").rglob("*.pkl"))  # written by the client
    # the same command again resumes: every chunk from the client's checkpoints
    again = _runner(cfg, namespaced_hosts.scheduler_address)
    assert again.returncode == 0, again.stderr[-3000:]
    rep2 = _assert_equal_runs(out, serial)
    assert rep2["chunks_from_checkpoint"] == rep2["chunks"] == report["chunks"]
    print(f"multihost run {time.perf_counter() - t0:.1f} s")


def test_worker_link_cut_mid_run_finishes_with_exact_accounting(namespaced_hosts, inputs, serial, tmp_path):
    from distributed import Client

    from jettracks.execution import run_config

    hosts = namespaced_hosts
    out = tmp_path / "out"
    cfg = _cfg(inputs, out, transfer="dask", processor="processors.testing:SlowJetTrackProcessor",
               options={"delay_s": 0.25})
    with Client(hosts.scheduler_address, timeout=30) as client:
        hosts.wait_for_workers(client)
        cut = {}

        def cut_when_busy() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if any(client.processing().values()) and len(list((out / "ml").glob("part-*"))) >= 3:
                    break
                time.sleep(0.05)
            hosts.link_down("w1")
            cut["at"] = time.monotonic()

        thread = threading.Thread(target=cut_when_busy, daemon=True)
        thread.start()
        try:
            result = run_config(cfg, client=client, progress=False)
        finally:
            thread.join(5)
            hosts.link_up("w1")
    assert "at" in cut, "the link was not cut during the run"
    report = result.report
    ent = report["entries"]
    assert report["status"] == "ok" and ent["processed"] + ent["skipped"] == ent["expected"] == N_FILES * EVENTS
    # the result is the serial run's (SlowJetTrackProcessor only sleeps)
    for name, h in serial.hists.items():
        np.testing.assert_array_equal(h.values(flow=True), result.hists[name].values(flow=True), err_msg=name)
    import pandas as pd

    pd.testing.assert_frame_equal(ml_frame(out), ml_frame(serial.output_dir), check_like=True)


def _url_dir(hosts) -> tuple[str, Path]:
    """A fresh directory on the hosts' XRootD server that it may write into: (URL + ``/run``,
    the run directory on the server's disk)."""
    import secrets

    from jettracks_testing.services.xrootd import make_writable

    rel = f"out-{secrets.token_hex(4)}"
    make_writable(Path(hosts.serve_dir) / rel)
    return hosts.url_for(rel) + "/run", Path(hosts.serve_dir) / rel / "run"


def _all_workers(hosts) -> None:
    """Every namespaced worker joined (a worker whose link was cut closed itself: start it again)."""
    from distributed import Client

    with Client(hosts.scheduler_address, timeout=30) as client:
        names = {w.get("name") for w in client.scheduler_info()["workers"].values()}
        for w in hosts.workers:
            if w not in names:
                hosts.respawn(w)
        hosts.wait_for_workers(client)


def test_root_url_output_dir_delivers_complete_outputs(namespaced_hosts, inputs, serial, tmp_path):
    """Workers and client write to the XRootD host: no shared disk, no transfer through Dask."""
    _all_workers(namespaced_hosts)
    url, local = _url_dir(namespaced_hosts)
    cfg = _write_cfg(tmp_path / "run.yaml", _cfg(inputs, url))
    res = _runner(cfg, namespaced_hosts.scheduler_address)
    assert res.returncode == 0, res.stderr[-3000:]
    report = _assert_equal_runs(local, serial)
    workers = {c["worker"] for c in report["timing"]["chunks"]}
    assert len(workers) == 2 and all(w.startswith(f"tcp://{namespaced_hosts.subnet}.") for w in workers), workers
    assert checkpoints(local) == report["chunks"]
    assert (local / "report.html").is_file() and (local / ".jettracks-run.json").is_file()


def test_scheduler_killed_mid_run_then_the_same_command_resumes_from_the_url(namespaced_hosts, inputs, serial,
                                                                             tmp_path):
    hosts = namespaced_hosts
    url, local = _url_dir(hosts)
    cfg = _write_cfg(tmp_path / "run.yaml", _cfg(inputs, url, processor="processors.testing:SlowJetTrackProcessor",
                                                 options={"delay_s": 0.3}))
    cmd = [sys.executable, "-m", "runner", "run", str(cfg), "--scheduler", hosts.scheduler_address, "--no-progress"]
    first = subprocess.Popen(cmd, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoints(local, 3, first, timeout=120)
        hosts.kill("sched")
        _, err = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
        for name in ["sched", *hosts.workers]:  # a new scheduler; the workers closed with the old one
            hosts.respawn(name)
    assert first.returncode != 0, err[-2000:]
    done = checkpoints(local)
    total = N_FILES * EVENTS // 20
    assert 3 <= done < total
    from distributed import Client

    with Client(hosts.scheduler_address, timeout=30) as client:
        hosts.wait_for_workers(client)
    again = _runner(cfg, hosts.scheduler_address)
    assert again.returncode == 0, again.stderr[-3000:]
    report = _assert_equal_runs(local, serial)
    assert report["chunks"] == total and done <= report["chunks_from_checkpoint"] < total


def test_root_url_cache_serves_workers_without_a_shared_disk(namespaced_hosts, inputs, tmp_path):
    """``executor.cache`` on the XRootD host: the workers fill it in one run and the next run
    with another cut takes every column from it, equal to the serial run without a cache."""
    from jettracks.execution import run_config
    from jettracks.io.column_cache import MARKER

    hosts = namespaced_hosts
    _all_workers(hosts)
    cache_url, cache_dir = _url_dir(hosts)
    first_url, _ = _url_dir(hosts)
    cfg = _cfg(inputs, first_url)
    cfg["executor"]["cache"] = cache_url
    res = _runner(_write_cfg(tmp_path / "first.yaml", cfg), hosts.scheduler_address)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (cache_dir / MARKER).is_file()
    stored = {p: p.stat().st_mtime_ns for p in cache_dir.rglob("*.arrow")}
    assert stored and not [p for p in cache_dir.rglob("*") if ".tmp-" in p.name]
    victim = sorted(stored)[0]  # damaged: the rerun must see it (checksum) and store it again
    good = victim.read_bytes()
    victim.write_bytes(good[: len(good) // 2] + bytes([good[len(good) // 2] ^ 0xFF]) + good[len(good) // 2 + 1:])
    stored[victim] = victim.stat().st_mtime_ns
    rerun_url, rerun_local = _url_dir(hosts)
    cfg = _cfg(inputs, rerun_url, options={"cone_dr": 0.3})
    cfg["executor"]["cache"] = cache_url
    res = _runner(_write_cfg(tmp_path / "rerun.yaml", cfg), hosts.scheduler_address)
    assert res.returncode == 0, res.stderr[-3000:]
    want = run_config(_cfg(inputs, tmp_path / "plain", options={"cone_dr": 0.3}), progress=False)
    report = _assert_equal_runs(rerun_local, want)
    assert len({c["worker"] for c in report["timing"]["chunks"]}) == 2
    # A chunk missing a column reads it from its file and stores it: only the damaged entry
    # stored again (as it was) means every other column of the rerun came from the cache.
    after = {p: p.stat().st_mtime_ns for p in cache_dir.rglob("*.arrow")}
    assert victim.read_bytes() == good and after.pop(victim) != stored.pop(victim)
    assert after == stored
