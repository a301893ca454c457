"""JetTrackProcessor: tracks in jets, their transverse impact parameter, jet flavour.

Per chunk (coffea ``ProcessorABC`` contract: ``process(events) -> accumulator``):

1. read the chunk through the format reader named in the dataset's metadata
   (``events.metadata["format"]``) into the common "jets with tracks" layout;
2. select jets: ``pt > jet_pt_min`` (GeV) and ``|eta| < jet_abs_eta_max``;
3. select tracks: charged (``charge != 0``) and ``pt >= track_pt_min`` (GeV);
4. associate tracks to the selected jets: ``ΔR < cone_dr`` with the numba kernel
   (event-level formats) or the stored ``ΔR`` (per-jet formats; JetNtuple ``PF_dR``);
5. valid impact parameter: finite ``dxy`` and ``dxy_err > 0`` (PFNano's ``-1`` fill
   never passes), :func:`jettracks.physics.impact.valid_dxy`, the ML columns' definition too;
   the lifetime-signed ``sdxy = |dxy| · sign(dxy · sin(φ_jet − φ_trk))`` (cm) and its
   significance (:func:`jettracks.physics.impact.signed_dxy`) on the associated tracks only;
6. label flavour (:mod:`jettracks.physics.flavour`; ``flavour: auto`` takes the
   format's default definition);
7. fill histograms per dataset and flavour, the cut flow, and write the per-jet
   ML columns as one part per sub-batch of a chunk (an Arrow IPC file, on the worker).

Units: GeV for momenta, cm for dxy/dz, radians for φ. The output is a dict
``{"hists", "cutflow", "entries", "genweights", "notices", "ml_parts"}`` that coffea sums
over chunks (``entries``: tree entries read per file, for the run's accounting;
``genweights``: dataset -> file -> additive sums of ``genWeight``, for the normalisation).
``hists`` holds unweighted counts (``jet_pt``, ...) and ``NAME_weighted`` copies of a few
(``hist.storage.Weight``) filled with each event's ``genWeight`` and scaled to
``xsec · lumi / Σ genWeight`` at the end of the run (:mod:`jettracks.normalisation`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pickle
import uuid
from dataclasses import dataclass, field
from typing import Any

import awkward as ak
import boost_histogram as bh
import hist
import numpy as np
from coffea import processor

from jettracks.physics import flavour as flav
from jettracks.io import mldata
from jettracks import readers
from jettracks.physics.association import compare_association
from jettracks.physics.impact import dxy_significance, signed_dxy, valid_dxy
from jettracks.physics.kernels import KERNEL_COLUMNS, associate_tracks, delta_r
from jettracks.normalisation import WEIGHTED_HISTS, genweight_sums, weighted_name
from jettracks import lumi as lumitools

__all__ = [
    "CUTFLOW_STEPS",
    "ChunkAnalysis",
    "JetTrackProcessor",
    "count_event_starts",
    "make_histograms",
    "previous_entry_ids",
]

#: Cut-flow steps in order (counts, see :meth:`JetTrackProcessor.process`).
#: ``entries``: tree entries read (jets, for per-jet formats such as the JetNtuple);
#: ``events``: events, each counted once whatever the chunking (per-jet formats:
#: :func:`count_event_starts`).
CUTFLOW_STEPS = (
    "entries",
    "events",
    "jets",
    "selected_jets",
    "tracks",
    "tracks_in_cone",
    "tracks_valid_dxy",
)

def _cat_axes() -> list:
    return [
        hist.axis.StrCategory([], growth=True, name="dataset", label="Dataset"),
        hist.axis.StrCategory(list(flav.LABELS), name="flavour", label="Jet flavour"),
    ]


def make_histograms(*, cone_dr: float = 0.5, with_dxy: bool = True) -> dict[str, hist.Hist]:
    """Empty histograms this processor fills (axis labels carry units)."""
    h = {
        "jet_pt": hist.Hist(
            *_cat_axes(), hist.axis.Regular(120, 0, 1200, name="pt", label=r"Jet $p_T$ [GeV]")
        ),
        "jet_eta": hist.Hist(
            *_cat_axes(), hist.axis.Regular(50, -2.5, 2.5, name="eta", label=r"Jet $\eta$")
        ),
        "jet_n_tracks": hist.Hist(
            *_cat_axes(), hist.axis.Integer(0, 60, name="n", label="Tracks per jet")
        ),
        "track_jet_dr": hist.Hist(
            *_cat_axes(),
            hist.axis.Regular(50, 0, cone_dr, name="dr", label=r"$\Delta R$(track, jet)"),
        ),
    }
    if with_dxy:
        h["track_dxy"] = hist.Hist(
            *_cat_axes(),
            hist.axis.Regular(200, -0.1, 0.1, name="dxy", label=r"Track $d_{xy}$ [cm]"),
        )
        h["track_abs_dxy"] = hist.Hist(
            *_cat_axes(),
            hist.axis.Regular(
                70, 1e-5, 50, transform=hist.axis.transform.log, name="absdxy",
                label=r"Track $|d_{xy}|$ [cm]",
            ),
        )
        h["track_dxy_significance"] = hist.Hist(
            *_cat_axes(),
            hist.axis.Regular(
                100, -50, 50, name="sig", label=r"Track $d_{xy}/\sigma(d_{xy})$"
            ),
        )
        # Lifetime-signed: |dxy| with the sign of the track's closest approach projected on
        # the jet axis (jettracks.physics.impact.signed_dxy).
        h["track_sdxy"] = hist.Hist(
            *_cat_axes(),
            hist.axis.Regular(
                200, -0.1, 0.1, name="sdxy",
                label=r"Track lifetime-signed $d_{xy}$ [cm] ($|d_{xy}|\,\mathrm{sign}(\vec{d}_{xy}\cdot\hat{p}_T^{jet})$)",
            ),
        )
        h["track_sdxy_significance"] = hist.Hist(
            *_cat_axes(),
            hist.axis.Regular(
                100, -50, 50, name="sig", label=r"Track lifetime-signed $d_{xy}/\sigma(d_{xy})$"
            ),
        )
    return h


def fresh_histograms(*, cone_dr: float = 0.5, with_dxy: bool = True, weighted: bool = False) -> dict[str, hist.Hist]:
    """Empty histograms to fill: :func:`make_histograms`, or (``weighted``) the ``NAME_weighted``
    ones of :data:`jettracks.normalisation.WEIGHTED_HISTS` (same axes, ``Weight`` storage).

    Unpickled from a template made once (0.18 ms against 0.51 ms to build them; a chunk's
    sub-batches each need both sets).
    """
    return pickle.loads(_histogram_template(float(cone_dr), bool(with_dxy), bool(weighted)))


@functools.lru_cache(maxsize=32)
def _histogram_template(cone_dr: float, with_dxy: bool, weighted: bool) -> bytes:
    base = make_histograms(cone_dr=cone_dr, with_dxy=with_dxy)
    if weighted:
        base = {weighted_name(name): hist.Hist(*base[name].axes, storage=hist.storage.Weight())
                for name in WEIGHTED_HISTS if name in base}
    return pickle.dumps(base, protocol=pickle.HIGHEST_PROTOCOL)


class ByLabel:
    """Rows grouped by flavour with one stable sort, to fill histograms a flavour at a time.

    boost-histogram converts a string category array value by value (60k rows with random
    labels: 2.45 ms), a single label once (the same rows a label at a time: 0.34 ms). The rows of a
    label keep their order, so every bin adds up its entries in the order of one fill of all
    rows: weighted sums are equal to the bit.

    Args:
        codes: a flavour code per row (:data:`jettracks.physics.flavour.CODES`).
        label_of: the label of each code present.
    """

    def __init__(self, codes: np.ndarray, label_of: dict[int, str]) -> None:
        codes = np.asarray(codes)
        order = np.argsort(codes, kind="stable")
        ordered = codes[order]
        bounds = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1], [True]])) if len(codes) else []
        self.label_of = label_of
        self.groups = [(label_of[int(ordered[a])], order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]

    @classmethod
    def of_jets(cls, codes: np.ndarray, labels: np.ndarray) -> ByLabel:
        codes, labels = np.asarray(codes), np.asarray(labels)
        first = np.unique(codes, return_index=True)[1]
        return cls(codes, {int(codes[i]): str(labels[i]) for i in first})

    def repeat(self, codes: np.ndarray, n_per_row: np.ndarray) -> ByLabel:
        """The grouping of the rows' children (``n_per_row`` each: tracks of jets)."""
        return ByLabel(np.repeat(np.asarray(codes), n_per_row), self.label_of)

    def fill(self, h: hist.Hist, *, dataset: str, where: np.ndarray | None = None,
             weight: np.ndarray | None = None, **axes: np.ndarray) -> None:
        """``h.fill(dataset=dataset, flavour=<each row's label>, **axes, weight=weight)`` over
        the rows ``where`` is true (all rows without it), through the compiled fill
        (:func:`_compiled_fill`)."""
        names = [a.name for a in h.axes]
        raw = _compiled_fill(h, weighted=weight is not None)
        for label, rows in self.groups:
            if where is not None:
                rows = rows[where[rows]]
            values = [dataset if n == "dataset" else label if n == "flavour" else axes[n][rows] for n in names]
            w = None if weight is None else weight[rows]
            if raw is None:
                h.fill(*values, weight=w)
            else:
                raw.fill(*values, weight=w, sample=None)
        if raw is not None:
            _read_back_axes(h)


