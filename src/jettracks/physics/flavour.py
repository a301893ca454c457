"""Jet flavour labels: one mapping from CMS truth branches to ``b, c, uds, g, unmatched``.

Definitions (``definition=`` argument of :func:`flavour_codes`):

``hadron`` (default for NanoAOD/PFNano/TreeMaker)
    From ``hadronFlavour`` (ghost-clustered hadrons): 5 → ``b``, 4 → ``c``.
    Jets with hadron flavour 0 are light; they are split by ``|partonFlavour|``
    (1–3 → ``uds``, 21 → ``g``, anything else → ``unmatched``), the usual CMS
    convention. Without a parton branch, light jets are ``unmatched``.
``parton``
    From ``|partonFlavour|`` (ghost-clustered parton, algorithmic definition):
    5 → ``b``, 4 → ``c``, 1–3 → ``uds``, 21 → ``g``, else ``unmatched``.
``physics`` (default for the JetNtuple of CMS record 12100, ``physFlav``)
    From ``|physFlav|`` (generator parton matched within ΔR < 0.4, physics
    definition), same mapping as ``parton``.

Collision data carries no truth: every jet is ``data``.

Labels are stored as small integer codes (:data:`CODES`) in arrays and as the
strings in histograms and ML datasets.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CODES", "DEFINITIONS", "LABELS", "codes_by_definition", "flavour_codes", "flavour_labels"]

#: Label → integer code (codes are stable; they appear in ML datasets).
CODES: dict[str, int] = {"unmatched": 0, "uds": 1, "c": 4, "b": 5, "g": 21, "data": -1}
#: Labels in display order.
LABELS: tuple[str, ...] = ("b", "c", "uds", "g", "unmatched", "data")
DEFINITIONS: tuple[str, ...] = ("hadron", "parton", "physics")


def _from_pdgid(pdgid: np.ndarray) -> np.ndarray:
    a = np.abs(np.asarray(pdgid, dtype=np.int64))
    out = np.full(a.shape, CODES["unmatched"], dtype=np.int8)
    out[(a >= 1) & (a <= 3)] = CODES["uds"]
    out[a == 4] = CODES["c"]
    out[a == 5] = CODES["b"]
    out[a == 21] = CODES["g"]
    return out


def flavour_codes(
    *,
    definition: str,
    hadron: np.ndarray | None = None,
    parton: np.ndarray | None = None,
    physics: np.ndarray | None = None,
    n: int | None = None,
    is_data: bool = False,
) -> np.ndarray:
    """Integer flavour codes (:data:`CODES`) for a flat array of jets.

    Args:
        definition: ``"hadron"``, ``"parton"`` or ``"physics"`` (see module docstring).
        hadron: ``hadronFlavour`` values (0, 4, 5).
        parton: ``partonFlavour`` values (signed pdgId, 0 = none).
        physics: ``physFlav`` values (signed pdgId, 0 = unmatched).
        n: number of jets (needed only when ``is_data``).
        is_data: collision data: every jet is ``data``.

    Raises:
        ValueError: unknown definition, or the branch it needs is absent.
    """
    if definition not in DEFINITIONS:
        raise ValueError(f"flavour definition must be one of {DEFINITIONS}, got {definition!r}")
    if is_data:
        size = n if n is not None else len(next(a for a in (hadron, parton, physics) if a is not None))
        return np.full(size, CODES["data"], dtype=np.int8)
    if definition == "hadron":
        if hadron is None:
            raise ValueError("flavour definition 'hadron' needs the hadron flavour branch")
        h = np.asarray(hadron, dtype=np.int64)
        out = _from_pdgid(parton) if parton is not None else np.zeros(h.shape, dtype=np.int8)
        # Heavy flavour comes from hadrons; the parton only splits light jets.
        light = (h != 4) & (h != 5)
        out = np.where(light & ((out == CODES["b"]) | (out == CODES["c"])), CODES["unmatched"], out)
        out = np.where(h == 5, CODES["b"], np.where(h == 4, CODES["c"], out))
        return out.astype(np.int8)
    source = parton if definition == "parton" else physics
    if source is None:
        raise ValueError(f"flavour definition {definition!r} needs its flavour branch")
    return _from_pdgid(source)


def codes_by_definition(
    *,
    hadron: np.ndarray | None = None,
    parton: np.ndarray | None = None,
    physics: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Codes under every definition whose branch is given, in :data:`DEFINITIONS` order.

    Same arguments as :func:`flavour_codes` (simulation only). Each definition
    needs the branch of its name (``hadron`` also uses ``parton`` when given); a
    definition whose branch is ``None`` is left out.
    """
    truth = {"hadron": hadron, "parton": parton, "physics": physics}
    return {
        definition: flavour_codes(definition=definition, **truth)
        for definition in DEFINITIONS
        if truth[definition] is not None
    }


_CODE_TO_LABEL = {code: label for label, code in CODES.items()}


def flavour_labels(codes: np.ndarray) -> np.ndarray:
    """Strings (``b``, ``c``, ``uds``, ``g``, ``unmatched``, ``data``) for codes."""
    codes = np.asarray(codes)
    out = np.empty(codes.shape, dtype=object)
    for code, label in _CODE_TO_LABEL.items():
        out[codes == code] = label
    return out
