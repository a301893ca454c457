"""Processors for tests and benchmarks (not for analysis).

- :class:`NoopProcessor` touches nothing and returns a count: measures the
  machinery (scheduling, file opening, accumulation) alone.
- :class:`SlowJetTrackProcessor` is :class:`~processors.jet_tracks.JetTrackProcessor`
  with a fixed delay per chunk, so that tests can interrupt a run or kill a worker
  while chunks are in flight.
"""

from __future__ import annotations

import time
from typing import Any

from coffea import processor

from .jet_tracks import JetTrackProcessor

__all__ = ["NoopProcessor", "SlowJetTrackProcessor"]


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
