"""Writer of the Delphes 3 layout, tree ``Delphes`` (one entry per event), lengths in **mm**.

What a Delphes user's file holds for the generator's events, in Delphes' names, units
and conventions (``classes/DelphesClasses.h``):

* ``Event``: one object per entry with ``Number`` (int64: the event number),
  ``Weight`` (float32: the generator weight), ``Scale`` (float32: p̂T, GeV);
* ``Jet``: ``PT``, ``Eta``, ``Phi``, ``Mass`` (float32, GeV, rad) and the three
  flavours of Delphes' ``JetFlavorAssociation`` (uint32):

  - ``Flavor``: the heaviest parton within ΔR <= 0.5 (5 > 4 > 3 > 2 > 1, then 21 for
    gluons only, 0 none). From the generator's truth: 5 if the jet holds a b hadron
    (b jets and g → b b̄, whose b quarks are partons in the cone), else 4 for a
    c hadron, else the jet's |parton flavour| (1–3, 21; 0 unmatched);
  - ``FlavorAlgo``: the generator's |``partonFlavour``| (CMS's algorithmic definition);
  - ``FlavorPhys``: the generator's |``physFlav``| (matched generator parton);
* ``Track``: one per charged candidate with track details (Delphes' track collection
  holds charged particles only): ``PID`` (int32, reconstructed pdgId), ``Charge``
  (int32), ``PT``, ``Eta``, ``Phi``, ``Mass`` (float32), ``D0``, ``ErrorD0``, ``DZ``,
  ``ErrorDZ`` (float32, **mm**), ``X``, ``Y``, ``Z`` (float32, mm: production vertex
  relative to the primary vertex).

Units and sign: the generator's lengths are cm and its ``d0`` follows CMS's
``dxy = (−x·py + y·px)/pT``; Delphes writes mm and ``D0 = (x·py − y·px)/pT``. So
``D0 = −10 · d0``, ``ErrorD0 = 10 · d0Err``, ``DZ = 10 · dz``, ``ErrorDZ = 10 · dzErr``
(the reader, :mod:`jettracks.readers.delphes`, undoes exactly this).

On disk (TTree): uproot cannot write ROOT's split ``TClonesArray`` branches, so each
member is a flat branch named like the split branch's leaf, ``Jet.PT`` (real files:
``Jet/Jet.PT``), with the counter ``Jet_size`` (int32) as in real Delphes files.
Readers look members up under either spelling. With ``container="rntuple"`` the
collections are RNTuple fields ``Event``, ``Jet``, ``Track`` (vectors of records with
the same member names).

Writer options: ``compression`` ("zlib", as Delphes' default ROOT files),
``compression_level`` (1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import uproot

from . import _rootio
from .physics import Events

__all__ = ["CM_TO_MM", "DEFAULTS", "TREE", "build", "write"]

TREE = "Delphes"

DEFAULTS: dict[str, Any] = {"compression": "zlib", "compression_level": 1}

#: The generator's lengths are cm, Delphes' mm.
CM_TO_MM = 10.0


def delphes_flavor(events: Events) -> np.ndarray:
    """``Jet.Flavor`` from the generator's truth: heaviest parton in the cone (module docstring)."""
    jets = events.jets
    parton = np.abs(np.asarray(jets["partonFlav"], dtype=np.int64))
    hadron = np.asarray(jets["hadronFlav"], dtype=np.int64)
    light = np.where(np.isin(parton, (1, 2, 3, 21)), parton, 0)
    return np.where(hadron == 5, 5, np.where(hadron == 4, 4, light)).astype(np.uint32)


def build(events: Events) -> dict[str, Any]:
    """The ``Delphes`` tree's collections: ``{"Event", "Jet", "Track"}`` as jagged records."""
    ev, jets, cands = events.event, events.jets, events.cands
    n = events.n_events
    f32 = np.float32
    has = np.asarray(cands["hasTrack"], dtype=bool) & (np.asarray(cands["charge"]) != 0)
    trk_event = np.repeat(np.arange(n), events.cand_counts)[has]
    trk_counts = np.bincount(trk_event, minlength=n)
    data = {
        "Event": _rootio.jagged(
            np.ones(n, dtype=np.int64),
            {
                "Number": np.asarray(ev["event"], dtype=np.int64),
                "Weight": np.asarray(ev["weight"], dtype=f32),
                "Scale": np.asarray(ev["pthat"], dtype=f32),
            },
        ),
        "Jet": _rootio.jagged(
            events.jet_counts,
            {
                "PT": np.asarray(jets["pt"], dtype=f32),
                "Eta": np.asarray(jets["eta"], dtype=f32),
                "Phi": np.asarray(jets["phi"], dtype=f32),
                "Mass": np.asarray(jets["mass"], dtype=f32),
                "Flavor": delphes_flavor(events),
                "FlavorAlgo": np.abs(np.asarray(jets["partonFlav"], dtype=np.int64)).astype(np.uint32),
                "FlavorPhys": np.abs(np.asarray(jets["physFlav"], dtype=np.int64)).astype(np.uint32),
            },
        ),
        "Track": _rootio.jagged(
            trk_counts,
            {
                "PID": np.asarray(cands["pdgId"])[has].astype(np.int32),
                "Charge": np.asarray(cands["charge"])[has].astype(np.int32),
                "PT": np.asarray(cands["pt"])[has].astype(f32),
                "Eta": np.asarray(cands["eta"])[has].astype(f32),
                "Phi": np.asarray(cands["phi"])[has].astype(f32),
                "Mass": np.asarray(cands["mass"])[has].astype(f32),
                "D0": (-CM_TO_MM * np.asarray(cands["d0"], dtype=np.float64)[has]).astype(f32),
                "ErrorD0": (CM_TO_MM * np.asarray(cands["d0Err"], dtype=np.float64)[has]).astype(f32),
                "DZ": (CM_TO_MM * np.asarray(cands["dz"], dtype=np.float64)[has]).astype(f32),
                "ErrorDZ": (CM_TO_MM * np.asarray(cands["dzErr"], dtype=np.float64)[has]).astype(f32),
                "X": (CM_TO_MM * np.asarray(cands["vx"], dtype=np.float64)[has]).astype(f32),
                "Y": (CM_TO_MM * np.asarray(cands["vy"], dtype=np.float64)[has]).astype(f32),
                "Z": (CM_TO_MM * np.asarray(cands["vz"], dtype=np.float64)[has]).astype(f32),
            },
        ),
    }
    return data


def write(
    path: str | Path,
    events: Events,
    *,
    compression: str | None = DEFAULTS["compression"],
    compression_level: int | None = DEFAULTS["compression_level"],
) -> Path:
    """Write ``events`` to ``path`` (overwritten) as a Delphes ``TTree`` (module docstring)."""
    path = Path(path)
    comp = _rootio.compression(compression, compression_level)
    data = build(events)
    with uproot.recreate(path, compression=comp) as f:
        tree = f.mktree(
            TREE,
            _rootio.branch_types(data),
            title="Analysis tree",
            counter_name=lambda collection: f"{collection}_size",
            field_name=lambda collection, member: f"{collection}.{member}",
        )
        if events.n_events:
            tree.extend(data)
    return path
