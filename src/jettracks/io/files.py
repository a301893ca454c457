"""File lists: glob expansion (local and XRootD), index files, path resolution, deduplication.

XRootD specifics are in :mod:`jettracks.io.xrootd`, the entries cache in
:mod:`jettracks.io.cache` (both re-exported here).

Readers and the run know *files*, not clusters: nothing here imports Dask.

>>> expand_files(["data/demo/pfnano_*.root"])                      # doctest: +SKIP
['data/demo/pfnano_0.root', 'data/demo/pfnano_1.root']
>>> expand_files(["root://eospublic.cern.ch//eos/opendata/cms/x/*.root"])  # doctest: +SKIP

URLs. An XRootD URL is ``root://host[:port]//absolute/path`` — the path after the
host starts with ``/`` (hence the double slash); ``root://host/path`` is sent as
the relative path ``path``, which servers refuse. Globs (``*``, ``?``, ``[...]``,
``**``) in the path of a ``root://`` (``roots://``, ``xroot://``) URL are expanded
by listing directories on the server; other URLs are passed through unchanged.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any

from .cache import EntryCache, file_signature
from .xrootd import (
    XROOTD_SCHEMES,
    AutoSource,
    configure_xrootd_client,
    glob_xrootd,
    is_url,
    is_xrootd,
    split_xrootd_url,
)

__all__ = [
    "AutoSource",
    "EntryCache",
    "FileListError",
    "SharedFileError",
    "configure_xrootd_client",
    "dataset_files",
    "deduplicate",
    "expand_files",
    "file_identity",
    "file_signature",
    "glob_xrootd",
    "is_url",
    "is_xrootd",
    "read_file_list",
    "resolve_local",
    "split_xrootd_url",
]



# -- expansion -----------------------------------------------------------------------------


def _glob_fsspec(pattern: str) -> list[str]:
    import fsspec

    fs, _, paths = fsspec.core.get_fs_token_paths(pattern)
    return sorted(fs.unstrip_protocol(p) for p in paths)


def expand_files(
    patterns: list[str] | str,
    *,
    base_dir: str | os.PathLike | None = None,
    timeout: int = 60,
) -> list[str]:
    """Expand local paths/globs and XRootD globs into a list of files.

    Each pattern's matches are sorted; the patterns' order is kept and a file
    matched twice is listed once. Relative local patterns are taken relative to
    ``base_dir`` when given (and returned joined with it), else to the working
    directory (and returned relative, as ``glob.glob`` does). URLs without a glob
    are passed through unchecked (a run reports them if they cannot be opened).

    Raises:
        FileNotFoundError: a pattern matches nothing (the message names it).
        OSError: an XRootD server cannot be listed.
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    out: list[str] = []
    seen: set[str] = set()
    for raw in patterns:
        pattern = str(raw).strip()
        if not pattern:
            continue
        if is_url(pattern):
            scheme = pattern.split("://", 1)[0].lower()
            path_part = pattern.split("://", 1)[1].split("?", 1)[0]
            if scheme == "file":
                matches = expand_files([path_part], base_dir=base_dir)
            elif not glob.has_magic(path_part):
                matches = [pattern]
            elif scheme in XROOTD_SCHEMES:
                matches = glob_xrootd(pattern, timeout=timeout)
            else:
                try:
                    matches = _glob_fsspec(pattern)
                except (ImportError, ValueError) as err:
                    raise ValueError(f"cannot expand the glob in {pattern!r}: {err}") from None
        else:
            local = os.path.expanduser(pattern)
            if base_dir is not None and not os.path.isabs(local):
                local = os.path.join(os.fspath(base_dir), local)
            if glob.has_magic(local):
                matches = sorted(glob.glob(local, recursive=True))
            else:
                matches = [local] if os.path.exists(local) else []
        if not matches:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        for m in matches:
            if m not in seen:
                seen.add(m)
                out.append(m)
    return out


def read_file_list(path: str | os.PathLike) -> list[str]:
    """Entries of an index file (``files_from:``): one path or URL a line.

    Blank lines and ``#`` comments (whole line, or after whitespace) are ignored;
    entries are returned as written (globs are not expanded here).

    Raises:
        FileNotFoundError / OSError: the index file cannot be read.
    """
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if line:
            out.append(line)
    return out


# -- a dataset's file list: paths against the config's directory, one file once --------------


class FileListError(ValueError):
    """A dataset's file list cannot be built; the message is one line naming the key."""


class SharedFileError(ValueError):
    """One file in two datasets (same resolved path, or same file UUID).

    Its events would be counted in both datasets. The message is one line:
    ``datasets.B.files: <file> is also in dataset A`` (plus the other name or the
    UUID match when that is how the two were found to be one file).
    """

    def __init__(self, dataset: str, file: str, other_dataset: str, other_file: str, by: str):
        self.dataset, self.file, self.other_dataset, self.other_file, self.by = (
            dataset, file, other_dataset, other_file, by
        )
        if by == "uuid":
            detail = f" (same file UUID as {other_file})"
        else:
            detail = f" (as {other_file})" if other_file != file else ""
        super().__init__(f"datasets.{dataset}.files: {file} is also in dataset {other_dataset}{detail}")


