"""Physics constants, options, the event container and numeric helpers of the generator.

The base layer of :mod:`jettracks.generate`: it imports nothing from the package.
:mod:`.jets` (jet flavour, generator truth, constituents), :mod:`.detector`
(underlying event, pile-up, detector response, summaries), the processes
(:mod:`.qcd`, :mod:`.llp`) and the writers (:mod:`.pfnano`, :mod:`.jetntuple`)
build on it; :mod:`.model` describes the model and dispatches to the processes.

Units: momenta and masses in GeV, lengths in cm, angles in radians.
Names with a leading underscore are internal to :mod:`jettracks.generate`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "PROCESSES",
    "PROCESS_OPTIONS",
    "Events",
    "ModelOptions",
    "check_process_options",
    "make_rng",
    "wrap_phi",
]

#: Physics processes the model knows: QCD multijets (background, :mod:`.qcd`) and a
#: long-lived-particle signal (:mod:`.llp`).
PROCESSES: tuple[str, ...] = ("qcd", "llp")

#: Options used by one process only (an error with any other process).
PROCESS_OPTIONS: dict[str, tuple[str, ...]] = {
    "llp": ("llp_mass", "llp_ctau", "llp_per_event", "llp_decay", "mediator_mass"),
}
#: Allowed range of ``llp_ctau`` (cm) and values of ``llp_decay``.
LLP_CTAU_RANGE = (0.01, 100.0)
LLP_DECAYS = ("dd", "bb")

# Detector acceptance (|eta|): tracker and HF start.
ETA_TRACKER = 2.5
ETA_HF = 3.0
# Pixel barrel layer radii (2016 detector), cm.
PIXEL_LAYER_R = (4.4, 7.3, 10.2)

# PDG masses, GeV.
M_PI = 0.13957039
M_E = 0.00051099895
M_MU = 0.1056583755
M_K = 0.493677
M_KL = 0.497611
M_P = 0.93827209
M_N = 0.93956542
M_B = 5.3
_CHARM = {  # name: (mass GeV, c*tau cm, probability, pdgId)
    "D0": (1.86484, 0.01229, 0.60, 421),
    "D+": (1.86966, 0.03118, 0.25, 411),
    "Ds": (1.96835, 0.01509, 0.10, 431),
    "Lc": (2.28646, 0.00600, 0.05, 4122),
}
_BOTTOM = ((511, 0.4), (521, 0.4), (531, 0.1), (5122, 0.1))
CTAU_KS = 2.6844
CTAU_LAMBDA = 7.89
M_KS = 0.497611
M_LAMBDA = 1.115683

#: Candidate origins (``cands["origin"]``), truth for tests and studies.
ORIGIN_JET = 0  # prompt jet constituent
ORIGIN_HF = 1  # b/c hadron decay product in a jet
ORIGIN_SECONDARY = 2  # K0S / Lambda decay product in a jet
ORIGIN_UE = 3  # underlying event, primary vertex
ORIGIN_PU = 4  # pile-up vertex
#: Displaced-background truth (``cands["background"]``), orthogonal to the origin codes.
BG_NONE, BG_V0, BG_CONVERSION, BG_NUCLEAR, BG_BAD = 0, 1, 2, 3, 4
#: Radii (cm) of tracker material where conversions and nuclear interactions happen:
#: the three pixel barrel layers, the pixel support / strip inner barrel layers.
MATERIAL_R = (4.4, 7.3, 10.2, 21.0, 25.5, 33.9, 41.8, 49.8)

_TWO_PI = 2.0 * math.pi


def wrap_phi(x: np.ndarray) -> np.ndarray:
    """Wrap angles to [-π, π)."""
    return (np.asarray(x) + math.pi) % _TWO_PI - math.pi


def make_rng(seed: int, file_index: int = 0) -> np.random.Generator:
    """The random generator of file ``file_index`` of a dataset with base ``seed``.

    ``SeedSequence(seed, spawn_key=(file_index,))`` is the ``file_index``-th child
    of ``SeedSequence(seed).spawn(...)``: files are independent streams.
    """
    ss = np.random.SeedSequence(int(seed), spawn_key=(int(file_index),))
    return np.random.default_rng(ss)


@dataclass(frozen=True)
class ModelOptions:
    """Physics knobs of the model (keyword options of ``generate_file``).

    Units: GeV, cm. See the module docstring for what each one does.
    """

    jets_min: int = 2
    jets_max: int = 8
    jet_mult_ratio: float = 0.55
    jet_pt_min: float = 20.0
    jet_eta_max: float = 2.5
    pt_hat_min: float = 35.0
    pt_hat_max: float = 3000.0
    pt_spectrum_index: float = 4.0
    frac_g: float = 0.50
    frac_uds: float = 0.36
    frac_c: float = 0.08
    frac_b: float = 0.06
    g_to_bb: float = 0.015
    g_to_cc: float = 0.03
    pileup_candidates: float = 250.0
    pileup_mu: float = 20.0
    pileup_eta_max: float = 3.0
    ue_fraction: float = 0.2
    track_pt_min: float = 0.5
    dxy_res_const: float = 0.0012
    dxy_res_slope: float = 0.0095
    dz_res_const: float = 0.0019
    dz_res_slope: float = 0.0095
    ctau_b: float = 0.0455
    secondary_fraction: float = 0.005
    # displaced background (jettracks.generate.detector.displaced_background); cm, rad·GeV
    # calibrated on pfnano.root's charged tracks in bins of pT (model docstring, "Displaced background")
    displaced_fraction: float = 0.13
    displaced_radius: float = 8.0
    displaced_angle: float = 0.25
    bad_track_fraction: float = 0.025
    # process "llp" only (see jettracks.generate.llp); GeV, cm
    llp_mass: float = 50.0
    llp_ctau: float = 1.0
    llp_per_event: int = 2
    llp_decay: str = "dd"
    mediator_mass: float = 400.0

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> ModelOptions:
        unknown = sorted(set(options) - set(cls.names()))
        if unknown:
            raise ValueError(
                f"unknown model option(s) {unknown}; known: {', '.join(cls.names())}"
            )
        out = cls(**options)
        out.validate()
        return out

    def validate(self) -> None:
        def bad(name: str, why: str) -> None:
            raise ValueError(f"option {name}={getattr(self, name)!r}: {why}")

        if int(self.jets_min) != self.jets_min or self.jets_min < 1:
            bad("jets_min", "must be an integer >= 1")
        if int(self.jets_max) != self.jets_max or self.jets_max < self.jets_min:
            bad("jets_max", "must be an integer >= jets_min")
        if self.jets_max > 64:
            bad("jets_max", "must be <= 64")
        if not 0 < self.jet_mult_ratio <= 1:
            bad("jet_mult_ratio", "must be in (0, 1]")
        if not self.jet_pt_min > 0:
            bad("jet_pt_min", "must be > 0")
        if not 0 < self.jet_eta_max <= 5:
            bad("jet_eta_max", "must be in (0, 5]")
        if not self.pt_hat_min > 0:
            bad("pt_hat_min", "must be > 0")
        if not self.pt_hat_max > self.pt_hat_min:
            bad("pt_hat_max", "must be > pt_hat_min")
        if not self.pt_spectrum_index > 1:
            bad("pt_spectrum_index", "must be > 1")
        for name in ("frac_g", "frac_uds", "frac_c", "frac_b", "g_to_bb", "g_to_cc",
                     "ue_fraction", "secondary_fraction", "displaced_fraction", "bad_track_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                bad(name, "must be in [0, 1]")
        if self.g_to_bb + self.g_to_cc > 1:
            bad("g_to_cc", "g_to_bb + g_to_cc must be <= 1")
        if not self.frac_g + self.frac_uds + self.frac_c + self.frac_b > 0:
            bad("frac_g", "flavour fractions must not all be 0")
        if not self.pileup_candidates >= 0:
            bad("pileup_candidates", "must be >= 0")
        if not self.pileup_mu >= 0:
            bad("pileup_mu", "must be >= 0")
        if not 0 < self.pileup_eta_max <= 5.2:
            bad("pileup_eta_max", "must be in (0, 5.2]")
        if not self.track_pt_min >= 0:
            bad("track_pt_min", "must be >= 0")
        for name in ("dxy_res_const", "dxy_res_slope", "dz_res_const", "dz_res_slope",
                     "ctau_b", "displaced_radius", "displaced_angle"):
            if not getattr(self, name) > 0:
                bad(name, "must be > 0")
        self._validate_llp(bad)

    def _validate_llp(self, bad) -> None:
        for name in ("llp_mass", "llp_ctau", "mediator_mass"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
                bad(name, "must be a finite number")
        if not LLP_CTAU_RANGE[0] <= self.llp_ctau <= LLP_CTAU_RANGE[1]:
            bad("llp_ctau", f"must be in [{LLP_CTAU_RANGE[0]}, {LLP_CTAU_RANGE[1]}] cm "
                "(0.1 mm to 1 m)")
        if self.llp_decay not in LLP_DECAYS:
            bad("llp_decay", f"must be one of {LLP_DECAYS}")
        m_min = 10.0 if self.llp_decay == "bb" else 1.0
        if not m_min <= self.llp_mass:
            bad("llp_mass", f"must be >= {m_min} GeV for llp_decay={self.llp_decay!r}")
        if not 2.0 * self.llp_mass < self.mediator_mass <= 20000.0:
            bad("mediator_mass", "must be > 2 * llp_mass and <= 20000 GeV")
        v = self.llp_per_event
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v not in (1, 2):
            bad("llp_per_event", "must be 1 or 2")


@dataclass
class Events:
    """Generated events as flat arrays.

    ``event``: per-event arrays (length ``n_events``).
    ``jets``: flat per-jet arrays, grouped by event (``jet_counts``), descending pT.
    ``cands``: flat per-candidate arrays, grouped by event (``cand_counts``), in
    collection order; ``cands["jet"]`` is the global jet index of a constituent
    (-1 for underlying-event / pile-up candidates), ``cands["origin"]`` one of
    the ``ORIGIN_*`` codes, ``cands["vx"/"vy"/"vz"]`` the production vertex
    relative to the primary vertex (cm).
    ``jets["llp"]`` / ``cands["llp"]``: index into ``truth["llp"]`` of the
    long-lived particle a jet / candidate comes from, -1 otherwise (always -1
    for ``qcd``); ``jets["genPartMother"]``: the PFNano ``GenPart`` row of the
    parton's mother (-1: none).
    ``truth``: process-specific truth not written to files (empty for ``qcd``;
    for ``llp`` see :mod:`.llp`).
    """

    n_events: int
    event: dict[str, np.ndarray]
    jet_counts: np.ndarray
    jets: dict[str, np.ndarray]
    cand_counts: np.ndarray
    cands: dict[str, np.ndarray]
    options: ModelOptions = field(default_factory=ModelOptions)
    process: str = "qcd"
    truth: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def jet_offsets(self) -> np.ndarray:
        return _offsets(self.jet_counts)

    @property
    def cand_offsets(self) -> np.ndarray:
        return _offsets(self.cand_counts)

    @property
    def n_jets(self) -> int:
        return int(self.jet_counts.sum())


# --------------------------------------------------------------------------- helpers


def _offsets(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _local_index(counts: np.ndarray) -> np.ndarray:
    """0..n-1 within each group, for groups of the given sizes laid end to end."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    starts = np.repeat(_offsets(counts)[:-1], counts)
    return np.arange(total, dtype=np.int64) - starts


