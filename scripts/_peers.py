"""The ``peers`` section of ``scripts/benchmark.py`` (issue 11); documented there.

jettracks against what a user would pick instead, on the same realistic files,
each measurement in a fresh subprocess:

* ``rdf``: ROOT RDataFrame with the ΔR loop in C++ (``scripts/peers_rdf.py``, run
  by the ROOT venv's Python), 1 thread and ``EnableImplicitMT(2)``;
* ``coffea``: an idiomatic coffea processor (:class:`IdiomaticDxyProcessor`,
  NanoEvents ``BaseSchema``, ``ak.cartesian``, one ``hist.Hist``) with coffea's
  ``Runner`` + ``IterativeExecutor``;
* ``jettracks``: ``jettracks.run(config)`` with all default outputs but plots,
  serial and on a 2-worker LocalCluster;
* ``io_floor``: uproot reading only the branches the selection needs, same chunks, with the
  decoders jettracks reads with (``jettracks.readers.codecs``: LZMA by imagecodecs);
  ``io_floor_uproot``: the same with uproot's own decoders (cramjam), what a plain uproot
  user gets.

This file is also the child process: ``python scripts/_peers.py child KIND SPEC``
(SPEC: JSON) runs one measurement and prints one JSON object on its last stdout line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
MIB = 2**20

#: Writer options of ``jettracks.generate`` giving the real layouts: PFNano at LZMA level 9
#: with ROOT's 32 kB per-branch baskets (~4 events a ``PFCands_*`` basket, like
#: /work/shared/data/cms/pfnano.root), the JetNtuple (record 12100) at ZLIB-1, same baskets.
#: Used when the generator has these options (``basket_bytes`` in its writer's DEFAULTS);
#: otherwise, or with ``--peers-layout root``, the generated files are rewritten by
#: ROOT (``Snapshot``, same compression, ROOT's default baskets).
GENERATOR_REAL_LAYOUT: dict[str, dict[str, Any]] = {
    "pfnano": {"compression": "lzma", "compression_level": 9, "basket_bytes": 32_000},
    "jetntuple": {"compression": "zlib", "compression_level": 1, "basket_bytes": 32_000},
}
#: The ROOT rewrite: (algorithm, level) per format.
ROOT_REWRITE = {"pfnano": ("lzma", 9), "jetntuple": ("zlib", 1)}
#: Without ROOT and without generator options: uproot writes the baskets (one per
#: ``extend`` of 4 events, every branch) at LZMA-9; closest the generator gets today.
UPROOT_FALLBACK_LAYOUT = {"compression_level": 9, "basket_events": 4}

TREES = {"pfnano": "Events", "jetntuple": "AK4jets/jetTree"}
SEED = 20261125
WARM_SEED = 4242
PILEUP_CANDIDATES = 1900
CUTS = {"cone_dr": 0.5, "jet_pt_min": 30.0, "jet_abs_eta_max": 2.5, "track_pt_min": 1.0}
#: The branches the selection needs (the I/O floor reads exactly these).
MINIMAL_BRANCHES = [
    "run", "luminosityBlock", "event", "Jet_pt", "Jet_eta", "Jet_phi",
    "PFCands_pt", "PFCands_eta", "PFCands_phi", "PFCands_charge", "PFCands_d0", "PFCands_d0Err",
]
ROOT_VENV = PROJECT / ".venv-root"
PROCESSOR = "processors.jet_tracks:JetTrackProcessor"


def log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# =====================================================================================
# The ROOT venv
# =====================================================================================
def root_python(venv: Path, *, install: bool = True) -> tuple[str | None, str]:
    """(python of a venv where ``import ROOT`` works, reason) -- (None, why) when it cannot be had.

    ``pip install root`` (PyPI, ~680 MB) into ``venv``, created on demand; never the
    project's venv (``root`` is no project dependency). ``make bench-root`` does the same.
    """
    py = venv / "bin" / "python"
    check = [str(py), "-c", "import warnings; warnings.simplefilter('ignore'); import ROOT; print(ROOT.gROOT.GetVersion())"]

    def works() -> str | None:
        if not py.exists():
            return None
        r = subprocess.run(check, capture_output=True, text=True, timeout=300, check=False)
        return r.stdout.strip().splitlines()[-1] if r.returncode == 0 and r.stdout.strip() else None

    if (version := works()):
        return str(py), f"ROOT {version}"
    if not install:
        return None, f"no working ROOT in {venv} (make bench-root)"
    log(f"installing ROOT from PyPI into {venv} (pip install root; ~680 MB, a few minutes)")
    try:
        if not py.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)],
                           check=True, capture_output=True, text=True, timeout=600)
        (venv / ".gitignore").write_text("*\n")
        r = subprocess.run([str(py), "-m", "pip", "install", "-q", "root", "numpy"],
                           capture_output=True, text=True, timeout=1800, check=False)
        if r.returncode != 0:
            return None, "pip install root failed: " + (r.stderr.strip().splitlines() or ["?"])[-1]
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"cannot create the ROOT venv {venv}: {err}"
    if (version := works()):
        return str(py), f"ROOT {version}"
    return None, f"pip install root succeeded but 'import ROOT' fails in {venv}"


# =====================================================================================
# Input files
# =====================================================================================
def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _layout(path: str, tree: str, branch: str) -> dict:
    import uproot

    with uproot.open(path) as f:
        t = f[tree]
        b = t[branch]
        return {
            "compression": str(f.file.compression),
            "events_per_basket": round(t.num_entries / max(b.num_baskets, 1), 2),
            "baskets": int(b.num_baskets),
        }


def _rewrite_all(root_py: str, jobs: list[tuple[str, str, str]], fmt: str) -> None:
    """ROOT ``Snapshot`` copies, two processes at a time (2 cores)."""
    algo, level = ROOT_REWRITE[fmt]
    script = str(PROJECT / "scripts" / "peers_rdf.py")
    pending = list(jobs)
    running: list[tuple[subprocess.Popen, str]] = []
    while pending or running:
        while pending and len(running) < 2:
            src, dst, tree = pending.pop(0)
            cmd = [root_py, script, "rewrite", src, dst, "--tree", tree, "--algo", algo, "--level", str(level)]
            running.append((subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), dst))
        proc, dst = running.pop(0)
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"ROOT rewrite of {dst} failed: {err.strip()[-2000:]}")


def generator_layout(fmt: str) -> dict[str, Any] | None:
    """:data:`GENERATOR_REAL_LAYOUT` of ``fmt`` if the generator has these writer options, else None."""
    from jettracks.generate import split_options

    try:
        split_options(fmt, dict(GENERATOR_REAL_LAYOUT[fmt]))
    except ValueError:
        return None
    return dict(GENERATOR_REAL_LAYOUT[fmt])


def dataset(data_dir: Path, fmt: str, role: str, n_files: int, events: int, seed: int,
            root_py: str | None, how_wanted: str = "auto") -> tuple[list[str], str]:
    """Paths of ``n_files`` realistic files (generated, then laid out as real files), and the layout used.

    Kept under ``data_dir`` and reused: the generator's sidecar decides for its own
    files, a ``layout.json`` beside the ROOT-rewritten copies for those.
    """
    from jettracks.generate import generate_dataset

    gen_layout = generator_layout(fmt) if how_wanted in ("auto", "generator") else None
    if how_wanted == "generator" and gen_layout is None:
        raise RuntimeError("--peers-layout generator: jettracks.generate has no basket_bytes option yet")
    tag = f"{fmt}-{role}-{n_files}x{events}-seed{seed}-pu{PILEUP_CANDIDATES}"
    options: dict[str, Any] = {"pileup_candidates": PILEUP_CANDIDATES}
    if gen_layout is not None:
        how, rewrite = "generator:" + ",".join(f"{k}={v}" for k, v in sorted(gen_layout.items())), False
        options.update(gen_layout)
    elif root_py is not None:
        how, rewrite = "root-snapshot:{}-{}".format(*ROOT_REWRITE[fmt]), True
    elif how_wanted == "root":
        raise RuntimeError("--peers-layout root: no ROOT venv")
    else:
        how, rewrite = "uproot-fallback:" + ",".join(f"{k}={v}" for k, v in sorted(UPROOT_FALLBACK_LAYOUT.items())), False
        if fmt == "pfnano":
            options.update(UPROOT_FALLBACK_LAYOUT)
    gen_dir = data_dir / "gen" / (tag + ("" if rewrite else "-" + how.split(":")[0]))
    t0 = time.perf_counter()
    paths = [str(p) for p in generate_dataset(gen_dir, format=fmt, n_files=n_files, events_per_file=events,
                                              seed=seed, **options)]
    if time.perf_counter() - t0 > 1:
        log(f"generated {gen_dir} in {time.perf_counter() - t0:.0f} s")
    if not rewrite:
        return paths, how
    out_dir = data_dir / "real" / tag
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / "layout.json"
    targets = [str(out_dir / Path(p).name) for p in paths]
    spec = {"how": how, "sources": [[p, os.path.getsize(p), os.path.getmtime(p)] for p in paths]}
    try:
        ok = json.loads(marker.read_text()).get("spec") == spec and all(os.path.exists(t) for t in targets)
    except (OSError, ValueError):
        ok = False
    if not ok:
        t0 = time.perf_counter()
        marker.unlink(missing_ok=True)
        _rewrite_all(root_py, [(p, t, TREES[fmt]) for p, t in zip(paths, targets)], fmt)
        branch = "PFCands_pt" if fmt == "pfnano" else "PF_pT"
        _write_json(marker, {"spec": spec, "layout": _layout(targets[0], TREES[fmt], branch)})
        log(f"rewrote {len(targets)} {fmt} files with ROOT ({how}) in {time.perf_counter() - t0:.0f} s: {out_dir}")
    return targets, how


# =====================================================================================
# Child processes: one measurement each
# =====================================================================================
def _descendants_cpu() -> float:
    """user+sys seconds of this process, its reaped children and its live descendants."""
    import psutil

    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def _vmhwm_mb() -> float:
    """This process's peak resident set (VmHWM), MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _timed(fn, *a, **kw) -> tuple[Any, dict]:
    c0, t0 = _descendants_cpu(), time.perf_counter()
    value = fn(*a, **kw)
    t1 = time.perf_counter()
    c1 = _descendants_cpu()
    return value, {"wall_s": t1 - t0, "cpu_s": c1 - c0}


