"""The processor's histogram filling: a flavour at a time through boost-histogram's compiled
fill (``ByLabel``), from unpickled templates (``fresh_histograms``).

Each is compared with the plain public path it replaces: one ``Hist.fill`` of every row with a
string label array, and ``make_histograms``. Weighted sums must be equal to the bit (a
flavour's rows keep their order), so the comparisons are exact.
"""

from __future__ import annotations

import hist
import numpy as np
import pytest

from jettracks.physics.flavour import flavour_labels
from processors.jet_tracks import ByLabel, fresh_histograms, make_histograms

CODES = np.array([5, 4, 0, 21, -1], dtype=np.int8)  # b, c, uds, g, unmatched (flavour.CODES)


def _rows(rng, n):
    codes = rng.choice(CODES, n)
    values = rng.normal(0, 0.06, n)
    values[rng.random(n) < 0.05] = np.nan  # NaN, infinities and out-of-range values too
    values[:3] = [np.inf, -np.inf, 5.0] if n >= 3 else values[:3]
    weights = rng.normal(1.0, 0.3, n) * 1e-3 + rng.random(n)  # sums that round
    return codes, values, weights


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n", [0, 1, 7, 5000])
def test_by_label_fill_equals_one_public_fill(weighted, n):
    rng = np.random.default_rng(n + weighted)
    storage = hist.storage.Weight() if weighted else hist.storage.Double()
    want = hist.Hist(*make_histograms()["track_dxy"].axes, storage=storage)
    got = want.copy()
    for dataset in ("qcd", "ttbar"):  # a growing category axis, two categories
        codes, values, weights = _rows(rng, n)
        labels = np.asarray(flavour_labels(codes)).astype(str)
        where = rng.random(n) < 0.8
        w = weights if weighted else None
        want.fill(dataset=dataset, flavour=labels[where], dxy=values[where],
                  **({"weight": weights[where]} if weighted else {}))
        ByLabel.of_jets(codes, labels).fill(got, dataset=dataset, where=where, dxy=values, weight=w)
    assert list(got.axes["dataset"]) == list(want.axes["dataset"])
    assert got.axes == want.axes
    np.testing.assert_array_equal(got.view(flow=True), want.view(flow=True))  # exact, weighted too


def test_by_label_repeat_groups_children_by_their_parent_label():
    rng = np.random.default_rng(3)
    codes = rng.choice(CODES, 300)
    labels = np.asarray(flavour_labels(codes)).astype(str)
    per_jet = rng.integers(0, 6, 300)
    tracks = ByLabel.of_jets(codes, labels).repeat(codes, per_jet)
    want_labels = np.repeat(labels, per_jet)
    seen = np.zeros(len(want_labels), dtype=int)
    for label, rows in tracks.groups:
        assert np.all(want_labels[rows] == label)
        assert np.all(np.diff(rows) > 0)  # the rows' order kept
        seen[rows] += 1
    assert np.all(seen == 1)


@pytest.mark.parametrize("axis", [
    hist.axis.Regular(70, 1e-5, 50, transform=hist.axis.transform.log, name="x"),
    hist.axis.Integer(0, 60, name="x"),
    hist.axis.Variable([0.0, 0.1, 1.0, 10.0], name="x"),
])
@pytest.mark.parametrize("storage", [hist.storage.Double(), hist.storage.Weight(), hist.storage.Int64()])
def test_compiled_fill_equals_hist_fill(axis, storage):
    """One label at a time through the compiled fill (``ByLabel`` over rows of one label)
    equals ``Hist.fill``: growth, the flavour axis' overflow, NaN, every axis kind here."""
    rng = np.random.default_rng(11)
    base = hist.Hist(hist.axis.StrCategory([], growth=True, name="dataset"),
                     hist.axis.StrCategory(["b", "c"], name="flavour"), axis, storage=storage)
    want, got = base.copy(), base.copy()
    for dataset, flavour in (("a", "b"), ("b", "c"), ("a", "x")):  # "x": the flavour axis' overflow
        if isinstance(axis, hist.axis.Integer):  # integers only (both fills refuse floats)
            values = rng.integers(-5, 70, 400)
        else:
            values = rng.exponential(5.0, 400)
            values[::17] = np.nan
        weight = rng.random(400) if isinstance(storage, hist.storage.Weight) else None
        want.fill(dataset, flavour, values, weight=weight)
        _one_label(flavour, len(values)).fill(got, dataset=dataset, x=values, weight=weight)
    assert got.axes == want.axes
    np.testing.assert_array_equal(got.view(flow=True), want.view(flow=True))
    # A weight into a storage without variances goes through the public fill (and its flag).
    if not isinstance(storage, hist.storage.Weight):
        w_pub, w_dir = base.copy(), base.copy()
        x = np.array([1, 2]) if isinstance(axis, hist.axis.Integer) else np.array([1.0, 2.0])
        w_pub.fill("a", "b", x, weight=[0.5, 2.0])
        _one_label("b", 2).fill(w_dir, dataset="a", x=x, weight=np.array([0.5, 2.0]))
        np.testing.assert_array_equal(w_dir.view(flow=True), w_pub.view(flow=True))
        assert w_dir._variance_known == w_pub._variance_known


def _one_label(label, n):
    return ByLabel(np.zeros(n, dtype=np.int8), {0: label})


@pytest.mark.parametrize("with_dxy", [True, False])
@pytest.mark.parametrize("weighted", [False, True])
def test_fresh_histograms_equal_the_definition_and_are_independent(with_dxy, weighted):
    from jettracks.normalisation import WEIGHTED_HISTS, weighted_name

    defined = make_histograms(cone_dr=0.3, with_dxy=with_dxy)
    if weighted:
        defined = {weighted_name(k): hist.Hist(*defined[k].axes, storage=hist.storage.Weight())
                   for k in WEIGHTED_HISTS if k in defined}
    one = fresh_histograms(cone_dr=0.3, with_dxy=with_dxy, weighted=weighted)
    two = fresh_histograms(cone_dr=0.3, with_dxy=with_dxy, weighted=weighted)
    assert list(one) == list(defined)
    for name, h in defined.items():
        assert one[name].axes == h.axes and one[name].storage_type == h.storage_type, name
        assert [a.label for a in one[name].axes] == [a.label for a in h.axes], name
        total = one[name].sum(flow=True)
        assert (total.value if weighted else total) == 0, name
    name = next(iter(one))
    one[name].fill(*(["qcd", "b"] + [1.0] * (one[name].ndim - 2)))
    assert list(two[name].axes["dataset"]) == []  # no shared state between fresh sets
    assert list(fresh_histograms(cone_dr=0.3, with_dxy=with_dxy, weighted=weighted)[name].axes["dataset"]) == []
    assert fresh_histograms(cone_dr=0.4)["track_jet_dr"].axes["dr"].edges[-1] == pytest.approx(0.4)
