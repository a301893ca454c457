"""The progress display of a run: chunks and files done / total, entries per second, ETA,
failures so far and the Dask dashboard link.

:class:`Progress` picks its display once, at the start (``mode="auto"``):

- ``notebook``: a progress bar in the notebook (``tqdm.notebook``, needs ``ipywidgets``)
  when running in a Jupyter kernel;
- ``rich``: a live ``rich`` bar when stdout is a terminal;
- ``plain``: periodic plain lines on stdout (every ``interval`` seconds, plus the first
  and the last) when it is not (CI, batch logs), or in a notebook without ``ipywidgets``.

The numbers are :class:`ProgressState` (:meth:`Progress.state`), the same in every display.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, TextIO

__all__ = ["Progress", "ProgressState", "detect_mode"]

Mode = Literal["auto", "rich", "plain", "notebook", "off"]


@dataclass(frozen=True)
class ProgressState:
    """Where a run is.

    Attributes:
        chunks_done, chunks_total: chunks finished (any status) / planned.
        files_done, files_total: files whose every chunk finished / files with chunks.
        entries_done: entries of the chunks finished and not failed (processed or from checkpoints).
        failures: chunks failed so far.
        elapsed_s: seconds since the display started.
        entries_per_s: ``entries_done / elapsed_s`` (0 before the first chunk).
        eta_s: seconds left at the chunk rate so far (``None`` before the first chunk).
        dashboard: the Dask dashboard link (None without one).
    """

    chunks_done: int
    chunks_total: int
    files_done: int
    files_total: int
    entries_done: int
    failures: int
    elapsed_s: float
    entries_per_s: float
    eta_s: float | None
    dashboard: str | None = None

    def line(self) -> str:
        """One plain line: ``chunks 3/10, files 2/5, 1,234 entries/s, ETA 12 s, 0 failed``."""
        eta = "ETA –" if self.eta_s is None else f"ETA {_duration(self.eta_s)}"
        return (
            f"chunks {self.chunks_done}/{self.chunks_total}, files {self.files_done}/{self.files_total}, "
            f"{self.entries_per_s:,.0f} entries/s, {eta}, {self.failures} failed"
        )


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (not a terminal IPython)."""
    mod = sys.modules.get("IPython")
    if mod is None:
        return False
    try:
        shell = mod.get_ipython()
    except Exception:  # noqa: BLE001 - any trouble: not a notebook
        return False
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def detect_mode(stream: TextIO | None = None) -> Literal["rich", "plain", "notebook"]:
    """The display ``mode="auto"`` picks: ``notebook`` in a Jupyter kernel with ``ipywidgets``,
    ``rich`` when ``stream`` (default stdout) is a terminal, else ``plain``."""
    if _in_notebook():
        try:
            import ipywidgets  # noqa: F401
            import tqdm.notebook  # noqa: F401

            return "notebook"
        except ImportError:
            return "plain"
    stream = stream if stream is not None else sys.stdout
    try:
        return "rich" if stream.isatty() else "plain"
    except (AttributeError, ValueError):  # closed or replaced stream
        return "plain"


