"""What a failed chunk or file is: the record, its one-line error, and whether a retry can help."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ChunkFailure", "error_line", "is_permanent", "readable_fileset"]


@dataclass
class ChunkFailure:
    """A chunk that failed after its retries: file, entry range and the error (one line)."""

    dataset: str
    filename: str
    entrystart: int
    entrystop: int
    error: str
    #: ``open``: the file could not be opened or its metadata read (no entry range known);
    #: ``process``: the chunk failed while being read or processed.
    stage: str = "process"

    @property
    def entries(self) -> int:
        return self.entrystop - self.entrystart

    def line(self) -> str:
        if self.stage == "open":
            return f"{self.filename} unreadable: {self.error}"
        return f"{self.filename} entries {self.entrystart}-{self.entrystop}: {self.error}"


def is_permanent(err: BaseException) -> bool:
    """True when retrying cannot help: a missing tree or branch, not a ROOT file, a missing local file.

    Looks through the cause chain (coffea wraps a chunk's exception in a plain ``Exception``).
    A branch missing from a file shows as uproot's ``KeyInFileError`` when read directly, and
    as awkward's ``FieldNotFoundError`` when the processor reads virtual NanoEvents.
    """
    import awkward as ak
    import uproot

    from .readers import ReaderError

    e, seen = err, 0
    while e is not None and seen < 10:
        if isinstance(e, (uproot.KeyInFileError, ak.errors.FieldNotFoundError, ReaderError, FileNotFoundError,
                          IsADirectoryError)):
            return True
        if isinstance(e, ValueError) and "not a ROOT file" in str(e):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def error_line(err: BaseException) -> str:
    """Innermost cause of a (coffea-wrapped) exception as ``Type: message`` on one line."""
    chain, e = [], err
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    inner = chain[-1]
    text = " ".join(f"{inner.__class__.__name__}: {inner}".split())
    return text if len(text) <= 300 else text[:297] + "..."


def readable_fileset(fileset: dict, meta: dict) -> dict:
    """The fileset restricted to files whose metadata was read (``(dataset, file)`` in ``meta``);
    datasets left without files are dropped."""
    good = {}
    for ds, spec in fileset.items():
        files = [f for f in spec["files"] if (ds, f) in meta]
        if files:
            good[ds] = {**spec, "files": files}
    return good
