"""The controller's one selection path with contract-v2 strategies: only the declared inputs
are built, embeddings come from the embedder, a committee is a bagging ensemble of the trainer,
batch strategies without scores keep their order, and the nightly refresh works for all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import strategies
from loop.controller import Controller
from loop.errors import ConfigError
from loop.oracle import OracleTool
from loop.records import Label
from tests.fakes import DIM, BowTrainer, _vec, toy_store


class HashEmbedder:
    """Unit-length hashed bag of words; counts what it embeds."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed(self, texts, progress=None):  # type: ignore[no-untyped-def]
        self.calls.append(len(texts))
        v = np.stack([_vec(t) for t in texts]) if texts else np.zeros((0, DIM))
        v = v + 1e-3
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture
def make(tmp_path: Path):  # type: ignore[no-untyped-def]
    store, _, gold, test_ids, classes = toy_store(tmp_path / "state.db")
    tool = OracleTool({i: y for i, y in gold.items() if i not in test_ids})

    def build(strategy: str, **kw: Any) -> tuple[Controller, BowTrainer, HashEmbedder | None]:
        trainer = BowTrainer()
        embedder = kw.pop("embedder", HashEmbedder())
        ctrl = Controller(
            store,
            trainer,
            tool,
            classes=classes,
            models_dir=tmp_path / "models",
            strategy=strategy,
            batch_size=5,
            initial_batch_size=8,
            min_new_labels=5,
            cold_start=kw.pop("cold_start", "random"),
            embedder=embedder,
            seed=3,
            **kw,
        )
        return ctrl, trainer, embedder

    yield build
    store.close()


@pytest.mark.parametrize("name", [s for s in strategies.available()])
def test_every_strategy_runs_through_the_loop(make, name: str) -> None:  # type: ignore[no-untyped-def]
    ctrl, trainer, embedder = make(name)
    ctrl.run_iteration()
    rep = ctrl.run_iteration()  # trains on the cold start, then selects with the strategy
    assert rep.trained and rep.selected == 5
    qs = ctrl.store.queries(iteration=rep.number)
    assert {q.strategy for q in qs} == {name} and [q.rank for q in qs] == list(range(5))
    assert all(np.isfinite(q.score) for q in qs)
    st = strategies.get_measure(name)
    # only what it declares is built: no embeddings for a strategy over probabilities
    wants_emb = bool(st.needs & {"embeddings", "labeled_embeddings"})
    assert bool(embedder.calls) == wants_emb
    # a committee is trained only for the strategies that need one
    assert trainer.train_calls == 1 + (ctrl.committee_size if "proba_samples" in st.needs else 0)
    ctrl.nightly()  # refreshes the waiting tasks' scores with the same strategy (or keeps order)


def test_batch_strategy_scores_follow_the_chosen_order(make) -> None:  # type: ignore[no-untyped-def]
    ctrl, _, _ = make("coreset")
    ctrl.run_iteration()
    rep = ctrl.run_iteration()
    qs = sorted(ctrl.store.queries(iteration=rep.number), key=lambda q: q.rank)
    scores = [q.score for q in qs]
    assert scores == sorted(scores, reverse=True)  # farthest first: the queue asks it first


def test_embedding_strategies_need_an_embedder(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="needs the pool's embeddings"):
        make("badge", embedder=None)
    make("bald", embedder=None)  # a committee needs none
    with pytest.raises(ConfigError, match="committee_size"):
        make("bald", committee_size=1)


def test_typiclust_cold_start(make) -> None:  # type: ignore[no-untyped-def]
    ctrl, _, embedder = make("margin", cold_start="typiclust")
    rep = ctrl.run_iteration()
    qs = ctrl.store.queries(iteration=rep.number)
    assert rep.selected == 8 and {q.strategy for q in qs} == {"cold-start-typiclust"}
    assert embedder.calls  # clustered on the pool's embeddings
    with pytest.raises(ConfigError, match="typiclust"):
        make("margin", cold_start="typiclust", embedder=None)


