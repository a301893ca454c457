"""Physics model of the synthetic generator: multijet QCD events with tracks.

(The long-lived-particle signal, ``process="llp"``, is in :mod:`.llp`: it
builds its own hard jets and then shares this module's jet constituents,
flavour, underlying event, pile-up and detector steps.)

One call of :func:`generate_events` makes a set of events as flat NumPy arrays
plus per-event counts (:class:`Events`); the writers (:mod:`.pfnano`,
:mod:`.jetntuple`) only lay these arrays out in their on-disk formats, so both
formats carry the same events, jets and candidates for a given seed.
Everything is vectorised over all jets / candidates of a file (NumPy
``repeat``/``cumsum``/``bincount`` tricks, no per-jet Python loops).

Units: momenta and masses in GeV, lengths (impact parameters, vertices, flight
lengths, cτ) in cm, angles in radians; η is pseudorapidity.

The model, step by step
=======================

Events and jets
    * Hard scale p̂T from a falling power law dσ/dp̂T ∝ p̂T^-n (``pt_spectrum_index``
      n = 4) between ``pt_hat_min`` (35 GeV) and ``pt_hat_max`` (3 TeV).
    * Jets per event between ``jets_min`` (2) and ``jets_max`` (8) with
      P(n) ∝ r^(n - jets_min), r = ``jet_mult_ratio`` (0.55).
    * Leading jet pT = p̂T × N(1, 0.06); second jet pT = p̂T × U(0.6, 1), at
      Δφ ≈ π from the first (back-to-back, σ(Δφ) grows with the number of
      extra jets); extra jets from a pT^-3 spectrum between ``jet_pt_min``
      (20 GeV) and the second jet's pT, φ uniform. Every jet has
      |η| < ``jet_eta_max`` (2.5, uniform) and is at ΔR > 0.6 from the others.
      Jets are sorted by descending pT within the event.
    * The JetNtuple writer applies the real producer's selection on top
      (pT > 30 GeV, |η| < 2.5, two leading jets passing); PFNano keeps all jets.

Flavour (``frac_g`` 0.50, ``frac_uds`` 0.36, ``frac_c`` 0.08, ``frac_b`` 0.06)
    * The generated ("true") parton is 21, ±1/±2/±3 (d 35 %, u 45 %, s 20 %,
      quark 60 % / antiquark 40 %), ±4 or ±5.
    * ``hadronFlav`` (NanoAOD ``Jet_hadronFlavour``): 5 for b jets, 4 for c jets,
      0 otherwise; a gluon jet holds a b (c) hadron pair from gluon splitting
      with probability ``g_to_bb`` 0.015 (``g_to_cc`` 0.03): hadronFlav 5 (4).
    * ``partonFlav``: the true parton; for gluon-splitting jets ±5/±4 (the CMS
      rule that partonFlavour follows a heavy hadron); 0 (unmatched) for ~3 %
      of light jets (more at low pT and for jets without a generator jet).
    * ``physFlav``: the true parton, except 0 (unmatched) for 1 % + 4 %·(30/pT)
      of the jets (70 % of the jets without a generator jet) and a swapped light
      flavour (g ↔ uds) for 3 %. The ``isPhys*`` / ``isParton*`` flags follow the
      real producer: UDS for |flav| in {1,2,3}, G for 21, Other for the rest
      (b, c and 0 included).

Constituents (jet particles)
    * Multiplicity 2 + Poisson(μ - 2), μ = 4 + 7 ln(pT/10 GeV), ×1.45 for
      gluon jets (for the default flavour mix ~18 constituents at 45 GeV, ~38
      at 500 GeV; the real PFNano file has 18 and 45). Kinds: 62 % charged
      (π±, but 1 % e± and 0.8 % μ±), 28 % photons (22), 10 % neutral hadrons
      (130).
    * pT fractions z from Gamma(α) variates normalised per jet (α = 0.45 for
      quark, 0.7 for gluon jets: quark jets are harder, higher pT_D); the
      constituents' scalar pT sum is the raw (uncorrected) jet pT, jet pT / JEC
      with JEC = 1 + 0.9/√(pT/GeV) (every constituent has at least 0.1 GeV).
    * ΔR to the jet axis = σ_jet (z N)^-0.4 × Gamma(2, 0.5), σ_jet =
      0.075 (50 GeV/pT)^0.3 (×1.25 for gluons), folded into ΔR < 0.4; the
      azimuth around the axis is uniform. The constituents are then recentred
      so that the jet axis is their pT-weighted centroid (a few end up just
      beyond 0.4, as in real jets). The jet mass is that of the constituents'
      four-vector sum (× JEC).
    * Beyond the tracker (|η| > 2.5) charged particles become neutral PF
      candidates (π± → 130, e± → 22); beyond |η| > 3 neutral hadrons and photons
      become HF candidates (pdgId 1 and 2), as in real packed PF candidates.

Jet summaries (computed from the final constituents)
    * Multiplicities, energy fractions (charged/neutral hadron, EM, muon),
      girth Σ pT ΔR / pT, pT_D = √Σ pT² / Σ pT, axis2 (minor axis of the
      pT²-weighted η-φ spread), QG multiplicity (charged with fromPV = 3 plus
      neutral with pT > 1 GeV), the 2016 PF jet ID (the JetNtuple producer's
      formula within |η| ≤ 2.7).
    * Not simulated but filled plausibly: the quark-gluon likelihood (a
      logistic function of multiplicity, pT_D and axis2, so quark jets score
      high), b-tag discriminants (Beta distributions by hadron flavour, high
      for b jets), jet area N(0.50, 0.02).

Underlying event and pile-up
    * Pile-up interactions per event nPU ~ Poisson(μ_true), μ_true =
      ``pileup_mu`` (20) × U(0.6, 1.4); primary and pile-up vertices at
      z ~ N(0, 3.5 cm).
    * Per event Poisson(``pileup_candidates`` × (nPU + 1)/(μ + 1)) candidates
      (mean ``pileup_candidates`` = 250), uniform in |η| < ``pileup_eta_max``
      (3.0) and φ, soft (charged 0.15 + Gamma(1.3, 0.45) GeV, photons 0.1 +
      Gamma(1.2, 0.4), neutral hadrons 0.5 + Gamma(1.3, 1.0)); 55 % charged,
      33 % photons, 12 % neutral hadrons. A fraction ``ue_fraction`` (0.2) comes
      from the primary vertex (underlying event), the rest from a random
      pile-up vertex (dz = z_PU - z_PV, often several cm).

Tracks and impact parameters
    * Every charged candidate with pT ≥ ``track_pt_min`` (0.5 GeV) has track
      details (0.2 % lack them, 0.2 % of softer ones have them); the others,
      and all neutral candidates, carry ``d0 = d0Err = dz = dzErr = -1``
      exactly, as in real PFNano (where ~40 % of the charged candidates have
      no track details, all of them soft).
    * Resolution σ_dxy(pT) = a ⊕ b/pT with a = ``dxy_res_const`` 0.0012 cm
      (12 µm), b = ``dxy_res_slope`` 0.0095 cm·GeV; σ_dz with 0.0019 cm and
      0.0095 cm·GeV (values read off the real PFNano file's d0Err/dzErr versus
      pT). Measured value = geometric value + σ × N(0, 1) (3 % of the tracks
      get a 3× wider core: non-Gaussian tails); the stored error is
      σ × exp(N(0, 0.12)).
    * Geometry: a track produced at vertex (vx, vy, vz) relative to the primary
      vertex with direction (φ, η) has, as a straight line, the CMS
      ``dxy = (-vx·py + vy·px)/pT = -vx sin φ + vy cos φ`` (signed, so
      dxy = L_T sin(φ_flight - φ_track) for a decay at transverse distance L_T
      along φ_flight) and ``dz = vz - (vx cos φ + vy sin φ) sinh η``.
      Magnetic bending is ignored.
    * Heavy-flavour decays: in every jet with hadronFlav 5 (4) the hardest
      1 + Binomial(7, 0.55) (1 + Binomial(3, 0.45)) charged constituents come
      from the b (c) hadron. Hadron momentum = x × jet momentum, x ~ N(0.7,
      0.12) for b, N(0.55, 0.15) for c; mass 5.3 GeV (b), 1.87–2.29 GeV (c:
      D0 60 %, D+ 25 %, Ds 10 %, Λc 5 %); flight length L = βγ cτ × Exp(1),
      βγ = p/m, cτ_b = ``ctau_b`` 0.0455 cm, cτ_c = 0.0123 / 0.0312 / 0.0151 /
      0.0060 cm; flight direction = jet axis ⊕ 0.02 rad. Half of the b-decay
      tracks come from the cascade charm hadron (a further D flight from the b
      vertex). A decay track leaves the flight axis at an angle pT_rel/p with
      pT_rel ~ Rayleigh(0.2 m_hadron), so |dxy| ~ cτ whatever the boost. One
      decay track is a lepton (e or μ) in 22 % of the b jets (16 % of c jets).
      So b jets have a clearly wider |dxy| distribution than light jets.
    * Secondaries: a fraction ``secondary_fraction`` (0.005) of the other
      charged jet constituents come from K0S (70 %, cτ 2.68 cm) or Λ (cτ 7.89
      cm) decays with transverse decay radius < 25 cm, giving the long
      |dxy| tail that light jets also have in real data.
    * Other track fields as in real files: ``pvAssocQuality`` (7 for neutral
      candidates, mostly 7 for primary tracks, 0/1/4/5 for displaced and
      pile-up ones), ``lostInnerHits`` (-1 mostly; ≥ 1 when produced beyond the
      first pixel layer at r = 4.4 cm, 2 beyond 7.3 cm), ``trkQuality`` (5 with
      track details, 0 otherwise), ``trkChi2`` (integer-valued normalised χ²,
      -1 without track details), ``fromPV`` 0–3.

Gen level
    * Each jet has a generator jet (``jetGenMatch``) except 12 % × (30/pT)² of
      them (capped at 30 %): pT_gen = pT / N(1, 0.04 ⊕ 0.9/√pT), η/φ
      smeared by 0.01·√(50/pT), mass × exp(N(0, 0.1)). Its constituents are the
      reco constituents with pT scaled to the gen jet and generator pdgIds
      (π±/K±/p, γ, K_L/n/n̄, leptons).

Collection order
    * Candidates are stored as real packed PF candidates are: charged ones
      first, grouped by vertex (unassociated, primary vertex, pile-up vertices)
      and by descending η within a group, then neutral ones by descending η.
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
    "generate_events",
    "check_process_options",
    "make_rng",
    "wrap_phi",
]

#: Physics processes the model knows: QCD multijets (background) and a
#: long-lived-particle signal (:mod:`jettracks.generate.llp`).
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
                     "ue_fraction", "secondary_fraction"):
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
                     "ctau_b"):
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

    @property
    def n_cands(self) -> int:
        return int(self.cand_counts.sum())


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


# --------------------------------------------------------------------------- model


def generate_events(
    n_events: int,
    rng: np.random.Generator,
    *,
    process: str = "qcd",
    file_index: int = 0,
    **options: Any,
) -> Events:
    """Generate ``n_events`` events (see the module docstring for the model).

    Args:
        n_events: number of events (>= 0).
        rng: random generator, e.g. :func:`make_rng` ``(seed, file_index)``.
        process: one of :data:`PROCESSES`.
        file_index: index of the file in its dataset (event numbers and
            luminosity blocks are unique across files).
        **options: :class:`ModelOptions` fields.
    """
    if process not in PROCESSES:
        raise ValueError(f"process {process!r} is not one of {PROCESSES}")
    if int(n_events) != n_events or n_events < 0:
        raise ValueError(f"n_events must be an integer >= 0, got {n_events!r}")
    if n_events >= 1_000_000_000:
        raise ValueError(f"n_events must be < 1e9 per file, got {n_events}")
    if int(file_index) != file_index or file_index < 0:
        raise ValueError(f"file_index must be an integer >= 0, got {file_index!r}")
    check_process_options(process, options)
    opts = ModelOptions.from_kwargs(options)
    if process == "llp":
        from .llp import generate_llp

        return generate_llp(int(n_events), rng, opts, int(file_index))
    return _generate_qcd(int(n_events), rng, opts, int(file_index))


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


def _pileup_vertices(rng: np.random.Generator, o: ModelOptions, n: int):
    """Per event: true pile-up mean, number of pile-up interactions, primary-vertex z."""
    mu_true = o.pileup_mu * rng.uniform(0.6, 1.4, n)
    n_pu = rng.poisson(mu_true)
    pv_z = rng.normal(0.0, 3.5, n)
    return mu_true, n_pu, pv_z


def _generate_qcd(n: int, rng: np.random.Generator, o: ModelOptions, file_index: int) -> Events:
    # ------------------------------------------------------------------ event level
    mu_true, n_pu, pv_z = _pileup_vertices(rng, o, n)
    pthat = _power_law(rng, o.pt_hat_min, o.pt_hat_max, o.pt_spectrum_index, n)

    # ------------------------------------------------------------------ jets (padded)
    jets_max = int(o.jets_max)
    ns = np.arange(int(o.jets_min), jets_max + 1)
    n_jets = _choice(rng, ns, o.jet_mult_ratio ** (ns - o.jets_min), n).astype(np.int64)
    col = np.arange(jets_max)[None, :]
    valid = col < n_jets[:, None]

    pt = np.empty((n, jets_max))
    pt[:, 0] = pthat * np.clip(rng.normal(1.0, 0.06, n), 0.85, 1.2)
    if jets_max > 1:
        pt[:, 1] = pthat * rng.uniform(0.6, 1.0, n)
    if jets_max > 2:
        upper = np.repeat(pt[:, 1], jets_max - 2)
        pt[:, 2:] = _power_law(rng, o.jet_pt_min, upper, 3.0, upper.size).reshape(n, jets_max - 2)
    pt = np.maximum(pt, o.jet_pt_min * (1.0 + 0.05 * rng.random((n, jets_max))))

    eta = rng.uniform(-o.jet_eta_max, o.jet_eta_max, (n, jets_max))
    phi = rng.uniform(-math.pi, math.pi, (n, jets_max))
    if jets_max > 1:
        spread = 0.12 * np.sqrt(np.maximum(n_jets - 1, 1))
        phi[:, 1] = wrap_phi(phi[:, 0] + math.pi + rng.normal(0.0, 1.0, n) * spread)
    # keep jets apart (anti-kT jets do not overlap): resample the later jet
    for k in range(1, jets_max):
        for _ in range(30):
            deta = eta[:, :k] - eta[:, k : k + 1]
            dphi = wrap_phi(phi[:, :k] - phi[:, k : k + 1])
            close = valid[:, k] & ((deta**2 + dphi**2) < 0.6**2).any(axis=1)
            m = int(close.sum())
            if m == 0:
                break
            eta[close, k] = rng.uniform(-o.jet_eta_max, o.jet_eta_max, m)
            if k >= 2:
                phi[close, k] = rng.uniform(-math.pi, math.pi, m)
            else:
                phi[close, k] = wrap_phi(phi[close, k] + rng.normal(0.0, 0.3, m))

    order = np.argsort(np.where(valid, -pt, np.inf), axis=1, kind="stable")
    pt = np.take_along_axis(pt, order, axis=1)[valid]
    eta = np.take_along_axis(eta, order, axis=1)[valid]
    phi = np.take_along_axis(phi, order, axis=1)[valid]
    nj = pt.size
    jet_event = np.repeat(np.arange(n), n_jets)

    # ------------------------------------------------------------------ flavour, constituents
    fl = _jet_flavour(rng, o, nj)
    truth = _gen_truth(rng, pt, eta, phi, fl)
    con = _constituents(rng, o, pt, eta, phi, fl["is_gluon"], fl["hadron"], fl["sign"])
    jet = {
        "pt": pt, "eta": eta, "phi": phi, "n_jets": n_jets, "jet_event": jet_event,
        "true_flav": fl["true_flav"], "hadron": fl["hadron"], "n_b_had": fl["n_b_had"],
        "n_c_had": fl["n_c_had"], **truth,
    }
    evt = {"mu_true": mu_true, "n_pu": n_pu, "pv_z": pv_z, "pthat": pthat}
    return _finish(n, rng, o, file_index, "qcd", evt, jet, con)


def _jet_flavour(rng: np.random.Generator, o: ModelOptions, nj: int) -> dict[str, np.ndarray]:
    """Flavour of ``nj`` QCD jets (true parton, hadron flavour, gluon splitting)."""
    fl = _choice(rng, np.array([21, 1, 4, 5]), [o.frac_g, o.frac_uds, o.frac_c, o.frac_b], nj)
    is_gluon = fl == 21
    sign = np.where(rng.random(nj) < 0.6, 1, -1)
    light = _choice(rng, np.array([1, 2, 3]), [0.35, 0.45, 0.20], nj)
    true_flav = np.where(is_gluon, 21, np.where(fl == 1, light, fl) * sign).astype(np.int32)

    hadron = np.where(fl == 5, 5, np.where(fl == 4, 4, 0)).astype(np.int32)
    u = rng.random(nj)
    g_bb = is_gluon & (u < o.g_to_bb)
    g_cc = is_gluon & (u >= o.g_to_bb) & (u < o.g_to_bb + o.g_to_cc)
    hadron[g_bb] = 5
    hadron[g_cc] = 4
    n_b_had = np.where(hadron == 5, np.where(g_bb & (rng.random(nj) < 0.3), 2, 1), 0)
    n_c_had = np.where(hadron == 4, np.where(g_cc & (rng.random(nj) < 0.3), 2, 1), 0)
    return {
        "is_gluon": is_gluon, "sign": sign, "light": light, "true_flav": true_flav,
        "hadron": hadron, "g_bb": g_bb, "g_cc": g_cc, "n_b_had": n_b_had, "n_c_had": n_c_had,
    }


def _gen_truth(rng: np.random.Generator, pt, eta, phi, fl: dict[str, np.ndarray]):
    """Generator jet (match, pT, η, φ) and parton / physics flavour of jets of flavour ``fl``."""
    nj = pt.size
    true_flav, hadron, sign, light = fl["true_flav"], fl["hadron"], fl["sign"], fl["light"]
    is_gluon, g_bb, g_cc = fl["is_gluon"], fl["g_bb"], fl["g_cc"]
    # generator jet
    p_unmatched = np.minimum(0.3, 0.12 * (30.0 / pt) ** 2)
    gen_match = rng.random(nj) >= p_unmatched
    res = np.sqrt(0.04**2 + 0.9**2 / pt)
    response = np.clip(rng.normal(0.0, 1.0, nj) * res + 1.0, 0.5, 1.5)
    gen_pt = pt / response
    ang = 0.01 * np.sqrt(50.0 / pt)
    gen_eta = eta + rng.normal(0.0, 1.0, nj) * ang
    gen_phi = wrap_phi(phi + rng.normal(0.0, 1.0, nj) * ang)

    parton = true_flav.copy()
    parton[g_bb] = 5 * sign[g_bb]
    parton[g_cc] = 4 * sign[g_cc]
    p0 = np.where(gen_match, np.minimum(0.2, 0.03 * np.sqrt(30.0 / pt)), 0.5)
    parton[(hadron == 0) & (rng.random(nj) < p0)] = 0

    phys = true_flav.copy()
    p_unm = np.where(gen_match, np.minimum(0.2, 0.01 + 0.04 * 30.0 / pt), 0.7)
    r = rng.random(nj)
    swap = (r >= p_unm) & (r < p_unm + 0.03) & (hadron == 0)
    phys[swap & is_gluon] = (light * sign)[swap & is_gluon]
    phys[swap & ~is_gluon] = 21
    phys[r < p_unm] = 0
    return {
        "gen_match": gen_match, "gen_pt": gen_pt, "gen_eta": gen_eta, "gen_phi": gen_phi,
        "parton": parton, "phys": phys,
    }


def _constituents(rng: np.random.Generator, o: ModelOptions, pt, eta, phi, is_gluon, hadron, sign):
    """Constituents of jets (pT, η, φ) with heavy-flavour decays and K0S/Λ secondaries.

    Production vertices ``vx, vy, vz`` are relative to the point the jet comes
    from (the primary vertex for QCD). Returns per-constituent arrays (``cj`` the
    jet index) and per-jet ``jec``, ``raw_pt`` and the b/c hadron truth.
    """
    nj = pt.size
    jec = 1.0 + 0.9 / np.sqrt(pt)
    raw_pt = pt / jec
    mu = (4.0 + 7.0 * np.log(np.maximum(pt, 10.0) / 10.0)) * np.where(is_gluon, 1.45, 1.0)
    n_const = 2 + rng.poisson(np.maximum(mu - 2.0, 0.1))
    n_const = np.minimum(n_const, np.maximum(2, (raw_pt / 0.2).astype(np.int64)))
    cj = np.repeat(np.arange(nj), n_const)  # jet of each constituent
    nc = cj.size

    kind = rng.random(nc)
    charged = kind < 0.62
    photon = (kind >= 0.62) & (kind < 0.90)
    csign = np.where(rng.random(nc) < 0.5, 1, -1)
    sub = rng.random(nc)
    pdg = np.where(charged, 211 * csign, np.where(photon, 22, 130)).astype(np.int32)
    pdg = np.where(charged & (sub < 0.01), -11 * csign, pdg)
    pdg = np.where(charged & (sub >= 0.01) & (sub < 0.018), -13 * csign, pdg)

    alpha = np.where(is_gluon, 0.7, 0.45)[cj]
    g = rng.gamma(alpha) + 1e-12
    z = g / _group_sum(cj, g, nj)[cj]
    pmin = 0.1
    cpt = pmin + z * (raw_pt - pmin * n_const)[cj]

    width = np.maximum(0.075 * (50.0 / pt) ** 0.3 * np.where(is_gluon, 1.25, 1.0), 0.012)
    dr = width[cj] * (z * n_const[cj]) ** -0.4 * rng.gamma(2.0, 0.5, nc)
    out = dr > 0.4
    dr[out] = 0.4 * np.sqrt(rng.random(int(out.sum())))
    azi = rng.uniform(0.0, _TWO_PI, nc)
    deta = dr * np.cos(azi)
    dphi = dr * np.sin(azi)

    origin = np.full(nc, ORIGIN_JET, dtype=np.int8)

    # heavy-flavour decay tracks: the hardest charged constituents of b/c jets
    hf_jet = hadron > 0
    is_b = hadron == 5
    n_dec_b = 1 + rng.binomial(7, 0.55, nj)
    n_dec_c = 1 + rng.binomial(3, 0.45, nj)
    n_dec = np.where(is_b, n_dec_b, np.where(hf_jet, n_dec_c, 0))
    ch_idx = np.nonzero(charged)[0]
    srt = ch_idx[np.lexsort((-cpt[ch_idx], cj[ch_idx]))]
    rank = _local_index(np.bincount(cj[srt], minlength=nj))
    dec = np.zeros(nc, dtype=bool)
    dec[srt] = rank < n_dec[cj[srt]]
    origin[dec] = ORIGIN_HF

    # hadron kinematics (per jet; only used for hf jets)
    charm = _choice(rng, np.arange(len(_CHARM)), [v[2] for v in _CHARM.values()], nj)
    m_c = np.array([v[0] for v in _CHARM.values()])[charm]
    ctau_c = np.array([v[1] for v in _CHARM.values()])[charm]
    b_pdg = _choice(rng, np.array([b[0] for b in _BOTTOM]), [b[1] for b in _BOTTOM], nj)
    c_pdg = np.array([v[3] for v in _CHARM.values()])[charm]
    hadron_pdg = np.where(is_b, b_pdg, np.where(hf_jet, c_pdg, 0)) * sign
    x_h = np.where(is_b, rng.normal(0.7, 0.12, nj), rng.normal(0.55, 0.15, nj))
    x_h = np.clip(x_h, 0.15, 0.97)
    p_jet = pt * np.cosh(eta)
    m_h = np.where(is_b, M_B, m_c)
    ctau_h = np.where(is_b, o.ctau_b, ctau_c)
    flight = (x_h * p_jet / m_h) * ctau_h * rng.exponential(1.0, nj)
    f_deta = rng.normal(0.0, 0.02, nj)
    f_dphi = rng.normal(0.0, 0.02, nj)
    # cascade charm of b hadrons
    p_d = x_h * p_jet * rng.uniform(0.4, 0.8, nj)
    flight_d = np.where(is_b, (p_d / m_c) * ctau_c * rng.exponential(1.0, nj), 0.0)

    di = np.nonzero(dec)[0]
    dj = cj[di]
    from_d = is_b[dj] & (rng.random(di.size) < 0.5)
    p_trk = np.maximum(cpt[di], 0.1) * np.cosh(eta[dj] + f_deta[dj])
    ptrel = rng.rayleigh(0.2 * m_h[dj])
    psi = np.minimum(ptrel / p_trk, 1.0) * np.cosh(eta[dj] + f_deta[dj])
    beta = rng.uniform(0.0, _TWO_PI, di.size)
    t_deta = f_deta[dj] + psi * np.cos(beta)
    t_dphi = f_dphi[dj] + psi * np.sin(beta)
    t_dr = np.hypot(t_deta, t_dphi)
    scale = np.where(t_dr > 0.45, 0.45 / np.maximum(t_dr, 1e-12), 1.0)
    deta[di] = t_deta * scale
    dphi[di] = t_dphi * scale
    # one lepton in semileptonic decays: the first decay track of the jet
    first_dec = np.r_[True, dj[1:] != dj[:-1]] if di.size else np.zeros(0, bool)
    lep = rng.random(di.size)
    p_e = np.where(is_b[dj], 0.11, 0.08)
    lep_e = first_dec & (lep < p_e)
    lep_mu = first_dec & (lep >= p_e) & (lep < 2 * p_e)
    pdg[di[lep_e]] = -11 * csign[di[lep_e]]
    pdg[di[lep_mu]] = -13 * csign[di[lep_mu]]

    # recentre: the jet axis is the pT-weighted centroid of its constituents
    wsum = _group_sum(cj, cpt, nj)
    c_eta = _group_sum(cj, cpt * deta, nj) / wsum
    c_phi = _group_sum(cj, cpt * dphi, nj) / wsum
    deta -= c_eta[cj]
    dphi -= c_phi[cj]
    f_deta -= c_eta
    f_dphi -= c_phi
    c_eta_abs = eta[cj] + deta
    c_phi_abs = wrap_phi(phi[cj] + dphi)

    # production vertices (relative to the primary vertex)
    vx = np.zeros(nc)
    vy = np.zeros(nc)
    vz = np.zeros(nc)
    fe = eta + f_deta
    fp = phi + f_dphi
    lt = flight / np.cosh(fe)
    lt_d = flight_d / np.cosh(fe)
    add_d = from_d.astype(np.float64)
    vx[di] = (lt[dj] + add_d * lt_d[dj]) * np.cos(fp[dj])
    vy[di] = (lt[dj] + add_d * lt_d[dj]) * np.sin(fp[dj])
    vz[di] = (lt[dj] + add_d * lt_d[dj]) * np.sinh(fe[dj])

    # secondaries (K0S, Lambda) among the other charged constituents
    sec = charged & ~dec & (rng.random(nc) < o.secondary_fraction)
    si = np.nonzero(sec)[0]
    if si.size:
        origin[si] = ORIGIN_SECONDARY
        is_l = rng.random(si.size) < 0.3
        m_v = np.where(is_l, M_LAMBDA, M_KS)
        ctau_v = np.where(is_l, CTAU_LAMBDA, CTAU_KS)
        p_t = np.maximum(cpt[si], 0.1) * np.cosh(c_eta_abs[si])
        p_v = p_t * rng.uniform(1.2, 3.0, si.size)
        ch_eta = np.cosh(c_eta_abs[si])
        psi = np.minimum(rng.rayleigh(0.2 * m_v) / p_t, 0.5) * ch_eta
        beta = rng.uniform(0.0, _TWO_PI, si.size)
        v_eta = c_eta_abs[si] - psi * np.cos(beta)
        v_phi = c_phi_abs[si] - psi * np.sin(beta)
        lam = (p_v / m_v) * ctau_v / np.cosh(v_eta)  # mean transverse flight
        rmax = 25.0
        lt_v = -lam * np.log1p(-rng.random(si.size) * -np.expm1(-rmax / lam))
        vx[si] = lt_v * np.cos(v_phi)
        vy[si] = lt_v * np.sin(v_phi)
        vz[si] = lt_v * np.sinh(v_eta)

    return {
        "jec": jec, "raw_pt": raw_pt, "cj": cj, "nc": nc, "cpt": cpt,
        "c_eta_abs": c_eta_abs, "c_phi_abs": c_phi_abs, "pdg": pdg, "origin": origin,
        "vx": vx, "vy": vy, "vz": vz,
        "decayLength": np.where(hf_jet, flight, 0.0),
        "hadronPdgId": hadron_pdg.astype(np.int32),
        "hadronPt": np.where(hf_jet, x_h * p_jet / np.cosh(fe), 0.0),
        "hadronEta": np.where(hf_jet, fe, 0.0),
        "hadronPhi": np.where(hf_jet, wrap_phi(fp), 0.0),
        "hadronMass": np.where(hf_jet, m_h, 0.0),
    }


def _finish(
    n: int,
    rng: np.random.Generator,
    o: ModelOptions,
    file_index: int,
    process: str,
    evt: dict[str, np.ndarray],
    jet: dict[str, np.ndarray],
    con: dict[str, Any],
    *,
    cand_extra: dict[str, np.ndarray] | None = None,
    jet_extra: dict[str, np.ndarray] | None = None,
    truth: dict[str, dict[str, np.ndarray]] | None = None,
) -> Events:
    """Underlying event, pile-up, detector response, summaries: the common second half.

    ``jet``: per-jet arrays grouped by event in descending pT; ``con``: the
    constituents (:func:`_constituents` output, vertices relative to the primary
    vertex). ``cand_extra`` (per constituent, default -1 for the other
    candidates) and ``jet_extra`` are extra truth arrays carried into
    ``Events.cands`` / ``Events.jets``; without them both get ``llp`` = -1.
    """
    mu_true, n_pu, pv_z, pthat = evt["mu_true"], evt["n_pu"], evt["pv_z"], evt["pthat"]
    pt, eta, phi, n_jets, jet_event = jet["pt"], jet["eta"], jet["phi"], jet["n_jets"], jet["jet_event"]
    true_flav, hadron, parton, phys = jet["true_flav"], jet["hadron"], jet["parton"], jet["phys"]
    n_b_had, n_c_had = jet["n_b_had"], jet["n_c_had"]
    gen_match, gen_pt, gen_eta, gen_phi = jet["gen_match"], jet["gen_pt"], jet["gen_eta"], jet["gen_phi"]
    nj = pt.size
    jec, raw_pt, cj, nc, cpt = con["jec"], con["raw_pt"], con["cj"], con["nc"], con["cpt"]
    c_eta_abs, c_phi_abs, pdg, origin = con["c_eta_abs"], con["c_phi_abs"], con["pdg"], con["origin"]
    vx, vy, vz = con["vx"], con["vy"], con["vz"]
    if cand_extra is None:
        cand_extra = {"llp": np.full(nc, -1, np.int64)}
    if jet_extra is None:
        jet_extra = {"llp": np.full(nj, -1, np.int64), "genPartMother": np.full(nj, -1, np.int64)}

    # ------------------------------------------------------------------ UE and pile-up
    n_soft = rng.poisson(o.pileup_candidates * (n_pu + 1.0) / (mu_true + 1.0))
    ns_tot = int(n_soft.sum())
    s_event = np.repeat(np.arange(n), n_soft)
    s_kind = rng.random(ns_tot)
    s_charged = s_kind < 0.55
    s_photon = (s_kind >= 0.55) & (s_kind < 0.88)
    s_sign = np.where(rng.random(ns_tot) < 0.5, 1, -1)
    s_pdg = np.where(s_charged, 211 * s_sign, np.where(s_photon, 22, 130)).astype(np.int32)
    s_pt = np.where(
        s_charged,
        0.15 + rng.gamma(1.3, 0.45, ns_tot),
        np.where(s_photon, 0.1 + rng.gamma(1.2, 0.4, ns_tot), 0.5 + rng.gamma(1.3, 1.0, ns_tot)),
    )
    s_eta = rng.uniform(-o.pileup_eta_max, o.pileup_eta_max, ns_tot)
    s_phi = rng.uniform(-math.pi, math.pi, ns_tot)
    npu_s = n_pu[s_event]
    s_ue = (rng.random(ns_tot) < o.ue_fraction) | (npu_s == 0)
    pick = np.floor(rng.random(ns_tot) * np.maximum(npu_s, 1)).astype(np.int64)
    s_vtx = np.where(s_ue, 0, 1 + pick)
    # z of pile-up vertex k of event e: deterministic per (event, vertex) via a table
    max_pu = int(n_pu.max()) if n else 0
    pu_z = rng.normal(0.0, 3.5, (n, max_pu + 1))
    s_vz = np.where(s_ue, 0.0, pu_z[s_event, np.minimum(s_vtx, max_pu)] - pv_z[s_event])

    # ------------------------------------------------------------------ all candidates
    c_event = con["event"] if "event" in con else jet_event[cj]
    a_event = np.concatenate([c_event, s_event])
    a_jet = np.concatenate([cj, np.full(ns_tot, -1, np.int64)])
    a_pt = np.concatenate([cpt, s_pt])
    a_eta = np.concatenate([c_eta_abs, s_eta])
    a_phi = np.concatenate([c_phi_abs, s_phi])
    a_pdg = np.concatenate([pdg, s_pdg])
    a_origin = np.concatenate([origin, np.where(s_ue, ORIGIN_UE, ORIGIN_PU).astype(np.int8)])
    a_vtx = np.concatenate([np.zeros(nc, np.int64), s_vtx])
    a_vx = np.concatenate([vx, np.zeros(ns_tot)])
    a_vy = np.concatenate([vy, np.zeros(ns_tot)])
    a_vz = np.concatenate([vz, s_vz])
    na = a_pt.size

    # detector acceptance: no tracks beyond the tracker, HF candidates beyond 3
    aeta = np.abs(a_eta)
    apdg = np.abs(a_pdg)
    fwd = aeta > ETA_TRACKER
    a_pdg = np.where(fwd & ((apdg == 211) | (apdg == 13)), 130, a_pdg)
    a_pdg = np.where(fwd & (apdg == 11), 22, a_pdg)
    hf = aeta > ETA_HF
    a_pdg = np.where(hf & (a_pdg == 130), 1, a_pdg)
    a_pdg = np.where(hf & (a_pdg == 22), 2, a_pdg).astype(np.int32)
    apdg = np.abs(a_pdg)
    lepton = (apdg == 11) | (apdg == 13)
    a_charge = np.where(apdg == 211, np.sign(a_pdg), np.where(lepton, -np.sign(a_pdg), 0))
    a_charge = a_charge.astype(np.int32)
    a_charged = a_charge != 0
    lost = ~a_charged & ((a_origin == ORIGIN_HF) | (a_origin == ORIGIN_SECONDARY))
    a_origin = np.where(lost, ORIGIN_JET, a_origin).astype(np.int8)
    a_mass = np.select(
        [apdg == 211, apdg == 11, apdg == 13], [M_PI, M_E, M_MU], default=0.0
    )

    # track details and impact parameters
    u = rng.random(na)
    has_trk = a_charged & np.where(a_pt >= o.track_pt_min, u >= 0.002, u < 0.002)
    sxy = _ip_resolution(a_pt, o.dxy_res_const, o.dxy_res_slope)
    sz = _ip_resolution(a_pt, o.dz_res_const, o.dz_res_slope)
    gxy, gz = _vertex_ip(a_vx, a_vy, a_vz, a_phi, a_eta)
    tail = np.where(rng.random(na) < 0.03, 3.0, 1.0)
    d0 = gxy + sxy * tail * rng.normal(0.0, 1.0, na)
    dz = gz + sz * tail * rng.normal(0.0, 1.0, na)
    d0err = sxy * np.exp(rng.normal(0.0, 0.12, na))
    dzerr = sz * np.exp(rng.normal(0.0, 0.12, na))
    nofill = ~has_trk
    for arr in (d0, dz, d0err, dzerr):
        arr[nofill] = -1.0

    # vertex association, quality flags
    far = (np.abs(gxy) > 3 * sxy) | (np.abs(gz) > 3 * sz)
    displaced = a_charged & far & (a_origin != ORIGIN_PU)
    pu = a_origin == ORIGIN_PU
    pvq = _choice(rng, np.array([7, 6, 5]), [0.80, 0.12, 0.08], na)
    pvq_disp = _choice(rng, np.array([7, 5, 4, 1, 0]), [0.25, 0.30, 0.25, 0.10, 0.10], na)
    pvq_pu = _choice(rng, np.array([7, 6, 1, 0]), [0.60, 0.10, 0.20, 0.10], na)
    pvq = np.where(displaced, pvq_disp, pvq)
    pvq = np.where(pu & a_charged, pvq_pu, pvq)
    pvq = np.where(a_charged, pvq, 7).astype(np.int32)
    from_pv = np.full(na, 3, dtype=np.int32)
    from_pv = np.where(displaced, _choice(rng, np.array([3, 2, 1]), [0.3, 0.5, 0.2], na), from_pv)
    from_pv = np.where(pu & a_charged, np.where(np.abs(gz) < 0.2, 1, 0), from_pv).astype(np.int32)

    r_prod = np.hypot(a_vx, a_vy)
    lih = _choice(rng, np.array([-1, 0, 1, 2]), [0.79, 0.10, 0.06, 0.05], na)
    lih = np.where(r_prod > PIXEL_LAYER_R[0], np.maximum(lih, 1), lih)
    lih = np.where(r_prod > PIXEL_LAYER_R[1], 2, lih)
    lih = np.where(a_charged, lih, -1).astype(np.int32)
    trk_q = np.where(has_trk, np.where(rng.random(na) < 0.999, 5, 1), 0).astype(np.int32)
    chi2 = np.floor(rng.gamma(4.0, 0.22, na) * np.where(rng.random(na) < 0.02, 10.0, 1.0))
    chi2 = np.where(has_trk, np.minimum(chi2, 255.0), -1.0)

    in_jet = a_jet >= 0
    puppi = np.where(
        a_charged,
        np.where(from_pv >= 2, 1.0, 0.0),
        np.where(
            in_jet,
            rng.beta(5.0, 1.0, na),
            np.where(pu, rng.beta(1.0, 5.0, na), rng.beta(2.0, 2.0, na)),
        ),
    )

    # generator-level particle ids and pT (jet constituents)
    gsel = rng.random(na)
    gen_pdg = a_pdg.copy()
    chg_h = apdg == 211
    gen_pdg = np.where(chg_h & (gsel >= 0.72) & (gsel < 0.90), 321 * a_charge, gen_pdg)
    gen_pdg = np.where(chg_h & (gsel >= 0.90), 2212 * a_charge, gen_pdg)
    nh = (apdg == 130) | (apdg == 1)
    nsign = np.where(rng.random(na) < 0.5, 1, -1)
    gen_pdg = np.where(nh, np.where(gsel < 0.35, 130, 2112 * nsign), gen_pdg)
    gen_pdg = np.where(apdg == 2, 22, gen_pdg).astype(np.int32)

    # ------------------------------------------------------------------ collection order
    # charged first, grouped by vertex (unassociated, PV, PU vertices), descending
    # eta within a group; then neutral ones by descending eta
    group = np.where(a_charged, np.where(pvq <= 1, 0, 1 + a_vtx), 1 << 20)
    perm = np.lexsort((-a_eta, group, a_event))
    a_event = a_event[perm]
    cand_counts = np.bincount(a_event, minlength=n).astype(np.int64)

    cands = {
        "pt": a_pt,
        "eta": a_eta,
        "phi": a_phi,
        "mass": a_mass,
        "charge": a_charge,
        "pdgId": a_pdg,
        "d0": d0,
        "d0Err": d0err,
        "dz": dz,
        "dzErr": dzerr,
        "pvAssocQuality": pvq,
        "lostInnerHits": lih,
        "trkQuality": trk_q,
        "trkChi2": chi2,
        "puppiWeight": puppi,
        "fromPV": from_pv,
        "jet": a_jet,
        "origin": a_origin,
        "vertex": a_vtx,
        "hasTrack": has_trk,
        "genPdgId": gen_pdg,
        "vx": a_vx,
        "vy": a_vy,
        "vz": a_vz,
    }
    for k, v in cand_extra.items():
        cands[k] = np.concatenate([v, np.full(ns_tot, -1, dtype=v.dtype)])
    cands = {k: v[perm] for k, v in cands.items()}
    cands["event"] = a_event

    # ------------------------------------------------------------------ jet summaries
    jc = cands["jet"]
    m = jc >= 0
    j = jc[m]
    c_pt = cands["pt"][m]
    c_eta = cands["eta"][m]
    c_phi = cands["phi"][m]
    c_mass = cands["mass"][m]
    c_pdg = np.abs(cands["pdgId"][m])
    c_chg = cands["charge"][m] != 0
    c_fpv = cands["fromPV"][m]
    px = _group_sum(j, c_pt * np.cos(c_phi), nj)
    py = _group_sum(j, c_pt * np.sin(c_phi), nj)
    pz = _group_sum(j, c_pt * np.sinh(c_eta), nj)
    c_e = np.sqrt((c_pt * np.cosh(c_eta)) ** 2 + c_mass**2)
    en = _group_sum(j, c_e, nj)
    raw_mass = np.sqrt(np.maximum(en**2 - px**2 - py**2 - pz**2, 0.0))
    mass = raw_mass * jec

    sum_pt = _group_sum(j, c_pt, nj)
    d_eta = c_eta - eta[j]
    d_phi = wrap_phi(c_phi - phi[j])
    c_dr = np.hypot(d_eta, d_phi)
    girth = _group_sum(j, c_pt * c_dr, nj) / pt
    w2 = c_pt**2
    sw2 = _group_sum(j, w2, nj)
    ptd = np.sqrt(sw2) / sum_pt
    me = _group_sum(j, w2 * d_eta, nj) / sw2
    mp = _group_sum(j, w2 * d_phi, nj) / sw2
    cee = _group_sum(j, w2 * d_eta**2, nj) / sw2 - me**2
    cpp = _group_sum(j, w2 * d_phi**2, nj) / sw2 - mp**2
    cep = _group_sum(j, w2 * d_eta * d_phi, nj) / sw2 - me * mp
    tr_half = 0.5 * (cee + cpp)
    disc = np.sqrt(np.maximum(tr_half**2 - (cee * cpp - cep**2), 0.0))
    axis2 = np.sqrt(np.maximum(tr_half - disc, 0.0))
    qg_sel = (c_chg & (c_fpv == 3)) | (~c_chg & (c_pt > 1.0))
    qg_mult = np.bincount(j, weights=qg_sel, minlength=nj).astype(np.int64)

    n_ch_had = np.bincount(j, weights=c_pdg == 211, minlength=nj).astype(np.int64)
    n_ne_had = np.bincount(j, weights=(c_pdg == 130) | (c_pdg == 1), minlength=nj).astype(np.int64)
    n_chg = np.bincount(j, weights=c_chg, minlength=nj).astype(np.int64)
    n_tot = np.bincount(j, minlength=nj).astype(np.int64)
    n_neu = n_tot - n_chg
    n_ele = np.bincount(j, weights=c_pdg == 11, minlength=nj).astype(np.int64)
    n_mu = np.bincount(j, weights=c_pdg == 13, minlength=nj).astype(np.int64)

    def frac(sel):
        return _group_sum(j, np.where(sel, c_e, 0.0), nj) / en

    ch_hef = frac(c_pdg == 211)
    ne_hef = frac((c_pdg == 130) | (c_pdg == 1))
    ch_emef = frac(c_pdg == 11)
    ne_emef = frac((c_pdg == 22) | (c_pdg == 2))
    mu_ef = frac(c_pdg == 13)
    # 2016 PF jet ID; within |eta| <= 2.7 exactly the JetNtuple producer's formula
    aeta_j = np.abs(eta)
    central = aeta_j <= 2.7
    loose_c = central & (n_tot > 1) & (ne_hef < 0.99) & (ne_emef < 0.99) & (
        ((aeta_j <= 2.4) & (ch_hef > 0) & (n_chg > 0) & (ch_emef < 0.99)) | (aeta_j > 2.4)
    )
    tight_c = loose_c & (ne_hef < 0.90) & (ne_emef < 0.90)
    endcap = (aeta_j > 2.7) & (aeta_j <= 3.0)
    fwd_id = (endcap & (ne_emef > 0.01) & (ne_hef < 0.98) & (n_neu > 2)) | (
        (aeta_j > 3.0) & (ne_emef < 0.90) & (n_neu > 10)
    )
    loose = loose_c | fwd_id
    tight = tight_c | fwd_id
    lep_veto = (tight_c & (mu_ef < 0.8) & (ch_emef < 0.8)) | fwd_id

    # quark/gluon likelihood: a smooth function of the three QG variables
    mult_mid = (4.0 + 7.0 * np.log(np.maximum(pt, 10.0) / 10.0)) * 1.2
    score = (
        1.1 * (mult_mid - qg_mult) / np.sqrt(mult_mid)
        + 2.5 * (ptd - 0.45) / 0.15 * 0.5
        - 0.8 * (axis2 - 0.05) / 0.03
        + rng.normal(0.0, 0.5, nj)
    )
    qgl = 1.0 / (1.0 + np.exp(-score))
    qgl = np.where(n_tot > 0, qgl, -1.0)

    # b tagging discriminants
    btag_flav = np.where(
        hadron == 5,
        rng.beta(6.0, 1.5, nj),
        np.where(hadron == 4, rng.beta(1.5, 5.0, nj), rng.beta(0.6, 15.0, nj)),
    )
    btag_csv = np.clip(btag_flav + rng.normal(0.0, 0.08, nj), 0.001, 0.999)

    gen_mass = mass * np.exp(rng.normal(0.0, 0.1, nj))
    area = rng.normal(0.50, 0.02, nj)

    # generator-level constituent pT (gen jet scale)
    gpt_scale = np.where(sum_pt > 0, gen_pt / np.maximum(sum_pt, 1e-9), 1.0)
    gen_cpt = np.zeros(cands["pt"].size)
    gen_cpt[m] = c_pt * gpt_scale[j] * np.exp(rng.normal(0.0, 0.05, j.size))
    cands["genPt"] = gen_cpt

    jets = {
        "pt": pt,
        "eta": eta,
        "phi": phi,
        "mass": mass,
        "rawPt": raw_pt,
        "rawMass": raw_mass,
        "rawFactor": 1.0 - 1.0 / jec,
        "area": area,
        "event": jet_event,
        "trueFlav": true_flav,
        "hadronFlav": hadron,
        "partonFlav": parton.astype(np.int32),
        "physFlav": phys.astype(np.int32),
        "nBHadrons": n_b_had.astype(np.int32),
        "nCHadrons": n_c_had.astype(np.int32),
        "genMatch": gen_match,
        "genPt": gen_pt,
        "genEta": gen_eta,
        "genPhi": gen_phi,
        "genMass": gen_mass,
        "qgl": qgl,
        "ptD": ptd,
        "axis2": axis2,
        "qgMult": qg_mult,
        "girth": girth,
        "btagDeepFlavB": btag_flav,
        "btagDeepB": btag_csv,
        "looseID": loose,
        "tightID": tight,
        "tightLepVeto": lep_veto,
        "chHEF": ch_hef,
        "neHEF": ne_hef,
        "chEmEF": ch_emef,
        "neEmEF": ne_emef,
        "muEF": mu_ef,
        "nConstituents": n_tot,
        "nChargedHadrons": n_ch_had,
        "nNeutralHadrons": n_ne_had,
        "nCharged": n_chg,
        "nNeutral": n_neu,
        "nElectrons": n_ele,
        "nMuons": n_mu,
        "decayLength": con["decayLength"],
        "hadronPdgId": con["hadronPdgId"],
        "hadronPt": con["hadronPt"],
        "hadronEta": con["hadronEta"],
        "hadronPhi": con["hadronPhi"],
        "hadronMass": con["hadronMass"],
    }
    jets.update(jet_extra)

    # ------------------------------------------------------------------ event summaries
    ev = cands["event"]
    soft = cands["jet"] < 0
    c_charged = cands["charge"] != 0
    central = np.abs(cands["eta"]) < ETA_TRACKER
    area_all = 2 * o.pileup_eta_max * _TWO_PI
    area_c = 2 * min(ETA_TRACKER, o.pileup_eta_max) * _TWO_PI
    spt = np.where(soft, cands["pt"], 0.0)
    rho_all = 0.7 * _group_sum(ev, spt, n) / area_all
    rho_c = 0.7 * _group_sum(ev, np.where(central, spt, 0.0), n) / area_c
    rho_cn = 0.7 * _group_sum(ev, np.where(central & ~c_charged, spt, 0.0), n) / area_c
    cpu_sel = central & c_charged & (cands["origin"] == ORIGIN_PU)
    rho_cpu = 0.7 * _group_sum(ev, np.where(cpu_sel, spt, 0.0), n) / area_c
    npvs = 1 + rng.binomial(n_pu, 0.75)
    npvs_good = npvs - rng.binomial(npvs - 1, 0.05)
    event_no = np.uint64(file_index) * np.uint64(1_000_000_000)
    event_no = event_no + np.arange(1, n + 1, dtype=np.uint64)
    lumi = 1 + (file_index * 1000 + np.arange(n) // 200) % 2_000_000_000

    pv_x = rng.normal(0.0, 0.0012, n)
    pv_y = rng.normal(0.0, 0.0012, n)

    event = {
        "run": np.ones(n, dtype=np.int64),
        "luminosityBlock": lumi.astype(np.int64),
        "event": event_no,
        "pthat": pthat,
        "weight": np.ones(n),
        "nPU": n_pu.astype(np.int64),
        "nTrueInt": mu_true,
        "pvX": pv_x,
        "pvY": pv_y,
        "pvZ": pv_z,
        "npvs": npvs.astype(np.int64),
        "npvsGood": npvs_good.astype(np.int64),
        "rhoAll": rho_all,
        "rhoCentral": rho_c,
        "rhoCentralNeutral": rho_cn,
        "rhoCentralChargedPileUp": rho_cpu,
    }

    return Events(
        n_events=n,
        event=event,
        jet_counts=n_jets.astype(np.int64),
        jets=jets,
        cand_counts=cand_counts,
        cands=cands,
        options=o,
        process=process,
        truth=truth or {},
    )
