"""The run directory: what jettracks may write, replace and delete there.

A run directory is *claimed* before anything is read or written:

- it carries a marker, ``.jettracks-run.json``, that jettracks writes when it
  first uses the directory; only a directory holding that marker (or an empty
  or absent one) is ever used. A non-empty directory without the marker is
  refused with one line, ``--overwrite`` or not: jettracks never deletes what it
  did not write;
- a lock (``.jettracks-run.lock``, an exclusive ``flock`` held for the whole run)
  keeps a second writer out. The kernel drops the lock when its process dies,
  so a lock left by a killed run is never stale; the file names the holder
  (host, pid) for the refusal message. On a ``root://`` directory (no ``flock``
  there) the lock is a lease: the file is created only if absent (XRootD ``kXR_new``),
  names the holder and is renewed every :data:`LEASE_RENEW_S` seconds; a lock of a dead
  process on this host, or one not renewed for :data:`LEASE_S` seconds, is stale and taken over;
- ``--overwrite`` removes only jettracks' own outputs, by name
  (:data:`OWN_OUTPUTS`): other files in the directory are kept and counted.

The marker holds the run's fingerprint (:func:`run_fingerprint`): a rerun with
the same fingerprint resumes from the checkpoints; a different one needs
``--overwrite``.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import inspect
import json
import os
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .atomic import atomic_path, write_text_atomic
from .outfs import RemotePath, create_new, out_path

__all__ = [
    "LOCK",
    "MARKER",
    "OWN_OUTPUTS",
    "RunDirError",
    "RunDirectory",
    "code_files",
    "run_fingerprint",
]

MARKER = ".jettracks-run.json"
LOCK = ".jettracks-run.lock"
#: A ``root://`` run directory's lock not renewed for this many seconds is stale.
LEASE_S = 120.0
#: How often a run renews its ``root://`` lock.
LEASE_RENEW_S = 20.0

#: What jettracks writes at the top of a run directory (glob patterns; a directory
#: pattern ends in ``/`` and lists the patterns jettracks writes inside it).
OWN_OUTPUTS: dict[str, tuple[str, ...]] = {
    "report.json": (),
    "report.html": (),
    ".report.html.tmp-*": (),
    "hists.coffea": (),
    "hists.root": (),
    ".report.json.tmp-*": (),
    ".hists.*.tmp-*": (),
    ".jettracks-probe-*": (),
    "plots/": ("*.png", ".*.png.tmp-*"),
    "ml/": (
        "part-*.parquet",
        ".part-*.parquet.tmp-*",
        "part-*.arrow",
        ".part-*.arrow.tmp-*",
        "manifest.json",
        "README.md",
        "jets_padded.h5",
        ".manifest.json.tmp-*",
        ".README.md.tmp-*",
        ".jets_padded.h5.tmp-*",
        "weaver.yaml",
        ".weaver.yaml.tmp-*",
    ),
    "checkpoints/": ("**",),
    "logs/": ("dask.log", "dask.log.*"),
}


class RunDirError(RuntimeError):
    """The run directory cannot be used; the message is one line naming it."""


@dataclass
class ClaimResult:
    """What claiming the directory found.

    Attributes:
        created: the directory was new or empty.
        resumed: an earlier run with the same fingerprint left it (checkpoints are reused).
        removed: jettracks outputs removed by ``overwrite`` (paths relative to the directory).
        kept: other files found and left in place by ``overwrite``.
    """

    created: bool = False
    resumed: bool = False
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


class RunDirectory:
    """One claimed output directory (use as a context manager: the lock is held inside).

    Args:
        path: the directory (made absolute; created when absent).
        fingerprint: the run's fingerprint (:func:`run_fingerprint`).
    """

    def __init__(self, path: str | os.PathLike | RemotePath, fingerprint: str) -> None:
        text = str(path) if isinstance(path, RemotePath) else os.fspath(path)
        if not text.strip():
            raise RunDirError("output directory: empty path")
        try:
            self.path = out_path(text).expanduser().absolute()
        except ValueError as err:
            raise RunDirError(f"output directory: {err}") from None
        self.fingerprint = fingerprint
        self.checkpoint_dir = self.path / "checkpoints" / fingerprint
        self._lock_fd: int | None = None
        self._lease: _Lease | None = None

    # -- claim -----------------------------------------------------------------------------
    def claim(self, *, overwrite: bool = False, resume: bool = False) -> ClaimResult:
        """Check the directory is ours, lock it, and apply the overwrite/resume rules.

        Raises:
            RunDirError: the path is a file, not writable, holds files jettracks did
                not write, is locked by another run, or holds a different run
                (without ``overwrite``); ``resume`` with nothing to resume.
        """
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunDirError(f"output directory {p} is a file, not a directory")
        marker = p / MARKER
        if p.is_dir() and not marker.exists():
            foreign = [c.name for c in p.iterdir() if c.name != LOCK]
            if foreign:
                raise RunDirError(
                    f"{p} is not empty and was not written by jettracks (no {MARKER}; "
                    f"found {_names(foreign)}); choose another --output"
                )
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunDirError(f"cannot create output directory {p}: {_reason(err)}") from None
        self._lock()
        try:
            return self._claim_locked(overwrite=overwrite, resume=resume)
        except BaseException:
            self.release()
            raise

    def _claim_locked(self, *, overwrite: bool, resume: bool) -> ClaimResult:
        p, marker = self.path, self.path / MARKER
        result = ClaimResult()
        old = _read_marker(marker) if marker.exists() else None
        if old is None and marker.exists():
            raise RunDirError(f"{marker}: unreadable run marker; remove it by hand if {p} is yours")
        if old is None:
            foreign = [c.name for c in p.iterdir() if c.name not in (LOCK, MARKER)]
            if foreign:  # appeared between the first check and the lock
                raise RunDirError(f"{p} is not empty and was not written by jettracks; choose another --output")
            if resume:
                raise RunDirError(f"--resume: no earlier run in {p}")
            result.created = True
        elif overwrite:
            result.removed, result.kept = remove_own_outputs(p)
        elif old.get("fingerprint") != self.fingerprint:
            raise RunDirError(
                f"{p} holds a run of a different config, processor or code; "
                "pass --overwrite to replace its jettracks outputs, or choose another --output"
            )
        else:
            result.resumed = True
        self._write_marker()
        return result

    def _write_marker(self) -> None:
        content = {"jettracks_run_directory": 1, "fingerprint": self.fingerprint}
        try:
            with atomic_path(self.path / MARKER) as tmp:
                tmp.write_text(json.dumps(content) + "\n")
        except OSError as err:
            raise RunDirError(f"cannot write to output directory {self.path}: {_reason(err)}") from None

    # -- lock ------------------------------------------------------------------------------
    def _lock(self) -> None:
        if isinstance(self.path, RemotePath):
            self._lease = _Lease.acquire(self.path / LOCK)
            return
        import fcntl

        path = self.path / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunDirError(f"cannot write to output directory {self.path}: {_reason(err)}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = ""
            try:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise RunDirError(
                    f"{self.path} is in use by another jettracks run"
                    f"{' (' + holder + ')' if holder else ''}; wait for it or choose another --output"
                ) from None
            raise RunDirError(f"cannot lock output directory {self.path}: {_reason(err)}") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass  # the flock is what counts; the text is only for the message
        self._lock_fd = fd

    def release(self) -> None:
        """Release the lock (also released by the kernel if the process dies)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class _Lease:
    """The lock of a ``root://`` run directory (see the module docstring)."""

    def __init__(self, path: RemotePath, content: dict[str, Any]) -> None:
        self.path, self.content = path, content
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="jettracks-lease", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, path: RemotePath) -> _Lease:
        content = {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8),
                   "time": time.time()}
        for _ in range(2):
            try:
                create_new(path, json.dumps(content))
                return cls(path, content)
            except FileExistsError:
                holder = _read_json(path)
                if not _lease_stale(holder):
                    who = f" (pid {holder.get('pid')} on {holder.get('host')})" if holder else ""
                    raise RunDirError(
                        f"{path.parent} is in use by another jettracks run{who}; wait for it or choose "
                        f"another --output (a lock not renewed for {LEASE_S:.0f} s is taken over)"
                    ) from None
                path.unlink(missing_ok=True)  # a stale jettracks lock
            except OSError as err:
                raise RunDirError(f"cannot lock output directory {path.parent}: {_reason(err)}") from None
        raise RunDirError(f"cannot lock output directory {path.parent}: another run took it meanwhile")

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_RENEW_S):
            try:
                write_text_atomic(self.path, json.dumps({**self.content, "time": time.time()}))
            except OSError:
                pass  # the next renewal tries again; the run's own writes fail loudly

    def release(self) -> None:
        self._stop.set()
        self._thread.join(10)
        try:  # only our own lock
            if (_read_json(self.path) or {}).get("token") == self.content["token"]:
                self.path.unlink(missing_ok=True)
        except OSError:
            pass


