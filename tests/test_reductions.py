"""Per-segment reductions (``jettracks.physics.reductions``) against numpy, segment by segment."""

from __future__ import annotations

import numpy as np
import pytest

from jettracks.physics.reductions import segment_max_median


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("n_segments", [0, 1, 7, 500])
def test_segment_max_median_equals_numpy_per_segment(dtype, n_segments):
    rng = np.random.default_rng(n_segments)
    counts = rng.integers(0, 9, n_segments)
    counts[: n_segments // 5] = 0  # segments without values
    rng.shuffle(counts)
    segment_of = np.repeat(np.arange(n_segments), counts)
    values = (rng.exponential(0.05, len(segment_of)) * (1000 if dtype == np.int32 else 1)).astype(dtype)
    if len(values) > 3:
        values[1] = values[2]  # ties
    vmax, vmed = segment_max_median(segment_of, values, n_segments)
    assert vmax.dtype == vmed.dtype == np.float32 and vmax.shape == vmed.shape == (n_segments,)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    for s in range(n_segments):
        seg = values[offsets[s]:offsets[s + 1]].astype(np.float64)
        if seg.size == 0:
            assert np.isnan(vmax[s]) and np.isnan(vmed[s])
        else:
            assert vmax[s] == np.float32(seg.max()) and vmed[s] == np.float32(np.median(seg)), s


def test_segment_max_median_refuses_bad_segments():
    with pytest.raises(ValueError, match="non-decreasing"):
        segment_max_median(np.array([0, 1, 0]), np.array([1.0, 2.0, 3.0]), 2)
    with pytest.raises(ValueError, match="non-decreasing"):
        segment_max_median(np.array([0, 2]), np.array([1.0, 2.0]), 2)
    with pytest.raises(ValueError, match="one length"):
        segment_max_median(np.array([0, 1]), np.array([1.0]), 2)
