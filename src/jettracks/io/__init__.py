"""Reading lists of files and writing the run's outputs: everything that touches a file system.

- :mod:`.files`: file lists (globs, index files, path resolution, deduplication);
- :mod:`.xrootd`: XRootD URLs, client settings, server-side globs, uproot source;
- :mod:`.cache`: the entries-per-file cache;
- :mod:`.atomic`: the one atomic write;
- :mod:`.rundir`: the run directory (marker, lock, overwrite rules, fingerprint);
- :mod:`.checkpoints`: per-chunk checkpoints;
- :mod:`.outputs`: histograms, plots, ``report.json``;
- :mod:`.mldata`: the per-jet ML dataset (Parquet parts, manifest, HDF5).
"""
