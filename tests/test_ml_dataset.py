"""The finalized ML dataset: compaction (no row lost or doubled, crash-safe, resumable),
standardisation, weights, folds, the streaming loader, Hugging Face ``datasets`` and
weaver-core reading it with their own code, and ``python -m runner ml-finalize``.

Parts are written here with plain pyarrow from random jets the test makes; every
expectation (rows, statistics, weights, folds, padded arrays) is recomputed here
from those rows, not taken from the code under test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jettracks.io import mldata

FLAVOURS = {"b": 5, "c": 4, "uds": 1, "g": 21}
PT_EDGES = np.array([30.0, 40.0, 50.0, 60.0, 75.0, 90.0, 110.0, 135.0, 165.0, 200.0, 250.0, 330.0, 450.0, 1000.0])
ETA_EDGES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
M64 = (1 << 64) - 1


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def _event_hash(run: int, lumi: int, event: int) -> int:
    return _splitmix(_splitmix(_splitmix(run) ^ lumi) ^ event)


def _make_parts(ml_dir, *, n_parts=12, jets_per_part=700, seed=3, dataset="qcd"):
    """Random jets (flavour-dependent pT and η), one event = 1..3 jets, written as parts."""
    rng = np.random.default_rng(seed)
    ml_dir.mkdir(parents=True, exist_ok=True)
    names, event = [], 1000 * seed
    for k in range(n_parts):
        rows = []
        while len(rows) < jets_per_part:
            event += 1
            split = ["train", "validation", "test"][int(np.searchsorted([0.7, 0.85], (_event_hash(1, 7, event) >> 44) / 2**20, side="right"))]
            for j in range(rng.integers(1, 4)):
                fl = rng.choice(list(FLAVOURS), p=[0.2, 0.1, 0.45, 0.25])
                pt = 30 + rng.exponential({"b": 60, "c": 45, "uds": 35, "g": 50}[fl])
                eta = rng.normal(0, {"b": 0.9, "c": 1.0, "uds": 1.2, "g": 1.1}[fl])
                eta = float(np.clip(eta, -2.49, 2.49))
                n = int(rng.integers(0, 8))
                rows.append({"dataset": dataset, "run": 1, "lumi": 7, "event": event, "jet_index": j,
                             "jet_pt": pt, "jet_eta": eta, "flavour": fl, "flavour_code": FLAVOURS[fl],
                             "split": split, "n_tracks": n,
                             "max_abs_dxy": float(rng.exponential(0.02)) if n else np.nan,
                             "track_pt": rng.exponential(3.0, n).astype(np.float32).tolist(),
                             "track_dxy_sig": rng.normal(0, 2, n).astype(np.float32).tolist()})
        t = pa.table({
            "dataset": pa.array([r["dataset"] for r in rows]),
            "run": pa.array([r["run"] for r in rows], pa.int64()),
            "lumi": pa.array([r["lumi"] for r in rows], pa.int64()),
            "event": pa.array([r["event"] for r in rows], pa.uint64()),
            "jet_index": pa.array([r["jet_index"] for r in rows], pa.int64()),
            "jet_pt": pa.array([r["jet_pt"] for r in rows], pa.float32()),
            "jet_eta": pa.array([r["jet_eta"] for r in rows], pa.float32()),
            "flavour": pa.array([r["flavour"] for r in rows]),
            "flavour_code": pa.array([r["flavour_code"] for r in rows], pa.int8()),
            "split": pa.array([r["split"] for r in rows]),
            "n_tracks": pa.array([r["n_tracks"] for r in rows], pa.int32()),
            "max_abs_dxy": pa.array([r["max_abs_dxy"] for r in rows], pa.float32()),
            "track_pt": pa.array([r["track_pt"] for r in rows], pa.large_list(pa.float32())),
            "track_dxy_sig": pa.array([r["track_dxy_sig"] for r in rows], pa.large_list(pa.float32())),
        })
        name = f"part-{dataset}-{k:04d}.parquet"
        pq.write_table(t, ml_dir / name)
        names.append(name)
    return names


def _finalize(ml_dir, names, **kw):
    return mldata.finalize(ml_dir, parts=names, config={"output": {"ml_dataset": {"pad_tracks": 5}}},
                           selection={"jet_pt_min": 30.0}, versions={}, **kw)


def _rows(paths) -> pd.DataFrame:
    df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    return df.sort_values(["dataset", "run", "lumi", "event", "jet_index"]).reset_index(drop=True)


def _finalized(ml_dir) -> pd.DataFrame:
    m = json.loads((ml_dir / "manifest.json").read_text())
    return _rows([ml_dir / f for f in m["part_files"]])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    ml_dir = tmp_path_factory.mktemp("ds") / "ml"
    names = _make_parts(ml_dir)
    before = _rows([ml_dir / n for n in names])
    manifest = _finalize(ml_dir, names, folds=4)
    return ml_dir, names, before, manifest


def test_compaction_keeps_every_row_once(dataset):
    ml_dir, names, before, m = dataset
    after = _finalized(ml_dir)
    assert len(after) == len(before) == m["rows"]
    for col in before.columns:  # every value of every row, large lists now lists
        got, want = after[col].to_list(), before[col].to_list()
        if col.startswith("track_"):
            got, want = [list(x) for x in got], [list(x) for x in want]
        assert got == want or np.allclose(after[col], before[col], equal_nan=True), col
    assert not after.duplicated(["run", "lumi", "event", "jet_index"]).any()
    # exact counts per split; one split per file; the parts are gone; row groups sized for loaders
    assert m["rows_per_split"] == before["split"].value_counts().to_dict()
    for split, files in m["files_per_split"].items():
        assert sum(pq.read_metadata(ml_dir / f).num_rows for f in files) == m["rows_per_split"][split]
        assert all(set(pd.read_parquet(ml_dir / f, columns=["split"])["split"]) == {split} for f in files)
    assert not [n for n in names if (ml_dir / n).exists()]
    assert sorted(p.name for p in ml_dir.glob("part-*.parquet")) == m["part_files"]
    meta = pq.read_metadata(ml_dir / m["files_per_split"]["train"][0])
    assert meta.row_group(0).num_rows == min(mldata.ROW_GROUP_ROWS, meta.num_rows)
    assert meta.row_group(0).column(0).compression.lower() == mldata.COMPRESSION
    # the content hash: rows and the sum of a hash of (run, lumi, event, jet_index), recomputed here
    total = sum(_splitmix(_splitmix(_splitmix(_splitmix(int(r.run)) ^ int(r.lumi)) ^ int(r.event)) ^ int(r.jet_index))
                for r in before.itertuples()) % (1 << 64)
    assert m["content_hash"] == f"{len(before)}:{total:016x}"


def test_refinalize_and_subsets_never_double_rows(dataset, tmp_path):
    import shutil

    ml_dir, names, before, m = dataset
    work = tmp_path / "ml"
    shutil.copytree(ml_dir, work)
    (work / "notes.txt").write_text("mine\n")
    again = _finalize(work, names, folds=4)  # the parts now live in the finalized files (sources)
    assert again["part_files"] == m["part_files"] and again["content_hash"] == m["content_hash"]
    assert all(mldata.part_available(work / n) for n in names)
    keep = names[:5]
    sub = _finalize(work, keep, folds=4)
    got = _finalized(work)
    assert len(got) == sub["rows"] < len(before)
    assert not got.duplicated(["run", "lumi", "event", "jet_index"]).any()
    assert sorted(p.name for p in work.glob("part-*.parquet")) == sub["part_files"]
    assert not any(mldata.part_available(work / n) for n in names[5:])
    assert (work / "notes.txt").read_text() == "mine\n"  # never delete what jettracks did not write


def _regroup_with_write_part(ml_dir, names):
    """Each (Parquet) part rewritten by the workers' writer (:func:`mldata.write_part`: Arrow
    IPC, rows grouped by split), the Parquet one removed; returns the new names."""
    import awkward as ak

    out = []
    for n in names:
        t = pq.read_table(ml_dir / n)
        cols = {c: ak.from_arrow(t.column(c)) if pa.types.is_nested(t.schema.field(c).type)
                else t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
        new = n.removesuffix(".parquet") + mldata.PART_SUFFIX
        mldata.write_part(ml_dir, new, cols)
        (ml_dir / n).unlink()
        out.append(new)
    return out


def test_parts_grouped_by_split_finalize_to_the_same_files(tmp_path):
    import shutil

    interleaved = tmp_path / "a" / "ml"
    names = _make_parts(interleaved, n_parts=4, jets_per_part=300, seed=8)
    grouped = tmp_path / "b" / "ml"
    shutil.copytree(interleaved, grouped)
    new_names = _regroup_with_write_part(grouped, names)
    split_order = {s: i for i, s in enumerate(mldata.SPLITS)}
    for n, new in zip(names, new_names):  # grouped in SPLITS order; within a split, the rows keep their order
        before = pq.read_table(interleaved / n).to_pandas()
        with pa.OSFile(str(grouped / new)) as fh:  # an Arrow IPC file
            after = pa.ipc.open_file(fh).read_all().to_pandas()
        codes = after["split"].map(split_order).to_numpy()
        assert (np.diff(codes) >= 0).all() and len(set(codes)) > 1
        for s in mldata.SPLITS:
            assert after.loc[after.split == s, "jet_pt"].tolist() == before.loc[before.split == s, "jet_pt"].tolist()
    # Parquet parts (older versions) and IPC parts finalize alike; the files' names differ
    # only by their hash, which covers the parts' names.
    m_a, m_b = _finalize(interleaved, names), _finalize(grouped, new_names)
    assert m_a["content_hash"] == m_b["content_hash"]
    assert {s: len(f) for s, f in m_a["files_per_split"].items()} == {s: len(f) for s, f in m_b["files_per_split"].items()}
    assert sorted(p.name for p in grouped.iterdir() if p.suffix == ".arrow") == []  # finalized parts are removed
    pairs = [(a, b) for s in mldata.SPLITS for a, b in zip(m_a["files_per_split"][s], m_b["files_per_split"][s])]
    for fa, fb in pairs:  # the same rows in the same order, value for value
        a, b = pd.read_parquet(interleaved / fa), pd.read_parquet(grouped / fb)
        assert a.shape == b.shape
        for col in a.columns:
            if col.startswith("track_"):
                assert [list(x) for x in a[col]] == [list(x) for x in b[col]], col
            else:
                assert a[col].equals(b[col]), col
    # finalized files keep min/max only where a filter can use them: per-jet columns
    meta = pq.read_metadata(grouped / m_b["files_per_split"]["train"][0]).row_group(0)
    stats = {meta.column(i).path_in_schema.split(".")[0]: meta.column(i).statistics for i in range(meta.num_columns)}
    assert stats["jet_pt"] is not None and stats["jet_pt"].has_min_max
    assert stats["track_pt"] is None


def test_a_part_with_an_unknown_split_is_refused_by_name(tmp_path):
    ml_dir = tmp_path / "ml"
    names = _make_parts(ml_dir, n_parts=2, jets_per_part=50, seed=9)
    t = pq.read_table(ml_dir / names[1])
    split = t.column("split").to_pylist()
    split[3] = "holdout"
    pq.write_table(t.set_column(t.column_names.index("split"), "split", pa.array(split)), ml_dir / names[1])
    with pytest.raises(ValueError, match="unknown split value 'holdout'"):
        _finalize(ml_dir, names)
    assert all((ml_dir / n).exists() for n in names) and not (ml_dir / "manifest.json").exists()


def test_subset_holds_exactly_those_parts_rows(tmp_path):
    ml_dir = tmp_path / "ml"
    names = _make_parts(ml_dir, n_parts=4, jets_per_part=300, seed=5)
    per_part = {n: _rows([ml_dir / n]) for n in names}
    _finalize(ml_dir, names)
    _finalize(ml_dir, names[1:3])
    want = pd.concat([per_part[n] for n in names[1:3]]).sort_values(
        ["dataset", "run", "lumi", "event", "jet_index"]).reset_index(drop=True)
    got = _finalized(ml_dir)
    assert got[["event", "jet_index", "jet_pt"]].values.tolist() == want[["event", "jet_index", "jet_pt"]].values.tolist()


@dataclasses.dataclass
class _Finalized:
    """A dataset finalized once, and what a failed finalize must leave of it."""

    ml_dir: Any
    names: list[str]
    rows: int
    state: list[str]
    manifest: str

    @classmethod
    def make(cls, tmp_path, seed: int) -> _Finalized:
        ml_dir = tmp_path / "ml"
        names = _make_parts(ml_dir, n_parts=4, jets_per_part=300, seed=seed)
        rows = _finalize(ml_dir, names)["rows"]
        return cls(ml_dir, names, rows, sorted(p.name for p in ml_dir.iterdir()),
                   (ml_dir / "manifest.json").read_text())

    def assert_unchanged(self) -> None:
        assert sorted(p.name for p in self.ml_dir.iterdir()) == self.state  # no new or temporary file, nothing removed
        assert (self.ml_dir / "manifest.json").read_text() == self.manifest
        assert len(_finalized(self.ml_dir)) == self.rows


def _fail_second_call(monkeypatch, owner, name: str, message: str, *, after: bool = False) -> None:
    """Patch ``owner.name`` so that its second call raises ``OSError(message)``: instead of
    the real call, or (``after``) once the real call has run."""
    real, calls = getattr(owner, name), [0]

    def patched(self):
        calls[0] += 1
        if calls[0] != 2:
            return real(self)
        if after:
            real(self)
        raise OSError(message)

    monkeypatch.setattr(owner, name, patched)


def test_crash_before_the_switch_keeps_the_old_dataset(tmp_path, monkeypatch):
    old = _Finalized.make(tmp_path, seed=6)
    _fail_second_call(monkeypatch, mldata._FileWriter, "_close", "disk full (injected)")
    with pytest.raises(OSError, match="injected"):
        _finalize(old.ml_dir, old.names[:2], folds=3)  # other content: other file names
    monkeypatch.undo()
    old.assert_unchanged()


def test_a_file_failing_to_close_on_its_writer_thread_keeps_the_old_dataset(tmp_path, monkeypatch):
    old = _Finalized.make(tmp_path, seed=10)
    # On the writer's thread, after the footer is written: the rename must not happen.
    _fail_second_call(monkeypatch, pq.ParquetWriter, "close", "disk full at close (injected)", after=True)
    with pytest.raises(OSError, match="injected"):
        _finalize(old.ml_dir, old.names[:2], folds=3)
    monkeypatch.undo()
    old.assert_unchanged()


def test_meanwhile_runs_once_before_the_switch_and_its_error_keeps_the_old_dataset(tmp_path):
    old = _Finalized.make(tmp_path, seed=11)
    seen = []

    def meanwhile():
        seen.append((old.ml_dir / "manifest.json").read_text())
        raise OSError("histogram disk full (injected)")

    with pytest.raises(OSError, match="injected"):
        _finalize(old.ml_dir, old.names[:2], folds=3, meanwhile=meanwhile)
    assert seen == [old.manifest]  # once, before anything was switched
    old.assert_unchanged()
    calls = []
    again = _finalize(old.ml_dir, old.names[:2], folds=3, meanwhile=lambda: calls.append(1))
    assert calls == [1] and len(_finalized(old.ml_dir)) == again["rows"] < old.rows


def test_crash_after_the_switch_is_completed_by_the_next_finalize(tmp_path, monkeypatch):
    from pathlib import Path

    ml_dir = tmp_path / "ml"
    names = _make_parts(ml_dir, n_parts=4, jets_per_part=300, seed=7)
    want = _rows([ml_dir / n for n in names])
    real = Path.unlink

    def no_unlink(self, *a, **k):
        if self.name.startswith("part-"):
            raise OSError("killed (injected)")
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "unlink", no_unlink)
    with pytest.raises(OSError, match="injected"):
        _finalize(ml_dir, names)
    monkeypatch.undo()
    assert len(_finalized(ml_dir)) == len(want)  # the new manifest is complete; the parts still there
    m = _finalize(ml_dir, names)  # the rerun: no row twice, leftovers removed
    assert len(_finalized(ml_dir)) == m["rows"] == len(want)
    assert sorted(p.name for p in ml_dir.glob("part-*.parquet")) == m["part_files"]


def _percentile(sorted_values: np.ndarray, q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), written out."""
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(np.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.int8])
@pytest.mark.parametrize("n", [1, 2, 3, 10, 1001, 100_000])
def test_feature_stats_equal_numpys_percentiles_exactly(dtype, n):
    """``feature_stats`` percentiles (from a sort) are numpy's ``percentile`` of the finite
    float64 values to the bit, and mean/std numpy's over them in their order."""
    from jettracks.ml.stats import feature_stats

    rng = np.random.default_rng(n)
    if np.dtype(dtype).kind == "f":
        values = (rng.standard_cauchy(n) * 0.01).astype(dtype)  # heavy tails, repeated values
        values[rng.random(n) < 0.1] = np.nan
        values[: min(n, 2)] = [np.inf, -np.inf][: min(n, 2)] if n > 2 else values[: min(n, 2)]
    else:
        values = rng.integers(-3, 9, n).astype(dtype)
    v = values.astype(np.float64)
    v = v[np.isfinite(v)]
    got = feature_stats(values)
    assert got.count == v.size
    if v.size:
        want = np.percentile(v, [16, 50, 84])
        assert (got.p16, got.median, got.p84) == tuple(float(x) for x in want)
        assert got.mean == float(v.mean()) and got.std == float(v.std())


