"""The dask-awkward engine names the file (and entry range) of a chunk that fails, on one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import uproot

from jettracks.execution import RunError, run_config
from processors.jet_tracks import JetTrackProcessor

PF_BRANCHES = [
    "run", "luminosityBlock", "event", "Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass",
    "Jet_hadronFlavour", "Jet_partonFlavour", "PFCands_pt", "PFCands_eta", "PFCands_phi",
    "PFCands_charge", "PFCands_d0", "PFCands_d0Err", "PFCands_dz",
]


def _without_branch(path: Path, source: Path, drop: str) -> Path:
    import awkward as ak

    arrs = uproot.open(source)["Events"].arrays(PF_BRANCHES)
    jet = {k[4:]: arrs[k] for k in arrs.fields if k.startswith("Jet_")}
    pf = {k[8:]: arrs[k] for k in arrs.fields if k.startswith("PFCands_") and k != drop}
    data = {"run": arrs["run"], "luminosityBlock": arrs["luminosityBlock"], "event": arrs["event"],
            "Jet": ak.zip(jet), "PFCands": ak.zip(pf)}
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: v.type for k, v in data.items()}, counter_name=lambda n: "n" + n)
        f["Events"].extend(data)
    return path


def _corrupt_basket(path: Path, source: Path) -> Path:
    """A copy whose second PFCands_pt basket holds garbage (the header stays readable)."""
    with uproot.open(source) as f:
        seek = int(f["Events"]["PFCands_pt"].member("fBasketSeek")[1])
    data = bytearray(source.read_bytes())
    data[seek + 100: seek + 600] = b"\x55" * 500
    path.write_bytes(bytes(data))
    return path


def _cfg(files, out):
    return {
        "name": "engine-errors",
        "datasets": {"tt": {"files": [str(f) for f in files], "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {}},
        "executor": {"backend": "serial", "engine": "dask-awkward", "chunksize": 4},
        "output": {"dir": str(out), "plots": False, "ml": False},
    }


@pytest.fixture
def good(cms_dir, tmp_path):
    """pfnano.root rewritten (a file UUID of its own: not a copy of the corrupt one)."""
    return _without_branch(tmp_path / "good.root", cms_dir / "pfnano.root", drop="none")


@pytest.mark.parametrize("kind", ["no_branch", "corrupt_basket"])
def test_bad_file_error_names_file_and_reason_on_one_line(kind, good, cms_dir, tmp_path):
    if kind == "no_branch":
        bad = _without_branch(tmp_path / "bad.root", cms_dir / "pfnano.root", "PFCands_d0Err")
    else:
        bad = _corrupt_basket(tmp_path / "bad.root", cms_dir / "pfnano.root")
    with pytest.raises(RunError) as err:
        run_config(_cfg([good, bad], tmp_path / "out"), progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(bad) in msg and str(good) not in msg
    assert "entries 0-" in msg
    if kind == "no_branch":
        assert "PFCands_d0Err" in msg and "branch" in msg
    else:
        assert "DecompressionError" in msg  # the basket's LZMA stream is garbage


class _FailsOnSecondFile(JetTrackProcessor):
    """Raises in analyse() on the chunks of one file (identified by its event numbers)."""

    def __init__(self, bad_first_event: int, **kw):
        super().__init__(**kw)
        self.bad_first_event = bad_first_event

    def analyse(self, columns, **kw):
        chunk = super().analyse(columns, **kw)
        if chunk.batch.n_events and int(chunk.batch.event[0]) == self.bad_first_event:
            raise ValueError("deliberate failure in analyse")
        return chunk


def test_processing_error_names_the_chunk(good, tmp_path, cms_dir):
    # A second file with other event numbers: the processor fails on it only.
    import awkward as ak

    from jettracks.engine_dask_awkward import DaskAwkwardEngineError, run_dask_awkward

    arrs = uproot.open(good)["Events"].arrays(PF_BRANCHES)
    other = tmp_path / "other.root"
    data = {"run": arrs["run"], "luminosityBlock": arrs["luminosityBlock"], "event": arrs["event"] + 1000,
            "Jet": ak.zip({k[4:]: arrs[k] for k in arrs.fields if k.startswith("Jet_")}),
            "PFCands": ak.zip({k[8:]: arrs[k] for k in arrs.fields if k.startswith("PFCands_")})}
    with uproot.recreate(other) as f:
        f.mktree("Events", {k: v.type for k, v in data.items()}, counter_name=lambda n: "n" + n)
        f["Events"].extend(data)
    proc = _FailsOnSecondFile(int(arrs["event"][0]) + 1000)
    fs = {"tt": {"files": [str(good), str(other)], "treename": "Events",
                 "metadata": {"format": "pfnano", "is_mc": True}}}
    with pytest.raises(DaskAwkwardEngineError) as err:
        run_dask_awkward(fs, proc, chunksize=4, branches=proc.reader_for("pfnano").branches(),
                         progress=False, num_entries={str(good): 10, str(other): 10})
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{other} entries 0-5" in msg and "ValueError: deliberate failure in analyse" in msg
