"""Long-lived-particle signal (``process="llp"``): displaced jets from a neutral LLP.

A heavy neutral mediator Φ (mass ``mediator_mass``, PDG id 35) is produced at
the primary vertex and decays to a pair of neutral long-lived particles X
(mass ``llp_mass``, PDG id 6000113, as in CMS's H → XX → 4q displaced-jet
samples); each X flies a distance L = βγ cτ × Exp(1) and decays to a quark
pair (d d̄ or b b̄), each quark giving a jet whose constituents start at the
displaced vertex. The events then get ISR jets and the same underlying event,
pile-up, detector response and summaries as the QCD background
(:mod:`jettracks.generate.model`), and are written by the same writers in the
same schemas (no new branches).

Units: GeV, cm, radians; vertices are relative to the primary vertex.

Options (``**options`` of ``generate_file(..., process="llp")``)
=================================================================

===================  ========  ==============================================
option               default   meaning
===================  ========  ==============================================
``llp_mass``         50        X mass, GeV (>= 1; >= 10 for ``bb``)
``llp_ctau``         1.0       X proper decay length cτ, cm; 0.01–100 cm
                               (0.1 mm – 1 m), else ValueError
``llp_per_event``    2         1 or 2: Φ → X X (2), or X + an invisible
                               stable partner of the same mass (1)
``llp_decay``        "dd"      X → d d̄ (``"dd"``) or b b̄ (``"bb"``)
``mediator_mass``    400       Φ mass, GeV (> 2 ``llp_mass``)
===================  ========  ==============================================

These options are an error with ``process="qcd"``. The QCD options keep their
meaning where they apply: pile-up / underlying event, flavour mix of the ISR
jets (``frac_*``), resolutions, ``ctau_b`` (b hadrons in b b̄ jets),
``secondary_fraction``, ``jet_pt_min`` (jet threshold), ``jet_eta_max`` (ISR
acceptance), ``jets_min``/``jets_max``/``jet_mult_ratio`` (ISR multiplicity,
below). ``pt_hat_*`` and ``pt_spectrum_index`` are not used.

The model, step by step
=======================

Production
    * ISR jets: n_ISR in 0 … ``jets_max`` − ``jets_min`` (0 … 6) with P(n) ∝
      ``jet_mult_ratio``^n (mean ≈ 0.8), pT from a pT^-3 spectrum between
      ``jet_pt_min`` and ``mediator_mass``/2, φ uniform, |η| < ``jet_eta_max``
      (η resampled, up to 30 times, until ΔR > 0.6 from the other jets' partons);
      flavours, gluon splitting, generator jets and truth flavours as QCD jets.
    * Φ recoils against the ISR jets (pT = −Σ pT(ISR) + 5 GeV Gaussian kT per
      component), rapidity y ~ N(0, 1.2); Φ → X X isotropic in the Φ rest frame.
      ``pthat`` (event) = p* sin θ*, the transverse momentum of the decay in the
      Φ frame (the hard scale of gg → Φ → XX taken as a 2 → 2 process).

LLP decay
    * Flight length L = βγ cτ × Exp(1) (βγ = p/m), along the X direction from
      the primary vertex: decay vertex (vx, vy, vz) = L p̂; transverse
      L_xy = L sin θ.
    * X → q q̄ isotropic in the X rest frame (m_d = 0, m_b = 4.8 GeV), boosted.
      A quark with pT ≥ 3 GeV and |η| < 5 becomes a jet of constituents exactly
      as a QCD quark jet of that pT (multiplicity, fragmentation, b-hadron decays
      with b-hadron flight for b b̄, K0S/Λ secondaries; see ``model``); softer or
      more forward quarks leave nothing. Every constituent's production vertex
      is shifted by the X decay vertex, so tracks start at the displaced vertex
      and their impact parameters come from the geometry: the common detector
      step computes dxy = (−vx·py + vy·px)/pT and
      dz = vz − (vx·px + vy·py)/pT · pz/pT (straight lines, cm, CMS sign) and adds
      the usual resolution smearing (σ = a ⊕ b/pT, 3 % 3× tails).

Detector acceptance of the displaced products (by each particle's production
point (r, |z|) in detector coordinates, z measured from the nominal centre)
    * Tracker, r < 60 cm and |z| < 120 cm (``TRACKER_R``, ``TRACKER_Z``):
      charged particles are reconstructed as tracks as usual (d0Err > 0 for
      pT ≥ 0.5 GeV), with ``lostInnerHits`` ≥ 1 beyond the first pixel layer.
    * Beyond the tracker but inside the ECAL surface (r < 129 cm, |z| < 315 cm):
      **charged particles become neutral-like candidates without track details**
      (π±/μ± → pdgId 130, e± → 22; charge 0, d0 = d0Err = dz = dzErr = -1),
      as PF makes calorimeter-only candidates of particles without a track.
    * Inside the hadron calorimeter (r < 295 cm, |z| < 568 cm, beyond the ECAL
      surface): every product is a neutral hadron candidate (130).
    * Beyond the calorimeters: the products leave no candidates (the X escapes;
      its jets are missing).
    * Direction as seen from the origin: tracks keep their momentum direction;
      a calorimeter candidate of a displaced particle points from the primary
      vertex to where the particle enters the ECAL (r = 129 cm / |z| = 315 cm),
      or to its production point if that is beyond, with its energy kept
      (pT = E / cosh η). Candidates ending beyond |η| = 5 are dropped.

Jets
    * The jet momentum is the vector sum of its constituents' momenta as
      reconstructed (so the axis of a displaced jet seen from the origin);
      corrected pT = raw pT × JEC (the QCD model's JEC = 1 + 0.9/√pT).
    * Jets (ISR and LLP daughters) closer than ΔR < 0.4 are merged (anti-kT
      would make one jet; at the defaults the two quarks of an X are mostly
      resolved): the softer one's constituents join the harder one. Jets with
      pT < ``jet_pt_min`` or |η| > 4.7 (or nothing left) are not jets: their
      candidates stay in the event, unclustered (``cands["jet"] = -1``).
      So an event may have fewer than two jets; the JetNtuple writer applies the
      producer's selection as for QCD (pT > 30, |η| < 2.5, two leading pass).
    * Truth: an LLP daughter jet has ``hadronFlav`` 0 (d d̄) or 5 (b b̄, with
      nBHadrons 1 per b quark), ``partonFlav`` = ``physFlav`` = the quark (±1,
      ±5) and ``trueFlav`` the quark; a merged jet takes the flavour of its
      component of highest hadron flavour, then highest pT. ISR jets are QCD jets.

Truth kept in memory (``Events``, not written: the files have only the real
formats' branches)
    * ``jets["llp"]``, ``cands["llp"]``: global index of the X a jet / candidate
      comes from (-1 for ISR, UE, pile-up); ``cands["vx"/"vy"/"vz"]`` the
      production vertex; ``jets["genPartMother"]`` the GenPart row of the X.
    * ``truth["llp"]``: per X: ``event``, ``pt``, ``eta``, ``phi``, ``p``,
      ``mass``, ``betagamma``, ``ctau``, ``decayLength`` (3-D L), ``lxy``,
      ``vx``, ``vy``, ``vz``, ``zone`` (0 tracker, 1 inside the ECAL surface,
      2 HCAL, 3 beyond), ``pdgId``.
    * ``truth["quark"]``: per quark: ``event``, ``llp``, ``pdgId``, ``pt``,
      ``eta``, ``phi``, ``jet`` (the final jet holding its constituents, -1).
    * ``truth["mediator"]``: per event ``pt``, ``eta``, ``phi``, ``y``, ``mass``.
    * ``truth["genpart"]``: the rows the PFNano writer puts first in each
      event's ``GenPart`` (Φ, status 22; each X, status 22, mother Φ); the LLP
      daughter jets' partons (status 23) then have the X as mother. Quarks that
      make no jet have no GenPart row.

Speed: like QCD per event (≈ 4 hard jets of ~100 GeV, the same pile-up).
"""

