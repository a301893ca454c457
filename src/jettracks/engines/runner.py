"""The ``runner`` engine: one Dask task per chunk (or chunk by chunk in this process).

Each task is :func:`jettracks.engines.base.run_chunk` on one chunk: it opens the
chunk as coffea's Runner does (NanoEvents, ``BaseSchema``, ``mode="virtual"``),
calls ``processor.process`` and handles checkpoints, retries and failures itself,
so a task never fails for a chunk's sake and Dask's own task retries are not used
(a permanent error then runs once). Results are summed on the client as they
arrive and their futures released, so the client holds one running total per
dataset (:class:`~jettracks.engines.base.Totals`), not every chunk's output.

Without a client the same function runs here, chunk by chunk: the serial reference.
Only public coffea API is used (``NanoEventsFactory``, ``processor.accumulate``).
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

import cloudpickle

from .base import ChunkSpec, Engine, gather, run_chunk

__all__ = ["RunnerEngine"]


def _chunk_task(processor: bytes, spec: ChunkSpec, read_events: Any, checkpointer: Any, retries: int):
    """The body of one chunk's Dask task (module level: pickled by reference).

    ``processor`` arrives cloudpickled (see :meth:`RunnerEngine._distributed`).
    """
    return run_chunk(cloudpickle.loads(processor), spec, read_events, checkpointer, retries)


class RunnerEngine(Engine):
    """Chunks as independent tasks; see the module docstring and :meth:`Engine.run`."""

    name = "runner"

    def process_chunks(self, specs, processor, *, reader, checkpointer, retries, client, done) -> None:
        if client is None:  # in this process, chunk by chunk: the serial reference
            for i, spec in enumerate(specs):
                done(i, *run_chunk(processor, spec, reader, checkpointer, retries))
            return
        # Cloudpickled here, as coffea's executors do: a processor whose package is registered
        # by value (cluster.ship_processors) then reaches workers that lack the package, which
        # distributed's own pickling (by reference inside a task) would not do. Sent with each
        # task rather than scattered once: scattered data dies with the worker holding it.
        payload = cloudpickle.dumps(processor)
        run_token = uuidlib.uuid4().hex[:12]  # fresh keys: a rerun must re-read, never reuse results
        futures = [
            client.submit(
                _chunk_task, payload, spec, reader, checkpointer, retries,
                key=f"jettracks-chunk-{i}-{run_token}", pure=False, retries=0,
            )
            for i, spec in enumerate(specs)
        ]
        gather(client, futures, specs, done, unpack=lambda result: result)
