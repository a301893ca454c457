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

The candidates are not turned into awkward records: the batch carries their flat
buffers (:class:`StoredTracks`, ``EventBatch.stored_tracks``), and
:meth:`StoredTracks.select` makes the charged candidates in the cone of the selected
jets in one compiled pass (two loops over the flat arrays: count, then fill), computing
η, φ and charge only for those (~1 in 10 candidates). ``jetPhi``, ``jetMass``,
``PF_dEta`` and ``PF_dPhi`` serve the ML columns only (:attr:`JetNtupleReader.ml_only_branches`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from .base import EventBatch, Reader, flat, jagged_buffers, jagged_records

__all__ = ["JetNtupleReader", "StoredTracks", "charge_from_pdgid", "select_stored_tracks"]


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


_PI = math.pi
_TWO_PI = 2.0 * math.pi


@numba.njit(cache=True, nogil=True, inline="always")
def _charge(pdgid) -> int:  # pragma: no cover - compiled
    p = np.int64(pdgid)
    a = -p if p < 0 else p
    s = 1 if p > 0 else (-1 if p < 0 else 0)
    if a == 211:
        return s
    if a == 11 or a == 13:
        return -s
    return 0


@numba.njit(cache=True, nogil=True)
def _select(offsets, pt, d_eta, d_phi, dr, pdgid, jet_eta, jet_phi, jet_sel, pt_min, cone,
            angles):  # pragma: no cover - compiled
    n_jet = offsets.size - 1
    counts = np.zeros(n_jet, dtype=np.int64)
    n_charged = 0
    for j in range(n_jet):
        if not jet_sel[j]:
            continue
        c = 0
        for i in range(offsets[j], offsets[j + 1]):  # branch-free: the cuts are random per candidate
            a = abs(np.int64(pdgid[i]))
            passed = ((a == 211) | (a == 11) | (a == 13)) & (pt[i] >= pt_min)
            n_charged += passed
            c += passed & (dr[i] < cone)
        counts[j] = c
    total = counts.sum()
    o_pt = np.empty(total, dtype=np.float32)
    o_dr = np.empty(total, dtype=np.float32)
    o_charge = np.empty(total, dtype=np.int32)
    n_ang = total if angles else 0
    o_eta = np.empty(n_ang, dtype=np.float32)
    o_phi = np.empty(n_ang, dtype=np.float32)
    k = 0
    for j in range(n_jet):
        if counts[j] == 0:
            continue
        je = np.float64(jet_eta[j]) if angles else 0.0
        jp = np.float64(jet_phi[j]) if angles else 0.0
        for i in range(offsets[j], offsets[j + 1]):
            q = _charge(pdgid[i])
            if q != 0 and pt[i] >= pt_min and dr[i] < cone:
                o_pt[k] = pt[i]
                o_dr[k] = dr[i]
                o_charge[k] = q
                if angles:
                    o_eta[k] = np.float32(je + np.float64(d_eta[i]))
                    o_phi[k] = np.float32((jp + np.float64(d_phi[i]) + _PI) % _TWO_PI - _PI)
                k += 1
    return n_charged, counts, o_pt, o_eta, o_phi, o_charge, o_dr


def select_stored_tracks(offsets, pt, d_eta, d_phi, dr, pdgid, jet_eta, jet_phi, jet_sel, *,
                         track_pt_min: float, cone_dr: float):
    """Charged candidates (|pdgId| 11, 13, 211) with ``pt >= track_pt_min`` in the cone
    ``dr < cone_dr`` of the selected jets, from flat per-jet buffers (jet ``j`` owns
    ``[offsets[j], offsets[j+1])``).

    Returns ``(n_charged, counts, fields)``: charged candidates with ``pt >= track_pt_min``
    in the selected jets (before the cone), tracks in the cone per jet (0 for jets not
    selected), and the flat fields of those tracks in jet order: ``pt``, ``dr`` (float32,
    as stored), ``charge`` (int32, :func:`charge_from_pdgid`) and, when ``d_eta`` and
    ``d_phi`` are given, ``eta = η_jet + PF_dEta`` and ``φ = φ_jet + PF_dPhi`` wrapped
    into [−π, π) (computed in float64, stored as float32). Cuts compare in float32, as
    numpy does a float32 column against a Python float.
    """
    angles = d_eta is not None and d_phi is not None
    f32 = np.zeros(0, dtype=np.float32)
    n_charged, counts, o_pt, o_eta, o_phi, o_charge, o_dr = _select(
        np.ascontiguousarray(offsets, dtype=np.int64),
        np.ascontiguousarray(pt, dtype=np.float32),
        np.ascontiguousarray(d_eta, dtype=np.float32) if angles else f32,
        np.ascontiguousarray(d_phi, dtype=np.float32) if angles else f32,
        np.ascontiguousarray(dr, dtype=np.float32),
        np.ascontiguousarray(pdgid, dtype=np.int32),
        np.ascontiguousarray(jet_eta, dtype=np.float64) if angles else np.zeros(0),
        np.ascontiguousarray(jet_phi, dtype=np.float64) if angles else np.zeros(0),
        np.ascontiguousarray(jet_sel, dtype=np.bool_),
        np.float32(track_pt_min),
        np.float32(cone_dr),
        angles,
    )
    fields = {"pt": o_pt}
    if angles:
        fields["eta"], fields["phi"] = o_eta, o_phi
    fields["charge"] = o_charge
    fields["dr"] = o_dr
    return int(n_charged), counts, fields


@dataclass
class StoredTracks:
    """A chunk's PF candidates as flat buffers: jet ``j`` (entry ``j``) owns
    ``[offsets[j], offsets[j+1])`` of ``pt``, ``d_eta``, ``d_phi``, ``dr`` and ``pdgid``
    (as stored; ``d_eta``/``d_phi`` None when not read); ``jet_eta``/``jet_phi`` per jet
    (float64; ``jet_phi`` None when not read)."""

    offsets: np.ndarray
    pt: np.ndarray
    dr: np.ndarray
    pdgid: np.ndarray
    jet_eta: np.ndarray
    jet_phi: np.ndarray | None = None
    d_eta: np.ndarray | None = None
    d_phi: np.ndarray | None = None

    def select(self, jet_sel: np.ndarray, *, track_pt_min: float, cone_dr: float):
        """:func:`select_stored_tracks` on these buffers."""
        angles = self.jet_phi is not None and self.d_eta is not None and self.d_phi is not None
        return select_stored_tracks(
            self.offsets, self.pt, self.d_eta if angles else None, self.d_phi if angles else None,
            self.dr, self.pdgid, self.jet_eta, self.jet_phi, jet_sel,
            track_pt_min=track_pt_min, cone_dr=cone_dr,
        )


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
    #: The track η, φ and the jet's φ, mass feed only the ML columns: the histograms and
    #: the cut flow use jet pT, η and the stored ΔR, pT and pdgId.
    ml_only_branches = ("jetPhi", "jetMass", "PF_dEta", "PF_dPhi")

    def required_branches(self) -> list[str]:
        return ["run", "lumi", "event", *self.JET.values(), "jetPtOrder", *self.PF]

    def optional_branches(self) -> list[str]:
        return list(self.FLAVOUR.values())

    def read(self, columns: Any) -> EventBatch:
        fields = self.fields_of(columns)
        n = len(columns["jetPt"])
        ones = np.ones(n, dtype=np.int64)
        jets: dict[str, np.ndarray] = {k: flat(columns[b]) for k, b in self.JET.items() if b in fields}
        jets["index"] = flat(columns["jetPtOrder"], np.int64)
        flav = []
        for key, branch in self.FLAVOUR.items():
            if branch in fields:
                jets[key] = flat(columns[branch], np.int32)
                flav.append(key)

        offsets, pt = jagged_buffers(columns["PF_pT"])
        raw = {b: flat(columns[b]) for b in ("PF_dR", "PF_id", "PF_dEta", "PF_dPhi") if b in fields}
        for b, values in raw.items():
            if len(values) != len(pt):
                raise ValueError(f"{b} holds {len(values)} candidates, PF_pT {len(pt)}: the PF_* branches disagree")
        stored = StoredTracks(
            offsets=offsets,
            pt=pt,
            dr=raw["PF_dR"],
            pdgid=raw["PF_id"],
            jet_eta=jets["eta"].astype(np.float64),
            jet_phi=jets["phi"].astype(np.float64) if "phi" in jets else None,
            d_eta=raw.get("PF_dEta"),
            d_phi=raw.get("PF_dPhi"),
        )
        return EventBatch(
            run=flat(columns["run"], np.int64),
            lumi=flat(columns["lumi"], np.int64),
            event=flat(columns["event"], np.uint64),
            jets=jagged_records(jets, ones),
            stored_tracks=stored,
            track_kind="pf_candidates",
            has_dxy=False,
            flavour_fields=tuple(flav),
            n_entries=n,
        )
