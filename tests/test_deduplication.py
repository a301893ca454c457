"""One file is processed once: repeats within a dataset are dropped (by resolved path
before anything is opened, by file UUID after the metadata step) and listed in
``report.json["deduplicated"]``; a file in two datasets stops the run before any
chunk is processed, with one line naming both datasets."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from jettracks.config import ConfigError
from jettracks.execution import RunError, run_config

EVENTS = 100


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> list[Path]:
    """Two small PFNano files (distinct UUIDs)."""
    from jettracks.generate import generate_dataset

    out = tmp_path_factory.mktemp("dedup-sample")
    return generate_dataset(out, format="pfnano", n_files=2, events_per_file=EVENTS, seed=909,
                            pileup_candidates=30, compression="zlib")


@pytest.fixture
def data(sample, tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    shutil.copyfile(sample[0], d / "a.root")
    shutil.copyfile(sample[1], d / "b.root")
    return d


def _cfg(datasets: dict[str, list[str]], out: Path) -> dict:
    return {
        "name": "dedup",
        "datasets": {
            name: {"files": files, "format": "pfnano", "metadata": {"is_mc": True}}
            for name, files in datasets.items()
        },
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {}},
        "executor": {"backend": "serial", "chunksize": 100_000},
        "output": {"dir": str(out), "plots": False},
    }


def _console() -> Console:
    return Console(file=io.StringIO(), width=400, color_system=None)


@pytest.fixture(scope="module")
def reference_rows(sample, tmp_path_factory) -> int:
    """ML rows of a run over the two files, each listed once."""
    out = tmp_path_factory.mktemp("dedup-ref")
    res = run_config(_cfg({"qcd": [str(p) for p in sample]}, out / "run"), progress=False)
    assert res.report["entries"]["processed"] == 2 * EVENTS
    return res.report["ml_dataset"]["rows"]


@pytest.mark.parametrize("how", ["dot_slash", "symlink", "relative_and_absolute"])
def test_same_file_two_names_is_processed_once(how, data, tmp_path, monkeypatch, reference_rows):
    monkeypatch.chdir(data)  # a config given as a mapping: relative paths against the cwd
    if how == "dot_slash":
        files, first, second = ["./a.root", "a.root", "b.root"], data / "a.root", data / "a.root"
    elif how == "symlink":
        (data / "link.root").symlink_to(data / "a.root")
        files, first, second = [str(data / "a.root"), str(data / "link.root"), "b.root"], data / "a.root", data / "link.root"
    else:
        files, first, second = ["a.root", str(data / "a.root"), "b.root"], data / "a.root", data / "a.root"
    console = _console()
    res = run_config(_cfg({"qcd": files}, tmp_path / "out"), progress=False, console=console)
    rep = res.report
    assert rep["status"] == "ok"
    assert rep["entries"] == {**rep["entries"], "expected": 2 * EVENTS, "processed": 2 * EVENTS}
    assert rep["ml_dataset"]["rows"] == reference_rows
    assert [f["file"] for f in rep["files"]] == [str(first), str(data / "b.root")]
    assert rep["deduplicated"] == [
        {"dataset": "qcd", "file": str(second), "same_as": str(first), "by": "path"}
    ]
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["deduplicated"] == rep["deduplicated"]
    notes = [ln for ln in console.file.getvalue().splitlines() if "same file as" in ln]
    assert len(notes) == 1 and str(second) in notes[0]


def test_copy_with_the_same_uuid_is_processed_once(data, tmp_path, reference_rows):
    shutil.copyfile(data / "a.root", data / "c.root")  # byte copy: same file UUID
    files = [str(data / n) for n in ("a.root", "b.root", "c.root")]
    res = run_config(_cfg({"qcd": files}, tmp_path / "out"), progress=False, console=_console())
    rep = res.report
    assert rep["status"] == "ok"
    assert rep["entries"]["processed"] == rep["entries"]["expected"] == 2 * EVENTS
    assert rep["ml_dataset"]["rows"] == reference_rows
    assert rep["deduplicated"] == [
        {"dataset": "qcd", "file": files[2], "same_as": files[0], "by": "uuid"}
    ]
    assert [f["file"] for f in rep["files"]] == files[:2]


@pytest.mark.service
def test_local_path_and_root_url_of_one_file_are_processed_once(data, tmp_path, xrootd_server, reference_rows):
    served = Path(xrootd_server.root_dir) / "dedup"
    served.mkdir(exist_ok=True)
    served.chmod(0o755)  # the server runs as `nobody`
    shutil.copyfile(data / "a.root", served / "a.root")
    (served / "a.root").chmod(0o644)
    url = xrootd_server.url_for("dedup/a.root")
    files = [url, str(data / "a.root"), str(data / "b.root")]
    try:
        res = run_config(_cfg({"qcd": files}, tmp_path / "out"), progress=False, console=_console())
    finally:
        from jettracks.io.files import configure_xrootd_client

        configure_xrootd_client(connection_retry=1, stream_error_window=0)  # the fixture's settings
    rep = res.report
    assert rep["status"] == "ok" and rep["entries"]["processed"] == 2 * EVENTS
    assert rep["ml_dataset"]["rows"] == reference_rows
    assert rep["deduplicated"] == [{"dataset": "qcd", "file": files[1], "same_as": url, "by": "uuid"}]


def _nothing_processed(out: Path) -> None:
    report = out / "report.json"
    if report.exists():  # a report may say the run failed; never that it was ok
        assert json.loads(report.read_text())["status"] == "failed"
    assert not list(out.glob("ml/part-*"))
    assert not list(out.glob("checkpoints/**/*.pkl"))


def test_file_in_two_datasets_by_path_is_a_config_error(data, tmp_path, monkeypatch):
    monkeypatch.chdir(data)
    cfg = _cfg({"A": [str(data / "a.root")], "B": ["b.root", "./a.root"]}, tmp_path / "out")
    with pytest.raises(ConfigError) as err:
        run_config(cfg, progress=False, console=_console())
    assert str(err.value) == f"datasets.B.files: {data / 'a.root'} is also in dataset A"
    _nothing_processed(tmp_path / "out")


def test_file_in_two_datasets_by_uuid_stops_before_processing(data, tmp_path):
    shutil.copyfile(data / "a.root", data / "c.root")
    cfg = _cfg({"A": [str(data / "a.root"), str(data / "b.root")], "B": [str(data / "c.root")]}, tmp_path / "out")
    with pytest.raises(RunError) as err:
        run_config(cfg, progress=False, console=_console())
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"datasets.B.files: {data / 'c.root'} is also in dataset A")
    assert str(data / "a.root") in msg
    _nothing_processed(tmp_path / "out")


def test_cli_exits_2_with_one_line_for_a_file_in_two_datasets(data, tmp_path):
    cfg = _cfg({"A": ["data/a.root"], "B": [str(data / "a.root")]}, tmp_path / "out")
    path = tmp_path / "run.yaml"  # relative paths in a YAML config: against its directory
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "runner", "run", str(path), "--no-progress"],
                          check=False, capture_output=True, text=True, timeout=300, cwd="/")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"datasets.B.files: {data / 'a.root'} is also in dataset A" in lines[0]
    _nothing_processed(tmp_path / "out")
