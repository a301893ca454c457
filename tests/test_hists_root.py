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
