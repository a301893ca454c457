"""Synthetic CMS-like data in the exact on-disk schemas of real CMS files.

One physics model (:mod:`jettracks.generate.model`: multijet QCD events with
flavoured jets, charged/neutral constituents, underlying event and pile-up,
prompt and b/c-decay tracks with impact parameters) for two processes
(``process=``):

``qcd`` (default)
    QCD multijets, the background.
``llp``
    Long-lived-particle signal (:mod:`jettracks.generate.llp`): a heavy
    mediator decaying to two neutral LLPs of mass ``llp_mass`` and proper decay
    length ``llp_ctau``, each decaying at a displaced vertex to a d d̄ or b b̄
    pair: jets whose tracks have impact parameters from the decay geometry,
    plus ISR jets and the same pile-up / underlying event as ``qcd``.

written in three layouts:

``pfnano``
    NanoAOD + PF candidates, tree ``Events`` (one entry per event), LZMA, with
    ``PFCands_d0``/``d0Err``/``dz``/``dzErr`` and optional ``JetPFCands`` links
    (:mod:`jettracks.generate.pfnano`).
``jetntuple``
    CMS open data record 12100, tree ``AK4jets/jetTree`` (one entry per jet,
    66 branches, no impact parameters), ZLIB (:mod:`jettracks.generate.jetntuple`).
``delphes``
    Delphes 3, tree ``Delphes`` (one entry per event): ``Jet.*`` and ``Track.*`` with
    ``D0``/``ErrorD0``/``DZ``/``ErrorDZ`` in **mm** and Delphes' ``D0`` sign, counters
    ``Jet_size``/``Track_size``, Delphes' jet flavours (:mod:`jettracks.generate.delphes`).

each in either container (``container=``, ``--container``): ``ttree`` (default, as the
real files) or ``rntuple`` (the same content as a ROOT RNTuple, collections as
vectors of records: :mod:`jettracks.generate.container`).

For a given ``(seed, file_index, options)`` every format holds the same events
(the JetNtuple keeps the jets with pT > 30 GeV, |η| < 2.5 of events whose two
leading jets pass), and the arrays are identical run after run.

>>> from jettracks.generate import generate_dataset
>>> paths = generate_dataset("data/demo/qcd", format="pfnano", n_files=4,
...                          events_per_file=500, seed=1)      # doctest: +SKIP
>>> paths.action, paths.message                                # doctest: +SKIP
('generated', 'generated 4 files data/demo/qcd: pfnano_*.root (pfnano qcd, 4 files x 500 events, seed 1)')

The directory records what was generated (``.jettracks-generate.json``): the same
call again reuses the files; other parameters over existing files are refused
unless ``overwrite=True`` (:mod:`jettracks.generate.sidecar`).

Options (``**options`` of :func:`generate_file` / :func:`generate_dataset`)
============================================================================

Physics (:class:`~jettracks.generate.model.ModelOptions`; GeV, cm):

==========================  =========  ==============================================
option                      default    meaning
==========================  =========  ==============================================
``pileup_candidates``       250        mean number of underlying-event + pile-up PF
                                       candidates per event (real 2016 PFNano:
                                       ~1,900; the default keeps the demo fast)
``pileup_mu``               20         mean number of pile-up interactions
``pileup_eta_max``          3.0        |η| range of those candidates
``ue_fraction``             0.2        share of them from the primary vertex
``jets_min``, ``jets_max``  2, 8       generated jets per event
``jet_mult_ratio``          0.55       P(n jets) ∝ ratio^(n - jets_min)
``jet_pt_min``              20         minimum generated jet pT
``jet_eta_max``             2.5        jets are generated in |η| < jet_eta_max
``pt_hat_min/max``          35, 3000   hard-scale range
``pt_spectrum_index``       4          dσ/dp̂T ∝ p̂T^-index
``frac_g/uds/c/b``          .50/.36/   flavour mix of the jets
                            .08/.06
``g_to_bb``, ``g_to_cc``    .015, .03  gluon jets holding a b / c hadron pair
``track_pt_min``            0.5        charged candidates below have no track
                                       details (d0 = dz = -1)
``dxy_res_const/slope``     .0012,     σ(dxy) = const ⊕ slope/pT  (cm, cm·GeV)
                            .0095
``dz_res_const/slope``      .0019,     σ(dz) likewise
                            .0095
``ctau_b``                  0.0455     b-hadron cτ (cm)
``secondary_fraction``      0.005      K0S/Λ decay products among jet tracks
==========================  =========  ==============================================

Process ``llp`` only (an error with ``qcd``; details in :mod:`jettracks.generate.llp`):

==========================  =========  ==============================================
option                      default    meaning
==========================  =========  ==============================================
``llp_mass``                50         LLP mass, GeV (>= 1; >= 10 for ``bb``)
``llp_ctau``                1.0        LLP proper decay length cτ, cm; must be in
                                       0.01–100 (0.1 mm – 1 m), else ValueError
``llp_per_event``           2          LLPs per event: 2 (mediator → LLP pair) or 1
                                       (LLP + an invisible partner)
``llp_decay``               "dd"       LLP → d d̄ (``"dd"``) or b b̄ (``"bb"``)
``mediator_mass``           400        mediator mass, GeV (> 2 × ``llp_mass``)
==========================  =========  ==============================================

Charged LLP products made beyond the tracker (r > 60 cm or |z| > 120 cm) have
no track: they become neutral calorimeter candidates (d0Err = -1); products of
decays beyond the calorimeters are lost. ISR jets follow ``jets_min/max``,
``jet_mult_ratio`` (0–6 of them), ``jet_pt_min``, ``jet_eta_max`` and the
flavour mix. The files carry no signal flag or LLP truth branch beyond the
real formats' (PFNano's ``GenPart`` holds the mediator, pdgId 35, and the LLPs,
pdgId 6000113): label signal by dataset.

Writer, ``pfnano``: ``links`` (True), ``compression`` ("lzma"),
``compression_level`` (9), ``basket_bytes`` (32000), ``basket_events`` (None).
Writer, ``jetntuple``: ``compression`` ("zlib"), ``compression_level`` (1),
``basket_bytes`` (32000), ``basket_jets`` (None), ``mc_info`` (True; False
writes the producer's -1 defaults of ``pthat``, ``Pileup_nPU``, ``Pileup_nTrueInt``).

The files have the basket layout of the real ones (measured on ``pfnano.root``:
LZMA level 9, each branch its own baskets of ~32 kB uncompressed, i.e. ~4
events a ``PFCands_*`` basket at ~1,900 candidates an event, one basket for the
light ``Jet_*`` branches of its 10 events): ROOT's rule, a basket closes when it
holds ``basket_bytes`` (:func:`jettracks.generate._rootio.write_tree`). Chunks
of a run then decompress only their own baskets. ``basket_events`` /
``basket_jets`` give uproot's layout instead (one basket per branch per
``extend`` call, all branches cut at the same entries).
``compression`` is one of ``lzma``, ``zlib``, ``lz4``, ``zstd``, ``none``.

Unknown options raise ``ValueError`` naming them.

Speed (measured on the 2-core project machine, 500 events a file, default
options, ~290 PF candidates an event): ~0.65 s of CPU per PFNano file (LZMA
compression is 3/4 of it) and ~0.2 s per JetNtuple file; the demo's 2 × 24
files take ~21 s of CPU, i.e. ~11 s on two idle workers. ``pileup_candidates=1900``
(real PFNano density) costs ~4 s per PFNano file.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import delphes, jetntuple, pfnano, sidecar
from .container import CONTAINERS, check_container, write_rntuple
from ..io.atomic import atomic_path
from .model import (
    PROCESSES,
    Events,
    ModelOptions,
    check_process_options,
    generate_events,
    make_rng,
)
from .sidecar import GenerateError

__all__ = [
    "CONTAINERS",
    "FORMATS",
    "PROCESSES",
    "Events",
    "GenerateError",
    "GeneratedFiles",
    "ModelOptions",
    "generate_dataset",
    "generate_events",
    "generate_file",
    "make_rng",
    "split_options",
]

#: Output formats.
FORMATS: tuple[str, ...] = ("pfnano", "jetntuple", "delphes")

_WRITERS = {"pfnano": pfnano, "jetntuple": jetntuple, "delphes": delphes}


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"format {format!r} is not one of {FORMATS}")


def _check_process(process: str) -> None:
    if process not in PROCESSES:
        raise ValueError(f"process {process!r} is not one of {PROCESSES}")


def _check_count(name: str, value: Any, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def split_options(format: str, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``options`` into (physics model options, writer options) for ``format``.

    Raises ValueError naming any option neither part knows.
    """
    _check_format(format)
    model_names = set(ModelOptions.names())
    writer_names = set(_WRITERS[format].DEFAULTS)
    unknown = sorted(set(options) - model_names - writer_names)
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for format {format!r}; physics options: "
            f"{', '.join(ModelOptions.names())}; writer options: {', '.join(sorted(writer_names))}"
        )
    model = {k: v for k, v in options.items() if k in model_names}
    writer = {k: v for k, v in options.items() if k in writer_names}
    ModelOptions.from_kwargs(model)  # validate early
    return model, writer


