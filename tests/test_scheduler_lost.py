"""A client whose scheduler dies for good: ``gather`` ends, it never hangs or drops a chunk.

``distributed.as_completed`` can wait forever on the futures of a client that closed itself
after failing to reconnect (seen on the namespaced hosts of test_multihost: ``runner run``
hung there once its scheduler was killed). ``gather`` then raises ``ClusterError``; where the
client cancelled the futures first, each unfinished chunk is a failed record instead. Real
scheduler and worker processes; the scheduler is SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from jettracks.cluster import ClusterError
from jettracks.engines.base import ChunkRecord, ChunkSpec, gather

PY = sys.executable
START_TIMEOUT = 60  # s for the scheduler and worker processes to come up
RECONNECT_S = 2  # the client's timeout: how long it tries to reconnect before closing itself


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _specs(n: int) -> list[ChunkSpec]:
    return [ChunkSpec(dataset="d", filename=f"f{i}.root", treename="Events", entrystart=0, entrystop=1)
            for i in range(n)]


def test_gather_raises_when_the_scheduler_dies_instead_of_waiting_forever(tmp_path):
    from distributed import Client

    address = f"tcp://127.0.0.1:{_free_port()}"
    port = address.rsplit(":", 1)[1]
    sched = _spawn([PY, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", port,
                    "--no-dashboard"], tmp_path / "scheduler.log")
    worker = _spawn([PY, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny",
                     "--no-dashboard"], tmp_path / "worker.log")
    try:
        client = Client(address, timeout=START_TIMEOUT)
        client.wait_for_workers(1, timeout=START_TIMEOUT)
        client._timeout = RECONNECT_S  # the reconnect budget; connecting above needed the long one
        # time.sleep: importable by the worker (this module is not)
        futures = [client.submit(time.sleep, 0.0, pure=False), *(client.submit(time.sleep, 600.0, pure=False)
                                                            for _ in range(2))]
        futures[0].result(timeout=START_TIMEOUT)  # one chunk done: it must reach ``done``
        seen: list[int] = []
        records: dict[int, ChunkRecord | None] = {}
        raised: list[BaseException] = []

        def done(i: int, out: object, record: ChunkRecord | None) -> None:
            seen.append(i)
            records[i] = record

        def collect() -> None:
            try:
                gather(client, futures, _specs(3), done, unpack=lambda r: (r, None))
            except BaseException as err:  # noqa: BLE001 - handed to the test thread
                raised.append(err)

        thread = threading.Thread(target=collect, daemon=True)
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == [0]
        os.kill(sched.pid, signal.SIGKILL)
        thread.join(timeout=120)  # reconnect budget + the client's close; a hang never returns
        assert not thread.is_alive(), "gather still waiting on the futures of a closed client"
        assert seen[0] == 0 and records[0] is None  # the finished task, unpacked as given
        if raised:  # the client closed with the futures unresolved
            assert len(raised) == 1 and isinstance(raised[0], ClusterError), raised
            message = str(raised[0])
            assert address in message and "task(s) unfinished" in message and "\n" not in message
            assert all(records[i].status == "failed" for i in seen[1:])
        else:  # the client cancelled them: each a failed chunk, none lost, none counted twice
            assert sorted(seen) == [0, 1, 2]
            assert [records[i].status for i in (1, 2)] == ["failed", "failed"]
        client.close(timeout=5)
    finally:
        _stop(worker)
        _stop(sched)
