"""Cluster backends: job scripts of the batch backends, local/scheduler clusters, a real Slurm."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jettracks import cluster
from jettracks.config import ExecutorConfig, load_config

PROJECT = Path(__file__).resolve().parents[1]

# -- job scripts (no batch system needed) -------------------------------------------------

COMMON = {
    "cores": 4,
    "memory": "8GB",
    "walltime": "01:30:00",
    "job_script_prologue": ["source /opt/site/setup.sh"],
}

# backend -> (extra cluster options, lines the script must contain)
SCRIPTS = {
    "slurm": (
        {"partition": "short", "job_extra_directives": ["--qos=normal", "--constraint=el9"]},
        [
            "#SBATCH -p short",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --mem=8G",
            "#SBATCH -t 01:30:00",
            "#SBATCH --qos=normal",
            "#SBATCH --constraint=el9",
        ],
    ),
    "htcondor": (
        {"job_extra_directives": {"+JobFlavour": '"longlunch"', "requirements": 'OpSysAndVer == "AlmaLinux9"'}},
        [
            "MY.DaskWorkerCores = 4",
            "MY.DaskWorkerMemory = 8000000000",
            "+MaxRuntime = 5400",
            '+JobFlavour = "longlunch"',
            'requirements = OpSysAndVer == "AlmaLinux9"',
        ],
    ),
    "pbs": (
        {"queue": "workq", "job_extra_directives": ["-m n"]},
        ["#PBS -q workq", "#PBS -l select=1:ncpus=4:mem=", "#PBS -l walltime=01:30:00", "#PBS -m n"],
    ),
    "lsf": (
        {"queue": "short", "job_extra_directives": ['-R "select[mem>8000]"']},
        ["#BSUB -q short", "#BSUB -n 4", "#BSUB -M 8000000", "#BSUB -W 01:30", '#BSUB -R "select[mem>8000]"'],
    ),
    "sge": (
        {"queue": "all.q", "resource_spec": "h_vmem=8G", "job_extra_directives": ["-pe smp 4"]},
        ["#$ -q all.q", "#$ -l h_vmem=8G", "#$ -l h_rt=01:30:00", "#$ -pe smp 4"],
    ),
}


@pytest.mark.parametrize("backend", sorted(SCRIPTS))
def test_job_script_has_configured_directives(backend):
    extra, expected = SCRIPTS[backend]
    ex = ExecutorConfig(backend=backend, cluster={**COMMON, **extra})
    script = cluster.render_job_script(ex)
    for line in expected:
        assert line in script, f"{backend}: {line!r} missing from\n{script}"
    # every backend: the prologue (ours first), the worker's threads and memory, this python
    assert "export MALLOC_TRIM_THRESHOLD_=268435456" in script
    assert script.index("MALLOC_TRIM_THRESHOLD_") < script.index("source /opt/site/setup.sh")
    assert "--nthreads 4" in script
    assert "--memory-limit 7.45GiB" in script
    assert f"{sys.executable} -m distributed.cli.dask_worker" in script


def test_job_script_options():
    script = cluster.render_job_script(
        ExecutorConfig(
            backend="slurm",
            cluster={"cores": 2, "processes": 2, "python": "/opt/venv/bin/python", "malloc_trim_threshold": 1 << 20},
        ),
        scheduler_address="tcp://10.0.0.1:8786",
    )
    assert "/opt/venv/bin/python -m distributed.cli.dask_worker tcp://10.0.0.1:8786" in script
    assert "--nworkers 2" in script and "--nthreads 1" in script
    assert "export MALLOC_TRIM_THRESHOLD_=1048576" in script
    # defaults: cores from threads_per_worker, memory from memory_limit
    script = cluster.render_job_script(ExecutorConfig(backend="pbs", threads_per_worker=3, memory_limit="3GB"))
    assert "--nthreads 3" in script and "ncpus=3" in script


@pytest.mark.parametrize(
    ("backend", "options", "match"),
    [
        ("htcondor", {"queue": "short"}, "HTCondor has no queues"),
        ("slurm", {"no_such_option": 1}, "no_such_option"),
        ("slurm", {"queue": "a", "partition": "b"}, "either queue or partition"),
        ("slurm", {"adapt": {"minimum": 1, "maximum": 3}, "scale": 2}, "either scale or adapt"),
        ("slurm", {"adapt": {"min": 1}}, "adapt"),
        ("sge", {"walltime": "1:2:3:4"}, None),
    ],
)
def test_bad_jobqueue_options_are_value_errors(backend, options, match):
    ex = ExecutorConfig(backend=backend, cluster=options)
    if match is None:  # passed through to dask-jobqueue unchecked: still renders
        assert "h_rt=1:2:3:4" in cluster.render_job_script(ex)
        return
    with pytest.raises(ValueError, match=match):
        cluster.render_job_script(ex)


def test_render_job_script_needs_a_batch_backend():
    with pytest.raises(ValueError, match="no batch jobs"):
        cluster.render_job_script(ExecutorConfig(backend="local"))


def test_backends_registered():
    assert {"local", "scheduler", "slurm", "htcondor", "pbs", "lsf", "sge", "gateway"} <= set(cluster.available())


CLUSTER_MODULES = sorted(p.stem for p in (PROJECT / "src" / "jettracks" / "cluster").glob("*.py"))


@pytest.mark.parametrize("module", CLUSTER_MODULES)
def test_cluster_module_imports_alone(module):
    """Each module of the package imports first in a fresh interpreter (no import cycle),
    and every backend is registered whichever module came first."""
    name = "jettracks.cluster" if module == "__init__" else f"jettracks.cluster.{module}"
    code = (
        f"import {name}\n"
        "import jettracks.cluster as c\n"
        "print(','.join(c.available()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PROJECT, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["local,scheduler,slurm,htcondor,pbs,lsf,sge,gateway"]


def test_gateway_without_package_is_a_clear_error():
    try:
        import dask_gateway  # noqa: F401
    except ImportError:
        with pytest.raises(cluster.ClusterError, match="dask-gateway"):
            with cluster.connect(ExecutorConfig(backend="gateway")):
                pass
    else:  # pragma: no cover - depends on the environment
        pytest.skip("dask-gateway is installed; the missing-package error cannot be checked")


def test_unknown_backend():
    ex = ExecutorConfig(backend="local")
    ex.backend = "nope"
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        with cluster.connect(ex):
            pass


# -- example configs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["local", "scheduler", "slurm", "htcondor", "pbs", "lsf", "sge", "gateway"]
)
def test_cluster_config_examples_parse(name):
    cfg = load_config(PROJECT / "configs" / "clusters" / f"{name}.yaml")
    assert cfg.executor.backend == name
    assert cfg.datasets["qcd"].format == "pfnano"
    assert cfg.output.dir == f"outputs/cluster_{name}"
    if name in cluster.JOBQUEUE_BACKENDS:
        assert "MALLOC_TRIM_THRESHOLD_" in cluster.render_job_script(cfg.executor)


# -- real Dask clusters -------------------------------------------------------------------


@pytest.fixture
def by_value_registry():
    """Undo ``ship_processors()`` after the test (the registry is process-wide)."""
    import cloudpickle

    before = "processors" in cloudpickle.list_registry_pickle_by_value()
    yield
    if not before and "processors" in cloudpickle.list_registry_pickle_by_value():
        import processors

        cloudpickle.unregister_pickle_by_value(processors)


def test_local_backend_computes():
    ex = ExecutorConfig(backend="local", workers=1, threads_per_worker=1, memory_limit="1GB")
    with cluster.connect(ex) as handle:
        assert handle.backend == "local"
        assert handle.client.submit(sum, [1, 2]).result(timeout=60) == 3
        assert handle.description["workers"] == 1
        assert handle.description["memory_limit"] == "1GB"
    assert handle.client.status == "closed"


def test_scheduler_backend_attaches(local_client, by_value_registry):
    address = local_client.scheduler.address
    ex = ExecutorConfig(backend="scheduler", scheduler=address)
    with cluster.connect(ex, processor_class="processors.jet_tracks:JetTrackProcessor") as handle:
        assert handle.backend == "scheduler"
        assert handle.description["address"] == address
        assert handle.description["workers"] == len(local_client.scheduler_info()["workers"]) >= 1
        assert handle.client.submit(sum, [1, 2], pure=False).result(timeout=60) == 3
        assert handle.description["shipped_by_value"] == ["processors"]
    # the attached cluster keeps running
    assert local_client.submit(sum, [3, 4], pure=False).result(timeout=60) == 7


def test_scheduler_backend_without_workers_times_out(by_value_registry):
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as lc:
        ex = ExecutorConfig(backend="scheduler", scheduler=lc.scheduler_address, cluster={"wait_timeout": 1})
        t0 = time.monotonic()
        with pytest.raises(cluster.ClusterError, match="0 of 1 Dask worker"):
            with cluster.connect(ex):
                pass
        assert time.monotonic() - t0 < 30


def test_scheduler_backend_unreachable():
    ex = ExecutorConfig(backend="scheduler", scheduler="tcp://127.0.0.1:9", cluster={"connect_timeout": 2})
    with pytest.raises(cluster.ClusterError, match="cannot reach"):
        with cluster.connect(ex):
            pass


def test_processors_travel_by_value(tmp_path, by_value_registry):
    """A worker that cannot import `processors` still unpickles a shipped processor."""
    import cloudpickle

    assert cluster.ship_processors("processors.testing:NoopProcessor") == ["processors"]
    from processors.testing import NoopProcessor

    payload = tmp_path / "proc.pkl"
    payload.write_bytes(cloudpickle.dumps(NoopProcessor()))
    code = (
        "import sys, pickle\n"
        "sys.modules['processors'] = None  # importing processors now fails\n"
        f"p = pickle.loads(open({str(payload)!r}, 'rb').read())\n"
        "print(type(p).__name__, type(p).__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["NoopProcessor", "processors.testing"]


# -- a real Slurm -------------------------------------------------------------------------


@pytest.mark.service
def test_slurm_backend_runs_a_real_job(slurm_cluster, tmp_path, by_value_registry):
    def job_info():  # nested: cloudpickled by value (the worker cannot import this module)
        import os
        import socket

        return {
            "host": socket.gethostname(),
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "malloc": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
            "pid": os.getpid(),
        }

    logs = tmp_path / "joblogs"
    ex = ExecutorConfig(
        backend="slurm",
        cluster={
            "cores": 1,
            "memory": "1GB",
            "walltime": "00:10:00",
            "partition": slurm_cluster.partition,
            "scale": 1,
            "log_directory": str(logs),
            "wait_timeout": 120,
        },
    )
    t0 = time.monotonic()
    with cluster.connect(ex) as handle:
        started = time.monotonic() - t0
        desc = handle.description
        assert handle.backend == "slurm"
        assert desc["workers"] >= 1 and desc["queue"] == slurm_cluster.partition
        assert len(desc["job_ids"]) == 1
        queue = slurm_cluster.jobs()
        running = {j["id"]: j for j in queue if j["state"] == "RUNNING"}
        assert desc["job_ids"][0] in running, queue
        assert running[desc["job_ids"][0]]["name"] == "jettracks-worker"
        info = handle.client.submit(job_info, pure=False).result(timeout=60)
        assert info["job_id"] == desc["job_ids"][0]
        assert info["host"] == running[info["job_id"]]["nodes"] == slurm_cluster.node
        assert info["pid"] != os.getpid()
        assert info["malloc"] == str(cluster.MALLOC_TRIM_THRESHOLD)
        assert handle.client.submit(sum, [1, 2]).result(timeout=60) == 3
    assert started < 120
    # leaving the context cancels the job
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(
        j["id"] == desc["job_ids"][0] and j["state"] in ("RUNNING", "PENDING") for j in slurm_cluster.jobs()
    ):
        time.sleep(0.5)
    assert not any(j["id"] == desc["job_ids"][0] and j["state"] == "RUNNING" for j in slurm_cluster.jobs())
    assert any(logs.glob("jettracks-worker-*.err"))


# -- the configured processor's package travels by value (issue #10) ----------------------

MYANA_SELECTION = '''
from processors.jet_tracks import JetTrackProcessor

from .cuts import tighter


class MyProcessor(JetTrackProcessor):
    """An analysis package the workers do not have: it lives only on the client's sys.path."""

    def __init__(self, **options):
        super().__init__(**tighter(options))
