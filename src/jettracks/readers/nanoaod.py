"""Standard NanoAOD reader: ``Events`` with ``Jet_*``; tracks only from ``IsoTrack_*``.

Facts (from the NanoAOD format, checked on a real NanoAOD v15 ttbar file):

- One entry per event; jets ``Jet_pt/eta/phi/mass`` (GeV, rad), flavour
  ``Jet_hadronFlavour`` (0/4/5) and ``Jet_partonFlavour`` (signed pdgId) in
  simulation only.
- Standard NanoAOD stores **no tracks inside jets**. Its only track collection is
  ``IsoTrack_*``: *isolated* charged tracks (``IsoTrack_pt`` above ~5-10 GeV),
  with ``IsoTrack_dxy`` / ``IsoTrack_dz`` in cm ("dxy (with sign) wrt first PV").
  The batch says so: ``track_kind = "isolated_tracks"`` and a notice. A jet's
  "tracks" here are the isolated tracks that happen to fall in its cone: a tiny,
  biased subset (isolated tracks are by construction *not* in jets' cores).
- **There is no dxy uncertainty** in NanoAOD's IsoTrack (no ``IsoTrack_dxyErr``;
  checked on NanoAOD v9-style PFNano and v15). Convention of this reader:
  ``dxy_err = +inf`` for every IsoTrack. The dxy *value* is a valid measurement
  (so ``dxy_err > 0`` holds and the dxy / |dxy| histograms are filled), but its
  significance ``dxy / dxy_err`` is 0 and meaningless; a notice says so.
- ``IsoTrack_charge`` exists only in recent NanoAOD (v12+). Without it the charge
  comes from the sign of ``IsoTrack_pdgId`` (±11, ±13, ±211; the same rule as
  :func:`jettracks.readers.jetntuple.charge_from_pdgid`). IsoTracks are charged by
  construction; one whose sign cannot be told (pdgId 0) gets charge ``+1`` so that
  the ``charge != 0`` track selection keeps it (only that selection uses charge).
- A NanoAOD without ``IsoTrack_*`` still gives jet-level outputs: ``tracks`` is
  None, ``track_kind = "none"``, ``has_dxy = False`` and a one-line notice.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import EventBatch, Reader, counts, flat, jagged_records
from .jetntuple import charge_from_pdgid

__all__ = ["NanoAODReader"]


class NanoAODReader(Reader):
    name = "nanoaod"
    treename = "Events"
    description = "CMS NanoAOD: Events with Jet_*; tracks only IsoTrack_* (isolated tracks, no dxy error)"
    default_flavour = "hadron"

    EVENT: ClassVar[dict[str, str]] = {"run": "run", "lumi": "luminosityBlock", "event": "event"}
    JET: ClassVar[dict[str, str]] = {"pt": "Jet_pt", "eta": "Jet_eta", "phi": "Jet_phi", "mass": "Jet_mass"}
    FLAVOUR: ClassVar[dict[str, str]] = {
        "hadron_flavour": "Jet_hadronFlavour",
        "parton_flavour": "Jet_partonFlavour",
    }
    #: IsoTrack branches that must all be present for tracks to be read.
    ISOTRACK: ClassVar[dict[str, str]] = {
        "pt": "IsoTrack_pt",
        "eta": "IsoTrack_eta",
        "phi": "IsoTrack_phi",
        "dxy": "IsoTrack_dxy",
    }
    #: IsoTrack branches used when present.
    ISOTRACK_EXTRA: ClassVar[dict[str, str]] = {
        "dz": "IsoTrack_dz",
        "charge": "IsoTrack_charge",
        "pdgId": "IsoTrack_pdgId",
    }

    def required_branches(self) -> list[str]:
        return [*self.EVENT.values(), *self.JET.values()]

    def optional_branches(self) -> list[str]:
        return [*self.FLAVOUR.values(), *self.ISOTRACK.values(), *self.ISOTRACK_EXTRA.values(), "genWeight"]

    def read(self, columns: Any) -> EventBatch:
        fields = self.fields_of(columns)
        jets, n_jet, flav = self.read_nano_jets(columns, self.JET, self.FLAVOUR)

        batch = EventBatch(
            run=flat(columns[self.EVENT["run"]], np.int64),
            lumi=flat(columns[self.EVENT["lumi"]], np.int64),
            event=flat(columns[self.EVENT["event"]], np.uint64),
            jets=jagged_records(jets, n_jet),
            flavour_fields=tuple(flav),
            n_entries=len(n_jet),
        )
        if "genWeight" in fields:  # simulation's per-event generator weight (normalisation)
            batch.gen_weight = flat(columns["genWeight"], np.float64)
        if not all(b in fields for b in self.ISOTRACK.values()):
            batch.tracks = None
            batch.track_kind = "none"
            batch.has_dxy = False
            batch.notices.append(
                "format nanoaod: no track collection (IsoTrack_*) in the file: jet-level outputs only"
            )
            return batch

        n_trk = counts(columns[self.ISOTRACK["pt"]])
        dxy = flat(columns[self.ISOTRACK["dxy"]], np.float32)
        if self.ISOTRACK_EXTRA["dz"] in fields:
            dz = flat(columns[self.ISOTRACK_EXTRA["dz"]], np.float32)
        else:
            dz = np.full(len(dxy), np.nan, dtype=np.float32)
        if self.ISOTRACK_EXTRA["charge"] in fields:
            charge = flat(columns[self.ISOTRACK_EXTRA["charge"]], np.int32)
        elif self.ISOTRACK_EXTRA["pdgId"] in fields:
            charge = charge_from_pdgid(flat(columns[self.ISOTRACK_EXTRA["pdgId"]]))
            charge[charge == 0] = 1  # charged by construction, sign unknown
        else:
            charge = np.ones(len(dxy), dtype=np.int32)  # charged by construction, sign unknown
        tracks = {
            "pt": flat(columns[self.ISOTRACK["pt"]]),
            "eta": flat(columns[self.ISOTRACK["eta"]]),
            "phi": flat(columns[self.ISOTRACK["phi"]]),
            "charge": charge,
            "dxy": np.where(np.isfinite(dxy), dxy, np.float32(np.nan)),
            # No IsoTrack dxy uncertainty exists: +inf = "valid value, unknown error".
            "dxy_err": np.full(len(dxy), np.inf, dtype=np.float32),
            "dz": dz,
        }
        batch.tracks = jagged_records(tracks, n_trk)
        batch.track_kind = "isolated_tracks"
        batch.has_dxy = True
        batch.notices.append(
            "format nanoaod: tracks are IsoTrack_* isolated tracks (pT > ~5-10 GeV), "
            "not the tracks inside jets"
        )
        batch.notices.append(
            "format nanoaod: IsoTrack has no dxy uncertainty (dxy_err = +inf): "
            "dxy significance is not meaningful"
        )
        return batch
