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
cone when ``ΔR² < R²`` (strict: a track exactly at ``ΔR = R`` is outside), with
``R²`` the float64 square of the cone radius. ``Δφ = φ_track - φ_jet`` is wrapped
by steps of ±2π (after an exact ``fmod(Δφ, 2π)`` when ``|Δφ| > 3π``); a track or
jet with a non-finite η or φ is in no cone. The reported ``ΔR`` is
``sqrt(ΔR²)``, the same value :func:`delta_r` gives.

Assignment modes
----------------
``all`` (default): a track inside several cones belongs to each of them.
``nearest``: a track belongs only to the jet with the smallest ΔR among the
cones containing it (ties go to the jet that comes first in the event).

One compiled pass over the events serves both modes: no per-jet Python, no
``ak.ArrayBuilder``. Per event the selected tracks are gathered into float64
scratch arrays, ΔR² of every (jet, track) pair is computed in a vectorisable
loop, and the matches are appended to numpy output arrays; when these could
overflow, the pass stops, they grow, and it resumes where it stopped. They are
returned as views when at least half full, else copied to their exact size
(peak memory about twice the output).
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

_TWO_PI = 2.0 * math.pi
_THREE_PI = 3.0 * math.pi
#: Events whose |φ| values (jets and tracks) all stay within this bound have
#: |Δφ| <= 3π, where one 2π step wraps Δφ and ``min(|Δφ|, 2π - |Δφ|)`` gives
#: exactly ``|wrap(Δφ)|``: the kernels' vectorisable fast path. Other events
#: (unnormalised or non-finite φ) take the general :func:`_wrap_dphi`.
_FAST_PHI_BOUND = 1.5 * math.pi - 1e-6


@numba.njit(cache=True, inline="always")
def _wrap_dphi(dphi: float) -> float:
    """Δφ into [-π, π]: ±2π steps (after an exact ``fmod`` when |Δφ| > 3π); NaN if not finite."""
    if not abs(dphi) <= _THREE_PI:
        if not math.isfinite(dphi):
            return math.nan
        dphi = np.fmod(dphi, _TWO_PI)
    while dphi > math.pi:
        dphi -= _TWO_PI
    while dphi < -math.pi:
        dphi += _TWO_PI
    return dphi


