"""The process-wide decompression switches uproot reads with: one place for all of them.

uproot picks its decompressors itself (``uproot.compression``): ZLIB with the standard
library's zlib, LZMA with ``cramjam.xz`` (which bundles liblzma 5.2). Both can be swapped
for faster decoders of the same formats. The decoded bytes are identical (the same
zlib / xz streams, decoded by another build of the same algorithm; the tests compare
every branch bit for bit), so a switch changes the speed only, never a result.

- :func:`use_isal_zlib`: ZLIB baskets (the JetNtuple's, ZLIB-1) inflated by ISA-L, ~1.5x zlib.
- :func:`use_fast_lzma`: LZMA baskets (PFNano's, LZMA-9) decoded by ``imagecodecs``
  (liblzma 5.8), ~1.4x cramjam.
- :func:`active_codecs`: which decoder each codec uses in this process, for reports.

Both switches run when :mod:`jettracks.readers` is imported (every Dask worker imports
the readers to read a chunk), and again, idempotently, through :func:`use_fast_codecs`
whenever the engines open a file. ``JETTRACKS_LZMA`` chooses the LZMA decoder:
``imagecodecs`` (default), ``stdlib`` (the standard library's ``lzma``: the system's
liblzma, 5.4 on Debian 12, ~5% faster than cramjam; also the fallback without
imagecodecs) or ``cramjam`` (uproot's own choice).
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

__all__ = ["active_codecs", "use_fast_codecs", "use_fast_lzma", "use_isal_zlib"]


def use_isal_zlib() -> bool:
    """Have uproot inflate ZLIB baskets (the JetNtuple's codec, record 12100's ZLIB-1) with
    ISA-L (``isal``, a project dependency) instead of the standard library's zlib: the same
    bytes, ~1.5x faster (44 MB of the benchmark's ``PF_*`` baskets: 0.20 -> 0.13 s), and
    decompression is about half of reading a JetNtuple. Process-wide, done when
    :mod:`jettracks.readers` is imported (every worker imports it). uproot's documented switch,
    ``uproot.ZLIB.library``, does not reach the decompressor it reads with (an instance of
    the base class ``_DecompressZLIB``), so the base class's attribute is set. False (zlib
    kept) without ``isal`` or when uproot's internals differ."""
    try:
        import isal.isal_zlib  # noqa: F401
        from uproot import compression
    except ImportError:
        return False
    codec = getattr(compression, "_DecompressZLIB", None)
    if codec is None or getattr(codec, "library", None) not in ("zlib", "isal"):
        return False
    codec.library = "isal"
    return True


# ----------------------------------------------------------------------------------- LZMA

_LZMA_PARAMETERS = ["self", "data", "uncompressed_bytes"]


def _imagecodecs_lzma_decompress(self: Any, data: Any, uncompressed_bytes: int | None = None) -> bytes:
    """uproot's ``_DecompressLZMA.decompress`` done by ``imagecodecs.lzma_decode``.

    ``data`` is one xz frame of a basket (uproot splits a basket into ROOT's <= 16 MiB blocks
    and calls this once a block): a contiguous ``numpy.uint8`` slice of the file's chunk, or
    bytes. It is passed as it is (imagecodecs reads any contiguous buffer: no copy).
    Returns ``bytes`` (uproot takes ``len`` and ``numpy.frombuffer`` of it, as of cramjam's
    buffer). ``uncompressed_bytes`` (the block header's size; uproot always passes it, a
    direct ``uproot.LZMA(...).decompress(data)`` does not: the standard library's ``lzma``
    decodes those, as uproot without cramjam would) bounds the output buffer, one
    byte larger: liblzma then runs to the end of the stream (verifying its check), and a
    stream longer than the header says comes back one byte too long. imagecodecs returns
    what it decoded without an error when the input ends early or the buffer is full, so
    a result of another size than the header's raises here (cramjam raises for the
    first, uproot for the second).
    """
    import imagecodecs

    if uncompressed_bytes is None:  # size unknown: the standard library, which checks the stream's end
        import lzma

        try:
            return lzma.decompress(data)
        except lzma.LZMAError as err:
            raise _lzma_error_type()(f"LZMA basket block not decodable ({err})") from None
    try:
        out = imagecodecs.lzma_decode(data, out=uncompressed_bytes + 1)
    except imagecodecs.LzmaError as err:
        message = f"LZMA basket block not decodable ({err}): corrupt or truncated data"
    else:
        if len(out) == uncompressed_bytes:
            return out
        message = (
            f"LZMA basket block decoded to {'more than ' if len(out) > uncompressed_bytes else ''}"
            f"{min(len(out), uncompressed_bytes)} bytes, the block header says {uncompressed_bytes}: "
            "corrupt or truncated data"
        )
    path = _file_of_caller()
    if path:
        message += f"\nin file {path}"
    # Raised outside the handler, as the type uproot's own path raises for a damaged
    # basket (cramjam's), so a bad file fails (and is skipped) the same way with either.
    raise _lzma_error_type()(message)