'''

MYANA_CUTS = '''
def tighter(options):
    return {**options, "jet_pt_min": max(options.get("jet_pt_min", 0.0), 25.0)}
'''


@pytest.fixture
def myana(tmp_path, monkeypatch):
    """A package ``myana`` on this process's sys.path only; unregistered and forgotten afterwards."""
    import cloudpickle

    root = tmp_path / "client-only"
    pkg = root / "myana"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "selection.py").write_text(MYANA_SELECTION)
    (pkg / "cuts.py").write_text(MYANA_CUTS)
    monkeypatch.syspath_prepend(str(root))
    yield root
    if "myana" in cloudpickle.list_registry_pickle_by_value():
        cloudpickle.unregister_pickle_by_value(sys.modules["myana"])
    for name in [m for m in sys.modules if m == "myana" or m.startswith("myana.")]:
        del sys.modules[name]


def test_ship_processors_ships_the_configured_package(myana):
    import cloudpickle

    assert cluster.ship_processors("myana.selection:MyProcessor") == ["myana"]
    assert "myana" in cloudpickle.list_registry_pickle_by_value()
    # nothing to ship: no class, the framework itself, installed distributions, unknown packages
    assert cluster.ship_processors(None) == []
    assert cluster.ship_processors("jettracks.execution:RunResult") == []
    assert cluster.ship_processors("coffea.processor:ProcessorABC") == []
    assert cluster.ship_processors("no_such_pkg.mod:Cls") == []


def test_cluster_layer_names_no_analysis_package():
    sources = sorted((PROJECT / "src" / "jettracks" / "cluster").glob("*.py"))
    assert sources
    for path in sources:
        source = path.read_text()
        assert 'import_module("processors")' not in source and "import processors" not in source, path.name


def test_scheduler_backend_runs_a_processor_the_worker_cannot_import(myana, tmp_path, by_value_registry):
    """A `dask worker` started elsewhere (no myana on its path) runs myana's processor, shipped by value."""
    from distributed import LocalCluster

    from jettracks.execution import run_config
    from jettracks.generate import generate_dataset

    files = generate_dataset(tmp_path / "data", format="pfnano", n_files=2, events_per_file=40, seed=3,
                             pileup_candidates=50)
    elsewhere = tmp_path / "worker-cwd"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = subprocess.run([sys.executable, "-c", "import myana"], cwd=elsewhere, env=env, capture_output=True)
    assert check.returncode != 0  # the worker's interpreter cannot import it
    # tcp: the worker is another process (processes=False alone would give an inproc:// scheduler)
    with LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=":0") as lc:
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", lc.scheduler_address, "--nworkers", "1",
             "--nthreads", "1", "--no-dashboard", "--local-directory", str(elsewhere)],
            cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            cfg = {
                "name": "shipped",
                "datasets": {"qcd": {"files": [str(f) for f in files], "format": "pfnano"}},
                "processor": {"class": "myana.selection:MyProcessor", "options": {}},
                "executor": {"backend": "scheduler", "scheduler": lc.scheduler_address, "retries": 0,
                             "cluster": {"wait_timeout": 60}},
                "output": {"dir": str(tmp_path / "out"), "plots": False, "ml": False},
            }
            result = run_config(cfg, progress=False)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    rep = result.report
    assert rep["cluster"]["backend"] == "scheduler"
    assert rep["cluster"]["shipped_by_value"] == ["myana"]
    assert rep["status"] == "ok" and rep["chunks_failed"] == 0
    assert rep["entries"]["processed"] == rep["entries"]["expected"] == 80


@pytest.mark.service
def test_slurm_backend_runs_a_processor_the_job_cannot_import(myana, slurm_cluster, tmp_path, by_value_registry):
    """The same on a real Slurm: the batch job's worker gets myana by value."""
    from jettracks.execution import run_config
    from jettracks.generate import generate_dataset

    files = generate_dataset(tmp_path / "data", format="pfnano", n_files=2, events_per_file=40, seed=3,
                             pileup_candidates=50)
    cfg = {
        "name": "shipped-slurm",
        "datasets": {"qcd": {"files": [str(f) for f in files], "format": "pfnano"}},
        "processor": {"class": "myana.selection:MyProcessor", "options": {}},
        "executor": {"backend": "slurm", "retries": 0, "cluster": {
            "cores": 1, "memory": "1GB", "walltime": "00:10:00", "partition": slurm_cluster.partition,
            "scale": 1, "log_directory": str(tmp_path / "joblogs"), "wait_timeout": 120}},
        "output": {"dir": str(tmp_path / "out"), "plots": False, "ml": False},
    }
    rep = run_config(cfg, progress=False).report
    assert rep["cluster"]["backend"] == "slurm" and len(rep["cluster"]["job_ids"]) == 1
    assert rep["cluster"]["shipped_by_value"] == ["myana"]
    assert rep["status"] == "ok" and rep["entries"]["processed"] == rep["entries"]["expected"] == 80


def test_jobqueue_backends_keep_the_ctrl_c_handler(tmp_path):
    """dask_jobqueue.runner sets SIGINT to sys.exit() at import: Ctrl-C must still be KeyboardInterrupt."""
    code = (
        "import signal\n"
        "from jettracks.config import parse_config\n"
        "from jettracks.cluster import jobqueue\n"
        "before = signal.getsignal(signal.SIGINT)\n"
        "parse_config({'datasets': {'a': {'files': ['x.root']}},\n"
        "              'executor': {'backend': 'slurm', 'cluster': {'cores': 1, 'memory': '1GB'}}})\n"
        "jobqueue._job_class('slurm')\n"
        "import dask_jobqueue.runner  # already imported: no second replacement\n"
        "assert signal.getsignal(signal.SIGINT) is before is signal.default_int_handler, signal.getsignal(signal.SIGINT)\n"
        "try:\n"
        "    signal.raise_signal(signal.SIGINT)\n"
        "except KeyboardInterrupt:\n"
        "    print('KeyboardInterrupt')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "KeyboardInterrupt", res.stderr[-2000:]
