"""Writer of the PFNano layout (NanoAOD + PF candidates), tree ``Events``.

One entry per event. Branch names, types and titles are those of the real
PFNano file the tests read (coffea's sample ``pfnano.root``; counters
``uint32``, flavours and candidate integers ``int32``, ``GenJet_hadronFlavour``
``uint8``); floats carry NanoAOD's reduced precision (10 mantissa bits for
kinematics and impact parameters). Written branches:

* ``run``, ``luminosityBlock`` (uint32), ``event`` (uint64);
* ``nJet`` + ``Jet_pt, eta, phi, mass, area, rawFactor, qgl, btagDeepB,
  btagDeepFlavB, chHEF, neHEF, chEmEF, neEmEF, muEF`` (float32) and
  ``Jet_jetId, nConstituents, nElectrons, nMuons, genJetIdx, hadronFlavour,
  partonFlavour, nBHadrons, nCHadrons`` (int32);
* ``nGenJet`` + ``GenJet_pt, eta, phi, mass, partonFlavour, hadronFlavour``;
* ``nGenPart`` + ``GenPart_pt, eta, phi, mass, pdgId, status, statusFlags,
  genPartIdxMother``: the jets' outgoing partons and their b/c hadrons (coffea's
  NanoAOD schemas take a file with ``GenPart`` for simulation); for the ``llp``
  process first the mediator (pdgId 35) and the LLPs (6000113), status 22,
  mothers of the LLP daughter jets' partons;
* ``nPFCands`` + ``PFCands_pt, eta, phi, mass, charge, pdgId, d0, d0Err, dz,
  dzErr, pvAssocQuality, lostInnerHits, trkQuality, trkChi2, puppiWeight``
  (``d0``/``d0Err``/``dz``/``dzErr`` = -1 without track details);
* with ``links=True``: ``nJetPFCands`` + ``JetPFCands_pt, jetIdx, pFCandsIdx``
  (each jet's constituents, jets in order, candidates ascending) and
  ``JetPFCands_btagSip3dVal/Sig``: the signed 3-D impact parameter (cm) and its
  significance, ``±√(d0² + dz²)`` signed by the projection of the point of closest
  approach ``(−d0 sin φ, d0 cos φ, dz)`` on the jet direction, error
  ``√(d0Err² + dzErr²)``; ``0`` for a candidate without track details, as in real PFNano;
* ``PV_npvs, PV_npvsGood, PV_x, PV_y, PV_z``, ``Pileup_nPU, Pileup_nTrueInt``,
  ``fixedGridRhoFastjet{All,Central,CentralNeutral,CentralChargedPileUp}``,
  ``genWeight``.

Writer options (keyword options of ``generate_file(format="pfnano")``):

``links`` (True)
    write the ``JetPFCands`` constituent links (the 2016 open-data production
    has none: then jets and tracks can only be associated by ΔR).
``compression`` ("lzma"), ``compression_level`` (9)
    ``lzma`` level 9 as real PFNano (measured on ``pfnano.root``: LZMA(9) on every
    branch), or ``zlib``, ``lz4``, ``zstd``, ``none``. LZMA baskets are written
    with the dictionary capped at the basket's size (:class:`~._rootio.CappedLZMA`):
    the same compression, ~15x faster to write than uproot's level-9 LZMA.
``basket_bytes`` (32000)
    ROOT's basket layout: each branch gets its own baskets, closed once they hold
    this many uncompressed bytes (ROOT's default ``TBranch`` buffer). Measured on
    the real ``pfnano.root`` (10 events, ~1,900 candidates an event):
    ``PFCands_*`` baskets of 4 events (~24 kB each, 3 baskets), every ``Jet_*``
    and event branch in one basket; NanoAOD v15 (``nano_tt_v15.root``, 200
    events): one basket a branch (ZLIB). This writer gives ~4 events a
    ``PFCands_*`` basket at ~1,900 candidates an event and ~800 events a
    ``Jet_pt`` basket, as ROOT does before it optimises basket sizes.
``basket_events`` (None)
    instead of ``basket_bytes``: this many events per uproot ``extend`` call, one
    basket per branch each with the same boundaries for all branches (one giant
    basket when >= the file's events: the layout of older versions of this
    generator, kept for comparisons).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import uproot

from . import _rootio
from .physics import Events, _local_index, _offsets

__all__ = ["BRANCHES", "DEFAULTS", "TREE", "write"]

#: Tree path in the file.
TREE = "Events"

#: Writer options and defaults.
DEFAULTS: dict[str, Any] = {
    "links": True,
    "compression": "lzma",
    "compression_level": 9,
    "basket_bytes": _rootio.ROOT_BASKET_BYTES,
    "basket_events": None,
}

#: (branch, numpy dtype, title) exactly as in the real PFNano file.
BRANCHES: tuple[tuple[str, str, str], ...] = (
    ("run", "u4", "run/i"),
    ("luminosityBlock", "u4", "luminosityBlock/i"),
    ("event", "u8", "event/l"),
    ("nJet", "u4", "slimmedJets, i.e. ak4 PFJets CHS with JECs applied, after basic selection (pt > 15)"),
    ("Jet_pt", "f4", "pt"),
    ("Jet_eta", "f4", "eta"),
    ("Jet_phi", "f4", "phi"),
    ("Jet_mass", "f4", "mass"),
    ("Jet_area", "f4", "jet catchment area, for JECs"),
    ("Jet_rawFactor", "f4", "1 - Factor to get back to raw pT"),
    ("Jet_qgl", "f4", "Quark vs Gluon likelihood discriminator"),
    ("Jet_btagDeepB", "f4", "DeepCSV b+bb tag discriminator"),
    ("Jet_btagDeepFlavB", "f4", "DeepJet b+bb+lepb tag discriminator"),
    ("Jet_chHEF", "f4", "charged Hadron Energy Fraction"),
    ("Jet_neHEF", "f4", "neutral Hadron Energy Fraction"),
    ("Jet_chEmEF", "f4", "charged Electromagnetic Energy Fraction"),
    ("Jet_neEmEF", "f4", "neutral Electromagnetic Energy Fraction"),
    ("Jet_muEF", "f4", "muon Energy Fraction"),
    ("Jet_jetId", "i4", "Jet ID flags bit1 is loose (always false in 2017 since it does not exist), bit2 is tight, bit3 is tightLepVeto"),
    ("Jet_nConstituents", "i4", "Number of particles in the jet"),
    ("Jet_nElectrons", "i4", "number of electrons in the jet"),
    ("Jet_nMuons", "i4", "number of muons in the jet"),
    ("Jet_genJetIdx", "i4", "index of matched gen jet"),
    ("Jet_hadronFlavour", "i4", "flavour from hadron ghost clustering"),
    ("Jet_partonFlavour", "i4", "flavour from parton matching"),
    ("Jet_nBHadrons", "i4", "number of b-hadrons"),
    ("Jet_nCHadrons", "i4", "number of c-hadrons"),
    ("nGenJet", "u4", "slimmedGenJets, i.e. ak4 Jets made with visible genparticles"),
    ("GenJet_pt", "f4", "pt"),
    ("GenJet_eta", "f4", "eta"),
    ("GenJet_phi", "f4", "phi"),
    ("GenJet_mass", "f4", "mass"),
    ("GenJet_partonFlavour", "i4", "flavour from parton matching"),
    ("GenJet_hadronFlavour", "u1", "flavour from hadron ghost clustering"),
    ("nGenPart", "u4", "interesting gen particles "),
    ("GenPart_pt", "f4", "pt"),
    ("GenPart_eta", "f4", "eta"),
    ("GenPart_phi", "f4", "phi"),
    ("GenPart_mass", "f4", "Mass stored for all particles with the exception of quarks (except top), leptons/neutrinos, photons with mass < 1 GeV, gluons, pi0(111), pi+(211), D0(421), and D+(411). For these particles, you can lookup the value from PDG."),
    ("GenPart_pdgId", "i4", "PDG id"),
    ("GenPart_status", "i4", "Particle status. 1=stable"),
    ("GenPart_statusFlags", "i4", "gen status flags stored bitwise, bits are: 0 : isPrompt, 1 : isDecayedLeptonHadron, 2 : isTauDecayProduct, 3 : isPromptTauDecayProduct, 4 : isDirectTauDecayProduct, 5 : isDirectPromptTauDecayProduct, 6 : isDirectHadronDecayProduct, 7 : isHardProcess, 8 : fromHardProcess, 9 : isHardProcessTauDecayProduct, 10 : isDirectHardProcessTauDecayProduct, 11 : fromHardProcessBeforeFSR, 12 : isFirstCopy, 13 : isLastCopy, 14 : isLastCopyBeforeFSR, "),
    ("GenPart_genPartIdxMother", "i4", "index of the mother particle"),
    ("nPFCands", "u4", "interesting particles from AK4 and AK8 jets"),
    ("PFCands_pt", "f4", "pt"),
    ("PFCands_eta", "f4", "eta"),
    ("PFCands_phi", "f4", "phi"),
    ("PFCands_mass", "f4", "mass"),
    ("PFCands_charge", "i4", "electric charge"),
    ("PFCands_pdgId", "i4", "PDG code assigned by the event reconstruction (not by MC truth)"),
    ("PFCands_d0", "f4", "pf d0"),
    ("PFCands_d0Err", "f4", "pf d0 err"),
    ("PFCands_dz", "f4", "pf dz"),
    ("PFCands_dzErr", "f4", "pf dz err"),
    ("PFCands_pvAssocQuality", "i4", "primary vertex association quality"),
    ("PFCands_lostInnerHits", "i4", "lost inner hits"),
    ("PFCands_trkQuality", "i4", "track quality mask"),
    ("PFCands_trkChi2", "f4", "normalized trk chi2"),
    ("PFCands_puppiWeight", "f4", "Puppi weight"),
    ("nJetPFCands", "u4", ""),
    ("JetPFCands_pt", "f4", "pt"),
    ("JetPFCands_jetIdx", "i4", "Index of the parent jet"),
    ("JetPFCands_pFCandsIdx", "i4", "Index in the candidate list"),
    ("JetPFCands_btagSip3dVal", "f4", "btagSip3dVal"),
    ("JetPFCands_btagSip3dSig", "f4", "btagSip3dSig"),
    ("PV_npvs", "i4", "total number of reconstructed primary vertices"),
    ("PV_npvsGood", "i4", "number of good reconstructed primary vertices. selection:!isFake && ndof > 4 && abs(z) <= 24 && position.Rho <= 2"),
    ("PV_x", "f4", "main primary vertex position x coordinate"),
    ("PV_y", "f4", "main primary vertex position y coordinate"),
    ("PV_z", "f4", "main primary vertex position z coordinate"),
    ("Pileup_nPU", "i4", "the number of pileup interactions that have been added to the event in the current bunch crossing"),
    ("Pileup_nTrueInt", "f4", "the true mean number of the poisson distribution for this event from which the number of interactions each bunch crossing has been sampled"),
    ("fixedGridRhoFastjetAll", "f4", "rho from all PF Candidates, used e.g. for JECs"),
    ("fixedGridRhoFastjetCentral", "f4", "rho from all PF Candidates for central region, used e.g. for JECs"),
    ("fixedGridRhoFastjetCentralNeutral", "f4", "rho from neutral PF Candidates with |eta| < 2.5, used e.g. for rho corrections of some lepton isolations"),
    ("fixedGridRhoFastjetCentralChargedPileUp", "f4", "rho from charged PF Candidates for central region, used e.g. for JECs"),
    ("genWeight", "f4", "generator weight"),
)

_DTYPE = {name: np.dtype(dt) for name, dt, _ in BRANCHES}
_TITLE = {name: title for name, _, title in BRANCHES}
# NanoAOD stores these floats with 10 mantissa bits.
_REDUCED = {
    "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass", "Jet_area", "Jet_qgl", "Jet_btagDeepB",
    "Jet_btagDeepFlavB", "GenJet_pt", "GenJet_eta", "GenJet_phi", "GenJet_mass",
    "PFCands_pt", "PFCands_eta", "PFCands_phi", "PFCands_mass", "PFCands_d0",
    "PFCands_d0Err", "PFCands_dz", "PFCands_dzErr", "PFCands_puppiWeight",
    "JetPFCands_pt", "JetPFCands_btagSip3dVal", "JetPFCands_btagSip3dSig", "PV_x", "PV_y", "GenPart_pt", "GenPart_eta", "GenPart_phi",
    "GenPart_mass",
}
_REDUCED6 = {"Jet_rawFactor", "Jet_chHEF", "Jet_neHEF", "Jet_chEmEF", "Jet_neEmEF", "Jet_muEF"}


def _cast(name: str, values: np.ndarray) -> np.ndarray:
    out = np.asarray(values).astype(_DTYPE[name], copy=False)
    if name in _REDUCED:
        out = _rootio.reduce_mantissa(out, 10)
    elif name in _REDUCED6:
        out = _rootio.reduce_mantissa(out, 6)
    return out


def _measured_not_fill(cands: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """d0/dz of tracks, rounded to 10 bits, kept off the exact -1 fill value.

    A measured value within half a 10-bit ulp of -1 cm would read as "no track
    details"; it is moved one ulp away (1e-3 cm), so ``d0 == -1`` holds exactly
    for the candidates without track details and for no other.
    """
    out = {}
    has = cands["hasTrack"]
    for k in ("d0", "dz"):
        v = _cast(f"PFCands_{k}", cands[k])
        clash = has & (v == np.float32(-1.0))
        if clash.any():
            v = v.copy()
            v[clash] = np.float32(-1.0009765625)
        out[k] = v
    return out


def _collection(prefix: str, counts: np.ndarray, fields: dict[str, np.ndarray]):
    return _rootio.jagged(counts, {k: _cast(f"{prefix}_{k}", v) for k, v in fields.items()})


def _genpart(events: Events):
    """Outgoing partons of the jets (status 23) and their b/c hadrons (status 2).

    Per event: the process's resonances if any (``events.truth["genpart"]``:
    for ``llp`` the mediator and the LLPs), then one parton per jet (jet order,
    ``genPartIdxMother`` from ``jets["genPartMother"]``: the LLP for its
    daughter jets, else -1), then one hadron per b/c jet, whose
    ``genPartIdxMother`` points to the parton of its jet.
    """
    jets = events.jets
    n = events.n_events
    nj = events.n_jets
    jev = jets["event"]
    pre = events.truth.get("genpart")
    n_pre = np.asarray(pre["counts"], np.int64) if pre else np.zeros(n, np.int64)
    hf = np.nonzero(jets["hadronPdgId"] != 0)[0]
    n_hf = np.bincount(jev[hf], minlength=n)
    counts = n_pre + events.jet_counts + n_hf
    starts = _offsets(counts)[:-1]
    jet_local = _local_index(events.jet_counts)
    # positions of resonances, partons and hadrons in the flat GenPart arrays
    pos_pre = np.repeat(starts, n_pre) + _local_index(n_pre)
    pos_parton = starts[jev] + n_pre[jev] + jet_local
    pos_hadron = starts[jev[hf]] + n_pre[jev[hf]] + events.jet_counts[jev[hf]] + _local_index(n_hf)
    total = int(counts.sum())

    def fill(name, parton_values, hadron_values, dtype):
        out = np.empty(total, dtype=dtype)
        out[pos_parton] = parton_values
        out[pos_hadron] = hadron_values
        if pre:
            out[pos_pre] = pre[name]
        return out

    parton_pdg = jets["trueFlav"]
    quark_mass = np.select([np.abs(parton_pdg) == 5, np.abs(parton_pdg) == 4], [4.8, 1.5], 0.0)
    parton_mother = jets.get("genPartMother", np.full(nj, -1))
    fields = {
        "pt": fill("pt", jets["genPt"] * 1.02, jets["hadronPt"][hf], np.float64),
        "eta": fill("eta", jets["genEta"], jets["hadronEta"][hf], np.float64),
        "phi": fill("phi", jets["genPhi"], jets["hadronPhi"][hf], np.float64),
        "mass": fill("mass", quark_mass, jets["hadronMass"][hf], np.float64),
        "pdgId": fill("pdgId", parton_pdg, jets["hadronPdgId"][hf], np.int32),
        "status": fill("status", np.full(nj, 23), np.full(hf.size, 2), np.int32),
        # partons: isPrompt|isHardProcess|fromHardProcess|fromHardProcessBeforeFSR;
        # hadrons: isPrompt|isDecayedLeptonHadron|isFirstCopy|isLastCopy
        "statusFlags": fill("statusFlags", np.full(nj, 2433), np.full(hf.size, 12291), np.int32),
        "genPartIdxMother": fill(
            "genPartIdxMother", parton_mother, n_pre[jev[hf]] + jet_local[hf], np.int32
        ),
    }
    return _collection("GenPart", counts, fields)


def _sip3d(cands: dict[str, np.ndarray], jets: dict[str, np.ndarray], ci: np.ndarray, jet_of: np.ndarray):
    """Per link: signed 3-D impact parameter (cm) and significance; 0 without track details."""
    d0, dz = cands["d0"][ci], cands["dz"][ci]
    has = cands["hasTrack"][ci]
    phi_t, phi_j, eta_j = cands["phi"][ci], jets["phi"][jet_of], jets["eta"][jet_of]
    # PCA ≈ (−d0 sin φ_t, d0 cos φ_t, dz); jet direction (cos φ_j, sin φ_j, sinh η_j) / cosh η_j
    proj = d0 * np.sin(phi_j - phi_t) + dz * np.sinh(eta_j)
    val = np.where(proj >= 0, 1.0, -1.0) * np.hypot(d0, dz)
    err = np.hypot(cands["d0Err"][ci], cands["dzErr"][ci])
    with np.errstate(invalid="ignore", divide="ignore"):
        sig = np.where(has, val / err, 0.0)
    return {"btagSip3dVal": np.where(has, val, 0.0), "btagSip3dSig": sig}


def build(events: Events, *, links: bool = True) -> dict[str, Any]:
    """The branch data of the ``Events`` tree (awkward records for collections)."""
    ev, jets, cands = events.event, events.jets, events.cands
    n = events.n_events
    jet_counts = events.jet_counts
    jet_off = events.jet_offsets
    cand_off = events.cand_offsets
    nj = events.n_jets

    # generator jets: the matched jets' gen jets, by descending gen pT per event
    matched = np.nonzero(jets["genMatch"])[0]
    gorder = matched[np.lexsort((-jets["genPt"][matched], jets["event"][matched]))]
    gen_counts = np.bincount(jets["event"][gorder], minlength=n)
    gen_idx = np.full(nj, -1, dtype=np.int64)
    gen_idx[gorder] = _local_index(gen_counts)

    jet_id = (
        jets["looseID"].astype(np.int32)
        + 2 * jets["tightID"].astype(np.int32)
        + 4 * jets["tightLepVeto"].astype(np.int32)
    )

    data: dict[str, Any] = {
        "run": _cast("run", ev["run"]),
        "luminosityBlock": _cast("luminosityBlock", ev["luminosityBlock"]),
        "event": _cast("event", ev["event"]),
        "Jet": _collection(
            "Jet",
            jet_counts,
            {
                "pt": jets["pt"],
                "eta": jets["eta"],
                "phi": jets["phi"],
                "mass": jets["mass"],
                "area": jets["area"],
                "rawFactor": jets["rawFactor"],
                "qgl": jets["qgl"],
                "btagDeepB": jets["btagDeepB"],
                "btagDeepFlavB": jets["btagDeepFlavB"],
                "chHEF": jets["chHEF"],
                "neHEF": jets["neHEF"],
                "chEmEF": jets["chEmEF"],
                "neEmEF": jets["neEmEF"],
                "muEF": jets["muEF"],
                "jetId": jet_id,
                "nConstituents": jets["nConstituents"],
                "nElectrons": jets["nElectrons"],
                "nMuons": jets["nMuons"],
                "genJetIdx": gen_idx,
                "hadronFlavour": jets["hadronFlav"],
                "partonFlavour": jets["partonFlav"],
                "nBHadrons": jets["nBHadrons"],
                "nCHadrons": jets["nCHadrons"],
            },
        ),
        "GenJet": _collection(
            "GenJet",
            gen_counts,
            {
                "pt": jets["genPt"][gorder],
                "eta": jets["genEta"][gorder],
                "phi": jets["genPhi"][gorder],
                "mass": jets["genMass"][gorder],
                "partonFlavour": jets["partonFlav"][gorder],
                "hadronFlavour": jets["hadronFlav"][gorder],
            },
        ),
        "GenPart": _genpart(events),
        "PFCands": _collection(
            "PFCands",
            events.cand_counts,
            {
                k: cands[k]
                for k in (
                    "pt", "eta", "phi", "mass", "charge", "pdgId", "d0", "d0Err", "dz",
                    "dzErr", "pvAssocQuality", "lostInnerHits", "trkQuality", "trkChi2",
                    "puppiWeight",
                )
            }
            | _measured_not_fill(cands),
        ),
    }
    if links:
        cj = cands["jet"]
        ci = np.nonzero(cj >= 0)[0]
        ci = ci[np.lexsort((ci, cj[ci]))]  # by jet, then candidate index
        jet_of = cj[ci]
        ev_of = jets["event"][jet_of]
        link_counts = np.bincount(ev_of, minlength=n)
        data["JetPFCands"] = _collection(
            "JetPFCands",
            link_counts,
            {
                "pt": cands["pt"][ci],
                "jetIdx": jet_of - jet_off[ev_of],
                "pFCandsIdx": ci - cand_off[ev_of],
                **_sip3d(cands, jets, ci, jet_of),
            },
        )
    data.update(
        {
            "PV_npvs": _cast("PV_npvs", ev["npvs"]),
            "PV_npvsGood": _cast("PV_npvsGood", ev["npvsGood"]),
            "PV_x": _cast("PV_x", ev["pvX"]),
            "PV_y": _cast("PV_y", ev["pvY"]),
            "PV_z": _cast("PV_z", ev["pvZ"]),
            "Pileup_nPU": _cast("Pileup_nPU", ev["nPU"]),
            "Pileup_nTrueInt": _cast("Pileup_nTrueInt", ev["nTrueInt"]),
            "fixedGridRhoFastjetAll": _cast("fixedGridRhoFastjetAll", ev["rhoAll"]),
            "fixedGridRhoFastjetCentral": _cast("fixedGridRhoFastjetCentral", ev["rhoCentral"]),
            "fixedGridRhoFastjetCentralNeutral": _cast(
                "fixedGridRhoFastjetCentralNeutral", ev["rhoCentralNeutral"]
            ),
            "fixedGridRhoFastjetCentralChargedPileUp": _cast(
                "fixedGridRhoFastjetCentralChargedPileUp", ev["rhoCentralChargedPileUp"]
            ),
            "genWeight": _cast("genWeight", ev["weight"]),
        }
    )
    return data


def write(
    path: str | Path,
    events: Events,
    *,
    links: bool = DEFAULTS["links"],
    compression: str | None = DEFAULTS["compression"],
    compression_level: int | None = DEFAULTS["compression_level"],
    basket_bytes: int = DEFAULTS["basket_bytes"],
    basket_events: int | None = DEFAULTS["basket_events"],
) -> Path:
    """Write ``events`` to ``path`` (overwritten) in the PFNano layout (options: module docstring)."""
    path = Path(path)
    comp = _rootio.compression(compression, compression_level)
    if basket_events is not None and int(basket_events) < 1:
        raise ValueError(f"basket_events must be >= 1, got {basket_events!r}")
    if int(basket_bytes) < 1:
        raise ValueError(f"basket_bytes must be >= 1, got {basket_bytes!r}")
    data = build(events, links=bool(links))
    n = events.n_events
    if basket_events is None:
        capacity = _rootio.basket_count(data, int(basket_bytes))
    else:
        capacity = -(-n // int(basket_events)) + 2
    with uproot.recreate(path, compression=comp) as f:
        tree = _rootio.make_tree(
            f,
            "Events",
            _rootio.branch_types(data),
            title="Events",
            titles=_TITLE,
            counter_dtype="u4",
            basket_capacity=capacity,
        )
        if basket_events is None:
            _rootio.write_tree(tree, data, basket_bytes=int(basket_bytes))
        else:
            step = int(basket_events)
            for start in range(0, n, step):
                tree.extend(_rootio.slice_data(data, start, min(start + step, n)))
    return path
