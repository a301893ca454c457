"""Open ROOT files kept per worker process: a file is opened once, not once per chunk.

Opening a file costs several sequential round trips (open, header, directory,
streamers, TTree metadata: ~65% of a no-op chunk on a local disk, ~8 round trips
over XRootD); every chunk of a file used to pay them again. :class:`FileHandles`
keeps the opened ``uproot`` file (its TTree comes back from uproot's per-file
object cache) for the next chunk of the same file in the same process:

* **key**: the file's name or URL, its UUID (from the metadata step: a file
  replaced under the same name has another UUID, so it is opened anew) and the
  open options; a local file's size and mtime are checked on every reuse too
  (a ``stat``: no network round trip), so a changed file is never served stale;
* **exclusive**: a handle is checked out while a chunk uses it and returned after;
  two threads of one worker never share a handle (a second thread opens its own);
* **bounded**: at most :data:`DEFAULT_MAX_OPEN` idle handles per process
  (``$JETTRACKS_OPEN_FILES``), least recently used closed first;
* **failure**: a handle in use when an error is raised is closed, not returned
  (a broken XRootD connection is not reused); :func:`last_failure_reused` tells the
  caller when the failed attempt had reused a handle, which then retries once
  with a fresh open (a server restarted between two chunks costs no attempt);
* **end of the run**: :func:`close_all` (the engines call it in every worker and in
  the client when a run ends).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "DEFAULT_MAX_OPEN",
    "REMOTE_BEGIN_CHUNK_SIZE",
    "FileHandles",
    "close_all",
    "handles",
    "last_failure_reused",
    "open_options",
    "stats",
]

#: Idle open files kept per process (``$JETTRACKS_OPEN_FILES`` overrides).
DEFAULT_MAX_OPEN = 4

#: uproot's first read of a remote file (its ``begin_chunk_size``; uproot's default is 403
#: bytes, the TFile header only). A file up to this size then comes in one round trip
#: instead of three (header, directory, streamers + TTree); a larger file costs this
#: many extra bytes once per open (measured at 50 ms RTT: an open of a 1 MB PFNano file
#: 0.31 -> 0.18 s, a no-op chunk 0.43 -> 0.34 s).
REMOTE_BEGIN_CHUNK_SIZE = 512 << 10


def open_options(filename: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` for ``uproot.open`` of ``filename``: a remote file gets
    :data:`REMOTE_BEGIN_CHUNK_SIZE` unless ``begin_chunk_size`` is set."""
    out = dict(options)
    if "://" in filename and not filename.startswith("file://"):
        out.setdefault("begin_chunk_size", REMOTE_BEGIN_CHUNK_SIZE)
    return out


def _local_signature(name: str) -> tuple[int, int, int] | None:
    """(size, mtime_ns, inode) of a local file; None for URLs (their UUID identifies them)."""
    if "://" in name and not name.startswith("file://"):
        return None
    path = name[7:] if name.startswith("file://") else name
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _options_key(options: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in options.items()))


class FileHandles:
    """A bounded LRU of idle open ``uproot`` files (see the module docstring).

    Args:
        max_open: idle handles kept (0: nothing is kept, every chunk opens its file).
    """

    def __init__(self, max_open: int | None = None) -> None:
        if max_open is None:
            max_open = int(os.environ.get("JETTRACKS_OPEN_FILES", DEFAULT_MAX_OPEN))
        self.max_open = max(int(max_open), 0)
        self._idle: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()  # key -> (file, signature)
        self._lock = threading.Lock()
        self._local = threading.local()
        #: opens and reuses since the process started (tests, benchmarks)
        self.opened = 0
        self.reused = 0

    @contextlib.contextmanager
    def open(self, filename: str, fileuuid: str, options: Mapping[str, Any]) -> Iterator[Any]:
        """Yield an open ``uproot`` file for ``filename`` (reused when possible)."""
        import uproot

        options = open_options(filename, options)
        key = (filename, fileuuid or "", _options_key(options))
        sig = _local_signature(filename)
        handle = None
        with self._lock:
            entry = self._idle.pop(key, None)
        if entry is not None:
            if entry[1] == sig:
                handle = entry[0]
            else:  # the local file changed since it was opened
                _close(entry[0])
        reused = handle is not None
        if handle is None:
            handle = uproot.open({filename: None}, **options)
            self.opened += 1
        else:
            self.reused += 1
        self._local.failed_reused = False
        try:
            yield handle
        except BaseException:
            _close(handle)
            self._local.failed_reused = reused
            raise
        self._put(key, handle, sig)

    def _put(self, key: tuple, handle: Any, sig: Any) -> None:
        if self.max_open == 0:
            _close(handle)
            return
        evicted = []
        with self._lock:
            old = self._idle.pop(key, None)
            if old is not None:  # another thread returned the same file meanwhile
                evicted.append(old[0])
            self._idle[key] = (handle, sig)
            while len(self._idle) > self.max_open:
                evicted.append(self._idle.popitem(last=False)[1][0])
        for h in evicted:
            _close(h)

    def last_failure_reused(self) -> bool:
        """True when this thread's last handle failed while reused (then reset)."""
        was = getattr(self._local, "failed_reused", False)
        self._local.failed_reused = False
        return was

    def close_all(self) -> int:
        """Close every idle handle; returns how many."""
        with self._lock:
            items = list(self._idle.values())
            self._idle.clear()
        for h, _ in items:
            _close(h)
        return len(items)

    def __len__(self) -> int:
        return len(self._idle)


def _close(handle: Any) -> None:
    with contextlib.suppress(Exception):
        handle.close()


#: This process's handles (a Dask worker's, or the client's in a serial run).
handles = FileHandles()


def close_all() -> int:
    """Close this process's idle handles (``client.run(close_all)`` on workers); returns how many."""
    return handles.close_all()


def last_failure_reused() -> bool:
    """See :meth:`FileHandles.last_failure_reused`."""
    return handles.last_failure_reused()


def stats() -> dict[str, int]:
    """``{"opened", "reused", "idle"}`` of this process."""
    return {"opened": handles.opened, "reused": handles.reused, "idle": len(handles)}
