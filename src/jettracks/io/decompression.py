"""Faster LZMA decompression for uproot: the standard library's liblzma instead of cramjam.

uproot 5.7 decompresses LZMA baskets with ``cramjam.xz`` when cramjam is installed
(it always is). Measured here on 600 real-layout ``PFCands_pt`` baskets (~24 kB
each, LZMA level 9): cramjam 0.202 s, Python's ``lzma`` module (the system's
liblzma 5.4.1) 0.175 s: 13% less CPU on what is ~70% of a PFNano chunk. The bytes
are the same (both decode the same xz stream), so this only changes the speed.

:func:`use_stdlib_lzma` swaps uproot's LZMA decompressor in this process (idempotent;
every chunk reader calls it, so Dask workers get it too). ``JETTRACKS_LZMA=cramjam``
keeps uproot's choice.
"""

from __future__ import annotations

import lzma
import os

__all__ = ["use_stdlib_lzma"]

_done = False


def _decompress(self, data: bytes, uncompressed_bytes=None) -> bytes:
    try:
        return lzma.decompress(data)
    except lzma.LZMAError as err:
        message = f"LZMA: {err}"
    # Raised outside the handler (no chained cause): the error type uproot's own path
    # raises for a damaged basket (cramjam's), so a bad file reads the same either way.
    raise _error_type()(message)


def _error_type() -> type[Exception]:
    try:
        import cramjam

        return cramjam.DecompressionError
    except (ImportError, AttributeError):  # pragma: no cover - cramjam is an uproot dependency
        return lzma.LZMAError


def use_stdlib_lzma() -> bool:
    """Make uproot decompress LZMA with the standard library; True when it now does."""
    global _done
    if _done:
        return True
    if os.environ.get("JETTRACKS_LZMA", "").lower() == "cramjam":
        return False
    import uproot.compression as compression

    target = getattr(compression, "_DecompressLZMA", None)
    if target is None or not hasattr(target, "decompress"):  # pragma: no cover - uproot changed
        return False
    target.decompress = _decompress
    _done = True
    return True
