"""JetNtuple reader: CMS open data record 12100, ``AK4jets/jetTree``, one entry per jet.

Facts (from the record's producer code): jets of one event are consecutive
entries sharing ``run``/``lumi``/``event``; ``jetPtOrder`` is the jet's 0-based
rank in its event. ``PF_*`` hold every packed PF candidate in a |Δη|, |Δφ| < 1
box around the jet, with ``PF_dEta = η_pf − η_jet``, signed ``PF_dPhi`` and
``PF_dR``. Tracks are the charged candidates (|``PF_id``| in 11, 13, 211), so
the association to the jet is the cut ``PF_dR < R`` on the stored values.

This format stores **no impact parameters**: ``dxy``/``dxy_err``/``dz`` are NaN
and the dxy histograms are not filled. Flavour defaults to the physics
definition (``physFlav``), as the record recommends.

The batch has one "event" per entry (per jet); ``run``/``lumi``/``event`` are
per jet so that consecutive jets of one event can be grouped downstream.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from .base import EventBatch, Reader, flat, jagged_records

__all__ = ["JetNtupleReader", "charge_from_pdgid"]

_CHARGED_LEPTONS = (11, 13)


def charge_from_pdgid(pdgid: np.ndarray) -> np.ndarray:
    """Electric charge (units of e) of reconstructed PF candidates from their pdgId.

    Leptons: pdgId +11/+13 are e⁻/μ⁻ (charge −1); hadrons: +211 is π⁺.
    Everything else (22, 130, 1, 2) is neutral.
    """
    pdgid = np.asarray(pdgid, dtype=np.int64)
    a = np.abs(pdgid)
    sign = np.sign(pdgid).astype(np.int32)
    out = np.zeros(pdgid.shape, dtype=np.int32)
    lepton = np.isin(a, _CHARGED_LEPTONS)
    out[lepton] = -sign[lepton]
    out[a == 211] = sign[a == 211]
    return out


class JetNtupleReader(Reader):
    name = "jetntuple"
    treename = "AK4jets/jetTree"
    description = "CMS open data record 12100 JetNtuple: one jet per entry, PF_* candidates, no dxy"
    default_flavour = "physics"
    per_jet_entries = True

    JET = {"pt": "jetPt", "eta": "jetEta", "phi": "jetPhi", "mass": "jetMass"}
    PF = ("PF_pT", "PF_dEta", "PF_dPhi", "PF_dR", "PF_id")
    FLAVOUR = {
        "hadron_flavour": "hadronFlav",
        "parton_flavour": "partonFlav",
        "physics_flavour": "physFlav",
    }

    def required_branches(self) -> list[str]:
        return ["run", "lumi", "event", *self.JET.values(), "jetPtOrder", *self.PF]

    def optional_branches(self) -> list[str]:
        return list(self.FLAVOUR.values())

    def read(self, columns: Any) -> EventBatch:
        fields = self.fields_of(columns)
        n = len(columns["jetPt"])
        ones = np.ones(n, dtype=np.int64)
        jet_eta = flat(columns["jetEta"], np.float64)
        jet_phi = flat(columns["jetPhi"], np.float64)
        jets: dict[str, np.ndarray] = {k: flat(columns[b]) for k, b in self.JET.items()}
        jets["index"] = flat(columns["jetPtOrder"], np.int64)
        flav = []
        for key, branch in self.FLAVOUR.items():
            if branch in fields:
                jets[key] = flat(columns[branch], np.int32)
                flav.append(key)

        n_pf = ak.to_numpy(ak.num(ak.materialize(columns["PF_pT"]), axis=1)).astype(np.int64)
        jet_of_pf = np.repeat(np.arange(n), n_pf)
        d_eta = flat(columns["PF_dEta"], np.float64)
        d_phi = flat(columns["PF_dPhi"], np.float64)
        phi = (jet_phi[jet_of_pf] + d_phi + np.pi) % (2 * np.pi) - np.pi
        nan = np.full(len(d_eta), np.nan, dtype=np.float32)
        tracks = {
            "pt": flat(columns["PF_pT"]),
            "eta": (jet_eta[jet_of_pf] + d_eta).astype(np.float32),
            "phi": phi.astype(np.float32),
            "charge": charge_from_pdgid(flat(columns["PF_id"])),
            "dxy": nan,
            "dxy_err": nan,
            "dz": nan,
            "dr": flat(columns["PF_dR"]),
        }
        per_jet = jagged_records(tracks, n_pf)  # [jet][pf]
        return EventBatch(
            run=flat(columns["run"], np.int64),
            lumi=flat(columns["lumi"], np.int64),
            event=flat(columns["event"], np.uint64),
            jets=jagged_records(jets, ones),
            jet_tracks=ak.unflatten(per_jet, ones),
            track_kind="pf_candidates",
            has_dxy=False,
            flavour_fields=tuple(flav),
            n_entries=n,
        )
