"""Stale outputs: the ML dataset is exactly this run's chunks; any output-shaping change re-runs.

The manifest lists the parts of this run's chunks (written or resumed), parts of
chunks not in this run are removed, "chunks from checkpoints" counts this run's
chunks only, and every option or code file that shapes an output is part of the
run's fingerprint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jettracks import generate
from jettracks.execution import RunError, run_config
from jettracks.io.rundir import code_files, run_fingerprint


def _cfg(files, out, *, ml_dataset=None, chunksize=60, retries=1, processor=None) -> dict:
    cfg = {
        "name": "stale",
        "datasets": {"qcd": {"files": [str(f) for f in files], "format": "pfnano"}},
        "executor": {"backend": "serial", "chunksize": chunksize, "retries": retries},
        "output": {"dir": str(out), "plots": False, "ml_dataset": ml_dataset or {}},
    }
    if processor:
        cfg["processor"] = processor
    return cfg


def _selected_jets(report) -> int:
    return sum(flow["selected_jets"] for flow in report["cutflow"].values())


def _ml_dir_rows(ml_dir: Path) -> int:
    """Rows of every part a loader globbing the directory would read."""
    return sum(pq.read_metadata(p).num_rows for p in ml_dir.glob("part-*.parquet"))


@pytest.fixture
def files(tmp_path):
    return generate.generate_dataset(tmp_path / "in", format="pfnano", n_files=3, events_per_file=120, seed=21)


def test_rerun_with_fewer_files_keeps_only_its_parts(files, tmp_path):
    out = tmp_path / "run"
    full = run_config(_cfg(files, out), progress=False)
    assert full.report["ml_dataset"]["rows"] == _selected_jets(full.report)
    fewer = run_config(_cfg(files, out), progress=False, max_files=1)
    rep = fewer.report
    assert rep["entries"]["expected"] == 120
    assert rep["ml_dataset"]["rows"] == _selected_jets(rep) == _ml_dir_rows(out / "ml")
    assert len(fewer.ml_dataset()) == _selected_jets(rep)
    # Every chunk of this run came from the first run's checkpoints, and only those count.
    assert rep["chunks_from_checkpoint"] == rep["chunks"] == 2
    assert {f["file"] for f in rep["files"]} == {str(files[0])}


def test_replaced_input_file_drops_the_old_parts(files, tmp_path):
    out = tmp_path / "run"
    run_config(_cfg(files, out), progress=False)
    # The same name, other content (another seed: another UUID, other jets).
    other = generate.generate_dataset(tmp_path / "other", format="pfnano", n_files=1, events_per_file=120, seed=99)
    shutil.copyfile(other[0], files[0])
    again = run_config(_cfg(files, out), progress=False)
    ref = run_config(_cfg(files, tmp_path / "ref"), progress=False)
    assert again.report["cutflow"] == ref.report["cutflow"]
    assert again.report["ml_dataset"]["rows"] == ref.report["ml_dataset"]["rows"] == _ml_dir_rows(out / "ml")
    assert again.report["chunks_from_checkpoint"] == 4  # the two unchanged files


@pytest.mark.parametrize(
    "change",
    [{"pad_tracks": 8}, {"pad_tracks": 8, "hdf5": True}],
    ids=["pad_tracks", "hdf5"],
)
def test_changing_an_ml_option_needs_overwrite_and_delivers_it(files, tmp_path, change):
    out = tmp_path / "run"
    run_config(_cfg(files[:1], out), progress=False)
    with pytest.raises(RunError, match="different config"):
        run_config(_cfg(files[:1], out, ml_dataset=change), progress=False)
    res = run_config(_cfg(files[:1], out, ml_dataset=change), progress=False, overwrite=True)
    assert res.report["chunks_from_checkpoint"] == 0
    names = set(pq.read_schema(next((out / "ml").glob("part-*.parquet"))).names)
    assert "pad_mask" in names and any(n.startswith("pad_track_") for n in names)
    assert (res.report["ml_dataset"]["hdf5"] is not None) == bool(change.get("hdf5"))
    assert (out / "ml" / "jets_padded.h5").exists() == bool(change.get("hdf5"))
    # Back to no padding: the padded columns and the .h5 file are gone, not claimed.
    back = run_config(_cfg(files[:1], out), progress=False, overwrite=True)
    assert back.report["ml_dataset"]["hdf5"] is None and not (out / "ml" / "jets_padded.h5").exists()
    assert "pad_mask" not in pq.read_schema(next((out / "ml").glob("part-*.parquet"))).names


def test_fingerprint_covers_every_module_and_base_classes(tmp_path):
    import jettracks
    from processors.jet_tracks import JetTrackProcessor

    covered = set(code_files(JetTrackProcessor))
    for module in Path(jettracks.__file__).parent.rglob("*.py"):
        assert module.resolve() in covered, module
    # A user's processor in a package of its own: its base class lives in another module.
    pkg = tmp_path / "myana"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "base.py").write_text(textwrap.dedent("""
        from processors.jet_tracks import JetTrackProcessor
        SCALE = 1.0
        class Base(JetTrackProcessor):
            pass
    """))
    (pkg / "selection.py").write_text("from myana.base import Base\nclass Mine(Base):\n    pass\n")
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        from myana.selection import Mine
        from jettracks.io.rundir import run_fingerprint
        print(run_fingerprint(Mine, {{"a": 1}}, {{}}))
    """)

    def fingerprint() -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()

    before = fingerprint()
    assert fingerprint() == before  # stable
    (pkg / "base.py").write_text((pkg / "base.py").read_text().replace("SCALE = 1.0", "SCALE = 2.0"))
    assert fingerprint() != before
    assert run_fingerprint(JetTrackProcessor, {"a": 1}, {}) != run_fingerprint(JetTrackProcessor, {"a": 2}, {})
    assert run_fingerprint(JetTrackProcessor, {}, {"uproot": "5.7"}) != run_fingerprint(
        JetTrackProcessor, {}, {"uproot": "5.8"})


