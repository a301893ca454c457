"""The numba ΔR association kernel against a brute-force pure-Python reference.

The reference below is written from the documented semantics of
:mod:`jettracks.physics.kernels` (per event, per jet, per track, with ``math``): float64
arithmetic on the widened inputs, ``Δφ = φ_track - φ_jet`` wrapped by ±2π steps
(after an exact ``fmod`` when ``|Δφ| > 3π``; NaN if not finite), in the cone when
``Δη² + Δφ² < R²`` (strict, ``R²`` the float64 square), ``nearest`` ties to the
earlier jet. Counts and indices must agree exactly, ΔR to 1e-12.

No timings here: performance lives in ``scripts/benchmark.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jettracks.physics.kernels import (
    ASSIGNMENT_MODES,
    KERNEL_COLUMNS,
    Association,
    associate_tracks,
    delta_phi,
    delta_r,
)

PI = math.pi
TWO_PI = 2.0 * math.pi


# ---------------------------------------------------------------------------------------
# Brute-force reference
# ---------------------------------------------------------------------------------------
def ref_wrap(dphi: float) -> float:
    if not math.isfinite(dphi):
        return math.nan
    if abs(dphi) > 3.0 * PI:
        dphi = math.fmod(dphi, TWO_PI)
    while dphi > PI:
        dphi -= TWO_PI
    while dphi < -PI:
        dphi += TWO_PI
    return dphi


def ref_d2(jet_eta, jet_phi, trk_eta, trk_phi) -> float:
    deta = float(trk_eta) - float(jet_eta)
    dphi = ref_wrap(float(trk_phi) - float(jet_phi))
    return deta * deta + dphi * dphi


def reference(jet_eta, jet_phi, jet_offsets, trk_eta, trk_phi, trk_offsets,
              *, cone_dr=0.5, mode="all", trk_mask=None):
    """(counts, index, dr) as plain lists, one event, one jet, one track at a time."""
    r2 = float(cone_dr) * float(cone_dr)
    counts, index, dr = [], [], []
    for ev in range(len(jet_offsets) - 1):
        jets = range(int(jet_offsets[ev]), int(jet_offsets[ev + 1]))
        tracks = [
            t for t in range(int(trk_offsets[ev]), int(trk_offsets[ev + 1]))
            if trk_mask is None or trk_mask[t]
        ]
        d2 = {(j, t): ref_d2(jet_eta[j], jet_phi[j], trk_eta[t], trk_phi[t])
              for j in jets for t in tracks}
        if mode == "all":
            for j in jets:
                inside = [t for t in tracks if d2[j, t] < r2]
                counts.append(len(inside))
                index += inside
                dr += [math.sqrt(d2[j, t]) for t in inside]
        else:
            owner = {}
            for t in tracks:
                best = None
                for j in jets:  # in order: a later jet must be strictly nearer
                    if d2[j, t] < r2 and (best is None or d2[j, t] < d2[best, t]):
                        best = j
                if best is not None:
                    owner[t] = best
            for j in jets:
                inside = [t for t in tracks if owner.get(t) == j]
                counts.append(len(inside))
                index += inside
                dr += [math.sqrt(d2[j, t]) for t in inside]
    return counts, index, dr


def assert_matches_reference(args, **kw):
    got = associate_tracks(*args, **kw)
    counts, index, dr = reference(*args, **kw)
    assert isinstance(got, Association)
    assert got.n_tracks_per_jet.dtype == np.int64
    assert got.track_index.dtype == np.int64
    assert got.track_dr.dtype == np.float64
    np.testing.assert_array_equal(got.n_tracks_per_jet, np.asarray(counts, dtype=np.int64))
    np.testing.assert_array_equal(got.track_index, np.asarray(index, dtype=np.int64))
    np.testing.assert_allclose(got.track_dr, np.asarray(dr, dtype=np.float64), rtol=1e-12, atol=1e-12)
    assert got.n_tracks_per_jet.sum() == len(got.track_index) == len(got.track_dr)
    return got


def flat(events, dtype):
    """[(jets[(eta, phi)], tracks[(eta, phi)]), ...] -> the kernel's flat arguments."""
    jets = [j for js, _ in events for j in js]
    trks = [t for _, ts in events for t in ts]
    jet_off = np.concatenate([[0], np.cumsum([len(js) for js, _ in events])]).astype(np.int64)
    trk_off = np.concatenate([[0], np.cumsum([len(ts) for _, ts in events])]).astype(np.int64)

    def col(items, i):
        return np.array([x[i] for x in items], dtype=dtype).reshape(-1)

    return (col(jets, 0), col(jets, 1), jet_off, col(trks, 0), col(trks, 1), trk_off)


