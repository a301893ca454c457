"""Section ``cache`` of scripts/benchmark.py (issue 15): the column cache on realistic files.

On the peers section's PFNano sample (2 files x 1,500 events, ~1,940 PF candidates an
event, LZMA-9, ROOT's basket layout; generated once under ``data/bench/peers``),
serial backend, all outputs but plots, each run in a fresh process (imports not timed):

1. ``first_run_without_cache``: the reference first run;
2. ``first_run_with_cache``: the same into an empty cache (decompresses and stores);
3. ``rerun_cached``: ``cone_dr`` 0.5 -> 0.4 (another cut), reading the cache.

Keys: ``cache_rerun_ratio = rerun_cached_s / first_run_with_cache_s`` (target <= 0.1),
``cache_rerun_vs_uncached_ratio`` (rerun / first run without cache),
``cache_overhead = first_run_with_cache_s / first_run_without_cache_s`` (target <= 1.15),
wall and CPU seconds of each, the cache's bytes per event against the source file's
compressed bytes per event of the branches read, and the check that the rerun's cut
flow equals an uncached run with the same cut (the section aborts otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _peers

CUTS = dict(_peers.CUTS)


def child_run(spec: dict) -> dict:
    import contextlib
    import io

    from rich.console import Console

    import jettracks
    import processors.jet_tracks  # noqa: F401  (imports are not timed)

    cfg = {
        "name": "cache-bench",
        "datasets": {"qcd": {"files": spec["files"], "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": _peers.PROCESSOR, "options": {**CUTS, "cone_dr": spec["cone_dr"]}},
        "executor": {"backend": "serial", "chunksize": spec["chunksize"], **({"cache": spec["cache"]} if spec["cache"] else {})},
        "output": {"dir": spec["out"], "plots": False},
    }
    with contextlib.redirect_stderr(io.StringIO()):
        result, m = _peers._timed(jettracks.run, cfg, progress=False, console=Console(file=io.StringIO()))
    if result.report["status"] != "ok":
        raise RuntimeError(f"run status {result.report['status']}")
    return {**m, "cutflow": {k: int(v) for k, v in result.cutflow["qcd"].items()}}


def _measure(spec: dict) -> dict:
    return _peers._run_child([sys.executable, str(Path(__file__).resolve()), "child", json.dumps(spec)],
                             "cache child")


def section_cache(args: argparse.Namespace) -> dict:
    events = int(getattr(args, "peers_events", 0) or 1500)
    data_dir = Path(getattr(args, "peers_data", None) or _peers.PROJECT / "data" / "bench" / "peers")
    files, how = _peers.dataset(data_dir, "pfnano", "timed", 2, events, 2026, None, "generator")
    chunksize = 100_000
    work = Path(tempfile.mkdtemp(prefix="jettracks-cache-bench-"))
    load = [os.getloadavg()[0]]
    try:
        def run(name: str, cone_dr: float, cache: Path | None) -> dict:
            spec = {"files": files, "chunksize": chunksize, "cone_dr": cone_dr,
                    "cache": str(cache) if cache else None, "out": str(work / name)}
            r = _measure(spec)
            _peers.log(f"cache: {name}: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU")
            return r

        plain = run("plain", CUTS["cone_dr"], None)
        cache_dir = work / "cache"
        first = run("first", CUTS["cone_dr"], cache_dir)
        rerun = run("rerun", 0.4, cache_dir)
        check = run("check", 0.4, None)
        load.append(os.getloadavg()[0])
        if rerun["cutflow"] != check["cutflow"] or first["cutflow"] != plain["cutflow"]:
            raise RuntimeError(f"cache changed the result: {rerun['cutflow']} != {check['cutflow']}")
        from jettracks.io.column_cache import ColumnCache

        info = ColumnCache(cache_dir).info()
        import uproot

        from processors.jet_tracks import JetTrackProcessor

        plan = JetTrackProcessor(ml_dir="x").columns("pfnano")
        src_bytes, n_events = 0, 0
        for f in files:
            with uproot.open(f) as fh:
                tree = fh["Events"]
                n_events += tree.num_entries
                src_bytes += sum(tree[b].compressed_bytes for b in plan if b in tree)
        total_cached = sum(info.by_branch_bytes.values())
        return {
            "cache_files": len(files), "cache_events": n_events, "cache_layout": how,
            "cache_first_run_without_cache_s": round(plain["wall_s"], 3),
            "cache_first_run_without_cache_cpu_s": round(plain["cpu_s"], 3),
            "cache_first_run_with_cache_s": round(first["wall_s"], 3),
            "cache_first_run_with_cache_cpu_s": round(first["cpu_s"], 3),
            "cache_rerun_cached_s": round(rerun["wall_s"], 3),
            "cache_rerun_cached_cpu_s": round(rerun["cpu_s"], 3),
            "cache_rerun_uncached_s": round(check["wall_s"], 3),
            "cache_rerun_ratio": round(rerun["wall_s"] / first["wall_s"], 3),
            "cache_rerun_ratio_cpu": round(rerun["cpu_s"] / first["cpu_s"], 3),
            "cache_rerun_vs_uncached_ratio": round(rerun["wall_s"] / check["wall_s"], 3),
            "cache_overhead": round(first["wall_s"] / plain["wall_s"], 3),
            "cache_overhead_cpu": round(first["cpu_s"] / plain["cpu_s"], 3),
            "cache_bytes_per_event": round(total_cached / max(n_events, 1), 1),
            "cache_source_bytes_per_event": round(src_bytes / max(n_events, 1), 1),
            "cache_size_ratio": round(total_cached / max(src_bytes, 1), 3),
            "cache_load_average_1min": [round(x, 2) for x in load],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "child":
        t0 = time.perf_counter()
        out: dict[str, Any] = child_run(json.loads(sys.argv[2]))
        out["process_wall_s"] = time.perf_counter() - t0
        print(json.dumps(out), flush=True)
        sys.exit(0)
    sys.exit("usage: python scripts/benchmark.py --only cache")
