"""Tests of the long-lived-particle signal of jettracks.generate (process="llp").

Physics (displaced tracks, decay geometry, decay-length law, tracker
acceptance, truth flavours), schemas identical to QCD files, options,
determinism, speed.
"""

from __future__ import annotations

import time

import awkward as ak
import numpy as np
import pytest
import uproot

from jettracks.generate import (
    PROCESSES,
    generate_dataset,
    generate_events,
    generate_file,
    make_rng,
)
from jettracks.generate import llp as llp_mod

SEED = 11
N = 300
SOFT = 30  # few pile-up candidates: the physics here is in the jets, keep it fast


def _np(x) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x, axis=None))


@pytest.fixture(scope="module")
def llp_events():
    cache = {}

    def get(ctau, **kw):
        key = (ctau, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = generate_events(
                N, make_rng(SEED, 0), process="llp", llp_ctau=ctau, pileup_candidates=SOFT, **kw
            )
        return cache[key]

    return get


@pytest.fixture(scope="module")
def qcd_events():
    return generate_events(N, make_rng(SEED, 0), pileup_candidates=SOFT)


def _jet_tracks(ev, which):
    """|d0| of constituents with track details in the jets selected by ``which(jets)``."""
    c = ev.cands
    jet = c["jet"]
    in_jet = jet >= 0
    sel = np.zeros(jet.size, dtype=bool)
    sel[in_jet] = which(ev.jets)[jet[in_jet]]
    sel &= c["hasTrack"]
    return np.abs(c["d0"][sel])


def _llp_jets(jets):
    return jets["llp"] >= 0


def _light_jets(jets):
    return jets["hadronFlav"] == 0


# ----------------------------------------------------------------------------- physics


def test_dxy_grows_with_ctau(llp_events, qcd_events):
    med = {ct: np.median(_jet_tracks(llp_events(ct), _llp_jets)) for ct in (0.1, 1.0, 10.0)}
    d_qcd = _jet_tracks(qcd_events, _light_jets)
    med_qcd = np.median(d_qcd)
    assert all(_jet_tracks(llp_events(ct), _llp_jets).size > 2000 for ct in med)
    # |dxy| ~ L_T x (opening angle) ~ c tau: ~0.25 c tau per track (measured 0.026,
    # 0.25, 1.8 cm; QCD light jets 0.003 cm)
    assert med[10.0] > 20 * med[0.1], med
    assert med[0.1] > 4 * med_qcd, (med, med_qcd)
    assert 5 < med[1.0] / med[0.1] < 15, med  # linear in c tau while inside the tracker
    assert 0.1 < med[0.1] / 0.1 < 0.5 and 0.1 < med[1.0] / 1.0 < 0.5, med
    # significance: almost every LLP-jet track is displaced at c tau = 1 cm
    ev = llp_events(1.0)
    c = ev.cands
    trk = c["hasTrack"] & (c["llp"] >= 0)
    assert (np.abs(c["d0"][trk]) / c["d0Err"][trk] > 3).mean() > 0.8


def test_dxy_follows_decay_geometry(llp_events, tmp_path):
    ev = llp_events(5.0)
    c = ev.cands
    # (badly measured tracks of the displaced background, background == 4, have wider smearing)
    trk = c["hasTrack"] & (c["llp"] >= 0) & (c["background"] != 4)
    assert trk.sum() > 2000
    pt, phi, eta = c["pt"][trk], c["phi"][trk], c["eta"][trk]
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    vx, vy, vz = c["vx"][trk], c["vy"][trk], c["vz"][trk]
    dxy = (-vx * py + vy * px) / pt  # straight line, CMS sign
    dz = vz - (vx * px + vy * py) / pt * pz / pt
    assert np.median(np.abs(dxy) / c["d0Err"][trk]) > 20  # geometry >> resolution
    pull = (c["d0"][trk] - dxy) / c["d0Err"][trk]
    assert 0.55 < np.median(np.abs(pull)) < 0.85  # Gaussian core (0.674)
    assert (np.abs(pull) > 6).mean() < 0.01  # 3 % of 3x tails only
    pull_z = (c["dz"][trk] - dz) / c["dzErr"][trk]
    assert 0.55 < np.median(np.abs(pull_z)) < 0.85
    # a single Gaussian around 0 would not do: the sign follows the geometry
    assert (np.sign(c["d0"][trk]) == np.sign(dxy)).mean() > 0.97

    # the production vertex is the LLP decay vertex (prompt-in-jet products) ...
    L = ev.truth["llp"]
    li = c["llp"][trk]
    prompt = c["origin"][trk] == 0
    assert prompt.mean() > 0.5
    for v in ("vx", "vy", "vz"):
        np.testing.assert_allclose(c[v][trk][prompt], L[v][li[prompt]], rtol=1e-12, atol=1e-12)
    # ... L along the LLP direction
    np.testing.assert_allclose(np.hypot(L["vx"], L["vy"]), L["lxy"])
    np.testing.assert_allclose(np.arctan2(L["vy"], L["vx"]), L["phi"], atol=1e-9)
    np.testing.assert_allclose(np.arcsinh(L["vz"] / L["lxy"]), L["eta"], atol=1e-9)

    # the written file holds the same d0 (10-bit mantissa), candidate for candidate
    p = generate_file(tmp_path / "g.root", format="pfnano", n_events=N, seed=SEED,
                      process="llp", llp_ctau=5.0, pileup_candidates=SOFT)
    with uproot.open(p) as f:
        d0 = _np(f["Events"]["PFCands_d0"].array())
        d0err = _np(f["Events"]["PFCands_d0Err"].array())
    assert d0.size == c["d0"].size
    np.testing.assert_allclose(d0[trk], c["d0"][trk], rtol=2.0**-10)
    assert np.all(d0err[trk] > 0) and np.all(d0err[~c["hasTrack"]] == -1)


@pytest.mark.parametrize("ctau", [0.1, 10.0])
def test_decay_length_law(llp_events, ctau):
    L = llp_events(ctau).truth["llp"]
    n = L["decayLength"].size
    assert n == 2 * N
    np.testing.assert_allclose(L["betagamma"], L["p"] / L["mass"])
    x = L["decayLength"] / L["betagamma"]  # ~ c tau x Exp(1)
    assert abs(x.mean() - ctau) < 4 * ctau / np.sqrt(n), (x.mean(), ctau)
    assert abs(np.median(x) / ctau - np.log(2)) < 0.1
    assert abs((x > 2 * ctau).mean() - np.exp(-2)) < 0.04
    np.testing.assert_allclose(L["decayLength"], np.sqrt(L["vx"] ** 2 + L["vy"] ** 2 + L["vz"] ** 2))
    assert 2 < np.median(L["betagamma"]) < 8  # 400 GeV mediator, 50 GeV LLP: p* = 194 GeV


def test_tracker_acceptance(llp_events):
    ev = llp_events(50.0)
    c = ev.cands
    z_det = np.abs(c["vz"] + ev.event["pvZ"][c["event"]])
    r = np.hypot(c["vx"], c["vy"])
    inside = (r < llp_mod.TRACKER_R) & (z_det < llp_mod.TRACKER_Z)
    has = c["d0Err"] > 0
    assert np.array_equal(has, c["hasTrack"])
    assert has.any() and not (has & ~inside).any()
    assert r[has].max() > 30  # tracks from far-displaced vertices do exist
    # LLP products beyond the tracker: calorimeter candidates without track details
    beyond = (c["llp"] >= 0) & ~inside
    assert beyond.sum() > 500
    assert np.all(c["charge"][beyond] == 0) and np.all(c["d0"][beyond] == -1)
    assert set(np.unique(np.abs(c["pdgId"][beyond]))) <= {1, 2, 22, 130}
    # nothing from beyond the calorimeters, and some LLPs do decay there
    zone = llp_mod._zone(r, z_det)
    assert not (zone[c["llp"] >= 0] == llp_mod.ZONE_BEYOND).any()
    assert (ev.truth["llp"]["zone"] == llp_mod.ZONE_BEYOND).sum() > 50


def test_jets_and_truth(llp_events):
    ev = llp_events(1.0)
    j, c = ev.jets, ev.cands
    lj = j["llp"] >= 0
    assert 2.5 < lj.sum() / N < 4.0  # up to 4 quark jets an event
    assert (~lj).any()  # ISR jets
    assert np.all(j["hadronFlav"][lj] == 0)
    assert set(np.unique(j["partonFlav"][lj])) == {-1, 1}
    assert np.array_equal(j["physFlav"][lj], j["partonFlav"][lj])
    assert np.all(j["pt"] >= 20.0)
    # jets grouped by event in descending pT
    same = j["event"][1:] == j["event"][:-1]
    assert np.all(np.diff(j["event"]) >= 0) and np.all(j["pt"][1:][same] <= j["pt"][:-1][same])
    # the jet axis is the vector sum of the constituents' momenta
    m = c["jet"] >= 0
    k = c["jet"][m]
    nj = ev.n_jets
    sx = np.bincount(k, c["pt"][m] * np.cos(c["phi"][m]), nj)
    sy = np.bincount(k, c["pt"][m] * np.sin(c["phi"][m]), nj)
    sz = np.bincount(k, c["pt"][m] * np.sinh(c["eta"][m]), nj)
    np.testing.assert_allclose(np.arctan2(sy, sx), j["phi"], atol=1e-9)
    np.testing.assert_allclose(np.arcsinh(sz / np.hypot(sx, sy)), j["eta"], atol=1e-9)
    np.testing.assert_allclose(np.hypot(sx, sy), j["rawPt"], rtol=1e-9)
    # LLP jets follow their quark
    q = ev.truth["quark"]
    has = q["jet"] >= 0
    dphi = (j["phi"][q["jet"][has]] - q["phi"][has] + np.pi) % (2 * np.pi) - np.pi
    assert np.median(np.hypot(j["eta"][q["jet"][has]] - q["eta"][has], dphi)) < 0.05
    assert np.all(j["llp"][q["jet"][has]] == q["llp"][has])
    # b bbar decays: b jets with one b hadron per quark
    eb = llp_events(0.1, llp_decay="bb")
    jb = eb.jets
    lb = jb["llp"] >= 0
    assert np.all(jb["hadronFlav"][lb] == 5) and np.all(np.abs(jb["partonFlav"][lb]) == 5)
    assert np.all(jb["nBHadrons"][lb] >= 1)


# ----------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("llp")
    out = {}
    for fmt in ("pfnano", "jetntuple"):
        for proc in ("qcd", "llp"):
            out[fmt, proc] = generate_file(d / f"{proc}_{fmt}.root", format=fmt, n_events=80,
                                           seed=3, process=proc, pileup_candidates=SOFT)
    return out


@pytest.mark.parametrize(("fmt", "tree"), [("pfnano", "Events"), ("jetntuple", "AK4jets/jetTree")])
def test_schema_identical_to_qcd(pair, fmt, tree):
    with uproot.open(pair[fmt, "qcd"]) as fq, uproot.open(pair[fmt, "llp"]) as fl:
        tq, tl = fq[tree], fl[tree]
        assert fq.file.compression.__class__ is fl.file.compression.__class__
        assert tq.keys() == tl.keys()
        for name in tq.keys():
            bq, bl = tq[name], tl[name]
            assert bq.typename == bl.typename, name
            assert bq.title == bl.title, name
            assert bq.interpretation == bl.interpretation, name
            assert (bq.count_branch is None) == (bl.count_branch is None), name
            if bq.count_branch is not None:
                assert bq.count_branch.name == bl.count_branch.name, name
        assert tl.num_entries > 0


def test_files_content(pair):
    with uproot.open(pair["pfnano", "llp"]) as f:
        a = f["Events"].arrays()
    with uproot.open(pair["jetntuple", "llp"]) as f:
        jt = f["AK4jets/jetTree"].arrays()
    # GenPart: mediator and LLPs first, the LLP daughter partons point to an LLP
    pdg, mother = a.GenPart_pdgId, a.GenPart_genPartIdxMother
    assert ak.all(pdg[:, 0] == llp_mod.MEDIATOR_PDGID)
    assert ak.all((pdg[:, 1] == llp_mod.LLP_PDGID) & (pdg[:, 2] == llp_mod.LLP_PDGID))
    assert ak.all(mother[:, 1:3] == 0)
    daughters = mother[:, 3:]
    assert ak.any(daughters == 1) and ak.any(daughters == 2)
    assert set(_np(abs(pdg[:, 3:][(daughters == 1) | (daughters == 2)]))) == {1}
    # tracks only with track details, -1 fill values otherwise (as the real format)
    err = _np(a.PFCands_d0Err)
    charge = _np(a.PFCands_charge)
    assert np.all(_np(a.PFCands_d0)[err == -1] == -1) and np.all(err[charge == 0] == -1)
    # JetNtuple: the producer's selection, as for QCD
    assert np.all(ak.to_numpy(jt.jetPt) > 30) and np.all(np.abs(ak.to_numpy(jt.jetEta)) < 2.5)
    assert np.all(ak.to_numpy(jt.eventJetMult) >= 2)
    # (selected at full precision: compare with the in-memory jets, not PFNano's
    # 10-bit Jet_pt, which may round across 30 GeV)
    ev = generate_events(80, make_rng(3, 0), process="llp", pileup_candidates=SOFT)
    j = ev.jets
    ok = (j["pt"] > 30) & (np.abs(j["eta"]) < 2.5)
    first = ev.jet_offsets[:-1]
    two = (ev.jet_counts >= 2)
    lead = np.zeros(ev.n_events, dtype=bool)
    lead[two] = ok[first[two]] & ok[first[two] + 1]
    saved = ok & lead[j["event"]]
    np.testing.assert_allclose(j["pt"][saved], ak.to_numpy(jt.jetPt), rtol=1e-6)
    assert np.array_equal(ev.event["event"][j["event"][saved]], ak.to_numpy(jt.event))
    assert (~lead).any()  # some signal events fail the selection (LLP jets lost / soft)
    assert set(np.unique(ak.to_numpy(jt.hadronFlav))) <= {0, 4, 5}


def test_signal_jets_more_displaced_than_background(pair):
    """What an analysis sees in the files: tracks of jets (JetPFCands links)."""

    def jet_track_d0(path):
        with uproot.open(path) as f:
            a = f["Events"].arrays(["PFCands_d0", "PFCands_d0Err", "JetPFCands_pFCandsIdx"])
        idx = a.JetPFCands_pFCandsIdx
        d0, err = a.PFCands_d0[idx], a.PFCands_d0Err[idx]
        return np.abs(_np(d0[err > 0]))

    sig, bkg = jet_track_d0(pair["pfnano", "llp"]), jet_track_d0(pair["pfnano", "qcd"])
    assert np.median(sig) > 10 * np.median(bkg)  # c tau = 1 cm (default)


# ----------------------------------------------------------------------------- options, determinism


@pytest.mark.parametrize("bad", [0.001, 0.0099, 100.5, 1000.0, 0.0, -1.0])
def test_ctau_out_of_range(tmp_path, bad):
    with pytest.raises(ValueError, match="llp_ctau"):
        generate_file(tmp_path / "x.root", format="pfnano", n_events=5, seed=1, process="llp",
                      llp_ctau=bad)
    with pytest.raises(ValueError, match="llp_ctau"):
        generate_events(5, make_rng(1), process="llp", llp_ctau=bad)
    assert not (tmp_path / "x.root").exists()


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"llp_decay": "cc"}, "llp_decay"),
        ({"llp_per_event": 3}, "llp_per_event"),
        ({"llp_mass": 300.0}, "mediator_mass"),
        ({"llp_mass": 5.0, "llp_decay": "bb"}, "llp_mass"),
        ({"llp_ctau": "1"}, "llp_ctau"),
    ],
)
def test_bad_llp_options(kwargs, word):
    with pytest.raises(ValueError, match=word):
        generate_events(5, make_rng(1), process="llp", **kwargs)


