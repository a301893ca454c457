"""``python -m runner show OUTDIR``: a run directory's summary as ``rich`` tables in the terminal.

The same :class:`~jettracks.summary.RunSummary` as ``report.html``: status (and the
error of a failed run), entries expected / processed / skipped, time and entries
per second, peak memory when the report has it, the cut flow per dataset, the
files with skipped entries or that could not be opened (with reasons), the chunk
timing and its slowest chunks, the ML dataset's card, and the provenance. Plots
are listed by file name (they are in ``report.html`` and ``plots/``).
"""

from __future__ import annotations

import os
from typing import Any

from .summary import RunSummary, human_bytes, summarize

__all__ = ["print_summary", "show"]


def show(out_dir: str | os.PathLike, *, console: Any = None) -> int:
    """Print the summary of the run in ``out_dir``.

    Args:
        out_dir: a run directory (holds ``report.json``).
        console: a ``rich.console.Console`` (default: stdout).

    Returns:
        0 once printed (whatever the run's status, which the output shows).

    Raises:
        jettracks.summary.SummaryError: no readable ``report.json`` (one line).
    """
    from rich.console import Console

    print_summary(summarize(out_dir), console or Console())
    return 0


def print_summary(s: RunSummary, console: Any) -> None:
    """Print ``s`` on ``console`` (rich tables)."""
    from rich.table import Table

    rep = s.report
    colour = {"ok": "green", "partial": "yellow", "failed": "red"}.get(rep.status, "white")
    console.print(f"[bold]jettracks run[/bold] {rep.name}: [bold {colour}]{rep.status}[/bold {colour}]  ({s.out_dir})",
                  highlight=False, soft_wrap=True)
    if rep.error:
        console.print(f"[red]error:[/red] {rep.error}", highlight=False, soft_wrap=True)

    t = Table(title="Summary", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    ent = rep.entries
    rows = [
        ("entries expected", f"{ent.expected:,}"),
        ("entries processed", f"{ent.processed:,}"),
        ("entries skipped", f"{ent.skipped:,}"),
        ("files", f"{len(rep.files):,} ({s.files_with_problems} with problems, {ent.files_unreadable} unreadable)"),
        ("chunks", f"{rep.chunks:,} ({rep.chunks_failed} failed, {rep.chunks_from_checkpoint} from checkpoints)"),
        ("time", f"{rep.timing.total_s:.1f} s ({rep.timing.process_s:.1f} s processing)"),
        ("entries / s", f"{s.events_per_s:,.0f}"),
    ]
    rows += [(label.replace("_", " "), human_bytes(v)) for label, v in s.peak_memory]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)

    if rep.cutflow:
        steps: list[str] = []
        for flow in rep.cutflow.values():
            steps += [x for x in flow if x not in steps]
        cf = Table(title="Cut flow")  # one column per dataset: fits a narrow terminal
        cf.add_column("step")
        for ds in rep.cutflow:
            fmt = rep.formats.get(ds)
            cf.add_column(f"{ds} ({fmt})" if fmt else ds, justify="right", overflow="fold")
        for step in steps:
            cf.add_row(step.replace("_", " "),
                       *(f"{flow[step]:,}" if step in flow else "–" for flow in rep.cutflow.values()))
        console.print(cf)

    bad = [f for f in s.files if f.skipped]
    if bad:
        ft = Table(title="Files with skipped entries or unreadable")
        ft.add_column("file", overflow="fold")
        ft.add_column("skipped", justify="right")
        ft.add_column("reason", overflow="fold")
        for f in bad:
            reasons = "; ".join(
                f"{sk.stage}{f' [{sk.range[0]}, {sk.range[1]})' if sk.range else ''}: {sk.reason}" for sk in f.skipped
            )
            ft.add_row(f.file, "unreadable" if f.entries_expected is None else f"{f.entries_skipped:,}", reasons)
        console.print(ft)

    c = s.chunks
    if c.n:
        console.print(
            f"chunk time: {c.n} chunks, median {c.median_s:.3g} s, 90% under {c.p90_s:.3g} s, "
            f"max {c.max_s:.3g} s, {c.total_s:.1f} s of worker time", highlight=False,
        )
        ct = Table(title="Slowest chunks")
        ct.add_column("file", overflow="fold")
        ct.add_column("entries", justify="right")
        ct.add_column("seconds", justify="right")
        workers = any(ch.get("worker") for ch in c.slowest)
        if workers:
            ct.add_column("worker", overflow="fold")
        for ch in c.slowest:
            ct.add_row(f"{ch.file} [{ch.range[0]}, {ch.range[1]})", f"{ch.range[1] - ch.range[0]:,}",
                       f"{ch.seconds:.3f}", *([str(ch.get("worker") or "")] if workers else []))
        console.print(ct)

    if s.ml is not None:
        ml = s.ml
        console.print(f"ML dataset: {ml.rows:,} rows in {ml.parts} parts, {len(ml.columns)} columns ({ml.dir})",
                      highlight=False, soft_wrap=True)
        mt = Table(title="ML rows")
        mt.add_column("split / label / dataset")
        mt.add_column("rows", justify="right")
        for kind, counts in (("split", ml.rows_per_split), ("label", ml.rows_per_label),
                             ("dataset", ml.rows_per_dataset)):
            for k, v in sorted(counts.items()):
                mt.add_row(f"{kind} {k}", f"{v:,}")
        console.print(mt)

    if s.plots:
        console.print("plots: " + ", ".join(name for name, _ in s.plots), highlight=False, soft_wrap=True)
    for note in rep.notices:
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    git = rep.provenance.get("git", {})
    versions = rep.provenance.get("versions", {})
    commit = git.get("commit", "unknown")
    console.print(
        f"provenance: git {commit[:12]}{' (dirty)' if git.get('dirty') else ''}, fingerprint {rep.fingerprint or '–'}, "
        + ", ".join(f"{k} {versions[k]}" for k in ("jettracks", "coffea", "uproot", "awkward", "dask") if k in versions),
        highlight=False, soft_wrap=True,
    )
    page = s.out_dir / "report.html"
    if page.is_file():
        console.print(f"page: {page}", highlight=False, soft_wrap=True)
