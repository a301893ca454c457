"""Event counts of per-jet formats (JetNtuple: one tree entry per jet) do not depend on chunking.

The reference is independent of the processor: uproot reads ``run``/``lumi``/``event``
of every entry and numpy counts the distinct triples per file.
"""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from jettracks.execution import run_config
from processors.jet_tracks import count_event_starts

TREE = "AK4jets/jetTree"


def _distinct_events(paths) -> int:
    """Brute force: distinct (run, lumi, event) per file, summed over files."""
    total = 0
    for p in paths:
        with uproot.open(p) as f:
            ids = f[TREE].arrays(["run", "lumi", "event"], library="np")
        triples = np.stack(
            [ids["run"].astype(np.int64), ids["lumi"].astype(np.int64), ids["event"].astype(np.int64)],
            axis=1,
        )
        total += len(np.unique(triples, axis=0))
    return total


def _config(paths, out, chunksize):
    return {
        "name": "count",
        "datasets": {"jt": {"files": [str(p) for p in paths], "format": "jetntuple",
                            "metadata": {"is_mc": True}}},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {}},
        "executor": {"backend": "serial", "chunksize": chunksize},
        "output": {"dir": str(out), "plots": False, "ml": False},
    }


@pytest.fixture(scope="module")
def jetntuple_sample(tmp_path_factory):
    from jettracks.generate import generate_dataset

    out = tmp_path_factory.mktemp("jt")
    return generate_dataset(out, format="jetntuple", n_files=2, events_per_file=45, seed=11,
                            pileup_candidates=40)


@pytest.mark.parametrize("chunksize", [7, 13, 100_000])
def test_jetntuple_events_counted_once_per_chunking(jetntuple_sample, tmp_path, chunksize):
    expected = _distinct_events(jetntuple_sample)
    n_entries = sum(uproot.open(p)[TREE].num_entries for p in jetntuple_sample)
    assert n_entries > expected  # several jets per event: boundaries do split events
    run = run_config(_config(jetntuple_sample, tmp_path / "o", chunksize), backend="serial",
                     progress=False, output_dir=tmp_path / "o")
    if chunksize < 100:
        assert run.report["chunks"] > 2 * 3
    flow = run.cutflow["jt"]
    assert flow["entries"] == n_entries
    assert flow["events"] == expected


def test_dask_awkward_engine_counts_alike(jetntuple_sample, tmp_path):
    cfg = _config(jetntuple_sample, tmp_path / "o", 13)
    cfg["executor"]["engine"] = "dask-awkward"
    run = run_config(cfg, backend="serial", progress=False, output_dir=tmp_path / "o")
    assert run.report["chunks"] > 2 * 3
    assert run.cutflow["jt"]["events"] == _distinct_events(jetntuple_sample)


def test_count_event_starts_previous_entry():
    run = np.array([1, 1, 1, 1])
    lumi = np.array([2, 2, 2, 2])
    event = np.array([5, 5, 6, 7], dtype=np.uint64)
    assert count_event_starts(run, lumi, event) == 3
    assert count_event_starts(run, lumi, event, previous=(1, 2, 5)) == 2  # continues event 5
    assert count_event_starts(run, lumi, event, previous=(1, 2, 4)) == 3
    assert count_event_starts(run, lumi, event, previous=(1, 3, 5)) == 3  # other lumi
    assert count_event_starts(run[:0], lumi[:0], event[:0], previous=(1, 2, 5)) == 0
    big = np.array([2**63 + 1, 2**63 + 1], dtype=np.uint64)  # event is uint64 in the format
    assert count_event_starts(run[:2], lumi[:2], big, previous=(1, 2, 2**63 + 1)) == 0


def test_real_jetntuple_file_if_present(tmp_path):
    from jettracks_testing.data import cms_data_dir

    base = cms_data_dir()
    found = sorted(base.glob("*[Jj]et[Nn]tuple*.root")) if base else []
    if not found:
        pytest.skip("no real JetNtuple (record 12100) file beside the real CMS files")
    expected = _distinct_events(found[:1])
    for chunksize in (7, 100_000):
        out = tmp_path / f"o{chunksize}"
        run = run_config(_config(found[:1], out, chunksize), backend="serial", progress=False,
                         output_dir=out)
        assert run.cutflow["jt"]["events"] == expected
