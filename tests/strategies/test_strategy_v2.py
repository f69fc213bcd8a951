"""Strategy contract v2: one suite over every registered strategy through ``choose``, plus
exact small cases and properties of the new ones (committee measures, diversity, cold start)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import INPUTS, MEASURES, SelectionInputs, Strategy, StrategyInputError, typiclust
from strategies import batch as b

ALL = list(MEASURES.values())


def _inputs(
    n: int = 60, c: int = 3, t: int = 4, d: int = 8, m: int = 10, seed: int = 0
) -> SelectionInputs:
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    lab = rng.normal(size=(m, d)).astype(np.float32)
    lab /= np.linalg.norm(lab, axis=1, keepdims=True)
    samples = rng.dirichlet(np.ones(c), size=(n, t))
    return SelectionInputs(
        proba=samples.mean(axis=1),
        proba_samples=samples,
        embeddings=emb,
        labeled_embeddings=lab,
        labels=rng.integers(0, c, size=m),
        labeled_proba=rng.dirichlet(np.ones(c), size=m),
    )


def _only(inputs: SelectionInputs, needs: frozenset[str]) -> SelectionInputs:
    return SelectionInputs(size=inputs.n, **{k: getattr(inputs, k) for k in needs})


@pytest.mark.parametrize("strategy", ALL, ids=lambda s: s.name)
def test_contract_for_every_strategy(strategy: Strategy) -> None:
    assert strategy.needs <= INPUTS and strategy.summary
    assert bool(strategy.needs) != (strategy.name == "random")  # random alone needs nothing
    assert strategy.name == "random" or strategy.paper
    inputs = _only(_inputs(), strategy.needs)  # exactly what it declares, nothing more
    for k in (1, 7, 60, 100):
        idx, scores = strategy.choose(inputs, k, np.random.default_rng(3))
        assert idx.dtype == np.intp and idx.shape == (min(k, 60),)
        assert len(set(idx.tolist())) == idx.shape[0] and (0 <= idx).all() and (idx < 60).all()
        if scores is not None:
            assert scores.shape == (60,) and np.isfinite(scores).all()
    a, _ = strategy.choose(inputs, 10, np.random.default_rng(5))
    again, _ = strategy.choose(inputs, 10, np.random.default_rng(5))
    np.testing.assert_array_equal(a, again)  # seeded: reproducible


@pytest.mark.parametrize("strategy", [s for s in ALL if s.needs - {"proba"}], ids=lambda s: s.name)
def test_a_missing_input_is_a_clear_error(strategy: Strategy) -> None:
    with pytest.raises(StrategyInputError, match="input"):
        strategy.choose(SelectionInputs(proba=_inputs().proba), 5, np.random.default_rng(0))


def test_empty_pool() -> None:
    for strategy in ALL:
        inputs = SelectionInputs(
            proba=np.empty((0, 3)),
            proba_samples=np.empty((0, 4, 3)),
            embeddings=np.empty((0, 8), dtype=np.float32),
            labeled_embeddings=np.empty((0, 8), dtype=np.float32),
            labels=np.empty(0, dtype=np.intp),
            labeled_proba=np.empty((0, 3)),
        )
        idx, _ = strategy.choose(inputs, 5, np.random.default_rng(0))
        assert idx.shape == (0,), strategy.name


# -- committee measures -----------------------------------------------------------------------
def test_committee_measures_by_hand() -> None:
    agree = np.array([[[0.9, 0.1], [0.9, 0.1]]])  # members agree: no disagreement
    split = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # confident members that disagree
    for fn in (b.bald, b.kl_consensus):
        assert fn(SelectionInputs(proba_samples=agree))[0] == pytest.approx(0.0, abs=1e-12)
        assert fn(SelectionInputs(proba_samples=split))[0] == pytest.approx(np.log(2), abs=1e-6)
    assert b.vote_entropy(SelectionInputs(proba_samples=agree))[0] == 0.0
    assert b.vote_entropy(SelectionInputs(proba_samples=split))[0] == pytest.approx(np.log(2))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), t=st.integers(2, 6), c=st.integers(2, 5))
def test_bald_is_mean_kl_to_the_consensus_and_non_negative(seed: int, t: int, c: int) -> None:
    s = np.random.default_rng(seed).dirichlet(np.ones(c), size=(30, t))
    inputs = SelectionInputs(proba_samples=s)
    mi, kl = b.bald(inputs), b.kl_consensus(inputs)
    assert (mi >= 0).all()
    np.testing.assert_allclose(mi, kl, atol=1e-9)  # the identity MI = E_t KL(p_t || p_mean)


def test_committee_shape_is_checked() -> None:
    with pytest.raises(StrategyInputError, match="n_members >= 2"):
        b.bald(SelectionInputs(proba_samples=np.ones((3, 1, 2)) / 2))


# -- diversity ---------------------------------------------------------------------------------
def _clusters() -> tuple[np.ndarray, np.ndarray]:
    """Three tight groups of 20 points on the unit circle."""
    rng = np.random.default_rng(0)
    angles = np.repeat([0.0, 2.1, 4.2], 20) + rng.normal(scale=0.01, size=60)
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    return emb, np.repeat([0, 1, 2], 20)


def test_coreset_covers_every_group_far_from_the_labeled_set() -> None:
    emb, group = _clusters()
    labeled = emb[:1]  # group 0 is labeled already
    idx, _ = b.coreset(
        SelectionInputs(embeddings=emb, labeled_embeddings=labeled), 2, np.random.default_rng(0)
    )
    assert sorted(group[idx].tolist()) == [1, 2]


def test_badge_first_pick_is_the_longest_gradient_and_the_batch_spreads() -> None:
    emb, group = _clusters()
    proba = np.full((60, 2), [0.99, 0.01])
    proba[45] = [0.5, 0.5]  # the most uncertain item
    idx, scores = b.badge(SelectionInputs(proba=proba, embeddings=emb), 3, np.random.default_rng(0))
    assert idx[0] == 45 and scores is not None and int(np.argmax(scores)) == 45
    assert len(set(group[idx].tolist())) >= 2


def test_cluster_margin_takes_one_per_cluster_among_the_uncertain() -> None:
    emb, group = _clusters()
    proba = np.full((60, 2), [0.6, 0.4])  # all equally uncertain
    idx, _ = b.cluster_margin(
        SelectionInputs(proba=proba, embeddings=emb), 3, np.random.default_rng(1), candidates=20
    )
    assert sorted(group[idx].tolist()) == [0, 1, 2]


def test_density_prefers_the_dense_region_at_equal_uncertainty() -> None:
    angles = np.concatenate([np.linspace(0.0, 0.3, 60), [3.1]])  # a dense arc and an outlier
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    proba = np.full((61, 2), 0.5)
    scores = b.density_margin(SelectionInputs(proba=proba, embeddings=emb))
    assert scores[60] < np.median(scores[:60])


def test_power_margin_samples_in_proportion() -> None:
    proba = np.array([[0.5, 0.5]] + [[0.99, 0.01]] * 9)  # item 0 is far more uncertain
    firsts = [
        b.power_margin(SelectionInputs(proba=proba), 1, np.random.default_rng(s))[0][0]
        for s in range(300)
    ]
    share = np.mean(np.array(firsts) == 0)
    expected = 1.0 / (1.0 + 9 * 0.02)  # margins 1.0 vs 0.02
    assert abs(share - expected) < 0.08


def test_class_balance_asks_more_of_the_rare_class() -> None:
    rng = np.random.default_rng(0)
    proba = rng.dirichlet([1, 1], size=200)
    labels = np.array([0] * 40 + [1] * 2)  # class 1 is rare in the labels
    idx, _ = b.class_balanced_margin(
        SelectionInputs(proba=proba, labels=labels), 10, np.random.default_rng(0)
    )
    pred = np.argmax(proba, axis=1)[idx]
    assert (pred == 1).sum() > (pred == 0).sum()


def test_balanced_cluster_margin_balances_classes_and_spreads_within_each() -> None:
    emb, group = _clusters()
    # groups 0 and 1 are predicted class 0, group 2 class 1; class 0 is the rarer in the labels
    proba = np.where((group == 2)[:, None], [0.45, 0.55], [0.55, 0.45])
    proba[:20] = [0.52, 0.48]  # group 0 is the most uncertain: plain margin would ask only it
    labels = np.array([0] * 3 + [1] * 5)
    inputs = SelectionInputs(proba=proba, embeddings=emb, labels=labels)
    idx, _ = b.balanced_cluster_margin(inputs, 4, np.random.default_rng(0), candidates=20)
    # quotas floor(4 * [1/4, 1/6] / (1/4 + 1/6)) = [2, 1], one place left over
    pred = np.argmax(proba, axis=1)[idx]
    assert (pred == 1).sum() == 1 and len(set(group[idx].tolist())) == 3
    plain, _ = b.class_balanced_margin(
        SelectionInputs(proba=proba, labels=labels), 4, np.random.default_rng(0)
    )
    assert set(group[plain].tolist()) == {0, 2}  # without clusters: no item of group 1
    with pytest.raises(StrategyInputError, match="one row per pool item"):
        b.balanced_cluster_margin(
            SelectionInputs(proba=proba, embeddings=emb[:5], labels=labels),
            4,
            np.random.default_rng(0),
        )


def test_typiclust_picks_one_typical_item_per_group() -> None:
    emb, group = _clusters()
    idx = typiclust(emb, 3, np.random.default_rng(0), neighbours=5)
    assert sorted(group[idx].tolist()) == [0, 1, 2]
    np.testing.assert_array_equal(idx, typiclust(emb, 3, np.random.default_rng(0), neighbours=5))


def test_greedy_strategies_choose_among_candidates_over_the_work_cap(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Over WORK_CAP, core-set picks from a random candidate set and BADGE from the items of
    longest gradient; picks stay distinct pool indices, scores cover the whole pool."""
    import strategies
    from strategies import batch

    rng = np.random.default_rng(0)
    n, k = 3000, 20
    emb = rng.standard_normal((n, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    proba = rng.dirichlet(np.ones(4), size=n)
    lab = emb[:10].copy()
    monkeypatch.setattr(batch, "WORK_CAP", 5000)
    monkeypatch.setattr(batch, "MIN_CANDIDATES", 100)
    assert batch.candidate_count(n, k) == 250
    inputs = strategies.SelectionInputs(proba=proba, embeddings=emb, labeled_embeddings=lab)
    for name in ("coreset", "badge"):
        st = strategies.get_measure(name)
        idx, scores = st.choose(inputs, k, np.random.default_rng(1))
        again, _ = st.choose(inputs, k, np.random.default_rng(1))
        assert len(set(idx.tolist())) == k and idx.min() >= 0 and idx.max() < n
        assert np.array_equal(idx, again) and scores is not None and scores.shape == (n,)
    a = proba.copy()
    a[np.arange(n), proba.argmax(axis=1)] -= 1.0
    g = (a * a).sum(axis=1)
    idx, _ = strategies.get_measure("badge").choose(inputs, k, np.random.default_rng(1))
    assert g[idx].min() >= np.sort(g)[-250]  # only the 250 longest gradients compete
    picks = strategies.typiclust(emb, 5, np.random.default_rng(2))
    assert len(set(picks.tolist())) == 5 and picks.max() < n


# -- contrastive (CAL) --------------------------------------------------------------------
def _cal_case() -> SelectionInputs:
    # two labeled regions (x axis: predicted class 0 confidently, y axis: class 1)
    lab = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0.14, 0.99, 0]], dtype=np.float32)
    lab /= np.linalg.norm(lab, axis=1, keepdims=True)
    lab_p = np.array([[0.95, 0.05], [0.9, 0.1], [0.05, 0.95], [0.1, 0.9]])
    emb = np.array(
        [
            [1, 0.05, 0],  # looks like the class-0 labels, predicted class 1: contrastive
            [0.05, 1, 0],  # looks like the class-1 labels, predicted class 1: agrees
            [0.7, 0.7, 0],  # between the two, predicted 50/50
            [0, 0, 1],  # far from everything, predicted 50/50
        ],
        dtype=np.float32,
    )
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    proba = np.array([[0.2, 0.8], [0.1, 0.9], [0.5, 0.5], [0.5, 0.5]])
    return SelectionInputs(proba=proba, embeddings=emb, labeled_embeddings=lab, labeled_proba=lab_p)


