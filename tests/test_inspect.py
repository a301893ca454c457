"""``python -m runner inspect FILE`` / :func:`jettracks.inspect.inspect_file`.

It names the detected format and the tree entries, shows per reader which
branches it uses and which are missing, works over ``root://`` (a real local
XRootD server), and fails with one line for an unreadable file.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot
from rich.console import Console

from jettracks.inspect import inspect_file

PROJECT = Path(__file__).resolve().parents[1]


from jettracks_testing.data import absent_reason, cms_data_dir  # noqa: E402

CMS = cms_data_dir()
needs_cms = pytest.mark.skipif(CMS is None, reason=absent_reason())


def _run(path, fmt="auto", **kw) -> tuple[int, str]:
    buf = io.StringIO()
    rc = inspect_file(str(path), fmt=fmt, console=Console(file=buf, width=200, color_system=None), **kw)
    return rc, buf.getvalue()


def _nano_like(path: Path, *, drop: tuple[str, ...] = ()) -> Path:
    """A small PFNano-layout file (synthetic values) without the branches in ``drop``."""
    rng = np.random.default_rng(3)
    n_jet = np.array([2, 3, 1])
    n_pf = np.array([5, 4, 6])

    def jag(n, lo, hi, dtype=np.float32):
        return ak.unflatten(rng.uniform(lo, hi, int(n.sum())).astype(dtype), n)

    jet = {"pt": jag(n_jet, 20, 200), "eta": jag(n_jet, -2, 2), "phi": jag(n_jet, -3, 3), "mass": jag(n_jet, 1, 20)}
    pf = {"pt": jag(n_pf, 0.5, 20), "eta": jag(n_pf, -2, 2), "phi": jag(n_pf, -3, 3),
          "charge": ak.unflatten(rng.integers(-1, 2, int(n_pf.sum())).astype(np.int32), n_pf),
          "d0": jag(n_pf, -0.01, 0.01), "d0Err": jag(n_pf, 0.001, 0.01), "dz": jag(n_pf, -0.1, 0.1)}
    data = {
        "run": ak.Array(np.ones(3, np.uint32)),
        "luminosityBlock": ak.Array(np.ones(3, np.uint32)),
        "event": ak.Array(np.arange(1, 4, dtype=np.uint64)),
        "Jet": ak.zip({k: v for k, v in jet.items() if f"Jet_{k}" not in drop}),
        "PFCands": ak.zip({k: v for k, v in pf.items() if f"PFCands_{k}" not in drop}),
    }
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: v.type for k, v in data.items()}, counter_name=lambda n: "n" + n)
        f["Events"].extend(data)
    return path


@needs_cms
def test_cli_inspect_real_pfnano_names_format_and_entries():
    target = os.path.relpath(CMS / "pfnano.root", PROJECT)  # a relative path, as a user would type it
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "inspect", target],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "format: pfnano (detected; tree Events, 10 entries)" in out
    events_row = next(ln for ln in out.splitlines() if "│ Events" in ln)
    assert " 10 " in events_row
    # Every reader is listed; the PFNano branches it reads are all present.
    for name in ("pfnano", "nanoaod", "treemaker", "jettrack_events", "jetntuple"):
        assert name in out
    assert "PFCands_d0Err" in out and "MISSING" not in out


@needs_cms
@pytest.mark.parametrize(
    "stem, fmt, tree, entries",
    [("treemaker", "treemaker", "PreSelection", 10), ("nano_tt_v15", "nanoaod", "Events", 200)],
)
def test_inspect_real_files(stem, fmt, tree, entries):
    rc, out = _run(CMS / f"{stem}.root")
    assert rc == 0
    assert f"format: {fmt} (detected; tree {tree}, {entries} entries)" in out
    assert f"Branches of format {fmt} (tree {tree})" in out


def test_inspect_shows_missing_branches(tmp_path):
    path = _nano_like(tmp_path / "no_d0err.root", drop=("PFCands_d0Err",))
    rc, out = _run(path, fmt="pfnano")
    assert rc == 1  # not usable as the given format
    assert f"inspect error: {path}: not readable as format 'pfnano': missing branches PFCands_d0Err" in out
    assert "format: pfnano (given): not readable; detected format: nanoaod" in out
    row = next(ln for ln in out.splitlines() if "PFCands_d0Err" in ln and "required" in ln)
    assert "MISSING" in row
    assert "not readable as format 'pfnano': missing branches PFCands_d0Err" in out
    # The readers table says the same in auto mode, where the file is read as nanoaod.
    rc, out = _run(path)
    assert rc == 0 and "format: nanoaod (detected; tree Events, 3 entries)" in out
    pf_row = next(ln for ln in out.splitlines() if ln.startswith("│ pfnano"))
    assert "PFCands_d0Err" in pf_row and "13/14" in pf_row


def test_inspect_complete_synthetic_file_is_pfnano(tmp_path):
    rc, out = _run(_nano_like(tmp_path / "ok.root"))
    assert rc == 0 and "format: pfnano (detected; tree Events, 3 entries)" in out


def test_inspect_unrecognised_file(tmp_path):
    path = tmp_path / "other.root"
    with uproot.recreate(path) as f:
        f.mktree("t", {"x": np.float32})
        f["t"].extend({"x": np.arange(4, dtype=np.float32)})
    rc, out = _run(path)
    assert rc == 1  # usable by no reader
    assert "not recognised" in out and "│ t " in out
    assert out.strip().splitlines()[-1] == f"inspect error: {path}: no reader recognises this file (trees: t)"


@pytest.mark.parametrize("kind", ["text", "absent"])
def test_inspect_unreadable_file_one_line(tmp_path, kind):
    path = tmp_path / "bad.root"
    if kind == "text":
        path.write_text("not a ROOT file\n")
    rc, out = _run(path)
    assert rc == 1
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("inspect error: ") and str(path) in lines[0]


def test_inspect_unknown_format(tmp_path):
    rc, out = _run(tmp_path / "whatever.root", fmt="nosuch")
    assert rc == 1 and out.strip() == (
        "inspect error: unknown format 'nosuch'; known: auto, pfnano, jettrack_events, treemaker, delphes, jetntuple, nanoaod"
    )


def test_cli_inspect_unreadable_exit_code(tmp_path):
    path = tmp_path / "bad.root"
    path.write_bytes(b"\0" * 100)
    proc = subprocess.run(
        [sys.executable, "-m", "runner", "inspect", str(path)],
        cwd=PROJECT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().startswith("inspect error: ") and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.service
def test_inspect_over_root_url(xrootd_server):
    """A real XRootD server serving a synthetic file: inspect works on the root:// URL."""
    path = _nano_like(xrootd_server.root_dir / "inspect-remote.root")
    path.chmod(0o644)
    url = xrootd_server.url_for(path)
    try:
        assert url.startswith("root://")
        rc, out = _run(url, timeout=30)
        assert rc == 0, out
        assert f"file: {url}" in out
        assert "format: pfnano (detected; tree Events, 3 entries)" in out
        rc, out = _run(url.replace("inspect-remote.root", "absent.root"), timeout=10)
        assert rc == 1 and out.strip().startswith("inspect error: ")
        assert len(out.strip().splitlines()) == 1
    finally:
        path.unlink(missing_ok=True)
