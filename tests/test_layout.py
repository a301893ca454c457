"""Layout: every module imports on its own (no import cycles), and the README's layout lists it.

Each module is imported in a fresh interpreter: a cycle that an earlier import
would hide (``a`` imports ``b`` imports ``a``) fails here.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = {"jettracks": PROJECT / "src" / "jettracks", "runner": PROJECT / "src" / "runner",
            "processors": PROJECT / "processors"}


def _modules() -> list[str]:
    out = []
    for name, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = [name, *rel.parts]
            if parts[-1] == "__main__":
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out.append(".".join(parts))
    return out


MODULES = _modules()


def test_every_module_imports_alone():
    def load(module: str) -> tuple[str, int, str]:
        res = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True,
                             timeout=300, cwd=PROJECT.parent)
        return module, res.returncode, res.stderr.strip().splitlines()[-1:] and res.stderr.strip().splitlines()[-1]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = [(m, err) for m, rc, err in pool.map(load, MODULES) if rc != 0]
    assert failed == [], failed


def test_command_line_help_works_from_anywhere(tmp_path):
    res = subprocess.run([sys.executable, "-m", "runner", "--help"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0 and "run" in res.stdout and "inspect" in res.stdout


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("jettracks.")])
def test_readme_layout_lists_every_module(module):
    readme = (PROJECT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    leaf = module.rsplit(".", 1)[-1]
    is_package = (PACKAGES["jettracks"] / Path(*module.split(".")[1:]) / "__init__.py").is_file()
    assert (f"{leaf}/" if is_package else f"{leaf}.py") in layout, f"README layout does not mention {module}"
