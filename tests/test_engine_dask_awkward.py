"""Both engines give exactly what summing ``processor.process`` over chunks gives.

Input: the real CMS PFNano file (10 events, ~1,900 PF candidates an event), the real
TreeMaker and NanoAOD v15 files, and, when :mod:`jettracks.generate` is available, a
small generated PFNano + JetNtuple sample. Each engine (``runner``, ``dask-awkward``) runs on a 2-worker
``LocalCluster`` (one thread each); the reference is ``JetTrackProcessor.process``
called in this process on every chunk (``NanoEventsFactory.from_root(mode="virtual")``,
as the Runner engine does; chunks by :func:`chunk_steps`, checked equal to coffea's
Runner chunking) and summed with coffea's accumulator rules.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path
from types import SimpleNamespace

import awkward as ak
import numpy as np
import pytest
import uproot
from jettracks_testing.data import cms_data_dir

from jettracks.engines import ENGINES, chunk_steps, run_engine
from jettracks.engines.dask_awkward import smoke_test
from jettracks.io import mldata
from processors.jet_tracks import JetTrackProcessor

CMS_DIR = cms_data_dir()
PFNANO = CMS_DIR / "pfnano.root" if CMS_DIR else None  # None: the real CMS files are absent
OPTIONS = {"cone_dr": 0.5, "jet_pt_min": 30.0, "jet_abs_eta_max": 2.5, "track_pt_min": 1.0}


# -- helpers ---------------------------------------------------------------------------------
def _branches(proc: JetTrackProcessor, fileset: dict) -> set[str]:
    out: set[str] = set()
    for spec in fileset.values():
        out.update(proc.reader_for(spec["metadata"]["format"]).branches())
    return out


def _reference(fileset: dict, proc: JetTrackProcessor, chunksize: int, branches: set[str]):
    """``process(events)`` per chunk in this process, summed; plus the chunks used."""
    from coffea.nanoevents import BaseSchema, NanoEventsFactory
    from coffea.processor.accumulator import iadd

    total, chunks = None, []
    for ds, spec in fileset.items():
        for fname in spec["files"]:
            with uproot.open(fname) as rootfile:
                n = rootfile[spec["treename"]].num_entries
                for start, stop in chunk_steps(n, chunksize):
                    events = NanoEventsFactory.from_root(
                        rootfile,
                        treepath=spec["treename"],
                        entry_start=start,
                        entry_stop=stop,
                        schemaclass=BaseSchema,
                        mode="virtual",
                        iteritems_options={"filter_name": sorted(branches)},
                        metadata={**spec["metadata"], "dataset": ds, "filename": fname,
                                  "treename": spec["treename"], "entrystart": start, "entrystop": stop,
                                  "fileuuid": str(rootfile.file.uuid)},  # as the Runner sets it
                    ).events()
                    out = proc.process(events)
                    total = out if total is None else iadd(total, out)
                    chunks.append((fname, start, stop))
    return total, chunks


def _assert_same_hists(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name, h_want in want.items():
        h_got = got[name]
        assert sorted(h_got.axes["dataset"]) == sorted(h_want.axes["dataset"]), name
        for i in (1, 2):  # flavour and variable axes: identical objects (labels, edges, flow)
            assert h_got.axes[i] == h_want.axes[i], (name, i)
            assert h_got.axes[i].label == h_want.axes[i].label, (name, i)
        assert h_got.axes[0].name == h_want.axes[0].name and h_got.axes[0].label == h_want.axes[0].label
        assert h_got.storage_type is h_want.storage_type
        for ds in h_want.axes["dataset"]:
            np.testing.assert_array_equal(
                h_got[{"dataset": ds}].values(flow=True),
                h_want[{"dataset": ds}].values(flow=True),
                err_msg=f"{name}/{ds}",
            )
            # Summing Double histograms with `+` (the Runner's accumulation) makes
            # boost-histogram forget that variances == values: compare where it knows.
            want_var = h_want[{"dataset": ds}].variances(flow=True)
            if want_var is not None:
                np.testing.assert_array_equal(
                    h_got[{"dataset": ds}].variances(flow=True), want_var, err_msg=f"{name}/{ds} variances"
                )


def _ml_table(paths) -> ak.Array:
    arr = ak.concatenate([ak.from_arrow(mldata.read_part(p)) for p in sorted(paths)])
    order = np.lexsort(
        (ak.to_numpy(arr["jet_index"]), ak.to_numpy(arr["event"]), ak.to_numpy(arr["run"]),
         np.asarray(ak.to_list(arr["dataset"])))
    )
    return arr[order]


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, list[str]]:
    """A small generated sample in both formats, or {} when the generator is not there."""
    try:
        from jettracks import generate
    except ImportError:
        return {}
    if not hasattr(generate, "generate_dataset"):
        return {}
    out = tmp_path_factory.mktemp("dak-sample")
    return {
        fmt: [str(p) for p in generate.generate_dataset(
            out, format=fmt, n_files=2, events_per_file=60, seed=5, pileup_candidates=80
        )]
        for fmt in ("pfnano", "jetntuple")
    }


@pytest.fixture(scope="module")
def fileset(generated) -> dict:
    fs: dict = {}
    if PFNANO is not None:
        fs["real_pfnano"] = {"files": [str(PFNANO)], "treename": "Events",
                             "metadata": {"format": "pfnano", "is_mc": True}}
    if generated:
        fs["gen_pfnano"] = {"files": generated["pfnano"], "treename": "Events",
                            "metadata": {"format": "pfnano", "is_mc": True}}
        fs["gen_jetntuple"] = {"files": generated["jetntuple"], "treename": "AK4jets/jetTree",
                               "metadata": {"format": "jetntuple", "is_mc": True}}
    if not fs:
        pytest.skip("no input: real CMS files absent and jettracks.generate is not available")
    return fs


def _meta(fileset: dict) -> dict:
    meta = {}
    for ds, spec in fileset.items():
        for fname in spec["files"]:
            with uproot.open(fname) as f:
                meta[(ds, fname)] = {"numentries": f[spec["treename"]].num_entries, "uuid": f.file.fUUID,
                                     "uuid_hex": bytes(f.file.fUUID).hex()}
    return meta


def _run(engine: str, fileset: dict, proc, client, chunksize: int, branches: set[str]):
    ex = SimpleNamespace(chunksize=chunksize, retries=0, xrootd_timeout=30)
    return run_engine(engine, fileset, _meta(fileset), proc, client=client, ex=ex, branches=branches)


# -- tests -----------------------------------------------------------------------------------
def test_smoke_dask_awkward_compute(local_client):
    """A plain dask-awkward compute works (a resolver once picked versions where none did)."""
    with warnings.catch_warnings():  # "single-machine scheduler while a client is active"
        warnings.simplefilter("ignore", UserWarning)
        smoke_test("sync")
    smoke_test(local_client)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_engine_equals_summed_process(engine, fileset, local_client, tmp_path):
    """Every histogram (values and variances incl. flow), cut flow, entries, notices and ML row equal."""
    extra = {}
    if "compare_association" in inspect.signature(JetTrackProcessor).parameters:
        extra["compare_association"] = True  # an optional output key must come through too
    ref_proc = JetTrackProcessor(**OPTIONS, **extra, ml_dir=str(tmp_path / "ref_ml"))
    eng_proc = JetTrackProcessor(**OPTIONS, **extra, ml_dir=str(tmp_path / "eng_ml"))
    chunksize = 25 if any(k.startswith("gen_") for k in fileset) else 4
    branches = _branches(ref_proc, fileset)

    result = _run(engine, fileset, eng_proc, local_client, chunksize, branches)
    out = result.output
    want, ref_chunks = _reference(fileset, ref_proc, chunksize, branches)

    assert [r.status for r in result.records] == ["ok"] * len(ref_chunks)
    assert [(r.spec.filename, r.spec.entrystart, r.spec.entrystop) for r in result.records] == ref_chunks
    assert len(ref_chunks) > len(fileset)  # several chunks per dataset
    _assert_same_hists(out["hists"], want["hists"])
    for key in set(want) - {"hists", "ml_parts"}:  # every other output of process(), summed
        assert out[key] == want[key], key
    if extra and "real_pfnano" in fileset:  # the real file has JetPFCands links
        assert out["association_comparison"]["real_pfnano"]
    for ds, spec in fileset.items():
        for fname in spec["files"]:
            with uproot.open(fname) as f:
                assert out["entries"][fname] == f[spec["treename"]].num_entries
    if "real_pfnano" in fileset:
        assert out["cutflow"]["real_pfnano"]["entries"] == 10
        assert out["hists"]["track_dxy"][{"dataset": "real_pfnano"}].sum(flow=True) > 0
    if "gen_jetntuple" in fileset:  # no dxy in that format: not a category of the dxy histograms
        assert "gen_jetntuple" not in list(out["hists"]["track_dxy"].axes["dataset"])

    # The ML parts written by the workers hold the same rows as the reference's.
    assert len(out["ml_parts"]) == len(want["ml_parts"]) == len(ref_chunks)
    assert sorted(Path(p).name for p in out["ml_parts"]) == sorted(Path(p).name for p in want["ml_parts"])
    got_ml, want_ml = _ml_table(out["ml_parts"]), _ml_table(want["ml_parts"])
    assert got_ml.fields == want_ml.fields
    for field in want_ml.fields:
        assert ak.array_equal(got_ml[field], want_ml[field], equal_nan=True), field


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_engine_equals_summed_process_other_real_formats(engine, cms_dir, local_client):
    """TreeMaker (nested LorentzVector branches) and NanoAOD (IsoTracks: dxy_err = +inf)."""
    from jettracks import readers

    fs = {}
    for name in ("treemaker.root", "nano_tt_v15.root"):
        path = cms_dir / name
        if path.is_file():
            fmt, tree = readers.detect_tree(str(path))
            fs[name.split(".")[0]] = {"files": [str(path)], "treename": tree,
                                      "metadata": {"format": fmt, "is_mc": True}}
    if not fs:
        pytest.skip(f"neither treemaker.root nor nano_tt_v15.root in {cms_dir}")
    proc = JetTrackProcessor(**OPTIONS)
    branches = _branches(proc, fs)
    result = _run(engine, fs, proc, local_client, 100, branches)
    want, ref_chunks = _reference(fs, proc, 100, branches)
    assert [(r.spec.filename, r.spec.entrystart, r.spec.entrystop) for r in result.records] == ref_chunks
    _assert_same_hists(result.output["hists"], want["hists"])
    for key in set(want) - {"hists"}:
        assert result.output[key] == want[key], key