def test_contrastive_asks_where_the_prediction_contradicts_the_labeled_neighbours() -> None:
    inputs = _cal_case()
    idx, scores = b.contrastive(inputs, 4, np.random.default_rng(0), neighbours=2)
    assert idx[0] == 0 and scores is not None
    assert scores[1] < scores[2] < scores[0]  # agreeing neighbours score lowest
    # by hand: item 0's two nearest labeled are the class-0 ones
    p = inputs.proba[0]
    want = np.mean([np.sum(q * np.log(q / p)) for q in inputs.labeled_proba[:2]])
    assert scores[0] == pytest.approx(want)
    # with every labeled item as a neighbour, the score is the mean KL over all of them
    _, all_scores = b.contrastive(inputs, 1, np.random.default_rng(0), neighbours=99)
    want = np.mean([np.sum(q * np.log(q / p)) for q in inputs.labeled_proba])
    assert all_scores[0] == pytest.approx(want)


def test_contrastive_without_labels_is_margin_and_checks_shapes() -> None:
    inputs = _cal_case()
    none = SelectionInputs(
        proba=inputs.proba,
        embeddings=inputs.embeddings,
        labeled_embeddings=np.empty((0, 3), dtype=np.float32),
        labeled_proba=np.empty((0, 2)),
    )
    idx, scores = b.contrastive(none, 2, np.random.default_rng(0))
    assert set(idx.tolist()) == {2, 3} and scores is not None
    bad = SelectionInputs(
        proba=inputs.proba,
        embeddings=inputs.embeddings,
        labeled_embeddings=inputs.labeled_embeddings,
        labeled_proba=np.full((4, 3), 1 / 3),
    )
    with pytest.raises(StrategyInputError, match="labeled_proba of shape"):
        b.contrastive(bad, 2, np.random.default_rng(0))


def test_contrastive_over_the_work_cap_scores_the_most_uncertain_candidates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    full = _inputs(n=400, m=30, seed=4)
    exact_idx, exact = b.contrastive(full, 5, np.random.default_rng(1))
    monkeypatch.setattr(b, "WORK_CAP", 100)  # 400 x 30 pairs > 10 x cap
    monkeypatch.setattr(b, "MIN_CANDIDATES", 50)
    idx, scores = b.contrastive(full, 5, np.random.default_rng(1))
    unc = b.margin(full.proba)
    cand = np.flatnonzero(scores > 0)
    assert cand.shape == (50,) and set(idx.tolist()) <= set(cand.tolist())
    assert unc[cand].min() >= np.sort(unc)[-50] - 1e-12  # the 50 most uncertain
    # inside the candidates the order is the full computation's
    best = cand[np.argsort(-exact[cand], kind="stable")[:5]]
    assert set(idx.tolist()) == set(best.tolist())
    assert exact_idx.shape == (5,)
