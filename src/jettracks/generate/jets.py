"""Jets of the generator's physics model: flavour, generator truth, constituents, pile-up vertices.

Shared by both processes (:mod:`.qcd`, :mod:`.llp`); the model is described in
:mod:`.model` ("Flavour", "Constituents", "Heavy flavour", "Secondaries").
Units: GeV, cm, radians.
"""

from __future__ import annotations

import numpy as np

from .physics import (
    _BOTTOM,
    _CHARM,
    _TWO_PI,
    CTAU_KS,
    CTAU_LAMBDA,
    M_B,
    M_KS,
    M_LAMBDA,
    ORIGIN_HF,
    ORIGIN_JET,
    ORIGIN_SECONDARY,
    ModelOptions,
    _choice,
    _group_sum,
    _local_index,
    wrap_phi,
)

__all__ = ["constituents", "gen_truth", "jet_flavour", "pileup_vertices"]


def pileup_vertices(rng: np.random.Generator, o: ModelOptions, n: int):
    """Per event: true pile-up mean, number of pile-up interactions, primary-vertex z."""
    mu_true = o.pileup_mu * rng.uniform(0.6, 1.4, n)
    n_pu = rng.poisson(mu_true)
    pv_z = rng.normal(0.0, 3.5, n)
    return mu_true, n_pu, pv_z


def jet_flavour(rng: np.random.Generator, o: ModelOptions, nj: int) -> dict[str, np.ndarray]:
    """Flavour of ``nj`` QCD jets (true parton, hadron flavour, gluon splitting)."""
    fl = _choice(rng, np.array([21, 1, 4, 5]), [o.frac_g, o.frac_uds, o.frac_c, o.frac_b], nj)
    is_gluon = fl == 21
    sign = np.where(rng.random(nj) < 0.6, 1, -1)
    light = _choice(rng, np.array([1, 2, 3]), [0.35, 0.45, 0.20], nj)
    true_flav = np.where(is_gluon, 21, np.where(fl == 1, light, fl) * sign).astype(np.int32)

    hadron = np.where(fl == 5, 5, np.where(fl == 4, 4, 0)).astype(np.int32)
    u = rng.random(nj)
    g_bb = is_gluon & (u < o.g_to_bb)
    g_cc = is_gluon & (u >= o.g_to_bb) & (u < o.g_to_bb + o.g_to_cc)
    hadron[g_bb] = 5
    hadron[g_cc] = 4
    n_b_had = np.where(hadron == 5, np.where(g_bb & (rng.random(nj) < 0.3), 2, 1), 0)
    n_c_had = np.where(hadron == 4, np.where(g_cc & (rng.random(nj) < 0.3), 2, 1), 0)
    return {
        "is_gluon": is_gluon, "sign": sign, "light": light, "true_flav": true_flav,
        "hadron": hadron, "g_bb": g_bb, "g_cc": g_cc, "n_b_had": n_b_had, "n_c_had": n_c_had,
    }


def gen_truth(rng: np.random.Generator, pt, eta, phi, fl: dict[str, np.ndarray]):
    """Generator jet (match, pT, η, φ) and parton / physics flavour of jets of flavour ``fl``."""
    nj = pt.size
    true_flav, hadron, sign, light = fl["true_flav"], fl["hadron"], fl["sign"], fl["light"]
    is_gluon, g_bb, g_cc = fl["is_gluon"], fl["g_bb"], fl["g_cc"]
    # generator jet
    p_unmatched = np.minimum(0.3, 0.12 * (30.0 / pt) ** 2)
    gen_match = rng.random(nj) >= p_unmatched
    res = np.sqrt(0.04**2 + 0.9**2 / pt)
    response = np.clip(rng.normal(0.0, 1.0, nj) * res + 1.0, 0.5, 1.5)
    gen_pt = pt / response
    ang = 0.01 * np.sqrt(50.0 / pt)
    gen_eta = eta + rng.normal(0.0, 1.0, nj) * ang
    gen_phi = wrap_phi(phi + rng.normal(0.0, 1.0, nj) * ang)

    parton = true_flav.copy()
    parton[g_bb] = 5 * sign[g_bb]
    parton[g_cc] = 4 * sign[g_cc]
    p0 = np.where(gen_match, np.minimum(0.2, 0.03 * np.sqrt(30.0 / pt)), 0.5)
    parton[(hadron == 0) & (rng.random(nj) < p0)] = 0

    phys = true_flav.copy()
    p_unm = np.where(gen_match, np.minimum(0.2, 0.01 + 0.04 * 30.0 / pt), 0.7)
    r = rng.random(nj)
    swap = (r >= p_unm) & (r < p_unm + 0.03) & (hadron == 0)
    phys[swap & is_gluon] = (light * sign)[swap & is_gluon]
    phys[swap & ~is_gluon] = 21
    phys[r < p_unm] = 0
    return {
        "gen_match": gen_match, "gen_pt": gen_pt, "gen_eta": gen_eta, "gen_phi": gen_phi,
        "parton": parton, "phys": phys,
    }


