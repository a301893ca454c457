#!/usr/bin/env python
"""jettracks benchmarks: prints ONE flat JSON object on stdout.

Usage::

    python scripts/benchmark.py                 # every registered section
    python scripts/benchmark.py --only kernel   # one section (repeatable / comma list)

Sections live in :data:`SECTIONS` (name -> function). A section function takes the
parsed ``argparse.Namespace`` and returns a flat ``dict`` whose keys (prefixed with
the section name, e.g. ``kernel_...``) are merged into the single JSON object.
Progress and notes go to stderr, only the JSON goes to stdout. To add a section:
write ``def section_NAME(args) -> dict`` and add it to ``SECTIONS`` (its
options, if any, to :func:`parse_args` as ``--NAME-...``).

Section ``kernel``: track-to-jet ΔR association (``cone_dr=0.5``, mode ``all``,
charged candidates only) on synthetic PFNano-like events, three implementations
side by side in one run:

* ``numba``   – :func:`jettracks.physics.kernels.associate_tracks` on the flat buffers
  (+ the ``charge != 0`` mask). One warm-up call first, so JIT compile / cache
  load time is excluded from the rate.
* ``awkward`` – the idiomatic columnar version, as coffea's ``metric_table``:
  ``ak.cartesian([jets, tracks], nested=True)`` -> ΔR per (jet, track) pair ->
  ``ΔR < R`` mask -> the per-jet track lists (and their ΔR). One warm-up call on
  a few events first.
* ``python``  – the per-event, per-jet, per-candidate loop over Python floats
  with ``math`` a physicist would write. Timed on a subset (``--kernel-python-events``)
  and scaled to events/s; converting the inputs to Python lists is not timed.
  ``kernel_python_preselected_*``: the same loop with the charged candidates
  picked once per event instead of tested in every jet's loop (~20% faster).

Rates are events / best-of-``--repeats`` wall time (``time.perf_counter``; the
awkward and Python versions at most 3 repeats); the best of several runs is the
least disturbed by other work on the machine. ``kernel_*_cpu_events_per_s``
are the same from the thread's CPU time (``time.thread_time``: user + system,
page faults included), which waiting for a core does not inflate; compare the
two and ``kernel_load_average_1min`` when the machine was busy. The numba time
includes building the ``charge != 0`` mask, the awkward time the
``cands[cands.charge != 0]`` selection; the Python loop tests the charge itself.

Before timing, all three are checked to give the same association (tracks per
jet; the numba and Python track indices too) on a subset: any difference not
explained by a candidate within 1e-6 of the cone boundary (float32 arithmetic in
the awkward version, ``hypot`` vs ``ΔR² < R²`` in the Python loop) aborts.

Peak memory (``kernel_*_peak_mb``, MiB = 2**20 bytes): each method runs once in a
fresh subprocess that loads the inputs from ``.npy`` files (no generation
transients), builds its input objects, does its warm-up call, runs ``gc`` and
``malloc_trim``, and reads its resident set size (``VmRSS``) as the baseline; it
then resets the RSS high-water mark (``echo 5 > /proc/self/clear_refs``), runs the
method once on all events, and reports ``VmHWM - baseline``: the peak growth of
resident memory, whoever allocated it. (Where ``clear_refs`` is not writable it
falls back to ``ru_maxrss - baseline``, which is only right if loading the inputs
peaked lower than the method.) A second pair of figures,
``kernel_*_tracemalloc_peak_mb``, comes from ``tracemalloc`` in another fresh
subprocess each: the kernel's outputs are numpy arrays and its scratch arrays
come from numba 0.68's NRT, which allocates through ``PyMem_RawMalloc``, so
tracemalloc does see them (checked: an ``np.empty`` inside ``@njit`` shows up);
awkward's buffers are numpy arrays too. But tracemalloc counts bytes allocated
rather than pages touched (the kernel's output arrays may be allocated up to
twice the output and are touched only as far as they are filled), and it would
miss any allocation made outside Python's allocators. The RSS figures are the
primary ones.

Section ``peers`` (issue 11; code in ``scripts/_peers.py`` and ``scripts/peers_rdf.py``):
jettracks end to end against what a user would pick instead, side by side in one
run on the same realistic files, with the same cuts (jet pT > 30 GeV, |η| < 2.5;
charged PF candidates, pT >= 1 GeV, strict ΔR < 0.5 to the jet, every jet whose cone
holds the track; valid d0: ``d0Err > 0``) and the same chunk size (``--peers-chunksize``,
default 100,000 entries, jettracks' default: one chunk a file here)::

    python scripts/benchmark.py --only peers                      # the issue's size
    python scripts/benchmark.py --only peers --peers-events 200   # quick run
    make bench-peers                                              # bench-root, then the section

* Files: ``--peers-files`` (2) PFNano files x ``--peers-events`` (1,500) events with
  ~1,900 PF candidates an event (``pileup_candidates=1900``), made by
  ``jettracks.generate`` in the real layout: LZMA level 9 and ROOT's per-branch
  32 kB baskets (~4 events a ``PFCands_*`` basket, as the real ``pfnano.root``),
  via the generator's writer options where it has them (``basket_bytes``), else
  (or with ``--peers-layout root``) by rewriting the generated files with ROOT
  (``RDataFrame.Snapshot``, LZMA-9, ROOT's default baskets). The same events as
  JetNtuple files (``format=jetntuple``, ZLIB-1, same baskets; ``--peers-jetntuple-events``,
  default 10x as many events, since only ~1.75 jets an event are kept), plus one smaller
  warm-up file of each format (other seed). Kept under ``--peers-data``
  (default ``data/bench/peers``) and reused. ``peers_layout*`` say which layout was used.
* ``rdf``: ROOT RDataFrame (``pip install root`` into ``--peers-root-venv``,
  default ``.venv-root``, created on demand or by ``make bench-root``; never a
  project dependency; ``peers_rdf_available: false`` and
  ``peers_rdf_unavailable_reason`` when it cannot be had). The ΔR loop and the
  booking of the graph are C++ (``ROOT.gInterpreter.Declare``), one dxy
  histogram (200 bins, -0.1..0.1 cm). ``peers_rdf_1thread_*`` without and
  ``peers_rdf_2threads_*`` with ``ROOT.EnableImplicitMT(2)``. **JIT excluded**: the
  process runs the event loop twice, first on the warm-up file (cling compiles the
  declared code and RDF's templates, libraries load: ``peers_rdf_warmup_s``),
  then, timed, on the timed files, which that process has not read: RDF keeps
  the last basket of each branch, so a second loop over the same files would skip
  decompression.
* ``coffea_idiomatic``: a processor a coffea user would write (NanoEvents
  ``BaseSchema``, ``ak.zip`` jets and candidates, ``ak.cartesian(nested=True)``
  ΔR in float32, one ``hist.Hist``), coffea's ``Runner`` + ``IterativeExecutor``
  in one process.
* ``jettracks_serial`` / ``jettracks_2workers``: ``jettracks.run(config)`` with
  ``processors.jet_tracks:JetTrackProcessor`` and all its default outputs
  (histograms, per-jet ML Parquet parts, checkpoints, report) except plots;
  serial backend, and on a 2-worker LocalCluster (1 thread each) started before
  the clock (its start-up: ``peers_jettracks_2workers_startup_s``). Each run gets an
  empty entries cache (``JETTRACKS_CACHE_DIR``) and output directory; numba's
  on-disk cache is primed once beforehand by an untimed run on the warm-up files
  (a user's second run), so loading it is timed, compiling is not.
* ``io_floor``: uproot, with jettracks' decoders (LZMA by imagecodecs), reading only the
  branches the selection needs (``io_floor_uproot``: with uproot's own, cramjam) (run,
  luminosityBlock, event, Jet_pt/eta/phi, PFCands_pt/eta/phi/charge/d0/d0Err) with
  jettracks' chunking, no processing.
* ``jetntuple_*``: jettracks (serial) and RDataFrame (1 thread; cone cut on the
  stored ``PF_dR``, tracks ``|PF_id|`` in 11/13/211, a ΔR histogram) on the
  JetNtuple files; ``peers_jetntuple_*_jets_per_s``. ``jetntuple_jettracks_no_ml``: the same
  without ML output (``output.ml: false``: 12 of the 16 branches, no ``PF_dEta``/``PF_dPhi``),
  ``peers_jetntuple_no_ml_rdf_ratio``; RDF reads 5 branches and fills one histogram.

Every measurement runs in a fresh subprocess (``--peers-repeats`` interleaved
runs, best wall time kept, default 1). Timed: from after the imports a user's script
makes at its top (``coffea.processor``/``uproot``; ``jettracks``, ``jettracks.execution``
and the processor module, which import awkward, coffea, hist and numba) to the result;
what ``jettracks.run`` imports lazily is timed (listed in
``peers_jettracks_serial_imported_in_run``). ``*_process_wall_s``: the whole process,
interpreter start and every import included.
``*_s`` wall seconds, ``*_cpu_s`` user+system CPU seconds of the process, its
threads and its child processes (Dask workers and nannies included),
``*_cpu_ms_per_event``, ``*_peak_rss_mb`` the process's peak resident set (``VmHWM``,
MiB: what ``ru_maxrss`` means, without the forking parent's high-water mark that
Linux carries into ``ru_maxrss`` across exec; for
``jettracks_2workers`` the largest worker's ``VmHWM``, the client's in
``..._client_peak_rss_mb``; ROOT alone is ~600 MiB). Ratios (targets):
``peers_rdf_ratio_1core = jettracks_serial_s / rdf_1thread_s`` (<= 1.0),
``peers_rdf_ratio_2core = jettracks_2workers_s / rdf_2threads_s`` (<= 1.0),
``peers_coffea_ratio = jettracks_serial_s / coffea_idiomatic_s`` (<= 0.8),
``peers_coffea_rss_ratio`` (peak RSS, same; <= 0.6), ``peers_e2e_ratio =
jettracks_serial_s / io_floor_s`` (<= 1.15; ``peers_e2e_uproot_floor_ratio`` against
``io_floor_uproot``, and ``peers_io_floor_speedup_of_codecs`` = uproot's floor CPU / jettracks'
decoders' floor CPU), ``peers_jetntuple_rdf_ratio`` (jettracks
serial / RDF 1 thread on the JetNtuple files, <= 0.5); ``*_cpu_ratio*`` the same from
CPU seconds. Cross-checks abort the section, with the numbers: RDF's count of valid
tracks (histogram fills, flow included) equals jettracks' cut-flow
``tracks_valid_dxy`` and the coffea histogram's count (1 and 2 threads alike); the
JetNtuple RDF count equals jettracks' ``tracks_in_cone``; serial and 2-worker cut
flows agree. ``peers_load_average_1min_start``/``_end`` and ``*_load_before``: the
machine's load (final figures belong to a quiet machine). ``--peers-profile`` adds
``peers_profile_chunk_*``: one 1,500-event chunk through the engines' ``run_chunk`` and
``ChunkReader`` (column plan, sub-batches), split by wrapping uproot's LZMA
decompression, the association kernel and the processor's ``analyse``/``fill``/
``cutflow``/ML part (``read_other_s``: the rest: opening, interpretation, batching);
``peers_profile_jetntuple_chunk_*`` the same for one JetNtuple file (one chunk, ZLIB
decompression, kernel: the compiled selection of the stored candidates);
and prints a cProfile of one more jettracks serial run to stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

MIB = 2**20


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# =====================================================================================
# Synthetic PFNano-like events
# =====================================================================================
def make_pfnano_like(
    n_events: int,
    *,
    seed: int = 20261125,
    mean_jets: float = 6.0,
    mean_candidates: float = 1900.0,
    mean_per_jet: float = 40.0,
    charged_fraction: float = 0.5,
) -> dict[str, np.ndarray]:
    """Flat float32 jets and PF candidates with int64 offsets (numpy only).

    Per event: Poisson(``mean_jets``) jets, uniform in |η| < 2.5 and φ; each jet has
    Poisson(``mean_per_jet``) candidates around its axis (exponential radial profile,
    mean 0.12); the rest of the Poisson(``mean_candidates``) candidates are uniform
    in |η| < 5 and φ (pile-up / underlying event). Candidates are shuffled within the
    event; a fraction ``charged_fraction`` has charge ±1, the others 0.
    """
    rng = np.random.default_rng(seed)
    n_jets = rng.poisson(mean_jets, n_events).astype(np.int64)
    jet_offsets = np.concatenate([[0], np.cumsum(n_jets)]).astype(np.int64)
    nj = int(jet_offsets[-1])
    jet_eta = rng.uniform(-2.5, 2.5, nj)
    jet_phi = rng.uniform(-np.pi, np.pi, nj)
    jet_event = np.repeat(np.arange(n_events, dtype=np.int64), n_jets)

    n_in_jet = rng.poisson(mean_per_jet, nj)
    owner = np.repeat(np.arange(nj, dtype=np.int64), n_in_jet)
    r = rng.exponential(0.12, owner.size)
    ang = rng.uniform(0.0, 2 * np.pi, owner.size)
    eta_c = jet_eta[owner] + r * np.cos(ang)
    phi_c = jet_phi[owner] + r * np.sin(ang)
    phi_c = (phi_c + np.pi) % (2 * np.pi) - np.pi
    ev_c = jet_event[owner]

    n_total = rng.poisson(mean_candidates, n_events)
    n_uniform = np.maximum(n_total - np.bincount(ev_c, minlength=n_events), 0)
    ev_u = np.repeat(np.arange(n_events, dtype=np.int64), n_uniform)
    eta_u = rng.uniform(-5.0, 5.0, ev_u.size)
    phi_u = rng.uniform(-np.pi, np.pi, ev_u.size)

    ev = np.concatenate([ev_c, ev_u])
    order = np.lexsort((rng.random(ev.size), ev))
    cand_eta = np.concatenate([eta_c, eta_u])[order].astype(np.float32)
    cand_phi = np.concatenate([phi_c, phi_u])[order].astype(np.float32)
    n_cand = np.bincount(ev, minlength=n_events)
    cand_offsets = np.concatenate([[0], np.cumsum(n_cand)]).astype(np.int64)
    q = rng.random(ev.size)
    cand_charge = np.where(
        q < charged_fraction / 2, -1, np.where(q < charged_fraction, 1, 0)
    ).astype(np.int32)
    return {
        "jet_eta": jet_eta.astype(np.float32),
        "jet_phi": jet_phi.astype(np.float32),
        "jet_offsets": jet_offsets,
        "cand_eta": cand_eta,
        "cand_phi": cand_phi,
        "cand_charge": cand_charge,
        "cand_offsets": cand_offsets,
    }


def slice_events(data: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The first ``n`` events (offsets rebased to 0)."""
    jo, co = data["jet_offsets"][: n + 1], data["cand_offsets"][: n + 1]
    out = {k: v[: jo[-1]] for k, v in data.items() if k.startswith("jet_") and k != "jet_offsets"}
    out.update({k: v[: co[-1]] for k, v in data.items() if k.startswith("cand_") and k != "cand_offsets"})
    out["jet_offsets"] = jo.copy()
    out["cand_offsets"] = co.copy()
    return out


