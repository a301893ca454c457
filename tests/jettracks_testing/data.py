"""Where the real CMS files live: the one locator the tests and benchmarks use.

The real files (``pfnano.root``, ``treemaker.root``, ``nano_tt_v15.root``: small
files written by CMS software) are not part of the repository. They are looked for,
in this order, in ``$JETTRACKS_SHARED/data/cms``, in ``$JETTRACKS_SHARED`` itself,
and in ``data/cms`` of the directory ``shared`` beside the project root. Tests use
:func:`cms_data_dir` (module level, e.g. for ``skipif``) or the ``cms_dir`` fixture
of :mod:`jettracks_testing.plugin` (skips when absent); nothing else spells these paths.

Standard library only (the benchmarks import it without pytest).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
ENV_VAR = "JETTRACKS_SHARED"
#: A directory counts as the CMS data directory when it holds this file.
MARKER = "pfnano.root"

__all__ = ["ENV_VAR", "MARKER", "PROJECT", "absent_reason", "cms_data_candidates", "cms_data_dir", "reference_file"]


def _shared_roots() -> list[Path]:
    roots = []
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        roots.append(Path(env))
    roots.append(PROJECT.parent / "shared")
    return roots


def cms_data_candidates() -> list[Path]:
    """The directories :func:`cms_data_dir` tries, in order (for messages)."""
    out: list[Path] = []
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        out += [Path(env) / "data" / "cms", Path(env)]
    out.append(PROJECT.parent / "shared" / "data" / "cms")
    return out


def cms_data_dir() -> Path | None:
    """The directory of the real CMS files (the first candidate holding ``pfnano.root``), else None."""
    for cand in cms_data_candidates():
        if (cand / MARKER).is_file():
            return cand
    return None


def reference_file(name: str) -> Path | None:
    """``reference/<name>`` beside the CMS data (``$JETTRACKS_SHARED`` or ``../shared``), else None."""
    for root in _shared_roots():
        path = root / "reference" / name
        if path.is_file():
            return path
    return None


def absent_reason() -> str:
    """One line saying where the real CMS files were looked for."""
    tried = ", ".join(str(p) for p in cms_data_candidates())
    return f"real CMS files absent: no {MARKER} in {tried} (set ${ENV_VAR})"
