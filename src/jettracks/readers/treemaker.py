"""TreeMaker reader: CMS TreeMaker ntuples, tree ``PreSelection`` (one entry per event).

Facts (from TreeMaker's producer code, checked on a real TreeMaker file):

- Tree ``PreSelection``, or ``TreeMaker2/PreSelection`` when the ntuple keeps the
  analyzer's directory; :meth:`TreeMakerReader.find_tree` finds either.
- Event ids: ``RunNum`` (uint32), ``LumiBlockNum`` (uint32), ``EvtNum`` (uint64).
- ``Jets`` is a ``vector<LorentzVector<PtEtaPhiE4D<double>>>``, split into
  ``Jets/Jets.fCoordinates.fPt``, ``.fEta``, ``.fPhi``, ``.fE``. The mass is
  ``sqrt(E² − p²)`` with ``p = pt·cosh(η)`` (clipped at 0 against rounding).
  Jets are stored down to pT ~ 1 GeV and |η| ~ 5: the processor's selection cuts.
- Flavour: ``Jets_hadronFlavor`` (0/4/5) and ``Jets_partonFlavor`` (signed pdgId),
  American spelling, simulation only.
- ``Tracks`` is a ``vector<DisplacementVector3D<Cartesian3D<double>>>``: the
  **momentum** (GeV) split into ``Tracks/Tracks.fCoordinates.fX/fY/fZ``;
  ``pt = hypot(px, py)``, ``η = asinh(pz / pt)``, ``φ = atan2(py, px)``.
- Impact parameters w.r.t. the first PV, cm: ``Tracks_dxyPV0``,
  ``Tracks_dxyErrorPV0``, ``Tracks_dzPV0``; ``Tracks_charge`` (±1). In the real
  file every error is > 0 (no fill values) and tracks have pT >= 1 GeV; a
  non-positive error would still mark "no measurement" (``dxy`` → NaN).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import EventBatch, Reader, counts, flat, jagged_records, local_index

__all__ = ["TreeMakerReader"]


class TreeMakerReader(Reader):
    name = "treemaker"
    treename = "PreSelection"
    description = "CMS TreeMaker ntuple: PreSelection tree, Jets LorentzVectors, Tracks 3-vectors with dxyPV0"
    default_flavour = "hadron"

    #: Tree paths where TreeMaker ntuples keep the tree, in the order tried.
    TREES: ClassVar[tuple[str, ...]] = ("PreSelection", "TreeMaker2/PreSelection")

    EVENT: ClassVar[dict[str, str]] = {"run": "RunNum", "lumi": "LumiBlockNum", "event": "EvtNum"}
    JET: ClassVar[dict[str, str]] = {
        "pt": "Jets/Jets.fCoordinates.fPt",
        "eta": "Jets/Jets.fCoordinates.fEta",
        "phi": "Jets/Jets.fCoordinates.fPhi",
        "energy": "Jets/Jets.fCoordinates.fE",
    }
    FLAVOUR: ClassVar[dict[str, str]] = {
        "hadron_flavour": "Jets_hadronFlavor",
        "parton_flavour": "Jets_partonFlavor",
    }
    TRACK: ClassVar[dict[str, str]] = {
        "px": "Tracks/Tracks.fCoordinates.fX",
        "py": "Tracks/Tracks.fCoordinates.fY",
        "pz": "Tracks/Tracks.fCoordinates.fZ",
        "charge": "Tracks_charge",
        "dxy": "Tracks_dxyPV0",
        "dxy_err": "Tracks_dxyErrorPV0",
        "dz": "Tracks_dzPV0",
    }

    #: dz uncertainty (cm), for the ML columns track_dz_err / track_dz_sig only.
    DZ_ERR: ClassVar[str] = "Tracks_dzErrorPV0"
    ml_only_branches: ClassVar[tuple[str, ...]] = ("Tracks_dzErrorPV0",)

    def required_branches(self) -> list[str]:
        return [*self.EVENT.values(), *self.JET.values(), *self.TRACK.values()]

    def optional_branches(self) -> list[str]:
        return [*self.FLAVOUR.values(), self.DZ_ERR]

    @classmethod
    def find_tree(cls, trees: dict[str, set[str]]) -> str | None:
        """The first of :attr:`TREES` present with every required branch, or None."""
        probe = cls()
        for path in cls.TREES:
            branches = trees.get(path)
            if branches is not None and not probe.missing_branches(branches):
                return path
        return None

    def read(self, columns: Any) -> EventBatch:
        fields = self.fields_of(columns)
        n_jet = counts(columns[self.JET["pt"]])
        pt = flat(columns[self.JET["pt"]], np.float64)
        eta = flat(columns[self.JET["eta"]], np.float64)
        energy = flat(columns[self.JET["energy"]], np.float64)
        p = pt * np.cosh(eta)
        mass = np.sqrt(np.clip((energy - p) * (energy + p), 0.0, None))
        jets: dict[str, np.ndarray] = {
            "pt": pt,
            "eta": eta,
            "phi": flat(columns[self.JET["phi"]], np.float64),
            "mass": mass,
            "index": local_index(n_jet),
        }
        flav = []
        for key, branch in self.FLAVOUR.items():
            if branch in fields:
                jets[key] = flat(columns[branch], np.int32)
                flav.append(key)

        n_trk = counts(columns[self.TRACK["px"]])
        px = flat(columns[self.TRACK["px"]], np.float64)
        py = flat(columns[self.TRACK["py"]], np.float64)
        pz = flat(columns[self.TRACK["pz"]], np.float64)
        trk_pt = np.hypot(px, py)
        with np.errstate(divide="ignore", invalid="ignore"):
            trk_eta = np.arcsinh(np.where(trk_pt > 0, pz / trk_pt, np.nan))
        dxy = flat(columns[self.TRACK["dxy"]], np.float64)
        dxy_err = flat(columns[self.TRACK["dxy_err"]], np.float64)
        dz = flat(columns[self.TRACK["dz"]], np.float64)
        valid = dxy_err > 0
        tracks = {
            "pt": trk_pt,
            "eta": trk_eta,
            "phi": np.arctan2(py, px),
            "charge": flat(columns[self.TRACK["charge"]], np.int32),
            "dxy": np.where(valid, dxy, np.nan),
            "dxy_err": dxy_err,
            "dz": np.where(valid, dz, np.nan),
        }
        # Read only for ML output; a file without it is named by the run's plan-time note
        # (optional branch missing): no column, never a fill.
        if self.DZ_ERR in fields:
            dz_err = flat(columns[self.DZ_ERR], np.float64)
            tracks["dz_err"] = np.where(valid & (dz_err > 0), dz_err, np.nan)
        return EventBatch(
            run=flat(columns[self.EVENT["run"]], np.int64),
            lumi=flat(columns[self.EVENT["lumi"]], np.int64),
            event=flat(columns[self.EVENT["event"]], np.uint64),
            jets=jagged_records(jets, n_jet),
            tracks=jagged_records(tracks, n_trk),
            track_kind="tracks",
            has_dxy=True,
            flavour_fields=tuple(flav),
            n_entries=len(n_jet),
        )