def resolve_local(name: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> str:
    """A file name as the client sends it to the workers: absolute for local files.

    A local path or glob (a ``file://`` prefix is dropped, ``~`` expanded) that is
    relative is taken relative to ``base_dir`` -- the directory of the config file
    -- or, when ``base_dir`` is None (a config given as a mapping), to the working
    directory; the result is absolute and normalised (``./a/../b.root`` ->
    ``/.../b.root``), symlinks kept as written. Other URLs are returned unchanged.

    >>> resolve_local("../data/a.root", "/work/main/configs")
    '/work/main/data/a.root'
    >>> resolve_local("root://host//a.root", "/x")
    'root://host//a.root'
    """
    text = os.fspath(name).strip()
    if is_url(text):
        if text[:7].lower() != "file://":
            return text
        text = text[7:]
    local = os.path.expanduser(text)
    if not os.path.isabs(local):
        base = os.fspath(base_dir) if base_dir is not None else os.getcwd()
        local = os.path.join(os.path.expanduser(base), local)
    return os.path.abspath(local)


def file_identity(name: str) -> str:
    """What makes two names the same file before it is opened.

    A local file's real path (:func:`resolve_local`, then ``os.path.realpath``:
    ``./f.root``, ``f.root``, a symlink to it and its absolute path are one file);
    a URL as written. After the metadata step the file UUID is the stronger key
    (see :func:`deduplicate`).
    """
    text = os.fspath(name)
    if is_url(text) and text[:7].lower() != "file://":
        return text
    return os.path.realpath(resolve_local(text))


def dataset_files(
    dataset: str,
    files: list[str],
    files_from: str | os.PathLike | None = None,
    *,
    base_dir: str | os.PathLike | None = None,
    timeout: int = 60,
) -> list[str]:
    """A dataset's file list: ``files``, then the entries of ``files_from``, expanded.

    Relative local paths -- in ``files``, the ``files_from`` path itself and the
    entries of that index file -- are relative to ``base_dir`` (the config file's
    directory; the working directory when None) and are returned absolute
    (:func:`resolve_local`), so workers started in any directory open the same
    files. A glob's matches are sorted and the patterns' order is kept; a named
    local file (no glob) is kept even when absent, so that the run counts it as a
    bad file (stop, or skip with ``--skip-bad-files``); URLs without a glob are
    passed through unchecked. Repeats (a name matched twice, ``./f.root`` and
    ``f.root``, a symlink and its target) are kept: :func:`deduplicate` drops
    and reports them.

    Raises:
        FileListError: a glob that matches nothing, an unreadable index file (or
            one that lists nothing while ``files`` is empty), or a remote
            directory that cannot be listed (one line naming the key).
    """
    entries: list[tuple[str, str]] = [(f"datasets.{dataset}.files", str(p)) for p in files]
    if files_from:
        index = resolve_local(files_from, base_dir)
        try:
            listed = read_file_list(index)
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or f"{err.__class__.__name__}: {err}"
            raise FileListError(f"datasets.{dataset}.files_from: cannot read {index}: {reason}") from None
        if not listed and not files:
            raise FileListError(f"datasets.{dataset}.files_from: {index} lists no file")
        entries += [(f"datasets.{dataset}.files_from: {index}", p) for p in listed]
    out: list[str] = []
    for key, pattern in entries:
        pattern = pattern.strip()
        if not pattern:
            continue
        name = resolve_local(pattern, base_dir)
        if is_url(name) or glob.has_magic(name):
            try:
                matches = expand_files([name], timeout=timeout)
            except FileNotFoundError:
                matches = []
            except (OSError, ValueError) as err:
                raise FileListError(f"{key}: {' '.join(str(err).split())}") from None
            if not matches:
                raise FileListError(f"{key}: no file matches {pattern!r}")
        else:
            matches = [name]
        out.extend(matches)
    return out


def deduplicate(lists: dict[str, list[str]], key, *, by: str) -> tuple[dict[str, list[str]], list[dict[str, str]]]:
    """Keep each file once: the first occurrence within its dataset.

    Args:
        lists: dataset -> files, datasets in config order.
        key: ``key(dataset, file)`` -> the file's identity (:func:`file_identity`,
            or its UUID after the metadata step); files whose key is None (not
            known, e.g. unreadable) are never merged.
        by: ``"path"`` or ``"uuid"``, recorded in what is returned.

    Returns:
        (dataset -> its files without repeats, one
        ``{"dataset", "file", "same_as", "by"}`` per file dropped).

    Raises:
        SharedFileError: a file of one dataset is also in an earlier dataset.
    """
    owner: dict[Any, tuple[str, str]] = {}
    kept_lists: dict[str, list[str]] = {}
    dropped: list[dict[str, str]] = []
    for ds, files in lists.items():
        kept: list[str] = []
        for f in files:
            k = key(ds, f)
            if k is None:
                kept.append(f)
                continue
            if k in owner:
                other_ds, other_file = owner[k]
                if other_ds != ds:
                    raise SharedFileError(ds, f, other_ds, other_file, by)
                dropped.append({"dataset": ds, "file": f, "same_as": other_file, "by": by})
                continue
            owner[k] = (ds, f)
            kept.append(f)
        kept_lists[ds] = kept
    return kept_lists, dropped


# -- file identity and the entries cache -------------------------------------------------
