"""The reader contract and the common "jets with tracks" layout.

A reader knows one on-disk format: its tree, the branches it needs, and how to
turn a chunk of them into an :class:`EventBatch`. It knows files, not clusters:
it receives a mapping ``branch name -> awkward array`` (coffea NanoEvents under
``BaseSchema``, or ``tree.arrays(...)``) and returns numpy/awkward arrays.

Common layout (units: GeV, cm, radians)
---------------------------------------
``EventBatch.jets``: jagged ``[event][jet]`` records with fields

- ``pt`` (GeV), ``eta``, ``phi`` (rad), ``mass`` (GeV)
- ``index``: the jet's position in its event's collection in the file (int64)
- ``hadron_flavour``, ``parton_flavour``, ``physics_flavour`` (int32; absent
  fields are simply not present — see ``EventBatch.flavour_fields``)

Tracks come in one of two shapes:

- event-level ``EventBatch.tracks``: jagged ``[event][track]`` records with
  ``pt, eta, phi, charge, dxy, dxy_err, dz`` (dxy/dz in cm, signed; ``dxy_err <= 0``
  or NaN marks "no measurement", where dxy/dz are NaN, or still the format's fill for
  the fields listed in ``EventBatch.unmasked``: read those through
  ``EventBatch.gather_tracks``) — associated to jets by the ΔR kernel;
- per-jet ``EventBatch.jet_tracks``: jagged ``[event][jet][track]`` with the same
  fields plus ``dr`` (ΔR to the jet as stored in the file) — formats whose
  tracks are already stored per jet; or, instead, ``EventBatch.stored_tracks``: the
  flat per-jet buffers a reader selects from in one compiled pass (the JetNtuple's
  ``PF_*``: :class:`jettracks.readers.jetntuple.StoredTracks`).

``dxy`` is always in the **CMS sign convention**, ``dxy = (−(vx−pvx)·py + (vy−pvy)·px)/pT``
(a reader of a format with another convention converts it: Delphes' ``D0`` has the
opposite sign); the lifetime sign of :func:`jettracks.physics.impact.signed_dxy` is
derived from it.

Optional track fields (:data:`OPTIONAL_TRACK_FIELDS`), present only where the format
stores them (an absent one is an absent field, never a fill of zeros or ``-1``):
``dz_err`` (cm; NaN without track details), ``lost_inner_hits``, ``pv_assoc_quality``,
``trk_quality`` (int32, as stored), ``trk_chi2`` (normalised χ², NaN without track details).
Per jet–track link values (PFNano's ``JetPFCands_btagSip3dVal/Sig``) travel in
``EventBatch.links`` (fields ``sip3d``, ``sip3d_sig``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar

import awkward as ak
import numpy as np

__all__ = ["EventBatch", "OPTIONAL_TRACK_FIELDS", "Reader", "ReaderError", "TRACK_FIELDS", "jagged_fields"]

#: Fields every track record carries (dxy, dxy_err, dz in cm; NaN where the format has none).
TRACK_FIELDS = ("pt", "eta", "phi", "charge", "dxy", "dxy_err", "dz")

#: Track fields a reader adds only where its format stores them (see the module docstring).
OPTIONAL_TRACK_FIELDS = ("dz_err", "lost_inner_hits", "pv_assoc_quality", "trk_quality", "trk_chi2")


class ReaderError(ValueError):
    """A file that a reader cannot use; the message names file, format and reason."""


@dataclass
class EventBatch:
    """A chunk of events in the common layout (see module docstring).

    Attributes:
        run, lumi, event: per-event identifiers (numpy int64/int64/uint64).
        jets: jagged [event][jet] records.
        tracks: event-level tracks or None.
        jet_tracks: per-jet tracks or None.
        stored_tracks: per-jet tracks as flat buffers with a ``select(jet_sel, *,
            track_pt_min, cone_dr)`` method (JetNtuple: ``StoredTracks``), or None.
        track_kind: what the tracks are: ``pf_candidates``, ``tracks``,
            ``isolated_tracks`` or ``none``.
        has_dxy: whether the format stores transverse impact parameters.
        flavour_fields: which flavour fields ``jets`` carries.
        links: jet-constituent links ``[event][link]`` with fields ``jet`` and
            ``cand`` (indices into the event's jets and tracks), where the file has them
            (PFNano read for ML output also ``sip3d``, ``sip3d_sig`` per link, where stored).
        gen_weight: per-event generator weight (``genWeight``), where the format has it.
        n_entries: tree entries read (events, or jets for per-jet formats).
        notices: one-line remarks for the run report (e.g. "no track collection").
        unmasked: fields of ``tracks`` that still hold the format's fill where the track has
            no measurement (``dxy_err`` not > 0, e.g. PFNano's ``-1``): read their values
            through :meth:`gather_tracks`, which gives NaN there. A reader leaves them so
            because only the tracks associated to jets (a few % of PF candidates) need the
            NaN, and masking all of them was 14% of a cached rerun's chunks.
        track_types: numpy types of fields of ``tracks`` that a reader left in the integer
            type it was given (any width: :attr:`Reader.any_int_width`); :meth:`gather_tracks`
            gives them in this type.
    """

    run: np.ndarray
    lumi: np.ndarray
    event: np.ndarray
    jets: ak.Array
    tracks: ak.Array | None = None
    jet_tracks: ak.Array | None = None
    stored_tracks: Any = None
    track_kind: str = "pf_candidates"
    has_dxy: bool = True
    flavour_fields: tuple[str, ...] = ()
    links: ak.Array | None = None
    gen_weight: np.ndarray | None = None
    n_entries: int = 0
    notices: list[str] = field(default_factory=list)
    unmasked: tuple[str, ...] = ()
    track_types: dict[str, Any] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return len(self.run)

    def gather_tracks(self, index: np.ndarray, fields: Any = None) -> dict[str, np.ndarray]:
        """Flat numpy columns of the event-level tracks at ``index`` (positions in the
        flattened ``tracks``), one per field (``fields``: names, default every field), with
        NaN where the track has no measurement for the fields in :attr:`unmasked`, and the
        fields of :attr:`track_types` in their type.

        Raises:
            ValueError: the batch has no event-level tracks.
        """
        if self.tracks is None:
            raise ValueError("gather_tracks needs event-level tracks (EventBatch.tracks)")
        field_of = jagged_fields(self.tracks)[1]
        names = list(self.tracks.fields if fields is None else fields)
        out = {f: field_of(f)[index] for f in names}
        masked = [f for f in names if f in self.unmasked]
        if masked:
            err = out["dxy_err"] if "dxy_err" in out else field_of("dxy_err")[index]
            unmeasured = ~(err > 0)  # NaN errors too
            for f in masked:
                out[f] = np.where(unmeasured, out[f].dtype.type(np.nan), out[f])
        for f, dtype in self.track_types.items():
            if f in out:
                out[f] = out[f].astype(dtype, copy=False)
        return out


class Reader(abc.ABC):
    """Base class of a format reader; subclasses register in :mod:`jettracks.readers`.

    Class attributes:
        name: format name used in configs (``format: pfnano``).
        treename: default tree path in the file.
        description: one line for ``runner inspect`` and docs.
        default_flavour: flavour definition used when the processor says ``auto``.
    """

    name: ClassVar[str]
    treename: ClassVar[str]
    description: ClassVar[str] = ""
    default_flavour: ClassVar[str] = "hadron"
    per_jet_entries: ClassVar[bool] = False
    #: Branches only the per-jet ML columns use (e.g. ``Jet_mass``, ``PFCands_dz``): a run
    #: without ML output does not read them, and ``read`` leaves their fields out.
    ml_only_branches: ClassVar[tuple[str, ...]] = ()
    #: Integer branches ``read`` takes at any width (it compares them, or leaves them to
    #: ``EventBatch.track_types``): the column cache serves them in its stored, narrower type
    #: instead of widening every value to the file's type.
    any_int_width: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any) -> None:
        self.options = options

    @abc.abstractmethod
    def required_branches(self) -> list[str]:
        """Branches without which the reader cannot work."""

    def optional_branches(self) -> list[str]:
        """Branches used when present (flavour, links, ...)."""
        return []

    def branches(self, available: set[str] | None = None, *, ml: bool = True) -> list[str]:
        """The column plan: branches to read, required plus the optional ones that exist.

        Args:
            available: branch names of the file (``None``: assume every optional one exists).
            ml: whether the ML columns are wanted; ``False`` leaves out
                :attr:`ml_only_branches` (nothing downstream reads them).
        """
        opt = self.optional_branches()
        if available is not None:
            opt = [b for b in opt if b in available]
        wanted = list(dict.fromkeys(self.required_branches() + opt))
        if not ml:
            wanted = [b for b in wanted if b not in self.ml_only_branches]
        return wanted

    def missing_branches(self, available: set[str], *, ml: bool = True) -> list[str]:
        """Required branches absent from ``available`` (``ml=False``: not counting
        :attr:`ml_only_branches`, which such a run does not read)."""
        skip = () if ml else self.ml_only_branches
        return [b for b in self.required_branches() if b not in available and b not in skip]

    def check(self, available: set[str], *, filename: str = "?", ml: bool = True) -> None:
        """Raise :class:`ReaderError` naming the file and the missing branches."""
        missing = self.missing_branches(available, ml=ml)
        if missing:
            raise ReaderError(
                f"{filename}: not readable as format {self.name!r}: missing branches "
                f"{', '.join(missing)}"
            )

    @classmethod
    def find_tree(cls, trees: dict[str, set[str]]) -> str | None:
        """The tree of this format in a file (path -> branch names), or None.

        Formats whose tree may sit at several paths override this.
        """
        branches = trees.get(cls.treename)
        if branches is not None and not cls().missing_branches(branches):
            return cls.treename
        return None

    @classmethod
    def detect(cls, trees: dict[str, set[str]]) -> bool:
        """True when a file with these trees (path -> branch names) is of this format."""
        return cls.find_tree(trees) is not None

    @staticmethod
    def fields_of(columns: Any) -> set[str]:
        """Branch names available in a chunk (NanoEvents fields or mapping keys)."""
        return set(getattr(columns, "fields", None) or columns.keys())

    def read_nano_jets(self, columns: Any, names: dict[str, str], flavour: dict[str, str]):
        """NanoAOD-style ``Jet_*`` columns -> (jet fields, jets per event, flavour fields present)."""
        fields = self.fields_of(columns)
        n_jet = counts(columns[names["pt"]])
        jets: dict[str, np.ndarray] = {k: flat(columns[b]) for k, b in names.items() if b in fields}
        jets["index"] = local_index(n_jet)
        present = []
        for key, branch in flavour.items():
            if branch in fields:
                jets[key] = flat(columns[branch], np.int32)
                present.append(key)
        return jets, n_jet, tuple(present)

    @abc.abstractmethod
    def read(self, columns: Any) -> EventBatch:
        """Turn one chunk (mapping branch name -> awkward array) into an EventBatch."""


def _layout_data(layout: Any) -> np.ndarray | None:
    """A NumpyArray layout's buffer when it is a plain 1-d numpy array (not virtual, no
    parameters), else None."""
    if isinstance(layout, ak.contents.NumpyArray) and not layout.parameters:
        data = layout.data
        if type(data) is np.ndarray and data.ndim == 1:
            return data
    return None


def _list_offsets(layout: Any) -> np.ndarray | None:
    """A ListOffsetArray layout's offsets when plain numpy (not virtual, no parameters)."""
    if isinstance(layout, ak.contents.ListOffsetArray) and not layout.parameters:
        offsets = layout.offsets.data
        if type(offsets) is np.ndarray:
            return offsets
    return None


def flat(array: Any, dtype=None) -> np.ndarray:
    """Flat numpy content of a (possibly virtual, possibly jagged) awkward array.

    Plain numpy layouts (a flat array, or a list of numbers with offsets: what uproot and
    the column cache give) are taken from their buffers directly: the three high-level
    calls cost ~0.3 ms a column, paid per column per sub-batch."""
    layout = array.layout if isinstance(array, ak.Array) else None
    out = _layout_data(layout) if layout is not None else None
    if out is None and layout is not None and (offsets := _list_offsets(layout)) is not None:
        content = _layout_data(layout.content)
        if content is not None:
            out = content[offsets[0]:offsets[-1]]
    if out is None:
        arr = ak.materialize(array) if hasattr(ak, "materialize") else array
        if arr.ndim > 1:
            arr = ak.flatten(arr, axis=None)
        out = ak.to_numpy(arr)
    return out if dtype is None else out.astype(dtype, copy=False)


def counts(array: Any) -> np.ndarray:
    """Per-event lengths of a jagged array, int64."""
    layout = array.layout if isinstance(array, ak.Array) else None
    offsets = _list_offsets(layout) if layout is not None else None
    if offsets is not None:
        return np.diff(offsets).astype(np.int64, copy=False)
    return ak.to_numpy(ak.num(array, axis=1)).astype(np.int64, copy=False)


def offsets_of(counts_per_item: np.ndarray) -> np.ndarray:
    """int64 offsets ``[0, c0, c0+c1, ...]`` of these lengths."""
    offsets = np.zeros(len(counts_per_item) + 1, dtype=np.int64)
    np.cumsum(counts_per_item, out=offsets[1:])
    return offsets


def jagged_buffers(array: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets from 0, flat values)`` of a jagged numeric array (no copy of the values
    where the layout is plain: :func:`flat`)."""
    return offsets_of(counts(array)), flat(array)


def jagged_records(fields: dict[str, np.ndarray], counts_per_event: np.ndarray) -> ak.Array:
    """Build a jagged [event][item] record array from flat columns + counts.

    The layout ``ak.unflatten(ak.zip(fields, depth_limit=1), counts)`` makes (a
    ListOffsetArray of int64 offsets over a RecordArray of the flat columns), built directly.
    """
    if not all(type(v) is np.ndarray and v.ndim == 1 for v in fields.values()):
        return ak.unflatten(ak.zip(fields, depth_limit=1), counts_per_event)
    n = np.asarray(counts_per_event, dtype=np.int64)
    if n.ndim != 1 or (len(n) and n.min() < 0):
        raise ValueError("counts must be a flat array of non-negative lengths")
    offsets = offsets_of(n)
    columns = list(fields.values())
    length = int(offsets[-1])
    if any(c.ndim != 1 or len(c) != length for c in columns):
        raise ValueError(f"every field must be flat and hold sum(counts) = {length} items")
    record = ak.contents.RecordArray([ak.contents.NumpyArray(c) for c in columns], list(fields), length=length)
    return ak.Array(ak.contents.ListOffsetArray(ak.index.Index64(offsets), record))


def jagged_fields(array: ak.Array) -> tuple[np.ndarray, Any]:
    """``(counts, field)`` of a jagged ``[item][sub]`` record array: the counts per item
    (int64) and a function giving one field flat over all items (numpy).

    For the layout :func:`jagged_records` makes (offsets from 0 over a record of flat
    numpy columns) both come straight from the buffers: each ``ak.num``, ``ak.flatten``
    and field projection costs ~0.1 ms, paid per field per sub-batch. Any other layout
    goes through awkward.
    """
    layout = array.layout
    content = getattr(layout, "content", None)
    if (isinstance(layout, ak.contents.ListOffsetArray) and isinstance(content, ak.contents.RecordArray)
            and not content.is_tuple and not layout.parameters and not content.parameters):
        offsets = np.asarray(layout.offsets.data, dtype=np.int64)
        if len(offsets) and offsets[0] == 0 and offsets[-1] == content.length and all(
                isinstance(c, ak.contents.NumpyArray) and c.data.ndim == 1 and not c.parameters
                and len(c.data) == content.length for c in content.contents):
            return np.diff(offsets), lambda name: np.asarray(content.content(name).data)
    flat_array = ak.flatten(array, axis=1)
    return ak.to_numpy(ak.num(array, axis=1)).astype(np.int64), lambda name: ak.to_numpy(flat_array[name])


def local_index(n_per_event: np.ndarray) -> np.ndarray:
    """0..n-1 within each event, flat (int64)."""
    n_per_event = np.asarray(n_per_event, dtype=np.int64)
    starts = np.repeat(np.cumsum(n_per_event) - n_per_event, n_per_event)
    return np.arange(int(n_per_event.sum()), dtype=np.int64) - starts
