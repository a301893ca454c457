"""`python -m runner plan CONFIG`: what a run would read, checked against the files themselves,
nothing processed or written; warnings and problems; exit codes 0 / 1 / 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import uproot
import yaml

from jettracks.engines import chunk_steps
from jettracks.plan import BASE_BYTES, FACTOR, FACTORS, estimate_worker_memory, plan_run


def _config(datasets: dict, out: Path, **executor) -> dict:
    return {
        "name": "plan",
        "datasets": datasets,
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {"cone_dr": 0.5}},
        "executor": {"backend": "local", "workers": 2, "chunksize": 100, **executor},
        "output": {"dir": str(out)},
    }


def _ds(files, fmt):
    return {"files": [str(f) for f in files], "format": fmt, "metadata": {"is_mc": True}}


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JETTRACKS_CACHE_DIR", str(tmp_path / "cache"))


def test_plan_matches_the_files_and_writes_nothing(small_sample, tmp_path, fresh_cache):
    pf, jn = small_sample["pfnano"][:2], small_sample["jetntuple"][:2]
    cfg = _config({"qcd": _ds(pf, "pfnano"), "qcd_jetntuple": _ds(jn, "auto")}, tmp_path / "out")
    plan = plan_run(cfg)
    assert plan.ok and plan.problems == [] and plan.warnings == []
    assert not (tmp_path / "out").exists()
    by_name = {d.name: d for d in plan.datasets}
    assert by_name["qcd_jetntuple"].format == "jetntuple"  # detected
    for d, tree in ((by_name["qcd"], "Events"), (by_name["qcd_jetntuple"], "AK4jets/jetTree")):
        assert d.branches and [f.file for f in d.files] == [str(p) for p in (pf if d.name == "qcd" else jn)]
        comp = uncomp = 0
        for f in d.files:
            with uproot.open(f.file) as h:
                t = h[tree]
                assert f.entries == t.num_entries and f.entries_from == "file"
                assert f.chunks == len(chunk_steps(t.num_entries, 100))
                fc = sum(t[b].compressed_bytes for b in d.branches)
                assert f.compressed_bytes == fc and fc > 0
                comp += fc
                uncomp += sum(t[b].uncompressed_bytes for b in d.branches)
        assert (d.compressed_bytes, d.uncompressed_bytes) == (comp, uncomp)
        assert d.chunks == sum(f.chunks for f in d.files)
        assert d.max_chunk_entries == max(b - a for f in d.files for a, b in chunk_steps(f.entries, 100))
        heaviest = max(f.uncompressed_bytes / f.entries for f in d.files)
        assert d.est_worker_memory_bytes == int(BASE_BYTES + FACTORS[d.format] * heaviest * d.max_chunk_entries)
    assert {"PFCands_d0", "PFCands_d0Err", "Jet_pt"} <= set(by_name["qcd"].branches)
    # the second plan takes the entries from the file-metadata cache the first one filled
    again = plan_run(cfg)
    assert {f.entries_from for d in again.datasets for f in d.files} == {"cache"}
    assert [f.entries for d in again.datasets for f in d.files] == [f.entries for d in plan.datasets for f in d.files]


def test_memory_model():
    assert estimate_worker_memory(0, 10**6) == BASE_BYTES
    assert estimate_worker_memory(1000.0, 2000) == int(BASE_BYTES + FACTOR * 2_000_000)  # a format not measured
    assert estimate_worker_memory(1000.0, 2000, "pfnano") == int(BASE_BYTES + FACTORS["pfnano"] * 2_000_000)
    assert FACTOR == max(FACTORS.values())


def test_chunk_too_large_for_the_worker_memory_is_a_warning(small_sample, tmp_path, fresh_cache):
    cfg = _config({"qcd": _ds(small_sample["pfnano"][:1], "pfnano")}, tmp_path / "out",
                  chunksize=10**6, memory_limit="351MB")
    plan = plan_run(cfg)
    assert plan.ok and plan.worker_memory_bytes == 351_000_000
    (warning,) = plan.warnings
    assert warning.startswith("datasets.qcd: a chunk of 150 entries needs about") and "0.35 GB" in warning
    assert "executor.chunksize to at most" in warning
    fit = int(warning.rsplit(" ", 1)[-1].replace(",", ""))
    d = plan.datasets[0]
    assert estimate_worker_memory(d.uncompressed_bytes_per_entry, fit, "pfnano") <= 351_000_000
    assert estimate_worker_memory(d.uncompressed_bytes_per_entry, fit + 1, "pfnano") > 351_000_000


def test_unreadable_and_wrong_format_files(small_sample, tmp_path, fresh_cache):
    bad = tmp_path / "broken.root"
    bad.write_text("not ROOT")
    pf = small_sample["pfnano"]
    cfg = _config({"qcd": _ds([pf[0], bad], "pfnano")}, tmp_path / "out")
    plan = plan_run(cfg)
    assert not plan.ok
    (problem,) = plan.problems
    assert "broken.root" in problem and "--skip-bad-files" in problem
    assert plan.datasets[0].files[1].error is not None and plan.datasets[0].files[0].error is None
    skipping = plan_run(cfg, skip_bad_files=True)
    assert skipping.ok and any("broken.root" in w for w in skipping.warnings)
    # a JetNtuple file in a PFNano dataset: the run cannot read it (no tree Events); the plan says what it is
    mixed = plan_run(_config({"qcd": _ds([pf[0], small_sample["jetntuple"][0]], "pfnano")}, tmp_path / "o2"))
    assert not mixed.ok
    (problem,) = mixed.problems
    assert "jetntuple_0000.root" in problem and "(it is a jetntuple file)" in problem
    assert any("mixed formats" in w and "1 jetntuple" in w and "1 pfnano" in w for w in mixed.warnings)


def test_mixed_but_readable_formats_warn(small_sample, tmp_path, fresh_cache):
    from jettracks_testing.samples import write_pfnano_like

    src = small_sample["pfnano"][0]
    plain = write_pfnano_like(tmp_path / "nano.root", src, drop=("PFCands_d0Err",))  # detected as nanoaod
    plan = plan_run(_config({"nano": _ds([src, plain], "nanoaod")}, tmp_path / "out"))
    assert plan.ok, plan.problems
    (warning,) = plan.warnings
    assert warning.startswith("datasets.nano: mixed formats (1 nanoaod, 1 pfnano)")


def test_cli_exit_codes(small_sample, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_config({"qcd": _ds(small_sample["pfnano"][:1], "pfnano")}, tmp_path / "o")))
    bad_file = tmp_path / "broken.root"
    bad_file.write_text("x")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_config({"qcd": _ds([small_sample["pfnano"][0], bad_file], "pfnano")}, tmp_path / "o")))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**_config({"qcd": _ds(small_sample["pfnano"][:1], "pfnano")}, tmp_path / "o"),
                                     "executor": {"chunksize": 0}}))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "runner", "plan", *map(str, args)],
                              capture_output=True, text=True, timeout=300)

    ok = run(good)
    assert ok.returncode == 0, ok.stderr
    assert "the run would start" in ok.stdout and "worker memory / chunk" in ok.stdout and ok.stderr == ""
    failing = run(bad)
    assert failing.returncode == 1
    lines = failing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plan error: ") and "broken.root" in lines[0]
    assert run(bad, "--skip-bad-files").returncode == 0
    config_error = run(wrong)
    assert config_error.returncode == 2
    lines = config_error.stderr.strip().splitlines()
    assert len(lines) == 1 and "executor.chunksize" in lines[0]
