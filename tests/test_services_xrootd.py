"""jettracks.io.files and a real XRootD server: same arrays over root:// as locally, remote
globs, the entries cache, outages. The first tests need no server (local files only)."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest

from jettracks.io import files

N_FILES = 3


# -- local files (no service) ---------------------------------------------------------------


def _touch(*paths):
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 10)


def test_expand_files_local(tmp_path, monkeypatch):
    _touch(tmp_path / "b_2.root", tmp_path / "b_10.root", tmp_path / "a_1.root", tmp_path / "sub" / "c.root")
    t = str(tmp_path)
    # sorted within a pattern, patterns' order kept, duplicates dropped
    assert files.expand_files([f"{t}/b_*.root", f"{t}/a_1.root", f"{t}/*.root"]) == [
        f"{t}/b_10.root",
        f"{t}/b_2.root",
        f"{t}/a_1.root",
    ]
    assert files.expand_files(f"{t}/**/*.root")[-1] == f"{t}/sub/c.root"
    # relative patterns: against base_dir when given, else the working directory
    assert files.expand_files(["sub/*.root"], base_dir=tmp_path) == [f"{t}/sub/c.root"]
    monkeypatch.chdir(tmp_path)
    assert files.expand_files(["a_*.root", "sub/c.root"]) == ["a_1.root", "sub/c.root"]
    assert files.expand_files([f"file://{t}/a_*.root"]) == [f"{t}/a_1.root"]
    # URLs without a glob pass through unchecked
    url = "root://eospublic.cern.ch//eos/opendata/cms/x.root"
    assert files.expand_files([url, "a_1.root"]) == [url, "a_1.root"]
    for bad in ("nothing_*.root", "missing.root", f"{t}/nodir/*.root"):
        with pytest.raises(FileNotFoundError, match=re.escape(bad)):
            files.expand_files(["a_1.root", bad])


def test_read_file_list(tmp_path):
    index = tmp_path / "files.txt"
    index.write_text(
        "# CMS open data file index\n"
        "\n"
        "root://eospublic.cern.ch//eos/opendata/cms/a.root\n"
        "  data/b_*.root   # a local glob\n"
        "root://eospublic.cern.ch//eos/opendata/cms/c.root\n"
    )
    assert files.read_file_list(index) == [
        "root://eospublic.cern.ch//eos/opendata/cms/a.root",
        "data/b_*.root",
        "root://eospublic.cern.ch//eos/opendata/cms/c.root",
    ]
    with pytest.raises(FileNotFoundError):
        files.read_file_list(tmp_path / "absent.txt")


def test_split_xrootd_url():
    assert files.split_xrootd_url("root://host:1094//a/b.root") == ("root://host:1094", "/a/b.root", "")
    assert files.split_xrootd_url("root://host/a/b.root?x=1") == ("root://host", "/a/b.root", "?x=1")
    assert files.is_xrootd("roots://h//x") and not files.is_xrootd("https://h/x") and not files.is_xrootd("/x")
    with pytest.raises(ValueError):
        files.split_xrootd_url("https://host/a")


def test_entry_cache_local(tmp_path):
    data = tmp_path / "a.root"
    data.write_bytes(b"1234")
    path = tmp_path / "cache" / "entries.json"
    cache = files.EntryCache(path)
    assert cache.get(str(data), "Events") is None
    assert cache.put(str(data), "Events", {"numentries": 7, "uuid": b"\xff\x00"})
    assert cache.put(str(data), "Other", 3)
    assert not cache.put(str(tmp_path / "absent.root"), "Events", 1)
    cache.save()
    # keyed by absolute path: a relative name finds the same entry
    again = files.EntryCache(path)
    assert again.get(str(data), "Events") == {"numentries": 7, "uuid": b"\xff\x00"}
    assert again.get(str(data), "Other") == 3
    assert again.get(str(data), "Missing") is None
    assert files.EntryCache(path, refresh=True).get(str(data), "Events") is None
    # a changed file (size or mtime) misses
    data.write_bytes(b"123456")
    assert files.EntryCache(path).get(str(data), "Events") is None
    # two writers: both entries survive
    other = tmp_path / "b.root"
    other.write_bytes(b"1")
    c1, c2 = files.EntryCache(path), files.EntryCache(path)
    c1.put(str(data), "Events", 1)
    c2.put(str(other), "Events", 2)
    c1.save()
    c2.save()
    final = files.EntryCache(path)
    assert final.get(str(data), "Events") == 1 and final.get(str(other), "Events") == 2
    # a corrupt cache file is ignored, not an error
    path.write_text("{not json")
    assert files.EntryCache(path).get(str(data), "Events") is None


# -- a real XRootD server ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(xrootd_server):
    """Small ROOT files in the served tree: sample/events_{i}.root plus one in a subdirectory."""
    import uproot

    sample = xrootd_server.root_dir / "sample"
    (sample / "more").mkdir(parents=True, exist_ok=True)
    sample.chmod(0o755)
    (sample / "more").chmod(0o755)
    paths = [sample / f"events_{i}.root" for i in range(N_FILES)] + [sample / "more" / "events_9.root"]
    rng = np.random.default_rng(5)
    for i, path in enumerate(paths):
        n = 50 + 10 * i
        counts = rng.integers(0, 5, n)
        with uproot.recreate(path) as f:
            f.mktree("Events", {"run": "i4", "pt": "f4", "nTrk": "i4", "Trk_dxy": "var * float32"})
            f["Events"].extend(
                {
                    "run": np.full(n, i, dtype=np.int32),
                    "pt": rng.exponential(30, n).astype(np.float32),
                    "nTrk": counts.astype(np.int32),
                    "Trk_dxy": _jagged(rng.normal(0, 0.05, counts.sum()).astype(np.float32), counts),
                }
            )
        path.chmod(0o644)
    (sample / "notes.txt").write_text("not a ROOT file\n")
    return xrootd_server, sample, paths


def _jagged(flat, counts):
    import awkward as ak

    return ak.unflatten(flat, counts)


@pytest.mark.service
def test_url_form(served):
    server, sample, paths = served
    url = server.url_for(paths[0])
    assert url == f"root://127.0.0.1:{server.port}//sample/events_0.root"
    assert server.url_for("sample/events_0.root") == url


@pytest.mark.service
def test_uproot_reads_same_arrays_remote_and_local(served):
    import awkward as ak
    import uproot

    server, _, paths = served
    for path in paths:
        with uproot.open(path) as local, uproot.open(server.url_for(path), timeout=30) as remote:
            assert remote.file.fUUID == local.file.fUUID
            a = local["Events"].arrays()
            b = remote["Events"].arrays()
            assert len(a) == len(b) > 0
            assert ak.to_list(a) == ak.to_list(b)
            for name in ("pt", "Trk_dxy"):
                np.testing.assert_array_equal(ak.flatten(a[name], axis=None), ak.flatten(b[name], axis=None))


@pytest.mark.service
def test_expand_files_remote_glob_matches_local_glob(served):
    server, sample, paths = served
    local = files.expand_files([str(sample / "*.root")])
    remote = files.expand_files([server.url_for("sample") + "/*.root"])
    assert local == [str(p) for p in paths[:N_FILES]]
    assert remote == [server.url_for(p) for p in local]
    # recursive globs, both sides
    local_rec = files.expand_files([str(sample / "**" / "*.root")])
    remote_rec = files.expand_files([server.url_for("sample") + "/**/*.root"])
    assert remote_rec == [server.url_for(p) for p in local_rec]
    assert len(remote_rec) == len(paths)
    # a pattern with magic in a directory component
    assert files.expand_files([server.url + "/sam*/more/*.root"]) == [server.url_for(paths[-1])]
    # a URL without a glob passes through, order of patterns kept, duplicates dropped
    one = server.url_for(paths[1])
    assert files.expand_files([one, server.url_for("sample") + "/*.root"]) == [one] + [
        u for u in remote if u != one
    ]


@pytest.mark.service
def test_expand_files_remote_no_match_names_pattern(served):
    server, _, _ = served
    pattern = server.url_for("sample") + "/nothing_*.root"
    with pytest.raises(FileNotFoundError, match="nothing_"):
        files.expand_files([pattern])
    with pytest.raises(FileNotFoundError):
        files.expand_files([server.url + "/no_such_dir/*.root"])


@pytest.mark.service
def test_entry_cache_keys_remote_files_by_size_and_mtime(served, tmp_path):
    server, _, paths = served
    url = server.url_for(paths[0])
    key, size, mtime = files.file_signature(url)
    assert key == url and size == paths[0].stat().st_size and mtime == int(paths[0].stat().st_mtime)
    cache = files.EntryCache(tmp_path / "entries.json")
    assert cache.get(url, "Events") is None
    assert cache.put(url, "Events", {"numentries": 50, "uuid": b"\x01\x02"})
    cache.save()
    again = files.EntryCache(tmp_path / "entries.json")
    assert again.get(url, "Events") == {"numentries": 50, "uuid": b"\x01\x02"}
    assert files.EntryCache(tmp_path / "entries.json", refresh=True).get(url, "Events") is None
    stored = json.loads((tmp_path / "entries.json").read_text())
    assert any(k.startswith(url) for k in stored["entries"])


@pytest.mark.service
def test_stop_and_restart(served):
    import uproot

    server, _, paths = served
    url = server.url_for(paths[0])
    with uproot.open(url, timeout=10) as f:
        expected = f["Events"]["pt"].array(library="np")
    server.stop()
    try:
        assert not server.is_running()
        t0 = time.monotonic()
        with pytest.raises(OSError):
            with uproot.open(url, timeout=5) as f:
                f["Events"]["pt"].array(library="np")
        assert time.monotonic() - t0 < 30
        with pytest.raises(OSError):
            files.expand_files([server.url_for("sample") + "/*.root"], timeout=5)
    finally:
        server.start()
    assert server.is_running()
    with uproot.open(url, timeout=10) as f:
        np.testing.assert_array_equal(f["Events"]["pt"].array(library="np"), expected)
    assert len(files.expand_files([server.url_for("sample") + "/*.root"])) == N_FILES
