#!/usr/bin/env python
"""Pipeline benchmarks: the whole machinery (run_config on Dask) against its floors.

Sections (:data:`SECTIONS`, name -> function returning a flat dict; registered in
``scripts/benchmark.py``, or run here: ``python scripts/bench_pipeline.py [--only e2e]``):

``e2e``
    ``JetTrackProcessor`` end to end (``run_config`` on a 2-process LocalCluster,
    entries cache warm, ML Parquet parts and checkpoints written as in a normal run,
    no plots) against the **I/O floor**: the same chunks (file, entry range taken from
    the run's report) read with ``uproot.open(f)[tree].arrays(branches, entry_start,
    entry_stop)`` -- reading and decompressing exactly the branches the reader
    declares (``reader.branches()``) -- by ``client.map`` on the same cluster.
    Realistic PFNano density (``pileup_candidates=1900``: ~1,900 PF candidates an
    event, as in real 2016 PFNano), 4 files x 2,000 events, chunks of 1,000.
    Target: ``e2e_ratio = e2e_processor_s / e2e_io_floor_s <= 1.25``.
``scaling``
    The same run over 200 files served by a local XRootD server (root://), on a
    1-worker and a 2-worker LocalCluster. Target: ``scaling_speedup >= 1.7``.
``remote``
    The same run over root:// (local XRootD server) and over the local paths, on
    one 2-worker cluster. Target: ``remote_ratio = remote_xrootd_s / remote_local_s <= 1.3``.
``scheduler``
    ``processors.testing:NoopProcessor`` (reads no column) over 400 chunks of 25
    events (20 small files): chunks per second through file opening, scheduling,
    checkpointing and accumulation (``scheduler_chunks_per_s``, over the process phase).

Each measurement is the best of ``--repeats`` (default 2; ``args.pipeline_repeats``
when called from ``scripts/benchmark.py``) interleaved runs, after a warm-up run
(imports, numba compilation in every worker, XRootD connections, entries cache).
Every timed run writes into a fresh output directory (no resume from checkpoints).
Generated inputs are kept in ``$JETTRACKS_BENCH_DIR`` (default ``/tmp/jettracks-bench``,
755 so the XRootD server, which runs as ``nobody``, can serve it) and reused by later
runs; the first run generates them (~2.5 min on 2 cores), later runs take ~4.5 min.

The machine is shared: ``<section>_others_cores`` is the CPU other processes took
while the timed code ran (core-seconds per wall second, from ``/proc/stat`` minus
this process, the Dask workers/nannies and the XRootD server): 0 = a quiet machine;
at 1.0 one of the 2 cores was taken away and ``scaling_speedup`` cannot reach 1.7.
``*_load_before``/``*_load_after`` are the 1-minute load averages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
# The XRootD server the benchmarks start is the one the tests start: the service code
# lives in the tests' package jettracks_testing (tests/jettracks_testing/services/).
if str(PROJECT / "tests") not in sys.path:
    sys.path.insert(0, str(PROJECT / "tests"))
from jettracks_testing.services.xrootd import start_xrootd  # standard library only

BENCH_DIR = Path(os.environ.get("JETTRACKS_BENCH_DIR", "/tmp/jettracks-bench"))
PROCESSOR = "processors.jet_tracks:JetTrackProcessor"
NOOP = "processors.testing:NoopProcessor"

#: (files, events per file, generator options, chunksize) of each section's data.
E2E_DATA = {"n_files": 4, "events_per_file": 2000, "options": {"pileup_candidates": 1900}, "chunksize": 1000}
SCALING_DATA = {"n_files": 200, "events_per_file": 250, "options": {"pileup_candidates": 250}, "chunksize": 100_000}
SCHEDULER_DATA = {
    "n_files": 20,
    "events_per_file": 500,
    "options": {"pileup_candidates": 20, "compression": "zlib", "links": False},
    "chunksize": 25,
}

_REPEATS = 2


def log(msg: str) -> None:
    print(f"[bench_pipeline] {msg}", file=sys.stderr, flush=True)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


class _Meter:
    """CPU used by *other* processes while timed code runs (the machine is shared).

    ``others_cores``: core-seconds the whole machine was busy (``/proc/stat``) minus
    what this process, the Dask workers/nannies and the XRootD server used, per wall
    second of the timed code -- 0 on a quiet machine, 1.0 = one core taken away.
    """

    _HZ = os.sysconf("SC_CLK_TCK")

    def __init__(self, pids=()):
        self.pids = {os.getpid(), *pids}
        self.wall = 0.0
        self.others = 0.0

    @classmethod
    def _proc(cls, pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            return sum(int(x) for x in f[11:15]) / cls._HZ  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            return 0.0

    @classmethod
    def _busy(cls) -> float:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:]]
        return (sum(v) - v[3] - v[4]) / cls._HZ  # all but idle and iowait

    def add(self, *pids) -> None:
        self.pids.update(p for p in pids if p)

    def __enter__(self):
        self._t0 = time.perf_counter()
        self._b0 = self._busy()
        self._p0 = {p: self._proc(p) for p in self.pids}
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._t0
        ours = sum(self._proc(p) - c for p, c in self._p0.items())
        self.others += max(self._busy() - self._b0 - ours, 0.0)
        return False

    def report(self, prefix: str) -> dict:
        return {f"{prefix}_others_cores": round(self.others / self.wall, 2) if self.wall else None}


def _pids(client) -> list[int]:
    """Worker and nanny process ids of a LocalCluster client."""
    return [*client.run(os.getpid).values(), *client.run(os.getppid).values()]


# -- data and services -------------------------------------------------------------------


def _bench_root() -> Path:
    """BENCH_DIR, created 755: the XRootD server (user ``nobody``) serves it."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    BENCH_DIR.chmod(0o755)
    return BENCH_DIR