def _steps(num_entries: int, chunksize: int) -> list[tuple[int, int]]:
    """jettracks' (and coffea's) chunking of one file."""
    try:
        from jettracks.engines.base import chunk_steps

        return [tuple(s) for s in chunk_steps(num_entries, chunksize)]
    except ImportError:  # moved: coffea's rule, n = max(round(N / C), 1) steps of ceil(N / n)
        n = max(round(num_entries / chunksize), 1)
        step = math.ceil(num_entries / n) if num_entries else 0
        return [(a, min(a + step, num_entries)) for a in range(0, num_entries, step or 1)]


def child_io_floor(spec: dict) -> dict:
    import uproot

    if spec.get("codecs") == "jettracks":
        from jettracks.readers.codecs import use_fast_codecs

        use_fast_codecs()

    def read() -> tuple[int, int]:
        events = chunks = 0
        for path in spec["files"]:
            with uproot.open(path) as f:
                tree = f[spec["tree"]]
                for a, b in _steps(tree.num_entries, spec["chunksize"]):
                    arrays = tree.arrays(spec["branches"], entry_start=a, entry_stop=b)
                    events += len(arrays)
                    chunks += 1
                    del arrays
        return events, chunks

    (events, chunks), m = _timed(read)
    return {**m, "events": events, "chunks": chunks}