from __future__ import annotations

import math

import numpy as np

from .detector import finish_events
from .jets import constituents, gen_truth, jet_flavour, pileup_vertices
from .physics import (
    _TWO_PI,
    Events,
    ModelOptions,
    _choice,
    _group_sum,
    _local_index,
    _power_law,
    wrap_phi,
)

__all__ = [
    "CALO_R",
    "CALO_Z",
    "ECAL_R",
    "ECAL_Z",
    "LLP_PDGID",
    "MEDIATOR_PDGID",
    "TRACKER_R",
    "TRACKER_Z",
    "generate_llp",
]

#: PDG ids of the LLP (X) and of the mediator (Φ).
LLP_PDGID = 6000113
MEDIATOR_PDGID = 35
#: Tracks are reconstructed for particles produced within r < TRACKER_R, |z| < TRACKER_Z (cm).
TRACKER_R = 60.0
TRACKER_Z = 120.0
#: ECAL front surface (barrel radius, endcap |z|), cm.
ECAL_R = 129.0
ECAL_Z = 315.0
#: Outer limit of the calorimeters (HCAL barrel radius, endcap |z|), cm.
CALO_R = 295.0
CALO_Z = 568.0
#: Zones of a production point (``truth["llp"]["zone"]``).
ZONE_TRACKER, ZONE_ECAL, ZONE_HCAL, ZONE_BEYOND = 0, 1, 2, 3

