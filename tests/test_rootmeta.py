"""The metadata step's own ROOT reader (:mod:`jettracks.io.rootmeta`) against uproot.

The entry count decides the run's accounting, so the fast reader must give uproot's answer
(``uproot.open(f)[tree].num_entries`` and the header's UUID) on every real file in the shared
data, on generated files of every format, compression and container, on files with several
cycles and subdirectories, and when it must fetch the ranges it did not get in its first read;
where it does not answer (RNTuple, nested trees, damaged files) ``file_metadata`` must still
give exactly what uproot gives, errors included. Over XRootD (a real server, and through the
delay proxy) it answers the same, with the cache signature of the same open.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import uproot

from jettracks.io import rootmeta
from jettracks.metadata import file_metadata, file_metadata_many, uproot_file_metadata


def _answer(read, path: str, tree: str):
    """``(entries, uuid)`` by ``read`` (a ``file_metadata`` function), or the exception type it raises."""
    try:
        m = read(path, tree, 30)
    except Exception as err:  # noqa: BLE001
        return type(err)
    return (m["numentries"], bytes(m["uuid"]))


def _uproot(path: str, tree: str):
    """uproot's answer (the reference)."""
    return _answer(uproot_file_metadata, path, tree)


def _ours(path: str, tree: str):
    """The metadata step's answer (fast reader, else uproot)."""
    return _answer(file_metadata, path, tree)


def _trees(path: Path) -> list[str]:
    """Every TTree/RNTuple path uproot lists in the file (without cycles), and a missing name."""
    with uproot.open(path) as f:
        names = [k.rsplit(";", 1)[0] for k, c in f.classnames().items() if c in ("TTree", "ROOT::RNTuple")]
    return sorted(set(names)) + ["NoSuchTree"]


def test_fast_reader_equals_uproot_on_every_real_file(cms_dir):
    files = sorted(cms_dir.parent.rglob("*.root"))
    assert len(files) >= 4  # pfnano, nano_tt_v15, treemaker, delphes
    answered = 0
    for path in files:
        for tree in _trees(path):
            ref = _uproot(str(path), tree)
            assert _ours(str(path), tree) == ref, (path, tree)
            fast = rootmeta.tree_metadata(str(path), tree, 30)
            if fast is not None:
                answered += 1
                assert (fast["numentries"], fast["uuid"]) == ref, (path, tree)
                assert fast["signature"][1] == path.stat().st_size
    # the flat TTrees of every real file (Events x2, PreSelection, Delphes, the PFNano
    # side trees) come from the fast reader, not from the fallback
    assert answered >= 8


@pytest.mark.parametrize("fmt,container,compression", [
    ("pfnano", "ttree", "lzma"), ("pfnano", "ttree", "zlib"), ("pfnano", "ttree", "lz4"),
    ("pfnano", "ttree", "zstd"), ("pfnano", "ttree", "none"), ("jetntuple", "ttree", "zlib"),
    ("delphes", "ttree", "zlib"), ("pfnano", "rntuple", "zlib"),
])
def test_fast_reader_equals_uproot_on_generated_files(tmp_path, fmt, container, compression):
    from jettracks.generate import generate_file

    opts = {"compression": compression} if compression != "none" else {"compression": "none"}
    path = generate_file(tmp_path / f"{fmt}.root", format=fmt, n_events=37, seed=3, container=container, **opts)
    for tree in _trees(path):
        assert _ours(str(path), tree) == _uproot(str(path), tree), tree
    main = {"pfnano": "Events", "delphes": "Delphes", "jetntuple": "AK4jets/jetTree"}[fmt]
    fast = rootmeta.tree_metadata(str(path), main, 30)
    if container == "rntuple" or "/" in main:
        assert fast is None  # left to uproot
    else:
        assert fast is not None and fast["numentries"] == 37


def test_cycles_subdirectories_and_other_classes(tmp_path):
    path = tmp_path / "cycles.root"
    with uproot.recreate(path) as f:
        f.mktree("Events", {"x": "i4"})
        f["Events"].extend({"x": np.arange(5)})
        f.mkdir("sub")
        f["sub"].mktree("T", {"x": "f8"})
        f["sub/T"].extend({"x": np.arange(3.0)})
        f["Other"] = {"x": np.arange(7)}  # an RNTuple
        f["hist"] = np.histogram(np.arange(4), bins=2)
    with uproot.update(path) as f:  # a second cycle of Events, with another count
        f.mktree("Events", {"x": "i4"})
        f["Events"].extend({"x": np.arange(9)})
    for tree, want in [("Events", 9), ("Events;1", 5), ("sub/T", 3), ("Other", 7)]:
        assert _uproot(str(path), tree) == _ours(str(path), tree), tree
        assert _ours(str(path), tree)[0] == want, tree
    assert rootmeta.tree_metadata(str(path), "Events", 30)["numentries"] == 9  # the highest cycle
    for name in ("Events;1", "sub/T", "Other", "hist", "sub", "NoSuchTree"):
        assert rootmeta.tree_metadata(str(path), name, 30) is None, name
    assert _ours(str(path), "hist") == _uproot(str(path), "hist")