def _idiomatic_processor_class():
    import awkward as ak
    import hist
    import numpy as np
    from coffea import processor

    class IdiomaticDxyProcessor(processor.ProcessorABC):
        """What a coffea user writes: NanoEvents (BaseSchema), ``ak.cartesian`` ΔR, one histogram."""

        def process(self, events):
            jets = ak.zip({"pt": events.Jet_pt, "eta": events.Jet_eta, "phi": events.Jet_phi})
            jets = jets[(jets.pt > 30) & (abs(jets.eta) < 2.5)]
            cands = ak.zip({
                "pt": events.PFCands_pt, "eta": events.PFCands_eta, "phi": events.PFCands_phi,
                "charge": events.PFCands_charge, "d0": events.PFCands_d0, "d0Err": events.PFCands_d0Err,
            })
            tracks = cands[(cands.charge != 0) & (cands.pt >= 1)]
            pairs = ak.cartesian({"jet": jets, "trk": tracks}, axis=1, nested=True)  # [event][jet][track]
            deta = pairs.jet.eta - pairs.trk.eta
            dphi = (pairs.jet.phi - pairs.trk.phi + np.pi) % (2 * np.pi) - np.pi
            in_cone = pairs.trk[(deta**2 + dphi**2 < 0.5**2) & (pairs.trk.d0Err > 0)]
            h = hist.Hist.new.Reg(200, -0.1, 0.1, name="dxy", label="Track $d_{xy}$ [cm]").Double()
            h.fill(dxy=ak.flatten(in_cone.d0, axis=None))
            return {"dxy": h, "events": len(events)}

        def postprocess(self, accumulator):
            return accumulator

    return IdiomaticDxyProcessor


def child_coffea(spec: dict) -> dict:
    import io
    from contextlib import redirect_stdout

    from coffea import processor
    from coffea.nanoevents import BaseSchema

    proc_class = _idiomatic_processor_class()
    fileset = {"qcd": {"files": {p: spec["tree"] for p in spec["files"]}}}

    def run():
        runner = processor.Runner(executor=processor.IterativeExecutor(), schema=BaseSchema,
                                  chunksize=spec["chunksize"])
        with redirect_stdout(io.StringIO()):
            return runner(fileset, proc_class(), treename=spec["tree"])

    out, m = _timed(run)
    h = out["dxy"]
    return {**m, "events": int(out["events"]), "count": round(h.sum(flow=True)),
            "in_range": float(h.sum())}