_QUARK_MASS = {"dd": (1, 0.0), "bb": (5, 4.8)}
_QUARK_PT_MIN = 3.0  # GeV: softer LLP quarks make no jet
_ETA_DETECTOR = 5.0  # candidates beyond are dropped
_JET_ETA_MAX = 4.7  # NanoAOD jets
_R_JET = 0.4  # AK4 merging distance
_STATUS_FLAGS_RESONANCE = 1 + 128 + 256 + 2048 + 4096 + 8192  # prompt, hard process, first+last copy


# --------------------------------------------------------------------------- kinematics


def _boost(e, px, py, pz, bx, by, bz):
    """Lorentz boost of (e, p) by velocity (bx, by, bz) (rest frame → lab)."""
    b2 = bx * bx + by * by + bz * bz
    g = 1.0 / np.sqrt(np.maximum(1.0 - b2, 1e-300))
    bp = bx * px + by * py + bz * pz
    k = np.where(b2 > 0, (g - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0) * bp + g * e
    return g * (e + bp), px + k * bx, py + k * by, pz + k * bz


def _isotropic(rng, size):
    cos_t = rng.uniform(-1.0, 1.0, size)
    sin_t = np.sqrt(np.maximum(1.0 - cos_t**2, 0.0))
    phi = rng.uniform(0.0, _TWO_PI, size)
    return sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t


def _pt_eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / np.maximum(pt, 1e-12))
    return pt, eta, np.arctan2(py, px)


def _zone(r, zabs):
    """Detector zone of production points at transverse radius r and |z| (cm)."""
    return np.select(
        [
            (r < TRACKER_R) & (zabs < TRACKER_Z),
            (r < ECAL_R) & (zabs < ECAL_Z),
            (r < CALO_R) & (zabs < CALO_Z),
        ],
        [ZONE_TRACKER, ZONE_ECAL, ZONE_HCAL],
        default=ZONE_BEYOND,
    ).astype(np.int8)


def _calo_direction(vx, vy, vz, z0, eta, phi):
    """η, φ seen from the primary vertex of a calorimeter deposit.

    A particle from (vx, vy, vz) (relative to the primary vertex at detector z
    ``z0``) with direction (η, φ) deposits where it enters the ECAL surface
    (r = ECAL_R, |z| = ECAL_Z), or at its production point when produced beyond.
    """
    st = 1.0 / np.cosh(eta)
    dx, dy, dz = np.cos(phi) * st, np.sin(phi) * st, np.tanh(eta)
    zd = vz + z0
    inside = (np.hypot(vx, vy) < ECAL_R) & (np.abs(zd) < ECAL_Z)
    a = np.maximum(dx * dx + dy * dy, 1e-300)
    b = vx * dx + vy * dy
    c = vx * vx + vy * vy - ECAL_R**2
    t_r = (-b + np.sqrt(np.maximum(b * b - a * c, 0.0))) / a
    with np.errstate(divide="ignore", invalid="ignore"):
        t_z = np.where(dz != 0, (np.copysign(ECAL_Z, dz) - zd) / dz, np.inf)
    t = np.where(inside, np.maximum(np.minimum(t_r, t_z), 0.0), 0.0)
    x, y, z = vx + t * dx, vy + t * dy, vz + t * dz
    return _pt_eta_phi(x, y, z)[1:]


# --------------------------------------------------------------------------- model


def generate_llp(n: int, rng: np.random.Generator, o: ModelOptions, file_index: int) -> Events:
    """``n`` LLP signal events (see the module docstring); ``o`` validated options.

    The steps, in the order they draw from ``rng``: pile-up vertices; ISR jets
    (:func:`_isr_jets`); the mediator, its X pair and their decay vertices
    (:func:`_llp_pair`); X → q q̄ (:func:`_llp_decays`); ISR jets moved away from
    the quarks (:func:`_separate_isr`); proto-jets and their flavours
    (:func:`_proto_jets`); constituents from the displaced vertices
    (:func:`_displaced_constituents`); detector acceptance (:func:`_acceptance`,
    no randomness); jets from the constituents (:func:`_cluster`,
    :func:`_merged_truth`, :func:`_jet_records`); truth records (:func:`_truth_records`).
    """
    mu_true, n_pu, pv_z = pileup_vertices(rng, o, n)
    isr = _isr_jets(rng, o, n)
    med, llp = _llp_pair(rng, o, n, isr, pv_z)
    quarks = _llp_decays(rng, o, llp)
    _separate_isr(rng, o, isr, quarks)
    pj, fl = _proto_jets(rng, o, isr, quarks)
    con = _displaced_constituents(rng, o, pj, fl, llp)
    acc = _acceptance(con, pv_z)
    cl = _cluster(o, n, pj, acc)
    d, jfl, j_llp = _merged_truth(pj, fl, cl)
    jet, con_out = _jet_records(rng, n, pj, con, acc, cl, d, jfl, j_llp)
    truth_out, mother = _truth_records(o, n, med, llp, quarks, pj, cl, j_llp)
    evt = {"mu_true": mu_true, "n_pu": n_pu, "pv_z": pv_z, "pthat": med["pthat"]}
    return finish_events(
        n, rng, o, file_index, "llp", evt, jet, con_out,
        cand_extra={"llp": acc["llp"]},
        jet_extra={"llp": j_llp, "genPartMother": mother},
        truth=truth_out,
    )


