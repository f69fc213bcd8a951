"""Stopping criteria as pure functions: Cohen's kappa against scikit-learn's, the window rule
of stabilizing predictions, overall uncertainty and the label budget."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from sklearn.metrics import cohen_kappa_score

from strategies.errors import StrategyInputError
from strategies.stopping import (
    cohen_kappa,
    label_budget,
    overall_uncertainty,
    stabilizing_predictions,
)

labels = hs.lists(hs.integers(0, 4), min_size=2, max_size=60)


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=200, deadline=None)
@given(hs.data())
def test_kappa_matches_scikit_learn(data) -> None:  # type: ignore[no-untyped-def]
    a = np.array(data.draw(labels))
    b = np.array(data.draw(hs.lists(hs.integers(0, 4), min_size=len(a), max_size=len(a))))
    ours = cohen_kappa(a, b)
    theirs = cohen_kappa_score(a, b)
    if np.isnan(theirs):  # both vectors one same constant: sklearn divides 0 by 0
        assert ours == (1.0 if (a == b).all() else 0.0)
    else:
        assert ours == pytest.approx(theirs, abs=1e-12)


def test_kappa_edge_cases() -> None:
    assert cohen_kappa(np.array([1, 1, 1]), np.array([1, 1, 1])) == 1.0
    assert cohen_kappa(np.array([], dtype=int), np.array([], dtype=int)) == 1.0
    assert cohen_kappa(np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0])) == pytest.approx(-1.0)
    with pytest.raises(StrategyInputError, match="same length"):
        cohen_kappa(np.array([0, 1]), np.array([0, 1, 1]))


def test_stabilizing_predictions_needs_a_full_window_of_agreement() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 3, 500)
    changed = base.copy()
    changed[:100] = (changed[:100] + 1) % 3  # 20 % of the stop set flips
    # four model pairs, window 3: the first pair disagrees but is out of the window
    v = stabilizing_predictions([changed, base, base, base, base], threshold=0.99, window=3)
    assert v.fired and v.value == 1.0
    # three pairs, the first of them disagrees: it does not fire
    v = stabilizing_predictions([changed, base, base, base], threshold=0.99, window=3)
    assert not v.fired
    v = stabilizing_predictions([base, changed, base, base], threshold=0.99, window=3)
    assert not v.fired and v.value is not None and v.value < 0.9
    assert "kappa of the last 3" in v.detail
    # too few models: never fires, says how many pairs there are
    v = stabilizing_predictions([base, base], threshold=0.99, window=3)
    assert not v.fired and v.detail.startswith("1 of 3")
    assert not stabilizing_predictions([], window=1).fired
    # a lower threshold accepts the 80 % agreement
    assert stabilizing_predictions([base, changed], threshold=0.5, window=1).fired


def test_overall_uncertainty_and_budget() -> None:
    assert not overall_uncertainty([]).fired
    v = overall_uncertainty([0.3, 0.2, 0.05], threshold=0.1)
    assert v.fired and v.value == 0.05
    assert not overall_uncertainty([0.05, 0.2], threshold=0.1).fired  # only the newest counts
    assert not label_budget(10_000, budget=None).fired
    v = label_budget(300, budget=300)
    assert v.fired and v.as_dict() == {
        "fired": True,
        "value": 300.0,
        "threshold": 300.0,
        "detail": "300 of 300 labels",
    }
    assert not label_budget(299, budget=300).fired
