"""``gather`` depends on its own client only, never on distributed's default client.

``distributed.as_completed`` tracks futures on the event loop of the *default* client (the
newest one) unless told otherwise. With two clients in one process (a notebook holding
two, or the test suite's shared LocalCluster beside a test's own) the engine's results
were then fetched with one client's comms from the other client's loop thread: a write
corrupted that way (tornado's ``AssertionError`` in ``_handle_write``) lost a result, and
the run waited for it forever (seen in test_shared_output and test_gateway). Here the
default client's loop is held stuck while ``gather`` collects another client's futures.
"""

from __future__ import annotations

import threading

from jettracks.engines.base import ChunkRecord, ChunkSpec, gather


def _square(x: int) -> int:
    return x * x


def test_gather_uses_its_own_client_loop_not_the_default_clients():
    from distributed import Client, LocalCluster
    from distributed.client import default_client

    specs = [ChunkSpec(dataset="d", filename=f"f{i}.root", treename="Events", entrystart=0, entrystop=1)
             for i in range(8)]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as ours, \
            Client(ours, set_as_default=False) as client, \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as theirs, \
            Client(theirs) as other:
        assert default_client() is other and other.loop is not client.loop
        release = threading.Event()
        stuck = threading.Event()

        def hold_loop() -> None:  # the default client's loop thread, blocked until released
            stuck.set()
            release.wait(120)

        other.loop.add_callback(hold_loop)
        assert stuck.wait(30)
        got: dict[int, int] = {}
        errors: list[BaseException] = []

        def collect() -> None:
            try:
                futures = client.map(_square, range(len(specs)), pure=False)
                gather(client, futures, specs, lambda i, out, rec: got.__setitem__(i, out),
                       unpack=lambda r: (r, ChunkRecord(specs[0], "ok", None, 0.0, 1)))
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        thread = threading.Thread(target=collect)
        thread.start()
        thread.join(60)  # the default client's loop stays stuck meanwhile
        finished = not thread.is_alive()
        release.set()
        thread.join(60)
        assert finished, "gather waited on the default client's event loop"
        assert errors == [] and got == {i: i * i for i in range(len(specs))}
