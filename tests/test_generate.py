"""Tests of jettracks.generate: schemas as the real files, determinism, physics."""

from __future__ import annotations

import re
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from jettracks_testing.data import reference_file

import jettracks.generate as gen
from jettracks.generate import (
    FORMATS,
    PROCESSES,
    generate_dataset,
    generate_events,
    generate_file,
    make_rng,
)
from jettracks.generate import jetntuple as jetntuple_writer
from jettracks.generate import pfnano as pfnano_writer

SEED = 7
N_EVENTS = 300
#: Tree path of each generated format.
TREES = {"pfnano": "Events", "jetntuple": "AK4jets/jetTree", "delphes": "Delphes"}


#: The branch list (name, leaf list) of record 12100's JetNtuple, beside the real CMS files.
REFERENCE = reference_file("jetntuple_12100_branches.txt")


def _dtype(branch) -> np.dtype:
    interp = branch.interpretation
    inner = getattr(interp, "content", interp)
    return np.dtype(inner.from_dtype)


def _np(x) -> np.ndarray:
    return ak.to_numpy(ak.flatten(x, axis=None))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("gen")
    return {
        fmt: generate_file(d / f"{fmt}.root", format=fmt, n_events=N_EVENTS, seed=SEED)
        for fmt in FORMATS
    }


@pytest.fixture(scope="module")
def nano(files):
    with uproot.open(files["pfnano"]) as f:
        yield f["Events"].arrays()


@pytest.fixture(scope="module")
def jt(files):
    with uproot.open(files["jetntuple"]) as f:
        yield f["AK4jets/jetTree"].arrays()


# ----------------------------------------------------------------------------- schemas


def _reference_branches() -> list[tuple[str, str]]:
    if REFERENCE is None:
        pytest.skip("reference/jetntuple_12100_branches.txt not found beside the real CMS files "
                    "(set JETTRACKS_SHARED)")
    rows = []
    for line in REFERENCE.read_text().splitlines():
        if line.strip():
            name, leaflist = line.split()
            rows.append((name, leaflist))
    assert len(rows) == 66
    return rows


def test_jetntuple_branches_match_reference(files):
    ref = _reference_branches()
    letter_dtype = {"F": np.dtype(">f4"), "I": np.dtype(">i4"), "l": np.dtype(">u8")}
    with uproot.open(files["jetntuple"]) as f:
        assert f.file.compression.__class__.__name__ == "ZLIB"
        tree = f["AK4jets/jetTree"]
        assert isinstance(tree, uproot.TTree)
        assert f.classname_of("AK4jets") == "TDirectory"
        assert tree.keys() == [name for name, _ in ref]
        for name, leaflist in ref:
            m = re.fullmatch(r"(\w+)(\[(\w+)\])?/(\w)", leaflist)
            assert m, leaflist
            leaf_name, _, counter, letter = m.groups()
            branch = tree[name]
            assert _dtype(branch) == letter_dtype[letter], name
            leaf = branch.member("fLeaves")[0]
            assert type(leaf).__name__ == f"Model_TLeaf{letter.upper()}_v1", name
            assert bool(leaf.member("fIsUnsigned")) == (letter == "l"), name
            if counter:
                assert branch.count_branch is not None, name
                assert branch.count_branch.name == counter, name
                assert branch.interpretation.__class__.__name__ == "AsJagged", name
            else:
                assert branch.count_branch is None, name
            if name == "PF_mass":
                # known limitation: uproot names a leaf like its branch, the real
                # file's leaf is cPF_mass (documented in jetntuple.py)
                assert leaf_name == "cPF_mass"
                assert leaf.member("fName") == "PF_mass"
            else:
                assert leaf.member("fName") == leaf_name, name


def test_jetntuple_has_no_impact_parameters(files):
    with uproot.open(files["jetntuple"]) as f:
        keys = f["AK4jets/jetTree"].keys()
    assert not [k for k in keys if re.search(r"dxy|d0|dz|[Ii]mpact", k)]


