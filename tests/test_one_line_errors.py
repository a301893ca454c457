"""Every error of ``python -m runner run`` is one line on stderr, without a traceback.

Config errors (the file's keys and the command-line overrides alike) exit 2 and
name the key; run errors and unexpected exceptions exit 1; ``--debug`` adds the
traceback. Dask's own logs (``Compute Failed`` ...) stay off the console and go
to ``<output dir>/logs/dask.log``; ``--no-progress`` holds for the serial backend.
"""

from __future__ import annotations

import copy
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]

BASE = {
    "name": "errors",
    "datasets": {"qcd": {"files": ["data/*.root"], "format": "pfnano"}},
    "executor": {"backend": "local", "chunksize": 1000},
    "output": {"dir": "out", "plots": False, "ml": False},
}


def _cli(cwd: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def _with(**executor) -> dict:
    data = copy.deepcopy(BASE)
    data["executor"].update(executor)
    return data


def _with_options(**options) -> dict:
    data = copy.deepcopy(BASE)
    data["processor"] = {"class": "processors.jet_tracks:JetTrackProcessor", "options": options}
    return data


DUPLICATE_DATASETS = """\
name: dup
datasets:
  qcd:
    files: ["a/*.root"]
    format: pfnano
  qcd:
    files: ["b/*.root"]
    format: pfnano
"""

NON_FINITE_YAML = """\
name: inf
datasets:
  qcd: {files: ["data/*.root"], format: pfnano}
processor:
  options: {cone_dr: .inf}
"""

# id -> (config, extra CLI args, text the one stderr line must contain)
CONFIG_ERRORS = {
    "memory_limit_lots": (_with(memory_limit="lots"), [], "executor.memory_limit:"),
    "workers_huge": (_with(workers=1_000_000), [], "executor.workers:"),
    "retries_huge": (_with(retries=1_000_000), [], "executor.retries:"),
    "cli_workers_huge": (BASE, ["--workers", "1000000"], "executor.workers:"),
    "cli_backend_unknown": (BASE, ["--backend", "nosuch"], "executor.backend: unknown backend 'nosuch'"),
    "cli_backend_scheduler_no_address": (BASE, ["--backend", "scheduler"], "executor.scheduler:"),
    "cli_scheduler_not_an_address": (BASE, ["--scheduler", "not-an-address"], "executor.scheduler:"),
    "scheduler_without_port": (_with(backend="scheduler", scheduler="tcp://127.0.0.1"), [], "executor.scheduler:"),
    "adapt_minimum_negative": (
        _with(backend="slurm", cluster={"adapt": {"minimum": -1, "maximum": 2}}), [],
        "executor.cluster.adapt.minimum:",
    ),
    "adapt_maximum_below_minimum": (
        _with(backend="slurm", cluster={"adapt": {"minimum": 5, "maximum": 2}}), [], "executor.cluster.adapt:",
    ),
    "jobqueue_unknown_option": (_with(backend="slurm", cluster={"wallclock": "1:00:00"}), [], "executor.cluster:"),
    "jobqueue_memory_lots": (_with(backend="pbs", cluster={"memory": "lots"}), [], "executor.cluster.memory:"),
    "local_unknown_option": (_with(cluster={"colour": "red"}), [], "executor.cluster.colour: unknown key"),
    "scheduler_wait_negative": (
        _with(backend="scheduler", scheduler="tcp://127.0.0.1:8786", cluster={"wait_timeout": -1}), [],
        "executor.cluster.wait_timeout:",
    ),
    "htcondor_queue": (_with(backend="htcondor", cluster={"queue": "short"}), [], "executor.cluster:"),
    "cli_backend_change_revalidates_cluster": (
        _with(backend="slurm", cluster={"cores": 4}), ["--backend", "local"], "executor.cluster.cores: unknown key",
    ),
    "duplicate_dataset": (DUPLICATE_DATASETS, [], "datasets.qcd: duplicate key (line 6; first at line 3)"),
    "cone_dr_inf": (NON_FINITE_YAML, [], "processor.options.cone_dr: must be a finite number"),
    "jet_pt_min_nan": (_with_options(jet_pt_min=float("nan")), [], "processor.options.jet_pt_min: must be a finite"),
    "metadata_inf": (
        {**BASE, "datasets": {"qcd": {**BASE["datasets"]["qcd"], "metadata": {"xsec": float("-inf")}}}}, [],
        "datasets.qcd.metadata.xsec: must be a finite number",
    ),
}


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_config_error_is_one_line_naming_the_key(tmp_path, case):
    data, args, expected = CONFIG_ERRORS[case]
    cfg = _write(tmp_path, data)
    proc = _cli(tmp_path, "run", str(cfg), *args)
    line = _one_line(proc.stderr)
    assert proc.returncode == 2, proc.stderr
    assert line.startswith(f"config error: {cfg}: ")
    assert expected in line, line
    assert not (tmp_path / "out").exists()  # failed before anything ran


BOOM = '''
class Boom:
    def __init__(self, **options):
        raise RuntimeError("kaboom: a bug in the processor")
'''


def test_unexpected_exception_is_one_line_and_debug_shows_traceback(tmp_path):
    (tmp_path / "boom.py").write_text(BOOM)  # importable: `python -m` puts the cwd on sys.path
    data = copy.deepcopy(BASE)
    data["processor"] = {"class": "boom:Boom"}
    cfg = _write(tmp_path, data)
    proc = _cli(tmp_path, "run", str(cfg))
    assert proc.returncode == 1
    assert _one_line(proc.stderr) == (
        "internal error: RuntimeError: kaboom: a bug in the processor (rerun with --debug for the traceback)"
    )
    proc = _cli(tmp_path, "run", str(cfg), "--debug")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and 'boom.py", line 4' in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "internal error: RuntimeError: kaboom: a bug in the processor"


def test_debug_shows_traceback_of_config_error(tmp_path):
    cfg = _write(tmp_path, _with(memory_limit="lots"))
    proc = _cli(tmp_path, "run", str(cfg), "--debug")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "ConfigError" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"config error: {cfg}: executor.memory_limit:")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """One good 40-event file and one file of random bytes named .root."""
    from jettracks.generate import generate_dataset

    data = tmp_path_factory.mktemp("one-line-sample")
    generate_dataset(data, format="pfnano", n_files=1, events_per_file=40, seed=5, pileup_candidates=50)
    (data / "zz_random.root").write_bytes(os.urandom(4096))
    return data


