"""Format readers: a registry of one module per on-disk format.

Each reader turns its format into the common "jets with tracks" layout of
:mod:`jettracks.readers.base`. ``get("pfnano")`` returns a reader instance;
``detect(file)`` picks the format of a file from its trees and branches.
"""

from __future__ import annotations

from typing import Any

from .base import EventBatch, Reader, ReaderError
from .jetntuple import JetNtupleReader
from .pfnano import PFNanoReader

__all__ = ["EventBatch", "Reader", "ReaderError", "available", "detect", "get", "register", "reader_class"]

_REGISTRY: dict[str, type[Reader]] = {}


def register(cls: type[Reader]) -> type[Reader]:
    """Class decorator / call: add a reader class under its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


for _cls in (PFNanoReader, JetNtupleReader):
    register(_cls)


def available() -> tuple[str, ...]:
    """Registered format names."""
    return tuple(_REGISTRY)


def reader_class(name: str) -> type[Reader]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ReaderError(f"unknown format {name!r}; known: {', '.join(_REGISTRY)}") from None


def get(name: str, **options: Any) -> Reader:
    """A reader instance for format ``name`` with reader options."""
    return reader_class(name)(**options)


def detect(source: Any) -> str:
    """Detect the format of a file (path, URL or open uproot file); see :mod:`.detect`."""
    from .detect import detect_format

    return detect_format(source, _REGISTRY)
