"""The runner engine's tasks of several chunks (:func:`jettracks.engines.runner.chunk_groups`).

A Dask task runs consecutive chunks of one file; every chunk still has its own record and
its own atomic checkpoint. On a real 2-worker cluster: the grouped run equals the serial
run (histograms, cut flow, entries, ML rows, one record per chunk); a worker killed mid-run
and a client interrupted mid-run lose no chunk and count none twice (the rerun of a task
takes its finished chunks from their checkpoints).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from jettracks_testing.faults import after_checkpoints

from jettracks.engines import ChunkSpec, get_engine, runner
from jettracks.io import mldata
from jettracks.io.checkpoints import RunCheckpointer
from jettracks.metadata import file_metadata
from processors.jet_tracks import JetTrackProcessor

CHUNKSIZE = 4
EVENTS = 120


def test_chunk_groups_cover_every_chunk_once_within_one_file():
    specs = [ChunkSpec("a", f"f{f}.root", "Events", i, i + 1) for f, n in [(0, 40), (1, 3), (2, 57)] for i in range(n)]
    specs += [ChunkSpec("b", "f2.root", "Events", i, i + 1) for i in range(5)]  # same file, other dataset
    for threads, want in [(1, 13), (2, 6), (4, 3), (64, 1), (0, 13)]:
        groups = runner.chunk_groups(specs, threads)
        assert [i for g in groups for i in g] == list(range(len(specs)))
        assert max(len(g) for g in groups) == want, threads
        for g in groups:
            assert len({(specs[i].dataset, specs[i].filename) for i in g}) == 1
            assert g == list(range(g[0], g[0] + len(g)))
    assert max(len(g) for g in runner.chunk_groups(specs * 10, 1)) == runner.MAX_GROUP
    assert runner.chunk_groups([], 2) == []


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    from jettracks.generate import generate_dataset

    out = tmp_path_factory.mktemp("groups")
    paths = generate_dataset(out, format="pfnano", n_files=3, events_per_file=EVENTS, seed=11,
                             pileup_candidates=30, compression="zlib")
    files = [str(p) for p in paths]
    fileset = {"qcd": {"files": files, "treename": "Events", "metadata": {"format": "pfnano", "is_mc": True}}}
    meta = {}
    for f in files:
        m = file_metadata(f, "Events", 30)
        m.pop("signature", None)
        m["uuid_hex"] = bytes(m["uuid"]).hex()
        meta[("qcd", f)] = m
    return fileset, meta


def _run(fileset, meta, work: Path, *, client=None, processor=None):
    proc = processor or JetTrackProcessor(ml_dir=str(work / "ml"))
    return get_engine("runner").run(
        fileset, meta, proc, client=client, chunksize=CHUNKSIZE, retries=1,
        branches=JetTrackProcessor().reader_for("pfnano").branches(),
        checkpointer=RunCheckpointer(work / "checkpoints"), progress=False, xrootd_timeout=30)


def _assert_same(got, want) -> None:
    import awkward as ak

    assert [r.spec for r in got.records] == [r.spec for r in want.records]  # one record per chunk
    assert not got.failures
    for name, h in want.output["hists"].items():
        np.testing.assert_array_equal(got.output["hists"][name].values(flow=True), h.values(flow=True), err_msg=name)
    assert got.output["cutflow"] == want.output["cutflow"]

    def rows(result):
        arr = ak.concatenate([ak.from_arrow(mldata.read_part(p)) for p in result.output["ml_parts"]])
        return sorted(zip(ak.to_list(arr["event"]), ak.to_list(arr["jet_index"]), ak.to_list(arr["jet_pt"])))

    assert rows(got) == rows(want)


@pytest.fixture
def group_sizes(monkeypatch):
    sizes: list[int] = []
    real = runner.chunk_groups

    def spy(*a, **kw):
        groups = real(*a, **kw)
        sizes.extend(len(g) for g in groups)
        return groups

    monkeypatch.setattr(runner, "chunk_groups", spy)
    return sizes


def test_grouped_run_equals_serial(sample, local_client, tmp_path, group_sizes):
    fileset, meta = sample
    serial = _run(fileset, meta, tmp_path / "serial")
    grouped = _run(fileset, meta, tmp_path / "dask", client=local_client)
    n_chunks = 3 * EVENTS // CHUNKSIZE
    assert len(grouped.records) == n_chunks and {r.status for r in grouped.records} == {"ok"}
    assert len(group_sizes) < n_chunks and max(group_sizes) > 1  # really several chunks a task
    assert len(list((tmp_path / "dask" / "checkpoints").rglob("*.pkl"))) == n_chunks  # one each
    _assert_same(grouped, serial)


@pytest.mark.slow
def test_worker_killed_mid_group_loses_and_doubles_nothing(sample, tmp_path, group_sizes):
    from distributed import Client, LocalCluster

    from jettracks.cluster import worker_environment
    from processors.testing import SlowJetTrackProcessor

    fileset, meta = sample
    reference = _run(fileset, meta, tmp_path / "ref")
    work = tmp_path / "work"
    worker_environment()
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as lc, Client(lc) as client:
        pids = client.run(os.getpid)
        killer = after_checkpoints(work, 12, kill_pid=next(iter(pids.values())))
        got = _run(fileset, meta, work, client=client,
                   processor=SlowJetTrackProcessor(delay_s=0.05, ml_dir=str(work / "ml")))
        killer.join()
        assert set(client.run(os.getpid).values()) != set(pids.values())  # a worker really died
    assert max(group_sizes) > 1
    assert {r.status for r in got.records} <= {"ok", "checkpoint"}
    _assert_same(got, reference)


def test_interrupted_mid_group_then_resumed_equals_uninterrupted(sample, local_client, tmp_path, group_sizes):
    from processors.testing import SlowJetTrackProcessor

    fileset, meta = sample
    work = tmp_path / "work"
    ckpt = work / "checkpoints"

    def slow():
        return SlowJetTrackProcessor(delay_s=0.05, ml_dir=str(work / "ml"))

    killer = after_checkpoints(ckpt, 6)
    with pytest.raises(KeyboardInterrupt):
        _run(fileset, meta, work, client=local_client, processor=slow())
    killer.join()
    n_chunks = 3 * EVENTS // CHUNKSIZE
    done, since = -1, time.time()  # running tasks finish their current group on the workers
    while time.time() - since < 3.0:
        now = len(list(ckpt.rglob("*.pkl")))
        if now != done:
            done, since = now, time.time()
        time.sleep(0.05)
    assert 6 <= done < n_chunks
    again = _run(fileset, meta, work, client=local_client, processor=slow())
    assert again.from_checkpoint == done
    assert sum(r.status == "ok" for r in again.records) == n_chunks - done
    _assert_same(again, _run(fileset, meta, tmp_path / "fresh"))