def test_standardisation_stats_from_the_training_split_only(dataset):
    ml_dir, _, before, m = dataset
    train = before[before["split"] == "train"]
    for feature in ("jet_pt", "jet_eta", "n_tracks", "max_abs_dxy", "track_pt", "track_dxy_sig"):
        values = train[feature].to_numpy()
        if feature.startswith("track_"):
            values = np.concatenate([np.asarray(v, dtype=np.float64) for v in values])
        values = np.sort(values[np.isfinite(values.astype(np.float64))].astype(np.float64))
        s = m["standardization"][feature]
        med, p16, p84 = (_percentile(values, q) for q in (50, 16, 84))
        assert s["count"] == len(values), feature
        assert s["median"] == pytest.approx(med, rel=1e-9, abs=1e-12)
        assert s["p16"] == pytest.approx(p16, rel=1e-9, abs=1e-12) and s["p84"] == pytest.approx(p84, rel=1e-9, abs=1e-12)
        assert s["mean"] == pytest.approx(sum(values) / len(values), rel=1e-9)
        assert s["std"] == pytest.approx(np.sqrt(sum((values - values.mean()) ** 2) / len(values)), rel=1e-9)
        assert s["scale"] == pytest.approx(max(p84 - med, med - p16), rel=1e-9) and s["clip"] == 5.0
    assert "run" not in m["standardization"] and "flavour_code" not in m["standardization"]


