"""Format readers: a registry of one module per on-disk format.

Each reader turns its format into the common "jets with tracks" layout of
:mod:`jettracks.readers.base`. ``get("pfnano")`` returns a reader instance;
``detect(file)`` picks the format of a file from its trees and branches and
``detect_tree(file)`` also says which tree it will read.

Registered formats, in detection order (most specific first):

``pfnano``
    NanoAOD ``Events`` + ``PFCands_*`` with ``d0``/``d0Err`` (PF candidates).
``jettrack_events``
    event-level jets + tracks ntuples (``evtTree``: ``Jet_*``, ``Trk_*``); names configurable.
``treemaker``
    TreeMaker ``PreSelection`` (``Jets`` LorentzVectors, ``Tracks`` with ``dxyPV0``).
``delphes``
    Delphes 3 output, tree ``Delphes`` (``Jet/Jet.PT``, ``Track/Track.D0`` in mm -> cm).
``jetntuple``
    CMS open data record 12100 ``AK4jets/jetTree``, one jet per entry, no dxy.
``nanoaod``
    standard NanoAOD ``Events`` + ``Jet_*``; tracks only ``IsoTrack_*`` (isolated tracks).
    Last: every PFNano file is also a NanoAOD file.
"""

from __future__ import annotations

from typing import Any

from . import detect as _detect_module  # noqa: F401  (loaded first: see below)
from .base import EventBatch, Reader, ReaderError
from .codecs import active_codecs, use_fast_codecs
from .delphes import DelphesReader
from .jetntuple import JetNtupleReader
from .jettrack_events import JetTrackEventsReader
from .nanoaod import NanoAODReader
from .pfnano import PFNanoReader
from .treemaker import TreeMakerReader

__all__ = [
    "EventBatch",
    "Reader",
    "ReaderError",
    "active_codecs",
    "available",
    "detect",
    "detect_details",
    "detect_tree",
    "get",
    "reader_class",
    "register",
]

# uproot's decompressors, process-wide (every worker imports the readers): ZLIB by ISA-L,
# LZMA by imagecodecs' liblzma 5.8; the same bytes, faster (see :mod:`.codecs`).
use_fast_codecs()

_REGISTRY: dict[str, type[Reader]] = {}


def register(cls: type[Reader]) -> type[Reader]:
    """Class decorator / call: add a reader class under its ``name``."""
    _REGISTRY[cls.name] = cls
    return cls


# Detection order: most specific first (pfnano before nanoaod: both have Events + Jet_*).
for _cls in (PFNanoReader, JetTrackEventsReader, TreeMakerReader, DelphesReader, JetNtupleReader, NanoAODReader):
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


# The submodule ``readers.detect`` is imported above, before this function is
# defined: importing a submodule sets the package attribute of the same name, so
# a first ``from .detect import ...`` inside a function would otherwise replace
# the function ``readers.detect`` by the module.
def detect(source: Any, **open_options: Any) -> str:
    """Detect the format of a file (path, URL or open uproot file); see :mod:`.detect`.

    Returns the format name (for the run to report which one it chose).

    Raises:
        ReaderError: unreadable file, or no format fits (one line naming the file).
    """
    from .detect import detect_format

    return detect_format(source, _REGISTRY, **open_options)


def detect_tree(source: Any, fmt: str = "auto", **open_options: Any) -> tuple[str, str]:
    """``(format, tree path)`` of a file: detected (``fmt="auto"``) or for the given format.

    The tree path matters where a format's tree can sit at several paths
    (TreeMaker: ``PreSelection`` or ``TreeMaker2/PreSelection``; ``jettrack_events``:
    ``evtTree`` or ``<dir>/evtTree``): read that tree, not the reader's default.
    """
    from .detect import detect_details

    found = detect_details(source, _REGISTRY, fmt=fmt, **open_options)
    return found.format, found.treename


def registry_tag() -> str:
    """A short hash of what detection depends on: the registered formats in order, each
    one's tree paths and required branches. A stored detection is valid only under the
    same tag (another jettracks version may detect another format)."""
    import hashlib

    parts = []
    for name, cls in _REGISTRY.items():
        try:
            required = sorted(cls().required_branches())
        except Exception:  # noqa: BLE001 - a reader that needs options: its class name stands in
            required = []
        trees = list(getattr(cls, "TREES", None) or (cls.treename,))
        parts.append([name, f"{cls.__module__}.{cls.__qualname__}", trees, required])
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def detect_details(source: Any, fmt: str = "auto", **open_options: Any):
    """:class:`~jettracks.readers.detect.Detection` of a file: format, tree, trees, and
    ``notes`` (near misses such as a PFNano file lacking a ``PFCands_*`` branch, which
    is therefore read as plain ``nanoaod``): worth printing as warnings."""
    from .detect import detect_details as _details

    return _details(source, _REGISTRY, fmt=fmt, **open_options)
