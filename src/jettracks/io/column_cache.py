"""The column cache: decompressed branches of the chunks a run read, for the next run.

A physicist reruns the same files with another cut; decompressing LZMA PFNano is
most of a run (~1 ms an event). With ``executor.cache: DIR`` the workers store
every column they read, and later runs read it back instead of the ROOT file
(only branches the cache lacks come from the file; a fully cached chunk does not
open the file at all).

``DIR`` is a directory every worker sees: local, on a shared file system, or on an
XRootD server (a ``root://`` URL, for workers on hosts without a shared file system; a
remote entry is downloaded whole instead of memory-mapped, and the server cannot set a
file's mtime, so a remote cache evicts in the order entries were written).

Layout of ``DIR``::

    .jettracks-cache                       marker: jettracks clears only directories with it
    <uuid>/<tree>/layout.json              entries, bytes per entry and basket boundaries
    <uuid>/<tree>/<start>-<stop>/<branch>.arrow   one column of one chunk (Arrow IPC file,
                                            one record batch per sub-batch)
    <uuid>/<tree>/<start>-<stop>/<branch>.json    its size and XXH3-64 checksum: written last
                                            (and, for an integer column stored narrower
                                            than the file's type, how: :class:`Narrowing`;
                                            its checksum is then ``xxh3_64_narrowed``)

Keys: the file's UUID (a changed file has a new UUID: it misses), the tree path,
the chunk's entry range and the branch name. Correctness rules:

* an entry is used only when its ``.json`` exists and the ``.arrow`` file has
  exactly the recorded size and XXH3-64 checksum (``xxhash``, an uproot dependency;
  ~20 GB/s here against ~4 GB/s for zlib's CRC-32, which was 10% of a cached rerun):
  a truncated or corrupted entry is
  discarded (both files removed) and the column is read from the ROOT file;
* every file is written under a temporary name and renamed (:mod:`.atomic`), the
  checksum record last, so concurrent writers of one entry are safe: the last
  rename wins and a reader sees either a complete pair or a mismatch it discards;
* size-bounded: after a chunk is written, least-recently-used entries (by the
  checksum record's mtime, refreshed on every hit) are removed until the cache
  holds at most ``max_bytes``;
* a process keeps the memory maps of the local entries it read (up to
  :data:`KEEP_MAPPED_BYTES`), so the next run on the same workers does not map them
  again; a kept map is used only while the path names the same file, and the
  checksum is verified on every read all the same (:class:`_KeptMaps`).

Integer columns whose values fit a narrower type are stored so and widened on read
(:class:`Narrowing`): PFNano's four per-candidate flags take 1 byte a value instead of 4,
25% of a PFNano cache (94.6 -> 71.0 kB an event with the ML columns).

Format, measured on PFNano candidates (300 events, ``PFCands_pt``): Arrow IPC
uncompressed 2.31 MB read in 0.40 ms, LZ4 1.99 MB in 1.17 ms, ZSTD 1.38 MB in
2.33 ms; ``compression`` chooses (default ``None``: the cache exists for speed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path, write_text_atomic
from .outfs import OutPath, RemotePath, out_path, remove_tree

__all__ = ["MARKER", "CacheError", "CacheInfo", "CachedColumn", "ChunkKey", "ColumnCache", "ColumnWriter", "Narrowing"]

#: The file that marks a directory as a jettracks column cache.
MARKER = ".jettracks-cache"



class CacheError(RuntimeError):
    """A cache directory jettracks cannot use or must not touch (one line)."""


@dataclass(frozen=True)
class ChunkKey:
    """What a cached column belongs to: file UUID, tree path, chunk entry range."""

    fileuuid: str
    treename: str
    entrystart: int
    entrystop: int

    def tree_dir(self, root: OutPath) -> OutPath:
        tree = hashlib.sha1(self.treename.encode()).hexdigest()[:12]
        return root / _safe(self.fileuuid) / tree

    def chunk_dir(self, root: OutPath) -> OutPath:
        return self.tree_dir(root) / f"{self.entrystart}-{self.entrystop}"


def _cache_root(root: str | os.PathLike | RemotePath) -> OutPath:
    """The cache directory: an absolute local path, or a :class:`RemotePath` for a ``root://``
    URL; another URL is refused (``Path`` would make a local directory named after it)."""
    if isinstance(root, RemotePath):
        return root
    text = os.fspath(root)
    if "://" in text:
        try:
            return out_path(text)
        except ValueError:
            raise CacheError(f"cache {text}: only a directory or a root:// URL can hold a column cache") from None
    return Path(text).expanduser().absolute()


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "_"


def _branch_file(branch: str) -> str:
    # Branch names may hold '/', '.', ':' (Delphes, TreeMaker): hash them into a file name.
    return f"{_safe(branch)[:60]}-{hashlib.sha1(branch.encode()).hexdigest()[:10]}"


def _checksum(data: Any) -> int:
    """XXH3-64 (int) of a buffer: a memory-mapped file is hashed in place (no copy through
    ``read()``: ~10 GB/s against ~3 GB/s)."""
    import xxhash

    return xxhash.xxh3_64_intdigest(data)


def _map(path: OutPath) -> Any:
    """The file's bytes as a zero-copy Arrow buffer over a private memory map (a remote
    file: its bytes, downloaded); writable either way. See :func:`_map_local`."""
    import pyarrow as pa

    if isinstance(path, RemotePath):
        return pa.py_buffer(bytearray(path.read_bytes()))
    return _map_local(path)[0]


def _map_local(path: Path) -> tuple[Any, tuple[int, int, int, int]]:
    """A local file's bytes (zero-copy Arrow buffer over a private memory map) and the
    identity of the file mapped: ``(st_dev, st_ino, st_size, st_mtime_ns)`` of its descriptor.

    The map is private and writable (copy on write; ``MAP_PRIVATE`` where the platform has
    it): arrays read from the cache are then writable like those uproot reads, so numba
    kernels see one array type whichever the source (a read-only array is another type: a
    worker's first cached run loaded each kernel's second specialization from numba's cache,
    the association kernel's ~30 ms a worker in a profile), and a processor that writes into
    its input changes its own copy of a page, never the file. Without ``MAP_POPULATE``: on a private writable map it would copy every
    page; the faults of reading it cost what populating a shared map does (568 MB of
    entries mapped and checksummed: 0.049 s either way).

    A private writable map counts against the commit limit where the kernel enforces one
    (``vm.overcommit_memory=2``, on some batch nodes); refused there (``ENOMEM``), the file
    is mapped shared and read-only instead: the same bytes, read-only arrays.
    """
    import errno
    import mmap

    import pyarrow as pa

    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if st.st_size == 0:  # mmap refuses an empty file (its checksum fails)
            return pa.py_buffer(b""), identity
        try:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_COPY)
        except OSError as err:
            if err.errno != errno.ENOMEM:
                raise
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return pa.py_buffer(mapped), identity  # the buffer keeps the map alive while arrays use it


#: The checksum's key in an entry's record; a narrowed entry's names it otherwise, so a
#: jettracks that does not know narrowing (reading the stored type as the file's) finds no
#: checksum and discards the entry instead of serving it.
_CHECKSUM, _CHECKSUM_NARROWED = "xxh3_64", "xxh3_64_narrowed"

#: Bytes of cache entries a process keeps mapped between chunks and runs (:class:`_KeptMaps`).
KEEP_MAPPED_BYTES = 1 << 30
#: At most this many entries kept mapped: each map holds a file descriptor (Python's
#: ``mmap`` keeps a duplicate), and small entries must not take a process past the usual
#: 1,024 soft limit (or ``select()``'s): ~10 PFNano chunks of 1,000 events.
KEEP_MAPPED_FILES = 256


#: A value not computed yet (``None`` is a result: a column without a plain form).
_UNKNOWN = object()


@dataclass
class _Mapped:
    """A local entry's memory map, the identity of the file mapped, and its Arrow IPC reader
    (opened on first read: parsing the file's schema and footer is then done once)."""

    identity: tuple[int, int, int, int]
    data: Any
    reader: Any = None
    #: record batch index -> its column, as the reader built it (an extension type's
    #: metadata is parsed for every array built: ~0.1 ms a column, per sub-batch and run)
    columns: dict[int, Any] = field(default_factory=dict)
    #: the column's :func:`_plain_form`, once known
    form: Any = _UNKNOWN


class _KeptMaps:
    """The memory maps of local cache entries, kept by this process between chunks and runs.

    Mapping a chunk's entries (the page table filled, ~100 MB for 1,000 PFNano events) and
    unmapping them after was two thirds of reading it from the cache (10 of 14.5 ms here;
    the checksum the rest); a worker reading the same entries again (the next run on the same
    cluster, a notebook's next cell) reuses the maps and its opened readers. A map is reused
    only while the path names the same file (device, inode, size and modification time as
    when mapped); the checksum is verified on every use all the same. A map is private: pages
    a processor wrote into (its arrays are writable) fail that check, and the entry is then
    mapped anew from the file before it is judged (:meth:`ColumnCache.get`).

    At most :data:`KEEP_MAPPED_BYTES` in :data:`KEEP_MAPPED_FILES` maps are kept, the least
    recently used dropped first (a map
    arrays still use lives on until they go). Mapped pages count in the process's resident
    memory (they are the page cache's, which the kernel can reclaim), and a kept map of a
    file deleted since (eviction, ``cache clear``) holds its disk blocks until dropped.
    """

    def __init__(self) -> None:
        import threading
        from collections import OrderedDict

        self._maps: OrderedDict[str, _Mapped] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: Path, limit: int = KEEP_MAPPED_BYTES, files: int | None = None) -> _Mapped:
        """The map of ``path``: the kept one when the path still names the file it maps."""
        name = str(path)
        with self._lock:
            kept = self._maps.get(name)
        if kept is not None:
            st = os.stat(path)
            if kept.identity == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):
                with self._lock:
                    if name in self._maps:
                        self._maps.move_to_end(name)
                return kept
            self.forget(path)
        data, identity = _map_local(path)
        mapped = _Mapped(identity, data)
        with self._lock:
            if 0 < data.size <= limit:
                self._drop(name)
                self._maps[name] = mapped
                self._bytes += data.size
            most = KEEP_MAPPED_FILES if files is None else files
            while self._maps and (self._bytes > max(limit, 0) or len(self._maps) > most):  # at once
                self._drop(next(iter(self._maps)))
        return mapped

    def forget(self, path: OutPath) -> None:
        """Drop the kept map of ``path`` (a damaged or removed entry)."""
        with self._lock:
            self._drop(str(path))

    def forget_under(self, root: OutPath) -> None:
        """Drop the kept maps of the entries under ``root`` (a cache being cleared)."""
        prefix = str(root).rstrip("/") + "/"
        with self._lock:
            for name in [n for n in self._maps if n.startswith(prefix)]:
                self._drop(name)

    def _drop(self, name: str) -> None:
        mapped = self._maps.pop(name, None)
        if mapped is not None:
            self._bytes -= mapped.data.size


_KEPT = _KeptMaps()


class _Records:
    """Parsed entry records, kept by this process while the path names the same file.

    Reading and parsing a record took 28 us against 1 us for a ``stat``, for each of a
    PFNano chunk's ~26 entries on every read. A record is only ever replaced whole (an atomic
    rename: a new inode), and its modification time is the entry's last use (``get``
    touches it), so the file is identified by device, inode and size. A record rewritten in
    place at the same size would still be judged by the checksum it held before: its column
    is then served only if it is intact against that.
    """

    LIMIT = 1 << 16

    def __init__(self) -> None:
        import threading
        from collections import OrderedDict

        self._records: OrderedDict[str, tuple[tuple[int, int, int], dict]] = OrderedDict()
        self._lock = threading.Lock()  # a worker's threads share it

    def read(self, path: Path) -> dict:
        """The record at ``path`` (``json``); raises ``OSError``/``ValueError`` as reading would."""
        st = os.stat(path)
        identity = (st.st_dev, st.st_ino, st.st_size)
        with self._lock:
            kept = self._records.get(str(path))
        if kept is not None and kept[0] == identity:
            return kept[1]
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError(f"{path}: not a record")
        with self._lock:
            self._records[str(path)] = (identity, record)
            while len(self._records) > self.LIMIT:
                self._records.popitem(last=False)
        return record

    def forget(self, path: OutPath) -> None:
        with self._lock:
            self._records.pop(str(path), None)


