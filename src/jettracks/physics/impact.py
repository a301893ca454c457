"""What counts as a measured transverse impact parameter: one definition for the whole project.

The cut flow (``tracks_valid_dxy``), the dxy histograms (both engines) and the ML
columns (``n_tracks_valid_dxy``, ``track_dxy``, ``max_abs_dxy``, ...) all use
:func:`valid_dxy` and :func:`dxy_significance`, so they cannot disagree.

Definition (units: cm):

- **valid dxy** ⇔ ``dxy`` is finite **and** ``dxy_err > 0``.

  - ``dxy_err <= 0`` is "no measurement": PFNano fills ``d0 = d0Err = -1`` for
    candidates without track details (all neutrals, many low-pT charged); TreeMaker
    and event-level ntuples use non-positive errors the same way.
  - ``dxy_err`` NaN is "no measurement" (``NaN > 0`` is false): formats without
    impact parameters (JetNtuple) carry NaN.
  - ``dxy`` NaN or ±inf is never a measurement, whatever the error says.
  - ``dxy_err = +inf`` passes: "measured value, unknown error". The NanoAOD reader
    sets it for ``IsoTrack_dxy``, which has no uncertainty branch (no ``IsoTrack_dxyErr``).

- **dxy significance** = ``dxy / dxy_err`` where the dxy is valid **and** its
  error finite; NaN elsewhere (no meaningful significance without an error).

Both functions take numpy or awkward arrays of any nesting (they use only
element-wise ufuncs) and return the same kind.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["dxy_significance", "valid_dxy"]


def valid_dxy(dxy: Any, dxy_err: Any) -> Any:
    """Boolean mask: the track has a measured dxy (finite ``dxy`` and ``dxy_err > 0``, cm)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(dxy) & (dxy_err > 0)


def dxy_significance(dxy: Any, dxy_err: Any) -> Any:
    """``dxy / dxy_err`` (dimensionless) where the dxy is valid and ``dxy_err`` finite, else NaN."""
    has_sig = valid_dxy(dxy, dxy_err) & np.isfinite(dxy_err)
    try:
        import awkward as ak

        if isinstance(has_sig, ak.Array):
            safe_err = ak.where(has_sig, dxy_err, 1.0)
            return ak.where(has_sig, dxy / safe_err, np.nan)
    except ImportError:  # pragma: no cover - awkward ships with the project
        pass
    dxy = np.asarray(dxy, dtype=np.float64)
    dxy_err = np.asarray(dxy_err, dtype=np.float64)
    out = np.full(np.broadcast(dxy, dxy_err).shape, np.nan, dtype=np.float64)
    np.divide(dxy, dxy_err, out=out, where=has_sig)
    return out
