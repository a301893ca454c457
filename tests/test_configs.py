"""Every YAML under configs/ is a valid run config naming known formats; the CMS
open-data file indexes have the promised shape; the real-samples config detects
each of its files' formats."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from jettracks import readers
from jettracks.config import load_config
from jettracks.execution import resolve_files

PROJECT = Path(__file__).resolve().parents[1]
CONFIGS = PROJECT / "configs"
ALL_YAML = sorted(p for ext in ("*.yaml", "*.yml") for p in CONFIGS.rglob(ext))


def test_configs_exist():
    names = {p.name for p in ALL_YAML}
    for name in ("cms_opendata_12100_qcd.yaml", "cms_opendata_pfnano_2016.yaml", "cms_real_samples.yaml"):
        assert name in names


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_config_parses_with_known_formats(path):
    cfg = load_config(path)
    assert cfg.datasets
    known = ("auto", *readers.available())
    for name, ds in cfg.datasets.items():
        assert ds.format in known, f"{path.name}: datasets.{name}.format {ds.format!r}"
        if ds.files_from:
            index = Path(ds.files_from)
            index = index if index.is_absolute() else path.parent / index
            assert index.is_file(), f"{path.name}: datasets.{name}.files_from {index} is missing"


def _index_lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_record_12100_index_lists_the_122_files():
    cfg = load_config(CONFIGS / "cms_opendata_12100_qcd.yaml")
    (name, ds), = cfg.datasets.items()
    assert ds.format == "jetntuple" and ds.metadata.get("is_mc") is True
    files = resolve_files(name, ds, base_dir=cfg.base_dir)  # files_from relative to configs/
    base = (
        "root://eospublic.cern.ch//eos/opendata/cms/datascience/JetNtupleProducerTool/"
        "JetNTuple_QCD_RunII_13TeV_MC/JetNtuple_RunIISummer16_13TeV_MC_{}.root"
    )
    assert files == [base.format(i) for i in range(1, 123)]
    text = (CONFIGS / "cms_opendata_12100_qcd_files.txt").read_text()
    assert "file-indexes/JetNTuple_QCD_RunII_13TeV_MC_root_file_index.txt" in text


def test_record_12100_index_resolves_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(CONFIGS / "cms_opendata_12100_qcd.yaml")
    (name, ds), = cfg.datasets.items()
    assert len(resolve_files(name, ds, base_dir=cfg.base_dir)) == 122


def test_pfnano_2016_index_uses_open_data_paths():
    cfg = load_config(CONFIGS / "cms_opendata_pfnano_2016.yaml")
    (name, ds), = cfg.datasets.items()
    assert ds.format == "pfnano" and ds.metadata.get("is_mc") is False
    index = CONFIGS / ds.files_from
    lines = _index_lines(index)
    assert lines
    pattern = re.compile(r"^root://eospublic\.cern\.ch//eos/opendata/cms/\S+\.root$")
    assert all(pattern.match(u) for u in lines), lines
    assert resolve_files(name, ds, base_dir=cfg.base_dir) == lines
    # The placeholder says so.
    assert "replace" in index.read_text().lower()


def test_real_samples_config_detects_each_format(monkeypatch, tmp_path):
    cfg = load_config(CONFIGS / "cms_real_samples.yaml")
    assert {n: ds.format for n, ds in cfg.datasets.items()} == {
        "pfnano": "auto", "treemaker": "auto", "nano_tt_v15": "auto"
    }
    for ds in cfg.datasets.values():
        assert ds.files == [f"../../shared/data/cms/{Path(ds.files[0]).name}"]
    monkeypatch.chdir(tmp_path)  # paths are relative to the config file (configs/), not the cwd
    named = [CONFIGS / ds.files[0] for ds in cfg.datasets.values()]  # where the config points
    if not all(p.is_file() for p in named):
        pytest.skip(f"real CMS files absent where the config points: {named[0].parent.resolve()}")
    expected = {"pfnano": ("pfnano", "Events"), "treemaker": ("treemaker", "PreSelection"),
                "nano_tt_v15": ("nanoaod", "Events")}
    for name, ds in cfg.datasets.items():
        (path,) = resolve_files(name, ds, base_dir=cfg.base_dir)
        assert os.path.isfile(path)
        if name == "nano_tt_v15":  # 2,656 branches: ~1-2 s to open; format checked elsewhere
            continue
        assert readers.detect_tree(path) == expected[name]