def generate_file(
    path: str | os.PathLike,
    *,
    format: str,
    n_events: int,
    seed: int,
    file_index: int = 0,
    process: str = "qcd",
    container: str = "ttree",
    **options: Any,
) -> Path:
    """Generate one file of ``n_events`` events in ``format`` at ``path``.

    ``container``: ``ttree`` (default, the real files' layout) or ``rntuple``
    (:mod:`jettracks.generate.container`: the same content as a ROOT RNTuple).

    The random stream is ``SeedSequence(seed, spawn_key=(file_index,))``: the
    same ``(seed, file_index, options)`` give identical arrays, in either
    format. The file is written under a temporary name beside ``path`` and
    renamed atomically, so ``path`` never holds a half-written file.

    Raises:
        ValueError: unknown ``format``/``process``/option, an option of another
            process (``llp_*`` with ``qcd``), an out-of-range option (e.g.
            ``llp_ctau``), ``n_events < 0``, negative ``seed`` or ``file_index``.
    """
    _check_format(format)
    _check_process(process)
    check_container(container)
    n_events = _check_count("n_events", n_events)
    seed = _check_count("seed", seed)
    file_index = _check_count("file_index", file_index)
    model_opts, writer_opts = split_options(format, options)
    check_process_options(process, model_opts)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    events = generate_events(
        n_events, make_rng(seed, file_index), process=process, file_index=file_index, **model_opts
    )
    with atomic_path(path) as tmp:
        if container == "rntuple":
            write_rntuple(tmp, format, _WRITERS[format].TREE, events, **writer_opts)
        else:
            _WRITERS[format].write(tmp, events, **writer_opts)
    return path