def test_pfnano_branches_match_real_file(files, cms_dir):
    with uproot.open(cms_dir / "pfnano.root") as fr, uproot.open(files["pfnano"]) as fg:
        real, mine = fr["Events"], fg["Events"]
        assert isinstance(mine, uproot.TTree)
        assert fg.file.compression.__class__.__name__ == "LZMA"
        required = {
            "run", "luminosityBlock", "event", "nJet", "Jet_pt", "Jet_eta", "Jet_phi",
            "Jet_mass", "Jet_hadronFlavour", "Jet_partonFlavour", "Jet_btagDeepFlavB",
            "Jet_nConstituents", "nPFCands", "PFCands_pt", "PFCands_eta", "PFCands_phi",
            "PFCands_mass", "PFCands_charge", "PFCands_pdgId", "PFCands_d0",
            "PFCands_d0Err", "PFCands_dz", "PFCands_dzErr", "PFCands_pvAssocQuality",
            "PFCands_lostInnerHits", "PFCands_trkQuality", "PFCands_trkChi2",
            "nJetPFCands", "JetPFCands_jetIdx", "JetPFCands_pFCandsIdx",
        }
        assert required <= set(mine.keys())
        for name in mine.keys():
            assert name in real.keys(), name
            assert _dtype(mine[name]) == _dtype(real[name]), name
            assert mine[name].typename == real[name].typename, name
            assert mine[name].title == real[name].title, name
            rc, mc = real[name].count_branch, mine[name].count_branch
            assert (rc is None) == (mc is None), name
            if rc is not None:
                assert rc.name == mc.name, name
    for counter in ("nJet", "nPFCands", "nJetPFCands", "nGenJet", "nGenPart"):
        with uproot.open(files["pfnano"]) as fg:
            assert _dtype(fg["Events"][counter]) == np.dtype(">u4"), counter


def test_pfnano_options_links_and_compression(tmp_path):
    p = generate_file(tmp_path / "x.root", format="pfnano", n_events=20, seed=1,
                      links=False, compression="zlib")
    with uproot.open(p) as f:
        keys = f["Events"].keys()
        assert f.file.compression.__class__.__name__ == "ZLIB"
    assert "nPFCands" in keys
    assert not [k for k in keys if k.startswith(("nJetPFCands", "JetPFCands"))]


def test_pfnano_floats_have_reduced_precision(nano):
    for field in ("PFCands_pt", "PFCands_d0", "Jet_pt"):
        bits = _np(nano[field]).astype(np.float32).view(np.uint32)
        assert np.all(bits & np.uint32((1 << 13) - 1) == 0), field


# ----------------------------------------------------------------------------- determinism


def _events_equal(a, b) -> bool:
    same = np.array_equal(a.jet_counts, b.jet_counts) and np.array_equal(a.cand_counts, b.cand_counts)
    for part in ("event", "jets", "cands"):
        da, db = getattr(a, part), getattr(b, part)
        same = same and da.keys() == db.keys()
        same = same and all(np.array_equal(da[k], db[k]) for k in da)
    return bool(same)


def test_model_is_deterministic():
    a = generate_events(50, make_rng(11, 3), file_index=3)
    b = generate_events(50, make_rng(11, 3), file_index=3)
    assert _events_equal(a, b)
    c = generate_events(50, make_rng(12, 3), file_index=3)
    d = generate_events(50, make_rng(11, 4), file_index=4)
    assert not np.array_equal(a.jets["pt"][:10], c.jets["pt"][:10])
    assert not np.array_equal(a.jets["pt"][:10], d.jets["pt"][:10])
    # event numbers are unique across files
    assert not set(a.event["event"].tolist()) & set(d.event["event"].tolist())


@pytest.mark.parametrize("fmt", FORMATS)
def test_files_are_deterministic(tmp_path, fmt):
    def read(p):
        with uproot.open(p) as f:
            return f[TREES[fmt]].arrays()

    a = read(generate_file(tmp_path / "a.root", format=fmt, n_events=40, seed=5, file_index=2))
    b = read(generate_file(tmp_path / "b.root", format=fmt, n_events=40, seed=5, file_index=2))
    c = read(generate_file(tmp_path / "c.root", format=fmt, n_events=40, seed=6, file_index=2))
    assert a.fields == b.fields
    for field in a.fields:
        assert ak.array_equal(a[field], b[field]), field
    pt = {"pfnano": "Jet_pt", "jetntuple": "jetPt", "delphes": "Jet.PT"}[fmt]
    assert not ak.array_equal(a[pt], c[pt])


