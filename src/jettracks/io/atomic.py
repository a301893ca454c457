"""One atomic write for every file jettracks writes: a temporary name beside the target, then a rename.

A reader (or a crash) never sees a half-written file: the temporary name is
``.<name>.tmp-<random>`` in the same directory (same file system, so the rename
is atomic), and it is removed when the write fails.

A target on an XRootD server (:class:`jettracks.io.outfs.RemotePath`, ``root://`` output
dir) is written the same way: the writer fills a local temporary file, which is uploaded
as ``.<name>.tmp-<random>`` beside the target and renamed there (``mv`` on the server).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from .outfs import OutPath, RemotePath, out_path

__all__ = ["atomic_path", "write_bytes_atomic", "write_text_atomic"]


class atomic_path:
    """Context manager yielding a local temporary path renamed (or uploaded) onto ``path`` on success."""

    def __init__(self, path: str | os.PathLike | RemotePath) -> None:
        self.path = out_path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}")
        self._local_dir: str | None = None

    def __enter__(self) -> Path:
        if isinstance(self.path, RemotePath):  # written here, uploaded on success
            self._local_dir = tempfile.mkdtemp(prefix="jettracks-upload-")
            return Path(self._local_dir) / self.path.name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._local_dir is not None:
            try:
                if exc_type is None:
                    _upload(Path(self._local_dir) / self.path.name, self.tmp, self.path)
            finally:
                shutil.rmtree(self._local_dir, ignore_errors=True)
        elif exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _upload(local: Path, tmp: RemotePath, final: RemotePath) -> None:
    """``local`` -> ``tmp`` on the server -> renamed to ``final``; ``tmp`` removed on failure."""
    try:
        tmp.upload(local)
        tmp.replace(final)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise


def write_text_atomic(path: str | os.PathLike | RemotePath, text: str) -> OutPath:
    """Write ``text`` to ``path`` atomically (UTF-8); return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out_path(path)


def write_bytes_atomic(path: str | os.PathLike | RemotePath, data: bytes) -> OutPath:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return out_path(path)
