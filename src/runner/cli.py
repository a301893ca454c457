"""``python -m runner``: run configs, generate samples, inspect files, show and plan runs.

``python -m runner`` with no arguments runs the demo config (``configs/demo.yaml``),
generating its sample on first use. Exit codes: 0 success, 1 run failed (bad
file, failed chunk, internal error), 2 bad config or usage. Errors are one line on
stderr; ``run --debug`` adds the traceback. Dask's own logs go to
``<output dir>/logs/dask.log`` (and to the console too with ``run --verbose``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEMO_CONFIG = "configs/demo.yaml"


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _find_config(path: str) -> Path:
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    alt = _project_root() / p
    return alt if alt.exists() else p


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runner",
        description="jettracks: tracks in jets, their dxy (cm) and jet flavour, on Dask.",
    )
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run a YAML config", description="Run a YAML run config.")
    run.add_argument("config", nargs="?", default=DEMO_CONFIG, help=f"config file (default {DEMO_CONFIG})")
    run.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="attach to an existing Dask scheduler")
    run.add_argument("--backend", help="cluster backend (local, scheduler, slurm, ..., serial)")
    run.add_argument("--workers", type=_positive_int, help="number of workers (local) or jobs (batch)")
    run.add_argument("--chunksize", type=_positive_int, help="entries per chunk")
    run.add_argument("--max-files", type=_positive_int, help="at most this many files per dataset")
    run.add_argument("--output", metavar="DIR", help="output directory (overrides output.dir)")
    run.add_argument("--cache", metavar="DIR",
                     help="column cache directory (overrides executor.cache): reruns read the columns "
                          "stored there instead of decompressing the files again")
    run.add_argument("--skip-bad-files", action="store_true",
                     help="finish past files/chunks that keep failing; report what was skipped")
    run.add_argument("--overwrite", action="store_true",
                     help="replace jettracks' own outputs in a run directory left by a different config, "
                          "processor or code (other files are kept; a directory jettracks did not "
                          "write is never touched)")
    run.add_argument("--resume", action="store_true",
                     help="resume an interrupted run (rerunning the same command does this too)")
    run.add_argument("--refresh", action="store_true", help="ignore cached file metadata (entries per file)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-plots", action="store_true", help="do not write plots")
    run.add_argument("--verbose", action="store_true",
                     help="show Dask's scheduler and worker logs on the console (always in OUTPUT/logs/dask.log)")
    run.add_argument("--debug", action="store_true", help="print the traceback of an error")

    gen = sub.add_parser(
        "generate", help="generate a synthetic sample", description="Generate synthetic CMS-format files."
    )
    gen.add_argument("--format", required=True, help="pfnano, jetntuple or delphes")
    gen.add_argument("--container", default="ttree", choices=("ttree", "rntuple"),
                     help="ROOT container of the files: ttree (default, as the real files) or rntuple")
    gen.add_argument("--files", type=_positive_int, default=4, help="number of files (default 4)")
    gen.add_argument("--events-per-file", type=int, default=1000, help="events per file (default 1000)")
    gen.add_argument("--seed", type=int, default=1, help="base random seed (default 1)")
    gen.add_argument("--process", default="qcd", help="physics process (default qcd)")
    gen.add_argument("--out", required=True, metavar="DIR", help="output directory")
    gen.add_argument("--prefix", help="file name prefix (default: the format)")
    gen.add_argument("--overwrite", action="store_true",
                     help="replace files this generator wrote with other parameters (other files are kept)")

    insp = sub.add_parser(
        "inspect", help="describe a ROOT file", description="Detected format, trees, entries and branches."
    )
    insp.add_argument("file", help="path or URL (root://...)")
    insp.add_argument("--format", default="auto", help="check against this format (default: detect)")

    cache = sub.add_parser(
        "cache", help="inspect or clear a column cache",
        description="A column cache directory (executor.cache / run --cache): 'info' prints what it "
                    "holds, 'clear' removes every entry jettracks wrote (only in a directory marked as a cache).",
    )
    cache.add_argument("action", choices=("info", "clear"))
    cache.add_argument("dir", metavar="DIR", help="the cache directory (a path or a root:// URL)")
    rep = sub.add_parser(
        "report", help="rebuild report.html of a run directory",
        description="Rebuild OUTDIR/report.html from the run's report.json, plots and ML manifest.",
    )
    rep.add_argument("outdir", metavar="OUTDIR", help="a run directory (holds report.json)")
    show = sub.add_parser(
        "show", help="print a run's summary",
        description="Print a run directory's summary (status, entries, cut flow, files, chunks, ML) as tables.",
    )
    show.add_argument("outdir", metavar="OUTDIR", help="a run directory (holds report.json)")
    plan = sub.add_parser(
        "plan", help="plan a run without processing",
        description="Datasets, formats, files, entries, chunks, branches read and their bytes, estimated "
                    "worker memory per chunk, warnings; exit 0 when the run would start, 1 with the reasons.",
    )
    plan.add_argument("config", help="config file")
    plan.add_argument("--chunksize", type=_positive_int, help="entries per chunk")
    plan.add_argument("--max-files", type=_positive_int, help="at most this many files per dataset")
    plan.add_argument("--skip-bad-files", action="store_true",
                      help="as for run: unreadable files are then warnings (the run would skip them)")
    plan.add_argument("--refresh", action="store_true", help="ignore cached file metadata (entries per file)")
    mlf = sub.add_parser(
        "ml-finalize", help="finalize an existing ML dataset",
        description="Compact an ML dataset's per-chunk parts into a few files per split, recompute the "
                    "standardisation, weights and folds, rewrite manifest.json, README.md and weaver.yaml.",
    )
    mlf.add_argument("dir", metavar="DIR", help="the dataset's ml/ directory or its run directory")
    mlf.add_argument("--folds", type=_positive_int, help="k of the fold column (default: as before, else 5)")
    mlf.add_argument("--reference-flavour", help="reference flavour of weight_reference (default b, else the most common)")
    return parser


def _one_line(text: object) -> str:
    """The message on one line (the project's rule for errors: one line, no traceback)."""
    return " ".join(str(text).splitlines()).strip()


def _cmd_run(args) -> int:
    import signal
    import traceback

    from rich.console import Console

    from jettracks.config import ConfigError
    from jettracks.execution import RunError, run_config

    console = Console(stderr=True)
    path = _find_config(args.config)
    # SIGTERM (batch systems, `kill`) ends the run like Ctrl-C: checkpoints stay for a resume.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        # Overrides are validated like the file's keys (an unknown --backend, a bad
        # --scheduler address, cluster options that do not fit the new backend).
        result = run_config(
            path,
            workers=args.workers,
            chunksize=args.chunksize,
            max_files=args.max_files,
            scheduler=args.scheduler,
            backend=args.backend,
            output_dir=args.output,
            cache=args.cache,
            progress=not args.no_progress,
            plots=False if args.no_plots else None,
            skip_bad_files=args.skip_bad_files,
            overwrite=args.overwrite,
            resume=args.resume,
            refresh=args.refresh,
            console=console,
            verbose=args.verbose,
        )
    except ConfigError as err:
        if args.debug:
            traceback.print_exc()
        print(_one_line(f"config error: {path}: {err}"), file=sys.stderr)
        return 2
    except RunError as err:
        if args.debug:
            traceback.print_exc()
        print(_one_line(f"run error: {err}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        print("run error: interrupted", file=sys.stderr)
        return 1
    except Exception as err:  # a bug or an unforeseen failure: still one line unless --debug
        if args.debug:
            traceback.print_exc()
            print(_one_line(f"internal error: {type(err).__name__}: {err}"), file=sys.stderr)
        else:
            print(
                _one_line(f"internal error: {type(err).__name__}: {err}") + " (rerun with --debug for the traceback)",
                file=sys.stderr,
            )
        return 1
    _print_summary(console, result)
    return 0


def _print_summary(console, result) -> None:
    from rich.table import Table

    rep = result.report
    table = Table(title=f"jettracks run '{rep.name}': cut flow")
    steps = list(next(iter(result.cutflow.values()), {}).keys())
    table.add_column("dataset")
    for step in steps:
        table.add_column(step.replace("_", " "), justify="right")
    for ds, flow in result.cutflow.items():
        table.add_row(ds, *(f"{flow.get(s, 0):,}" for s in steps))
    console.print(table)
    ent = rep.entries
    console.print(
        f"entries: {ent.processed:,} processed + {ent.skipped:,} skipped = {ent.expected:,} "
        f"expected; {rep.chunks} chunks ({rep.chunks_from_checkpoint} from checkpoints) "
        f"in {rep.timing.process_s} s"
    )
    for file, skip in rep.skipped():
        what = "unreadable" if skip.entries is None else f"{skip.entries} entries"
        console.print(f"[yellow]skipped[/yellow] {file}: {what}: {skip.reason}", highlight=False)
    for note in rep.notices:
        console.print(f"note: {note}", highlight=False)
    console.print(f"outputs: {result.output_dir}")


def _cmd_generate(args) -> int:
    from jettracks import generate

    try:
        paths = generate.generate_dataset(
            args.out,
            format=args.format,
            n_files=args.files,
            events_per_file=args.events_per_file,
            seed=args.seed,
            process=args.process,
            prefix=args.prefix,
            overwrite=args.overwrite,
            container=args.container,
        )
    except ValueError as err:
        print(f"generate error: {err}", file=sys.stderr)
        return 2
    message = getattr(paths, "message", None)  # reused / completed / replaced / generated
    print(message or f"{len(paths)} files in {args.out}")
    return 0


def _cmd_report(args) -> int:
    from jettracks.io.report_html import write_report_html
    from jettracks.io.rundir import MARKER
    from jettracks.summary import SummaryError

    out = Path(args.outdir).expanduser().absolute()
    if (out / "report.json").is_file() and not (out / MARKER).is_file():  # jettracks writes only into its own
        print(_one_line(f"report error: {out}: no {MARKER}: not a jettracks run directory, "
                        "report.html is not written there"), file=sys.stderr)
        return 1
    try:
        path = write_report_html(out)
    except SummaryError as err:
        print(_one_line(f"report error: {err}"), file=sys.stderr)
        return 1
    except OSError as err:
        print(_one_line(f"report error: cannot write {err.filename or args.outdir}: {err.strerror or err}"),
              file=sys.stderr)
        return 1
    print(path)
    return 0


def _cmd_show(args) -> int:
    from jettracks.show import show
    from jettracks.summary import SummaryError

    try:
        return show(args.outdir)
    except SummaryError as err:
        print(_one_line(f"show error: {err}"), file=sys.stderr)
        return 1


def _cmd_plan(args) -> int:
    from rich.console import Console

    from jettracks.config import ConfigError
    from jettracks.plan import plan_run, print_plan

    path = _find_config(args.config)
    try:
        plan = plan_run(path, chunksize=args.chunksize, max_files=args.max_files,
                        skip_bad_files=args.skip_bad_files, refresh=args.refresh)
    except ConfigError as err:
        print(_one_line(f"config error: {path}: {err}"), file=sys.stderr)
        return 2
    print_plan(plan, Console())
    if not plan.ok:
        more = len(plan.problems) - 1
        print(_one_line(f"plan error: {plan.problems[0]}" + (f" (and {more} more)" if more else "")), file=sys.stderr)
        return 1
    return 0


def _cmd_cache(args) -> int:
    from jettracks.io.column_cache import CacheError, ColumnCache

    try:
        cache = ColumnCache.existing(args.dir)
        if args.action == "clear":
            removed = cache.clear()
            print(f"{cache.root}: removed {removed:,} cached columns")
            return 0
        info = cache.info()
    except (CacheError, OSError) as err:
        print(_one_line(f"cache error: {err}"), file=sys.stderr)
        return 1
    print(f"{info.path}: {info.columns:,} columns of {info.trees:,} trees in {info.files:,} files, "
          f"{info.bytes / 1e6:,.1f} MB")
    for branch, size in sorted(info.by_branch_bytes.items(), key=lambda kv: -kv[1])[:20]:
        print(f"  {branch:40s} {size / 1e6:10,.1f} MB")
    return 0


def _cmd_inspect(args) -> int:
    from jettracks.inspect import inspect_file

    return inspect_file(args.file, fmt=args.format)


def _cmd_ml_finalize(args) -> int:
    from jettracks.io.mldata import refinalize

    try:
        m = refinalize(args.dir, folds=args.folds, reference_flavour=args.reference_flavour)
    except (OSError, ValueError, RuntimeError) as err:
        print(_one_line(f"ml-finalize error: {err}"), file=sys.stderr)
        return 1
    print(f"{m['rows']:,} rows in {m['parts']} files; content hash {m['content_hash']}; "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(m["rows_per_split"].items())))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] == "ml-finalize":
        return _cmd_ml_finalize(parser.parse_args(argv))
    if not argv:
        argv = ["run", DEMO_CONFIG]
    elif argv[0] not in ("run", "generate", "inspect", "report", "show", "plan", "cache", "-h", "--help"):
        argv = ["run", *argv]
    args = parser.parse_args(argv)
    handlers = {"run": _cmd_run, "generate": _cmd_generate, "inspect": _cmd_inspect}
    handlers.update({"report": _cmd_report, "show": _cmd_show, "plan": _cmd_plan, "cache": _cmd_cache})
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