def _lease_stale(holder: dict[str, Any] | None) -> bool:
    if not holder or not isinstance(holder.get("time"), (int, float)):
        return True  # not a lock jettracks wrote whole (it writes atomically)
    if holder.get("host") == socket.gethostname() and not _pid_alive(holder.get("pid")):
        return True
    return time.time() - holder["time"] > LEASE_S


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def _read_json(path: Any) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_own_outputs(directory: Path) -> tuple[list[str], list[str]]:
    """Remove jettracks' own outputs (:data:`OWN_OUTPUTS`) from ``directory``; keep the rest.

    Returns:
        (removed, kept): paths relative to ``directory``.
    """
    removed: list[str] = []
    kept: list[str] = []
    for child in sorted(directory.iterdir()):
        name = child.name
        if name in (MARKER, LOCK):
            continue
        if child.is_dir() and not child.is_symlink() and f"{name}/" in OWN_OUTPUTS:
            patterns = OWN_OUTPUTS[f"{name}/"]
            for sub in sorted(child.rglob("*"), reverse=True):  # files before their directories
                rel = sub.relative_to(child).as_posix()
                if sub.is_dir() and not sub.is_symlink():
                    if patterns == ("**",):
                        _rmdir_if_empty(sub)
                    continue
                if patterns == ("**",) or ("/" not in rel and any(fnmatch.fnmatch(rel, pat) for pat in patterns)):
                    sub.unlink()
                    removed.append(f"{name}/{rel}")
                else:
                    kept.append(f"{name}/{rel}")
            _rmdir_if_empty(child)
        elif not child.is_dir() and any(fnmatch.fnmatch(name, pat) for pat in OWN_OUTPUTS if not pat.endswith("/")):
            child.unlink()
            removed.append(name)
        else:
            kept.append(name + ("/" if child.is_dir() else ""))
    return removed, kept


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty: it holds something jettracks did not write


