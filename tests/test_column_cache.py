"""The column cache: reruns read stored columns, never stale or damaged ones.

Every result with the cache is compared with the same run without it (histograms,
cut flow, entries, notices, ML rows: ``assert_same_output``), over the fault
suite of the engine parity tests, both engines.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from jettracks.engines import ENGINES, get_engine
from jettracks.io.checkpoints import RunCheckpointer
from jettracks.io import mldata
from jettracks.io.column_cache import MARKER, CacheError, ChunkKey, ColumnCache
from jettracks_testing import samples
from processors.jet_tracks import JetTrackProcessor
from test_engine_parity import CHUNKSIZE, FAULTS, PFNANO, _meta_of, assert_same_output, make_input

pytestmark = pytest.mark.skipif(PFNANO is None, reason="the real CMS files are absent")


def _run(engine, fileset, meta, tmp: Path, *, cache: Path | None, cone_dr=0.5, client=None):
    proc = JetTrackProcessor(ml_dir=str(tmp / "ml"), cone_dr=cone_dr)
    reading = {"cache_dir": str(cache)} if cache is not None else {}
    return get_engine(engine).run(
        fileset, meta, proc, client=client, chunksize=CHUNKSIZE, retries=1,
        checkpointer=RunCheckpointer(tmp / "checkpoints"), progress=False, xrootd_timeout=30,
        reading=reading,
    )


# Every fault on the runner engine; the dask-awkward engine (the same run_chunk, so the
# same reading) on a clean input and a damaged one.
_CASES = [("runner", f) for f in FAULTS] + [
    (e, f) for e in sorted(ENGINES) if e != "runner" for f in ("none", "truncated")
]


@pytest.mark.parametrize(("engine", "fault"), _CASES)
def test_cached_runs_equal_uncached_per_fault(engine, fault, tmp_path, local_client):
    fileset, meta, _ = make_input(fault, tmp_path / "input")
    cache = tmp_path / "cache"
    want = _run(engine, fileset, meta, tmp_path / "plain", cache=None, client=local_client)
    first = _run(engine, fileset, meta, tmp_path / "first", cache=cache, client=local_client)
    again = _run(engine, fileset, meta, tmp_path / "again", cache=cache, client=local_client)
    for got in (first, again):
        assert_same_output(got, want)
        assert [(r.spec.key, r.status, r.error_type) for r in got.records] == [
            (r.spec.key, r.status, r.error_type) for r in want.records
        ]
    # Failed chunks leave nothing behind: every stored column covers its whole chunk.
    cc = ColumnCache(cache)
    ok_chunks = {(r.spec.fileuuid, r.spec.entrystart, r.spec.entrystop) for r in want.records if r.status == "ok"}
    for record in cache.glob("*/*/*/*.json"):
        data = json.loads(record.read_text())
        start, stop = (int(x) for x in record.parent.name.split("-"))
        covered = [tuple(b) for b in data["batches"]]
        assert covered[0][0] == start and covered[-1][1] == stop
        assert (record.parent.parent.parent.name, start, stop) in ok_chunks
    assert cc.info().columns > 0


def test_rerun_with_other_cut_reads_no_root_file(tmp_path, file_opens):
    fileset, meta, _ = make_input("none", tmp_path / "input")
    cache = tmp_path / "cache"
    _run("runner", fileset, meta, tmp_path / "first", cache=cache)
    assert len(file_opens) > 0
    file_opens.clear()
    got = _run("runner", fileset, meta, tmp_path / "rerun", cache=cache, cone_dr=0.3)
    assert file_opens == []  # every column came from the cache
    want = _run("runner", fileset, meta, tmp_path / "plain", cache=None, cone_dr=0.3)
    assert_same_output(got, want)
    assert got.output["cutflow"] != _run("runner", fileset, meta, tmp_path / "x", cache=cache).output["cutflow"]


@pytest.mark.parametrize("source", ["real", "generated"])
def test_declared_integer_columns_come_unwidened_from_the_cache(tmp_path, source):
    """A processor declaring PFNano's integer flags at any width gets them in the cache's
    narrow type on a rerun (without widening them) and in the file's type from the file; one
    declaring nothing gets the file's type from the cache too. The ML rows are equal across
    all three, types included (the reader gives int32 on gathering). ``generated``: a sample
    with every ML track detail (``PFCands_trkQuality``...), which the real file lacks."""
    if source == "real":
        fileset, meta, _ = make_input("none", tmp_path / "input")
    else:
        path = samples.generated_pfnano(tmp_path / "input", n_files=1, events_per_file=300, seed=5)[0]
        fileset = {"g": {"files": [path], "treename": "Events", "metadata": {"format": "pfnano", "is_mc": True}}}
        meta = {("g", path): _meta_of(Path(path))}
    cache = tmp_path / "cache"

    def run(tag, declare, use_cache):
        log = tmp_path / f"{tag}.log"  # the engine may pickle the processor: a file, not a closure
        proc = _DtypeSpy(ml_dir=str(tmp_path / tag / "ml"))
        proc.declare, proc.log = declare, str(log)
        out = get_engine("runner").run(
            fileset, meta, proc, chunksize=CHUNKSIZE, retries=1, checkpointer=RunCheckpointer(tmp_path / tag / "ck"),
            progress=False, reading={"cache_dir": str(cache)} if use_cache else {})
        seen: dict[str, set] = {}
        for line in log.read_text().split():
            branch, dtype = line.split("=")
            seen.setdefault(branch, set()).add(dtype)
        return out, seen

    want, from_file = run("plain", True, False)
    flags = ["PFCands_charge"] + (["PFCands_trkQuality", "PFCands_lostInnerHits"] if source == "generated" else [])
    assert from_file == {"PFCands_pt": {"float32"}, **{b: {"int32"} for b in flags}}
    run("fill", True, True)
    narrow, from_cache = run("narrow", True, True)
    assert from_cache == {"PFCands_pt": {"float32"}, **{b: {"int8"} for b in flags}}
    wide, widened = run("wide", False, True)
    assert widened == from_file
    for got in (narrow, wide):
        assert_same_output(got, want)
    if source == "generated":  # the gathered flags are int32 in the ML rows, from either
        rows = ak.concatenate([ak.from_arrow(mldata.read_part(p)) for p in narrow.output["ml_parts"]])
        for col in ("track_charge", "track_trk_quality", "track_lost_inner_hits"):
            assert np.asarray(ak.flatten(rows[col], axis=None)).dtype == np.int32, col


class _DtypeSpy(JetTrackProcessor):
    """Logs the dtypes of three branches as each batch arrives; ``declare``: whether it takes
    the reader's integer flags at any width."""

    declare, log = True, ""

    def columns_any_int_width(self, fmt):
        return super().columns_any_int_width(fmt) if self.declare else ()

    def process(self, events):
        with open(self.log, "a") as f:
            for b in ("PFCands_charge", "PFCands_trkQuality", "PFCands_lostInnerHits", "PFCands_pt"):
                if b in events.fields:
                    f.write(f"{b}={np.asarray(ak.flatten(events[b], axis=None)).dtype.name}\n")
        return super().process(events)


