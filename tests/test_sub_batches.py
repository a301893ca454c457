"""Reading by column plan in sub-batches: same results as reading the chunk at once.

The processor declares its column plan; the engines then read a chunk's heavy
branches in sub-batches cut at basket boundaries (``jettracks.engines.reading``).
Checked against the lazy NanoEvents path (the processor without a plan) on
PFNano and JetNtuple files: cut flow, every histogram and every ML row equal,
events counted once across sub-batches of a per-jet format.
"""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from jettracks import generate
from jettracks.engines.base import ChunkReader, ChunkSpec, run_chunk
from jettracks.engines.reading import batch_bounds
from jettracks.io import mldata
from processors.jet_tracks import JetTrackProcessor


class _Lazy(JetTrackProcessor):
    """The same processor without a column plan: the chunk is read as lazy NanoEvents."""

    columns = None


class _Recording(JetTrackProcessor):
    """Remembers the fields and entry ranges of every batch it processed."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[tuple[int, int, frozenset[str]]] = []

    def process(self, events):
        meta = events.metadata
        self.seen.append((meta["entrystart"], meta["entrystop"], frozenset(self.reader_for(meta["format"]).fields_of(events))))
        return super().process(events)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("subbatch")
    return {
        "pfnano": (generate.generate_file(d / "pf.root", format="pfnano", n_events=400, seed=21), "Events"),
        "jetntuple": (generate.generate_file(d / "jn.root", format="jetntuple", n_events=400, seed=22), "AK4jets/jetTree"),
    }


def _spec(path, tree, fmt, start, stop):
    return ChunkSpec("ds", str(path), tree, start, stop, "", {"format": fmt, "is_mc": True})


def _rows(parts):
    table = None
    for p in parts:
        t = mldata.read_part(p)
        table = t if table is None else __import__("pyarrow").concat_tables([table, t])
    df = table.to_pandas()
    return df.sort_values(["event", "jet_index"]).reset_index(drop=True)


def _same(x, y) -> bool:
    x, y = np.asarray(x), np.asarray(y)
    return np.array_equal(x, y, equal_nan=x.dtype.kind == "f" and y.dtype.kind == "f")


@pytest.mark.parametrize("fmt", ["pfnano", "jetntuple"])
@pytest.mark.parametrize("where", ["whole", "middle"])
def test_sub_batches_equal_whole_chunk(files, tmp_path, fmt, where):
    path, tree = files[fmt]
    n = uproot.open(path)[tree].num_entries
    start, stop = (0, n) if where == "whole" else (n // 3, n - 7)
    spec = _spec(path, tree, fmt, start, stop)
    lazy = _Lazy(ml_dir=str(tmp_path / "lazy"))
    batched = _Recording(ml_dir=str(tmp_path / "batched"))
    out_l, rec_l = run_chunk(lazy, spec, ChunkReader())
    out_b, rec_b = run_chunk(batched, spec, ChunkReader(batch_bytes=20_000))
    assert rec_l.status == rec_b.status == "ok", (rec_l.error, rec_b.error)
    assert len(batched.seen) >= 3  # really cut into sub-batches
    ranges = [(a, b) for a, b, _ in batched.seen]
    assert ranges[0][0] == start and ranges[-1][1] == stop
    assert all(b == c for (_, b), (c, _) in zip(ranges, ranges[1:]))  # contiguous, no overlap
    assert out_b["cutflow"] == out_l["cutflow"]
    assert out_b["entries"] == out_l["entries"]
    assert set(out_b["hists"]) == set(out_l["hists"])
    for name, h in out_l["hists"].items():
        assert np.array_equal(out_b["hists"][name].values(flow=True), h.values(flow=True)), name
    rows_l, rows_b = _rows(out_l["ml_parts"]), _rows(out_b["ml_parts"])
    assert len(rows_b) == len(rows_l) > 0
    for column in rows_l.columns:
        a, b = rows_l[column].to_numpy(), rows_b[column].to_numpy()
        assert all(_same(x, y) for x, y in zip(a, b)) if a.dtype == object else _same(a, b), column


def test_jetntuple_events_counted_once_across_sub_batches(files):
    path, tree = files["jetntuple"]
    ids = uproot.open(path)[tree].arrays(["run", "lumi", "event"], library="np")
    n = len(ids["run"])
    expected = len({(int(r), int(l), int(e)) for r, l, e in zip(ids["run"], ids["lumi"], ids["event"])})
    # two chunks cut inside an event, each cut into sub-batches of a few baskets
    cut = n // 2
    while (ids["event"][cut] != ids["event"][cut - 1]) and cut < n - 1:
        cut += 1  # find a cut that splits an event's jets
    proc = _Recording()
    total = 0
    for a, b in ((0, cut), (cut, n)):
        out, rec = run_chunk(proc, _spec(path, tree, "jetntuple", a, b), ChunkReader(batch_bytes=5_000))
        assert rec.status == "ok", rec.error
        total += out["cutflow"]["ds"]["events"]
    assert len(proc.seen) > 2
    assert total == expected


def test_column_plan_reads_ml_branches_only_for_ml(files, tmp_path):
    path, tree = files["pfnano"]
    spec = _spec(path, tree, "pfnano", 0, 100)
    without = _Recording()
    with_ml = _Recording(ml_dir=str(tmp_path / "ml"))
    for proc in (without, with_ml):
        out, rec = run_chunk(proc, spec, ChunkReader())
        assert rec.status == "ok", rec.error
    fields_without = set().union(*(f for _, _, f in without.seen))
    fields_with = set().union(*(f for _, _, f in with_ml.seen))
    assert {"PFCands_dz", "Jet_mass"} <= fields_with
    assert not {"PFCands_dz", "Jet_mass"} & fields_without
    # nothing beyond the reader's plan is read
    assert fields_with == set(with_ml.columns("pfnano", set(uproot.open(path)[tree].keys())))


def test_chunk_record_carries_peak_memory(files):
    path, tree = files["pfnano"]
    out, rec = run_chunk(JetTrackProcessor(), _spec(path, tree, "pfnano", 0, 50), ChunkReader())
    assert rec.status == "ok"
    assert rec.peak_rss_mb is not None and rec.peak_rss_mb > 10


def _brute_bounds(edges, start, stop, step):
    out, lo = [], start
    while lo < stop:
        hi = next((e for e in sorted(edges) if start < e < stop and e >= lo + step), stop)
        out.append((lo, hi))
        lo = hi
    return out


@pytest.mark.parametrize("seed", range(20))
def test_batch_bounds_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 500))
    edges = np.unique(np.concatenate([[0, n], rng.integers(0, n, size=int(rng.integers(0, 60)))]))
    start = int(rng.integers(0, n))
    stop = int(rng.integers(start, n + 1))
    per_entry = float(rng.uniform(1, 100))
    batch_bytes = int(rng.integers(1, 3000))
    step = max(int(batch_bytes // per_entry), 1)
    got = batch_bounds(edges, start, stop, bytes_per_entry=per_entry, batch_bytes=batch_bytes)
    if stop <= start:
        assert got == [(start, stop)]
    else:
        assert got == _brute_bounds(edges.tolist(), start, stop, step)
        assert all(b in set(edges.tolist()) | {stop} for _, b in got)
