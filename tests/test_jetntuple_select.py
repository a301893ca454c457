"""The JetNtuple's compiled candidate selection (readers/jetntuple.py: ``select_stored_tracks``)
against a brute-force reference: the per-candidate numpy/awkward path it replaced (charge from
pdgId, η/φ from the jet's and the stored Δη/Δφ, cuts on the float32 columns)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from jettracks import generate, readers
from jettracks.readers.jetntuple import StoredTracks, charge_from_pdgid, select_stored_tracks
from processors.jet_tracks import JetTrackProcessor

IDS = np.array([11, -11, 13, -13, 211, -211, 22, 130, 1, 2, 0, -1, 321, 2147483647, -2147483647], dtype=np.int32)


def _reference(offsets, pt, d_eta, d_phi, dr, pdgid, jet_eta, jet_phi, jet_sel, track_pt_min, cone_dr):
    """One Python loop a jet, numpy per candidate: what the awkward path computed."""
    charge = charge_from_pdgid(pdgid)
    n_charged = 0
    counts = np.zeros(len(jet_sel), dtype=np.int64)
    out = {k: [] for k in ("pt", "eta", "phi", "charge", "dr")}
    for j in range(len(jet_sel)):
        if not jet_sel[j]:
            continue
        s = slice(offsets[j], offsets[j + 1])
        charged = (charge[s] != 0) & (pt[s] >= track_pt_min)  # float32 column vs a Python float
        n_charged += int(charged.sum())
        keep = charged & (dr[s] < cone_dr)
        counts[j] = int(keep.sum())
        out["pt"].append(pt[s][keep])
        out["dr"].append(dr[s][keep])
        out["charge"].append(charge[s][keep])
        je, jp = np.float64(jet_eta[j]), np.float64(jet_phi[j])
        out["eta"].append((je + d_eta[s][keep].astype(np.float64)).astype(np.float32))
        out["phi"].append(((jp + d_phi[s][keep].astype(np.float64) + np.pi) % (2 * np.pi) - np.pi).astype(np.float32))
    return n_charged, counts, {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def _random_jets(rng, n_jets, max_pf):
    n = rng.integers(0, max_pf, n_jets)
    n[:3] = 0  # empty jets
    offsets = np.zeros(n_jets + 1, dtype=np.int64)
    np.cumsum(n, out=offsets[1:])
    total = int(offsets[-1])
    pt = rng.exponential(2.0, total).astype(np.float32)
    pt[::17] = np.float32(0.7)  # exactly at a threshold (float32 of 0.7)
    pt[::23] = np.float32(1.0)
    dr = rng.uniform(0, 0.8, total).astype(np.float32)
    dr[::19] = np.float32(0.4)
    dr[::29] = np.float32(0.5)
    pdgid = rng.choice(IDS, total).astype(np.int32)
    d_eta = rng.uniform(-1, 1, total).astype(np.float32)
    d_phi = rng.uniform(-1, 1, total).astype(np.float32)
    jet_eta = rng.uniform(-2.5, 2.5, n_jets).astype(np.float32).astype(np.float64)
    jet_phi = rng.uniform(-np.pi, np.pi, n_jets).astype(np.float32).astype(np.float64)
    jet_phi[::7] = np.float32(np.pi)  # wraps: φ_jet + Δφ beyond ±π
    jet_phi[1::7] = np.float32(-np.pi)
    jet_sel = rng.random(n_jets) < 0.8
    return offsets, pt, d_eta, d_phi, dr, pdgid, jet_eta, jet_phi, jet_sel


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("cuts", [(1.0, 0.5), (0.7, 0.4), (0.0, 0.3), (1.0, 0.0)])
def test_select_matches_brute_force(seed, cuts):
    rng = np.random.default_rng(seed)
    args = _random_jets(rng, 400, 60)
    track_pt_min, cone_dr = cuts
    n, counts, cols = select_stored_tracks(*args, track_pt_min=track_pt_min, cone_dr=cone_dr)
    rn, rcounts, rcols = _reference(*args, track_pt_min, cone_dr)
    assert n == rn
    np.testing.assert_array_equal(counts, rcounts)
    assert list(cols) == ["pt", "eta", "phi", "charge", "dr"]
    for k in cols:
        assert cols[k].dtype == (np.int32 if k == "charge" else np.float32)
        np.testing.assert_array_equal(cols[k], rcols[k].astype(cols[k].dtype), err_msg=k)
    # Without Δη/Δφ (a run without ML columns): same selection, no angles.
    offsets, pt, d_eta, d_phi, dr, pdgid, jet_eta, jet_phi, jet_sel = args
    n2, counts2, cols2 = select_stored_tracks(offsets, pt, None, None, dr, pdgid, jet_eta, None, jet_sel,
                                              track_pt_min=track_pt_min, cone_dr=cone_dr)
    assert n2 == n and list(cols2) == ["pt", "charge", "dr"]
    np.testing.assert_array_equal(counts2, counts)
    for k in cols2:
        np.testing.assert_array_equal(cols2[k], cols[k])


def test_select_no_jets_and_no_candidates():
    empty_f, empty_i = np.zeros(0, np.float32), np.zeros(0, np.int32)
    n, counts, cols = select_stored_tracks(np.zeros(1, np.int64), empty_f, empty_f, empty_f, empty_f, empty_i,
                                           np.zeros(0), np.zeros(0), np.zeros(0, bool), track_pt_min=1, cone_dr=0.5)
    assert n == 0 and len(counts) == 0 and all(len(v) == 0 for v in cols.values())
    n, counts, cols = select_stored_tracks(np.zeros(3, np.int64), empty_f, empty_f, empty_f, empty_f, empty_i,
                                           np.zeros(2), np.zeros(2), np.ones(2, bool), track_pt_min=1, cone_dr=0.5)
    assert n == 0 and counts.tolist() == [0, 0]


def test_reader_buffers_and_processor_on_a_generated_file(tmp_path):
    """The reader hands the file's PF_* buffers as stored; the processor's tracks equal the reference."""
    path = generate.generate_file(tmp_path / "jn.root", format="jetntuple", n_events=150, seed=5)
    import uproot

    with uproot.open(path) as f:
        tree = f["AK4jets/jetTree"]
        reader = readers.get("jetntuple")
        arrays = tree.arrays(reader.branches(set(tree.keys())))
        no_ml = tree.arrays(reader.branches(set(tree.keys()), ml=False))
    batch = reader.read(arrays)
    st = batch.stored_tracks
    assert isinstance(st, StoredTracks) and batch.jet_tracks is None and not batch.has_dxy
    np.testing.assert_array_equal(st.pt, ak.to_numpy(ak.flatten(arrays["PF_pT"])))
    np.testing.assert_array_equal(np.diff(st.offsets), ak.to_numpy(ak.num(arrays["PF_pT"])))
    # Sliced input (offsets not starting at 0) gives the same buffers.
    part = reader.read({k: arrays[k][5:40] for k in arrays.fields}).stored_tracks
    np.testing.assert_array_equal(part.pt, ak.to_numpy(ak.flatten(arrays["PF_pT"][5:40])))
    assert part.offsets[0] == 0

    proc = JetTrackProcessor(track_pt_min=0.7, cone_dr=0.4)
    chunk = proc.analyse(arrays, fmt="jetntuple")
    jet_pt, jet_eta = ak.to_numpy(arrays["jetPt"]), ak.to_numpy(arrays["jetEta"])
    jet_sel = (jet_pt > proc.jet_pt_min) & (np.abs(jet_eta) < proc.jet_abs_eta_max)
    rn, rcounts, rcols = _reference(st.offsets, st.pt, st.d_eta, st.d_phi, st.dr, st.pdgid, st.jet_eta,
                                    st.jet_phi, jet_sel, 0.7, 0.4)
    assert chunk.n_tracks_selected == rn
    np.testing.assert_array_equal(ak.to_numpy(ak.num(chunk.jet_tracks, axis=1)), rcounts[jet_sel])
    flat_tracks = ak.flatten(chunk.jet_tracks, axis=1)
    assert flat_tracks.fields == ["pt", "eta", "phi", "charge", "dxy", "dxy_err", "dz", "dr"]
    for k in rcols:
        np.testing.assert_array_equal(ak.to_numpy(flat_tracks[k]), rcols[k], err_msg=k)
    assert np.isnan(ak.to_numpy(flat_tracks["dxy"])).all()
    # Without the ML-only branches: the same cut flow and histograms, no track η/φ.
    lean = proc.analyse(no_ml, fmt="jetntuple")
    assert set(no_ml.fields).isdisjoint(reader.ml_only_branches)
    assert lean.n_tracks_selected == chunk.n_tracks_selected
    assert "eta" not in ak.flatten(lean.jet_tracks, axis=1).fields
    full, light = proc.fill("d", chunk), proc.fill("d", lean)
    assert full.keys() == light.keys()
    for name in full:
        np.testing.assert_array_equal(full[name].values(flow=True), light[name].values(flow=True))
    assert proc.cutflow(chunk) == proc.cutflow(lean)


def test_zlib_baskets_inflated_by_isal_equal_zlib(tmp_path):
    """uproot reads ZLIB baskets with ISA-L once the readers are imported; the arrays equal zlib's."""
    import uproot
    from uproot import compression

    from jettracks.readers.codecs import use_isal_zlib

    path = generate.generate_file(tmp_path / "z.root", format="jetntuple", n_events=120, seed=9)
    assert use_isal_zlib() and compression._decompress_ZLIB.library == "isal"
    branches = ["PF_pT", "PF_id", "jetEta", "event"]
    with uproot.open(path) as f:
        assert str(f.file.compression).startswith("ZLIB")
        fast = f["AK4jets/jetTree"].arrays(branches)
    try:
        compression._DecompressZLIB.library = "zlib"
        with uproot.open(path) as f:
            plain = f["AK4jets/jetTree"].arrays(branches)
    finally:
        use_isal_zlib()
    for b in branches:
        assert ak.to_list(fast[b]) == ak.to_list(plain[b])
