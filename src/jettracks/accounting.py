"""Nothing lost: per-file metadata, per-chunk failure capture and checkpoints.

- :func:`file_metadata` reads entries and UUID of one file (run on workers);
- :class:`AccountingDaskExecutor` is a coffea ``DaskExecutor`` that runs every
  chunk to completion, accumulates results as they arrive, and records each
  chunk that still fails after its retries instead of abandoning the run;
- :class:`RunCheckpointer` saves each finished chunk's output under a key of
  file identity (URL + UUID), entry range and the run fingerprint (hash of the
  processor code and the config), so a rerun redoes only the missing chunks.
"""

from __future__ import annotations

import hashlib
import json
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
    "file_metadata",
    "run_fingerprint",
]


@dataclass
class ChunkFailure:
    """A chunk that failed after its retries: file, entry range and the error (one line)."""

    dataset: str
    filename: str
    entrystart: int
    entrystop: int
    error: str

    @property
    def entries(self) -> int:
        return self.entrystop - self.entrystart

    def line(self) -> str:
        return f"{self.filename} entries {self.entrystart}-{self.entrystop}: {self.error}"


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


def file_metadata(filename: str, treename: str, timeout: int) -> dict[str, Any]:
    """Entries and file UUID of one ROOT file (``numentries``, ``uuid`` bytes).

    Raises the reading error unchanged: the caller records it against the file.
    """
    import uproot

    from .files import AutoSource

    handler = {"handler": AutoSource} if AutoSource is not None else {}
    with uproot.open({filename: None}, timeout=timeout, **handler) as f:
        tree = f[treename]
        return {"numentries": int(tree.num_entries), "uuid": f.file.fUUID}


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
                except Exception as err:  # the chunk failed after its retries
                    self.failures.append(
                        ChunkFailure(item.dataset, item.filename, item.entrystart, item.entrystop, error_line(err))
                    )
                else:
                    out = _decompress(result) if self.compression is not None else result
                    accumulator = out if accumulator is None else iadd(accumulator, out)
                    self.chunk_seconds.append(
                        (item.filename, item.entrystart, item.entrystop, round(seconds, 4))
                    )
                future.release()
                progress.advance()
        return accumulator, 0


class _timed:
    """Wrap a task function to return ``(result, seconds)``."""

    def __init__(self, function):
        self.function = function

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.function(*args, **kwargs)
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


def run_fingerprint(processor_instance: Any, config_part: dict[str, Any]) -> str:
    """Hash of the processor's code (its module and the jettracks modules it calls) and the config.

    A change in either invalidates old checkpoints.
    """
    import inspect

    h = hashlib.sha256()
    modules = {inspect.getmodule(type(processor_instance))}
    import jettracks

    pkg_dir = Path(jettracks.__file__).parent
    files = sorted(
        {Path(m.__file__) for m in modules if m is not None and getattr(m, "__file__", None)}
        | set(pkg_dir.glob("kernels.py"))
        | set(pkg_dir.glob("flavour.py"))
        | set((pkg_dir / "readers").glob("*.py"))
    )
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(json.dumps(config_part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


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
                return cloudpickle.load(f)
        except FileNotFoundError:
            return None
        except Exception:  # a damaged checkpoint is redone, not trusted
            return None

    def save(self, output, metadata, processor_instance) -> None:
        path = self.filepath(metadata)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuidlib.uuid4().hex[:8]}")
        with open(tmp, "wb") as f:
            cloudpickle.dump(output, f)
        os.replace(tmp, path)

    def count(self) -> int:
        return sum(1 for _ in Path(self.checkpoint_dir).rglob("*.pkl"))