def _compiled_fill(h: hist.Hist, *, weighted: bool) -> Any:
    """The compiled histogram of ``h`` when a fill may go to it directly, else None.

    boost-histogram's compiled fill, without hist's per-call Python layer: 35 us a call
    against 1 us, and :class:`ByLabel` fills ~80 times a sub-batch. What the public fill adds
    is done by :func:`_read_back_axes`. A weight into a storage without variances (the public
    fill then marks the variances unknown), or a hist without the compiled object, goes
    through the public fill. Tested equal to ``Hist.fill`` over axes and storages, so that a
    boost-histogram release changing these internals is caught.
    """
    raw = getattr(h, "_hist", None)
    if raw is None or not hasattr(h, "_generate_axes_"):
        return None
    if weighted and not issubclass(h.storage_type, bh.storage.Weight):
        return None
    return raw


def _read_back_axes(h: hist.Hist) -> None:
    """The public fill's last step: the Python axes made again from the compiled ones when
    one grew (a category axis with ``growth``: the only change a fill makes to axes)."""
    raw = h._hist
    if any(raw.axis(i).size != len(a) for i, a in enumerate(h.axes)):
        h.axes = h._generate_axes_()


@dataclass
class ChunkAnalysis:
    """One chunk after selection and association (flat over selected jets).

    Attributes:
        batch: the reader's :class:`~jettracks.readers.base.EventBatch`.
        jets: selected jets (flat records: pt, eta, phi, mass, index, flavour fields).
        jet_event: index of each selected jet's event in the batch.
        jet_tracks: jagged [jet][track] records: pt, eta, phi, charge, dxy, dxy_err, dz (cm), dr.
        flavour_codes: :data:`jettracks.physics.flavour.CODES` per selected jet.
        flavour_labels: their labels (``b``, ``c``, ``uds``, ``g``, ``unmatched``, ``data``).
        flavour_definition: the definition used (``hadron``, ``parton``, ``physics``, ``data``).
        labels_by_definition: labels per selected jet under every definition the
            chunk's truth branches allow (empty for collision data); computed once
            per chunk and shared by the histograms and the ML columns.
        n_events: events in the chunk; for per-jet formats the events that begin in it
            (``analyse`` assumes the chunk begins at an event boundary, ``process``
            checks the entry before the chunk: :func:`count_event_starts`).
        n_jets: jets in the chunk before the selection.
        n_tracks_selected: tracks passing the track selection (charge, pT) before association.
        is_mc: simulation (weighted histograms use ``genWeight``) or collision data (weight 1).
        n_events_certified: events inside the certification JSON (None: no mask).
    """

    batch: Any
    jets: ak.Array
    jet_event: np.ndarray
    jet_tracks: ak.Array
    flavour_codes: np.ndarray
    flavour_labels: np.ndarray
    flavour_definition: str
    labels_by_definition: dict[str, np.ndarray]
    n_events: int
    n_jets: int
    n_tracks_selected: int
    is_mc: bool = True
    n_events_certified: int | None = None
    _dxy: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _sdxy: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    _fields: tuple[np.ndarray, Any] | None = field(default=None, repr=False)
    _by_label: tuple[ByLabel, ByLabel] | None = field(default=None, repr=False)

    def by_label(self) -> tuple[ByLabel, ByLabel]:
        """``(jets, tracks)`` grouped by flavour label (:class:`ByLabel`; computed once)."""
        if self._by_label is None:
            jets = ByLabel.of_jets(self.flavour_codes, self.flavour_labels)
            self._by_label = (jets, jets.repeat(self.flavour_codes, self.n_per_jet()))
        return self._by_label

    def n_per_jet(self) -> np.ndarray:
        """Associated tracks per selected jet (int64)."""
        return self._jagged_fields()[0]

    def track_field(self, name: str) -> np.ndarray:
        """One field of every associated track, flat over the selected jets (numpy)."""
        return self._jagged_fields()[1](name)

    def _jagged_fields(self) -> tuple[np.ndarray, Any]:
        if self._fields is None:  # once a chunk: histograms, cut flow and ML columns share it
            self._fields = readers.base.jagged_fields(self.jet_tracks)
        return self._fields

    def track_dxy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat ``(dxy_cm, dxy_err_cm, valid)`` over all associated tracks (computed once).

        ``valid``: :func:`jettracks.physics.impact.valid_dxy` (finite dxy and ``dxy_err > 0``),
        the definition the ML columns use too.
        """
        if self._dxy is None:
            dxy = self.track_field("dxy").astype(np.float64)
            dxy_err = self.track_field("dxy_err").astype(np.float64)
            self._dxy = (dxy, dxy_err, valid_dxy(dxy, dxy_err))
        return self._dxy

    def select(self, keep: np.ndarray) -> ChunkAnalysis:
        """The same chunk with only the selected jets where ``keep`` (bool per selected jet):
        the lumi mask acts here, after the per-lumisection summaries saw every event."""
        keep = np.asarray(keep, dtype=bool)
        return dataclasses.replace(
            self,
            jets=self.jets[keep],
            jet_event=self.jet_event[keep],
            jet_tracks=self.jet_tracks[keep],
            flavour_codes=np.asarray(self.flavour_codes)[keep],
            flavour_labels=np.asarray(self.flavour_labels)[keep],
            labels_by_definition={k: np.asarray(v)[keep] for k, v in self.labels_by_definition.items()},
            _dxy=None,
            _sdxy=None,
            _fields=None,
            _by_label=None,
        )

    def track_sdxy(self) -> tuple[np.ndarray, np.ndarray]:
        """Flat ``(sdxy_cm, sdxy_sig)`` over all associated tracks (computed once).

        :func:`jettracks.physics.impact.signed_dxy`: ``|dxy| · sign(dxy · sin(φ_jet − φ_trk))``,
        the sign of the projection of the track's point of closest approach onto its
        jet's axis in the transverse plane; NaN where the dxy is not valid.
        """
        if self._sdxy is None:
            dxy, dxy_err, _ = self.track_dxy()
            jet_phi = np.repeat(ak.to_numpy(self.jets["phi"]).astype(np.float64), self.n_per_jet())
            trk_phi = self.track_field("phi").astype(np.float64)
            self._sdxy = signed_dxy(dxy, dxy_err, trk_phi, jet_phi)
        return self._sdxy


class JetTrackProcessor(processor.ProcessorABC):
    """Tracks within ΔR of each jet, their dxy, and the jet's flavour.

    Args (all keyword-only):
        cone_dr: cone radius R (dimensionless), strict ``ΔR < R``. Default 0.5.
        jet_pt_min: jet ``pt >`` this (GeV). Default 30.
        jet_abs_eta_max: jet ``|eta| <`` this. Default 2.5.
        track_pt_min: track ``pt >=`` this (GeV). Default 1.
        assignment: ``all`` (a track may be in several cones) or ``nearest``.
        flavour: ``auto`` (the format's default), ``hadron``, ``parton`` or ``physics``.
        association: ``dr`` (ΔR cone) or ``constituents`` (PFNano links, where present).
        compare_association: where constituent links exist, count (jet, track) pairs
            found by the ΔR cone, by the links, and by both (``association_comparison``
            in the output and the run report).
        ml_dir: directory for the per-chunk ML parts (Arrow IPC,
            :func:`jettracks.io.mldata.write_part`); ``None`` disables them.
        ml_pad_tracks: also write fixed-length ``pad_track_*`` arrays of this many
            tracks (+ ``pad_mask``); ``None``: lists only.
        ml_sort_key: order of the padded tracks, largest first: ``abs_dxy_sig``
            (default), ``abs_dxy``, ``pt`` or ``dr`` (nearest first).
        reader_options: options passed to every format reader.
    """

    def __init__(
        self,
        *,
        cone_dr: float = 0.5,
        jet_pt_min: float = 30.0,
        jet_abs_eta_max: float = 2.5,
        track_pt_min: float = 1.0,
        assignment: str = "all",
        flavour: str = "auto",
        association: str = "dr",
        compare_association: bool = False,
        ml_dir: str | None = None,
        ml_pad_tracks: int | None = None,
        ml_sort_key: str = "abs_dxy_sig",
        reader_options: dict[str, Any] | None = None,
    ) -> None:
        if not cone_dr > 0:
            raise ValueError(f"cone_dr must be > 0, got {cone_dr!r}")
        if assignment not in ("all", "nearest"):
            raise ValueError(f"assignment must be 'all' or 'nearest', got {assignment!r}")
        if flavour not in ("auto", *flav.DEFINITIONS):
            raise ValueError(f"flavour must be auto or one of {flav.DEFINITIONS}, got {flavour!r}")
        if association not in ("dr", "constituents"):
            raise ValueError(f"association must be 'dr' or 'constituents', got {association!r}")
        self.cone_dr = float(cone_dr)
        self.jet_pt_min = float(jet_pt_min)
        self.jet_abs_eta_max = float(jet_abs_eta_max)
        self.track_pt_min = float(track_pt_min)
        self.assignment = assignment
        self.flavour = flavour
        self.association = association
        self.ml_dir = ml_dir
        self.ml_pad_tracks = int(ml_pad_tracks) if ml_pad_tracks else None
        self.ml_sort_key = ml_sort_key
        self.reader_options = dict(reader_options or {})
        self.compare_association = bool(compare_association)
        if association == "constituents" or self.compare_association:
            self.reader_options.setdefault("links", True)

    # -- helpers ---------------------------------------------------------------
    def reader_for(self, fmt: str) -> readers.Reader:
        return readers.get(fmt, **self.reader_options)

    def columns(self, fmt: str, available: set[str] | None = None) -> list[str]:
        """The column plan: branches of format ``fmt`` that this processor's outputs need.

        The histograms and cut flow need the reader's required and optional branches
        (flavour, links when asked for); the ML columns also need the reader's
        ``ml_only_branches`` (e.g. PFNano's ``Jet_mass`` and ``PFCands_dz``), read only
        when ``ml_dir`` is set. ``available``: the file's branches, to drop optional
        ones it lacks (``None``: the engine drops them when reading).
        """
        return self.reader_for(fmt).branches(available, ml=self.ml_dir is not None)

    def columns_any_int_width(self, fmt: str) -> tuple[str, ...]:
        """Branches of the column plan taken at any integer width (the reader's
        ``any_int_width``): a column cache serves them narrowed, without widening."""
        return self.reader_for(fmt).any_int_width

    def _flavour(self, jets: ak.Array, batch, reader, is_mc: bool):
        """``(codes, labels, definition, labels_by_definition)`` of the selected jets.

        Codes are computed once per available definition (:func:`jettracks.physics.flavour.codes_by_definition`);
        the run's definition (``flavour`` option, or the format's default) must be among them.
        """
        definition = reader.default_flavour if self.flavour == "auto" else self.flavour
        if not is_mc or not batch.flavour_fields:
            codes = flav.flavour_codes(definition=definition, n=len(jets), is_data=True)
            return codes, flav.flavour_labels(codes), "data", {}
        truth = {
            name.split("_")[0]: ak.to_numpy(jets[name])
            for name in ("hadron_flavour", "parton_flavour", "physics_flavour")
            if name in batch.flavour_fields
        }
        codes_by_definition = flav.codes_by_definition(**truth)
        if definition not in codes_by_definition:
            flav.flavour_codes(definition=definition, **truth)  # raises: its branch is absent
        labels = {d: flav.flavour_labels(c) for d, c in codes_by_definition.items()}
        return codes_by_definition[definition], labels[definition], definition, labels

    # -- per-chunk analysis (shared by both engines) -----------------------------
    def analyse(self, columns: Any, *, fmt: str, is_mc: bool = True) -> ChunkAnalysis:
        """Read, select, associate and label one chunk; no histograms, no I/O.

        Args:
            columns: mapping branch name -> awkward array (NanoEvents under
                ``BaseSchema``, ``tree.arrays(...)``, or a concrete dask-awkward partition).
            fmt: reader name (``pfnano``, ``jetntuple``, ...).
            is_mc: simulation (flavour from truth branches) or collision data.
        """
        reader = self.reader_for(fmt)
        # A file of the dataset without a branch the reader needs: name it (a retry cannot help).
        meta = getattr(columns, "metadata", None) or {}
        reader.check(reader.fields_of(columns), filename=meta.get("filename", "?"), ml=self.ml_dir is not None)
        batch = reader.read(columns)

        # Flat jets and their selection.
        n_jets_per_event = ak.to_numpy(ak.num(batch.jets, axis=1)).astype(np.int64)
        jets_flat = ak.flatten(batch.jets, axis=1)
        jet_pt = ak.to_numpy(jets_flat["pt"])
        jet_eta = ak.to_numpy(jets_flat["eta"])
        jet_sel = (jet_pt > self.jet_pt_min) & (np.abs(jet_eta) < self.jet_abs_eta_max)
        jet_event = np.repeat(np.arange(batch.n_events, dtype=np.int64), n_jets_per_event)
        sel_event = jet_event[jet_sel]
        jets = ak.to_packed(jets_flat[jet_sel])  # projected once: every later field read is a view
        n_sel_per_event = np.bincount(sel_event, minlength=batch.n_events).astype(np.int64)

        if batch.tracks is not None:
            n_tracks_selected, jet_tracks = self._associate_event_tracks(
                batch, jets, n_sel_per_event
            )
        elif batch.jet_tracks is not None or batch.stored_tracks is not None:
            n_tracks_selected, jet_tracks = self._associate_stored(batch, jet_sel)
        else:
            n_tracks_selected = 0
            jet_tracks = ak.unflatten(
                ak.zip({f: np.zeros(0, np.float32) for f in (*readers.base.TRACK_FIELDS, "dr")}),
                np.zeros(len(jets), dtype=np.int64),
            )
        codes, labels, definition, labels_by_definition = self._flavour(jets, batch, reader, is_mc)
        n_events = batch.n_events
        if reader.per_jet_entries:
            # Provisional: the chunk's first entry counted as an event start;
            # ``process`` corrects it with the entry before the chunk (needs the file).
            n_events = count_event_starts(batch.run, batch.lumi, batch.event)
        return ChunkAnalysis(
            batch=batch,
            jets=jets,
            jet_event=sel_event,
            jet_tracks=jet_tracks,
            flavour_codes=codes,
            flavour_labels=labels,
            flavour_definition=definition,
            labels_by_definition=labels_by_definition,
            n_events=int(n_events),
            n_jets=int(len(jet_pt)),
            n_tracks_selected=int(n_tracks_selected),
            is_mc=bool(is_mc),
        )

    def event_weights(self, chunk: ChunkAnalysis) -> np.ndarray | None:
        """Per-event weights of the ``*_weighted`` histograms: ``genWeight`` for simulation
        where the format has it, else None (weight 1). Normalised at the end of the run
        (:mod:`jettracks.normalisation`: xsec · lumi / Σ genWeight per dataset)."""
        if chunk.is_mc and chunk.batch.gen_weight is not None:
            return np.asarray(chunk.batch.gen_weight, dtype=np.float64)
        return None

    def fill_weighted(self, dataset: str, chunk: ChunkAnalysis) -> dict[str, hist.Hist]:
        """``NAME_weighted`` histograms (``hist.storage.Weight``) of
        :data:`jettracks.normalisation.WEIGHTED_HISTS`, each jet and track weighted by its
        event's ``genWeight`` (1 for collision data and formats without it)."""
        labels = chunk.flavour_labels
        n_per_jet = chunk.n_per_jet()
        w_evt = self.event_weights(chunk)
        w_jet = np.ones(len(labels)) if w_evt is None else w_evt[chunk.jet_event]
        out = fresh_histograms(cone_dr=self.cone_dr, with_dxy=chunk.batch.has_dxy, weighted=True)
        jets = chunk.jets
        by_jet, by_track = chunk.by_label()
        by_jet.fill(out["jet_pt_weighted"], dataset=dataset, pt=ak.to_numpy(jets["pt"]), weight=w_jet)
        by_jet.fill(out["jet_eta_weighted"], dataset=dataset, eta=ak.to_numpy(jets["eta"]), weight=w_jet)
        by_jet.fill(out["jet_n_tracks_weighted"], dataset=dataset, n=n_per_jet, weight=w_jet)
        if chunk.batch.has_dxy:
            _, _, valid = chunk.track_dxy()
            sdxy, ssig = chunk.track_sdxy()
            w_trk = np.repeat(w_jet, n_per_jet)
            by_track.fill(out["track_sdxy_weighted"], dataset=dataset, where=valid, sdxy=sdxy, weight=w_trk)
            by_track.fill(out["track_sdxy_significance_weighted"], dataset=dataset, where=np.isfinite(ssig),
                          sig=ssig, weight=w_trk)
        return out

    def fill(self, dataset: str, chunk: ChunkAnalysis) -> dict[str, hist.Hist]:
        """Histograms of one analysed chunk (see :func:`make_histograms`)."""
        jets = chunk.jets
        n_per_jet = chunk.n_per_jet()
        by_jet, by_track = chunk.by_label()
        hists = fresh_histograms(cone_dr=self.cone_dr, with_dxy=chunk.batch.has_dxy)
        by_jet.fill(hists["jet_pt"], dataset=dataset, pt=ak.to_numpy(jets["pt"]))
        by_jet.fill(hists["jet_eta"], dataset=dataset, eta=ak.to_numpy(jets["eta"]))
        by_jet.fill(hists["jet_n_tracks"], dataset=dataset, n=n_per_jet)
        by_track.fill(hists["track_jet_dr"], dataset=dataset, dr=chunk.track_field("dr"))
        if chunk.batch.has_dxy:
            dxy, dxy_err, valid = chunk.track_dxy()
            by_track.fill(hists["track_dxy"], dataset=dataset, where=valid, dxy=dxy)
            by_track.fill(hists["track_abs_dxy"], dataset=dataset, where=valid, absdxy=np.abs(dxy))
            # NanoAOD IsoTracks carry no dxy error (reader sets +inf): no significance for them.
            sig = dxy_significance(dxy, dxy_err)
            has_sig = np.isfinite(sig)
            by_track.fill(hists["track_dxy_significance"], dataset=dataset, where=has_sig, sig=sig)
            sdxy, ssig = chunk.track_sdxy()
            by_track.fill(hists["track_sdxy"], dataset=dataset, where=valid, sdxy=sdxy)
            by_track.fill(hists["track_sdxy_significance"], dataset=dataset, where=has_sig, sig=ssig)
        return hists

    def cutflow(self, chunk: ChunkAnalysis) -> dict[str, int]:
        """Counts of the cut flow (:data:`CUTFLOW_STEPS`) for one analysed chunk."""
        dxy, _, valid = chunk.track_dxy()
        certified = {} if chunk.n_events_certified is None else {"events_certified": chunk.n_events_certified}
        return {
            "entries": int(chunk.batch.n_entries),
            "events": chunk.n_events,
            **certified,
            "jets": chunk.n_jets,
            "selected_jets": int(len(chunk.jets)),
            "tracks": chunk.n_tracks_selected,
            "tracks_in_cone": int(len(dxy)),
            "tracks_valid_dxy": int(valid.sum()) if chunk.batch.has_dxy else 0,
        }

    # -- the ProcessorABC contract --------------------------------------------------
    def process(self, events) -> dict[str, Any]:
        meta = dict(events.metadata)
        dataset = meta["dataset"]
        fmt = meta["format"]
        chunk = self.analyse(events, fmt=fmt, is_mc=bool(meta.get("is_mc", True)))
        batch = chunk.batch
        if self.reader_for(fmt).per_jet_entries and batch.n_events:
            # One entry per jet: count each event once, in the chunk holding its first jet.
            previous = previous_entry_ids(meta)
            chunk.n_events = count_event_starts(batch.run, batch.lumi, batch.event, previous=previous)
        notices = set(batch.notices)
        notices.add(f"{dataset}: flavour definition {chunk.flavour_definition}")
        lumisections = None
        per_jet = self.reader_for(fmt).per_jet_entries
        if (not chunk.is_mc or meta.get("lumi_summary")) and not per_jet:
            # Per-lumisection summaries on every event, before the certification mask.
            lumisections = {dataset: self._lumi_summary(chunk)}
        certification = meta.get("lumi_mask")
        if certification is not None:
            if per_jet:
                raise ValueError(f"{dataset}: lumi_mask needs an event-level format, not {fmt}")
            in_mask = lumitools.mask_events(certification, batch.run, batch.lumi)
            chunk = chunk.select(in_mask[chunk.jet_event])
            chunk.n_events_certified = int(in_mask.sum())
        if not batch.has_dxy:
            notices.add(f"{dataset}: format {fmt} has no impact parameters; dxy histograms absent")
        ml_parts: list[str] = []
        if self.ml_dir is not None:
            ml_parts.append(self._write_ml_part(meta, chunk))
        w_evt = self.event_weights(chunk)
        if chunk.is_mc and w_evt is None:
            notices.add(f"{dataset}: format {fmt} has no genWeight: simulation weighted 1 per event")
        sums = genweight_sums(w_evt if w_evt is not None else np.ones(chunk.n_events))
        out = {
            "hists": {**self.fill(dataset, chunk), **self.fill_weighted(dataset, chunk)},
            "genweights": {dataset: {meta.get("filename", "?"): sums}},
            "cutflow": {dataset: self.cutflow(chunk)},
            "entries": {meta.get("filename", "?"): int(batch.n_entries)},
            "notices": notices,
            "ml_parts": ml_parts,
        }
        if lumisections is not None:
            out["lumisections"] = lumisections
        if self.compare_association and batch.links is not None:
            out["association_comparison"] = {
                dataset: compare_association(
                    batch,
                    cone_dr=self.cone_dr,
                    jet_pt_min=self.jet_pt_min,
                    jet_abs_eta_max=self.jet_abs_eta_max,
                    track_pt_min=self.track_pt_min,
                    assignment=self.assignment,
                )
            }
        return out

    def _lumi_summary(self, chunk: ChunkAnalysis) -> dict[str, np.ndarray]:
        """Per-(run, lumi) additive vectors of one chunk (:func:`jettracks.lumi.chunk_summary`)."""
        batch = chunk.batch
        dxy, dxy_err, valid = chunk.track_dxy()
        _, ssig = chunk.track_sdxy()
        return lumitools.chunk_summary(
            batch.run, batch.lumi,
            jets_per_event=ak.to_numpy(ak.num(batch.jets, axis=1)),
            sel_jet_event=chunk.jet_event,
            tracks_per_sel_jet=chunk.n_per_jet(),
            dxy=dxy, dxy_sig=dxy_significance(dxy, dxy_err), sdxy_sig=ssig,
            valid=valid if batch.has_dxy else np.zeros(len(dxy), bool),
        )

    def postprocess(self, accumulator):
        return accumulator

    # -- association -------------------------------------------------------------------
    def _associate_event_tracks(self, batch, jets, n_sel_per_event):
        n_trk, track_field = readers.base.jagged_fields(batch.tracks)  # flat buffers, read once
        trk_offsets = np.concatenate([[0], np.cumsum(n_trk)])
        jet_offsets = np.concatenate([[0], np.cumsum(n_sel_per_event)])
        mask = (track_field("charge") != 0) & (track_field("pt") >= self.track_pt_min)
        if self.association == "constituents" and batch.links is not None:
            n_per_jet, index, dr = self._constituents(batch, jets, jet_offsets, trk_offsets, mask)
        else:
            reads = KERNEL_COLUMNS["reads"]
            n_per_jet, index, dr = associate_tracks(
                *(ak.to_numpy(jets[f]) for f in reads["jets"]),
                jet_offsets,
                *(track_field(f) for f in reads["tracks"]),
                trk_offsets,
                cone_dr=self.cone_dr,
                mode=self.assignment,
                trk_mask=mask,
            )
        # NaN for unmeasured impact parameters here, on the associated tracks only.
        cols = batch.gather_tracks(index, [
            f for f in (*readers.base.TRACK_FIELDS, *readers.base.OPTIONAL_TRACK_FIELDS)
            if f in batch.tracks.fields  # fields only the ML columns use may be unread
        ])
        cols["dr"] = dr.astype(np.float32)
        if batch.links is not None and "sip3d" in batch.links.fields:
            cols.update(_link_values(batch.links, jets, n_sel_per_event, n_per_jet, index, trk_offsets))
        return int(mask.sum()), readers.base.jagged_records(cols, n_per_jet)

    def _constituents(self, batch, jets, jet_offsets, trk_offsets, mask):
        """Constituent association from JetPFCands links (selected jets, selected tracks)."""
        links = batch.links
        n_links = ak.to_numpy(ak.num(links, axis=1)).astype(np.int64)
        ev = np.repeat(np.arange(len(n_links)), n_links)
        link_jet = ak.to_numpy(ak.flatten(links["jet"])).astype(np.int64)
        link_cand = ak.to_numpy(ak.flatten(links["cand"])).astype(np.int64)
        # Map file-level jet index -> selected-jet position.
        index_in_event = ak.to_numpy(jets["index"]).astype(np.int64)
        sel_ev = np.repeat(np.arange(len(jet_offsets) - 1), np.diff(jet_offsets))
        key_sel = sel_ev * 100_000 + index_in_event
        key_link = ev * 100_000 + link_jet
        order = np.argsort(key_sel)
        pos = np.searchsorted(key_sel[order], key_link)
        pos = np.clip(pos, 0, max(len(order) - 1, 0))
        found = (len(order) > 0) & (key_sel[order][pos] == key_link) if len(order) else np.zeros(len(key_link), bool)
        cand_global = trk_offsets[ev] + link_cand
        keep = found & mask[cand_global]
        jet_pos = order[pos[keep]]
        cand_global = cand_global[keep]
        sort = np.lexsort((cand_global, jet_pos))
        jet_pos, cand_global = jet_pos[sort], cand_global[sort]
        n_per_jet = np.bincount(jet_pos, minlength=len(index_in_event)).astype(np.int64)
        tracks_flat = ak.flatten(batch.tracks, axis=1)
        dr = delta_r(
            ak.to_numpy(tracks_flat["eta"])[cand_global],
            ak.to_numpy(tracks_flat["phi"])[cand_global],
            ak.to_numpy(jets["eta"])[jet_pos],
            ak.to_numpy(jets["phi"])[jet_pos],
        )
        return n_per_jet, cand_global, dr

    def _associate_stored(self, batch, jet_sel):
        if batch.stored_tracks is not None:
            # One compiled pass over the flat buffers (JetNtuple): only tracks in the cone are built.
            n_selected, counts, cols = batch.stored_tracks.select(
                jet_sel, track_pt_min=self.track_pt_min, cone_dr=self.cone_dr)
            return n_selected, _stored_jet_tracks(counts[jet_sel], cols)
        per_jet = ak.flatten(batch.jet_tracks, axis=1)[jet_sel]
        charged = (per_jet["charge"] != 0) & (per_jet["pt"] >= self.track_pt_min)
        n_selected = int(ak.sum(charged))
        in_cone = charged & (per_jet["dr"] < self.cone_dr)
        return n_selected, per_jet[in_cone]

    # -- ML columns ------------------------------------------------------------------------
    def _write_ml_part(self, meta, chunk: ChunkAnalysis) -> str:
        batch, jets = chunk.batch, chunk.jets
        columns = mldata.jet_columns(
            dataset=meta["dataset"],
            run=batch.run[chunk.jet_event],
            lumi=batch.lumi[chunk.jet_event],
            event=batch.event[chunk.jet_event],
            jets=jets,
            jet_tracks=chunk.jet_tracks,
            flavour_codes=chunk.flavour_codes,
            flavour_labels=chunk.flavour_labels,
            flavour_definition=chunk.flavour_definition,
            labels_by_definition=chunk.labels_by_definition,
            flavour_fields=batch.flavour_fields,
            has_dxy=batch.has_dxy,
            signed=chunk.track_sdxy() if batch.has_dxy else None,
            is_signal=bool(meta.get("is_signal", False)),
            pad_tracks=self.ml_pad_tracks,
            sort_key=self.ml_sort_key,
        )
        # File path hash + UUID: copies of one file (same UUID) must not share a part name.
        name = "part-{ds}-{path}-{uuid}-{start}-{stop}{suffix}".format(
            ds=meta["dataset"],
            path=hashlib.sha1(str(meta.get("filename", "")).encode()).hexdigest()[:8],
            uuid=(meta.get("fileuuid") or uuid.uuid4().hex)[:36],
            start=meta.get("entrystart", 0),
            stop=meta.get("entrystop", 0),
            suffix=mldata.PART_SUFFIX,
        )
        return mldata.write_part(self.ml_dir, name, columns)


def _stored_jet_tracks(counts: np.ndarray, cols: dict[str, np.ndarray]) -> ak.Array:
    """``[jet][track]`` records over flat track columns (the track fields in their usual
    order; ``dxy``, ``dxy_err``, ``dz`` NaN: stored per-jet formats have none)."""
    nan = np.full(int(np.sum(counts)), np.nan, dtype=np.float32)
    fields = {f: cols[f] for f in ("pt", "eta", "phi", "charge") if f in cols}
    fields.update(dxy=nan, dxy_err=nan, dz=nan, dr=cols["dr"])
    return readers.base.jagged_records(fields, counts)


def _link_values(links, jets, n_sel_per_event, n_per_jet, index, trk_offsets) -> dict[str, np.ndarray]:
    """Per associated (jet, track) pair, the per-link values (``sip3d``, ``sip3d_sig``) of the
    link joining that jet and candidate; NaN where there is none (a track in the ΔR cone that
    is not a constituent). Only the associated pairs are looked up (no per-candidate arrays).
    """
    n_link = readers.base.counts(links)
    link_ev = np.repeat(np.arange(len(n_link), dtype=np.int64), n_link)
    link_jet = readers.base.flat(links["jet"], np.int64)
    link_cand = readers.base.flat(links["cand"], np.int64)
    sel_ev = np.repeat(np.arange(len(n_sel_per_event), dtype=np.int64), n_sel_per_event)
    pair_ev = np.repeat(sel_ev, n_per_jet)
    pair_jet = np.repeat(ak.to_numpy(jets["index"]).astype(np.int64), n_per_jet)
    pair_cand = np.asarray(index, dtype=np.int64) - trk_offsets[pair_ev]
    n_cand_max = int(max(np.diff(trk_offsets).max(initial=0), link_cand.max(initial=-1) + 1, 1))
    n_jet_max = int(max(link_jet.max(initial=-1), pair_jet.max(initial=-1)) + 1)
    link_key = (link_ev * n_jet_max + link_jet) * n_cand_max + link_cand
    pair_key = (pair_ev * n_jet_max + pair_jet) * n_cand_max + pair_cand
    order = np.argsort(link_key, kind="stable")
    sorted_keys = link_key[order]
    pos = np.clip(np.searchsorted(sorted_keys, pair_key), 0, max(len(order) - 1, 0))
    found = (sorted_keys[pos] == pair_key) if len(order) else np.zeros(len(pair_key), bool)
    out = {}
    for name in ("sip3d", "sip3d_sig"):
        if name in links.fields:
            values = readers.base.flat(links[name], np.float32)
            out[name] = np.where(found, values[order][pos] if len(order) else np.float32(np.nan), np.float32(np.nan))
    return out


def count_event_starts(
    run: np.ndarray,
    lumi: np.ndarray,
    event: np.ndarray,
    *,
    previous: tuple[int, int, int] | None = None,
) -> int:
    """Events that *begin* in a chunk of a per-jet format (one tree entry per jet).

    Jets of one event are consecutive entries sharing ``(run, lumi, event)``
    (in descending pT, as record 12100's producer writes them). An entry begins
    an event when its ``(run, lumi, event)`` differs from the entry just before
    it. For the chunk's first entry that is the entry before the chunk: ``previous`` holds its
    ``(run, lumi, event)``, or is ``None`` when the chunk begins the file (then the
    first entry begins an event). Counting only starts counts every event exactly
    once whatever the chunking: an event whose jets straddle a chunk boundary
    belongs to the chunk holding its first jet.
    """
    n = len(run)
    if n == 0:
        return 0
    run = np.asarray(run, dtype=np.int64)
    lumi = np.asarray(lumi, dtype=np.int64)
    event = np.asarray(event, dtype=np.uint64)
    change = (run[1:] != run[:-1]) | (lumi[1:] != lumi[:-1]) | (event[1:] != event[:-1])
    first = previous is None or (
        int(run[0]), int(lumi[0]), int(event[0])
    ) != tuple(int(x) for x in previous)
    return int(change.sum()) + int(first)


def previous_entry_ids(meta: dict[str, Any]) -> tuple[int, int, int] | None:
    """``(run, lumi, event)`` of the tree entry just before a chunk, or ``None``.

    ``meta`` is the chunk's ``events.metadata`` (``filename``, ``treename``,
    ``entrystart``, as coffea's Runner and the dask-awkward engine set them).
    ``None`` when the chunk begins its file (``entrystart == 0``) or the metadata
    does not say where the chunk lies (the chunk is then taken to begin at an
    event boundary). Reads one entry of three branches: one file open per chunk
    that does not begin its file, unless the engine put that entry's ids in
    ``meta["previous_entry"]`` (``{"run", "lumi", "event"}``: a sub-batch after the first).
    """
    previous = meta.get("previous_entry")
    if previous:  # the engine read it already (the last entry of the previous sub-batch)
        lumi = previous.get("lumi", previous.get("luminosityBlock"))
        return int(previous["run"]), int(lumi), int(previous["event"])
    start = int(meta.get("entrystart") or 0)
    filename, treename = meta.get("filename"), meta.get("treename")
    if start <= 0 or not filename or not treename:
        return None
    import uproot

    try:
        from jettracks.io.files import AutoSource
    except ImportError:  # pragma: no cover
        AutoSource = None
    options = {"handler": AutoSource} if AutoSource is not None else {}
    with uproot.open({filename: None}, **options) as f:  # the dict form: a ":" in a path is not "file:object"
        ids = f[treename].arrays(
            ["run", "lumi", "event"], entry_start=start - 1, entry_stop=start, library="np"
        )
    return int(ids["run"][0]), int(ids["lumi"][0]), int(ids["event"][0])