def test_both_formats_hold_the_same_jets(nano, jt):
    """The JetNtuple = PFNano jets with pT > 30, |eta| < 2.5 in events whose two leading jets pass."""
    pt, eta = nano.Jet_pt, nano.Jet_eta
    ok = (pt > 30) & (abs(eta) < 2.5)
    ev_ok = (ak.num(pt) >= 2) & ak.fill_none(ak.pad_none(ok, 2)[:, 0] & ak.pad_none(ok, 2)[:, 1], False)
    sel_pt = pt[ok][ev_ok]
    sel_event = ak.broadcast_arrays(nano.event[ev_ok], sel_pt)[0]
    assert np.array_equal(_np(sel_event), ak.to_numpy(jt.event))
    # PFNano floats have 10 mantissa bits
    np.testing.assert_allclose(_np(sel_pt), ak.to_numpy(jt.jetPt), rtol=2e-3)
    np.testing.assert_allclose(
        _np(nano.Jet_hadronFlavour[ok][ev_ok]), ak.to_numpy(jt.hadronFlav)
    )
    assert len(jt) > 0.3 * N_EVENTS


# ----------------------------------------------------------------------------- content


def test_track_fill_values(nano):
    charge = _np(nano.PFCands_charge)
    pt = _np(nano.PFCands_pt)
    fields = {k: _np(nano[f"PFCands_{k}"]) for k in ("d0", "d0Err", "dz", "dzErr")}
    neutral = charge == 0
    assert neutral.any() and (~neutral).any()
    for k, v in fields.items():
        assert np.all(v[neutral] == -1.0), k
    missing = fields["d0Err"] == -1.0
    for k, v in fields.items():
        assert np.array_equal(v == -1.0, missing), k  # all four missing together
    assert np.all(fields["d0Err"][~missing] > 0)
    assert np.all(fields["dzErr"][~missing] > 0)
    frac = missing[~neutral].mean()
    assert 0.2 < frac < 0.6, frac  # real PFNano: ~40 % of charged without track details
    soft, hard = ~neutral & (pt < 0.5), ~neutral & (pt > 1.0)
    assert missing[soft].mean() > 0.9 and missing[hard].mean() < 0.05
    # other track-detail fields follow the same pattern
    assert np.all(_np(nano.PFCands_trkChi2)[missing] == -1.0)
    assert np.all(_np(nano.PFCands_trkQuality)[missing] == 0)
    assert np.all(_np(nano.PFCands_lostInnerHits)[neutral] == -1)
    assert np.all(_np(nano.PFCands_pvAssocQuality)[neutral] == 7)


def test_pdgid_and_charge(nano):
    pdg = _np(nano.PFCands_pdgId)
    charge = _np(nano.PFCands_charge)
    assert set(np.unique(pdg)) <= {-211, 211, -11, 11, -13, 13, 22, 130, 1, 2}
    a = np.abs(pdg)
    assert np.all(charge[a == 211] == np.sign(pdg[a == 211]))
    lep = (a == 11) | (a == 13)
    assert np.all(charge[lep] == -np.sign(pdg[lep]))
    assert np.all(charge[np.isin(a, [22, 130, 1, 2])] == 0)
    mass = _np(nano.PFCands_mass)
    assert np.allclose(mass[a == 211], 0.1396, atol=1e-3)
    assert np.all(mass[np.isin(a, [22, 130])] == 0)
    # tracks only inside the tracker
    assert np.all(np.abs(_np(nano.PFCands_eta))[charge != 0] <= 2.5)


def test_candidate_spectra(nano):
    pt = _np(nano.PFCands_pt)
    charge = _np(nano.PFCands_charge)
    assert (pt < 2.0).mean() > 0.8
    assert 0.35 < (charge != 0).mean() < 0.7
    idx = _np(nano.JetPFCands_pFCandsIdx)
    offs = np.repeat(np.cumsum(ak.to_numpy(ak.num(nano.PFCands_pt))) - ak.to_numpy(ak.num(nano.PFCands_pt)),
                     ak.to_numpy(ak.num(nano.JetPFCands_pFCandsIdx)))
    const_charge = charge[idx + offs]
    assert 0.45 < (const_charge != 0).mean() < 0.75  # ~60 % charged constituents
    n = ak.to_numpy(nano.nPFCands)
    assert 150 < n.mean() < 500  # default pile-up density: a few hundred candidates


