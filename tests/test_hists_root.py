"""``hists.root``: one histogram per (dataset, flavour) with content, equal to ``h[{...}]``."""

from __future__ import annotations

import hist
import numpy as np
import pytest
import uproot

from jettracks.io.outputs import category_slices, save_hists


def _hist(storage, *, flavour_first: bool):
    cats = [
        hist.axis.StrCategory([], growth=True, name="dataset", label="Dataset"),
        hist.axis.StrCategory(["b", "c", "uds", "g", "unmatched", "data"], name="flavour", label="Jet flavour"),
    ]
    if flavour_first:
        cats = cats[::-1]
    return hist.Hist(*cats, hist.axis.Regular(20, -0.1, 0.1, name="dxy", label="Track $d_{xy}$ [cm]"),
                     storage=storage)


def _brute_force(h):
    """Every (dataset, flavour) slice by hist's own indexing, those with any content."""
    out = []
    for dataset in h.axes["dataset"]:
        for flavour in h.axes["flavour"]:
            sub = h[{"dataset": dataset, "flavour": flavour}]
            total = sub.sum(flow=True)
            if getattr(total, "value", total) != 0 or getattr(total, "variance", 0) != 0:
                out.append((dataset, flavour, sub))
    return out


def _filled(storage, *, flavour_first: bool):
    rng = np.random.default_rng(7)
    h = _hist(storage, flavour_first=flavour_first)
    for dataset in ("qcd", "ttbar"):
        n = 500
        flavour = rng.choice(["b", "c", "uds"], n)  # g, unmatched, data stay empty
        dxy = rng.normal(0, 0.08, n)  # some in the flow bins
        kw = {"weight": rng.normal(1, 0.5, n)} if storage == hist.storage.Weight() else {}
        h.fill(dataset=dataset, flavour=flavour, dxy=dxy, **kw)
    # A pair with flow content only, and one whose weights cancel but whose variance does not.
    h.fill(dataset="qcd", flavour="g", dxy=[5.0], **({"weight": [1.0]} if kw else {}))
    if kw:
        h.fill(dataset="ttbar", flavour="unmatched", dxy=[0.0, 0.0], weight=[1.0, -1.0])
    return h


@pytest.mark.parametrize("storage", [hist.storage.Double(), hist.storage.Weight()], ids=["double", "weight"])
@pytest.mark.parametrize("flavour_first", [False, True])
def test_category_slices_equal_hist_indexing(storage, flavour_first):
    h = _filled(storage, flavour_first=flavour_first)
    got, want = category_slices(h), _brute_force(h)
    assert [(d, f) for d, f, _ in got] == [(d, f) for d, f, _ in want]
    assert ("qcd", "g") in [(d, f) for d, f, _ in got]  # flow bins count as content
    for (_, _, a), (_, _, b) in zip(got, want):
        assert a == b and a.axes == b.axes and a.storage_type == b.storage_type


def test_hists_root_holds_each_slice(tmp_path):
    hists = {"track_dxy": _filled(hist.storage.Double(), flavour_first=False),
             "track_dxy_weighted": _filled(hist.storage.Weight(), flavour_first=False)}
    save_hists(tmp_path, hists, {"qcd": {"events": 1}})
    with uproot.open(tmp_path / "hists.root") as f:
        keys = sorted(k.split(";")[0] for k in f.keys(recursive=True, filter_classname="TH1*"))
        want = sorted(f"{d}/{name}_{fl}" for name, h in hists.items() for d, fl, _ in _brute_force(h))
        assert keys == want
        for name, h in hists.items():
            for d, fl, sub in _brute_force(h):
                th1 = f[f"{d}/{name}_{fl}"]
                np.testing.assert_array_equal(th1.values(flow=True), sub.values(flow=True))
                np.testing.assert_array_equal(th1.variances(flow=True), sub.variances(flow=True))
                # A regular TAxis stores (n, low, high): its edges are recomputed, to rounding.
                np.testing.assert_allclose(th1.axis().edges(), sub.axes[0].edges, rtol=0, atol=1e-15)


def _same_members(got, want, where=""):
    """Every member equal, recursing into member objects (axes); arrays equal with their dtype."""
    import uproot

    if isinstance(want, uproot.model.Model):
        assert type(got).__name__ == type(want).__name__, where
        assert list(got.all_members) == list(want.all_members), where
        for key in want.all_members:
            _same_members(got.all_members[key], want.all_members[key], f"{where}.{key}")
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype, where
        np.testing.assert_array_equal(got, want, err_msg=where)
    else:
        assert got == want or (got != got and want != want), (where, got, want)


@pytest.mark.parametrize("axis", [
    hist.axis.Regular(20, -0.1, 0.1, name="dxy", label="Track $d_{xy}$ [cm]"),
    hist.axis.Regular(70, 1e-5, 50, transform=hist.axis.transform.log, name="absdxy", label="|dxy| [cm]"),
    hist.axis.Integer(0, 60, name="n", label="Tracks per jet"),
    hist.axis.Variable([0.0, 0.1, 1.0, 10.0], name="v", label="v"),
])
@pytest.mark.parametrize("storage", [hist.storage.Double(), hist.storage.Weight(), hist.storage.Int64()])
def test_root_slices_equal_uprootss_conversion_of_each_slice(axis, storage):
    """``hists.root``'s objects, built from the view, equal ``uproot.to_writable`` of each
    :func:`category_slices` histogram, member by member (values, variances, flow bins, entries,
    sums, the axis and its label); other storages take that path itself."""
    import uproot

    from jettracks.io.outputs import root_slices

    rng = np.random.default_rng(3)
    h = hist.Hist(hist.axis.StrCategory([], growth=True, name="dataset"),
                  hist.axis.StrCategory(["b", "c", "uds"], name="flavour"), axis, storage=storage)
    for dataset in ("qcd", "ttbar"):
        x = rng.exponential(0.5, 2000) * (10 if isinstance(axis, hist.axis.Integer) else 1) - 0.05
        x = x.astype(int) if isinstance(axis, hist.axis.Integer) else x
        weight = rng.random(2000) if isinstance(storage, hist.storage.Weight) else None
        h.fill(dataset, rng.choice(["b", "c", "uds", "x"], 2000), x, weight=weight)
    want = category_slices(h)
    if isinstance(storage, hist.storage.Int64):  # uproot writes no integer histogram: the same error
        with pytest.raises(ValueError, match="signed integer or floating-point"):
            uproot.to_writable(want[0][2])
        with pytest.raises(ValueError, match="signed integer or floating-point"):
            root_slices(h)
        return
    got = root_slices(h)
    assert [(d, f) for d, f, _ in got] == [(d, f) for d, f, _ in want] and got
    for (d, f, th1), (_, _, sub) in zip(got, want):
        _same_members(th1, uproot.to_writable(sub), f"{d}/{f}")