# ---------------------------------------------------------------------------------------
# Hypothesis strategies
# ---------------------------------------------------------------------------------------
CONES = [0.5, 0.4, 0.25, 0.3, 1.0, 0.0625]
DYADIC_ETA = st.integers(-48, 48).map(lambda k: k / 16)  # exact in float32 and float64
DYADIC_PHI = st.integers(-50, 50).map(lambda k: k / 16)
F32_PI = float(np.float32(np.pi))  # > π in float64
EDGE_PHI = st.sampled_from([PI, -PI, PI - 1e-7, -PI + 1e-7, 3.1, -3.1, F32_PI, -F32_PI,
                            math.nextafter(PI, 0.0), math.nextafter(-PI, 0.0)])
ETA = st.one_of(st.floats(-3.0, 3.0), DYADIC_ETA)
PHI = st.one_of(st.floats(-PI, PI), DYADIC_PHI, EDGE_PHI)


@st.composite
def scenario(draw, eta=ETA, phi=PHI, turns=False):
    """Events of jets and tracks, with tracks placed at / near / inside jet cones.

    ``turns``: also tracks at the jet's φ plus whole turns (2π k, |k| <= 3) plus a
    little, i.e. inside the cone only through the wrap of an unnormalised Δφ.
    """
    kinds = ["eta_edge", "phi_edge", "inside", "near", "same"] + (["turns"] if turns else [])
    cone = draw(st.sampled_from(CONES))
    n_events = draw(st.integers(0, 5))
    events = []
    for _ in range(n_events):
        jets = draw(st.lists(st.tuples(eta, phi), max_size=4))
        tracks = []
        for _ in range(draw(st.integers(0, 10))):
            if jets and draw(st.booleans()):
                je, jp = draw(st.sampled_from(jets))
                kind = draw(st.sampled_from(kinds))
                sign = draw(st.sampled_from([-1.0, 1.0]))
                if kind == "eta_edge":  # Δη = ±R, Δφ = 0: exactly on the boundary when exact
                    tracks.append((je + sign * cone, jp))
                elif kind == "phi_edge":  # Δφ = ±R (may wrap around ±π)
                    tracks.append((je, jp + sign * cone))
                elif kind == "inside":
                    f = draw(st.floats(0.0, 0.99))
                    tracks.append((je + sign * f * cone * 0.7, jp - f * cone * 0.7))
                elif kind == "near":  # within a few ulps of the boundary
                    eps = draw(st.sampled_from([-1e-12, -1e-15, 1e-15, 1e-12, 1e-9]))
                    tracks.append((je + sign * cone * (1 + eps), jp))
                elif kind == "turns":
                    k = draw(st.sampled_from([-3, -2, -1, 1, 2, 3]))
                    tracks.append((je + 0.1 * sign * cone, jp + k * TWO_PI + 0.2 * cone))
                else:
                    tracks.append((je, jp))
            else:
                tracks.append((draw(eta), draw(phi)))
        events.append((jets, tracks))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    args = flat(events, dtype)
    n_trk = len(args[3])
    mask = None
    if draw(st.booleans()):
        mask = np.array(draw(st.lists(st.booleans(), min_size=n_trk, max_size=n_trk)), dtype=bool)
    mode = draw(st.sampled_from(ASSIGNMENT_MODES))
    return args, {"cone_dr": cone, "mode": mode, "trk_mask": mask}


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenario())
def test_matches_reference(case):
    args, kw = case
    assert_matches_reference(args, **kw)