def _bin(pt, eta):
    ix = min(max(int(np.searchsorted(PT_EDGES, pt, side="right")) - 1, 0), len(PT_EDGES) - 2)
    iy = min(max(int(np.searchsorted(ETA_EDGES, abs(eta), side="right")) - 1, 0), len(ETA_EDGES) - 2)
    return ix, iy


def test_weights_flatten_and_match_the_reference(dataset):
    ml_dir, _, before, m = dataset
    df = _finalized(ml_dir)
    assert m["weights"]["pt_edges_gev"] == PT_EDGES.tolist() and m["weights"]["reference"] == "b"
    bins = [_bin(p, e) for p, e in zip(df["jet_pt"], df["jet_eta"])]
    df["ix"], df["iy"] = [b[0] for b in bins], [b[1] for b in bins]
    train = df[df["split"] == "train"]
    counts = {f: train[train["flavour"] == f].groupby(["ix", "iy"]).size().to_dict() for f in FLAVOURS}
    n = {f: int((train["flavour"] == f).sum()) for f in FLAVOURS}
    for r in df.itertuples():  # brute force, jet by jet
        h = counts[r.flavour].get((r.ix, r.iy), 0)
        flat = n[r.flavour] / len(counts[r.flavour]) / h if h else 0.0
        ref = (counts["b"].get((r.ix, r.iy), 0) / n["b"]) / (h / n[r.flavour]) if h else 0.0
        assert r.weight_flat == pytest.approx(flat, rel=1e-5), r
        assert r.weight_reference == pytest.approx(ref, rel=1e-5, abs=1e-7), r
    total = sum(n.values())
    for f in FLAVOURS:
        assert m["weights"]["class_weights"][f] == pytest.approx(total / (4 * n[f]))
    # Held-out jets (validation + test): weighted histograms flat / equal to b's within errors.
    held = df[df["split"] != "train"]
    for f in ("uds", "g"):
        sel = held[held["flavour"] == f]
        sumw = sel.groupby(["ix", "iy"])["weight_flat"].sum()
        sumw2 = (sel["weight_flat"] ** 2).groupby([sel["ix"], sel["iy"]]).sum()
        filled = [k for k in counts[f] if counts[f][k] >= 20]  # bins where the statistical error is meaningful
        mean = np.mean([sumw.get(k, 0.0) for k in filled])
        pulls = [(sumw.get(k, 0.0) - mean) / np.sqrt(max(sumw2.get(k, 0.0), 1e-12) + (mean**2) / counts[f][k])
                 for k in filled]
        assert np.mean(np.square(pulls)) < 2.5, (f, np.round(pulls, 1))
        # to the reference: weighted f shape vs b's held-out shape, normalised, chi2/ndf
        b = held[held["flavour"] == "b"].groupby(["ix", "iy"]).size()
        wf = sel.groupby(["ix", "iy"])["weight_reference"].sum()
        keys = [k for k in filled if counts["b"].get(k, 0) >= 20]
        pf = np.array([wf.get(k, 0.0) for k in keys]) / sum(wf.get(k, 0.0) for k in keys)
        pb = np.array([b.get(k, 0) for k in keys]) / sum(b.get(k, 0) for k in keys)
        err2 = pb / max(1, sum(b.get(k, 0) for k in keys)) + pf / len(sel)
        assert np.mean((pf - pb) ** 2 / np.maximum(err2, 1e-12)) < 2.5, f


