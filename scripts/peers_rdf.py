#!/usr/bin/env python
"""ROOT side of the ``peers`` benchmark section: runs in the separate ROOT venv.

Never imported by the project (``root`` is not a project dependency): the
``peers`` section of ``scripts/benchmark.py`` runs this file with the ROOT venv's
Python (``make bench-root``, or created on demand by the section), one fresh
process per measurement. Standard library + PyROOT only.

Commands (each prints ONE JSON object on its last stdout line):

``rewrite SRC DST --tree T --algo lzma|zlib --level N``
    Copy a file with ``RDataFrame(T, SRC).Snapshot(T, DST, "", opts)``: all
    branches, compression ``algo``/``level``, ROOT's default basket size (32 kB:
    ~3.5 events a ``PFCands_*`` basket at ~1,900 candidates an event, as in the
    real ``pfnano.root``). Single-threaded, so entries keep their order.
``run --format pfnano|jetntuple --threads N --warm F... --files F...``
    The RDataFrame peer. The ΔR loop is C++ (``ROOT.gInterpreter.Declare``), and so
    is the booking of the graph (typed ``Define``/``Histo1D``: nothing is jitted
    per data frame). The event loop runs twice in this process: first over the
    ``--warm`` files (compiles the declared code and RDF's templates, loads
    libraries), then, timed, over ``--files``, which this process has not read
    (RDF keeps the last basket of each branch: a second loop over the same files
    would skip decompression). ``--threads`` > 1: ``ROOT.EnableImplicitMT(N)``
    before any data frame exists.

Selection, as ``JetTrackProcessor``'s defaults: jets ``pt > 30`` GeV and
``|eta| < 2.5``; tracks ``charge != 0`` and ``pt >= 1`` GeV; strict
``ΔR < 0.5`` with ``ΔR² = Δη² + Δφ²`` in double precision (Δφ folded into
[0, π] as jettracks' kernel does); a track counts once per jet whose cone holds
it (jettracks' ``assignment: all``). PFNano: valid d0 (``d0Err > 0`` and finite
d0), one histogram of dxy = ``PFCands_d0`` (200 bins, -0.1..0.1 cm). JetNtuple
(one jet per entry, no impact parameters): tracks are ``|PF_id|`` in 11, 13,
211, the cone is the stored ``PF_dR``; one histogram of ΔR (50 bins, 0..0.5).
``count`` is the histogram's number of fills (under/overflow included): tracks
with valid dxy (PFNano) or tracks in the cone (JetNtuple).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="(?s).*alpha stage")

CPP = r"""
#include <ROOT/RDataFrame.hxx>
#include <ROOT/RVec.hxx>
#include <TH1D.h>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

namespace peers {
using ROOT::RVecF;
using ROOT::RVecI;
constexpr double kTwoPi = 2.0 * M_PI;

// dxy (cm) of charged tracks (pT >= 1 GeV, valid d0) with dR < 0.5 to each selected jet.
RVecF dxy_in_jets(const RVecF &jpt, const RVecF &jeta, const RVecF &jphi,
                  const RVecF &pt, const RVecF &eta, const RVecF &phi, const RVecI &charge,
                  const RVecF &d0, const RVecF &d0err) {
  RVecF out;
  const std::size_t nj = jpt.size(), nt = pt.size();
  for (std::size_t j = 0; j < nj; ++j) {
    if (!(jpt[j] > 30.f && std::abs(jeta[j]) < 2.5f)) continue;
    const double je = jeta[j], jp = jphi[j];
    for (std::size_t i = 0; i < nt; ++i) {
      if (charge[i] == 0 || !(pt[i] >= 1.f) || !(d0err[i] > 0.f) || !std::isfinite(d0[i])) continue;
      const double deta = double(eta[i]) - je;
      double adphi = std::abs(double(phi[i]) - jp);
      if (adphi > M_PI) adphi = std::abs(std::remainder(adphi, kTwoPi));
      if (deta * deta + adphi * adphi < 0.25) out.push_back(d0[i]);
    }
  }
  return out;
}

// JetNtuple: one jet per entry; stored PF_dR of charged candidates (|id| 11, 13, 211), pT >= 1 GeV.
RVecF dr_in_jet(float jpt, float jeta, const RVecF &pt, const RVecF &dr, const RVecI &id) {
  RVecF out;
  if (!(jpt > 30.f && std::abs(jeta) < 2.5f)) return out;
  for (std::size_t i = 0; i < pt.size(); ++i) {
    const int a = std::abs(id[i]);
    if ((a == 11 || a == 13 || a == 211) && pt[i] >= 1.f && dr[i] < 0.5f) out.push_back(dr[i]);
  }
  return out;
}

struct Booked {
  ROOT::RDF::RResultPtr<TH1D> hist;
  ROOT::RDF::RResultPtr<ULong64_t> entries;
};

Booked book_pfnano(ROOT::RDF::RNode df) {
  auto d = df.Define("trk_dxy", dxy_in_jets,
                     {"Jet_pt", "Jet_eta", "Jet_phi", "PFCands_pt", "PFCands_eta", "PFCands_phi",
                      "PFCands_charge", "PFCands_d0", "PFCands_d0Err"});
  return {d.Histo1D<RVecF>({"dxy", "track dxy;dxy [cm]", 200, -0.1, 0.1}, "trk_dxy"), df.Count()};
}

Booked book_jetntuple(ROOT::RDF::RNode df) {
  auto d = df.Define("trk_dr", dr_in_jet, {"jetPt", "jetEta", "PF_pT", "PF_dR", "PF_id"});
  return {d.Histo1D<RVecF>({"dr", "track dR;dR", 50, 0.0, 0.5}, "trk_dr"), df.Count()};
}

Booked book(const std::string &format, const std::string &tree, const std::vector<std::string> &files) {
  ROOT::RDataFrame df(tree, files);
  return format == "pfnano" ? book_pfnano(df) : book_jetntuple(df);
}
}  // namespace peers
"""

TREES = {"pfnano": "Events", "jetntuple": "AK4jets/jetTree"}


def _vmhwm_mb() -> float:
    """Peak resident set of this process (VmHWM), MiB: ru_maxrss would include the
    forking parent's high-water mark, which Linux carries across exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return r.ru_utime + r.ru_stime


