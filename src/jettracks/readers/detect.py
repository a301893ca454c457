"""Format detection: which registered reader fits a file's trees and branches.

The registry is tried in order (most specific first: ``pfnano`` before
``nanoaod``, since every PFNano file is also a NanoAOD file). A reader may define
a classmethod ``find_tree(trees) -> path | None`` when its tree can sit at
several paths (TreeMaker: ``PreSelection`` or ``TreeMaker2/PreSelection``);
otherwise its ``treename`` and ``detect(trees)`` are used.

:func:`detect_details` returns the format *and* the tree it was found in;
:func:`detect_format` only the format name (what ``format: auto`` reports).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..io.rntuple import RNTUPLE_CLASSES, branch_names
from .base import ReaderError

__all__ = ["Detection", "detect_details", "detect_format", "find_tree", "list_trees", "open_file"]


@dataclass
class Detection:
    """What detection found in one file.

    Attributes:
        format: the reader name chosen.
        treename: the tree path that reader will read in this file.
        trees: every tree path in the file -> its branch names.
        notes: near misses worth a warning: a more specific format (earlier in
            the registry) whose tree is there but which misses a few required
            branches, e.g. a PFNano file without ``PFCands_d0Err`` that is
            therefore read as plain ``nanoaod`` (jets only).
    """

    format: str
    treename: str
    trees: dict[str, set[str]] = field(default_factory=dict, repr=False)
    notes: list[str] = field(default_factory=list)


def list_trees(file: Any, *, max_depth: int = 2) -> dict[str, set[str]]:
    """Map tree path -> set of branch names (recursive, all keys) for an open uproot file.

    RNTuples count as trees: their names are :func:`jettracks.io.rntuple.branch_names`
    (every field, and each collection member under its TTree spellings).

    Several cycles of one tree (``jetTree;14``, ``jetTree;25``) appear once; uproot
    reads the highest.
    """
    out: dict[str, set[str]] = {}
    for key, cls in file.classnames(recursive=True, cycle=False).items():
        if cls in ("TTree", "TNtuple") and key.count("/") <= max_depth and key not in out:
            out[key] = set(file[key].keys(recursive=True))
        elif cls in RNTUPLE_CLASSES and key.count("/") <= max_depth and key not in out:
            # An RNTuple: its fields plus their TTree spellings (Jet.pt -> Jet_pt, nJet, ...).
            out[key] = branch_names(file[key])
    return out


def find_tree(cls: type, trees: dict[str, set[str]]) -> str | None:
    """The tree path reader class ``cls`` would read in a file with ``trees``, or None."""
    return cls.find_tree(trees)


def open_file(source: Any, **options: Any):
    """``uproot.open`` with a one-line :class:`ReaderError` for unreadable files."""
    import uproot

    try:
        return uproot.open(source, **options)
    except Exception as err:  # unreadable file: say which and why
        text = f"{err.__class__.__name__}: {err}".replace("\n", " ")
        if len(text) > 300:
            text = text[:297] + "..."
        raise ReaderError(f"{source}: cannot open as ROOT: {text}") from None


def _near_miss(name: str, cls: type, trees: dict[str, set[str]]) -> list[str]:
    """A note when ``cls``'s tree exists but lacks fewer than half of its required branches."""
    try:
        probe = cls()
    except Exception:  # pragma: no cover - readers construct without options
        return []
    for path in getattr(cls, "TREES", None) or (cls.treename,):
        if path in trees:
            missing = probe.missing_branches(trees[path])
            if missing and len(missing) < len(probe.required_branches()) / 2:
                return [f"not format {name}: tree {path} lacks {', '.join(missing)}"]
    return []


def _closest(trees: dict[str, set[str]], registry: dict[str, type]) -> str:
    """``"; closest: fmt (tree T, missing a, b, ...)"`` for the reader with the fewest missing branches."""
    best: tuple[int, str, str, list[str]] | None = None
    for name, cls in registry.items():
        try:
            probe = cls()
        except Exception:  # pragma: no cover - readers construct without options
            continue
        paths = getattr(cls, "TREES", None) or (cls.treename,)
        for path in paths:
            if path in trees:
                missing = probe.missing_branches(trees[path])
                if best is None or len(missing) < best[0]:
                    best = (len(missing), name, path, missing)
    if best is None:
        return ""
    _, name, path, missing = best
    shown = ", ".join(missing[:6]) + (f", ... ({len(missing)} in all)" if len(missing) > 6 else "")
    return f"; closest: {name} (tree {path}, missing {shown})"


def detect_details(source: Any, registry: dict[str, type], *, fmt: str = "auto", **open_options: Any) -> Detection:
    """Detect a file's format (or, with ``fmt``, find that format's tree in it).

    Args:
        source: a path/URL or an open uproot file.
        registry: name -> reader class, in priority order (most specific first).
        fmt: ``auto`` to detect; a format name to only locate its tree (falls
            back to the reader's default ``treename`` when no tree fits).
        open_options: passed to ``uproot.open`` (e.g. ``timeout``).

    Raises:
        ReaderError: unreadable file, or no reader fits (one line naming the file,
            the trees seen and the closest format with its missing branches).
    """
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        with open_file(source, **open_options) as f:
            return detect_details(f, registry, fmt=fmt)
    trees = list_trees(source)
    if fmt != "auto":
        if fmt not in registry:
            raise ReaderError(f"unknown format {fmt!r}; known: {', '.join(registry)}")
        cls = registry[fmt]
        return Detection(fmt, find_tree(cls, trees) or cls.treename, trees)
    notes: list[str] = []
    for name, cls in registry.items():
        path = find_tree(cls, trees)
        if path is not None:
            return Detection(name, path, trees, notes)
        notes.extend(_near_miss(name, cls, trees))
    filename = getattr(source, "file_path", None) or getattr(getattr(source, "file", None), "file_path", "?")
    raise ReaderError(
        f"{filename}: format not recognised (trees: {', '.join(sorted(trees)) or 'none'}); "
        f"known formats: {', '.join(registry)}{_closest(trees, registry)}"
    )


def detect_format(source: Any, registry: dict[str, type], **open_options: Any) -> str:
    """Name of the first reader whose tree and required branches the file has.

    Args:
        source: a path/URL or an open uproot file.
        registry: name -> reader class, in priority order (most specific first).

    Raises:
        ReaderError: unreadable file or no reader fits; the message lists the trees seen.
    """
    return detect_details(source, registry, **open_options).format
