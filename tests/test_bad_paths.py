"""Paths that used to break runs: relative paths (resolved against the config file's
directory and sent to the workers absolute), ``files_from`` index files (found beside
the config, comments stripped), a bad first file (the format comes from a readable
one; the bad one is a bad file like any other) and an unwritable metadata cache (a
warning, not a failure)."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from jettracks.config import load_config, parse_config
from jettracks.execution import RunError, resolve_files, run_config
from jettracks.io import files as files_mod

PROJECT = Path(__file__).resolve().parents[1]
CONFIGS = PROJECT / "configs"
EVENTS = 100


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> list[Path]:
    """Two small PFNano files."""
    from jettracks.generate import generate_dataset

    out = tmp_path_factory.mktemp("bad-paths-sample")
    return generate_dataset(out, format="pfnano", n_files=2, events_per_file=EVENTS, seed=4242,
                            pileup_candidates=30, compression="zlib")


def _cfg(files: list[str], out: Path, **dataset) -> dict:
    return {
        "name": "paths",
        "datasets": {"qcd": {"files": files, "format": "pfnano", "metadata": {"is_mc": True}, **dataset}},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {}},
        "executor": {"backend": "serial", "chunksize": 100_000},
        "output": {"dir": str(out), "plots": False, "ml": False},
    }


def _console() -> Console:
    return Console(file=io.StringIO(), width=400, color_system=None)


def _copy_sample(sample, d: Path, names=("good_1.root", "good_2.root")) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for src, name in zip(sample, names):
        shutil.copyfile(src, d / name)
        out.append(d / name)
    return out


# -- task: relative paths --------------------------------------------------------------------


def test_relative_paths_reach_workers_in_another_directory_absolute(sample, tmp_path, monkeypatch, local_client):
    cfg_dir = tmp_path / "cfg"
    good = _copy_sample(sample, cfg_dir / "sample")
    path = cfg_dir / "run.yaml"
    cfg = _cfg(["sample/*.root"], tmp_path / "out")
    cfg["executor"]["backend"] = "local"
    path.write_text(yaml.safe_dump(cfg))
    monkeypatch.chdir(cfg_dir)
    assert str(cfg_dir) not in set(local_client.run(os.getcwd).values())  # the workers run elsewhere
    console = _console()
    res = run_config(path, client=local_client, progress=False, console=console)
    rep = res.report
    assert rep["status"] == "ok"
    assert rep["entries"]["processed"] == rep["entries"]["expected"] == 2 * EVENTS
    assert [f["file"] for f in rep["files"]] == [str(p) for p in good]
    said = console.file.getvalue()
    assert f"datasets.qcd: 2 files, first {good[0]}" in said


def test_yaml_config_paths_are_relative_to_its_directory_not_the_cwd(sample, tmp_path, monkeypatch):
    cfg_dir, elsewhere = tmp_path / "cfg", tmp_path / "elsewhere"
    good = _copy_sample(sample, cfg_dir / "sample")
    _copy_sample(sample, elsewhere / "sample", names=("decoy.root",))  # what the cwd would give
    path = cfg_dir / "run.yaml"
    path.write_text(yaml.safe_dump(_cfg(["sample/*.root"], tmp_path / "out")))
    monkeypatch.chdir(elsewhere)
    cfg = load_config("../cfg/run.yaml")  # base_dir itself relative to the cwd
    assert resolve_files("qcd", cfg.datasets["qcd"], base_dir=cfg.base_dir) == [str(p) for p in good]


def test_mapping_config_paths_are_relative_to_the_cwd(sample, tmp_path, monkeypatch):
    good = _copy_sample(sample, tmp_path / "sample")
    monkeypatch.chdir(tmp_path)
    cfg = parse_config(_cfg(["./sample/good_1.root", "sample/../sample/good_2.root"], tmp_path / "out"))
    assert resolve_files("qcd", cfg.datasets["qcd"], base_dir=cfg.base_dir) == [str(p) for p in good]


def test_demo_config_uses_the_project_data_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(CONFIGS / "demo.yaml")
    for name, ds in cfg.datasets.items():
        pattern = files_mod.resolve_local(ds.files[0], cfg.base_dir)
        assert Path(pattern).parent == PROJECT / "data" / "demo", name
        assert files_mod.resolve_local(ds.generate.out, cfg.base_dir) == str(PROJECT / "data" / "demo")


@pytest.mark.parametrize("path", sorted((CONFIGS / "clusters").glob("*.yaml")), ids=lambda p: p.name)
def test_cluster_configs_use_the_project_demo_data(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path)
    for ds in cfg.datasets.values():
        for pattern in ds.files:
            assert Path(files_mod.resolve_local(pattern, cfg.base_dir)).parent == PROJECT / "data" / "demo"



def test_inspect_prints_the_absolute_path(sample, tmp_path, monkeypatch):
    from jettracks.inspect import inspect_file

    (good, _) = _copy_sample(sample, tmp_path / "data")
    monkeypatch.chdir(tmp_path / "data")
    console = _console()
    assert inspect_file("./good_1.root", console=console) == 0
    assert f"file: {good}" in console.file.getvalue()

# -- task: files_from ------------------------------------------------------------------------


def test_files_from_is_read_beside_the_config_with_comments_stripped(tmp_path, monkeypatch):
    cfg_dir, elsewhere = tmp_path / "cfg", tmp_path / "elsewhere"
    cfg_dir.mkdir()
    elsewhere.mkdir()
    (cfg_dir / "index.txt").write_text(
        "# an index file\n"
        "a.root   # trailing comment\n"
        "\n"
        "   # indented comment line\n"
        "root://host.example//store/x#y.root\n"
        "sub/b.root\t# after a tab\n"
    )
    (elsewhere / "index.txt").write_text("decoy.root\n")  # same name in the cwd: not used
    path = cfg_dir / "run.yaml"
    path.write_text(yaml.safe_dump(_cfg([], tmp_path / "out", files_from="index.txt")))
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path)
    assert resolve_files("qcd", cfg.datasets["qcd"], base_dir=cfg.base_dir) == [
        str(cfg_dir / "a.root"),
        "root://host.example//store/x#y.root",
        str(cfg_dir / "sub" / "b.root"),
    ]


def test_missing_files_from_names_the_key_and_the_path_beside_the_config(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "index.txt").write_text("decoy.root\n")
    path = tmp_path / "cfg" / "run.yaml"
    path.write_text(yaml.safe_dump(_cfg([], tmp_path / "out", files_from="index.txt")))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path)
    with pytest.raises(RunError) as err:
        resolve_files("qcd", cfg.datasets["qcd"], base_dir=cfg.base_dir)
    assert str(err.value).startswith(f"datasets.qcd.files_from: cannot read {tmp_path / 'cfg' / 'index.txt'}")



def test_files_from_listing_only_comments_is_one_line(tmp_path):
    (tmp_path / "index.txt").write_text("# nothing yet\n   # still nothing\n")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(_cfg([], tmp_path / "out", files_from="index.txt")))
    with pytest.raises(RunError, match=r"^datasets\.qcd\.files_from: .*index\.txt lists no file$"):
        run_config(path, progress=False, console=_console())

# -- task: a bad first file ------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bad_first(kind: str, d: Path) -> tuple[list[str], str]:
    """(the dataset's `files`, the bad file's name): the bad file comes first."""
    if kind == "random":
        (d / "a_bad.root").write_bytes(os.urandom(50_000))
    elif kind == "zero_bytes":
        (d / "a_bad.root").write_bytes(b"")
    if kind in ("random", "zero_bytes"):
        return [str(d / "*.root")], str(d / "a_bad.root")  # first in sort order
    if kind == "missing":  # a glob does not match a missing file: named explicitly
        bad = str(d / "a_missing.root")
    else:  # unreachable server
        bad = f"root://127.0.0.1:{_closed_port()}//store/a_bad.root"
    return [bad, str(d / "good_*.root")], bad


KINDS = ["random", "zero_bytes", "missing", "unreachable_remote"]


@pytest.mark.parametrize("kind", KINDS)
def test_bad_first_file_is_skipped_with_skip_bad_files(kind, sample, tmp_path):
    good = _copy_sample(sample, tmp_path / "data")
    files, bad = _bad_first(kind, tmp_path / "data")
    res = run_config(_cfg(files, tmp_path / "out"), progress=False, skip_bad_files=True, console=_console())
    rep = res.report
    assert rep["status"] == "partial"
    assert [f["file"] for f in rep["files"]] == [bad, *map(str, good)]
    entry = rep["files"][0]
    assert entry["entries_processed"] == 0 and entry["skipped"] and entry["skipped"][0]["reason"]
    assert rep["entries"]["processed"] == 2 * EVENTS
    assert rep["entries"]["files_unreadable"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_bad_first_file_stops_a_strict_run_after_the_others(kind, sample, tmp_path):
    _copy_sample(sample, tmp_path / "data")
    files, bad = _bad_first(kind, tmp_path / "data")
    with pytest.raises(RunError) as err:
        run_config(_cfg(files, tmp_path / "out"), progress=False, console=_console())
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(bad)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["status"] == "failed"
    assert rep["entries"]["processed"] == 2 * EVENTS  # every good chunk ran first


@pytest.mark.parametrize("skip", [False, True])
def test_no_readable_file_is_one_line_naming_the_first(skip, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "a.root").write_bytes(os.urandom(50_000))
    (d / "b.root").write_bytes(b"")
    with pytest.raises(RunError) as err:
        run_config(_cfg([str(d / "*.root"), str(d / "c.root")], tmp_path / "out"),
                   progress=False, skip_bad_files=skip, console=_console())
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{d / 'a.root'}: ")
    assert "no file of dataset qcd is readable" in msg


# -- task: an unwritable metadata cache ------------------------------------------------------


@pytest.mark.parametrize("where", ["JETTRACKS_CACHE_DIR", "HOME"])
def test_unwritable_cache_warns_once_and_runs(where, sample, tmp_path, monkeypatch):
    good = _copy_sample(sample, tmp_path / "data")
    blocker = tmp_path / "file.txt"
    blocker.write_text("a regular file: nothing can be created below it\n")
    if where == "HOME":
        for var in ("JETTRACKS_CACHE_DIR", "XDG_CACHE_HOME"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HOME", str(blocker / "home"))
        cache_file = blocker / "home" / ".cache" / "jettracks" / "entries.json"
    else:
        monkeypatch.setenv("JETTRACKS_CACHE_DIR", str(blocker / "cache"))
        cache_file = blocker / "cache" / "entries.json"
    console = _console()
    res = run_config(_cfg([str(p) for p in good], tmp_path / "out"), progress=False, console=console)
    assert res.report["status"] == "ok"
    assert res.report["entries"]["processed"] == 2 * EVENTS
    warnings = [ln for ln in console.file.getvalue().splitlines() if "warning" in ln.lower()]
    assert len(warnings) == 1 and str(cache_file) in warnings[0], warnings
    assert "running without it" in warnings[0]
