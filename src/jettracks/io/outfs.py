"""Where a run's outputs go: a local directory or a ``root://`` URL, behind one small path type.

Every output path (run directory, ML parts, checkpoints, report, histograms, plots,
logs) is made by :func:`out_path`:

- a local path stays a :class:`pathlib.Path` (nothing changes for local runs, no
  extra cost);
- a ``root://`` (``roots://``, ``xroot://``, ``xroots://``) URL becomes a
  :class:`RemotePath`: the subset of the ``pathlib.Path`` API jettracks' writers use
  (``/``, ``name``, ``parent``, ``exists``, ``is_file``, ``iterdir``, ``glob``,
  ``read_text``, ``open``, ``unlink``, ``replace``, ...) over the fsspec filesystem of the
  server (fsspec-xrootd; no listing cache, so a rename is seen at once).

A :class:`RemotePath` has no ``__fspath__``: code that would hand it to ``open()`` or a
library expecting a local file fails loudly instead of writing to a local directory of
that name. Libraries that write files (coffea, uproot, matplotlib, pyarrow, h5py) write to
a local temporary file that :class:`jettracks.io.atomic.atomic_path` uploads under a
temporary name and renames on the server (``XRootD.client.FileSystem.mv``, atomic, replaces
the target), so a reader never sees a half-written output there either.
"""

from __future__ import annotations

import fnmatch
import io
import os
import posixpath
import shutil
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

from .xrootd import is_url, is_xrootd, split_xrootd_url

__all__ = ["OutPath", "RemotePath", "create_new", "is_remote", "out_path", "readable", "remove_tree"]

_COPY_BLOCK = 16 << 20


