"""Far-away files: the delay proxy, files opened once per worker, the parallel metadata step.

* The delay proxy (``jettracks_testing.services.delay_proxy``) adds its delay in each
  direction, overlaps delays (a latency, not a bandwidth limit) and ends by itself.
* :mod:`jettracks.engines.handles`: a second chunk of a file reuses the open file; a
  file replaced under the same name (other UUID, or a local file's size/mtime) is
  opened anew, never served stale; a failure on a reused handle reopens once.
* A run over XRootD behind a 50 ms-RTT proxy equals the direct run, and the metadata
  step reads its files in parallel (far less than one round trip per file in sequence).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from jettracks.engines import ChunkReader, ChunkSpec, handles


# -- the delay proxy -----------------------------------------------------------------------------
@pytest.fixture
def echo_server():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return

            def echo(c=conn):
                with c:
                    while data := c.recv(65536):
                        c.sendall(data)

            threading.Thread(target=echo, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    stop.set()
    srv.close()


def test_delay_proxy_adds_rtt_overlaps_delays_and_ends_by_itself(echo_server):
    from jettracks_testing.services.delay_proxy import start_delay_proxy

    with start_delay_proxy("127.0.0.1", echo_server, delay_s=0.025) as proxy:
        with socket.create_connection((proxy.host, proxy.port)) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rtts = []
            for _ in range(3):
                t0 = time.perf_counter()
                s.sendall(b"ping")
                assert s.recv(16) == b"ping"
                rtts.append(time.perf_counter() - t0)
            assert 0.048 <= min(rtts) < 0.12, rtts
            # 20 messages 5 ms apart: delays overlap (~100 + 50 ms), not 20 x 50 ms
            t0 = time.perf_counter()
            for _ in range(20):
                s.sendall(b"y")
                time.sleep(0.005)
            got = 0
            while got < 20:
                got += len(s.recv(64))
            assert time.perf_counter() - t0 < 0.5
        assert proxy.url_for_port(f"root://127.0.0.1:{echo_server}//a/b.root") == (
            f"root://{proxy.host}:{proxy.port}//a/b.root"
        )
    assert not proxy.is_running()
    bounded = start_delay_proxy("127.0.0.1", echo_server, delay_s=0.001, max_seconds=0.5)
    try:
        deadline = time.monotonic() + 10
        while bounded.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not bounded.is_running()  # bounded runtime: ended by itself
    finally:
        bounded.stop()


# -- files opened once per worker ----------------------------------------------------------------
def _uuid(path) -> str:
    import uproot

    from jettracks.engines.base import uuid_text

    with uproot.open(path) as f:
        return uuid_text({"uuid": f.file.fUUID})


def _read_n(reader: ChunkReader, spec: ChunkSpec) -> int:
    with reader(spec) as events:
        return len(events)


@pytest.fixture
def fresh_handles(monkeypatch):
    """An empty process-wide handle cache for the test."""
    h = handles.FileHandles(max_open=4)
    monkeypatch.setattr(handles, "handles", h)
    yield h
    h.close_all()


def test_second_chunk_reuses_the_open_file_and_a_changed_file_is_reopened(small_sample, tmp_path, fresh_handles):
    import uproot

    a, b = (Path(p) for p in small_sample["pfnano"][:2])
    path = tmp_path / "f.root"
    shutil.copy(a, path)
    uuid_a = _uuid(path)
    reader = ChunkReader()
    opened = []
    real_open = uproot.open
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(uproot, "open", lambda *a, **k: opened.append(1) or real_open(*a, **k))
        assert _read_n(reader, ChunkSpec("d", str(path), "Events", 0, 50, uuid_a)) == 50
        assert _read_n(reader, ChunkSpec("d", str(path), "Events", 50, 100, uuid_a)) == 50
        assert len(opened) == 1  # the second chunk did not reopen the file
        assert (fresh_handles.opened, fresh_handles.reused, len(fresh_handles)) == (1, 1, 1)

        # replaced under the same name: another UUID -> opened anew, the new content read
        shutil.copy(b, path)
        uuid_b = _uuid(path)
        assert uuid_b != uuid_a
        opened.clear()
        with reader(ChunkSpec("d", str(path), "Events", 0, 10, uuid_b)) as events:
            run_b = np.asarray(events["event"])
        assert len(opened) == 1
        with real_open(b) as f:
            np.testing.assert_array_equal(run_b, f["Events"]["event"].array(library="np", entry_stop=10))

        # the same UUID but the local file changed (size/mtime): not served stale either
        opened.clear()
        shutil.copy(a, path)
        with reader(ChunkSpec("d", str(path), "Events", 0, 10, uuid_b)) as events:
            ev = np.asarray(events["event"])
        assert len(opened) == 1
        with real_open(a) as f:
            np.testing.assert_array_equal(ev, f["Events"]["event"].array(library="np", entry_stop=10))

        # no reuse at all when switched off
        opened.clear()
        off = ChunkReader(reuse_files=False)
        _read_n(off, ChunkSpec("d", str(path), "Events", 0, 10, uuid_a))
        _read_n(off, ChunkSpec("d", str(path), "Events", 10, 20, uuid_a))
        assert len(opened) == 2
    assert handles.close_all() >= 1 and len(fresh_handles) == 0


def test_handles_are_bounded_exclusive_and_dropped_on_failure(small_sample, fresh_handles):
    paths = [str(p) for p in small_sample["pfnano"][:4]] + [str(p) for p in small_sample["jetntuple"][:2]]
    fresh_handles.max_open = 3
    for p in paths:
        with fresh_handles.open(p, "", {}) as f:
            assert f.file.file_path
    assert len(fresh_handles) == 3  # least recently used closed
    # checked out while in use: a second user of the same file gets its own handle
    with fresh_handles.open(paths[-1], "", {}) as f1, fresh_handles.open(paths[-1], "", {}) as f2:
        assert f1 is not f2
    # an error while a reused handle is in use: closed (not returned), flagged for one reopen
    with pytest.raises(RuntimeError), fresh_handles.open(paths[-1], "", {}):
        raise RuntimeError("connection broke")
    assert fresh_handles.last_failure_reused() is True
    assert fresh_handles.last_failure_reused() is False  # reset once read


def test_run_chunk_reopens_once_when_a_kept_handle_broke(small_sample, fresh_handles):
    from jettracks.engines.base import run_chunk
    from processors.testing import NoopProcessor

    path = str(small_sample["pfnano"][0])
    reader = ChunkReader()
    spec = ChunkSpec("d", path, "Events", 0, 20, "")
    out, rec = run_chunk(NoopProcessor(), spec, reader)
    assert rec.status == "ok"
    # break the kept handle as a server restart would
    (key, (handle, _)), = fresh_handles._idle.items()
    handle.file.source.close()
    out, rec = run_chunk(NoopProcessor(), spec, reader, retries=0)
    assert rec.status == "ok" and rec.attempts == 1, rec
    assert out["entries"] == {path: 20}


def test_closing_kept_files_does_not_hold_up_the_workers_event_loop(local_client):
    """The end of a run closes the workers' kept files (``close_open_files``, fire and forget).
    A close that does not come back (a far or broken connection waits out the XRootD request
    timeout) must not block the worker's event loop: the next run's tasks and the worker's
    heartbeats go through it. Here the close waits until released, and the workers answer meanwhile."""
    from jettracks.engines import close_open_files

    def install_gate():
        import threading

        from jettracks.engines import handles as h

        h._test_gate, h._test_real_close_all = threading.Event(), h.close_all
        h._test_gate_entered = threading.Event()

        def gated():
            h._test_gate_entered.set()
            h._test_gate.wait(90)
            return h._test_real_close_all()

        h.close_all = gated

    def gate_entered():
        from jettracks.engines import handles as h

        return h._test_gate_entered.wait(60)

    def release():
        from jettracks.engines import handles as h

        h._test_gate.set()
        h.close_all = h._test_real_close_all
        return True

    local_client.run(install_gate)
    try:
        close_open_files(local_client)
        # the workers take tasks while their closes wait (a blocked event loop would not)
        futures = [local_client.submit(sum, [i, 1], pure=False, workers=[w]) for i, w in
                   enumerate(local_client.scheduler_info()["workers"])]
        assert [f.result(timeout=45) for f in futures] == [i + 1 for i in range(len(futures))]
        assert all(local_client.run(gate_entered).values())  # and the closes were under way
    finally:
        local_client.run(release)


# -- over XRootD behind the proxy -----------------------------------------------------------------
N_FILES = 16
GEN_OPTIONS = {"pileup_candidates": 20, "compression": "zlib", "links": False}


@pytest.fixture(scope="module")
def wan_sample(xrootd_server, local_client):
    from jettracks.generate import generate_dataset
    from jettracks_testing.services.delay_proxy import start_delay_proxy

    out = Path(xrootd_server.root_dir) / "wan"
    paths = generate_dataset(out, format="pfnano", n_files=N_FILES, events_per_file=40, seed=20261212,
                             client=local_client, **GEN_OPTIONS)
    out.chmod(0o755)
    for p in paths:
        p.chmod(0o644)
    proxy = start_delay_proxy("127.0.0.1", xrootd_server.port, delay_s=0.025, max_seconds=900)
    try:
        yield paths, [proxy.url_for_port(xrootd_server.url_for(p)) for p in paths]
    finally:
        proxy.stop()
        from jettracks.io import files as files_mod

        files_mod.configure_xrootd_client(connection_retry=1, stream_error_window=0)


def _cfg(files, out) -> dict:
    return {
        "name": "wan",
        "datasets": {"qcd": {"files": list(files), "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {}},
        "executor": {"backend": "local", "chunksize": 20, "retries": 1},
        "output": {"dir": str(out), "plots": False, "ml": True},
    }


@pytest.mark.service
def test_run_at_50ms_rtt_equals_local_run_and_metadata_is_parallel(wan_sample, local_client, tmp_path, monkeypatch):
    from jettracks.execution import run_config

    paths, urls = wan_sample
    monkeypatch.setenv("JETTRACKS_CACHE_DIR", str(tmp_path / "cache"))
    local = run_config(_cfg([str(p) for p in paths], tmp_path / "local"), client=local_client, progress=False)
    remote = run_config(_cfg(urls, tmp_path / "remote"), client=local_client, progress=False)
    assert remote.report["status"] == "ok"
    assert remote.report["entries"] == local.report["entries"]
    assert remote.report["entries"]["processed"] == N_FILES * 40
    for name, h in local.hists.items():
        np.testing.assert_array_equal(h.values(flow=True), remote.hists[name].values(flow=True), err_msg=name)
    assert remote.cutflow == local.cutflow
    cols = ["event", "jet_index", "jet_pt"]
    a = local.ml_dataset("qcd")[cols].to_list()
    b = remote.ml_dataset("qcd")[cols].to_list()
    assert sorted(map(lambda r: tuple(r.values()), a)) == sorted(map(lambda r: tuple(r.values()), b))
    # 16 files at 50 ms RTT: stat (cache) + open each, one after the other, would take
    # >= 16 x 5 x 50 ms = 4 s; in parallel a small fraction of that
    assert remote.report["timing"]["metadata_s"] < 2.0, remote.report["timing"]
