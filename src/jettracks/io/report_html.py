"""``report.html``: the run as one self-contained page.

:func:`write_report_html` renders a run directory's :class:`~jettracks.summary.RunSummary`
with the Jinja2 template ``jettracks/templates/report.html.j2`` (package data) into
``report.html``: the run summary (status, entries expected / processed / skipped,
time, entries per second), every plot, the cut flow per dataset, the per-file
accounting (skipped and unreadable files first, with their reasons), the per-chunk
timing (a histogram and the slowest chunks), peak worker memory when the report
has it, the ML dataset's card and the provenance (versions, git commit, config).

Self-contained: images are inline ``data:image/png;base64`` URIs, the CSS is in
the page, there is no script and no network reference, so the file opens from a
mail attachment. A failed run's page leads with its one-line error.
"""

from __future__ import annotations

import base64
import functools
import os
from pathlib import Path
from typing import Any

from .atomic import write_text_atomic
from .outfs import out_path

__all__ = ["REPORT_HTML", "render_report_html", "write_report_html"]

#: The page's file name in the run directory.
REPORT_HTML = "report.html"


@functools.lru_cache(maxsize=1)
def _environment():
    # Once per process: the template compiles in ~80 ms, as much as the rest of the page
    # (a notebook or a cluster client writes a page per run). Jinja reloads a changed template.
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("jettracks", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v: f"{int(v):,}" if v is not None else "–"
    env.filters["secs"] = _secs
    return env


def _secs(v: float | None) -> str:
    if v is None:
        return "–"
    v = float(v)
    if v >= 120:
        return f"{v / 60:.1f} min"
    return f"{v:.3g} s" if v < 10 else f"{v:.1f} s"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _chunk_histogram(seconds: list[float]) -> str | None:
    """A data URI of the chunk wall-time histogram as SVG (None without chunks).

    Drawn by hand rather than with matplotlib: importing matplotlib for this one
    figure cost ~0.5 s of CPU per run (measured) when the run draws no plots.
    """
    if not seconds:
        return None
    import numpy as np

    values = np.asarray(seconds, dtype=float)
    bins = min(40, max(5, len(values) // 2))
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        hi = lo + max(abs(lo) * 0.1, 1e-3)
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    width, height, left, bottom, top, right = 512, 240, 48, 36, 10, 12
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(int(counts.max()), 1)
    bar_w = plot_w / bins
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for i, c in enumerate(counts):
        h = plot_h * int(c) / peak
        x = left + i * bar_w
        parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                     f'height="{h:.1f}" fill="#3b6ea5"/>')
    axis_y = top + plot_h
    parts += [
        f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{axis_y}" stroke="black"/>',
        f'<text x="{left}" y="{axis_y + 14}" text-anchor="middle">{edges[0]:.3g}</text>',
        f'<text x="{left + plot_w}" y="{axis_y + 14}" text-anchor="middle">{edges[-1]:.3g}</text>',
        f'<text x="{left + plot_w / 2}" y="{height - 4}" text-anchor="middle">chunk wall time (s)</text>',
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{axis_y}" text-anchor="end">0</text>',
        f'<text x="12" y="{top + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {top + plot_h / 2})">chunks</text>',
        "</svg>",
    ]
    return "data:image/svg+xml;base64," + base64.b64encode("".join(parts).encode()).decode("ascii")


def render_report_html(summary: Any) -> str:
    """The page's HTML for a :class:`~jettracks.summary.RunSummary`."""
    from ..config import dump_yaml
    from ..summary import human_bytes

    rep = summary.report
    plots = []
    for name, path in summary.plots:
        try:
            plots.append({"name": name, "src": _data_uri(out_path(path).read_bytes())})
        except OSError:  # listed but unreadable: say so rather than break the page
            plots.append({"name": name, "src": None})
    chunk_hist = _chunk_histogram(summary.chunks.seconds)
    steps: list[str] = []
    for flow in rep.cutflow.values():
        steps += [s for s in flow if s not in steps]
    config_text = dump_yaml(rep.config, sort_keys=False, default_flow_style=False) if rep.config else ""
    return _environment().get_template("report.html.j2").render(
        s=summary,
        rep=rep,
        plots=plots,
        chunk_hist=chunk_hist,
        cutflow_steps=steps,
        peak_memory=[(label, human_bytes(v)) for label, v in summary.peak_memory],
        config_text=config_text,
        versions=dict(rep.provenance.get("versions", {})),
        git=dict(rep.provenance.get("git", {})),
        python=rep.provenance.get("python"),
        codecs=dict(rep.provenance.get("codecs", {})),
    )


def write_report_html(out_dir: str | os.PathLike, report: Any = None) -> Path:
    """Write ``OUT_DIR/report.html`` (atomic) from the run directory's ``report.json``.

    Args:
        out_dir: the run directory.
        report: the :class:`~jettracks.report.RunReport` in memory (default: read ``report.json``).

    Returns:
        The page's path.

    Raises:
        jettracks.summary.SummaryError: no readable ``report.json``.
        OSError: the page cannot be written.
    """
    from ..summary import summarize

    summary = summarize(out_dir, report)
    return write_text_atomic(summary.out_dir / REPORT_HTML, render_report_html(summary))