_RECORDS = _Records()


@dataclass
class CachedColumn:
    """A validated cache entry: one column of one chunk, read by entry range.

    Attributes:
        path: the Arrow IPC file.
        batches: ``[start, stop)`` entry ranges of its record batches, in order.
        data: the file's bytes (a memory map, validated against the checksum record).
        mapped: the kept map :attr:`data` comes from (a local entry), whose reader is shared.
        narrowed: how the entry stores a narrowed integer column (:class:`Narrowing`), or None.
    """

    path: OutPath
    batches: list[tuple[int, int]]
    data: Any = None
    mapped: _Mapped | None = None
    narrowed: Narrowing | None = None
    _reader: Any = field(default=None, init=False, repr=False)
    _bytes: Any = field(default=None, init=False, repr=False)

    def read(self, start: int, stop: int, *, widen: bool = True) -> Any:
        """Entries ``[start, stop)`` as an awkward array (only the overlapping batches are read).

        Args:
            start, stop: the entry range.
            widen: a narrowed integer column (:class:`Narrowing`) comes back in the file's
                type (default); False: in its stored, narrower type, zero-copy, for a reader
                that declared it takes the branch at any integer width
                (``Reader.any_int_width``). Widening allocates the whole column: most of a
                cached PFNano chunk's fresh memory.
        """
        import awkward as ak
        import pyarrow as pa

        parts = []
        # Opened once for all the chunk's sub-batches (and, over a kept map, for later runs).
        # The arrays share the mapped buffers (zero-copy), which keep the mapping alive for as
        # long as they live.
        if self._reader is None and self.mapped is not None:
            if self.mapped.reader is None:
                self.mapped.reader = pa.ipc.open_file(self.mapped.data)
            self._reader = self.mapped.reader
        elif self._reader is None:
            self._reader = pa.ipc.open_file(self.data if self.data is not None else _map(self.path))
        reader = self._reader
        built = self.mapped.columns if self.mapped is not None else {}
        for i, (lo, hi) in enumerate(self.batches):
            if start == stop and lo <= start <= hi:  # an empty range (a file without entries)
                column = reader.get_batch(i).column(0)
                if self.narrowed is not None:
                    return self.narrowed.widen(column.slice(0, 0), cast=widen)
                return ak.from_arrow(column)[0:0]
            if hi <= start or lo >= stop:
                continue
            column = built.get(i)
            if column is None:
                column = built[i] = reader.get_batch(i).column(0)
            begin = max(start - lo, 0)
            parts.append(column.slice(begin, min(stop, hi) - lo - begin))
        if not parts:
            raise CacheError(f"{self.path}: no batch covers entries [{start}, {stop})")
        # Joined as Arrow arrays (one buffer copy), then one conversion: ak.concatenate of
        # jagged arrays was a third of reading a sub-batch from the cache.
        joined = parts[0] if len(parts) == 1 else pa.concat_arrays(parts)  # concat: new, writable
        memory = self._memory() if len(parts) == 1 else None
        if self.narrowed is not None:
            return self.narrowed.widen(joined, memory, cast=widen)
        if self.mapped is not None and self.mapped.form is _UNKNOWN and len(joined) and joined.null_count == 0:
            self.mapped.form = _plain_form(joined)  # one type an entry: known once
        return arrow_to_awkward(joined, memory, form=_UNKNOWN if self.mapped is None else self.mapped.form)

    def _memory(self) -> Any:
        """The entry's bytes as a writable numpy ``uint8`` array (see :func:`_numbers`)."""
        if self._bytes is None:
            data = self.mapped.data if self.mapped is not None else self.data
            if data is not None and data.is_mutable:
                self._bytes = np.frombuffer(data, dtype=np.uint8)
        return self._bytes


