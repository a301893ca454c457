"""Overwrite safety: jettracks deletes only what it wrote, and one writer at a time.

A run directory carries the marker ``.jettracks-run.json``; a non-empty directory
without it is refused (``--overwrite`` or not); ``--overwrite`` removes only
jettracks' own outputs; a lock keeps a second run out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jettracks.config import ConfigError
from jettracks.execution import RunError, run_config
from jettracks.io.rundir import LOCK, MARKER, RunDirectory, RunDirError

PROJECT = Path(__file__).resolve().parents[1]


def _cfg(files, out, **executor) -> dict:
    return {
        "name": "overwrite",
        "datasets": {"qcd": {"files": [str(f) for f in files], "format": "pfnano"}},
        "executor": {"backend": "serial", "chunksize": 100, **executor},
        "output": {"dir": str(out), "plots": False},
    }


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _foreign_dir(path: Path) -> dict[str, bytes]:
    (path / "src").mkdir(parents=True)
    (path / "src" / "analysis.py").write_text("print('mine')\n")
    (path / "notes.txt").write_text("my notes\n")
    return _tree(path)


def _error_lines(stderr: str) -> list[str]:
    """The error lines of a CLI run: exactly one is promised, and no traceback or warning."""
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr
    return [ln for ln in stderr.splitlines() if ln.startswith(("run error:", "config error:"))]


def _cli(args, cwd, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("overwrite", [False, True])
def test_foreign_directory_is_refused_and_kept(small_sample, tmp_path, overwrite):
    out = tmp_path / "project"
    before = _foreign_dir(out)
    with pytest.raises(RunError) as err:
        run_config(_cfg(small_sample["pfnano"][:1], out), progress=False, overwrite=overwrite)
    msg = str(err.value)
    assert "\n" not in msg and str(out) in msg and "not written by jettracks" in msg
    assert "--overwrite" not in msg  # the refusal must not suggest the flag that would wipe it
    assert _tree(out) == before


def test_empty_output_path_is_a_config_error(small_sample, tmp_path):
    cwd = tmp_path / "cwd"
    before = _foreign_dir(cwd)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_cfg(small_sample["pfnano"][:1], tmp_path / "unused")))
    res = _cli(["run", str(cfg_path), "--output", "", "--overwrite", "--no-progress"], cwd=cwd)
    assert res.returncode == 2, res.stderr
    lines = _error_lines(res.stderr)
    assert len(lines) == 1 and "output.dir" in lines[0] and "empty" in lines[0], res.stderr
    assert _tree(cwd) == before
    with pytest.raises(ConfigError, match="output.dir"):
        run_config(_cfg(small_sample["pfnano"][:1], "  "), progress=False)


def test_overwrite_removes_only_own_outputs(small_sample, tmp_path):
    out = tmp_path / "run"
    files = small_sample["pfnano"][:2]
    first = run_config(_cfg(files, out, chunksize=50), progress=False)
    assert (out / MARKER).is_file() and first.report["ml_parts"] > 1
    # The user's own files inside the run directory and inside its sub-directories.
    (out / "notes.txt").write_text("keep me\n")
    (out / "ml" / "my_selection.csv").write_text("a,b\n")
    (out / "plots").mkdir(exist_ok=True)
    (out / "plots" / "talk.pdf").write_bytes(b"%PDF-1.4 mine")
    (out / "ml" / "part-qcd-stale-from-an-older-tool.parquet").write_bytes(b"jettracks-named")
    (out / "ml" / "part-qcd-left-by-a-killed-run.arrow").write_bytes(b"jettracks-named")  # a chunk's part
    second = run_config(_cfg(files, out, chunksize=100), progress=False, overwrite=True)
    assert (out / "notes.txt").read_text() == "keep me\n"
    assert (out / "ml" / "my_selection.csv").read_text() == "a,b\n"
    assert (out / "plots" / "talk.pdf").read_bytes() == b"%PDF-1.4 mine"
    # jettracks' own outputs were replaced: exactly the new run's parts remain.
    parts = sorted(p.name for p in (out / "ml").glob("part-*.parquet"))
    manifest = json.loads((out / "ml" / "manifest.json").read_text())
    # (the per-chunk parts are compacted at the end of the run: the manifest lists the files)
    assert parts == manifest["part_files"] and len(parts) == second.report["ml_dataset"]["parts"]
    assert not list((out / "ml").glob("part-*.arrow"))
    assert manifest["rows"] == second.report["ml_dataset"]["rows"] > 0
    assert second.report["chunks_from_checkpoint"] == 0
    assert not list((out / "checkpoints").glob(f"{first.report['fingerprint']}/**/*.pkl"))


@pytest.mark.parametrize("kind", ["file", "under_a_file"])
def test_unusable_output_path_is_one_line(small_sample, tmp_path, kind):
    target = tmp_path / "taken"
    target.write_text("a file\n")
    out = target if kind == "file" else target / "run"
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_cfg(small_sample["pfnano"][:1], out)))
    res = _cli(["run", str(cfg_path), "--no-progress"], cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    lines = _error_lines(res.stderr)
    assert len(lines) == 1 and str(out) in lines[0], res.stderr
    assert target.read_text() == "a file\n"


@pytest.fixture
def tmpfs(small_tmpfs):
    """A 4 MiB tmpfs (needs root)."""
    return small_tmpfs("4m")


def test_read_only_output_directory_is_one_line(small_sample, tmp_path, tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    out = tmpfs / "run"
    with pytest.raises(RunError) as err:
        run_config(_cfg(small_sample["pfnano"][:1], out), progress=False)
    assert "\n" not in str(err.value) and str(out) in str(err.value) and "Read-only" in str(err.value)


def test_full_disk_fails_in_one_line_then_resumes(small_sample, tmp_path, tmpfs):
    files = small_sample["pfnano"][:2]
    ref = run_config(_cfg(files, tmp_path / "ref", chunksize=50), progress=False)
    # Fill the tmpfs but for a little room: the run fails while writing outputs.
    filler = tmpfs / "filler.bin"
    out = tmpfs / "run"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    filler.write_bytes(b"\0" * (os.path.getsize(filler) - 200_000))
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_cfg(files, out, chunksize=50)))
    res = _cli(["run", str(cfg_path), "--no-progress"], cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    lines = _error_lines(res.stderr)
    assert len(lines) == 1 and "No space left on device" in lines[0], res.stderr
    report = out / "report.json"
    if report.exists():  # written when there was room: it must not claim success
        assert json.loads(report.read_text())["status"] == "failed"
    filler.unlink()
    res = _cli(["run", str(cfg_path), "--no-progress"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rep = json.loads(report.read_text())
    assert rep["status"] == "ok" and rep["cutflow"] == ref.report["cutflow"]
    assert rep["ml_dataset"]["rows"] == ref.report["ml_dataset"]["rows"]


def test_second_writer_is_refused_while_a_run_holds_the_directory(small_sample, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(small_sample["pfnano"][:2], out, chunksize=30)
    cfg["processor"] = {"class": "processors.testing:SlowJetTrackProcessor", "options": {"delay_s": 0.4}}
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    first = subprocess.Popen(
        [sys.executable, "-m", "runner", "run", str(cfg_path), "--no-progress"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((out / "checkpoints").rglob("*.pkl")):
            time.sleep(0.1)
        assert first.poll() is None, first.communicate()
        second = _cli(["run", str(cfg_path), "--overwrite", "--no-progress"], cwd=tmp_path)
        assert second.returncode == 1
        lines = _error_lines(second.stderr)
        assert len(lines) == 1 and "in use by another jettracks run" in lines[0] and f"pid {first.pid}" in lines[0]
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        if first.poll() is None:
            first.kill()
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "ok" and rep["entries"]["processed"] == rep["entries"]["expected"]
    manifest = json.loads((out / "ml" / "manifest.json").read_text())
    assert rep["ml_dataset"]["parts"] == len(manifest["part_files"]) > 0
    assert rep["ml_dataset"]["rows"] == manifest["rows"] > 0


def test_lock_of_a_dead_run_is_not_stale(small_sample, tmp_path):
    out = tmp_path / "run"
    run_config(_cfg(small_sample["pfnano"][:1], out), progress=False)
    # A lock file left by a killed process (no flock held): the next run proceeds.
    (out / LOCK).write_text("pid 999999 on elsewhere\n")
    again = run_config(_cfg(small_sample["pfnano"][:1], out), progress=False)
    assert again.report["status"] == "ok"
    # While this process holds it, the directory is refused.
    holder = RunDirectory(out, again.report["fingerprint"])
    holder.claim()
    try:
        with pytest.raises(RunDirError, match="in use"):
            RunDirectory(out, again.report["fingerprint"]).claim()
    finally:
        holder.release()
    reclaimed = RunDirectory(out, again.report["fingerprint"])  # released: usable again
    assert reclaimed.claim().resumed
    reclaimed.release()
