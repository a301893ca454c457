"""The generator writes ROOT's basket layout: per-branch baskets of ~32 kB, LZMA-9.

Checked against uproot's own ``extend`` layout (same content) and against the
rule written out here independently: a basket closes at the first entry that
brings it to >= ``basket_bytes`` uncompressed bytes.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from jettracks import generate


def _baskets(branch) -> np.ndarray:
    n = branch.num_baskets
    return np.asarray(branch.member("fBasketEntry")[: n + 1], dtype=np.int64)


def _expected_bounds(entry_bytes: list[int], basket_bytes: int) -> list[int]:
    bounds, filled = [0], 0
    for i, size in enumerate(entry_bytes):
        filled += size
        if filled >= basket_bytes:
            bounds.append(i + 1)
            filled = 0
    if bounds[-1] != len(entry_bytes):
        bounds.append(len(entry_bytes))
    return bounds


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    d = tmp_path_factory.mktemp("layout")
    root_layout = generate.generate_file(d / "root.root", format="pfnano", n_events=300, seed=3)
    one_basket = generate.generate_file(
        d / "one.root", format="pfnano", n_events=300, seed=3, basket_events=300, compression_level=1
    )
    return root_layout, one_basket


def test_pfnano_content_equals_uproot_extend_layout(pair):
    a = uproot.open(pair[0])["Events"].arrays()
    b = uproot.open(pair[1])["Events"].arrays()
    assert a.fields == b.fields
    assert ak.array_equal(a, b)


def test_pfnano_baskets_follow_root_rule_per_branch(pair):
    tree = uproot.open(pair[0])["Events"]
    counts = tree["nPFCands"].array(library="np").astype(int)
    for name in ("PFCands_pt", "PFCands_charge", "PFCands_d0"):
        itemsize = tree[name].interpretation.content.from_dtype.itemsize
        expected = _expected_bounds([c * itemsize + 4 for c in counts], 32_000)
        assert _baskets(tree[name]).tolist() == expected, name
    # A light branch holds the whole small file in one basket, as ROOT writes it.
    assert tree["Jet_pt"].num_baskets < tree["PFCands_pt"].num_baskets
    assert _baskets(tree["run"]).tolist() == _expected_bounds([4] * tree.num_entries, 32_000)


def test_pfnano_compression_is_lzma_9(pair):
    f = uproot.open(pair[0])
    assert isinstance(f.file.compression, uproot.LZMA)
    assert f.file.compression.level == 9
    # The basket headers say LZMA ("XZ") whatever the dictionary size.
    branch = f["Events"]["PFCands_pt"]
    seek = int(branch.member("fBasketSeek")[0])
    raw = f.file.source.chunk(seek, seek + 200).raw_data.tobytes()
    assert b"XZ" in raw


def test_jetntuple_root_layout_reads_like_extend_layout(tmp_path):
    a = generate.generate_file(tmp_path / "a.root", format="jetntuple", n_events=200, seed=5)
    b = generate.generate_file(
        tmp_path / "b.root", format="jetntuple", n_events=200, seed=5, basket_jets=10**6
    )
    ta, tb = uproot.open(a)["AK4jets/jetTree"], uproot.open(b)["AK4jets/jetTree"]
    assert ak.array_equal(ta.arrays(), tb.arrays())
    assert ta["PF_pT"].num_baskets > 1 and tb["PF_pT"].num_baskets == 1


@pytest.mark.parametrize("bad", [0, -5])
def test_bad_basket_bytes_is_named(tmp_path, bad):
    with pytest.raises(ValueError, match="basket_bytes"):
        generate.generate_file(tmp_path / "x.root", format="pfnano", n_events=5, seed=1, basket_bytes=bad)
