"""Writer of the JetNtuple layout of CMS open data record 12100, tree ``AK4jets/jetTree``.

One entry per jet, the 66 branches of the record's real ``AK4jets/jetTree``
in the same order, with the same types (``/I`` int32, ``/F`` float32, ``event``
``/l`` uint64; counters ``nPF`` and ``nGenJetPF`` int32) and the producer's
branch titles. Filled as the producer (``JetAnalyzer.cc`` of the
JetNtupleProducerTool) fills them:

* saved jets: pT > 30 GeV and |η| < 2.5, in events whose two leading jets (of
  all jets) pass both cuts; jets of an event are consecutive entries sharing
  ``run``/``lumi``/``event``, in descending pT; ``jetPtOrder`` is the 0-based
  rank among saved jets, ``eventJetMult`` their number;
* ``dPhiJetsLO`` (signed, wrapped) and ``dEtaJetsLO`` (η₀ − η₁) of the two
  leading jets, ``alpha`` = pT₃ / mean(pT₁, pT₂) over all jets (0 with fewer
  than three);
* ``PF_*``: every PF candidate of the event (jet constituents, underlying event,
  pile-up) with |Δη| ≤ 1 and |Δφ| ≤ 1 around the jet axis, in collection order,
  ``PF_dEta = η − η_jet``, signed wrapped ``PF_dPhi``, ``PF_dR``,
  ``PF_dTheta = atan2(PF_dPhi, PF_dEta)``, ``PF_fromAK4Jet`` 1 for the jet's
  constituents, ``PF_id`` the reconstructed pdgId, ``PF_fromPV`` 0–3;
* ``genJet*``: the matched generator jet, 0 when ``jetGenMatch == 0``;
  ``genJetPF_*`` its constituents by descending pT (ΔR and dTheta to the gen
  jet axis, generator pdgIds and masses). For unmatched jets ``nGenJetPF`` /
  ``genJetPF_*`` keep the previous saved jet's values, as the producer's stale
  buffers do (empty for the first jet of a file);
* ``physFlav``/``partonFlav``/``hadronFlav`` and the ``isPhys*``/``isParton*``
  flags (UDS: |flav| in {1,2,3}; G: 21; Other: everything else);
* ``pthat``, ``Pileup_nPU``, ``Pileup_nTrueInt`` filled as in the real MC
  (option ``mc_info=False`` writes the producer's -1 defaults instead);
  ``eventWeight`` 1.
* No impact parameters (the real format has none).

Known difference: the real file books ``PF_mass`` with leaf name ``cPF_mass``;
uproot names every leaf like its branch, so here the leaf is ``PF_mass`` too.
Readers select branches by name and see no difference.

Writer options: ``compression`` ("zlib"), ``compression_level`` (1): ROOT's
default for files of that era (the record's files are not on this machine to
measure); ``basket_bytes`` (32000): ROOT's per-branch basket layout (see
:func:`~._rootio.write_tree`; ~8,000 jets a ``jetPt`` basket, ~80 a ``PF_pT``
basket at ~100 candidates a jet); ``basket_jets`` (None): instead, this many
entries per uproot ``extend`` (one basket per branch each, same boundaries
for all branches); ``mc_info`` (True).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import uproot

from . import _rootio
from .physics import (
    M_E,
    M_K,
    M_KL,
    M_MU,
    M_N,
    M_P,
    M_PI,
    Events,
    _local_index,
    _offsets,
    wrap_phi,
)

__all__ = ["BRANCHES", "DEFAULTS", "TREE", "write"]

TREE = "AK4jets/jetTree"

DEFAULTS: dict[str, Any] = {
    "compression": "zlib",
    "compression_level": 1,
    "basket_bytes": _rootio.ROOT_BASKET_BYTES,
    "basket_jets": None,
    "mc_info": True,
}

#: (branch, leaf type letter, title) in the real file's order.
BRANCHES: tuple[tuple[str, str, str], ...] = (
    ("jetPt", "F", "Transverse momentum of the jet"),
    ("jetEta", "F", "Pseudorapidity of the jet"),
    ("jetPhi", "F", "Azimuthal angle of the jet"),
    ("jetMass", "F", "Mass of the jet"),
    ("jetGirth", "F", "Girth of the jet (as defined in arXiv:1106.3076 [hep-ph])"),
    ("jetArea", "F", "Catchment area of the jet; used for jet energy corrections"),
    ("jetRawPt", "F", "Transverse momentum of the jet before energy corrections"),
    ("jetRawMass", "F", "Mass of the jet before energy corrections"),
    ("jetLooseID", "I", "Indicates if the jet passes loose selection criteria; used for dismissing fake jets"),
    ("jetTightID", "I", "Indicates if the jet passes tight selection criteria; used for dismissing fake jets"),
    ("jetGenMatch", "I", "1: if a matched generator level jet exists; 0: if no match was found"),
    ("jetQGl", "F", "Quark vs Gluon likelihood discriminator"),
    ("QG_ptD", "F", "Transverse momentum distribution among particle flow candidates within the jet; defined as sqrt(Sum(pt^2))/Sum(pt), where the sum is over the particle flow candidates of the jet"),
    ("QG_axis2", "F", "Minor axis of the jet, calculated from the particle flow candidates"),
    ("QG_mult", "I", "Multiplicity of jet constituents with additional cuts: 1 GeV transverse momentum threshold for neutral particles; charged particles required to be associated with the primary interaction vertex (PF_fromPV == 3)"),
    ("partonFlav", "I", "Flavor of the jet; parton definition"),
    ("hadronFlav", "I", "Flavor of the jet; hadron definition"),
    ("physFlav", "I", "Flavor of the jet; physics definition"),
    ("isPhysUDS", "I", "Indicates a light quark jet; |physFlav| == 1, 2, 3"),
    ("isPhysG", "I", "Indicates a gluon jet; physFlav == 21"),
    ("isPhysOther", "I", "Indicates a non-light quark/gluon jet; |physFlav| != 1, 2, 3, 21"),
    ("isPartonUDS", "I", "Indicates a light quark jet; |physFlav| == 1, 2, 3"),
    ("isPartonG", "I", "Indicates a gluon jet; physFlav == 21"),
    ("isPartonOther", "I", "Indicates a non-light quark/gluon jet; |physFlav| != 1, 2, 3, 21"),
    ("jetChargedHadronMult", "I", "Multiplicity of charged hadron jet constituents"),
    ("jetNeutralHadronMult", "I", "Multiplicity of neutral hadron jet constituents"),
    ("jetChargedMult", "I", "Multiplicity of charged jet constituents"),
    ("jetNeutralMult", "I", "Multiplicity of neutral jet constituents"),
    ("jetMult", "I", "Multiplicity of jet constituents"),
    ("nPF", "I", "Number of particle flow candidates (particles reconstructed by the particle flow algorithm); contains all particles within |deltaPhi| < 1 && |deltaEta| < 1 from the center of the jet"),
    ("PF_pT", "F", "Transverse momentum of a particle flow candidate"),
    ("PF_dR", "F", "Distance of a particle flow candidate to the center of the jet"),
    ("PF_dTheta", "F", "Polar angle of a particle flow candidate"),
    ("PF_dPhi", "F", "Azimuthal angle of a particle flow candidate"),
    ("PF_dEta", "F", "Pseudorapidity of a particle flow candidate"),
    ("PF_mass", "F", "Mass of a particle flow candidate"),
    ("PF_id", "I", "Generator level particle identifier for the particle flow candidates, as defined in the PDG particle numbering scheme"),
    ("PF_fromPV", "I", "Indicates how tightly the particle is associated with the primary vertex; ranges from 3 to 0"),
    ("PF_fromAK4Jet", "I", "1: if the particle flow candidate is a constituent of the reconstructed AK4 jet; 0: if it is not a constituent of the jet"),
    ("genJetPt", "F", "Transverse momentum of the matched generator level jet"),
    ("genJetEta", "F", "Pseudorapidity of the matched generator level jet"),
    ("genJetPhi", "F", "Azimuthal angle of the matched generator level jet"),
    ("genJetMass", "F", "Mass of the matched generator level jet"),
    ("nGenJetPF", "I", "Number of particles in the matched generator level jet"),
    ("genJetPF_pT", "F", "Transverse momentum of a particle in the matched generator level jet"),
    ("genJetPF_dR", "F", "Distance of a particle to the center of the matched generator level jet "),
    ("genJetPF_dTheta", "F", "Polar angle of a particle in the matched generator level jet"),
    ("genJetPF_mass", "F", "Mass of a particle in the matched generator level jet"),
    ("genJetPF_id", "I", "Generator level particle identifier for the particles in the matched generator level jet, as defined in the PDG particle numbering scheme"),
    ("eventJetMult", "I", "Multiplicity of jets in the event"),
    ("jetPtOrder", "I", "Indicates the ranking number of the jet, as the jets are ordered by their transverse momenta within the event"),
    ("dPhiJetsLO", "F", "Phi difference of the two leading jets"),
    ("dEtaJetsLO", "F", "Eta difference of the two leading jets"),
    ("alpha", "F", "If there are at least 3 jets in the event, alpha is the third jet's transverse momentum divided by the average transverse momentum of the two leading jets"),
    ("event", "l", "Event number"),
    ("run", "I", "Run number"),
    ("lumi", "I", "Luminosity block"),
    ("pthat", "F", "Transverse momentum of the generated hard process"),
    ("eventWeight", "F", "Monte Carlo generator weight"),
    ("rhoAll", "F", "The median density (in GeV/A) of pile-up contamination per event; computed from all PF candidates"),
    ("rhoCentral", "F", "The median density (in GeV/A) of pile-up contamination per event; computed from all PF candidates with |eta|<2.5"),
    ("rhoCentralNeutral", "F", "The median density (in GeV/A) of pile-up contamination per event; computed from all neutral PF candidates with |eta| < 2.5"),
    ("rhoCentralChargedPileUp", "F", "The median density (in GeV/A) of pile-up contamination per event; computed from all PF charged hadrons associated to pileup vertices and with |eta| < 2.5"),
    ("PV_npvsGood", "I", "The number of good reconstructed primary vertices; selection: !isFake && ndof > 4 && abs(z) <= 24 && position.Rho < 2"),
    ("Pileup_nPU", "I", "The number of pileup interactions that have been added to the event in the current bunch crossing"),
    ("Pileup_nTrueInt", "F", "The true mean number of the poisson distribution for this event from which the number of interactions in each bunch crossing has been sampled"),
)

_LETTER_DTYPE = {"F": np.dtype(np.float32), "I": np.dtype(np.int32), "l": np.dtype(np.uint64)}
_DTYPE = {name: _LETTER_DTYPE[letter] for name, letter, _ in BRANCHES}
_TITLE = {name: title for name, _, title in BRANCHES}
_RECORDS = {"PF": "nPF", "genJetPF": "nGenJetPF"}

# generator-level masses by |pdgId|
_GEN_MASS = {211: M_PI, 321: M_K, 2212: M_P, 2112: M_N, 130: M_KL, 11: M_E, 13: M_MU, 22: 0.0}


def _gen_mass(pdg: np.ndarray) -> np.ndarray:
    a = np.abs(pdg)
    out = np.zeros(a.shape)
    for k, v in _GEN_MASS.items():
        out[a == k] = v
    return out


def _flags(flav: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.abs(flav)
    uds = (a >= 1) & (a <= 3)
    g = a == 21
    return uds, g, ~(uds | g)


def _select(events: Events) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Saved jets (global indices) and per-saved-jet event quantities."""
    jets = events.jets
    counts = events.jet_counts
    off = events.jet_offsets
    n = events.n_events
    pt, eta, phi = jets["pt"], jets["eta"], jets["phi"]
    passes = (pt > 30.0) & (np.abs(eta) < 2.5)

    has2 = counts >= 2
    i0 = off[:-1]
    i1 = np.where(has2, off[:-1] + 1, off[:-1])
    i0c = np.minimum(i0, max(len(pt) - 1, 0))
    i1c = np.minimum(i1, max(len(pt) - 1, 0))
    if len(pt):
        ev_ok = has2 & passes[i0c] & passes[i1c]
    else:
        ev_ok = np.zeros(n, dtype=bool)
    saved = np.nonzero(passes & ev_ok[jets["event"]])[0]
    sev = jets["event"][saved]

    mult = np.bincount(sev, minlength=n)
    order = _local_index(mult)
    if len(pt):
        dphi = wrap_phi(phi[i0c] - phi[i1c])
        deta = eta[i0c] - eta[i1c]
        i2 = np.minimum(off[:-1] + 2, len(pt) - 1)
        alpha = np.where(counts > 2, pt[i2] / (0.5 * (pt[i0c] + pt[i1c])), 0.0)
    else:
        dphi = deta = alpha = np.zeros(n)
    return saved, {
        "eventJetMult": mult[sev],
        "jetPtOrder": order,
        "dPhiJetsLO": dphi[sev],
        "dEtaJetsLO": deta[sev],
        "alpha": alpha[sev],
        "event_index": sev,
    }


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + c)`` for all pairs."""
    return np.repeat(starts, counts) + _local_index(counts)


def build(events: Events, *, mc_info: bool = True, basket_jets: int = 5000):
    """Yield the branch data of ``AK4jets/jetTree`` in chunks of ``basket_jets`` jets."""
    jets, cands, ev = events.jets, events.cands, events.event
    saved, per = _select(events)
    ns = saved.size
    sev = per["event_index"]

    # jet constituents grouped by jet, by descending generator pT (genJetPF order)
    cj = cands["jet"]
    ci = np.nonzero(cj >= 0)[0]
    ci = ci[np.lexsort((-cands["genPt"][ci], cj[ci]))]
    const_off = _offsets(np.bincount(cj[ci], minlength=events.n_jets))

    matched = jets["genMatch"][saved]
    last = np.maximum.accumulate(np.where(matched, np.arange(ns), -1)) if ns else np.zeros(0, np.int64)
    gen_src = np.where(last >= 0, saved[np.maximum(last, 0)], -1)  # stale copy of the last matched

    cand_off = events.cand_offsets
    cand_counts = events.cand_counts
    c_eta = cands["eta"]
    c_phi = cands["phi"]

    def f32(name, x):
        return np.asarray(x).astype(_DTYPE[name], copy=False)

    for start in range(0, ns, basket_jets):
        stop = min(start + basket_jets, ns)
        g = saved[start:stop]
        e = sev[start:stop]
        k = stop - start

        # PF candidates in the |deta| <= 1, |dphi| <= 1 box, in collection order
        nca = cand_counts[e]
        pj = np.repeat(np.arange(k), nca)
        pc = _ranges(cand_off[e], nca)
        deta = c_eta[pc] - jets["eta"][g][pj]
        dphi = wrap_phi(c_phi[pc] - jets["phi"][g][pj])
        box = (np.abs(deta) <= 1.0) & (np.abs(dphi) <= 1.0)
        pj, pc, deta, dphi = pj[box], pc[box], deta[box], dphi[box]
        n_pf = np.bincount(pj, minlength=k)
        pf = _rootio.jagged(
            n_pf,
            {
                "pT": f32("PF_pT", cands["pt"][pc]),
                "dR": f32("PF_dR", np.hypot(deta, dphi)),
                "dTheta": f32("PF_dTheta", np.arctan2(dphi, deta)),
                "dPhi": f32("PF_dPhi", dphi),
                "dEta": f32("PF_dEta", deta),
                "mass": f32("PF_mass", cands["mass"][pc]),
                "id": f32("PF_id", cands["pdgId"][pc]),
                "fromPV": f32("PF_fromPV", cands["fromPV"][pc]),
                "fromAK4Jet": f32("PF_fromAK4Jet", cj[pc] == g[pj]),
            },
        )

        # generator-level constituents (stale for unmatched jets)
        src = gen_src[start:stop]
        has = src >= 0
        srcc = np.maximum(src, 0)
        n_gen = np.where(has, const_off[srcc + 1] - const_off[srcc], 0)
        gi = ci[_ranges(const_off[srcc], n_gen)]
        gj = np.repeat(srcc, n_gen)
        g_deta = c_eta[gi] - jets["genEta"][gj]
        g_dphi = wrap_phi(c_phi[gi] - jets["genPhi"][gj])
        gen_pf = _rootio.jagged(
            n_gen,
            {
                "pT": f32("genJetPF_pT", cands["genPt"][gi]),
                "dR": f32("genJetPF_dR", np.hypot(g_deta, g_dphi)),
                "dTheta": f32("genJetPF_dTheta", np.arctan2(g_dphi, g_deta)),
                "mass": f32("genJetPF_mass", _gen_mass(cands["genPdgId"][gi])),
                "id": f32("genJetPF_id", cands["genPdgId"][gi]),
            },
        )

        m = jets["genMatch"][g]
        p_uds, p_g, p_other = _flags(jets["physFlav"][g])
        q_uds, q_g, q_other = _flags(jets["partonFlav"][g])
        pthat = ev["pthat"][e] if mc_info else np.full(k, -1.0)
        npu = ev["nPU"][e] if mc_info else np.full(k, -1)
        ntrue = ev["nTrueInt"][e] if mc_info else np.full(k, -1.0)
        values: dict[str, Any] = {
            "jetPt": jets["pt"][g],
            "jetEta": jets["eta"][g],
            "jetPhi": jets["phi"][g],
            "jetMass": jets["mass"][g],
            "jetGirth": jets["girth"][g],
            "jetArea": jets["area"][g],
            "jetRawPt": jets["rawPt"][g],
            "jetRawMass": jets["rawMass"][g],
            "jetLooseID": jets["looseID"][g],
            "jetTightID": jets["tightID"][g],
            "jetGenMatch": m,
            "jetQGl": jets["qgl"][g],
            "QG_ptD": jets["ptD"][g],
            "QG_axis2": jets["axis2"][g],
            "QG_mult": jets["qgMult"][g],
            "partonFlav": jets["partonFlav"][g],
            "hadronFlav": jets["hadronFlav"][g],
            "physFlav": jets["physFlav"][g],
            "isPhysUDS": p_uds,
            "isPhysG": p_g,
            "isPhysOther": p_other,
            "isPartonUDS": q_uds,
            "isPartonG": q_g,
            "isPartonOther": q_other,
            "jetChargedHadronMult": jets["nChargedHadrons"][g],
            "jetNeutralHadronMult": jets["nNeutralHadrons"][g],
            "jetChargedMult": jets["nCharged"][g],
            "jetNeutralMult": jets["nNeutral"][g],
            "jetMult": jets["nConstituents"][g],
            "PF": pf,
            "genJetPt": np.where(m, jets["genPt"][g], 0.0),
            "genJetEta": np.where(m, jets["genEta"][g], 0.0),
            "genJetPhi": np.where(m, jets["genPhi"][g], 0.0),
            "genJetMass": np.where(m, jets["genMass"][g], 0.0),
            "genJetPF": gen_pf,
            "eventJetMult": per["eventJetMult"][start:stop],
            "jetPtOrder": per["jetPtOrder"][start:stop],
            "dPhiJetsLO": per["dPhiJetsLO"][start:stop],
            "dEtaJetsLO": per["dEtaJetsLO"][start:stop],
            "alpha": per["alpha"][start:stop],
            "event": ev["event"][e],
            "run": ev["run"][e],
            "lumi": ev["luminosityBlock"][e],
            "pthat": pthat,
            "eventWeight": ev["weight"][e],
            "rhoAll": ev["rhoAll"][e],
            "rhoCentral": ev["rhoCentral"][e],
            "rhoCentralNeutral": ev["rhoCentralNeutral"][e],
            "rhoCentralChargedPileUp": ev["rhoCentralChargedPileUp"][e],
            "PV_npvsGood": ev["npvsGood"][e],
            "Pileup_nPU": npu,
            "Pileup_nTrueInt": ntrue,
        }
        yield {
            key: (val if key in _RECORDS else f32(key, val)) for key, val in values.items()
        }


def _empty_types() -> dict[str, Any]:
    """Branch types in the real order (records for the two jagged groups)."""
    types: dict[str, Any] = {}
    for name, _letter, _title in BRANCHES:
        if name in _RECORDS.values():
            continue
        prefix = name.split("_", 1)[0] if "_" in name else None
        if prefix in _RECORDS:
            if prefix not in types:
                fields = {
                    b.split("_", 1)[1]: _DTYPE[b]
                    for b, _, _ in BRANCHES
                    if b.startswith(prefix + "_")
                }
                types[prefix] = _rootio.jagged(
                    np.zeros(0, np.int64), {f: np.zeros(0, dt) for f, dt in fields.items()}
                ).type
            continue
        types[name] = _DTYPE[name]
    return types


def write(
    path: str | Path,
    events: Events,
    *,
    compression: str | None = DEFAULTS["compression"],
    compression_level: int | None = DEFAULTS["compression_level"],
    basket_bytes: int = DEFAULTS["basket_bytes"],
    basket_jets: int | None = DEFAULTS["basket_jets"],
    mc_info: bool = DEFAULTS["mc_info"],
) -> Path:
    """Write ``events`` to ``path`` (overwritten) in the JetNtuple layout (options: module docstring)."""
    path = Path(path)
    comp = _rootio.compression(compression, compression_level)
    if basket_jets is not None and int(basket_jets) < 1:
        raise ValueError(f"basket_jets must be >= 1, got {basket_jets!r}")
    if int(basket_bytes) < 1:
        raise ValueError(f"basket_bytes must be >= 1, got {basket_bytes!r}")
    if basket_jets is None:
        chunks = list(build(events, mc_info=bool(mc_info), basket_jets=1 << 62))
        capacity = _rootio.basket_count(chunks[0], int(basket_bytes)) if chunks else 2
    else:
        chunks = build(events, mc_info=bool(mc_info), basket_jets=int(basket_jets))
        capacity = -(-len(_select(events)[0]) // int(basket_jets)) + 2
    with uproot.recreate(path, compression=comp) as f:
        tree = _rootio.make_tree(
            f, TREE, _empty_types(), title="jetTree", titles=_TITLE, basket_capacity=capacity
        )
        if basket_jets is None:
            if chunks:
                _rootio.write_tree(tree, chunks[0], basket_bytes=int(basket_bytes))
        else:
            for chunk in chunks:
                tree.extend(chunk)
    return path
