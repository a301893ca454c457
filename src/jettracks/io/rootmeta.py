"""A TTree's entry count and the file's UUID from a few byte ranges, without uproot's model.

``uproot.open(f)[tree].num_entries`` reads the TFile header, the top directory and its
keys, every ``TStreamerInfo`` and the whole ``TTree`` (all its branches and baskets'
metadata), and builds Python objects for all of it: ~14 ms of CPU a small file, and
over XRootD ~5 sequential round trips (open, header, server config query, keys,
TTree) plus a close. The metadata step only needs two numbers, which sit at fixed
places of the ROOT format:

* the file UUID: in the TFile header (first 100 bytes: ``"root"``, version, fBEGIN,
  ..., fUUID);
* the keys of the top directory: the TDirectory record at ``fBEGIN + fNbytesName``
  gives ``fSeekKeys``/``fNbytesKeys``; each TKey has class name, name, cycle and
  ``fSeekKey``/``fNbytes``/``fObjlen``/``fKeylen``;
* ``fEntries``: the TTree record (after its key header, compressed in ROOT's blocks of
  9-byte headers) streams its bases TNamed, TAttLine, TAttFill and TAttMarker, each
  with a byte count, then ``fEntries`` (int64, big-endian): TTree versions 16-20, the
  ones uproot models (ROOT 5.x to 6.x).

The reader takes the key the way uproot's ``ReadOnlyDirectory.key`` does (the highest
``|cycle|``, first one kept on ties) and reads only the head and tail of a file (its
keys list and TTree usually sit at the end), then the ranges still missing: a small file
costs an open, one read and a close. Over XRootD it uses the ``XRootD`` client directly.

It answers ``None`` (the caller then asks uproot) for anything outside that path: a tree
name with ``/``, ``;`` or ``:`` (subdirectories, cycles), a class other than ``TTree``
(RNTuple, TNtuple), another TTree version or a memberwise/un-counted record, an unknown
compression, a URL other than ``root://`` or a local path, and any parse error. Errors
opening a ``root://`` file are raised as uproot raises them (same types and messages), so
a missing file is not opened twice.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any

__all__ = ["tree_metadata"]

#: Files up to this size are read whole in the first request.
WHOLE_FILE = 256 << 10
#: Otherwise the first request reads this much of the head (header, top directory) ...
HEAD = 4 << 10
#: ... and this much of the tail (keys list, TTree record: ROOT writes them last).
TAIL = 256 << 10
#: Bytes of a TTree record read when it is not in hand (its start holds fEntries).
RECORD_PREFIX = 64 << 10
#: Uncompressed bytes of a TTree record decompressed (fEntries is in the first few hundred).
NEEDED = 16 << 10

_HEADER_SMALL = struct.Struct(">4siiiiiiiBiiiH16s")
_HEADER_BIG = struct.Struct(">4siiqqiiiBiqiH16s")
_DIR_SMALL = struct.Struct(">hIIiiiii")
_DIR_BIG = struct.Struct(">hIIiiqqq")
_KEY_SMALL = struct.Struct(">ihiIhhii")
_KEY_BIG = struct.Struct(">ihiIhhqq")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I16 = struct.Struct(">h")
_I64 = struct.Struct(">q")
_BYTECOUNT = 0x40000000
_MEMBERWISE = 0x4000
#: TTree class versions whose record starts TNamed, TAttLine, TAttFill, TAttMarker, fEntries.
_TREE_VERSIONS = range(16, 21)


class _Unusual(Exception):
    """Not a file this reader handles: ask uproot."""


class _Bytes:
    """Byte ranges of one file held in memory; a range not held is read (one request)."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.held: list[tuple[int, bytes]] = []
        self.requests = 0

    def fetch(self, ranges: list[tuple[int, int]]) -> None:
        ranges = [(a, min(b, self.source.size)) for a, b in ranges if a < self.source.size]
        if ranges:
            self.requests += 1
            self.held.extend(zip((a for a, _ in ranges), self.source.read(ranges)))

    def get(self, start: int, stop: int, *, read: int | None = None) -> bytes:
        """Bytes ``[start, stop)`` (fewer at the end of the file); when not held, ``read``
        bytes from ``start`` (default ``stop - start``) are read first."""
        stop = min(stop, self.source.size)
        for a, data in self.held:
            if a <= start and stop <= a + len(data):
                return data[start - a:stop - a]
        self.fetch([(start, start + max(read or 0, stop - start))])
        a, data = self.held[-1]
        if stop > a + len(data):
            raise _Unusual("short read")
        return data[start - a:stop - a]


