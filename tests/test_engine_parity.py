"""Both engines (``runner``, ``dask-awkward``) give the same answer, chunk by chunk.

Input: PFNano-layout files rewritten through uproot from the real CMS
``pfnano.root`` (10 events each; every rewrite gets its own file UUID) and one
faulty file per case. The bad file's metadata is read *before* it is damaged
(missing, truncated, garbage), so the engines meet the damage chunk by chunk;
a file whose metadata could not be read is in the fileset but not in ``meta``
and must never reach an engine.

Each case runs both engines on a real 2-process ``LocalCluster`` and in-process
(``client=None``) and compares them with the serial ``runner`` (the reference):
the records (file, entry range, status, error type, attempts), every histogram's
``values(flow=True)``, the cut flow, the entries, the notices and the ML rows
each run wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from jettracks_testing import samples
from jettracks_testing.data import absent_reason, cms_data_dir

from jettracks.engines import (
    ENGINES,
    ChunkSpec,
    chunk_steps,
    get_engine,
    plan_chunks,
    run_engine,
)
from jettracks.io import mldata
from jettracks.io.checkpoints import RunCheckpointer
from jettracks.metadata import file_metadata
from processors.jet_tracks import JetTrackProcessor

CMS_DIR = cms_data_dir()
PFNANO = CMS_DIR / "pfnano.root" if CMS_DIR else None  # None: the real CMS files are absent
CHUNKSIZE = 3  # 10 entries -> chunks [0,4) [4,8) [8,10)
RETRIES = 1
ENGINE_NAMES = sorted(ENGINES)
FAULTS = ["none", "missing", "truncated", "garbage", "zero_entries", "missing_branch"]

pytestmark = pytest.mark.skipif(PFNANO is None, reason=absent_reason())


# -- input -----------------------------------------------------------------------------------
def write_pfnano_like(path: Path, *, entry_stop=None, drop=()) -> Path:
    """A PFNano-layout file from the real one (some branches dropped on request); a new file UUID."""
    return samples.write_pfnano_like(path, PFNANO, entry_stop=entry_stop, drop=drop)


def _meta_of(path: Path) -> dict:
    m = file_metadata(str(path), "Events", 30)
    m["uuid_hex"] = bytes(m["uuid"]).hex()
    return m


def make_input(fault: str, tmp: Path) -> tuple[dict, dict, str | None]:
    """``(fileset, meta, bad file)``: datasets ``a`` (good + bad file) and ``b`` (good file),
    plus a file that was unreadable at metadata time (in the fileset, not in ``meta``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    good = [write_pfnano_like(tmp / f"good{i}.root") for i in range(2)]
    unreadable = tmp / "never_opened.root"  # metadata failed: never reaches an engine
    files_a, bad = [str(good[0])], None
    meta = {("a", str(good[0])): _meta_of(good[0]), ("b", str(good[1])): _meta_of(good[1])}
    if fault != "none":
        bad = tmp / f"bad_{fault}.root"
        if fault == "zero_entries":
            write_pfnano_like(bad, entry_stop=0)
        elif fault == "missing_branch":
            write_pfnano_like(bad, drop=("PFCands_d0Err",))
        else:
            write_pfnano_like(bad)
        meta[("a", str(bad))] = _meta_of(bad)
        # Damage after the metadata pass: the engines meet it in every chunk.
        if fault == "missing":
            bad.unlink()
        elif fault == "truncated":
            data = bad.read_bytes()
            bad.write_bytes(data[: len(data) // 2])
        elif fault == "garbage":
            bad.write_bytes(np.random.default_rng(1).bytes(bad.stat().st_size))
        files_a.append(str(bad))
    files_a.append(str(unreadable))
    pf = {"format": "pfnano", "is_mc": True}
    fileset = {
        "a": {"files": files_a, "treename": "Events", "metadata": dict(pf)},
        "b": {"files": [str(good[1])], "treename": "Events", "metadata": dict(pf)},
    }
    return fileset, meta, str(bad) if bad is not None else None


def _branches() -> list[str]:
    return JetTrackProcessor().reader_for("pfnano").branches()


def run(engine: str, fileset, meta, tmp: Path, *, client=None, processor=None, retries=RETRIES,
        checkpoint_dir: Path | None = None):
    """One engine run with its own checkpoint and ML directories under ``tmp``."""
    proc = processor or JetTrackProcessor(ml_dir=str(tmp / "ml"))
    return get_engine(engine).run(
        fileset, meta, proc, client=client, chunksize=CHUNKSIZE, retries=retries,
        branches=_branches(), checkpointer=RunCheckpointer(checkpoint_dir or tmp / "checkpoints"),
        progress=False, xrootd_timeout=30,
    )


# -- comparisons ---------------------------------------------------------------------------------
def _records(result) -> set[tuple]:
    return {
        (r.spec.dataset, r.spec.filename, r.spec.entrystart, r.spec.entrystop, r.status, r.error_type,
         r.attempts)
        for r in result.records
    }


def _ml_rows(parts) -> ak.Array | None:
    if not parts:
        return None
    arr = ak.concatenate([ak.from_arrow(mldata.read_part(p)) for p in parts])
    order = np.lexsort((
        ak.to_numpy(arr["jet_index"]), ak.to_numpy(arr["event"]), ak.to_numpy(arr["lumi"]),
        ak.to_numpy(arr["run"]), np.asarray(ak.to_list(arr["dataset"])),
    ))
    return arr[order]


def assert_same_output(got, want) -> None:
    """Same histograms (axes, categories in the same order, ``values(flow=True)``), cut flow,
    entries, notices, ML rows."""
    g, w = got.output, want.output
    assert list(g.get("hists", {})) == list(w.get("hists", {}))
    for name, hw in w.get("hists", {}).items():
        hg = g["hists"][name]
        assert hg.axes == hw.axes, name  # Totals: dataset categories in fileset order on every engine
        np.testing.assert_array_equal(hg.values(flow=True), hw.values(flow=True), err_msg=name)
    for key in ("cutflow", "entries", "notices"):
        assert g.get(key) == w.get(key), key
    assert list(g.get("cutflow", {})) == list(w.get("cutflow", {}))  # dataset order too
    assert sorted(Path(p).name for p in g.get("ml_parts", [])) == sorted(
        Path(p).name for p in w.get("ml_parts", [])
    )
    rows_g, rows_w = _ml_rows(g.get("ml_parts", [])), _ml_rows(w.get("ml_parts", []))
    assert (rows_g is None) == (rows_w is None)
    if rows_w is not None:
        assert rows_g.fields == rows_w.fields
        for field in rows_w.fields:
            assert ak.array_equal(rows_g[field], rows_w[field], equal_nan=True), field


# -- tests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entries", [0, 1, 9, 10, 11, 99, 100, 101, 1234])
@pytest.mark.parametrize("chunksize", [1, 3, 4, 10, 37, 100])
def test_chunk_steps_are_coffeas(entries, chunksize):
    from coffea.processor.executor import FileMeta

    fm = FileMeta("ds", "f.root", "Events", {"numentries": entries, "uuid": b"0" * 16})
    assert chunk_steps(entries, chunksize) == [(c.entrystart, c.entrystop) for c in fm.chunks(chunksize, False)]


def test_registry_and_plan(tmp_path):
    assert set(ENGINES) == {"runner", "dask-awkward"}
    assert {get_engine(n).name for n in ENGINES} == set(ENGINES)
    with pytest.raises(ValueError, match="unknown engine 'spark'.*dask-awkward"):
        get_engine("spark")
    fileset, meta, _ = make_input("zero_entries", tmp_path)
    specs = plan_chunks(fileset, meta, CHUNKSIZE)
    assert [(s.dataset, Path(s.filename).name, s.entrystart, s.entrystop) for s in specs] == [
        ("a", "good0.root", 0, 4), ("a", "good0.root", 4, 8), ("a", "good0.root", 8, 10),
        ("a", "bad_zero_entries.root", 0, 0),
        ("b", "good1.root", 0, 4), ("b", "good1.root", 4, 8), ("b", "good1.root", 8, 10),
    ]
    import uuid

    uuid.UUID(specs[0].fileuuid)  # coffea's form, as in events.metadata["fileuuid"]
    assert specs[0].events_metadata() == {
        "dataset": "a", "filename": specs[0].filename, "treename": "Events", "entrystart": 0,
        "entrystop": 4, "fileuuid": specs[0].fileuuid, "format": "pfnano", "is_mc": True,
    }


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
def test_engines_agree_per_fault(fault, tmp_path, local_client):
    fileset, meta, bad = make_input(fault, tmp_path / "input")
    reference = run("runner", fileset, meta, tmp_path / "ref")
    results = {
        (engine, where): run(engine, fileset, meta, tmp_path / f"{engine}-{where}",
                             client=local_client if where == "cluster" else None)
        for engine in ENGINE_NAMES
        for where in ("cluster", "serial")
        if (engine, where) != ("runner", "serial")
    }

    # What the reference itself must say.
    never = str(Path(fileset["a"]["files"][-1]))
    assert all(r.spec.filename != never for r in reference.records)
    n_good = 6  # 2 good files x 3 chunks
    ok = [r for r in reference.records if r.status == "ok"]
    failed = reference.failures
    if fault in ("none", "zero_entries"):
        assert not failed and len(ok) == n_good + (fault == "zero_entries")
        assert reference.output["cutflow"]["a"]["entries"] == 10
        if fault == "zero_entries":
            assert reference.output["entries"][bad] == 0
    else:
        assert len(ok) == n_good and len(failed) == 3
        assert {r.spec.filename for r in failed} == {bad}
        for r in failed:
            assert r.error and "\n" not in r.error
            assert 1 <= r.attempts <= RETRIES + 1
        if fault in ("missing", "missing_branch", "garbage"):  # permanent: tried once
            assert {r.attempts for r in failed} == {1}, [r.error for r in failed]
        if fault == "missing":
            assert {r.error_type for r in failed} == {"FileNotFoundError"}
        if fault == "missing_branch":
            assert all("PFCands_d0Err" in r.error for r in failed), [r.error for r in failed]
        assert bad not in reference.output["entries"]
        assert reference.failures_as_chunkfailures()[0].line().startswith(f"{bad} entries 0-4: ")
    assert reference.output["cutflow"]["b"]["entries"] == 10
    assert reference.n_chunks == len(reference.records) == len(plan_chunks(fileset, meta, CHUNKSIZE))
    assert reference.from_checkpoint == 0
    assert len(reference.chunk_times()) == len(ok)

    for (engine, where), result in results.items():
        assert result.engine == engine
        assert _records(result) == _records(reference), (engine, where)
        assert [r.spec for r in result.records] == [r.spec for r in reference.records]
        assert_same_output(result, reference)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINE_NAMES)
@pytest.mark.parametrize("where", ["cluster", "serial"])
def test_resume_redoes_exactly_the_missing_chunks(engine, where, tmp_path, local_client):
    """Delete some checkpoints (and, for another chunk, only its ML part): a rerun loads the
    rest, redoes those, and ends with the fresh run's output and ML rows."""
    client = local_client if where == "cluster" else None
    fileset, meta, _ = make_input("none", tmp_path / "input")
    ckpt, work = tmp_path / "checkpoints", tmp_path / "work"
    first = run(engine, fileset, meta, work, client=client, checkpoint_dir=ckpt)
    assert {r.status for r in first.records} == {"ok"} and first.from_checkpoint == 0

    checkpointer = RunCheckpointer(ckpt)
    specs = [r.spec for r in first.records]
    gone_checkpoint, gone_part = specs[1], specs[4]
    checkpointer.filepath(gone_checkpoint.events_metadata()).unlink()
    part = next(p for p in first.output["ml_parts"]
                if p.endswith(f"-{gone_part.entrystart}-{gone_part.entrystop}{mldata.PART_SUFFIX}")
                and gone_part.fileuuid in p)
    os.unlink(part)  # its checkpoint stays but is incomplete: RunCheckpointer.load refuses it

    again = run(engine, fileset, meta, work, client=client, checkpoint_dir=ckpt)
    status = {r.spec: r.status for r in again.records}
    assert status.pop(gone_checkpoint) == "ok" and status.pop(gone_part) == "ok"
    assert set(status.values()) == {"checkpoint"}
    assert again.from_checkpoint == len(specs) - 2
    assert {r.attempts for r in again.records if r.status == "checkpoint"} == {0}

    fresh = run(engine, fileset, meta, tmp_path / "fresh", client=client)
    assert_same_output(again, fresh)
    assert all(os.path.exists(p) for p in again.output["ml_parts"])


@pytest.mark.slow
def test_checkpoints_of_coffeas_runner_load(tmp_path, local_client):
    """Checkpoints written by coffea's Runner with RunCheckpointer (the previous engine) are
    found and loaded by both engines: same paths, same ``{"out": ...}`` layout."""
    from coffea import processor as coffea_processor
    from coffea.nanoevents import BaseSchema

    fileset, meta, _ = make_input("none", tmp_path / "input")
    readable = {ds: {**spec, "files": [f for f in spec["files"] if (ds, f) in meta]}
                for ds, spec in fileset.items()}
    ckpt = tmp_path / "checkpoints"
    runner = coffea_processor.Runner(
        executor=coffea_processor.IterativeExecutor(), schema=BaseSchema, chunksize=CHUNKSIZE,
        savemetrics=True, checkpointer=RunCheckpointer(ckpt),
    )
    proc = JetTrackProcessor(ml_dir=str(tmp_path / "ml"))
    want, _metrics = runner(readable, proc, iteritems_options={"filter_name": _branches()})
    for engine in ENGINE_NAMES:
        got = run(engine, fileset, meta, tmp_path / engine, client=local_client, checkpoint_dir=ckpt)
        assert {r.status for r in got.records} == {"checkpoint"}, engine
        assert got.output["cutflow"] == want["cutflow"]
        for name, h in want["hists"].items():
            np.testing.assert_array_equal(got.output["hists"][name].values(flow=True), h.values(flow=True))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINE_NAMES)
@pytest.mark.parametrize("kind", ["transient", "permanent"])
def test_retries(engine, kind, tmp_path, local_client):
    """A transient error is attempted ``retries + 1`` times, a permanent one once, on every engine."""
    from processors.testing import FailingProcessor

    fileset, meta, _ = make_input("none", tmp_path / "input")
    retries = 2
    want_attempts = retries + 1 if kind == "transient" else 1
    for where, client in (("cluster", local_client), ("serial", None)):
        log = tmp_path / f"attempts-{where}.log"
        proc = FailingProcessor(kind=kind, attempts_log=str(log))
        result = run(engine, fileset, meta, tmp_path / where, client=client, processor=proc, retries=retries)
        assert len(result.failures) == result.n_chunks == 6
        assert {r.attempts for r in result.records} == {want_attempts}, where
        assert {r.error_type for r in result.records} == (
            {"ConnectionError"} if kind == "transient" else {"KeyInFileError"}
        )
        lines = log.read_text().splitlines()
        assert len(lines) == 6 * want_attempts
        assert {lines.count(line) for line in lines} == {want_attempts}
        assert result.output == {}
        assert not list((tmp_path / where / "checkpoints").rglob("*.pkl"))  # failures are not checkpointed


def test_run_engine_adapter(tmp_path):
    """``run_engine`` takes the executor config's chunksize, retries and timeout."""
    from types import SimpleNamespace

    fileset, meta, _ = make_input("none", tmp_path / "input")
    ex = SimpleNamespace(chunksize=5, retries=0, xrootd_timeout=30)
    proc = JetTrackProcessor()
    result = run_engine("runner", fileset, meta, proc, client=None, ex=ex, branches=_branches(),
                        checkpointer=None, progress=False)
    assert [(r.spec.entrystart, r.spec.entrystop) for r in result.records] == [(0, 5), (5, 10)] * 2
    assert result.output["cutflow"]["a"]["entries"] == result.output["cutflow"]["b"]["entries"] == 10
    assert isinstance(result.records[0].spec, ChunkSpec)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_interrupted_then_resumed_equals_uninterrupted(engine, tmp_path, local_client):
    """Ctrl-C on the client mid-run: the engine stops (KeyboardInterrupt, its tasks cancelled);
    the rerun takes every finished chunk from its checkpoint and ends with a fresh run's output."""
    import _thread
    import threading
    import time

    from processors.testing import SlowJetTrackProcessor

    fileset, meta, _ = make_input("none", tmp_path / "input")
    ckpt, work = tmp_path / "checkpoints", tmp_path / "work"

    def slow():
        return SlowJetTrackProcessor(delay_s=0.4, ml_dir=str(work / "ml"))

    def interrupt_after_two_checkpoints():
        deadline = time.time() + 60
        while time.time() < deadline and len(list(ckpt.rglob("*.pkl"))) < 2:
            time.sleep(0.02)
        _thread.interrupt_main()

    killer = threading.Thread(target=interrupt_after_two_checkpoints, daemon=True)
    killer.start()
    with pytest.raises(KeyboardInterrupt):
        run(engine, fileset, meta, work, client=local_client, processor=slow(), checkpoint_dir=ckpt)
    killer.join()
    # Cancelled tasks already running still finish (and checkpoint) on their worker: Dask
    # cannot stop a running thread. Wait until the count stays put for longer than a chunk.
    done, stable_since = -1, time.time()
    while time.time() - stable_since < 2.0:
        now = len(list(ckpt.rglob("*.pkl")))
        if now != done:
            done, stable_since = now, time.time()
        time.sleep(0.05)
    assert 2 <= done < 6

    again = run(engine, fileset, meta, work, client=local_client, processor=slow(), checkpoint_dir=ckpt)
    assert again.from_checkpoint == done and not again.failures
    assert sum(r.status == "ok" for r in again.records) == 6 - done
    fresh = run(engine, fileset, meta, tmp_path / "fresh", client=local_client)
    assert_same_output(again, fresh)


MYANA = {
    "__init__.py": "",
    "selection.py": (
        "from processors.jet_tracks import JetTrackProcessor\n\n\n"
        "class MyProcessor(JetTrackProcessor):\n"
        "    \"\"\"Lives only on the client's sys.path.\"\"\"\n\n"
        "    def __init__(self, **options):\n"
        "        super().__init__(**{**options, 'jet_pt_min': 25.0})\n"
    ),
}


@pytest.mark.slow
def test_processor_shipped_by_value_runs_on_a_worker_without_its_package(tmp_path, monkeypatch):
    """Both engines send the processor cloudpickled: a package registered by value
    (``cluster.ship_processors``) runs on a ``dask worker`` that cannot import it."""
    import subprocess
    import sys

    import cloudpickle
    from distributed import Client, LocalCluster

    from jettracks import cluster

    root = tmp_path / "client-only"
    (root / "myana").mkdir(parents=True)
    for name, text in MYANA.items():
        (root / "myana" / name).write_text(text)
    monkeypatch.syspath_prepend(str(root))
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    assert subprocess.run([sys.executable, "-c", "import myana"], cwd=elsewhere, env=env,
                          capture_output=True).returncode != 0
    fileset, meta, _ = make_input("none", tmp_path / "input")
    try:
        assert cluster.ship_processors("myana.selection:MyProcessor") == ["myana"]
        from myana.selection import MyProcessor

        reference = run("runner", fileset, meta, tmp_path / "serial", processor=MyProcessor())
        assert not reference.failures
        with LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=":0") as lc:
            worker = subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", lc.scheduler_address, "--nworkers", "1",
                 "--nthreads", "1", "--no-dashboard", "--local-directory", str(elsewhere)],
                cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                with Client(lc) as client:
                    client.wait_for_workers(1, timeout=60)
                    for engine in ENGINE_NAMES:
                        got = run(engine, fileset, meta, tmp_path / engine, client=client, processor=MyProcessor())
                        assert not got.failures, [r.error for r in got.failures]
                        assert got.output["cutflow"] == reference.output["cutflow"], engine
            finally:
                worker.terminate()
                worker.wait(timeout=60)
    finally:
        if "myana" in cloudpickle.list_registry_pickle_by_value():
            cloudpickle.unregister_pickle_by_value(sys.modules["myana"])
        for name in [m for m in sys.modules if m == "myana" or m.startswith("myana.")]:
            del sys.modules[name]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_worker_killed_mid_run_loses_nothing(engine, tmp_path):
    """SIGKILL of a worker mid-run: Dask reruns its chunks elsewhere; no chunk fails and the
    output equals the serial reference. A chunk the dead worker had finished and checkpointed
    but not yet returned is, on its rerun, taken from that checkpoint (status ``checkpoint``)."""
    import signal
    import threading
    import time

    from distributed import Client, LocalCluster

    from jettracks.cluster import worker_environment
    from processors.testing import SlowJetTrackProcessor

    fileset, meta, _ = make_input("none", tmp_path / "input")
    reference = run("runner", fileset, meta, tmp_path / "ref")
    ckpt = tmp_path / "work" / "checkpoints"
    worker_environment()
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as lc, Client(lc) as client:
        pids = client.run(os.getpid)

        def kill_one():
            deadline = time.time() + 60
            while time.time() < deadline and len(list(ckpt.rglob("*.pkl"))) < 2:
                time.sleep(0.02)
            os.kill(next(iter(pids.values())), signal.SIGKILL)

        killer = threading.Thread(target=kill_one, daemon=True)
        killer.start()
        got = run(engine, fileset, meta, tmp_path / "work", client=client,
                  processor=SlowJetTrackProcessor(delay_s=0.5, ml_dir=str(tmp_path / "work" / "ml")))
        killer.join()
        assert set(client.run(os.getpid).values()) != set(pids.values())  # a worker really died
    assert not got.failures, [r.line() for r in got.failures]
    assert {r.status for r in got.records} <= {"ok", "checkpoint"}
    assert_same_output(got, reference)