def test_llp_options_are_an_error_for_qcd(tmp_path):
    with pytest.raises(ValueError, match="llp_ctau"):
        generate_events(5, make_rng(1), llp_ctau=1.0)
    with pytest.raises(ValueError, match="mediator_mass"):
        generate_dataset(tmp_path, format="jetntuple", n_files=1, events_per_file=5,
                         mediator_mass=600.0)
    assert list(tmp_path.iterdir()) == []


def test_ctau_range_edges_and_variants():
    assert "llp" in PROCESSES
    for kw in ({"llp_ctau": 0.01}, {"llp_ctau": 100.0}, {"llp_per_event": 1},
               {"jets_min": 2, "jets_max": 2}, {"mediator_mass": 1000.0, "llp_mass": 100.0}):
        ev = generate_events(20, make_rng(2), process="llp", pileup_candidates=SOFT, **kw)
        assert ev.process == "llp" and ev.n_events == 20
        assert ev.truth["llp"]["event"].size == 20 * kw.get("llp_per_event", 2)
    assert generate_events(0, make_rng(2), process="llp").n_jets == 0


def test_deterministic(tmp_path):
    a = generate_events(40, make_rng(5, 2), process="llp", file_index=2, llp_ctau=3.0)
    b = generate_events(40, make_rng(5, 2), process="llp", file_index=2, llp_ctau=3.0)
    c = generate_events(40, make_rng(5, 2), process="llp", file_index=2, llp_ctau=4.0)
    for part in ("event", "jets", "cands"):
        da, db = getattr(a, part), getattr(b, part)
        assert all(np.array_equal(da[k], db[k]) for k in da), part
    for name, t in a.truth.items():
        assert all(np.array_equal(t[k], b.truth[name][k]) for k in t), name
    assert not np.array_equal(a.truth["llp"]["decayLength"], c.truth["llp"]["decayLength"])
    # files: dataset file i is generate_file(file_index=i), identical arrays
    paths = generate_dataset(tmp_path / "ds", format="pfnano", n_files=2, events_per_file=15,
                             seed=5, process="llp", llp_ctau=3.0, pileup_candidates=SOFT)
    one = generate_file(tmp_path / "one.root", format="pfnano", n_events=15, seed=5,
                        file_index=1, process="llp", llp_ctau=3.0, pileup_candidates=SOFT)
    with uproot.open(paths[1]) as fa, uproot.open(one) as fb:
        ta, tb = fa["Events"].arrays(), fb["Events"].arrays()
    for field in ta.fields:
        assert ak.array_equal(ta[field], tb[field]), field


def test_speed_like_qcd():
    def cpu(**kw):
        t = time.process_time()
        generate_events(400, make_rng(9), **kw)
        return time.process_time() - t

    cpu(process="llp")  # warm-up
    t_qcd = min(cpu() for _ in range(2))
    t_llp = min(cpu(process="llp") for _ in range(2))
    assert t_llp < 2.5 * t_qcd + 0.05, (t_llp, t_qcd)