@dataclass(frozen=True)
class Narrowing:
    """An integer column stored in a narrower integer type than the file's, losslessly.

    PFNano's per-candidate flags (``PFCands_charge``, ``_pvAssocQuality``,
    ``_lostInnerHits``, ``_trkQuality``) are 32-bit integers holding values of a few bits:
    a third of a PFNano chunk's cached bytes. An entry whose values all fit a narrower type
    of the same kind (int8/int16 for signed, uint8/uint16 for unsigned) stores them so,
    as plain Arrow (``int8`` or ``list<int8>``, offsets of the file's width), and is read
    back widened to the file's type: the awkward array equals the file's (form and values).
    Writing a fill's columns is mostly the kernel allocating page-cache pages (~3 us a page
    on the VMs measured): fewer bytes, a cheaper first run and a smaller cache.

    Attributes:
        dtype: the file's numpy dtype (``"int32"``...), restored on read.
        stored: the numpy dtype stored.
        offsets: ``"i32"``/``"i64"``: the list offsets' width (a jagged column); None: flat.
    """

    dtype: str
    stored: str
    offsets: str | None

    #: narrower candidate types per kind, narrowest first
    _CANDIDATES = {"i": ("int8", "int16", "int32"), "u": ("uint8", "uint16", "uint32")}

    def __post_init__(self) -> None:  # a record read back is checked as much as its column
        wide, stored = np.dtype(self.dtype), np.dtype(self.stored)
        if (wide.kind not in "iu" or stored.kind != wide.kind or stored.itemsize >= wide.itemsize
                or self.offsets not in (None, "i32", "i64")):
            raise ValueError(f"not a narrowing: {self}")

    @staticmethod
    def parts(array: Any) -> tuple[Any, Any] | None:
        """``(offsets or None, values)`` (numpy, offsets starting at 0 and values exactly
        those they span) of a plain integer awkward array (numbers or a list of numbers,
        no parameters, no missing values) wider than one byte; else None."""
        import awkward as ak

        layout = ak.to_layout(array)
        offsets = None
        if isinstance(layout, ak.contents.ListOffsetArray) and not layout.parameters:
            offsets = np.asarray(layout.offsets.data)
            layout = layout.content
            if len(offsets) and offsets[0] != 0:
                layout = layout[offsets[0] : offsets[-1]]
                offsets = offsets - offsets[0]
            elif len(offsets):
                layout = layout[: offsets[-1]]
        if not (isinstance(layout, ak.contents.NumpyArray) and not layout.parameters
                and layout.data.ndim == 1):
            return None
        values = np.asarray(layout.data)
        if values.dtype.kind not in "iu" or values.dtype.itemsize == 1:
            return None
        return offsets, values

    @classmethod
    def of(cls, parts: tuple[Any, Any] | None) -> Narrowing | None:
        """The narrowing for an array's :meth:`parts` (None: not a plain integer array, or
        no narrower type holds its values)."""
        if parts is None:
            return None
        offsets, values = parts
        lo, hi = _span(values)
        for name in cls._CANDIDATES[values.dtype.kind]:
            if np.dtype(name).itemsize >= values.dtype.itemsize:
                return None
            if _fits(name, lo, hi):
                return cls(values.dtype.name, name, cls._width(offsets))
        return None

    @staticmethod
    def _width(offsets: Any) -> str | None:
        return None if offsets is None else ("i64" if offsets.dtype == np.int64 else "i32")

    def holds(self, parts: tuple[Any, Any] | None) -> bool:
        """Whether an array's :meth:`parts` (of the same form) fit the stored type."""
        if parts is None or parts[1].dtype.name != self.dtype or self._width(parts[0]) != self.offsets:
            return False
        return _fits(self.stored, *_span(parts[1]))

    def to_arrow(self, parts: tuple[Any, Any]) -> Any:
        """The narrowed Arrow array of an array's :meth:`parts` (which :meth:`holds`)."""
        import pyarrow as pa

        offsets, values = parts
        narrow = pa.array(values.astype(self.stored))
        if offsets is None:
            return narrow
        if self.offsets == "i64":
            return pa.LargeListArray.from_arrays(pa.array(offsets), narrow)
        return pa.ListArray.from_arrays(pa.array(offsets), narrow)

    def widen(self, array: Any, memory: Any = None, *, cast: bool = True) -> Any:
        """The awkward array of a stored (narrowed) Arrow array: the file's type again
        (``memory``: the entry's writable bytes, for the offsets; see :func:`_numbers`).
        ``cast=False``: the same values in the stored type, zero-copy (no new memory).

        Widened by Arrow (``pyarrow.compute.cast``), into its memory pool, which reuses its
        pages. numpy's ``astype`` goes through glibc, whose mmap threshold stays at 128 kB
        wherever ``MALLOC_TRIM_THRESHOLD_`` is set (Dask's nannies by default, jettracks'
        batch and gateway workers): fresh pages for every column of every sub-batch, 5x
        slower here (64 widenings of 1M values: 0.23 s against 0.04 s for the cast).
        """
        import awkward as ak

        convert = self._cast if cast else (lambda values: _values(values, np.dtype(self.stored), memory))
        if self.offsets is None:
            return ak.Array(ak.contents.NumpyArray(convert(array)))
        offsets = _list_offsets(array, memory)
        lo, hi = int(offsets[0]), int(offsets[-1])
        content = convert(array.values.slice(lo, hi - lo))  # .values: the whole child
        if lo != 0:
            offsets = offsets - offsets[0]
        index = ak.index.Index64 if self.offsets == "i64" else ak.index.Index32
        return ak.Array(ak.contents.ListOffsetArray(index(offsets), ak.contents.NumpyArray(content)))

    def _cast(self, values: Any) -> Any:
        """A primitive Arrow array of the stored type, as numpy of the file's type."""
        import pyarrow as pa
        import pyarrow.compute as pc

        wide = pc.cast(values, pa.from_numpy_dtype(np.dtype(self.dtype)))
        return _values(wide, np.dtype(self.dtype))