@pytest.mark.parametrize("damage", ["flip", "truncate", "record"])
def test_damaged_entry_is_discarded_and_recomputed(tmp_path, damage, file_opens):
    fileset, meta, _ = make_input("none", tmp_path / "input")
    cache = tmp_path / "cache"
    want = _run("runner", fileset, meta, tmp_path / "plain", cache=None)
    _run("runner", fileset, meta, tmp_path / "first", cache=cache)
    victim = sorted(cache.glob("*/*/*/PFCands_pt*.arrow"))[0]
    if damage == "flip":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF  # inside the data buffers: only the checksum sees it
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    else:
        victim.with_suffix(".json").write_text("{not json")
    file_opens.clear()
    got = _run("runner", fileset, meta, tmp_path / "again", cache=cache)
    assert_same_output(got, want)
    assert len(file_opens) == 1  # only the damaged chunk went back to its file
    # ... and its column was stored again, valid
    key_dir = victim.parent
    start, stop = (int(x) for x in key_dir.name.split("-"))
    uuid = key_dir.parent.parent.name
    assert ColumnCache(cache).get(ChunkKey(uuid, "Events", start, stop), "PFCands_pt") is not None


def test_changed_file_misses(tmp_path, file_opens):
    fileset, meta, _ = make_input("none", tmp_path / "input")
    cache = tmp_path / "cache"
    _run("runner", fileset, meta, tmp_path / "first", cache=cache)
    # The same path now holds other events (a new UUID): nothing of the old file may be served.
    path = Path(fileset["b"]["files"][0])
    other = samples.write_pfnano_like(tmp_path / "other.root", PFNANO, event_offset=1000)
    shutil.copy(other, path)
    meta2 = dict(meta)
    meta2[("b", str(path))] = _meta_of(path)
    file_opens.clear()
    got = _run("runner", fileset, meta2, tmp_path / "again", cache=cache)
    opened = len(file_opens)
    want = _run("runner", fileset, meta2, tmp_path / "plain", cache=None)
    assert_same_output(got, want)
    assert opened == len([r for r in got.records if r.spec.dataset == "b"])  # only the changed file


