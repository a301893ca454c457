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
* :func:`write_tree` fills a tree with ROOT's basket layout: every branch gets
  its own baskets of about ``basket_bytes`` uncompressed bytes (ROOT's default
  ``TBranch`` buffer is 32,000 bytes), so a branch of ~1,900 floats an event
  (``PFCands_pt``) holds ~4 events a basket while ``run`` holds ~8,000.
  uproot's own ``extend`` writes one basket per branch per call, with the same
  entry boundaries for all branches: one call gives one giant basket (every
  chunk then decompresses the whole file), many calls give tiny baskets to
  light branches (measured: ~30 µs of reading overhead a basket).
* :class:`CappedLZMA`: LZMA at a given preset with the dictionary capped near the
  basket's size. For a basket smaller than the dictionary, matches are found
  the same way (measured: 13,044 vs 13,048 bytes for a 24 kB basket at level 9)
  while level 9's 64 MiB dictionary costs ~45 ms to set up per basket (17x the
  compression itself). Readers decompress it like any LZMA basket.
* uproot names a branch's leaf like the branch: a branch whose leaf has another
  name (the JetNtuple's ``PF_mass`` with leaf ``cPF_mass``) cannot be written.
"""

from __future__ import annotations

import lzma
import warnings
from collections.abc import Mapping
from typing import Any

import awkward as ak
import numpy as np
import uproot

COMPRESSIONS = ("lzma", "zlib", "lz4", "zstd", "none")

#: ROOT's default ``TBranch`` buffer size (bytes): a basket is written when full.
ROOT_BASKET_BYTES = 32_000


class CappedLZMA(uproot.LZMA):
    """uproot's LZMA with the dictionary capped at the next power of two >= the data.

    Same algorithm, preset and container (xz) as ``uproot.LZMA(level)``; only the
    dictionary, which a basket smaller than it never fills, is smaller.
    """

    @property
    def code_pair(self):
        return uproot.LZMA(self._level).code_pair

    def compress(self, data: bytes) -> bytes:
        dict_size = max(1 << 12, 1 << max(len(data) - 1, 1).bit_length())
        filters = [{"id": lzma.FILTER_LZMA2, "preset": self._level, "dict_size": dict_size}]
        return lzma.compress(data, format=lzma.FORMAT_XZ, filters=filters)


def compression(name: str | None, level: int | None):
    """uproot compression object from a name and level (``None`` level: a default)."""
    if name is None or str(name).lower() == "none":
        return None
    key = str(name).lower()
    table = {
        "lzma": (CappedLZMA, 9),
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
    basket_capacity: int = 10,
):
    """``file.mktree`` with CMS counter names, optional counter dtype and titles.

    ``basket_capacity``: baskets a branch can hold before uproot relocates the tree
    (a relocation after the header rewrite below fails in uproot 5.7: give enough).
    """
    tree = file.mktree(
        name, dict(types), title=title, counter_name=counter_name,
        initial_basket_capacity=max(int(basket_capacity), 10),
    )
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


def _flat_branches(cascading, data: Mapping[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Branch name -> (flat values, entry offsets or None), counters included."""
    out: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for name, value in data.items():
        if isinstance(value, ak.Array) and value.ndim > 1:
            n_per_entry = ak.to_numpy(ak.num(value, axis=1)).astype(np.int64)
            offsets = np.zeros(len(n_per_entry) + 1, dtype=np.int64)
            np.cumsum(n_per_entry, out=offsets[1:])
            out[cascading._counter_name(name)] = (n_per_entry, None)
            if value.fields:
                for key in value.fields:
                    flat = ak.to_numpy(ak.flatten(value[key], axis=1))
                    out[cascading._field_name(name, key)] = (flat, offsets)
            else:
                out[name] = (ak.to_numpy(ak.flatten(value, axis=1)), offsets)
        else:
            out[name] = (np.asarray(value), None)
    return out


def _basket_bounds(entry_bytes: np.ndarray, basket_bytes: int) -> np.ndarray:
    """Entry boundaries [0, ..., n]: a basket closes once it holds >= ``basket_bytes``."""
    n = len(entry_bytes)
    cumulative = np.cumsum(entry_bytes, dtype=np.int64)
    bounds = [0]
    while bounds[-1] < n:
        start = bounds[-1]
        before = int(cumulative[start - 1]) if start else 0
        stop = int(np.searchsorted(cumulative, before + basket_bytes, side="left")) + 1
        bounds.append(min(max(stop, start + 1), n))
    return np.asarray(bounds, dtype=np.int64)


def basket_count(data: Mapping[str, Any], basket_bytes: int = ROOT_BASKET_BYTES) -> int:
    """The most baskets a branch of ``data`` gets from :func:`write_tree` (for ``make_tree``)."""
    most = 1
    for value in data.values():
        if isinstance(value, ak.Array) and value.ndim > 1:
            n_per_entry = ak.to_numpy(ak.num(value, axis=1)).astype(np.int64)
            leaves = [value[k] for k in value.fields] if value.fields else [value]
            itemsize = min(ak.to_numpy(ak.flatten(leaf[:1], axis=1)).dtype.itemsize for leaf in leaves)
            entry_bytes = n_per_entry * itemsize + 4
        else:
            entry_bytes = np.full(len(value), np.asarray(value[:1]).dtype.itemsize, dtype=np.int64)
        if len(entry_bytes):
            most = max(most, len(_basket_bounds(entry_bytes, basket_bytes)) - 1)
    return most + 1


def write_tree(tree, data: Mapping[str, Any], *, basket_bytes: int = ROOT_BASKET_BYTES) -> None:
    """Fill an empty tree from ``make_tree`` with ROOT's per-branch basket layout.

    Args:
        tree: the ``WritableTree`` from :func:`make_tree`, still empty; its
            ``basket_capacity`` must exceed :func:`basket_count` of ``data``.
        data: branch (or collection) name -> numpy array or jagged awkward array,
            all with the same number of entries, as ``tree.extend`` takes them.
        basket_bytes: uncompressed bytes after which a branch's basket is closed
            (ROOT's rule for its ``TBranch`` buffer), so each branch has its own
            entry boundaries: about ``basket_bytes / bytes an entry`` entries a basket.
    """
    if int(basket_bytes) < 1:
        raise ValueError(f"basket_bytes must be >= 1, got {basket_bytes!r}")
    cascading = tree._cascading
    sink = tree._file.sink
    if cascading._num_entries:
        raise ValueError("write_tree fills an empty tree only")
    branches = _flat_branches(cascading, data)
    lengths = {len(offsets) - 1 if offsets is not None else len(values) for values, offsets in branches.values()}
    if len(lengths) > 1:
        raise ValueError(f"branches have different numbers of entries: {sorted(lengths)}")
    n_entries = lengths.pop() if lengths else 0
    baskets_of: dict[int, list[dict]] = {}
    for datum in cascading._branch_data:
        if datum["kind"] == "record":
            continue
        name = datum["fName"]
        if name not in branches:
            raise ValueError(f"write_tree: no data for branch {name!r}")
        values, offsets = branches.pop(name)
        values = values.astype(datum["dtype"], copy=False)
        itemsize = values.dtype.itemsize
        if offsets is None:
            entry_bytes = np.full(n_entries, itemsize, dtype=np.int64)
        else:
            entry_bytes = np.diff(offsets) * itemsize + 4
        bounds = _basket_bounds(entry_bytes, int(basket_bytes)) if n_entries else np.zeros(1, np.int64)
        n_baskets = len(bounds) - 1
        if n_baskets >= cascading._basket_capacity:
            raise ValueError(
                f"branch {name!r} needs {n_baskets} baskets; make_tree(basket_capacity=...) "
                f"gave {cascading._basket_capacity}"
            )
        for i in range(n_baskets):
            start, stop = int(bounds[i]), int(bounds[i + 1])
            if offsets is None:
                part = values[start:stop]
                totbytes, zipbytes, location = cascading.write_np_basket(
                    sink, name, datum["compression"], part
                )
                if datum["kind"] == "counter" and part.size:
                    datum["tleaf_maximum_value"] = max(int(part.max()), datum["tleaf_maximum_value"])
            else:
                part = values[offsets[start] : offsets[stop]]
                part_offsets = (offsets[start : stop + 1] - offsets[start]).astype(">i4")
                totbytes, zipbytes, location = cascading.write_jagged_basket(
                    sink, name, datum["compression"], part, part_offsets
                )
                datum["fEntryOffsetLen"] = max(datum["fEntryOffsetLen"], 4 * (stop - start))
            datum["fTotBytes"] += totbytes
            datum["fZipBytes"] += zipbytes
            cascading._metadata["fTotBytes"] += totbytes
            cascading._metadata["fZipBytes"] += zipbytes
            datum["fBasketBytes"][i] = zipbytes
            datum["fBasketEntry"][i + 1] = stop
            datum["fBasketSeek"][i] = location
        datum["arrays_write_stop"] = n_baskets
        baskets_of.setdefault(n_baskets, []).append(datum)
    if branches:
        raise ValueError(f"write_tree: data for unknown branches {sorted(branches)}")
    # uproot writes one fWriteBasket for all branches: update each group of branches
    # with the same basket count separately (the offsets of each branch's fields are
    # per branch, so a partial list is safe).
    cascading._num_entries = n_entries
    all_data = cascading._branch_data
    try:
        for n_baskets, group in baskets_of.items():
            cascading._branch_data = group
            cascading._num_baskets = n_baskets
            cascading.write_updates(sink)
    finally:
        cascading._branch_data = all_data
        cascading._num_baskets = max(baskets_of, default=0)


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