def test_fold_and_split_from_one_event_hash(dataset):
    ml_dir, _, _, m = dataset
    df = _finalized(ml_dir)
    assert m["folds"] == 4 and df.groupby("event")["fold"].nunique().max() == 1
    for r in df.drop_duplicates("event").itertuples():
        h = _event_hash(int(r.run), int(r.lumi), int(r.event))
        assert r.fold == min(int(((h >> 24) & ((1 << 20) - 1)) / 2**20 * 4), 3)
    frac = df.drop_duplicates("event")["fold"].value_counts(normalize=True)
    assert len(frac) == 4 and (abs(frac - 0.25) < 0.05).all()


def test_batches_stream_standardised_weighted_rows(dataset, monkeypatch):
    import jettracks.ml

    ml_dir, _, _, m = dataset
    df = _finalized(ml_dir)
    test_rows = pd.concat([pd.read_parquet(ml_dir / f) for f in m["files_per_split"]["test"]], ignore_index=True)
    largest = {"rows": 0}
    real = pq.ParquetFile.read_row_group

    def spy(self, i, *a, **k):
        t = real(self, i, *a, **k)
        largest["rows"] = max(largest["rows"], t.num_rows)
        return t

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", spy)
    got = list(jettracks.ml.batches(ml_dir, split="test", features=["jet_pt", "max_abs_dxy"], batch_size=100,
                                    weights="flat", labels=["flavour_code", "event"]))
    assert [len(b["jet_pt"]) for b in got[:-1]] == [100] * (len(got) - 1) and 0 < len(got[-1]["jet_pt"]) <= 100
    assert largest["rows"] <= mldata.ROW_GROUP_ROWS  # one row group at a time, never a whole file
    cat = {k: np.concatenate([b[k] for b in got]) for k in got[0]}
    assert cat["event"].tolist() == test_rows["event"].tolist()
    s = m["standardization"]["jet_pt"]
    train = df[df["split"] == "train"]["jet_pt"].to_numpy(np.float64)
    med = np.median(train)
    width = max(np.percentile(train, 84) - med, med - np.percentile(train, 16))
    want = np.clip((test_rows["jet_pt"].to_numpy(np.float64) - med) / width, -5, 5)
    assert s["median"] == pytest.approx(med)
    np.testing.assert_allclose(cat["jet_pt"], want, rtol=1e-5, atol=1e-5)
    dxy = cat["max_abs_dxy"]
    assert not np.isnan(dxy).any() and (dxy[test_rows["max_abs_dxy"].isna().to_numpy()] == 0).all()
    np.testing.assert_array_equal(cat["weight"], test_rows["weight_flat"].to_numpy())
    cls = next(jettracks.ml.batches(ml_dir, split="test", features=["jet_pt"], batch_size=50, weights="class",
                                    labels=["flavour"]))
    want_cls = [m["weights"]["class_weights"][f] for f in cls["flavour"]]
    np.testing.assert_allclose(cls["weight"], want_cls, rtol=1e-6)
    shuffled = list(jettracks.ml.batches(ml_dir, split="test", features=["jet_pt"], batch_size=64, shuffle=True,
                                         seed=4, labels=["event", "jet_index"], standardize=False))
    keys = sorted(zip(np.concatenate([b["event"] for b in shuffled]), np.concatenate([b["jet_index"] for b in shuffled])))
    assert keys == sorted(zip(test_rows["event"], test_rows["jet_index"]))  # every jet once
    with pytest.raises(ValueError, match="variable-length"):
        next(jettracks.ml.batches(ml_dir, split="test", features=["track_pt"]))
    with pytest.raises(ValueError, match="split must be"):
        next(jettracks.ml.batches(ml_dir, split="training", features=["jet_pt"]))


