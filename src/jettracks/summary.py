"""A run directory at a glance: one typed summary for the page (``report.html``) and the terminal.

:func:`summarize` reads what a run left in its directory -- ``report.json``
(:class:`~jettracks.report.RunReport`), the plots it lists and the ML dataset's
``ml/manifest.json`` -- into a :class:`RunSummary`. :mod:`jettracks.io.report_html`
renders it as a self-contained page and :mod:`jettracks.show` as ``rich`` tables,
so both say the same thing. Nothing here writes a file.

Units: seconds (``_s``), entries (events for per-event formats; jets for
JetNtuple, one tree entry per jet), bytes for memory.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .io.outfs import out_path
from .report import ChunkTiming, FileReport, RunReport, load_report

__all__ = ["ChunkStats", "MLCard", "RunSummary", "SummaryError", "human_bytes", "summarize"]

#: Slowest chunks listed (page and terminal).
SLOWEST = 10


class SummaryError(ValueError):
    """The directory holds no readable ``report.json``; the message is one line naming it."""


@dataclass
class ChunkStats:
    """Wall time per chunk of the chunks processed in this run (checkpoints and failures excluded).

    Attributes:
        n: chunks timed.
        total_s, min_s, median_s, p90_s, max_s: sum and quantiles of the chunk times (seconds).
        slowest: the :data:`SLOWEST` slowest chunks, slowest first.
        seconds: every chunk's time (seconds), in report order (for the histogram).
    """

    n: int = 0
    total_s: float = 0.0
    min_s: float = 0.0
    median_s: float = 0.0
    p90_s: float = 0.0
    max_s: float = 0.0
    slowest: list[ChunkTiming] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, chunks: list[ChunkTiming]) -> ChunkStats:
        """Statistics of ``chunks`` (an empty list gives zeros)."""
        secs = sorted(float(c.seconds) for c in chunks)
        if not secs:
            return cls()

        def q(p: float) -> float:  # nearest-rank quantile
            return secs[min(len(secs) - 1, max(0, math.ceil(p * len(secs)) - 1))]

        return cls(
            n=len(secs), total_s=sum(secs), min_s=secs[0], median_s=q(0.5), p90_s=q(0.9), max_s=secs[-1],
            slowest=sorted(chunks, key=lambda c: -float(c.seconds))[:SLOWEST],
            seconds=[float(c.seconds) for c in chunks],
        )


@dataclass
class MLCard:
    """The ML dataset's card, from ``ml/manifest.json``.

    Attributes:
        dir: the ``ml/`` directory.
        rows, parts: rows (jets) and Parquet parts.
        rows_per_split, rows_per_label, rows_per_dataset: counts as the manifest gives them.
        selection: the processor options the rows were selected with.
        columns: ``{"name", "dtype", "unit", "meaning"}`` per column.
        hdf5: name of the padded HDF5 file, when written.
    """

    dir: str
    rows: int
    parts: int
    rows_per_split: dict[str, int] = field(default_factory=dict)
    rows_per_label: dict[str, int] = field(default_factory=dict)
    rows_per_dataset: dict[str, int] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    columns: list[dict[str, str]] = field(default_factory=list)
    hdf5: str | None = None


@dataclass
class RunSummary:
    """What a run did, ready to show.

    Attributes:
        out_dir: the run directory.
        report: the run's report.
        files: per-file accounting, files with skipped entries or unreadable first.
        chunks: per-chunk timing statistics.
        plots: ``(name, path)`` of every plot the report lists that exists (PNG files).
        ml: the ML dataset's card (None when the run wrote none, or its manifest is absent).
        peak_memory: ``(label, bytes)`` of every peak-memory figure the report carries
            (e.g. peak worker memory; empty when the report has none).
    """

    out_dir: Path
    report: RunReport
    files: list[FileReport]
    chunks: ChunkStats
    plots: list[tuple[str, Path]]
    ml: MLCard | None = None
    peak_memory: list[tuple[str, float]] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        """Entries processed per second of processing (the report's ``timing.entries_per_s``)."""
        return float(self.report.timing.entries_per_s)

    @property
    def files_with_problems(self) -> int:
        """Files with skipped entries or that could not be opened."""
        return sum(1 for f in self.files if f.skipped)


def summarize(out_dir: str | os.PathLike, report: RunReport | None = None) -> RunSummary:
    """Summarise a run directory.

    Args:
        out_dir: the run directory (holds ``report.json``).
        report: the report already in memory (default: read ``report.json``).

    Raises:
        SummaryError: no ``report.json``, or one that does not parse (one line).
    """
    out = out_path(out_dir).expanduser().absolute()
    if report is None:
        path = out / "report.json"
        if not path.is_file():
            what = "no such directory" if not out.exists() else "no report.json (not a jettracks run directory?)"
            raise SummaryError(f"{out}: {what}")
        try:
            report = load_report(path)
        except (OSError, ValueError) as err:
            first = " ".join(str(err).split())[:200]
            raise SummaryError(f"{path}: not a readable report: {first}") from None
    files = sorted(report.files, key=lambda f: (not f.skipped, 0))  # stable: problems first, file order kept
    plots = [(Path(p).stem, out / "plots" / p) for p in report.plots if (out / "plots" / p).is_file()]
    return RunSummary(
        out_dir=out,
        report=report,
        files=files,
        chunks=ChunkStats.of(list(report.timing.chunks)),
        plots=plots,
        ml=_ml_card(out, report),
        peak_memory=_peak_memory(report),
    )


def _ml_card(out: Path, report: RunReport) -> MLCard | None:
    if report.ml_dataset is None:
        return None
    ml_dir = out_path(report.ml_dataset.dir)
    if not ml_dir.is_absolute() or not ml_dir.is_dir():
        ml_dir = out / "ml"
    try:
        m = json.loads((ml_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        m = {}
    return MLCard(
        dir=str(ml_dir),
        rows=int(m.get("rows", report.ml_dataset.rows)),
        parts=int(m.get("parts", report.ml_dataset.parts)),
        rows_per_split=dict(m.get("rows_per_split", report.ml_dataset.rows_per_split)),
        rows_per_label=dict(m.get("rows_per_label", {})),
        rows_per_dataset=dict(m.get("rows_per_dataset", {})),
        selection=dict(m.get("selection", {})),
        columns=[
            {k: str(c.get(k, "")) for k in ("name", "dtype", "unit", "meaning")}
            for c in m.get("columns", []) if isinstance(c, dict)
        ],
        hdf5=m.get("hdf5") or report.ml_dataset.hdf5,
    )


#: Unit suffixes of memory field names -> bytes (no suffix, or ``_bytes``: bytes).
_UNITS = {"_kb": 1e3, "_mb": 1e6, "_gb": 1e9, "_kib": 2.0**10, "_mib": 2.0**20, "_gib": 2.0**30}


def _peak_memory(report: RunReport) -> list[tuple[str, float]]:
    """Every numeric field whose name says peak memory (``peak_worker_memory_bytes``, ...), at the
    top level or under ``timing``/``cluster``: the report's schema may grow such fields."""
    found: list[tuple[str, float]] = []

    def scan(obj: Any, prefix: str) -> None:
        if not isinstance(obj, dict):
            return
        for key, value in obj.items():
            k = str(key).lower()
            if "peak" in k and ("mem" in k or "rss" in k):
                scale = next((f for suffix, f in _UNITS.items() if k.endswith(suffix)), 1.0)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    found.append((prefix + str(key), float(value) * scale))
                elif isinstance(value, dict):  # e.g. {"worker": bytes}: the largest
                    nums = [v for v in value.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
                    if nums:
                        found.append((prefix + str(key), float(max(nums)) * scale))

    dumped = report.model_dump(mode="json")
    scan(dumped, "")
    scan(dumped.get("timing"), "timing.")
    scan(dumped.get("cluster"), "cluster.")
    return found


def human_bytes(n: float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, as Dask's memory limits)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover
