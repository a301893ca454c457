"""Integer columns stored narrower in the column cache, read back as the file's type.

Every case writes an entry batch by batch, as a chunk's sub-batches do, and reads it back
whole and by sub-ranges: values, dtype and form must equal the arrays written. The stored
type is checked against a brute-force choice (the first type of the kind, narrowest first,
whose bounds hold every value).
"""

from __future__ import annotations

import json
import zlib

import awkward as ak
import numpy as np
import pytest

from jettracks.io.column_cache import ChunkKey, ColumnCache, Narrowing

_KINDS = {"i": ["int8", "int16", "int32", "int64"], "u": ["uint8", "uint16", "uint32", "uint64"]}


def _brute_stored(values: np.ndarray) -> str | None:
    """The narrowest type of the kind holding every value, None when only the own type does."""
    for name in _KINDS[values.dtype.kind]:
        if np.dtype(name).itemsize >= values.dtype.itemsize:
            return None
        if all(np.iinfo(name).min <= int(v) <= np.iinfo(name).max for v in values.tolist()):
            return name
    return None


def _jagged(values: np.ndarray, counts: np.ndarray, offsets_dtype=np.int64) -> ak.Array:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(offsets_dtype)
    index = ak.index.Index64 if offsets_dtype == np.int64 else ak.index.Index32
    return ak.Array(ak.contents.ListOffsetArray(index(offsets), ak.contents.NumpyArray(values)))


def _write(cache: ColumnCache, key: ChunkKey, batches: list[ak.Array]) -> None:
    w = cache.writer(key, "b")
    lo = key.entrystart
    for b in batches:
        w.append(b, lo, lo + len(b))
        lo += len(b)
    w.commit()


def _record(cache: ColumnCache, key: ChunkKey) -> dict:
    return json.loads(cache.record_path(key, "b").read_text())