# =====================================================================================
# Section "kernel": the three association implementations
# =====================================================================================
CONE_DR = 0.5


def numba_inputs(data):
    return data


def numba_associate(data, cone_dr=CONE_DR):
    """The project's kernel on flat buffers (what the processor does)."""
    from jettracks.physics.kernels import associate_tracks

    mask = data["cand_charge"] != 0
    return associate_tracks(
        data["jet_eta"], data["jet_phi"], data["jet_offsets"],
        data["cand_eta"], data["cand_phi"], data["cand_offsets"],
        cone_dr=cone_dr, mode="all", trk_mask=mask,
    )


def awkward_inputs(data):
    import awkward as ak

    jets = ak.unflatten(
        ak.zip({"eta": data["jet_eta"], "phi": data["jet_phi"]}),
        np.diff(data["jet_offsets"]),
    )
    cands = ak.unflatten(
        ak.zip({"eta": data["cand_eta"], "phi": data["cand_phi"], "charge": data["cand_charge"]}),
        np.diff(data["cand_offsets"]),
    )
    return jets, cands


def awkward_associate(inputs, cone_dr=CONE_DR):
    """Idiomatic awkward: all (jet, track) pairs per event, ΔR, mask, per-jet lists.

    Returns ``(tracks_in_cone, dr_in_cone)``, both ``[event][jet][track]``.
    """
    import awkward as ak

    jets, cands = inputs
    tracks = cands[cands.charge != 0]
    jet, trk = ak.unzip(ak.cartesian([jets, tracks], axis=1, nested=True))
    deta = trk.eta - jet.eta
    dphi = (trk.phi - jet.phi + np.pi) % (2 * np.pi) - np.pi
    dr = np.sqrt(deta**2 + dphi**2)
    in_cone = dr < cone_dr
    return trk[in_cone], dr[in_cone]


