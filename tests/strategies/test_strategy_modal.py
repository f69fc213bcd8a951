"""The modAL-backed measures agree with the numpy ones, and modAL's pitfalls stay contained."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings

from strategies import (
    StrategyInputError,
    entropy,
    least_confidence,
    margin,
    modal_entropy,
    modal_least_confidence,
    modal_margin,
)
from strategies.modal_measures import FixedProbaEstimator
from tests.strategies.probas import proba_matrices

PAIRS = [
    (modal_least_confidence, least_confidence),
    (modal_margin, margin),
    (modal_entropy, entropy),
]
IDS = ["least-confidence", "margin", "entropy"]


@settings(max_examples=40, deadline=None)
@given(proba=proba_matrices(max_classes=12))
def test_modal_and_numpy_agree_on_random_inputs(proba: np.ndarray) -> None:
    for ours, theirs in ((o, t) for t, o in PAIRS):
        np.testing.assert_allclose(theirs(proba), ours(proba), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("theirs", "ours"), PAIRS, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_agree_on_a_larger_dirichlet_pool(theirs, ours, dtype: type) -> None:
    rng = np.random.default_rng(11)
    proba = rng.dirichlet(np.full(7, 0.3), size=5000).astype(dtype)
    # scipy's entropy renormalises rows; float32 rows sum to 1 only within ~1e-7
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(theirs(proba, chunk_rows=999), ours(proba), rtol=tol, atol=tol)


@pytest.mark.parametrize(("theirs", "ours"), PAIRS, ids=IDS)
def test_modal_variants_validate_like_the_numpy_ones(theirs, ours) -> None:
    bad = np.array([[0.5, 0.5], [0.2, 0.2]])
    with pytest.raises(StrategyInputError, match="row 1"):
        theirs(bad)
    assert theirs(np.empty((0, 3))).shape == (0,)
    with pytest.raises(StrategyInputError, match="at least 2 columns"):
        theirs(np.ones((3, 1)))  # modAL alone would return zeros here


def test_the_stand_in_estimator_refuses_other_rows() -> None:
    est = FixedProbaEstimator(np.full((3, 2), 0.5))
    assert est.predict_proba(np.zeros(3)).shape == (3, 2)
    with pytest.raises(StrategyInputError, match="3 rows"):
        est.predict_proba(np.zeros(4))
