"""Tuning of linear heads: the fold plan, seeded reproducibility, the time budget, fallbacks,
and that the choice follows the scores."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from connectors.models.tfidf import TfidfFeatures, TfidfSpec, fit_linear_head
from connectors.models.tuning import (
    Family,
    cross_validate,
    plan_cv,
    row_space_features,
    tfidf_lr_family,
    tune_embed_lr,
    tune_tfidf_lr,
)
from loop.errors import ModelError
from tests.models.models_testdata import TOPICS, sentiment_set


def _blobs(n_per_class: int, dim: int = 8, spread: float = 1.0, seed: int = 0):
    """Two Gaussian classes ``spread`` apart along the first axis: ``(x, labels)``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2 * n_per_class, dim))
    x[:n_per_class, 0] += spread
    labels = ["a"] * n_per_class + ["b"] * n_per_class
    return x, labels


@pytest.mark.parametrize(
    ("counts", "k", "repeats"),
    [((20, 20), 5, 2), ((3, 40), 3, 4), ((2, 2, 9), 2, 5), ((6, 7), 5, 2), ((100, 50), 5, 2)],
)
def test_plan_gives_at_least_ten_stratified_folds(counts: tuple, k: int, repeats: int) -> None:
    labels = [f"c{i}" for i, n in enumerate(counts) for _ in range(n)]
    plan = plan_cv(labels, seed=1)
    assert plan.usable and (plan.n_splits, plan.n_repeats) == (k, repeats)
    assert plan.n_folds >= 10
    y = np.array(labels)
    rounds = plan.folds(labels)
    assert len(rounds) == repeats
    for folds in rounds:
        assert len(folds) == k
        # each repeat's test parts partition the data
        assert sorted(np.concatenate([te for _, te in folds]).tolist()) == list(range(len(y)))
        for train, test in folds:
            assert set(y[train]) == set(labels) and set(y[test]) == set(labels)
            assert not set(train) & set(test)


def test_plan_refuses_a_class_with_one_example() -> None:
    plan = plan_cv(["a", "a", "a", "b"], seed=0)
    assert not plan.usable
    assert "['b']" in (plan.reason or "") and "1 example" in (plan.reason or "")
    with pytest.raises(ModelError, match="usable"):
        plan.folds(["a", "a", "a", "b"])


def test_same_seed_same_scores_other_seed_other_folds() -> None:
    x, labels = _blobs(30, spread=1.5)
    a = tune_embed_lr(x, labels, seed=3, Cs=(0.01, 0.1, 1.0))
    b = tune_embed_lr(x, labels, seed=3, Cs=(0.01, 0.1, 1.0))
    assert [c.scores for c in a.cv.candidates] == [c.scores for c in b.cv.candidates]
    assert a.chosen == b.chosen
    folds3 = plan_cv(labels, seed=3).folds(labels)
    folds4 = plan_cv(labels, seed=4).folds(labels)
    assert any(
        not np.array_equal(f3[1], f4[1])
        for r3, r4 in zip(folds3, folds4, strict=True)
        for f3, f4 in zip(r3, r4, strict=True)
    )


def test_the_choice_follows_the_scores() -> None:
    # the class is x0 - x1 (a large noise shared by both features cancels out): a strongly
    # regularised head leans towards the class means (dominated by the noise) and scores near
    # chance, a weakly regularised one finds x0 - x1
    rng = np.random.default_rng(0)
    shared = rng.normal(scale=10.0, size=80)
    sign = np.repeat([1.0, -1.0], 40)
    x = np.stack([shared + sign + rng.normal(scale=0.3, size=80), shared], axis=1)
    labels = ["a"] * 40 + ["b"] * 40
    result = tune_embed_lr(x, labels, seed=0, Cs=(1e-4, 1.0), default_C=1e-4)
    by_c = {c.params["C"]: c for c in result.cv.candidates}
    assert by_c[1.0].mean > by_c[1e-4].mean + 0.1
    assert result.chosen == {"C": 1.0} and not result.fallback
    assert by_c[1.0].std is not None and len(by_c[1.0].scores) == 10
    assert "over 10 folds" in result.reason
    record = result.as_dict()
    assert [c["params"]["C"] for c in record["candidates"]] == [1e-4, 1.0]
    assert record["cv"]["k"] == 5 and record["cv"]["folds_run"] == 10


def test_ties_go_to_the_default() -> None:
    # far-apart blobs: every C in the grid scores 1.0
    x, labels = _blobs(20, spread=50.0)
    result = tune_embed_lr(x, labels, seed=0, Cs=(0.3, 1.0, 3.0), default_C=3.0)
    assert {c.mean for c in result.cv.candidates} == {1.0}
    assert result.chosen == {"C": 3.0}


def test_the_default_is_always_a_candidate() -> None:
    x, labels = _blobs(10)
    result = tune_embed_lr(x, labels, seed=0, Cs=(0.1, 1.0), default_C=7.0)
    assert [c.params["C"] for c in result.cv.candidates] == [0.1, 1.0, 7.0]


def test_one_example_of_a_class_keeps_the_default() -> None:
    x, labels = _blobs(6)
    labels[-5:] = ["a"] * 5  # "b" keeps one example
    result = tune_embed_lr(x, labels, seed=0, default_C=2.0)
    assert result.fallback and result.chosen == {"C": 2.0}
    assert "1 example" in result.reason and "kept the default" in result.reason
    assert all(not c.scores for c in result.cv.candidates)