def test_flavour_branches_consistent(jt, nano):
    phys = ak.to_numpy(jt.physFlav)
    parton = ak.to_numpy(jt.partonFlav)
    hadron = ak.to_numpy(jt.hadronFlav)
    for flav, prefix in ((phys, "isPhys"), (parton, "isParton")):
        a = np.abs(flav)
        uds = np.isin(a, [1, 2, 3])
        g = a == 21
        assert np.array_equal(ak.to_numpy(jt[prefix + "UDS"]), uds.astype(np.int32))
        assert np.array_equal(ak.to_numpy(jt[prefix + "G"]), g.astype(np.int32))
        assert np.array_equal(ak.to_numpy(jt[prefix + "Other"]), (~uds & ~g).astype(np.int32))
        assert set(np.unique(a)) <= {0, 1, 2, 3, 4, 5, 21}
    assert set(np.unique(hadron)) <= {0, 4, 5}
    assert (hadron == 5).any() and (hadron == 0).any()
    assert np.all(np.abs(parton[hadron == 5]) == 5)
    assert np.all(np.abs(parton[hadron == 4]) == 4)
    agree = (phys == parton).mean()
    assert 0.7 < agree < 1.0  # mostly equal, not always
    assert (phys == 0).any()
    # b and c jets are "Other" in the physics definition
    assert np.all(ak.to_numpy(jt.isPhysOther)[np.isin(np.abs(phys), [4, 5])] == 1)
    h = _np(nano.Jet_hadronFlavour)
    assert set(np.unique(h)) <= {0, 4, 5}
    assert set(np.unique(np.abs(_np(nano.Jet_partonFlavour)))) <= {0, 1, 2, 3, 4, 5, 21}


def test_jets_descending_in_pt(nano, jt):
    pt = nano.Jet_pt
    assert ak.all(pt[:, 1:] <= pt[:, :-1])
    assert ak.all(ak.num(pt) >= 2)
    # jetntuple: consecutive entries per event, descending, ranks and multiplicity
    ev = ak.to_numpy(jt.event)
    starts = np.r_[0, np.nonzero(np.diff(ev))[0] + 1]
    counts = np.diff(np.r_[starts, len(ev)])
    assert len(np.unique(ev)) == len(starts)  # events not interleaved
    assert np.all(counts >= 2)
    order = ak.to_numpy(jt.jetPtOrder)
    assert np.array_equal(order, np.arange(len(ev)) - np.repeat(starts, counts))
    assert np.array_equal(ak.to_numpy(jt.eventJetMult), np.repeat(counts, counts))
    jpt = ak.to_numpy(jt.jetPt)
    same_event = ev[1:] == ev[:-1]
    assert np.all(jpt[1:][same_event] <= jpt[:-1][same_event])
    assert np.all(jpt > 30) and np.all(np.abs(ak.to_numpy(jt.jetEta)) < 2.5)
    assert np.all(ak.to_numpy(jt.run) == ak.to_numpy(jt.run)[0])


