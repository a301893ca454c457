#!/usr/bin/env python3
"""A real single-node Slurm (Debian's slurmctld + slurmd + munge) for tests and demos.

Python::

    from jettracks_testing.services.slurm import start_slurm  # tests/ on sys.path
    cluster = start_slurm("/tmp/some-dir")            # waits for an idle node + a test job
    os.environ.update(cluster.env)                    # SLURM_CONF for sbatch/squeue/scancel
    ...
    cluster.stop()                                    # cancels jobs, stops the daemons

Command line::

    python tests/jettracks_testing/services/slurm.py start WORKDIR    # prints `export SLURM_CONF=...`
    python tests/jettracks_testing/services/slurm.py stop WORKDIR
    python tests/jettracks_testing/services/slurm.py status WORKDIR

Everything lives in WORKDIR: its own munge key and socket, ``jettracks-slurm.conf``,
state/spool/log directories; ports are picked free. Nothing under /etc is touched and
a system Slurm (if any) is not disturbed: clients reach this cluster only through
``SLURM_CONF`` (:attr:`SlurmCluster.env`).

Needs root (slurmd launches jobs as their users). The daemons run in the foreground
as children of the starting process and get SIGTERM if it dies (``PR_SET_PDEATHSIG``),
so a crashed test run leaves no daemons; :func:`start_slurm` also stops daemons of
earlier runs whose starting process is gone (found by an environment marker, never by
name alone). ``start`` from the command line detaches them instead; ``stop`` ends them.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ServiceUnavailable", "SlurmCluster", "start_slurm", "stop_slurm"]

CONF_NAME = "jettracks-slurm.conf"
PARTITION = "debug"
OWNER_VAR = "JETTRACKS_SLURM_OWNER"  # "<pid>:<starttime>" of the starting process, or "cli"
WORKDIR_VAR = "JETTRACKS_SLURM_WORKDIR"
DAEMONS = ("munged", "slurmctld", "slurmscriptd", "slurmd", "slurmstepd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scancel", "srun")


class ServiceUnavailable(RuntimeError):
    """The service cannot be started here; ``str(err)`` says why (not root, binary missing, ...)."""


# -- processes ---------------------------------------------------------------------------


def _proc_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _owner_token(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{pid}:{_proc_start_time(pid)}"


def _owner_alive(token: str) -> bool:
    if token == "cli":
        return True
    pid_s, _, start = token.partition(":")
    try:
        pid = int(pid_s)
    except ValueError:
        return False
    return _alive(pid) and _proc_start_time(pid) == start


def _marked_processes() -> list[tuple[int, str, dict[str, str]]]:
    """(pid, name, marker env) of Slurm/munge daemons started by this module."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            name = (entry / "comm").read_text().strip()
            if name not in DAEMONS and not name.startswith("slurmstepd"):
                continue
            raw = (entry / "environ").read_bytes()
        except OSError:
            continue
        env = dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)
        if OWNER_VAR in env and _alive(pid):
            out.append((pid, name, {k: env[k] for k in (OWNER_VAR, WORKDIR_VAR) if k in env}))
    return out


def _terminate(pids: list[int], timeout: float = 10.0) -> None:
    """SIGTERM all, wait, SIGKILL the rest."""
    pids = [p for p in pids if _alive(p)]
    for p in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for p in pids:
        if _alive(p):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)


def _order(name: str) -> int:
    # Stop job steps first, then the node daemon, the controller, and munge last.
    return {"slurmstepd": 0, "slurmd": 1, "slurmctld": 2, "slurmscriptd": 2, "munged": 3}.get(name, 0)


def reap_leftovers(workdir: str | os.PathLike | None = None) -> list[int]:
    """Stop daemons of earlier runs: those whose starting process is gone, and all of ``workdir``.

    Only processes carrying this module's environment marker are touched.
    Returns the pids that were signalled.
    """
    wd = str(Path(workdir).resolve()) if workdir is not None else None
    victims = [
        (pid, name)
        for pid, name, env in _marked_processes()
        if not _owner_alive(env.get(OWNER_VAR, "")) or (wd is not None and env.get(WORKDIR_VAR) == wd)
    ]
    victims.sort(key=lambda v: _order(v[1]))
    for group in sorted({_order(n) for _, n in victims}):
        _terminate([p for p, n in victims if _order(n) == group])
    return [p for p, _ in victims]


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: no dlopen between fork and exec
except OSError:  # pragma: no cover
    _LIBC = None