def test_every_iteration_records_the_stopping_criteria(make) -> None:  # type: ignore[no-untyped-def]
    ctrl, _, _ = make("margin")
    first = ctrl.run_iteration()
    assert first.stopping is None  # nothing trained yet, nothing to judge
    rep = ctrl.run_iteration()
    assert rep.stopping is not None and not rep.stopping["stopped"]
    assert set(rep.stopping["criteria"]) == {
        "stable-predictions",
        "low-uncertainty",
        "plateau",
        "budget",
    }
    # every model version is scored on one fixed stop set drawn from the pool
    stop_set = ctrl.store.get_meta("stop_set")
    assert stop_set and set(stop_set) <= {it.id for it in ctrl.store.pool()} | {
        q.item_id for q in ctrl.store.queries()
    }
    mv = ctrl.store.model_versions()[-1]
    rec = ctrl.store.get_meta(f"stop_set:{mv.id}")
    assert len(rec["predictions"]) == len(stop_set) and 0.0 <= rec["uncertainty"] <= 1.0
    rep = ctrl.run_iteration()
    assert rep.stopping["models_scored"] == 2
    assert ctrl.stopped() is None  # no stop_when: criteria are reported, never acted on


def test_stop_when_stops_pushing_but_labels_still_train(make) -> None:  # type: ignore[no-untyped-def]
    from loop.runner import describe
    from loop.service.status import project_status

    ctrl, trainer, _ = make("margin", stop_when=["budget"], stopping={"budget": 13})
    ctrl.run_iteration()  # cold start: 8 items
    rep = ctrl.run_iteration()  # trains on 8 (< 13): goes on, asks 5 more
    assert rep.selected == 5 and not rep.stopping["stopped"] and ctrl.stopped() is None
    rep = ctrl.run_iteration()  # the 5 answers arrive: trains on 13, then stops asking
    assert rep.trained and rep.n_labels == 13
    assert rep.selected == 0 and rep.sent == 0
    assert rep.stopping["stopped"] and "budget: 13 of 13 labels" in rep.stopping["reason"]
    assert ctrl.stopped() == rep.stopping["reason"]
    assert "STOPPED by stop_when (budget: 13 of 13 labels)" in describe(rep)
    assert project_status(ctrl.store)["stopping"]["stopped"] is True
    # labels that still arrive (annotators open old tasks) are ingested and trained on
    ctrl.store.add_labels(
        [
            Label(item_id=it.id, value="pos", source="labelstudio", annotation_id=f"late:{it.id}")
            for it in ctrl.store.pool()[:5]  # min_new_labels
        ]
    )
    calls = trainer.train_calls
    rep = ctrl.run_iteration()
    assert rep.trained and rep.n_labels == 18 and trainer.train_calls == calls + 1
    assert rep.selected == 0 and rep.stopping["stopped"]


def test_stop_when_rejects_unknown_criteria(make) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"unknown criteria \['forever'\]"):
        make("margin", stop_when=["forever"])


class _SamplingBow:
    """A BowClassifier that also gives its own probability samples (as MC dropout does)."""

    def __init__(self, inner: Any, calls: list[tuple[int, int]]) -> None:
        self.inner, self.calls = inner, calls
        self.classes, self.version = inner.classes, inner.version

    def predict_proba(self, texts, progress=None):  # type: ignore[no-untyped-def]
        return self.inner.predict_proba(texts)

    def predict_proba_samples(self, texts, n_samples, seed, progress=None):  # type: ignore[no-untyped-def]
        self.calls.append((len(texts), n_samples))
        p = self.inner.predict_proba(texts)
        noise = np.random.default_rng(seed).dirichlet(
            np.ones(p.shape[1]), size=(len(texts), n_samples)
        )
        return 0.8 * p[:, None, :] + 0.2 * noise

    def save(self, path):  # type: ignore[no-untyped-def]
        self.inner.save(path)


