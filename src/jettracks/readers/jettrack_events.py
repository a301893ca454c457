"""Event-level jets + tracks ntuples (one entry per event), every branch name configurable.

The shape of the hand-made ntuples of the LLP study behind this project and of
public producers such as ``aperloff/OpenDataNtupleProducer``'s ``evtTree``:
per event, a jet collection and a track
collection with transverse impact parameters.

Default branch names
--------------------
Tracks follow ``aperloff/OpenDataNtupleProducer`` ``evtTree`` exactly
(``nTrk``; ``Trk_pT``, ``Trk_eta``, ``Trk_phi``, ``Trk_charge``, ``Trk_dxypv``,
``Trk_dxyerrorpv``, ``Trk_dzpv``; ``[nTrk]/F``, cm), as do the event ids
(``run``, ``lumi``, ``event``). That producer writes **no jets** into
``evtTree`` (its jets are in the per-jet ``jetTree``), so the jet names are a
choice of this reader, NanoAOD-like: ``nJet``; ``Jet_pt``, ``Jet_eta``,
``Jet_phi``, ``Jet_mass`` and, when present, ``Jet_hadronFlavour``,
``Jet_partonFlavour``, ``Jet_physFlav``.

Reader options (``processor.options.reader_options`` in a run config)
---------------------------------------------------------------------
``branches``: mapping logical name -> branch name, overriding any of
    :data:`DEFAULT_BRANCHES` (keys ``run, lumi, event, jet_pt, jet_eta, jet_phi,
    jet_mass, jet_hadron_flavour, jet_parton_flavour, jet_physics_flavour, trk_pt,
    trk_eta, trk_phi, trk_charge, trk_dxy, trk_dxy_err, trk_dz``). An unknown key
    is an error. Optional ones (``jet_mass``, the flavours, ``trk_charge``,
    ``trk_dz``) may be set to ``null`` to ignore them.
``treename``: the tree path (default ``evtTree``; detection also accepts
    ``<dir>/evtTree``, e.g. ``AK4jets/evtTree``, or any tree holding the required
    branches). A dataset's ``treename:`` in the config works as well.
``dxy_invalid``: the producer's fill value for "no good primary vertex"
    (default ``-100``, as ``OpenDataNtupleProducer`` writes).

Example::

    processor:
      options:
        reader_options:
          treename: myTree
          branches: {jet_pt: jet_pt, jet_eta: jet_eta, jet_phi: jet_phi, trk_dxy: trk_d0}

Validity of impact parameters
-----------------------------
``dxy`` equal to ``dxy_invalid`` (−100: no good PV), non-finite, or with an error
``<= 0`` is "no measurement": ``dxy``, ``dz`` and ``dxy_err`` become NaN, so the
processor's ``dxy_err > 0`` selection drops the track from the dxy histograms.
Units: GeV, cm. Without a charge branch every track counts as charged (+1).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import EventBatch, Reader, ReaderError, counts, flat, jagged_records, local_index

__all__ = ["DEFAULT_BRANCHES", "JetTrackEventsReader", "OPTIONAL_KEYS"]

#: Logical name -> default branch name.
DEFAULT_BRANCHES: dict[str, str] = {
    "run": "run",
    "lumi": "lumi",
    "event": "event",
    "jet_pt": "Jet_pt",
    "jet_eta": "Jet_eta",
    "jet_phi": "Jet_phi",
    "jet_mass": "Jet_mass",
    "jet_hadron_flavour": "Jet_hadronFlavour",
    "jet_parton_flavour": "Jet_partonFlavour",
    "jet_physics_flavour": "Jet_physFlav",
    "trk_pt": "Trk_pT",
    "trk_eta": "Trk_eta",
    "trk_phi": "Trk_phi",
    "trk_charge": "Trk_charge",
    "trk_dxy": "Trk_dxypv",
    "trk_dxy_err": "Trk_dxyerrorpv",
    "trk_dz": "Trk_dzpv",
}

#: Logical names whose branch may be absent (or switched off with ``null``).
OPTIONAL_KEYS: tuple[str, ...] = (
    "jet_mass",
    "jet_hadron_flavour",
    "jet_parton_flavour",
    "jet_physics_flavour",
    "trk_charge",
    "trk_dz",
)

_FLAVOUR_KEYS = {
    "hadron_flavour": "jet_hadron_flavour",
    "parton_flavour": "jet_parton_flavour",
    "physics_flavour": "jet_physics_flavour",
}


class JetTrackEventsReader(Reader):
    name = "jettrack_events"
    treename = "evtTree"
    description = "event-level jets + tracks ntuple (evtTree style: Jet_*, Trk_* with dxypv); names configurable"
    default_flavour = "hadron"

    DEFAULT_TREE: ClassVar[str] = "evtTree"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        given = options.get("branches") or {}
        if not isinstance(given, dict):
            raise ReaderError(
                f"format {self.name!r}: reader option 'branches' must be a mapping, got {type(given).__name__}"
            )
        unknown = sorted(set(given) - set(DEFAULT_BRANCHES))
        if unknown:
            raise ReaderError(
                f"format {self.name!r}: unknown key(s) in reader option 'branches': {', '.join(unknown)}; "
                f"known: {', '.join(DEFAULT_BRANCHES)}"
            )
        names: dict[str, str | None] = dict(DEFAULT_BRANCHES)
        for key, value in given.items():
            if value in (None, "") and key not in OPTIONAL_KEYS:
                raise ReaderError(
                    f"format {self.name!r}: reader option branches.{key} cannot be null (the branch is required)"
                )
            names[key] = None if value in (None, "") else str(value)
        self.names = names
        if options.get("treename"):
            self.treename = str(options["treename"])
        self.dxy_invalid = float(options.get("dxy_invalid", -100.0))

    def required_branches(self) -> list[str]:
        return [b for k, b in self.names.items() if k not in OPTIONAL_KEYS and b is not None]

    def optional_branches(self) -> list[str]:
        return [b for k, b in self.names.items() if k in OPTIONAL_KEYS and b is not None]

    @classmethod
    def find_tree(cls, trees: dict[str, set[str]], **options: Any) -> str | None:
        """``treename`` (default ``evtTree``), else ``*/evtTree``, else any tree with the required branches."""
        probe = cls(**options)

        def fits(path: str) -> bool:
            return path in trees and not probe.missing_branches(trees[path])

        if fits(probe.treename):
            return probe.treename
        tail = "/" + probe.treename.rsplit("/", 1)[-1]
        for path in sorted(trees):
            if path.endswith(tail) and fits(path):
                return path
        for path in sorted(trees):
            if fits(path):
                return path
        return None

    def read(self, columns: Any) -> EventBatch:
        fields = self.fields_of(columns)
        b = self.names

        def present(key: str) -> bool:
            return b[key] is not None and b[key] in fields

        n_jet = counts(columns[b["jet_pt"]])
        jets: dict[str, np.ndarray] = {
            "pt": flat(columns[b["jet_pt"]], np.float32),
            "eta": flat(columns[b["jet_eta"]], np.float32),
            "phi": flat(columns[b["jet_phi"]], np.float32),
        }
        jets["mass"] = (
            flat(columns[b["jet_mass"]], np.float32)
            if present("jet_mass")
            else np.full(len(jets["pt"]), np.nan, dtype=np.float32)
        )
        jets["index"] = local_index(n_jet)
        flav = []
        for field, key in _FLAVOUR_KEYS.items():
            if present(key):
                jets[field] = flat(columns[b[key]], np.int32)
                flav.append(field)

        n_trk = counts(columns[b["trk_pt"]])
        dxy = flat(columns[b["trk_dxy"]], np.float32)
        dxy_err = flat(columns[b["trk_dxy_err"]], np.float32)
        dz = (
            flat(columns[b["trk_dz"]], np.float32)
            if present("trk_dz")
            else np.full(len(dxy), np.nan, dtype=np.float32)
        )
        valid = np.isfinite(dxy) & (dxy != np.float32(self.dxy_invalid)) & (dxy_err > 0)
        notices = []
        if present("trk_charge"):
            charge = flat(columns[b["trk_charge"]], np.int32)
        else:
            charge = np.ones(len(dxy), dtype=np.int32)
            notices.append(f"format {self.name}: no track charge branch: every track counted as charged")
        tracks = {
            "pt": flat(columns[b["trk_pt"]], np.float32),
            "eta": flat(columns[b["trk_eta"]], np.float32),
            "phi": flat(columns[b["trk_phi"]], np.float32),
            "charge": charge,
            "dxy": np.where(valid, dxy, np.float32(np.nan)),
            "dxy_err": np.where(valid, dxy_err, np.float32(np.nan)),
            "dz": np.where(valid, dz, np.float32(np.nan)),
        }
        return EventBatch(
            run=flat(columns[b["run"]], np.int64),
            lumi=flat(columns[b["lumi"]], np.int64),
            event=flat(columns[b["event"]], np.uint64),
            jets=jagged_records(jets, n_jet),
            tracks=jagged_records(tracks, n_trk),
            track_kind="tracks",
            has_dxy=True,
            flavour_fields=tuple(flav),
            n_entries=len(n_jet),
            notices=notices,
        )