def test_ranges_missing_from_the_first_read_are_fetched(tmp_path, monkeypatch, cms_dir):
    """With a tiny head/tail and no whole-file read, the keys list and the TTree record are
    read separately (and the record in two steps): the same answers."""
    files = [cms_dir / "pfnano.root", cms_dir / "nano_tt_v15.root", cms_dir.parent / "delphes" / "delphes.root"]
    monkeypatch.setattr(rootmeta, "WHOLE_FILE", 0)
    monkeypatch.setattr(rootmeta, "TAIL", 512)
    monkeypatch.setattr(rootmeta, "RECORD_PREFIX", 64)  # too short to decompress: read the whole record
    requests = []
    for path in files:
        tree = "Delphes" if "delphes" in path.name else "Events"
        src = rootmeta._LocalSource(str(path))
        try:
            got = rootmeta.read_tree_metadata(src, tree)
        finally:
            src.close()
        requests.append(got["_requests"])
        assert (got["numentries"], got["uuid"]) == _uproot(str(path), tree)
    # head + tail, then the TTree record (nano_tt_v15's is stored uncompressed: one read);
    # the compressed ones: a prefix too short to decompress, then the whole record
    assert min(requests) >= 2 and max(requests) >= 3, requests


def test_damaged_files_give_uproots_answer(tmp_path, cms_dir):
    src = cms_dir / "pfnano.root"
    data = src.read_bytes()
    cases = {
        "truncated_half.root": data[: len(data) // 2],
        "truncated_head.root": data[:50],
        "not_root.root": b"this is not a ROOT file" * 100,
        "empty.root": b"",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        ref = _uproot(str(path), "Events")
        assert isinstance(ref, type), name  # uproot cannot read it ...
        assert _ours(str(path), "Events") == ref, name  # ... and we raise what it raises
    assert _ours(str(tmp_path / "absent.root"), "Events") is FileNotFoundError


@pytest.fixture(scope="module")
def served(xrootd_server, cms_dir):
    from jettracks.generate import generate_dataset

    out = Path(xrootd_server.root_dir) / "rootmeta"
    out.mkdir(exist_ok=True)
    shutil.copy(cms_dir / "pfnano.root", out / "real.root")
    paths = [out / "real.root"] + list(generate_dataset(
        out, format="pfnano", n_files=12, events_per_file=11, seed=5, pileup_candidates=10, compression="zlib"))
    out.chmod(0o755)
    for p in paths:
        p.chmod(0o644)
    return out, paths, [xrootd_server.url_for(p) for p in paths]


@pytest.mark.service
def test_over_xrootd_and_through_the_delay_proxy(xrootd_server, served):
    from jettracks.io.cache import file_signature
    from jettracks_testing.services.delay_proxy import start_delay_proxy

    out, paths, urls = served
    for p, url in zip(paths, urls):
        fast = rootmeta.tree_metadata(url, "Events", 30)
        assert fast is not None
        assert (fast["numentries"], fast["uuid"]) == _uproot(url, "Events") == _uproot(str(p), "Events")
        assert fast["signature"] == file_signature(url)
    missing = xrootd_server.url_for(out / "absent.root")
    assert _ours(missing, "Events") is _uproot(missing, "Events") is FileNotFoundError
    with start_delay_proxy("127.0.0.1", xrootd_server.port, delay_s=0.01, max_seconds=120) as proxy:
        far = [proxy.url_for_port(u) for u in urls]
        got = file_metadata_many(far + [proxy.url_for_port(missing)], ["Events"] * (len(far) + 1), 30, threads=8)
    assert [(g["numentries"], g["uuid"]) for g in got[:-1]] == [_uproot(str(p), "Events") for p in paths]
    assert isinstance(got[-1], FileNotFoundError)


@pytest.mark.service
def test_cold_cache_asks_no_stat_and_keeps_the_signature_of_the_read(xrootd_server, served, tmp_path, monkeypatch):
    """A cold metadata step stats no remote file (the reader's open brings size and mtime);
    the next step finds every file in the cache, and a replaced file is read again."""
    from types import SimpleNamespace

    from jettracks.io import cache as cache_mod
    from jettracks.metadata import collect_metadata

    out, paths, urls = served
    extra = out / "replaced.root"  # a file of this test's own, replaced below
    with uproot.recreate(extra) as f:
        f.mktree("Events", {"x": "i4"})
        f["Events"].extend({"x": np.arange(4)})
    extra.chmod(0o644)
    paths, urls = [*paths, extra], [*urls, xrootd_server.url_for(extra)]
    monkeypatch.setenv("JETTRACKS_CACHE_DIR", str(tmp_path / "cache"))
    stats: list[str] = []
    real = cache_mod.file_signature
    monkeypatch.setattr(cache_mod, "file_signature", lambda n, **kw: stats.append(n) or real(n, **kw))
    ex = SimpleNamespace(xrootd_timeout=30, retries=0)

    def step():
        fileset = {"d": {"files": list(urls), "treename": "Events", "metadata": {}}}
        return collect_metadata(fileset, client=None, ex=ex)

    cold = step()
    assert stats == []
    assert {f: m["numentries"] for (_, f), m in cold.meta.items()} == {
        u: _uproot(str(p), "Events")[0] for p, u in zip(paths, urls)}
    cache = cache_mod.EntryCache()
    assert cache.get_many([(u, "Events") for u in urls]) == [
        {"numentries": m["numentries"], "uuid": m["uuid"]} for m in (cold.meta[("d", u)] for u in urls)]
    assert cache.hits == len(urls)
    stats.clear()
    # replace one file (another size, same name): its entry no longer matches
    with uproot.recreate(extra) as f:
        f.mktree("Events", {"x": "i4"})
        f["Events"].extend({"x": np.arange(300)})
    extra.chmod(0o644)
    warm = step()
    assert len(stats) == len(urls)  # every file stat'ed once, none read twice
    assert (cold.meta[("d", urls[-1])]["numentries"], warm.meta[("d", urls[-1])]["numentries"]) == (4, 300)
    assert {u: warm.meta[("d", u)]["numentries"] for u in urls[:-1]} == {
        u: cold.meta[("d", u)]["numentries"] for u in urls[:-1]}