def test_jetntuple_pf_box_and_gen(jt):
    deta, dphi = jt.PF_dEta, jt.PF_dPhi
    assert ak.all(abs(deta) <= 1) and ak.all(abs(dphi) <= 1)
    np.testing.assert_allclose(_np(jt.PF_dR), np.hypot(_np(deta), _np(dphi)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(jt.PF_dTheta), np.arctan2(_np(dphi), _np(deta)), rtol=1e-5, atol=1e-6)
    own = ak.sum(jt.PF_fromAK4Jet, axis=1)
    assert np.array_equal(ak.to_numpy(own), ak.to_numpy(jt.jetMult))
    assert ak.all(jt.nPF > jt.jetMult)  # the box holds pile-up / other candidates too
    assert set(np.unique(_np(jt.PF_fromPV))) <= {0, 1, 2, 3}
    # jets without a generator jet: zero scalars, stale constituents of the previous jet
    match = ak.to_numpy(jt.jetGenMatch)
    assert 0 < match.mean() < 1
    assert np.all(ak.to_numpy(jt.genJetPt)[match == 0] == 0)
    assert np.all(ak.to_numpy(jt.genJetPt)[match == 1] > 0)
    for i in np.nonzero(match == 0)[0]:
        if i > 0:
            assert ak.array_equal(jt.genJetPF_pT[i], jt.genJetPF_pT[i - 1])
    gpt = jt.genJetPF_pT[match == 1]
    assert ak.all(gpt[:, 1:] <= gpt[:, :-1])  # gen constituents by descending pT
    assert ak.all(ak.to_numpy(jt.pthat) > 0)
    assert np.all(ak.to_numpy(jt.alpha)[ak.to_numpy(jt.eventJetMult) >= 3] > 0)


def test_mc_info_sentinels(tmp_path):
    p = generate_file(tmp_path / "s.root", format="jetntuple", n_events=60, seed=2, mc_info=False)
    with uproot.open(p) as f:
        a = f["AK4jets/jetTree"].arrays(["pthat", "Pileup_nPU", "Pileup_nTrueInt"])
    assert len(a) > 0
    for k in a.fields:
        assert ak.all(a[k] == -1), k


def _linked(nano):
    """Per linked constituent: jet flavour, d0, d0Err, pt, dR to the jet."""
    n_c = ak.to_numpy(ak.num(nano.PFCands_pt))
    n_l = ak.to_numpy(ak.num(nano.JetPFCands_jetIdx))
    n_j = ak.to_numpy(ak.num(nano.Jet_pt))
    cidx = _np(nano.JetPFCands_pFCandsIdx) + np.repeat(np.cumsum(n_c) - n_c, n_l)
    jidx = _np(nano.JetPFCands_jetIdx) + np.repeat(np.cumsum(n_j) - n_j, n_l)
    jet_eta, jet_phi = _np(nano.Jet_eta)[jidx], _np(nano.Jet_phi)[jidx]
    eta, phi = _np(nano.PFCands_eta)[cidx], _np(nano.PFCands_phi)[cidx]
    dphi = (phi - jet_phi + np.pi) % (2 * np.pi) - np.pi
    return {
        "flav": _np(nano.Jet_hadronFlavour)[jidx],
        "d0": _np(nano.PFCands_d0)[cidx],
        "d0Err": _np(nano.PFCands_d0Err)[cidx],
        "pt": _np(nano.PFCands_pt)[cidx],
        "dr": np.hypot(eta - jet_eta, dphi),
        "cidx": cidx,
        "jidx": jidx,
    }


def test_b_jets_have_wider_dxy(tmp_path):
    p = generate_file(tmp_path / "b.root", format="pfnano", n_events=600, seed=3,
                      pileup_candidates=20)
    with uproot.open(p) as f:
        nano = f["Events"].arrays()
    c = _linked(nano)
    trk = c["d0Err"] > 0
    b = trk & (c["flav"] == 5)
    light = trk & (c["flav"] == 0)
    assert b.sum() > 200 and light.sum() > 2000
    ad = np.abs(c["d0"])
    assert np.median(ad[b]) > 3 * np.median(ad[light])
    sig_b = (ad[b] / c["d0Err"][b] > 3).mean()
    sig_l = (ad[light] / c["d0Err"][light] > 3).mean()
    # light jets carry the displaced background of real QCD (K0S/Λ, conversions, nuclear
    # interactions, bad tracks: ~15 % of tracks with |d0/σ| > 3 in pfnano.root), b jets more
    assert sig_b > 0.3 and sig_l < 0.25 and sig_b > 2.5 * sig_l, (sig_b, sig_l)
    # prompt light-jet tracks: pulls ~ N(0, 1) in the core (median |pull| = 0.674)
    pull = c["d0"][light] / c["d0Err"][light]
    # (0.67 for pure N(0, 1); the displaced background's 15 % tail lifts it to ~0.86, above the
    # real pfnano.root's 0.73 for all charged tracks with details: a known, documented difference)
    assert 0.55 < np.median(np.abs(pull)) < 0.9
    # resolution a (+) b/pT at high pT: ~12 um
    hard = light & (c["pt"] > 20)
    assert 0.0008 < np.median(c["d0Err"][hard]) < 0.002


def test_constituents_geometry(nano):
    c = _linked(nano)
    assert (c["dr"] < 0.45).mean() > 0.97
    assert np.median(c["dr"]) < 0.2
    # constituent pT sums to the raw jet pT
    n_j = int(ak.sum(ak.num(nano.Jet_pt)))
    s = np.bincount(c["jidx"], weights=c["pt"], minlength=n_j)
    raw = _np(nano.Jet_pt) * (1 - _np(nano.Jet_rawFactor))
    ratio = s / raw
    assert np.all((ratio > 0.93) & (ratio < 1.07)), (ratio.min(), ratio.max())
    assert np.array_equal(np.bincount(c["jidx"], minlength=n_j), _np(nano.Jet_nConstituents))
    # pile-up candidates lie within dR < 0.5 of jets too: a dR association picks them up
    linked = np.zeros(int(ak.sum(nano.nPFCands)), dtype=bool)
    linked[c["cidx"]] = True
    pf_eta, pf_phi = nano.PFCands_eta, nano.PFCands_phi
    pairs = ak.cartesian({"j": ak.zip({"eta": nano.Jet_eta, "phi": nano.Jet_phi}),
                          "c": ak.zip({"eta": pf_eta, "phi": pf_phi})}, nested=True)
    dphi = (pairs.c.phi - pairs.j.phi + np.pi) % (2 * np.pi) - np.pi
    near = ak.any(np.hypot(pairs.c.eta - pairs.j.eta, dphi) < 0.5, axis=1)
    near = _np(near)
    assert near[~linked].sum() > 0.2 * linked.sum()


def test_pileup_option_scales_candidates():
    lo = generate_events(100, make_rng(1), pileup_candidates=50)
    hi = generate_events(100, make_rng(1), pileup_candidates=1000)
    assert hi.cand_counts.mean() > 5 * lo.cand_counts.mean()
    jets = generate_events(100, make_rng(1), jets_min=3, jets_max=3, jet_pt_min=25.0)
    assert np.all(jets.jet_counts == 3) and np.all(jets.jets["pt"] > 25.0)


# ----------------------------------------------------------------------------- API


def test_constants():
    assert FORMATS == ("pfnano", "jetntuple", "delphes")
    assert "qcd" in PROCESSES


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"format": "nanoaod"}, "format"),
        ({"process": "ttbar"}, "process"),
        ({"n_events": -1}, "n_events"),
        ({"pileup_candidatez": 3}, "pileup_candidatez"),
        ({"jets_min": 5, "jets_max": 3}, "jets_max"),
        ({"compression": "gzip"}, "compression"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, word):
    args = {"format": "pfnano", "n_events": 5, "seed": 1} | kwargs
    with pytest.raises(ValueError, match=word):
        generate_file(tmp_path / "bad.root", **args)
    assert not (tmp_path / "bad.root").exists()