def constituents(rng: np.random.Generator, o: ModelOptions, pt, eta, phi, is_gluon, hadron, sign):
    """Constituents of jets (pT, η, φ) with heavy-flavour decays and K0S/Λ secondaries.

    Production vertices ``vx, vy, vz`` are relative to the point the jet comes
    from (the primary vertex for QCD). Returns per-constituent arrays (``cj`` the
    jet index) and per-jet ``jec``, ``raw_pt`` and the b/c hadron truth.
    """
    nj = pt.size
    jec = 1.0 + 0.9 / np.sqrt(pt)
    raw_pt = pt / jec
    mu = (4.0 + 7.0 * np.log(np.maximum(pt, 10.0) / 10.0)) * np.where(is_gluon, 1.45, 1.0)
    n_const = 2 + rng.poisson(np.maximum(mu - 2.0, 0.1))
    n_const = np.minimum(n_const, np.maximum(2, (raw_pt / 0.2).astype(np.int64)))
    cj = np.repeat(np.arange(nj), n_const)  # jet of each constituent
    nc = cj.size

    kind = rng.random(nc)
    charged = kind < 0.62
    photon = (kind >= 0.62) & (kind < 0.90)
    csign = np.where(rng.random(nc) < 0.5, 1, -1)
    sub = rng.random(nc)
    pdg = np.where(charged, 211 * csign, np.where(photon, 22, 130)).astype(np.int32)
    pdg = np.where(charged & (sub < 0.01), -11 * csign, pdg)
    pdg = np.where(charged & (sub >= 0.01) & (sub < 0.018), -13 * csign, pdg)

    alpha = np.where(is_gluon, 0.7, 0.45)[cj]
    g = rng.gamma(alpha) + 1e-12
    z = g / _group_sum(cj, g, nj)[cj]
    pmin = 0.1
    cpt = pmin + z * (raw_pt - pmin * n_const)[cj]

    width = np.maximum(0.075 * (50.0 / pt) ** 0.3 * np.where(is_gluon, 1.25, 1.0), 0.012)
    dr = width[cj] * (z * n_const[cj]) ** -0.4 * rng.gamma(2.0, 0.5, nc)
    out = dr > 0.4
    dr[out] = 0.4 * np.sqrt(rng.random(int(out.sum())))
    azi = rng.uniform(0.0, _TWO_PI, nc)
    deta = dr * np.cos(azi)
    dphi = dr * np.sin(azi)

    origin = np.full(nc, ORIGIN_JET, dtype=np.int8)

    # heavy-flavour decay tracks: the hardest charged constituents of b/c jets
    hf_jet = hadron > 0
    is_b = hadron == 5
    n_dec_b = 1 + rng.binomial(7, 0.55, nj)
    n_dec_c = 1 + rng.binomial(3, 0.45, nj)
    n_dec = np.where(is_b, n_dec_b, np.where(hf_jet, n_dec_c, 0))
    ch_idx = np.nonzero(charged)[0]
    srt = ch_idx[np.lexsort((-cpt[ch_idx], cj[ch_idx]))]
    rank = _local_index(np.bincount(cj[srt], minlength=nj))
    dec = np.zeros(nc, dtype=bool)
    dec[srt] = rank < n_dec[cj[srt]]
    origin[dec] = ORIGIN_HF

    # hadron kinematics (per jet; only used for hf jets)
    charm = _choice(rng, np.arange(len(_CHARM)), [v[2] for v in _CHARM.values()], nj)
    m_c = np.array([v[0] for v in _CHARM.values()])[charm]
    ctau_c = np.array([v[1] for v in _CHARM.values()])[charm]
    b_pdg = _choice(rng, np.array([b[0] for b in _BOTTOM]), [b[1] for b in _BOTTOM], nj)
    c_pdg = np.array([v[3] for v in _CHARM.values()])[charm]
    hadron_pdg = np.where(is_b, b_pdg, np.where(hf_jet, c_pdg, 0)) * sign
    x_h = np.where(is_b, rng.normal(0.7, 0.12, nj), rng.normal(0.55, 0.15, nj))
    x_h = np.clip(x_h, 0.15, 0.97)
    p_jet = pt * np.cosh(eta)
    m_h = np.where(is_b, M_B, m_c)
    ctau_h = np.where(is_b, o.ctau_b, ctau_c)
    flight = (x_h * p_jet / m_h) * ctau_h * rng.exponential(1.0, nj)
    f_deta = rng.normal(0.0, 0.02, nj)
    f_dphi = rng.normal(0.0, 0.02, nj)
    # cascade charm of b hadrons
    p_d = x_h * p_jet * rng.uniform(0.4, 0.8, nj)
    flight_d = np.where(is_b, (p_d / m_c) * ctau_c * rng.exponential(1.0, nj), 0.0)

    di = np.nonzero(dec)[0]
    dj = cj[di]
    from_d = is_b[dj] & (rng.random(di.size) < 0.5)
    p_trk = np.maximum(cpt[di], 0.1) * np.cosh(eta[dj] + f_deta[dj])
    ptrel = rng.rayleigh(0.2 * m_h[dj])
    psi = np.minimum(ptrel / p_trk, 1.0) * np.cosh(eta[dj] + f_deta[dj])
    beta = rng.uniform(0.0, _TWO_PI, di.size)
    t_deta = f_deta[dj] + psi * np.cos(beta)
    t_dphi = f_dphi[dj] + psi * np.sin(beta)
    t_dr = np.hypot(t_deta, t_dphi)
    scale = np.where(t_dr > 0.45, 0.45 / np.maximum(t_dr, 1e-12), 1.0)
    deta[di] = t_deta * scale
    dphi[di] = t_dphi * scale
    # one lepton in semileptonic decays: the first decay track of the jet
    first_dec = np.r_[True, dj[1:] != dj[:-1]] if di.size else np.zeros(0, bool)
    lep = rng.random(di.size)
    p_e = np.where(is_b[dj], 0.11, 0.08)
    lep_e = first_dec & (lep < p_e)
    lep_mu = first_dec & (lep >= p_e) & (lep < 2 * p_e)
    pdg[di[lep_e]] = -11 * csign[di[lep_e]]
    pdg[di[lep_mu]] = -13 * csign[di[lep_mu]]

    # recentre: the jet axis is the pT-weighted centroid of its constituents
    wsum = _group_sum(cj, cpt, nj)
    c_eta = _group_sum(cj, cpt * deta, nj) / wsum
    c_phi = _group_sum(cj, cpt * dphi, nj) / wsum
    deta -= c_eta[cj]
    dphi -= c_phi[cj]
    f_deta -= c_eta
    f_dphi -= c_phi
    c_eta_abs = eta[cj] + deta
    c_phi_abs = wrap_phi(phi[cj] + dphi)

    # production vertices (relative to the primary vertex)
    vx = np.zeros(nc)
    vy = np.zeros(nc)
    vz = np.zeros(nc)
    fe = eta + f_deta
    fp = phi + f_dphi
    lt = flight / np.cosh(fe)
    lt_d = flight_d / np.cosh(fe)
    add_d = from_d.astype(np.float64)
    vx[di] = (lt[dj] + add_d * lt_d[dj]) * np.cos(fp[dj])
    vy[di] = (lt[dj] + add_d * lt_d[dj]) * np.sin(fp[dj])
    vz[di] = (lt[dj] + add_d * lt_d[dj]) * np.sinh(fe[dj])

    # secondaries (K0S, Lambda) among the other charged constituents
    sec = charged & ~dec & (rng.random(nc) < o.secondary_fraction)
    si = np.nonzero(sec)[0]
    if si.size:
        origin[si] = ORIGIN_SECONDARY
        is_l = rng.random(si.size) < 0.3
        m_v = np.where(is_l, M_LAMBDA, M_KS)
        ctau_v = np.where(is_l, CTAU_LAMBDA, CTAU_KS)
        p_t = np.maximum(cpt[si], 0.1) * np.cosh(c_eta_abs[si])
        p_v = p_t * rng.uniform(1.2, 3.0, si.size)
        ch_eta = np.cosh(c_eta_abs[si])
        psi = np.minimum(rng.rayleigh(0.2 * m_v) / p_t, 0.5) * ch_eta
        beta = rng.uniform(0.0, _TWO_PI, si.size)
        v_eta = c_eta_abs[si] - psi * np.cos(beta)
        v_phi = c_phi_abs[si] - psi * np.sin(beta)
        lam = (p_v / m_v) * ctau_v / np.cosh(v_eta)  # mean transverse flight
        rmax = 25.0
        lt_v = -lam * np.log1p(-rng.random(si.size) * -np.expm1(-rmax / lam))
        vx[si] = lt_v * np.cos(v_phi)
        vy[si] = lt_v * np.sin(v_phi)
        vz[si] = lt_v * np.sinh(v_eta)

    return {
        "jec": jec, "raw_pt": raw_pt, "cj": cj, "nc": nc, "cpt": cpt,
        "c_eta_abs": c_eta_abs, "c_phi_abs": c_phi_abs, "pdg": pdg, "origin": origin,
        "vx": vx, "vy": vy, "vz": vz,
        "decayLength": np.where(hf_jet, flight, 0.0),
        "hadronPdgId": hadron_pdg.astype(np.int32),
        "hadronPt": np.where(hf_jet, x_h * p_jet / np.cosh(fe), 0.0),
        "hadronEta": np.where(hf_jet, fe, 0.0),
        "hadronPhi": np.where(hf_jet, wrap_phi(fp), 0.0),
        "hadronMass": np.where(hf_jet, m_h, 0.0),
    }
