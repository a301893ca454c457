"""(pT, |η|) reweighting and class weights (pure numpy).

Bins (:data:`PT_EDGES` in GeV, :data:`ABS_ETA_EDGES`): a jet outside the edges
counts in the nearest edge bin. Tables are computed from the training split:

- ``flat``: per class c, ``w = (N_c / B_c) / h_c[bin]`` with ``h_c`` the class's
  training histogram, ``N_c`` its training jets and ``B_c`` its non-empty bins:
  the weighted (pT, |η|) distribution of each class is flat over its non-empty
  bins, with the class's total weight unchanged (N_c);
- ``reference``: ``w = (h_ref[bin] / N_ref) / (h_c[bin] / N_c)``: each class takes
  the reference class's (pT, |η|) shape, total weight unchanged;
- a jet in a bin where its class had no training jet gets weight 0 (both tables);
- ``class_weights``: ``N / (K · N_c)`` over the K classes (balanced classes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["ABS_ETA_EDGES", "PT_EDGES", "Bins", "Reweighting", "compute_reweighting", "histogram"]

#: Jet pT bin edges (GeV).
PT_EDGES = (30.0, 40.0, 50.0, 60.0, 75.0, 90.0, 110.0, 135.0, 165.0, 200.0, 250.0, 330.0, 450.0, 1000.0)
#: Jet |η| bin edges.
ABS_ETA_EDGES = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5)


@dataclass(frozen=True)
class Bins:
    """2D binning of (jet pT in GeV, jet |η|); values outside go to the nearest edge bin."""

    pt: tuple[float, ...] = PT_EDGES
    abs_eta: tuple[float, ...] = ABS_ETA_EDGES

    @property
    def shape(self) -> tuple[int, int]:
        """(pT bins, |η| bins)."""
        return len(self.pt) - 1, len(self.abs_eta) - 1

    def index(self, pt: np.ndarray, abs_eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bin indices (ix, iy) of each jet (pT in GeV, |η|), clipped into range."""
        ix = np.clip(np.searchsorted(self.pt, np.asarray(pt, dtype=np.float64), side="right") - 1, 0, self.shape[0] - 1)
        iy = np.clip(np.searchsorted(self.abs_eta, np.asarray(abs_eta, dtype=np.float64), side="right") - 1, 0,
                     self.shape[1] - 1)
        return ix, iy


def histogram(pt: np.ndarray, abs_eta: np.ndarray, bins: Bins, weights: np.ndarray | None = None) -> np.ndarray:
    """Counts (or summed ``weights``) per (pT, |η|) bin, shape ``bins.shape``."""
    ix, iy = bins.index(pt, abs_eta)
    out = np.zeros(bins.shape, dtype=np.float64)
    np.add.at(out, (ix, iy), 1.0 if weights is None else np.asarray(weights, dtype=np.float64))
    return out


