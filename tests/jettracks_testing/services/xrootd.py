#!/usr/bin/env python3
"""A real, local XRootD server for tests and demos (Debian's ``xrootd-server``).

Python::

    from jettracks_testing.services.xrootd import start_xrootd  # tests/ on sys.path
    with start_xrootd("/srv/data") as server:  # free port, waits until it serves
        server.url                              # 'root://127.0.0.1:PORT/'
        server.url_for("/srv/data/a/b.root")    # 'root://127.0.0.1:PORT//a/b.root'

Command line::

    python tests/jettracks_testing/services/xrootd.py start DIR [--port P] [--run-dir R]   # prints the URL
    python tests/jettracks_testing/services/xrootd.py stop [--run-dir R]
    python tests/jettracks_testing/services/xrootd.py status [--run-dir R]

URL form. The server exports ``DIR`` as its namespace root (``oss.localroot DIR``,
``all.export /``), so the file ``DIR/a/b.root`` is ``root://127.0.0.1:PORT//a/b.root``:
host, then ``//`` and the path *relative to DIR* written as an absolute path. The
single-slash form ``root://127.0.0.1:PORT/a/b.root`` is refused by the server
("Opening relative path ... is disallowed"), and the local absolute path
``root://...//DIR/a/b.root`` does not exist on the server.

Writes. The export is read-write (``all.export / r/w``): clients create files and
directories, rename (``mv``, atomic, replacing the target) and remove them, as a
``root://`` ``output.dir`` needs. ``ofs.persist auto hold 0`` makes every file written
persist-on-successful-close: a writer that dies before closing leaves no partial file.
The server writes as its own user, so a directory it writes into must belong to it:
:meth:`XRootDServer.writable_dir` (or :func:`make_writable`) makes one.

Permissions. xrootd refuses to run as root; as root it is started with
``-R nobody``, so DIR and every parent directory must be traversable by others
(``o+x``) and the files readable (``o+r``). pytest's ``/tmp/pytest-of-root`` is
mode 700: serve from a dedicated ``tempfile.mkdtemp()`` directory chmod'ed 755
instead (as ``tests/jettracks_testing/plugin.py`` does). :func:`start_xrootd`
checks this up front and raises :class:`ServiceUnavailable` naming the offending
directory. As a normal user the server runs as that user.

The module uses only the standard library, so it also runs under a system Python.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["ServiceUnavailable", "XRootDServer", "free_port", "make_writable", "start_xrootd", "stop_xrootd"]

HOST = "127.0.0.1"
DEFAULT_RUN_DIR = Path(tempfile.gettempdir()) / "jettracks-xrootd"
RUN_AS = "nobody"


class ServiceUnavailable(RuntimeError):
    """The service cannot be started here; ``str(err)`` says why (binary missing, ...)."""


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0 and release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _alive(pid: int | None) -> bool:
    """True if ``pid`` is a running (not zombie) process."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _terminate(pid: int | None, timeout: float = 10.0) -> None:
    """SIGTERM ``pid``, then SIGKILL if it is still there after ``timeout`` seconds."""
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _other_can_traverse(root: Path) -> str | None:
    """None if ``root`` and all its parents are o+x (and root o+r); else the offending path."""
    root = root.resolve()
    for path in [root, *root.parents]:
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            return f"{path} (mode {stat.S_IMODE(mode):o})"
    if not root.stat().st_mode & stat.S_IROTH:
        return f"{root} (mode {stat.S_IMODE(root.stat().st_mode):o}, not readable)"
    return None


def make_writable(path: str | os.PathLike) -> Path:
    """Create directory ``path`` (below a served directory) writable by the server's user:
    owned by ``nobody`` when the server runs as root (``-R nobody``), else by this user."""
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        nobody = pwd.getpwnam(RUN_AS)
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    p.chmod(0o755)
    return p


def _log_tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def _ready(port: int, log_file: Path) -> bool:
    """True once the daemon logged the end of its initialisation and accepts TCP.

    (No XRootD client here: a client in this process that saw the server go away
    keeps that channel's error state for a while, which would stall a restart.)
    """
    try:
        if f":{port} initialization completed" not in log_file.read_text(errors="replace"):
            return False
    except OSError:
        return False
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