def _pdeathsig() -> None:  # runs in the child between fork and exec (fallback when no setpriv)
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("0.0.0.0", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _mem_total_mb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 1024  # pragma: no cover


def _tail(path: Path, n: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# -- the cluster ---------------------------------------------------------------------------


class SlurmCluster:
    """A single-node Slurm cluster living in ``workdir``.

    Attributes:
        workdir: all files (config, munge key/socket, state, spool, logs).
        node: the node name (``hostname -s``).
        partition: the default partition's name.
        cpus, memory_mb: the node's configured CPUs and RealMemory.
        env: ``{"SLURM_CONF": ...}``; export it for ``sbatch``/``squeue``/``scancel``.
    """

    def __init__(self, workdir, *, cpus: int | None = None, memory_mb: int | None = None):
        self.workdir = Path(workdir).resolve()
        self.node = socket.gethostname().split(".")[0]
        self.partition = PARTITION
        self.cpus = cpus or os.cpu_count() or 1
        self.memory_mb = memory_mb or max(512, int(_mem_total_mb() * 0.9))
        self.ctld_port, self.slurmd_port = _free_ports(2)
        self._procs: dict[str, subprocess.Popen] = {}
        self._detached = False

    # -- paths
    @property
    def conf(self) -> Path:
        return self.workdir / CONF_NAME

    @property
    def munge_socket(self) -> Path:
        return self.workdir / "munge" / "jettracks-munge.sock"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    # -- client commands
    def run(self, *cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster (``SLURM_CONF`` set)."""
        return subprocess.run(
            list(cmd),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def node_state(self) -> str:
        r = self.run("sinfo", "-h", "-N", "-n", self.node, "-o", "%T", check=False, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else f"(sinfo failed: {r.stderr.strip()})"

    def jobs(self) -> list[dict[str, str]]:
        """Jobs in the queue: id, name, state, node list."""
        r = self.run("squeue", "-h", "-o", "%i|%j|%T|%N", timeout=10)
        keys = ("id", "name", "state", "nodes")
        return [dict(zip(keys, line.split("|"))) for line in r.stdout.splitlines() if line.strip()]

    # -- lifecycle
    def _check(self) -> None:
        if os.geteuid() != 0:
            raise ServiceUnavailable(
                "Slurm needs root here (slurmd launches jobs as their user and munged/slurmd "
                "run as root); run the service tests as root (CI does)"
            )
        missing = [b for b in ("munged", "slurmctld", "slurmd", *CLIENTS) if shutil.which(b) is None]
        if missing:
            raise ServiceUnavailable(
                f"Slurm binaries not found on PATH: {', '.join(missing)} (Debian packages munge, "
                "slurmctld, slurmd, slurm-client: tests/jettracks_testing/services/install.sh)"
            )

    def _write_files(self) -> None:
        wd = self.workdir
        for sub in ("state", "spool", "log", "munge"):
            shutil.rmtree(wd / sub, ignore_errors=True)
        wd.mkdir(parents=True, exist_ok=True)
        for sub in ("state", "spool", "log"):
            (wd / sub).mkdir()
        (wd / "munge").mkdir(mode=0o755)
        key = wd / "munge" / "munge.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(os.urandom(128))
        def_mem = max(256, min(2048, self.memory_mb // (2 * self.cpus)))
        self.conf.write_text(
            "\n".join(
                [
                    "# Single-node test cluster written by tests/jettracks_testing/services/slurm.py",
                    "ClusterName=jettracks",
                    f"SlurmctldHost={self.node}(127.0.0.1)",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    f"SlurmctldPort={self.ctld_port}",
                    f"SlurmdPort={self.slurmd_port}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    f"StateSaveLocation={wd / 'state'}",
                    f"SlurmdSpoolDir={wd / 'spool'}",
                    f"SlurmctldPidFile={wd / 'slurmctld.pid'}",
                    f"SlurmdPidFile={wd / 'slurmd.pid'}",
                    f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}",
                    f"SlurmdLogFile={self.log_dir / 'slurmd.log'}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "SchedulerType=sched/builtin",
                    "SlurmdParameters=config_overrides",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "SlurmctldTimeout=30",
                    "SlurmdTimeout=30",
                    "InactiveLimit=0",
                    "KillWait=3",
                    "MinJobAge=30",
                    f"DefMemPerCPU={def_mem}",
                    f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                    f"RealMemory={self.memory_mb} State=UNKNOWN",
                    f"PartitionName={self.partition} Nodes={self.node} Default=YES "
                    "MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def _spawn(self, name: str, cmd: list[str], detach: bool) -> None:
        env = {
            **os.environ,
            **self.env,
            OWNER_VAR: "cli" if detach else _owner_token(),
            WORKDIR_VAR: str(self.workdir),
        }
        preexec = None
        if not detach:  # the daemon gets SIGTERM when this process dies
            setpriv = shutil.which("setpriv")
            if setpriv:
                cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
            else:
                preexec = _pdeathsig
        log = open(self.log_dir / f"{name}.out", "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )
        finally:
            log.close()
        self._procs[name] = proc

    def _wait(self, what: str, ok, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise ServiceUnavailable(
                        f"{name} exited with status {proc.returncode} while waiting for {what}; "
                        f"{self._logs()}"
                    )
            if ok():
                return
            time.sleep(0.2)
        raise ServiceUnavailable(f"Slurm: timed out after {timeout:.0f} s waiting for {what}; {self._logs()}")

    def _logs(self) -> str:
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log", "munged.out", "slurmctld.out", "slurmd.out"):
            path = self.log_dir / name
            if path.exists() and path.stat().st_size:
                parts.append(f"--- {path}:\n{_tail(path)}")
        return "logs:\n" + "\n".join(parts) if parts else "no logs written"

    def start(self, timeout: float = 60.0, *, detach: bool = False) -> SlurmCluster:
        """Start munged, slurmctld and slurmd; wait for an idle node and run a test job.

        Args:
            timeout: seconds for each wait (daemons up, node idle, test job).
            detach: keep the daemons running after this process exits (command line);
                otherwise they get SIGTERM when it dies.

        Raises:
            ServiceUnavailable: not root, binaries missing, or a daemon did not come up
                (the message has the tails of the logs).
        """
        self._check()
        reap_leftovers(self.workdir)
        self._write_files()
        self._detached = detach
        try:
            self._spawn(
                "munged",
                [
                    "munged", "--foreground", "--force",
                    f"--socket={self.munge_socket}",
                    f"--key-file={self.workdir / 'munge' / 'munge.key'}",
                    f"--log-file={self.log_dir / 'munged.log'}",
                    f"--pid-file={self.workdir / 'munge' / 'munged.pid'}",
                    f"--seed-file={self.workdir / 'munge' / 'munged.seed'}",
                ],
                detach,
            )
            self._wait("the munge socket", self.munge_socket.exists, timeout)
            self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf)], detach)
            self._wait(
                "slurmctld",
                lambda: self.run("scontrol", "ping", check=False, timeout=10).stdout.count("UP") > 0,
                timeout,
            )
            self._spawn("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(self.conf)], detach)
            self._wait(f"node {self.node} idle", lambda: self.node_state() == "idle", timeout)
            self._wait("a test job (srun true)", self._test_job, timeout)
        except BaseException:
            self.stop()
            raise
        (self.workdir / "state.json").write_text(
            json.dumps({"conf": str(self.conf), "node": self.node, "pids": self.pids()})
        )
        return self

    def _test_job(self) -> bool:
        r = self.run(
            "srun", "-N1", "-n1", "--mem=16", "-t", "1", "-J", "jettracks-probe", "true",
            check=False, timeout=30,
        )
        return r.returncode == 0

    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._procs.items() if p.poll() is None}

    def is_running(self) -> bool:
        return bool(self._procs) and all(p.poll() is None for p in self._procs.values())

    def stop(self, timeout: float = 15.0) -> None:
        """Cancel all jobs, stop the daemons (steps, slurmd, slurmctld, munged). Idempotent."""
        if self._procs.get("slurmctld") is not None and self._procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.run("scancel", f"--partition={self.partition}", check=False, timeout=10)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and self.jobs():
                    time.sleep(0.2)
        reap_leftovers(self.workdir)
        for proc in self._procs.values():  # children: collect their exit status
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        self._procs.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "state.json").unlink()

    def __enter__(self) -> SlurmCluster:
        return self if self.is_running() else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"SlurmCluster({str(self.workdir)!r}, node={self.node!r}, {'running' if self.is_running() else 'stopped'})"


def start_slurm(workdir, *, timeout: float = 60.0, cpus: int | None = None, memory_mb: int | None = None,
                detach: bool = False) -> SlurmCluster:
    """Start a single-node Slurm in ``workdir`` and wait until it runs jobs.

    Raises:
        ServiceUnavailable: with the reason (not root, binaries missing, daemon failure).
    """
    return SlurmCluster(workdir, cpus=cpus, memory_mb=memory_mb).start(timeout, detach=detach)


def stop_slurm(workdir) -> bool:
    """Stop the cluster of ``workdir`` (jobs cancelled first); True if something was running."""
    workdir = Path(workdir).resolve()
    conf = workdir / CONF_NAME
    if conf.exists() and shutil.which("scancel"):
        with contextlib.suppress(Exception):
            subprocess.run(["scancel", f"--partition={PARTITION}"], env={**os.environ, "SLURM_CONF": str(conf)},
                           capture_output=True, timeout=10, check=False)
            time.sleep(1)
    return bool(reap_leftovers(workdir))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="slurm.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("cmd", choices=["start", "stop", "status"])
    ap.add_argument("workdir")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    workdir = Path(args.workdir).resolve()
    if args.cmd == "start":
        try:
            cluster = start_slurm(workdir, timeout=args.timeout, detach=True)
        except ServiceUnavailable as err:
            print(f"slurm: {err}", file=sys.stderr)
            return 1
        print(f"export SLURM_CONF={cluster.conf}")
        print(f"slurm: node {cluster.node} idle, partition {cluster.partition}; logs in {cluster.log_dir}",
              file=sys.stderr)
        return 0
    if args.cmd == "stop":
        was = stop_slurm(workdir)
        print("slurm: stopped" if was else "slurm: not running", file=sys.stderr)
        return 0
    mine = [(pid, name) for pid, name, env in _marked_processes() if env.get(WORKDIR_VAR) == str(workdir)]
    if not mine:
        print("slurm: not running", file=sys.stderr)
        return 3
    for pid, name in mine:
        print(f"{name} {pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
