"""Measure the factor of ``jettracks.plan``'s worker-memory model on the demo's sample.

The model (``jettracks.plan.estimate_worker_memory``): a worker running one chunk holds

    base + factor x (uncompressed bytes of the branches read, per entry) x (entries in the chunk)

This script generates one PFNano and one JetNtuple file like the demo's (``configs/demo.yaml``:
process qcd, seed 12100, default generator options) but with more events, then, each in a
fresh process, runs one chunk of N entries through the engines' guarded call
(``run_chunk`` + ``ChunkReader`` + the demo's processor, ML parts written) and reads the
process's memory while it runs: the growth of its resident set (sampled every 2 ms)
over the resident set before the chunk, and the peak of the memory traced by
``tracemalloc`` (Python objects and numpy/awkward buffers). The slope of either
against N, divided by the uncompressed bytes per entry of the branches read, is the
factor; the resident set before the chunk (after a small warm-up chunk) is the base.

    python scripts/measure_memory_model.py [--events 8000]

Prints one JSON object: per format the slope (bytes per entry), uncompressed bytes per
entry, factor and intercept (bytes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, tempfile
from pathlib import Path
fname, fmt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
from jettracks.config import parse_config
from jettracks.loading import load_processor
from jettracks.engines.base import ChunkReader, ChunkSpec, run_chunk
from jettracks import readers
from jettracks.plan import branch_bytes
import uproot
cfg = parse_config({"datasets": {"d": {"files": [fname], "format": fmt, "metadata": {"is_mc": True}}},
                    "processor": {"class": "processors.jet_tracks:JetTrackProcessor",
                                  "options": {"cone_dr": 0.5, "jet_pt_min": 30.0, "jet_abs_eta_max": 2.5,
                                              "track_pt_min": 1.0}}})
proc = load_processor(cfg, Path(tempfile.mkdtemp()))
with uproot.open(fname) as f:
    reader = readers.get(fmt)
    tree_name = reader.treename
    tree = f[tree_name]
    branches = reader.branches(set(tree.keys(recursive=True)))
    comp, uncomp = branch_bytes(tree, branches)
    entries = tree.num_entries
read = ChunkReader(branches=tuple(sorted(branches)))
def chunk(a, b):
    spec = ChunkSpec("d", fname, tree_name, a, b, "", {"format": fmt, "is_mc": True})
    out, rec = run_chunk(proc, spec, read)
    assert rec.status == "ok", rec.error
import os, threading, time, tracemalloc
PAGE = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE
warm = min(200, n)
chunk(0, warm)  # imports, numba compilation, first reads
import gc; gc.collect()
before = rss()
peak = [before]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
t = threading.Thread(target=sample); t.start()
tracemalloc.start()
chunk(0, n)
traced_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
stop.set(); t.join()
print(json.dumps({"n": n, "rss_before": before, "rss_peak": peak[0], "traced_peak": traced_peak,
                  "uncompressed_per_entry": uncomp / entries, "compressed_per_entry": comp / entries}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=8000, help="events in each generated file (default 8000)")
    args = ap.parse_args()
    from jettracks import generate

    work = Path(tempfile.mkdtemp(prefix="jettracks-memmodel-"))
    result = {}
    for fmt in ("pfnano", "jetntuple"):
        (path,) = generate.generate_dataset(work / fmt, format=fmt, n_files=1, events_per_file=args.events,
                                            seed=12100, process="qcd")
        import uproot

        from jettracks import readers

        with uproot.open(path) as f:
            n_entries = f[readers.get(fmt).treename].num_entries
        sizes = [n_entries // 8, n_entries // 4, n_entries // 2, n_entries]
        points = []
        for n in sizes:
            res = subprocess.run([sys.executable, "-c", CHILD, str(path), fmt, str(n)],
                                 capture_output=True, text=True, check=True)
            points.append(json.loads(res.stdout.strip().splitlines()[-1]))
        xs = [p["n"] for p in points]
        per_entry = points[0]["uncompressed_per_entry"]

        def fit(ys):
            mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
            return slope, my - slope * mx

        rss_slope, rss_icpt = fit([p["rss_peak"] - p["rss_before"] for p in points])
        tr_slope, tr_icpt = fit([p["traced_peak"] for p in points])
        result[fmt] = {
            "points_n_rss_before_rss_peak_traced_peak": [
                (p["n"], p["rss_before"], p["rss_peak"], p["traced_peak"]) for p in points],
            "uncompressed_bytes_per_entry": round(per_entry),
            "compressed_bytes_per_entry": round(points[0]["compressed_per_entry"]),
            "rss_growth_bytes_per_entry": round(rss_slope),
            "traced_bytes_per_entry": round(tr_slope),
            "factor_rss": round(rss_slope / per_entry, 2),
            "factor_traced": round(tr_slope / per_entry, 2),
            "rss_before_chunk_bytes": round(sum(p["rss_before"] for p in points) / len(points)),
        }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