def _dataset(name: str, spec: dict, client=None) -> list[Path]:
    """Generated PFNano files for a section (kept across runs: same name+spec, same files)."""
    from jettracks.generate import generate_dataset

    tag = "-".join(
        [name, f"{spec['n_files']}x{spec['events_per_file']}"]
        + [f"{k}{v}" for k, v in sorted(spec["options"].items())]
    )
    out = _bench_root() / tag
    t0 = time.perf_counter()
    missing = not all((out / f"pfnano_{i:04d}.root").exists() for i in range(spec["n_files"]))
    with contextlib.ExitStack() as stack:
        if missing and client is None:  # generate on two worker processes
            client = stack.enter_context(_cluster(2))
        paths = generate_dataset(
            out, format="pfnano", n_files=spec["n_files"], events_per_file=spec["events_per_file"],
            seed=20261125, client=client if missing else None, **spec["options"],
        )
    out.chmod(0o755)
    for p in paths:
        p.chmod(0o644)
    dt = time.perf_counter() - t0
    if dt > 1:
        log(f"generated {name}: {len(paths)} files in {dt:.1f} s ({out})")
    return paths


@contextlib.contextmanager
def _xrootd():
    """A local XRootD server serving BENCH_DIR (``jettracks_testing.services.xrootd``, as in the tests)."""
    server = start_xrootd(_bench_root())
    try:
        yield server
    finally:
        server.cleanup()


@contextlib.contextmanager
def _cluster(n_workers: int):
    from distributed import Client, LocalCluster

    from jettracks.cluster import worker_environment

    worker_environment()
    with LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _cache_env():
    """A private entries cache (not the user's ~/.cache) for the benchmark's runs."""
    old = os.environ.get("JETTRACKS_CACHE_DIR")
    tmp = tempfile.mkdtemp(prefix="jettracks-bench-cache-")
    os.environ["JETTRACKS_CACHE_DIR"] = tmp
    try:
        yield Path(tmp)
    finally:
        if old is None:
            os.environ.pop("JETTRACKS_CACHE_DIR", None)
        else:
            os.environ["JETTRACKS_CACHE_DIR"] = old
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


# -- runs -----------------------------------------------------------------------------------


