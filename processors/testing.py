"""Processors for tests and benchmarks (not for analysis).

- :class:`NoopProcessor` touches nothing and returns a count: measures the
  machinery (scheduling, file opening, accumulation) alone.
- :class:`SlowJetTrackProcessor` is :class:`~processors.jet_tracks.JetTrackProcessor`
  with a fixed delay per chunk, so that tests can interrupt a run or kill a worker
  while chunks are in flight.
- :class:`FailingProcessor` fails every chunk, with an error that a retry
  cannot fix (``permanent``) or one that it might (``transient``), and appends a
  line per attempt to a log file, so tests can count the attempts.
"""

from __future__ import annotations

import time
from typing import Any

from coffea import processor

from .jet_tracks import JetTrackProcessor

__all__ = ["FailingProcessor", "NoopProcessor", "SlowJetTrackProcessor"]


class NoopProcessor(processor.ProcessorABC):
    """Returns ``{"entries": {filename: n}}`` without reading any column."""

    def process(self, events) -> dict[str, Any]:
        return {"entries": {events.metadata.get("filename", "?"): len(events)}}

    def postprocess(self, accumulator):
        return accumulator


class SlowJetTrackProcessor(JetTrackProcessor):
    """JetTrackProcessor that sleeps ``delay_s`` seconds per chunk before working."""

    def __init__(self, *, delay_s: float = 0.5, **options: Any) -> None:
        super().__init__(**options)
        self.delay_s = float(delay_s)

    def process(self, events) -> dict[str, Any]:
        time.sleep(self.delay_s)
        return super().process(events)


class FailingProcessor(processor.ProcessorABC):
    """Fails every chunk; each attempt appends ``filename start-stop`` to ``attempts_log``.

    Args:
        kind: ``permanent`` raises ``uproot.KeyInFileError`` (a missing branch: no retry
            can succeed); ``transient`` raises ``ConnectionError``.
        attempts_log: path of the log file (must be reachable from the workers).
    """

    def __init__(self, *, kind: str = "permanent", attempts_log: str) -> None:
        if kind not in ("permanent", "transient"):
            raise ValueError(f"kind must be 'permanent' or 'transient', got {kind!r}")
        self.kind = kind
        self.attempts_log = attempts_log

    def process(self, events) -> dict[str, Any]:
        import uproot

        meta = events.metadata
        with open(self.attempts_log, "a") as f:
            f.write(f"{meta['filename']} {meta['entrystart']}-{meta['entrystop']}\n")
        if self.kind == "permanent":
            raise uproot.KeyInFileError("Jet_nosuch", file_path=meta["filename"])
        raise ConnectionError("connection reset by peer")

    def postprocess(self, accumulator):
        return accumulator