def test_dataset_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="format"):
        generate_dataset(tmp_path, format="x", n_files=1, events_per_file=1)
    with pytest.raises(ValueError, match="n_files"):
        generate_dataset(tmp_path, format="pfnano", n_files=-1, events_per_file=1)
    with pytest.raises(ValueError, match="bogus"):
        generate_dataset(tmp_path, format="pfnano", n_files=1, events_per_file=1, bogus=1)


def test_zero_events(tmp_path):
    for fmt in FORMATS:
        p = generate_file(tmp_path / f"{fmt}.root", format=fmt, n_events=0, seed=1)
        with uproot.open(p) as f:
            assert f[TREES[fmt]].num_entries == 0


def test_dataset_serial_skip_and_overwrite(tmp_path):
    out = tmp_path / "ds"
    paths = generate_dataset(out, format="jetntuple", n_files=3, events_per_file=30, seed=4,
                             prefix="qcd")
    assert paths == sorted(paths)
    assert [p.name for p in paths] == [f"qcd_{i:04d}.root" for i in range(3)]
    # no temp files; the generation record beside the files
    assert sorted(x.name for x in out.iterdir()) == [".jettracks-generate.json", *[p.name for p in paths]]
    # file i is generate_file(seed, file_index=i)
    single = generate_file(tmp_path / "one.root", format="jetntuple", n_events=30, seed=4,
                           file_index=2)
    with uproot.open(paths[2]) as a, uproot.open(single) as b:
        assert ak.array_equal(a["AK4jets/jetTree"]["jetPt"].array(), b["AK4jets/jetTree"]["jetPt"].array())
    with uproot.open(paths[0]) as a, uproot.open(paths[1]) as b:
        assert not ak.array_equal(a["AK4jets/jetTree"]["event"].array(), b["AK4jets/jetTree"]["event"].array())
    # existing files of the same parameters are reused (not rewritten) unless overwrite
    paths[1].write_bytes(b"placeholder")
    again = generate_dataset(out, format="jetntuple", n_files=3, events_per_file=30, seed=4, prefix="qcd")
    assert again == paths and paths[1].read_bytes() == b"placeholder" and again.action == "reused"
    generate_dataset(out, format="jetntuple", n_files=3, events_per_file=30, seed=4, prefix="qcd",
                     overwrite=True)
    with uproot.open(paths[1]) as f:
        assert f["AK4jets/jetTree"].num_entries > 0
    default = generate_dataset(tmp_path / "d2", format="pfnano", n_files=1, events_per_file=5)
    assert default[0].name == "pfnano_0000.root"


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken(path, _events, **_kw):
        Path(path).write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(pfnano_writer, "write", broken)
    target = tmp_path / "f.root"
    with pytest.raises(RuntimeError, match="disk full"):
        generate_file(target, format="pfnano", n_events=5, seed=1)
    assert list(tmp_path.iterdir()) == []


