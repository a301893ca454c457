"""Faults injected into a running test: a worker killed, or the client interrupted, once a run
has checkpointed some chunks."""

from __future__ import annotations

import _thread
import os
import signal
import threading
import time
from pathlib import Path

__all__ = ["after_checkpoints"]


def after_checkpoints(ckpt_dir: Path, n: int, *, kill_pid: int | None = None, timeout: float = 120.0) -> threading.Thread:
    """A started daemon thread that waits until ``ckpt_dir`` holds ``n`` checkpoints (``*.pkl``,
    at most ``timeout`` s), then SIGKILLs ``kill_pid`` or, without one, interrupts the main
    thread (KeyboardInterrupt, as Ctrl-C). ``join()`` it after the run."""

    def act() -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and len(list(Path(ckpt_dir).rglob("*.pkl"))) < n:
            time.sleep(0.01)
        if kill_pid is not None:
            os.kill(kill_pid, signal.SIGKILL)
        else:
            _thread.interrupt_main()

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    return thread