def _span(values: Any) -> tuple[int, int]:
    """``(min, max)`` of integer values as Python ints (``(0, 0)`` when empty)."""
    return (int(values.min()), int(values.max())) if len(values) else (0, 0)


def _fits(dtype: str, lo: int, hi: int) -> bool:
    info = np.iinfo(dtype)
    return info.min <= lo and hi <= info.max


def _list_offsets(storage: Any, memory: Any = None) -> Any:
    """The offsets of an Arrow list array (``list`` or ``large_list``), zero-copy, as far as
    the array's own slice spans (``memory``: see :func:`_numbers`)."""
    import pyarrow as pa

    width = np.int64 if pa.types.is_large_list(storage.type) else np.int32
    return _numbers(storage.buffers()[1], width, storage.offset, len(storage) + 1, memory)


def _numbers(buffer: Any, dtype: Any, first: int, count: int, memory: Any = None) -> Any:
    """``count`` numbers of ``dtype`` from index ``first`` of an Arrow buffer, zero-copy.

    Arrow's IPC reader hands out read-only slices of the entry's bytes even where those are
    writable (a private map): given the entry's bytes as a writable ``uint8`` array
    (``memory``), a buffer lying in it is viewed through it instead, so cached arrays are
    writable like the ones uproot reads (numba compiles a read-only array as another type).
    Any other buffer is viewed as it is.
    """
    dtype = np.dtype(dtype)
    if memory is not None:
        lo = buffer.address - memory.ctypes.data + first * dtype.itemsize
        hi = lo + count * dtype.itemsize
        if 0 <= lo and hi <= memory.size and lo % dtype.alignment == 0:
            return memory[lo:hi].view(dtype)
    return np.frombuffer(buffer, dtype=dtype)[first : first + count]


def arrow_to_awkward(array: Any, memory: Any = None, form: Any = _UNKNOWN) -> Any:
    """``ak.from_arrow(array)`` of one cached column, built straight on its buffers when its
    form is a plain one (numbers, or a list of numbers, without missing values or parameters).

    ``ak.from_arrow`` parses the awkward extension type's JSON at every node of every read
    (~0.5 ms a column, and a sub-batch reads ~16). The form comes from ``ak.from_arrow``
    itself, once per Arrow type (:func:`_plain_form`), so the result's form and values are
    those of ``ak.from_arrow`` (tested on every column of caches built from real files).
    ``memory``: the bytes ``array`` was read from, writable (:func:`_numbers`), or None.
    ``form``: ``array``'s :func:`_plain_form` when the caller knows it (a kept entry's).
    """
    import awkward as ak

    if form is _UNKNOWN:
        form = _plain_form(array) if len(array) and array.null_count == 0 else None
    if form is None or not len(array) or array.null_count:
        return ak.from_arrow(array)
    dtype, offsets_dtype = form
    storage = getattr(array, "storage", array)
    if offsets_dtype is None:
        return ak.Array(ak.contents.NumpyArray(_values(storage, dtype, memory)))
    offsets = _list_offsets(storage, memory)
    child = storage.values
    content = _values(getattr(child, "storage", child), dtype, memory)
    index = ak.index.Index64 if offsets_dtype == "i64" else ak.index.Index32
    offsets = offsets.astype(np.int64 if offsets_dtype == "i64" else np.int32, copy=False)
    return ak.Array(ak.contents.ListOffsetArray(index(offsets), ak.contents.NumpyArray(content)))


