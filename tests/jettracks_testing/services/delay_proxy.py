#!/usr/bin/env python3
"""A TCP proxy that delays every forwarded chunk by a fixed time in each direction.

There is no ``tc netem`` on the test machines (the ``sch_netem`` module is missing),
so wide-area latency is emulated in user space: every chunk of bytes read from one
side is written to the other side ``delay_s`` seconds after it arrived, in order.
Delays overlap (a chunk is not held back by the delay of the one before it), so the
proxy adds latency, not a bandwidth limit: 25 ms each way = 50 ms round-trip time,
as from a laptop to CERN.

Python (a separate process, so the delays do not depend on the GIL of the caller)::

    from jettracks_testing.services.delay_proxy import start_delay_proxy
    with start_delay_proxy("127.0.0.1", xrootd_port, delay_s=0.025) as proxy:
        proxy.port                      # connect here instead of xrootd_port
        proxy.url_for_port(url)         # root://127.0.0.1:XRD//a.root -> ...:PROXY//a.root

Command line::

    python tests/jettracks_testing/services/delay_proxy.py TARGET_HOST TARGET_PORT
        --delay-ms 25 [--listen-host 127.0.0.1] [--listen-port 0] [--max-seconds 3600]

prints ``LISTENING host port`` on stdout once it accepts connections. The proxy
always ends by itself after ``--max-seconds`` (bounded runtime: a test that dies
leaves no proxy behind for long); ``stop()`` ends it at once.

Standard library only (runs under the venv's or a system Python).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time

__all__ = ["DelayProxy", "start_delay_proxy"]

#: Bytes read from a socket at a time.
READ_SIZE = 1 << 16
#: Default lifetime of a proxy process (seconds).
DEFAULT_MAX_SECONDS = 3600.0


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Forward ``reader`` -> ``writer``, each chunk ``delay_s`` after it arrived, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def receive() -> None:
        try:
            while True:
                data = await reader.read(READ_SIZE)
                await queue.put((loop.time() + delay_s, data))
                if not data:
                    return
        except (ConnectionError, OSError):
            await queue.put((loop.time() + delay_s, b""))

    async def send() -> None:
        try:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError, RuntimeError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return

    receiver = asyncio.create_task(receive())
    try:
        await send()
    finally:
        receiver.cancel()
        with contextlib.suppress(BaseException):
            await receiver


async def _serve(target_host: str, target_port: int, delay_s: float, listen_host: str, listen_port: int,
                 max_seconds: float) -> None:
    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            s_reader, s_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            c_writer.close()
            return
        # The TCP handshake to the target is not delayed; the first request is (by delay_s each way).
        try:
            await asyncio.gather(_pump(c_reader, s_writer, delay_s), _pump(s_reader, c_writer, delay_s))
        except asyncio.CancelledError:  # the proxy is stopping
            pass
        finally:
            for w in (c_writer, s_writer):
                with contextlib.suppress(Exception):
                    w.close()

    server = await asyncio.start_server(handle, listen_host, listen_port)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"LISTENING {host} {port}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=max_seconds)


class DelayProxy:
    """A running delay proxy process (see the module docstring).

    Attributes:
        target: ``(host, port)`` forwarded to.
        delay_s: seconds added in each direction.
        host, port: where it listens.
        pid: the proxy process.
    """

    def __init__(self, proc: subprocess.Popen, target: tuple[str, int], delay_s: float, host: str, port: int):
        self._proc = proc
        self.target = target
        self.delay_s = delay_s
        self.host = host
        self.port = port
        self.pid = proc.pid

    @property
    def rtt_ms(self) -> float:
        """The added round-trip time (ms)."""
        return 2000.0 * self.delay_s

    def url_for_port(self, url: str) -> str:
        """``url`` (``root://HOST:TARGET_PORT//path``) pointed at the proxy instead."""
        return re.sub(r"^(\w+://)[^/]+", rf"\g<1>{self.host}:{self.port}", url, count=1)

    def is_running(self) -> bool:
        return self._proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """End the proxy (SIGTERM, then SIGKILL); a no-op when it already ended."""
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> DelayProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"DelayProxy({self.host}:{self.port} -> {self.target[0]}:{self.target[1]}, "
                f"{self.delay_s * 1000:g} ms each way, {'running' if self.is_running() else 'stopped'})")


def start_delay_proxy(target_host: str, target_port: int, *, delay_s: float, listen_host: str = "127.0.0.1",
                      listen_port: int = 0, max_seconds: float = DEFAULT_MAX_SECONDS,
                      timeout: float = 15.0) -> DelayProxy:
    """Start a delay proxy process in front of ``target_host:target_port``; returns once it listens.

    Args:
        delay_s: seconds each chunk is held in each direction (RTT added = 2 x delay_s).
        listen_port: 0 (default): a free port.
        max_seconds: the process ends by itself after this long.

    Raises:
        RuntimeError: the process did not come up within ``timeout`` seconds.
    """
    cmd = [sys.executable, os.path.abspath(__file__), target_host, str(int(target_port)),
           "--delay-ms", repr(1000.0 * delay_s), "--listen-host", listen_host,
           "--listen-port", str(int(listen_port)), "--max-seconds", repr(float(max_seconds))]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    line = ""
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("LISTENING"):
            _, host, port = line.split()
            return DelayProxy(proc, (target_host, int(target_port)), delay_s, host, int(port))
        if not line and proc.poll() is not None:
            break
    with contextlib.suppress(Exception):
        proc.kill()
        proc.wait(5)
    raise RuntimeError(f"delay proxy did not start (last output {line!r}, exit {proc.poll()})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="delay_proxy.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("target_host")
    ap.add_argument("target_port", type=int)
    ap.add_argument("--delay-ms", type=float, required=True, help="delay in each direction (ms)")
    ap.add_argument("--listen-host", default="127.0.0.1")
    ap.add_argument("--listen-port", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS)
    args = ap.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.target_host, args.target_port, args.delay_ms / 1000.0, args.listen_host,
                           args.listen_port, args.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