def test_a_sampling_classifier_gives_the_committee_itself(make) -> None:  # type: ignore[no-untyped-def]
    from loop.contracts import SamplingClassifier

    ctrl, trainer, _ = make("bald", committee_size=4)
    calls: list[tuple[int, int]] = []
    train, load = trainer.train, trainer.load
    trainer.train = lambda *a, **kw: _SamplingBow(train(*a, **kw), calls)
    trainer.load = lambda path: _SamplingBow(load(path), calls)
    ctrl.run_iteration()
    rep = ctrl.run_iteration()
    assert rep.selected == 5
    assert trainer.train_calls == 1  # no bagging committee was trained
    pool = len(ctrl.store.pool()) + 5
    assert calls and calls[0] == (pool, 4)  # the whole pool, committee_size samples
    assert isinstance(ctrl.load_classifier(ctrl.store.model_versions()[-1]), SamplingClassifier)


@pytest.mark.parametrize("name", ["margin", "entropy", "least-confidence", "random"])
def test_a_streamed_pool_selects_as_the_whole_pool(make, name: str) -> None:  # type: ignore[no-untyped-def]
    """A score strategy over probabilities, read 3 pool items at a time with a running top-k,
    picks items with the same scores as over the whole pool in memory."""
    ctrl, _, _ = make(name)
    ctrl.run_iteration()
    ctrl.run_iteration()
    current = ctrl.current_model()
    assert current is not None and ctrl.store.count_pool() > 3
    whole = ctrl._select_pool(99, 4, current, np.random.default_rng(0))
    ctrl.pool_chunk_size = 3
    loaded: list[int] = []
    real_pool = ctrl.store.pool
    ctrl.store.pool = lambda: loaded.append(1) or real_pool()  # type: ignore[method-assign]
    streamed = ctrl._select_pool(99, 4, current, np.random.default_rng(0))
    assert loaded == []  # the pool was never loaded whole
    assert len(streamed) == len(whole) == 4
    if name != "random":
        assert [round(q.score, 12) for q in streamed] == [round(q.score, 12) for q in whole]
        top = {q.item_id for q in whole if q.score > whole[-1].score}
        assert top <= {q.item_id for q in streamed}  # all above the boundary tie
    assert [q.rank for q in streamed] == [0, 1, 2, 3]
    assert len({q.item_id for q in streamed}) == 4
    assert {q.item_id for q in streamed} <= {it.id for it in ctrl.store.pool()}


def test_max_candidates_runs_a_batch_strategy_on_the_most_uncertain(make) -> None:  # type: ignore[no-untyped-def]
    ctrl, _, embedder = make("cluster-margin", max_candidates=6, pool_chunk_size=4)
    ctrl.run_iteration()
    ctrl.run_iteration()
    current = ctrl.current_model()
    pool = ctrl.store.pool()
    clf = ctrl.load_classifier(current)
    margins = strategies.margin(clf.predict_proba([it.text for it in pool]))
    sixth = np.sort(margins)[::-1][5]
    embedder.calls.clear()
    picked = ctrl._select_pool(99, 3, current, np.random.default_rng(0))
    assert len(picked) == 3
    by_id = {it.id: m for it, m in zip(pool, margins, strict=True)}
    assert all(by_id[q.item_id] >= sixth for q in picked)  # among the 6 most uncertain
    assert embedder.calls == [6]  # only the candidates were embedded
    with pytest.raises(ConfigError, match="max_candidates"):
        make("margin", max_candidates=0)


def test_streamed_samples_equal_the_whole_pool_ones(make) -> None:  # type: ignore[no-untyped-def]
    """The random cold start, the stop set and the eval sample draw the same items whether the
    pool is read whole or 3 items at a time."""
    ctrl, _, _ = make("margin")
    pool = ctrl.store.pool()
    whole = ctrl._select_pool(1, 6, None, np.random.default_rng(5))
    assert [q.item_id for q in whole] == [
        pool[i].id for i in np.random.default_rng(5).permutation(len(pool))[:6]
    ]
    ctrl.pool_chunk_size = 3
    streamed = ctrl._select_pool(1, 6, None, np.random.default_rng(5))
    assert [(q.item_id, q.rank) for q in streamed] == [(q.item_id, q.rank) for q in whole]
    pick = np.random.default_rng(9).permutation(len(pool))[:7]
    assert ctrl._pool_sample(np.random.default_rng(9), 7) == [pool[i].id for i in sorted(pick)]
    assert ctrl._pool_sample(np.random.default_rng(9), 10_000) == [it.id for it in pool]