def _values(array: Any, dtype: Any, memory: Any = None) -> Any:
    """The numbers of a primitive Arrow array (zero-copy view of its data buffer; ``memory``:
    see :func:`_numbers`)."""
    return _numbers(array.buffers()[1], dtype, array.offset, len(array), memory)


_PLAIN_FORMS: dict[bytes, Any] = {}


def _plain_form(array: Any) -> tuple[Any, str | None] | None:
    """``(numpy dtype, None)`` for numbers, ``(dtype, "i32"|"i64")`` for a list of numbers
    (the offsets' type in ``ak.from_arrow``'s form), None for any other form; cached per
    Arrow type, extension metadata included."""
    import awkward as ak
    import pyarrow as pa

    key = pa.schema([pa.field("values", array.type)]).serialize().to_pybytes()
    if key not in _PLAIN_FORMS:
        form = ak.from_arrow(array.slice(0, 0)).layout.form
        result = None
        if isinstance(form, ak.forms.ListOffsetForm) and not form.parameters:
            inner = _number_dtype(form.content)
            storage = getattr(array.type, "storage_type", array.type)
            if inner is not None and (pa.types.is_list(storage) or pa.types.is_large_list(storage)):
                result = (inner, form.offsets)
        else:
            inner = _number_dtype(form)
            if inner is not None:
                result = (inner, None)
        _PLAIN_FORMS[key] = result
    return _PLAIN_FORMS[key]


def _number_dtype(form: Any) -> Any:
    """The numpy dtype of a plain 1-d NumpyForm of numbers (not bool: Arrow packs bits), else None."""
    import awkward as ak
    import numpy as np

    if isinstance(form, ak.forms.NumpyForm) and not form.parameters and form.inner_shape == ():
        dtype = np.dtype(ak.types.numpytype.primitive_to_dtype(form.primitive))
        if dtype.kind in "iuf":
            return dtype
    return None


