#!/usr/bin/env python3
"""Hosts without a shared disk, simulated on this machine: network + mount namespaces.

:func:`start_hosts` builds, as root:

* a bridge in the caller's (the client's) network namespace, ``10.R.S.1/24``;
* one network namespace per host (``sched``, ``w1``, ``w2``, ..., ``xrd``), each joined
  to the bridge by a veth pair (host end in the client namespace, named ``jt<tag><host>``)
  with address ``10.R.S.k/24`` and its own loopback;
* a Dask scheduler in ``sched`` and one Dask worker per worker host, each process also in
  its **own mount namespace** (``unshare --mount``) with a private tmpfs over ``/tmp``
  and over every directory in ``hide`` (the client's output directory's parent): a
  worker sees neither the client's outputs nor the other hosts' scratch;
* optionally an XRootD server in ``xrd`` serving ``serve_dir`` (input files).

Everything is removed by :meth:`Hosts.stop` (processes killed, namespaces, veths and the
bridge deleted). :meth:`Hosts.link_down` cuts a host's link (``ip link set ... down``).

Python::

    with start_hosts(n_workers=2, hide=[out.parent], serve_dir=data) as hosts:
        hosts.scheduler_address        # 'tcp://10.R.S.2:8786'
        hosts.url_for("a.root")        # 'root://10.R.S.k:1094//a.root'
        hosts.link_down("w1")

Needs root, ``ip`` (iproute2) and ``unshare`` (util-linux); otherwise :class:`ServiceUnavailable`.
Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["Hosts", "ServiceUnavailable", "start_hosts"]

HERE = Path(__file__).resolve().parent
SCHEDULER_PORT = 8786
XROOTD_PORT = 1094


class ServiceUnavailable(RuntimeError):
    """The hosts cannot be built here; ``str(err)`` says why."""


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if check and res.returncode != 0:
        raise ServiceUnavailable(f"{' '.join(cmd)}: {res.stderr.strip() or res.stdout.strip()}")
    return res


def _kept(hidden: list[str]) -> list[str]:
    """Directories the hosts' processes need that lie under a hidden directory: the Python
    environment (``sys.prefix``) and the project (this file is in its ``tests/``)."""
    project = Path(__file__).resolve().parents[3]
    wanted = {str(Path(sys.prefix).resolve()), str(project)}
    out = []
    for path in sorted(wanted):
        if any(path == h or path.startswith(h.rstrip("/") + "/") for h in hidden):
            if not any(path.startswith(k.rstrip("/") + "/") for k in out):
                out.append(path)
    return out


def _reachable(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Hosts:
    """The namespaced hosts (see the module docstring)."""

    def __init__(self, n_workers: int = 2, *, hide: list[str | os.PathLike] = (), serve_dir=None,
                 nthreads: int = 1, env: dict[str, str] | None = None, workdir=None) -> None:
        self.tag = secrets.token_hex(2)
        self.n_workers = int(n_workers)
        self.hide = [str(Path(h).resolve()) for h in hide]
        self.serve_dir = Path(serve_dir).resolve() if serve_dir is not None else None
        self.nthreads = int(nthreads)
        self.env = dict(env or {})
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="jettracks-hosts-"))
        self.workdir.chmod(0o755)  # the XRootD server (user nobody) keeps its run files below
        self.subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250) + 1}"
        self.bridge = f"jt{self.tag}br"
        self.names = ["sched"] + [f"w{i + 1}" for i in range(self.n_workers)] + (["xrd"] if serve_dir else [])
        self.ip = {name: f"{self.subnet}.{k + 2}" for k, name in enumerate(self.names)}
        self.procs: dict[str, subprocess.Popen] = {}
        self._commands: dict[str, tuple[list[str], dict[str, str] | None]] = {}
        self._created_ns: list[str] = []
        self._created_links: list[str] = []
        self._xrootd_run_dir = self.workdir / "xrootd-run"

    # -- names ------------------------------------------------------------------------------
    def netns(self, name: str) -> str:
        return f"jt{self.tag}-{name}"

    def veth(self, name: str) -> str:
        return f"jt{self.tag}{name}"  # host end, in the client namespace (<= 15 characters)

    @property
    def scheduler_address(self) -> str:
        return f"tcp://{self.ip['sched']}:{SCHEDULER_PORT}"

    @property
    def workers(self) -> list[str]:
        return [n for n in self.names if n.startswith("w")]

    def url_for(self, rel: str | os.PathLike) -> str:
        """``root://IP:1094//rel`` of a file below :attr:`serve_dir` (relative or absolute)."""
        p = Path(rel)
        if p.is_absolute():
            p = p.resolve().relative_to(self.serve_dir)
        return f"root://{self.ip['xrd']}:{XROOTD_PORT}//{p.as_posix()}"

    # -- network -------------------------------------------------------------------------------
    def _network(self) -> None:
        _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._created_links.append(self.bridge)
        _run(["ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])
        for name in self.names:
            ns, host_end, peer = self.netns(name), self.veth(name), f"jt{self.tag}{name}p"
            _run(["ip", "netns", "add", ns])
            self._created_ns.append(ns)
            _run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", peer])
            self._created_links.append(host_end)
            _run(["ip", "link", "set", peer, "netns", ns])
            _run(["ip", "link", "set", host_end, "master", self.bridge])
            _run(["ip", "link", "set", host_end, "up"])
            inside = ["ip", "netns", "exec", ns]
            _run([*inside, "ip", "link", "set", "lo", "up"])
            _run([*inside, "ip", "link", "set", peer, "name", "eth0"])
            _run([*inside, "ip", "addr", "add", f"{self.ip[name]}/24", "dev", "eth0"])
            _run([*inside, "ip", "link", "set", "eth0", "up"])

    def link_down(self, name: str) -> None:
        """Cut host ``name``'s link (its veth end in the client namespace goes down)."""
        _run(["ip", "link", "set", self.veth(name), "down"])

    def link_up(self, name: str) -> None:
        _run(["ip", "link", "set", self.veth(name), "up"])

    # -- processes -------------------------------------------------------------------------------
    def _private_cmd(self, name: str, cmd: list[str]) -> list[str]:
        """``cmd`` in host ``name``'s network namespace and a private mount namespace
        (tmpfs over /tmp and over every hidden directory).

        The Python environment and the project (:func:`_kept`) stay visible even when
        they live under a hidden directory (a checkout in /tmp, as CI may use): they are
        bind-mounted aside on a private tmpfs before the hiding and back after it.
        """
        hidden = ["/tmp", *self.hide]
        keep = _kept(hidden)
        steps = []
        if keep:
            steps.append("mount -t tmpfs -o size=1m tmpfs /mnt")
            for i, path in enumerate(keep):
                steps += [f"mkdir -p /mnt/k{i}", f"mount --bind '{path}' /mnt/k{i}"]
        steps += [f"mount -t tmpfs -o size=2g tmpfs '{d}'" for d in hidden]
        for i, path in enumerate(keep):
            steps += [f"mkdir -p '{path}'", f"mount --bind /mnt/k{i} '{path}'"]
        mounts = " && ".join(steps)
        script = f"{mounts} && mkdir -p /tmp/scratch /tmp/cache && exec \"$@\""
        return ["ip", "netns", "exec", self.netns(name), "unshare", "--mount", "--propagation", "private",
                "sh", "-c", script, "sh", *cmd]

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed below, kept by the child
        try:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**os.environ, **(env or {})})
        finally:
            log.close()
        self.procs[name] = proc
        self._commands[name] = (cmd, env)
        return proc

    def respawn(self, name: str, timeout: float = 60.0) -> None:
        """Kill host ``name``'s process (if alive) and start it again with the same command
        (the scheduler: waits until it accepts connections)."""
        self.kill(name)
        cmd, env = self._commands[name]
        self._spawn(name, cmd, env)
        if name == "sched":
            deadline = time.monotonic() + timeout
            while not _reachable(self.ip["sched"], SCHEDULER_PORT):
                if time.monotonic() > deadline or self.procs["sched"].poll() is not None:
                    raise ServiceUnavailable(f"scheduler did not restart: {self.log_tail('sched')}")
                time.sleep(0.1)

    def _dask_env(self) -> dict[str, str]:
        env = {
            "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
            "JETTRACKS_CACHE_DIR": "/tmp/cache",
            "TMPDIR": "/tmp/scratch",
            "PYTHONUNBUFFERED": "1",
            # a worker whose link is cut is declared gone after 5 s without a heartbeat
            "DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL": "5s",
            "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "5s",
        }
        env.update(self.env)
        return env

    def start(self, timeout: float = 60.0) -> Hosts:
        if os.geteuid() != 0:
            raise ServiceUnavailable("namespaced hosts need root (ip netns, veth, mount namespaces)")
        for tool in ("ip", "unshare"):
            if shutil.which(tool) is None:
                raise ServiceUnavailable(f"namespaced hosts need {tool!r} on PATH")
        self._network()
        py = sys.executable
        self._spawn("sched", self._private_cmd("sched", [
            py, "-m", "distributed.cli.dask_scheduler", "--host", self.ip["sched"],
            "--port", str(SCHEDULER_PORT), "--no-dashboard"]), self._dask_env())
        for w in self.workers:
            self._spawn(w, self._private_cmd(w, [
                py, "-m", "distributed.cli.dask_worker", self.scheduler_address, "--host", self.ip[w],
                "--nthreads", str(self.nthreads), "--no-nanny", "--no-dashboard", "--name", w,
                "--local-directory", "/tmp/scratch"]), self._dask_env())
        if self.serve_dir is not None:
            self._start_xrootd(timeout)
        deadline = time.monotonic() + timeout
        while not _reachable(self.ip["sched"], SCHEDULER_PORT):
            if time.monotonic() > deadline or self.procs["sched"].poll() is not None:
                raise ServiceUnavailable(f"scheduler did not start: {self.log_tail('sched')}")
            time.sleep(0.1)
        return self

    def _start_xrootd(self, timeout: float) -> None:
        self._xrootd_run_dir.mkdir(parents=True, exist_ok=True)
        self._xrootd_run_dir.chmod(0o755)
        res = subprocess.run(
            ["ip", "netns", "exec", self.netns("xrd"), sys.executable, str(HERE / "xrootd.py"), "start",
             str(self.serve_dir), "--port", str(XROOTD_PORT), "--run-dir", str(self._xrootd_run_dir)],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if res.returncode != 0:
            raise ServiceUnavailable(f"xrootd in its namespace did not start: {res.stderr.strip()[-500:]}")

    def wait_for_workers(self, client, n: int | None = None, timeout: float = 60.0) -> None:
        try:
            client.wait_for_workers(n or self.n_workers, timeout=timeout)
        except (TimeoutError, OSError) as err:
            tails = "; ".join(f"{w}: {self.log_tail(w)}" for w in self.workers)
            raise ServiceUnavailable(f"namespaced workers did not join: {err}; {tails}") from None

    def log_tail(self, name: str, n: int = 5) -> str:
        try:
            return " | ".join((self.workdir / f"{name}.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def kill(self, name: str) -> None:
        """Kill host ``name``'s process (its whole process group)."""
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    def stop(self) -> None:
        """Kill every process, delete the namespaces, veths and bridge; never raises."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for name, proc in list(self.procs.items()):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(deadline - time.monotonic(), 0.1))
            self.kill(name)
        if self.serve_dir is not None:
            subprocess.run([sys.executable, str(HERE / "xrootd.py"), "stop", "--run-dir", str(self._xrootd_run_dir)],
                           capture_output=True, timeout=30, check=False)
        for ns in reversed(self._created_ns):
            _run(["ip", "netns", "pids", ns], check=False)
            pids = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:  # anything still in the namespace was started by us
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _run(["ip", "netns", "del", ns], check=False)
        self._created_ns.clear()
        for link in reversed(self._created_links):
            _run(["ip", "link", "del", link], check=False)
        self._created_links.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Hosts:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_hosts(n_workers: int = 2, **kw) -> Hosts:
    """Build and start :class:`Hosts`; on any failure everything is removed and
    :class:`ServiceUnavailable` (or the error) raised."""
    hosts = Hosts(n_workers, **kw)
    try:
        return hosts.start()
    except BaseException:
        hosts.stop()
        raise
