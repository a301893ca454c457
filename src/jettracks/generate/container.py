"""The container a generated file is written in: ``ttree`` (default) or ``rntuple``.

``ttree`` is each writer's own ``write`` (:mod:`.pfnano`, :mod:`.jetntuple`,
:mod:`.delphes`): the TTree layout of the real files. ``rntuple`` writes the same
content as a ROOT RNTuple (uproot 5.7's writer) at the same path in the file
(``Events``, ``AK4jets/jetTree``, ``Delphes``), in the layout RNTuple producers use:

- scalars (``run``, ``luminosityBlock``, ``event``, ``jetPt``, ...) are fields of their own;
- a collection is one field, a vector of records: ``Jet`` with members ``pt``, ``eta``,
  ... (what CMSSW's ``NanoAODRNTupleOutputModule`` writes for NanoAOD; no ``nJet``
  counter field), ``Jet`` with ``PT``, ... for Delphes, ``PF`` with ``pT``, ... for
  the JetNtuple.

Readers see these fields under the TTree names (``Jet_pt``, ``nJet``, ``Jet/Jet.PT``,
``PF_pT``) through :mod:`jettracks.io.rntuple`, so a run over the RNTuple copy of a
sample reads the same values as over the TTree (floats are stored with the same
precision). The TTree-only writer options (basket sizes) do not apply to RNTuples
and are ignored; ``compression``/``compression_level`` and the content options
(``links``, ``mc_info``) apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from . import _rootio
from .physics import Events

__all__ = ["CONTAINERS", "check_container", "write_rntuple"]

#: Containers a generated file can be written in.
CONTAINERS: tuple[str, ...] = ("ttree", "rntuple")


def check_container(container: str) -> str:
    """``container`` if known, else ValueError naming the known ones."""
    if container not in CONTAINERS:
        raise ValueError(f"container {container!r} is not one of {CONTAINERS}")
    return container


def _data(format: str, events: Events, options: dict[str, Any]) -> dict[str, Any]:
    """The writer's branch data (collections as jagged records) for ``format``."""
    if format == "pfnano":
        from . import pfnano

        return pfnano.build(events, links=bool(options.get("links", pfnano.DEFAULTS["links"])))
    if format == "jetntuple":
        from . import jetntuple

        mc_info = bool(options.get("mc_info", jetntuple.DEFAULTS["mc_info"]))
        chunks = list(jetntuple.build(events, mc_info=mc_info, basket_jets=max(events.n_jets, 1)))
        if not chunks:
            return {}
        return {k: (ak.concatenate([c[k] for c in chunks]) if isinstance(chunks[0][k], ak.Array)
                    else np.concatenate([np.asarray(c[k]) for c in chunks])) for k in chunks[0]}
    if format == "delphes":
        from . import delphes

        return delphes.build(events)
    raise ValueError(f"format {format!r} has no RNTuple writer")


def write_rntuple(path: str | Path, format: str, tree: str, events: Events, **options: Any) -> Path:
    """Write ``events`` of ``format`` to ``path`` (overwritten) as an RNTuple named ``tree``.

    ``options``: the writer's options (``compression``, ``compression_level``, ``links``,
    ``mc_info``; basket options are ignored).
    """
    path = Path(path)
    comp = _rootio.compression(options.get("compression"), options.get("compression_level"))
    data = _data(format, events, options)
    if not data:
        raise ValueError(f"format {format!r}: no entries to write as an RNTuple (0 events)")
    columns = {k: (v if isinstance(v, ak.Array) else ak.Array(np.asarray(v))) for k, v in data.items()}
    with uproot.recreate(path, compression=comp) as f:
        f[tree] = columns
    return path
