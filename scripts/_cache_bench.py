"""Section ``cache`` of scripts/benchmark.py (issue 15): the column cache on realistic files.

On the e2e section's data (scripts/bench_pipeline.py ``E2E_DATA``: 4 PFNano files x 2,000
events, ~1,900 PF candidates an event, LZMA-9, ROOT's basket layout, chunks of 1,000),
``run_config`` on one warm 2-worker LocalCluster as in the e2e section (imports and numba
loaded in the workers by an untimed warm-up run without the cache; entries cache warm),
all outputs but plots (histograms, ML parts + finalize, checkpoints, report):

1. ``first_run_without_cache``: the reference first run;
2. ``first_run_with_cache``: the same into an empty cache (decompresses and stores);
3. ``rerun_cached``: ``cone_dr`` 0.5 -> 0.4 (another cut), reading the cache;
4. ``rerun_uncached``: the same cut without the cache (its cut flow must equal 3's).

5. ``url_first`` / ``url_rerun``: 2. and 3. once more with the cache on a local XRootD server
   (``executor.cache: root://...``: entries uploaded, then downloaded whole), once each.

After every run, untimed, ``os.sync()``: the kernel writes a run's dirty pages (a fill's
~760 MB of entries) back ~30 s later, into whichever run is timed then; its time is reported
(``cache_sync_after_*``: the deferred cost of the writes, not on the run's wall clock).

Repeated ``--repeats`` times (fresh cache each time), best of each. Keys:
``cache_rerun_ratio = rerun_cached_s / first_run_with_cache_s`` (target <= 0.1),
``cache_rerun_vs_uncached_ratio`` (rerun / first run without cache),
``cache_overhead = first_run_with_cache_s / first_run_without_cache_s`` (target <= 1.15),
wall seconds and CPU seconds (client + workers) of each, the cache's bytes per event against
the source file's compressed bytes per event of the branches read, and the check that the
rerun's cut flow equals an uncached run with the same cut (the section aborts otherwise);
``cache_url_first_run_s``, ``cache_url_rerun_s`` and ``cache_url_rerun_ratio`` (their ratio)
for the ``root://`` cache (XRootD on this host: no network, the protocol's cost only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_pipeline as bp

CONE_DR_FIRST, CONE_DR_RERUN = 0.5, 0.4


def _cpu(pids: list[int]) -> float:
    return sum(bp._Meter._proc(p) for p in pids)


def section_cache(args: argparse.Namespace) -> dict:
    repeats = max(1, getattr(args, "pipeline_repeats", None) or 2)
    spec = bp.E2E_DATA
    work = Path(tempfile.mkdtemp(prefix="jettracks-cache-bench-"))
    load = [os.getloadavg()[0]]
    try:
        with bp._cache_env(), bp._cluster(2) as client:
            files = [str(p) for p in bp._dataset("e2e", spec, client)]
            pids = [os.getpid(), *bp._pids(client)]

            def cfg(cone_dr: float, cache: Path | str | None) -> dict:
                c = bp._cfg(files, processor=bp.PROCESSOR, chunksize=spec["chunksize"])
                c["processor"]["options"] = {"cone_dr": cone_dr}
                if cache is not None:
                    c["executor"]["cache"] = str(cache)
                return c

            def run(name: str, cone_dr: float, cache: Path | str | None) -> dict[str, Any]:
                c0 = _cpu(pids)
                dt, result = bp._run(cfg(cone_dr, cache), client)
                cpu = _cpu(pids) - c0
                # Untimed: the kernel writes a run's dirty pages back ~30 s later, into
                # whichever run is timed then (a fill leaves ~760 MB); flushed here instead.
                t0 = time.perf_counter()
                os.sync()
                sync = time.perf_counter() - t0
                bp.log(f"cache: {name}: {dt:.2f} s wall, {cpu:.2f} s CPU, then sync {sync:.2f} s")
                return {"wall_s": dt, "cpu_s": cpu, "sync_s": sync,
                        "cutflow": {k: int(v) for k, v in result.cutflow["qcd"].items()}}

            bp.log("cache: warm-up")
            run("warm-up", CONE_DR_FIRST, None)
            runs: dict[str, list[dict]] = {k: [] for k in ("plain", "first", "rerun", "check")}
            for i in range(repeats):
                cache_dir = work / f"cache{i}"
                runs["plain"].append(run("plain", CONE_DR_FIRST, None))
                runs["first"].append(run("first", CONE_DR_FIRST, cache_dir))
                runs["rerun"].append(run("rerun", CONE_DR_RERUN, cache_dir))
                runs["check"].append(run("check", CONE_DR_RERUN, None))
            load.append(os.getloadavg()[0])
            with bp._xrootd() as server:
                rel = f"cache-url-{os.getpid()}"
                url = server.writable_dir(rel) + "/cache"
                try:
                    runs["url_first"] = [run("url first", CONE_DR_FIRST, url)]
                    runs["url_rerun"] = [run("url rerun", CONE_DR_RERUN, url)]
                finally:
                    shutil.rmtree(server.root_dir / rel, ignore_errors=True)
        for r in [*runs["rerun"], *runs["url_rerun"]]:
            if r["cutflow"] != runs["check"][0]["cutflow"]:
                raise RuntimeError(f"cache changed the result: {r['cutflow']} != {runs['check'][0]['cutflow']}")
        for r in [*runs["first"], *runs["url_first"]]:
            if r["cutflow"] != runs["plain"][0]["cutflow"]:
                raise RuntimeError(f"cache changed the result: {r['cutflow']} != {runs['plain'][0]['cutflow']}")
        best = {k: min(v, key=lambda r: r["wall_s"]) for k, v in runs.items()}
        best_cpu = {k: min(r["cpu_s"] for r in v) for k, v in runs.items()}

        from jettracks.io.column_cache import ColumnCache

        info = ColumnCache(work / "cache0").info()
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
        plain, first, rerun, check = (best[k] for k in ("plain", "first", "rerun", "check"))
        return {
            "cache_files": len(files), "cache_events": n_events, "cache_chunksize": spec["chunksize"],
            "cache_workers": 2, "cache_repeats": repeats,
            "cache_first_run_without_cache_s": round(plain["wall_s"], 3),
            "cache_first_run_without_cache_cpu_s": round(best_cpu["plain"], 3),
            "cache_first_run_with_cache_s": round(first["wall_s"], 3),
            "cache_first_run_with_cache_cpu_s": round(best_cpu["first"], 3),
            "cache_rerun_cached_s": round(rerun["wall_s"], 3),
            "cache_rerun_cached_cpu_s": round(best_cpu["rerun"], 3),
            "cache_rerun_uncached_s": round(check["wall_s"], 3),
            "cache_rerun_ratio": round(rerun["wall_s"] / first["wall_s"], 3),
            "cache_rerun_ratio_cpu": round(best_cpu["rerun"] / best_cpu["first"], 3),
            "cache_rerun_vs_uncached_ratio": round(rerun["wall_s"] / check["wall_s"], 3),
            "cache_overhead": round(first["wall_s"] / plain["wall_s"], 3),
            "cache_overhead_cpu": round(best_cpu["first"] / best_cpu["plain"], 3),
            "cache_bytes_per_event": round(total_cached / max(n_events, 1), 1),
            "cache_source_bytes_per_event": round(src_bytes / max(n_events, 1), 1),
            "cache_size_ratio": round(total_cached / max(src_bytes, 1), 3),
            "cache_sync_after_first_run_without_cache_s": round(min(r["sync_s"] for r in runs["plain"]), 3),
            "cache_sync_after_first_run_with_cache_s": round(min(r["sync_s"] for r in runs["first"]), 3),
            "cache_url_first_run_s": round(best["url_first"]["wall_s"], 3),
            "cache_url_rerun_s": round(best["url_rerun"]["wall_s"], 3),
            "cache_url_rerun_ratio": round(best["url_rerun"]["wall_s"] / best["url_first"]["wall_s"], 3),
            "cache_load_average_1min": [round(x, 2) for x in load],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