def _read_marker(path: Path) -> dict[str, Any] | None:
    data = _read_json(path)
    return data if data is not None and "fingerprint" in data else None


def _names(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _reason(err: OSError) -> str:
    """``strerror`` of a local error; the message of one without (XRootD's, via fsspec)."""
    return err.strerror or " ".join(str(err).split()) or err.__class__.__name__


# -- fingerprint -----------------------------------------------------------------------------


def code_files(processor_class: type) -> list[Path]:
    """Source files whose code shapes a run's outputs.

    Every module of the ``jettracks`` package, every module of the processor's
    top-level package (or its own module when it is not in a package), and the
    module of every class in the processor's MRO (base classes included).
    """
    import jettracks

    files: set[Path] = set(Path(jettracks.__file__).parent.rglob("*.py"))
    for klass in inspect.getmro(processor_class):
        module = sys.modules.get(klass.__module__)
        path = getattr(module, "__file__", None)
        if path:
            files.add(Path(path))
    top = sys.modules.get(processor_class.__module__.split(".")[0])
    top_path = getattr(top, "__file__", None)
    if top_path and Path(top_path).name == "__init__.py":
        files |= set(Path(top_path).parent.rglob("*.py"))
    return sorted(f.resolve() for f in files if f.suffix == ".py" and f.is_file())


def run_fingerprint(processor_class: type, config_part: dict[str, Any], versions: dict[str, str]) -> str:
    """Hash of the code (:func:`code_files`), the package versions and the output-shaping config.

    A change in any of them invalidates old checkpoints (and needs ``--overwrite``).

    Args:
        processor_class: the configured processor class.
        config_part: every config option that changes an output (datasets, processor,
            chunking, engine, ML export options), JSON-serialisable.
        versions: package name -> version of the packages that shape results.
    """
    h = hashlib.sha256()
    for path in code_files(processor_class):
        h.update(path.as_posix().encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    h.update(json.dumps(versions, sort_keys=True).encode())
    h.update(json.dumps(config_part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def describe_removal(removed: list[str], kept: list[str]) -> str:
    """One line: what ``--overwrite`` removed and kept."""
    text = f"--overwrite: removed {len(removed)} jettracks output file(s)"
    if kept:
        text += f"; kept {len(kept)} other file(s): {_names(kept)}"
    return text
