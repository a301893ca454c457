"""generate_dataset into a directory that already holds files: reuse, refuse or replace, and say which.

The reference for "which files are there and what is in them" is independent of the
record: uproot reads the files and compares them with ``generate_file`` into a fresh
directory (the generator's per-file contract).
"""

from __future__ import annotations

import json
import subprocess
import sys

import awkward as ak
import pytest
import uproot

from jettracks.generate import GenerateError, generate_dataset, generate_file

TREE = "AK4jets/jetTree"
SMALL = {"pileup_candidates": 20}


def _gen(out, **kw):
    args = {"format": "jetntuple", "n_files": 3, "events_per_file": 12, "seed": 4, **SMALL, **kw}
    return generate_dataset(out, **args)


def _events(path) -> list[int]:
    with uproot.open(path) as f:
        return ak.to_list(f[TREE]["event"].array())


def _jet_pt(path):
    with uproot.open(path) as f:
        return f[TREE]["jetPt"].array()


def _reference(tmp_path, *, seed, n_events, index):
    return generate_file(tmp_path / f"ref_{seed}_{n_events}_{index}.root", format="jetntuple",
                         n_events=n_events, seed=seed, file_index=index, **SMALL)


def _root_files(out):
    return sorted(p.name for p in out.glob("*.root"))


def test_same_parameters_reuse_without_writing(tmp_path):
    out = tmp_path / "ds"
    first = _gen(out)
    assert first.action == "generated" and "generated 3 files" in first.message
    stamps = {p: p.stat().st_mtime_ns for p in first}
    lines = []
    again = _gen(out, log=lines.append)
    assert again == first
    assert again.action == "reused" and lines == [again.message] and "reused 3 files" in again.message
    assert {p: p.stat().st_mtime_ns for p in again} == stamps  # nothing rewritten
    # explicit defaults are the same parameters
    assert _gen(out, compression="zlib").action == "reused"


@pytest.mark.parametrize(
    ("change", "words"),
    [({"seed": 5}, "seed 4 -> 5"), ({"events_per_file": 20}, "events_per_file 12 -> 20"),
     ({"n_files": 2}, "n_files 3 -> 2"), ({"pileup_candidates": 30}, "pileup_candidates 20 -> 30")],
)
def test_other_parameters_refused_in_one_line(tmp_path, change, words):
    out = tmp_path / "ds"
    paths = _gen(out)
    before = {p.name: p.read_bytes() for p in paths}
    with pytest.raises(GenerateError) as err:
        _gen(out, **change)
    msg = str(err.value)
    assert "\n" not in msg and str(out) in msg and words in msg and "overwrite" in msg
    assert {p.name: p.read_bytes() for p in out.glob("*.root")} == before  # untouched


def test_overwrite_replaces_only_generator_files(tmp_path):
    out = tmp_path / "ds"
    _gen(out)
    (out / "mine.root").write_bytes(b"user file")
    (out / "notes.txt").write_text("keep me")
    other = _gen(out, prefix="other", n_files=1)  # another stem in the same directory
    other_bytes = other[0].read_bytes()

    new = _gen(out, seed=5, n_files=2, events_per_file=9, overwrite=True)
    assert new.action == "replaced" and "replaced" in new.message
    assert _root_files(out) == ["jetntuple_0000.root", "jetntuple_0001.root", "mine.root", "other_0000.root"]
    assert (out / "mine.root").read_bytes() == b"user file" and (out / "notes.txt").read_text() == "keep me"
    assert other[0].read_bytes() == other_bytes
    for i, p in enumerate(new):  # content is the new parameters', file by file
        ref = _reference(tmp_path, seed=5, n_events=9, index=i)
        assert _events(p) == _events(ref)
        assert ak.array_equal(_jet_pt(p), _jet_pt(ref))
    # and the record now says so: the same call reuses, the old one is refused
    assert _gen(out, seed=5, n_files=2, events_per_file=9).action == "reused"
    with pytest.raises(GenerateError):
        _gen(out)


def test_more_files_same_parameters_generates_only_the_new_ones(tmp_path):
    out = tmp_path / "ds"
    first = _gen(out, n_files=2)
    stamps = {p: p.stat().st_mtime_ns for p in first}
    more = _gen(out, n_files=4)
    assert more.action == "completed" and "reused 2 and generated 2" in more.message
    assert {p: p.stat().st_mtime_ns for p in first} == stamps
    ref = _reference(tmp_path, seed=4, n_events=12, index=3)
    assert _events(more[3]) == _events(ref)
    # a deleted file (or an interrupted run) is completed the same way
    more[1].unlink()
    again = _gen(out, n_files=4)
    assert again.action == "completed" and more[1].exists()
    assert _events(more[1]) == _events(_reference(tmp_path, seed=4, n_events=12, index=1))


