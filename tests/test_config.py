"""Config loading: valid shapes parse; bad ones give one line naming the key (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jettracks.config import ConfigError, load_config, parse_config

GOOD = {
    "name": "demo",
    "datasets": {
        "qcd": {"files": ["data/demo/pfnano_*.root"], "format": "pfnano", "metadata": {"is_mc": True}}
    },
    "processor": {
        "class": "processors.jet_tracks:JetTrackProcessor",
        "options": {"cone_dr": 0.5, "jet_pt_min": 30.0, "jet_abs_eta_max": 2.5, "track_pt_min": 1.0},
    },
    "executor": {"backend": "local", "workers": 2, "chunksize": 100000},
    "output": {"dir": "outputs/demo"},
}


def test_issue_shape_parses():
    cfg = parse_config(GOOD)
    assert cfg.datasets["qcd"].format == "pfnano"
    assert cfg.processor.class_ == "processors.jet_tracks:JetTrackProcessor"
    assert cfg.executor.workers == 2


def _with(path, value):
    import copy

    data = copy.deepcopy(GOOD)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("datasets", "qcd", "format"), "nanoaod_v99", "datasets.qcd.format"),
        (("datasets", "qcd", "colour"), "red", "datasets.qcd.colour"),
        (("executor", "chunksize"), "lots", "executor.chunksize"),
        (("executor", "workers"), 0, "executor.workers"),
        (("executor", "backend"), "kubernetes", "executor.backend"),
        (("processor", "class"), "no_colon_here", "processor.class"),
        (("datasets",), KeyError, "datasets"),
        (("datasets",), {}, "datasets"),
        (("output", "dir"), ["a", "b"], "output.dir"),
        (("executor", "cache"), "s3://bucket/cache", "executor.cache"),
    ],
)
def test_bad_key_named_in_one_line(path, value, key):
    with pytest.raises(ConfigError) as err:
        parse_config(_with(path, value))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(key), msg


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndatasets: {qcd: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(p) in str(err.value) and "line" in str(err.value)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True, timeout=120)


def test_cli_bad_config_exit_2_no_traceback(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(_with(("executor", "chunksize"), -5)))
    proc = _cli("run", str(p))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "executor.chunksize" in lines[0]


def test_cli_missing_config_exit_2(tmp_path):
    proc = _cli("run", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2 and "cannot read config" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_help_everywhere():
    for args in (["--help"], ["run", "--help"], ["generate", "--help"], ["inspect", "--help"]):
        proc = _cli(*args)
        assert proc.returncode == 0 and "usage" in proc.stdout.lower()


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.sampled_from(
        [("name",), ("datasets",), ("datasets", "qcd"), ("datasets", "qcd", "files"),
         ("datasets", "qcd", "format"), ("datasets", "qcd", "metadata"), ("processor",),
         ("processor", "options"), ("executor",), ("executor", "chunksize"), ("executor", "workers"),
         ("output",), ("output", "dir")]
    ),
    value=yaml_values,
)
def test_any_wrong_value_is_config_error_or_valid(key, value):
    try:
        parse_config(_with(key, value))
    except ConfigError as err:
        assert "\n" not in str(err)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200))
def test_any_text_as_yaml_is_config_error_or_valid(tmp_path_factory, text):
    p = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    p.write_text(text, encoding="utf-8")
    try:
        load_config(p)
    except ConfigError as err:
        assert "\n" not in str(err)


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "x" * 101, "a\nb"])
def test_dataset_names_cannot_escape_output_dir(name):
    data = _with(("datasets",), {name: GOOD["datasets"]["qcd"]})
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert str(err.value).startswith("datasets") and "\n" not in str(err.value)


def test_run_writes_only_inside_output_dir(cms_dir, tmp_path):
    from jettracks.execution import run_config

    out = tmp_path / "run" / "out"
    cfg = {
        "name": "inside",
        "datasets": {"tt.v1-x": {"files": [str(cms_dir / "pfnano.root")], "format": "pfnano"}},
        "executor": {"backend": "serial"},
        "output": {"dir": str(out)},
    }
    before = set(tmp_path.rglob("*"))
    run_config(cfg, progress=False)
    written = set(tmp_path.rglob("*")) - before
    assert {p for p in written if out not in p.parents} == {out.parent, out}  # made by the run; all else inside


# -- duplicate keys, non-finite numbers (issue #9) ----------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: a\ndatasets:\n  qcd: {files: [a.root]}\n  qcd: {files: [b.root]}\n",
            "datasets.qcd: duplicate key (line 4; first at line 3)",
        ),
        ("name: a\nname: b\ndatasets: {qcd: {files: [a.root]}}\n", "name: duplicate key (line 2; first at line 1)"),
        (
            "datasets: {qcd: {files: [a.root]}}\nexecutor:\n  cluster:\n    scale: 1\n    scale: 2\n",
            "executor.cluster.scale: duplicate key (line 5; first at line 4)",
        ),
        (
            "datasets:\n  qcd:\n    files: [a.root]\n    metadata: [{x: 1, x: 2}]\n",
            "datasets.qcd.metadata.0.x: duplicate key (line 4; first at line 4)",
        ),
    ],
)
def test_duplicate_yaml_keys_are_errors(tmp_path, text, expected):
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value) == expected


def test_equal_values_under_different_keys_are_fine(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text("datasets:\n  qcd: &d {files: [a.root]}\n  qcd2: *d\n  '1': *d\n")
    assert set(load_config(p).datasets) == {"qcd", "qcd2", "1"}
    p.write_text("datasets:\n  qcd: {files: [a.root]}\n  \"qcd\": {files: [b.root]}\n")  # quoting is no escape
    with pytest.raises(ConfigError, match=r"^datasets\.qcd: duplicate key \(line 3; first at line 2\)$"):
        load_config(p)


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("processor", "options", "cone_dr"), float("inf"), "processor.options.cone_dr"),
        (("processor", "options", "jet_pt_min"), float("nan"), "processor.options.jet_pt_min"),
        (("processor", "options", "track_pt_min"), float("-inf"), "processor.options.track_pt_min"),
        (("datasets", "qcd", "metadata", "xsec"), float("nan"), "datasets.qcd.metadata.xsec"),
        (("processor", "options", "bins"), [0.0, 1.0, float("inf")], "processor.options.bins.2"),
    ],
)
def test_non_finite_numbers_anywhere_are_errors(path, value, key):
    with pytest.raises(ConfigError) as err:
        parse_config(_with(path, value))
    assert str(err.value).startswith(f"{key}: must be a finite number; got ")


def test_non_finite_from_yaml_text(tmp_path):
    p = tmp_path / "inf.yaml"
    p.write_text(yaml.safe_dump(GOOD).replace("cone_dr: 0.5", "cone_dr: .inf"))
    with pytest.raises(ConfigError, match=r"^processor\.options\.cone_dr: must be a finite number; got inf$"):
        load_config(p)


# -- executor.cluster: one options model per backend (issue #10) --------------------------


def test_every_backend_has_its_options_model():
    from jettracks import cluster

    models = {name: cluster._BACKENDS[name].options for name in cluster.available()}
    assert issubclass(models["local"], cluster.LocalOptions)
    assert issubclass(models["scheduler"], cluster.SchedulerOptions)
    assert issubclass(models["gateway"], cluster.GatewayOptions)
    for name in cluster.JOBQUEUE_BACKENDS:
        assert issubclass(models[name], cluster.JobqueueOptions)
    assert issubclass(models["htcondor"], cluster.HTCondorOptions)
    assert all(models[name].backend == name for name in models)


def test_cluster_option_defaults_are_named_once():
    from jettracks import cluster
    from jettracks.config import ExecutorConfig

    def opts(backend, **kw):
        return cluster.backend_options(ExecutorConfig(backend=backend, **kw))

    assert opts("scheduler", scheduler="tcp://h:1").wait_timeout == cluster.ATTACH_WAIT_TIMEOUT_S
    assert opts("scheduler", scheduler="tcp://h:1").connect_timeout == cluster.CONNECT_TIMEOUT_S
    for backend in (*cluster.JOBQUEUE_BACKENDS, "gateway"):
        assert opts(backend).wait_timeout == cluster.WAIT_TIMEOUT_S
        assert opts(backend).min_workers == 1
    assert opts("local").dashboard_address == ":0"
    # explicit values win
    assert opts("slurm", cluster={"wait_timeout": 12}).wait_timeout == 12


def test_cli_override_validates_cluster_options_for_the_new_backend():
    from jettracks.config import apply_overrides

    cfg = parse_config(_with(("executor",), {"backend": "slurm", "cluster": {"cores": 4, "scale": 2}}))
    with pytest.raises(ConfigError, match=r"^executor\.cluster\.cores: unknown key for backend 'local' \(and 1 more\)$"):
        apply_overrides(cfg, backend="local")
    assert apply_overrides(cfg, backend="serial").executor.backend == "serial"  # serial ignores cluster options
    assert apply_overrides(cfg, backend="pbs").executor.backend == "pbs"
    with pytest.raises(ConfigError, match=r"^executor\.scheduler: backend 'scheduler' needs"):
        apply_overrides(parse_config(GOOD), backend="scheduler")
    moved = apply_overrides(parse_config(GOOD), scheduler="tcp://10.0.0.1:8786")
    assert (moved.executor.backend, moved.executor.scheduler) == ("scheduler", "tcp://10.0.0.1:8786")