def _string(data: bytes, pos: int) -> tuple[str, int]:
    n = data[pos]
    pos += 1
    if n == 255:
        n = _I32.unpack_from(data, pos)[0]
        pos += 4
    return data[pos:pos + n].decode("utf-8", "surrogateescape"), pos + n


def _key(data: bytes, pos: int) -> tuple[dict[str, Any], int]:
    """One TKey at ``pos`` (header and its three strings); the position after it."""
    version = _I16.unpack_from(data, pos + 4)[0]
    fmt = _KEY_BIG if version > 1000 else _KEY_SMALL
    nbytes, _, objlen, _, keylen, cycle, seek, _ = fmt.unpack_from(data, pos)
    pos += fmt.size
    classname, pos = _string(data, pos)
    name, pos = _string(data, pos)
    _, pos = _string(data, pos)
    return {"nbytes": nbytes, "objlen": objlen, "keylen": keylen, "cycle": cycle, "seek": seek,
            "classname": classname, "name": name}, pos


def _decompress_prefix(data: bytes, objlen: int) -> bytes:
    """The first bytes (at least :data:`NEEDED`, or all) of a ROOT-compressed record;
    ``data`` may be a prefix of the record."""
    if len(data) < 9:
        raise _Unusual("short record")
    algo = data[:2]
    csize = data[3] | data[4] << 8 | data[5] << 16
    usize = data[6] | data[7] << 8 | data[8] << 16
    want = min(NEEDED, usize, objlen)
    block = data[9:9 + csize]
    if algo == b"ZL":
        out = zlib.decompressobj().decompress(block, want)
    elif algo == b"XZ":
        import lzma

        out = lzma.LZMADecompressor().decompress(block, want)
    elif algo in (b"L4", b"ZS"):  # block formats: the whole first block is needed
        if len(block) < csize:
            raise _Unusual("need the whole block")
        import uproot.compression as uc

        if algo == b"L4":
            out = uc.LZ4().decompress(block[8:], usize)
        else:
            out = uc.ZSTD().decompress(block, usize)
    else:
        raise _Unusual(f"compression {algo!r}")
    if len(out) < want:
        raise _Unusual("record prefix too short")
    return bytes(out)


def _entries(record: bytes) -> int:
    """fEntries of a streamed TTree (see the module docstring)."""
    count, version = _U32.unpack_from(record, 0)[0], _I16.unpack_from(record, 4)[0]
    if not count & _BYTECOUNT or version & _MEMBERWISE or version not in _TREE_VERSIONS:
        raise _Unusual(f"TTree record version {version}")
    pos = 6
    for _ in range(4):  # TNamed, TAttLine, TAttFill, TAttMarker
        count = _U32.unpack_from(record, pos)[0]
        if not count & _BYTECOUNT:
            raise _Unusual("base without a byte count")
        pos += (count & ~_BYTECOUNT) + 4
    entries = _I64.unpack_from(record, pos)[0]
    if entries < 0:
        raise _Unusual("negative fEntries")
    return int(entries)


def read_tree_metadata(source: Any, treename: str) -> dict[str, Any]:
    """``{"numentries", "uuid"}`` from an open source (``size``, ``read(ranges)``); raises
    :class:`_Unusual` for what this reader leaves to uproot."""
    buf = _Bytes(source)
    size = source.size
    if size <= WHOLE_FILE:
        buf.fetch([(0, size)])
    else:
        buf.fetch([(0, HEAD), (size - TAIL, size)])
    head = buf.get(0, _HEADER_BIG.size)
    if head[:4] != b"root":
        raise _Unusual("not a ROOT file")
    fmt = _HEADER_BIG if _I32.unpack_from(head, 4)[0] >= 1000000 else _HEADER_SMALL
    (_, _, begin, end, _, _, _, nbytes_name, _, _, _, _, _, uuid) = fmt.unpack_from(head, 0)
    directory = buf.get(begin + nbytes_name, begin + nbytes_name + _DIR_BIG.size)
    dfmt = _DIR_BIG if _I16.unpack_from(directory, 0)[0] > 1000 else _DIR_SMALL
    _, _, _, nbytes_keys, _, _, _, seek_keys = dfmt.unpack_from(directory, 0)
    if seek_keys <= 0 or nbytes_keys <= 0 or seek_keys + nbytes_keys > size:
        raise _Unusual("no keys")
    keys = buf.get(seek_keys, seek_keys + nbytes_keys)
    _, pos = _key(keys, 0)  # the keys list's own key
    (nkeys,) = _I32.unpack_from(keys, pos)
    pos += 4
    chosen = None
    for _ in range(nkeys):  # as uproot's ReadOnlyDirectory.key: highest |cycle|, first on ties
        key, pos = _key(keys, pos)
        if key["name"] == treename and (chosen is None or abs(chosen["cycle"]) < abs(key["cycle"])):
            chosen = key
    if chosen is None or chosen["classname"] != "TTree":
        raise _Unusual("no TTree of that name")
    start = chosen["seek"] + chosen["keylen"]
    compressed = chosen["nbytes"] - chosen["keylen"]
    objlen = chosen["objlen"]
    if compressed <= 0 or start + compressed > size:
        raise _Unusual("TTree record outside the file")
    if compressed == objlen:  # stored uncompressed
        record = buf.get(start, start + min(compressed, NEEDED), read=min(compressed, RECORD_PREFIX))
    else:
        data = buf.get(start, start + min(compressed, RECORD_PREFIX))
        try:
            record = _decompress_prefix(data, objlen)
        except _Unusual:
            if len(data) >= compressed:
                raise
            record = _decompress_prefix(buf.get(start, start + compressed), objlen)
    return {"numentries": _entries(record), "uuid": bytes(uuid), "_requests": buf.requests}


