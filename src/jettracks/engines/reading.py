"""Reading a chunk by its column plan, in sub-batches of bounded memory.

When a processor declares its column plan (``processor.columns(format)``: the
branches its configured outputs need), a chunk is not opened as lazy NanoEvents
but read explicitly:

* one ``uproot.open`` per chunk; every planned branch is read, nothing else;
* **light** branches (event ids, jet kinematics: under :data:`LIGHT_BYTES_PER_ENTRY`
  uncompressed bytes an entry) are read once for the whole chunk, in one call;
* **heavy** branches (PF candidates: ~7.6 kB an event at ~1,900 candidates;
  the JetNtuple's ``PF_*``: ~400 B a jet)
  are read in **sub-batches** of about ``batch_bytes`` uncompressed bytes, whose
  boundaries are basket boundaries of the heaviest branch, so no heavy basket is
  decompressed twice and a chunk's memory does not grow with its size;
* each sub-batch is handed to ``processor.process`` as a :class:`ChunkColumns`
  (a mapping branch -> awkward array with ``metadata`` and ``fields``, like
  NanoEvents under ``BaseSchema``); the outputs are summed by the caller.

A sub-batch's ``metadata`` is the chunk's with ``entrystart``/``entrystop`` of the
sub-batch (per-part names stay unique), plus ``previous_entry``: the ids (``run``,
``luminosityBlock``/``lumi``, ``event``) of the entry just before the sub-batch,
which formats with one entry per jet need to count each event once (absent for a
sub-batch that begins its file).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ChunkColumns", "LIGHT_BYTES_PER_ENTRY", "DEFAULT_BATCH_BYTES", "batch_bounds", "read_batches"]

#: Branches with fewer uncompressed bytes an entry than this are read for the whole chunk at once.
LIGHT_BYTES_PER_ENTRY = 64

#: Target uncompressed bytes of the heavy branches in one sub-batch (16 MiB: ~300 events
#: of 7 PF-candidate branches at ~1,900 candidates an event). Measured on such events,
#: one 1,500-event chunk: a chunk's resident memory grows by ~2.2x this (35 MB; 130 MB
#: when the whole chunk is read at once), at the same CPU time within noise.
DEFAULT_BATCH_BYTES = 16 << 20

#: Branches that identify an entry (the last one of a sub-batch becomes ``previous_entry``).
_ID_BRANCHES = ("run", "luminosityBlock", "lumi", "event")


class ChunkColumns(Mapping):
    """One sub-batch: branch name -> awkward array, with ``metadata`` like NanoEvents.

    Attributes:
        metadata: the chunk's ``events.metadata`` with the sub-batch's entry range.
    """

    def __init__(self, arrays: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        self._arrays = dict(arrays)
        self.metadata = dict(metadata)

    @property
    def fields(self) -> list[str]:
        return list(self._arrays)

    def __getitem__(self, name: str) -> Any:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        meta = self.metadata
        return f"<ChunkColumns {meta.get('filename')} [{meta.get('entrystart')}, {meta.get('entrystop')}) {len(self)} branches>"


@dataclass(frozen=True)
class _BranchSize:
    name: str
    bytes_per_entry: float


def _sizes(tree: Any, names: Sequence[str]) -> list[_BranchSize]:
    n = max(int(tree.num_entries), 1)
    return [_BranchSize(b, float(tree[b].uncompressed_bytes) / n) for b in names]


def batch_bounds(
    basket_entries: np.ndarray, start: int, stop: int, *, bytes_per_entry: float, batch_bytes: int
) -> list[tuple[int, int]]:
    """Sub-batch ranges of ``[start, stop)`` cut at basket boundaries of the heaviest branch.

    Args:
        basket_entries: the branch's basket boundaries (``fBasketEntry``: first entry of
            each basket, then the number of entries).
        start, stop: the chunk's entry range.
        bytes_per_entry: uncompressed bytes an entry of all heavy branches together.
        batch_bytes: target uncompressed bytes of a sub-batch.

    A sub-batch ends at the first basket boundary at or after ``batch_bytes`` worth of
    entries (at least one basket); the last ends at ``stop``.
    """
    if stop <= start:
        return [(start, stop)]
    step = max(int(batch_bytes // max(bytes_per_entry, 1.0)), 1)
    edges = np.asarray(basket_entries, dtype=np.int64)
    edges = edges[(edges > start) & (edges < stop)]
    out: list[tuple[int, int]] = []
    lo = start
    while lo < stop:
        want = lo + step
        later = edges[edges >= want]
        hi = int(later[0]) if len(later) else stop
        out.append((lo, hi))
        lo = hi
    return out


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


@contextlib.contextmanager
def read_batches(
    source: Any,
    metadata: Mapping[str, Any],
    columns: Sequence[str],
    *,
    entry_start: int,
    entry_stop: int,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> Iterator[Iterator[ChunkColumns]]:
    """Sub-batches of one chunk of an open TTree (see the module docstring).

    Args:
        source: the uproot ``TTree``.
        metadata: the chunk's ``events.metadata``.
        columns: the branches to read (the column plan).
        entry_start, entry_stop: the chunk.
        batch_bytes: target uncompressed bytes of the heavy branches in a sub-batch.

    Yields an iterator of :class:`ChunkColumns`; arrays of a sub-batch are dropped
    before the next is read.
    """
    # Optional branches a file lacks are simply not read (the reader's ``check`` names
    # any required one that is missing).
    names = [b for b in dict.fromkeys(columns) if b in source]
    sizes = _sizes(source, names)
    light = [s.name for s in sizes if s.bytes_per_entry < LIGHT_BYTES_PER_ENTRY]
    heavy = [s for s in sizes if s.bytes_per_entry >= LIGHT_BYTES_PER_ENTRY]

    def batches() -> Iterator[ChunkColumns]:
        whole = source.arrays(light, entry_start=entry_start, entry_stop=entry_stop, how=dict) if light else {}
        if heavy:
            top = max(heavy, key=lambda s: s.bytes_per_entry)
            branch = source[top.name]
            basket_entries = np.asarray(branch.member("fBasketEntry")[: branch.num_baskets + 1])
            ranges = batch_bounds(
                basket_entries, entry_start, entry_stop,
                bytes_per_entry=sum(s.bytes_per_entry for s in heavy), batch_bytes=batch_bytes,
            )
        else:
            ranges = [(entry_start, entry_stop)]
        # The entry before the chunk, from the file already open: a format with one entry
        # per jet counts an event in the chunk holding its first jet.
        ids = [b for b in _ID_BRANCHES if b in light]
        previous: dict[str, Any] | None = None
        if entry_start > 0 and ids:
            row = source.arrays(ids, entry_start=entry_start - 1, entry_stop=entry_start, how=dict)
            previous = {b: _scalar(row[b][0]) for b in ids}
        for lo, hi in ranges:
            arrays: dict[str, Any] = {}
            if heavy:
                arrays.update(source.arrays([s.name for s in heavy], entry_start=lo, entry_stop=hi, how=dict))
            for name, array in whole.items():
                arrays[name] = array[lo - entry_start : hi - entry_start]
            meta = {**metadata, "entrystart": lo, "entrystop": hi}
            if previous is not None:
                meta["previous_entry"] = previous
            ids = [b for b in _ID_BRANCHES if b in arrays]
            if hi > lo and ids:
                previous = {b: _scalar(arrays[b][-1]) for b in ids}
            yield ChunkColumns(arrays, meta)
            del arrays

    yield batches()
