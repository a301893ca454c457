"""Execution engines behind one contract (:mod:`jettracks.engines.base`).

``run_engine("runner" | "dask-awkward", fileset, meta, processor, ...)`` runs every
chunk of the readable files through the same guarded per-chunk call (checkpoints,
retries, failure capture, timing) and returns an :class:`EngineResult`: the
processor's summed output plus one :class:`ChunkRecord` per chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import (
    ENGINES,
    ChunkReader,
    ChunkRecord,
    ChunkSpec,
    Engine,
    EngineResult,
    chunk_steps,
    get_engine,
    plan_chunks,
    run_chunk,
)

__all__ = [
    "ENGINES",
    "ChunkReader",
    "ChunkRecord",
    "ChunkSpec",
    "Engine",
    "EngineResult",
    "chunk_steps",
    "get_engine",
    "plan_chunks",
    "run_chunk",
    "run_engine",
    "smoke_test",
]


def run_engine(
    name: str,
    fileset: Mapping[str, Mapping[str, Any]],
    meta: Mapping[tuple[str, str], Mapping[str, Any]],
    processor: Any,
    *,
    client: Any = None,
    ex: Any,
    branches: Any = None,
    checkpointer: Any = None,
    progress: bool = False,
    transfer_bytes: int | None = None,
    on_output: Any = None,
) -> EngineResult:
    """Run engine ``name`` with the executor settings of a run (what ``execution`` calls).

    Args:
        name: ``executor.engine``: ``"runner"`` or ``"dask-awkward"`` (:data:`ENGINES`).
        fileset: ``{dataset: {"files": [...], "treename": str, "metadata": {"format", "is_mc", ...}}}``.
        meta: ``{(dataset, file): {"numentries": int, "uuid": bytes, "uuid_hex": str}}``;
            files absent (unreadable) are not run.
        processor: the coffea processor instance.
        client: ``distributed.Client``; ``None`` (default): in this process.
        ex: :class:`jettracks.config.ExecutorConfig` (uses ``chunksize`` (entries),
            ``retries`` (extra attempts), ``xrootd_timeout`` (seconds), ``batch_mb`` and
            the ``cache`` options: :func:`reading_options`).
        branches: branches that may be read; ``None`` (default): all.
        checkpointer: :class:`jettracks.io.checkpoints.RunCheckpointer`; ``None`` (default): none.
        progress: draw a progress bar (default False).
        transfer_bytes: ML parts and checkpoints through Dask, at most this many bytes of
            parts a chunk (workers that do not see the output directory); ``None``: the
            workers write them (default).
        on_output: called with each finished chunk's output (:meth:`Engine.run`); ``None``: nothing.

    Raises:
        ValueError: unknown engine name.
    """
    try:
        return _run(name, fileset, meta, processor, client=client, ex=ex, branches=branches,
                    checkpointer=checkpointer, progress=progress, transfer_bytes=transfer_bytes,
                    on_output=on_output)
    finally:  # the files kept open for later chunks (jettracks.engines.handles)
        close_open_files(client)


def close_open_files(client: Any = None) -> None:
    """Close the files kept open by :mod:`jettracks.engines.handles` here and, with a
    client, in every worker (fire and forget: a worker that is gone is not waited for)."""
    from . import handles

    handles.close_all()
    if client is not None and getattr(client, "status", "running") == "running":  # else it would wait to connect
        try:
            client.run(_close_all_async, wait=False)
        except Exception:  # noqa: BLE001 - an idle handle left open costs nothing but memory
            pass


async def _close_all_async() -> int:  # client.run(wait=False) takes coroutine functions only
    """:func:`handles.close_all` in a worker, on a thread: each close is a round trip (up to
    the XRootD request timeout on a broken connection), and on the worker's event loop it
    would hold up the next run's first tasks and the worker's heartbeats meanwhile."""
    import asyncio

    from . import handles

    return await asyncio.get_running_loop().run_in_executor(None, handles.close_all)


def _run(name, fileset, meta, processor, *, client, ex, branches, checkpointer, progress,
         transfer_bytes=None, on_output=None) -> EngineResult:
    return get_engine(name).run(
        fileset,
        meta,
        processor,
        client=client,
        chunksize=int(ex.chunksize),
        retries=int(ex.retries),
        branches=branches,
        checkpointer=checkpointer,
        progress=progress,
        xrootd_timeout=ex.xrootd_timeout,
        transfer_bytes=transfer_bytes,
        reading=reading_options(ex),
        on_output=on_output,
    )


def reading_options(ex: Any) -> dict[str, Any]:
    """:class:`ChunkReader` settings from an executor config: sub-batch size and column cache."""
    import os

    from .reading import DEFAULT_BATCH_BYTES

    cache = getattr(ex, "cache", None)
    compression = getattr(ex, "cache_compression", "none")
    batch_mb = getattr(ex, "batch_mb", None)
    return {
        "batch_bytes": int(float(batch_mb) * (1 << 20)) if batch_mb is not None else DEFAULT_BATCH_BYTES,
        "cache_dir": (cache if "://" in cache else os.path.abspath(os.path.expanduser(cache))) if cache else None,
        "cache_max_bytes": int(float(getattr(ex, "cache_max_gb", 20.0)) * 1e9),
        "cache_compression": None if compression in (None, "none") else compression,
    }


def smoke_test(scheduler: Any = "sync") -> None:
    """The dask-awkward stack check (:func:`jettracks.engines.dask_awkward.smoke_test`)."""
    from .dask_awkward import smoke_test as _smoke_test

    _smoke_test(scheduler)