# -- sources -----------------------------------------------------------------------------------
class _LocalSource:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        st = os.fstat(self.fd)
        self.size = st.st_size
        self.signature = (os.path.abspath(path), int(st.st_size), float(st.st_mtime))

    def read(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        return [os.pread(self.fd, b - a, a) for a, b in ranges]

    def close(self) -> None:
        os.close(self.fd)


class _XRootDSource:
    """A ``root://`` file through the XRootD client: open (its reply carries the stat),
    vector reads, close."""

    def __init__(self, url: str, timeout: int) -> None:
        from XRootD import client

        self.url = url
        self.timeout = int(timeout or 0)
        self.file = client.File()
        status, _ = self.file.open(url, timeout=self.timeout)
        if status.error:
            self._raise(status, close=True)
        status, info = self.file.stat(timeout=self.timeout)
        if status.error:
            self._raise(status, close=True)
        self.size = int(info.size)
        self.signature = (url, int(info.size), float(info.modtime))

    def _raise(self, status: Any, close: bool = False) -> None:
        """The error uproot's XRootD source raises for ``status`` (same types and messages)."""
        import uproot

        if close:
            self.file.close(timeout=self.timeout)
        if status.code in (101, 304, 400):
            raise uproot._util._file_not_found(self.url, status.message)
        if status.code in (206,):
            raise TimeoutError(f"XRootD error: {status.message} in file {self.url}")
        raise OSError(f"XRootD error: {status.message} in file {self.url}")

    def read(self, ranges: list[tuple[int, int]]) -> list[bytes]:
        if len(ranges) == 1:
            (a, b), = ranges
            status, data = self.file.read(a, b - a, timeout=self.timeout)
            if status.error:
                self._raise(status)
            return [data]
        status, info = self.file.vector_read([(a, b - a) for a, b in ranges], timeout=self.timeout)
        if status.error:
            self._raise(status)
        return [c.buffer for c in info.chunks]

    def close(self) -> None:
        self.file.close(timeout=self.timeout)


def _open_source(filename: str, timeout: int) -> Any:
    """A source for ``filename``, or None when this reader does not handle its scheme."""
    from .xrootd import is_url, is_xrootd

    if is_xrootd(filename):
        return _XRootDSource(filename, timeout)
    if filename.startswith("file://"):
        filename = filename[7:]
    elif is_url(filename):
        return None
    try:
        return _LocalSource(filename)
    except OSError:
        return None  # uproot raises its own error for it


def tree_metadata(filename: str, treename: str, timeout: int) -> dict[str, Any] | None:
    """``{"numentries", "uuid", "signature"}`` of ``treename`` in ``filename`` from the
    file's bytes, or None when uproot must answer (see the module docstring).

    ``signature`` is ``(key, size, mtime)`` as :func:`jettracks.io.cache.file_signature`
    gives it, taken from the same open (the cache needs no extra stat). Errors opening or
    reading a ``root://`` file are raised as uproot raises them.
    """
    if any(c in treename for c in "/;:"):
        return None
    source = _open_source(filename, timeout)
    if source is None:
        return None
    try:
        try:
            out = read_tree_metadata(source, treename)
        except (_Unusual, struct.error, IndexError, ValueError, zlib.error, EOFError, LookupError):
            return None
        except Exception as err:  # noqa: BLE001 - lzma/lz4/zstd errors: let uproot decide
            if isinstance(err, OSError):
                raise
            return None
        out.pop("_requests", None)
        out["signature"] = source.signature
        return out
    finally:
        source.close()