def _isr_jets(rng, o: ModelOptions, n: int) -> dict[str, np.ndarray]:
    """ISR jets, padded to ``(n, jets_max - jets_min)``: ``valid``, ``pt``, ``eta``, ``phi``."""
    k_isr = int(o.jets_max) - int(o.jets_min)
    ks = np.arange(k_isr + 1)
    n_isr = _choice(rng, ks, o.jet_mult_ratio ** ks, n).astype(np.int64)
    hi = max(0.5 * float(o.mediator_mass), 2.0 * o.jet_pt_min)
    return {
        "valid": np.arange(k_isr)[None, :] < n_isr[:, None],
        "pt": _power_law(rng, o.jet_pt_min, hi, 3.0, n * k_isr).reshape(n, k_isr),
        "eta": rng.uniform(-o.jet_eta_max, o.jet_eta_max, (n, k_isr)),
        "phi": rng.uniform(-math.pi, math.pi, (n, k_isr)),
    }


def _llp_pair(rng, o: ModelOptions, n: int, isr: dict, pv_z: np.ndarray) -> tuple[dict, dict]:
    """The mediator recoiling against the ISR jets, its decay to X X, and each X's decay vertex.

    Returns ``(mediator, llp)``: mediator ``px, py, pz, y`` and the event's
    ``pthat``; per X (flat, ``llp_per_event`` per event) ``event``, four-momentum
    ``e, px, py, pz``, ``p``, ``bg`` (βγ), ``flight`` (L, cm), decay vertex
    ``vx, vy, vz`` (cm, from the primary vertex) and its detector ``zone``.
    """
    big_m, m, k = float(o.mediator_mass), float(o.llp_mass), int(o.llp_per_event)
    valid, isr_pt, isr_phi = isr["valid"], isr["pt"], isr["phi"]
    med_px = -np.where(valid, isr_pt * np.cos(isr_phi), 0.0).sum(axis=1)
    med_py = -np.where(valid, isr_pt * np.sin(isr_phi), 0.0).sum(axis=1)
    med_px = med_px + rng.normal(0.0, 5.0, n)
    med_py = med_py + rng.normal(0.0, 5.0, n)
    med_y = rng.normal(0.0, 1.2, n)
    med_mt = np.sqrt(big_m**2 + med_px**2 + med_py**2)
    med_e, med_pz = med_mt * np.cosh(med_y), med_mt * np.sinh(med_y)

    p_star = math.sqrt(big_m**2 / 4.0 - m**2)
    ux, uy, uz = _isotropic(rng, n)
    sgn = np.array([1.0, -1.0])[None, :]  # X1 along u, X2 opposite
    e_l, px_l, py_l, pz_l = _boost(
        np.full((n, 2), 0.5 * big_m), p_star * ux[:, None] * sgn, p_star * uy[:, None] * sgn,
        p_star * uz[:, None] * sgn, (med_px / med_e)[:, None], (med_py / med_e)[:, None],
        (med_pz / med_e)[:, None],
    )
    e_l, px_l, py_l, pz_l = (a[:, :k].ravel() for a in (e_l, px_l, py_l, pz_l))
    l_event = np.repeat(np.arange(n), k)
    p_l = np.sqrt(px_l**2 + py_l**2 + pz_l**2)
    bg = p_l / m
    flight = bg * o.llp_ctau * rng.exponential(1.0, n * k)
    l_vx, l_vy, l_vz = (flight * c / p_l for c in (px_l, py_l, pz_l))
    med = {"px": med_px, "py": med_py, "pz": med_pz, "y": med_y, "pthat": p_star * np.hypot(ux, uy)}
    llp = {
        "event": l_event, "e": e_l, "px": px_l, "py": py_l, "pz": pz_l, "p": p_l, "bg": bg,
        "flight": flight, "vx": l_vx, "vy": l_vy, "vz": l_vz,
        "zone": _zone(np.hypot(l_vx, l_vy), np.abs(l_vz + pv_z[l_event])),
    }
    return med, llp