def _generate_task(
    path: str, format: str, n_events: int, seed: int, file_index: int, process: str,
    options: dict[str, Any], container: str = "ttree",
) -> str:
    """One file of a dataset (a Dask task: plain, picklable arguments)."""
    return str(
        generate_file(
            path, format=format, n_events=n_events, seed=seed, file_index=file_index,
            process=process, container=container, **options,
        )
    )


class GeneratedFiles(list):
    """The sorted paths of a generated dataset (a ``list`` of ``Path``) plus what was done.

    Attributes:
        action: ``generated``, ``reused``, ``completed`` or ``replaced``
            (:mod:`jettracks.generate.sidecar`).
        message: one line saying so, naming the directory and the parameters.
    """

    action: str = "generated"
    message: str = ""


def _record_params(
    format: str, process: str, n_files: int, events_per_file: int, seed: int, options: dict[str, Any],
    container: str = "ttree",
) -> dict[str, Any]:
    """The parameters that decide a dataset's content, defaults resolved, JSON-normalised."""
    import dataclasses
    import json

    model, writer = split_options(format, options)
    resolved = {
        "model": dataclasses.asdict(ModelOptions.from_kwargs(model)),
        "writer": {**_WRITERS[format].DEFAULTS, **writer},
    }
    params = {
        "format": format,
        "process": process,
        "n_files": n_files,
        "events_per_file": events_per_file,
        "seed": seed,
        "options": resolved,
    }
    if container != "ttree":  # recorded only when not the default: older records stay valid
        params["container"] = container
    return json.loads(json.dumps(params, sort_keys=True, default=str))


