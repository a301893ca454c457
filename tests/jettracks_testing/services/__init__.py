"""Real local services for tests and benchmarks (standard library only).

* :mod:`.xrootd` -- an XRootD server on loopback (Debian ``xrootd-server``).
* :mod:`.slurm` -- a single-node Slurm with munge (root only).
* ``install.sh`` -- installs their Debian packages when root and missing (``make services``).

Each module also runs as a script: ``python tests/jettracks_testing/services/xrootd.py start DIR``.
"""