def test_checkpoint_without_its_ml_part_is_redone(files, tmp_path):
    out = tmp_path / "run"
    first = run_config(_cfg(files[:1], out), progress=False)
    lost = sorted((out / "ml").glob("part-*.parquet"))[0]
    lost.unlink()
    again = run_config(_cfg(files[:1], out), progress=False)
    assert lost.exists()
    assert again.report["ml_dataset"]["rows"] == first.report["ml_dataset"]["rows"] == _ml_dir_rows(out / "ml")


@pytest.mark.parametrize("backend", ["serial", "local"])
@pytest.mark.parametrize("kind,attempts", [("permanent", 1), ("transient", 3)])
def test_permanent_errors_are_not_retried(files, tmp_path, backend, kind, attempts):
    log = tmp_path / "attempts.log"
    cfg = _cfg(files[:1], tmp_path / "run", chunksize=200, retries=2,
               processor={"class": "processors.testing:FailingProcessor",
                          "options": {"kind": kind, "attempts_log": str(log)}})
    cfg["executor"]["backend"] = backend
    if backend == "local":
        cfg["executor"]["workers"] = 1
    cfg["output"]["ml"] = False
    with pytest.raises(RunError) as err:
        run_config(cfg, progress=False)
    assert "\n" not in str(err.value)
    lines = log.read_text().splitlines()
    assert len(lines) == attempts, lines  # one chunk: 1 attempt, or 1 + 2 retries
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["status"] == "failed" and rep["error"] == str(err.value)
    assert rep["entries"]["skipped"] == rep["entries"]["expected"] == 120


def test_unreadable_file_is_reported_as_unreadable(files, tmp_path):
    bad = tmp_path / "garbage.root"
    bad.write_bytes(b"not a root file at all" * 100)
    with pytest.raises(RunError) as err:
        run_config(_cfg([*files[:1], bad], tmp_path / "run"), progress=False)
    assert f"{bad} unreadable:" in str(err.value) and "entries 0-0" not in str(err.value)


def test_report_of_a_failed_rerun_does_not_keep_the_earlier_ok(files, tmp_path):
    out = tmp_path / "run"
    assert run_config(_cfg(files[:1], out), progress=False).report["status"] == "ok"
    files[0].write_bytes(b"\0" * 1000)  # the only file is now unreadable: the run stops before processing
    with pytest.raises(RunError) as err:
        run_config(_cfg(files[:1], out), progress=False)
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "failed" and rep["error"] == str(err.value)


def test_generated_dataset_with_other_parameters_is_refused(tmp_path):
    from jettracks.config import ConfigError

    def cfg(seed):
        return {
            "datasets": {"qcd": {"files": [str(tmp_path / "gen" / "pfnano_*.root")], "format": "pfnano",
                                 "generate": {"files": 1, "events_per_file": 40, "seed": seed}}},
            "executor": {"backend": "serial"},
            "output": {"dir": str(tmp_path / f"run{seed}"), "plots": False},
        }

    first = run_config(cfg(1), progress=False)
    with pytest.raises(ConfigError, match=r"datasets\.qcd\.generate: .*seed 1 -> 2"):
        run_config(cfg(2), progress=False)
    assert run_config(cfg(1), progress=False, output_dir=tmp_path / "again").report["cutflow"] == first.report["cutflow"]