def _stdlib_lzma_decompress(self: Any, data: Any, uncompressed_bytes: int | None = None) -> bytes:
    """uproot's ``_DecompressLZMA.decompress`` done by the standard library's ``lzma`` (the
    fallback without imagecodecs, or ``JETTRACKS_LZMA=stdlib``): the same bytes."""
    import lzma

    try:
        return lzma.decompress(data)
    except lzma.LZMAError as err:
        message = f"LZMA basket block not decodable ({err}): corrupt or truncated data"
    path = _file_of_caller()
    if path:
        message += f"\nin file {path}"
    raise _lzma_error_type()(message)


def _file_of_caller() -> str | None:
    """The file uproot was decompressing from (error path only): ``uproot.compression.decompress``,
    our caller, holds the file's ``chunk``; the decoder itself is only given bytes."""
    try:
        frame = sys._getframe(2)
        if frame.f_globals.get("__name__") != "uproot.compression":
            return None
        chunk = frame.f_locals.get("chunk")
        return getattr(getattr(chunk, "source", None), "file_path", None)
    except Exception:  # noqa: BLE001 - only decorates the message
        return None


def _lzma_error_type() -> type[Exception]:
    try:
        import cramjam

        return cramjam.DecompressionError
    except (ImportError, AttributeError):  # pragma: no cover - cramjam is an uproot dependency
        return ValueError


def use_fast_lzma() -> bool:
    """Have uproot decode LZMA baskets (PFNano's codec, LZMA-9) with ``imagecodecs``
    (``imagecodecs.lzma_decode``, a project dependency; its wheel bundles liblzma 5.8)
    instead of cramjam (liblzma 5.2). liblzma >= 5.6 has a rewritten decoder: on the
    benchmark's realistic PFNano baskets (3,906 baskets, 38.7 MB compressed) decoding
    took 1.59 s against cramjam's 2.23 s, and ``tree.arrays`` of the 12 minimal
    branches 1.96 s against 2.74 s of CPU (re-measured in fresh processes: 2.10 s against
    3.00 s, and 2.84 s with the standard library's liblzma 5.4); LZMA decoding is most of
    reading a PFNano chunk.
    The decoded bytes are identical (the same xz streams; tests compare every branch of
    the real and generated LZMA files bit for bit).

    Process-wide (uproot's class ``_DecompressLZMA``), idempotent. Without imagecodecs
    (or its LZMA codec), or with ``JETTRACKS_LZMA=stdlib``, the standard library's
    ``lzma`` decodes instead; ``JETTRACKS_LZMA=cramjam`` leaves uproot's choice. A
    damaged basket raises ``cramjam.DecompressionError`` naming the file (uproot's own
    path raises that type, without the file).

    Returns True when imagecodecs now decodes; False otherwise (the standard library, or
    uproot unchanged: also when uproot's internals differ, no
    ``_DecompressLZMA.decompress(self, data, uncompressed_bytes=None)``).
    """
    choice = os.environ.get("JETTRACKS_LZMA", "").lower()
    if choice == "cramjam":
        return False
    try:
        from uproot import compression
    except ImportError:  # pragma: no cover - uproot is a dependency
        return False
    target = getattr(compression, "_DecompressLZMA", None)
    current = getattr(target, "decompress", None)
    if current is None:
        return False
    if current is _imagecodecs_lzma_decompress and choice != "stdlib":
        return True
    if current not in (_imagecodecs_lzma_decompress, _stdlib_lzma_decompress):
        try:
            parameters = list(inspect.signature(current).parameters)
        except (TypeError, ValueError):
            return False
        if parameters != _LZMA_PARAMETERS:
            return False
    fast = choice != "stdlib" and _imagecodecs_lzma_available()
    target.decompress = _imagecodecs_lzma_decompress if fast else _stdlib_lzma_decompress
    return fast