# -- run_chunk alone: the guard's rules, without files ----------------------------------------------
class _Events:
    def __init__(self, spec: ChunkSpec) -> None:
        self.metadata = spec.events_metadata()


class _FakeReader:
    """``read_events`` that yields metadata-only events (no file)."""

    def __call__(self, spec):
        import contextlib

        return contextlib.nullcontext(_Events(spec))


class _Scripted:
    """A processor that raises the scripted errors in turn, then returns ``{"n": 1}``."""

    def __init__(self, *errors) -> None:
        self.errors, self.calls = list(errors), 0

    def process(self, events):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"n": 1}


class _MemoryCheckpointer:
    def __init__(self, *, fail_load=False, fail_save=False) -> None:
        self.saved, self.fail_load, self.fail_save = {}, fail_load, fail_save

    def _key(self, md):
        return (md["dataset"], md["filename"], md["entrystart"], md["entrystop"], md["fileuuid"])

    def load(self, md, _proc):
        if self.fail_load:
            raise OSError("checkpoint store unreachable")
        return self.saved.get(self._key(md))

    def save(self, out, md, _proc):
        if self.fail_save:
            raise OSError(28, "No space left on device")
        self.saved[self._key(md)] = out


SPEC = ChunkSpec("ds", "/data/f.root", "Events", 0, 10, "", {"format": "pfnano"})