def _same_as_regenerated(path: Path, *, format: str, n_events: int, seed: int, file_index: int,
                         process: str, options: dict[str, Any], container: str = "ttree") -> bool:
    """Whether ``path`` holds the arrays ``generate_file`` makes with these arguments."""
    import tempfile

    import awkward as ak
    import uproot

    tree = _WRITERS[format].TREE
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".check-") as tmp:
        ref = generate_file(Path(tmp) / path.name, format=format, n_events=n_events, seed=seed,
                            file_index=file_index, process=process, container=container, **options)
        try:
            with uproot.open(path) as f, uproot.open(ref) as g:
                a, b = f[tree], g[tree]
                if container == "rntuple":
                    return a.num_entries == b.num_entries and ak.array_equal(
                        a.arrays(), b.arrays(), equal_nan=True)
                names = b.keys()
                if a.num_entries != b.num_entries or set(a.keys()) != set(names):
                    return False
                return all(ak.array_equal(a[k].array(), b[k].array(), equal_nan=True)
                           for k in names if not b[k].keys())
        except Exception:  # noqa: BLE001 - an unreadable file is not these parameters' file
            return False


def generate_dataset(
    out_dir: str | os.PathLike,
    *,
    format: str,
    n_files: int,
    events_per_file: int,
    seed: int = 1,
    process: str = "qcd",
    prefix: str | None = None,
    client=None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    container: str = "ttree",
    **options: Any,
) -> GeneratedFiles:
    """Generate ``n_files`` files ``{prefix or format}_{i:04d}.root`` in ``out_dir``.

    File ``i`` is ``generate_file(..., seed=seed, file_index=i)``, so files are
    independent and the dataset is reproducible file by file.

    The directory keeps a record of what the generator wrote there
    (``.jettracks-generate.json``, :mod:`jettracks.generate.sidecar`): the same call
    again **reuses** the files (and generates any that are absent); a call with
    other parameters (seed, events per file, fewer files, process, options) over
    recorded files, or over ``{stem}_NNNN.root`` files without a record, is
    **refused** with :class:`~jettracks.generate.sidecar.GenerateError` (a
    ``ValueError``, one line) unless ``overwrite``, which **replaces** them: only the
    files the record lists (or the names this call writes) are deleted.

    Args:
        client: a ``dask.distributed.Client``: the files are made on its workers
            with ``client.map`` (the workers must see ``out_dir``); ``None``
            runs serially here.
        overwrite: replace files of other parameters (and regenerate files of the same).
        log: called with one line saying what was done (``reused ...``,
            ``generated ...``, ``replaced ...``); the same line is ``result.message``.
        container: ``ttree`` (default) or ``rntuple`` (:mod:`jettracks.generate.container`);
            recorded with the parameters, so files of the other container are not reused.

    Returns:
        The sorted list of all ``n_files`` paths (:class:`GeneratedFiles`, with
        ``action`` and ``message``).

    Raises:
        ValueError: bad arguments or options; ``GenerateError`` as above.
    """
    _check_format(format)
    _check_process(process)
    check_container(container)
    n_files = _check_count("n_files", n_files)
    events_per_file = _check_count("events_per_file", events_per_file)
    seed = _check_count("seed", seed)
    if prefix is not None and (not prefix or "/" in prefix or os.sep in prefix):
        raise ValueError(f"prefix must be a non-empty file-name prefix, got {prefix!r}")
    model_opts, _ = split_options(format, options)  # fail here, not on a worker
    check_process_options(process, model_opts)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = prefix or format
    paths = [out / f"{stem}_{i:04d}.root" for i in range(n_files)]
    params = _record_params(format, process, n_files, events_per_file, seed, options, container)
    def adopt(files: list[Path]) -> bool:
        return all(
            _same_as_regenerated(f, format=format, n_events=events_per_file, seed=seed,
                                 file_index=paths.index(f), process=process, options=options,
                                 container=container)
            for f in dict.fromkeys([files[0], files[-1]])
        )

    plan = sidecar.plan_generation(out, stem, params, paths, overwrite=overwrite, adopt=adopt)
    for path in plan.delete:
        path.unlink(missing_ok=True)
    # Recorded before the files: an interrupted run is completed by the same call.
    sidecar.write_record(out, stem, params, [p.name for p in paths])
    todo = plan.todo

    if todo:
        args = (
            [str(paths[i]) for i in todo],
            [format] * len(todo),
            [events_per_file] * len(todo),
            [seed] * len(todo),
            todo,
            [process] * len(todo),
            [dict(options)] * len(todo),
            [container] * len(todo),
        )
        if client is None:
            for a in zip(*args, strict=True):
                _generate_task(*a)
        else:
            futures = client.map(_generate_task, *args, pure=False)
            client.gather(futures)
    result = GeneratedFiles(sorted(paths))
    result.action, result.message = plan.action, plan.message
    if log is not None:
        log(plan.message)
    return result