def test_hugging_face_datasets_loads_the_splits_offline(dataset, tmp_path):
    ml_dir, _, _, m = dataset
    code = (
        "import json, sys, datasets\n"
        "dd = datasets.load_dataset(sys.argv[1], cache_dir=sys.argv[2])\n"
        "print(json.dumps({s: {'rows': d.num_rows, 'features': d.features.to_dict(), 'first': d[0]['jet_pt'],"
        " 'tracks': d[0]['track_pt']} for s, d in dd.items()}))\n"
    )
    env = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code, str(ml_dir), str(tmp_path / "cache")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    import datasets

    for split in ("train", "validation", "test"):
        files = [ml_dir / f for f in m["files_per_split"][split]]
        assert got[split]["rows"] == sum(pq.read_metadata(f).num_rows for f in files)
        want = datasets.Features.from_arrow_schema(pq.read_schema(files[0])).to_dict()
        assert got[split]["features"] == want
        first = pq.read_table(files[0]).slice(0, 1).to_pylist()[0]
        assert got[split]["first"] == pytest.approx(first["jet_pt"]) and got[split]["tracks"] == pytest.approx(first["track_pt"])


def _weaver_finalize_inputs():
    """weaver's own ``_finalize_inputs`` (weaver/utils/dataset.py imports torch only for its
    Dataset class, which is not used here: a stand-in module satisfies that import, and is
    taken out of ``sys.modules`` again at once: other libraries (scipy) probe for torch there)."""
    stand_in: dict[str, types.ModuleType] = {}
    try:
        import torch  # noqa: F401
    except ImportError:
        torch = types.ModuleType("torch")
        torch.utils = types.ModuleType("torch.utils")
        torch.utils.data = types.ModuleType("torch.utils.data")
        torch.utils.data.IterableDataset = object
        stand_in = {"torch": torch, "torch.utils": torch.utils, "torch.utils.data": torch.utils.data}
        sys.modules.update(stand_in)
    try:
        from weaver.utils.dataset import _finalize_inputs
    finally:
        for name, module in stand_in.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return _finalize_inputs


