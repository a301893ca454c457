"""The format detection of each dataset's first file is kept in the file-metadata cache.

A rerun must not open the file again for it, and must never reuse a detection that no
longer holds: a rewritten file (another size or mtime), ``refresh``, or another set of
readers (``readers.registry_tag``) detects again. The detection found from the cache
equals the one read from the file.
"""

from __future__ import annotations

import importlib
import os
import shutil

import pytest

from jettracks import readers
from jettracks.config import load_config
from jettracks.datasets import prepare_datasets

# The module (``readers.detect`` is also a function of the package, which hides the submodule).
detect_module = importlib.import_module("jettracks.readers.detect")


@pytest.fixture
def opened(monkeypatch):
    """Files opened by detection (the real open, counted)."""
    names: list[str] = []
    real = detect_module.open_file

    def counting(source, **options):
        names.append(str(source))
        return real(source, **options)

    monkeypatch.setattr(detect_module, "open_file", counting)
    return names


def _cfg(files, fmt="auto"):
    return load_config({
        "name": "detect",
        "datasets": {"qcd": {"files": [str(f) for f in files], "format": fmt}},
        "processor": {"class": "processors.jet_tracks:JetTrackProcessor"},
        "executor": {"backend": "serial"},
        "output": {"dir": "unused"},
    })


def _prepare(files, fmt="auto", **kw):
    from processors.jet_tracks import JetTrackProcessor

    plan = prepare_datasets(_cfg(files, fmt), JetTrackProcessor(), **kw)
    return plan.formats["qcd"], plan.fileset["qcd"]["treename"], plan.branches


@pytest.mark.parametrize("fmt", ["pfnano", "jetntuple"])
def test_rerun_detects_from_the_cache_and_changed_files_again(small_sample, tmp_path, monkeypatch, opened, fmt):
    monkeypatch.setenv("JETTRACKS_CACHE_DIR", str(tmp_path / "cache"))
    files = [str(shutil.copy(f, tmp_path / f.name)) for f in small_sample[fmt]]

    first = _prepare(files)
    assert first[0] == fmt and opened == [files[0]]
    opened.clear()
    assert _prepare(files) == first  # from the cache: equal, and no file opened
    assert opened == []

    assert _prepare(files, refresh=True) == first  # refresh: read again
    assert opened == [files[0]]
    opened.clear()

    # The first file rewritten as the other format: another size and mtime, detected anew.
    other = "jetntuple" if fmt == "pfnano" else "pfnano"
    shutil.copy(small_sample[other][0], files[0])
    os.utime(files[0], (1_000_000_000, 1_000_000_000))
    again = _prepare(files)
    assert opened == [files[0]] and again[0] == other


def test_a_stored_detection_is_tied_to_the_readers(small_sample, tmp_path, monkeypatch, opened):
    """Another set of readers (another jettracks version) does not take the stored detection."""
    monkeypatch.setenv("JETTRACKS_CACHE_DIR", str(tmp_path / "cache"))
    files = [str(shutil.copy(f, tmp_path / f.name)) for f in small_sample["pfnano"]]
    _prepare(files)
    opened.clear()
    monkeypatch.setattr(readers, "registry_tag", lambda: "another-set-of-readers")
    assert _prepare(files)[0] == "pfnano"
    assert opened == [files[0]]


def test_an_unwritable_cache_still_detects(small_sample, tmp_path, monkeypatch, opened):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("JETTRACKS_CACHE_DIR", str(blocker / "cache"))
    files = [str(f) for f in small_sample["pfnano"]]
    assert _prepare(files)[0] == "pfnano"
    assert _prepare(files)[0] == "pfnano"
    assert opened == [files[0]] * 2  # nothing stored, read each time
