"""File lists: glob expansion (local and XRootD), index files, and an entries cache.

Readers and the run know *files*, not clusters: nothing here imports Dask.

>>> expand_files(["data/demo/pfnano_*.root"])                      # doctest: +SKIP
['data/demo/pfnano_0.root', 'data/demo/pfnano_1.root']
>>> expand_files(["root://eospublic.cern.ch//eos/opendata/cms/x/*.root"])  # doctest: +SKIP

URLs. An XRootD URL is ``root://host[:port]//absolute/path`` — the path after the
host starts with ``/`` (hence the double slash); ``root://host/path`` is sent as
the relative path ``path``, which servers refuse. Globs (``*``, ``?``, ``[...]``,
``**``) in the path of a ``root://`` (``roots://``, ``xroot://``) URL are expanded
by listing directories on the server; other URLs are passed through unchanged.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic

__all__ = [
    "EntryCache",
    "FileListError",
    "SharedFileError",
    "configure_xrootd_client",
    "dataset_files",
    "deduplicate",
    "expand_files",
    "file_identity",
    "file_signature",
    "is_url",
    "is_xrootd",
    "read_file_list",
    "resolve_local",
    "split_xrootd_url",
]

XROOTD_SCHEMES = ("root", "roots", "xroot", "xroots")
_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$")


def is_url(name: str) -> bool:
    """True for ``scheme://...`` names (not for local paths)."""
    return _URL.match(str(name)) is not None


def is_xrootd(name: str) -> bool:
    """True for ``root://`` (``roots://``, ``xroot://``, ``xroots://``) URLs."""
    m = _URL.match(str(name))
    return bool(m) and m.group("scheme").lower() in XROOTD_SCHEMES


def split_xrootd_url(url: str) -> tuple[str, str, str]:
    """``root://host:port//a/b?x=1`` -> (``root://host:port``, ``/a/b``, ``?x=1``).

    A single-slash path (``root://host/a/b``) is returned as ``/a/b``.
    """
    m = _URL.match(url)
    if not m or m.group("scheme").lower() not in XROOTD_SCHEMES:
        raise ValueError(f"not an XRootD URL: {url!r}")
    rest = m.group("rest")
    host, sep, path = rest.partition("/")
    if not host:
        raise ValueError(f"XRootD URL without a host: {url!r}")
    path, qsep, query = path.partition("?")
    path = "/" + path.lstrip("/") if sep else "/"
    return f"{m.group('scheme')}://{host}", path, (qsep + query) if qsep else ""


def _join_url(server: str, path: str, query: str = "") -> str:
    return f"{server}/{path}{query}"  # path starts with '/': root://host//path


def configure_xrootd_client(
    *,
    connection_retry: int | None = None,
    connection_window: int | None = None,
    stream_error_window: int | None = None,
    request_timeout: int | None = None,
) -> None:
    """Set XRootD client options in this process (``XRootD.client.EnvPutInt``).

    The defaults make an unreachable server cost minutes: 5 connection retries
    in a 120 s window, and a server whose connection broke is not retried for
    1800 s (``StreamErrorWindow``), so one restart of a server fails every later
    open in the same process for half an hour. Tests use
    ``connection_retry=1, stream_error_window=0`` (fail fast, recover at once).
    """
    from XRootD import client

    for key, value in (
        ("ConnectionRetry", connection_retry),
        ("ConnectionWindow", connection_window),
        ("StreamErrorWindow", stream_error_window),
        ("RequestTimeout", request_timeout),
    ):
        if value is not None:
            client.EnvPutInt(key, int(value))


# -- expansion -----------------------------------------------------------------------------


def _xrootd_fs(server: str):
    from XRootD import client

    return client.FileSystem(server)


def _xrootd_list(fs, server: str, path: str, timeout: int) -> list[tuple[str, bool]]:
    """(name, is_dir) of the entries of a directory on the server; [] if it is absent."""
    from XRootD.client.flags import DirListFlags, StatInfoFlags

    status, listing = fs.dirlist(path, DirListFlags.STAT, timeout=timeout)
    if not status.ok:
        if status.errno in (3011,) or "no such file" in status.message.lower():
            return []
        if status.errno == 3016 or "not a directory" in status.message.lower():
            return []
        raise OSError(f"XRootD: cannot list {server}/{path}: {status.message.strip()}")
    out = []
    for entry in listing:
        info = entry.statinfo
        is_dir = bool(info is not None and info.flags & StatInfoFlags.IS_DIR)
        out.append((entry.name, is_dir))
    return out