def test_weaver_reads_the_dataset_with_its_config(dataset):
    from weaver.utils.data.config import DataConfig
    from weaver.utils.data.fileio import _read_files
    from weaver.utils.data.preprocess import _apply_selection, _build_new_variables

    ml_dir, _, _, m = dataset
    cfg = DataConfig.load(str(ml_dir / "weaver.yaml"))
    files = [str(ml_dir / f) for f in m["files_per_split"]["train"]]
    table = _read_files(files, cfg.test_load_branches)  # weaver's test mode: observers are read too
    table = _apply_selection(table, cfg.test_time_selection, funcs=cfg.var_funcs)
    table = _build_new_variables(table, cfg.test_var_funcs)
    out = _weaver_finalize_inputs()(table, cfg)

    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    df = df[df["flavour"].isin(list(FLAVOURS))].reset_index(drop=True)
    st = m["standardization"]
    jet_vars = [v[0] for v in cfg.options["inputs"]["jet_features"]["vars"]]
    assert {"jet_pt", "n_tracks", "max_abs_dxy"} <= set(jet_vars)
    for i, name in enumerate(jet_vars):
        x = df[name].to_numpy(np.float64)
        want = np.nan_to_num(np.clip((x - st[name]["median"]) / st[name]["scale"], -5, 5))
        np.testing.assert_allclose(out["_jet_features"][:, i], want, rtol=1e-4, atol=1e-4, err_msg=name)
    track_vars = [v[0] for v in cfg.options["inputs"]["track_features"]["vars"]]
    assert track_vars == ["track_pt", "track_dxy_sig"] and out["_track_features"].shape[2] == 5  # pad_tracks
    for i, name in enumerate(track_vars):
        for row, values in enumerate(df[name]):
            want = np.zeros(5)
            for j, v in enumerate(list(values)[:5]):
                want[j] = np.clip((v - st[name]["median"]) / st[name]["scale"], -5, 5)
            np.testing.assert_allclose(out["_track_features"][row, i], want, rtol=1e-4, atol=1e-4)
    mask = out["_track_mask"][:, 0, :]
    np.testing.assert_array_equal(mask.sum(axis=1), np.minimum(df["n_tracks"].to_numpy(), 5))
    classes = [v[len("label_"):] for v in cfg.options["labels"]["value"]]
    np.testing.assert_array_equal(out["_label_"], [classes.index(f) for f in df["flavour"]])
    np.testing.assert_array_equal(out["event"], df["event"].to_numpy())


