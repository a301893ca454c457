"""The physics: pure numpy/numba code that knows nothing of files or clusters.

- :mod:`.kernels`: numba ΔR association kernels over flat arrays + offsets;
- :mod:`.association`: ΔR-cone vs constituent association comparison;
- :mod:`.flavour`: jet flavour definitions and labels;
- :mod:`.impact`: the transverse impact parameter dxy (cm): validity and significance.
"""
