"""The entries-per-file cache: a file's entry count and UUID, keyed by URL + size + mtime.

It lives in ``$JETTRACKS_CACHE_DIR/entries.json``, else
``$XDG_CACHE_HOME/jettracks/entries.json`` or ``~/.cache/jettracks/entries.json``.
It is an optimisation only: a cache that cannot be written is skipped with one
warning, and ``--refresh`` ignores it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .xrootd import _xrootd_fs, is_url, is_xrootd, split_xrootd_url

__all__ = ["STAT_THREADS", "EntryCache", "default_cache_path", "file_signature", "map_threads"]


def file_signature(name: str, *, timeout: int = 30) -> tuple[str, int, float] | None:
    """(key, size, mtime) identifying a file's current version; None if it cannot be stat'ed.

    The key is the URL for remote files (XRootD ``stat``) and the absolute path
    for local ones.
    """
    if is_xrootd(name):
        try:
            server, path, _ = split_xrootd_url(name)
            status, info = _xrootd_fs(server).stat(path, timeout=timeout)
        except (ImportError, ValueError):
            return None
        if not status.ok:
            return None
        return name, int(info.size), float(info.modtime)
    if is_url(name):
        if name.lower().startswith("file://"):
            return file_signature(name[7:], timeout=timeout)
        try:
            import fsspec

            fs, _, paths = fsspec.get_fs_token_paths(name)
            info = fs.info(paths[0])
        except Exception:  # noqa: BLE001 - no signature, no caching
            return None
        mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
        if info.get("size") is None or mtime is None:
            return None
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        return name, int(info["size"]), float(mtime)
    try:
        st = os.stat(name)
    except OSError:
        return None
    return os.path.abspath(name), int(st.st_size), float(st.st_mtime)


#: Files stat'ed at a time by :meth:`EntryCache.get_many`.
STAT_THREADS = 128


def map_threads(fn, items: list, threads: int) -> list:
    """``[fn(x) for x in items]`` on up to ``threads`` threads (in order; exceptions propagate)."""
    if len(items) <= 1 or threads <= 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="jettracks-io") as pool:
        return list(pool.map(fn, items))


def _remote(name: str) -> bool:
    """A URL whose stat is a request to a server (not ``file://``)."""
    return is_url(name) and not name.lower().startswith("file://")


def default_cache_path() -> Path:
    """``entries.json`` in ``$JETTRACKS_CACHE_DIR``, else ``$XDG_CACHE_HOME/jettracks`` or
    ``~/.cache/jettracks`` (the format detections are kept beside it, ``detections.json``)."""
    root = os.environ.get("JETTRACKS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jettracks"
    )
    return Path(root) / "entries.json"


def _encode(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return {"__bytes__": bytes(value).hex()}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__bytes__"}:
            return bytes.fromhex(value["__bytes__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class EntryCache:
    """A JSON cache of per-file metadata (entries per tree, file UUID, ...).

    An entry is keyed by the file (URL, or absolute path) and tree name, and is
    valid only while the file's size and mtime are unchanged (XRootD files are
    stat'ed on the server). Values are what :meth:`put` stored: an ``int``
    (entries) or a JSON-able ``dict``; ``bytes`` values (a UUID) round-trip.

    Where it lives: ``$JETTRACKS_CACHE_DIR/entries.json`` when that variable is
    set, else ``$XDG_CACHE_HOME/jettracks/entries.json``, else
    ``~/.cache/jettracks/entries.json``. It is an optimisation only: an
    unreadable cache file is treated as empty, and :meth:`save` raises
    ``OSError`` when the file cannot be written (a run then warns once and goes
    on without it).

    Args:
        path: the JSON file; default as above.
        refresh: ignore what is stored (every :meth:`get` misses); :meth:`put` and
            :meth:`save` still record fresh values.
        autosave: write the file after each :meth:`put` (else call :meth:`save`).
        timeout: seconds for a remote ``stat``.

    >>> cache = EntryCache("/tmp/entries.json")                 # doctest: +SKIP
    >>> cache.get("data/a.root", "Events") is None               # doctest: +SKIP
    True
    >>> cache.put("data/a.root", "Events", 1000); cache.save()   # doctest: +SKIP
    """

    VERSION = 1

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        refresh: bool = False,
        autosave: bool = False,
        timeout: int = 30,
    ):
        self.path = Path(path) if path is not None else default_cache_path()
        self.refresh = refresh
        self.autosave = autosave
        self.timeout = timeout
        self.hits = 0
        self.misses = 0
        self._entries: dict[str, dict[str, Any]] = {}
        self._dirty: dict[str, dict[str, Any]] = {}
        self._signatures: dict[str, tuple[str, int, float] | None] = {}
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if isinstance(data, dict) and data.get("version") == self.VERSION:
            entries = data.get("entries")
            if isinstance(entries, dict):
                self._entries = entries

    @staticmethod
    def _key(key: str, treename: str) -> str:
        return f"{key}\t{treename}"

    def _signature(self, name: str, fresh: bool = False) -> tuple[str, int, float] | None:
        if fresh or name not in self._signatures:
            self._signatures[name] = file_signature(name, timeout=self.timeout)
        return self._signatures[name]

    def get(self, name: str, treename: str) -> Any:
        """The stored value for (file, tree), or None (absent, file changed, or ``refresh``)."""
        if self.refresh:
            self.misses += 1
            return None
        return self._lookup(name, treename, self._signature(name, fresh=True))

    def get_many(self, items: list[tuple[str, str]], *, threads: int = STAT_THREADS) -> list[Any]:
        """:meth:`get` of every ``(file, tree)``, the files stat'ed in parallel (``threads``
        at a time: one round trip each for a remote file, which at 50 ms RTT made a cached
        step of 2,000 files take 100 s one after the other). A remote file the cache holds no
        entry for is not stat'ed (a miss either way; :meth:`put` takes the signature of the
        read), nor is anything with ``refresh``. The signatures are kept for :meth:`put`."""
        names = list(dict.fromkeys(n for n, _ in items))
        if self.refresh:
            self.misses += len(items)
            return [None] * len(items)
        # A remote file the cache holds nothing for is a miss without asking its server: a
        # cold step then costs no stat at all (the metadata reader brings the signature back).
        stored = {k.split("\t", 1)[0] for k in self._entries}
        names = [n for n in names if n in stored or not _remote(n)]
        sigs = map_threads(lambda n: file_signature(n, timeout=self.timeout), names, threads)
        self._signatures.update(zip(names, sigs))
        return [self._lookup(n, t, self._signatures.get(n)) for n, t in items]

    def _lookup(self, name: str, treename: str, sig: tuple[str, int, float] | None) -> Any:
        if sig is None:
            self.misses += 1
            return None
        rec = self._entries.get(self._key(sig[0], treename))
        if rec is None or rec.get("size") != sig[1] or rec.get("mtime") != sig[2]:
            self.misses += 1
            return None
        self.hits += 1
        return _decode(rec["value"])

    def put(self, name: str, treename: str, value: Any,
            signature: tuple[str, int, float] | None = None) -> bool:
        """Store a value for (file, tree); False (nothing stored) if the file cannot be stat'ed.

        ``signature``: the file's ``(key, size, mtime)`` as :func:`file_signature` gives it,
        when the caller has it (taken when the value was read); else the file is stat'ed."""
        if signature is not None:
            self._signatures[name] = tuple(signature)
        sig = self._signature(name)
        if sig is None:
            return False
        rec = {"size": sig[1], "mtime": sig[2], "value": _encode(value), "stored": time.time()}
        k = self._key(sig[0], treename)
        self._entries[k] = rec
        self._dirty[k] = rec
        if self.autosave:
            self.save()
        return True

    def put_many(self, items: list[tuple[str, str, Any, tuple[str, int, float] | None]], *,
                 threads: int = STAT_THREADS) -> None:
        """:meth:`put` of every ``(file, tree, value, signature or None)``; the files without
        a signature are stat'ed in parallel first."""
        need = list(dict.fromkeys(n for n, _, _, sig in items if sig is None and n not in self._signatures))
        sigs = map_threads(lambda n: file_signature(n, timeout=self.timeout), need, threads)
        self._signatures.update(zip(need, sigs))
        autosave, self.autosave = self.autosave, False
        try:
            for name, tree, value, sig in items:
                self.put(name, tree, value, sig)
        finally:
            self.autosave = autosave
        if autosave:
            self.save()

    def save(self) -> None:
        """Write the cache atomically, merged with what another process saved meanwhile."""
        if not self._dirty:
            return
        on_disk: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("version") == self.VERSION:
                on_disk = data.get("entries") or {}
        merged = {**on_disk, **self._dirty}
        write_text_atomic(self.path, json.dumps({"version": self.VERSION, "entries": merged}))
        self._entries = merged
        self._dirty.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __enter__(self) -> EntryCache:
        return self

    def __exit__(self, *exc) -> None:
        self.save()