def test_wrong_shapes_are_refused() -> None:
    with pytest.raises(ModelError, match="one embedding per label"):
        tune_embed_lr(np.zeros((3, 4)), ["a", "b"], seed=0)
    with pytest.raises(ModelError, match="C > 0"):
        tune_embed_lr(np.zeros((4, 2)), ["a", "b", "a", "b"], seed=0, Cs=(0.0,))


class _Clock:
    """A clock that advances ``step`` seconds on every reading."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _counting_family(name: str, n_configs: int, calls: list) -> Family:
    def features(train_idx: np.ndarray, test_idx: np.ndarray):
        return train_idx, test_idx

    def score(xt, yt, xv, yv, cfg) -> float:
        calls.append((name, cfg["i"]))
        return 0.5 + 0.1 * cfg["i"]

    return Family(name, [{"i": i} for i in range(n_configs)], features, score)


def test_budget_keeps_only_complete_repeats() -> None:
    labels = ["a"] * 10 + ["b"] * 10
    plan = plan_cv(labels, seed=0)  # 5 folds x 2 repeats
    calls: list = []
    fams = [_counting_family("f", 2, calls), _counting_family("g", 1, calls)]
    # one repeat costs 5 folds x (2 + 1) fits; the clock moves 1 s per reading, ~2-3 per fit
    run = cross_validate(fams, labels, plan, time_budget_s=60.0, clock=_Clock(1.0))
    assert run.budget_hit and run.repeats_done == 1
    assert [len(c.scores) for c in run.candidates] == [5, 5, 5]
    assert len(calls) > 15  # the second repeat began, and its scores were dropped
    assert run.seconds <= 60.0 + 4.0  # stops within one fit of the budget


def test_budget_before_one_repeat_keeps_the_default() -> None:
    x, labels = _blobs(30)
    plan = plan_cv(labels, seed=0)
    from connectors.models.tuning import choose, embed_lr_family

    run = cross_validate(
        [embed_lr_family(x, Cs=(0.1, 1.0))], labels, plan, time_budget_s=3.0, clock=_Clock(1.0)
    )
    result = choose(run, {"C": 1.0})
    assert result.fallback and result.chosen == {"C": 1.0}
    assert "time budget of 3 s" in result.reason


def test_real_time_budget_is_respected() -> None:
    texts = [f"{w} {v} item number {i}" for i, (w, v) in enumerate(
        itertools.islice(itertools.cycle(itertools.product(["red", "blue", "green"], ["cat", "dog"])), 600)
    )]  # fmt: skip
    labels = [t.split()[0] for t in texts]
    budget = 0.3
    t0 = time.perf_counter()
    result = tune_tfidf_lr(texts, labels, seed=0, time_budget_s=budget, ngram_maxes=(1, 2, 3))
    elapsed = time.perf_counter() - t0
    planned = result.cv.plan.n_folds
    assert result.cv.budget_hit and result.cv.folds_run < planned
    assert result.seconds < budget + 1.5, f"{result.seconds:.2f} s for a {budget} s budget"
    assert elapsed < budget + 5.0  # the vocabulary is counted once, outside the fits


def test_tfidf_folds_equal_a_vectorizer_fitted_on_the_fold() -> None:
    texts, labels = sentiment_set(20)
    plan = plan_cv(labels, seed=0)
    train, test = plan.folds(labels)[0][0]
    spec = TfidfSpec(min_df=1)
    family = tfidf_lr_family(texts, spec)
    f_train, f_test = family.features(train, test)
    feats, x_train = TfidfFeatures.fit_transform(spec, [texts[i] for i in train])
    x_test = feats.transform([texts[i] for i in test])
    # the row-space features keep every inner product with the training rows
    np.testing.assert_allclose(f_train @ f_train.T, (x_train @ x_train.T).toarray(), atol=1e-10)
    np.testing.assert_allclose(f_test @ f_train.T, (x_test @ x_train.T).toarray(), atol=1e-10)


def test_row_space_fit_gives_the_same_predictions() -> None:
    texts = [t for ts in TOPICS.values() for t in ts]
    labels = [c for c, ts in TOPICS.items() for _ in ts]
    spec = TfidfSpec()
    feats, x = TfidfFeatures.fit_transform(spec, texts[::2])
    x_test = feats.transform(texts[1::2])
    f, f_test = row_space_features(x, x_test)
    assert f.shape[1] <= x.shape[0] < x.shape[1]
    primal = fit_linear_head(x, labels[::2], C=10.0, max_iter=1000, seed=0, solver="newton-cg")
    dual = fit_linear_head(f, labels[::2], C=10.0, max_iter=1000, seed=0, solver="newton-cg")
    np.testing.assert_allclose(dual.proba(f_test), primal.proba(x_test), atol=1e-3)


def test_tune_tfidf_scores_every_ngram_range_and_c() -> None:
    texts = [t for ts in TOPICS.values() for t in ts]
    labels = [c for c, ts in TOPICS.items() for _ in ts]
    result = tune_tfidf_lr(texts, labels, seed=0, Cs=(1.0, 10.0), ngram_maxes=(1, 2))
    params = [dict(c.params) for c in result.cv.candidates]
    assert params == [
        {"ngram_max": 1, "C": 1.0},
        {"ngram_max": 1, "C": 10.0},
        {"ngram_max": 2, "C": 1.0},
        {"ngram_max": 2, "C": 10.0},
    ]
    assert set(result.chosen) == {"ngram_max", "C"}
    best = result.best
    assert best is not None
    assert best.mean == max(c.mean for c in result.cv.candidates)
    assert result.cv.plan.n_folds >= 10 and result.cv.folds_run == result.cv.plan.n_folds