def _llp_decays(rng, o: ModelOptions, llp: dict) -> dict[str, np.ndarray]:
    """X → q q̄ in the X rest frame, boosted; two quarks per X (quark, then antiquark).

    Per quark: ``llp`` (its X), ``event``, ``pdgId``, ``pt``, ``eta``, ``phi``, and
    ``vis``: pT ≥ 3 GeV, |η| < 5 and the X decayed inside the calorimeters.
    """
    m = float(o.llp_mass)
    q_id, m_q = _QUARK_MASS[o.llp_decay]
    nl = llp["event"].size
    q_star = math.sqrt(max(m**2 / 4.0 - m_q**2, 0.0))
    wx, wy, wz = _isotropic(rng, nl)
    qs = np.array([1.0, -1.0])[None, :]  # quark along w, antiquark opposite
    e_l = llp["e"]
    _e_q, px_q, py_q, pz_q = _boost(
        np.full((nl, 2), 0.5 * m), q_star * wx[:, None] * qs, q_star * wy[:, None] * qs,
        q_star * wz[:, None] * qs, (llp["px"] / e_l)[:, None], (llp["py"] / e_l)[:, None],
        (llp["pz"] / e_l)[:, None],
    )
    q_llp = np.repeat(np.arange(nl), 2)
    q_pt, q_eta, q_phi = _pt_eta_phi(px_q.ravel(), py_q.ravel(), pz_q.ravel())
    return {
        "llp": q_llp,
        "event": llp["event"][q_llp],
        "pdgId": np.tile(np.array([q_id, -q_id], dtype=np.int32), nl),
        "pt": q_pt,
        "eta": q_eta,
        "phi": q_phi,
        "vis": (q_pt >= _QUARK_PT_MIN) & (np.abs(q_eta) < _ETA_DETECTOR)
        & (llp["zone"][q_llp] < ZONE_BEYOND),
    }


def _separate_isr(rng, o: ModelOptions, isr: dict, quarks: dict) -> None:
    """Resample (in place, up to 30 times) the η of ISR jets within ΔR < 0.6 of the
    visible quarks or of earlier ISR jets, as QCD keeps its jets apart."""
    isr_valid, isr_eta, isr_phi = isr["valid"], isr["eta"], isr["phi"]
    n, k_isr = isr_eta.shape
    kq = 2 * int(o.llp_per_event)
    qe = np.where(quarks["vis"], quarks["eta"], 99.0).reshape(n, kq)
    qp = quarks["phi"].reshape(n, kq)
    for j in range(k_isr):
        for _ in range(30):
            prev = np.where(isr_valid[:, :j], isr_eta[:, :j], 99.0)
            deta = np.concatenate([qe, prev], axis=1) - isr_eta[:, j : j + 1]
            dphi = wrap_phi(np.concatenate([qp, isr_phi[:, :j]], axis=1) - isr_phi[:, j : j + 1])
            close = isr_valid[:, j] & ((deta**2 + dphi**2) < 0.6**2).any(axis=1)
            c = int(close.sum())
            if c == 0:
                break
            isr_eta[close, j] = rng.uniform(-o.jet_eta_max, o.jet_eta_max, c)


def _proto_jets(rng, o: ModelOptions, isr: dict, quarks: dict) -> tuple[dict, dict]:
    """Proto-jets (valid ISR jets and visible quarks, grouped by event) and their flavours.

    Returns ``(pj, fl)``: ``pj`` holds ``event, pt, eta, phi``, ``quark`` (index
    of its quark, -1 for ISR), ``is_q`` and ``llp`` (its X, -1 for ISR); ``fl``
    the flavours of :func:`jet_flavour`, overridden by the quark's for LLP jets.
    """
    q_id = _QUARK_MASS[o.llp_decay][0]
    isr_valid = isr["valid"]
    qi = np.nonzero(quarks["vis"])[0]
    n_i = int(isr_valid.sum())
    pj_event = np.concatenate([np.nonzero(isr_valid)[0], quarks["event"][qi]])
    order = np.argsort(pj_event, kind="stable")
    pj = {
        "event": pj_event[order],
        "pt": np.concatenate([isr["pt"][isr_valid], quarks["pt"][qi]])[order],
        "eta": np.concatenate([isr["eta"][isr_valid], quarks["eta"][qi]])[order],
        "phi": np.concatenate([isr["phi"][isr_valid], quarks["phi"][qi]])[order],
        "quark": np.concatenate([np.full(n_i, -1, np.int64), qi])[order],
    }
    npj = pj["pt"].size
    is_q = pj["is_q"] = pj["quark"] >= 0
    pj["llp"] = (np.where(is_q, quarks["llp"][np.maximum(pj["quark"], 0)], -1) if npj
                 else np.zeros(0, np.int64))

    fl = jet_flavour(rng, o, npj)
    qpdg = quarks["pdgId"][np.maximum(pj["quark"], 0)] if npj else np.zeros(0, np.int32)
    fl["is_gluon"] = np.where(is_q, False, fl["is_gluon"])
    fl["sign"] = np.where(is_q, np.sign(qpdg), fl["sign"])
    fl["light"] = np.where(is_q, np.abs(qpdg), fl["light"])
    fl["true_flav"] = np.where(is_q, qpdg, fl["true_flav"]).astype(np.int32)
    fl["hadron"] = np.where(is_q, 5 if q_id == 5 else 0, fl["hadron"]).astype(np.int32)
    fl["g_bb"] = fl["g_bb"] & ~is_q
    fl["g_cc"] = fl["g_cc"] & ~is_q
    fl["n_b_had"] = np.where(is_q, 1 if q_id == 5 else 0, fl["n_b_had"])
    fl["n_c_had"] = np.where(is_q, 0, fl["n_c_had"])
    return pj, fl


