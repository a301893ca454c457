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

- **lifetime-signed dxy** (:func:`signed_dxy`, ``track_sdxy``, cm):
  ``|dxy| · sign(dxy · sin(φ_jet − φ_trk))``, the sign of the projection of the track's
  point of closest approach onto the jet axis in the transverse plane (derivation below);
  positive for tracks from decays in flight along the jet, symmetric for prompt tracks.
  Its significance ``track_sdxy_sig`` = sdxy / σ(dxy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["dxy_significance", "lifetime_sign", "signed_dxy", "significance", "valid_dxy"]


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


# --------------------------------------------------------------------------- lifetime sign
#
# Derivation (units: cm, radians). Every reader delivers ``dxy`` in the CMS sign
# convention (the common layout, :mod:`jettracks.readers.base`; Delphes' ``D0`` is
# converted by its reader):
#
#     dxy = (−(vx − pvx)·py + (vy − pvy)·px) / pT = −x·sin φ_trk + y·cos φ_trk
#
# with (x, y) any point of the track relative to the primary vertex and φ_trk the
# track's azimuth (straight line near the vertex). The point of closest approach (PCA)
# to the primary vertex in the transverse plane is (x, y) minus its component along
# the track direction u = (cos φ_trk, sin φ_trk):
#
#     PCA = dxy · n,   n = (−sin φ_trk, cos φ_trk)   (u turned by +90°; |PCA| = |dxy|).
#
# Its projection onto the jet axis j = (cos φ_jet, sin φ_jet):
#
#     PCA · j = dxy · (−sin φ_trk cos φ_jet + cos φ_trk sin φ_jet) = dxy · sin(φ_jet − φ_trk).
#
# The lifetime-signed transverse impact parameter is |dxy| with the sign of that
# projection:
#
#     sdxy = |dxy| · sign(dxy · sin(φ_jet − φ_trk))      (sign(0) taken as +).
#
# A track from a decay at transverse distance L along φ_flight ≈ φ_jet has
# dxy = L·sin(φ_flight − φ_trk), so dxy·sin(φ_jet − φ_trk) ≈ L·sin²(…) ≥ 0: decay
# products are positive (up to resolution and the flight direction's spread around
# the jet axis); prompt tracks get a sign from resolution alone: symmetric.
# The significance is sdxy / σ(dxy), defined where :func:`dxy_significance` is.


def lifetime_sign(dxy: Any, trk_phi: Any, jet_phi: Any) -> np.ndarray:
    """``+1``/``-1`` (float64): the sign of ``dxy · sin(φ_jet − φ_trk)`` (0 counts as ``+``).

    NaN where ``dxy`` or an angle is not finite. ``dxy`` in the CMS sign convention.
    """
    dxy = np.asarray(dxy, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        proj = dxy * np.sin(np.asarray(jet_phi, dtype=np.float64) - np.asarray(trk_phi, dtype=np.float64))
        return np.where(np.isfinite(proj), np.where(proj >= 0, 1.0, -1.0), np.nan)


def signed_dxy(dxy: Any, dxy_err: Any, trk_phi: Any, jet_phi: Any) -> tuple[np.ndarray, np.ndarray]:
    """Lifetime-signed transverse impact parameter and its significance (flat numpy arrays).

    Args:
        dxy, dxy_err: the tracks' transverse impact parameter and its error (cm), CMS sign
            convention (see the derivation above this function).
        trk_phi, jet_phi: the track's and its jet's azimuth (rad), one entry per (jet, track) pair.

    Returns:
        ``(sdxy_cm, sdxy_sig)``: ``sdxy = |dxy| · sign(dxy · sin(φ_jet − φ_trk))`` (cm),
        NaN where the dxy is not valid (:func:`valid_dxy`); ``sdxy_sig = sdxy / dxy_err``,
        NaN where :func:`dxy_significance` is NaN (invalid dxy or non-finite error).
    """
    dxy = np.asarray(dxy, dtype=np.float64)
    dxy_err = np.asarray(dxy_err, dtype=np.float64)
    sign = lifetime_sign(dxy, trk_phi, jet_phi)
    valid = valid_dxy(dxy, dxy_err)
    sdxy = np.where(valid, np.abs(dxy) * sign, np.nan)
    sig = np.abs(dxy_significance(dxy, dxy_err)) * sign
    return sdxy, sig


def significance(value: Any, error: Any) -> np.ndarray:
    """``value / error`` where ``value`` is finite and ``0 < error < inf``, else NaN (numpy).

    For dz and the 3-D impact parameter (fills such as PFNano's ``-1`` never pass).
    """
    value = np.asarray(value, dtype=np.float64)
    error = np.asarray(error, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(value) & (error > 0) & np.isfinite(error)
    out = np.full(np.broadcast(value, error).shape, np.nan)
    np.divide(value, error, out=out, where=ok)
    return out
