"""The ``dask-awkward`` engine: one ``dask_awkward.from_map`` collection, one partition per chunk.

The partition function is :func:`jettracks.engines.base.run_chunk` on the chunk:
it reads the chunk (NanoEvents, as the ``runner`` engine does) *inside* the
guard, so an unreadable chunk becomes a ``failed`` record instead of failing the
compute, and it handles checkpoints and retries. Each partition is one row: the
pickled ``(processor output, ChunkRecord)``. The partitions are computed
(``client.compute`` with a client, else the sync scheduler, one partition at a
time) and the processor's own outputs summed on the client as they arrive, so
every histogram has one definition: the processor's.

The collection's form is given (``meta``), so dask-awkward never calls the
function on a typetracer and does no column projection: reading is the
processor's business (virtual arrays read the branches it touches).
"""

from __future__ import annotations

import contextlib
import uuid as uuidlib
import warnings
from collections.abc import Iterator
from typing import Any

import awkward as ak
import cloudpickle

from .base import ChunkRecord, ChunkSpec, Engine, gather, run_chunk

__all__ = ["DaskAwkwardEngine", "DaskAwkwardEngineError", "smoke_test"]


class DaskAwkwardEngineError(RuntimeError):
    """The installed dask-awkward stack cannot compute (see :func:`smoke_test`)."""


# -- smoke test ------------------------------------------------------------------------------
def smoke_test(scheduler: Any = "sync") -> None:
    """A minimal dask-awkward compute (map_partitions + reduction + ``hist.dask`` fill).

    Why: an unpinned resolver once picked dask-awkward 2025.3.0 with
    dask 2026.x, where *every* dask-awkward compute fails ("Cannot fuse tasks with
    multiple outputs") while ``pip check`` is clean.

    Args:
        scheduler: ``"sync"`` (default) or a ``distributed.Client``.

    Raises:
        DaskAwkwardEngineError: naming the installed versions, when such a stack is installed.
    """
    import dask
    import dask_awkward as dak
    import hist
    import hist.dask  # noqa: F401  (not imported by `import hist`)

    try:
        arr = dak.from_awkward(ak.Array([[1.0, 2.0], [], [3.0], [4.0, 5.0]]), npartitions=2)
        doubled = dak.map_partitions(_double, arr, label="smoke-double")
        h = hist.dask.Hist(hist.axis.Regular(5, 0, 20, name="x"))
        h.fill(x=dak.flatten(doubled))
        total, counts = dask.compute(dak.sum(doubled), h, scheduler=scheduler)
    except Exception as err:  # pragma: no cover - only on a broken stack
        raise DaskAwkwardEngineError(
            f"dask-awkward smoke test failed ({err.__class__.__name__}: {err}); "
            f"versions: {_versions()}; install coffea[dask,dask-awkward] (its extras pin a working dask)"
        ) from err
    if float(total) != 30.0 or counts.sum() != 5:  # pragma: no cover
        raise DaskAwkwardEngineError(
            f"dask-awkward smoke test gave wrong results (sum {total}, entries {counts.sum()}); "
            f"versions: {_versions()}"
        )


def _double(a):
    return a * 2


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("dask", "distributed", "dask-awkward", "dask-histogram", "awkward", "coffea"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} absent")
    return ", ".join(out)


# -- the partition function ---------------------------------------------------------------------
class _ChunkPartition:
    """``from_map`` function: ``spec -> one-row array`` holding the pickled ``(output, record)``.

    Pickled bytes rather than awkward fields: the processor's output (histograms, sets,
    nested dicts) is any accumulatable, summed on the client with coffea's rules.

    The processor is held cloudpickled, as coffea's executors send it: a processor whose
    package is registered by value (``cluster.ship_processors``) then reaches workers that
    lack the package (distributed pickles a graph's callables by reference).
    """

    def __init__(self, processor: Any, read_events: Any, checkpointer: Any, retries: int) -> None:
        self.processor = cloudpickle.dumps(processor)
        self.read_events = read_events
        self.checkpointer = checkpointer
        self.retries = int(retries)

    def __call__(self, spec: ChunkSpec) -> ak.Array:
        processor = cloudpickle.loads(self.processor)
        result = run_chunk(processor, spec, self.read_events, self.checkpointer, self.retries)
        return ak.Array([cloudpickle.dumps(result)])


def _meta() -> ak.Array:
    """The collection's form (a length-unknown array of bytes), so nothing runs at graph time."""
    return ak.Array(ak.Array([b""]).layout.to_typetracer(forget_length=True))


def _unpack(part: ak.Array) -> tuple[Any, ChunkRecord]:
    return cloudpickle.loads(part[0])


# -- the engine -----------------------------------------------------------------------------------
class DaskAwkwardEngine(Engine):
    """Chunks as the partitions of one dask-awkward collection; see the module docstring."""

    name = "dask-awkward"

    def process_chunks(self, specs, processor, *, reader, checkpointer, retries, client, done) -> None:
        with _quiet_sync(client):
            smoke_test(client if client is not None else "sync")
        parts = self.graph(specs, processor, reader, checkpointer, retries)
        if client is None:  # one partition at a time, in this process
            for i, part in enumerate(parts):
                with _quiet_sync(client):
                    done(i, *_unpack(part.compute(scheduler="sync")))
            return
        gather(client, client.compute(parts), specs, done, unpack=_unpack)

    @staticmethod
    def graph(specs: list[ChunkSpec], processor: Any, read_events: Any, checkpointer: Any,
              retries: int) -> list[Any]:
        """The lazy collection, as one ``dask.delayed`` per partition (chunk), in plan order.

        The token is fresh per call: a rerun on the same client must re-read (a resume,
        a changed file), never reuse cached results (identical task keys get the client's cached results).
        """
        import dask_awkward as dak

        collection = dak.from_map(
            _ChunkPartition(processor, read_events, checkpointer, retries),
            specs,
            label="jettracks-chunk",
            token=uuidlib.uuid4().hex,
            meta=_meta(),
        )
        return collection.to_delayed()


@contextlib.contextmanager
def _quiet_sync(client: Any) -> Iterator[None]:
    """Silence dask's "single-machine scheduler while a distributed client is active" warning
    when the caller asked for in-process execution (``client=None``) on purpose."""
    if client is not None:
        yield
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Running on a single-machine scheduler", category=UserWarning)
        yield
