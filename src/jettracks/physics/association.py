"""Compare the two ways of giving tracks to jets: ΔR cone vs. jet constituents.

PFNano files that carry ``JetPFCands_jetIdx`` / ``JetPFCands_pFCandsIdx`` (see
:mod:`jettracks.readers.pfnano`, reader option ``links: true``) say which PF
candidates the jet clustering actually put in each jet. The processor's default
association is geometric (``ΔR < R``). :func:`compare_association` counts, over
(selected jet, selected track) pairs:

``both``
    pairs found by the ΔR cone and by the constituent links;
``dr_only``
    in the cone but not a constituent (e.g. candidates of a neighbouring jet, or
    unclustered ones);
``constituents_only``
    constituents outside the cone (the AK4 clustering is not a cone: a few
    constituents sit beyond ΔR = 0.4, out to ~0.53 in ``pfnano.root``);
``dr_total`` / ``constituents_total``
    pairs of each method (``both + dr_only`` and ``both + constituents_only``).

Every value is an int, so the dict sums over chunks like coffea accumulators.
The same selections as the processor apply: jets ``pt > jet_pt_min`` and
``|eta| < jet_abs_eta_max`` (or a given mask), tracks ``charge != 0`` and
``pt >= track_pt_min``.
"""

from __future__ import annotations

import awkward as ak
import numpy as np

from .kernels import associate_tracks

__all__ = ["ASSOCIATION_COUNTS", "compare_association"]

ASSOCIATION_COUNTS = ("both", "dr_only", "constituents_only", "dr_total", "constituents_total")


def _offsets(n: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(np.asarray(n, dtype=np.int64))]).astype(np.int64)


def compare_association(
    batch,
    jet_mask: np.ndarray | None = None,
    *,
    cone_dr: float = 0.5,
    jet_pt_min: float = 30.0,
    jet_abs_eta_max: float = 2.5,
    track_pt_min: float = 1.0,
    assignment: str = "all",
) -> dict[str, int]:
    """Counts of (jet, track) pairs by ΔR cone and by constituent links.

    Args:
        batch: an :class:`~jettracks.readers.base.EventBatch` with event-level
            ``tracks`` and ``links`` (PFNano read with ``links=True``).
        jet_mask: bool over the flattened jets of the batch (the processor's
            ``jet_sel``); None selects by ``jet_pt_min`` / ``jet_abs_eta_max``.
        cone_dr: cone radius R, strict ``ΔR < R``.
        track_pt_min: track ``pt >=`` this (GeV); tracks must be charged.
        assignment: ``all`` or ``nearest`` (as the processor's ΔR association).

    Returns:
        dict with the keys of :data:`ASSOCIATION_COUNTS` (ints).

    Raises:
        ValueError: the batch has no event-level tracks or no constituent links.
    """
    if batch.tracks is None or batch.links is None:
        raise ValueError(
            "compare_association needs event-level tracks and constituent links "
            "(PFNano with JetPFCands_*, read with reader option links=true)"
        )
    n_jet = ak.to_numpy(ak.num(batch.jets, axis=1)).astype(np.int64)
    n_trk = ak.to_numpy(ak.num(batch.tracks, axis=1)).astype(np.int64)
    jets = ak.flatten(batch.jets, axis=1)
    tracks = ak.flatten(batch.tracks, axis=1)
    jet_eta = ak.to_numpy(jets["eta"]).astype(np.float64)
    jet_phi = ak.to_numpy(jets["phi"]).astype(np.float64)
    if jet_mask is None:
        jet_mask = (ak.to_numpy(jets["pt"]) > jet_pt_min) & (np.abs(jet_eta) < jet_abs_eta_max)
    jet_mask = np.asarray(jet_mask, dtype=bool)
    trk_mask = (ak.to_numpy(tracks["charge"]) != 0) & (ak.to_numpy(tracks["pt"]) >= track_pt_min)

    jet_off = _offsets(n_jet)
    trk_off = _offsets(n_trk)
    n_trk_total = np.int64(max(int(trk_off[-1]), 1))

    # ΔR pairs over the selected jets: global jet index x global track index.
    jet_event = np.repeat(np.arange(len(n_jet), dtype=np.int64), n_jet)
    sel_global = np.flatnonzero(jet_mask)
    n_sel = np.bincount(jet_event[sel_global], minlength=len(n_jet)).astype(np.int64)
    counts, index, _ = associate_tracks(
        jet_eta[sel_global],
        jet_phi[sel_global],
        _offsets(n_sel),
        ak.to_numpy(tracks["eta"]),
        ak.to_numpy(tracks["phi"]),
        trk_off,
        cone_dr=cone_dr,
        mode=assignment,
        trk_mask=trk_mask,
    )
    dr_keys = np.repeat(sel_global, counts) * n_trk_total + index.astype(np.int64)

    # Constituent pairs: links to selected jets and selected tracks.
    n_link = ak.to_numpy(ak.num(batch.links, axis=1)).astype(np.int64)
    link_event = np.repeat(np.arange(len(n_link), dtype=np.int64), n_link)
    link_jet = ak.to_numpy(ak.flatten(batch.links["jet"], axis=None)).astype(np.int64)
    link_cand = ak.to_numpy(ak.flatten(batch.links["cand"], axis=None)).astype(np.int64)
    ok = (link_jet >= 0) & (link_jet < n_jet[link_event]) & (link_cand >= 0) & (link_cand < n_trk[link_event])
    jet_global = jet_off[link_event[ok]] + link_jet[ok]
    cand_global = trk_off[link_event[ok]] + link_cand[ok]
    keep = jet_mask[jet_global] & trk_mask[cand_global]
    con_keys = np.unique(jet_global[keep] * n_trk_total + cand_global[keep])
    dr_keys = np.unique(dr_keys)

    both = int(np.intersect1d(dr_keys, con_keys, assume_unique=True).size)
    return {
        "both": both,
        "dr_only": int(dr_keys.size) - both,
        "constituents_only": int(con_keys.size) - both,
        "dr_total": int(dr_keys.size),
        "constituents_total": int(con_keys.size),
    }
