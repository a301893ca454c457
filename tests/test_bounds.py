"""Bounds of the executor keys and of the cluster options: the edge passes, one past it fails naming the key."""

from __future__ import annotations

import copy

import pytest

from jettracks import cluster
from jettracks.config import (
    MAX_RETRIES,
    MAX_WORKERS,
    ConfigError,
    apply_overrides,
    is_scheduler_address,
    parse_config,
)

BASE = {
    "datasets": {"qcd": {"files": ["data/*.root"], "format": "pfnano"}},
    "executor": {"backend": "local"},
}


def _cfg(**executor):
    data = copy.deepcopy(BASE)
    data["executor"].update(executor)
    return parse_config(data)


def _error(**executor) -> str:
    with pytest.raises(ConfigError) as err:
        _cfg(**executor)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    ("key", "ok", "bad"),
    [
        ("workers", MAX_WORKERS, MAX_WORKERS + 1),
        ("workers", 1, 0),
        ("retries", MAX_RETRIES, MAX_RETRIES + 1),
        ("retries", 0, -1),
        ("threads_per_worker", 256, 257),
        ("xrootd_timeout", 3600, 3601),
    ],
)
def test_executor_bounds(key, ok, bad):
    assert getattr(_cfg(**{key: ok}).executor, key) == ok
    assert _error(**{key: bad}).startswith(f"executor.{key}: ")


def test_huge_values_from_the_issue():
    assert _error(workers=1_000_000).startswith("executor.workers: Input should be less than or equal to 1024")
    assert _error(retries=1_000_000).startswith("executor.retries: Input should be less than or equal to 10")


@pytest.mark.parametrize("value", ["2GB", "1.5GiB", "512 MB", "auto", "1000000"])
def test_memory_limit_accepts_sizes(value):
    assert _cfg(memory_limit=value).executor.memory_limit == value


@pytest.mark.parametrize("value", ["lots", "0", "-1GB", "2 lots", ""])
def test_memory_limit_rejects_non_sizes(value):
    assert _error(memory_limit=value).startswith("executor.memory_limit: ")


@pytest.mark.parametrize(
    "address",
    ["tcp://127.0.0.1:8786", "tcp://node-1.cluster.example.org:1", "tls://host:65535", "ws://[::1]:8786",
     "wss://h:443", "inproc://10.0.0.1/1234/1"],
)
def test_scheduler_addresses_accepted(address):
    assert is_scheduler_address(address)
    assert _cfg(backend="scheduler", scheduler=address).executor.scheduler == address


@pytest.mark.parametrize(
    "address",
    ["not-an-address", "127.0.0.1:8786", "tcp://127.0.0.1", "tcp://host:0", "tcp://host:65536", "http://host:80",
     "tcp://:8786", "tcp://host:port", "inproc://", ""],
)
def test_scheduler_addresses_rejected(address):
    assert not is_scheduler_address(address)
    assert _error(backend="scheduler", scheduler=address).startswith("executor.scheduler: ")


@pytest.mark.parametrize(
    ("backend", "options", "key"),
    [
        ("slurm", {"adapt": {"minimum": -1}}, "executor.cluster.adapt.minimum"),
        ("slurm", {"adapt": {"maximum": 1025}}, "executor.cluster.adapt.maximum"),
        ("slurm", {"scale": 0}, "executor.cluster.scale"),
        ("slurm", {"scale": 1025}, "executor.cluster.scale"),
        ("pbs", {"cores": 0}, "executor.cluster.cores"),
        ("sge", {"wait_timeout": 0}, "executor.cluster.wait_timeout"),
        ("sge", {"wait_timeout": 86_401}, "executor.cluster.wait_timeout"),
        ("lsf", {"min_workers": -1}, "executor.cluster.min_workers"),
        ("scheduler", {"connect_timeout": 0}, "executor.cluster.connect_timeout"),
        ("local", {"scheduler_port": 70000}, "executor.cluster.scheduler_port"),
        ("gateway", {"adapt": {"minimum": 3, "maximum": 2}}, "executor.cluster.adapt"),
    ],
)
def test_cluster_option_bounds(backend, options, key):
    extra = {"scheduler": "tcp://127.0.0.1:8786"} if backend == "scheduler" else {}
    msg = _error(backend=backend, cluster=options, **extra)
    assert msg.startswith(f"{key}: "), msg


def test_cluster_option_edges_pass():
    cfg = _cfg(backend="slurm", cluster={"adapt": {"minimum": 0, "maximum": 1024}, "wait_timeout": 86_400})
    opts = cluster.backend_options(cfg.executor)
    assert (opts.adapt.minimum, opts.adapt.maximum, opts.wait_timeout) == (0, 1024, 86_400)


def test_cli_overrides_are_bounded_too():
    cfg = _cfg()
    assert apply_overrides(cfg, workers=MAX_WORKERS).executor.workers == MAX_WORKERS
    with pytest.raises(ConfigError, match=r"^executor\.workers: "):
        apply_overrides(cfg, workers=MAX_WORKERS + 1)
    assert cfg.executor.workers is None  # the original is not modified