def _xrootd_stat_kind(fs, server: str, path: str, timeout: int) -> str | None:
    """'file', 'dir' or None (absent) for a path on the server."""
    from XRootD.client.flags import StatInfoFlags

    status, info = fs.stat(path, timeout=timeout)
    if not status.ok:
        if status.errno == 3011 or "no such file" in status.message.lower():
            return None
        raise OSError(f"XRootD: cannot stat {server}/{path}: {status.message.strip()}")
    return "dir" if info.flags & StatInfoFlags.IS_DIR else "file"


def _hidden_ok(part: str, name: str) -> bool:
    # as glob.glob: '*' does not match a leading dot unless the pattern has one
    return not name.startswith(".") or part.startswith(".")


def glob_xrootd(pattern: str, *, timeout: int = 60) -> list[str]:
    """Expand the glob in an XRootD URL by listing the server's directories (sorted).

    ``**`` matches any number of directories (as ``glob.glob(recursive=True)``).

    Raises:
        OSError: the server cannot be reached or refuses the listing.
    """
    server, path, query = split_xrootd_url(pattern)
    fs = _xrootd_fs(server)
    parts = [p for p in path.split("/") if p]
    found: set[str] = set()

    def walk(base: str, i: int, base_is_dir: bool = True) -> None:
        if i == len(parts):
            found.add(base or "/")
            return
        part = parts[i]
        last = i == len(parts) - 1
        if part == "**":
            walk(base, i + 1)  # zero directories
            for name, is_dir in _xrootd_list(fs, server, base or "/", timeout):
                if name.startswith("."):
                    continue
                if is_dir:
                    walk(f"{base}/{name}", i)  # one more directory
                elif last:
                    found.add(f"{base}/{name}")  # a trailing '**' matches files too
            return
        if not glob.has_magic(part):
            child = f"{base}/{part}"
            if last:
                if _xrootd_stat_kind(fs, server, child, timeout) is not None:
                    found.add(child)
            else:
                walk(child, i + 1)
            return
        for name, is_dir in _xrootd_list(fs, server, base or "/", timeout):
            if fnmatch.fnmatchcase(name, part) and _hidden_ok(part, name):
                if last:
                    found.add(f"{base}/{name}")
                elif is_dir:
                    walk(f"{base}/{name}", i + 1)

    walk("", 0)
    return [_join_url(server, p, query) for p in sorted(found)]


def _glob_fsspec(pattern: str) -> list[str]:
    import fsspec

    fs, _, paths = fsspec.core.get_fs_token_paths(pattern)
    return sorted(fs.unstrip_protocol(p) for p in paths)


def expand_files(
    patterns: list[str] | str,
    *,
    base_dir: str | os.PathLike | None = None,
    timeout: int = 60,
) -> list[str]:
    """Expand local paths/globs and XRootD globs into a list of files.

    Each pattern's matches are sorted; the patterns' order is kept and a file
    matched twice is listed once. Relative local patterns are taken relative to
    ``base_dir`` when given (and returned joined with it), else to the working
    directory (and returned relative, as ``glob.glob`` does). URLs without a glob
    are passed through unchecked (a run reports them if they cannot be opened).

    Raises:
        FileNotFoundError: a pattern matches nothing (the message names it).
        OSError: an XRootD server cannot be listed.
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    out: list[str] = []
    seen: set[str] = set()
    for raw in patterns:
        pattern = str(raw).strip()
        if not pattern:
            continue
        if is_url(pattern):
            scheme = pattern.split("://", 1)[0].lower()
            path_part = pattern.split("://", 1)[1].split("?", 1)[0]
            if scheme == "file":
                matches = expand_files([path_part], base_dir=base_dir)
            elif not glob.has_magic(path_part):
                matches = [pattern]
            elif scheme in XROOTD_SCHEMES:
                matches = glob_xrootd(pattern, timeout=timeout)
            else:
                try:
                    matches = _glob_fsspec(pattern)
                except (ImportError, ValueError) as err:
                    raise ValueError(f"cannot expand the glob in {pattern!r}: {err}") from None
        else:
            local = os.path.expanduser(pattern)
            if base_dir is not None and not os.path.isabs(local):
                local = os.path.join(os.fspath(base_dir), local)
            if glob.has_magic(local):
                matches = sorted(glob.glob(local, recursive=True))
            else:
                matches = [local] if os.path.exists(local) else []
        if not matches:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        for m in matches:
            if m not in seen:
                seen.add(m)
                out.append(m)
    return out


def read_file_list(path: str | os.PathLike) -> list[str]:
    """Entries of an index file (``files_from:``): one path or URL a line.

    Blank lines and ``#`` comments (whole line, or after whitespace) are ignored;
    entries are returned as written (globs are not expanded here).

    Raises:
        FileNotFoundError / OSError: the index file cannot be read.
    """
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if line:
            out.append(line)
    return out


# -- a dataset's file list: paths against the config's directory, one file once --------------


class FileListError(ValueError):
    """A dataset's file list cannot be built; the message is one line naming the key."""