def python_inputs(data):
    """Per-event lists of Python floats (not timed)."""
    def split(values, offsets):
        values = values.tolist()
        return [values[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]

    return (
        split(data["jet_eta"], data["jet_offsets"]),
        split(data["jet_phi"], data["jet_offsets"]),
        split(data["cand_eta"], data["cand_offsets"]),
        split(data["cand_phi"], data["cand_offsets"]),
        split(data["cand_charge"], data["cand_offsets"]),
    )


def python_associate(inputs, cone_dr=CONE_DR):
    """The plain loop: per event, per jet, per charged candidate, ``math`` ΔR.

    Returns ``[event][jet] -> list of (candidate index in event, ΔR)``.
    """
    jets_eta, jets_phi, cands_eta, cands_phi, cands_charge = inputs
    result = []
    for ev in range(len(jets_eta)):
        c_eta, c_phi, c_q = cands_eta[ev], cands_phi[ev], cands_charge[ev]
        event_jets = []
        for jet_eta, jet_phi in zip(jets_eta[ev], jets_phi[ev]):
            in_cone = []
            for i in range(len(c_eta)):
                if c_q[i] == 0:
                    continue
                dphi = c_phi[i] - jet_phi
                if dphi > math.pi:
                    dphi -= 2 * math.pi
                elif dphi < -math.pi:
                    dphi += 2 * math.pi
                dr = math.hypot(c_eta[i] - jet_eta, dphi)
                if dr < cone_dr:
                    in_cone.append((i, dr))
            event_jets.append(in_cone)
        result.append(event_jets)
    return result


def python_associate_preselected(inputs, cone_dr=CONE_DR):
    """The same loop with the charged candidates picked once per event (a common
    small refinement, ~20% faster): reported as ``kernel_python_preselected_*``."""
    jets_eta, jets_phi, cands_eta, cands_phi, cands_charge = inputs
    result = []
    for ev in range(len(jets_eta)):
        tracks = [
            (i, eta, phi)
            for i, (eta, phi, q) in enumerate(zip(cands_eta[ev], cands_phi[ev], cands_charge[ev]))
            if q != 0
        ]
        event_jets = []
        for jet_eta, jet_phi in zip(jets_eta[ev], jets_phi[ev]):
            in_cone = []
            for i, eta, phi in tracks:
                dphi = phi - jet_phi
                if dphi > math.pi:
                    dphi -= 2 * math.pi
                elif dphi < -math.pi:
                    dphi += 2 * math.pi
                dr = math.hypot(eta - jet_eta, dphi)
                if dr < cone_dr:
                    in_cone.append((i, dr))
            event_jets.append(in_cone)
        result.append(event_jets)
    return result


METHODS = {
    "numba": (numba_inputs, numba_associate),
    "awkward": (awkward_inputs, awkward_associate),
    "python": (python_inputs, python_associate),
}


def _boundary_pairs(data, jet_global: int, event: int, cone_dr: float, tol: float = 1e-6) -> int:
    """Charged candidates of ``event`` with |ΔR(jet) - R| < tol (float64)."""
    from jettracks.physics.kernels import delta_r

    a, b = data["cand_offsets"][event], data["cand_offsets"][event + 1]
    q = data["cand_charge"][a:b] != 0
    dr = delta_r(data["jet_eta"][jet_global], data["jet_phi"][jet_global],
                 data["cand_eta"][a:b], data["cand_phi"][a:b])
    return int(np.count_nonzero(q & (np.abs(dr - cone_dr) < tol)))


def verify_kernel(data, n_events: int, cone_dr: float = CONE_DR) -> dict:
    """Run all three on the first ``n_events``; raise if their associations differ."""
    import awkward as ak

    sub = slice_events(data, n_events)
    nb = numba_associate(sub, cone_dr)
    trk_in, _ = awkward_associate(awkward_inputs(sub), cone_dr)
    ak_counts = ak.to_numpy(ak.flatten(ak.num(trk_in, axis=2), axis=1)).astype(np.int64)
    py = python_associate(python_inputs(sub), cone_dr)
    if python_associate_preselected(python_inputs(sub), cone_dr) != py:
        raise SystemExit("kernel verification FAILED: the two Python loops differ")
    py_counts = np.array([len(j) for ev in py for j in ev], dtype=np.int64)
    nb_counts = nb.n_tracks_per_jet

    jet_event = np.repeat(np.arange(n_events), np.diff(sub["jet_offsets"]))
    nb_starts = np.concatenate([[0], np.cumsum(nb_counts)])
    py_lists = [j for ev in py for j in ev]
    problems, boundary = [], 0
    if not (len(nb_counts) == len(ak_counts) == len(py_counts)):
        raise SystemExit(f"kernel verification FAILED: numbers of jets differ "
                         f"{len(nb_counts)=} {len(ak_counts)=} {len(py_counts)=}")
    for j in range(len(nb_counts)):
        ev = int(jet_event[j])
        c0 = sub["cand_offsets"][ev]
        nb_idx = (nb.track_index[nb_starts[j]:nb_starts[j + 1]] - c0).tolist()
        py_idx = [i for i, _ in py_lists[j]]
        same = nb_counts[j] == ak_counts[j] == py_counts[j] and nb_idx == py_idx
        if not same:
            n_edge = _boundary_pairs(sub, j, ev, cone_dr)
            diff = max(abs(nb_counts[j] - ak_counts[j]), abs(nb_counts[j] - py_counts[j]),
                       len(set(nb_idx) ^ set(py_idx)))
            if diff > n_edge:
                problems.append((j, int(nb_counts[j]), int(ak_counts[j]), int(py_counts[j]), n_edge))
            else:
                boundary += 1
    if problems:
        raise SystemExit(
            "kernel verification FAILED: numba / awkward / python associations differ "
            f"for {len(problems)} jets, e.g. (jet, n_numba, n_awkward, n_python, n_boundary)="
            f"{problems[:5]}"
        )
    log(f"[kernel] verified on {n_events} events, {len(nb_counts)} jets, "
        f"{int(nb_counts.sum())} (jet, track) pairs: numba == awkward == python"
        + (f" ({boundary} jets differ only by candidates within 1e-6 of R)" if boundary else ""))
    return {"verified_events": n_events, "verified_jets": int(len(nb_counts)),
            "verified_boundary_jets": boundary}


def time_best(fn, repeats: int) -> tuple[float, float]:
    """(best wall time, best CPU time of this thread) over ``repeats`` calls, seconds."""
    best_wall = best_cpu = math.inf
    for _ in range(repeats):
        gc.collect()
        c0 = time.thread_time()
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
        dc = time.thread_time() - c0
        del out
        best_wall = min(best_wall, dt)
        best_cpu = min(best_cpu, dc)
    return best_wall, best_cpu


# -- memory: one fresh subprocess per method --------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _memory_child(method: str, data_dir: str, cone_dr: float, how: str) -> None:
    """Runs in the fresh subprocess: prints {"peak_mb": ...} as the last stdout line."""
    names = ["jet_eta", "jet_phi", "jet_offsets", "cand_eta", "cand_phi", "cand_charge", "cand_offsets"]
    data = {n: np.load(os.path.join(data_dir, n + ".npy")) for n in names}
    make, run = METHODS[method]
    inputs = make(data)
    warm = run(make(slice_events(data, 10)), cone_dr)  # compile / cache-load, lazy imports
    del warm
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    if how == "tracemalloc":
        import tracemalloc

        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        out = run(inputs, cone_dr)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del out
        print(json.dumps({"method": method, "how": how, "baseline_mb": 0.0,
                          "peak_mb": (peak - base) / MIB}))
        return
    base_kib = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        how = "VmHWM after clear_refs"
    except OSError:
        how = "ru_maxrss"
    out = run(inputs, cone_dr)
    if how == "ru_maxrss":
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    else:
        peak_kib = _status_kib("VmHWM")
    del out
    print(json.dumps({"method": method, "how": how, "baseline_mb": base_kib / 1024,
                      "peak_mb": max(peak_kib - base_kib, 0) / 1024}))


def measure_peak_mb(method: str, data_dir: str, cone_dr: float, how: str = "rss") -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--_memory-child", method,
           "--_memory-how", how, "--_data", data_dir, "--cone-dr", str(cone_dr)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"memory child for {method} failed:\n{proc.stderr}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if how == "tracemalloc":
        log(f"[kernel] {method}: tracemalloc peak {res['peak_mb']:.1f} MiB")
    else:
        log(f"[kernel] {method}: peak RSS growth {res['peak_mb']:.1f} MiB over a "
            f"{res['baseline_mb']:.0f} MiB baseline ({res['how']})")
    return float(res["peak_mb"])


def section_kernel(args) -> dict:
    n = args.kernel_events
    load_before = os.getloadavg()[0]
    log(f"[kernel] generating {n} PFNano-like events (seed {args.seed}) ...")
    data = make_pfnano_like(n, seed=args.seed)
    n_jets = int(data["jet_offsets"][-1])
    n_cand = int(data["cand_offsets"][-1])
    n_charged = int(np.count_nonzero(data["cand_charge"]))
    log(f"[kernel] {n_jets / n:.2f} jets/event, {n_cand / n:.0f} candidates/event, "
        f"{n_charged / n_cand:.1%} charged")

    verify = verify_kernel(data, min(args.kernel_verify_events, n), args.cone_dr)

    # numba: warm-up (compile or cache load) excluded.
    numba_associate(data, args.cone_dr)
    t_numba, c_numba = time_best(lambda: numba_associate(data, args.cone_dr), args.repeats)
    log(f"[kernel] numba:   {t_numba * 1e3:9.1f} ms for {n} events (after warm-up)")

    ak_in = awkward_inputs(data)
    awkward_associate(awkward_inputs(slice_events(data, 10)), args.cone_dr)
    t_ak, c_ak = time_best(lambda: awkward_associate(ak_in, args.cone_dr), max(1, min(args.repeats, 3)))
    del ak_in
    log(f"[kernel] awkward: {t_ak * 1e3:9.1f} ms for {n} events")

    n_py = min(args.kernel_python_events, n)
    py_in = python_inputs(slice_events(data, n_py))
    t_py, c_py = time_best(lambda: python_associate(py_in, args.cone_dr), max(1, min(args.repeats, 3)))
    log(f"[kernel] python:  {t_py * 1e3:9.1f} ms for {n_py} events (scaled to events/s)")
    t_py2, c_py2 = time_best(
        lambda: python_associate_preselected(py_in, args.cone_dr), max(1, min(args.repeats, 3)))
    del py_in
    log(f"[kernel] python (charged picked once per event): {t_py2 * 1e3:9.1f} ms for {n_py} events")

    with tempfile.TemporaryDirectory(prefix="jt-bench-") as tmp:
        for k, v in data.items():
            np.save(os.path.join(tmp, k + ".npy"), v)
        del data
        gc.collect()
        mem_numba = measure_peak_mb("numba", tmp, args.cone_dr)
        mem_ak = measure_peak_mb("awkward", tmp, args.cone_dr)
        tm_numba = measure_peak_mb("numba", tmp, args.cone_dr, "tracemalloc")
        tm_ak = measure_peak_mb("awkward", tmp, args.cone_dr, "tracemalloc")

    res = {
        "kernel_numba_events_per_s": n / t_numba,
        "kernel_awkward_events_per_s": n / t_ak,
        "kernel_python_events_per_s": n_py / t_py,
        "kernel_python_preselected_events_per_s": n_py / t_py2,
        "kernel_numba_peak_mb": mem_numba,
        "kernel_awkward_peak_mb": mem_ak,
        "kernel_numba_tracemalloc_peak_mb": tm_numba,
        "kernel_awkward_tracemalloc_peak_mb": tm_ak,
        "kernel_numba_cpu_events_per_s": n / c_numba,
        "kernel_awkward_cpu_events_per_s": n / c_ak,
        "kernel_python_cpu_events_per_s": n_py / c_py,
        "kernel_python_preselected_cpu_events_per_s": n_py / c_py2,
        "kernel_load_average_1min": load_before,
        "kernel_events": n,
        "kernel_python_events_timed": n_py,
        "kernel_jets_per_event": n_jets / n,
        "kernel_candidates_per_event": n_cand / n,
        "kernel_charged_fraction": n_charged / n_cand,
        "kernel_cone_dr": args.cone_dr,
        "kernel_numba_vs_awkward_speedup": t_ak / t_numba,
        "kernel_numba_vs_python_speedup": (n / t_numba) / (n_py / t_py),
        "kernel_numba_vs_python_preselected_speedup": (n / t_numba) / (n_py / t_py2),
        "kernel_awkward_vs_numba_peak_mb_ratio": (mem_ak / mem_numba) if mem_numba > 0 else None,
        "kernel_verified_events": verify["verified_events"],
    }
    return res


# =====================================================================================
# Registry and CLI
# =====================================================================================
#: name -> function(args) -> flat dict merged into the output JSON. Add sections here
#: (e2e, scaling, remote, scheduler, ...); `--only NAME` selects, none = all, in order.
SECTIONS: dict[str, Callable[[argparse.Namespace], dict]] = {
    "kernel": section_kernel,
}
# Pipeline sections (e2e vs I/O floor, 1 vs 2 workers over XRootD, remote vs local,
# scheduler chunks/s) live beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_pipeline import SECTIONS as _PIPELINE_SECTIONS  # noqa: E402

SECTIONS.update(_PIPELINE_SECTIONS)
# Section peers (issue 11): jettracks against RDataFrame, an idiomatic coffea processor
# and the uproot I/O floor, on realistic files (scripts/_peers.py, scripts/peers_rdf.py).
from _peers import add_arguments as _peers_arguments  # noqa: E402
from _peers import section_peers  # noqa: E402

SECTIONS["peers"] = section_peers
# Section ml (issue 14): the finalized ML dataset vs per-chunk parts (scripts/_ml_bench.py).
from _ml_bench import section_ml  # noqa: E402

SECTIONS["ml"] = section_ml
# Sections wan, metadata, files2000, multihost (issue 12): far-away files through the delay
# proxy, 2,000-file metadata and run, namespaced hosts without a shared disk (scripts/_wan_bench.py).
from _wan_bench import SECTIONS as _WAN_SECTIONS  # noqa: E402

SECTIONS.update(_WAN_SECTIONS)
# Section cache (issue 15): the column cache on the peers section's files (scripts/_cache_bench.py).
from _cache_bench import section_cache  # noqa: E402

SECTIONS["cache"] = section_cache


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", default=None, metavar="NAME",
                   help=f"run only these sections (repeat or comma-separate); known: {', '.join(SECTIONS)}")
    # Options of one section carry its name; --repeats, --seed and --cone-dr are shared.
    p.add_argument("--kernel-events", type=int, default=5000,
                   help="kernel: synthetic events (>= 5000 for the issue's figures)")
    p.add_argument("--kernel-python-events", type=int, default=200,
                   help="kernel: events the Python loops are timed on")
    p.add_argument("--kernel-verify-events", type=int, default=300,
                   help="kernel: events the three versions are cross-checked on")
    p.add_argument("--repeats", type=int, default=5, help="timing repeats (best of; awkward at most 3)")
    p.add_argument("--cone-dr", type=float, default=CONE_DR)
    p.add_argument("--seed", type=int, default=20261125)
    _peers_arguments(p)
    p.add_argument("--wan-threads", type=int, default=3, help="wan: threads per worker (latency overlap)")
    p.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    p.add_argument("--_memory-how", dest="memory_how", default="rss", help=argparse.SUPPRESS)
    p.add_argument("--_data", dest="data_dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child, args.data_dir, args.cone_dr, args.memory_how)
        return 0
    names = list(SECTIONS)
    if args.only:
        names = [n.strip() for item in args.only for n in item.split(",") if n.strip()]
        unknown = [n for n in names if n not in SECTIONS]
        if unknown:
            raise SystemExit(f"unknown section(s) {unknown}; known: {list(SECTIONS)}")
    result: dict = {}
    for name in names:
        log(f"== section {name}")
        result.update(SECTIONS[name](args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
