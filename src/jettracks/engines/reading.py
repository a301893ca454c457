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

Writing to a column cache never fails a chunk: the cache only saves time. When a write
to it fails (a full disk, a read-only or vanished directory), the chunk's unfinished
entries are dropped, the chunk goes on from its file, and the iterator's ``notices`` say
so (the engine adds them to the chunk's output).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "ChunkColumns", "DEFAULT_BATCH_BYTES", "LIGHT_BYTES_PER_ENTRY", "SubBatches", "batch_bounds", "read_batches",
    "tree_layout",
]

#: Branches with fewer uncompressed bytes an entry than this are read for the whole chunk at once.
LIGHT_BYTES_PER_ENTRY = 64

#: Target uncompressed bytes of the heavy branches in one sub-batch (64 MiB: ~520 events
#: at ~1,900 PF candidates an event with the ML columns' 16 branches; ``executor.batch_mb``).
#: A chunk's resident memory grows by ~2x this. Each sub-batch has a fixed cost of ~60 ms
#: (array bookkeeping, one ML part), which at 16 MiB was half of a rerun from the column
#: cache; 16 -> 64 MiB on 3,000 such events: first run -7% CPU, cached rerun -45%,
#: peak memory 410 -> 510 MB.
DEFAULT_BATCH_BYTES = 64 << 20

#: Branches that identify an entry (the last one of a sub-batch becomes ``previous_entry``).
_ID_BRANCHES = ("run", "luminosityBlock", "lumi", "event")


class SubBatches:
    """The iterator of a chunk's :class:`ChunkColumns` that :func:`read_batches` yields.

    Attributes:
        notices: what the column cache could not do for this chunk (read after the
            ``with`` block: the cache's entries are committed when it ends).
    """

    def __init__(self, batches: Iterator[ChunkColumns], notices: list[str]) -> None:
        self._batches, self.notices = batches, notices

    def __iter__(self) -> Iterator[ChunkColumns]:
        return self._batches

    def __next__(self) -> ChunkColumns:
        return next(self._batches)


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