def _write_entry(cache: ColumnCache, key: ChunkKey, branch: str, values: np.ndarray) -> None:
    w = cache.writer(key, branch)
    w.append(ak.Array(values), key.entrystart, key.entrystop)
    w.commit()


def test_least_recently_used_entries_are_evicted(tmp_path):
    cache = ColumnCache(tmp_path / "c")
    keys = [ChunkKey("u", "Events", i * 100, (i + 1) * 100) for i in range(3)]
    for k in keys:
        _write_entry(cache, k, "x", np.arange(k.entrystart, k.entrystop, dtype=np.float64))
    sizes = {k: cache.column_path(k, "x").stat().st_size + cache.record_path(k, "x").stat().st_size for k in keys}
    for i, k in enumerate(keys):  # ages: keys[0] oldest ... keys[2] newest
        os.utime(cache.record_path(k, "x"), (1_000_000 + i, 1_000_000 + i))
    assert cache.get(keys[0], "x") is not None  # a hit refreshes keys[0]
    bounded = ColumnCache(tmp_path / "c", max_bytes=sizes[keys[0]] + sizes[keys[2]])
    bounded.evict()
    assert bounded.get(keys[1], "x") is None  # the least recently used went
    for k in (keys[0], keys[2]):
        got = bounded.get(k, "x")
        assert got is not None and np.array_equal(ak.to_numpy(got.read(k.entrystart, k.entrystop)),
                                                  np.arange(k.entrystart, k.entrystop))
    assert bounded.info().bytes <= bounded.max_bytes


