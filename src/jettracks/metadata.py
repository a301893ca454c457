"""Step 3 of a run: entries and UUID of every file (from the cache, else read on the workers).

A file that cannot be opened becomes a bad file (``stage="open"``), not an
exception; a file whose UUID repeats another's in the same dataset is processed
once (and reported); in two datasets, the run stops before processing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import RunError

__all__ = ["FileMetadata", "collect_metadata", "file_metadata"]


@dataclass
class FileMetadata:
    """Result of the metadata step.

    Attributes:
        meta: ``{(dataset, file): {"numentries": int, "uuid": bytes, "uuid_hex": str}}``
            for every readable file.
        bad: one ``ChunkFailure`` (``stage="open"``) per file that could not be opened.
        fileset: the fileset without the files dropped as UUID repeats.
    """

    meta: dict[tuple[str, str], dict[str, Any]]
    bad: list
    fileset: dict[str, dict[str, Any]] = field(default_factory=dict)


def collect_metadata(fileset, *, client, ex, refresh: bool = False, console=None,
                     deduplicated: list | None = None) -> FileMetadata:
    """Entries + UUID per file; unreadable files become failures, not exceptions.

    Files with one file UUID are one file, whatever their names (a copy, a local
    path and a ``root://`` URL of it): within a dataset only the first is kept --
    the others leave ``fileset`` and are appended to ``deduplicated`` -- and one
    in two datasets is a ``RunError`` naming both, before any chunk runs.

    Args:
        fileset: the plan's fileset (files dropped as UUID repeats are removed in place).
        client: a ``distributed.Client`` (None: read in this process).
        ex: the executor config (``xrootd_timeout`` seconds, ``retries``).
        refresh: ignore the cache.
        console: a ``rich`` console for notes.
        deduplicated: list the dropped repeats are appended to.
    """
    from .failures import ChunkFailure, error_line

    cache = _entry_cache(refresh)
    meta: dict[tuple[str, str], dict[str, Any]] = {}
    todo = []
    for ds, spec in fileset.items():
        for fname in spec["files"]:
            hit = cache.get(fname, spec["treename"])
            if hit is not None:
                meta[(ds, fname)] = hit
            else:
                todo.append((ds, fname, spec["treename"]))
    bad: list = []
    if todo:
        if client is None:
            results = []
            for _, fname, tree in todo:
                try:
                    results.append(file_metadata(fname, tree, ex.xrootd_timeout))
                except Exception as err:
                    results.append(err)
        else:
            futures = client.map(
                file_metadata,
                [t[1] for t in todo],
                [t[2] for t in todo],
                [ex.xrootd_timeout] * len(todo),
                pure=False,
                retries=ex.retries,
            )
            results = []
            for fut in futures:
                try:
                    results.append(fut.result())
                except Exception as err:
                    results.append(err)
        for (ds, fname, tree), res in zip(todo, results):
            if isinstance(res, BaseException):
                bad.append(ChunkFailure(ds, fname, 0, 0, error_line(res), stage="open"))
                continue
            meta[(ds, fname)] = res
            cache.put(fname, tree, res)
        _save_cache(cache, console)
    for m in meta.values():
        m["uuid_hex"] = bytes(m["uuid"]).hex() if not isinstance(m["uuid"], str) else m["uuid"]
    _drop_same_uuid(fileset, meta, console, deduplicated)
    return FileMetadata(meta, bad, fileset)


def _drop_same_uuid(fileset, meta, console, deduplicated: list | None) -> None:
    """Keep one file per file UUID in each dataset (in place); a UUID in two datasets is a RunError."""
    from .io.files import SharedFileError, deduplicate

    def uuid_of(ds: str, fname: str) -> str | None:
        m = meta.get((ds, fname))
        if m is None or not m["uuid_hex"].strip("0"):  # unreadable, or no UUID written
            return None
        return m["uuid_hex"]

    try:
        kept, dropped = deduplicate({ds: spec["files"] for ds, spec in fileset.items()}, uuid_of, by="uuid")
    except SharedFileError as err:
        raise RunError(str(err)) from None
    for d in dropped:
        meta.pop((d["dataset"], d["file"]), None)
    for ds, files in kept.items():
        fileset[ds]["files"] = files
    from .datasets import note_duplicates

    note_duplicates(dropped, deduplicated, console)


def _save_cache(cache, console) -> None:
    """Save the entries cache; one warning, not a failure, when it cannot be written."""
    try:
        cache.save()
    except OSError as err:
        reason = err.strerror or f"{err.__class__.__name__}: {err}"
        line = (
            f"warning: cannot write the file-metadata cache {cache.path}: {reason}; running without it "
            "(set JETTRACKS_CACHE_DIR to a writable directory)"
        )
        if console is not None:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            import sys

            print(line, file=sys.stderr)


def _entry_cache(refresh: bool):
    """The persistent entries-per-file cache of :mod:`jettracks.io.files` (``$JETTRACKS_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/jettracks`` or ``~/.cache/jettracks``)."""
    from .io.files import EntryCache

    return EntryCache(refresh=refresh)


def file_metadata(filename: str, treename: str, timeout: int) -> dict[str, Any]:
    """Entries and file UUID of one ROOT file (``numentries``, ``uuid`` bytes).

    Raises the reading error unchanged: the caller records it against the file.
    """
    import uproot

    from .io.files import AutoSource

    handler = {"handler": AutoSource} if AutoSource is not None else {}
    with uproot.open({filename: None}, timeout=timeout, **handler) as f:
        tree = f[treename]
        return {"numentries": int(tree.num_entries), "uuid": f.file.fUUID}