def delta_phi(phi1: np.ndarray | float, phi2: np.ndarray | float) -> np.ndarray:
    """``phi1 - phi2`` wrapped into ``[-π, π)`` (float64, radians).

    The magnitude equals the kernels' wrapped Δφ bit for bit (the kernels keep
    ``+π`` where this returns ``-π``); NaN where an input is not finite.
    """
    d = np.asarray(phi1, dtype=np.float64) - np.asarray(phi2, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        big = ~(np.abs(d) <= _THREE_PI)
        if np.any(big):
            d = np.where(big, np.fmod(d, _TWO_PI), d)  # fmod(±inf) and NaN -> NaN
        for _ in range(3):  # at most two steps are ever needed
            hi = d >= math.pi
            lo = d < -math.pi
            if not (np.any(hi) or np.any(lo)):
                break
            d = np.where(hi, d - _TWO_PI, np.where(lo, d + _TWO_PI, d))
    return d if d.ndim else d[()]


def delta_r(eta1, phi1, eta2, phi2) -> np.ndarray:
    """ΔR between two directions, float64: ``sqrt(Δη² + Δφ²)`` as the kernels compute it."""
    deta = np.asarray(eta1, dtype=np.float64) - np.asarray(eta2, dtype=np.float64)
    dphi = delta_phi(phi1, phi2)
    return np.sqrt(deta * deta + dphi * dphi)


#: De Bruijn constant and table: the index of the lowest set bit of a uint64
#: with one bit set is ``_TZ8[(low * _DEBRUIJN) >> 58]`` (here divided by 8:
#: the byte that holds it, for the flag words of :func:`_associate`).
_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_TZ8 = np.zeros(64, dtype=np.int64)
for _b in range(64):
    _TZ8[(((1 << _b) * 0x03F79D71B4CB0A89) % 2**64) >> 58] = _b // 8
del _b


@numba.njit(cache=True, nogil=True)
def _associate(jet_eta, jet_phi, jet_offsets, trk_eta, trk_phi, trk_offsets, trk_mask,
               use_mask, dr2_max, nearest, counts, out_idx, out_d2, ev_start, k, tz8):
    """Fill ``counts`` and ``out_idx`` / ``out_d2`` (ΔR², not ΔR) from event ``ev_start``
    on, appending at ``k``; see :func:`associate_tracks` and :func:`_run`.

    Per event: the selected tracks are gathered (branch-free) into float64 scratch
    arrays; for each jet a vectorisable loop computes ΔR² of every track and a
    byte flag ``ΔR² < R²``; the flags are then read eight at a time as uint64
    words, and the set bytes of a word are visited lowest first (De Bruijn bit
    scan), appending the tracks in the cone in collection order.

    Returns ``(ev, k, need)``: ``ev == n_events`` when done; otherwise the output
    arrays cannot hold the worst case of event ``ev`` (``need`` entries in all)
    and the caller grows them and calls again from ``ev`` with the same ``k``.
    """
    n_events = len(jet_offsets) - 1
    j0 = jet_offsets[0]
    cap = len(out_idx)

    max_trk = 0
    max_jet = 0
    for ev in range(ev_start, n_events):
        nj = jet_offsets[ev + 1] - jet_offsets[ev]
        if nj > 0:
            max_jet = max(max_jet, nj)
            max_trk = max(max_trk, trk_offsets[ev + 1] - trk_offsets[ev])
    n_words = (max_trk + 7) // 8
    s_eta = np.empty(max_trk, dtype=np.float64)
    s_phi = np.empty(max_trk, dtype=np.float64)
    s_idx = np.empty(max_trk, dtype=np.int64)
    s_d2 = np.empty(max_trk, dtype=np.float64)
    s_hit = np.zeros(8 * n_words, dtype=np.uint8)
    s_words = s_hit.view(np.uint64)
    s_best = np.empty(max_trk if nearest else 0, dtype=np.float64)
    s_bj = np.empty(max_trk if nearest else 0, dtype=np.int64)
    s_pos = np.empty(max_jet if nearest else 0, dtype=np.int64)
    one = np.uint64(1)
    shift = np.uint64(58)

    for ev in range(ev_start, n_events):
        ja = jet_offsets[ev]
        jb = jet_offsets[ev + 1]
        if ja == jb:
            continue
        ta = trk_offsets[ev]
        tb = trk_offsets[ev + 1]
        # Gather the selected tracks: always write, advance by the mask.
        n = 0
        if use_mask:
            for t in range(ta, tb):
                s_eta[n] = trk_eta[t]
                s_phi[n] = trk_phi[t]
                s_idx[n] = t
                n += trk_mask[t]
        else:
            for t in range(ta, tb):
                s_eta[n] = trk_eta[t]
                s_phi[n] = trk_phi[t]
                s_idx[n] = t
                n += 1
        if n == 0:
            continue
        need = k + (jb - ja) * n
        if need > cap:
            return ev, k, need
        for i in range(n, 8 * ((n + 7) // 8)):  # flags past n: 0 for the word scan
            s_hit[i] = 0
        # |φ| <= bound for every track and jet -> the branch-free Δφ wrap is exact.
        # (NaN compares False: it gives a NaN ΔR², never in a cone, on either path.)
        n_wide = 0
        for i in range(n):
            n_wide += abs(s_phi[i]) > _FAST_PHI_BOUND
        for j in range(ja, jb):
            n_wide += abs(np.float64(jet_phi[j])) > _FAST_PHI_BOUND
        fast = n_wide == 0

        if nearest:
            for i in range(n):
                s_best[i] = dr2_max
                s_bj[i] = -1
        for j in range(ja, jb):
            eta_j = np.float64(jet_eta[j])
            phi_j = np.float64(jet_phi[j])
            if fast:
                for i in range(n):
                    deta = s_eta[i] - eta_j
                    adphi = abs(s_phi[i] - phi_j)
                    alt = _TWO_PI - adphi  # = |Δφ ∓ 2π|, exactly
                    adphi = alt if alt < adphi else adphi
                    d2 = deta * deta + adphi * adphi
                    s_d2[i] = d2
                    s_hit[i] = d2 < dr2_max
            else:
                for i in range(n):
                    deta = s_eta[i] - eta_j
                    dphi = _wrap_dphi(s_phi[i] - phi_j)
                    d2 = deta * deta + dphi * dphi
                    s_d2[i] = d2
                    s_hit[i] = d2 < dr2_max
            if nearest:
                jl = j - ja
                for i in range(n):
                    d2 = s_d2[i]
                    better = d2 < s_best[i]  # strict: ties keep the earlier jet
                    s_best[i] = d2 if better else s_best[i]
                    s_bj[i] = jl if better else s_bj[i]
            else:
                k_start = k
                # Byte i of word w is flag 8w + i: little-endian (x86-64, aarch64).
                for w in range((n + 7) // 8):
                    word = s_words[w]
                    while word != 0:
                        low = word & (~word + one)  # lowest set bit
                        i = 8 * w + tz8[(low * _DEBRUIJN) >> shift]
                        out_idx[k] = s_idx[i]
                        out_d2[k] = s_d2[i]
                        k += 1
                        word ^= low
                counts[j - j0] = k - k_start
        if nearest:
            # Group this event's tracks by their jet, in collection order.
            for jl in range(jb - ja):
                s_pos[jl] = 0
            for i in range(n):
                if s_bj[i] >= 0:
                    s_pos[s_bj[i]] += 1
            start = k
            for jl in range(jb - ja):
                c = s_pos[jl]
                counts[ja - j0 + jl] = c
                s_pos[jl] = start
                start += c
            for i in range(n):
                b = s_bj[i]
                if b >= 0:
                    p = s_pos[b]
                    out_idx[p] = s_idx[i]
                    out_d2[p] = s_best[i]
                    s_pos[b] = p + 1
            k = start
    return n_events, k, k


def _run(kernel, jet_eta, jet_phi, jet_offsets, trk_eta, trk_phi, trk_offsets, trk_mask,
         use_mask, dr2_max, nearest):
    """Drive :func:`_associate` (or its ``py_func``, for tests): output arrays come
    from numpy (which asks for huge pages on large ones: far fewer page faults
    than the JIT's allocator) and grow when the kernel asks. They start small,
    then take the matches per jet seen so far (+25%) for all jets, at least
    doubling; pages never written are never resident. At the end they are
    returned as views when at least half full, else copied to their exact size.
    """
    n_events = len(jet_offsets) - 1
    n_jets = int(jet_offsets[-1] - jet_offsets[0])
    counts = np.zeros(n_jets, dtype=np.int64)
    cap = 1024 + 4 * n_jets
    out_idx = np.empty(cap, dtype=np.int64)
    out_d2 = np.empty(cap, dtype=np.float64)
    ev, k = 0, 0
    while True:
        ev, k, need = kernel(jet_eta, jet_phi, jet_offsets, trk_eta, trk_phi, trk_offsets,
                             trk_mask, use_mask, dr2_max, nearest, counts, out_idx, out_d2,
                             ev, k, _TZ8)
        ev, k, need = int(ev), int(k), int(need)
        if ev >= n_events:
            break
        jets_done = int(jet_offsets[ev] - jet_offsets[0])
        estimate = k * n_jets // jets_done + k // 4 if jets_done > 0 else 0
        cap = max(2 * cap, need, estimate + (need - k))
        new_idx = np.empty(cap, dtype=np.int64)
        new_d2 = np.empty(cap, dtype=np.float64)
        new_idx[:k] = out_idx[:k]
        new_d2[:k] = out_d2[:k]
        out_idx, out_d2 = new_idx, new_d2
    if 2 * k < cap:  # mostly unused: copy to the exact size
        out_idx = out_idx[:k].copy()
        out_d2 = out_d2[:k].copy()
    else:
        out_idx = out_idx[:k]
        out_d2 = out_d2[:k]
    np.sqrt(out_d2, out=out_d2)
    return counts, out_idx, out_d2


class Association(NamedTuple):
    """Result of :func:`associate_tracks`.

    Attributes:
        n_tracks_per_jet: int64[n_jets], tracks in each jet's cone.
        track_index: int64[sum(n_tracks_per_jet)], flat index into the track
            content arrays (the same index space as ``trk_eta``), grouped by jet in
            jet order, tracks in collection order within a jet.
        track_dr: float64, ΔR(track, jet) of each entry of ``track_index``.

    ``track_index`` and ``track_dr`` may be views of the first entries of
    buffers at most twice their length (see :func:`_run`).
    """

    n_tracks_per_jet: np.ndarray
    track_index: np.ndarray
    track_dr: np.ndarray


#: The fields :func:`associate_tracks` reads and produces. ``reads``: the record
#: fields of the jets and tracks (the common layout, :mod:`jettracks.readers.base`)
#: it takes as arrays, in argument order (``jet_<field>``, then ``trk_<field>``);
#: the processor passes exactly these. ``produces``: the fields of its result,
#: :class:`Association`.
KERNEL_COLUMNS = {
    "reads": {"jets": ("eta", "phi"), "tracks": ("eta", "phi")},
    "produces": Association._fields,
}


def _as_offsets(offsets: np.ndarray, n_content: int, what: str) -> np.ndarray:
    offsets = np.ascontiguousarray(offsets)
    if offsets.ndim != 1 or len(offsets) < 1:
        raise ValueError(f"{what} offsets must be 1-d with at least one entry (n_events + 1)")
    if offsets.dtype.kind == "f" and np.all(np.isfinite(offsets)) and np.all(offsets == np.round(offsets)):
        pass  # integral values in a float array (e.g. np.concatenate([[0], []]))
    elif offsets.dtype.kind not in "iu":
        raise ValueError(f"{what} offsets must be integers, got {offsets.dtype}")
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets[0] < 0 or offsets[-1] > n_content or np.any(offsets[1:] < offsets[:-1]):
        raise ValueError(
            f"{what} offsets must be non-decreasing within [0, {n_content}] "
            f"(the {what} content length)"
        )
    return offsets


def _as_values(values, what: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{what} must be 1-d, got shape {values.shape}")
    if values.dtype.kind not in "fiu":
        raise ValueError(f"{what} must be numeric, got {values.dtype}")
    return values


def _common_float(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """All float32 stay float32; anything else becomes float64 (what the kernel
    computes in anyway), so the kernel compiles for two signatures only."""
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
    return tuple(np.ascontiguousarray(a, dtype=dtype) for a in arrays)


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
        jet_eta, jet_phi: flat jet directions (any real dtype; φ in radians).
            Unless all four direction arrays are float32 they are passed to the
            kernel as float64 (a copy where needed); the arithmetic is float64.
        jet_offsets: int64[n_events + 1], jets of event ``i`` are
            ``jet_offsets[i]:jet_offsets[i+1]``.
        trk_eta, trk_phi: flat track directions.
        trk_offsets: int64[n_events + 1], same events as ``jet_offsets``.
        cone_dr: cone radius R (dimensionless, default 0.5); strict ``ΔR < R``.
        mode: ``"all"`` (default) or ``"nearest"``; see the module docstring.
        trk_mask: optional bool[n_tracks]; tracks where it is False are ignored.

    Returns:
        :class:`Association` (counts per jet, flat track indices, ΔR values).

    Raises:
        ValueError: unknown mode, ``cone_dr`` not > 0, offsets that describe
            different numbers of events or do not fit their content, or arrays of
            mismatched lengths.
    """
    if mode not in ASSIGNMENT_MODES:
        raise ValueError(f"mode must be one of {ASSIGNMENT_MODES}, got {mode!r}")
    if not cone_dr > 0:
        raise ValueError(f"cone_dr must be > 0, got {cone_dr!r}")
    jet_eta = _as_values(jet_eta, "jet_eta")
    jet_phi = _as_values(jet_phi, "jet_phi")
    trk_eta = _as_values(trk_eta, "trk_eta")
    trk_phi = _as_values(trk_phi, "trk_phi")
    if len(jet_eta) != len(jet_phi):
        raise ValueError(f"jet_eta and jet_phi differ in length ({len(jet_eta)} vs {len(jet_phi)})")
    if len(trk_eta) != len(trk_phi):
        raise ValueError(f"trk_eta and trk_phi differ in length ({len(trk_eta)} vs {len(trk_phi)})")
    jet_eta, jet_phi, trk_eta, trk_phi = _common_float(jet_eta, jet_phi, trk_eta, trk_phi)
    jet_offsets = _as_offsets(jet_offsets, len(jet_eta), "jet")
    trk_offsets = _as_offsets(trk_offsets, len(trk_eta), "track")
    if len(jet_offsets) != len(trk_offsets):
        raise ValueError(
            f"jet and track offsets describe different numbers of events "
            f"({len(jet_offsets) - 1} vs {len(trk_offsets) - 1})"
        )
    if trk_mask is None:
        use_mask = False
        trk_mask = np.empty(0, dtype=np.bool_)
    else:
        use_mask = True
        trk_mask = np.ascontiguousarray(trk_mask, dtype=np.bool_)
        if trk_mask.shape != trk_eta.shape:
            raise ValueError(
                f"trk_mask must have one entry per track ({len(trk_eta)}), got shape {trk_mask.shape}"
            )
    counts, index, dr = _run(
        _associate,
        jet_eta,
        jet_phi,
        jet_offsets,
        trk_eta,
        trk_phi,
        trk_offsets,
        trk_mask,
        use_mask,
        float(cone_dr) * float(cone_dr),
        mode == "nearest",
    )
    return Association(counts, index, dr)