@pytest.mark.parametrize("change", ["flip_in_place", "flip_mtime_kept", "truncate", "replace"])
def test_kept_map_never_serves_a_changed_entry(tmp_path, change):
    """A process keeps an entry's map between reads; the entry changed on disk afterwards is
    never served from it: damaged in place (even with its mtime put back), truncated (no
    SIGBUS: the size is checked before the map is touched), or replaced by another file."""
    from jettracks.io import column_cache as cc

    cache = ColumnCache(tmp_path / "c")
    key = ChunkKey("u", "Events", 0, 5000)
    values = np.arange(5000, dtype=np.float64)
    _write_entry(cache, key, "x", values)
    path = cache.column_path(key, "x")
    first = cache.get(key, "x")
    assert first is not None and np.array_equal(ak.to_numpy(first.read(0, 5000)), values)
    second = cache.get(key, "x")
    assert second is not None and second.mapped is first.mapped  # kept: mapped once
    st = path.stat()
    if change in ("flip_in_place", "flip_mtime_kept"):
        with open(path, "r+b") as fh:  # the same file (inode): a kept private map sees it (pages not written)
            fh.seek(st.st_size // 2)
            byte = fh.read(1)
            fh.seek(st.st_size // 2)
            fh.write(bytes([byte[0] ^ 0xFF]))
        if change == "flip_mtime_kept":
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    elif change == "truncate":
        os.truncate(path, st.st_size // 3)
    else:
        other = tmp_path / "other.arrow"
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        other.write_bytes(bytes(data))
        os.replace(other, path)
    assert cache.get(key, "x") is None  # discarded ...
    assert not path.exists() and str(path) not in cc._KEPT._maps  # ... and its map dropped
    _write_entry(cache, key, "x", values)  # recomputed, then served again
    again = cache.get(key, "x")
    assert again is not None and again.mapped is not first.mapped
    assert np.array_equal(ak.to_numpy(again.read(0, 5000)), values)


@pytest.mark.parametrize("change", ["replaced", "rewritten_in_place"])
def test_a_kept_record_is_read_again_when_its_file_changes(tmp_path, change):
    """Records are kept parsed between reads; a record replaced (a new file) or rewritten in
    place at another size is read again: here with a wrong checksum, so the entry is discarded."""
    import json

    from jettracks.io import column_cache as cc

    cache = ColumnCache(tmp_path / "c")
    key = ChunkKey("u", "Events", 0, 500)
    _write_entry(cache, key, "x", np.arange(500, dtype=np.float64))
    record = cache.record_path(key, "x")
    assert cache.get(key, "x") is not None and cache.get(key, "x") is not None
    assert str(record) in cc._RECORDS._records  # kept
    data = json.loads(record.read_text())
    data[next(k for k in data if k.startswith("xxh3"))] += 1
    text = json.dumps(data) + (" " * 7 if change == "rewritten_in_place" else "")
    if change == "replaced":
        (tmp_path / "new.json").write_text(text)
        os.replace(tmp_path / "new.json", record)
    else:
        with open(record, "w") as fh:
            fh.write(text)
    assert cache.get(key, "x") is None
    assert not record.exists() and str(record) not in cc._RECORDS._records


@pytest.mark.parametrize("array", [
    ak.Array(np.linspace(0.0, 1.0, 3000, dtype=np.float32)),
    ak.Array([[0.5, 1.5], [], [2.5]] * 1000),
    ak.Array(np.arange(-1500, 1500, dtype=np.int32) % 7),  # narrowed to int8, widened on read
    ak.Array([[1, 2], [], [3]] * 1000),  # a narrowed list: its offsets come from the map
], ids=["float32", "jagged-float64", "narrowed-int32", "narrowed-jagged-int64"])
def test_cached_arrays_are_writable_like_the_files_and_writes_stay_private(tmp_path, array):
    """Arrays read from the cache are writable, as uproot's are (numba types a read-only array
    as another type: a cached run would compile every kernel again); a processor writing into
    them changes its own copies of the pages, never the entry, and the kept map it wrote
    into is mapped anew instead of the entry being discarded as damaged."""
    import numba

    cache = ColumnCache(tmp_path / "c")
    key = ChunkKey("u", "Events", 0, len(array))
    _write_entry(cache, key, "x", array)
    path = cache.column_path(key, "x")
    on_disk = path.read_bytes()
    got = cache.get(key, "x").read(0, len(array))
    assert ak.to_list(got) == ak.to_list(array)
    layout = got.layout
    held = [layout.data] if isinstance(layout, ak.contents.NumpyArray) else [layout.offsets.data, layout.content.data]
    for a in held:
        assert a.flags.writeable
        assert numba.typeof(a) == numba.typeof(np.empty(3, dtype=a.dtype))  # one type for the kernels
        a[...] = a[::-1].copy()  # a careless processor, in place
    assert path.read_bytes() == on_disk  # the entry never changes
    again = cache.get(key, "x")  # the kept map holds written pages: mapped anew, not discarded
    assert again is not None and path.exists()
    assert ak.to_list(again.read(0, len(array))) == ak.to_list(array)


def test_strict_overcommit_maps_entries_read_only(tmp_path, monkeypatch):
    """Where the kernel refuses a private writable map (``ENOMEM`` under a strict commit
    limit), the entry is mapped read-only and served: a refused map is not damage."""
    import errno
    import mmap

    real = mmap.mmap

    def strict(fileno, length, *args, **kwargs):
        if kwargs.get("access") == mmap.ACCESS_COPY:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        return real(fileno, length, *args, **kwargs)

    cache = ColumnCache(tmp_path / "c")
    key = ChunkKey("strict", "Events", 0, 100)
    values = np.arange(100, dtype=np.float32)
    _write_entry(cache, key, "x", values)
    monkeypatch.setattr(mmap, "mmap", strict)
    col = cache.get(key, "x")
    assert col is not None and cache.column_path(key, "x").exists()
    got = ak.to_numpy(col.read(0, 100))
    assert np.array_equal(got, values) and not got.flags.writeable


def test_kept_maps_are_bounded_least_recently_used_first(tmp_path):
    from jettracks.io.column_cache import _KeptMaps

    paths = []
    for i in range(4):
        p = tmp_path / f"f{i}"
        p.write_bytes(bytes([i]) * 1000)
        paths.append(p)
    kept = _KeptMaps()
    for p in paths[:3]:
        kept.get(p, limit=2500)
    assert list(kept._maps) == [str(paths[1]), str(paths[2])] and kept._bytes == 2000  # paths[0] dropped
    kept.get(paths[1], limit=2500)  # a hit: now the most recently used
    kept.get(paths[3], limit=2500)
    assert list(kept._maps) == [str(paths[1]), str(paths[3])] and kept._bytes == 2000
    assert kept.get(paths[0], limit=500).data.to_pybytes() == bytes([0]) * 1000  # larger than the bound: not kept
    assert str(paths[0]) not in kept._maps
    kept.get(paths[0], limit=0)  # 0: nothing kept ...
    assert str(paths[0]) not in kept._maps and kept._bytes == 0  # ... and a lower bound applies at once
    for p in paths:  # a bound on the count too (each map holds a file descriptor)
        kept.get(p, limit=10_000, files=2)
    assert list(kept._maps) == [str(paths[2]), str(paths[3])] and kept._bytes == 2000


def test_kept_maps_hold_a_bounded_number_of_file_descriptors(tmp_path):
    """Many small entries read through the cache keep at most KEEP_MAPPED_FILES maps (and so
    descriptors) open: a process reading thousands stays far below the 1,024 soft limit."""
    from jettracks.io import column_cache as cc

    cache = ColumnCache(tmp_path / "c")
    before = len(os.listdir("/proc/self/fd"))
    for i in range(cc.KEEP_MAPPED_FILES + 150):
        key = ChunkKey("u", "Events", i * 10, i * 10 + 10)
        _write_entry(cache, key, "x", np.arange(10, dtype=np.float64) + i)
        got = cache.get(key, "x")
        assert got is not None and ak.to_numpy(got.read(i * 10, i * 10 + 10))[0] == i
        del got
    assert len(cc._KEPT._maps) <= cc.KEEP_MAPPED_FILES
    assert len(os.listdir("/proc/self/fd")) - before <= cc.KEEP_MAPPED_FILES + 5


def test_kept_maps_budget_follows_the_worker_memory_limit():
    """In a Dask worker, kept maps take at most a tenth of its memory limit (they count in the
    resident memory its monitor pauses the worker on); outside a worker, the fixed bound."""
    from distributed import Client, LocalCluster

    from jettracks.engines.base import KEPT_MAPS_SHARE, kept_maps_budget
    from jettracks.io.column_cache import KEEP_MAPPED_BYTES

    assert kept_maps_budget() == KEEP_MAPPED_BYTES
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, memory_limit="600MB",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        budget = client.submit(kept_maps_budget, pure=False).result()  # in a task, as chunks are read
    assert budget == int(600e6 * KEPT_MAPS_SHARE) < KEEP_MAPPED_BYTES


def test_clear_drops_the_kept_maps(tmp_path):
    from jettracks.io import column_cache as cc

    cache = ColumnCache(tmp_path / "c")
    key = ChunkKey("u", "Events", 0, 10)
    _write_entry(cache, key, "x", np.arange(10, dtype=np.float64))
    assert cache.get(key, "x") is not None
    assert str(cache.column_path(key, "x")) in cc._KEPT._maps
    cache.clear()
    assert not any(name.startswith(str(cache.root) + "/") for name in cc._KEPT._maps)


def _writer_process(root: str) -> None:
    cache = ColumnCache(root)
    key = ChunkKey("same", "Events", 0, 50_000)
    for _ in range(20):
        _write_entry(cache, key, "x", np.arange(50_000, dtype=np.float64) * 1.0)


def test_concurrent_writers_of_one_entry(tmp_path):
    ColumnCache(tmp_path / "c")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer_process, args=(str(tmp_path / "c"),)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    got = ColumnCache(tmp_path / "c").get(ChunkKey("same", "Events", 0, 50_000), "x")
    assert got is not None
    assert np.array_equal(ak.to_numpy(got.read(0, 50_000)), np.arange(50_000, dtype=np.float64))
    assert not list((tmp_path / "c").rglob(".*tmp-*"))  # no temporary left behind


def _open_cache(root: str, start, errors) -> None:
    start.wait()
    try:
        ColumnCache(root)
    except CacheError as err:
        errors.put(str(err))


def test_many_processes_create_one_new_cache_at_once(tmp_path):
    """Dask workers open the run's new cache together: none may take another's
    half-made cache (its marker's temporary file) for a foreign directory."""
    # The state one creator leaves between its mkdir and its marker's rename:
    making = tmp_path / "making"
    making.mkdir()
    (making / f".{MARKER}.tmp-0123abcd").write_text("jettracks column cache\n")
    ColumnCache(making)
    assert (making / MARKER).exists()
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        root = str(tmp_path / f"new{attempt}")
        start, errors = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_open_cache, args=(root, start, errors)) for _ in range(6)]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        assert errors.empty(), errors.get()
        assert [c.name for c in Path(root).iterdir()] == [MARKER]


def test_full_cache_disk_reads_the_files_and_says_so(tmp_path, small_tmpfs):
    """A cache on a full disk loses the speed-up, never data: the chunks are read from their
    files, the results equal a run without the cache, one notice names the cache and the
    reason, and nothing half-written stays in the cache."""
    fileset, meta, _ = make_input("none", tmp_path / "input")
    cache = small_tmpfs("512k") / "cache"  # the run's columns need ~1.9 MB
    want = _run("runner", fileset, meta, tmp_path / "plain", cache=None)
    for name in ("first", "again"):  # the second run meets a cache full from the start
        got = _run("runner", fileset, meta, tmp_path / name, cache=cache)
        assert [(r.spec.key, r.status) for r in got.records] == [(r.spec.key, r.status) for r in want.records]
        extra = set(got.output["notices"]) - set(want.output["notices"])
        assert len(extra) == 1 and all(str(cache) in n and "No space left" in n for n in extra), extra
        got.output["notices"] = want.output["notices"]
        assert_same_output(got, want)
        assert not list(cache.rglob(".*tmp-*"))
    # What was published is whole: a run with room reads it and still equals the plain run.
    roomy = tmp_path / "roomy"
    shutil.copytree(cache, roomy)
    assert any(roomy.rglob("*.arrow"))
    assert_same_output(_run("runner", fileset, meta, tmp_path / "roomy-run", cache=roomy), want)


def test_cache_directory_rules(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(CacheError, match="not a jettracks column cache"):
        ColumnCache(foreign)
    with pytest.raises(CacheError, match="not a jettracks column cache"):
        ColumnCache.existing(foreign)
    assert (foreign / "holiday.jpg").exists()
    url = "s3://bucket/cache"  # root:// URLs: tests/test_cache_xrootd.py
    with pytest.raises(CacheError, match="only a directory or a root:// URL"):
        ColumnCache(url)
    with pytest.raises(CacheError, match="only a directory or a root:// URL"):
        ColumnCache.existing(url)
    assert not list(Path.cwd().glob("s3*"))  # no local directory named after the URL
    cache = ColumnCache(tmp_path / "new")
    assert (tmp_path / "new" / MARKER).exists()
    _write_entry(cache, ChunkKey("u", "T", 0, 3), "x", np.arange(3.0))
    assert cache.clear() == 1
    assert cache.info().columns == 0 and (tmp_path / "new" / MARKER).exists()


def test_cache_cli(tmp_path):
    cache = ColumnCache(tmp_path / "c")
    _write_entry(cache, ChunkKey("u", "T", 0, 3), "Jet_pt", np.arange(3.0))
    cli = [sys.executable, "-m", "runner", "cache"]
    info = subprocess.run([*cli, "info", str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "1 columns" in info.stdout and "Jet_pt" in info.stdout
    bad = subprocess.run([*cli, "clear", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "not a jettracks column cache" in bad.stderr
    ok = subprocess.run([*cli, "clear", str(tmp_path / "c")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ColumnCache(tmp_path / "c").info().columns == 0


def test_run_config_with_cache_equals_without(tmp_path):
    """Through run_config and --cache's override: the same report accounting and histograms."""
    from jettracks.execution import RunError, run_config

    fileset, _, _ = make_input("none", tmp_path / "input")
    cfg = {
        "name": "cache",
        "datasets": {ds: {"files": spec["files"][:1], "format": "pfnano", "metadata": {"is_mc": True}}
                     for ds, spec in fileset.items()},
        "executor": {"backend": "serial", "chunksize": CHUNKSIZE},
        "output": {"dir": str(tmp_path / "plain"), "plots": False},
    }
    plain = run_config(cfg, progress=False)
    cached = run_config(cfg, progress=False, output_dir=tmp_path / "cached", cache=tmp_path / "cache")
    again = run_config(cfg, progress=False, output_dir=tmp_path / "again", cache=tmp_path / "cache")
    for got in (cached, again):
        for name, h in plain.hists.items():
            np.testing.assert_array_equal(got.hists[name].values(flow=True), h.values(flow=True), err_msg=name)
        rep = json.loads((got.output_dir / "report.json").read_text())
        want = json.loads((plain.output_dir / "report.json").read_text())
        for key in ("status", "entries", "files", "chunks", "cutflow"):
            assert rep[key] == want[key], key
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "keep.txt").write_text("mine")
    with pytest.raises(RunError, match="executor.cache: .*not a jettracks column cache"):
        run_config(cfg, progress=False, output_dir=tmp_path / "x", cache=tmp_path / "junk")
    assert (tmp_path / "junk" / "keep.txt").read_text() == "mine"
