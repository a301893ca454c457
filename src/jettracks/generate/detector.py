"""The common second half of every process: underlying event, pile-up, detector, summaries.

:func:`finish_events` takes a process's jets and their constituents and returns
:class:`~.physics.Events`, in steps (each a function below, called in this order
so the random stream is consumed in a fixed order):

1. :func:`soft_particles`: underlying-event and pile-up candidates;
2. :func:`merge_candidates`: jet constituents and soft candidates in one list;
3. :func:`apply_acceptance`: no tracks beyond the tracker, HF beyond |η| 3, charge, mass;
3b. :func:`displaced_background`: K0S/Λ decays, conversions and nuclear interactions in the
   tracker material, badly measured tracks (only with ``displaced_fraction`` /
   ``bad_track_fraction`` > 0: otherwise no random numbers are drawn, so samples made
   with both at 0 are those of earlier versions);
4. :func:`track_parameters`: track details and impact parameters (d0, dz, errors; −1 fill);
5. :func:`track_quality`: vertex association, fromPV, lost inner hits, quality, χ², PUPPI;
6. :func:`generator_ids`: generator-level particle ids;
7. :func:`collection_order`: the PFNano collection order, per-event counts;
8. :func:`jet_summaries`: jet mass, shapes, composition, jet ID, q/g likelihood, b tags;
9. :func:`event_summaries`: event ids, pile-up, vertices, ρ.

The model is described in :mod:`.model` ("Underlying event and pile-up", "Detector").
Units: GeV, cm, radians.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .physics import (
    _TWO_PI,
    ETA_HF,
    ETA_TRACKER,
    M_E,
    M_MU,
    M_PI,
    ORIGIN_HF,
    ORIGIN_JET,
    ORIGIN_PU,
    ORIGIN_SECONDARY,
    ORIGIN_UE,
    PIXEL_LAYER_R,
    BG_BAD,
    BG_CONVERSION,
    BG_NONE,
    BG_NUCLEAR,
    BG_V0,
    MATERIAL_R,
    Events,
    ModelOptions,
    _choice,
    _group_sum,
    _ip_resolution,
    _vertex_ip,
    wrap_phi,
)

__all__ = [
    "apply_acceptance",
    "collection_order",
    "event_summaries",
    "finish_events",
    "generator_ids",
    "jet_summaries",
    "merge_candidates",
    "soft_particles",
    "track_parameters",
    "track_quality",
]


def finish_events(
    n: int,
    rng: np.random.Generator,
    o: ModelOptions,
    file_index: int,
    process: str,
    evt: dict[str, np.ndarray],
    jet: dict[str, np.ndarray],
    con: dict[str, Any],
    *,
    cand_extra: dict[str, np.ndarray] | None = None,
    jet_extra: dict[str, np.ndarray] | None = None,
    truth: dict[str, dict[str, np.ndarray]] | None = None,
) -> Events:
    """Underlying event, pile-up, detector response, summaries: the common second half.

    ``evt``: per-event ``mu_true``, ``n_pu``, ``pv_z``, ``pthat``; ``jet``: per-jet
    arrays grouped by event in descending pT; ``con``: the constituents
    (:func:`.jets.constituents` output, vertices relative to the primary vertex).
    ``cand_extra`` (per constituent, default -1 for the other candidates) and
    ``jet_extra`` are extra truth arrays carried into ``Events.cands`` /
    ``Events.jets``; without them both get ``llp`` = -1.
    """
    nj = jet["pt"].size
    nc = con["nc"]
    if cand_extra is None:
        cand_extra = {"llp": np.full(nc, -1, np.int64)}
    if jet_extra is None:
        jet_extra = {"llp": np.full(nj, -1, np.int64), "genPartMother": np.full(nj, -1, np.int64)}

    soft = soft_particles(rng, o, n, evt["n_pu"], evt["mu_true"], evt["pv_z"])
    a = merge_candidates(con, jet["jet_event"], soft)
    apply_acceptance(a)
    if "llp" in cand_extra:  # LLP decay products are displaced already: not background
        a["llp_cand"] = np.concatenate([cand_extra["llp"], np.full(soft["n"], -1, np.int64)])
    displaced_background(rng, o, a)
    track_parameters(rng, o, a)
    track_quality(rng, a)
    generator_ids(rng, a)
    cands, cand_counts = collection_order(n, a, cand_extra, soft["n"])
    jets = jet_summaries(rng, jet, con, cands)
    jets.update(jet_extra)
    event = event_summaries(rng, o, n, file_index, evt, cands)
    return Events(
        n_events=n,
        event=event,
        jet_counts=jet["n_jets"].astype(np.int64),
        jets=jets,
        cand_counts=cand_counts,
        cands=cands,
        options=o,
        process=process,
        truth=truth or {},
    )


def soft_particles(rng: np.random.Generator, o: ModelOptions, n: int, n_pu, mu_true, pv_z) -> dict[str, Any]:
    """Underlying-event (primary vertex) and pile-up candidates of ``n`` events.

    Returns flat arrays ``event, pt, eta, phi, pdg, ue`` (from the primary vertex),
    ``vtx`` (0 = primary, k = pile-up vertex k), ``vz`` (relative to the primary
    vertex, cm) and their number ``n``.
    """
    n_soft = rng.poisson(o.pileup_candidates * (n_pu + 1.0) / (mu_true + 1.0))
    ns_tot = int(n_soft.sum())
    s_event = np.repeat(np.arange(n), n_soft)
    s_kind = rng.random(ns_tot)
    s_charged = s_kind < 0.55
    s_photon = (s_kind >= 0.55) & (s_kind < 0.88)
    s_sign = np.where(rng.random(ns_tot) < 0.5, 1, -1)
    s_pdg = np.where(s_charged, 211 * s_sign, np.where(s_photon, 22, 130)).astype(np.int32)
    s_pt = np.where(
        s_charged,
        0.15 + rng.gamma(1.3, 0.45, ns_tot),
        np.where(s_photon, 0.1 + rng.gamma(1.2, 0.4, ns_tot), 0.5 + rng.gamma(1.3, 1.0, ns_tot)),
    )
    s_eta = rng.uniform(-o.pileup_eta_max, o.pileup_eta_max, ns_tot)
    s_phi = rng.uniform(-math.pi, math.pi, ns_tot)
    npu_s = n_pu[s_event]
    s_ue = (rng.random(ns_tot) < o.ue_fraction) | (npu_s == 0)
    pick = np.floor(rng.random(ns_tot) * np.maximum(npu_s, 1)).astype(np.int64)
    s_vtx = np.where(s_ue, 0, 1 + pick)
    # z of pile-up vertex k of event e: deterministic per (event, vertex) via a table
    max_pu = int(n_pu.max()) if n else 0
    pu_z = rng.normal(0.0, 3.5, (n, max_pu + 1))
    s_vz = np.where(s_ue, 0.0, pu_z[s_event, np.minimum(s_vtx, max_pu)] - pv_z[s_event])
    return {"n": ns_tot, "event": s_event, "pt": s_pt, "eta": s_eta, "phi": s_phi, "pdg": s_pdg,
            "ue": s_ue, "vtx": s_vtx, "vz": s_vz}


def merge_candidates(con: dict[str, Any], jet_event: np.ndarray, soft: dict[str, Any]) -> dict[str, Any]:
    """Jet constituents then soft candidates, as one set of flat arrays (keys without ``a_``)."""
    nc, ns_tot = con["nc"], soft["n"]
    c_event = con["event"] if "event" in con else jet_event[con["cj"]]
    a = {
        "event": np.concatenate([c_event, soft["event"]]),
        "jet": np.concatenate([con["cj"], np.full(ns_tot, -1, np.int64)]),
        "pt": np.concatenate([con["cpt"], soft["pt"]]),
        "eta": np.concatenate([con["c_eta_abs"], soft["eta"]]),
        "phi": np.concatenate([con["c_phi_abs"], soft["phi"]]),
        "pdg": np.concatenate([con["pdg"], soft["pdg"]]),
        "origin": np.concatenate([con["origin"], np.where(soft["ue"], ORIGIN_UE, ORIGIN_PU).astype(np.int8)]),
        "vtx": np.concatenate([np.zeros(nc, np.int64), soft["vtx"]]),
        "vx": np.concatenate([con["vx"], np.zeros(ns_tot)]),
        "vy": np.concatenate([con["vy"], np.zeros(ns_tot)]),
        "vz": np.concatenate([con["vz"], soft["vz"]]),
    }
    a["n"] = a["pt"].size
    return a


def apply_acceptance(a: dict[str, Any]) -> None:
    """Detector acceptance: no tracks beyond the tracker, HF candidates beyond |η| 3.

    Sets ``pdg`` (charged → neutral hadron / photon outside the tracker, HF ids 1, 2),
    ``apdg``, ``charge``, ``charged``, ``origin`` (decay products that lost their
    track become prompt jet constituents) and ``mass`` (GeV) in ``a``.
    """
    a_pdg, a_origin = a["pdg"], a["origin"]
    aeta = np.abs(a["eta"])
    apdg = np.abs(a_pdg)
    fwd = aeta > ETA_TRACKER
    a_pdg = np.where(fwd & ((apdg == 211) | (apdg == 13)), 130, a_pdg)
    a_pdg = np.where(fwd & (apdg == 11), 22, a_pdg)
    hf = aeta > ETA_HF
    a_pdg = np.where(hf & (a_pdg == 130), 1, a_pdg)
    a_pdg = np.where(hf & (a_pdg == 22), 2, a_pdg).astype(np.int32)
    apdg = np.abs(a_pdg)
    lepton = (apdg == 11) | (apdg == 13)
    a_charge = np.where(apdg == 211, np.sign(a_pdg), np.where(lepton, -np.sign(a_pdg), 0))
    a_charge = a_charge.astype(np.int32)
    a_charged = a_charge != 0
    lost = ~a_charged & ((a_origin == ORIGIN_HF) | (a_origin == ORIGIN_SECONDARY))
    a_origin = np.where(lost, ORIGIN_JET, a_origin).astype(np.int8)
    a_mass = np.select(
        [apdg == 211, apdg == 11, apdg == 13], [M_PI, M_E, M_MU], default=0.0
    )
    a.update(pdg=a_pdg, apdg=apdg, charge=a_charge, charged=a_charged, origin=a_origin, mass=a_mass)


def displaced_background(rng: np.random.Generator, o: ModelOptions, a: dict[str, Any]) -> None:
    """What makes real QCD tracks displaced: sets ``background`` (``BG_*``), moves the
    production vertex ``vx, vy, vz`` of the chosen tracks and sets ``res_scale`` in ``a``.

    Among the charged candidates that are prompt so far (jet constituents, underlying
    event, pile-up: not b/c-hadron, K0S/Λ-in-jet or LLP products), a fraction
    ``displaced_fraction`` is produced away from the beam line:

    - 50 %: K0S / Λ decay products: transverse production radius r ~ Exp(mean
      ``displaced_radius``) cm, truncated at 60 cm;
    - 25 %: photon conversions and 25 %: nuclear interactions, at a tracker-material radius
      (:data:`~.physics.MATERIAL_R`, ±0.3 cm);
    - r is capped so the vertex stays within |z| < 100 cm of the primary vertex (r·|sinh η|);

    each leaving its vertex at an angle θ to the radial direction (in the transverse
    plane), θ ~ Rayleigh(``displaced_angle``/p) (× 3 for nuclear interactions), capped at
    π/2 (p in GeV: decay and scattering angles fall as 1/p). With the vertex at radius r in
    azimuth φ_trk + θ, the straight-line geometry of :func:`track_parameters` gives
    |dxy| = r·|sin θ| and a small dz; :func:`track_quality` then gives them lost inner hits
    beyond the first pixel layer, as real secondaries have. The candidate's id is kept.

    A further fraction ``bad_track_fraction`` of all charged candidates is badly measured:
    its impact-parameter smearing is widened × U(3, 20) (``res_scale``), its stored error not.
    """
    na = a["n"]
    a["background"] = np.full(na, BG_NONE, dtype=np.int8)
    a["res_scale"] = np.ones(na)
    if o.displaced_fraction <= 0 and o.bad_track_fraction <= 0:
        return
    charged = a["charged"]
    origin = a["origin"]
    llp = a.get("llp_cand")
    prompt = charged & ((origin == ORIGIN_JET) | (origin == ORIGIN_UE) | (origin == ORIGIN_PU))
    if llp is not None:
        prompt &= llp < 0
    if o.displaced_fraction > 0:
        pick = np.flatnonzero(prompt & (rng.random(na) < o.displaced_fraction))
        n = pick.size
        kind = _choice(rng, np.array([BG_V0, BG_CONVERSION, BG_NUCLEAR]), [0.5, 0.25, 0.25], n)
        lam = o.displaced_radius
        r_v0 = -lam * np.log1p(-rng.random(n) * -np.expm1(-60.0 / lam))
        r_mat = np.asarray(MATERIAL_R)[rng.integers(0, len(MATERIAL_R), n)] + rng.uniform(-0.3, 0.3, n)
        r = np.where(kind == BG_V0, r_v0, r_mat)
        # inside the tracker volume (|z| < 100 cm from the PV: margin for the PV's and
        # pile-up vertices' own z): forward tracks get a smaller radius
        r = np.minimum(r, 100.0 / np.maximum(np.abs(np.sinh(a["eta"][pick])), 1e-9))
        p = np.maximum(a["pt"][pick], 0.05) * np.cosh(a["eta"][pick])
        scale = o.displaced_angle / p * np.where(kind == BG_NUCLEAR, 3.0, 1.0)
        theta = np.minimum(rng.rayleigh(1.0, n) * scale, 0.5 * math.pi) * np.where(rng.random(n) < 0.5, 1, -1)
        phi_v = a["phi"][pick] + theta
        a["vx"][pick] = a["vx"][pick] + r * np.cos(phi_v)
        a["vy"][pick] = a["vy"][pick] + r * np.sin(phi_v)
        a["vz"][pick] = a["vz"][pick] + r * np.sinh(a["eta"][pick])
        a["background"][pick] = kind
    if o.bad_track_fraction > 0:
        bad = charged & (rng.random(na) < o.bad_track_fraction)
        a["res_scale"][bad] = rng.uniform(3.0, 20.0, int(bad.sum()))
        a["background"][bad & (a["background"] == BG_NONE)] = BG_BAD


def track_parameters(rng: np.random.Generator, o: ModelOptions, a: dict[str, Any]) -> None:
    """Track details and impact parameters (cm): ``has_trk``, ``d0``, ``dz``, ``d0err``,
    ``dzerr`` (−1 without track details), the resolutions ``sxy``, ``sz`` and the true
    ``gxy``, ``gz`` in ``a``."""
    na, a_pt, a_charged = a["n"], a["pt"], a["charged"]
    u = rng.random(na)
    has_trk = a_charged & np.where(a_pt >= o.track_pt_min, u >= 0.002, u < 0.002)
    sxy = _ip_resolution(a_pt, o.dxy_res_const, o.dxy_res_slope)
    sz = _ip_resolution(a_pt, o.dz_res_const, o.dz_res_slope)
    gxy, gz = _vertex_ip(a["vx"], a["vy"], a["vz"], a["phi"], a["eta"])
    tail = np.where(rng.random(na) < 0.03, 3.0, 1.0) * a.get("res_scale", 1.0)
    d0 = gxy + sxy * tail * rng.normal(0.0, 1.0, na)
    dz = gz + sz * tail * rng.normal(0.0, 1.0, na)
    d0err = sxy * np.exp(rng.normal(0.0, 0.12, na))
    dzerr = sz * np.exp(rng.normal(0.0, 0.12, na))
    nofill = ~has_trk
    for arr in (d0, dz, d0err, dzerr):
        arr[nofill] = -1.0
    a.update(has_trk=has_trk, sxy=sxy, sz=sz, gxy=gxy, gz=gz, d0=d0, dz=dz, d0err=d0err, dzerr=dzerr)


def track_quality(rng: np.random.Generator, a: dict[str, Any]) -> None:
    """Vertex association and quality flags: ``pvq``, ``from_pv``, ``lih``, ``trk_q``,
    ``chi2`` and the PUPPI weight ``puppi`` in ``a``."""
    na, a_charged, a_origin = a["n"], a["charged"], a["origin"]
    gxy, gz, sxy, sz, has_trk = a["gxy"], a["gz"], a["sxy"], a["sz"], a["has_trk"]
    far = (np.abs(gxy) > 3 * sxy) | (np.abs(gz) > 3 * sz)
    displaced = a_charged & far & (a_origin != ORIGIN_PU)
    pu = a_origin == ORIGIN_PU
    pvq = _choice(rng, np.array([7, 6, 5]), [0.80, 0.12, 0.08], na)
    pvq_disp = _choice(rng, np.array([7, 5, 4, 1, 0]), [0.25, 0.30, 0.25, 0.10, 0.10], na)
    pvq_pu = _choice(rng, np.array([7, 6, 1, 0]), [0.60, 0.10, 0.20, 0.10], na)
    pvq = np.where(displaced, pvq_disp, pvq)
    pvq = np.where(pu & a_charged, pvq_pu, pvq)
    pvq = np.where(a_charged, pvq, 7).astype(np.int32)
    from_pv = np.full(na, 3, dtype=np.int32)
    from_pv = np.where(displaced, _choice(rng, np.array([3, 2, 1]), [0.3, 0.5, 0.2], na), from_pv)
    from_pv = np.where(pu & a_charged, np.where(np.abs(gz) < 0.2, 1, 0), from_pv).astype(np.int32)

    r_prod = np.hypot(a["vx"], a["vy"])
    lih = _choice(rng, np.array([-1, 0, 1, 2]), [0.79, 0.10, 0.06, 0.05], na)
    lih = np.where(r_prod > PIXEL_LAYER_R[0], np.maximum(lih, 1), lih)
    lih = np.where(r_prod > PIXEL_LAYER_R[1], 2, lih)
    lih = np.where(a_charged, lih, -1).astype(np.int32)
    trk_q = np.where(has_trk, np.where(rng.random(na) < 0.999, 5, 1), 0).astype(np.int32)
    chi2 = np.floor(rng.gamma(4.0, 0.22, na) * np.where(rng.random(na) < 0.02, 10.0, 1.0))
    chi2 = np.where(has_trk, np.minimum(chi2, 255.0), -1.0)

    in_jet = a["jet"] >= 0
    puppi = np.where(
        a_charged,
        np.where(from_pv >= 2, 1.0, 0.0),
        np.where(
            in_jet,
            rng.beta(5.0, 1.0, na),
            np.where(pu, rng.beta(1.0, 5.0, na), rng.beta(2.0, 2.0, na)),
        ),
    )
    a.update(pvq=pvq, from_pv=from_pv, lih=lih, trk_q=trk_q, chi2=chi2, puppi=puppi)


def generator_ids(rng: np.random.Generator, a: dict[str, Any]) -> None:
    """Generator-level particle ids ``gen_pdg`` (π±→K±/p for some, neutral hadrons → K0L/n)."""
    na, a_pdg, apdg, a_charge = a["n"], a["pdg"], a["apdg"], a["charge"]
    gsel = rng.random(na)
    gen_pdg = a_pdg.copy()
    chg_h = apdg == 211
    gen_pdg = np.where(chg_h & (gsel >= 0.72) & (gsel < 0.90), 321 * a_charge, gen_pdg)
    gen_pdg = np.where(chg_h & (gsel >= 0.90), 2212 * a_charge, gen_pdg)
    nh = (apdg == 130) | (apdg == 1)
    nsign = np.where(rng.random(na) < 0.5, 1, -1)
    gen_pdg = np.where(nh, np.where(gsel < 0.35, 130, 2112 * nsign), gen_pdg)
    a["gen_pdg"] = np.where(apdg == 2, 22, gen_pdg).astype(np.int32)


def collection_order(
    n: int, a: dict[str, Any], cand_extra: dict[str, np.ndarray], ns_tot: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The candidates in PFNano collection order, and the candidates per event.

    Charged first, grouped by vertex (unassociated, PV, PU vertices), descending η
    within a group; then neutral ones by descending η. ``cand_extra`` arrays (per
    constituent) are padded with -1 for the soft candidates.
    """
    a_charged, a_eta = a["charged"], a["eta"]
    group = np.where(a_charged, np.where(a["pvq"] <= 1, 0, 1 + a["vtx"]), 1 << 20)
    perm = np.lexsort((-a_eta, group, a["event"]))
    a_event = a["event"][perm]
    cand_counts = np.bincount(a_event, minlength=n).astype(np.int64)

    cands = {
        "pt": a["pt"],
        "eta": a_eta,
        "phi": a["phi"],
        "mass": a["mass"],
        "charge": a["charge"],
        "pdgId": a["pdg"],
        "d0": a["d0"],
        "d0Err": a["d0err"],
        "dz": a["dz"],
        "dzErr": a["dzerr"],
        "pvAssocQuality": a["pvq"],
        "lostInnerHits": a["lih"],
        "trkQuality": a["trk_q"],
        "trkChi2": a["chi2"],
        "puppiWeight": a["puppi"],
        "fromPV": a["from_pv"],
        "jet": a["jet"],
        "origin": a["origin"],
        "vertex": a["vtx"],
        "hasTrack": a["has_trk"],
        "background": a.get("background", np.zeros(a["n"], np.int8)),
        "genPdgId": a["gen_pdg"],
        "vx": a["vx"],
        "vy": a["vy"],
        "vz": a["vz"],
    }
    for k, v in cand_extra.items():
        cands[k] = np.concatenate([v, np.full(ns_tot, -1, dtype=v.dtype)])
    cands = {k: v[perm] for k, v in cands.items()}
    cands["event"] = a_event
    return cands, cand_counts


