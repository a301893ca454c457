"""Collision data: certification JSON, processed lumisections, brilcalc luminosity, per-lumisection summaries.

The references are plain Python/numpy over the raw branches (uproot), written here:
the mask is a loop over the JSON's ranges, the LumiList a sort + run-length merge, the
luminosity a sum over the CSV rows, the per-lumisection aggregates loops over events
with a ΔR loop for the tracks and ``numpy.quantile`` for the quantiles. Generated files
are given runs and lumisections so that one lumisection spans two files and chunks.
"""

from __future__ import annotations

import json
import math

import awkward as ak
import numpy as np
import pandas as pd
import pytest
import uproot

from jettracks import lumi
from jettracks.execution import run_config
from jettracks.generate import pfnano
from jettracks.generate.model import generate_events, make_rng
from jettracks_testing.data import absent_reason, cms_data_dir

CMS = cms_data_dir()
CERT = {"1": [[1, 3], [6, 8]], "2": [[2, 2], [5, 9]]}
CONE = 0.4


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("lumidata")
    files = []
    for i in range(2):
        ev = generate_events(100, make_rng(41, i), file_index=i, pileup_candidates=60)
        # file 0: run 1 LS 1..10 (10 events each); file 1: run 1 LS 10 (again: split across files), run 2 LS 1..9
        if i == 0:
            run, ls = np.ones(100, np.int64), 1 + np.arange(100) // 10
        else:
            run = np.r_[np.ones(10, np.int64), np.full(90, 2, np.int64)]
            ls = np.r_[np.full(10, 10), 1 + np.arange(90) // 10]
        ev.event["run"], ev.event["luminosityBlock"] = run, ls
        files.append(pfnano.write(out / f"data_{i}.root", ev, compression="zlib"))
    (out / "cert.json").write_text(json.dumps(CERT))
    rows = ["#Data tag : test , Norm tag: None",
            "#run:fill,ls,time,beamstatus,E(GeV),delivered(/ub),recorded(/ub),avgpu,source"]
    recorded = {}
    for run, last in ((1, 10), (2, 9)):
        for ls in range(1, last + 1):
            rec = 1000.0 * run + 7.5 * ls
            recorded[(run, ls)] = rec
            rows.append(f"{run}:5000,{ls}:{ls},06/10/16 12:00:00,STABLE BEAMS,6500,{rec * 1.1},{rec},20.0,HFOC")
    rows.append("#Summary:")
    (out / "lumi.csv").write_text("\n".join(rows) + "\n")
    return out, files, recorded


def _config(out, files, run_dir, chunksize, *, mask=True):
    ds = {"files": [str(p) for p in files], "format": "pfnano", "metadata": {"is_mc": False}}
    if mask:
        ds["lumi_mask"] = str(out / "cert.json")
        ds["lumi_csv"] = str(out / "lumi.csv")
    return {
        "name": "lumi", "datasets": {"coll": ds},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {"cone_dr": CONE}},
        "executor": {"backend": "serial", "chunksize": chunksize},
        "output": {"dir": str(run_dir), "plots": False, "ml": False},
    }


@pytest.fixture(scope="module")
def runs(data_files, tmp_path_factory):
    out, files, _ = data_files
    small = run_config(_config(out, files, tmp_path_factory.mktemp("r1"), 23), progress=False)
    whole = run_config(_config(out, files, tmp_path_factory.mktemp("r2"), 100_000), progress=False)
    return small, whole


def _certified(run, ls):
    return any(a <= ls <= b for a, b in CERT.get(str(run), []))


def _raw(files):
    events = []
    for p in files:
        a = uproot.open(p)["Events"].arrays(["run", "luminosityBlock", "Jet_pt", "Jet_eta", "Jet_phi", "PFCands_pt",
                                             "PFCands_eta", "PFCands_phi", "PFCands_charge", "PFCands_d0",
                                             "PFCands_d0Err"])
        for e in range(len(a)):
            events.append({k: (a[k][e].to_numpy() if k.startswith(("Jet", "PF")) else int(a[k][e])) for k in a.fields})
    return events


def _brute_lumisections(events):
    per = {}
    for ev in events:
        key = (ev["run"], ev["luminosityBlock"])
        row = per.setdefault(key, {"events": 0, "jets": 0, "selected_jets": 0, "tracks": 0, "absdxy": [], "sig": []})
        row["events"] += 1
        row["jets"] += len(ev["Jet_pt"])
        for pt, eta, phi in zip(ev["Jet_pt"], ev["Jet_eta"], ev["Jet_phi"]):
            if not (pt > 30 and abs(eta) < 2.5):
                continue
            row["selected_jets"] += 1
            for t in range(len(ev["PFCands_pt"])):
                if ev["PFCands_charge"][t] == 0 or ev["PFCands_pt"][t] < 1.0:
                    continue
                dphi = (float(ev["PFCands_phi"][t]) - float(phi) + math.pi) % (2 * math.pi) - math.pi
                if (float(ev["PFCands_eta"][t]) - float(eta)) ** 2 + dphi**2 >= CONE**2:
                    continue
                row["tracks"] += 1
                if ev["PFCands_d0Err"][t] > 0:
                    row["absdxy"].append(abs(float(ev["PFCands_d0"][t])))
                    row["sig"].append(float(ev["PFCands_d0"][t]) / float(ev["PFCands_d0Err"][t]))
    return per