def test_run_chunk_rules():
    from jettracks.engines import run_chunk

    # transient errors retried, then success: attempts counted, output returned, checkpoint saved
    ckpt = _MemoryCheckpointer()
    proc = _Scripted(ConnectionError("reset"), TimeoutError("slow"))
    out, rec = run_chunk(proc, SPEC, _FakeReader(), ckpt, retries=2)
    assert out == {"n": 1} and (rec.status, rec.attempts, rec.error) == ("ok", 3, None) and rec.seconds >= 0
    assert list(ckpt.saved.values()) == [{"out": {"n": 1}, "metrics": ckpt.saved[next(iter(ckpt.saved))]["metrics"]}]
    # the checkpoint is used next time: no process call
    proc = _Scripted()
    out, rec = run_chunk(proc, SPEC, _FakeReader(), ckpt, retries=2)
    assert out == {"n": 1} and (rec.status, rec.attempts) == ("checkpoint", 0) and proc.calls == 0
    # retries exhausted: failed, the last error on one line
    out, rec = run_chunk(_Scripted(*[ConnectionError("reset\nby peer")] * 3), SPEC, _FakeReader(), None, retries=1)
    assert out is None and (rec.status, rec.attempts, rec.error) == ("failed", 2, "ConnectionError: reset by peer")
    assert rec.as_failure().line() == "/data/f.root entries 0-10: ConnectionError: reset by peer"
    # permanent errors are not retried (wrapped ones too: the cause chain is searched)
    try:
        raise RuntimeError("processing failed") from FileNotFoundError(2, "No such file", "/data/f.root")
    except RuntimeError as err:
        wrapped = err
    for err in (FileNotFoundError(2, "No such file"), wrapped, ValueError("not a ROOT file: first four bytes")):
        out, rec = run_chunk(_Scripted(err, err, err), SPEC, _FakeReader(), None, retries=5)
        assert (rec.status, rec.attempts) == ("failed", 1), rec.error
    # process() returning None is a failure, as in coffea's Runner
    class _NoneProc:
        def process(self, events):
            return None

    out, rec = run_chunk(_NoneProc(), SPEC, _FakeReader(), None, retries=0)
    assert rec.status == "failed" and rec.error_type == "ValueError"
    # a checkpoint store that cannot be read: the chunk is redone, not failed
    out, rec = run_chunk(_Scripted(), SPEC, _FakeReader(), _MemoryCheckpointer(fail_load=True), retries=0)
    assert rec.status == "ok"
    # a checkpoint that cannot be written fails the chunk, as in coffea's Runner (and the run checks
    # afterwards that every finished chunk has its checkpoint)
    out, rec = run_chunk(_Scripted(), SPEC, _FakeReader(), _MemoryCheckpointer(fail_save=True), retries=1)
    assert (rec.status, rec.attempts, rec.error_type) == ("failed", 2, "OSError")
    # an interrupt is not a chunk failure: it stops the run
    with pytest.raises(KeyboardInterrupt):
        run_chunk(_Scripted(KeyboardInterrupt()), SPEC, _FakeReader(), None, retries=3)


