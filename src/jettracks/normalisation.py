"""Simulation normalisation and the data/simulation comparison.

A simulated dataset with a cross section ``datasets.NAME.xsec`` (pb) is normalised to
the run's target luminosity ``normalisation.lumi`` (pb⁻¹): every event carries the weight

    w = xsec · lumi · genWeight / Σ genWeight

where Σ genWeight runs over **every event of the dataset** (all files, all chunks, before
any selection). The workers cannot know that sum, so they fill the ``*_weighted``
histograms with ``genWeight`` alone (collision data and formats without ``genWeight``:
weight 1) and count, per file, the events, Σ genWeight, Σ genWeight², and the number and
sum of negative weights (:func:`genweight_sums`; plain numbers, summed over chunks and
sub-batches by coffea's ``accumulate``). At the end :func:`normalise` scales each
simulated dataset's slice of the weighted histograms by ``xsec · lumi / Σ genWeight``
(values by the factor, variances by its square) and returns the accounting for the run
report. The unweighted histograms (``jet_pt``, ...) keep raw counts: the unweighted count
stays available next to every normalised one.

Without ``xsec`` (or without ``normalisation.lumi``) a simulated dataset's weighted
histograms stay filled with ``genWeight`` (the report says so). NanoAOD's ``genWeight`` is
a per-event float whose sign matters for NLO generators (negative weights): the report
gives the number and the sum of negative weights and the effective number of events
(Σw)² / Σw².

Units: xsec pb, lumi pb⁻¹; weighted histograms count events expected in ``lumi``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "COMPARISON_HISTS", "WEIGHTED_HISTS", "genweight_sums", "normalise", "save_data_mc_plots", "scale_dataset",
    "weighted_name",
]

#: Histograms also filled with weights (as ``NAME_weighted``, ``hist.storage.Weight``).
WEIGHTED_HISTS = ("jet_pt", "jet_eta", "jet_n_tracks", "track_sdxy", "track_sdxy_significance")


def weighted_name(name: str) -> str:
    """``jet_pt`` -> ``jet_pt_weighted``."""
    return f"{name}_weighted"


def genweight_sums(weights: np.ndarray) -> dict[str, float | int]:
    """Additive per-file sums of generator weights: ``events``, ``sumw``, ``sumw2``,
    ``n_negative``, ``sumw_negative``, ``n_non_unit`` (every value adds over chunks)."""
    w = np.asarray(weights, dtype=np.float64)
    neg = w < 0
    return {
        "events": int(w.size),
        "sumw": float(w.sum()),
        "sumw2": float(np.square(w).sum()),
        "n_negative": int(neg.sum()),
        "sumw_negative": float(w[neg].sum()),
        "n_non_unit": int((w != 1.0).sum()),
    }


def scale_dataset(h: Any, dataset: str, factor: float) -> None:
    """Multiply one dataset's slice of a histogram (values × factor, variances × factor²), in place."""
    axis = h.axes["dataset"]
    if dataset not in axis:
        return
    index = axis.index(dataset)
    pos = [a.name for a in h.axes].index("dataset")
    view = h.view(flow=True)
    sl = (slice(None),) * pos + (index,)
    if view.dtype.names and "variance" in view.dtype.names:
        view["value"][sl] *= factor
        view["variance"][sl] *= factor * factor
    else:
        view[sl] *= factor


def normalise(
    hists: Mapping[str, Any],
    genweights: Mapping[str, Mapping[str, Mapping[str, float]]],
    datasets: Mapping[str, Any],
    lumi: float | None,
) -> dict[str, Any]:
    """Scale the weighted histograms of simulated datasets with ``xsec`` to ``lumi``; the accounting.

    Args:
        hists: the run's histograms (the ``*_weighted`` ones are scaled in place).
        genweights: dataset -> file -> :func:`genweight_sums` (summed over the file's chunks).
        datasets: dataset name -> its config (``xsec``, ``metadata.is_mc``).
        lumi: target integrated luminosity (pb⁻¹), or None.

    Returns:
        dataset -> ``{is_mc, xsec_pb, lumi_pb, events, sumw, sumw2, n_negative, sumw_negative,
        unit_weights, effective_events, scale, files, note}``; ``scale`` is the factor applied
        (``xsec · lumi / Σ genWeight``; None when not normalised).
    """
    out: dict[str, Any] = {}
    for name, ds in datasets.items():
        is_mc = bool((getattr(ds, "metadata", None) or {}).get("is_mc", True))
        files = {f: dict(v) for f, v in (genweights.get(name) or {}).items()}
        tot = {k: sum(v.get(k, 0) for v in files.values())
               for k in ("events", "sumw", "sumw2", "n_negative", "sumw_negative", "n_non_unit")}
        xsec = getattr(ds, "xsec", None)
        entry: dict[str, Any] = {
            "is_mc": is_mc, "xsec_pb": xsec, "lumi_pb": lumi, **tot,
            "unit_weights": tot["n_non_unit"] == 0,
            "effective_events": (tot["sumw"] ** 2 / tot["sumw2"]) if tot["sumw2"] > 0 else 0.0,
            "scale": None, "files": files,
        }
        if not is_mc:
            entry["note"] = "collision data: weight 1"
        elif xsec is None or lumi is None:
            entry["note"] = "not normalised (needs datasets.NAME.xsec and normalisation.lumi): weighted histograms hold Σ genWeight"
        elif not tot["sumw"] > 0:
            entry["note"] = "not normalised: Σ genWeight is not positive"
        else:
            entry["scale"] = float(xsec) * float(lumi) / tot["sumw"]
            for hname in WEIGHTED_HISTS:
                h = hists.get(weighted_name(hname))
                if h is not None:
                    scale_dataset(h, name, entry["scale"])
            entry["note"] = "normalised: xsec · lumi · genWeight / Σ genWeight"
        out[name] = entry
    return out