def tree_layout(source: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """What planning a chunk needs of a tree, JSON-able (the column cache stores it).

    ``num_entries``; ``bytes_per_entry`` (uncompressed bytes / entries) of the branches
    ``names`` that the tree has (``None``: every branch); ``basket_entries``
    (``fBasketEntry``: basket boundaries) of those that are heavy.
    """
    n = max(int(source.num_entries), 1)
    if names is None:  # every branch, under its full path and its own name (uproot accepts both)
        wanted = [(path, branch) for path, branch in source.iteritems(recursive=True, full_paths=True)]
        wanted += [(branch.name, branch) for _, branch in wanted]
    else:
        wanted = [(b, source[b]) for b in names if b in source]
    sizes: dict[str, float] = {}
    baskets: dict[str, list[int]] = {}
    for name, branch in wanted:
        if name in sizes:
            continue
        sizes[name] = float(branch.uncompressed_bytes) / n
        if sizes[name] >= LIGHT_BYTES_PER_ENTRY:
            baskets[name] = [int(x) for x in branch.member("fBasketEntry")[: branch.num_baskets + 1]]
    return {
        "num_entries": int(source.num_entries), "complete": names is None,
        "bytes_per_entry": sizes, "basket_entries": baskets,
    }


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
    open_tree: Callable[[], Any],
    metadata: Mapping[str, Any],
    columns: Sequence[str],
    *,
    entry_start: int,
    entry_stop: int,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    cache: Any = None,
    layout: Mapping[str, Any] | None = None,
    any_int_width: frozenset[str] = frozenset(),
) -> Iterator[Iterator[ChunkColumns]]:
    """Sub-batches of one chunk of a TTree (see the module docstring).

    Args:
        open_tree: returns the uproot ``TTree``; called only when something must be read
            from the file (never for a chunk the column cache holds entirely).
        metadata: the chunk's ``events.metadata`` (``fileuuid`` and ``treename`` key the cache).
        columns: the branches to read (the column plan); branches the tree lacks are skipped.
        entry_start, entry_stop: the chunk.
        batch_bytes: target uncompressed bytes of the heavy branches in a sub-batch.
        cache: a :class:`~jettracks.io.column_cache.ColumnCache`, or None. Columns it holds
            are read from it; the others are read from the file and written to it, committed
            when the chunk is done (an interrupted chunk leaves nothing).
        layout: the tree's stored layout when the caller has read it from the cache already
            (:func:`tree_layout`); ``None``: read here (or measured from the file).
        any_int_width: branches the caller takes at any integer width: the cache serves
            them in its stored (possibly narrower) type, unwidened; from the file they come
            as stored there.

    Yields an iterator of :class:`ChunkColumns`; arrays of a sub-batch are dropped
    before the next is read.
    """
    key = None
    if cache is not None and metadata.get("fileuuid"):
        from ..io.column_cache import ChunkKey

        key = ChunkKey(str(metadata["fileuuid"]), str(metadata.get("treename", "")), entry_start, entry_stop)
    tree: list[Any] = []
    writers: dict[str, Any] = {}  # branch -> ColumnWriter of the columns the cache lacks
    notices: list[str] = []

    def cache_write(write: Callable[[], Any]) -> None:
        """One write to the cache; on failure the chunk stops caching (see the module docstring)."""
        try:
            write()
        except OSError as err:
            for w in writers.values():
                w.abort()  # never raises an I/O error
            writers.clear()
            # errno's own words: pyarrow's strerror wraps them in its context
            reason = os.strerror(err.errno) if err.errno else (err.strerror or str(err))
            notices.append(f"column cache {cache.root}: not written ({reason}); chunks read from their files")

    def source() -> Any:
        if not tree:
            tree.append(open_tree())
        return tree[0]

    if layout is None and key is not None:
        layout = cache.layout(key.fileuuid, key.treename)
    if layout is None or int(layout.get("num_entries", -1)) < entry_stop:
        # Without a cache only the planned branches are measured (a NanoAOD has ~1,500).
        layout = tree_layout(source(), None if key is not None else list(columns))
        if key is not None:
            cache_write(lambda: cache.save_layout(key.fileuuid, key.treename, layout))
    elif not layout.get("complete") and any(b not in layout["bytes_per_entry"] for b in columns):
        # A name the stored layout does not list (an alias uproot resolves, or a branch the
        # file lacks): ask the file.
        extra = tree_layout(source(), [b for b in columns if b not in layout["bytes_per_entry"]])
        layout["bytes_per_entry"].update(extra["bytes_per_entry"])
        layout["basket_entries"].update(extra["basket_entries"])
    sizes = layout["bytes_per_entry"]
    # Optional branches a file lacks are simply not read (the reader's ``check`` names
    # any required one that is missing).
    names = [b for b in dict.fromkeys(columns) if b in sizes]
    light = [b for b in names if sizes[b] < LIGHT_BYTES_PER_ENTRY]
    heavy = [b for b in names if sizes[b] >= LIGHT_BYTES_PER_ENTRY]
    if heavy:
        top = max(heavy, key=lambda b: sizes[b])
        ranges = batch_bounds(
            np.asarray(layout["basket_entries"].get(top, [])), entry_start, entry_stop,
            bytes_per_entry=sum(sizes[b] for b in heavy), batch_bytes=batch_bytes,
        )
    else:
        ranges = [(entry_start, entry_stop)]
    cached = {b: cache.get(key, b) for b in names} if key is not None else {}
    if key is not None and not notices:  # a write failed already: no more for this chunk
        writers.update((b, cache.writer(key, b)) for b in names if cached.get(b) is None)

    def fetch(branches: list[str], lo: int, hi: int) -> dict[str, Any]:
        out = {b: cached[b].read(lo, hi, widen=b not in any_int_width) for b in branches if cached.get(b) is not None}
        rest = [b for b in branches if b not in out]
        if rest:
            read = source().arrays(rest, entry_start=lo, entry_stop=hi, how=dict)
            for b in rest:
                if b in writers:
                    cache_write(lambda b=b: writers[b].append(read[b], lo, hi))
            out.update(read)
        return out

    def previous_ids() -> dict[str, Any] | None:
        ids = [b for b in _ID_BRANCHES if b in light]
        if entry_start <= 0 or not ids:
            return None
        if key is not None:
            stored = cache.previous_ids(key)
            if stored is not None and set(stored) >= set(ids):
                return stored
        row = source().arrays(ids, entry_start=entry_start - 1, entry_stop=entry_start, how=dict)
        found = {b: _scalar(row[b][0]) for b in ids}
        if key is not None:
            cache_write(lambda: cache.save_previous_ids(key, found))
        return found

    complete: list[bool] = []

    def batches() -> Iterator[ChunkColumns]:
        whole = fetch(light, entry_start, entry_stop) if light else {}
        # The entry before the chunk: a format with one entry per jet counts an event in
        # the chunk holding its first jet.
        previous = previous_ids()
        for lo, hi in ranges:
            arrays: dict[str, Any] = fetch(heavy, lo, hi) if heavy else {}
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
        complete.append(True)

    batch_iter = SubBatches(batches(), notices)
    try:
        yield batch_iter
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    else:
        # Published only when the whole chunk was read: a cache entry always covers its range.
        if not complete:
            for w in writers.values():
                w.abort()
        elif writers:
            for b in list(writers):
                if b in writers:  # a failed commit drops the others
                    cache_write(writers[b].commit)
            if writers:  # every entry published
                cache_write(cache.evict)