def test_ml_finalize_command_on_an_unfinalized_dataset(tmp_path, project_root):
    ml_dir = tmp_path / "run" / "ml"
    names = _make_parts(ml_dir, n_parts=3, jets_per_part=200, seed=9)
    want = _rows([ml_dir / n for n in names])
    (ml_dir / "manifest.json").write_text(json.dumps({"part_files": names, "config": {}, "selection": {}}))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "runner", "ml-finalize", *args], capture_output=True,
                              text=True, cwd=project_root, timeout=120)

    first = cli(str(tmp_path / "run"), "--folds", "3")
    assert first.returncode == 0, first.stderr
    m = json.loads((ml_dir / "manifest.json").read_text())
    assert m["folds"] == 3 and m["rows"] == len(want) and f"{len(want):,} rows" in first.stdout
    assert len(_finalized(ml_dir)) == len(want)
    again = cli(str(ml_dir))
    assert again.returncode == 0 and json.loads((ml_dir / "manifest.json").read_text())["part_files"] == m["part_files"]
    bad = cli(str(tmp_path / "nothing"))
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "ml-finalize error" in bad.stderr


def test_a_run_finalizes_and_resumes_without_redoing_or_doubling(small_sample, tmp_path):
    from jettracks.execution import run_config

    cfg = {"name": "ml", "datasets": {"qcd": {"files": [str(p) for p in small_sample["pfnano"][:2]], "format": "pfnano"}},
           "executor": {"backend": "serial", "chunksize": 50}, "output": {"dir": str(tmp_path / "run"), "plots": False}}
    first = run_config(cfg, progress=False)
    files = sorted(p.name for p in (tmp_path / "run" / "ml").glob("part-*.parquet"))
    assert len(files) <= 3 < first.report["chunks"]  # one file per split instead of a part per chunk
    again = run_config(cfg, progress=False)
    assert again.report["chunks_from_checkpoint"] == again.report["chunks"]
    assert sorted(p.name for p in (tmp_path / "run" / "ml").glob("part-*.parquet")) == files
    rows = _finalized(tmp_path / "run" / "ml")
    assert len(rows) == again.report["ml_dataset"]["rows"] == sum(f["selected_jets"] for f in again.cutflow.values())
    assert not rows.duplicated(["run", "lumi", "event", "jet_index"]).any()


