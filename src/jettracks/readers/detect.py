"""Format detection: which registered reader fits a file's trees and branches."""

from __future__ import annotations

from typing import Any

from .base import ReaderError

__all__ = ["detect_format", "list_trees"]


def list_trees(file: Any, *, max_depth: int = 2) -> dict[str, set[str]]:
    """Map tree path -> set of branch names (recursive, all keys) for an open uproot file."""
    out: dict[str, set[str]] = {}
    for key, cls in file.classnames(recursive=True, cycle=False).items():
        if cls in ("TTree", "TNtuple") and key.count("/") <= max_depth:
            out[key] = set(file[key].keys(recursive=True))
    return out


def detect_format(source: Any, registry: dict[str, type]) -> str:
    """Name of the first reader whose ``detect`` accepts the file.

    Args:
        source: a path/URL or an open uproot file.
        registry: name -> reader class, in priority order (most specific first).

    Raises:
        ReaderError: no reader fits; the message lists the trees seen.
    """
    import uproot

    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        try:
            with uproot.open(source) as f:
                return detect_format(f, registry)
        except ReaderError:
            raise
        except Exception as err:  # unreadable file: say which and why
            raise ReaderError(f"{source}: cannot open as ROOT: {err.__class__.__name__}: {err}") from None
    trees = list_trees(source)
    for name, cls in registry.items():
        if cls.detect(trees):
            return name
    name = getattr(source, "file_path", "?")
    raise ReaderError(
        f"{name}: format not recognised (trees: {', '.join(sorted(trees)) or 'none'}); "
        f"known formats: {', '.join(registry)}"
    )
