"""Numba kernels: track-to-jet association by ΔR over flat arrays + offsets.

Pure numpy/numba: this module imports nothing of the project, so it can be
tested, benchmarked and reused on its own.

Data layout
-----------
A jagged collection (jets per event, tracks per event) is passed as its flat
content arrays plus an ``offsets`` array of length ``n_events + 1`` (int64),
exactly the buffers of an awkward ``ListOffsetArray``; event ``i`` owns
``content[offsets[i]:offsets[i+1]]``. Jet and track offsets must describe the
same number of events.

ΔR definition
-------------
``ΔR² = Δη² + Δφ²`` with ``Δφ`` wrapped into ``[-π, π]``, computed in float64
from the input values (float32 inputs are widened first). A track is in a jet's
cone when ``ΔR² < R²`` (strict: a track exactly at ``ΔR = R`` is outside).

Assignment modes
----------------
``all`` (default): a track inside several cones belongs to each of them.
``nearest``: a track belongs only to the jet with the smallest ΔR among the
cones containing it (ties go to the jet that comes first in the event).

Each kernel runs a count pass, then a fill pass into preallocated arrays: no
per-jet Python, no ``ak.ArrayBuilder``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

__all__ = [
    "ASSIGNMENT_MODES",
    "Association",
    "associate_tracks",
    "delta_phi",
    "delta_r",
    "KERNEL_COLUMNS",
]

ASSIGNMENT_MODES = ("all", "nearest")

#: What :func:`associate_tracks` reads and produces (for the processor's column bookkeeping).
KERNEL_COLUMNS = {
    "reads": {"jets": ("eta", "phi"), "tracks": ("eta", "phi")},
    "produces": ("n_tracks_per_jet", "track_index", "track_dr"),
}

_TWO_PI = 2.0 * math.pi


@numba.njit(cache=True, inline="always")
def _wrap_dphi(dphi: float) -> float:
    # One step suffices for inputs within [-π, π]; the loop guards unnormalised φ.
    while dphi > math.pi:
        dphi -= _TWO_PI
    while dphi < -math.pi:
        dphi += _TWO_PI
    return dphi


def delta_phi(phi1: np.ndarray | float, phi2: np.ndarray | float) -> np.ndarray:
    """``phi1 - phi2`` wrapped into ``[-π, π)`` (float64, radians)."""
    d = np.asarray(phi1, dtype=np.float64) - np.asarray(phi2, dtype=np.float64)
    return (d + math.pi) % _TWO_PI - math.pi


def delta_r(eta1, phi1, eta2, phi2) -> np.ndarray:
    """ΔR between two directions, float64 (see the module docstring)."""
    deta = np.asarray(eta1, dtype=np.float64) - np.asarray(eta2, dtype=np.float64)
    return np.hypot(deta, delta_phi(phi1, phi2))


@numba.njit(cache=True, nogil=True)
def _assign_all(jet_eta, jet_phi, jet_offsets, trk_eta, trk_phi, trk_offsets, trk_mask, dr2_max):
    n_events = len(jet_offsets) - 1
    n_jets = jet_offsets[n_events] - jet_offsets[0]
    counts = np.zeros(n_jets, dtype=np.int64)
    j0 = jet_offsets[0]
    # Count pass.
    for ev in range(n_events):
        for j in range(jet_offsets[ev], jet_offsets[ev + 1]):
            eta_j = np.float64(jet_eta[j])
            phi_j = np.float64(jet_phi[j])
            c = 0
            for t in range(trk_offsets[ev], trk_offsets[ev + 1]):
                if not trk_mask[t]:
                    continue
                deta = np.float64(trk_eta[t]) - eta_j
                if deta * deta >= dr2_max:
                    continue
                dphi = _wrap_dphi(np.float64(trk_phi[t]) - phi_j)
                if deta * deta + dphi * dphi < dr2_max:
                    c += 1
            counts[j - j0] = c
    total = 0
    for j in range(n_jets):
        total += counts[j]
    index = np.empty(total, dtype=np.int64)
    dr = np.empty(total, dtype=np.float64)
    # Fill pass.
    k = 0
    for ev in range(n_events):
        for j in range(jet_offsets[ev], jet_offsets[ev + 1]):
            eta_j = np.float64(jet_eta[j])
            phi_j = np.float64(jet_phi[j])
            for t in range(trk_offsets[ev], trk_offsets[ev + 1]):
                if not trk_mask[t]:
                    continue
                deta = np.float64(trk_eta[t]) - eta_j
                if deta * deta >= dr2_max:
                    continue
                dphi = _wrap_dphi(np.float64(trk_phi[t]) - phi_j)
                d2 = deta * deta + dphi * dphi
                if d2 < dr2_max:
                    index[k] = t
                    dr[k] = math.sqrt(d2)
                    k += 1
    return counts, index, dr


@numba.njit(cache=True, nogil=True)
def _assign_nearest(jet_eta, jet_phi, jet_offsets, trk_eta, trk_phi, trk_offsets, trk_mask, dr2_max):
    n_events = len(jet_offsets) - 1
    n_jets = jet_offsets[n_events] - jet_offsets[0]
    n_trk = trk_offsets[n_events] - trk_offsets[0]
    j0 = jet_offsets[0]
    t0 = trk_offsets[0]
    best_jet = np.full(n_trk, -1, dtype=np.int64)
    best_d2 = np.empty(n_trk, dtype=np.float64)
    counts = np.zeros(n_jets, dtype=np.int64)
    for ev in range(n_events):
        for t in range(trk_offsets[ev], trk_offsets[ev + 1]):
            if not trk_mask[t]:
                continue
            eta_t = np.float64(trk_eta[t])
            phi_t = np.float64(trk_phi[t])
            bj = -1
            bd = dr2_max
            for j in range(jet_offsets[ev], jet_offsets[ev + 1]):
                deta = eta_t - np.float64(jet_eta[j])
                dphi = _wrap_dphi(phi_t - np.float64(jet_phi[j]))
                d2 = deta * deta + dphi * dphi
                if d2 < bd:  # strict: ties keep the earlier jet
                    bd = d2
                    bj = j - j0
            if bj >= 0:
                best_jet[t - t0] = bj
                best_d2[t - t0] = bd
                counts[bj] += 1
    starts = np.empty(n_jets, dtype=np.int64)
    total = 0
    for j in range(n_jets):
        starts[j] = total
        total += counts[j]
    index = np.empty(total, dtype=np.int64)
    dr = np.empty(total, dtype=np.float64)
    for t in range(n_trk):
        bj = best_jet[t]
        if bj >= 0:
            pos = starts[bj]
            index[pos] = t + t0
            dr[pos] = math.sqrt(best_d2[t])
            starts[bj] = pos + 1
    return counts, index, dr


class Association(NamedTuple):
    """Result of :func:`associate_tracks`.

    Attributes:
        n_tracks_per_jet: int64[n_jets], tracks in each jet's cone.
        track_index: int64[sum(n_tracks_per_jet)], flat index into the track
            content arrays (the same index space as ``trk_eta``), grouped by jet in
            jet order, tracks in collection order within a jet.
        track_dr: float64, ΔR(track, jet) of each entry of ``track_index``.
    """

    n_tracks_per_jet: np.ndarray
    track_index: np.ndarray
    track_dr: np.ndarray


def _as_offsets(offsets: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(offsets, dtype=np.int64)


def associate_tracks(
    jet_eta: np.ndarray,
    jet_phi: np.ndarray,
    jet_offsets: np.ndarray,
    trk_eta: np.ndarray,
    trk_phi: np.ndarray,
    trk_offsets: np.ndarray,
    *,
    cone_dr: float = 0.5,
    mode: str = "all",
    trk_mask: np.ndarray | None = None,
) -> Association:
    """Associate tracks to jets of the same event by ``ΔR < cone_dr``.

    Args:
        jet_eta, jet_phi: flat jet directions (any float dtype; φ in radians).
        jet_offsets: int64[n_events + 1], jets of event ``i`` are
            ``jet_offsets[i]:jet_offsets[i+1]``.
        trk_eta, trk_phi: flat track directions.
        trk_offsets: int64[n_events + 1], same events as ``jet_offsets``.
        cone_dr: cone radius R (dimensionless, default 0.5); strict ``ΔR < R``.
        mode: ``"all"`` (default) or ``"nearest"``; see the module docstring.
        trk_mask: optional bool[n_tracks]; tracks where it is False are ignored.

    Returns:
        :class:`Association` (counts per jet, flat track indices, ΔR values).
    """
    if mode not in ASSIGNMENT_MODES:
        raise ValueError(f"mode must be one of {ASSIGNMENT_MODES}, got {mode!r}")
    if not cone_dr > 0:
        raise ValueError(f"cone_dr must be > 0, got {cone_dr!r}")
    jet_offsets = _as_offsets(jet_offsets)
    trk_offsets = _as_offsets(trk_offsets)
    if len(jet_offsets) != len(trk_offsets):
        raise ValueError(
            f"jet and track offsets describe different numbers of events "
            f"({len(jet_offsets) - 1} vs {len(trk_offsets) - 1})"
        )
    if trk_mask is None:
        trk_mask = np.ones(len(trk_eta), dtype=np.bool_)
    else:
        trk_mask = np.ascontiguousarray(trk_mask, dtype=np.bool_)
    kernel = _assign_all if mode == "all" else _assign_nearest
    counts, index, dr = kernel(
        np.ascontiguousarray(jet_eta),
        np.ascontiguousarray(jet_phi),
        jet_offsets,
        np.ascontiguousarray(trk_eta),
        np.ascontiguousarray(trk_phi),
        trk_offsets,
        trk_mask,
        float(cone_dr) ** 2,
    )
    return Association(counts, index, dr)
