"""Delphes input, RNTuple input, empty files and files lacking a branch (issue 13, "Formats").

The references are computed here in plain Python / numpy from the raw branches (uproot
only), never with the code under test: mm -> cm and the D0 sign flip, the ΔR cone
association (math.hypot over every (jet, track) pair), the flavour mapping of Delphes'
``Jet.Flavor``. Runs go through ``run_config`` on both engines, in this process.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from jettracks import readers
from jettracks.execution import RunError, run_config
from jettracks.generate import generate_events, generate_file, make_rng

PROJECT = Path(__file__).resolve().parents[1]
ENGINES = ("runner", "dask-awkward")


def _delphes_file() -> Path | None:
    from jettracks_testing.data import cms_data_dir

    cms = cms_data_dir()
    for base in ([cms.parent] if cms is not None else []) + [PROJECT.parent / "shared" / "data"]:
        path = base / "delphes" / "delphes.root"
        if path.exists():
            return path
    return None


DELPHES = _delphes_file()
needs_delphes = pytest.mark.skipif(DELPHES is None, reason="shared/data/delphes/delphes.root absent")


def _run(files, out: Path, *, engine: str = "runner", fmt: str = "auto", chunksize: int = 15, **options):
    cfg = {
        "name": "t",
        "datasets": {"s": {"files": [str(f) for f in files], "format": fmt, "metadata": {"is_mc": True}}},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": options},
        "executor": {"backend": "serial", "engine": engine, "chunksize": chunksize},
        "output": {"dir": str(out), "plots": False},
    }
    result = run_config(cfg, progress=False)
    return result, json.loads((out / "report.json").read_text())


def _brute_force(jets, tracks, *, cone=0.5, jet_pt_min=30.0, eta_max=2.5, trk_pt_min=1.0):
    """[(event, jet index, [track indices in the cone])] by plain Python loops."""
    out = []
    for ev, (ejets, etrks) in enumerate(zip(jets, tracks)):
        for j, (pt, eta, phi) in enumerate(ejets):
            if not (pt > jet_pt_min and abs(eta) < eta_max):
                continue
            inside = []
            for t, (tpt, teta, tphi, tq) in enumerate(etrks):
                if tq == 0 or tpt < trk_pt_min:
                    continue
                dphi = (tphi - phi + math.pi) % (2 * math.pi) - math.pi
                if math.hypot(teta - eta, dphi) < cone:
                    inside.append(t)
            out.append((ev, j, inside))
    return out


def _raw_delphes(path: Path, names: dict[str, str]) -> dict[str, list]:
    tree = uproot.open(path)["Delphes"]
    return {key: tree[branch].array(library="ak").tolist() for key, branch in names.items()}


# -- the real Delphes file --------------------------------------------------------------------------
@needs_delphes
def test_real_delphes_is_detected_and_inspected():
    from rich.console import Console

    from jettracks.inspect import inspect_file

    assert readers.detect_tree(str(DELPHES)) == ("delphes", "Delphes")
    buf = io.StringIO()
    assert inspect_file(str(DELPHES), console=Console(file=buf, width=200)) == 0
    text = buf.getvalue()
    assert "delphes (detected; tree Delphes, 25 entries)" in text and "MISSING" not in text


@needs_delphes
def test_real_delphes_units_sign_flavour_and_association(tmp_path):
    """Per track: dxy = -D0/10 cm, dz = DZ/10 cm, ErrorD0 = 0 -> dxy_err = +inf (valid, no
    significance); per jet: the tracks in the cone and the flavour label, against brute force."""
    raw = _raw_delphes(DELPHES, {
        "jpt": "Jet/Jet.PT", "jeta": "Jet/Jet.Eta", "jphi": "Jet/Jet.Phi", "flav": "Jet/Jet.Flavor",
        "tpt": "Track/Track.PT", "teta": "Track/Track.Eta", "tphi": "Track/Track.Phi",
        "tq": "Track/Track.Charge", "d0": "Track/Track.D0", "ed0": "Track/Track.ErrorD0", "dz": "Track/Track.DZ",
        "number": "Event/Event.Number",
    })
    from processors.jet_tracks import JetTrackProcessor

    with uproot.open(DELPHES) as f:
        columns = f["Delphes"].arrays(readers.get("delphes").branches(set(f["Delphes"].keys())))
    chunk = JetTrackProcessor().analyse(columns, fmt="delphes")
    batch = chunk.batch
    # units and sign, every track of every event
    trk = ak.flatten(batch.tracks)
    d0 = [x for ev in raw["d0"] for x in ev]
    assert len(trk) == len(d0) == 4086
    np.testing.assert_allclose(ak.to_numpy(trk.dxy), [-x / 10.0 for x in d0], rtol=1e-6, atol=0)
    np.testing.assert_allclose(ak.to_numpy(trk.dz), [x / 10.0 for ev in raw["dz"] for x in ev], rtol=1e-6)
    assert all(e == 0 for ev in raw["ed0"] for e in ev)  # this card does not smear: no error anywhere
    assert np.all(np.isinf(ak.to_numpy(trk.dxy_err)))
    assert max(abs(x) for x in d0) > 10.0 and np.nanmax(np.abs(ak.to_numpy(trk.dxy))) < 10.0  # mm became cm
    assert batch.event.tolist() == [ev[0] for ev in raw["number"]]
    assert set(batch.run.tolist()) == {1} and set(batch.lumi.tolist()) == {1}
    # association: every selected jet's tracks, by brute force
    jets = [list(zip(*e)) for e in zip(raw["jpt"], raw["jeta"], raw["jphi"])]
    tracks = [list(zip(*e)) for e in zip(raw["tpt"], raw["teta"], raw["tphi"], raw["tq"])]
    want = _brute_force(jets, tracks)
    assert len(chunk.jets) == len(want) > 20
    got_pt = ak.to_list(chunk.jet_tracks.pt)
    for (ev, j, inside), pts, index in zip(want, got_pt, ak.to_list(chunk.jets["index"])):
        assert index == j
        assert sorted(pts) == pytest.approx(sorted(raw["tpt"][ev][t] for t in inside))
    # flavour: Delphes' Jet.Flavor (heaviest parton in the cone) -> b, c, uds, g, unmatched
    expect = {0: "unmatched", 1: "uds", 2: "uds", 3: "uds", 4: "c", 5: "b", 21: "g"}
    flavor = [raw["flav"][ev][j] for ev, j, _ in want]
    assert chunk.flavour_definition == "parton"
    assert list(chunk.flavour_labels) == [expect[x] for x in flavor]
    assert len(set(flavor)) >= 4


@needs_delphes
def test_real_delphes_runs_alike_on_both_engines(tmp_path):
    results = {e: _run([DELPHES], tmp_path / e, engine=e, chunksize=10) for e in ENGINES}
    (ra, rep_a), (rb, rep_b) = results.values()
    assert rep_a["entries"] == rep_b["entries"] == {"expected": 25, "processed": 25, "skipped": 0,
                                                    "files_unreadable": 0}
    assert rep_a["cutflow"] == rep_b["cutflow"]
    cut = ra.cutflow["s"]
    assert cut["tracks_in_cone"] == cut["tracks_valid_dxy"] > 0  # ErrorD0 = 0: valid, unknown error
    assert ra.hists["track_dxy_significance"].values().sum() == 0  # no significance without an error
    for name, h in ra.hists.items():
        np.testing.assert_array_equal(h.values(flow=True), rb.hists[name].values(flow=True), err_msg=name)
    assert any("ErrorD0 = 0" in n for n in rep_a["notices"])
    assert any("run = 1, lumi = 1" in n for n in rep_a["notices"])


# -- generated Delphes ------------------------------------------------------------------------------
@pytest.mark.parametrize("process", ["qcd", "llp"])
def test_generated_delphes_is_in_delphes_units_and_names(process, tmp_path):
    path = generate_file(tmp_path / "d.root", format="delphes", n_events=30, seed=7, file_index=2, process=process)
    events = generate_events(30, make_rng(7, 2), process=process, file_index=2)
    c = events.cands
    has = c["hasTrack"] & (c["charge"] != 0)
    tree = uproot.open(path)["Delphes"]
    assert {"Jet_size", "Jet.PT", "Jet.Flavor", "Track_size", "Track.D0", "Track.ErrorD0", "Event.Number"} <= set(
        tree.keys())
    # mm on disk, Delphes' sign: D0 = -10 * (CMS dxy in cm)
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(tree["Track.D0"].array())),
                                  np.float32(-10.0 * c["d0"][has].astype(np.float64)))
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(tree["Track.ErrorD0"].array())),
                                  np.float32(10.0 * c["d0Err"][has].astype(np.float64)))
    assert tree["Track_size"].array().tolist() == np.bincount(
        np.repeat(np.arange(30), events.cand_counts)[has], minlength=30).tolist()
    flavor = ak.to_numpy(ak.flatten(tree["Jet.Flavor"].array()))
    hadron = events.jets["hadronFlav"]
    assert np.all(flavor[hadron == 5] == 5) and np.all(flavor[hadron == 4] == 4)
    light = np.abs(events.jets["partonFlav"])[hadron == 0]
    assert np.all(flavor[hadron == 0] == np.where(np.isin(light, (1, 2, 3, 21)), light, 0))
    # read back: cm and CMS's sign again, the generator's own values
    assert readers.detect_tree(str(path)) == ("delphes", "Delphes")
    with uproot.open(path) as f:
        cols = f["Delphes"].arrays(readers.get("delphes").branches(set(f["Delphes"].keys())))
    batch = readers.get("delphes").read(cols)
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(batch.tracks.dxy)), c["d0"][has], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(batch.tracks.dxy_err)), c["d0Err"][has], rtol=1e-6)


def test_cli_generates_delphes_rntuple(tmp_path):
    from runner.cli import main

    assert main(["generate", "--format", "delphes", "--process", "llp", "--files", "1",
                 "--events-per-file", "5", "--out", str(tmp_path), "--container", "rntuple"]) == 0
    with uproot.open(tmp_path / "delphes_0000.root") as f:
        assert f.classnames() == {"Delphes;1": "ROOT::RNTuple"}
    assert readers.detect_tree(str(tmp_path / "delphes_0000.root")) == ("delphes", "Delphes")
    from rich.console import Console

    from jettracks.inspect import inspect_file

    buf = io.StringIO()
    assert inspect_file(str(tmp_path / "delphes_0000.root"), console=Console(file=buf, width=200)) == 0
    assert "delphes (detected; tree Delphes, 5 entries)" in buf.getvalue() and "RNTuple" in buf.getvalue()


# -- RNTuple = TTree, row for row and histogram for histogram -------------------------------------------
@pytest.mark.parametrize("fmt", ["pfnano", "delphes", "jetntuple"])
def test_rntuple_run_equals_ttree_run(fmt, tmp_path):
    paths = {c: generate_file(tmp_path / c / f"{fmt}.root", format=fmt, n_events=40, seed=5, process="llp",
                              container=c) for c in ("ttree", "rntuple")}
    with uproot.open(paths["rntuple"]) as f:
        tree, collection = {"pfnano": ("Events", "Jet"), "delphes": ("Delphes", "Jet"),
                            "jetntuple": ("AK4jets/jetTree", "PF")}[fmt]
        assert f.classnames()[f"{tree};1"] == "ROOT::RNTuple"
        keys = f[tree].keys()
        assert collection in keys and f"n{collection}" not in keys  # a collection field, no counter
    runs = {(c, e): _run([paths[c]], tmp_path / f"out-{c}-{e}", engine=e, ml_pad_tracks=4)
            for c in paths for e in ENGINES}
    ref, ref_rep = runs[("ttree", "runner")]
    ref_rows = ref.ml_dataset("s")
    assert len(ref_rows) > 20 and ref_rep["formats"]["s"] == fmt
    for (c, e), (res, rep) in runs.items():
        assert rep["entries"] == ref_rep["entries"], (c, e)
        assert rep["cutflow"] == ref_rep["cutflow"], (c, e)
        assert list(res.hists) == list(ref.hists)
        for name, h in ref.hists.items():
            np.testing.assert_array_equal(h.values(flow=True), res.hists[name].values(flow=True),
                                          err_msg=f"{c} {e} {name}")
        rows = res.ml_dataset("s")
        assert rows.fields == ref_rows.fields
        for field in rows.fields:
            assert ak.array_equal(rows[field], ref_rows[field], equal_nan=True), (c, e, field)


def test_rntuple_collection_fields_read_under_ttree_names(tmp_path):
    """A CMS Run-4 style RNTuple (``Jet`` = vector of records, no ``nJet``) reads as ``Jet_pt``
    and ``nJet``; a real field of the alias name wins."""
    from jettracks.io.rntuple import alias_map, branch_names

    path = tmp_path / "r.root"
    jets = ak.Array([[{"pt": 40.0, "eta": 0.1}], [], [{"pt": 50.0, "eta": 1.0}, {"pt": 35.0, "eta": -1.0}]])
    with uproot.recreate(path) as f:
        f["Events"] = {"run": np.array([1, 1, 1], np.uint32), "Jet": jets, "Jet_eta": jets.eta * 2}
    with uproot.open(path) as f:
        names = branch_names(f["Events"])
        aliases = alias_map(f["Events"].to_akform()[0])
    assert {"Jet_pt", "Jet.pt", "Jet/Jet.pt", "nJet", "Jet_size", "run"} <= names
    assert aliases["Jet_pt"] == (("Jet", "pt"), False) and aliases["nJet"] == (("Jet",), True)
    assert aliases["Jet_eta"] == (("Jet_eta",), False)  # the real field, not the member
    # a TreeMaker-like vector of records holding a record: the split-branch spelling of the leaf
    nested = ak.Array([[{"fCoordinates": {"fPt": 40.0, "fEta": 0.1}}], []])
    with uproot.recreate(tmp_path / "n.root") as f:
        f["PreSelection"] = {"Jets": nested}
    with uproot.open(tmp_path / "n.root") as f:
        aliases = alias_map(f["PreSelection"].to_akform()[0])
    assert aliases["Jets/Jets.fCoordinates.fPt"] == (("Jets", "fCoordinates", "fPt"), False)


# -- empty files, missing branches ------------------------------------------------------------------
@pytest.mark.parametrize("fmt,container", [("delphes", "ttree"), ("pfnano", "rntuple")])
def test_zero_entry_file_is_processed_and_accounted(fmt, container, tmp_path):
    good = generate_file(tmp_path / "good.root", format=fmt, n_events=20, seed=2, container=container)
    empty = generate_file(tmp_path / "empty.root", format=fmt, n_events=0, seed=2, container=container)
    for engine in ENGINES:
        result, rep = _run([good, empty], tmp_path / engine, engine=engine, chunksize=10)
        assert rep["status"] == "ok" and rep["chunks"] == 3 and rep["chunks_failed"] == 0  # 2 + the empty one
        entry = next(f for f in rep["files"] if f["file"] == str(empty))
        assert entry["entries_expected"] == entry["entries_processed"] == 0 and entry["skipped"] == []
        assert rep["entries"] == {"expected": 20, "processed": 20, "skipped": 0, "files_unreadable": 0}


def _pfnano_without(tmp_path: Path, name: str, drop: tuple[str, ...]) -> Path:
    """A generated PFNano file rewritten (uproot) without the branches ``drop``."""
    from jettracks_testing.samples import PF_BRANCHES

    source = generate_file(tmp_path / f"src-{name}.root", format="pfnano", n_events=20, seed=11, file_index=3)
    arrs = uproot.open(source)["Events"].arrays(PF_BRANCHES)
    data = {k: arrs[k] for k in ("run", "luminosityBlock", "event") if k not in drop}
    for prefix in ("Jet", "PFCands"):
        data[prefix] = ak.zip({k[len(prefix) + 1:]: arrs[k] for k in arrs.fields
                               if k.startswith(prefix + "_") and k not in drop})
    path = tmp_path / name
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: v.type for k, v in data.items()}, counter_name=lambda n: "n" + n)
        f["Events"].extend(data)
    return path


@pytest.mark.parametrize("engine", ENGINES)
def test_file_lacking_a_needed_branch_is_one_line_naming_branch_and_file(engine, tmp_path):
    good = generate_file(tmp_path / "good.root", format="pfnano", n_events=20, seed=1)
    bad = _pfnano_without(tmp_path, "no_lumi.root", ("luminosityBlock",))
    assert "luminosityBlock" not in uproot.open(bad)["Events"].keys()
    with pytest.raises(RunError) as err:
        _run([good, bad], tmp_path / "out", engine=engine, fmt="pfnano")
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg and "luminosityBlock" in msg


def test_file_lacking_an_optional_branch_is_a_notice(tmp_path, capsys):
    from rich.console import Console

    from jettracks.datasets import _note_missing_optional

    bad = _pfnano_without(tmp_path, "no_flavour.root", ("Jet_hadronFlavour", "Jet_partonFlavour"))
    with uproot.open(bad) as f:
        available = set(f["Events"].keys())
    buf = io.StringIO()
    _note_missing_optional("s", str(bad), readers.get("pfnano"), available, Console(file=buf, width=300))
    line = buf.getvalue().strip()
    assert line.count("\n") == 0 and str(bad) in line and "Jet_hadronFlavour" in line
    # the Delphes reader says which flavour branch it lacks, in the run's notices
    src = generate_file(tmp_path / "d.root", format="delphes", n_events=10, seed=1)
    with uproot.open(src) as f:
        cols = f["Delphes"].arrays([k for k in f["Delphes"].keys() if k not in ("Jet.FlavorPhys", "Event.Number")])
    batch = readers.get("delphes").read(cols)
    assert batch.flavour_fields == ("parton_flavour",)
    assert "format delphes: no Jet.FlavorPhys branch: jets carry no physics_flavour" in batch.notices
    assert any("no Event.Number branch" in n for n in batch.notices) and batch.event.tolist() == list(range(10))


def test_worked_config_generates_delphes_signal_and_rntuple_qcd(tmp_path):
    """configs/delphes_llp_vs_qcd.yaml, shrunk to one small file per dataset, run serially."""
    import yaml

    cfg = yaml.safe_load((PROJECT / "configs" / "delphes_llp_vs_qcd.yaml").read_text())
    assert {ds["format"] for ds in cfg["datasets"].values()} == {"delphes"}
    for name, ds in cfg["datasets"].items():
        ds["files"] = [str(tmp_path / name / "delphes_*.root")]
        ds["generate"].update(files=1, events_per_file=40)
    cfg["executor"] = {"backend": "serial"}
    cfg["output"] = {"dir": str(tmp_path / "out"), "plots": False}
    result = run_config(cfg, progress=False)
    assert uproot.open(tmp_path / "qcd" / "delphes_0000.root").classnames() == {"Delphes;1": "ROOT::RNTuple"}
    assert uproot.open(tmp_path / "llp_ctau1cm" / "delphes_0000.root").classnames() == {"Delphes;1": "TTree"}
    assert result.report["formats"] == {"llp_ctau1cm": "delphes", "qcd": "delphes"}
    rows = result.ml_dataset()
    assert set(rows.is_signal.tolist()) == {True, False}


def test_generation_record_tells_containers_apart(tmp_path):
    from jettracks.generate import GenerateError, generate_dataset

    generate_dataset(tmp_path, format="delphes", n_files=1, events_per_file=5, seed=1)
    with pytest.raises(GenerateError, match="container ttree -> rntuple"):
        generate_dataset(tmp_path, format="delphes", n_files=1, events_per_file=5, seed=1, container="rntuple")
    again = generate_dataset(tmp_path, format="delphes", n_files=1, events_per_file=5, seed=1)
    assert again.action == "reused"
