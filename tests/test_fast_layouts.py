"""Layouts built straight on buffers equal what awkward's high-level calls give.

``readers.base.flat``/``counts``/``jagged_records`` and ``column_cache.arrow_to_awkward``
skip awkward's high-level functions for plain numpy layouts (their Python cost was paid
per column per sub-batch). Each is compared with the high-level reference on every numeric
branch of the real CMS files (and random inputs): same form, same values, same dtype.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pyarrow as pa
import pytest
import uproot

from jettracks.io.column_cache import arrow_to_awkward
from jettracks.readers.base import counts, flat, jagged_buffers, jagged_records
from jettracks_testing.data import absent_reason, cms_data_dir

CMS = cms_data_dir()
FILES = ["pfnano.root", "nano_tt_v15.root", "treemaker.root"]
ENTRIES = 40  # enough for several baskets of the jagged branches, quick


def _numeric_branches(path):
    """name -> array (first ENTRIES entries) of every branch read as numbers or lists of numbers."""
    with uproot.open(path) as f:
        tree = f["Events"] if "Events" in f else f[[k for k, c in f.classnames().items() if c == "TTree"][0]]
        out = {}
        for name, branch in tree.items(filter_typename=lambda t: True):
            try:
                arr = branch.array(entry_stop=ENTRIES, library="ak")
            except Exception:  # noqa: BLE001 - objects uproot cannot read are not our subject
                continue
            form = arr.layout.form
            if isinstance(form, ak.forms.NumpyForm) or (
                isinstance(form, ak.forms.ListOffsetForm) and isinstance(form.content, ak.forms.NumpyForm)
            ):
                out[name] = arr
        return out


@pytest.fixture(scope="module", params=FILES)
def real_branches(request):
    if CMS is None:
        pytest.skip(absent_reason())
    branches = _numeric_branches(CMS / request.param)
    assert len(branches) > 20, f"{request.param}: too few numeric branches read"
    return branches


def _reference_flat(arr):
    return ak.to_numpy(ak.flatten(arr, axis=None) if arr.ndim > 1 else arr)


def test_flat_and_counts_equal_awkward_on_real_branches(real_branches):
    for name, arr in real_branches.items():
        for sliced in (arr, arr[3:-5], arr[::2]):  # offsets not starting at 0, a ListArray
            got, ref = flat(sliced), _reference_flat(sliced)
            assert got.dtype == ref.dtype and np.array_equal(got, ref, equal_nan=got.dtype.kind == "f"), name
            if sliced.ndim > 1:
                n = counts(sliced)
                assert n.dtype == np.int64 and np.array_equal(n, ak.to_numpy(ak.num(sliced, axis=1))), name
                offsets, values = jagged_buffers(sliced)
                assert offsets[0] == 0 and np.array_equal(np.diff(offsets), n) and np.array_equal(values, got, equal_nan=got.dtype.kind == "f"), name
        assert flat(arr, np.float64).dtype == np.float64


def test_arrow_to_awkward_equals_from_arrow_on_real_branches(real_branches):
    for name, arr in real_branches.items():
        arrow = ak.to_arrow(arr, extensionarray=True)
        for piece in (arrow, arrow.slice(7), arrow.slice(2, 11), pa.concat_arrays([arrow.slice(5), arrow.slice(0, 4)])):
            got, ref = arrow_to_awkward(piece), ak.from_arrow(piece)
            assert got.layout.form == ref.layout.form, name
            assert np.array_equal(_reference_flat(got), _reference_flat(ref), equal_nan=True), name
            if ref.ndim > 1:
                assert np.array_equal(ak.to_numpy(ak.num(got, axis=1)), ak.to_numpy(ak.num(ref, axis=1))), name


@pytest.mark.parametrize("value", [
    ak.Array([[True, False], [], [True]]),  # booleans: bit-packed in Arrow, not a plain buffer
    ak.Array([[1.0, None], [], [3.0]]),  # missing values
    ak.Array([["a", "b"], ["c"]]),  # strings
    ak.Array([[[1, 2], [3]], [[4]]]),  # lists of lists
    ak.Array([{"x": 1, "y": 2.0}, {"x": 3, "y": 4.0}]),  # records
    ak.with_parameter(ak.Array([[1, 2], [3]]), "__doc__", "documented"),  # parameters
])
def test_arrow_to_awkward_falls_back_for_other_forms(value):
    arrow = ak.to_arrow(value, extensionarray=True)
    got, ref = arrow_to_awkward(arrow), ak.from_arrow(arrow)
    assert got.layout.form == ref.layout.form and got.to_list() == ref.to_list()


def test_jagged_records_equals_zip_then_unflatten():
    rng = np.random.default_rng(7)
    for n_events in (0, 1, 50):
        n = rng.integers(0, 6, n_events)
        n[: min(3, n_events)] = 0  # empty events first
        size = int(n.sum())
        fields = {
            "pt": rng.random(size).astype(np.float32),
            "charge": rng.integers(-1, 2, 2 * size).astype(np.int32)[::2],  # a strided view
            "id": np.arange(size, dtype=np.uint64),
        }
        got, ref = jagged_records(fields, n), ak.unflatten(ak.zip(fields, depth_limit=1), n)
        assert got.layout.form == ref.layout.form and got.to_list() == ref.to_list()
    # fields that are not flat numpy arrays take awkward's own path (same result)
    mixed = {"a": ak.Array([1.0, 2.0, 3.0]), "b": np.arange(3)}
    assert jagged_records(mixed, [2, 1]).to_list() == ak.unflatten(ak.zip(mixed, depth_limit=1), [2, 1]).to_list()


@pytest.mark.parametrize("fields,n", [
    ({"a": np.arange(5)}, [2, 2]),  # counts sum to fewer items
    ({"a": np.arange(3), "b": np.arange(4)}, [3]),  # fields of different lengths
    ({"a": np.arange(2)}, [3, -1]),  # a negative count
])
def test_jagged_records_rejects_inconsistent_input(fields, n):
    with pytest.raises(ValueError):
        jagged_records(fields, np.asarray(n))
