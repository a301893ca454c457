"""XRootD: URL parsing, client settings, globbing on the server, and the uproot source for ``root://``.

An XRootD URL is ``root://host[:port]//absolute/path`` — the path after the
host starts with ``/`` (hence the double slash); ``root://host/path`` is sent as
the relative path ``path``, which servers refuse. Globs (``*``, ``?``, ``[...]``,
``**``) in the path of a ``root://`` (``roots://``, ``xroot://``) URL are expanded
by listing directories on the server.
"""

from __future__ import annotations

import fnmatch
import glob
import re

__all__ = [
    "XROOTD_SCHEMES",
    "AutoSource",
    "configure_xrootd_client",
    "glob_xrootd",
    "is_url",
    "is_xrootd",
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