@dataclass
class Reweighting:
    """Weight tables per class (see the module docstring).

    Attributes:
        bins: the (pT, |η|) binning.
        reference: the reference class of the ``reference`` tables.
        flat, to_reference: class -> table of shape ``bins.shape``.
        class_weights: class -> ``N / (K · N_c)``.
        train_counts: class -> training jets.
    """

    bins: Bins
    reference: str | None
    flat: dict[str, np.ndarray] = field(default_factory=dict)
    to_reference: dict[str, np.ndarray] = field(default_factory=dict)
    class_weights: dict[str, float] = field(default_factory=dict)
    train_counts: dict[str, int] = field(default_factory=dict)

    def weights(self, kind: str, pt: np.ndarray, abs_eta: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per-jet weights (float32) of ``kind`` ``flat``, ``reference`` or ``class``.

        Args:
            kind: which weights.
            pt: jet pT (GeV); abs_eta: jet |η|; labels: each jet's class (string).
        """
        return self.weights_of((kind,), pt, abs_eta, labels)[kind]

    def weights_of(self, kinds: tuple[str, ...], pt: np.ndarray, abs_eta: np.ndarray,
                   labels: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`weights` of several ``kinds`` at once (the bins and classes of the jets
        found once): kind -> per-jet weights (float32)."""
        labels = np.asarray(labels).astype(str)
        per_class = {"flat": self.flat, "reference": self.to_reference, "class": self.class_weights}
        unknown = [k for k in kinds if k not in per_class]
        if unknown:
            raise ValueError(f"weights kind must be flat, reference or class, got {unknown[0]!r}")
        members = {c: labels == c for k in kinds for c in per_class[k]}
        index = self.bins.index(pt, abs_eta) if any(k != "class" for k in kinds) else None
        out: dict[str, np.ndarray] = {}
        for kind in kinds:
            w = np.zeros(len(labels), dtype=np.float32)
            for c, value in per_class[kind].items():  # a class weight, or a (pT, |eta|) table
                sel = members[c]
                w[sel] = value if kind == "class" else value[index[0][sel], index[1][sel]]
            out[kind] = w
        return out

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the manifest's ``weights``)."""
        return {
            "pt_edges_gev": list(self.bins.pt),
            "abs_eta_edges": list(self.bins.abs_eta),
            "reference": self.reference,
            "flat": {c: t.tolist() for c, t in self.flat.items()},
            "to_reference": {c: t.tolist() for c, t in self.to_reference.items()},
            "class_weights": self.class_weights,
            "train_counts": self.train_counts,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reweighting:
        """Inverse of :meth:`as_dict`."""
        return cls(
            bins=Bins(tuple(d["pt_edges_gev"]), tuple(d["abs_eta_edges"])),
            reference=d.get("reference"),
            flat={c: np.asarray(t, dtype=np.float64) for c, t in d["flat"].items()},
            to_reference={c: np.asarray(t, dtype=np.float64) for c, t in d["to_reference"].items()},
            class_weights=dict(d["class_weights"]),
            train_counts=dict(d.get("train_counts", {})),
        )


def compute_reweighting(
    pt: np.ndarray,
    abs_eta: np.ndarray,
    labels: np.ndarray,
    *,
    bins: Bins | None = None,
    reference: str | None = None,
    classes: Sequence[str] | None = None,
) -> Reweighting:
    """Weight tables from the training jets.

    Args:
        pt: training jets' pT (GeV); abs_eta: their |η|; labels: their class (string).
        bins: binning (default :class:`Bins`: :data:`PT_EDGES`, :data:`ABS_ETA_EDGES`).
        reference: reference class (default ``"b"`` when present, else the most populous).
        classes: classes to build tables for (default: every label present).

    Raises:
        ValueError: ``reference`` is not among the classes.
    """
    bins = bins or Bins()
    labels = np.asarray(labels).astype(str)
    classes = sorted(set(labels.tolist())) if classes is None else list(classes)
    counts = {c: int((labels == c).sum()) for c in classes}
    if reference is None and classes:
        reference = "b" if counts.get("b") else max(classes, key=lambda c: (counts[c], c))
    if reference is not None and reference not in counts:
        raise ValueError(f"reference flavour {reference!r} has no training jets (classes: {', '.join(classes)})")
    out = Reweighting(bins=bins, reference=reference, train_counts=counts)
    hists = {c: histogram(pt[labels == c], abs_eta[labels == c], bins) for c in classes}
    present = [c for c in classes if counts[c] > 0]
    n = sum(counts[c] for c in present)
    for c in present:
        h = hists[c]
        filled = h > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            out.flat[c] = np.where(filled, (counts[c] / filled.sum()) / h, 0.0)
            ref = hists[reference] / counts[reference]
            out.to_reference[c] = np.where(filled, ref / (h / counts[c]), 0.0)
        out.class_weights[c] = n / (len(present) * counts[c])
    return out
