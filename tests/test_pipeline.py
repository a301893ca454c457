"""End-to-end pipeline on generated data: distributed == serial, chunking-invariant, accounted."""

from __future__ import annotations

import json
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest

from jettracks.engines import chunk_steps
from jettracks.execution import run_config

pytestmark = pytest.mark.slow


def _config(sample, out, *, backend="local", chunksize=100_000, formats=("pfnano", "jetntuple")):
    return {
        "name": "tiny",
        "datasets": {
            f"qcd_{fmt}": {
                "files": [str(p) for p in sample[fmt]],
                "format": fmt,
                "metadata": {"is_mc": True},
            }
            for fmt in formats
        },
        "processor": {
            "class": "processors.jet_tracks:JetTrackProcessor",
            "options": {"cone_dr": 0.5, "jet_pt_min": 30.0, "jet_abs_eta_max": 2.5, "track_pt_min": 1.0},
        },
        "executor": {"backend": backend, "workers": 2, "chunksize": chunksize},
        "output": {"dir": str(out), "plots": False},
    }


def _hist_values(hists):
    return {name: h.values(flow=True) for name, h in hists.items()}


def _assert_same_hists(a, b):
    assert set(a) == set(b)
    for name in a:
        ha, hb = a[name], b[name]
        # growing categories: their order is the order chunks were accumulated in
        assert sorted(ha.axes["dataset"]) == sorted(hb.axes["dataset"])
        for ds in ha.axes["dataset"]:
            va = ha[{"dataset": ds}].values(flow=True)
            vb = hb[{"dataset": ds}].values(flow=True)
            np.testing.assert_array_equal(va, vb, err_msg=f"{name}/{ds}")