def _displaced_constituents(rng, o: ModelOptions, pj: dict, fl: dict, llp: dict) -> dict:
    """Constituents of the proto-jets (:func:`constituents`), those of LLP jets moved
    to their X's decay vertex; adds ``llp``, ``event`` and ``displaced`` per constituent."""
    con = constituents(rng, o, pj["pt"], pj["eta"], pj["phi"], fl["is_gluon"], fl["hadron"], fl["sign"])
    cj = con["cj"]
    c_llp = pj["llp"][cj]
    disp = c_llp >= 0
    li = c_llp[disp]
    con["vx"][disp] += llp["vx"][li]
    con["vy"][disp] += llp["vy"][li]
    con["vz"][disp] += llp["vz"][li]
    con["llp"], con["event"], con["displaced"] = c_llp, pj["event"][cj], disp
    return con


def _acceptance(con: dict, pv_z: np.ndarray) -> dict[str, np.ndarray]:
    """What the detector sees of the constituents (see the module docstring).

    Displaced charged particles produced in the ECAL (HCAL) become neutral
    hadrons or photons; displaced calorimeter deposits are seen from the primary
    vertex (:func:`_calo_direction`); particles produced beyond the calorimeters
    or at |η| ≥ 5 are dropped. Returns the kept constituents: ``cj``, ``llp``,
    ``event``, ``cpt``, ``eta``, ``phi``, ``pdg``, ``origin``, ``vx``, ``vy``, ``vz``.
    """
    vx, vy, vz, disp, c_event = con["vx"], con["vy"], con["vz"], con["displaced"], con["event"]
    pdg = con["pdg"]
    cpt, c_eta, c_phi = con["cpt"], con["c_eta_abs"], con["c_phi_abs"]
    zone = np.where(disp, _zone(np.hypot(vx, vy), np.abs(vz + pv_z[c_event])), ZONE_TRACKER)
    apdg = np.abs(pdg)
    charged = (apdg == 211) | (apdg == 11) | (apdg == 13)
    ecal = zone == ZONE_ECAL
    pdg = np.where(ecal & charged & (apdg != 11), 130, pdg)
    pdg = np.where(ecal & (apdg == 11), 22, pdg)
    pdg = np.where(zone == ZONE_HCAL, 130, pdg).astype(np.int32)
    calo = disp & (np.abs(pdg) != 211) & (np.abs(pdg) != 11) & (np.abs(pdg) != 13)
    ci = np.nonzero(calo)[0]
    if ci.size:
        e_eta, e_phi = _calo_direction(vx[ci], vy[ci], vz[ci], pv_z[c_event[ci]], c_eta[ci], c_phi[ci])
        cpt = cpt.copy()
        cpt[ci] = cpt[ci] * np.cosh(c_eta[ci]) / np.cosh(e_eta)
        c_eta = c_eta.copy()
        c_phi = c_phi.copy()
        c_eta[ci], c_phi[ci] = e_eta, e_phi
    keep = (zone != ZONE_BEYOND) & (np.abs(c_eta) < _ETA_DETECTOR)
    return {
        "cj": con["cj"][keep], "llp": con["llp"][keep], "event": c_event[keep],
        "cpt": cpt[keep], "eta": c_eta[keep], "phi": c_phi[keep], "pdg": pdg[keep],
        "origin": con["origin"][keep], "vx": vx[keep], "vy": vy[keep], "vz": vz[keep],
    }


def _axes(jet_of, acc: dict, size: int):
    """pT, η, φ of the summed constituent momenta per jet, and the constituent counts."""
    cpt, c_eta, c_phi = acc["cpt"], acc["eta"], acc["phi"]
    sx = _group_sum(jet_of, cpt * np.cos(c_phi), size)
    sy = _group_sum(jet_of, cpt * np.sin(c_phi), size)
    sz = _group_sum(jet_of, cpt * np.sinh(c_eta), size)
    ncon = np.bincount(jet_of, minlength=size)
    return (*_pt_eta_phi(sx, sy, sz), ncon)


