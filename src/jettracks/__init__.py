"""jettracks: columnar, distributed jet + track (dxy) feature extraction for CMS data.

Notebook use::

    from distributed import Client
    import jettracks
    result = jettracks.run("configs/demo.yaml", client=Client())
    result.hists["track_dxy"]

Units everywhere: GeV, cm, radians.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_config", "run"]

if TYPE_CHECKING:
    from .execution import RunResult


def load_config(source):
    """Read and validate a run config (see :mod:`jettracks.config`)."""
    from .config import load_config as _load

    return _load(source)


def run(config: Any, *, client: Any = None, **overrides: Any) -> RunResult:
    """Run a config (path, mapping or RunConfig) and return a :class:`~jettracks.execution.RunResult`.

    Args:
        config: path to a YAML config, a mapping, or a :class:`~jettracks.config.RunConfig`.
        client: an existing ``distributed.Client`` (notebooks); otherwise the config's
            executor backend starts or attaches to a cluster.
        **overrides: keyword overrides of :func:`jettracks.execution.run_config`
            (``workers``, ``chunksize``, ``max_files``, ``output_dir``, ...).
    """
    from .execution import run_config

    return run_config(config, client=client, **overrides)
