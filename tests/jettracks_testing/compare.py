"""Two runs' outputs compared exactly: report accounting, ``hists.coffea``, cut flow, ML rows;
and a run watched until it has checkpointed some chunks (to interrupt it there).

Used by the tests of runs on other hosts or with other output locations against the
single-process (``serial``) reference run.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["assert_equal_runs", "checkpoints", "ml_frame", "wait_for_checkpoints"]


def checkpoints(out_dir: Path) -> int:
    """How many chunk checkpoints the run directory ``out_dir`` (local) holds."""
    return len(list((Path(out_dir) / "checkpoints").rglob("*.pkl")))


def wait_for_checkpoints(out_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    """Return once ``out_dir`` holds ``n`` checkpoints; fail when ``proc`` ends first or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while checkpoints(out_dir) < n:
        assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else proc.returncode
        assert time.monotonic() < deadline, f"fewer than {n} checkpoints in {out_dir} after {timeout:.0f} s"
        time.sleep(0.05)


def ml_frame(out_dir: Path):
    """The run's ML rows (the files its ``ml/manifest.json`` lists), sorted by the jet key."""
    import pandas as pd

    manifest = json.loads((Path(out_dir) / "ml" / "manifest.json").read_text())
    df = pd.concat([pd.read_parquet(Path(out_dir) / "ml" / n) for n in manifest["part_files"]], ignore_index=True)
    keys = [k for k in ("run", "luminosityBlock", "lumi", "event", "jet_index") if k in df.columns]
    return df.sort_values(keys).reset_index(drop=True)


def assert_equal_runs(out_dir: Path, serial: Any, processed: int) -> dict:
    """``out_dir`` (a local directory holding a finished run) equals the ``serial``
    :class:`~jettracks.execution.RunResult`: status ok, entries (``processed`` of them, exact
    accounting), histograms (values and variances, flow bins), cut flow and ML rows.

    Returns:
        The run's ``report.json`` as a dict.
    """
    import pandas as pd
    from coffea.util import load

    out_dir = Path(out_dir)
    report = json.loads((out_dir / "report.json").read_text())
    assert report["status"] == "ok", report.get("error")
    ent = report["entries"]
    assert ent == serial.report["entries"] and ent["processed"] == processed
    assert ent["processed"] + ent["skipped"] == ent["expected"]
    saved = load(out_dir / "hists.coffea")
    hists = saved["hists"]
    assert saved["cutflow"] == serial.cutflow
    assert set(hists) == set(serial.hists)
    for name, h in serial.hists.items():
        np.testing.assert_array_equal(h.values(flow=True), hists[name].values(flow=True), err_msg=name)
        np.testing.assert_array_equal(h.variances(flow=True), hists[name].variances(flow=True), err_msg=name)
    pd.testing.assert_frame_equal(ml_frame(out_dir), ml_frame(serial.output_dir), check_like=True)
    return report