def _cluster(o: ModelOptions, n: int, pj: dict, acc: dict) -> dict[str, np.ndarray]:
    """Jets from the accepted constituents: proto-jets merge (:func:`_merge`), get the
    jet energy correction and pass ``jet_pt_min`` and |η| < 4.7.

    Returns ``a_pt`` (each proto-jet's own pT), ``target`` (its merge target),
    ``pt`` (corrected), ``eta``, ``phi``, ``raw``, ``jec`` (indexed by proto-jet),
    ``sel`` (surviving proto-jets in output order: by event, descending pT),
    ``new_index`` (proto-jet → output jet, -1) and ``cj`` (output jet of each constituent).
    """
    npj = pj["pt"].size
    a_pt, a_eta, a_phi, a_n = _axes(acc["cj"], acc, npj)
    target = _merge(pj["event"], a_pt, a_eta, a_phi, a_n > 0, n)
    cj = target[acc["cj"]]
    f_pt, f_eta, f_phi, f_n = _axes(cj, acc, npj)  # indexed by surviving proto-jet
    raw = f_pt
    pt0 = raw * (1.0 + 0.9 / np.sqrt(np.maximum(raw, 1e-6)))
    jec = 1.0 + 0.9 / np.sqrt(np.maximum(pt0, 1e-6))
    pt_corr = raw * jec
    alive = (target == np.arange(npj)) & (f_n > 0) & (pt_corr >= o.jet_pt_min)
    alive &= np.abs(f_eta) < _JET_ETA_MAX
    sel = np.nonzero(alive)[0]
    sel = sel[np.lexsort((-pt_corr[sel], pj["event"][sel]))]
    new_index = np.full(npj, -1, np.int64)
    new_index[sel] = np.arange(sel.size)
    return {
        "a_pt": a_pt, "target": target, "pt": pt_corr, "eta": f_eta, "phi": f_phi, "raw": raw,
        "jec": jec, "sel": sel, "new_index": new_index, "cj": new_index[cj],
    }


def _merged_truth(pj: dict, fl: dict, cl: dict) -> tuple[np.ndarray, dict, np.ndarray]:
    """Truth of each output jet: flavours of its dominant component (highest hadron
    flavour, then pT; hadron counts summed over components) and the X of its hardest
    LLP component. Returns ``(dominant proto-jet, flavours, llp)`` per output jet."""
    npj = pj["pt"].size
    a_pt, target, sel = cl["a_pt"], cl["target"], cl["sel"]
    comp = np.lexsort((-a_pt, -fl["hadron"], target))
    first = np.r_[True, target[comp][1:] != target[comp][:-1]] if npj else np.zeros(0, bool)
    dom = np.arange(npj)
    dom[target[comp][first]] = comp[first]
    comp_l = np.lexsort((-a_pt, pj["llp"] < 0, target))
    first_l = np.r_[True, target[comp_l][1:] != target[comp_l][:-1]] if npj else np.zeros(0, bool)
    llp_of = np.full(npj, -1, np.int64)
    llp_of[target[comp_l][first_l]] = pj["llp"][comp_l][first_l]
    d = dom[sel]
    jfl = {key: v[d] for key, v in fl.items()}
    jfl["n_b_had"] = _group_sum(target, fl["n_b_had"], npj)[sel].astype(np.int64)
    jfl["n_c_had"] = _group_sum(target, fl["n_c_had"], npj)[sel].astype(np.int64)
    return d, jfl, llp_of[sel]


def _jet_records(rng, n: int, pj: dict, con: dict, acc: dict, cl: dict, d: np.ndarray,
                 jfl: dict, j_llp: np.ndarray) -> tuple[dict, dict]:
    """The ``jet`` and constituent records :func:`finish_events` takes; generator
    truth from :func:`gen_truth`, with the LLP quark as parton of LLP jets."""
    sel = cl["sel"]
    j_event = pj["event"][sel]
    pt, eta, phi = cl["pt"][sel], cl["eta"][sel], cl["phi"][sel]
    truth = gen_truth(rng, pt, eta, phi, jfl)
    is_llp_jet = j_llp >= 0
    truth["parton"] = np.where(is_llp_jet, jfl["true_flav"], truth["parton"])
    truth["phys"] = np.where(is_llp_jet, jfl["true_flav"], truth["phys"])
    jet = {
        "pt": pt, "eta": eta, "phi": phi, "n_jets": np.bincount(j_event, minlength=n).astype(np.int64),
        "jet_event": j_event, "true_flav": jfl["true_flav"], "hadron": jfl["hadron"],
        "n_b_had": jfl["n_b_had"], "n_c_had": jfl["n_c_had"], **truth,
    }
    cj = cl["cj"]
    con_out = {
        "jec": cl["jec"][sel], "raw_pt": cl["raw"][sel], "cj": cj, "nc": cj.size, "cpt": acc["cpt"],
        "c_eta_abs": acc["eta"], "c_phi_abs": acc["phi"], "pdg": acc["pdg"], "origin": acc["origin"],
        "vx": acc["vx"], "vy": acc["vy"], "vz": acc["vz"], "event": acc["event"],
    }
    for key in ("decayLength", "hadronPdgId", "hadronPt", "hadronEta", "hadronPhi", "hadronMass"):
        con_out[key] = con[key][d]
    return jet, con_out