def test_cutflow_and_processed_lumilist(runs, data_files):
    small, whole = runs
    _, files, recorded = data_files
    events = _raw(files)
    n_cert = sum(_certified(e["run"], e["luminosityBlock"]) for e in events)
    sel_cert = sum(int(((e["Jet_pt"] > 30) & (np.abs(e["Jet_eta"]) < 2.5)).sum())
                   for e in events if _certified(e["run"], e["luminosityBlock"]))
    for r in (small, whole):
        cf = r.cutflow["coll"]
        assert cf["events"] == len(events) == 200
        assert cf["events_certified"] == n_cert
        assert cf["selected_jets"] == sel_cert
        assert r.hists["jet_pt"][{"dataset": "coll"}].sum(flow=True) == sel_cert
    # the LumiList: certified lumisections with events, as sorted, merged ranges
    seen = sorted({(e["run"], e["luminosityBlock"]) for e in events if _certified(e["run"], e["luminosityBlock"])})
    expect: dict[str, list[list[int]]] = {}
    for run, ls in seen:
        ranges = expect.setdefault(str(run), [])
        if ranges and ranges[-1][1] == ls - 1:
            ranges[-1][1] = ls
        else:
            ranges.append([ls, ls])
    entry = small.report["lumisections"]["coll"]
    assert entry["processed"] == expect == {"1": [[1, 3], [6, 8]], "2": [[2, 2], [5, 9]]}
    assert json.loads(open(entry["processed_json"]).read()) == expect
    # integrated luminosity: recorded (/ub) of those lumisections, in /pb
    assert entry["luminosity"]["recorded_pb"] == pytest.approx(sum(recorded[p] for p in seen) * 1e-6)
    assert entry["luminosity"]["unit_in_csv"] == "/ub"


def test_per_lumisection_summary_equals_brute_force_and_chunking(runs, data_files):
    small, whole = runs
    _, files, _ = data_files
    per = _brute_lumisections(_raw(files))
    t_small = pd.read_parquet(small.report["lumisections"]["coll"]["summary_parquet"])
    t_whole = pd.read_parquet(whole.report["lumisections"]["coll"]["summary_parquet"])
    pd.testing.assert_frame_equal(t_small, t_whole)  # chunks splitting lumisections merge exactly
    npz = np.load(small.report["lumisections"]["coll"]["summary_npz"])
    np.testing.assert_array_equal(npz["events"], t_small["events"].to_numpy())
    assert len(t_small) == len(per) == 19
    for row in t_small.itertuples():
        ref = per[(row.run, row.lumi)]
        assert (row.events, row.jets, row.selected_jets, row.tracks) == (
            ref["events"], ref["jets"], ref["selected_jets"], ref["tracks"])
        assert row.certified == int(_certified(row.run, row.lumi))
        assert row.tracks_valid_dxy == len(ref["absdxy"])
        sig = np.array(ref["sig"])
        assert row.frac_abs_dxy_sig_gt3 == pytest.approx((np.abs(sig) > 3).mean())
        absdxy = np.array(ref["absdxy"])
        for q in (50, 90):
            exact = np.quantile(absdxy, q / 100, method="inverted_cdf")  # the ceil(qN)-th smallest
            got = getattr(row, f"abs_dxy_q{q}")
            # within the documented precision: one log bin (factor 10^(1/12))
            assert exact / 10 ** (1 / 12) <= got <= exact * 10 ** (1 / 12), (row.run, row.lumi, q)
    # the lumisection split across the two files (run 1, LS 10) has both files' 20 events
    assert int(t_small[(t_small.run == 1) & (t_small.lumi == 10)].events.iloc[0]) == 20


def test_compact_lumilist_and_mask_reference():
    pairs = [(2, 5), (1, 3), (1, 1), (1, 2), (1, 7), (2, 6), (1, 3)]
    assert lumi.compact_lumilist(pairs) == {"1": [[1, 3], [7, 7]], "2": [[5, 6]]}
    rng = np.random.default_rng(1)
    run = rng.integers(1, 4, 500)
    ls = rng.integers(0, 12, 500)
    got = lumi.mask_events(CERT, run, ls)
    ref = np.array([_certified(r, l) for r, l in zip(run, ls)])
    np.testing.assert_array_equal(got, ref)


def test_bad_certification_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="certification JSON"):
        lumi.load_certification(bad)


@pytest.mark.skipif(CMS is None, reason=absent_reason())
def test_real_file_as_collision_data(tmp_path):
    """pfnano.root read as collision data: per-lumisection event counts equal uproot's."""
    path = CMS / "pfnano.root"
    cfg = {
        "name": "real", "datasets": {"d": {"files": [str(path)], "format": "pfnano", "metadata": {"is_mc": False}}},
        "executor": {"backend": "serial", "chunksize": 4},
        "output": {"dir": str(tmp_path / "run"), "plots": False, "ml": False},
    }
    r = run_config(cfg, progress=False)
    a = uproot.open(path)["Events"].arrays(["run", "luminosityBlock"], library="np")
    t = pd.read_parquet(r.report["lumisections"]["d"]["summary_parquet"])
    ref = pd.Series(1, index=pd.MultiIndex.from_arrays([a["run"].astype(np.int64), a["luminosityBlock"].astype(np.int64)])).groupby(level=[0, 1]).sum()
    assert dict(zip(zip(t.run, t.lumi), t.events)) == {k: int(v) for k, v in ref.items()}
    assert (t.certified == -1).all()


def test_worked_example_config_files():
    from pathlib import Path

    from jettracks.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "collision_data_lumi.yaml")
    ds = cfg.datasets["jetht"]
    cert = lumi.load_certification(lumi.resolve(cfg, ds.lumi_mask))
    assert cert == {"1": [[1, 2], [1001, 1003], [2002, 2003]]}
    got = lumi.integrated_luminosity([(1, 1), (1, 2), (1, 4)], lumi.resolve(cfg, ds.lumi_csv))
    assert got["recorded_pb"] == pytest.approx((20010.0 + 20020.0) * 1e-6)
    assert got["lumisections_not_in_csv"] == 1