def _imagecodecs_lzma_available() -> bool:
    try:
        import imagecodecs
    except ImportError:
        return False
    return bool(getattr(getattr(imagecodecs, "LZMA", None), "available", False))


def use_fast_codecs() -> None:
    """Both switches (:func:`use_isal_zlib`, :func:`use_fast_lzma`); idempotent and cheap
    (the engines call it whenever they open a file, so any worker process has them)."""
    use_isal_zlib()
    use_fast_lzma()


# --------------------------------------------------------------------------------- report


def active_codecs() -> dict[str, str]:
    """Which decoder uproot uses for each codec in this process, e.g.
    ``{"LZMA": "imagecodecs 2026.3.6 (liblzma 5.8.2)", "ZLIB": "isal 1.7.2"}``."""
    out: dict[str, str] = {}
    try:
        from uproot import compression
    except ImportError:  # pragma: no cover - uproot is a dependency
        return out
    lzma_decode = getattr(getattr(compression, "_DecompressLZMA", None), "decompress", None)
    if lzma_decode is _imagecodecs_lzma_decompress:
        import imagecodecs

        out["LZMA"] = f"imagecodecs {imagecodecs.__version__} ({imagecodecs.lzma_version()})"
    elif lzma_decode is not None and getattr(lzma_decode, "__module__", "") == "uproot.compression":
        cramjam = getattr(compression, "cramjam", None)
        if getattr(cramjam, "xz", None) is not None or getattr(getattr(cramjam, "experimental", None), "lzma", None):
            out["LZMA"] = f"cramjam {_version('cramjam')}"
        else:
            out["LZMA"] = "lzma (standard library)"
    elif lzma_decode is _stdlib_lzma_decompress:
        out["LZMA"] = f"lzma (standard library, liblzma {_liblzma_version()})"
    elif lzma_decode is not None:
        out["LZMA"] = f"{getattr(lzma_decode, '__module__', '?')}.{getattr(lzma_decode, '__qualname__', '?')}"
    library = getattr(getattr(compression, "_DecompressZLIB", None), "library", None)
    if library == "isal":
        out["ZLIB"] = f"isal {_version('isal')}"
    elif library == "zlib":
        import zlib

        out["ZLIB"] = f"zlib {zlib.ZLIB_RUNTIME_VERSION}"
    elif library is not None:
        out["ZLIB"] = str(library)
    return out


def _liblzma_version() -> str:
    """The version of the liblzma the standard library's ``lzma`` is linked to (ctypes)."""
    try:
        import _lzma
        import ctypes

        lib = ctypes.CDLL(_lzma.__file__)
        lib.lzma_version_string.restype = ctypes.c_char_p
        return lib.lzma_version_string().decode()
    except Exception:  # noqa: BLE001 - only for reports
        return "?"


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"