def _truth_records(o: ModelOptions, n: int, med: dict, llp: dict, quarks: dict, pj: dict,
                   cl: dict, j_llp: np.ndarray) -> tuple[dict, np.ndarray]:
    """``Events.truth`` (``llp``, ``quark``, ``mediator``, ``genpart``) and each jet's
    ``genPartMother`` (its X's ``GenPart`` row, -1 for other jets)."""
    big_m, m, k = float(o.mediator_mass), float(o.llp_mass), int(o.llp_per_event)
    nl = llp["event"].size
    # the final jet holding each quark's constituents (its own or the one it merged into)
    is_q = pj["is_q"]
    q_jet = np.full(quarks["pt"].size, -1, np.int64)
    q_jet[pj["quark"][is_q]] = cl["new_index"][cl["target"][is_q]]
    l_local = np.tile(np.arange(k), n)
    mother = np.where(j_llp >= 0, 1 + l_local[np.maximum(j_llp, 0)], -1).astype(np.int64)
    med_pt, med_eta, med_phi = _pt_eta_phi(med["px"], med["py"], med["pz"])
    l_pt, l_eta, l_phi = _pt_eta_phi(llp["px"], llp["py"], llp["pz"])
    gp_counts = np.full(n, 1 + k, np.int64)
    gp_local = _local_index(gp_counts)
    is_med = gp_local == 0
    li_gp = np.where(is_med, 0, np.repeat(np.arange(n) * k, 1 + k) + gp_local - 1)

    def gp(med_vals, llp_vals):
        return np.where(is_med, np.repeat(med_vals, 1 + k), np.asarray(llp_vals)[li_gp])

    l_vx, l_vy = llp["vx"], llp["vy"]
    truth = {
        "llp": {
            "event": llp["event"], "pt": l_pt, "eta": l_eta, "phi": l_phi, "p": llp["p"],
            "mass": np.full(nl, m), "betagamma": llp["bg"], "ctau": np.full(nl, float(o.llp_ctau)),
            "decayLength": llp["flight"], "lxy": np.hypot(l_vx, l_vy), "vx": l_vx, "vy": l_vy,
            "vz": llp["vz"], "zone": llp["zone"], "pdgId": np.full(nl, LLP_PDGID, np.int32),
        },
        "quark": {
            "event": quarks["event"], "llp": quarks["llp"], "pdgId": quarks["pdgId"],
            "pt": quarks["pt"], "eta": quarks["eta"], "phi": quarks["phi"], "jet": q_jet,
        },
        "mediator": {
            "pt": med_pt, "eta": med_eta, "phi": med_phi, "y": med["y"], "mass": np.full(n, big_m),
        },
        "genpart": {
            "counts": gp_counts,
            "pt": gp(med_pt, l_pt),
            "eta": gp(med_eta, l_eta),
            "phi": gp(med_phi, l_phi),
            "mass": gp(np.full(n, big_m), np.full(nl, m)),
            "pdgId": gp(np.full(n, MEDIATOR_PDGID), np.full(nl, LLP_PDGID)).astype(np.int32),
            "status": np.full(gp_counts.sum(), 22, np.int32),
            "statusFlags": np.full(gp_counts.sum(), _STATUS_FLAGS_RESONANCE, np.int32),
            "genPartIdxMother": np.where(is_med, -1, 0).astype(np.int32),
        },
    }
    return truth, mother


def _merge(event, pt, eta, phi, ok, n_events):
    """Merge target of each proto-jet: itself, or the harder jet within ΔR < 0.4.

    Proto-jets (grouped by event) are visited by descending pT; one closer than
    ``_R_JET`` to a harder surviving one joins the nearest such jet.
    Proto-jets with ``ok`` False are left alone (they are dropped later).
    """
    npj = pt.size
    target = np.arange(npj)
    if npj == 0:
        return target
    order = np.lexsort((-pt, event))
    counts = np.bincount(event, minlength=n_events)
    local = _local_index(counts)
    width = int(counts.max())
    idx = np.full((n_events, width), -1, np.int64)
    idx[event[order], local] = order
    have = idx >= 0
    safe = np.maximum(idx, 0)
    e_, p_ = eta[safe], phi[safe]
    alive = have & ok[safe]
    for j in range(1, width):
        dr2 = (e_[:, :j] - e_[:, j : j + 1]) ** 2 + wrap_phi(p_[:, :j] - p_[:, j : j + 1]) ** 2
        dr2 = np.where(alive[:, :j], dr2, np.inf)
        near = np.argmin(dr2, axis=1)
        hit = alive[:, j] & (dr2[np.arange(n_events), near] < _R_JET**2)
        rows = np.nonzero(hit)[0]
        target[idx[rows, j]] = idx[rows, near[rows]]
        alive[rows, j] = False
    return target
