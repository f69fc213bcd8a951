"""Picking a measure by name."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import MEASURES, StrategyInputError, available, canonical_name, get_measure
from strategies import measures as m


def test_available_lists_canonical_names_in_order() -> None:
    assert available()[:4] == ("random", "least-confidence", "margin", "entropy")
    assert {
        "bald",
        "vote-entropy",
        "kl-consensus",
        "density-margin",
        "power-margin",
        "cluster-margin",
        "badge",
        "coreset",
        "class-balanced-margin",
        "balanced-cluster-margin",
        "contrastive",
    } <= set(available())


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("random", m.random),
        ("least-confidence", m.least_confidence),
        ("least_confidence", m.least_confidence),
        (" Least_Confidence ", m.least_confidence),
        ("MARGIN", m.margin),
        ("entropy", m.entropy),
    ],
)
def test_get_measure_accepts_both_spellings(name: str, fn) -> None:
    strategy = get_measure(name)
    assert strategy.fn is fn
    assert strategy.name == canonical_name(name)


def test_a_strategy_is_called_with_proba_and_rng() -> None:
    proba = np.array([[0.9, 0.1], [0.5, 0.5]])
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(get_measure("margin")(proba, rng), m.margin(proba))


@pytest.mark.parametrize("name", ["", "uncertainty", "least confidence", "epig"])
def test_unknown_names_list_the_valid_ones(name: str) -> None:
    with pytest.raises(StrategyInputError) as err:
        get_measure(name)
    for valid in available():
        assert valid in str(err.value)
    assert repr(name) in str(err.value)


def test_a_non_string_name_is_an_error() -> None:
    with pytest.raises(StrategyInputError, match="a string"):
        get_measure(3)  # type: ignore[arg-type]


def test_the_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        MEASURES["mine"] = MEASURES["margin"]  # type: ignore[index]
