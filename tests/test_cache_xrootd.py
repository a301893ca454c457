"""``executor.cache`` as a ``root://`` URL on a real XRootD server (fixture ``xrootd_server``):
the column cache of workers that share no file system.

- a rerun with another cut reads every column from the URL (no ROOT file opened) and
  equals the same run without a cache: histograms, cut flow, accounting, ML rows; the
  entries sit on the server's disk, nothing half-written beside them;
- three runs at once filling one URL cache each equal the uncached run, and leave every
  entry whole and valid;
- a damaged entry on the server is discarded, its chunk read from its file, the result
  unchanged, and the entry stored again, valid;
- ``python -m runner cache info|clear URL`` work on it; a foreign directory at a URL is
  refused in one line and its file kept;
- the size bound evicts the entries written first (XRootD cannot set an mtime);
- a URL of another scheme is refused, naming ``executor.cache``;
- a cache server that is down stops the run in one line naming ``executor.cache``.

(Hosts without a shared disk using one URL cache: ``tests/test_multihost.py``.)
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
from jettracks_testing.compare import assert_equal_runs
from jettracks_testing.samples import generated_pfnano

from jettracks.io.column_cache import MARKER, CacheError, ChunkKey, ColumnCache

pytestmark = pytest.mark.service

PROJECT = Path(__file__).resolve().parents[1]
N_FILES, EVENTS, CHUNK = 2, 60, 20


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    return generated_pfnano(tmp_path_factory.mktemp("xrcache-in"), n_files=N_FILES, events_per_file=EVENTS, seed=20261201)


def _cfg(files, *, cone_dr: float = 0.5) -> dict:
    return {
        "name": "xrootd-cache",
        "datasets": {"qcd": {"files": list(files), "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {"cone_dr": cone_dr}},
        "executor": {"backend": "serial", "chunksize": CHUNK, "retries": 1},
        "output": {"dir": "unused", "plots": False, "ml": True},
    }


def _cache_url(server) -> tuple[str, Path]:
    """A fresh cache location on the server: (its URL, the directory on the server's disk)."""
    rel = f"xrcache-{secrets.token_hex(4)}"
    return server.writable_dir(rel) + "/cache", server.root_dir / rel / "cache"


@pytest.fixture(scope="module")
def plain_rerun(inputs, tmp_path_factory):
    """The rerun's cut without any cache: the reference."""
    from jettracks.execution import run_config

    return run_config(_cfg(inputs, cone_dr=0.3), output_dir=tmp_path_factory.mktemp("plain") / "out", progress=False)


def test_rerun_reads_every_column_from_the_url_and_equals_the_uncached_run(
        xrootd_server, inputs, plain_rerun, tmp_path, file_opens):
    from jettracks.execution import run_config

    url, on_disk = _cache_url(xrootd_server)
    run_config(_cfg(inputs), output_dir=tmp_path / "first", cache=url, progress=False)
    assert len(file_opens) > 0 and (on_disk / MARKER).is_file()
    columns = sorted(on_disk.rglob("*.arrow"))
    assert columns and len(list(on_disk.rglob("*.json"))) > len(columns)  # records + layouts
    assert not [p for p in on_disk.rglob("*") if ".tmp-" in p.name]
    file_opens.clear()
    run_config(_cfg(inputs, cone_dr=0.3), output_dir=tmp_path / "rerun", cache=url, progress=False)
    assert file_opens == []  # every column came from the server's cache
    assert_equal_runs(tmp_path / "rerun", plain_rerun, N_FILES * EVENTS)
    assert sorted(on_disk.rglob("*.arrow")) == columns  # nothing written again
    assert ColumnCache(url).info().columns == len(columns)


def test_damaged_entry_on_the_server_is_discarded_and_recomputed(xrootd_server, inputs, plain_rerun, tmp_path,
                                                                 file_opens):
    from jettracks.execution import run_config

    url, on_disk = _cache_url(xrootd_server)
    run_config(_cfg(inputs), output_dir=tmp_path / "first", cache=url, progress=False)
    victim = sorted(on_disk.rglob("PFCands_pt*.arrow"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the data buffers: only the checksum sees it
    victim.write_bytes(bytes(data))
    file_opens.clear()
    run_config(_cfg(inputs, cone_dr=0.3), output_dir=tmp_path / "rerun", cache=url, progress=False)
    assert_equal_runs(tmp_path / "rerun", plain_rerun, N_FILES * EVENTS)
    assert len(file_opens) == 1  # only the damaged chunk went back to its file
    start, stop = (int(x) for x in victim.parent.name.split("-"))
    entry = ColumnCache(url).get(ChunkKey(victim.parent.parent.parent.name, "Events", start, stop), "PFCands_pt")
    assert entry is not None and victim.read_bytes() != bytes(data)  # stored again, valid


def test_three_runs_at_once_fill_one_url_cache_and_each_equals_the_uncached_run(xrootd_server, inputs, plain_rerun,
                                                                               tmp_path):
    import yaml

    url, on_disk = _cache_url(xrootd_server)
    procs, outs = [], []
    for i in range(3):  # the same entries written three times over, at once
        cfg = _cfg(inputs, cone_dr=0.3)
        cfg["executor"]["cache"] = url
        cfg["output"]["dir"] = str(tmp_path / f"out{i}")
        path = tmp_path / f"run{i}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        outs.append(tmp_path / f"out{i}")
        procs.append(subprocess.Popen([sys.executable, "-m", "runner", "run", str(path), "--no-progress"], cwd=PROJECT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    for out in outs:
        assert_equal_runs(out, plain_rerun, N_FILES * EVENTS)
    assert not [p for p in on_disk.rglob("*") if ".tmp-" in p.name]
    cache = ColumnCache(url)
    records = cache._records()
    assert records and len(records) == len(list(on_disk.rglob("*.arrow")))  # every column with its record
    for record in records:  # and every one valid
        start, stop = (int(x) for x in record.parent.name.split("-"))
        key = ChunkKey(record.parent.parent.parent.name, "Events", start, stop)
        branch = json.loads(record.read_text())["branch"]
        assert cache.get(key, branch) is not None, record


def _write_entry(cache: ColumnCache, key: ChunkKey, branch: str, values: np.ndarray) -> None:
    w = cache.writer(key, branch)
    w.append(ak.Array(values), key.entrystart, key.entrystop)
    w.commit()


def test_cache_cli_on_a_url_and_a_foreign_directory_refused(xrootd_server):
    url, on_disk = _cache_url(xrootd_server)
    _write_entry(ColumnCache(url), ChunkKey("u", "T", 0, 3), "Jet_pt", np.arange(3.0))
    cli = [sys.executable, "-m", "runner", "cache"]
    info = subprocess.run([*cli, "info", url], capture_output=True, text=True, timeout=120, cwd=PROJECT)
    assert info.returncode == 0 and "1 columns" in info.stdout and "Jet_pt" in info.stdout, info.stderr
    ok = subprocess.run([*cli, "clear", url], capture_output=True, text=True, timeout=120, cwd=PROJECT)
    assert ok.returncode == 0 and "removed 1 cached columns" in ok.stdout, ok.stderr
    assert ColumnCache(url).info().columns == 0 and (on_disk / MARKER).is_file()
    assert not list(on_disk.rglob("*.arrow"))
    foreign_url, foreign = _cache_url(xrootd_server)
    foreign.mkdir()
    (foreign / "results.txt").write_text("mine\n")
    foreign.chmod(0o777)
    bad = subprocess.run([*cli, "clear", foreign_url], capture_output=True, text=True, timeout=120, cwd=PROJECT)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert "not a jettracks column cache" in bad.stderr
    with pytest.raises(CacheError, match="not a jettracks column cache"):
        ColumnCache(foreign_url)
    assert (foreign / "results.txt").read_text() == "mine\n" and not (foreign / MARKER).exists()


def test_size_bound_evicts_the_entries_written_first(xrootd_server):
    url, _ = _cache_url(xrootd_server)
    cache = ColumnCache(url)
    keys = [ChunkKey("u", "Events", i * 100, (i + 1) * 100) for i in range(3)]
    for i, k in enumerate(keys):
        if i:
            time.sleep(1.1)  # the server's mtimes are in whole seconds
        _write_entry(cache, k, "x", np.arange(k.entrystart, k.entrystop, dtype=np.float64))
    sizes = [e[1] for e in sorted(cache._entries(), key=lambda e: e[0])]
    bounded = ColumnCache(url, max_bytes=sum(sizes[1:]))
    assert bounded.evict() == sizes[0]
    assert [cache.get(k, "x") is not None for k in keys] == [False, True, True]
    got = cache.get(keys[2], "x").read(200, 300)
    assert ak.to_list(got) == list(np.arange(200, 300, dtype=np.float64))


@pytest.mark.parametrize("url", ["s3://bucket/cache", "https://host/cache"])
def test_a_url_of_another_scheme_is_refused(url):
    from jettracks.config import ConfigError, parse_config

    with pytest.raises(CacheError, match="only a directory or a root:// URL"):
        ColumnCache(url)
    cfg = _cfg(["x.root"])
    cfg["executor"]["cache"] = url
    with pytest.raises(ConfigError, match=r"^executor\.cache"):
        parse_config(cfg)


def _dead_url(path: str) -> str:
    """A root:// URL on a port nothing listens on (a server that is down)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"root://127.0.0.1:{port}/{path}"


@pytest.mark.timeout(240)  # a liveness bound: the client's default windows took > 5 min here
def test_a_dead_cache_server_stops_the_run_in_one_line(inputs, tmp_path):
    from jettracks.execution import RunError, run_config

    url = _dead_url("/data/cache")
    with pytest.raises(RunError) as err:
        run_config(_cfg(inputs), output_dir=tmp_path / "out", cache=url, progress=False)
    msg = str(err.value)
    assert msg.startswith(f"executor.cache: cache {url}: cannot create it") and "\n" not in msg, msg
    assert not (tmp_path / "out" / "hists.coffea").exists()
    assert not list(tmp_path.rglob("root:*")) and not list(Path.cwd().glob("root:*"))  # no local stand-in
