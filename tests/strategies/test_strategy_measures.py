"""The numpy measures: exact small cases, properties, chunking, dtypes and input validation."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import StrategyInputError, entropy, least_confidence, margin, random
from strategies import measures as measures_module
from tests.strategies.probas import proba_matrices

DETERMINISTIC = [least_confidence, margin, entropy]
ALL = [*DETERMINISTIC, random]


def _h(*p: float) -> float:
    return -sum(x * math.log(x) for x in p if x > 0)


# -- exact cases, computed by hand ----------------------------------------------------------------

HAND = np.array(
    [
        [0.5, 0.5, 0.0],
        [1.0, 0.0, 0.0],
        [0.7, 0.3, 0.0],
        [0.2, 0.3, 0.5],
        [0.4, 0.4, 0.2],
        [0.1, 0.1, 0.8],
    ]
)


def test_least_confidence_by_hand() -> None:
    assert least_confidence(HAND).tolist() == pytest.approx(
        [0.5, 0.0, 0.3, 0.5, 0.6, 0.2], abs=1e-15
    )


def test_margin_by_hand() -> None:
    # 1 - (top1 - top2): ties at the top give the maximum score 1
    assert margin(HAND).tolist() == pytest.approx([1.0, 0.0, 0.6, 0.8, 1.0, 0.3], abs=1e-15)


def test_entropy_by_hand_natural_log_and_zero_log_zero() -> None:
    expected = [
        math.log(2),
        0.0,
        _h(0.7, 0.3),
        _h(0.2, 0.3, 0.5),
        _h(0.4, 0.4, 0.2),
        _h(0.1, 0.1, 0.8),
    ]
    got = entropy(HAND)
    assert got.tolist() == pytest.approx(expected, abs=1e-15)
    assert math.copysign(1.0, got[1]) == 1.0, "a zero entropy must be +0.0"


def test_uniform_rows_reach_the_maximum_of_each_measure() -> None:
    for c in (2, 3, 10, 100):
        row = np.full((1, c), 1.0 / c)
        assert least_confidence(row)[0] == pytest.approx(1 - 1 / c, abs=1e-15)
        assert margin(row)[0] == 1.0
        assert entropy(row)[0] == pytest.approx(math.log(c), abs=1e-12)


def test_two_classes_margin_is_twice_least_confidence() -> None:
    p = np.linspace(0, 1, 101)
    proba = np.column_stack([p, 1 - p])
    np.testing.assert_allclose(margin(proba), 2 * least_confidence(proba), atol=1e-12)


# -- properties ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(proba=proba_matrices())
def test_scores_are_finite_float64_in_range(proba: np.ndarray) -> None:
    n, c = proba.shape
    for fn, upper in ((least_confidence, 1 - 1 / c), (margin, 1.0), (entropy, math.log(c))):
        s = fn(proba)
        assert s.shape == (n,) and s.dtype == np.float64
        assert np.isfinite(s).all()
        assert (s >= -1e-12).all() and (s <= upper + 1e-12).all(), fn.__name__


@settings(max_examples=60, deadline=None)
@given(proba=proba_matrices(), data=st.data())
def test_uniform_row_scores_highest_and_one_hot_row_lowest(
    proba: np.ndarray, data: st.DataObject
) -> None:
    n, c = proba.shape
    hot = data.draw(st.integers(0, c - 1))
    extra = np.vstack([proba, np.full(c, 1.0 / c), np.eye(c)[hot]])
    for fn in DETERMINISTIC:
        s = fn(extra)
        assert s[n] >= s.max() - 1e-12, fn.__name__
        assert s[n + 1] == 0.0 and s[n + 1] <= s.min(), fn.__name__


@settings(max_examples=60, deadline=None)
@given(proba=proba_matrices(), seed=st.integers(0, 2**32 - 1))
def test_row_permutation_equivariance(proba: np.ndarray, seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(proba.shape[0])
    for fn in DETERMINISTIC:
        np.testing.assert_array_equal(fn(proba[perm]), fn(proba)[perm])


@settings(max_examples=60, deadline=None)
@given(proba=proba_matrices(), seed=st.integers(0, 2**32 - 1))
def test_class_order_does_not_matter(proba: np.ndarray, seed: int) -> None:
    perm = np.random.default_rng(seed).permutation(proba.shape[1])
    for fn in DETERMINISTIC:
        np.testing.assert_allclose(fn(proba[:, perm]), fn(proba), rtol=0, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(proba=proba_matrices(max_rows=30), rows=st.integers(1, 7))
def test_chunking_does_not_change_results(proba: np.ndarray, rows: int) -> None:
    for fn in DETERMINISTIC:
        np.testing.assert_array_equal(fn(proba, chunk_rows=rows), fn(proba))
    a = random(proba, np.random.default_rng(3), chunk_rows=rows)
    b = random(proba, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(proba=proba_matrices(max_classes=40))
def test_many_classes_take_the_same_values_as_few(proba: np.ndarray) -> None:
    """The column-loop and the axis=1 code paths agree (thresholds forced both ways)."""
    low, top2 = measures_module.COLUMN_LOOP_MAX_CLASSES, measures_module.TOP2_LOOP_MAX_CLASSES
    try:
        measures_module.COLUMN_LOOP_MAX_CLASSES = measures_module.TOP2_LOOP_MAX_CLASSES = 0
        wide = [fn(proba) for fn in DETERMINISTIC]
    finally:
        measures_module.COLUMN_LOOP_MAX_CLASSES, measures_module.TOP2_LOOP_MAX_CLASSES = low, top2
    for fn, w in zip(DETERMINISTIC, wide, strict=True):
        np.testing.assert_allclose(fn(proba), w, rtol=0, atol=1e-12)


def test_random_is_seeded_and_in_unit_interval() -> None:
    proba = np.full((500, 3), 1 / 3)
    a = random(proba, np.random.default_rng(7))
    assert a.dtype == np.float64 and a.shape == (500,)
    assert ((a >= 0) & (a < 1)).all()
    np.testing.assert_array_equal(a, random(proba, np.random.default_rng(7)))
    assert not np.array_equal(a, random(proba, np.random.default_rng(8)))


def test_random_needs_a_generator() -> None:
    proba = np.full((4, 2), 0.5)
    for bad in (None, 42, np.random.RandomState(0)):
        with pytest.raises(StrategyInputError, match="numpy.random.Generator"):
            random(proba, bad)


# -- dtypes and memory ------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", DETERMINISTIC, ids=lambda f: f.__name__)
def test_float32_scores_like_its_exact_float64_values(fn) -> None:
    proba = np.random.default_rng(0).dirichlet(np.ones(6), size=300).astype(np.float32)
    got = fn(proba, chunk_rows=64)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, fn(proba.astype(np.float64)))


@pytest.mark.parametrize("fn", DETERMINISTIC, ids=lambda f: f.__name__)
def test_float16_is_accepted_with_a_wider_row_sum_tolerance(fn) -> None:
    proba = np.random.default_rng(0).dirichlet(np.ones(6), size=300)
    got = fn(proba.astype(np.float16))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, fn(proba), atol=1e-2)


def test_float32_rows_within_the_tolerance_are_accepted() -> None:
    proba = np.array([[0.50003, 0.5], [0.49998, 0.5]], dtype=np.float32)
    assert entropy(proba).shape == (2,)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
def test_extra_memory_is_bounded_whatever_the_pool_size(dtype: type, fn) -> None:
    """Beyond the (n,) float64 result, a measure holds about one chunk: < 2 MiB, and
    at 400,000 x 10 less than 10% of the input."""
    n, c = 400_000, 10
    proba = np.full((n, c), 0.1, dtype=dtype)
    rng = np.random.default_rng(0)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        fn(proba, rng)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    extra = peak - n * 8
    assert extra < 2 * 2**20, f"{extra} bytes beyond the output"
    assert extra < 0.1 * proba.nbytes


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
def test_the_input_is_never_written(fn) -> None:
    proba = np.random.default_rng(1).dirichlet(np.ones(4), size=50)
    proba[0] = [1, 0, 0, 0]
    before = proba.copy()
    fn(proba, np.random.default_rng(0), chunk_rows=7)
    np.testing.assert_array_equal(proba, before)


def test_non_contiguous_and_list_inputs() -> None:
    proba = np.random.default_rng(2).dirichlet(np.ones(5), size=40)
    np.testing.assert_array_equal(entropy(np.asfortranarray(proba)), entropy(proba))
    np.testing.assert_array_equal(margin(proba[::2]), margin(proba)[::2])
    assert least_confidence([[0.25, 0.75], [1.0, 0.0]]).tolist() == [0.25, 0.0]


# -- validation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("bad", "pattern"),
    [
        (np.full(3, 0.5), "2-D array.*found a 1-D array of shape \\(3,\\)"),
        (np.full((2, 2, 2), 0.5), "2-D array.*3-D"),
        (np.ones((3, 1)), "at least 2 columns.*found 1 column"),
        (np.ones((0, 1)), "at least 2 columns"),
        (np.array([[1, 0], [0, 1]]), "floating-point.*found dtype int"),
        (np.array([["a", "b"]]), "floating-point"),
        (np.array([[0.5, 0.5], [np.nan, 1.0]]), "row 1: expected finite.*nan"),
        (np.array([[0.5, 0.5], [np.inf, 0.0]]), "row 1: expected finite.*inf"),
        (np.array([[-0.2, 1.2]]), "row 0: expected non-negative.*-0.2.*softmax"),
        (
            np.array([[0.5, 0.5], [0.6, 0.6]]),
            "row 1: expected each row to sum to 1.*1.2.*renormalise",
        ),
        (np.array([[2.0, 3.0]]), "sum to 1.*5.0"),
    ],
)
def test_bad_input_is_rejected_with_what_expected_found_and_fix(
    fn, bad: np.ndarray, pattern: str
) -> None:
    with pytest.raises(StrategyInputError, match=pattern) as err:
        fn(bad, np.random.default_rng(0))
    assert isinstance(err.value, ValueError)
    assert "Fix:" in str(err.value) and err.value.fix


def test_the_error_names_the_row_across_chunks() -> None:
    proba = np.full((20, 2), 0.5)
    proba[13] = [0.9, 0.9]
    with pytest.raises(StrategyInputError, match="proba row 13"):
        margin(proba, chunk_rows=4)


def test_overflowing_rows_are_reported_as_bad_sums() -> None:
    proba = np.array([[1e308, 1e308]])
    with pytest.raises(StrategyInputError, match="sum to 1.*inf"):
        entropy(proba)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_chunk_rows_must_be_positive(bad: object) -> None:
    with pytest.raises(StrategyInputError, match="chunk_rows"):
        entropy(np.full((2, 2), 0.5), chunk_rows=bad)


@pytest.mark.parametrize("fn", ALL, ids=lambda f: f.__name__)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_an_empty_pool_gives_an_empty_float64_array(fn, dtype: type) -> None:
    out = fn(np.empty((0, 4), dtype=dtype), np.random.default_rng(0))
    assert out.shape == (0,) and out.dtype == np.float64
