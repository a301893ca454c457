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
from collections.abc import Mapping
from typing import Any

import cloudpickle

from .base import ChunkRecord, ChunkSpec, Engine, EngineResult, Progress, Totals
from .base import plan_chunks, reader_for, run_chunk

__all__ = ["RunnerEngine"]


def _chunk_task(processor: bytes, spec: ChunkSpec, read_events: Any, checkpointer: Any, retries: int):
    """The body of one chunk's Dask task (module level: pickled by reference).

    ``processor`` arrives cloudpickled (see :meth:`RunnerEngine._distributed`).
    """
    return run_chunk(cloudpickle.loads(processor), spec, read_events, checkpointer, retries)


class RunnerEngine(Engine):
    """Chunks as independent tasks; see the module docstring and :meth:`Engine.run`."""

    name = "runner"

    def run(
        self,
        fileset: Mapping[str, Mapping[str, Any]],
        meta: Mapping[tuple[str, str], Mapping[str, Any]],
        processor: Any,
        *,
        client: Any = None,
        chunksize: int,
        retries: int = 0,
        branches: Any = None,
        checkpointer: Any = None,
        progress: bool = False,
        xrootd_timeout: float | None = None,
    ) -> EngineResult:
        specs = plan_chunks(fileset, meta, chunksize)
        reader = reader_for(branches, xrootd_timeout)
        records: dict[int, ChunkRecord] = {}
        totals = Totals(s.dataset for s in specs)
        with Progress(progress, len(specs), "Processing") as bar:
            if client is None:
                for i, spec in enumerate(specs):
                    out, records[i] = run_chunk(processor, spec, reader, checkpointer, retries)
                    totals.add(spec.dataset, out)
                    bar.advance()
            elif specs:
                self._distributed(client, specs, processor, reader, checkpointer, retries, records, totals, bar)
        return EngineResult(totals.result(processor), [records[i] for i in range(len(specs))], self.name)

    @staticmethod
    def _distributed(client, specs, processor, reader, checkpointer, retries, records, totals, bar) -> None:
        from distributed import as_completed

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
        index = {f.key: i for i, f in enumerate(futures)}
        try:
            for future in as_completed(futures):
                i = index[future.key]
                try:
                    out, records[i] = future.result()
                except Exception as err:  # noqa: BLE001 - the task itself died (KilledWorker, ...)
                    from ..failures import error_line

                    out, records[i] = None, ChunkRecord(specs[i], "failed", error_line(err), 0.0, 1)
                future.release()  # the output is summed below: the cluster need not keep it
                totals.add(specs[i].dataset, out)
                bar.advance()
        except BaseException:
            client.cancel(futures)  # an interrupted run leaves no task running
            raise
