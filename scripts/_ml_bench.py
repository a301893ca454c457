"""Section ml of scripts/benchmark.py: reading the finalized ML dataset vs the per-chunk parts.

A real 200-chunk run (generated PFNano, serial backend) writes one part per
chunk; the parts are copied aside just before finalize compacts them, as Parquet
(LZ4, the parts' format before they became Arrow IPC: what a loader would read
without the finalize). Then, on
the same rows: ``jettracks.ml.batches`` over every split of the finalized
dataset vs over the parts (a manifest listing the parts), and
``datasets.load_dataset`` (fresh cache, offline) on the finalized directory vs
``load_dataset("parquet", data_files=parts)``; rows/s, their ratio, and the
on-disk sizes. Also the row-group size and compression choice: the finalized
training rows rewritten with 1k/5k/10k-jet row groups, zstd and lz4, read with
the loader's access pattern (one row group at a time).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

FEATURES = ["jet_pt", "jet_eta", "n_tracks", "max_abs_dxy", "pad_track_dxy_sig"]


def _dir_bytes(paths) -> int:
    return sum(os.path.getsize(p) for p in paths)


def _rate(fn, repeats: int) -> tuple[float, int]:
    best, rows = float("inf"), 0
    for _ in range(repeats):
        t = time.perf_counter()
        rows = fn()
        best = min(best, time.perf_counter() - t)
    return rows / best, rows


def section_ml(args) -> dict:
    import pyarrow.parquet as pq

    import jettracks.ml
    from jettracks import generate
    from jettracks.execution import run_config
    from jettracks.io import mldata

    work = Path(tempfile.mkdtemp(prefix="jettracks-bench-ml-"))
    try:
        files = generate.generate_dataset(work / "in", format="pfnano", n_files=4, events_per_file=500,
                                          seed=args.seed % 10000, pileup_candidates=60, frac_b=0.2)
        parts_dir = work / "parts"
        real_finalize = mldata.finalize

        def keep_parts(ml_dir, *, parts, **kw):  # the per-chunk parts aside, as Parquet, before compaction
            import pyarrow.parquet as pq

            parts_dir.mkdir()
            for n in parts:
                pq.write_table(mldata.read_part(Path(ml_dir) / n), parts_dir / (Path(n).stem + ".parquet"),
                               compression="lz4", write_statistics=False)
            return real_finalize(ml_dir, parts=parts, **kw)

        mldata.finalize = keep_parts
        try:
            cfg = {"name": "bench_ml", "datasets": {"qcd": {"files": [str(f) for f in files], "format": "pfnano"}},
                   "executor": {"backend": "serial", "chunksize": 10},
                   "output": {"dir": str(work / "run"), "plots": False, "ml_dataset": {"pad_tracks": 8}}}
            result = run_config(cfg, progress=False)
        finally:
            mldata.finalize = real_finalize
        ml_dir = work / "run" / "ml"
        manifest = json.loads((ml_dir / "manifest.json").read_text())
        parts = sorted(p.name for p in parts_dir.glob("part-*.parquet"))
        # The parts as one "split" for the loader (same rows as every split of the finalized set).
        fake = {**manifest, "files_per_split": {"all": parts}, "dataset_per_file": {p: "qcd" for p in parts}}
        (parts_dir / "manifest.json").write_text(json.dumps(fake))
        repeats = max(1, min(args.repeats, 3))

        def read_batches(d, splits):
            return sum(len(b["jet_pt"]) for s in splits
                       for b in jettracks.ml.batches(d, split=s, features=FEATURES, batch_size=1024, labels=[]))

        fin_rate, fin_rows = _rate(lambda: read_batches(ml_dir, ("train", "validation", "test")), repeats)
        part_rate, part_rows = _rate(lambda: read_batches(parts_dir, ("all",)), repeats)
        assert fin_rows == part_rows == manifest["rows"], (fin_rows, part_rows, manifest["rows"])

        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import datasets

        datasets.disable_progress_bars()

        def hf(load):
            def run():
                cache = tempfile.mkdtemp(dir=work)
                dd = load(cache)
                n = sum(d.num_rows for d in dd.values())
                shutil.rmtree(cache, ignore_errors=True)
                return n
            return run

        hf_fin, hf_rows = _rate(hf(lambda c: datasets.load_dataset(str(ml_dir), cache_dir=c)), repeats)
        hf_parts, hf_prows = _rate(hf(lambda c: datasets.load_dataset(
            "parquet", data_files={"train": [str(parts_dir / p) for p in parts]}, cache_dir=c)), repeats)
        assert hf_rows == hf_prows == manifest["rows"]

        # Row-group size and compression, the loader's access pattern (one row group at a time).
        train = pq.read_table([ml_dir / f for f in manifest["files_per_split"]["train"]][0])
        layout = {}
        for codec in ("zstd", "lz4"):
            for rg in (1000, 5000, 10000):
                path = work / f"rg-{codec}-{rg}.parquet"
                pq.write_table(train, path, compression=codec, row_group_size=rg)

                def read(path=path):
                    pf = pq.ParquetFile(path)
                    return sum(pf.read_row_group(i, columns=FEATURES).num_rows
                               for i in range(pf.metadata.num_row_groups))

                rate, _ = _rate(read, repeats)
                layout[f"ml_layout_{codec}_rg{rg}_rows_per_s"] = round(rate)
                layout[f"ml_layout_{codec}_rg{rg}_bytes"] = os.path.getsize(path)
        return {
            "ml_chunks": result.report["chunks"],
            "ml_rows": manifest["rows"],
            "ml_files_finalized": len(manifest["part_files"]),
            "ml_files_parts": len(parts),
            "ml_load_rows_per_s_batches_finalized": round(fin_rate),
            "ml_load_rows_per_s_batches_parts": round(part_rate),
            "ml_load_speedup_batches": round(fin_rate / part_rate, 2),
            "ml_load_rows_per_s_datasets_finalized": round(hf_fin),
            "ml_load_rows_per_s_datasets_parts": round(hf_parts),
            "ml_load_speedup_datasets": round(hf_fin / hf_parts, 2),
            "ml_bytes_finalized": _dir_bytes(ml_dir / f for f in manifest["part_files"]),
            "ml_bytes_parts": _dir_bytes(parts_dir / p for p in parts),
            "ml_row_group_rows": mldata.ROW_GROUP_ROWS,
            "ml_compression": mldata.COMPRESSION,
            **layout,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
