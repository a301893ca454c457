"""Both engines name the file (and entry range) of a chunk that fails, on one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import uproot
from jettracks_testing.samples import write_pfnano_like

from jettracks.execution import RunError, run_config
from processors.jet_tracks import JetTrackProcessor


def _without_branch(path: Path, source: Path, drop: str) -> Path:
    return write_pfnano_like(path, source, drop=(drop,))


def _corrupt_basket(path: Path, source: Path) -> Path:
    """A copy whose second PFCands_pt basket holds garbage (the header stays readable)."""
    with uproot.open(source) as f:
        seek = int(f["Events"]["PFCands_pt"].member("fBasketSeek")[1])
    data = bytearray(source.read_bytes())
    data[seek + 100: seek + 600] = b"\x55" * 500
    path.write_bytes(bytes(data))
    return path


def _cfg(files, out, engine, processor=None):
    return {
        "name": "engine-errors",
        "datasets": {"tt": {"files": [str(f) for f in files], "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": processor or {"class": "processors.jet_tracks:JetTrackProcessor", "options": {}},
        "executor": {"backend": "serial", "engine": engine, "chunksize": 4},
        "output": {"dir": str(out), "plots": False, "ml": False},
    }


@pytest.fixture
def good(cms_dir, tmp_path):
    """pfnano.root rewritten (a file UUID of its own: not a copy of the corrupt one)."""
    return _without_branch(tmp_path / "good.root", cms_dir / "pfnano.root", drop="none")


ENGINES = ["runner", "dask-awkward"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["no_branch", "corrupt_basket"])
def test_bad_file_error_names_file_and_reason_on_one_line(kind, engine, good, cms_dir, tmp_path):
    if kind == "no_branch":
        bad = _without_branch(tmp_path / "bad.root", cms_dir / "pfnano.root", "PFCands_d0Err")
    else:
        bad = _corrupt_basket(tmp_path / "bad.root", cms_dir / "pfnano.root")
    with pytest.raises(RunError) as err:
        run_config(_cfg([good, bad], tmp_path / "out", engine), progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(bad) in msg and str(good) not in msg
    assert "entries 0-" in msg
    if kind == "no_branch":
        assert "missing branches PFCands_d0Err" in msg
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


@pytest.mark.parametrize("engine", ENGINES)
def test_processing_error_names_the_chunk(engine, good, tmp_path):
    # A second file with other event numbers: the processor fails on it only.
    import uproot as _uproot

    first_event = int(_uproot.open(good)["Events"]["event"].array(entry_stop=1)[0])
    other = write_pfnano_like(tmp_path / "other.root", good, event_offset=1000)
    processor = {"class": "test_engine_errors:_FailsOnSecondFile",
                 "options": {"bad_first_event": first_event + 1000}}
    with pytest.raises(RunError) as err:
        run_config(_cfg([good, other], tmp_path / "out", engine, processor), progress=False)
    msg = str(err.value)
    assert "\n" not in msg
    assert f"{other} entries 0-5" in msg and "ValueError: deliberate failure in analyse" in msg