def _power_law(rng, lo, hi, index, size):
    """pT ∝ pT^-index between lo and hi (arrays allowed; hi <= lo gives lo)."""
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), (size,))
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), (size,))
    hi = np.maximum(hi, lo * (1 + 1e-9))
    k = 1.0 - index
    u = rng.random(size)
    a, b = lo**k, hi**k
    return (a - u * (a - b)) ** (1.0 / k)


def _choice(rng, values, probs, size):
    probs = np.asarray(probs, dtype=np.float64)
    idx = np.searchsorted(np.cumsum(probs / probs.sum()), rng.random(size), side="right")
    return np.asarray(values)[np.minimum(idx, len(values) - 1)]


def _group_sum(group, values, n):
    return np.bincount(group, weights=values, minlength=n)


def _ip_resolution(pt, const, slope):
    return np.sqrt(const**2 + (slope / np.maximum(pt, 1e-3)) ** 2)


def _vertex_ip(vx, vy, vz, phi, eta):
    """Straight-line dxy, dz (CMS sign) of a track from (vx, vy, vz) with direction phi, eta."""
    s, c = np.sin(phi), np.cos(phi)
    dxy = -vx * s + vy * c
    dz = vz - (vx * c + vy * s) * np.sinh(eta)
    return dxy, dz


def check_process_options(process: str, options: dict[str, Any]) -> None:
    """ValueError if ``options`` hold options of another process than ``process``."""
    foreign = sorted(
        k for proc, names in PROCESS_OPTIONS.items() if proc != process
        for k in names if k in options
    )
    if foreign:
        owners = sorted({p for p, names in PROCESS_OPTIONS.items() for k in foreign if k in names})
        raise ValueError(
            f"option(s) {foreign} apply to process {' / '.join(map(repr, owners))} only, "
            f"not to process {process!r}"
        )
