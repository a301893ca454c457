"""Dask's own logs (scheduler, nannies, workers) to a file and off the console during a run."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["capture_dask_logs"]

logger = logging.getLogger(__name__)


@dataclass
class _LogCapture:
    verbose: bool
    handler: logging.Handler | None


_CAPTURE: contextvars.ContextVar[_LogCapture | None] = contextvars.ContextVar("jettracks_dask_logs", default=None)

#: Loggers whose records (scheduler, nanny, and workers' forwarded ones) the capture sees.
_DASK_LOGGERS = ("distributed", "dask_jobqueue", "dask_gateway")


def _worker_console_level() -> int | bool:
    """``silence_logs`` for clusters we start: their workers' console handlers' level.

    Inside :func:`capture_dask_logs` without ``verbose``: CRITICAL (the workers'
    warnings and errors reach the log file by forwarding instead); with ``verbose``:
    nothing silenced (False); outside: dask's default (WARNING).
    """
    capture = _CAPTURE.get()
    if capture is None:
        return logging.WARNING
    return False if capture.verbose else logging.CRITICAL


class _LazyFileHandler(logging.Handler):
    """Writes records to a file created (with its directory) at the first record.

    A run without Dask (``serial``) leaves no empty file. Deliberately not a
    ``logging.StreamHandler``: distributed's ``silence_logs`` turns down every
    StreamHandler of its loggers, which would silence the file too.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._file: logging.FileHandler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = logging.FileHandler(self.path, encoding="utf-8")
                self._file.setFormatter(self.formatter)
            self._file.emit(record)
        except Exception:  # logging must never end the run
            self.handleError(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        super().close()


@contextlib.contextmanager
def capture_dask_logs(log_path: Path | None, *, verbose: bool = False) -> Iterator[Path | None]:
    """Route Dask's logs (scheduler, workers) to ``log_path`` and, unless ``verbose``, off the console.

    Without it, a failing chunk prints distributed's multi-line ``Compute Failed``
    (with the task's arguments) on the console next to the run's one-line error.
    Inside this context, clusters that :func:`jettracks.cluster.connect` starts keep
    their workers' console quiet (``silence_logs``), and workers' warnings and errors
    are forwarded to this process (``Client.forward_logging``), where they are written
    to ``log_path`` with the scheduler's and the nannies' own records.

    Args:
        log_path: the log file (``pathlib.Path``; appended to; created with its directory at
            the first record), e.g. ``<output dir>/logs/dask.log``; None: no file.
        verbose: also keep Dask's logs on the console (workers' INFO included; bool, default False).

    Yields:
        ``log_path``.
    """
    from ..io.outfs import RemotePath

    handler: logging.Handler | None = None
    local_log = remote_log = None
    if isinstance(log_path, RemotePath):  # written here, appended to the server's copy at the end
        import tempfile

        remote_log, local_log = log_path, Path(tempfile.mkdtemp(prefix="jettracks-log-")) / log_path.name
    elif log_path is not None:
        local_log = log_path = Path(log_path)
    if local_log is not None:
        handler = _LazyFileHandler(local_log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handler.setLevel(logging.INFO)
    consoles: list[tuple[logging.Handler, int]] = []
    for name in _DASK_LOGGERS:
        lg = logging.getLogger(name)
        if handler is not None:
            lg.addHandler(handler)
        if not verbose:
            for h in lg.handlers:
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    consoles.append((h, h.level))
                    h.setLevel(logging.CRITICAL + 1)
    token = _CAPTURE.set(_LogCapture(verbose, handler))
    try:
        yield log_path
    finally:
        _CAPTURE.reset(token)
        for h, level in consoles:
            h.setLevel(level)
        if handler is not None:
            for name in _DASK_LOGGERS:
                logging.getLogger(name).removeHandler(handler)
            handler.close()
        if remote_log is not None:
            _append_remote(local_log, remote_log)


def _append_remote(local: Path, remote) -> None:
    """Append the local log file to the log on the server (atomically); never raises."""
    import shutil

    from ..io.atomic import atomic_path

    try:
        if local.is_file():
            old = remote.read_bytes() if remote.is_file() else b""
            with atomic_path(remote) as tmp:
                tmp.write_bytes(old + local.read_bytes())
    except OSError as err:  # logging must never end the run
        logger.warning("cannot write %s: %s", remote, err)
    finally:
        shutil.rmtree(local.parent, ignore_errors=True)


@contextlib.contextmanager
def _forward_worker_logs(client) -> Iterator[None]:
    """Workers' distributed warnings and errors -> this process's loggers (captured only)."""
    capture = _CAPTURE.get()
    if capture is None or client is None:
        yield
        return
    try:
        client.forward_logging("distributed", level=logging.WARNING)
    except Exception as err:  # an old scheduler, a closed client: the logs stay on the workers
        logger.debug("cannot forward worker logs: %s", err)
        yield
        return
    try:
        yield
    finally:
        # an attached scheduler outlives the run: do not leave our plugin on its workers
        with contextlib.suppress(Exception):
            client.unforward_logging("distributed")
