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
