"""A run over a real XRootD server equals the same run over local paths; the entries cache.

200 small generated PFNano files are served by the session ``xrootd_server``
(``root://127.0.0.1:PORT//remote/pfnano_*.root``, a remote glob expanded by
:func:`jettracks.io.files.expand_files`). The run over those URLs, on the session
``local_client``, must give exactly what the run over the local paths gives:
histogram contents (flow bins included), cut flow, and entries per file.

The file-metadata cache (:class:`jettracks.io.files.EntryCache`): a second run over
the same URLs opens no file for its metadata (no ``file_metadata`` task reaches the
workers, every lookup is a cache hit), and ``refresh=True`` ignores the cache.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from jettracks.execution import run_config
from jettracks.io import files as files_mod

pytestmark = pytest.mark.service

N_FILES = 200
EVENTS_PER_FILE = 20
SUBDIR = "remote"
#: small and fast to write: few pile-up candidates, zlib instead of LZMA, no links
GEN_OPTIONS = {"pileup_candidates": 20, "compression": "zlib", "links": False}


@pytest.fixture(scope="module")
def served_sample(xrootd_server, local_client):
    """(local paths, root:// glob) of N_FILES files under the served directory."""
    from jettracks.generate import generate_dataset

    out = Path(xrootd_server.root_dir) / SUBDIR
    paths = generate_dataset(
        out, format="pfnano", n_files=N_FILES, events_per_file=EVENTS_PER_FILE, seed=20261201,
        client=local_client, **GEN_OPTIONS,
    )
    out.chmod(0o755)  # the server runs as `nobody`
    for p in paths:
        p.chmod(0o644)
    yield paths, xrootd_server.url_for(SUBDIR) + "/pfnano_*.root"
    # run_config set the XRootD client of this process for production (stream error
    # window 10 s); give later tests the fixture's fail-fast/recover-at-once settings.
    files_mod.configure_xrootd_client(connection_retry=1, stream_error_window=0)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh entries cache for the test (``JETTRACKS_CACHE_DIR``)."""
    path = tmp_path / "entries-cache"
    monkeypatch.setenv("JETTRACKS_CACHE_DIR", str(path))
    return path


@pytest.fixture
def cache_spy(monkeypatch):
    """Every ``EntryCache`` the run creates, to read its hits/misses afterwards."""
    made = []

    class SpyCache(files_mod.EntryCache):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            made.append(self)

    monkeypatch.setattr(files_mod, "EntryCache", SpyCache)
    return made


def _cfg(pattern: str, out: Path) -> dict:
    return {
        "name": "remote",
        "datasets": {"qcd": {"files": [pattern], "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {}},
        "executor": {"backend": "local", "workers": 2, "chunksize": 100_000, "retries": 2},
        "output": {"dir": str(out), "plots": False, "ml": False},
    }


def _run_counting_metadata_tasks(client, cfg, **kw):
    """run_config, plus the number of ``file_metadata`` tasks the workers ran."""
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        result = run_config(cfg, client=client, progress=False, **kw)
    keys = [t["key"] for t in ts.data]
    n_meta = sum(1 for k in keys if str(k).startswith("file_metadata"))
    return result, n_meta


def _assert_same_hists(a: dict, b: dict) -> None:
    assert set(a) == set(b) and a
    for name, h in a.items():
        assert h.axes == b[name].axes, name
        np.testing.assert_array_equal(h.values(flow=True), b[name].values(flow=True), err_msg=name)
        np.testing.assert_array_equal(h.variances(flow=True), b[name].variances(flow=True), err_msg=name)


def _per_file(report: dict, key_of) -> dict:
    return {
        key_of(f["file"]): (f["entries_expected"], f["entries_processed"], f["entries_skipped"], f["uuid"])
        for f in report["files"]
    }


def test_root_glob_expands_to_every_served_file(served_sample, xrootd_server):
    paths, pattern = served_sample
    urls = files_mod.expand_files([pattern])
    assert urls == [xrootd_server.url_for(p) for p in paths]
    assert len(urls) == N_FILES
    assert all(u.startswith(f"root://127.0.0.1:{xrootd_server.port}//{SUBDIR}/pfnano_") for u in urls)


def test_remote_run_equals_local_run(served_sample, xrootd_server, local_client, tmp_path, cache_dir):
    paths, pattern = served_sample
    local_glob = str(paths[0].parent / "pfnano_*.root")
    local = run_config(_cfg(local_glob, tmp_path / "local"), client=local_client, progress=False)
    remote = run_config(_cfg(pattern, tmp_path / "remote"), client=local_client, progress=False)

    # the remote run really read root:// URLs, one per served file, in the same order
    assert remote.files["qcd"] == [xrootd_server.url_for(p) for p in paths]
    assert local.files["qcd"] == [str(p) for p in paths]
    for res in (local, remote):
        rep = res.report
        assert rep["status"] == "ok" and rep["chunks_failed"] == 0
        assert rep["entries"] == {
            "expected": N_FILES * EVENTS_PER_FILE,
            "processed": N_FILES * EVENTS_PER_FILE,
            "skipped": 0,
            "files_unreadable": 0,
        }
        assert rep["chunks"] == N_FILES

    _assert_same_hists(remote.hists, local.hists)
    assert remote.cutflow == local.cutflow
    assert remote.cutflow["qcd"]["entries"] == N_FILES * EVENTS_PER_FILE
    # entries (expected, processed, skipped) and UUID per file
    def by_name(f: str) -> str:
        return f.rsplit("/", 1)[-1]

    assert _per_file(remote.report, by_name) == _per_file(local.report, by_name)
    assert all(v[0] == v[1] == EVENTS_PER_FILE for v in _per_file(remote.report, by_name).values())


def test_entries_cache_skips_metadata_reads_and_refresh_ignores_it(
    served_sample, local_client, tmp_path, cache_dir, cache_spy
):
    _, pattern = served_sample
    first, n_first = _run_counting_metadata_tasks(local_client, _cfg(pattern, tmp_path / "r1"))
    # cold cache: every file opened once for its metadata (in batches: a task reads many files)
    assert 1 <= n_first < N_FILES
    assert (cache_spy[-1].hits, cache_spy[-1].misses) == (0, N_FILES)

    # the cache file holds one record per URL (key "URL\tTREE") with entries and UUID
    stored = json.loads((cache_dir / "entries.json").read_text())["entries"]
    urls = first.files["qcd"]
    assert {k.split("\t")[0] for k in stored} == set(urls)
    assert all(rec["value"]["numentries"] == EVENTS_PER_FILE for rec in stored.values())

    second, n_second = _run_counting_metadata_tasks(local_client, _cfg(pattern, tmp_path / "r2"))
    assert n_second == 0  # no file opened for metadata
    assert (cache_spy[-1].hits, cache_spy[-1].misses) == (N_FILES, 0)
    assert second.report["entries"] == first.report["entries"]
    assert [f["uuid"] for f in second.report["files"]] == [f["uuid"] for f in first.report["files"]]
    assert second.cutflow == first.cutflow

    third, n_third = _run_counting_metadata_tasks(
        local_client, _cfg(pattern, tmp_path / "r3"), refresh=True
    )
    assert n_third >= 1  # refresh: every file opened again (misses below)
    assert (cache_spy[-1].hits, cache_spy[-1].misses) == (0, N_FILES)
    assert third.report["entries"] == first.report["entries"]
    assert third.cutflow == first.cutflow


def test_cache_entry_invalidated_when_a_served_file_changes(served_sample, local_client, tmp_path, cache_dir, cache_spy):
    """A file rewritten on the server (new size/mtime) is opened again, the others are not."""
    paths, pattern = served_sample
    run_config(_cfg(pattern, tmp_path / "r1"), client=local_client, progress=False, max_files=5)
    victim = paths[2]
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # "rewritten" 5 s later
    try:
        _, n_meta = _run_counting_metadata_tasks(local_client, _cfg(pattern, tmp_path / "r2"), max_files=5)
    finally:
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    # one assertion: a failure shows the tasks, hits and misses together
    assert (n_meta, cache_spy[-1].hits, cache_spy[-1].misses) == (1, 4, 1)
