"""Nothing lost: per-file metadata, per-chunk failure capture and checkpoints.

- :class:`AccountingDaskExecutor` is a coffea ``DaskExecutor`` that runs every
  chunk to completion, accumulates results as they arrive, and records each
  chunk that still fails after its retries instead of abandoning the run;
- :class:`RunCheckpointer` saves each finished chunk's output under a key of
  file identity (URL + UUID), entry range and the run fingerprint (hash of the
  processor code and the config), so a rerun redoes only the missing chunks. The fingerprint itself is
  :func:`jettracks.rundir.run_fingerprint`.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import cloudpickle
from coffea.processor.accumulator import iadd
from coffea.processor.checkpointer import CheckpointerABC
from coffea.processor.executor import DaskExecutor, _compression_wrapper, _decompress

__all__ = [
    "AccountingDaskExecutor",
    "ChunkFailure",
    "RunCheckpointer",
    "is_permanent",
]


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
    """
    import uproot

    from .readers import ReaderError

    e, seen = err, 0
    while e is not None and seen < 10:
        if isinstance(e, (uproot.KeyInFileError, ReaderError, FileNotFoundError, IsADirectoryError)):
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


@dataclass
class AccountingDaskExecutor(DaskExecutor):
    """coffea ``DaskExecutor`` that survives failing chunks and counts them.

    Each chunk is a separate task (with ``retries``); results are summed on the
    client as they complete, so a failure costs only its own chunk. Failed chunks
    are appended to ``failures`` (shared with the Runner's copies of this executor).
    """

    failures: list = field(default_factory=list)
    chunk_seconds: list = field(default_factory=list)

    def __call__(self, items, function, accumulator):
        if self.function_name == "get_metadata" or len(items) == 0:
            return super().__call__(items, function, accumulator)
        from distributed import as_completed

        client = self.client
        if self.compression is not None:
            function = _compression_wrapper(self.compression, function, name=self.function_name)
        items = list(items)
        args = items
        if self.heavy_input is not None:
            heavy = client.scatter(self.heavy_input, broadcast=False, hash=False)
            args = list(zip(items, repeat(heavy)))
        futures = client.map(
            _timed(function), args, pure=False, priority=self.priority, retries=self.retries
        )
        item_of = {f.key: item for f, item in zip(futures, items)}
        progress = _progress(self.status, len(futures), self.desc)
        with progress:
            for future in as_completed(futures):
                item = item_of[future.key]
                try:
                    result, seconds = future.result()
                    if isinstance(result, _Permanent):
                        self.failures.append(
                            ChunkFailure(item.dataset, item.filename, item.entrystart, item.entrystop, result.error)
                        )
                        result = None
                except Exception as err:  # the chunk failed after its retries
                    self.failures.append(
                        ChunkFailure(item.dataset, item.filename, item.entrystart, item.entrystop, error_line(err))
                    )
                    result = None
                if result is not None:
                    out = _decompress(result) if self.compression is not None else result
                    accumulator = out if accumulator is None else iadd(accumulator, out)
                    self.chunk_seconds.append(
                        (item.filename, item.entrystart, item.entrystop, round(seconds, 4))
                    )
                future.release()
                progress.advance()
        return accumulator, 0


@dataclass
class _Permanent:
    """A chunk's error that a retry cannot fix, returned instead of raised (no Dask retry)."""

    error: str


class _timed:
    """Wrap a task function to return ``(result, seconds)``; permanent errors become :class:`_Permanent`."""

    def __init__(self, function):
        self.function = function

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            out = self.function(*args, **kwargs)
        except Exception as err:
            if is_permanent(err):
                return _Permanent(error_line(err)), time.perf_counter() - t0
            raise
        return out, time.perf_counter() - t0


class _progress:
    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.enabled, self.total, self.desc = enabled, total, desc
        self._bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._bar = Progress(
                "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(f"[green]{self.desc}", total=self.total)
        return self

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.stop()
        return False


class RunCheckpointer(CheckpointerABC):
    """Per-chunk checkpoints under ``checkpoint_dir`` (a path every worker can reach).

    Key: ``<dataset>/<sha1(URL)[:12]>-<file uuid>/<start>-<stop>.pkl``; the run
    fingerprint is the directory name chosen by the caller. Writes are atomic.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike) -> None:
        self.checkpoint_dir = str(checkpoint_dir)

    def filepath(self, metadata: dict[str, Any]) -> Path:
        file_id = hashlib.sha1(metadata["filename"].encode()).hexdigest()[:12]
        return (
            Path(self.checkpoint_dir)
            / metadata["dataset"]
            / f"{file_id}-{metadata.get('fileuuid') or 'nouuid'}"
            / f"{metadata['entrystart']}-{metadata['entrystop']}.pkl"
        )

    def load(self, metadata, processor_instance):
        path = self.filepath(metadata)
        try:
            with open(path, "rb") as f:
                out = cloudpickle.load(f)
        except FileNotFoundError:
            return None
        except Exception:  # a damaged checkpoint is redone, not trusted
            return None
        # A checkpoint whose ML part is gone (removed by hand, or another host's disk)
        # would resume to a dataset without that chunk's rows: redo the chunk instead.
        parts = (out.get("out") or {}).get("ml_parts", []) if isinstance(out, dict) else []
        if any(not os.path.exists(p) for p in parts):
            return None
        return out

    def save(self, output, metadata, processor_instance) -> None:
        path = self.filepath(metadata)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuidlib.uuid4().hex[:8]}")
        with open(tmp, "wb") as f:
            cloudpickle.dump(output, f)
        os.replace(tmp, path)

    def count_existing(self, chunks) -> int:
        """How many of these chunks (coffea ``WorkItem``s) have a checkpoint: this run's resumed chunks."""
        n = 0
        for c in chunks:
            fileuuid = str(uuidlib.UUID(bytes=c.fileuuid)) if len(c.fileuuid) > 0 else ""
            meta = {"dataset": c.dataset, "filename": c.filename, "fileuuid": fileuuid,
                    "entrystart": c.entrystart, "entrystop": c.entrystop}
            n += self.filepath(meta).is_file()
        return n
