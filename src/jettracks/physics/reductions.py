"""Numba kernels: per-segment reductions over a flat array grouped by segment.

Pure numpy/numba: this module imports nothing of the project. A segment is a run of
equal values of a non-decreasing ``segment_of`` array (e.g. the selected jet of each
track), the layout of flat per-track values over jets.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["segment_max_median"]


@numba.njit(cache=True, nogil=True)
def _max_median(segment_of: np.ndarray, values: np.ndarray, n_segments: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    vmax = np.full(n_segments, np.nan)
    vmed = np.full(n_segments, np.nan)
    n = values.size
    start = 0
    while start < n:
        stop = start + 1
        while stop < n and segment_of[stop] == segment_of[start]:
            stop += 1
        ordered = np.sort(values[start:stop].astype(np.float64))
        k = stop - start
        s = segment_of[start]
        vmax[s] = ordered[k - 1]
        vmed[s] = (ordered[(k - 1) // 2] + ordered[k // 2]) / 2
        start = stop
    return vmax, vmed


def segment_max_median(segment_of: np.ndarray, values: np.ndarray, n_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Maximum and median of ``values`` per segment (float32; NaN for a segment without values).

    Args:
        segment_of: each value's segment, ``0 <= segment_of < n_segments``, non-decreasing.
        values: the values (any real type; compared and averaged in float64; no NaN).
        n_segments: number of segments.

    The median of an even count is the mean of the two middle values (in float64), as
    numpy's ``median``. One compiled pass sorting each segment on its own: on a cached PFNano
    sub-batch (13k valid tracks in 1,443 jets) 0.53 ms, against 1.44 ms for a lexsort of all
    values by (segment, value).

    Raises:
        ValueError: lengths differ, a segment is out of range, or ``segment_of`` decreases.
    """
    segment_of = np.ascontiguousarray(segment_of, dtype=np.int64)
    values = np.ascontiguousarray(values)
    if segment_of.shape != values.shape or values.ndim != 1:
        raise ValueError(f"segment_of {segment_of.shape} and values {values.shape} must be flat and of one length")
    if segment_of.size and (segment_of[0] < 0 or segment_of[-1] >= n_segments or np.any(np.diff(segment_of) < 0)):
        raise ValueError("segment_of must be non-decreasing within [0, n_segments)")
    vmax, vmed = _max_median(segment_of, values, int(n_segments))
    return vmax.astype(np.float32), vmed.astype(np.float32)
