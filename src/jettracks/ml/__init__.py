"""Using a finalized ML dataset: streaming batches, standardisation, weights, tool configs.

- :mod:`.batches`: :func:`batches`, numpy dicts in bounded memory (torch, JAX, scikit-learn);
- :mod:`.stats`: per-feature standardisation statistics (training split);
- :mod:`.weights`: (pT, |η|) flattening / reference weights and class weights;
- :mod:`.cards`: the Hugging Face dataset card and the weaver-core data config.

Writing the dataset (parts, finalize) is :mod:`jettracks.io.mldata`'s job.
"""

from __future__ import annotations

from .batches import batches, load_manifest

__all__ = ["batches", "load_manifest"]