def _loop(ROOT, fmt: str, files: list[str]) -> dict:
    vec = ROOT.std.vector["std::string"]()
    for f in files:
        vec.push_back(f)
    booked = ROOT.peers.book(fmt, TREES[fmt], vec)
    h = booked.hist.GetValue()  # runs the event loop (both results are booked)
    return {
        "entries": int(booked.entries.GetValue()),
        "count": round(h.GetEntries()),
        "in_range": float(h.Integral()),
    }


def cmd_run(args) -> dict:
    t_start = time.perf_counter()
    import ROOT

    ROOT.gErrorIgnoreLevel = ROOT.kWarning
    if args.threads > 1:
        ROOT.EnableImplicitMT(args.threads)
    ROOT.gInterpreter.Declare(CPP)
    t0, c0 = time.perf_counter(), _cpu()
    warm = _loop(ROOT, args.format, args.warm)  # JIT, library loading: not timed
    t1, c1 = time.perf_counter(), _cpu()
    timed = _loop(ROOT, args.format, args.files)
    t2, c2 = time.perf_counter(), _cpu()
    return {
        "root_version": str(ROOT.gROOT.GetVersion()),
        "threads": args.threads,
        "pool_size": int(ROOT.GetThreadPoolSize()) if args.threads > 1 else 1,
        "warm_s": t1 - t0,
        "warm_cpu_s": c1 - c0,
        "warm_entries": warm["entries"],
        "wall_s": t2 - t1,
        "cpu_s": c2 - c1,
        "process_wall_s": t2 - t_start,
        "peak_rss_mb": _vmhwm_mb(),
        **timed,
    }


def cmd_rewrite(args) -> dict:
    import ROOT

    ROOT.gErrorIgnoreLevel = ROOT.kWarning
    algo = {
        "lzma": ROOT.RCompressionSetting.EAlgorithm.kLZMA,
        "zlib": ROOT.RCompressionSetting.EAlgorithm.kZLIB,
        "zstd": ROOT.RCompressionSetting.EAlgorithm.kZSTD,
        "lz4": ROOT.RCompressionSetting.EAlgorithm.kLZ4,
    }[args.algo]
    opts = ROOT.RDF.RSnapshotOptions()
    opts.fCompressionAlgorithm = algo
    opts.fCompressionLevel = args.level
    opts.fMode = "RECREATE"
    tmp = args.dst + ".tmp"
    t0 = time.perf_counter()
    ROOT.RDataFrame(args.tree, args.src).Snapshot(args.tree, tmp, "", opts)
    os.replace(tmp, args.dst)
    return {"dst": args.dst, "seconds": time.perf_counter() - t0, "root_version": str(ROOT.gROOT.GetVersion())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--format", choices=sorted(TREES), required=True)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--warm", nargs="+", required=True)
    r.add_argument("--files", nargs="+", required=True)
    w = sub.add_parser("rewrite")
    w.add_argument("src")
    w.add_argument("dst")
    w.add_argument("--tree", required=True)
    w.add_argument("--algo", default="lzma")
    w.add_argument("--level", type=int, default=9)
    args = p.parse_args(argv)
    out = cmd_run(args) if args.cmd == "run" else cmd_rewrite(args)
    sys.stdout.flush()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
