"""The ``runner`` engine: Dask tasks of a few chunks each (or chunk by chunk in this process).

Each task runs :func:`jettracks.engines.base.run_chunk` on each of its chunks: it opens
the chunk as coffea's Runner does (NanoEvents, ``BaseSchema``, ``mode="virtual"``),
calls ``processor.process`` and handles checkpoints, retries and failures itself, so a
task never fails for a chunk's sake and Dask's own task retries are not used (a permanent
error then runs once). Every chunk keeps its own record and its own atomic checkpoint,
written as the chunk finishes: a task that dies half way loses no finished chunk (its rerun
loads them) and counts none twice.

A task takes consecutive chunks of one file (:func:`chunk_groups`: at most
:data:`MAX_GROUP`, and only as many as leave every worker thread
:data:`TASKS_PER_THREAD` tasks): a Dask task costs a few milliseconds of scheduler,
client and worker time, more than a no-op chunk itself, a file is opened (and its TTree
model built) once per worker that runs its chunks, and the processor is unpickled once per
task. A task sums its chunks' outputs before returning them (one chunk's size, not one per
chunk). All tasks are submitted in one graph update and their results taken in batches.
Results are summed on the client as they arrive and their futures released, so the client
holds one running total per dataset (:class:`~jettracks.engines.base.Totals`), not every
chunk's output.

Without a client the same function runs here, chunk by chunk: the serial reference.
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

import cloudpickle

from .base import ChunkSpec, Engine, accumulate_into, gather, run_chunk

__all__ = ["MAX_GROUP", "TASKS_PER_THREAD", "RunnerEngine", "chunk_groups"]


#: Chunks one task runs at most (consecutive chunks of one file).
MAX_GROUP = 32
#: Tasks every worker thread gets at least, while chunks allow (load balance, progress).
TASKS_PER_THREAD = 8


def chunk_groups(specs: list[ChunkSpec], threads: int, max_group: int = MAX_GROUP) -> list[list[int]]:
    """Indices of ``specs`` in groups of consecutive chunks of one file (and dataset), each
    at most ``min(max_group, len(specs) // (TASKS_PER_THREAD * threads))`` long (at least 1):
    one Dask task per group. Every index is in exactly one group, in order."""
    size = max(1, min(int(max_group), len(specs) // (TASKS_PER_THREAD * max(1, int(threads)))))
    groups: list[list[int]] = []
    for i, spec in enumerate(specs):
        last = groups[-1] if groups else None
        if last is not None and len(last) < size and (specs[last[-1]].dataset, specs[last[-1]].filename) == (
                spec.dataset, spec.filename):
            last.append(i)
        else:
            groups.append([i])
    return groups


def _chunks_task(processor: bytes, specs: list[ChunkSpec], read_events: Any, checkpointer: Any,
                 retries: int) -> tuple[Any, list[Any]]:
    """The body of one Dask task (module level: pickled by reference): ``run_chunk`` on each
    chunk in turn, one processor (unpickled once; ``processor`` arrives cloudpickled, see
    :meth:`RunnerEngine.process_chunks`) for all of them.

    Returns ``(output, records)``: the outputs of the chunks that gave one (``ok`` and
    ``checkpoint``) summed here (one file, so one dataset: the result stays one chunk's size),
    and one record per chunk."""
    proc = cloudpickle.loads(processor)
    total, records = None, []
    for spec in specs:
        out, record = run_chunk(proc, spec, read_events, checkpointer, retries)
        if out is not None:
            total = accumulate_into(total, out)
        records.append(record)
    return total, records


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
        # Parts shipped back through Dask are bounded per chunk (output.transfer_mb): one
        # chunk a task keeps a task's result within that bound.
        shipping = getattr(reader, "transfer_bytes", None) is not None
        groups = chunk_groups(specs, 1 if shipping else _threads(client), 1 if shipping else MAX_GROUP)
        run_token = uuidlib.uuid4().hex[:12]  # fresh keys: a rerun must re-read, never reuse results
        futures = client.map(
            _chunks_task,
            [payload] * len(groups),
            [[specs[i] for i in g] for g in groups],
            [reader] * len(groups),
            [checkpointer] * len(groups),
            [retries] * len(groups),
            key=[f"jettracks-chunks-{g[0]}-{run_token}" for g in groups],
            pure=False,
            retries=0,
        )
        gather(client, futures, specs, done, unpack=_unpack, groups=groups)


def _unpack(result: tuple[Any, list[Any]]) -> list[tuple[Any, Any]]:
    """A task's ``(summed output, records)`` as one ``(output, record)`` per chunk for
    ``done``: the sum goes with the first chunk, the others add nothing."""
    total, records = result
    return [(total if k == 0 else None, record) for k, record in enumerate(records)]


def _threads(client: Any) -> int:
    """Worker threads of the cluster now (at least 1)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - no answer: as if one thread
        return 1
