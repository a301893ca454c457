"""Per-chunk checkpoints: a finished chunk's output saved under its file identity and entry range.

The key is ``<dataset>/<sha1(URL)[:12]>-<file uuid>/<start>-<stop>.pkl`` under
``checkpoints/<fingerprint>/`` of the run directory (the fingerprint,
:func:`jettracks.io.rundir.run_fingerprint`, changes with the code and the
output-shaping options), so a rerun of the same run redoes only the missing
chunks. Writes are atomic; a damaged checkpoint, or one whose ML part is gone, is redone.
"""

from __future__ import annotations

import hashlib
import os
import uuid as uuidlib
from typing import Any

import cloudpickle
from coffea.processor.checkpointer import CheckpointerABC

from .atomic import atomic_path
from .mldata import part_available
from .outfs import OutPath, out_path

__all__ = ["RunCheckpointer"]


class RunCheckpointer(CheckpointerABC):
    """Per-chunk checkpoints under ``checkpoint_dir`` (a path or ``root://`` URL every worker can reach).

    Key: ``<dataset>/<sha1(URL)[:12]>-<file uuid>/<start>-<stop>.pkl``; the run
    fingerprint is the directory name chosen by the caller. Writes are atomic.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike) -> None:
        self.checkpoint_dir = str(checkpoint_dir)

    def filepath(self, metadata: dict[str, Any]) -> OutPath:
        file_id = hashlib.sha1(metadata["filename"].encode()).hexdigest()[:12]
        return (
            out_path(self.checkpoint_dir)
            / metadata["dataset"]
            / f"{file_id}-{metadata.get('fileuuid') or 'nouuid'}"
            / f"{metadata['entrystart']}-{metadata['entrystop']}.pkl"
        )

    def load(self, metadata, processor_instance):
        path = self.filepath(metadata)
        try:
            with path.open("rb") as f:
                out = cloudpickle.load(f)
        except FileNotFoundError:
            return None
        except Exception:  # a damaged checkpoint is redone, not trusted
            return None
        # A checkpoint whose ML part is gone (removed by hand, or another host's disk)
        # would resume to a dataset without that chunk's rows: redo the chunk instead.
        # A part compacted by the ML finalize step lives on in the finalized files.
        parts = (out.get("out") or {}).get("ml_parts", []) if isinstance(out, dict) else []
        if any(not part_available(p) for p in parts):
            return None
        return out

    def save(self, output, metadata, processor_instance) -> None:
        with atomic_path(self.filepath(metadata)) as tmp, open(tmp, "wb") as f:
            cloudpickle.dump(output, f)

    def count_existing(self, chunks) -> int:
        """How many of these chunks (coffea ``WorkItem``s) have a checkpoint: this run's resumed chunks."""
        n = 0
        for c in chunks:
            fileuuid = str(uuidlib.UUID(bytes=c.fileuuid)) if len(c.fileuuid) > 0 else ""
            meta = {"dataset": c.dataset, "filename": c.filename, "fileuuid": fileuuid,
                    "entrystart": c.entrystart, "entrystop": c.entrystop}
            n += self.filepath(meta).is_file()
        return n
