"""The example notebook runs end to end in a kernel of this venv (nbclient, no papermill).

Parameters are overridden papermill-style: a cell is injected right after the cell
tagged ``parameters``. The notebook starts its own 2-worker ``LocalCluster``.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import pytest

from jettracks.engines import chunk_steps

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

PROJECT = Path(__file__).resolve().parents[1]
NOTEBOOK = PROJECT / "scripts" / "example_notebook.ipynb"


def _execute(parameters: str, cwd: Path) -> tuple[object, float]:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    injected = nbformat.v4.new_code_cell(
        parameters + "\nimport sys\nprint('KERNEL_PYTHON=' + sys.executable)",
        metadata={"tags": ["injected-parameters"]},
    )
    nb.cells.insert(index + 1, injected)
    # kernel "python3": the venv's kernelspec runs `python -m ipykernel_launcher`, and
    # jupyter_client replaces a bare `python` by this process's sys.executable (asserted below).
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=240, startup_timeout=120,
        resources={"metadata": {"path": str(cwd)}},
    )
    t0 = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - t0


def _outputs(nb) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def _text(nb) -> str:
    parts = []
    for out in _outputs(nb):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        for mime in ("text/plain", "text/html"):
            if mime in out.get("data", {}):
                parts.append(out["data"][mime])
    return "\n".join(parts)


def test_notebook_runs_on_the_real_pfnano_file(cms_dir, tmp_path):
    pfnano = cms_dir / "pfnano.root"
    import uproot

    with uproot.open(pfnano) as f:
        expected = f["Events"].num_entries
    out_dir = tmp_path / "run"
    config = {
        "name": "notebook-test",
        "datasets": {"cms_pfnano": {"files": [str(pfnano)], "format": "pfnano", "metadata": {"is_mc": True}}},
        "processor": {
            "class": "processors.jet_tracks:JetTrackProcessor",
            "options": {"cone_dr": 0.4, "jet_pt_min": 30.0, "jet_abs_eta_max": 2.5, "track_pt_min": 1.0},
        },
        "executor": {"chunksize": 3},
        "output": {"plots": False, "ml": True},
    }
    nb, seconds = _execute(
        f"CONFIG = {config!r}\nOUTPUT_DIR = {str(out_dir)!r}\nPROGRESS = False", cwd=PROJECT / "scripts"
    )
    text = _text(nb)

    # The kernel is this venv's Python.
    line = next(ln for ln in text.splitlines() if ln.startswith("KERNEL_PYTHON="))
    assert Path(line.split("=", 1)[1]).resolve() == Path(sys.executable).resolve()

    # The run used the injected config and accounted for every entry.
    report = json.loads((out_dir / "report.json").read_text())
    assert report["name"] == "notebook-test"
    assert report["entries"]["expected"] == report["entries"]["processed"] == expected
    assert report["chunks"] == len(chunk_steps(expected, 3)) > 1  # coffea's chunking: 3 chunks of 10
    assert report["cluster"]["workers"] == 2
    assert f"entries: {expected:,} processed of {expected:,} expected" in text

    # The dxy plot: written as a PNG and shown inline.
    png = out_dir / "dxy_by_flavour.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    images = [o["data"]["image/png"] for o in _outputs(nb) if "image/png" in o.get("data", {})]
    assert images and base64.b64decode(images[0])[:8] == b"\x89PNG\r\n\x1a\n"

    # Cut flow and ML table are displayed as tables.
    html = "\n".join(o["data"]["text/html"] for o in _outputs(nb) if "text/html" in o.get("data", {}))
    assert "tracks_valid_dxy" in html and "selected_jets" in html
    assert "jet_pt" in html and "flavour" in html
    assert not [o for o in _outputs(nb) if o.get("output_type") == "error"]
    assert seconds < 120, f"notebook took {seconds:.0f} s"
