"""jettracks' test support: the pytest plugin and the code it shares with the benchmarks.

* :mod:`jettracks_testing.plugin` -- the pytest plugin (fixtures ``xrootd_server``,
  ``slurm_cluster``, ``cms_dir``; the ``JETTRACKS_REQUIRE_SERVICES`` rule), registered
  by ``tests/conftest.py``.
* :mod:`jettracks_testing.services` -- real local services: ``xrootd`` (XRootD
  server), ``slurm`` (single-node Slurm), ``install.sh`` (their Debian packages).
* :mod:`jettracks_testing.data` -- :func:`~jettracks_testing.data.cms_data_dir`, the
  one locator of the real CMS files.

Importable as ``jettracks_testing`` once ``tests/`` is on ``sys.path`` (conftest.py
and the scripts in ``scripts/`` put it there). Only :mod:`.plugin` needs pytest.
"""
