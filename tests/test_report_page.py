"""report.html (every run writes it, failed runs too), `runner report` / `runner show`, and the
page in a real headless Chromium: no console errors, no network, every image decodes, the
first screen shows the summary and a plot (its screenshot is kept in outputs/test-artefacts/)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jettracks.execution import RunError, run_config
from jettracks.io.rundir import OWN_OUTPUTS
from jettracks.report import load_report

PROJECT = Path(__file__).resolve().parents[1]
ARTEFACTS = PROJECT / "outputs" / "test-artefacts"


def _config(sample, bad: Path, out: Path, *, plots: bool = True) -> dict:
    return {
        "name": "page",
        "datasets": {
            "qcd": {"files": [str(p) for p in sample["pfnano"][:2]] + [str(bad)], "format": "pfnano",
                    "metadata": {"is_mc": True}},
            "qcd_jetntuple": {"files": [str(p) for p in sample["jetntuple"][:1]], "format": "jetntuple",
                              "metadata": {"is_mc": True}},
        },
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor", "options": {"cone_dr": 0.5}},
        "executor": {"backend": "serial", "chunksize": 100},
        "output": {"dir": str(out), "plots": plots},
    }


@pytest.fixture(scope="module")
def bad_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "broken.root"
    path.write_text("not a ROOT file\n")
    return path


@pytest.fixture(scope="module")
def partial_run(small_sample, bad_file, tmp_path_factory):
    """A run that skipped an unreadable file (status partial), with plots and ML data."""
    out = tmp_path_factory.mktemp("page") / "run"
    return run_config(_config(small_sample, bad_file, out), skip_bad_files=True, progress=False)


def _page(run) -> str:
    return (run.output_dir / "report.html").read_text()


def test_every_run_writes_a_self_contained_page(partial_run):
    html = _page(partial_run)
    rep = partial_run.report
    assert rep.status == "partial" and rep.plots
    # every plot inline, plus the chunk-time histogram; nothing loaded from anywhere else
    assert html.count('src="data:image/png;base64,') == len(rep.plots)  # the plots
    assert html.count('src="data:image/svg+xml;base64,') == 1  # the chunk-time histogram
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html)
    assert "<script" not in html and "<link" not in html
    for name in rep.plots:
        assert f"<figcaption>{Path(name).stem}</figcaption>" in html
    for step, count in rep.cutflow["qcd"].items():
        assert f"{count:,}" in html, step
    assert f"{rep.entries.processed:,}" in html and f"{rep.entries.expected:,}" in html
    assert rep.provenance["versions"]["coffea"] in html
    assert rep.provenance["codecs"]["LZMA"] in html  # which decoders read the files
    # skipped and unreadable files first, with the reason
    files = html[html.index('id="files"'):html.index('id="chunks"')]
    assert files.index("broken.root") < files.index("pfnano_0000.root")
    (skip,) = [s for f, s in rep.skipped() if f.endswith("broken.root")]
    assert skip.stage == "open" and skip.reason.split(":")[-1].strip() in files
    # the ML card: rows per split and the columns, from the manifest
    ml = html[html.index('id="ml"'):html.index('id="provenance"')]
    for split, rows in rep.ml_dataset.rows_per_split.items():
        assert split in ml and f"{rows:,}" in ml
    assert "<code>track_dxy</code>" in ml
    # chunk timing: the slowest chunk listed with its time
    slowest = max(rep.timing.chunks, key=lambda c: c.seconds)
    assert f"{slowest.seconds:.3f}" in html[html.index('id="chunks"'):]
    assert all(c.attempts == 1 for c in rep.timing.chunks)


def test_report_html_is_an_own_output():
    assert "report.html" in OWN_OUTPUTS and ".report.html.tmp-*" in OWN_OUTPUTS


def test_a_failed_run_gets_a_page_saying_why(small_sample, bad_file, tmp_path):
    out = tmp_path / "failed"
    with pytest.raises(RunError) as err:
        run_config(_config(small_sample, bad_file, out, plots=False), progress=False)
    html = (out / "report.html").read_text()
    assert load_report(out).status == "failed"
    assert 'class="status status-failed"' in html
    error = re.search(r'<p class="error" id="error">(.*?)</p>', html, re.S).group(1)
    assert "broken.root" in error and "broken.root" in str(err.value)


def test_peak_memory_shown_when_the_report_has_it(partial_run, tmp_path):
    from jettracks.io.report_html import render_report_html
    from jettracks.report import RunReport
    from jettracks.summary import summarize

    data = partial_run.report.model_dump(mode="json")
    rep = RunReport.model_validate({**data, "peak_worker_memory_bytes": 1_234_000_000})
    s = summarize(partial_run.output_dir, rep)
    assert ("peak_worker_memory_bytes", 1_234_000_000.0) in s.peak_memory
    assert "1.2 GB" in render_report_html(s)
    # the run's own figures: the largest process that ran chunks, and per worker (MiB)
    real = summarize(partial_run.output_dir).peak_memory
    assert [k for k, _ in real] == ["timing.peak_worker_memory_mib", "timing.peak_worker_memory_by_worker_mib"]
    assert all(v > 50 * 2**20 for _, v in real)


def test_runner_report_rebuilds_and_show_prints(partial_run, tmp_path, capsys):
    from runner.cli import main

    copy = tmp_path / "copy"
    shutil.copytree(partial_run.output_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    (copy / "report.html").unlink()
    assert main(["report", str(copy)]) == 0
    page = (copy / "report.html").read_text()
    assert 'id="summary"' in page and page.count("data:image/png;base64,") == len(partial_run.report.plots)
    assert page.count("data:image/svg+xml;base64,") == 1
    capsys.readouterr()
    assert main(["show", str(copy)]) == 0
    out = capsys.readouterr().out
    rep = partial_run.report
    assert "partial" in out and "broken.root" in out
    assert f"{rep.entries.processed:,}" in out and f"{rep.cutflow['qcd']['selected_jets']:,}" in out
    assert "split train" in out


@pytest.mark.parametrize("command", ["report", "show"])
def test_report_and_show_refuse_a_directory_without_a_run(tmp_path, command):
    (tmp_path / "x.txt").write_text("mine")
    res = subprocess.run([sys.executable, "-m", "runner", command, str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{command} error:") and "no report.json" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]  # nothing written there


@pytest.mark.service
def test_page_in_headless_chromium(partial_run, chromium, tmp_path):
    page = chromium.open_page((partial_run.output_dir / "report.html").as_uri(), width=1280, height=900)
    assert page.errors() == []
    assert all(u.startswith(("file:", "data:")) for u in page.requests), page.requests
    images = page.evaluate(
        "Array.from(document.images).map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight,"
        " done: i.complete, top: i.getBoundingClientRect().top, bottom: i.getBoundingClientRect().bottom}))"
    )
    assert len(images) == len(partial_run.report.plots) + 1
    assert all(i["done"] and i["w"] > 0 and i["h"] > 0 for i in images), images
    summary = page.evaluate(
        "(() => { const r = document.getElementById('summary').getBoundingClientRect();"
        " return {top: r.top, bottom: r.bottom, text: document.getElementById('summary').innerText,"
        " status: document.getElementById('status').innerText}; })()"
    )
    # the first screen (900 px) shows the whole summary and at least one whole plot
    assert summary["status"] == "partial" and 0 <= summary["top"] < summary["bottom"] <= 900
    assert f"{partial_run.report.entries.processed:,}" in summary["text"] and "entries processed" in summary["text"]
    first_screen = [i for i in images if i["alt"] != "chunk wall time histogram" and 0 <= i["top"] and i["bottom"] <= 900]
    assert first_screen, images
    shot = page.screenshot(tmp_path / "report-first-screen.png")
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (900, 1280)
    plot = first_screen[0]
    region = pixels[int(plot["top"]):int(plot["bottom"]), :, :3]
    assert region.std() > 0.05  # the plot drew something: not a blank area
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTEFACTS / "report-first-screen.png")
