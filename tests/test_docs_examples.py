"""The code in README.md and in the ML dataset's own README.md runs as written.

The examples are taken from the Markdown (fenced ``python`` blocks), not copied here,
and run against a small real run with two datasets of different formats (PFNano and
JetNtuple: different ML columns), named as in the demo (``qcd``, ``qcd_jetntuple``).
Expected row counts and columns come from the run's cut flow and from pyarrow's
per-part schemas, not from the code under test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from jettracks.execution import run_config

PROJECT = Path(__file__).resolve().parents[1]
README = PROJECT / "README.md"


def python_blocks(markdown: str) -> list[str]:
    """The fenced ```python blocks of a Markdown text, in order."""
    return [textwrap.dedent(b) for b in re.findall(r"^```python\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE)]


def _block(markdown: str, needle: str) -> str:
    found = [b for b in python_blocks(markdown) if needle in b]
    assert len(found) == 1, f"expected one python block with {needle!r}, found {len(found)}"
    return found[0]


def _demo_like_config(tmp: Path) -> dict:
    """The demo's two datasets (names, formats), small."""
    from jettracks.generate import generate_dataset

    data = tmp / "data"
    small = {"n_files": 2, "events_per_file": 25, "seed": 9, "pileup_candidates": 30}
    pf = generate_dataset(data, format="pfnano", **small)
    jt = generate_dataset(data, format="jetntuple", **small)
    return {
        "name": "docs",
        "datasets": {
            "qcd": {"files": [str(p) for p in pf], "format": "pfnano", "metadata": {"is_mc": True}},
            "qcd_jetntuple": {"files": [str(p) for p in jt], "format": "jetntuple", "metadata": {"is_mc": True}},
        },
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor",
                      "options": {"cone_dr": 0.5, "jet_pt_min": 30.0, "jet_abs_eta_max": 2.5,
                                  "track_pt_min": 1.0}},
        "executor": {"backend": "serial", "chunksize": 20},
        "output": {"plots": False},
    }


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """``outputs/demo`` under a fresh working directory, as the README's paths expect."""
    cwd = tmp_path_factory.mktemp("docs")
    result = run_config(_demo_like_config(cwd), progress=False, output_dir=cwd / "outputs" / "demo")
    parts = sorted((cwd / "outputs" / "demo" / "ml").glob("part-*.parquet"))
    columns = {name: set() for name in result.cutflow}
    for p in parts:
        ds = p.name[len("part-"):].split("-")[0]
        columns[ds] |= set(pq.read_schema(p).names)
    # the premise: two datasets with different columns
    assert columns["qcd"] != columns["qcd_jetntuple"]
    assert "track_dxy" in columns["qcd"] - columns["qcd_jetntuple"]
    assert "physics_flavour" in columns["qcd_jetntuple"] - columns["qcd"]
    return cwd, result, columns


def _run_block(code: str, cwd: Path) -> dict:
    here = os.getcwd()
    os.chdir(cwd)
    try:
        namespace: dict = {"__name__": "docs_example"}
        exec(compile(code, "<README block>", "exec"), namespace)  # noqa: S102 - the documented code, as written
        return namespace
    finally:
        os.chdir(here)


def _check_read_back(ns: dict, result, columns: dict, *, prefix: str) -> None:
    rows = {ds: flow["selected_jets"] for ds, flow in result.cutflow.items()}
    union = columns["qcd"] | columns["qcd_jetntuple"]
    df = ns["df"]
    assert len(df) == sum(rows.values())
    assert set(df.columns) == union
    assert df.groupby("dataset").size().to_dict() == rows
    t = ns["t" if prefix == "ml" else "table"]
    assert t.num_rows == sum(rows.values()) and set(t.column_names) == union
    a = ns["a" if prefix == "ml" else "jets"]
    assert len(a) == rows["qcd"] and set(a.fields) == columns["qcd"]
    assert set(a["dataset"].to_list()) == {"qcd"}


def test_readme_ml_one_liners_run_as_written(demo_run):
    cwd, result, columns = demo_run
    code = _block(README.read_text(), "part-*.parquet")
    ns = _run_block(code, cwd)
    _check_read_back(ns, result, columns, prefix="readme")
    all_jets = ns["all_jets"]
    assert len(all_jets) == sum(f["selected_jets"] for f in result.cutflow.values())
    assert set(all_jets.fields) == columns["qcd"] | columns["qcd_jetntuple"]


def test_ml_readme_one_liners_run_as_written(demo_run):
    cwd, result, columns = demo_run
    run_dir = cwd / "outputs" / "demo"
    code = _block((run_dir / "ml" / "README.md").read_text(), "part-")
    ns = _run_block(code, run_dir)  # "from the run directory, the parent of ml/"
    _check_read_back(ns, result, columns, prefix="ml")


def test_readme_notebook_snippet_runs_as_a_script(tmp_path):
    """The snippet as a plain script (LocalCluster with worker processes) finishes.

    ``configs/demo.yaml`` under the script's working directory is a small config with the
    demo's dataset names, so the snippet runs unchanged in a few seconds.
    """
    code = _block(README.read_text(), "LocalCluster")
    assert "configs/demo.yaml" in code
    (tmp_path / "configs").mkdir()
    cfg = _demo_like_config(tmp_path)
    cfg.pop("executor")  # the snippet passes its own client
    (tmp_path / "configs" / "demo.yaml").write_text(yaml.safe_dump(cfg))
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    # Own session: on a hang, the script and the worker processes it spawned are all killed.
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the README's notebook snippet did not finish in 240 s when run as a script")
    assert proc.returncode == 0, stderr[-3000:]
    report = yaml.safe_load((tmp_path / "outputs" / "nb" / "report.json").read_text())
    assert report["status"] == "ok" and report["cluster"]["workers"] == 2
    assert set(report["cutflow"]) == {"qcd", "qcd_jetntuple"}
