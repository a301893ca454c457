"""Readers on the real CMS files (pfnano, treemaker, nano_tt_v15) and on files written here.

The physics facts checked would fail with a wrong reader: jet and track counts
per event equal what uproot reads directly; every associated track lies within
ΔR < R of its jet and none within R is missed (brute force in plain numpy, not
the numba kernel); the -1 "no track details" fills never reach a dxy histogram
(the processor's histograms equal ones filled here from the raw branches with
``d0Err > 0``); impact parameters stay in cm; flavour labels follow the file's own
hadron/parton flavour branches.

The real files are read in place from the directory found by
``jettracks_testing.data.cms_data_dir``; the tests that need them are skipped when it is absent.
Files of the ``jettrack_events`` format and broken files are written with uproot.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections import Counter
from pathlib import Path

import awkward as ak
import hist
import numpy as np
import pytest
import uproot
import yaml
from coffea.nanoevents import BaseSchema, NanoEventsFactory

from jettracks import readers
from jettracks.execution import RunError, run_config
from jettracks.physics.association import ASSOCIATION_COUNTS, compare_association
from jettracks.readers.detect import find_tree
from processors.jet_tracks import JetTrackProcessor

PROJECT = Path(__file__).resolve().parents[1]


from jettracks_testing.data import absent_reason, cms_data_dir  # noqa: E402

from jettracks.io import mldata

CMS = cms_data_dir()
needs_cms = pytest.mark.skipif(CMS is None, reason=absent_reason())

CONE = 0.4
#: file stem -> (expected format, tree)
REAL = {
    "pfnano": ("pfnano", "Events"),
    "treemaker": ("treemaker", "PreSelection"),
    "nano_tt_v15": ("nanoaod", "Events"),
}


# ---------------------------------------------------------------------------
# Independent raw view of each file (uproot + numpy only; no project code)
# ---------------------------------------------------------------------------
@functools.cache
def open_real(stem: str):
    """One open uproot file per real file for the whole module: uproot caches the
    deserialised TTree per file object (nano_tt_v15's 2,656 branches take ~1-2 s)."""
    return uproot.open(CMS / f"{stem}.root")


def real_tree(stem: str):
    return open_real(stem)[REAL[stem][1]]


@functools.cache
def raw_view(stem: str) -> dict:
    """Per-event jets and tracks straight from the branches, same units as stored."""
    tree = real_tree(stem)
    if stem == "pfnano":
        a = tree.arrays(
            ["run", "event", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_hadronFlavour", "Jet_partonFlavour",
             "PFCands_pt", "PFCands_eta", "PFCands_phi", "PFCands_charge", "PFCands_d0", "PFCands_d0Err"]
        )
        jets = (a.Jet_pt, a.Jet_eta, a.Jet_phi, a.Jet_hadronFlavour, a.Jet_partonFlavour)
        trk = (a.PFCands_pt, a.PFCands_eta, a.PFCands_phi, a.PFCands_charge, a.PFCands_d0, a.PFCands_d0Err)
        run, event = a.run, a.event
    elif stem == "treemaker":
        j = "Jets/Jets.fCoordinates."
        t = "Tracks/Tracks.fCoordinates."
        a = tree.arrays(
            ["RunNum", "EvtNum", j + "fPt", j + "fEta", j + "fPhi", "Jets_hadronFlavor", "Jets_partonFlavor",
             t + "fX", t + "fY", t + "fZ", "Tracks_charge", "Tracks_dxyPV0", "Tracks_dxyErrorPV0"]
        )
        px, py, pz = a[t + "fX"], a[t + "fY"], a[t + "fZ"]
        pt = np.hypot(px, py)
        jets = (a[j + "fPt"], a[j + "fEta"], a[j + "fPhi"], a.Jets_hadronFlavor, a.Jets_partonFlavor)
        trk = (pt, np.arcsinh(pz / pt), np.arctan2(py, px), a.Tracks_charge, a.Tracks_dxyPV0, a.Tracks_dxyErrorPV0)
        run, event = a.RunNum, a.EvtNum
    else:
        a = tree.arrays(
            ["run", "event", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_hadronFlavour", "Jet_partonFlavour",
             "IsoTrack_pt", "IsoTrack_eta", "IsoTrack_phi", "IsoTrack_charge", "IsoTrack_dxy"]
        )
        jets = (a.Jet_pt, a.Jet_eta, a.Jet_phi, a.Jet_hadronFlavour, a.Jet_partonFlavour)
        # NanoAOD has no IsoTrack dxy error: every stored dxy is a measurement.
        trk = (a.IsoTrack_pt, a.IsoTrack_eta, a.IsoTrack_phi, a.IsoTrack_charge, a.IsoTrack_dxy,
               ak.ones_like(a.IsoTrack_dxy))
        run, event = a.run, a.event
    names_j = ("pt", "eta", "phi", "hadron", "parton")
    names_t = ("pt", "eta", "phi", "charge", "dxy", "err")
    return {
        "run": ak.to_numpy(run).astype(np.int64),
        "event": ak.to_numpy(event).astype(np.uint64),
        "n_jet": ak.to_numpy(ak.num(jets[0])),
        "n_trk": ak.to_numpy(ak.num(trk[0])),
        "jets": [{k: ak.to_numpy(v[i]).astype(np.float64) for k, v in zip(names_j, jets)} for i in range(len(run))],
        "tracks": [{k: ak.to_numpy(v[i]).astype(np.float64) for k, v in zip(names_t, trk)} for i in range(len(run))],
    }


def brute_force(raw: dict, *, cone: float, jet_pt_min=30.0, jet_abs_eta_max=2.5, track_pt_min=1.0) -> dict:
    """(event, jet index) -> (in-cone track indices, ambiguous indices near ΔR = R)."""
    out = {}
    for ev, (jets, trk) in enumerate(zip(raw["jets"], raw["tracks"])):
        sel_trk = (trk["charge"] != 0) & (trk["pt"] >= track_pt_min)
        for j in np.flatnonzero((jets["pt"] > jet_pt_min) & (np.abs(jets["eta"]) < jet_abs_eta_max)):
            dphi = np.abs(trk["phi"] - jets["phi"][j]) % (2 * np.pi)
            dphi = np.minimum(dphi, 2 * np.pi - dphi)
            dr = np.hypot(trk["eta"] - jets["eta"][j], dphi)
            inside = np.flatnonzero(sel_trk & (dr < cone))
            near = np.flatnonzero(sel_trk & (np.abs(dr - cone) < 1e-6))
            out[(ev, int(j))] = (inside, near)
    return out


def expected_label(hadron: int, parton: int) -> str:
    """CMS hadron-based definition, written out independently of jettracks.physics.flavour."""
    if hadron == 5:
        return "b"
    if hadron == 4:
        return "c"
    p = abs(int(parton))
    return "uds" if p in (1, 2, 3) else "g" if p == 21 else "unmatched"


@functools.cache
def events_of(stem: str, fmt: str | None = None, tree: str | None = None):
    """NanoEvents (BaseSchema, virtual) of a real file; cached so that repeated
    processor passes reuse the decompressed branches (pfnano.root is LZMA)."""
    fmt = fmt or REAL[stem][0]
    path = str(CMS / f"{stem}.root")
    return NanoEventsFactory.from_root(
        open_real(stem),
        treepath=tree or REAL[stem][1],
        schemaclass=BaseSchema,
        metadata={"dataset": stem, "format": fmt, "is_mc": True, "filename": path},
        mode="virtual",
    ).events()


# ---------------------------------------------------------------------------
# Fixtures: one processor pass per real file (shared by the checks below)
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """stem -> (processor output, ML per-jet table, raw view). track_pt_min=0 lets -1 fills into cones."""
    if CMS is None:
        pytest.skip(absent_reason())
    out = {}
    for stem in REAL:
        ml_dir = tmp_path_factory.mktemp(f"ml_{stem}")
        proc = JetTrackProcessor(cone_dr=CONE, track_pt_min=0.0, ml_dir=str(ml_dir))
        result = proc.process(events_of(stem))
        parts = sorted(ml_dir.glob(f"part-*{mldata.PART_SUFFIX}"))
        assert len(parts) == 1
        out[stem] = (result, ak.from_arrow(mldata.read_part(parts[0])), raw_view(stem))
    return out


# ---------------------------------------------------------------------------
# Detection and reading
# ---------------------------------------------------------------------------
@needs_cms
@pytest.mark.parametrize("stem", list(REAL))
def test_detects_real_file(stem):
    fmt, tree = REAL[stem]
    assert readers.detect(open_real(stem)) == fmt
    assert readers.detect_tree(open_real(stem)) == (fmt, tree)
    if stem == "treemaker":  # by path too (each open re-reads the tree metadata)
        assert readers.detect(CMS / f"{stem}.root") == fmt
    # Importing the submodule readers.detect must not shadow the function.
    assert callable(readers.detect)


def test_detection_order_most_specific_first():
    names = readers.available()
    for name in ("pfnano", "nanoaod", "treemaker", "jettrack_events", "jetntuple"):
        assert name in names
    assert names.index("pfnano") < names.index("nanoaod")
    assert names.index("jettrack_events") < names.index("nanoaod")


def test_treemaker_tree_in_directory_is_found():
    cls = readers.reader_class("treemaker")
    branches = set(cls().required_branches())
    assert find_tree(cls, {"TreeMaker2/PreSelection": branches}) == "TreeMaker2/PreSelection"
    assert find_tree(cls, {"PreSelection": branches}) == "PreSelection"
    assert find_tree(cls, {"PreSelection": branches - {"Tracks_dxyPV0"}}) is None


@needs_cms
@pytest.mark.parametrize("stem", list(REAL))
def test_reader_counts_ids_and_flavour_match_uproot(stem):
    fmt, _ = REAL[stem]
    tree = real_tree(stem)
    reader = readers.get(fmt)
    batch = reader.read(tree.arrays(reader.branches(set(tree.keys(recursive=True)))))
    raw = raw_view(stem)
    assert batch.n_events == batch.n_entries == tree.num_entries
    np.testing.assert_array_equal(ak.to_numpy(ak.num(batch.jets, axis=1)), raw["n_jet"])
    np.testing.assert_array_equal(ak.to_numpy(ak.num(batch.tracks, axis=1)), raw["n_trk"])
    np.testing.assert_array_equal(batch.run, raw["run"])
    np.testing.assert_array_equal(batch.event, raw["event"])
    assert set(batch.flavour_fields) == {"hadron_flavour", "parton_flavour"}
    flat_jets = ak.flatten(batch.jets)
    np.testing.assert_array_equal(
        ak.to_numpy(flat_jets["hadron_flavour"]), np.concatenate([j["hadron"] for j in raw["jets"]])
    )
    np.testing.assert_array_equal(
        ak.to_numpy(flat_jets["parton_flavour"]), np.concatenate([j["parton"] for j in raw["jets"]])
    )
    # Kinematics: same values as stored (GeV, rad), no rescaling.
    np.testing.assert_allclose(
        ak.to_numpy(flat_jets["pt"]), np.concatenate([j["pt"] for j in raw["jets"]]), rtol=1e-6
    )
    trk = ak.flatten(batch.tracks)
    np.testing.assert_allclose(
        ak.to_numpy(trk["pt"]), np.concatenate([t["pt"] for t in raw["tracks"]]), rtol=1e-6
    )
    # Jet masses are physical (TreeMaker computes them from E and p).
    mass = ak.to_numpy(flat_jets["mass"])
    # As stored: NanoAOD v15 holds a few jets with mass ~ -1e-5 GeV (rounding of ~massless jets).
    assert np.all(np.isfinite(mass)) and np.all(mass > -1e-4)
    if stem == "treemaker":
        assert batch.track_kind == "tracks"
        assert 1.0 < np.median(mass) < 50.0
    elif stem == "nano_tt_v15":
        assert batch.track_kind == "isolated_tracks"
        assert any("isolated" in n for n in batch.notices)
        assert np.all(np.isinf(ak.to_numpy(trk["dxy_err"])))  # documented convention
    else:
        assert batch.track_kind == "pf_candidates"


@needs_cms
def test_nanoaod_without_isotrack_charge_takes_sign_from_pdgid():
    # pfnano.root is an older NanoAOD: IsoTrack_* without IsoTrack_charge.
    tree = real_tree("pfnano")
    assert "IsoTrack_charge" not in tree.keys() and "IsoTrack_pdgId" in tree.keys()
    reader = readers.get("nanoaod")
    batch = reader.read(tree.arrays(reader.branches(set(tree.keys()))))
    pdg = ak.to_numpy(ak.flatten(tree["IsoTrack_pdgId"].array()))
    charge = ak.to_numpy(ak.flatten(batch.tracks["charge"]))
    assert len(charge) == len(pdg) > 0
    expected = np.where(np.abs(pdg) == 211, np.sign(pdg), -np.sign(pdg))
    np.testing.assert_array_equal(charge, expected)


# ---------------------------------------------------------------------------
# The processor on the real files
# ---------------------------------------------------------------------------
@needs_cms
@pytest.mark.parametrize("stem", list(REAL))
def test_cutflow_counts_match_uproot(processed, stem):
    result, ml, raw = processed[stem]
    flow = result["cutflow"][stem]
    n_sel_jets = sum(int(((j["pt"] > 30) & (np.abs(j["eta"]) < 2.5)).sum()) for j in raw["jets"])
    n_charged = sum(int((t["charge"] != 0).sum()) for t in raw["tracks"])
    assert flow["entries"] == flow["events"] == len(raw["run"])
    assert flow["jets"] == int(raw["n_jet"].sum())
    assert flow["selected_jets"] == n_sel_jets == len(ml)
    assert flow["tracks"] == n_charged
    assert result["entries"][str(CMS / f"{stem}.root")] == len(raw["run"])
    # Selected jets per event, as uproot sees them.
    got = Counter(int(e) for e in ak.to_numpy(ml["event"]))
    for ev, jets in zip(raw["event"], raw["jets"]):
        assert got.get(int(ev), 0) == int(((jets["pt"] > 30) & (np.abs(jets["eta"]) < 2.5)).sum())


@needs_cms
@pytest.mark.parametrize("stem", list(REAL))
def test_association_equals_brute_force(processed, stem):
    result, ml, raw = processed[stem]
    truth = brute_force(raw, cone=CONE, track_pt_min=0.0)
    event_pos = {int(e): i for i, e in enumerate(raw["event"])}
    assert len(ml) == len(truth)
    n_checked = 0
    for row in ml.to_list():
        ev = event_pos[int(row["event"])]
        inside, near = truth[(ev, int(row["jet_index"]))]
        trk = raw["tracks"][ev]
        assert all(d < CONE for d in row["track_dr"])  # every associated track within R
        got = sorted(zip(np.float32(row["track_pt"]), np.float32(row["track_eta"])))
        want = sorted(zip(trk["pt"][inside].astype(np.float32), trk["eta"][inside].astype(np.float32)))
        if len(near):  # a track within 1e-6 of ΔR = R may fall either way
            assert abs(len(got) - len(want)) <= len(near)
        else:
            assert got == want, f"event {row['event']} jet {row['jet_index']}"
        n_checked += len(want)
    assert n_checked == result["cutflow"][stem]["tracks_in_cone"] > 0


def _own_hists(raw):
    """dxy and |dxy| histograms filled here from raw branches, valid = error > 0 (PFNano: d0Err > 0)."""
    truth = brute_force(raw, cone=CONE, track_pt_min=0.0)
    dxy = []
    for (ev, _j), (inside, _near) in truth.items():
        trk = raw["tracks"][ev]
        ok = inside[trk["err"][inside] > 0]
        dxy.append(trk["dxy"][ok])
    dxy = np.concatenate(dxy)
    h = hist.Hist(hist.axis.Regular(200, -0.1, 0.1))
    h.fill(dxy)
    ha = hist.Hist(hist.axis.Regular(70, 1e-5, 50, transform=hist.axis.transform.log))
    ha.fill(np.abs(dxy))
    return h, ha, dxy


@needs_cms
@pytest.mark.parametrize("stem", list(REAL))
def test_dxy_histograms_equal_raw_fill_without_fill_values(processed, stem):
    result, ml, raw = processed[stem]
    hists = result["hists"]
    own, own_abs, dxy = _own_hists(raw)
    mine = hists["track_dxy"][{"dataset": stem}].project("dxy")
    mine_abs = hists["track_abs_dxy"][{"dataset": stem}].project("absdxy")
    np.testing.assert_array_equal(mine.values(flow=True), own.values(flow=True))
    np.testing.assert_array_equal(mine_abs.values(flow=True), own_abs.values(flow=True))
    assert result["cutflow"][stem]["tracks_valid_dxy"] == len(dxy)
    if stem == "pfnano":
        # The -1 fills really are in the cones here (track_pt_min = 0) ...
        truth = brute_force(raw, cone=CONE, track_pt_min=0.0)
        fills = np.concatenate(
            [raw["tracks"][ev]["dxy"][ins][raw["tracks"][ev]["err"][ins] == -1] for (ev, _), (ins, _) in truth.items()]
        )
        assert len(fills) > 0 and np.all(fills == -1)
        # ... and none reaches a histogram: a fill that let them in would differ at |dxy| = 1 cm
        # (and in the dxy underflow), where the processor agrees with the valid-only fill.
        bin_of_one = mine_abs.axes[0].index(1.0)
        with_fills = own_abs.copy()
        with_fills.fill(np.abs(fills))
        assert with_fills.values()[bin_of_one] == mine_abs.values()[bin_of_one] + len(fills)
        assert mine.values(flow=True)[0] == own.values(flow=True)[0]
        valid_ml = ak.to_numpy(ak.flatten(ml["track_dxy_err"])) > 0
        assert not np.any(ak.to_numpy(ak.flatten(ml["track_dxy"]))[valid_ml] == -1)
        # The ML columns: NaN exactly where the track has no details (the reader's -1 fills).
        assert 0 < (~valid_ml).sum() < len(valid_ml)
        for col in ("track_dxy", "track_dz", "track_dz_err", "track_trk_chi2"):
            assert np.array_equal(np.isnan(ak.to_numpy(ak.flatten(ml[col]))), ~valid_ml), col


@needs_cms
@pytest.mark.parametrize("stem", list(REAL))
def test_impact_parameters_are_cm(processed, stem):
    _, ml, _ = processed[stem]
    dxy = ak.to_numpy(ak.flatten(ml["track_dxy"]))
    err = ak.to_numpy(ak.flatten(ml["track_dxy_err"]))
    valid = (err > 0) & np.isfinite(dxy)
    med = float(np.median(np.abs(dxy[valid])))
    # cm: O(0.001-0.1); micrometres would read 1e4 times more, metres 100 times less.
    assert 5e-4 < med < 0.1, med
    if stem != "nano_tt_v15":
        # Resolution of a track's dxy: tens of micrometres = O(0.001) cm.
        assert 3e-4 < float(np.median(err[valid])) < 0.05


@needs_cms
@pytest.mark.parametrize("stem", list(REAL))
def test_flavour_labels_follow_file_branches(processed, stem):
    result, ml, raw = processed[stem]
    event_pos = {int(e): i for i, e in enumerate(raw["event"])}
    counts: dict[str, int] = {}
    for row in ml.to_list():
        jets = raw["jets"][event_pos[int(row["event"])]]
        j = int(row["jet_index"])
        assert row["hadron_flavour"] == int(jets["hadron"][j])
        assert row["parton_flavour"] == int(jets["parton"][j])
        label = expected_label(int(jets["hadron"][j]), int(jets["parton"][j]))
        assert row["flavour"] == label
        counts[label] = counts.get(label, 0) + 1
    h = result["hists"]["jet_n_tracks"][{"dataset": stem}]
    for label, n in counts.items():
        assert h[{"flavour": label}].sum(flow=True) == n
    if stem in ("nano_tt_v15",):  # ttbar: b jets must be there
        assert counts.get("b", 0) > 0


@needs_cms
def test_notices_say_what_the_tracks_are(processed):
    notices = processed["nano_tt_v15"][0]["notices"]
    assert any("isolated tracks" in n for n in notices)
    assert any("no dxy uncertainty" in n for n in notices)


# ---------------------------------------------------------------------------
# PFNano: ΔR vs constituent association
# ---------------------------------------------------------------------------
@needs_cms
def test_compare_association_on_real_pfnano():
    tree = real_tree("pfnano")
    reader = readers.get("pfnano", links=True)
    batch = reader.read(tree.arrays(reader.branches(set(tree.keys()))))
    assert batch.links is not None
    counts = compare_association(batch, cone_dr=CONE)
    assert set(counts) == set(ASSOCIATION_COUNTS)
    assert counts["dr_total"] == counts["both"] + counts["dr_only"]
    assert counts["constituents_total"] == counts["both"] + counts["constituents_only"]
    assert counts["both"] > 0 and counts["dr_only"] > 0

    # Independent: constituent pairs from the raw links, ΔR pairs by brute force.
    raw = raw_view("pfnano")
    a = tree.arrays(["JetPFCands_jetIdx", "JetPFCands_pFCandsIdx"])
    truth = brute_force(raw, cone=CONE)
    dr_pairs = {(ev, j, int(t)) for (ev, j), (ins, _) in truth.items() for t in ins}
    con_pairs = set()
    for ev in range(len(a)):
        jets, trk = raw["jets"][ev], raw["tracks"][ev]
        for j, c in zip(a.JetPFCands_jetIdx[ev].tolist(), a.JetPFCands_pFCandsIdx[ev].tolist()):
            if jets["pt"][j] > 30 and abs(jets["eta"][j]) < 2.5 and trk["charge"][c] != 0 and trk["pt"][c] >= 1:
                con_pairs.add((ev, j, c))
    assert counts["both"] == len(dr_pairs & con_pairs)
    assert counts["dr_only"] == len(dr_pairs - con_pairs)
    assert counts["constituents_only"] == len(con_pairs - dr_pairs)
    # Same totals as the processor's two association modes.
    for assoc, key in (("dr", "dr_total"), ("constituents", "constituents_total")):
        out = JetTrackProcessor(cone_dr=CONE, association=assoc).process(events_of("pfnano"))
        assert out["cutflow"]["pfnano"]["tracks_in_cone"] == counts[key]


def test_compare_association_needs_links():
    batch = readers.EventBatch(
        run=np.zeros(1, np.int64), lumi=np.zeros(1, np.int64), event=np.zeros(1, np.uint64),
        jets=ak.Array([[]]),
    )
    with pytest.raises(ValueError, match="links"):
        compare_association(batch)


# ---------------------------------------------------------------------------
# NanoAOD with no track collection at all
# ---------------------------------------------------------------------------
def _write_events(path: Path, data: dict, treename: str = "Events") -> Path:
    with uproot.recreate(path) as f:
        f.mktree(treename, {k: v.type for k, v in data.items()}, counter_name=lambda n: "n" + n)
        f[treename].extend(data)
    return path


@needs_cms
def test_nanoaod_without_tracks_gives_jet_outputs(tmp_path):
    a = real_tree("nano_tt_v15").arrays(
        ["run", "luminosityBlock", "event", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_hadronFlavour",
         "Jet_partonFlavour"], entry_stop=50,
    )
    jet = {k[4:]: a[k] for k in a.fields if k.startswith("Jet_")}
    path = _write_events(
        tmp_path / "nano_notracks.root",
        {"run": a.run, "luminosityBlock": a.luminosityBlock, "event": a.event, "Jet": ak.zip(jet)},
    )
    assert readers.detect(path) == "nanoaod"
    events = NanoEventsFactory.from_root(
        {str(path): "Events"}, schemaclass=BaseSchema, mode="virtual",
        metadata={"dataset": "nt", "format": "nanoaod", "is_mc": True, "filename": str(path)},
    ).events()
    batch = readers.get("nanoaod").read(events)
    assert batch.tracks is None and batch.jet_tracks is None and batch.track_kind == "none"
    out = JetTrackProcessor(cone_dr=CONE, ml_dir=str(tmp_path / "ml")).process(events)
    flow = out["cutflow"]["nt"]
    assert flow["jets"] == int(ak.sum(ak.num(a.Jet_pt)))
    assert flow["selected_jets"] > 0
    assert flow["tracks"] == flow["tracks_in_cone"] == flow["tracks_valid_dxy"] == 0
    assert "track_dxy" not in out["hists"]
    assert out["hists"]["jet_pt"].sum(flow=True) == flow["selected_jets"]
    notes = [n for n in out["notices"] if "no track collection" in n]
    assert len(notes) == 1 and "\n" not in notes[0]
    ml = ak.from_arrow(mldata.read_part(next((tmp_path / "ml").glob(f"part-*{mldata.PART_SUFFIX}"))))
    assert len(ml) == flow["selected_jets"] and ak.all(ml["n_tracks"] == 0)


# ---------------------------------------------------------------------------
# jettrack_events: event-level jets + tracks ntuples (files written here)
# ---------------------------------------------------------------------------
def _jettrack_file(path: Path, *, names: dict | None = None, treename: str = "evtTree") -> dict:
    """Three events; two jets in event 0; a -100 (no good PV) and a neutral track included."""
    names = names or {}
    jets = {
        "pt": [[100.0, 50.0], [80.0], [20.0]],
        "eta": [[0.0, 1.0], [-1.0], [0.5]],
        "phi": [[0.0, 2.0], [-3.1], [1.0]],
        "mass": [[10.0, 5.0], [8.0], [2.0]],
        "hadronFlavour": [[5, 0], [4], [0]],
        "partonFlavour": [[5, 21], [4], [1]],
    }
    trk = {
        "pT": [[5.0, 2.0, 3.0, 1.5, 4.0], [2.5, 6.0], [3.0]],
        "eta": [[0.1, -0.1, 1.1, 0.0, 0.05], [-1.05, -1.0], [0.5]],
        "phi": [[0.1, -0.1, 2.05, 1.0, 0.0], [3.1, -3.05], [1.0]],
        "charge": [[1, -1, 1, 1, 0], [-1, 1], [1]],
        "dxypv": [[0.002, -0.004, 0.05, 0.001, 0.0], [-100.0, 0.003], [0.01]],
        "dxyerrorpv": [[0.001, 0.002, 0.003, 0.001, 0.0], [0.002, 0.001], [0.002]],
        "dzpv": [[0.01, 0.02, 0.03, 0.04, 0.0], [-100.0, 0.01], [0.0]],
    }
    jet_prefix = names.get("jet_prefix", "Jet")
    trk_prefix = names.get("trk_prefix", "Trk")
    data = {
        names.get("run", "run"): ak.Array(np.array([1, 1, 1], np.int32)),
        names.get("lumi", "lumi"): ak.Array(np.array([7, 7, 7], np.int32)),
        names.get("event", "event"): ak.Array(np.array([11, 12, 13], np.uint64)),
        jet_prefix: ak.zip({k: ak.Array(v) for k, v in jets.items()}),
        trk_prefix: ak.zip({k: ak.Array(v) for k, v in trk.items()}),
    }
    with uproot.recreate(path) as f:
        f.mktree(treename, {k: v.type for k, v in data.items()}, counter_name=lambda n: "n" + n)
        f[treename].extend(data)
    return {"jets": jets, "trk": trk}


def _events(path: Path, tree: str, fmt: str, **meta):
    return NanoEventsFactory.from_root(
        {str(path): tree}, schemaclass=BaseSchema, mode="virtual",
        metadata={"dataset": "jt", "format": fmt, "is_mc": True, "filename": str(path), **meta},
    ).events()


def test_jettrack_events_default_names(tmp_path):
    path = tmp_path / "evt.root"
    _jettrack_file(path)
    assert readers.detect_tree(str(path)) == ("jettrack_events", "evtTree")
    tree = uproot.open(path)["evtTree"]
    reader = readers.get("jettrack_events")
    batch = reader.read(tree.arrays(reader.branches(set(tree.keys()))))
    assert ak.to_list(ak.num(batch.jets)) == [2, 1, 1]
    assert ak.to_list(ak.num(batch.tracks)) == [5, 2, 1]
    assert batch.flavour_fields == ("hadron_flavour", "parton_flavour")
    dxy = ak.to_numpy(ak.flatten(batch.tracks["dxy"]))
    err = ak.to_numpy(ak.flatten(batch.tracks["dxy_err"]))
    # -100 (no good PV) and error 0 are "no measurement".
    assert np.isnan(dxy[5]) and not err[5] > 0
    assert np.isnan(dxy[4]) and not err[4] > 0
    assert np.count_nonzero(err > 0) == 6

    out = JetTrackProcessor(cone_dr=0.4, jet_pt_min=30).process(_events(path, "evtTree", "jettrack_events"))
    flow = out["cutflow"]["jt"]
    # Jets 100 GeV (eta 0, phi 0), 50 GeV (eta 1, phi 2), 80 GeV (eta -1, phi -3.1); 20 GeV fails.
    assert flow["selected_jets"] == 3 and flow["jets"] == 4
    assert flow["tracks"] == 7  # charged, pt >= 1
    # jet0: tracks 0,1 (track 3 at phi 1.0 is out); jet1: track 2; jet2: both (phi wraps at ±π).
    assert flow["tracks_in_cone"] == 5
    assert flow["tracks_valid_dxy"] == 4  # the -100 track is in jet2's cone but invalid
    h = out["hists"]["track_dxy"].project("dxy")
    assert h.values(flow=True).sum() == 4
    assert out["hists"]["track_abs_dxy"].project("absdxy").values(flow=True).sum() == 4
    by_flav = out["hists"]["jet_pt"].project("flavour")
    assert by_flav[hist.loc("b")] == 1 and by_flav[hist.loc("c")] == 1 and by_flav[hist.loc("g")] == 1


def test_jettrack_events_configurable_names_and_tree(tmp_path):
    path = tmp_path / "custom.root"
    _jettrack_file(
        path, names={"run": "RunNumber", "lumi": "Lumi", "event": "Event", "jet_prefix": "AK5",
                     "trk_prefix": "track"},
        treename="ntuple/events",
    )
    options = {
        "treename": "ntuple/events",
        "branches": {
            "run": "RunNumber", "lumi": "Lumi", "event": "Event",
            "jet_pt": "AK5_pt", "jet_eta": "AK5_eta", "jet_phi": "AK5_phi", "jet_mass": "AK5_mass",
            "jet_hadron_flavour": "AK5_hadronFlavour", "jet_parton_flavour": None,
            "trk_pt": "track_pT", "trk_eta": "track_eta", "trk_phi": "track_phi", "trk_charge": "track_charge",
            "trk_dxy": "track_dxypv", "trk_dxy_err": "track_dxyerrorpv", "trk_dz": "track_dzpv",
        },
    }
    reader = readers.get("jettrack_events", **options)
    assert reader.treename == "ntuple/events"
    assert "AK5_partonFlavour" not in reader.branches()
    tree = uproot.open(path)["ntuple/events"]
    batch = reader.read(tree.arrays(reader.branches(set(tree.keys()))))
    assert batch.flavour_fields == ("hadron_flavour",)
    assert ak.to_list(ak.num(batch.tracks)) == [5, 2, 1]

    # Through a run: reader options in the processor options, tree from the reader.
    cfg = {
        "name": "jt",
        "datasets": {"jt": {"files": [str(path)], "format": "jettrack_events", "metadata": {"is_mc": True}}},
        "processor": {"options": {"cone_dr": 0.4, "reader_options": options}},
        "executor": {"backend": "serial"},
        "output": {"dir": str(tmp_path / "out"), "plots": False, "ml": False},
    }
    result = run_config(cfg, progress=False)
    assert result.cutflow["jt"]["tracks_valid_dxy"] == 4

    with pytest.raises(readers.ReaderError, match="unknown key.*jet_ptt"):
        readers.get("jettrack_events", branches={"jet_ptt": "x"})
    with pytest.raises(readers.ReaderError, match="trk_dxy cannot be null"):
        readers.get("jettrack_events", branches={"trk_dxy": None})


def test_jettrack_events_tree_in_directory_detected(tmp_path):
    path = tmp_path / "evt_dir.root"
    _jettrack_file(path, treename="AK4jets/evtTree")
    assert readers.detect_tree(str(path)) == ("jettrack_events", "AK4jets/evtTree")


# ---------------------------------------------------------------------------
# run_config on the real files, and bad input
# ---------------------------------------------------------------------------
@needs_cms
def test_run_config_auto_on_real_files(processed, tmp_path):
    cfg = {
        "name": "real",
        "datasets": {stem: {"files": [str(CMS / f"{stem}.root")], "format": "auto", "metadata": {"is_mc": True}}
                     for stem in REAL},
        "processor": {"options": {"cone_dr": CONE, "track_pt_min": 0.0}},
        "executor": {"backend": "serial", "chunksize": 100_000},
        "output": {"dir": str(tmp_path / "out"), "plots": False},
    }
    result = run_config(cfg, progress=False)
    assert result.report["formats"] == {stem: fmt for stem, (fmt, _) in REAL.items()}
    for stem in REAL:
        assert result.cutflow[stem] == processed[stem][0]["cutflow"][stem]
        for name in ("track_dxy", "track_abs_dxy"):
            mine = processed[stem][0]["hists"][name][{"dataset": stem}]
            theirs = result.hists[name][{"dataset": stem}]
            np.testing.assert_array_equal(mine.values(flow=True), theirs.values(flow=True))
    assert result.report["entries"]["processed"] == 220


def _pfnano_missing_branch(tmp_path: Path, drop: str = "PFCands_d0Err") -> Path:
    keep = ["run", "luminosityBlock", "event", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass",
            "PFCands_pt", "PFCands_eta", "PFCands_phi", "PFCands_charge", "PFCands_d0", "PFCands_d0Err",
            "PFCands_dz"]
    a = real_tree("pfnano").arrays([k for k in keep if k != drop], entry_stop=3)
    data = {"run": a.run, "luminosityBlock": a.luminosityBlock, "event": a.event,
            "Jet": ak.zip({k[4:]: a[k] for k in a.fields if k.startswith("Jet_")}),
            "PFCands": ak.zip({k[8:]: a[k] for k in a.fields if k.startswith("PFCands_")})}
    return _write_events(tmp_path / "pfnano_missing.root", data)


def _bad_cfg(path: Path, fmt: str, out: Path) -> dict:
    return {
        "name": "bad",
        "datasets": {"bad": {"files": [str(path)], "format": fmt, "metadata": {"is_mc": True}}},
        "executor": {"backend": "serial"},
        "output": {"dir": str(out), "plots": False},
    }


@needs_cms
@pytest.mark.parametrize(
    "case, fmt, expect",
    [
        ("missing_branch", "pfnano", ["'pfnano'", "missing branches", "PFCands_d0Err"]),
        ("wrong_format", "pfnano", ["'pfnano'", "missing branches", "PFCands_d0", "PFCands_pt"]),
        ("wrong_tree", "treemaker", ["'treemaker'", "PreSelection"]),
    ],
)
def test_bad_input_fails_with_one_line(tmp_path, case, fmt, expect):
    path = {
        "missing_branch": lambda: _pfnano_missing_branch(tmp_path),
        "wrong_format": lambda: CMS / "nano_tt_v15.root",
        "wrong_tree": lambda: CMS / "pfnano.root",
    }[case]()
    with pytest.raises(RunError) as info:
        run_config(_bad_cfg(path, fmt, tmp_path / "out"), progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    for part in expect:
        assert part in msg, msg


@needs_cms
def test_auto_on_damaged_pfnano_notes_the_near_miss(tmp_path):
    path = _pfnano_missing_branch(tmp_path)
    found = readers.detect_details(str(path))
    assert found.format == "nanoaod"  # jets only: the PFCands are unusable without d0Err
    assert found.notes == ["not format pfnano: tree Events lacks PFCands_d0Err"]


@needs_cms
def test_cli_run_bad_file_exit_code_1(tmp_path):
    path = _pfnano_missing_branch(tmp_path)
    cfg_path = tmp_path / "bad.yaml"
    cfg_path.write_text(yaml.safe_dump(_bad_cfg(path, "pfnano", tmp_path / "out")))
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(cfg_path), "--no-progress"],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    # the error is one line naming the file (the run also prints each dataset's first file)
    lines = [ln for ln in proc.stderr.splitlines() if str(path) in ln and "error" in ln]
    assert len(lines) == 1, proc.stderr
    assert "'pfnano'" in lines[0] and "missing branches PFCands_d0Err" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("errors_dtype", [np.float32, np.float64])
def test_gather_tracks_masks_unmeasured_like_numpy(errors_dtype):
    """``EventBatch.gather_tracks`` against numpy: at the gathered positions (unsorted, repeated),
    the ``unmasked`` fields are NaN exactly where the error is not > 0 (``-1`` fills, 0,
    negative, NaN), their value elsewhere; other fields keep their values everywhere, in the
    type ``track_types`` names where it names one."""
    from jettracks.readers.base import EventBatch, jagged_records

    rng = np.random.default_rng(7)
    n = 10_001
    fields = {
        "pt": rng.uniform(0.5, 50, n).astype(np.float32),
        "dxy": rng.normal(0, 0.1, n).astype(np.float32),
        "dz": rng.normal(0, 1, n).astype(np.float32),
        "dxy_err": rng.choice(np.array([-1.0, 0.0, -0.5, np.nan, 0.01, 0.2, np.inf]), n).astype(errors_dtype),
        "trk_quality": rng.integers(-1, 8, n).astype(np.int8),  # narrow, as a column cache serves it
    }
    per_event = np.array([n - 1, 0, 1])
    batch = EventBatch(run=np.zeros(3, np.int64), lumi=np.zeros(3, np.int64), event=np.arange(3, dtype=np.uint64),
                       jets=ak.Array([[], [], []]), tracks=jagged_records(fields, per_event), unmasked=("dxy", "dz"),
                       track_types={"trk_quality": np.dtype(np.int32)})
    index = rng.integers(0, n, 3 * n)
    with np.errstate(invalid="ignore"):
        unmeasured = ~(fields["dxy_err"][index] > 0)
    assert 0 < unmeasured.sum() < len(index)
    got = batch.gather_tracks(index)
    assert set(got) == set(fields)
    for f, values in fields.items():
        want = values[index]
        if f in batch.unmasked:
            want = np.where(unmeasured, np.float32(np.nan), want)
            assert np.array_equal(np.isnan(got[f]), unmeasured)
        assert got[f].dtype == batch.track_types.get(f, values.dtype), f
        np.testing.assert_array_equal(got[f], want)
    # A field alone is masked by the error all the same.
    np.testing.assert_array_equal(batch.gather_tracks(index, ["dz"])["dz"], np.where(unmeasured, np.nan, fields["dz"][index]).astype(np.float32))
    with pytest.raises(ValueError, match="event-level tracks"):
        EventBatch(run=batch.run, lumi=batch.lumi, event=batch.event, jets=batch.jets).gather_tracks(index)


@needs_cms
def test_pfnano_fills_read_as_nan_through_gather_tracks():
    """The real PFNano file: the reader leaves the ``-1`` fills of dxy/dz/dz_err/trk_chi2 in the
    batch (listed in ``unmasked``); gathering them gives NaN exactly where ``PFCands_d0Err`` is
    not > 0 and the stored value elsewhere (compared with uproot's arrays)."""
    tree = real_tree("pfnano")
    reader = readers.get("pfnano")
    batch = reader.read(tree.arrays(reader.branches(set(tree.keys()))))
    raw = tree.arrays(["PFCands_d0", "PFCands_d0Err", "PFCands_dz", "PFCands_dzErr", "PFCands_trkChi2"])
    err = ak.to_numpy(ak.flatten(raw.PFCands_d0Err)).astype(np.float32)
    unmeasured = ~(err > 0)
    assert 0 < unmeasured.sum() < len(err)
    assert set(batch.unmasked) == {"dxy", "dz", "dz_err", "trk_chi2"}
    got = batch.gather_tracks(np.arange(len(err)))
    for field, branch in (("dxy", "PFCands_d0"), ("dz", "PFCands_dz"), ("dz_err", "PFCands_dzErr"),
                          ("trk_chi2", "PFCands_trkChi2")):
        stored = ak.to_numpy(ak.flatten(raw[branch])).astype(np.float32)
        assert np.any(stored[unmeasured] == -1), field  # the fills are there to be masked
        np.testing.assert_array_equal(got[field], np.where(unmeasured, np.float32(np.nan), stored), err_msg=field)