def test_parts_are_raw_on_disk_and_compressed_to_leave_it(tmp_path):
    """A part on a disk is written raw (the client reads it back at once); one that will be
    carried through Dask (``parts_leave_the_machine``) is compressed: the same table in
    fewer bytes."""
    n = 20_000
    cols = {"jet_pt": np.zeros(n, dtype=np.float32), "jet_eta": np.linspace(-2.0, 2.0, n, dtype=np.float32)}
    auto = mldata.write_part(tmp_path, "part-auto.arrow", cols)
    raw = mldata.write_part(tmp_path, "part-raw.arrow", cols, compression=None)
    lz4 = mldata.write_part(tmp_path, "part-lz4.arrow", cols, compression="lz4")
    with mldata.parts_leave_the_machine():
        shipped = mldata.write_part(tmp_path, "part-shipped.arrow", cols)
    after = mldata.write_part(tmp_path, "part-after.arrow", cols)  # the setting ends with the block
    size = {k: os.path.getsize(p) for k, p in (("auto", auto), ("raw", raw), ("lz4", lz4), ("shipped", shipped),
                                                ("after", after))}
    assert size["auto"] == size["raw"] == size["after"] >= 8 * n  # no codec: at least the values' bytes
    assert size["shipped"] == size["lz4"] < size["raw"] * 0.75
    table = mldata.read_part(auto)
    assert all(mldata.read_part(p).equals(table) for p in (raw, lz4, shipped))


def test_parts_carried_through_dask_are_compressed(tmp_path, monkeypatch):
    """``output.transfer: dask``: the worker writes its chunk's parts to a local directory and
    ships their bytes; those bytes are LZ4 (they count against ``transfer_mb``)."""
    import types

    from jettracks.engines import base

    cols = {"jet_pt": np.zeros(20_000, dtype=np.float32)}

    def chunk_writing_a_part(proc, spec, read_events, checkpointer, retries):
        return {"ml_parts": [mldata.write_part(proc.ml_dir, "part-x.arrow", cols)]}, types.SimpleNamespace(payload=None)

    monkeypatch.setattr(base, "run_chunk", chunk_writing_a_part)
    client_dir = str(tmp_path / "client")
    out, record = base._run_chunk_shipping_parts(
        types.SimpleNamespace(ml_dir=client_dir), None, base.ChunkReader(transfer_bytes=1 << 30), 0, 1 << 30)
    shipped = record.payload[os.path.join(client_dir, "part-x.arrow")]
    lz4 = mldata.write_part(tmp_path, "part-lz4.arrow", cols, compression="lz4")
    assert len(shipped) == os.path.getsize(lz4)
    assert pa.ipc.open_file(pa.py_buffer(shipped)).read_all().equals(mldata.read_part(lz4))