def _jettracks_cfg(spec: dict, out_dir: str) -> dict:
    return {
        "name": "peers",
        "datasets": {"qcd": {"files": spec["files"], "format": spec["format"], "metadata": {"is_mc": True}}},
        "processor": {"class": PROCESSOR, "options": dict(CUTS)},
        "executor": {"backend": "serial" if spec["workers"] == 0 else "local",
                     "workers": max(spec["workers"], 1), "chunksize": spec["chunksize"]},
        # histograms, ML parts (unless spec "ml" is false), checkpoints, report
        "output": {"dir": out_dir, "plots": False, "ml": bool(spec.get("ml", True))},
    }


def child_jettracks(spec: dict) -> dict:
    import contextlib
    import io

    from rich.console import Console

    import jettracks
    import jettracks.execution
    import processors.jet_tracks  # noqa: F401  (imports are not timed)

    out_dir = tempfile.mkdtemp(prefix="jettracks-peers-out-")
    extra: dict[str, Any] = {}
    try:
        with contextlib.ExitStack() as stack:
            client = None
            if spec["workers"]:
                from distributed import Client, LocalCluster

                from jettracks.cluster import worker_environment

                t0 = time.perf_counter()
                worker_environment()
                cluster = stack.enter_context(LocalCluster(
                    n_workers=spec["workers"], threads_per_worker=1, processes=True, dashboard_address=":0"))
                client = stack.enter_context(Client(cluster))
                client.wait_for_workers(spec["workers"])
                extra["startup_s"] = time.perf_counter() - t0
            cfg = _jettracks_cfg(spec, out_dir)
            quiet = Console(file=io.StringIO())
            if spec.get("profile"):
                import cProfile
                import pstats

                prof = cProfile.Profile()
                prof.enable()
            before = {name.split(".")[0] for name in sys.modules}
            result, m = _timed(jettracks.run, cfg, client=client, progress=False, console=quiet)
            # What jettracks.run imports lazily (timed: a user's run pays it).
            extra["imported_in_run"] = sorted({n.split(".")[0] for n in sys.modules} - before)
            if spec.get("profile"):
                prof.disable()
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(45)
                extra["profile"] = buf.getvalue()
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
                extra["profile_tottime"] = buf.getvalue()
            if client is not None:
                extra["worker_peak_rss_mb"] = sorted(client.run(_vmhwm_mb).values())
        status = result.report["status"]
        if status != "ok":
            raise RuntimeError(f"jettracks run status {status}")
        cut = result.cutflow["qcd"]
        ml = sorted(p.name for p in (Path(out_dir) / "ml").glob("*.parquet"))
        return {**m, **extra, "events": int(cut["events"]), "entries": int(cut["entries"]),
                "cutflow": {k: int(v) for k, v in cut.items()}, "ml_parts": len(ml),
                "hists": sorted(result.hists)}
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def child_stages(spec: dict) -> dict:
    """Where one jettracks chunk's time goes (a file = one chunk), read as the engines read it.

    Each file is one chunk through ``jettracks.engines.base.run_chunk`` with the engines'
    ``ChunkReader`` (the processor's column plan and sub-batches where jettracks has them),
    no checkpoint. Timed by wrapping: uproot's LZMA decompression, the association
    kernel, and the processor's ``analyse`` (reading the columns, interpretation,
    selection, association, flavour), ``fill``, ``cutflow`` and ML part writing.
    ``read_other_s`` is the rest of the chunk: opening the file, reading and
    interpreting outside ``analyse``, merging sub-batches. The first file is a warm-up
    (numba cache load, lazy imports); the figures are the mean of the others.
    """
    import uproot

    import processors.jet_tracks as jt_mod
    from jettracks.engines.base import ChunkSpec, reader_for, run_chunk

    acc: dict[str, float] = {}
    inside: list[str] = []  # the processor stages being timed (decompression is charged to the innermost)

    def wrap(owner, name: str, key: str):
        original = getattr(owner, name)

        def timed(*a, **kw):
            t = time.perf_counter()
            inside.append(key)
            try:
                return original(*a, **kw)
            finally:
                inside.pop()
                dt = time.perf_counter() - t
                acc[key] = acc.get(key, 0.0) + dt
                if inside and key in ("decompress", "kernel"):
                    acc[f"{key}_in_{inside[-1]}"] = acc.get(f"{key}_in_{inside[-1]}", 0.0) + dt

        setattr(owner, name, timed)
        return original

    fmt = spec.get("format", "pfnano")
    saved = [(codec, "decompress", wrap(codec, "decompress", "decompress"))  # PFNano: LZMA, JetNtuple: ZLIB
             for codec in (uproot.compression._DecompressLZMA, uproot.compression._DecompressZLIB)]
    saved.append((jt_mod, "associate_tracks", wrap(jt_mod, "associate_tracks", "kernel")))
    if fmt == "jetntuple":  # its kernel: the compiled selection of the stored candidates
        from jettracks.readers.jetntuple import StoredTracks

        saved.append((StoredTracks, "select", wrap(StoredTracks, "select", "kernel")))
    ml_dir = tempfile.mkdtemp(prefix="jettracks-peers-ml-")
    proc = jt_mod.JetTrackProcessor(ml_dir=ml_dir, **CUTS)
    for name, key in (("analyse", "analyse"), ("fill", "fill"), ("cutflow", "cutflow"), ("_write_ml_part", "ml_write")):
        if hasattr(proc, name):
            wrap(proc, name, key)
    reader = reader_for(None, None)
    rows = []
    try:
        for path in spec["files"]:
            acc.clear()
            with uproot.open(path) as f:
                n = f[spec["tree"]].num_entries
            chunk = ChunkSpec("qcd", path, spec["tree"], 0, n, "", {"format": fmt, "is_mc": True})
            c0, t0 = time.process_time(), time.perf_counter()
            out, record = run_chunk(proc, chunk, reader)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if out is None:
                raise RuntimeError(f"stage profile chunk failed: {record.error}")
            a = dict(acc)
            rows.append({
                "events": n, "chunk_s": wall, "chunk_cpu_s": cpu, "decompress_s": a.get("decompress", 0.0),
                "kernel_s": a.get("kernel", 0.0),
                # analyse may read columns lazily: decompression inside it is split out
                "analyse_other_s": a.get("analyse", 0.0) - a.get("kernel_in_analyse", 0.0)
                - a.get("decompress_in_analyse", 0.0),
                "fill_s": a.get("fill", 0.0), "cutflow_s": a.get("cutflow", 0.0), "ml_write_s": a.get("ml_write", 0.0),
            })
            r = rows[-1]
            r["read_other_s"] = wall - sum(r[k] for k in ("decompress_s", "kernel_s", "analyse_other_s", "fill_s",
                                                          "cutflow_s", "ml_write_s"))
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
        shutil.rmtree(ml_dir, ignore_errors=True)
    timed = rows[1:] or rows
    out = {k: sum(r[k] for r in timed) / len(timed) for k in timed[0]}
    out["first_chunk_s"] = rows[0]["chunk_s"]
    out.update({"wall_s": out["chunk_s"], "cpu_s": out["chunk_cpu_s"]})
    return out


