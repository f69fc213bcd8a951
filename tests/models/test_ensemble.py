"""Bagging and stacking (connectors.models.ensemble) over the toy trainer and the real
embed-lr/tfidf-lr trainers: training, prediction, samples, save/load, old versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from connectors.models.ensemble import (
    BaggingTrainer,
    EnsembleClassifier,
    StackingTrainer,
    bootstrap,
    stack_predict,
)
from loop.contracts import SamplingClassifier
from loop.errors import ConfigError, ModelError
from tests.fakes import BowTrainer, toy_corpus


def _data() -> tuple[list[str], list[str], list[str]]:
    rows, classes = toy_corpus(30)
    return [r[1] for r in rows], [r[2] for r in rows], classes


def test_bootstrap_keeps_each_class_size_and_draws_with_replacement() -> None:
    labels = ["a"] * 10 + ["b"] * 4
    idx = bootstrap(labels, np.random.default_rng(0))
    assert len(idx) == 14
    assert sum(labels[i] == "a" for i in idx) == 10 and sum(labels[i] == "b" for i in idx) == 4
    assert len(set(idx.tolist())) < 14  # some drawn twice


def test_bagging_averages_members_and_gives_them_as_samples(tmp_path: Path) -> None:
    texts, labels, classes = _data()
    t = BaggingTrainer(BowTrainer(), members=4)
    clf = t.train(texts, labels, classes=classes, seed=0)
    assert isinstance(clf, SamplingClassifier) and len(clf.members) == 4
    samples = clf.predict_proba_samples(texts[:5], n_samples=9, seed=0)
    assert samples.shape == (5, 4, 2)
    assert np.allclose(clf.predict_proba(texts[:5]), samples.mean(axis=1))
    assert len({m.version for m in clf.members}) > 1  # different bootstrap samples
    again = t.train(texts, labels, classes=classes, seed=0)
    assert again.version == clf.version  # seeded
    clf.save(tmp_path / "v1")
    loaded = t.load(tmp_path / "v1")
    assert loaded.version == clf.version
    assert np.allclose(loaded.predict_proba(texts), clf.predict_proba(texts))
    assert t.config()["ensemble"] == {"kind": "bagging", "members": 4}


def test_a_version_saved_before_the_ensemble_still_loads(tmp_path: Path) -> None:
    texts, labels, classes = _data()
    plain = BowTrainer().train(texts, labels, classes=classes, seed=0)
    plain.save(tmp_path / "old")
    loaded = BaggingTrainer(BowTrainer(), members=3).load(tmp_path / "old")
    assert loaded.version == plain.version


def test_a_changed_ensemble_folder_is_refused(tmp_path: Path) -> None:
    texts, labels, classes = _data()
    t = BaggingTrainer(BowTrainer(), members=2)
    clf = t.train(texts, labels, classes=classes, seed=0)
    clf.save(tmp_path / "v")
    other = t.train(texts, labels, classes=classes, seed=5)
    other.members[1].save(tmp_path / "v" / "member-1")
    with pytest.raises(ModelError, match="changed after saving"):
        t.load(tmp_path / "v")


def test_stack_predict_is_a_softmax_over_the_flattened_bases() -> None:
    rng = np.random.default_rng(0)
    probas = rng.dirichlet(np.ones(3), size=(6, 2))
    coef, intercept = rng.normal(size=(3, 6)), rng.normal(size=3)
    z = probas.reshape(6, -1) @ coef.T + intercept
    want = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert np.allclose(stack_predict(probas, coef, intercept), want)
    binary = stack_predict(probas[:, :, :2], coef[:1, :4], intercept[:1])
    assert np.allclose(binary.sum(axis=1), 1) and binary.shape == (6, 2)


def test_stacking_real_tfidf_and_embed_lr(cache_dir: Path, tmp_path: Path) -> None:
    from connectors.models import make_trainer

    texts, labels, classes = _data()
    bases = [
        make_trainer("tfidf-lr", cache_dir=cache_dir / "embeddings"),
        make_trainer("embed-lr", cache_dir=cache_dir / "embeddings"),
    ]
    t = StackingTrainer(bases, folds=3)
    assert t.name == "stack:tfidf-lr+embed-lr"
    clf = t.train(texts, labels, classes=classes, seed=0)
    assert isinstance(clf, EnsembleClassifier) and clf.kind == "stacking"
    p = clf.predict_proba(texts)
    assert p.shape == (len(texts), 2) and np.allclose(p.sum(axis=1), 1)
    assert np.mean(np.asarray(classes)[p.argmax(axis=1)] == np.asarray(labels)) > 0.9
    assert t.embedder is bases[1].embedder  # the loop embeds the pool through the embed-lr base
    clf.save(tmp_path / "s")
    loaded = t.load(tmp_path / "s")
    assert np.allclose(loaded.predict_proba(texts), p)
    # three classes, one of them without an example: a column of zeros
    three = t.train(texts, labels, classes=[*classes, "other"], seed=0)
    q = three.predict_proba(texts[:4])
    assert q.shape == (4, 3) and np.allclose(q[:, 2], 0)


def test_bad_ensemble_settings_get_a_clear_error(tmp_path: Path) -> None:
    from loop.settings import Settings
    from loop.wiring import make_trainer

    with pytest.raises(ConfigError):
        BaggingTrainer(BowTrainer(), members=1)
    with pytest.raises(ConfigError):
        StackingTrainer([BowTrainer()])
    with pytest.raises(ConfigError, match="too slow"):
        make_trainer(Settings(home=tmp_path, model="finetune", ensemble={"kind": "bagging"}))
    assert isinstance(
        make_trainer(Settings(home=tmp_path, ensemble={"kind": "bagging", "members": 3})),
        BaggingTrainer,
    )
    stack = make_trainer(Settings(home=tmp_path, ensemble={"kind": "stacking"}))
    assert isinstance(stack, StackingTrainer) and stack.embedder is not None
    assert not isinstance(
        make_trainer(Settings(home=tmp_path, ensemble={"kind": "bagging"}), ensemble=False),
        BaggingTrainer,
    )