def test_dataset_with_dask_client(tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2,
                            dashboard_address=None) as client:
        paths = generate_dataset(tmp_path / "dask", format="pfnano", n_files=3,
                                 events_per_file=20, seed=9, client=client)
    serial = generate_dataset(tmp_path / "serial", format="pfnano", n_files=3,
                              events_per_file=20, seed=9)
    assert [p.name for p in paths] == [p.name for p in serial]
    for a, b in zip(paths, serial, strict=True):
        with uproot.open(a) as fa, uproot.open(b) as fb:
            ta, tb = fa["Events"].arrays(), fb["Events"].arrays()
            for field in ta.fields:
                assert ak.array_equal(ta[field], tb[field]), field


def test_writers_public_defaults():
    assert pfnano_writer.DEFAULTS["compression"] == "lzma"
    assert jetntuple_writer.DEFAULTS["compression"] == "zlib"
    assert jetntuple_writer.TREE == "AK4jets/jetTree"
    model, writer = gen.split_options("pfnano", {"pileup_candidates": 10, "links": False})
    assert model == {"pileup_candidates": 10} and writer == {"links": False}


def _generate_modules() -> list[str]:
    import pkgutil

    return sorted(f"jettracks.generate.{m.name}" for m in pkgutil.iter_modules(gen.__path__))


def test_every_generate_module_imports_alone_in_a_fresh_interpreter():
    import subprocess
    import sys

    modules = _generate_modules()
    assert {"jettracks.generate.physics", "jettracks.generate.qcd", "jettracks.generate.llp",
            "jettracks.generate.model", "jettracks.generate.pfnano"} <= set(modules)
    for module in modules:
        proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                              timeout=120, check=False)
        assert proc.returncode == 0, f"{module}: {proc.stderr.strip().splitlines()[-1:]}"


def test_generate_modules_import_no_cycle():
    """Intra-package imports (top level and inside functions) form no cycle.

    A cycle hidden in a function-level import still imports fine, so this reads the
    sources: ``from .x import``, ``from . import x`` and ``jettracks.generate.x``.
    """
    import ast
    import importlib.util

    graph: dict[str, set[str]] = {}
    for module in _generate_modules():
        short = module.rsplit(".", 1)[1]
        tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    deps.add(node.module.split(".")[0])
                elif node.level == 1:
                    deps.update(a.name for a in node.names)
                elif (node.module or "").startswith("jettracks.generate."):
                    deps.add(node.module.split(".")[2])
        graph[short] = deps & {m.rsplit(".", 1)[1] for m in _generate_modules()}

    def cycle_from(start):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*path, nxt]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [c for m in graph if (c := cycle_from(m))]
    assert not cycles, f"import cycle(s): {cycles}"
    assert "model" not in graph["llp"] and "llp" not in graph["physics"]


def test_model_function_sizes():
    """No function of the generator is a 400-line block (issue #10): at most 160 lines."""
    import ast
    import importlib.util

    for module in _generate_modules():
        tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                length = node.end_lineno - node.lineno + 1
                assert length <= 160, (module, node.name, length)