WILD = st.one_of(st.floats(-30.0, 30.0), st.sampled_from([math.nan, math.inf, -math.inf, 1e6, -1e9]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(eta=st.one_of(ETA, WILD), phi=st.one_of(PHI, WILD), turns=True))
def test_matches_reference_unnormalised_and_non_finite(case):
    """φ far outside [-π, π] (general wrap path), NaN and ±inf never match."""
    args, kw = case
    got = assert_matches_reference(args, **kw)
    assert np.all(np.isfinite(got.track_dr))


@SETTINGS
@given(scenario())
def test_dr_equals_delta_r_helper(case):
    """The kernel's ΔR is bit for bit the helper's ΔR of the same (track, jet) pair."""
    args, kw = case
    jet_eta, jet_phi, jet_off, trk_eta, trk_phi, _ = args
    got = associate_tracks(*args, **kw)
    jet_of_entry = np.repeat(np.arange(len(jet_eta)), got.n_tracks_per_jet)
    t = got.track_index
    expected = delta_r(trk_eta[t], trk_phi[t], jet_eta[jet_of_entry], jet_phi[jet_of_entry])
    np.testing.assert_array_equal(got.track_dr, expected)
    assert np.all(got.track_dr <= kw["cone_dr"])  # sqrt may round up to R for ΔR² just below R²


# ---------------------------------------------------------------------------------------
# Explicit cases
# ---------------------------------------------------------------------------------------
def one_event(jets, tracks, dtype=np.float64):
    return flat([(jets, tracks)], dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_phi_wrap_inside_cone(dtype):
    # Δφ = -6.2 + 2π ≈ 0.083: inside R = 0.5 only through the wrap.
    args = one_event([(0.0, 3.1)], [(0.0, -3.1), (0.0, 0.0), (0.2, -3.1)], dtype)
    got = assert_matches_reference(args, cone_dr=0.5)
    assert got.n_tracks_per_jet.tolist() == [2]
    assert got.track_index.tolist() == [0, 2]
    dphi = 2 * math.pi - 2 * float(dtype(3.1))
    assert got.track_dr[0] == pytest.approx(dphi, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cone", [0.5, 0.25, 0.375])
def test_exact_boundary_is_outside(dtype, cone):
    """ΔR == R exactly (dyadic values: exact in float32 too) is outside; one ulp in is inside."""
    jets = [(1.0, 0.5)]
    inside = math.nextafter(1.0 + cone, 0.0) if dtype is np.float64 else float(
        np.nextafter(np.float32(1.0 + cone), np.float32(0.0)))
    tracks = [(1.0 + cone, 0.5), (1.0 - cone, 0.5), (1.0, 0.5 + cone), (1.0, 0.5 - cone), (inside, 0.5)]
    args = one_event(jets, tracks, dtype)
    for mode in ASSIGNMENT_MODES:
        got = assert_matches_reference(args, cone_dr=cone, mode=mode)
        assert got.track_index.tolist() == [4]


def test_boundary_uses_float64_square_of_cone():
    # 0.4 is not dyadic: Δη = 0.4 exactly in float64, ΔR² = fl(0.4 * 0.4) = R² -> outside.
    args = one_event([(0.0, 0.0)], [(0.4, 0.0), (-0.4, 0.0)], np.float64)
    got = assert_matches_reference(args, cone_dr=0.4)
    assert got.n_tracks_per_jet.tolist() == [0]
    # The float32 value of 0.4 is slightly above 0.4: outside as well.
    args32 = one_event([(0.0, 0.0)], [(0.4, 0.0)], np.float32)
    assert associate_tracks(*args32, cone_dr=0.4).n_tracks_per_jet.tolist() == [0]


def test_nearest_gives_a_shared_track_once_to_the_nearer_jet():
    jets = [(0.0, 0.0), (0.6, 0.0)]
    tracks = [(0.2, 0.0), (0.4, 0.0), (0.05, 0.0), (0.9, 0.0)]
    args = one_event(jets, tracks)
    all_ = assert_matches_reference(args, cone_dr=0.5, mode="all")
    assert all_.n_tracks_per_jet.tolist() == [3, 3]
    assert all_.track_index.tolist() == [0, 1, 2, 0, 1, 3]
    near = assert_matches_reference(args, cone_dr=0.5, mode="nearest")
    assert near.n_tracks_per_jet.tolist() == [2, 2]
    assert near.track_index.tolist() == [0, 2, 1, 3]
    np.testing.assert_allclose(near.track_dr, [0.2, 0.05, 0.2, 0.3], atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nearest_tie_goes_to_the_earlier_jet(dtype):
    # Track exactly half-way (dyadic values): equal ΔR² to both jets.
    jets = [(0.25, 1.0), (-0.25, 1.0), (0.0, 1.25)]
    tracks = [(0.0, 1.0), (0.0, 1.5)]
    args = one_event(jets, tracks, dtype)
    got = assert_matches_reference(args, cone_dr=0.5, mode="nearest")
    assert got.n_tracks_per_jet.tolist() == [1, 0, 1]
    assert got.track_index.tolist() == [0, 1]
    # Same with the jets in the other order: still the first one listed.
    args = one_event([jets[1], jets[0]], tracks, dtype)
    got = assert_matches_reference(args, cone_dr=0.5, mode="nearest")
    assert got.n_tracks_per_jet.tolist() == [1, 0]


def test_mask_excludes_tracks():
    args = one_event([(0.0, 0.0)], [(0.1, 0.0), (0.2, 0.0), (0.3, 0.0)])
    mask = np.array([True, False, True])
    for mode in ASSIGNMENT_MODES:
        got = assert_matches_reference(args, cone_dr=0.5, mode=mode, trk_mask=mask)
        assert got.track_index.tolist() == [0, 2]


def test_empty_events_jets_without_tracks_and_tracks_without_jets():
    events = [
        ([], []),
        ([(0.0, 0.0), (1.0, 1.0)], []),
        ([], [(0.0, 0.0), (0.1, 0.1)]),
        ([(0.0, 0.0)], [(0.1, 0.0)]),
        ([], []),
    ]
    for dtype in (np.float32, np.float64):
        args = flat(events, dtype)
        for mode in ASSIGNMENT_MODES:
            got = assert_matches_reference(args, mode=mode)
            assert got.n_tracks_per_jet.tolist() == [0, 0, 1]
            assert got.track_index.tolist() == [2]  # flat index: after event 2's two tracks


@pytest.mark.parametrize("mode", ASSIGNMENT_MODES)
def test_zero_events(mode):
    empty = np.zeros(0, dtype=np.float32)
    zero = np.zeros(1, np.int64)
    got = associate_tracks(empty, empty, zero, empty, empty, zero, mode=mode)
    assert got.n_tracks_per_jet.shape == got.track_index.shape == got.track_dr.shape == (0,)
    # np.concatenate([[0], []]) gives a float64 [0.]: accepted as the offsets of zero events.
    got = associate_tracks(empty, empty, np.concatenate([[0], []]), empty, empty, [0], mode=mode)
    assert len(got.n_tracks_per_jet) == 0


def test_offsets_not_starting_at_zero_give_flat_indices():
    """A slice of events (offsets into larger content arrays): indices stay global."""
    rng = np.random.default_rng(3)
    n_jet, n_trk = 12, 60
    jet_eta, jet_phi = rng.uniform(-1, 1, n_jet), rng.uniform(-PI, PI, n_jet)
    trk_eta, trk_phi = rng.uniform(-1, 1, n_trk), rng.uniform(-PI, PI, n_trk)
    jet_off = np.array([2, 5, 5, 9], dtype=np.int64)
    trk_off = np.array([10, 25, 40, 40], dtype=np.int64)
    for mode in ASSIGNMENT_MODES:
        got = assert_matches_reference(
            (jet_eta, jet_phi, jet_off, trk_eta, trk_phi, trk_off), cone_dr=0.8, mode=mode)
        assert len(got.n_tracks_per_jet) == 7
        assert np.all((got.track_index >= 10) & (got.track_index < 40))


@pytest.mark.parametrize("mode", ASSIGNMENT_MODES)
def test_many_tracks_per_jet_output_growth(mode):
    """Far more matches than the initial output capacity (several regrowths)."""
    rng = np.random.default_rng(11)
    n_events, n_jets, n_trk = 30, 3, 300
    jet_eta = rng.uniform(-1, 1, n_events * n_jets)
    jet_phi = rng.uniform(-PI, PI, n_events * n_jets)
    owner = rng.integers(0, n_jets, n_events * n_trk) + np.repeat(np.arange(n_events) * n_jets, n_trk)
    trk_eta = (jet_eta[owner] + rng.normal(0, 0.2, owner.size)).astype(np.float32)
    trk_phi = (jet_phi[owner] + rng.normal(0, 0.2, owner.size)).astype(np.float32)
    jet_off = np.arange(n_events + 1, dtype=np.int64) * n_jets
    trk_off = np.arange(n_events + 1, dtype=np.int64) * n_trk
    mask = rng.random(owner.size) < 0.8
    got = assert_matches_reference(
        (jet_eta, jet_phi, jet_off, trk_eta, trk_phi, trk_off), cone_dr=1.5, mode=mode, trk_mask=mask)
    assert got.n_tracks_per_jet.sum() > 4 * len(jet_eta) + 1024


def test_mixed_and_small_dtypes():
    args = one_event([(0.0, 3.0), (1.0, -3.0)], [(0.1, -3.1), (0.9, 3.1), (0.5, 0.0)])
    ref = associate_tracks(*args)
    j_eta, j_phi, j_off, t_eta, t_phi, t_off = args
    mixed = associate_tracks(j_eta.astype(np.float32), j_phi, j_off, t_eta, t_phi.astype(np.float32), t_off)
    assert_matches_reference((j_eta.astype(np.float32), j_phi, j_off, t_eta, t_phi.astype(np.float32), t_off))
    half = (j_eta.astype(np.float16), j_phi.astype(np.float16), j_off,
            t_eta.astype(np.float16), t_phi.astype(np.float16), t_off)
    assert_matches_reference(half)
    assert mixed.n_tracks_per_jet.tolist() == ref.n_tracks_per_jet.tolist() == [1, 1]
    assert mixed.track_index.tolist() == ref.track_index.tolist() == [0, 1]


@pytest.mark.timeout(60)
def test_unnormalised_phi_wraps_by_whole_turns():
    """|Δφ| > 3π: reduced exactly (fmod) before the ±2π steps; huge φ does not hang."""
    jets = [(0.0, 0.1), (5.0, 0.0)]
    tracks = [
        (0.0, 0.1 + 4 * PI + 0.05),  # two turns: inside, Δφ ≈ 0.05
        (0.0, 0.1 - 6 * PI - 0.2),  # three turns the other way: inside, Δφ ≈ -0.2
        (0.0, 0.1 + 3 * PI),  # half a turn: outside
        (0.0, TWO_PI * 1e6 + 0.3),  # a million turns: fmod keeps it exact enough
        (5.0, 1e300),  # no loop of 1e299 steps
        (5.0, math.inf),
        (5.0, math.nan),
    ]
    args = one_event(jets, tracks)
    for mode in ASSIGNMENT_MODES:
        got = assert_matches_reference(args, cone_dr=0.5, mode=mode)
        assert got.n_tracks_per_jet.tolist() == [3, 0]
        assert got.track_index.tolist() == [0, 1, 3]
        np.testing.assert_allclose(got.track_dr, [0.05, 0.2, 0.2],
                                   atol=1e-6)


@pytest.mark.parametrize("mode", ASSIGNMENT_MODES)
def test_kernel_python_source_stays_in_bounds(mode):
    """The kernel's own source run as plain Python (numpy raises on any out-of-bounds
    index, which compiled code would not) on events whose matches come late: the
    output arrays must grow from a low early estimate, the kernel stopping and
    resuming."""
    from jettracks.physics.kernels import _associate, _run

    rng = np.random.default_rng(5)
    events = []
    for ev in range(12):
        jets = [(float(rng.uniform(-1, 1)), float(rng.uniform(-3, 3))) for _ in range(3)]
        if ev < 8:  # far from every jet
            tracks = [(float(rng.uniform(6, 8)), float(rng.uniform(-3, 3))) for _ in range(5)]
        else:  # three close jets, every track in all three cones
            jets = [(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05))) for _ in range(3)]
            tracks = [(je + float(rng.normal(0, 0.05)), jp) for je, jp in jets for _ in range(120)]
        events.append((jets, tracks))
    args = flat(events, np.float32)
    mask = rng.random(len(args[3])) < 0.9
    with np.errstate(over="ignore"):  # the bit scan's uint64 multiply wraps by design
        counts, index, dr = _run(_associate.py_func, *args, mask, True, 0.25, mode == "nearest")
    ref_counts, ref_index, ref_dr = reference(*args, cone_dr=0.5, mode=mode, trk_mask=mask)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_array_equal(index, ref_index)
    np.testing.assert_allclose(dr, ref_dr, rtol=1e-12, atol=1e-12)
    assert len(index) > 1024 + 4 * 36  # past the initial capacity
    compiled = associate_tracks(*args, cone_dr=0.5, mode=mode, trk_mask=mask)
    np.testing.assert_array_equal(compiled.track_index, index)


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------
def _args():
    return one_event([(0.0, 0.0)], [(0.1, 0.0)])


def test_mismatched_offsets_raise():
    j_eta, j_phi, j_off, t_eta, t_phi, _ = _args()
    with pytest.raises(ValueError, match="different numbers of events"):
        associate_tracks(j_eta, j_phi, j_off, t_eta, t_phi, np.array([0, 1, 1]))


@pytest.mark.parametrize("mode", ["ALL", "first", "", None])
def test_bad_mode_raises(mode):
    with pytest.raises(ValueError, match="mode"):
        associate_tracks(*_args(), mode=mode)


@pytest.mark.parametrize("cone", [0.0, -0.5, math.nan])
def test_bad_cone_raises(cone):
    with pytest.raises(ValueError, match="cone_dr"):
        associate_tracks(*_args(), cone_dr=cone)


@pytest.mark.parametrize(
    "change",
    [
        lambda a: (a[0], a[1], np.array([0, 2]), *a[3:]),  # past the jet content
        lambda a: (*a[:5], np.array([1, 0])),  # decreasing
        lambda a: (*a[:5], np.array([-1, 1])),  # negative
        lambda a: (*a[:5], np.zeros(0, np.int64)),  # no entry at all
        lambda a: (*a[:5], np.array([0.0, 0.5])),  # non-integral
        lambda a: (a[0], np.zeros(2), *a[2:]),  # eta / phi lengths differ
        lambda a: (*a[:3], a[3], np.zeros((1, 1)), a[5]),  # not 1-d
        lambda a: (*a[:3], np.array(["x"]), *a[4:]),  # not numeric
    ],
)
def test_inconsistent_inputs_raise(change):
    with pytest.raises(ValueError):
        associate_tracks(*change(_args()))


def test_bad_mask_length_raises():
    with pytest.raises(ValueError, match="trk_mask"):
        associate_tracks(*_args(), trk_mask=np.array([True, False]))


# ---------------------------------------------------------------------------------------
# delta_phi / delta_r helpers
# ---------------------------------------------------------------------------------------
def test_delta_phi_values():
    assert delta_phi(3.1, -3.1) == pytest.approx(6.2 - TWO_PI, abs=1e-15)
    assert delta_phi(-3.1, 3.1) == pytest.approx(TWO_PI - 6.2, abs=1e-15)
    assert delta_phi(0.3, 0.1) == 0.3 - 0.1  # no rounding added for in-range Δφ
    assert delta_phi(PI, 0.0) == -PI  # [-π, π)
    assert delta_phi(0.0, PI) == -PI
    assert delta_phi(10 * PI + 0.1, 0.0) == pytest.approx(0.1, abs=1e-12)
    assert abs(delta_phi(-7 * PI, 0.0)) == pytest.approx(PI, abs=1e-12)
    assert math.isnan(delta_phi(math.inf, 0.0))
    assert math.isnan(delta_phi(math.nan, 0.0))
    out = delta_phi(np.array([3.1, 0.0, -3.1], dtype=np.float32), 0.0)
    assert out.dtype == np.float64 and out.shape == (3,)


@settings(max_examples=200, deadline=None)
@given(st.floats(-4 * PI, 4 * PI), st.floats(-4 * PI, 4 * PI))
def test_delta_phi_range_and_kernel_magnitude(a, b):
    d = float(delta_phi(a, b))
    assert -PI <= d < PI
    assert abs(d) == abs(ref_wrap(a - b))
    # Same angle up to a multiple of 2π.
    assert math.remainder(d - (a - b), TWO_PI) == pytest.approx(0.0, abs=1e-9)


def test_delta_r_values():
    assert delta_r(0.0, 0.0, 3.0, 0.0) == 3.0
    assert delta_r(0.0, 0.0, 0.3, 0.4) == pytest.approx(0.5, abs=1e-15)
    assert delta_r(0.0, 3.1, 0.0, -3.1) == pytest.approx(TWO_PI - 6.2, abs=1e-15)
    eta1, phi1 = np.array([0.0, 1.0]), np.array([0.0, 3.0])
    out = delta_r(eta1, phi1, 0.5, -3.0)
    np.testing.assert_allclose(out, [math.hypot(0.5, 3.0), math.hypot(0.5, TWO_PI - 6.0)], rtol=1e-14)
    assert delta_r(0.0, 0.0, 0.0, 0.0) == 0.0


# ---------------------------------------------------------------------------------------
# The kernel's declared columns
# ---------------------------------------------------------------------------------------
def test_kernel_columns_match_the_signature_and_the_common_layout():
    """KERNEL_COLUMNS names the kernel's array arguments (in order) and its result fields;
    the fields it reads exist in the readers' common layout."""
    import inspect

    from jettracks.readers.base import TRACK_FIELDS

    reads = KERNEL_COLUMNS["reads"]
    params = [
        p.name for p in inspect.signature(associate_tracks).parameters.values()
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    assert params == [
        *(f"jet_{f}" for f in reads["jets"]), "jet_offsets",
        *(f"trk_{f}" for f in reads["tracks"]), "trk_offsets",
    ]
    assert tuple(KERNEL_COLUMNS["produces"]) == Association._fields
    assert set(reads["tracks"]) <= set(TRACK_FIELDS)
    assert set(reads["jets"]) <= {"pt", "eta", "phi", "mass", "index"}
