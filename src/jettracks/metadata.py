"""Step 3 of a run: entries and UUID of every file (from the cache, else read on the workers).

A file that cannot be opened becomes a bad file (``stage="open"``), not an
exception; a file whose UUID repeats another's in the same dataset is processed
once (and reported); in two datasets, the run stops before processing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import RunError

__all__ = ["FileMetadata", "collect_metadata", "file_metadata", "file_metadata_many", "uproot_file_metadata"]


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
    wanted = [(ds, fname, spec["treename"]) for ds, spec in fileset.items() for fname in spec["files"]]
    # The cache stats every file: in parallel (one round trip each for a remote file).
    hits = cache.get_many([(fname, tree) for _, fname, tree in wanted]) if wanted else []
    for (ds, fname, tree), hit in zip(wanted, hits):
        if hit is not None:
            meta[(ds, fname)] = hit
        else:
            todo.append((ds, fname, tree))
    bad: list = []
    if todo:
        names = [t[1] for t in todo]
        trees = [t[2] for t in todo]
        if client is None:
            results = file_metadata_many(names, trees, ex.xrootd_timeout, ex.retries)
        else:
            # Batches of files, each read by a thread pool on a worker: opening a remote file
            # is a few sequential round trips, so files are read many at a time.
            n_workers = max(len(client.scheduler_info().get("workers", {})), 1)
            size = max(min(-(-len(todo) // (2 * n_workers)), METADATA_BATCH), 1)
            batches = [slice(i, i + size) for i in range(0, len(todo), size)]
            futures = client.map(
                file_metadata_many,
                [names[b] for b in batches],
                [trees[b] for b in batches],
                [ex.xrootd_timeout] * len(batches),
                [ex.retries] * len(batches),
                pure=False,
                retries=ex.retries,
            )
            results = []
            for fut, b in zip(futures, batches):
                try:
                    results.extend(fut.result())
                except Exception as err:  # the task itself died: every file of the batch
                    results.extend([err] * len(names[b]))
        fresh = []
        for (ds, fname, tree), res in zip(todo, results):
            if isinstance(res, BaseException):
                bad.append(ChunkFailure(ds, fname, 0, 0, error_line(res), stage="open"))
                continue
            signature = res.pop("signature", None)
            meta[(ds, fname)] = res
            fresh.append((fname, tree, res, signature))
        cache.put_many(fresh)
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


#: Files per metadata task (at most; fewer when the files are few, so every worker gets work).
METADATA_BATCH = 256
#: Files one task opens at a time (threads: opening is waiting on round trips, not CPU).
METADATA_THREADS = 128


def file_metadata_many(filenames: list[str], treenames: list[str], timeout: int, retries: int = 0,
                       threads: int = METADATA_THREADS) -> list[dict[str, Any] | BaseException]:
    """:func:`file_metadata` of each file, ``threads`` files at a time; a file's error (after
    ``retries`` more attempts) is returned in its place, not raised."""
    from .io.cache import map_threads

    def one(i: int) -> dict[str, Any] | BaseException:
        for attempt in range(int(retries) + 1):
            try:
                return file_metadata(filenames[i], treenames[i], timeout)
            except Exception as err:  # noqa: BLE001 - recorded against the file
                last = err
                from .failures import is_permanent

                if is_permanent(err):
                    break
        return last

    return map_threads(one, list(range(len(filenames))), threads)


def file_metadata(filename: str, treename: str, timeout: int) -> dict[str, Any]:
    """Entries and file UUID of one ROOT file (``numentries``, ``uuid`` bytes).

    Read from the file's bytes by :func:`jettracks.io.rootmeta.tree_metadata` (a TTree in
    the top directory of a local or ``root://`` file: no uproot model, one open, one or two
    reads), which then also gives ``signature`` (the cache's ``(key, size, mtime)`` from the
    same open); anything else (subdirectories, RNTuple, other URLs, an unusual record) is
    read by uproot. Raises the reading error unchanged: the caller records it against the file.
    """
    from .io.rootmeta import tree_metadata

    fast = tree_metadata(filename, treename, timeout)
    if fast is not None:
        return fast
    return uproot_file_metadata(filename, treename, timeout)


def uproot_file_metadata(filename: str, treename: str, timeout: int) -> dict[str, Any]:
    """:func:`file_metadata` by ``uproot.open(...)[treename].num_entries`` (the reference)."""
    import uproot

    from .io.files import AutoSource

    from .engines.handles import open_options

    handler = {"handler": AutoSource} if AutoSource is not None else {}
    with uproot.open({filename: None}, **open_options(filename, {"timeout": timeout, **handler})) as f:
        tree = f[treename]
        return {"numentries": int(tree.num_entries), "uuid": f.file.fUUID}