@pytest.mark.slow
@pytest.mark.parametrize("skip", [True, False], ids=["skip-bad-files", "strict"])
@pytest.mark.parametrize("fault", FAULTS)
def test_run_reports_agree_per_fault(fault, skip, tmp_path, local_client):
    """Through run_config: the same exit status and one-line error, the same report.json
    accounting (files, entries expected / processed / skipped, reasons, cut flow, chunks),
    and where the run finishes the same histograms and ML rows. Only the engine name and
    timings may differ."""
    import json

    from jettracks.execution import RunError, run_config

    fileset, _, _ = make_input(fault, tmp_path / "input")

    def config(engine: str) -> dict:
        return {
            "name": "parity",
            "datasets": {ds: {"files": spec["files"], "format": "pfnano", "metadata": {"is_mc": True}}
                         for ds, spec in fileset.items()},
            "executor": {"backend": "local", "engine": engine, "chunksize": CHUNKSIZE, "retries": 1},
            "output": {"dir": str(tmp_path / engine), "plots": False},
        }

    outcome = {}
    for engine in ENGINE_NAMES:
        try:
            result, error = run_config(config(engine), client=local_client, progress=False, skip_bad_files=skip), None
        except RunError as err:
            result, error = None, str(err)
        report = json.loads((tmp_path / engine / "report.json").read_text())
        assert report["engine"] == engine
        outcome[engine] = (result, error, report)
    (res_a, err_a, rep_a), (res_b, err_b, rep_b) = (outcome[e] for e in ENGINE_NAMES)
    assert err_a == err_b
    assert (err_a is None) == skip  # the never-opened file fails every strict run
    for key in ("status", "error", "entries", "files", "chunks", "chunks_failed", "chunks_from_checkpoint",
                "cutflow", "notices", "histograms", "ml_parts", "deduplicated", "formats"):
        assert rep_a[key] == rep_b[key], key
    ent = rep_a["entries"]
    assert ent["processed"] + ent["skipped"] == ent["expected"]
    if skip:
        assert rep_a["status"] == "partial"
        assert list(res_a.hists) == list(res_b.hists)
        for name, h in res_a.hists.items():
            assert h.axes == res_b.hists[name].axes, name
            np.testing.assert_array_equal(h.values(flow=True), res_b.hists[name].values(flow=True), err_msg=name)
        parts = {e: [str(tmp_path / e / "ml" / n) for n in json.loads(
            (tmp_path / e / "ml" / "manifest.json").read_text())["part_files"]] for e in ENGINE_NAMES}
        rows_a, rows_b = (_ml_rows(parts[e]) for e in ENGINE_NAMES)
        assert rows_a.fields == rows_b.fields and len(rows_a) == rep_a["ml_dataset"]["rows"] > 0
        for field in rows_a.fields:
            assert ak.array_equal(rows_a[field], rows_b[field], equal_nan=True), field
