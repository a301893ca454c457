"""Physics model of the synthetic generator: multijet QCD events with tracks.

This module describes the model and dispatches to the processes; the code is
split so that nothing imports in a circle:

- :mod:`.physics`: constants, :class:`ModelOptions`, :class:`Events`, helpers (imports nothing of the package);
- :mod:`.jets`: jet flavour, generator truth, constituents (physics);
- :mod:`.detector`: underlying event, pile-up, detector response, summaries (physics);
- :mod:`.qcd`, :mod:`.llp`: the processes' hard jets, then jets + detector;
- :mod:`.model` (here): :func:`generate_events` → qcd / llp;
- :mod:`.pfnano`, :mod:`.jetntuple`: the writers (physics, :mod:`._rootio`).

(The long-lived-particle signal, ``process="llp"``, in :mod:`.llp`, builds its
own hard jets and then shares the QCD process's jet constituents, flavour,
underlying event, pile-up and detector steps.)

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

Displaced background (:func:`.detector.displaced_background`)
    * What makes real QCD tracks displaced, on top of the in-jet K0S/Λ above: a fraction
      ``displaced_fraction`` (0.13) of the otherwise prompt charged candidates (jets,
      underlying event, pile-up) comes from K0S/Λ decays (50 %, transverse radius
      r ~ Exp(``displaced_radius`` 8 cm), < 60 cm), photon conversions (25 %) or nuclear
      interactions (25 %) at the tracker's material radii (4.4-49.8 cm); the track leaves
      its vertex at θ ~ Rayleigh(``displaced_angle`` 0.25 rad·GeV / p) to the radial
      direction (× 3 for nuclear interactions), so |d0| = r |sin θ|; a fraction
      ``bad_track_fraction`` (0.025) of the charged tracks is badly measured (smearing
      × U(3, 20), stored error unchanged). Truth: ``cands["background"]`` (``BG_*``).
      Both fractions at 0: no random number drawn, the samples of earlier versions.
    * Calibrated against the real ``pfnano.root`` (TeV dijets; the generator with
      ``pt_hat_min`` 1300, ``pt_hat_max`` 1800 GeV), charged tracks with details, in bins
      of track pT (real: 10 events; errors binomial, and bootstrap over tracks for the
      quantile; generated: 150 events, seed 2024 —
      ``tests/test_displaced_background.py`` keeps them within 3 σ and a factor 2):

      ==========  ===================  ===================  ====================  ===================
      pT (GeV)    real |d0/σ|>3        generated            real q90 |d0|         generated q90
      ==========  ===================  ===================  ====================  ===================
      1-3         15.0 ± 0.9 %         15.4 ± 0.5 %         3.3 ± 1.1 mm          3.3 mm
      3-10        15.4 ± 2.3 %         15.8 ± 0.8 %         0.80 ± 0.76 mm        0.73 mm
      > 10        18.7 ± 2.6 %         17.9 ± 0.5 %         0.29 ± 0.21 mm        0.28 mm
      ==========  ===================  ===================  ====================  ===================

      Before this background: 1.6 %, 3.2 %, 4.5 % and 0.12, 0.04, 0.02 mm.
      Known difference: the median |d0/σ| of all charged tracks is 0.85 generated vs 0.73
      real (the real core is narrower than its stored errors say; not modelled).
      ``configs/llp_vs_qcd.yaml``'s LLP vs QCD AUC (``scripts/train_example.py``) is
      0.911 ± 0.004 before and after; b vs light jets 0.988 → 0.968.
    * The jet spectrum is configurable (``pt_hat_min``, ``pt_hat_max``,
      ``pt_spectrum_index``, ``jets_min``/``jets_max``): the TeV dijets of
      ``pfnano.root`` are ``pt_hat_min: 1300, pt_hat_max: 1800``.

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

from typing import Any

import numpy as np

from .llp import generate_llp
from .physics import (
    PROCESS_OPTIONS,
    PROCESSES,
    Events,
    ModelOptions,
    check_process_options,
    make_rng,
    wrap_phi,
)
from .qcd import generate_qcd

__all__ = [
    "PROCESSES",
    "PROCESS_OPTIONS",
    "Events",
    "ModelOptions",
    "check_process_options",
    "generate_events",
    "make_rng",
    "wrap_phi",
]


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
        return generate_llp(int(n_events), rng, opts, int(file_index))
    return generate_qcd(int(n_events), rng, opts, int(file_index))
