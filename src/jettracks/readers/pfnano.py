"""PFNano reader: NanoAOD ``Events`` with ``PFCands_*`` (one entry per event).

Facts (from the PFNano producer code): ``d0``/``d0Err``/``dz``/``dzErr`` are
``-1`` when a candidate has no track details (all neutrals, many low-pT charged
ones). A -1 is "no measurement", not -1 cm: ``dxy`` and ``dz`` read as NaN where
``d0Err <= 0`` (through ``EventBatch.gather_tracks``: the batch lists them in
``unmasked``, so only the candidates associated to a jet are masked), and ``dxy_err``
keeps the stored value, so downstream code selects valid impact parameters with
``dxy_err > 0``. Impact parameters are cm.

Tracks are associated to jets by ΔR between ``Jet_eta/phi`` and
``PFCands_eta/phi`` (the 2016 open-data production has no constituent links).
Where ``JetPFCands_jetIdx``/``JetPFCands_pFCandsIdx`` exist, the batch also
carries them (``links``) so the processor can offer constituent association.

Track details used by the ML columns only (read only with ML output, each where the
file has it; an absent one is an absent field with a notice, never a fill):

- ``PFCands_dzErr`` -> ``dz_err`` (cm; NaN where ``d0Err <= 0``, i.e. no track details);
- ``PFCands_lostInnerHits``, ``PFCands_pvAssocQuality``, ``PFCands_trkQuality`` ->
  ``lost_inner_hits``, ``pv_assoc_quality``, ``trk_quality`` (int32 as stored:
  ``lostInnerHits = -1`` is "valid hit in the first pixel layer", a value, not a fill);
- ``PFCands_trkChi2`` -> ``trk_chi2`` (normalised χ²; its ``-1`` fill -> NaN);
- ``JetPFCands_btagSip3dVal`` / ``...Sig`` (per jet–candidate link, cm / dimensionless) ->
  ``links.sip3d`` / ``links.sip3d_sig``, with the links; ``0`` is the producer's fill for
  candidates without a track (neutral, no track details): NaN there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import EventBatch, Reader, counts, flat, jagged_records

__all__ = ["PFNanoReader"]


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
    #: Optional track details (ML columns only): field -> branch.
    DETAILS = {
        "dz_err": "PFCands_dzErr",
        "lost_inner_hits": "PFCands_lostInnerHits",
        "pv_assoc_quality": "PFCands_pvAssocQuality",
        "trk_quality": "PFCands_trkQuality",
        "trk_chi2": "PFCands_trkChi2",
    }
    #: Details that hold the -1 fill without track details (NaN on gathering, as dxy and dz).
    FILLED = ("dz_err", "trk_chi2")
    #: The other details are integers (int32 as stored; taken at any width, int32 on gathering).
    INT_DETAILS = tuple(sorted(DETAILS.keys() - set(FILLED)))
    any_int_width = (CAND["charge"], *map(DETAILS.get, INT_DETAILS))
    #: Per-link 3-D impact parameter (cm) and its significance (ML columns only).
    SIP3D = {"sip3d": "JetPFCands_btagSip3dVal", "sip3d_sig": "JetPFCands_btagSip3dSig"}
    GEN_WEIGHT = "genWeight"

    @property
    def ml_only_branches(self) -> tuple[str, ...]:  # type: ignore[override]
        out = ("Jet_mass", "PFCands_dz", *self.DETAILS.values(), *self.SIP3D.values())
        if not self.options.get("links", False):
            out += self.LINKS  # links read for the 3-D IP only
        return out

    def required_branches(self) -> list[str]:
        return ["run", "luminosityBlock", "event", *self.JET.values(), *self.CAND.values()]

    def optional_branches(self) -> list[str]:
        return [
            *self.FLAVOUR.values(), self.GEN_WEIGHT, *self.LINKS, *self.DETAILS.values(), *self.SIP3D.values()
        ]

    def read(self, columns: Any) -> EventBatch:
        fields = self.fields_of(columns)
        jets, n_jet, flav = self.read_nano_jets(columns, self.JET, self.FLAVOUR)

        n_cand = counts(columns[self.CAND["pt"]])
        # dxy, dz, dz_err, trk_chi2 keep the -1 fill here: ``unmasked`` below (NaN on gathering).
        tracks = {
            "pt": flat(columns[self.CAND["pt"]]),
            "eta": flat(columns[self.CAND["eta"]]),
            "phi": flat(columns[self.CAND["phi"]]),
            "charge": flat(columns[self.CAND["charge"]]),  # any integer width: track_types
            "dxy": flat(columns[self.CAND["d0"]], np.float32),
            "dxy_err": flat(columns[self.CAND["d0Err"]], np.float32),
        }
        notices = []
        if self.CAND["dz"] in fields:  # not read when no ML column wants it
            tracks["dz"] = flat(columns[self.CAND["dz"]], np.float32)
            # The ML details: read with dz (ML output); each only where the file has it.
            for key, branch in self.DETAILS.items():
                if branch not in fields:
                    notices.append(f"format pfnano: no {branch}: ML column track_{key} absent")
                else:  # int32 as stored, or narrower from the column cache: track_types
                    tracks[key] = flat(columns[branch], np.float32) if key in self.FILLED else flat(columns[branch])
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
            notices=notices,
            unmasked=tuple(f for f in ("dxy", "dz", *self.FILLED) if f in tracks),
            track_types={f: np.dtype(np.int32) for f in ("charge", *self.INT_DETAILS) if f in tracks},
        )
        if self.GEN_WEIGHT in fields:
            batch.gen_weight = flat(columns[self.GEN_WEIGHT], np.float64)
        has_links = all(b in fields for b in self.LINKS)
        if self.options.get("links", False) and has_links:
            batch.notices.append("constituent links JetPFCands_* present")
        sip = {k: b for k, b in self.SIP3D.items() if b in fields}
        if has_links and (self.options.get("links", False) or sip):
            # Flat buffers + one count per event (awkward's ``==`` and ``where`` on the jagged
            # arrays cost ~15 ms a 1,000-event chunk at ~1,900 candidates an event).
            n_link = counts(columns[self.LINKS[0]])
            for branch in (self.LINKS[1], *sip.values()):
                if not np.array_equal(counts(columns[branch]), n_link):
                    raise ValueError(f"format pfnano: {branch} and {self.LINKS[0]} differ in length in some event")
            links = {"jet": flat(columns[self.LINKS[0]]), "cand": flat(columns[self.LINKS[1]])}
            for key, branch in sip.items():
                values = flat(columns[branch])
                # 0 exactly: the producer's fill for a candidate without a track.
                links[key] = np.where(values == 0, values.dtype.type(np.nan), values)
            batch.links = jagged_records(links, n_link)
        if self.CAND["dz"] in fields and len(sip) < len(self.SIP3D):
            batch.notices.append(
                "format pfnano: no JetPFCands_btagSip3dVal/Sig (with links): ML columns track_sip3d, "
                "track_sip3d_sig absent"
            )
        return batch