class ColumnWriter:
    """Writes one column of one chunk batch by batch; :meth:`commit` publishes it."""

    def __init__(self, cache: ColumnCache, key: ChunkKey, branch: str) -> None:
        self.cache, self.key, self.branch = cache, key, branch
        self._batches: list[tuple[int, int]] = []
        self._writer: Any = None
        self._atomic = atomic_path(cache.column_path(key, branch))
        self._tmp: Path | None = None
        #: the entry's :class:`Narrowing`, chosen from its first batch (None: stored as read)
        self.narrowed: Narrowing | None = None

    def append(self, array: Any, start: int, stop: int) -> None:
        """Add entries ``[start, stop)`` (an awkward array of that length)."""
        import awkward as ak
        import pyarrow as pa

        parts = Narrowing.parts(array) if self.cache.narrow else None
        if self._writer is None:
            self.narrowed = Narrowing.of(parts)
        elif self.narrowed is not None and not self.narrowed.holds(parts):
            self._rewrite_wide()  # a later batch needs the file's type: rare, so done late
        column = ak.to_arrow(array, extensionarray=True) if self.narrowed is None else self.narrowed.to_arrow(parts)
        self._write(pa.RecordBatch.from_arrays([column], ["values"]))
        self._batches.append((int(start), int(stop)))

    def _write(self, batch: Any) -> None:
        import pyarrow as pa

        if self._writer is None:
            if self._tmp is None:
                self._tmp = self._atomic.__enter__()
            options = pa.ipc.IpcWriteOptions(compression=self.cache.compression)
            self._writer = pa.ipc.new_file(str(self._tmp), batch.schema, options=options)
        self._writer.write_batch(batch)

    def _rewrite_wide(self) -> None:
        """Rewrite the batches written so far in the file's type and stop narrowing."""
        import awkward as ak
        import pyarrow as pa

        assert self._tmp is not None and self.narrowed is not None
        narrowed, self.narrowed = self.narrowed, None
        self._writer.close()
        self._writer = None
        with pa.memory_map(str(self._tmp)) as source:
            reader = pa.ipc.open_file(source)
            stored = [narrowed.widen(reader.get_batch(i).column(0)) for i in range(reader.num_record_batches)]
            wide = [pa.RecordBatch.from_arrays([ak.to_arrow(a, extensionarray=True)], ["values"]) for a in stored]
        self._tmp.unlink()
        for batch in wide:
            self._write(batch)

    def commit(self) -> None:
        """Close the file, rename it into place, then write its checksum record.

        On failure (a full disk...) nothing of the entry stays: neither the temporary file
        nor a column without its record."""
        if self._writer is None:
            return
        writer, self._writer = self._writer, None
        assert self._tmp is not None
        try:
            writer.close()
            checksum = _checksum(_map(self._tmp))
            record = {"bytes": self._tmp.stat().st_size, "batches": self._batches, "branch": self.branch}
            if self.narrowed is None:
                record[_CHECKSUM] = checksum
            else:
                record.update({_CHECKSUM_NARROWED: checksum, "narrowed": dataclasses.asdict(self.narrowed)})
        except BaseException:
            self._drop_temporary()
            raise
        try:
            self._atomic.__exit__(None, None, None)  # renamed (or uploaded and renamed) into place
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        try:
            write_text_atomic(self.cache.record_path(self.key, self.branch), json.dumps(record))
        except BaseException:
            self._atomic.path.unlink(missing_ok=True)  # the column, now without its record
            raise

    def abort(self) -> None:
        """Drop the entry being written (its temporary file); never raises an I/O error."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):  # a writer whose disk filled may fail to close
                writer.close()
        if self._tmp is not None:
            self._drop_temporary()

    def _drop_temporary(self) -> None:
        """Remove the temporary file (and, for a ``root://`` cache, its local directory)."""
        with contextlib.suppress(OSError):
            self._atomic.__exit__(RuntimeError, None, None)


@dataclass
class CacheInfo:
    """What a cache directory holds (``python -m runner cache info``)."""

    path: str
    files: int = 0
    columns: int = 0
    bytes: int = 0
    trees: int = 0
    by_branch_bytes: dict[str, int] = field(default_factory=dict)


class ColumnCache:
    """A column cache directory (see the module docstring).

    Args:
        root: the cache directory (a path, or a ``root://`` URL); created (with its marker)
            when absent. An existing non-empty directory without the marker is refused: it
            is not a cache.
        max_bytes: size bound (bytes); ``None``: unbounded.
        compression: Arrow IPC buffer compression, ``None`` (default), ``"lz4"`` or ``"zstd"``.
        keep_mapped_bytes: bytes of entries' memory maps this process keeps between reads
            (:class:`_KeptMaps`; default :data:`KEEP_MAPPED_BYTES`; 0: none).
        narrow: store integer columns whose values fit a narrower type so (:class:`Narrowing`;
            default True). Reading never depends on it: each entry's record says how it is stored.
    """

    def __init__(self, root: str | os.PathLike | RemotePath, *, max_bytes: int | None = None, compression: str | None = None,
                 keep_mapped_bytes: int = KEEP_MAPPED_BYTES, narrow: bool = True) -> None:
        self.root = _cache_root(root)
        self.narrow = bool(narrow)
        self.max_bytes = max_bytes
        self.keep_mapped_bytes = int(keep_mapped_bytes)
        if compression not in (None, "lz4", "zstd"):
            raise CacheError(f"cache compression must be none, lz4 or zstd, got {compression!r}")
        self.compression = compression
        marker = self.root / MARKER
        if not marker.exists():
            if self.root.exists() and not self.root.is_dir():
                raise CacheError(f"cache {self.root}: exists and is not a directory")
            # Another process creating the same cache leaves its marker's temporary file
            # (then the marker itself) in the directory: that is a cache being made, not a
            # foreign directory.
            making = f".{MARKER}.tmp-"
            if (
                self.root.is_dir()
                and any(not child.name.startswith(making) for child in self.root.iterdir())
                and not marker.exists()
            ):
                raise CacheError(
                    f"cache {self.root}: a non-empty directory that is not a jettracks column cache "
                    f"(no {MARKER}); give an empty or new directory"
                )
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                write_text_atomic(marker, "jettracks column cache\n")
            except OSError as err:
                raise CacheError(f"cache {self.root}: cannot create it ({err.strerror or err})") from None

    # -- paths --------------------------------------------------------------------
    def column_path(self, key: ChunkKey, branch: str) -> OutPath:
        return key.chunk_dir(self.root) / f"{_branch_file(branch)}.arrow"

    def record_path(self, key: ChunkKey, branch: str) -> OutPath:
        return key.chunk_dir(self.root) / f"{_branch_file(branch)}.json"

    def layout_path(self, fileuuid: str, treename: str) -> OutPath:
        return ChunkKey(fileuuid, treename, 0, 0).tree_dir(self.root) / "layout.json"

    # -- tree layout ------------------------------------------------------------------
    def layout(self, fileuuid: str, treename: str) -> dict[str, Any] | None:
        """The stored layout of a file's tree, or None."""
        try:
            return json.loads(self.layout_path(fileuuid, treename).read_text())
        except (OSError, ValueError):
            return None

    def save_layout(self, fileuuid: str, treename: str, layout: Mapping[str, Any]) -> None:
        write_text_atomic(self.layout_path(fileuuid, treename), json.dumps(dict(layout)))

    def previous_ids(self, key: ChunkKey) -> dict[str, Any] | None:
        """The ids of the entry before the chunk, as stored by :meth:`save_previous_ids`."""
        try:
            return json.loads((key.chunk_dir(self.root) / "previous.ids").read_text())
        except (OSError, ValueError):
            return None

    def save_previous_ids(self, key: ChunkKey, ids: Mapping[str, Any]) -> None:
        write_text_atomic(key.chunk_dir(self.root) / "previous.ids", json.dumps(dict(ids)))

    # -- columns ----------------------------------------------------------------------
    def get(self, key: ChunkKey, branch: str) -> CachedColumn | None:
        """The validated entry, or None (absent; damaged ones are removed first)."""
        record_path, column_path = self.record_path(key, branch), self.column_path(key, branch)
        try:
            record = (json.loads(record_path.read_text()) if isinstance(record_path, RemotePath)
                      else _RECORDS.read(record_path))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self._discard(record_path, column_path)
            return None
        data = mapped = None
        try:
            ok = record.get("branch") == branch
            if ok and isinstance(column_path, RemotePath):
                ok = column_path.stat().st_size == int(record["bytes"])
                data = _map(column_path) if ok else None
            elif ok:
                mapped = _KEPT.get(column_path, self.keep_mapped_bytes)
                data = mapped.data
            # either both (a narrowed entry) or neither: anything else is damage
            narrowed = Narrowing(**record["narrowed"]) if _CHECKSUM_NARROWED in record or "narrowed" in record else None
            checksum = int(record[_CHECKSUM_NARROWED if narrowed is not None else _CHECKSUM])

            def intact(data: Any) -> bool:  # the size first: a shorter file is never touched
                return data.size == int(record["bytes"]) and _checksum(data) == checksum

            ok = ok and intact(data)
            if not ok and mapped is not None:
                # A kept map is private: an earlier run's processor may have written into
                # arrays over it (its own copies of those pages). The file judges, mapped anew.
                _KEPT.forget(column_path)
                mapped = _KEPT.get(column_path, self.keep_mapped_bytes)
                data = mapped.data
                ok = intact(data)
        except (OSError, KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            self._discard(record_path, column_path)
            return None
        if not isinstance(record_path, RemotePath):  # XRootD cannot set an mtime
            try:
                os.utime(record_path)  # least recently used = oldest record mtime
            except OSError:
                pass
        return CachedColumn(column_path, [(int(a), int(b)) for a, b in record["batches"]], data, mapped,
                            narrowed)

    def writer(self, key: ChunkKey, branch: str) -> ColumnWriter:
        return ColumnWriter(self, key, branch)

    @staticmethod
    def _discard(*paths: OutPath) -> None:
        for p in paths:
            _KEPT.forget(p)
            _RECORDS.forget(p)
            try:
                p.unlink()
            except OSError:
                pass

    # -- size bound --------------------------------------------------------------------
    def _records(self) -> list[OutPath]:
        """The checksum records, ``<uuid>/<tree>/<start>-<stop>/<branch>.json``."""
        return list(self.root.glob("*/*/*/*.json"))

    def _entries(self) -> list[tuple[float, int, OutPath, OutPath]]:
        out = []
        for record in self._records():
            column = record.with_name(record.stem + ".arrow")
            try:
                out.append((record.stat().st_mtime, column.stat().st_size + record.stat().st_size, record, column))
            except OSError:
                continue
        return out

    def evict(self) -> int:
        """Remove least-recently-used entries until the cache fits ``max_bytes``; bytes freed."""
        if self.max_bytes is None:
            return 0
        entries = sorted(self._entries(), key=lambda e: e[0])
        total = sum(e[1] for e in entries)
        freed = 0
        for _, size, record, column in entries:
            if total <= self.max_bytes:
                break
            self._discard(record, column)
            total -= size
            freed += size
        return freed

    # -- info / clear --------------------------------------------------------------------
    def info(self) -> CacheInfo:
        out = CacheInfo(str(self.root))
        trees = set()
        for _, size, record, _column in self._entries():
            out.columns += 1
            out.bytes += size
            trees.add(record.parent.parent)
            try:
                branch = json.loads(record.read_text()).get("branch", record.stem)
            except (OSError, ValueError):
                branch = record.stem
            out.by_branch_bytes[branch] = out.by_branch_bytes.get(branch, 0) + size
        out.trees = len(trees)
        out.files = len({t.parent for t in trees})
        return out

    def clear(self) -> int:
        """Remove every entry jettracks wrote (the marker stays); the number of columns removed."""
        removed = len(self._records())
        _KEPT.forget_under(self.root)
        for child in self.root.iterdir():
            if child.name == MARKER:
                continue
            if child.is_dir() and not child.is_symlink():
                remove_tree(child)
        return removed

    @classmethod
    def existing(cls, root: str | os.PathLike | RemotePath) -> ColumnCache:
        """Open a directory that must already be a cache (for ``info``/``clear``)."""
        path = _cache_root(root)
        if not (path / MARKER).exists():
            raise CacheError(f"{path}: not a jettracks column cache (no {MARKER}); nothing done")
        return cls(path)