CHILDREN = {"io_floor": child_io_floor, "coffea": child_coffea, "jettracks": child_jettracks,
            "stages": child_stages}


def child_main(kind: str, spec_json: str) -> int:
    t_start = time.perf_counter()
    spec = json.loads(spec_json)
    out = CHILDREN[kind](spec)
    out["process_wall_s"] = time.perf_counter() - t_start  # imports included
    # VmHWM, not ru_maxrss: Linux carries the forking parent's high-water mark into
    # ru_maxrss across exec (the benchmark process holds ~1.3 GiB after generating).
    out["peak_rss_mb"] = _vmhwm_mb()
    sys.stdout.flush()
    print(json.dumps(out), flush=True)
    return 0


def _run_child(cmd: list[str], what: str, env: dict | None = None, timeout: int = 3600) -> dict:
    """Run one measurement process; its last stdout line is its JSON."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=PROJECT,
                              env={**os.environ, **(env or {})}, timeout=timeout, check=False)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{what} failed (exit {proc.returncode}): {err.read()[-3000:]}")
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{what}: no JSON on stdout: {proc.stdout[-2000:]}")
    return json.loads(lines[-1])


def measure(kind: str, spec: dict) -> dict:
    """One measurement in a fresh interpreter with a private (cold) jettracks entries cache."""
    cache = tempfile.mkdtemp(prefix="jettracks-peers-cache-")
    try:
        return _run_child([sys.executable, str(Path(__file__).resolve()), "child", kind, json.dumps(spec)],
                          f"peers child {kind}", env={"JETTRACKS_CACHE_DIR": cache})
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def measure_rdf(root_py: str, fmt: str, threads: int, warm: list[str], files: list[str]) -> dict:
    cmd = [root_py, str(PROJECT / "scripts" / "peers_rdf.py"), "run", "--format", fmt,
           "--threads", str(threads), "--warm", *warm, "--files", *files]
    return _run_child(cmd, f"RDataFrame {fmt} {threads} thread(s)")


# =====================================================================================
# The section
# =====================================================================================
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peers-events", type=int, default=1500,
                   help="peers: events per file (default 1500: the issue's size)")
    p.add_argument("--peers-jetntuple-events", type=int, default=None,
                   help="peers: events per JetNtuple file (default 10x --peers-events: ~1.75 jets an "
                        "event pass, so the JetNtuple runs are long enough to time)")
    p.add_argument("--peers-files", type=int, default=2, help="peers: files per timed set (default 2)")
    p.add_argument("--peers-data", default=str(PROJECT / "data" / "bench" / "peers"), metavar="DIR",
                   help="peers: where the generated files are kept and reused")
    p.add_argument("--peers-layout", choices=("auto", "generator", "root"), default="auto",
                   help="peers: real file layout from the generator's options (auto: when it has them) "
                        "or from a ROOT Snapshot rewrite of generated files")
    p.add_argument("--peers-chunksize", type=int, default=100_000,
                   help="peers: entries per chunk, every peer (jettracks' default)")
    p.add_argument("--peers-repeats", type=int, default=1,
                   help="peers: runs of each measurement (interleaved; best wall time kept)")
    p.add_argument("--peers-root-venv", default=str(ROOT_VENV),
                   help="peers: venv for 'pip install root' (created on demand)")
    p.add_argument("--peers-no-root-install", action="store_true",
                   help="peers: do not pip-install root when the venv lacks it")
    p.add_argument("--peers-profile", action="store_true",
                   help="peers: also profile one jettracks serial run (cProfile, to stderr)")


def _mean_candidates(path: str) -> float:
    import uproot

    with uproot.open(path) as f:
        n = f["Events"]["nPFCands"].array(library="np")
    return float(n.mean()) if len(n) else 0.0


def _best(runs: list[dict]) -> dict:
    return min(runs, key=lambda r: r["wall_s"])


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def section_peers(args) -> dict:
    n_files, events = int(args.peers_files), int(args.peers_events)
    chunksize, repeats = int(args.peers_chunksize), max(1, int(args.peers_repeats))
    data_dir = Path(args.peers_data).expanduser().absolute()
    res: dict[str, Any] = {"peers_load_average_1min_start": _load()}

    root_py, root_reason = root_python(Path(args.peers_root_venv).expanduser().absolute(),
                                      install=not args.peers_no_root_install)
    log(f"RDataFrame: {root_reason}")
    res["peers_rdf_available"] = root_py is not None
    if root_py is None:
        res["peers_rdf_unavailable_reason"] = root_reason

    # -- files -----------------------------------------------------------------------------
    warm_events = min(events, 200)
    how = args.peers_layout
    files, layout = dataset(data_dir, "pfnano", "timed", n_files, events, SEED, root_py, how)
    warm, _ = dataset(data_dir, "pfnano", "warm", 1, warm_events, WARM_SEED, root_py, how)
    j_events = int(args.peers_jetntuple_events or 10 * events)
    jfiles, jlayout = dataset(data_dir, "jetntuple", "timed", n_files, j_events, SEED, root_py, how)
    jwarm, _ = dataset(data_dir, "jetntuple", "warm", 1, warm_events, WARM_SEED, root_py, how)
    lay = _layout(files[0], "Events", "PFCands_pt")
    res.update({
        "peers_files": n_files, "peers_events": n_files * events, "peers_events_per_file": events,
        "peers_chunksize": chunksize, "peers_repeats": repeats,
        "peers_candidates_per_event": _r(_mean_candidates(files[0]), 1),
        "peers_layout": layout, "peers_layout_compression": lay["compression"],
        "peers_layout_pfcands_events_per_basket": lay["events_per_basket"],
        "peers_jetntuple_layout": jlayout, "peers_jetntuple_events": n_files * j_events,
    })
    base = {"files": files, "tree": "Events", "chunksize": chunksize}

    # Prime numba's on-disk cache (a user's second run) on the warm files: not timed.
    log("priming jettracks (numba cache) on the warm-up files")
    measure("jettracks", {**base, "files": warm, "format": "pfnano", "workers": 0})
    measure("jettracks", {**base, "files": jwarm, "format": "jetntuple", "tree": TREES["jetntuple"], "workers": 0})

    # -- measurements: interleaved repeats, each in a fresh process --------------------------
    plan: list[tuple[str, Any]] = [
        ("io_floor", lambda: measure("io_floor", {**base, "branches": MINIMAL_BRANCHES, "codecs": "jettracks"})),
        ("io_floor_uproot", lambda: measure("io_floor", {**base, "branches": MINIMAL_BRANCHES, "codecs": "uproot"})),
        ("jettracks_serial", lambda: measure("jettracks", {**base, "format": "pfnano", "workers": 0})),
        ("coffea_idiomatic", lambda: measure("coffea", base)),
        ("jettracks_2workers", lambda: measure("jettracks", {**base, "format": "pfnano", "workers": 2})),
        ("jetntuple_jettracks", lambda: measure("jettracks", {
            **base, "files": jfiles, "tree": TREES["jetntuple"], "format": "jetntuple", "workers": 0})),
        # The same without the ML columns: the histograms and cut flow need 12 of the 16 branches.
        ("jetntuple_jettracks_no_ml", lambda: measure("jettracks", {
            **base, "files": jfiles, "tree": TREES["jetntuple"], "format": "jetntuple", "workers": 0, "ml": False})),
    ]
    if root_py is not None:
        plan += [
            ("rdf_1thread", lambda: measure_rdf(root_py, "pfnano", 1, warm, files)),
            ("rdf_2threads", lambda: measure_rdf(root_py, "pfnano", 2, warm, files)),
            ("jetntuple_rdf", lambda: measure_rdf(root_py, "jetntuple", 1, jwarm, jfiles)),
        ]
    runs: dict[str, list[dict]] = {name: [] for name, _ in plan}
    for rep in range(repeats):
        for name, fn in plan:
            load = _load()
            r = fn()
            r["load_before"] = load
            runs[name].append(r)
            log(f"run {rep + 1}/{repeats} {name}: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU, "
                f"peak RSS {r['peak_rss_mb']:.0f} MiB (load {load})")
    best = {name: _best(rs) for name, rs in runs.items()}
    n_events = n_files * events

    # -- cross-checks (abort on a mismatch) -------------------------------------------------
    jt, jt2 = best["jettracks_serial"], best["jettracks_2workers"]
    valid = jt["cutflow"]["tracks_valid_dxy"]
    problems = []
    if jt["events"] != n_events or jt2["cutflow"] != jt["cutflow"]:
        problems.append(f"jettracks cut flows: serial {jt['cutflow']}, 2 workers {jt2['cutflow']}")
    if best["io_floor"]["events"] != n_events:
        problems.append(f"I/O floor read {best['io_floor']['events']} events, expected {n_events}")
    reference = ("jettracks tracks_valid_dxy", valid)
    if root_py is not None:
        r1, r2 = best["rdf_1thread"], best["rdf_2threads"]
        if r1["count"] != valid:
            problems.append(f"RDataFrame counts {r1['count']} valid tracks, jettracks' cut flow "
                            f"tracks_valid_dxy {valid} ({jt['cutflow']})")
        if r2["count"] != r1["count"] or r1["entries"] != n_events or r2["entries"] != n_events:
            problems.append(f"RDataFrame 1 thread {r1['count']} tracks / {r1['entries']} events, "
                            f"2 threads {r2['count']} / {r2['entries']} (expected {n_events} events)")
        reference = ("RDataFrame valid tracks", r1["count"])
        jr, jj = best["jetntuple_rdf"], best["jetntuple_jettracks"]
        if best["jetntuple_jettracks_no_ml"]["cutflow"] != jj["cutflow"]:
            problems.append(f"JetNtuple cut flows with ML {jj['cutflow']}, without "
                            f"{best['jetntuple_jettracks_no_ml']['cutflow']}")
        if jr["count"] != jj["cutflow"]["tracks_in_cone"] or jr["entries"] != jj["entries"]:
            problems.append(f"JetNtuple: RDataFrame {jr['count']} tracks in cones over {jr['entries']} jets, "
                            f"jettracks tracks_in_cone {jj['cutflow']['tracks_in_cone']} over {jj['entries']}")
    co = best["coffea_idiomatic"]
    if co["count"] != reference[1] or co["events"] != n_events:
        problems.append(f"coffea idiomatic histogram holds {co['count']} tracks ({co['events']} events), "
                        f"{reference[0]} {reference[1]}")
    if problems:
        raise RuntimeError("peers cross-check failed: " + "; ".join(problems))
    res["peers_tracks_valid_dxy"] = valid

    # -- figures ------------------------------------------------------------------------------
    for name, r in best.items():
        p = f"peers_{name}"
        res[f"{p}_s"] = _r(r["wall_s"])
        res[f"{p}_cpu_s"] = _r(r["cpu_s"])
        res[f"{p}_peak_rss_mb"] = _r(r["peak_rss_mb"], 1)
        res[f"{p}_process_wall_s"] = _r(r.get("process_wall_s"))
        res[f"{p}_load_before"] = r["load_before"]
        if not name.startswith("jetntuple"):
            res[f"{p}_events_per_s"] = _r(n_events / r["wall_s"], 1)
            res[f"{p}_cpu_ms_per_event"] = _r(1000 * r["cpu_s"] / n_events)
        if repeats > 1:
            res[f"{p}_all_s"] = [_r(x["wall_s"]) for x in runs[name]]
    w = best["jettracks_2workers"]
    res["peers_jettracks_2workers_startup_s"] = _r(w.get("startup_s"))
    res["peers_jettracks_2workers_worker_peak_rss_mb"] = [_r(x, 1) for x in w.get("worker_peak_rss_mb", [])]
    res["peers_jettracks_2workers_client_peak_rss_mb"] = res.pop("peers_jettracks_2workers_peak_rss_mb")
    res["peers_jettracks_2workers_peak_rss_mb"] = _r(max(w.get("worker_peak_rss_mb") or [w["peak_rss_mb"]]), 1)
    res["peers_jettracks_ml_parts"] = jt["ml_parts"]
    res["peers_jettracks_serial_imported_in_run"] = [
        m for m in jt.get("imported_in_run", []) if not m.startswith("_")]
    jj = best["jetntuple_jettracks"]
    res["peers_jetntuple_jets"] = jj["entries"]
    res["peers_jetntuple_jettracks_jets_per_s"] = _r(jj["entries"] / jj["wall_s"], 1)
    jn = best["jetntuple_jettracks_no_ml"]
    res["peers_jetntuple_jettracks_no_ml_jets_per_s"] = _r(jn["entries"] / jn["wall_s"], 1)
    if root_py is not None:
        r1, r2, jr = best["rdf_1thread"], best["rdf_2threads"], best["jetntuple_rdf"]
        res["peers_rdf_root_version"] = r1["root_version"]
        res["peers_rdf_warmup_s"] = _r(r1["warm_s"])
        res["peers_rdf_2threads_pool_size"] = r2["pool_size"]
        res["peers_jetntuple_rdf_jets_per_s"] = _r(jr["entries"] / jr["wall_s"], 1)
        res["peers_rdf_ratio_1core"] = _ratio(jt["wall_s"], r1["wall_s"])
        res["peers_rdf_ratio_2core"] = _ratio(jt2["wall_s"], r2["wall_s"])
        res["peers_rdf_cpu_ratio_1core"] = _ratio(jt["cpu_s"], r1["cpu_s"])
        res["peers_rdf_cpu_ratio_2core"] = _ratio(jt2["cpu_s"], r2["cpu_s"])
        res["peers_jetntuple_rdf_ratio"] = _ratio(jj["wall_s"], jr["wall_s"])
        res["peers_jetntuple_no_ml_rdf_ratio"] = _ratio(jn["wall_s"], jr["wall_s"])
        res["peers_jetntuple_rdf_cpu_ratio"] = _ratio(jj["cpu_s"], jr["cpu_s"])
    else:
        for k in ("peers_rdf_ratio_1core", "peers_rdf_ratio_2core", "peers_jetntuple_rdf_ratio",
                  "peers_jetntuple_no_ml_rdf_ratio"):
            res[k] = None
    res["peers_coffea_ratio"] = _ratio(jt["wall_s"], co["wall_s"])
    res["peers_coffea_cpu_ratio"] = _ratio(jt["cpu_s"], co["cpu_s"])
    res["peers_coffea_rss_ratio"] = _ratio(jt["peak_rss_mb"], co["peak_rss_mb"])
    res["peers_e2e_ratio"] = _ratio(jt["wall_s"], best["io_floor"]["wall_s"])
    res["peers_e2e_cpu_ratio"] = _ratio(jt["cpu_s"], best["io_floor"]["cpu_s"])
    res["peers_e2e_uproot_floor_ratio"] = _ratio(jt["wall_s"], best["io_floor_uproot"]["wall_s"])
    res["peers_io_floor_speedup_of_codecs"] = _ratio(best["io_floor_uproot"]["cpu_s"], best["io_floor"]["cpu_s"])
    res["peers_load_average_1min_end"] = _load()

    if args.peers_profile:
        st = measure("stages", {**base, "files": [*warm, *files]})
        for k in ("events", "decompress_s", "read_other_s", "analyse_other_s", "kernel_s", "fill_s", "cutflow_s",
                  "ml_write_s", "chunk_s", "chunk_cpu_s", "first_chunk_s"):
            res[f"peers_profile_chunk_{k}"] = _r(st[k])
        st = measure("stages", {**base, "files": [*jwarm, *jfiles], "tree": TREES["jetntuple"], "format": "jetntuple"})
        for k in ("events", "decompress_s", "read_other_s", "analyse_other_s", "kernel_s", "fill_s", "cutflow_s",
                  "ml_write_s", "chunk_s", "chunk_cpu_s", "first_chunk_s"):
            res[f"peers_profile_jetntuple_chunk_{k}"] = _r(st[k])
        log("profiling one jettracks serial run (cProfile)")
        prof = measure("jettracks", {**base, "format": "pfnano", "workers": 0, "profile": True})
        log(prof["profile"])
        log(prof["profile_tottime"])
    return res


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "child":
        sys.exit(child_main(sys.argv[2], sys.argv[3]))
    raise SystemExit("usage: run the peers section with scripts/benchmark.py --only peers")