def _assert_reads(cache: ColumnCache, key: ChunkKey, whole: ak.Array, form=None) -> None:
    """Every range reads the written values, in the written batches' form (``form``:
    given when ``whole`` was joined by ``ak.concatenate``, which widens list offsets)."""
    col = cache.get(key, "b")
    assert col is not None
    n = len(whole)
    for a, b in [(0, n), (0, 0), (n, n), (1, n - 1), (n // 3, 2 * n // 3), (n // 2, n // 2 + 1)]:
        got = col.read(key.entrystart + a, key.entrystart + b)
        want = whole[a:b]
        assert got.layout.form == (form or want.layout.form), (a, b)
        assert ak.to_list(got) == ak.to_list(want), (a, b)


def _values(dtype: str, span: str, n: int, rng) -> np.ndarray:
    info = np.iinfo(dtype)
    lo, hi = {"tiny": (max(info.min, -1), 3), "mid": (max(info.min, -3000), 3000),
              "full": (info.min, info.max)}[span]
    out = rng.integers(lo, hi, n, dtype=dtype, endpoint=True)
    if n >= 2:
        out[:2] = lo, hi  # both bounds present
    return out


@pytest.mark.parametrize("dtype", ["int16", "int32", "int64", "uint16", "uint32", "uint64"])
@pytest.mark.parametrize("span", ["tiny", "mid", "full"])
@pytest.mark.parametrize("shape", ["flat", "jagged", "jagged32"])
def test_narrowed_entries_read_back_as_written(tmp_path, dtype, span, shape):
    rng = np.random.default_rng(zlib.crc32(f"{dtype}-{span}-{shape}".encode()))  # the same data every run
    cache = ColumnCache(tmp_path / "c")
    key = ChunkKey("u", "Events", 100, 160)
    batches = []
    for n_entries in (25, 20, 15):
        if shape == "flat":
            batches.append(ak.Array(_values(dtype, span, n_entries, rng)))
        else:
            counts = rng.integers(0, 6, n_entries)
            values = _values(dtype, span, int(counts.sum()), rng)
            batches.append(_jagged(values, counts, np.int64 if shape == "jagged" else np.int32))
    _write(cache, key, batches)
    whole = ak.concatenate(batches)
    _assert_reads(cache, key, whole, batches[0].layout.form)
    first = np.asarray(ak.flatten(batches[0], axis=None))
    stored = _brute_stored(first)
    all_values = np.asarray(ak.flatten(whole, axis=None))
    if stored is not None and not all(np.iinfo(stored).min <= v <= np.iinfo(stored).max for v in all_values.tolist()):
        stored = None  # a later batch did not fit: the entry was rewritten in the file's type
    record = _record(cache, key)
    assert (record.get("narrowed") or {}).get("stored") == stored
    if stored is not None:
        assert record["narrowed"]["dtype"] == dtype
    # Unwidened (a reader taking any integer width): the same values in the stored type.
    col, n = cache.get(key, "b"), len(whole)
    for a, b in [(0, n), (0, 0), (1, n - 1), (n // 3, 2 * n // 3)]:
        got = col.read(key.entrystart + a, key.entrystart + b, widen=False)
        assert np.asarray(ak.flatten(got, axis=None)).dtype == np.dtype(stored or dtype), (a, b)
        assert ak.to_list(got) == ak.to_list(whole[a:b]), (a, b)
        assert got.ndim == whole.ndim


def test_a_later_batch_that_does_not_fit_rewrites_the_entry_wide(tmp_path):
    cache = ColumnCache(tmp_path / "c")
    key = ChunkKey("u", "Events", 0, 9)
    small = _jagged(np.array([1, -1, 0, 2], dtype=np.int32), np.array([2, 0, 2]))
    big = _jagged(np.array([1, 40_000, -7], dtype=np.int32), np.array([1, 1, 1]))
    _write(cache, key, [small, small, big])
    assert "narrowed" not in _record(cache, key)
    _assert_reads(cache, key, ak.concatenate([small, small, big]), small.layout.form)
    assert not list((tmp_path / "c").rglob("*tmp*"))


def test_narrowing_saves_the_bytes_it_claims(tmp_path):
    values = np.random.default_rng(3).integers(-1, 2, 100_000).astype(np.int32)
    sizes = {}
    for narrow in (True, False):
        cache = ColumnCache(tmp_path / f"c{narrow}", narrow=narrow)
        key = ChunkKey("u", "Events", 0, 1000)
        _write(cache, key, [_jagged(values, np.full(1000, 100))])
        sizes[narrow] = cache.column_path(key, "b").stat().st_size
        _assert_reads(cache, key, _jagged(values, np.full(1000, 100)))
    # 1 byte a value instead of 4 (offsets and the file's framing alike in both)
    assert sizes[False] - sizes[True] >= 3 * len(values) * 0.99


@pytest.mark.parametrize(("array", "narrowed"), [
    (ak.Array(np.arange(10, dtype=np.float32)), False),
    (ak.Array(np.arange(10, dtype=np.int8)), False),  # already one byte
    (ak.Array([True, False] * 5), False),
    (ak.Array([1, None, 3, 4, 5, 6, 7, 8, 9, 10]), False),
    (ak.Array([[1, 2], [], [3]] * 3 + [[4]]), True),  # an int64 list: narrowed (the control)
    (ak.Array([{"x": 1}] * 10), False),
    (ak.with_parameter(ak.Array(np.arange(10, dtype=np.int32)), "__doc__", "kept"), False),
    (ak.Array([[1, 2], [], [3]] * 3 + [[4]])[::-1], False),  # a ListArray (starts/stops), not offsets
], ids=["float", "int8", "bool", "option", "jagged-int64", "record", "parameter", "list-array"])
def test_other_forms_are_stored_as_read(tmp_path, array, narrowed):
    cache = ColumnCache(tmp_path / "c")
    key = ChunkKey("u", "Events", 0, len(array))
    _write(cache, key, [array])
    assert ("narrowed" in _record(cache, key)) == narrowed
    got = cache.get(key, "b").read(0, len(array))
    assert ak.to_list(got) == ak.to_list(array)
    assert got.type == array.type


@pytest.mark.parametrize("bad", [
    {"dtype": "int32", "stored": "int32", "offsets": None},  # not narrower
    {"dtype": "int32", "stored": "uint8", "offsets": None},  # another kind
    {"dtype": "float32", "stored": "int8", "offsets": None},
    {"dtype": "int32", "stored": "int8", "offsets": "i16"},
    {"dtype": "int32", "stored": "int8"},  # a key missing
    {"dtype": "int32", "stored": "int8", "offsets": None, "extra": 1},
])
def test_a_damaged_narrowing_record_discards_the_entry(tmp_path, bad):
    cache = ColumnCache(tmp_path / "c")
    key = ChunkKey("u", "Events", 0, 10)
    _write(cache, key, [ak.Array(np.arange(10, dtype=np.int32))])
    record = _record(cache, key)
    assert record["narrowed"] == {"dtype": "int32", "stored": "int8", "offsets": None}
    record["narrowed"] = bad
    cache.record_path(key, "b").write_text(json.dumps(record))
    assert cache.get(key, "b") is None
    assert not cache.column_path(key, "b").exists() and not cache.record_path(key, "b").exists()


@pytest.mark.parametrize("edit", ["no_narrowing", "no_narrowed_checksum"])
def test_a_narrowed_entry_is_never_read_as_the_stored_type(tmp_path, edit):
    """A narrowed entry's record names its checksum ``xxh3_64_narrowed``: a reader that does
    not know narrowing (an older jettracks: it reads ``xxh3_64``) finds no checksum and
    discards the entry instead of serving int8 for int32. A record with only one of the
    two keys is damage."""
    cache = ColumnCache(tmp_path / "c")
    key = ChunkKey("u", "Events", 0, 10)
    _write(cache, key, [ak.Array(np.arange(10, dtype=np.int32))])
    record = _record(cache, key)
    assert "xxh3_64" not in record and "xxh3_64_narrowed" in record
    if edit == "no_narrowing":
        del record["narrowed"]
    else:
        del record["xxh3_64_narrowed"]
    cache.record_path(key, "b").write_text(json.dumps(record))
    assert cache.get(key, "b") is None and not cache.column_path(key, "b").exists()


def test_wide_entries_keep_the_plain_checksum_key(tmp_path):
    cache = ColumnCache(tmp_path / "c")
    key = ChunkKey("u", "Events", 0, 10)
    _write(cache, key, [ak.Array(np.arange(10, dtype=np.float32))])
    record = _record(cache, key)
    assert "xxh3_64" in record and "narrowed" not in record and "xxh3_64_narrowed" not in record
