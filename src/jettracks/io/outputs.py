"""Run outputs: histograms (coffea + ROOT), plots (mplhep) and the run report.

Layout of a run directory::

    hists.coffea        coffea.util.save of {"hists": ..., "cutflow": ...}
    hists.root          one TH1 per (dataset, flavour, histogram): DATASET/NAME_FLAVOUR
    plots/*.png         mplhep CMS style; dxy by flavour on log y, units on axes
    ml/part-*.arrow     per-jet ML columns, one part per chunk (Arrow IPC, written by the workers)
    ml/part-*.parquet   the same, finalized: a few files per dataset and split
    report.json         config, versions, files, entries per file, cut flow, timing

Every file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .outfs import RemotePath

__all__ = ["category_slices", "dataset_label", "draw_label", "package_versions", "root_slices", "save_hists", "save_plots", "save_report", "write_outputs"]


def save_hists(out_dir: Path, hists: Mapping[str, Any], cutflow: Mapping[str, Any]) -> list[Path]:
    """Write ``hists.coffea`` and ``hists.root``; return their paths.

    ``hists.root`` holds one histogram per (dataset, flavour) with any content (flow bins
    included), ``DATASET/NAME_FLAVOUR``: ``h[{"dataset": d, "flavour": f}]``.
    """
    import uproot
    from coffea.util import save

    coffea_path = out_dir / "hists.coffea"
    with atomic_path(coffea_path) as tmp:
        save({"hists": dict(hists), "cutflow": dict(cutflow)}, str(tmp))
    root_path = out_dir / "hists.root"
    with atomic_path(root_path) as tmp, uproot.recreate(tmp) as f:
        # One bulk update: uproot then writes the streamer info once, not after every object.
        f.update({f"{dataset}/{name}_{flavour}": th1
                  for name, h in hists.items() for dataset, flavour, th1 in root_slices(h)})
    return [coffea_path, root_path]


def root_slices(h: Any) -> list[tuple[str, str, Any]]:
    """``(dataset, flavour, TH1)`` of :func:`category_slices`, as the uproot objects
    ``uproot.to_writable`` makes of each slice (``TH1D``: values and, for a ``Weight``
    storage, variances, flow bins included; ROOT's entries and sums; the axis with its label).

    Built from the histogram's view with uproot's public ``to_TH1x``/``to_TAxis``: making a
    ``Hist`` of every slice (3.6 ms) and converting it (11 ms) was half of writing a run's
    ``hists.root`` (70 slices: 27.7 ms, 18.6 ms built so). Other
    storages or axes than a 1-D double or weighted histogram over a numeric axis go
    through :func:`category_slices` and ``uproot.to_writable`` (tested equal, member by member).
    """
    import boost_histogram as bh
    import uproot

    rest = [a for a in h.axes if a.name not in ("dataset", "flavour")]
    weighted = h.storage_type is bh.storage.Weight
    if len(rest) != 1 or not (weighted or h.storage_type is bh.storage.Double) or isinstance(
            rest[0], (bh.axis.StrCategory, bh.axis.IntCategory)):
        return [(d, f, uproot.to_writable(sub)) for d, f, sub in category_slices(h)]
    axis = rest[0]
    edges = np.asarray(axis.edges, dtype=np.float64)
    centers = (edges[:-1] + edges[1:]) / 2.0
    regular = isinstance(axis, bh.axis.Regular) and getattr(axis, "transform", None) is None
    out = []
    for dataset, flavour, cell in _category_cells(h):
        values = np.asarray(cell["value"] if weighted else cell, dtype=np.float64)
        data = values.astype(">f8")
        inner = values[1:-1]  # ROOT's sums: without the flow bins, at the bin centres
        fxaxis = uproot.writing.identify.to_TAxis(
            fName="xaxis", fTitle=getattr(axis, "label", ""), fNbins=len(axis), fXmin=edges[0], fXmax=edges[-1],
            fXbins=np.array([], dtype=">f8") if regular else edges,
        )
        out.append((dataset, flavour, uproot.writing.identify.to_TH1x(
            fName=None, fTitle="", data=data, fEntries=data.sum(), fTsumw=inner.sum(), fTsumw2=inner.sum(),
            fTsumwx=(inner * centers).sum(), fTsumwx2=(inner * centers**2).sum(),
            fSumw2=np.asarray(cell["variance"], dtype=">f8") if weighted else None, fXaxis=fxaxis,
        )))
    return out


def category_slices(h: Any) -> list[tuple[str, str, Any]]:
    """``(dataset, flavour, h[{"dataset": dataset, "flavour": flavour}])`` for each pair with
    any content (a value or a variance, flow bins included), in the axes' order.

    The slices are made from one view of ``h`` (the same axes, storage and bin contents as
    ``h[{...}]``, which was a third of writing ``hists.root``).
    """
    import hist

    rest = [a for a in h.axes if a.name not in ("dataset", "flavour")]
    out = []
    for dataset, flavour, cell in _category_cells(h):
        sub = hist.Hist(*rest, storage=h.storage_type())
        sub.view(flow=True)[...] = cell
        out.append((dataset, flavour, sub))
    return out


def _category_cells(h: Any) -> list[tuple[str, str, Any]]:
    """``(dataset, flavour, flow view of that slice)`` for each pair with any content."""
    names = [a.name for a in h.axes]
    i_dataset, i_flavour = names.index("dataset"), names.index("flavour")
    # Category axes keep their bins first in the flow view (an overflow bin comes last).
    view = np.moveaxis(np.asarray(h.view(flow=True)), (i_dataset, i_flavour), (0, 1))
    out = []
    for a, dataset in enumerate(h.axes[i_dataset]):
        for b, flavour in enumerate(h.axes[i_flavour]):
            cell = view[a, b]
            if cell.dtype.names:
                empty = all(not np.any(cell[field]) for field in cell.dtype.names)
            else:
                empty = not np.any(cell)
            if not empty:
                out.append((dataset, flavour, cell))
    return out


#: Plot file stem -> (histogram, y scale, what is counted). The lifetime-signed IP and its
#: significance are drawn twice: log y (the tails) and linear y (the core's asymmetry).
_PLOTS = {
    "track_dxy": ("track_dxy", "log", "Tracks"),
    "track_abs_dxy": ("track_abs_dxy", "log", "Tracks"),
    "track_dxy_significance": ("track_dxy_significance", "log", "Tracks"),
    "track_sdxy": ("track_sdxy", "log", "Tracks"),
    "track_sdxy_linear": ("track_sdxy", "linear", "Tracks"),
    "track_sdxy_significance": ("track_sdxy_significance", "log", "Tracks"),
    "track_sdxy_significance_linear": ("track_sdxy_significance", "linear", "Tracks"),
    "jet_pt": ("jet_pt", "log", "Jets"),
    "jet_eta": ("jet_eta", "linear", "Jets"),
    "jet_n_tracks": ("jet_n_tracks", "linear", "Jets"),
    "track_jet_dr": ("track_jet_dr", "linear", "Tracks"),
}


#: Plot labels (top left, then the second, lighter part): never a bare "CMS" / "CMS Simulation",
#: which are reserved for the collaboration's own results.
LABEL_SYNTHETIC = ("jettracks synthetic", "")
LABEL_OPEN_DATA = ("CMS Open Data", "Private work")
LABEL_OPEN_SIMULATION = ("CMS Open Data simulation", "Private work")


def _generated_here(path: str) -> bool:
    """Whether the generator's record (``.jettracks-generate.json`` beside the file) lists it."""
    try:
        p = Path(path)
        record = p.parent / ".jettracks-generate.json"
        return record.is_file() and f'"{p.name}"' in record.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return False


def dataset_label(dataset: Any, files: list[str] | None = None) -> tuple[str, str]:
    """``(label, sublabel)`` of a dataset's plots, decided from its metadata.

    - ``metadata.plot_label`` (a string, or ``[label, sublabel]``): as given;
    - generated samples (``generate:`` in the config, ``metadata.synthetic: true``, or the
      generator's record beside the first file lists it): ``jettracks synthetic``;
    - collision data (``metadata.is_mc: false``): ``CMS Open Data`` + ``Private work``;
    - other simulation (real files, e.g. CMS open-data simulation): ``CMS Open Data
      simulation`` + ``Private work``.
    """
    meta = dict(getattr(dataset, "metadata", None) or {})
    given = meta.get("plot_label")
    if given:
        return (given, "") if isinstance(given, str) else (str(given[0]), str(given[1]) if len(given) > 1 else "")
    if getattr(dataset, "generate", None) is not None or meta.get("synthetic") or (
        files and _generated_here(files[0])
    ):
        return LABEL_SYNTHETIC
    if not meta.get("is_mc", True):
        return LABEL_OPEN_DATA
    return LABEL_OPEN_SIMULATION


def draw_label(ax: Any, label: tuple[str, str], rlabel: str = "jettracks") -> None:
    """The experiment-style label: bold ``label[0]`` with italic ``label[1]`` below it, inside
    the axes at the top left; ``rlabel`` (e.g. luminosity and energy) above the axes, right."""
    ax.text(0.03, 0.97, label[0], transform=ax.transAxes, ha="left", va="top",
            fontweight="bold", fontsize="large")
    if label[1]:
        ax.text(0.03, 0.90, label[1], transform=ax.transAxes, ha="left", va="top",
                fontstyle="italic", fontsize="medium")
    if rlabel:
        ax.text(1.0, 1.01, rlabel, transform=ax.transAxes, ha="right", va="bottom", fontsize="medium")


def save_plots(
    out_dir: Path,
    hists: Mapping[str, Any],
    *,
    is_data: bool = False,
    labels: Mapping[str, tuple[str, str]] | None = None,
) -> list[Path]:
    """One PNG per (histogram, dataset): distributions by flavour, normalised to unit area.

    ``labels``: dataset -> ``(label, sublabel)`` (:func:`dataset_label`); a dataset without
    one gets ``CMS Open Data`` (``is_data``) or ``jettracks synthetic``.
    """
    import matplotlib.style
    import mplhep as hep

    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    # Figure objects and a style context: no pyplot state, no global backend switch
    # (a notebook calling this keeps its inline plots and its style).
    # Minor ticks off: on log axes they are most of the drawing time (~2,000 tick
    # artists for seven plots; measured 1.9 s of CPU for the set with them).
    light = {"xtick.minor.visible": False, "ytick.minor.visible": False}
    with matplotlib.style.context([hep.style.CMS, light]):
        return _save_plots(plot_dir, hists, is_data, dict(labels or {}))


def _save_plots(plot_dir: Path, hists: Mapping[str, Any], is_data: bool, labels: dict) -> list[Path]:
    import mplhep as hep
    from matplotlib.figure import Figure

    written = []
    for name, (hist_name, yscale, unit) in _PLOTS.items():
        h = hists.get(hist_name)
        if h is None:
            continue
        for dataset in h.axes["dataset"]:
            per_flavour = h[{"dataset": dataset}]
            fig = Figure(figsize=(9, 7))
            ax = fig.subplots()
            drawn = 0
            for flavour in per_flavour.axes["flavour"]:
                sub = per_flavour[{"flavour": flavour}]
                total = sub.sum()
                if total <= 0:
                    continue
                hep.histplot(sub / total, ax=ax, label=f"{flavour} ({int(total):,})", yerr=False)
                drawn += 1
            if not drawn:
                continue
            ax.set_yscale(yscale)
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo, hi * (30 if yscale == "log" else 1.35))  # room for the label
            if name == "track_abs_dxy":
                ax.set_xscale("log")
            ax.set_xlabel(per_flavour.axes[-1].label)
            ax.set_ylabel(f"{unit} (normalised)")
            ax.legend(title=f"{dataset}: jet flavour", fontsize="x-small", title_fontsize="small", loc="upper right")
            draw_label(ax, labels.get(dataset, LABEL_OPEN_DATA if is_data else LABEL_SYNTHETIC))
            path = plot_dir / f"{name}_{dataset}.png"
            with atomic_path(path) as tmp:
                # zlib level 1: a fifth of the level-6 encoding time for ~20% larger files.
                fig.savefig(tmp, format="png", dpi=80, pil_kwargs={"compress_level": 1})
            written.append(path)
    return written


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the results (of the modules this process
    imported: read once per process, ~15 ms from the installed metadata)."""
    return dict(_package_versions())


@functools.lru_cache(maxsize=1)
def _package_versions() -> dict[str, str]:
    from importlib import metadata

    names = [
        "jettracks", "coffea", "uproot", "awkward", "numba", "numpy", "dask",
        "distributed", "dask-awkward", "hist", "pyarrow", "pydantic",
    ]
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [_jsonable(v) for v in obj]
        return sorted(items, key=str) if isinstance(obj, (set, frozenset)) else items
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (Path, RemotePath)):
        return str(obj)
    return obj


def save_report(out_dir: Path, report: Any) -> Path:
    """Write ``report.json`` (atomic) from a :class:`~jettracks.report.RunReport` (or a mapping)."""
    from ..report import RunReport

    path = out_dir / "report.json"
    if not isinstance(report, RunReport):
        report = RunReport.model_validate(_jsonable(report))
    with atomic_path(path) as tmp:
        tmp.write_text(report.to_json())
    return path


def write_outputs(
    cfg: Any,
    out_dir: Path,
    report: Any,
    output: Mapping[str, Any],
    *,
    console: Any = None,
    scanner: Any = None,
) -> None:
    """The run's outputs after its chunks: histograms, the ML dataset's manifest, plots.

    ``scanner``: a :class:`~jettracks.io.mldata.PartScanner` that scanned the ML parts while
    the chunks ran (:func:`~jettracks.io.mldata.finalize` uses its scans), or None.

    The ML dataset is exactly the parts in ``output["ml_parts"]`` (this run's chunks);
    ``report`` gets ``ml_dataset`` and ``plots``.

    Raises:
        FileNotFoundError: an ML part of this run is missing at the client.
        OSError: a write failed (full disk, read-only directory).
    """
    hists, cutflow = output.get("hists", {}), output.get("cutflow", {})
    ml_parts = output.get("ml_parts", [])
    norm_cfg = getattr(cfg, "normalisation", None)
    lumi = getattr(norm_cfg, "lumi", None)
    if hists:
        from ..normalisation import normalise

        # Simulation with xsec: the *_weighted histograms scaled to xsec · lumi / Σ genWeight.
        report["normalisation"] = normalise(hists, output.get("genweights", {}), cfg.datasets, lumi)
    # The histogram files are written while the ML finalize's writer threads encode its
    # files (``meanwhile``): not on a thread beside finalize, as uproot's writing is pure
    # Python, and while it held the GIL each of finalize's short Arrow calls waited out a
    # switch interval; by then finalize's own thread only waits.
    written: list[Path] = []

    def write_hists() -> None:
        written.extend(save_hists(out_dir, hists, cutflow))

    _write_other_outputs(cfg, out_dir, report, output, ml_parts, console, scanner,
                         meanwhile=write_hists if hists else None)
    if hists and not written:  # no ML dataset to finalize
        save_hists(out_dir, hists, cutflow)
    if cfg.output.plots and hists:
        is_mc = all(ds.metadata.get("is_mc", True) for ds in cfg.datasets.values())
        files: dict[str, list[str]] = {}
        for f in report.get("files") or []:
            files.setdefault(f["dataset"], []).append(f["file"])
        labels = {name: dataset_label(ds, files.get(name)) for name, ds in cfg.datasets.items()}
        report["plots"] = [p.name for p in save_plots(out_dir, hists, is_data=not is_mc, labels=labels)]
        data = [n for n, ds in cfg.datasets.items() if not ds.metadata.get("is_mc", True)]
        mc = [n for n, ds in cfg.datasets.items() if ds.metadata.get("is_mc", True)]
        if data and mc:  # a run with both: the data/simulation comparison
            from ..normalisation import save_data_mc_plots

            report["plots"] += [p.name for p in save_data_mc_plots(
                out_dir, hists, data=data, mc=mc, lumi=lumi,
                sqrt_s_tev=getattr(norm_cfg, "sqrt_s_tev", 13.0), label=labels[data[0]],
            )]


def _write_other_outputs(cfg: Any, out_dir: Path, report: Any, output: Mapping[str, Any], ml_parts: list,
                         console: Any, scanner: Any = None, meanwhile: Any = None) -> None:
    """Per-lumisection tables and the finalized ML dataset (:func:`write_outputs`); ``meanwhile``
    goes to :func:`~jettracks.io.mldata.finalize` (not called when there is nothing to finalize)."""
    from ..report import MLDatasetSummary

    if output.get("lumisections"):
        from .. import lumi as lumitools

        report["lumisections"] = {
            name: lumitools.write_lumi_outputs(
                out_dir, name, vectors,
                certification=lumitools.load_certification(lumitools.resolve(cfg, ds.lumi_mask)) if ds.lumi_mask else None,
                lumi_csv=lumitools.resolve(cfg, ds.lumi_csv) if ds.lumi_csv else None,
            )
            for name, vectors in output["lumisections"].items()
            if (ds := cfg.datasets.get(name)) is not None
        }
    ml_dir = out_dir / "ml"
    if cfg.output.ml and (ml_dir.exists() or ml_parts):
        from . import mldata

        manifest = mldata.finalize(
            ml_dir,
            parts=[Path(p).name for p in ml_parts],
            config=report["config"],
            selection=dict(cfg.processor.options),
            versions=report["provenance"]["versions"],
            hdf5=cfg.output.ml_dataset.hdf5,
            scanner=scanner,
            meanwhile=meanwhile,
        )
        if manifest["removed_stale"] and console is not None:
            console.print(
                f"ml: removed {len(manifest['removed_stale'])} part(s) left by earlier runs "
                "that are not part of this run"
            )
        report["ml_dataset"] = MLDatasetSummary(
            dir=str(ml_dir),
            rows=manifest["rows"],
            parts=len(manifest["part_files"]),
            rows_per_split=manifest["rows_per_split"],
            hdf5=manifest.get("hdf5"),
        )
