"""One contract suite, run against every registered measure over probabilities alone (the
v1 call ``strategy(proba, rng)``); every strategy, v2 included, passes test_strategy_v2.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import MEASURES, Strategy, StrategyInputError, top_k
from tests.strategies.probas import proba_matrices

REGISTERED = [s for s in MEASURES.values() if s.fn is not None]
DETERMINISTIC = [s for s in REGISTERED if not s.stochastic]


def _ids(s: Strategy) -> str:
    return s.name


each_measure = pytest.mark.parametrize("measure", REGISTERED, ids=_ids)
each_uncertainty = pytest.mark.parametrize("uncertainty", DETERMINISTIC, ids=_ids)


def test_the_measures_over_probabilities_are_these_four() -> None:
    assert {s.name for s in REGISTERED} == {"random", "least-confidence", "margin", "entropy"}
    assert [s.name for s in REGISTERED if s.stochastic] == ["random"]


@each_measure
def test_needs_only_probabilities(measure: Strategy) -> None:
    # random needs nothing at all: the loop does not score the pool for it
    assert measure.needs == (frozenset() if measure.name == "random" else frozenset({"proba"}))
    assert measure.summary


def test_random_scores_from_the_pool_size_alone_as_from_probabilities() -> None:
    from strategies.batch import SelectionInputs

    rnd = MEASURES["random"]
    proba = np.full((7, 3), 1 / 3)
    a = rnd.scores(SelectionInputs(size=7), np.random.default_rng(5))
    b = rnd(proba, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    idx, _ = rnd.choose(SelectionInputs(size=7), 3, np.random.default_rng(5))
    assert len(set(idx.tolist())) == 3 and max(idx) < 7


@each_measure
@settings(max_examples=30, deadline=None)
@given(proba=proba_matrices(), seed=st.integers(0, 2**32 - 1))
def test_one_finite_float64_score_per_row(measure: Strategy, proba: np.ndarray, seed: int) -> None:
    scores = measure(proba, np.random.default_rng(seed))
    assert scores.shape == (proba.shape[0],)
    assert scores.dtype == np.float64
    assert np.isfinite(scores).all()


@each_measure
@settings(max_examples=30, deadline=None)
@given(proba=proba_matrices(), seed=st.integers(0, 2**32 - 1))
def test_same_seed_same_scores(measure: Strategy, proba: np.ndarray, seed: int) -> None:
    a = measure(proba, np.random.default_rng(seed))
    b = measure(proba, np.random.default_rng(seed))
    np.testing.assert_array_equal(a, b)


@each_measure
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_accepts_floating_dtypes_and_returns_float64(measure: Strategy, dtype: type) -> None:
    proba = np.random.default_rng(0).dirichlet(np.ones(3), size=20).astype(dtype)
    out = measure(proba, np.random.default_rng(0))
    assert out.dtype == np.float64 and out.shape == (20,)


@each_measure
def test_empty_pool_gives_empty_scores(measure: Strategy) -> None:
    out = measure(np.empty((0, 3)), np.random.default_rng(0))
    assert out.shape == (0,) and out.dtype == np.float64


@pytest.mark.parametrize(
    "bad",
    [
        np.full(4, 0.25),
        np.ones((4, 1)),
        np.array([[0.5, np.nan]]),
        np.array([[1.5, -0.5]]),
        np.array([[0.3, 0.3]]),
        np.array([[1, 0]]),
    ],
    ids=["1-D", "one-column", "nan", "negative", "bad-sum", "int"],
)
@each_measure
def test_rejects_what_is_not_a_probability_matrix(measure: Strategy, bad: np.ndarray) -> None:
    with pytest.raises(StrategyInputError, match="Fix:"):
        measure(bad, np.random.default_rng(0))


@each_measure
def test_scores_feed_top_k(measure: Strategy) -> None:
    proba = np.random.default_rng(4).dirichlet(np.ones(4), size=100)
    scores = measure(proba, np.random.default_rng(0))
    idx = top_k(scores, 10, np.random.default_rng(0))
    assert len(set(idx.tolist())) == 10
    assert (np.diff(scores[idx]) <= 0).all()


# -- deterministic measures: the properties of an uncertainty score ----------------------------------


@each_uncertainty
def test_ignores_rng(uncertainty: Strategy) -> None:
    proba = np.random.default_rng(5).dirichlet(np.ones(3), size=30)
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    np.testing.assert_array_equal(uncertainty(proba, rng), uncertainty(proba, None))
    assert rng.bit_generator.state == state


@each_uncertainty
@settings(max_examples=30, deadline=None)
@given(proba=proba_matrices(), data=st.data())
def test_uniform_highest_one_hot_lowest(
    uncertainty: Strategy, proba: np.ndarray, data: st.DataObject
) -> None:
    n, c = proba.shape
    hot = np.eye(c)[data.draw(st.integers(0, c - 1))]
    scores = uncertainty(np.vstack([proba, np.full(c, 1 / c), hot]), None)
    assert scores[n] >= scores.max() - 1e-12
    assert scores[n + 1] == 0.0 == scores.min()


@each_uncertainty
@settings(max_examples=30, deadline=None)
@given(proba=proba_matrices(min_rows=2), seed=st.integers(0, 2**32 - 1))
def test_permutation_equivariance(uncertainty: Strategy, proba: np.ndarray, seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(proba.shape[0])
    np.testing.assert_array_equal(uncertainty(proba[perm], None), uncertainty(proba, None)[perm])


@each_uncertainty
def test_a_more_confident_row_never_scores_higher(uncertainty: Strategy) -> None:
    """Moving mass from the runner-up to the top class lowers (or keeps) every measure."""
    rows = np.array([[0.4, 0.35, 0.25], [0.5, 0.25, 0.25], [0.7, 0.05, 0.25], [0.75, 0.0, 0.25]])
    assert (np.diff(uncertainty(rows, None)) < 0).all()


# -- the stochastic baseline -------------------------------------------------------------------------


def test_random_differs_by_seed_and_needs_a_generator() -> None:
    rnd = MEASURES["random"]
    proba = np.full((200, 2), 0.5)
    assert not np.array_equal(
        rnd(proba, np.random.default_rng(0)), rnd(proba, np.random.default_rng(1))
    )
    with pytest.raises(StrategyInputError, match="Generator"):
        rnd(proba, None)


def test_random_selection_is_uniform_over_items() -> None:
    """Each of 10 items is picked first about equally often (seeded, so not flaky)."""
    rnd, rng = MEASURES["random"], np.random.default_rng(123)
    proba = np.full((10, 2), 0.5)
    firsts = [int(top_k(rnd(proba, rng), 1, rng)[0]) for _ in range(2000)]
    counts = np.bincount(firsts, minlength=10)
    assert counts.min() > 140 and counts.max() < 260, counts
