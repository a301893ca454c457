"""Benchmark sections of issue 12 (far-away files, many files, hosts without a shared disk).

Registered in ``scripts/benchmark.py``:

``wan``
    The 200-file sample of ``scaling`` (200 PFNano files x 250 events, one chunk each)
    on one 2-worker LocalCluster (``--wan-threads`` threads per worker, default 3:
    a chunk waiting on round trips leaves the core to another), read from local paths
    (``wan_local_s``) and over XRootD through the delay proxy at 0, 50 and 150 ms RTT
    (``wan_0ms_s`` ...); ``wan_ratio = wan_50ms_s / wan_local_s`` (target <= 1.5).
    Cold metadata cache for every run (each run's metadata step is in its time).
``metadata``
    ``collect_metadata`` of 2,000 small files over XRootD at 50 ms RTT, cold cache, on a
    2-worker cluster: ``metadata_files_per_s`` (target >= 200).
``files2000``
    A full run over the same 2,000 files over XRootD (no delay): exact accounting and the
    client's peak RSS (``files2000_client_peak_mb``, VmHWM of this process; < 1 GB).
``multihost``
    The 200-file sample on the namespaced hosts (2 workers, no shared disk, outputs through
    Dask) vs a LocalCluster of 2 workers, both reading over XRootD: ``multihost_ratio``.

Every section prints its figures as flat ``<section>_...`` keys.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import bench_pipeline as bp

FILES2000 = {"n_files": 2000, "events_per_file": 20,
             "options": {"pileup_candidates": 20, "compression": "zlib", "links": False}, "chunksize": 100_000}


def _vmhwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return -1.0


@contextlib.contextmanager
def _cluster(n_workers: int, threads: int):
    from distributed import Client, LocalCluster

    from jettracks.cluster import worker_environment

    worker_environment()
    with LocalCluster(n_workers=n_workers, threads_per_worker=threads, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        yield client


def _proxy(server, delay_s: float):
    from jettracks_testing.services.delay_proxy import start_delay_proxy

    return start_delay_proxy("127.0.0.1", server.port, delay_s=delay_s, max_seconds=3600)


def _timed_cold(cfg: dict, client) -> tuple[float, Any]:
    with bp._cache_env():  # a fresh (cold) metadata cache for this run
        return bp._run(cfg, client)


def section_wan(args=None) -> dict:
    threads = int(getattr(args, "wan_threads", None) or 3)
    spec = bp.SCALING_DATA
    paths = bp._dataset("scaling", spec)
    res: dict[str, Any] = {"wan_load_before": bp._load(), "wan_threads_per_worker": threads}
    with bp._xrootd() as server, _cluster(2, threads) as client:
        local = bp._cfg([str(p) for p in paths], processor=bp.PROCESSOR, chunksize=spec["chunksize"])
        bp.log("wan: warm-up")
        bp._run(local, client, max_files=10)
        dl, rl = _timed_cold(local, client)
        res["wan_local_s"] = round(dl, 2)
        for ms in (0, 50, 150):
            with contextlib.ExitStack() as stack:
                if ms:
                    proxy = stack.enter_context(_proxy(server, ms / 2000))
                    urls = [proxy.url_for_port(server.url_for(p)) for p in paths]
                else:
                    urls = [server.url_for(p) for p in paths]
                cfg = bp._cfg(urls, processor=bp.PROCESSOR, chunksize=spec["chunksize"])
                bp.log(f"wan: {ms} ms RTT")
                dt, r = _timed_cold(cfg, client)
            if r.report["entries"] != rl.report["entries"] or r.cutflow != rl.cutflow:
                raise RuntimeError(f"wan {ms} ms: result differs from the local run")
            chunks = sorted(c["seconds"] for c in r.report["timing"]["chunks"])
            res[f"wan_{ms}ms_s"] = round(dt, 2)
            res[f"wan_{ms}ms_metadata_s"] = r.report["timing"]["metadata_s"]
            res[f"wan_{ms}ms_chunk_median_s"] = round(chunks[len(chunks) // 2], 3)
    res["wan_ratio"] = round(res["wan_50ms_s"] / res["wan_local_s"], 3)
    res["wan_ratio_0ms"] = round(res["wan_0ms_s"] / res["wan_local_s"], 3)
    res["wan_ratio_150ms"] = round(res["wan_150ms_s"] / res["wan_local_s"], 3)
    res["wan_files"] = len(paths)
    res["wan_load_after"] = bp._load()
    return res


def section_metadata(args=None) -> dict:
    from types import SimpleNamespace

    from jettracks.metadata import collect_metadata

    paths = bp._dataset("files2000", FILES2000)
    res: dict[str, Any] = {"metadata_load_before": bp._load()}
    with bp._xrootd() as server, _proxy(server, 0.025) as proxy, _cluster(2, 1) as client:
        urls = [proxy.url_for_port(server.url_for(p)) for p in paths]
        fileset = {"qcd": {"files": urls, "treename": "Events", "metadata": {}}}
        ex = SimpleNamespace(xrootd_timeout=60, retries=1)
        with bp._cache_env():
            t0 = time.perf_counter()
            got = collect_metadata(fileset, client=client, ex=ex)
            dt = time.perf_counter() - t0
        if got.bad or len(got.meta) != len(paths):
            raise RuntimeError(f"metadata: {len(got.bad)} bad files, {len(got.meta)} read")
        with bp._cache_env():  # and in this process (serial)
            fileset = {"qcd": {"files": urls, "treename": "Events", "metadata": {}}}
            t0 = time.perf_counter()
            collect_metadata(fileset, client=None, ex=ex)
            dt_serial = time.perf_counter() - t0
    res |= {
        "metadata_files": len(paths),
        "metadata_rtt_ms": 50,
        "metadata_s": round(dt, 2),
        "metadata_files_per_s": round(len(paths) / dt, 1),
        "metadata_in_client_s": round(dt_serial, 2),
        "metadata_in_client_files_per_s": round(len(paths) / dt_serial, 1),
        "metadata_load_after": bp._load(),
    }
    return res


def section_files2000(args=None) -> dict:
    paths = bp._dataset("files2000", FILES2000)
    res: dict[str, Any] = {"files2000_load_before": bp._load()}
    with bp._xrootd() as server, _cluster(2, 1) as client:
        cfg = bp._cfg([server.url_for(p) for p in paths], processor=bp.PROCESSOR, chunksize=FILES2000["chunksize"])
        dt, r = _timed_cold(cfg, client)
    ent = r.report["entries"]
    res |= {
        "files2000_s": round(dt, 1),
        "files2000_files": len(paths),
        "files2000_expected": ent["expected"],
        "files2000_processed": ent["processed"],
        "files2000_skipped": ent["skipped"],
        "files2000_exact": ent["processed"] + ent["skipped"] == ent["expected"] == 20 * len(paths),
        "files2000_client_peak_mb": _vmhwm_mb(),
        "files2000_metadata_s": r.report["timing"]["metadata_s"],
        "files2000_load_after": bp._load(),
    }
    return res


def section_multihost(args=None) -> dict:
    import shutil
    import tempfile

    from distributed import Client

    from jettracks_testing.services.hosts import start_hosts

    spec = bp.SCALING_DATA
    paths = bp._dataset("scaling", spec)
    res: dict[str, Any] = {"multihost_load_before": bp._load()}
    with start_hosts(2, hide=[tempfile.gettempdir()], serve_dir=bp._bench_root()) as hosts:
        urls = [hosts.url_for(p) for p in paths]
        cfg = bp._cfg(urls, processor=bp.PROCESSOR, chunksize=spec["chunksize"])
        cfg["output"]["transfer"] = "dask"
        with Client(hosts.scheduler_address, timeout=60) as client:
            hosts.wait_for_workers(client)
            bp._run(cfg, client, max_files=10)  # warm-up
            dm, rm = _timed_cold(cfg, client)
        with _cluster(2, 1) as client:
            bp._run(cfg, client, max_files=10)
            dl, rl = _timed_cold(cfg, client)
    if rm.report["entries"] != rl.report["entries"] or rm.cutflow != rl.cutflow:
        raise RuntimeError("multihost: result differs from the LocalCluster run")
    res |= {"multihost_s": round(dm, 2), "local_s": round(dl, 2), "multihost_ratio": round(dm / dl, 3),
            "multihost_files": len(paths), "multihost_load_after": bp._load()}
    return res


SECTIONS = {"wan": section_wan, "metadata": section_metadata, "files2000": section_files2000,
            "multihost": section_multihost}