class Progress:
    """The run's progress display (a context manager), or nothing when disabled.

    Args:
        enabled: show progress (default True); False: count silently.
        total: chunks planned.
        desc: the label (default ``"chunks"``).
        files: the file of every planned chunk (one entry per chunk, repeats expected);
            None (default): files are not counted (``files_total`` 0).
        dashboard: the Dask dashboard link to show (default None).
        mode: ``auto`` (default; :func:`detect_mode`), ``rich``, ``plain``, ``notebook`` or ``off``.
        interval: seconds between plain lines (default 10; the first and last are always printed).
        stream: where plain lines go (default stdout).
    """

    def __init__(
        self,
        enabled: bool,
        total: int,
        desc: str = "chunks",
        *,
        files: Iterable[str] | None = None,
        dashboard: str | None = None,
        mode: Mode = "auto",
        interval: float = 10.0,
        stream: TextIO | None = None,
    ) -> None:
        self.enabled, self.total, self.desc = bool(enabled), int(total), desc
        self.dashboard = dashboard
        self.interval = float(interval)
        self.stream = stream
        self._chunks_left = Counter(files) if files is not None else Counter()
        self._files_total = len(self._chunks_left)
        self._files_done = 0
        self._done = 0
        self._entries = 0
        self._failures = 0
        self._t0 = time.monotonic()
        self._last_line = float("-inf")
        self.mode: str = "off" if not self.enabled else mode
        self._bar: Any = None
        self._task: Any = None

    # -- numbers -------------------------------------------------------------------------------
    def state(self) -> ProgressState:
        """The numbers now."""
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        eta = (self.total - self._done) * elapsed / self._done if self._done else None
        return ProgressState(
            chunks_done=self._done, chunks_total=self.total,
            files_done=self._files_done, files_total=self._files_total,
            entries_done=self._entries, failures=self._failures, elapsed_s=elapsed,
            entries_per_s=self._entries / elapsed if self._done else 0.0, eta_s=eta,
            dashboard=self.dashboard,
        )

    # -- display -------------------------------------------------------------------------------
    def __enter__(self) -> Progress:
        self._t0 = time.monotonic()
        if self.mode == "auto":
            self.mode = detect_mode(self.stream)
        if self.mode == "rich":
            self._start_rich()
        elif self.mode == "notebook":
            self._start_notebook()
        elif self.mode == "plain":
            link = f"; dashboard {self.dashboard}" if self.dashboard else ""
            self._print(f"{self.desc}: {self.total} chunks of {self._files_total} files{link}")
        return self

    def _start_rich(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
            TextColumn("files {task.fields[files]}"), TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"), TextColumn("{task.fields[failed]}"), TimeElapsedColumn(),
            transient=False,
        )
        self._bar.start()
        link = f" [link={self.dashboard}]dashboard[/link]" if self.dashboard else ""  # a terminal hyperlink
        self._task = self._bar.add_task(f"[green]{self.desc}[/green]{link}", total=self.total, **self._fields())

    def _start_notebook(self) -> None:
        from tqdm.notebook import tqdm

        self._bar = tqdm(total=self.total, desc=self.desc, unit="chunk")
        if self.dashboard:
            self._bar.write(f"Dask dashboard: {self.dashboard}")

    def _fields(self) -> dict[str, str]:
        s = self.state()
        return {
            "files": f"{s.files_done}/{s.files_total}",
            "rate": f"{s.entries_per_s:,.0f} entries/s",
            "eta": "ETA –" if s.eta_s is None else f"ETA {_duration(s.eta_s)}",
            "failed": f"[red]{s.failures} failed[/red]" if s.failures else "0 failed",
        }

    def _print(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stdout
        print(text, file=stream, flush=True)

    def advance(self, record: Any = None) -> None:
        """One chunk finished; ``record`` (a :class:`~jettracks.engines.ChunkRecord`, optional)
        gives its file, entries and status."""
        self._done += 1
        if record is not None:
            spec = record.spec
            if record.status == "failed":
                self._failures += 1
            else:
                self._entries += int(spec.entries)
            if self._chunks_left.get(spec.filename, 0) > 0:
                self._chunks_left[spec.filename] -= 1
                if self._chunks_left[spec.filename] == 0:
                    self._files_done += 1
        if self.mode == "rich" and self._bar is not None:
            self._bar.update(self._task, advance=1, **self._fields())
        elif self.mode == "notebook" and self._bar is not None:
            s = self.state()
            self._bar.set_postfix_str(
                f"files {s.files_done}/{s.files_total}, {s.entries_per_s:,.0f} entries/s, {s.failures} failed",
                refresh=False,
            )
            self._bar.update(1)
        elif self.mode == "plain":
            now = time.monotonic()
            if self._done == self.total or now - self._last_line >= self.interval:
                self._last_line = now
                self._print(f"{self.desc}: {self.state().line()}")

    def __exit__(self, *exc: Any) -> bool:
        if self._bar is not None:
            if self.mode == "rich":
                self._bar.stop()
            else:
                self._bar.close()
        if self.mode == "plain" and self._done < self.total:  # interrupted: say where it stopped
            self._print(f"{self.desc}: stopped at {self.state().line()}")
        return False
