"""Plot labels say what the data are: never a bare "CMS" / "CMS Simulation" on open or synthetic data."""

from __future__ import annotations

import json

import mplhep
import numpy as np
import pytest
from matplotlib.figure import Figure

from jettracks.config import DatasetConfig, GenerateConfig
from jettracks.io import outputs
from processors.jet_tracks import make_histograms


def test_label_from_dataset_metadata(tmp_path):
    gen = DatasetConfig(files=["x.root"], metadata={"is_mc": True}, generate=GenerateConfig())
    assert outputs.dataset_label(gen) == ("jettracks synthetic", "")
    assert outputs.dataset_label(DatasetConfig(files=["x"], metadata={"synthetic": True})) == ("jettracks synthetic", "")
    assert outputs.dataset_label(DatasetConfig(files=["x"], metadata={"is_mc": False})) == ("CMS Open Data", "Private work")
    assert outputs.dataset_label(DatasetConfig(files=["x"], metadata={"is_mc": True})) == (
        "CMS Open Data simulation", "Private work")
    assert outputs.dataset_label(DatasetConfig(files=["x"], metadata={"plot_label": ["My study", "WIP"]})) == (
        "My study", "WIP")
    # files the generator recorded beside them are synthetic, without a generate block
    (tmp_path / "pfnano_0000.root").write_bytes(b"")
    (tmp_path / ".jettracks-generate.json").write_text(json.dumps({"pfnano": {"files": ["pfnano_0000.root"]}}))
    assert outputs.dataset_label(DatasetConfig(files=["x"]), [str(tmp_path / "pfnano_0000.root")])[0] == (
        "jettracks synthetic")
    assert outputs.dataset_label(DatasetConfig(files=["x"]), [str(tmp_path / "other.root")])[0] != "jettracks synthetic"


def _texts(fig):
    return [t.get_text().strip() for ax in fig.axes for t in ax.texts]


def test_draw_label_has_no_bare_cms():
    for label in (outputs.LABEL_SYNTHETIC, outputs.LABEL_OPEN_DATA, outputs.LABEL_OPEN_SIMULATION):
        fig = Figure()
        ax = fig.subplots()
        outputs.draw_label(ax, label)
        texts = _texts(fig)
        assert label[0] in texts
        assert not {"CMS", "CMS Simulation", "CMS Preliminary"} & set(texts)


def test_save_plots_never_calls_the_cms_label(tmp_path, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("hep.cms.label draws a bare CMS label")

    monkeypatch.setattr(mplhep.cms, "label", forbidden)
    h = make_histograms()
    h["track_sdxy"].fill(dataset="qcd", flavour="b", sdxy=np.array([0.01, 0.02, -0.001]))
    h["jet_pt"].fill(dataset="qcd", flavour="b", pt=np.array([50.0]))
    written = outputs.save_plots(tmp_path, h, labels={"qcd": outputs.LABEL_SYNTHETIC})
    names = {p.name for p in written}
    # the signed IP in its log and linear views, next to the dxy ones
    assert {"track_sdxy_qcd.png", "track_sdxy_linear_qcd.png", "jet_pt_qcd.png"} <= names


@pytest.mark.parametrize("name", ["track_sdxy", "track_sdxy_significance", "track_dxy", "track_abs_dxy"])
def test_ip_axis_labels_carry_units(name):
    label = make_histograms()[name].axes[-1].label
    assert ("[cm]" in label) or ("sigma" in label)
