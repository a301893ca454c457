"""Simulation normalisation: xsec · lumi · genWeight / Σ genWeight, per-file weight sums, data/simulation plot.

References here are plain numpy on the raw branches (uproot), not the code under test.
Generated PFNano files get non-unit weights of both signs (an NLO-like sample); the
real NanoAOD file nano_tt_v15.root has genWeight = 350.17 on every event.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from jettracks.engines.reading import ChunkColumns
from jettracks.execution import run_config
from jettracks.generate import pfnano
from jettracks.generate.model import generate_events, make_rng
from jettracks.normalisation import genweight_sums, scale_dataset
from jettracks_testing.data import absent_reason, cms_data_dir
from processors.jet_tracks import JetTrackProcessor

CMS = cms_data_dir()
XSEC, LUMI = 1234.5, 7.0  # pb, pb^-1


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    out = tmp_path_factory.mktemp("norm")
    mc, data = [], []
    for i in range(2):
        ev = generate_events(120, make_rng(31, i), file_index=i, pileup_candidates=60)
        rng = np.random.default_rng(100 + i)
        ev.event["weight"] = rng.choice([-1.0, 1.0], ev.n_events, p=[0.2, 0.8]) * rng.uniform(0.5, 2.0, ev.n_events)
        mc.append(pfnano.write(out / f"mc_{i}.root", ev, compression="zlib"))
    ev = generate_events(150, make_rng(32, 5), file_index=5, pileup_candidates=60)
    data.append(pfnano.write(out / "data_0.root", ev, compression="zlib"))
    return out, mc, data


@pytest.fixture(scope="module")
def run(samples, tmp_path_factory):
    _, mc, data = samples
    cfg = {
        "name": "norm",
        "datasets": {
            "sim": {"files": [str(p) for p in mc], "format": "pfnano", "metadata": {"is_mc": True}, "xsec": XSEC},
            "coll": {"files": [str(p) for p in data], "format": "pfnano", "metadata": {"is_mc": False}},
        },
        "normalisation": {"lumi": LUMI, "sqrt_s_tev": 13.0},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {"cone_dr": 0.4}},
        "executor": {"backend": "serial", "chunksize": 45},  # chunks split the files
        "output": {"dir": str(tmp_path_factory.mktemp("normrun")), "plots": True, "ml": False},
    }
    return run_config(cfg, progress=False)


def _raw(paths):
    per_file, pts, ws = {}, [], []
    for p in paths:
        a = uproot.open(p)["Events"].arrays(["genWeight", "Jet_pt", "Jet_eta"])
        w = ak.to_numpy(a.genWeight).astype(np.float64)
        per_file[str(p)] = w
        sel = (a.Jet_pt > 30) & (abs(a.Jet_eta) < 2.5)
        pts.append(ak.to_numpy(ak.flatten(a.Jet_pt[sel])).astype(np.float64))
        ws.append(ak.to_numpy(ak.flatten(ak.broadcast_arrays(a.genWeight, a.Jet_pt)[0][sel])).astype(np.float64))
    return per_file, np.concatenate(pts), np.concatenate(ws)


def test_per_file_weight_sums_in_report(run, samples):
    _, mc, _ = samples
    per_file, _, _ = _raw(mc)
    norm = run.report["normalisation"]["sim"]
    for f, w in per_file.items():
        got = norm["files"][f]
        assert got["events"] == len(w)
        assert got["sumw"] == pytest.approx(float(sum(float(x) for x in w)), rel=1e-12)
        assert got["sumw2"] == pytest.approx(float(sum(float(x) ** 2 for x in w)), rel=1e-12)
        assert got["n_negative"] == sum(1 for x in w if x < 0) > 0
    total = sum(float(x) for w in per_file.values() for x in w)
    assert norm["sumw"] == pytest.approx(total)
    assert norm["scale"] == pytest.approx(XSEC * LUMI / total)
    assert not norm["unit_weights"]
    assert run.report["normalisation"]["coll"]["scale"] is None


def test_weighted_histogram_equals_brute_force(run, samples):
    _, mc, data = samples
    per_file, pt, w = _raw(mc)
    sumw = sum(float(x) for v in per_file.values() for x in v)
    weights = XSEC * LUMI * w / sumw
    h = run.hists["jet_pt_weighted"][{"dataset": "sim"}][{"flavour": sum}]
    edges = np.linspace(0, 1200, 121)
    ref, _ = np.histogram(pt, bins=edges, weights=weights)
    ref2, _ = np.histogram(pt, bins=edges, weights=weights**2)
    np.testing.assert_allclose(h.values(), ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(h.variances(), ref2, rtol=1e-9, atol=1e-12)
    # the unweighted count stays available, and equals the plain count
    counts, _ = np.histogram(pt, bins=edges)
    np.testing.assert_array_equal(run.hists["jet_pt"][{"dataset": "sim"}][{"flavour": sum}].values(), counts)
    # collision data: weight 1 -> the weighted histogram is the count
    _, dpt, _ = _raw(data)
    d = run.hists["jet_pt_weighted"][{"dataset": "coll"}][{"flavour": sum}]
    np.testing.assert_array_equal(d.values(), np.histogram(dpt, bins=edges)[0])
    assert d.sum().value == run.cutflow["coll"]["selected_jets"]


def test_data_mc_plot_written(run):
    plots = run.report["plots"]
    assert "data_mc_jet_pt.png" in plots and "data_mc_track_sdxy_significance.png" in plots
    assert (run.output_dir / "plots" / "data_mc_jet_pt.png").stat().st_size > 1000


def test_genweight_sums_and_scaling_units():
    w = np.array([1.0, -2.0, 0.5])
    s = genweight_sums(w)
    assert s == {"events": 3, "sumw": -0.5, "sumw2": 5.25, "n_negative": 1, "sumw_negative": -2.0, "n_non_unit": 2}
    import hist

    h = hist.Hist(hist.axis.StrCategory(["a", "b"], name="dataset"), hist.axis.Regular(2, 0, 2, name="x"),
                  storage=hist.storage.Weight())
    h.fill(dataset=["a", "b"], x=[0.5, 0.5], weight=[2.0, 3.0])
    scale_dataset(h, "a", 10.0)
    assert h[{"dataset": "a"}].values()[0] == 20.0 and h[{"dataset": "a"}].variances()[0] == 400.0
    assert h[{"dataset": "b"}].values()[0] == 3.0


@pytest.mark.skipif(CMS is None, reason=absent_reason())
def test_real_nanoaod_genweight(tmp_path):
    path = CMS / "nano_tt_v15.root"
    proc = JetTrackProcessor()
    with uproot.open(path) as f:
        t = f["Events"]
        wanted = [b for b in proc.columns("nanoaod", set(t.keys())) if b in t]
        arrays = {b: t[b].array() for b in wanted}
        w = t["genWeight"].array(library="np").astype(np.float64)
    out = proc.process(ChunkColumns(arrays, {"dataset": "tt", "format": "nanoaod", "is_mc": True,
                                             "filename": str(path), "entrystart": 0, "entrystop": len(w)}))
    s = out["genweights"]["tt"][str(path)]
    assert s["events"] == 200 and s["sumw"] == pytest.approx(float(w.sum())) and s["n_non_unit"] == 200
    h = out["hists"]["jet_pt_weighted"][{"dataset": "tt"}][{"flavour": sum}]
    assert h.sum().value == pytest.approx(out["cutflow"]["tt"]["selected_jets"] * 350.17, rel=1e-5)
