"""The pipeline's error type (each layer has one: ``ConfigError`` for configs,
``ReaderError`` for files, ``ClusterError`` for clusters, ``RunDirError`` for the
run directory, and :class:`RunError` for a run that cannot go on)."""

from __future__ import annotations

__all__ = ["RunError"]


class RunError(RuntimeError):
    """A run that cannot go on; the message is one line naming the file or key."""
