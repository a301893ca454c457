"""PFNano reader: NanoAOD ``Events`` with ``PFCands_*`` (one entry per event).

Facts (from the PFNano producer code): ``d0``/``d0Err``/``dz``/``dzErr`` are
``-1`` when a candidate has no track details (all neutrals, many low-pT charged
ones). A -1 is "no measurement", not -1 cm: here ``dxy`` and ``dz`` become NaN
where ``d0Err <= 0``, and ``dxy_err`` keeps the stored value, so downstream code
selects valid impact parameters with ``dxy_err > 0``. Impact parameters are cm.

Tracks are associated to jets by ΔR between ``Jet_eta/phi`` and
``PFCands_eta/phi`` (the 2016 open-data production has no constituent links).
Where ``JetPFCands_jetIdx``/``JetPFCands_pFCandsIdx`` exist, the batch also
carries them (``links``) so the processor can offer constituent association.
"""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from .base import EventBatch, Reader, counts, flat, jagged_records

__all__ = ["PFNanoReader"]


def _nan_where(values: np.ndarray, invalid: np.ndarray) -> np.ndarray:
    """``values`` with NaN where ``invalid`` (a copy: the input may be a read-only buffer)."""
    out = np.array(values, dtype=np.float32, copy=True)
    out[invalid] = np.float32(np.nan)
    return out


class PFNanoReader(Reader):
    name = "pfnano"
    treename = "Events"
    description = "CMS PFNano: NanoAOD Events with PFCands_* (PF candidates with d0/dz)"
    default_flavour = "hadron"

    JET = {"pt": "Jet_pt", "eta": "Jet_eta", "phi": "Jet_phi", "mass": "Jet_mass"}
    CAND = {
        "pt": "PFCands_pt",
        "eta": "PFCands_eta",
        "phi": "PFCands_phi",
        "charge": "PFCands_charge",
        "d0": "PFCands_d0",
        "d0Err": "PFCands_d0Err",
        "dz": "PFCands_dz",
    }
    FLAVOUR = {"hadron_flavour": "Jet_hadronFlavour", "parton_flavour": "Jet_partonFlavour"}
    LINKS = ("JetPFCands_jetIdx", "JetPFCands_pFCandsIdx")
    ml_only_branches = ("Jet_mass", "PFCands_dz")

    def required_branches(self) -> list[str]:
        return ["run", "luminosityBlock", "event", *self.JET.values(), *self.CAND.values()]

    def optional_branches(self) -> list[str]:
        out = list(self.FLAVOUR.values())
        if self.options.get("links", False):
            out += list(self.LINKS)
        return out

    def read(self, columns: Any) -> EventBatch:
        fields = self.fields_of(columns)
        jets, n_jet, flav = self.read_nano_jets(columns, self.JET, self.FLAVOUR)

        n_cand = counts(columns[self.CAND["pt"]])
        d0 = flat(columns[self.CAND["d0"]], np.float32)
        d0_err = flat(columns[self.CAND["d0Err"]], np.float32)
        invalid = ~(d0_err > 0)
        tracks = {
            "pt": flat(columns[self.CAND["pt"]]),
            "eta": flat(columns[self.CAND["eta"]]),
            "phi": flat(columns[self.CAND["phi"]]),
            "charge": flat(columns[self.CAND["charge"]], np.int32),
            "dxy": _nan_where(d0, invalid),
            "dxy_err": d0_err,
        }
        if self.CAND["dz"] in fields:  # not read when no ML column wants it
            tracks["dz"] = _nan_where(flat(columns[self.CAND["dz"]], np.float32), invalid)
        batch = EventBatch(
            run=flat(columns["run"], np.int64),
            lumi=flat(columns["luminosityBlock"], np.int64),
            event=flat(columns["event"], np.uint64),
            jets=jagged_records(jets, n_jet),
            tracks=jagged_records(tracks, n_cand),
            track_kind="pf_candidates",
            has_dxy=True,
            flavour_fields=tuple(flav),
            n_entries=len(n_jet),
        )
        if self.options.get("links", False) and all(b in fields for b in self.LINKS):
            batch.notices.append("constituent links JetPFCands_* present")
            batch.links = ak.zip(
                {
                    "jet": ak.materialize(columns[self.LINKS[0]]),
                    "cand": ak.materialize(columns[self.LINKS[1]]),
                }
            )
        return batch

