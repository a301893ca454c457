"""The configured processor: import ``processor.class`` and build it with its options."""

from __future__ import annotations

import importlib
from pathlib import Path

from .config import ConfigError, RunConfig

__all__ = ["load_processor"]


def load_processor(cfg: RunConfig, ml_dir: Path | None):
    """An instance of ``processor.class`` with ``processor.options`` (and the ML options
    ``ml_dir``, ``ml_pad_tracks``, ``ml_sort_key`` where the class takes them).

    Raises:
        ConfigError: the class cannot be imported, or rejects its options.
    """
    module_name, _, class_name = cfg.processor.class_.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"processor.class: cannot import {cfg.processor.class_!r}: {err}") from None
    options = dict(cfg.processor.options)
    accepted = _accepted_options(cls)
    if ml_dir is not None and "ml_dir" in accepted:
        options.setdefault("ml_dir", str(ml_dir))
        ml = cfg.output.ml_dataset
        if ml.pad_tracks and "ml_pad_tracks" in accepted:
            options.setdefault("ml_pad_tracks", ml.pad_tracks)
            options.setdefault("ml_sort_key", ml.sort_key)
    try:
        return cls(**options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"processor.options: {err}") from None


def _accepted_options(cls) -> set[str]:
    """Keyword options a processor class takes (``{"*"}`` plus names when it takes ``**kw``)."""
    import inspect

    params = inspect.signature(cls).parameters
    names = set(params)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        names |= {"ml_dir", "ml_pad_tracks", "ml_sort_key"}
    return names
