"""Delphes reader: Delphes 3 output, tree ``Delphes`` (one entry per event).

Facts (Delphes 3 source, ``classes/DelphesClasses.h`` and ``modules/*``; checked on the
real ``delphes.root`` of coffea's test samples):

- Collections are ``TClonesArray`` branches split by ROOT: ``Jet`` with sub-branches
  ``Jet/Jet.PT``, ``Jet/Jet.Eta``, ... and a counter ``Jet_size``; likewise ``Track``
  and ``Event`` (one ``Event`` object per entry). uproot lists them as ``Jet/Jet.PT``;
  coffea's NanoEvents under ``BaseSchema`` names the fields the same. Files written
  with flat branches (``Jet.PT`` + ``Jet_size``, as uproot writes them: the
  generator's Delphes layout) and RNTuples with a ``Jet`` collection of records
  (members ``PT``, ...; :mod:`jettracks.io.rntuple`) are read as well: each branch is
  looked up as ``Jet/Jet.PT``, then ``Jet.PT``.
- Jets: ``Jet.PT`` (GeV), ``Jet.Eta``, ``Jet.Phi`` (rad), ``Jet.Mass`` (GeV).
- Tracks: ``Track.PT``, ``Track.Eta``, ``Track.Phi``, ``Track.Charge`` (±1), ``Track.D0``,
  ``Track.ErrorD0``, ``Track.DZ`` (``Track.ErrorDZ`` exists but is not read: the
  common track layout has no dz error). Every Delphes track is a charged particle's
  track (no neutrals, no "no track details" entries).

Units and sign: **Delphes lengths are mm**; this reader returns **cm**
(``dxy = −D0 / 10``, ``dxy_err = ErrorD0 / 10``, ``dz = DZ / 10``). Delphes'
``ParticlePropagator`` computes ``D0 = (x·py − y·px) / pT`` (``(x, y)`` the production
vertex relative to the beam spot, ``(px, py)`` the momentum at the point of closest
approach), which is **minus** CMS's ``dxy = (−x·py + y·px) / pT``
(``reco::TrackBase::dxy``), the convention of every other format here (PFNano ``d0``,
TreeMaker ``dxyPV0``): the sign is flipped so that ``dxy`` means the same in every
format. ``DZ = z − (x·px + y·py)/pT · pz/pT`` has CMS's sign already.

Errors of 0: a detector card without ``ImpactParameterSmearing`` / track covariance
leaves ``ErrorD0`` (``ErrorDZ``) at 0 and ``D0`` at its true value (the real test
file: ``ErrorD0 == 0`` for every track). 0 means "resolution not modelled", not
"perfect": such a track keeps its ``dxy`` (a measured value) with ``dxy_err = +inf``,
the project's "measured value, unknown error"
(:func:`jettracks.physics.impact.valid_dxy` passes, the significance is NaN and left
out of the significance histogram); a notice says how many tracks had it.
A negative or non-finite ``ErrorD0`` (never written by Delphes) is "no measurement":
``dxy``, ``dxy_err`` and ``dz`` are NaN.

Event identifiers: Delphes has **no run and no luminosity section**: every event gets
``run = 1`` and ``lumi = 1`` (CMS simulation's run number), and a notice says so.
``event`` is ``Event.Number`` (optional branch; without it, the entry number in the
file, from the chunk's ``entrystart``, with a notice).

Flavour: ``Jet.Flavor`` is filled by Delphes' ``JetFlavorAssociation`` module
(``GetAlgoFlavor``): the **largest |PDG id| of the generator partons (quarks and gluons
passing ``PartonPTMin``/``PartonEtaMax``) within ΔR <= ``DeltaR`` (0.5 in the standard
cards) of the jet**, a gluon counting below every quark: 5 (a b quark in the cone),
else 4 (c), else 3/2/1 (s/u/d), else 21 (gluons only), 0 (no parton in the cone).
It is unsigned and parton-based: neither CMS's ``hadronFlavour`` (ghost-clustered
hadrons) nor its ``partonFlavour``. It is carried as ``parton_flavour`` and the
format's default flavour definition is ``parton``, whose mapping
(:mod:`jettracks.physics.flavour`) is exactly Delphes' priority order: 5 → ``b``,
4 → ``c``, 1–3 → ``uds``, 21 → ``g``, 0 → ``unmatched``. ``Jet.FlavorPhys`` (Delphes'
"physics" definition: the single LHE parton within ΔR, 0 when none, several, or
contaminated by other heavy partons; 0 everywhere without LHE input) is carried as
``physics_flavour`` (``flavour: physics``). ``Jet.FlavorAlgo`` (the CMS
``JetPartonMatcher`` algorithmic definition) is not read.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import EventBatch, Reader, counts, flat, jagged_records, local_index

__all__ = ["DelphesReader", "MM_TO_CM"]

#: Delphes lengths are mm; the project's are cm.
MM_TO_CM = 0.1


def _short(branch: str) -> str:
    """``Jet/Jet.PT`` -> ``Jet.PT`` (the flat spelling of a split branch)."""
    return branch.rsplit("/", 1)[-1]


class DelphesReader(Reader):
    name = "delphes"
    treename = "Delphes"
    description = "Delphes 3 output: Delphes tree, Jet.* and Track.* (D0/DZ in mm, converted to cm)"
    default_flavour = "parton"

    JET: ClassVar[dict[str, str]] = {
        "pt": "Jet/Jet.PT",
        "eta": "Jet/Jet.Eta",
        "phi": "Jet/Jet.Phi",
        "mass": "Jet/Jet.Mass",
    }
    TRACK: ClassVar[dict[str, str]] = {
        "pt": "Track/Track.PT",
        "eta": "Track/Track.Eta",
        "phi": "Track/Track.Phi",
        "charge": "Track/Track.Charge",
        "d0": "Track/Track.D0",
        "d0_err": "Track/Track.ErrorD0",
        "dz": "Track/Track.DZ",
    }
    FLAVOUR: ClassVar[dict[str, str]] = {
        "parton_flavour": "Jet/Jet.Flavor",
        "physics_flavour": "Jet/Jet.FlavorPhys",
    }
    EVENT_NUMBER: ClassVar[str] = "Event/Event.Number"

    # -- branch names: split (Jet/Jet.PT) or flat (Jet.PT) spelling ------------------
    @staticmethod
    def spelling(branch: str, available: set[str] | Any) -> str | None:
        """The name under which ``branch`` exists in ``available`` (``Jet/Jet.PT`` or ``Jet.PT``), or None."""
        for name in (branch, _short(branch)):
            if name in available:
                return name
        return None

    def has_branch(self, branch: str, available: set[str]) -> bool:
        """Whether ``branch`` is in ``available`` under either spelling."""
        return self.spelling(branch, available) is not None

    def required_branches(self) -> list[str]:
        return [*self.JET.values(), *self.TRACK.values()]

    def optional_branches(self) -> list[str]:
        return [*self.FLAVOUR.values(), self.EVENT_NUMBER]

    def missing_branches(self, available: set[str], *, ml: bool = True) -> list[str]:
        skip = () if ml else self.ml_only_branches
        return [b for b in self.required_branches() if b not in skip and self.spelling(b, available) is None]

    def branches(self, available: set[str] | None = None, *, ml: bool = True) -> list[str]:
        """Branches to read, spelled as in the file when ``available`` is given (both
        spellings otherwise: the engine reads the ones the file has)."""
        names = self.required_branches() + self.optional_branches()
        if not ml:
            names = [b for b in names if b not in self.ml_only_branches]
        if available is None:
            return list(dict.fromkeys(names + [_short(b) for b in names]))
        found = [self.spelling(b, available) for b in names]
        return list(dict.fromkeys(b for b in found if b is not None))

    # -- reading -------------------------------------------------------------------
    def read(self, columns: Any) -> EventBatch:
        fields = self.fields_of(columns)

        def col(branch: str) -> Any:
            name = self.spelling(branch, fields)
            return columns[name if name is not None else branch]  # absent: the column's own error

        n_jet = counts(col(self.JET["pt"]))
        jets: dict[str, np.ndarray] = {k: flat(col(b), np.float32) for k, b in self.JET.items()}
        jets["index"] = local_index(n_jet)
        flav = []
        for key, branch in self.FLAVOUR.items():
            if self.spelling(branch, fields) is not None:
                jets[key] = flat(col(branch), np.int32)
                flav.append(key)

        n_trk = counts(col(self.TRACK["pt"]))
        d0 = flat(col(self.TRACK["d0"]), np.float64)
        d0_err = flat(col(self.TRACK["d0_err"]), np.float64)
        dz = flat(col(self.TRACK["dz"]), np.float64)
        measured = np.isfinite(d0) & np.isfinite(d0_err) & (d0_err >= 0)
        unmodelled = measured & (d0_err == 0)
        dxy_err_cm = np.where(unmodelled, np.inf, d0_err * MM_TO_CM)
        tracks = {
            "pt": flat(col(self.TRACK["pt"]), np.float32),
            "eta": flat(col(self.TRACK["eta"]), np.float32),
            "phi": flat(col(self.TRACK["phi"]), np.float32),
            "charge": flat(col(self.TRACK["charge"]), np.int32),
            "dxy": np.where(measured, -d0 * MM_TO_CM, np.nan).astype(np.float32),
            "dxy_err": np.where(measured, dxy_err_cm, np.nan).astype(np.float32),
            "dz": np.where(measured, dz * MM_TO_CM, np.nan).astype(np.float32),
        }
        n_events = len(n_jet)
        notices = [
            "format delphes: no run or luminosity section in Delphes files: run = 1, lumi = 1 for every event"
        ]
        if unmodelled.any():
            notices.append(
                "format delphes: Track.ErrorD0 = 0 (impact-parameter resolution not modelled by the "
                "detector card): dxy kept, dxy_err = +inf, no dxy significance"
            )
        for key, branch in self.FLAVOUR.items():
            if key not in flav:
                notices.append(f"format delphes: no {_short(branch)} branch: jets carry no {key}")
        number = self.spelling(self.EVENT_NUMBER, fields)
        if number is not None:
            event = _first_per_event(col(self.EVENT_NUMBER), n_events)
        else:
            meta = getattr(columns, "metadata", None) or {}
            start = int(meta.get("entrystart") or 0)
            event = np.arange(start, start + n_events, dtype=np.uint64)
            notices.append("format delphes: no Event.Number branch: event = entry number in the file")
        return EventBatch(
            run=np.ones(n_events, dtype=np.int64),
            lumi=np.ones(n_events, dtype=np.int64),
            event=event,
            jets=jagged_records(jets, n_jet),
            tracks=jagged_records(tracks, n_trk),
            track_kind="tracks",
            has_dxy=True,
            flavour_fields=tuple(flav),
            n_entries=n_events,
            notices=notices,
        )


def _first_per_event(array: Any, n_events: int) -> np.ndarray:
    """``Event.Number`` (one ``Event`` object per entry, a jagged branch) as uint64 per event."""
    import awkward as ak

    arr = ak.materialize(array) if hasattr(ak, "materialize") else array
    if arr.ndim > 1:
        n = ak.to_numpy(ak.num(arr, axis=1))
        values = ak.to_numpy(ak.flatten(arr, axis=None)).astype(np.int64)
        out = np.zeros(n_events, dtype=np.int64)
        has = n > 0
        starts = np.cumsum(n) - n
        out[has] = values[starts[has]]
        return out.astype(np.uint64)
    return ak.to_numpy(arr).astype(np.uint64)