#: Histograms drawn as data/simulation comparisons (weighted, after :func:`normalise`).
COMPARISON_HISTS = ("jet_pt", "jet_eta", "jet_n_tracks", "track_sdxy_significance")


def save_data_mc_plots(
    out_dir: Any,
    hists: Mapping[str, Any],
    *,
    data: list[str],
    mc: list[str],
    lumi: float | None,
    sqrt_s_tev: float,
    label: tuple[str, str] = ("CMS Open Data", "Private work"),
) -> list[Any]:
    """``plots/data_mc_NAME.png``: simulation stacked by flavour, data points, ratio panel.

    Simulation: the ``*_weighted`` histograms of the ``mc`` datasets summed, one stacked
    component per jet flavour (normalised to ``lumi`` where :func:`normalise` could);
    data: the ``data`` datasets summed (weight 1), as points with Poisson errors √N; the
    lower panel shows data / simulation with the data's errors and the simulation's
    statistical band. The label carries the luminosity (pb⁻¹, as given) and √s (TeV).
    """
    import matplotlib.style
    import mplhep as hep
    from matplotlib.figure import Figure

    from .io.atomic import atomic_path
    from .io.outfs import out_path
    from .io.outputs import draw_label

    plot_dir = out_path(out_dir) / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    lumi_text = (f"{lumi:g} pb$^{{-1}}$ " if lumi else "") + f"({sqrt_s_tev:g} TeV)"
    light = {"xtick.minor.visible": False, "ytick.minor.visible": False}
    with matplotlib.style.context([hep.style.CMS, light]):
        for name in COMPARISON_HISTS:
            h = hists.get(weighted_name(name))
            if h is None:
                continue
            present = set(h.axes["dataset"])
            d_names = [d for d in data if d in present]
            m_names = [m for m in mc if m in present]
            if not d_names or not m_names:
                continue
            d = sum(h[{"dataset": n}][{"flavour": sum}] for n in d_names)
            per_flavour = sum(h[{"dataset": n}] for n in m_names)
            stack, labels = [], []
            for flavour in per_flavour.axes["flavour"]:
                sub = per_flavour[{"flavour": flavour}]
                if sub.sum().value > 0:
                    stack.append(sub)
                    labels.append(flavour)
            if not stack:
                continue
            mc_tot = sum(stack[1:], stack[0])
            fig = Figure(figsize=(9, 9))
            ax, rax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1), "hspace": 0.05})
            hep.histplot(stack, ax=ax, stack=True, histtype="fill", label=[f"sim. {f}" for f in labels])
            dv = d.values()
            hep.histplot(d, ax=ax, histtype="errorbar", yerr=np.sqrt(dv), color="black", label="data")
            log = name in ("jet_pt", "track_sdxy_significance")
            ax.set_yscale("log" if log else "linear")
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo, hi * (100 if log else 1.7))  # room for the label and legend
            unit = "Tracks" if name.startswith("track") else "Jets"
            ax.set_ylabel(f"{unit} / bin" + (" (simulation: xsec · L)" if lumi else ""))
            ax.legend(fontsize="x-small", loc="upper right")
            draw_label(ax, label, rlabel=lumi_text)
            mv = mc_tot.values()
            mvar = mc_tot.variances()
            edges = d.axes[0].edges
            centers = d.axes[0].centers
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = dv / mv
                rerr = np.sqrt(dv) / np.abs(mv)  # negative-weight bins: errors stay positive
                band = np.sqrt(mvar) / np.abs(mv)
            shown = np.isfinite(ratio) & np.isfinite(rerr)
            rax.errorbar(centers[shown], ratio[shown], yerr=rerr[shown], fmt="o", color="black", markersize=3)
            band = np.where(np.isfinite(band), band, 0.0)
            rax.stairs(1 + band, edges, baseline=1 - band, fill=True, alpha=0.3, color="gray",
                       label="sim. stat.")
            rax.axhline(1.0, color="gray", linestyle="--")
            rax.set_ylim(0, 2)
            rax.set_ylabel("Data / sim.")
            rax.set_xlabel(d.axes[0].label)
            ax.set_xlabel("")
            path = plot_dir / f"data_mc_{name}.png"
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=80, pil_kwargs={"compress_level": 1})
            written.append(path)
    return written