class RemotePath:
    """A file or directory on an XRootD server: ``root://host:port//abs/path``.

    Args:
        server: ``root://host[:port]`` (no path).
        path: absolute path on the server (``/a/b``).
    """

    __slots__ = ("path", "server")

    def __init__(self, server: str, path: str) -> None:
        self.server = server
        self.path = posixpath.normpath("/" + path.lstrip("/")) if path else "/"

    @classmethod
    def from_url(cls, url: str) -> RemotePath:
        server, path, query = split_xrootd_url(url)
        if query:
            raise ValueError(f"output URL with a query: {url!r}")
        return cls(server, path)

    # -- pure path -----------------------------------------------------------------------------
    def __str__(self) -> str:
        return f"{self.server}/{self.path}"  # root://host//a/b

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and (self.server, self.path) == (other.server, other.path)

    def __hash__(self) -> int:
        return hash((self.server, self.path))

    def __lt__(self, other: RemotePath) -> bool:
        return (self.server, self.path) < (other.server, other.path)

    def __truediv__(self, other: str | os.PathLike) -> RemotePath:
        return RemotePath(self.server, posixpath.join(self.path, os.fspath(other)))

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.path).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.path).suffix

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.server, posixpath.dirname(self.path))

    def with_name(self, name: str) -> RemotePath:
        return self.parent / name

    def relative_to(self, other: RemotePath) -> PurePosixPath:
        return PurePosixPath(self.path).relative_to(other.path)

    def as_posix(self) -> str:
        return str(self)

    def is_absolute(self) -> bool:
        return True

    def expanduser(self) -> RemotePath:
        return self

    absolute = resolve = expanduser

    # -- the server ------------------------------------------------------------------------------
    @property
    def fs(self) -> Any:
        """The fsspec filesystem of the server (one per server and process, no listing cache)."""
        import fsspec

        return fsspec.filesystem("root", hostid=self.server.split("://", 1)[1], use_listings_cache=False)

    def _info(self) -> dict[str, Any] | None:
        try:
            return self.fs.info(self.path)
        except (OSError, FileNotFoundError):
            return None

    def exists(self) -> bool:
        return self._info() is not None

    def is_file(self) -> bool:
        info = self._info()
        return info is not None and info["type"] == "file"

    def is_dir(self) -> bool:
        info = self._info()
        return info is not None and info["type"] == "directory"

    def is_symlink(self) -> bool:
        return False

    def stat(self) -> SimpleNamespace:
        info = self._info()
        if info is None:
            raise FileNotFoundError(str(self))
        return SimpleNamespace(st_size=info["size"], st_mtime=info.get("mtime") or 0)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        if self.is_dir():
            if not exist_ok:
                raise FileExistsError(str(self))
            return
        self.fs.makedirs(self.path, exist_ok=True)

    def _entries(self) -> list[tuple[RemotePath, bool]]:
        try:
            listing = self.fs.ls(self.path, detail=True)
        except (OSError, FileNotFoundError):
            return []
        out = []
        for item in listing:
            name = posixpath.basename(item["name"].rstrip("/"))
            if name and item["name"].rstrip("/") != self.path:
                out.append((self / name, item["type"] == "directory"))
        return out

    def iterdir(self) -> list[RemotePath]:
        return [p for p, _ in self._entries()]

    def glob(self, pattern: str) -> list[RemotePath]:
        """Entries below this directory matching ``pattern``: one level (``part-*.parquet``) by
        name, or several (``*/*/*.json``, ``**``) by :func:`jettracks.io.xrootd.glob_xrootd`."""
        if "/" in pattern or "**" in pattern:
            from .xrootd import glob_xrootd

            return [RemotePath.from_url(url) for url in glob_xrootd(str(self / pattern))]
        return [p for p in self.iterdir() if fnmatch.fnmatch(p.name, pattern)]

    def rglob(self, pattern: str) -> list[RemotePath]:
        """Every file and directory below this one whose name matches ``pattern``."""
        found, todo = [], [self]
        while todo:
            for p, is_dir in todo.pop()._entries():
                if fnmatch.fnmatch(p.name, pattern):
                    found.append(p)
                if is_dir:
                    todo.append(p)
        return found

    def open(self, mode: str = "r", encoding: str | None = None, **kw: Any) -> Any:
        """The file opened on the server (``r``/``rb``; ``w``/``wb`` write in place: use
        :class:`~jettracks.io.atomic.atomic_path` for outputs). A missing file raises
        ``FileNotFoundError``, as ``Path.open`` (XRootD reports it as a failed open)."""
        try:
            raw = self.fs.open(self.path, mode.replace("t", "").replace("b", "") + "b")
        except OSError:
            if "r" in mode and not self.exists():
                raise FileNotFoundError(str(self)) from None
            raise
        return raw if "b" in mode else io.TextIOWrapper(raw, encoding=encoding or "utf-8")

    def read_bytes(self) -> bytes:
        with self.open("rb") as f:
            return f.read()

    def read_text(self, encoding: str | None = None) -> str:
        return self.read_bytes().decode(encoding or "utf-8")

    def write_bytes(self, data: bytes) -> int:
        """Write in place (not atomic; outputs go through ``atomic_path``)."""
        with self._open_for_write() as f:
            f.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str | None = None) -> int:
        return self.write_bytes(text.encode(encoding or "utf-8"))

    def _open_for_write(self) -> Any:
        try:
            return self.fs.open(self.path, "wb")
        except OSError:  # the directory is missing: one more round trip, only then
            self.parent.mkdir(parents=True, exist_ok=True)
            return self.fs.open(self.path, "wb")

    def upload(self, local: str | os.PathLike) -> None:
        """Copy the local file ``local`` here (in place; see :meth:`write_bytes`)."""
        with open(local, "rb") as src, self._open_for_write() as dst:
            shutil.copyfileobj(src, dst, _COPY_BLOCK)

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except OSError:
            if missing_ok and not self.exists():
                return
            if not self.exists():
                raise FileNotFoundError(str(self)) from None
            raise

    def rmdir(self) -> None:
        """Remove this directory; OSError when it is not empty (the server refuses)."""
        self.fs.rmdir(self.path)

    def replace(self, target: RemotePath) -> RemotePath:
        """Rename on the server (atomic; an existing ``target`` is replaced)."""
        if not isinstance(target, RemotePath) or target.server != self.server:
            raise ValueError(f"cannot rename {self} to {target}: not on the same server")
        self.fs.mv(self.path, target.path)
        return target

    def create_new(self, data: bytes) -> None:
        """Create this file with ``data`` only if it does not exist (XRootD ``kXR_new``).

        Raises:
            FileExistsError: it exists.
        """
        from XRootD import client
        from XRootD.client.flags import OpenFlags

        f = client.File()
        status, _ = f.open(str(self), OpenFlags.NEW | OpenFlags.MAKEPATH)
        if not status.ok:
            if self.exists():
                raise FileExistsError(str(self))
            raise OSError(f"cannot create {self}: {status.message.strip()}")
        try:
            status, _ = f.write(data, 0, len(data))
            if not status.ok:
                raise OSError(f"cannot write {self}: {status.message.strip()}")
        finally:
            f.close()


#: A path where outputs go.
OutPath = Path | RemotePath


def out_path(path: str | os.PathLike | RemotePath) -> OutPath:
    """A :class:`RemotePath` for a ``root://`` URL, else ``Path(path)`` (as given: relative stays relative).

    Raises:
        ValueError: a URL of another scheme (only local paths and XRootD are supported).
    """
    if isinstance(path, (RemotePath, Path)):
        return path
    text = os.fspath(path)
    if is_url(text):
        if not is_xrootd(text):
            raise ValueError(f"output location {text!r}: only local paths and root:// URLs are supported")
        return RemotePath.from_url(text)
    return Path(text)


def is_remote(path: Any) -> bool:
    """True for a :class:`RemotePath` (or a ``root://`` URL string)."""
    return isinstance(path, RemotePath) or (isinstance(path, str) and is_xrootd(path))


def create_new(path: OutPath, text: str) -> None:
    """Create ``path`` with ``text`` only if it does not exist (``FileExistsError`` otherwise),
    flushed to disk for a local path (others may look for it at once)."""
    if isinstance(path, RemotePath):
        path.create_new(text.encode())
        return
    with open(path, "x", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def remove_tree(path: OutPath) -> None:
    """Remove the directory ``path`` and everything below it (``shutil.rmtree`` locally)."""
    if isinstance(path, RemotePath):
        path.fs.rm(path.path, recursive=True)
    else:
        shutil.rmtree(path)


def readable(path: OutPath) -> Any:
    """What pyarrow / h5py / uproot read from: the local path, or the remote file opened ``rb``."""
    return path.open("rb") if isinstance(path, RemotePath) else path