def _cfg(files: list[str], *, processor: str, chunksize: int, ml: bool = True) -> dict:
    return {
        "name": "bench",
        "datasets": {"qcd": {"files": list(files), "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": processor, "options": {}},
        "executor": {"backend": "local", "chunksize": chunksize, "retries": 1},
        "output": {"dir": "unused", "plots": False, "ml": ml},
    }


def _run(cfg: dict, client, meter: _Meter | None = None, **kw) -> tuple[float, Any]:
    """Wall seconds of one run_config into a fresh output directory, and its result."""
    import io
    import shutil

    from rich.console import Console

    from jettracks.execution import run_config

    quiet = Console(file=io.StringIO())  # run_config prints the dashboard link on every run
    out = tempfile.mkdtemp(prefix="jettracks-bench-out-")
    try:
        with meter if meter is not None else contextlib.nullcontext():
            t0 = time.perf_counter()
            result = run_config(cfg, client=client, output_dir=out, progress=False, console=quiet, **kw)
            dt = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    rep = result.report
    if rep["status"] != "ok" or rep["entries"]["processed"] != rep["entries"]["expected"]:
        raise RuntimeError(f"benchmark run incomplete: {rep['status']} {rep['entries']}")
    return dt, result


def _best(runs: list[tuple[float, Any]]) -> tuple[float, Any]:
    return min(runs, key=lambda r: r[0])


def read_chunk(filename: str, treename: str, branches: list[str], start: int, stop: int, timeout: int = 60) -> int:
    """The I/O floor of one chunk: open, read and decompress the branches (awkward arrays)."""
    import uproot

    with uproot.open({filename: None}, timeout=timeout) as f:
        arrays = f[treename].arrays(branches, entry_start=start, entry_stop=stop)
    return len(arrays)


def _floor(
    client, chunks: list[tuple[str, int, int]], branches: list[str], meter: _Meter | None = None,
    treename: str = "Events",
) -> float:
    if __name__ != "__main__":  # imported (scripts/benchmark.py): ship read_chunk by value
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with meter if meter is not None else contextlib.nullcontext():
        t0 = time.perf_counter()
        futures = client.map(
            read_chunk,
            [c[0] for c in chunks], [treename] * len(chunks), [branches] * len(chunks),
            [c[1] for c in chunks], [c[2] for c in chunks],
            pure=False,
        )
        n = sum(client.gather(futures))
        dt = time.perf_counter() - t0
    expected = sum(b - a for _, a, b in chunks)
    if n != expected:
        raise RuntimeError(f"floor read {n} entries, expected {expected}")
    return dt


def _reader_branches(path: str) -> list[str]:
    """Branches the run reads: the pfnano reader's ``branches()`` on this file."""
    import uproot

    from processors.jet_tracks import JetTrackProcessor

    reader = JetTrackProcessor().reader_for("pfnano")
    with uproot.open(path) as f:
        available = set(f["Events"].keys())
    return reader.branches(available)


# -- sections -------------------------------------------------------------------------------


def _repeats(args) -> int:
    return max(1, getattr(args, "pipeline_repeats", None) or _REPEATS)


def section_e2e(args: argparse.Namespace | None = None) -> dict:
    repeats = _repeats(args)
    spec = E2E_DATA
    res: dict[str, Any] = {"e2e_load_before": _load()}
    with _cache_env(), _cluster(2) as client:
        paths = [str(p) for p in _dataset("e2e", spec, client)]
        branches = _reader_branches(paths[0])
        cfg = _cfg(paths, processor=PROCESSOR, chunksize=spec["chunksize"])
        cfg_noml = _cfg(paths, processor=PROCESSOR, chunksize=spec["chunksize"], ml=False)
        log("e2e: warm-up")
        _, warm = _run(cfg, client)  # imports, numba compile in both workers, entries cache filled
        chunks = [(c["file"], c["range"][0], c["range"][1]) for c in warm.report["timing"]["chunks"]]
        _floor(client, chunks[:2], branches)
        meter = _Meter(_pids(client))
        floors, procs, noml = [], [], []
        for _ in range(repeats):  # interleaved: drifts in machine load hit all three alike
            floors.append(_floor(client, chunks, branches, meter))
            procs.append(_run(cfg, client, meter))
            noml.append(_run(cfg_noml, client, meter)[0])
        dt_proc, result = _best(procs)
        floor = min(floors)
        t = result.report["timing"]
        n_events = result.report["entries"]["processed"]
        res |= {
            "e2e_processor_s": round(dt_proc, 3),
            "e2e_io_floor_s": round(floor, 3),
            "e2e_ratio": round(dt_proc / floor, 3),
            "e2e_processor_process_s": t["process_s"],
            "e2e_process_ratio": round(t["process_s"] / floor, 3),
            "e2e_processor_no_ml_s": round(min(noml), 3),
            "e2e_no_ml_ratio": round(min(noml) / floor, 3),
            "e2e_metadata_s": t["metadata_s"],
            "e2e_events": n_events,
            "e2e_events_per_s": round(n_events / dt_proc, 1),
            "e2e_chunks": len(chunks),
            "e2e_files": len(paths),
            "e2e_branches": len(branches),
            "e2e_pf_candidates_per_event": _mean_candidates(paths[0]),
            "e2e_mb_on_disk": round(sum(os.path.getsize(p) for p in paths) / 1e6, 1),
            "e2e_workers": 2,
            **meter.report("e2e"),
        }
    res["e2e_load_after"] = _load()
    return res


def _mean_candidates(path: str) -> float:
    import uproot

    with uproot.open(path) as f:
        n = f["Events"]["nPFCands"].array(library="np", entry_stop=500)
    return round(float(n.mean()), 1)


def section_scaling(args: argparse.Namespace | None = None) -> dict:
    repeats = _repeats(args)
    spec = SCALING_DATA
    res: dict[str, Any] = {"scaling_load_before": _load()}
    with _cache_env():
        paths = _dataset("scaling", spec)
        with _xrootd() as server:
            cfg = _cfg([server.url_for(p) for p in paths], processor=PROCESSOR, chunksize=spec["chunksize"])
            meter = _Meter([server.pid])
            best = {}
            for n in (1, 2):
                with _cluster(n) as client:
                    log(f"scaling: {n} worker(s)")
                    meter.add(*_pids(client))
                    _run(cfg, client, max_files=10)  # warm-up: imports, numba compile, XRootD connections
                    best[n] = _best([_run(cfg, client, meter) for _ in range(repeats)])
            (dt1, r1), (dt2, r2) = best[1], best[2]
            p1, p2 = r1.report["timing"]["process_s"], r2.report["timing"]["process_s"]
            res |= {
                "scaling_1_worker_s": round(dt1, 3),
                "scaling_2_workers_s": round(dt2, 3),
                "scaling_speedup": round(dt1 / dt2, 3),
                "scaling_1_worker_process_s": p1,
                "scaling_2_workers_process_s": p2,
                "scaling_process_speedup": round(p1 / p2, 3),
                "scaling_files": len(paths),
                "scaling_events": r2.report["entries"]["processed"],
                **meter.report("scaling"),
            }
    res["scaling_load_after"] = _load()
    return res


def section_remote(args: argparse.Namespace | None = None) -> dict:
    repeats = _repeats(args)
    spec = SCALING_DATA
    res: dict[str, Any] = {"remote_load_before": _load()}
    with _cache_env():
        paths = _dataset("scaling", spec)
        with _xrootd() as server, _cluster(2) as client:
            local = _cfg([str(p) for p in paths], processor=PROCESSOR, chunksize=spec["chunksize"])
            remote = _cfg([server.url_for(p) for p in paths], processor=PROCESSOR, chunksize=spec["chunksize"])
            meter = _Meter([server.pid, *_pids(client)])
            log("remote: warm-up")
            _run(local, client)  # also fills the entries cache for both
            _run(remote, client)
            runs_local, runs_remote = [], []
            for _ in range(repeats):
                runs_local.append(_run(local, client, meter))
                runs_remote.append(_run(remote, client, meter))
            (dl, rl), (dr, rr) = _best(runs_local), _best(runs_remote)
            res |= {
                "remote_xrootd_s": round(dr, 3),
                "remote_local_s": round(dl, 3),
                "remote_ratio": round(dr / dl, 3),
                "remote_xrootd_process_s": rr.report["timing"]["process_s"],
                "remote_local_process_s": rl.report["timing"]["process_s"],
                "remote_xrootd_metadata_s": rr.report["timing"]["metadata_s"],
                "remote_local_metadata_s": rl.report["timing"]["metadata_s"],
                "remote_files": len(paths),
                **meter.report("remote"),
            }
    res["remote_load_after"] = _load()
    return res


def section_scheduler(args: argparse.Namespace | None = None) -> dict:
    repeats = _repeats(args)
    spec = SCHEDULER_DATA
    res: dict[str, Any] = {"scheduler_load_before": _load()}
    with _cache_env(), _cluster(2) as client:
        paths = [str(p) for p in _dataset("scheduler", spec, client)]
        cfg = _cfg(paths, processor=NOOP, chunksize=spec["chunksize"], ml=False)
        meter = _Meter(_pids(client))
        log("scheduler: warm-up")
        _run(cfg, client, max_files=2)
        runs = [_run(cfg, client, meter) for _ in range(repeats)]
        best_process = min(r.report["timing"]["process_s"] for _, r in runs)
        dt, result = _best(runs)
        rep = result.report
        n_chunks = rep["chunks"]
        res |= {
            "scheduler_chunks_per_s": round(n_chunks / best_process, 1),
            "scheduler_chunks_per_s_total": round(n_chunks / dt, 1),
            "scheduler_chunks": n_chunks,
            "scheduler_total_s": round(dt, 3),
            "scheduler_process_s": best_process,
            "scheduler_chunk_median_ms": round(
                1000 * sorted(c["seconds"] for c in rep["timing"]["chunks"])[n_chunks // 2], 2
            ),
            "scheduler_workers": 2,
            **meter.report("scheduler"),
        }
    res["scheduler_load_after"] = _load()
    return res


#: name -> function(args=None) -> flat dict (keys prefixed with the section name).
SECTIONS: dict[str, Callable[..., dict]] = {
    "e2e": section_e2e,
    "scaling": section_scaling,
    "remote": section_remote,
    "scheduler": section_scheduler,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", default=None, help=f"sections: {', '.join(SECTIONS)}")
    p.add_argument("--repeats", dest="pipeline_repeats", type=int, default=_REPEATS)
    args = p.parse_args(argv)
    names = [n for item in (args.only or [",".join(SECTIONS)]) for n in item.split(",") if n]
    out: dict[str, Any] = {}
    for name in names:
        log(f"== {name}")
        t0 = time.perf_counter()
        out |= SECTIONS[name](args)
        log(f"{name} done in {time.perf_counter() - t0:.1f} s")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT))
    sys.exit(main())