def test_failing_file_dask_logs_go_to_the_log_file(tmp_path, sample):
    """A local run over a non-ROOT file: one run-error line; distributed's 'Compute Failed' only in the log."""
    data = copy.deepcopy(BASE)
    data["datasets"]["qcd"]["files"] = [str(sample / "*.root")]
    data["executor"].update(workers=1, retries=0)
    cfg = _write(tmp_path, data)
    proc = _cli(tmp_path, "run", str(cfg), "--no-progress")
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    # progress notes may come first; the error is the last line, and the only one of its kind
    assert lines[-1].startswith("run error: ") and "zz_random.root" in lines[-1], proc.stderr
    assert sum(ln.startswith("run error") for ln in lines) == 1
    assert "Compute Failed" not in proc.stderr and "Traceback" not in proc.stderr
    assert not any("distributed." in ln for ln in lines), proc.stderr  # no Dask log line at all
    log = tmp_path / "out" / "logs" / "dask.log"
    assert log.is_file()
    text = log.read_text()
    # Dask's own log lines went to the file (the bad file is caught inside a metadata task
    # that reads many files, so Dask itself logs no failed task)
    assert "distributed.scheduler" in text


def _run_on_a_tty(cwd: Path, *args: str) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal (rich draws bars only there)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=cwd, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return proc.wait(timeout=180), b"".join(chunks).decode(errors="replace")


def test_serial_backend_honours_no_progress(tmp_path, sample):
    data = copy.deepcopy(BASE)
    data["datasets"]["qcd"]["files"] = [str(next(sample.glob("pfnano_*.root")))]
    data["executor"].update(backend="serial", chunksize=10)
    cfg = _write(tmp_path, data)
    rc, shown = _run_on_a_tty(tmp_path, "run", str(cfg), "--output", "with-bar")
    assert rc == 0, shown
    assert "Processing" in shown  # the control: on a terminal the bar is drawn
    rc, shown = _run_on_a_tty(tmp_path, "run", str(cfg), "--output", "no-bar", "--no-progress")
    assert rc == 0, shown
    assert "Processing" not in shown and "chunk/s" not in shown
    assert "processed" in shown and "outputs:" in shown  # the run did finish
