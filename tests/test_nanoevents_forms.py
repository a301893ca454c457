"""A chunk's NanoEvents with the tree's form built once per open file
(:mod:`jettracks.engines.nanoevents`) equal coffea's ``NanoEventsFactory.from_root`` ones.

On every real file's TTrees, for several entry ranges of one open file (the later chunks
take the kept form) and with and without a branch filter: the same fields, types, values,
metadata and behaviour of a lazily read column; a filter or another open file gets its own
form, and a closed file's tree is not kept alive.
"""

from __future__ import annotations

import gc

import awkward as ak
import pytest
import uproot
from coffea.nanoevents import BaseSchema, NanoEventsFactory

from jettracks.engines import nanoevents

TREES = [("cms/pfnano.root", "Events"), ("cms/nano_tt_v15.root", "Events"),
         ("cms/treemaker.root", "PreSelection"), ("delphes/delphes.root", "Delphes")]


def _reference(f, tree, start, stop, meta, iteritems):
    return NanoEventsFactory.from_root(f, treepath=tree, schemaclass=BaseSchema, metadata=meta, mode="virtual",
                                       entry_start=start, entry_stop=stop, iteritems_options=iteritems).events()


def _json(array) -> str:
    """The values as JSON, or the error type materialising them raises (coffea's own events
    fail the same way on some empty Delphes ranges)."""
    try:
        return ak.to_json(array, nan_string="NaN", posinf_string="inf", neginf_string="-inf")
    except Exception as err:  # noqa: BLE001
        return type(err).__name__


def _same(got, want) -> None:
    assert ak.fields(got) == ak.fields(want)
    assert str(got.type) == str(want.type)
    assert dict(got.metadata) == dict(want.metadata)
    assert len(got) == len(want)
    for field in ak.fields(want):
        assert _json(got[field]) == _json(want[field]), field
        assert got[field].layout.form == want[field].layout.form, field


@pytest.mark.parametrize("name,tree", TREES)
def test_kept_form_gives_coffeas_events(cms_dir, name, tree):
    path = cms_dir.parent / name
    with uproot.open(path) as f:
        n = f[tree].num_entries
        names = [b for b in f[tree].keys() if "/" not in b][:7]
        for iteritems in ({}, {"filter_name": names}):
            for start, stop in [(0, min(3, n)), (min(3, n), n), (0, n), (n, n + 5)]:
                meta = {"dataset": "d", "filename": str(path), "entrystart": start, "entrystop": stop}
                got = nanoevents.chunk_events(f, tree, entry_start=start, entry_stop=stop, metadata=meta,
                                              iteritems_options=iteritems)
                _same(got, _reference(f, tree, start, stop, meta, iteritems))


def test_forms_are_keyed_by_open_tree_and_filter(cms_dir):
    path = cms_dir / "pfnano.root"
    nanoevents._FORMS.clear()
    calls = []
    from coffea.nanoevents.mapping.uproot import UprootSourceMapping

    orig = UprootSourceMapping._extract_base_form.__func__

    def spy(cls, tree, iteritems_options={}):
        calls.append(tree)
        return orig(cls, tree, iteritems_options=iteritems_options)

    UprootSourceMapping._extract_base_form = classmethod(spy)
    try:
        with uproot.open(path) as f:
            for start in range(0, 10, 2):  # five chunks of one open file: one form
                nanoevents.chunk_events(f, "Events", entry_start=start, entry_stop=start + 2, metadata={},
                                        iteritems_options={})
            assert len(calls) == 1
            e = nanoevents.chunk_events(f, "Events", entry_start=0, entry_stop=2, metadata={},
                                        iteritems_options={"filter_name": ["nJet", "Jet_pt"]})
            assert len(calls) == 2 and set(ak.fields(e)) == {"nJet", "Jet_pt"}
        with uproot.open(path) as f:  # another open of the same file: a form of its own
            nanoevents.chunk_events(f, "Events", entry_start=0, entry_stop=2, metadata={}, iteritems_options={})
            assert len(calls) == 3
    finally:
        UprootSourceMapping._extract_base_form = classmethod(orig)
    del f, e, calls
    gc.collect()
    assert all(ref() is None for ref, _ in nanoevents._FORMS.values())  # closed trees not kept