def jet_summaries(
    rng: np.random.Generator, jet: dict[str, np.ndarray], con: dict[str, Any], cands: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Per-jet quantities from the constituents (mass, shapes, composition, ID), the q/g
    likelihood, b-tag discriminants and generator-level mass; sets ``cands["genPt"]``."""
    pt, eta, phi = jet["pt"], jet["eta"], jet["phi"]
    hadron, gen_pt = jet["hadron"], jet["gen_pt"]
    jec = con["jec"]
    nj = pt.size
    jc = cands["jet"]
    m = jc >= 0
    j = jc[m]
    c_pt = cands["pt"][m]
    c_eta = cands["eta"][m]
    c_phi = cands["phi"][m]
    c_mass = cands["mass"][m]
    c_pdg = np.abs(cands["pdgId"][m])
    c_chg = cands["charge"][m] != 0
    c_fpv = cands["fromPV"][m]
    px = _group_sum(j, c_pt * np.cos(c_phi), nj)
    py = _group_sum(j, c_pt * np.sin(c_phi), nj)
    pz = _group_sum(j, c_pt * np.sinh(c_eta), nj)
    c_e = np.sqrt((c_pt * np.cosh(c_eta)) ** 2 + c_mass**2)
    en = _group_sum(j, c_e, nj)
    raw_mass = np.sqrt(np.maximum(en**2 - px**2 - py**2 - pz**2, 0.0))
    mass = raw_mass * jec

    sum_pt = _group_sum(j, c_pt, nj)
    d_eta = c_eta - eta[j]
    d_phi = wrap_phi(c_phi - phi[j])
    c_dr = np.hypot(d_eta, d_phi)
    girth = _group_sum(j, c_pt * c_dr, nj) / pt
    w2 = c_pt**2
    sw2 = _group_sum(j, w2, nj)
    ptd = np.sqrt(sw2) / sum_pt
    me = _group_sum(j, w2 * d_eta, nj) / sw2
    mp = _group_sum(j, w2 * d_phi, nj) / sw2
    cee = _group_sum(j, w2 * d_eta**2, nj) / sw2 - me**2
    cpp = _group_sum(j, w2 * d_phi**2, nj) / sw2 - mp**2
    cep = _group_sum(j, w2 * d_eta * d_phi, nj) / sw2 - me * mp
    tr_half = 0.5 * (cee + cpp)
    disc = np.sqrt(np.maximum(tr_half**2 - (cee * cpp - cep**2), 0.0))
    axis2 = np.sqrt(np.maximum(tr_half - disc, 0.0))
    qg_sel = (c_chg & (c_fpv == 3)) | (~c_chg & (c_pt > 1.0))
    qg_mult = np.bincount(j, weights=qg_sel, minlength=nj).astype(np.int64)

    comp = _composition(j, c_pdg, c_chg, c_e, en, eta, nj)

    # quark/gluon likelihood: a smooth function of the three QG variables
    mult_mid = (4.0 + 7.0 * np.log(np.maximum(pt, 10.0) / 10.0)) * 1.2
    score = (
        1.1 * (mult_mid - qg_mult) / np.sqrt(mult_mid)
        + 2.5 * (ptd - 0.45) / 0.15 * 0.5
        - 0.8 * (axis2 - 0.05) / 0.03
        + rng.normal(0.0, 0.5, nj)
    )
    qgl = 1.0 / (1.0 + np.exp(-score))
    qgl = np.where(comp["nConstituents"] > 0, qgl, -1.0)

    # b tagging discriminants
    btag_flav = np.where(
        hadron == 5,
        rng.beta(6.0, 1.5, nj),
        np.where(hadron == 4, rng.beta(1.5, 5.0, nj), rng.beta(0.6, 15.0, nj)),
    )
    btag_csv = np.clip(btag_flav + rng.normal(0.0, 0.08, nj), 0.001, 0.999)

    gen_mass = mass * np.exp(rng.normal(0.0, 0.1, nj))
    area = rng.normal(0.50, 0.02, nj)

    # generator-level constituent pT (gen jet scale)
    gpt_scale = np.where(sum_pt > 0, gen_pt / np.maximum(sum_pt, 1e-9), 1.0)
    gen_cpt = np.zeros(cands["pt"].size)
    gen_cpt[m] = c_pt * gpt_scale[j] * np.exp(rng.normal(0.0, 0.05, j.size))
    cands["genPt"] = gen_cpt

    return {
        "pt": pt,
        "eta": eta,
        "phi": phi,
        "mass": mass,
        "rawPt": con["raw_pt"],
        "rawMass": raw_mass,
        "rawFactor": 1.0 - 1.0 / jec,
        "area": area,
        "event": jet["jet_event"],
        "trueFlav": jet["true_flav"],
        "hadronFlav": hadron,
        "partonFlav": jet["parton"].astype(np.int32),
        "physFlav": jet["phys"].astype(np.int32),
        "nBHadrons": jet["n_b_had"].astype(np.int32),
        "nCHadrons": jet["n_c_had"].astype(np.int32),
        "genMatch": jet["gen_match"],
        "genPt": gen_pt,
        "genEta": jet["gen_eta"],
        "genPhi": jet["gen_phi"],
        "genMass": gen_mass,
        "qgl": qgl,
        "ptD": ptd,
        "axis2": axis2,
        "qgMult": qg_mult,
        "girth": girth,
        "btagDeepFlavB": btag_flav,
        "btagDeepB": btag_csv,
        "looseID": comp.pop("looseID"),
        "tightID": comp.pop("tightID"),
        "tightLepVeto": comp.pop("tightLepVeto"),
        **comp,
        "decayLength": con["decayLength"],
        "hadronPdgId": con["hadronPdgId"],
        "hadronPt": con["hadronPt"],
        "hadronEta": con["hadronEta"],
        "hadronPhi": con["hadronPhi"],
        "hadronMass": con["hadronMass"],
    }


def _composition(j, c_pdg, c_chg, c_e, en, eta, nj) -> dict[str, np.ndarray]:
    """Constituent counts, energy fractions and the 2016 PF jet ID of each jet.

    Keys in the order of the jets' output columns after the ID flags:
    ``looseID, tightID, tightLepVeto, chHEF, neHEF, chEmEF, neEmEF, muEF,
    nConstituents, nChargedHadrons, nNeutralHadrons, nCharged, nNeutral,
    nElectrons, nMuons``.
    """
    n_ch_had = np.bincount(j, weights=c_pdg == 211, minlength=nj).astype(np.int64)
    n_ne_had = np.bincount(j, weights=(c_pdg == 130) | (c_pdg == 1), minlength=nj).astype(np.int64)
    n_chg = np.bincount(j, weights=c_chg, minlength=nj).astype(np.int64)
    n_tot = np.bincount(j, minlength=nj).astype(np.int64)
    n_neu = n_tot - n_chg
    n_ele = np.bincount(j, weights=c_pdg == 11, minlength=nj).astype(np.int64)
    n_mu = np.bincount(j, weights=c_pdg == 13, minlength=nj).astype(np.int64)

    def frac(sel):
        return _group_sum(j, np.where(sel, c_e, 0.0), nj) / en

    ch_hef = frac(c_pdg == 211)
    ne_hef = frac((c_pdg == 130) | (c_pdg == 1))
    ch_emef = frac(c_pdg == 11)
    ne_emef = frac((c_pdg == 22) | (c_pdg == 2))
    mu_ef = frac(c_pdg == 13)
    # 2016 PF jet ID; within |eta| <= 2.7 exactly the JetNtuple producer's formula
    aeta_j = np.abs(eta)
    central = aeta_j <= 2.7
    loose_c = central & (n_tot > 1) & (ne_hef < 0.99) & (ne_emef < 0.99) & (
        ((aeta_j <= 2.4) & (ch_hef > 0) & (n_chg > 0) & (ch_emef < 0.99)) | (aeta_j > 2.4)
    )
    tight_c = loose_c & (ne_hef < 0.90) & (ne_emef < 0.90)
    endcap = (aeta_j > 2.7) & (aeta_j <= 3.0)
    fwd_id = (endcap & (ne_emef > 0.01) & (ne_hef < 0.98) & (n_neu > 2)) | (
        (aeta_j > 3.0) & (ne_emef < 0.90) & (n_neu > 10)
    )
    return {
        "looseID": loose_c | fwd_id,
        "tightID": tight_c | fwd_id,
        "tightLepVeto": (tight_c & (mu_ef < 0.8) & (ch_emef < 0.8)) | fwd_id,
        "chHEF": ch_hef,
        "neHEF": ne_hef,
        "chEmEF": ch_emef,
        "neEmEF": ne_emef,
        "muEF": mu_ef,
        "nConstituents": n_tot,
        "nChargedHadrons": n_ch_had,
        "nNeutralHadrons": n_ne_had,
        "nCharged": n_chg,
        "nNeutral": n_neu,
        "nElectrons": n_ele,
        "nMuons": n_mu,
    }


def event_summaries(
    rng: np.random.Generator, o: ModelOptions, n: int, file_index: int,
    evt: dict[str, np.ndarray], cands: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """Event ids (unique across files), pile-up, primary vertices and ρ (GeV per unit area)."""
    mu_true, n_pu, pv_z, pthat = evt["mu_true"], evt["n_pu"], evt["pv_z"], evt["pthat"]
    ev = cands["event"]
    soft = cands["jet"] < 0
    c_charged = cands["charge"] != 0
    central = np.abs(cands["eta"]) < ETA_TRACKER
    area_all = 2 * o.pileup_eta_max * _TWO_PI
    area_c = 2 * min(ETA_TRACKER, o.pileup_eta_max) * _TWO_PI
    spt = np.where(soft, cands["pt"], 0.0)
    rho_all = 0.7 * _group_sum(ev, spt, n) / area_all
    rho_c = 0.7 * _group_sum(ev, np.where(central, spt, 0.0), n) / area_c
    rho_cn = 0.7 * _group_sum(ev, np.where(central & ~c_charged, spt, 0.0), n) / area_c
    cpu_sel = central & c_charged & (cands["origin"] == ORIGIN_PU)
    rho_cpu = 0.7 * _group_sum(ev, np.where(cpu_sel, spt, 0.0), n) / area_c
    npvs = 1 + rng.binomial(n_pu, 0.75)
    npvs_good = npvs - rng.binomial(npvs - 1, 0.05)
    event_no = np.uint64(file_index) * np.uint64(1_000_000_000)
    event_no = event_no + np.arange(1, n + 1, dtype=np.uint64)
    lumi = 1 + (file_index * 1000 + np.arange(n) // 200) % 2_000_000_000

    pv_x = rng.normal(0.0, 0.0012, n)
    pv_y = rng.normal(0.0, 0.0012, n)

    return {
        "run": np.ones(n, dtype=np.int64),
        "luminosityBlock": lumi.astype(np.int64),
        "event": event_no,
        "pthat": pthat,
        "weight": np.ones(n),
        "nPU": n_pu.astype(np.int64),
        "nTrueInt": mu_true,
        "pvX": pv_x,
        "pvY": pv_y,
        "pvZ": pv_z,
        "npvs": npvs.astype(np.int64),
        "npvsGood": npvs_good.astype(np.int64),
        "rhoAll": rho_all,
        "rhoCentral": rho_c,
        "rhoCentralNeutral": rho_cn,
        "rhoCentralChargedPileUp": rho_cpu,
    }