@pytest.fixture(scope="module")
def serial_run(small_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    return run_config(_config(small_sample, out, backend="serial"), progress=False)


def test_distributed_equals_serial(small_sample, serial_run, local_client, tmp_path):
    dist = run_config(_config(small_sample, tmp_path / "dist"), client=local_client, progress=False)
    _assert_same_hists(dist.hists, serial_run.hists)
    assert dist.cutflow == serial_run.cutflow
    assert dist.report["cluster"]["workers"] == 2


@pytest.mark.parametrize("chunksize", [37, 1000])
def test_histograms_independent_of_chunksize(small_sample, serial_run, local_client, tmp_path, chunksize):
    run = run_config(
        _config(small_sample, tmp_path / "c", chunksize=chunksize), client=local_client, progress=False
    )
    # coffea's chunking rule per file (jettracks.engines.chunk_steps) over each file's entries
    assert run.report["chunks"] == sum(len(chunk_steps(f["entries_expected"], chunksize)) for f in run.report["files"])
    _assert_same_hists(run.hists, serial_run.hists)
    for ds, flow in serial_run.cutflow.items():
        for step in ("entries", "jets", "selected_jets", "tracks", "tracks_in_cone", "tracks_valid_dxy"):
            assert run.cutflow[ds][step] == flow[step], (ds, step)


def test_histogram_totals_equal_cutflow(serial_run):
    h, flow = serial_run.hists, serial_run.cutflow
    for ds, steps in flow.items():
        assert h["jet_pt"][{"dataset": ds}].sum(flow=True) == steps["selected_jets"]
        assert h["jet_n_tracks"][{"dataset": ds}].sum(flow=True) == steps["selected_jets"]
        assert h["track_jet_dr"][{"dataset": ds}].sum(flow=True) == steps["tracks_in_cone"]
        if "track_dxy" in h and ds in list(h["track_dxy"].axes["dataset"]):
            assert h["track_dxy"][{"dataset": ds}].sum(flow=True) == steps["tracks_valid_dxy"]
        if ds.endswith("jetntuple"):  # the format has no impact parameters
            assert steps["tracks_valid_dxy"] == 0 < steps["tracks_in_cone"] <= steps["tracks"]
        else:
            assert 0 < steps["tracks_valid_dxy"] <= steps["tracks_in_cone"] <= steps["tracks"]


def test_jetntuple_has_no_dxy_and_says_why(serial_run):
    flow = serial_run.cutflow["qcd_jetntuple"]
    assert flow["tracks_valid_dxy"] == 0 and flow["tracks_in_cone"] > 0
    assert "qcd_jetntuple" not in list(serial_run.hists["track_dxy"].axes["dataset"])
    assert any("jetntuple" in n and "impact parameters" in n for n in serial_run.report["notices"])


def test_b_jets_have_wider_dxy_than_light(serial_run):
    h = serial_run.hists["track_abs_dxy"][{"dataset": "qcd_pfnano"}]
    centers = h.axes[1].centers

    def frac_above(flavours, cut_cm=0.02):
        vals = sum(h[{"flavour": f}].values() for f in flavours)
        return vals[centers > cut_cm].sum() / vals.sum()

    b, light = frac_above(["b"]), frac_above(["uds", "g"])
    assert b > 2 * light, (b, light)


def test_accounting_and_report(serial_run):
    rep = serial_run.report
    assert rep["entries"]["processed"] == rep["entries"]["expected"] > 0
    assert rep["entries"]["skipped"] == 0
    for f in rep["files"]:
        assert f["entries_processed"] == f["entries_expected"]
    saved = json.loads((serial_run.output_dir / "report.json").read_text())
    assert saved["cutflow"] == serial_run.cutflow
    assert (serial_run.output_dir / "hists.coffea").exists()
    assert (serial_run.output_dir / "hists.root").exists()


def test_ml_columns_match_histograms(serial_run):
    required = {
        "dataset", "run", "lumi", "event", "jet_index", "jet_pt", "jet_eta", "jet_phi",
        "flavour", "n_tracks", "track_pt", "track_eta", "track_phi",
    }
    for ds, flow in serial_run.cutflow.items():
        rows = serial_run.ml_dataset(ds)
        assert required <= set(rows.fields)
        assert set(rows.dataset.to_list()) == {ds}
        assert len(rows) == flow["selected_jets"]
        assert ak.sum(rows.n_tracks) == flow["tracks_in_cone"]
        assert ak.all(ak.num(rows.track_pt, axis=1) == rows.n_tracks)
    pf = serial_run.ml_dataset("qcd_pfnano")
    assert "track_dxy" in pf.fields
    assert not ak.any(ak.flatten(pf.track_dxy) == -1)  # the PFNano -1 fill never leaks
    # jet_index is the position in the event's collection: unique per (run, lumi, event)
    keys = list(zip(ak.to_list(pf.run), ak.to_list(pf.lumi), ak.to_list(pf.event), ak.to_list(pf.jet_index)))
    assert len(set(keys)) == len(keys)


def test_runner_cli_end_to_end(small_sample, tmp_path):
    import yaml

    cfg = _config(small_sample, tmp_path / "out", formats=("pfnano",))
    cfg["executor"]["workers"] = 1
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "run", str(path), "--no-progress", "--max-files", "2", "--no-plots"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(rep["files"]) == 2
    assert rep["entries"]["processed"] == rep["entries"]["expected"] == 2 * 150


def test_dask_awkward_engine_equals_runner_engine(small_sample, serial_run, local_client, tmp_path):
    cfg = _config(small_sample, tmp_path / "dak")
    cfg["executor"]["engine"] = "dask-awkward"
    dak_run = run_config(cfg, client=local_client, progress=False)
    _assert_same_hists(dak_run.hists, serial_run.hists)
    for ds, flow in serial_run.cutflow.items():
        for step in ("entries", "jets", "selected_jets", "tracks", "tracks_in_cone", "tracks_valid_dxy"):
            assert dak_run.cutflow[ds][step] == flow[step], (ds, step)
    assert dak_run.report["entries"]["processed"] == serial_run.report["entries"]["expected"]