@pytest.mark.parametrize("fmt", ["jetntuple", "pfnano"])
def test_files_from_before_records_reused_only_when_equal(tmp_path, fmt):
    """A directory made before records existed: the same files are adopted, others refused."""
    out = tmp_path / "ds"
    made = [generate_file(out / f"{fmt}_{i:04d}.root", format=fmt, n_events=12, seed=4, file_index=i, **SMALL)
            for i in range(3)]
    stamps = [p.stat().st_mtime_ns for p in made]
    got = _gen(out, format=fmt)
    assert got.action == "reused" and got == made
    assert [p.stat().st_mtime_ns for p in made] == stamps
    assert (out / ".jettracks-generate.json").exists()
    assert _root_files(out) == [p.name for p in made]  # no temporary left
    # the last file of another seed: refused
    other = tmp_path / "other"
    for i in range(3):
        generate_file(other / f"{fmt}_{i:04d}.root", format=fmt, n_events=12, seed=4 if i < 2 else 6,
                      file_index=i, **SMALL)
    with pytest.raises(GenerateError):
        _gen(other, format=fmt)


def test_unrecorded_files_refused_then_replaced(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    old = generate_file(out / "jetntuple_0000.root", format="jetntuple", n_events=5, seed=99, **SMALL)
    with pytest.raises(GenerateError) as err:
        _gen(out)
    assert "no generation record" in str(err.value) and "\n" not in str(err.value)
    assert _events(old) != _events(_reference(tmp_path, seed=4, n_events=12, index=0))
    new = _gen(out, overwrite=True)
    assert new.action == "replaced"
    assert new[0] == old and _events(old) == _events(_reference(tmp_path, seed=4, n_events=12, index=0))
    record = json.loads((out / ".jettracks-generate.json").read_text())
    assert record["datasets"]["jetntuple"]["params"]["seed"] == 4
    assert record["datasets"]["jetntuple"]["files"] == [p.name for p in new]


def test_cli_generate_reuses_and_refuses(tmp_path, project_root):
    out = tmp_path / "cli"
    base = [sys.executable, "-m", "runner", "generate", "--format", "jetntuple", "--files", "2",
            "--events-per-file", "5", "--out", str(out)]
    env_cwd = {"cwd": project_root, "capture_output": True, "text": True, "timeout": 300}
    first = subprocess.run([*base, "--seed", "3"], check=False, **env_cwd)
    assert first.returncode == 0, first.stderr
    again = subprocess.run([*base, "--seed", "3"], check=False, **env_cwd)
    assert again.returncode == 0, again.stderr
    refused = subprocess.run([*base, "--seed", "8"], check=False, **env_cwd)
    assert refused.returncode != 0
    err_lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    assert len(err_lines) == 1 and "seed 3 -> 8" in err_lines[0]
    replaced = subprocess.run([*base, "--seed", "8", "--overwrite"], check=False, **env_cwd)
    assert replaced.returncode == 0, replaced.stderr
    assert _events(out / "jetntuple_0000.root") == _events(
        generate_file(tmp_path / "r.root", format="jetntuple", n_events=5, seed=8, file_index=0))


def test_run_overwrite_regenerates_a_stale_generated_sample(tmp_path):
    """A config's ``generate:`` sample written with other parameters (older code, another
    seed): a run refuses with one line; ``run --overwrite`` generates it again and runs."""
    from jettracks.execution import ConfigError, RunError, run_config

    data = tmp_path / "data"
    keep = data / "notes.txt"
    data.mkdir()
    keep.write_text("mine")
    _gen(data, seed=99, n_files=2, events_per_file=12)  # the stale sample
    stale = [_events(p) for p in sorted(data.glob("jetntuple_*.root"))]
    cfg = {
        "name": "regen",
        "datasets": {"qcd": {
            "files": [str(data / "jetntuple_*.root")], "format": "jetntuple", "metadata": {"is_mc": True},
            "generate": {"process": "qcd", "files": 2, "events_per_file": 12, "seed": 4, "out": str(data),
                         "options": dict(SMALL)},
        }},
        "executor": {"backend": "serial"},
        "output": {"dir": str(tmp_path / "out"), "plots": False, "ml": False},
    }
    with pytest.raises((ConfigError, RunError)) as err:
        run_config(cfg, progress=False)
    assert "\n" not in str(err.value) and "overwrite" in str(err.value)
    result = run_config(cfg, progress=False, overwrite=True)
    assert result.report["status"] == "ok"
    fresh = [_events(p) for p in sorted(data.glob("jetntuple_*.root"))]
    want = [_events(_reference(tmp_path, seed=4, n_events=12, index=i)) for i in range(2)]
    assert fresh == want != stale
    assert keep.read_text() == "mine"
