"""Fault injection on the real pipeline: every entry processed or skipped with a reason.

Good input is the real CMS PFNano file (10 events) copied under tmp_path; bad
files are made here: missing, truncated, random bytes, zero entries, missing branch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from jettracks_testing.samples import copy_with_new_uuid, write_pfnano_like

from jettracks.execution import RunError, run_config

pytestmark = pytest.mark.slow

@pytest.fixture
def good_files(cms_dir, tmp_path):
    return [copy_with_new_uuid(cms_dir / "pfnano.root", tmp_path / f"good{i}.root") for i in range(3)]


def _cfg(files, out, *, processor="processors.jet_tracks:JetTrackProcessor", options=None, chunksize=4):
    return {
        "name": "faults",
        "datasets": {"tt": {"files": [str(f) for f in files], "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": processor, "options": options or {}},
        "executor": {"backend": "local", "workers": 2, "chunksize": chunksize, "retries": 1},
        "output": {"dir": str(out), "plots": False},
    }


def _check_accounting(report):
    ent = report["entries"]
    assert ent["processed"] + ent["skipped"] == ent["expected"]
    for f in report["files"]:
        if f["entries_expected"] is not None:
            assert f["entries_processed"] + f["entries_skipped"] == f["entries_expected"], f


def _bad_file(kind: str, tmp_path: Path, cms_dir: Path) -> Path:
    path = tmp_path / f"bad_{kind}.root"
    if kind == "missing":
        return path
    if kind == "truncated":
        data = (cms_dir / "pfnano.root").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(1).bytes(100_000))
    elif kind == "no_branch":
        write_pfnano_like(path, cms_dir / "pfnano.root", drop=("PFCands_d0Err",))
    return path


@pytest.mark.parametrize("kind", ["missing", "truncated", "random", "no_branch"])
def test_bad_file_stops_run_naming_it(kind, good_files, tmp_path, cms_dir, local_client):
    bad = _bad_file(kind, tmp_path, cms_dir)
    files = [*good_files, bad]  # bad file last: the first-file check passes, the run meets it
    with pytest.raises(RunError) as err:
        run_config(_cfg(files, tmp_path / "out"), client=local_client, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg
    if kind == "no_branch":
        assert "PFCands_d0Err" in msg
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "failed"
    _check_accounting(report)
    # every good chunk finished and was checkpointed before the run stopped
    good_entries = sum(f["entries_processed"] for f in report["files"] if f["file"] != str(bad))
    assert good_entries == 10 * len(good_files)


@pytest.mark.parametrize("kind", ["missing", "truncated", "random", "no_branch"])
def test_skip_bad_files_reports_what_was_skipped(kind, good_files, tmp_path, cms_dir, local_client):
    bad = _bad_file(kind, tmp_path, cms_dir)
    result = run_config(
        _cfg([*good_files, bad], tmp_path / "out"), client=local_client, progress=False, skip_bad_files=True
    )
    rep = result.report
    assert rep["status"] == "partial"
    _check_accounting(rep)
    entry = next(f for f in rep["files"] if f["file"] == str(bad))
    assert entry["skipped"] and entry["skipped"][0]["reason"]
    assert entry["entries_processed"] == 0
    assert rep["entries"]["processed"] == 10 * len(good_files)
    if kind == "no_branch":  # metadata readable: entries known and all skipped (a truncated file loses its tree header)
        assert entry["entries_expected"] == entry["entries_skipped"] > 0
    assert result.cutflow["tt"]["entries"] == 10 * len(good_files)


def test_bad_first_file_is_one_line_naming_file_format_and_branch(good_files, tmp_path, cms_dir):
    bad = _bad_file("no_branch", tmp_path, cms_dir)
    with pytest.raises(RunError) as err:
        run_config(_cfg([bad, *good_files], tmp_path / "out") | {"executor": {"backend": "serial"}}, progress=False)
    msg = str(err.value)
    assert str(bad) in msg and "pfnano" in msg and "PFCands_d0Err" in msg and "\n" not in msg


def test_zero_entry_file_is_zero_events_not_an_error(good_files, tmp_path, cms_dir, local_client):
    empty = write_pfnano_like(tmp_path / "empty.root", cms_dir / "pfnano.root", entry_stop=0)
    result = run_config(_cfg([*good_files, empty], tmp_path / "out"), client=local_client, progress=False)
    rep = result.report
    assert rep["status"] == "ok"
    _check_accounting(rep)
    entry = next(f for f in rep["files"] if f["file"] == str(empty))
    assert entry["entries_expected"] == 0 and entry["skipped"] == []
    assert result.cutflow["tt"]["entries"] == 30


def _serial_reference(files, tmp_path, **kw):
    cfg = _cfg(files, tmp_path / "ref", **kw)
    cfg["executor"] = {"backend": "serial", "chunksize": cfg["executor"]["chunksize"]}
    return run_config(cfg, progress=False)


def _same_hists(a, b):
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name].values(flow=True), b[name].values(flow=True), err_msg=name)


def test_worker_killed_mid_run_redoes_its_chunks(good_files, tmp_path):
    from distributed import Client, LocalCluster

    from jettracks.cluster import worker_environment

    files = good_files * 1  # 3 files x 5 chunks of 2 entries
    ref = _serial_reference(files, tmp_path, chunksize=2)
    worker_environment()
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        import threading

        def kill_one():
            time.sleep(3.0)
            os.kill(next(iter(pids.values())), signal.SIGKILL)

        killer = threading.Thread(target=kill_one)
        killer.start()
        result = run_config(
            _cfg(files, tmp_path / "out", processor="processors.testing:SlowJetTrackProcessor",
                 options={"delay_s": 0.6}, chunksize=2),
            client=client, progress=False,
        )
        killer.join()
        assert set(client.run(os.getpid).values()) != set(pids.values())  # a worker really died
    _check_accounting(result.report)
    assert result.report["entries"]["processed"] == 30 and result.report["chunks_failed"] == 0
    _same_hists(result.hists, ref.hists)
    assert result.cutflow == ref.cutflow


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_then_resumed_equals_uninterrupted(sig, good_files, tmp_path):
    files = good_files
    ref = _serial_reference(files, tmp_path, chunksize=2)
    cfg = _cfg(files, tmp_path / "out", processor="processors.testing:SlowJetTrackProcessor",
               options={"delay_s": 0.5}, chunksize=2)
    cfg["executor"]["workers"] = 1
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "runner", "run", str(cfg_path), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "out" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(ckpt.rglob("*.pkl"))) < 3:
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert "interrupted" in err and "Traceback" not in err
    done_before = len(list(ckpt.rglob("*.pkl")))
    assert 3 <= done_before < 15

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["chunks_from_checkpoint"] >= done_before
    _check_accounting(rep)
    from coffea.util import load

    saved = load(str(tmp_path / "out" / "hists.coffea"))
    _same_hists(saved["hists"], ref.hists)
    assert saved["cutflow"] == ref.cutflow


def test_changed_config_needs_overwrite_and_invalidates_checkpoints(good_files, tmp_path):
    cfg = _cfg(good_files, tmp_path / "out")
    cfg["executor"] = {"backend": "serial", "chunksize": 4}
    first = run_config(cfg, progress=False)
    again = run_config(cfg, progress=False)
    assert again.report["chunks_from_checkpoint"] == first.report["chunks"]
    cfg["processor"]["options"] = {"cone_dr": 0.3}
    with pytest.raises(RunError, match="--overwrite"):
        run_config(cfg, progress=False)
    changed = run_config(cfg, progress=False, overwrite=True)
    assert changed.report["chunks_from_checkpoint"] == 0
    assert changed.cutflow["tt"]["tracks_in_cone"] < first.cutflow["tt"]["tracks_in_cone"]


def test_worker_memory_limit_holds_with_demo_chunksize(good_files, tmp_path):
    from distributed import Client, LocalCluster

    from jettracks.cluster import worker_environment

    worker_environment()
    with LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="1.5GB", dashboard_address=":0") as cluster, Client(cluster) as client:
        pids = set(client.run(os.getpid).values())
        result = run_config(_cfg(good_files * 2, tmp_path / "out", chunksize=100_000), client=client, progress=False)
        assert set(client.run(os.getpid).values()) == pids  # the worker was never restarted
    assert result.report["chunks_failed"] == 0
    _check_accounting(result.report)
