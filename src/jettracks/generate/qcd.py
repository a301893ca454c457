"""The QCD multijet process (``process="qcd"``, the background) of the generator.

Hard jets (hard scale, multiplicity, kinematics), then the shared steps:
flavour and constituents (:mod:`.jets`), underlying event, pile-up and detector
(:mod:`.detector`). The model is described in :mod:`.model` ("Events and jets").
Units: GeV, cm, radians.
"""

from __future__ import annotations

import math

import numpy as np

from .detector import finish_events
from .jets import constituents, gen_truth, jet_flavour, pileup_vertices
from .physics import Events, ModelOptions, _choice, _power_law, wrap_phi

__all__ = ["generate_qcd"]


def generate_qcd(n: int, rng: np.random.Generator, o: ModelOptions, file_index: int) -> Events:
    # ------------------------------------------------------------------ event level
    mu_true, n_pu, pv_z = pileup_vertices(rng, o, n)
    pthat = _power_law(rng, o.pt_hat_min, o.pt_hat_max, o.pt_spectrum_index, n)

    # ------------------------------------------------------------------ jets (padded)
    jets_max = int(o.jets_max)
    ns = np.arange(int(o.jets_min), jets_max + 1)
    n_jets = _choice(rng, ns, o.jet_mult_ratio ** (ns - o.jets_min), n).astype(np.int64)
    col = np.arange(jets_max)[None, :]
    valid = col < n_jets[:, None]

    pt = np.empty((n, jets_max))
    pt[:, 0] = pthat * np.clip(rng.normal(1.0, 0.06, n), 0.85, 1.2)
    if jets_max > 1:
        pt[:, 1] = pthat * rng.uniform(0.6, 1.0, n)
    if jets_max > 2:
        upper = np.repeat(pt[:, 1], jets_max - 2)
        pt[:, 2:] = _power_law(rng, o.jet_pt_min, upper, 3.0, upper.size).reshape(n, jets_max - 2)
    pt = np.maximum(pt, o.jet_pt_min * (1.0 + 0.05 * rng.random((n, jets_max))))

    eta = rng.uniform(-o.jet_eta_max, o.jet_eta_max, (n, jets_max))
    phi = rng.uniform(-math.pi, math.pi, (n, jets_max))
    if jets_max > 1:
        spread = 0.12 * np.sqrt(np.maximum(n_jets - 1, 1))
        phi[:, 1] = wrap_phi(phi[:, 0] + math.pi + rng.normal(0.0, 1.0, n) * spread)
    # keep jets apart (anti-kT jets do not overlap): resample the later jet
    for k in range(1, jets_max):
        for _ in range(30):
            deta = eta[:, :k] - eta[:, k : k + 1]
            dphi = wrap_phi(phi[:, :k] - phi[:, k : k + 1])
            close = valid[:, k] & ((deta**2 + dphi**2) < 0.6**2).any(axis=1)
            m = int(close.sum())
            if m == 0:
                break
            eta[close, k] = rng.uniform(-o.jet_eta_max, o.jet_eta_max, m)
            if k >= 2:
                phi[close, k] = rng.uniform(-math.pi, math.pi, m)
            else:
                phi[close, k] = wrap_phi(phi[close, k] + rng.normal(0.0, 0.3, m))

    order = np.argsort(np.where(valid, -pt, np.inf), axis=1, kind="stable")
    pt = np.take_along_axis(pt, order, axis=1)[valid]
    eta = np.take_along_axis(eta, order, axis=1)[valid]
    phi = np.take_along_axis(phi, order, axis=1)[valid]
    nj = pt.size
    jet_event = np.repeat(np.arange(n), n_jets)

    # ------------------------------------------------------------------ flavour, constituents
    fl = jet_flavour(rng, o, nj)
    truth = gen_truth(rng, pt, eta, phi, fl)
    con = constituents(rng, o, pt, eta, phi, fl["is_gluon"], fl["hadron"], fl["sign"])
    jet = {
        "pt": pt, "eta": eta, "phi": phi, "n_jets": n_jets, "jet_event": jet_event,
        "true_flav": fl["true_flav"], "hadron": fl["hadron"], "n_b_had": fl["n_b_had"],
        "n_c_had": fl["n_c_had"], **truth,
    }
    evt = {"mu_true": mu_true, "n_pu": n_pu, "pv_z": pv_z, "pthat": pthat}
    return finish_events(n, rng, o, file_index, "qcd", evt, jet, con)
