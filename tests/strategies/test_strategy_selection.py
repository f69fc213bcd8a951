"""top_k (order, seeded ties, bounds) and diverse_sample (k-means cold start)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from strategies import StrategyInputError, diverse_sample, top_k
from strategies import selection as selection_module

# -- top_k -----------------------------------------------------------------------------------------


def test_top_k_by_hand() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    assert top_k(scores, 3, np.random.default_rng(0)).tolist() == [1, 3, 2]
    assert top_k(scores, 1, np.random.default_rng(0)).tolist() == [1]


@settings(max_examples=80, deadline=None)
@given(
    scores=hnp.arrays(np.float64, st.integers(1, 60), elements=st.floats(-1e6, 1e6), unique=True),
    k=st.integers(1, 80),
    seed=st.integers(0, 2**32 - 1),
)
def test_distinct_scores_match_a_full_sort(scores: np.ndarray, k: int, seed: int) -> None:
    got = top_k(scores, k, np.random.default_rng(seed))
    assert got.dtype == np.intp
    np.testing.assert_array_equal(got, np.argsort(-scores, kind="stable")[:k])


@settings(max_examples=80, deadline=None)
@given(
    scores=hnp.arrays(
        np.float64, st.integers(1, 60), elements=st.sampled_from([0.0, 0.25, 0.5, 1.0])
    ),
    k=st.integers(1, 80),
    seed=st.integers(0, 2**32 - 1),
)
def test_with_ties_the_result_is_a_valid_descending_top_k(
    scores: np.ndarray, k: int, seed: int
) -> None:
    got = top_k(scores, k, np.random.default_rng(seed))
    n = scores.shape[0]
    assert len(got) == min(k, n) == len(set(got.tolist()))
    assert (np.diff(scores[got]) <= 0).all()
    # the selected values are exactly the k largest values
    np.testing.assert_array_equal(scores[got], np.sort(scores)[::-1][: min(k, n)])
    np.testing.assert_array_equal(got, top_k(scores, k, np.random.default_rng(seed)))


@settings(max_examples=60, deadline=None)
@given(
    scores=hnp.arrays(
        np.float64, st.integers(1, 200), elements=st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.9])
    ),
    k=st.integers(1, 30),
    chunk=st.integers(1, 16),
)
def test_the_chunked_threshold_equals_a_full_sort(scores: np.ndarray, k: int, chunk: int) -> None:
    old = selection_module._SELECT_CHUNK
    try:
        selection_module._SELECT_CHUNK = chunk
        got = top_k(scores, k, np.random.default_rng(0))
    finally:
        selection_module._SELECT_CHUNK = old
    np.testing.assert_array_equal(scores[got], np.sort(scores)[::-1][:k])


def test_top_k_does_not_copy_the_scores() -> None:
    n = 1_000_000
    scores = np.random.default_rng(0).random(n)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        top_k(scores, 1000, np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < scores.nbytes / 2, f"{peak} bytes for {scores.nbytes} bytes of scores"


def test_boundary_ties_are_picked_uniformly_and_reproducibly() -> None:
    scores = np.array([3.0, 2.0, 2.0, 2.0, 1.0])
    rng = np.random.default_rng(2024)
    seconds = [int(top_k(scores, 2, rng)[1]) for _ in range(3000)]
    counts = np.bincount(seconds, minlength=5)
    assert counts[0] == counts[4] == 0
    assert all(900 < c < 1100 for c in counts[1:4]), counts
    a = [top_k(scores, 2, np.random.default_rng(s)).tolist() for s in range(20)]
    b = [top_k(scores, 2, np.random.default_rng(s)).tolist() for s in range(20)]
    assert a == b


def test_ties_inside_the_selection_are_ordered_at_random() -> None:
    scores = np.array([2.0, 2.0, 2.0, 1.0])
    orders = {tuple(top_k(scores, 3, np.random.default_rng(s)).tolist()) for s in range(200)}
    assert len(orders) == 6  # every order of {0, 1, 2}


def test_argpartition_index_bias_does_not_leak() -> None:
    """With all scores equal, every item has the same chance of being first."""
    scores = np.zeros(8)
    rng = np.random.default_rng(5)
    counts = np.bincount([int(top_k(scores, 3, rng)[0]) for _ in range(4000)], minlength=8)
    assert counts.min() > 400 and counts.max() < 600, counts


def test_k_larger_than_n_returns_everything_ordered() -> None:
    scores = np.array([0.2, 0.8, 0.5])
    assert top_k(scores, 10, np.random.default_rng(0)).tolist() == [1, 2, 0]


def test_empty_scores_give_empty_indices() -> None:
    out = top_k(np.empty(0), 5, np.random.default_rng(0))
    assert out.shape == (0,) and out.dtype == np.intp


def test_infinite_scores_order_first_and_last() -> None:
    scores = np.array([0.5, -np.inf, np.inf, 0.1])
    assert top_k(scores, 4, np.random.default_rng(0)).tolist() == [2, 0, 3, 1]


def test_integer_and_float32_scores() -> None:
    assert top_k(np.array([1, 5, 3]), 2, np.random.default_rng(0)).tolist() == [1, 2]
    assert top_k(np.array([1, 5, 3], dtype=np.uint8), 2, np.random.default_rng(0)).tolist() == [
        1,
        2,
    ]
    assert top_k(np.array([0.1, 0.7], dtype=np.float32), 1, np.random.default_rng(0)).tolist() == [
        1
    ]


def test_large_n_sorts_only_the_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    scores = np.random.default_rng(0).random(200_000)
    sizes: list[int] = []
    real = np.argsort

    def spy(a: np.ndarray, *args: object, **kwargs: object) -> np.ndarray:
        sizes.append(np.asarray(a).size)
        return real(a, *args, **kwargs)

    monkeypatch.setattr(np, "argsort", spy)
    got = top_k(scores, 100, np.random.default_rng(0))
    monkeypatch.undo()
    assert max(sizes) <= 100
    np.testing.assert_array_equal(got, np.argsort(-scores)[:100])


@pytest.mark.parametrize("k", [0, -3, 2.0, True, None, "5"])
def test_k_must_be_a_positive_integer(k: object) -> None:
    with pytest.raises(StrategyInputError, match="positive integer"):
        top_k(np.ones(3), k, np.random.default_rng(0))  # type: ignore[arg-type]


def test_numpy_integer_k_is_accepted() -> None:
    assert top_k(np.array([1.0, 2.0]), np.int64(1), np.random.default_rng(0)).tolist() == [1]


@pytest.mark.parametrize(
    ("scores", "pattern"),
    [
        (np.array([0.1, np.nan, 0.3]), "NaN.*index 1"),
        (np.ones((2, 2)), "1-D"),
        (np.array(["a", "b"]), "real numbers"),
    ],
)
def test_bad_scores_are_rejected(scores: np.ndarray, pattern: str) -> None:
    with pytest.raises(StrategyInputError, match=pattern):
        top_k(scores, 1, np.random.default_rng(0))


def test_top_k_needs_a_generator() -> None:
    with pytest.raises(StrategyInputError, match="Generator"):
        top_k(np.ones(3), 1, 0)  # type: ignore[arg-type]


# -- diverse_sample -----------------------------------------------------------------------------------


def _blobs(sizes: tuple[int, ...], seed: int = 0, dim: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.eye(dim)[: len(sizes)] * 20.0
    points = np.vstack(
        [c + rng.normal(scale=0.5, size=(s, dim)) for c, s in zip(centers, sizes, strict=True)]
    )
    blob = np.repeat(np.arange(len(sizes)), sizes)
    order = rng.permutation(len(points))
    return points[order].astype(np.float32), blob[order]


def test_one_pick_per_blob_closest_to_its_mean_largest_blob_first() -> None:
    points, blob = _blobs((30, 20, 10))
    got = diverse_sample(points, 3, np.random.default_rng(0))
    assert blob[got].tolist() == [0, 1, 2]
    for b, idx in zip(range(3), got, strict=True):
        members = np.flatnonzero(blob == b)
        mean = points[members].astype(np.float64).mean(axis=0)
        nearest = members[np.argmin(((points[members] - mean) ** 2).sum(axis=1))]
        assert idx == nearest


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), k=st.integers(1, 50), seed=st.integers(0, 1000))
def test_exactly_min_k_n_distinct_indices(n: int, k: int, seed: int) -> None:
    points = np.random.default_rng(seed).normal(size=(n, 3))
    got = diverse_sample(points, k, np.random.default_rng(seed))
    assert len(got) == min(k, n) == len(set(got.tolist()))
    assert got.min() >= 0 and got.max() < n
    assert got.dtype == np.intp


def test_k_at_least_n_returns_every_index() -> None:
    points = np.random.default_rng(0).normal(size=(6, 2))
    assert diverse_sample(points, 6, np.random.default_rng(0)).tolist() == list(range(6))
    assert diverse_sample(points, 60, np.random.default_rng(0)).tolist() == list(range(6))
    assert diverse_sample(np.empty((0, 4)), 3, np.random.default_rng(0)).shape == (0,)


def test_duplicates_still_give_k_distinct_items_covering_every_distinct_point() -> None:
    distinct = np.random.default_rng(1).normal(size=(5, 4)) * 10
    points = np.repeat(distinct, 10, axis=0)
    got = diverse_sample(points, 8, np.random.default_rng(0))
    assert len(set(got.tolist())) == 8
    assert {int(i) // 10 for i in got} == {0, 1, 2, 3, 4}


def test_seeded_determinism() -> None:
    points = np.random.default_rng(3).normal(size=(200, 8))
    a = diverse_sample(points, 12, np.random.default_rng(9))
    np.testing.assert_array_equal(a, diverse_sample(points, 12, np.random.default_rng(9)))


def test_minibatch_path_for_large_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selection_module, "MINIBATCH_FROM", 10)
    points, blob = _blobs((40, 30, 20, 10), seed=2)
    got = diverse_sample(points, 4, np.random.default_rng(0))
    assert sorted(blob[got].tolist()) == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("embeddings", "k", "pattern"),
    [
        (np.ones(5), 2, "2-D"),
        (np.ones((5, 0)), 2, "dim >= 1"),
        (np.ones((5, 2), dtype=np.int64), 2, "floating-point"),
        (np.array([[0.0, 1.0], [np.nan, 0.0]]), 1, "row 1.*finite"),
        (np.ones((5, 2)), 0, "positive integer"),
    ],
)
def test_diverse_sample_rejects_bad_input(embeddings: np.ndarray, k: int, pattern: str) -> None:
    with pytest.raises(StrategyInputError, match=pattern):
        diverse_sample(embeddings, k, np.random.default_rng(0))
