"""Flavour definitions map the truth branches as documented."""

import numpy as np
import pytest

from jettracks.physics.flavour import CODES, flavour_codes, flavour_labels


def test_hadron_definition_splits_light_by_parton():
    hadron = np.array([5, 4, 0, 0, 0, 0, 5])
    parton = np.array([21, 1, 2, 21, 0, 5, -5])
    labels = flavour_labels(flavour_codes(definition="hadron", hadron=hadron, parton=parton))
    # hadron 0 with parton b: heavy flavour comes from hadrons only -> unmatched
    assert labels.tolist() == ["b", "c", "uds", "g", "unmatched", "unmatched", "b"]


@pytest.mark.parametrize("definition", ["parton", "physics"])
def test_pdgid_definitions(definition):
    pdg = np.array([-5, 4, -3, 2, 1, 21, 0, 6, 11])
    codes = flavour_codes(definition=definition, **{definition: pdg})
    assert flavour_labels(codes).tolist() == ["b", "c", "uds", "uds", "uds", "g", "unmatched", "unmatched", "unmatched"]


def test_data_and_errors():
    assert (flavour_codes(definition="hadron", n=3, is_data=True) == CODES["data"]).all()
    with pytest.raises(ValueError, match="needs"):
        flavour_codes(definition="physics", parton=np.array([1]))
    with pytest.raises(ValueError, match="definition"):
        flavour_codes(definition="algorithmic", parton=np.array([1]))