class SharedFileError(ValueError):
    """One file in two datasets (same resolved path, or same file UUID).

    Its events would be counted in both datasets. The message is one line:
    ``datasets.B.files: <file> is also in dataset A`` (plus the other name or the
    UUID match when that is how the two were found to be one file).
    """

    def __init__(self, dataset: str, file: str, other_dataset: str, other_file: str, by: str):
        self.dataset, self.file, self.other_dataset, self.other_file, self.by = (
            dataset, file, other_dataset, other_file, by
        )
        if by == "uuid":
            detail = f" (same file UUID as {other_file})"
        else:
            detail = f" (as {other_file})" if other_file != file else ""
        super().__init__(f"datasets.{dataset}.files: {file} is also in dataset {other_dataset}{detail}")


def resolve_local(name: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> str:
    """A file name as the client sends it to the workers: absolute for local files.

    A local path or glob (a ``file://`` prefix is dropped, ``~`` expanded) that is
    relative is taken relative to ``base_dir`` -- the directory of the config file
    -- or, when ``base_dir`` is None (a config given as a mapping), to the working
    directory; the result is absolute and normalised (``./a/../b.root`` ->
    ``/.../b.root``), symlinks kept as written. Other URLs are returned unchanged.

    >>> resolve_local("../data/a.root", "/work/main/configs")
    '/work/main/data/a.root'
    >>> resolve_local("root://host//a.root", "/x")
    'root://host//a.root'
    """
    text = os.fspath(name).strip()
    if is_url(text):
        if text[:7].lower() != "file://":
            return text
        text = text[7:]
    local = os.path.expanduser(text)
    if not os.path.isabs(local):
        base = os.fspath(base_dir) if base_dir is not None else os.getcwd()
        local = os.path.join(os.path.expanduser(base), local)
    return os.path.abspath(local)


def file_identity(name: str) -> str:
    """What makes two names the same file before it is opened.

    A local file's real path (:func:`resolve_local`, then ``os.path.realpath``:
    ``./f.root``, ``f.root``, a symlink to it and its absolute path are one file);
    a URL as written. After the metadata step the file UUID is the stronger key
    (see :func:`deduplicate`).
    """
    text = os.fspath(name)
    if is_url(text) and text[:7].lower() != "file://":
        return text
    return os.path.realpath(resolve_local(text))


def dataset_files(
    dataset: str,
    files: list[str],
    files_from: str | os.PathLike | None = None,
    *,
    base_dir: str | os.PathLike | None = None,
    timeout: int = 60,
) -> list[str]:
    """A dataset's file list: ``files``, then the entries of ``files_from``, expanded.

    Relative local paths -- in ``files``, the ``files_from`` path itself and the
    entries of that index file -- are relative to ``base_dir`` (the config file's
    directory; the working directory when None) and are returned absolute
    (:func:`resolve_local`), so workers started in any directory open the same
    files. A glob's matches are sorted and the patterns' order is kept; a named
    local file (no glob) is kept even when absent, so that the run counts it as a
    bad file (stop, or skip with ``--skip-bad-files``); URLs without a glob are
    passed through unchecked. Repeats (a name matched twice, ``./f.root`` and
    ``f.root``, a symlink and its target) are kept: :func:`deduplicate` drops
    and reports them.

    Raises:
        FileListError: a glob that matches nothing, an unreadable index file (or
            one that lists nothing while ``files`` is empty), or a remote
            directory that cannot be listed (one line naming the key).
    """
    entries: list[tuple[str, str]] = [(f"datasets.{dataset}.files", str(p)) for p in files]
    if files_from:
        index = resolve_local(files_from, base_dir)
        try:
            listed = read_file_list(index)
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or f"{err.__class__.__name__}: {err}"
            raise FileListError(f"datasets.{dataset}.files_from: cannot read {index}: {reason}") from None
        if not listed and not files:
            raise FileListError(f"datasets.{dataset}.files_from: {index} lists no file")
        entries += [(f"datasets.{dataset}.files_from: {index}", p) for p in listed]
    out: list[str] = []
    for key, pattern in entries:
        pattern = pattern.strip()
        if not pattern:
            continue
        name = resolve_local(pattern, base_dir)
        if is_url(name) or glob.has_magic(name):
            try:
                matches = expand_files([name], timeout=timeout)
            except FileNotFoundError:
                matches = []
            except (OSError, ValueError) as err:
                raise FileListError(f"{key}: {' '.join(str(err).split())}") from None
            if not matches:
                raise FileListError(f"{key}: no file matches {pattern!r}")
        else:
            matches = [name]
        out.extend(matches)
    return out


def deduplicate(lists: dict[str, list[str]], key, *, by: str) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    """Keep each file once: the first occurrence within its dataset.

    Args:
        lists: dataset -> files, datasets in config order.
        key: ``key(dataset, file)`` -> the file's identity (:func:`file_identity`,
            or its UUID after the metadata step); files whose key is None (not
            known, e.g. unreadable) are never merged.
        by: ``"path"`` or ``"uuid"``, recorded in what is returned.

    Returns:
        (dataset -> its files without repeats, one
        ``{"dataset", "file", "same_as", "by"}`` per file dropped).

    Raises:
        SharedFileError: a file of one dataset is also in an earlier dataset.
    """
    owner: dict[Any, tuple[str, str]] = {}
    kept_lists: dict[str, list[str]] = {}
    dropped: list[dict[str, str]] = []
    for ds, files in lists.items():
        kept: list[str] = []
        for f in files:
            k = key(ds, f)
            if k is None:
                kept.append(f)
                continue
            if k in owner:
                other_ds, other_file = owner[k]
                if other_ds != ds:
                    raise SharedFileError(ds, f, other_ds, other_file, by)
                dropped.append({"dataset": ds, "file": f, "same_as": other_file, "by": by})
                continue
            owner[k] = (ds, f)
            kept.append(f)
        kept_lists[ds] = kept
    return kept_lists, dropped


# -- file identity and the entries cache -------------------------------------------------


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


def _default_cache_path() -> Path:
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
        self.path = Path(path) if path is not None else _default_cache_path()
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
        sig = self._signature(name, fresh=True)
        if sig is None:
            self.misses += 1
            return None
        rec = self._entries.get(self._key(sig[0], treename))
        if rec is None or rec.get("size") != sig[1] or rec.get("mtime") != sig[2]:
            self.misses += 1
            return None
        self.hits += 1
        return _decode(rec["value"])

    def put(self, name: str, treename: str, value: Any) -> bool:
        """Store a value for (file, tree); False (nothing stored) if the file cannot be stat'ed."""
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


try:  # uproot source classes: direct XRootD for root:// (fsspec caches one handle per URL)
    import uproot as _uproot

    class AutoSource(_uproot.source.chunk.Source):
        """uproot ``handler``: ``root://`` URLs through uproot's direct XRootD source,
        everything else through fsspec.

        fsspec-xrootd keeps one open handle per URL per process; after a server
        restart every reopen of that URL failed at once ("I/O operation on closed
        file"), using up Dask's retries in milliseconds. The direct source reopens.
        """

        def __new__(cls, file_path, **options):
            if str(file_path).startswith(("root://", "roots://", "xroot://", "xroots://")):
                return _uproot.source.xrootd.XRootDSource(file_path, **options)
            return _uproot.source.fsspec.FSSpecSource(file_path, **options)

except ImportError:  # pragma: no cover
    AutoSource = None  # type: ignore[assignment,misc]
