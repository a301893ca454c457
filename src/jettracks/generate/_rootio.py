"""Small helpers for writing real-looking TTrees with uproot 5.7.

* :func:`make_tree` creates a TTree with ``file.mktree`` (never the RNTuple that
  ``file[name] = ...`` writes in uproot 5.7), names the counters like CMS does
  (``nJet``, ``nPFCands``, ``nPF``, ``nGenJetPF``), and optionally sets the
  counters' type to ``uint32`` (NanoAOD books them ``/i``; uproot always makes
  ``int32`` counters) and the branches' titles (real files carry descriptions).
  Both tweaks edit the not-yet-filled branch metadata of uproot's writer and
  rewrite the TTree header; if uproot's internals ever change, the tree keeps
  uproot's defaults and a warning says so (the tests compare types with the
  real files, so that would be seen).
* uproot names a branch's leaf like the branch: a branch whose leaf has another
  name (the JetNtuple's ``PF_mass`` with leaf ``cPF_mass``) cannot be written.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import awkward as ak
import numpy as np
import uproot

COMPRESSIONS = ("lzma", "zlib", "lz4", "zstd", "none")


def compression(name: str | None, level: int | None):
    """uproot compression object from a name and level (``None`` level: a default)."""
    if name is None or str(name).lower() == "none":
        return None
    key = str(name).lower()
    table = {
        "lzma": (uproot.LZMA, 9),
        "zlib": (uproot.ZLIB, 1),
        "lz4": (uproot.LZ4, 1),
        "zstd": (uproot.ZSTD, 5),
    }
    if key not in table:
        raise ValueError(f"compression {name!r} is not one of {COMPRESSIONS}")
    cls, default = table[key]
    lvl = default if level is None else int(level)
    top = 22 if key == "zstd" else 9
    if not 1 <= lvl <= top:
        raise ValueError(f"compression_level {level!r} must be in 1..{top} for {key}")
    return cls(lvl)


def counter_name(counted: str) -> str:
    """``Jet`` → ``nJet``, ``PF`` → ``nPF``, ``genJetPF`` → ``nGenJetPF``."""
    return "n" + counted[:1].upper() + counted[1:]


def jagged(counts: np.ndarray, fields: Mapping[str, np.ndarray]) -> ak.Array:
    """Record array ``var * {field: ...}`` from flat arrays and per-entry counts."""
    flat = ak.zip({k: np.asarray(v) for k, v in fields.items()}, depth_limit=1)
    return ak.unflatten(flat, np.asarray(counts, dtype=np.int64))


def branch_types(data: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, ak.Array):
            out[key] = value.type
        else:
            out[key] = np.asarray(value).dtype
    return out


def make_tree(
    file,
    name: str,
    types: Mapping[str, Any],
    *,
    title: str = "",
    titles: Mapping[str, str] | None = None,
    counter_dtype: str | np.dtype | None = None,
):
    """``file.mktree`` with CMS counter names, optional counter dtype and titles."""
    tree = file.mktree(name, dict(types), title=title, counter_name=counter_name)
    titles = dict(titles or {})
    if not titles and counter_dtype is None:
        return tree
    try:
        cascading = tree._cascading
        data = cascading._branch_data
        changed = False
        for datum in data:
            kind = datum.get("kind")
            if kind == "record":
                continue
            if kind == "counter" and counter_dtype is not None:
                datum["dtype"] = np.dtype(counter_dtype).newbyteorder(">")
                letter = uproot.writing._cascadetree._dtype_to_char[datum["dtype"]]
                datum["fTitle"] = f"{datum['fName']}/{letter}"
                changed = True
            if datum["fName"] in titles:
                datum["fTitle"] = titles[datum["fName"]]
                changed = True
        if changed:
            cascading.write_anew(file.file.sink)
    except Exception as err:  # pragma: no cover - depends on uproot internals
        warnings.warn(
            f"could not set counter types/titles of {name!r} ({err!r}); "
            "the tree keeps uproot's int32 counters and leaflist titles",
            RuntimeWarning,
            stacklevel=2,
        )
    return tree


def slice_data(data: Mapping[str, Any], start: int, stop: int) -> dict[str, Any]:
    return {k: v[start:stop] for k, v in data.items()}


def reduce_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 values to ``bits`` mantissa bits (NanoAOD's reduced precision).

    Same as CMSSW ``MiniFloatConverter::reduceMantissaToNbitsRounding``: round
    to nearest, keep inf/nan. Small integers and -1 fills stay exact.
    """
    a = np.ascontiguousarray(x, dtype=np.float32).copy()
    if bits >= 23:
        return a
    i = a.view(np.uint32)
    shift = 23 - bits
    mask = np.uint32((0xFFFFFFFF >> shift) << shift)
    half = np.uint32(1 << (shift - 1))
    finite = (i & np.uint32(0x7F800000)) != np.uint32(0x7F800000)
    rounded = (i + half) & mask
    i[...] = np.where(finite, rounded, i)
    return a
