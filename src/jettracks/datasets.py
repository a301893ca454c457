"""Step 2 of a run: each dataset's files, their format and the branches to read.

:func:`prepare_datasets` resolves every dataset's files (globs, URLs,
``files_from``; relative paths against the config file's directory, sent to the
workers absolute), generates synthetic samples where the config says so, keeps
a file listed twice once (and reports it), refuses a file in two datasets,
detects each dataset's format from its first readable file and checks that
file has the branches its reader needs. Files that do not open stay in the list:
the run counts them as bad files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from . import readers
from .config import ConfigError, DatasetConfig, RunConfig
from .errors import RunError

__all__ = ["DatasetPlan", "configure_remote_reading", "note_duplicates", "prepare_datasets", "resolve_files"]


@dataclass
class DatasetPlan:
    """What the run will read.

    Attributes:
        fileset: ``{dataset: {"files": [absolute paths or URLs], "treename": str,
            "metadata": {..., "format": str}}}`` (coffea's fileset layout).
        formats: dataset -> format (detected for ``format: auto``).
        branches: every branch the readers need (nothing else is read).
        deduplicated: files listed more than once and dropped (``dataset``, ``file``,
            ``same_as``, ``by``).
    """

    fileset: dict[str, dict[str, Any]]
    formats: dict[str, str]
    branches: set[str]
    deduplicated: list[dict[str, str]] = field(default_factory=list)


def resolve_files(
    name: str, ds: DatasetConfig, *, base_dir: str | os.PathLike | None = None, timeout: int = 60
) -> list[str]:
    """The dataset's file list: globs and ``files_from`` expanded, order kept, each file once.

    Relative local paths (in ``files``, the ``files_from`` path and its entries)
    are relative to ``base_dir`` -- the config file's directory -- or to the
    working directory when None, and are returned absolute, so workers started in
    any directory open the same files (:func:`jettracks.io.files.dataset_files`).
    A file named twice (also as ``./f.root`` and ``f.root``, or a symlink and its
    target) is kept at its first place.

    Raises:
        RunError: a pattern that matches nothing, or an unreadable index file.
    """
    from .io.files import deduplicate, file_identity

    kept, _ = deduplicate({name: _listed_files(name, ds, base_dir, timeout)},
                          lambda _ds, f: file_identity(f), by="path")
    return kept[name]


def _listed_files(name: str, ds: DatasetConfig, base_dir, timeout: int) -> list[str]:
    """:func:`jettracks.io.files.dataset_files` of a dataset, repeats included; errors as ``RunError``."""
    from .io.files import FileListError, dataset_files

    try:
        return dataset_files(name, ds.files, ds.files_from, base_dir=base_dir, timeout=timeout)
    except FileListError as err:
        raise RunError(str(err)) from None


def _files_or_generate(name: str, ds: DatasetConfig, cfg: RunConfig, client, console=None,
                       regenerate: bool = False) -> list[str]:
    """The dataset's files, repeats included (the caller drops and reports them), generating
    the files first when a pattern matches nothing and ``generate`` is set.

    ``generate.out`` (default: the directory of the first ``files`` pattern) is
    relative to the config file's directory, as the patterns are.
    """
    timeout = cfg.executor.xrootd_timeout
    if ds.generate is None:
        return _listed_files(name, ds, cfg.base_dir, timeout)
    # Always asked, not only when nothing matches: the generator reuses files made with
    # the same parameters and refuses files made with others (another seed or size).
    from . import generate
    from .io.files import resolve_local

    gen = ds.generate
    if gen.out is not None:
        out = resolve_local(gen.out, cfg.base_dir)
    elif ds.files:
        out = os.path.dirname(resolve_local(ds.files[0], cfg.base_dir))
    else:
        raise RunError(f"datasets.{name}.generate.out: give the directory to generate the files in")
    if ds.format not in generate.FORMATS:
        raise RunError(f"datasets.{name}.generate: format {ds.format!r} cannot be generated")
    try:
        made = generate.generate_dataset(
            out,
            format=ds.format,
            n_files=gen.files,
            events_per_file=gen.events_per_file,
            seed=gen.seed,
            process=gen.process,
            client=client,
            overwrite=regenerate,
            **gen.options,
        )
    except ValueError as err:
        raise ConfigError(f"datasets.{name}.generate: {' '.join(str(err).split())}") from None
    if getattr(made, "action", "") != "reused" and getattr(made, "message", None) and console is not None:
        console.print(f"datasets.{name}: {made.message}")
    return _listed_files(name, ds, cfg.base_dir, timeout)


def prepare_datasets(cfg: RunConfig, processor, *, client=None, console=None, regenerate: bool = False,
                     refresh: bool = False) -> DatasetPlan:
    """Resolve every dataset's files, drop repeats, detect formats and check one readable file each.

    Files: see :func:`resolve_files` (absolute from here on). A file named twice
    within a dataset (``./f.root`` and ``f.root``, a symlink and its target,
    relative and absolute) is kept once, at its first place, and the repeat is
    appended to ``deduplicated``; a file in two datasets is a ``ConfigError``
    naming both, raised before any file is opened.

    Format: detected in the first file that opens. Files before it that do not
    open stay in the list: the run counts them as bad files like any other
    (skipped with ``--skip-bad-files``, else named when every other chunk has
    finished). Only when no file of a dataset opens: ``RunError`` naming the first.
    A readable file of the wrong format (or missing the reader's branches) is a
    ``RunError`` naming it.

    ``regenerate``: datasets with a ``generate:`` section whose files this generator
    wrote with other parameters (older code, changed options) are generated again
    (``run --overwrite``); files the generator did not write are never replaced.

    The detection is kept beside the file-metadata cache (``$JETTRACKS_CACHE_DIR/detections.json``,
    keyed by the file's URL or path + size + mtime, like its entries): a rerun does not open
    the file for it (one open less per dataset: round trips for a far file). ``refresh``
    ignores the cache.

    Args:
        cfg: the run config (``executor.max_files`` limits files per dataset).
        processor: the processor (its ``reader_for(format)`` gives the reader, if it has one).
        client: a ``distributed.Client`` (generation and XRootD settings run on its workers too).
        console: a ``rich`` console for notes (None: silent).
        refresh: detect again, ignoring the file-metadata cache (default False).
    """
    from .io.files import SharedFileError, deduplicate, file_identity

    max_files = cfg.executor.max_files
    deduplicated: list[dict[str, str]] = []

    timeout = cfg.executor.xrootd_timeout
    lists = {name: _files_or_generate(name, ds, cfg, client, console, regenerate)
             for name, ds in cfg.datasets.items()}
    try:
        lists, dropped = deduplicate(lists, lambda ds, f: file_identity(f), by="path")
    except SharedFileError as err:
        raise ConfigError(str(err)) from None
    note_duplicates(dropped, deduplicated, console)
    if max_files is not None:
        lists = {name: files[:max_files] for name, files in lists.items()}
    if console is not None:
        for name, files in lists.items():
            console.print(
                f"datasets.{name}: {len(files)} file{'s' if len(files) != 1 else ''}, first {files[0]}",
                markup=False, highlight=False, soft_wrap=True,
            )
    # before the first remote open: short XRootD reconnect windows (an unreachable
    # server then costs seconds, not minutes)
    configure_remote_reading({name: {"files": files} for name, files in lists.items()}, client, cfg.executor,
                             remote_outputs=uses_xrootd(cfg))

    fileset: dict[str, dict[str, Any]] = {}
    formats: dict[str, str] = {}
    branches: set[str] = set()
    from .io.cache import EntryCache, default_cache_path

    # Beside entries.json, in a file of its own: entries.json holds one entries record per file.
    detections = EntryCache(default_cache_path().with_name("detections.json"), refresh=refresh, timeout=timeout)
    for name, files in lists.items():
        ds = cfg.datasets[name]
        found, used, unreadable = None, None, []
        for fname in files:
            found, why = _detect(fname, ds.format, timeout, detections)
            if found is not None:
                used = fname
                break
            unreadable.append(why)
        if found is None:
            raise RunError(f"{unreadable[0]}; no file of dataset {name} is readable")
        if unreadable and console is not None:
            console.print(
                f"note datasets.{name}: format from {used}; {len(unreadable)} file(s) before it "
                "could not be opened (counted as bad files)",
                markup=False, highlight=False, soft_wrap=True,
            )
        fmt = found.format
        if console is not None:
            for note in found.notes:
                console.print(f"[yellow]note[/yellow] datasets.{name}: {note}")
        try:
            reader = processor.reader_for(fmt) if hasattr(processor, "reader_for") else readers.get(fmt)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"processor.options.reader_options: format {fmt}: {err}") from None
        # Config beats reader options beats detection (a format's tree may sit at several paths).
        treename = ds.treename or (reader.treename if reader.treename in found.trees else found.treename)
        if treename not in found.trees:
            raise RunError(f"{used}: not readable as format {fmt!r}: no tree {treename!r}")
        try:
            reader.check(found.trees[treename], filename=used)
        except readers.ReaderError as err:
            raise RunError(str(err)) from None
        _note_missing_optional(name, used, reader, found.trees[treename], console)
        available = found.trees[treename]
        plan = getattr(processor, "columns", None)  # the processor's column plan, when it has one
        branches.update(plan(fmt, available) if callable(plan) else reader.branches(available))
        formats[name] = fmt
        fileset[name] = {
            "files": files,
            "treename": treename,
            "metadata": {**ds.metadata, "format": fmt, **_lumi_mask(cfg, name, ds)},
        }
    if console is not None:
        for name, fmt in formats.items():
            if cfg.datasets[name].format == "auto":
                console.print(f"datasets.{name}: format auto -> detected [bold]{fmt}[/bold]")
    return DatasetPlan(fileset, formats, branches, deduplicated)


def _lumi_mask(cfg, name: str, ds) -> dict:
    """``{"lumi_mask": {...}}`` (the certification JSON's content, for the workers) or ``{}``."""
    if not ds.lumi_mask:
        return {}
    from . import lumi

    try:
        return {"lumi_mask": lumi.load_certification(lumi.resolve(cfg, ds.lumi_mask))}
    except ValueError as err:
        raise ConfigError(f"datasets.{name}.lumi_mask: {err}") from None


def _note_missing_optional(name: str, used: str, reader, available: set[str], console) -> None:
    """One note naming the optional branches (flavour, links, ...) the file lacks: the run goes
    on without what they give (a required one is an error, raised by ``reader.check``)."""
    has = getattr(reader, "has_branch", None) or (lambda b, av: b in av)
    missing = [b for b in reader.optional_branches() if not has(b, available)]
    if missing and console is not None:
        console.print(
            f"note datasets.{name}: {used} lacks optional branch(es) {', '.join(missing)} of format "
            f"{reader.name}: read without them",
            markup=False, highlight=False, soft_wrap=True,
        )


def _detect(fname: str, fmt: str, timeout: int, cache: Any = None):
    """(detection, None) for a file that opens, (None, one-line reason) for one that does not.

    ``cache``: an :class:`~jettracks.io.cache.EntryCache` holding earlier detections of this
    file version (size + mtime); a found detection is stored there.

    Raises:
        RunError: the file opens but is not of the format (or of any format, for ``auto``).
    """
    from .failures import error_line
    from .readers.detect import Detection, open_file

    # Never a tree path (the cache's second key is a tree name); valid for this set of readers.
    key = f"detection:{fmt}:{readers.registry_tag()}"
    stored = cache.get(fname, key) if cache is not None else None
    if isinstance(stored, dict):
        try:
            return Detection(stored["format"], stored["treename"],
                             {t: set(b) for t, b in stored["trees"].items()}, list(stored["notes"])), None
        except (KeyError, TypeError, AttributeError, ValueError):
            pass  # an unexpected record: detect again
    try:
        handle = open_file(fname, timeout=timeout)
    except readers.ReaderError as err:
        return None, str(err)
    try:
        with handle:
            found = readers.detect_details(handle, fmt=fmt)
    except readers.ReaderError as err:
        raise RunError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - it opens, but its trees cannot be read (truncated, corrupt)
        return None, f"{fname}: cannot read: {error_line(err)}"
    if cache is not None:
        record = {"format": found.format, "treename": found.treename,
                  "trees": {t: sorted(b) for t, b in found.trees.items()}, "notes": list(found.notes)}
        try:
            if cache.put(fname, key, record):
                cache.save()
        except OSError:
            pass  # an optimisation only; the metadata step warns about an unwritable cache
    return found, None


def note_duplicates(dropped: list[dict], deduplicated: list | None, console) -> None:
    """Record dropped repeats for the report and say so, one line each."""
    if deduplicated is not None:
        deduplicated.extend(dropped)
    if console is not None:
        for d in dropped:
            console.print(
                f"note datasets.{d['dataset']}: {d['file']} is the same file as {d['same_as']} "
                f"(by {d['by']}): processed once",
                markup=False, highlight=False, soft_wrap=True,
            )


def xrootd_settings(ex) -> dict[str, int]:
    """XRootD client settings of a run (:func:`jettracks.io.files.configure_xrootd_client`).

    The client's defaults refuse to reconnect to a server for 30 min after one
    broken stream and wait out a 120 s connection window after a refused connect;
    Dask's retries are immediate, so both windows are made short (measured: a 3 s
    server outage then loses nothing). Timeouts follow ``executor.xrootd_timeout``.
    """
    return {
        "stream_error_window": 0,
        "connection_window": 5,
        "connection_retry": 3,
        "request_timeout": ex.xrootd_timeout,
    }


def uses_xrootd(cfg) -> bool:
    """Whether the run writes to an XRootD server: ``output.dir`` or ``executor.cache`` a ``root://`` URL."""
    from .io.xrootd import is_xrootd

    return any(is_xrootd(str(loc)) for loc in (cfg.output.dir, cfg.executor.cache or ""))


def configure_remote_reading(fileset, client, ex, *, remote_outputs: bool = False) -> None:
    """:func:`xrootd_settings` in this process and every worker, before any remote open:
    when a file of ``fileset`` is a ``root://`` URL, or ``remote_outputs`` (the output
    directory or the column cache is one: :func:`uses_xrootd`)."""
    if not remote_outputs and not any(f.startswith("root://") for spec in fileset.values() for f in spec["files"]):
        return
    from .io.files import configure_xrootd_client

    settings = xrootd_settings(ex)
    configure_xrootd_client(**settings)
    if client is not None:
        client.run(configure_xrootd_client, **settings)