class XRootDServer:
    """One ``xrootd`` daemon serving ``root_dir`` on ``127.0.0.1:port``.

    Attributes:
        root_dir: the served directory (namespace root ``/``).
        port: TCP port.
        run_dir: config, log, pid and admin files.
        url: ``root://127.0.0.1:PORT/``; append ``/path/below/root_dir``.
    """

    def __init__(self, root_dir: str | os.PathLike, port: int | None = None, *, run_dir=None):
        self.root_dir = Path(root_dir).resolve()
        self.port = int(port) if port else free_port()
        self._own_run_dir = run_dir is None
        self.run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="jettracks-xrootd-run-"))
        self.pid: int | None = None

    # -- paths and URLs -------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"root://{HOST}:{self.port}/"

    @property
    def config_file(self) -> Path:
        return self.run_dir / "xrootd.cfg"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "xrootd.log"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "xrootd.pid"

    def url_for(self, path: str | os.PathLike) -> str:
        """The ``root://`` URL of a file: an absolute local path below :attr:`root_dir`,
        or a path relative to it (``"a/b.root"`` -> ``root://127.0.0.1:PORT//a/b.root``)."""
        p = Path(path)
        if p.is_absolute():
            for cand in (p, p.resolve()):
                if cand == self.root_dir or self.root_dir in cand.parents:
                    p = cand.relative_to(self.root_dir)
                    break
            else:
                raise ValueError(f"{path} is not below the served directory {self.root_dir}")
        rel = p.as_posix()
        return f"{self.url}/{'' if rel == '.' else rel}"

    def is_running(self) -> bool:
        return _alive(self.pid)

    def writable_dir(self, rel: str) -> str:
        """Make ``root_dir/rel`` a directory the server may write into; return its URL."""
        make_writable(self.root_dir / rel)
        return self.url_for(rel)

    # -- lifecycle --------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> XRootDServer:
        """Start the daemon and wait until it answers; raises :class:`ServiceUnavailable`."""
        if self.is_running():
            return self
        exe = shutil.which("xrootd")
        if exe is None:
            raise ServiceUnavailable(
                "xrootd binary not found on PATH (install Debian's xrootd-server: "
                "tests/jettracks_testing/services/install.sh)"
            )
        if not self.root_dir.is_dir():
            raise ServiceUnavailable(f"xrootd: served directory {self.root_dir} does not exist")
        as_root = os.geteuid() == 0
        if as_root:
            try:
                nobody = pwd.getpwnam(RUN_AS)
            except KeyError:
                raise ServiceUnavailable(f"xrootd: running as root needs a user {RUN_AS!r}") from None
            bad = _other_can_traverse(self.root_dir)
            if bad:
                raise ServiceUnavailable(
                    f"xrootd runs as {RUN_AS!r} (it refuses root) and cannot read {self.root_dir}: "
                    f"{bad} is not accessible to others; serve from a directory whose parents are o+x "
                    "(e.g. tempfile.mkdtemp() chmod 755)"
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            f"xrd.port {self.port}\n"
            f"oss.localroot {self.root_dir}\n"
            "all.export / r/w\n"  # writes: root:// output directories
            "ofs.persist auto hold 0\n"  # a file whose writer dies before close is removed
            f"all.adminpath {self.run_dir}\n"
            f"all.pidpath {self.run_dir}\n"
        )
        for stale in (self.pid_file, self.log_file):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        cmd = [exe]
        if as_root:
            os.chown(self.run_dir, nobody.pw_uid, nobody.pw_gid)
            os.chmod(self.config_file, 0o644)
            cmd += ["-R", RUN_AS]
        cmd += ["-c", str(self.config_file), "-l", str(self.log_file), "-b", "-s", str(self.pid_file)]
        # -b: xrootd forks into the background; the foreground process exits at once.
        proc = subprocess.run(
            cmd,
            cwd=self.run_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise ServiceUnavailable(
                f"xrootd failed to start (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid is None and self.pid_file.exists():
                with contextlib.suppress(ValueError):
                    self.pid = int(self.pid_file.read_text().split()[0])
            if self.pid is not None:
                if not _alive(self.pid):
                    break
                if _ready(self.port, self.log_file):
                    self._write_state()
                    return self
            time.sleep(0.1)
        pid, self.pid = self.pid, None
        _terminate(pid)
        raise ServiceUnavailable(
            f"xrootd on port {self.port} did not come up within {timeout:.0f} s; "
            f"log {self.log_file}:\n{_log_tail(self.log_file)}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the daemon (SIGTERM, then SIGKILL); a no-op when it is not running."""
        if self.pid is None and self.pid_file.exists():
            with contextlib.suppress(ValueError, OSError):
                self.pid = int(self.pid_file.read_text().split()[0])
        _terminate(self.pid, timeout)
        self.pid = None
        with contextlib.suppress(FileNotFoundError):
            (self.run_dir / "state.json").unlink()

    def restart(self, timeout: float = 30.0) -> XRootDServer:
        """Stop and start again on the same port and directory."""
        self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        """Stop, and remove the run directory if this object created it."""
        self.stop()
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def _write_state(self) -> None:
        (self.run_dir / "state.json").write_text(
            json.dumps({"pid": self.pid, "port": self.port, "root_dir": str(self.root_dir), "url": self.url})
        )

    def __enter__(self) -> XRootDServer:
        return self.start() if not self.is_running() else self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"XRootDServer({str(self.root_dir)!r}, url={self.url!r}, {state})"


def start_xrootd(root_dir, port: int | None = None, *, run_dir=None, timeout: float = 30.0) -> XRootDServer:
    """Serve ``root_dir`` over XRootD on ``127.0.0.1`` (free port if ``port`` is None).

    Returns the running :class:`XRootDServer` (also a context manager that stops it).

    Raises:
        ServiceUnavailable: no ``xrootd`` binary, directory not readable by the server
            user, or the daemon did not come up (the message has the log's tail).
    """
    server = XRootDServer(root_dir, port, run_dir=run_dir)
    try:
        return server.start(timeout)
    except BaseException:
        server.cleanup()
        raise


def stop_xrootd(run_dir=DEFAULT_RUN_DIR) -> bool:
    """Stop the server whose run directory is ``run_dir``; True if one was running."""
    run_dir = Path(run_dir)
    pid = None
    for name in ("state.json", "xrootd.pid"):
        path = run_dir / name
        if path.exists():
            with contextlib.suppress(ValueError, OSError, KeyError):
                text = path.read_text()
                pid = json.loads(text)["pid"] if name.endswith(".json") else int(text.split()[0])
                break
    was = _alive(pid)
    _terminate(pid)
    with contextlib.suppress(FileNotFoundError):
        (run_dir / "state.json").unlink()
    return was


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="xrootd.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_start = sub.add_parser("start", help="serve DIR; prints the root:// URL")
    p_start.add_argument("root_dir")
    p_start.add_argument("--port", type=int, default=None)
    p_start.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR))
    p_stop = sub.add_parser("stop", help="stop the server of --run-dir")
    p_stop.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR))
    p_status = sub.add_parser("status", help="print the state of the server of --run-dir")
    p_status.add_argument("--run-dir", default=str(DEFAULT_RUN_DIR))
    args = ap.parse_args(argv)
    if args.cmd == "start":
        stop_xrootd(args.run_dir)  # a leftover server of the same run dir
        try:
            server = start_xrootd(args.root_dir, args.port, run_dir=args.run_dir)
        except ServiceUnavailable as err:
            print(f"xrootd: {err}", file=sys.stderr)
            return 1
        print(server.url)
        print(f"xrootd: pid {server.pid}, serving {server.root_dir}; log {server.log_file}", file=sys.stderr)
        return 0
    if args.cmd == "stop":
        was = stop_xrootd(args.run_dir)
        print("xrootd: stopped" if was else "xrootd: not running", file=sys.stderr)
        return 0
    state = Path(args.run_dir) / "state.json"
    if state.exists() and _alive(json.loads(state.read_text()).get("pid")):
        print(state.read_text())
        return 0
    print("xrootd: not running", file=sys.stderr)
    return 3


if __name__ == "__main__":
    sys.exit(main())
