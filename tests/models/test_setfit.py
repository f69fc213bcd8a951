"""The setfit trainer: pair sampling, the step plan and the embedding cache per tuned version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from connectors.models import make_trainer
from connectors.models.setfit import SetFitClassifier, SetFitTrainer, make_pairs
from loop.contracts import EmbeddingClassifier
from loop.errors import ModelError
from tests.models.models_testdata import heldout_set, sentiment_set


def test_pairs_are_positive_within_a_class_and_negative_across() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])  # class 2 has a single text
    pairs = make_pairs(y, 3, np.random.default_rng(0))
    assert pairs.shape == (2 * 3 * len(y), 3)
    pos, neg = pairs[pairs[:, 2] == 1], pairs[pairs[:, 2] == 0]
    assert len(pos) == len(neg) == 3 * len(y)
    assert np.all(y[pos[:, 0]] == y[pos[:, 1]])
    assert np.all(y[neg[:, 0]] != y[neg[:, 1]])
    # another text of the class whenever there is one; the lone text pairs with itself
    several = y[pos[:, 0]] != 2
    assert np.all(pos[several, 0] != pos[several, 1])
    assert np.all(pos[~several, 0] == pos[~several, 1])
    assert np.bincount(pairs[:, 0], minlength=len(y)).tolist() == [6] * len(y)
    np.testing.assert_array_equal(pairs, make_pairs(y, 3, np.random.default_rng(0)))


def test_steps_scale_with_the_labels_within_bounds() -> None:
    t = SetFitTrainer(pairs_per_text=10, batch_size=16, min_steps=20, max_steps=300)
    assert t.planned_steps(4) == 20  # 80 pairs = 5 steps, raised to min_steps
    assert t.planned_steps(100) == 125  # 2000 pairs / 16
    assert t.planned_steps(500) == 300  # capped
    with pytest.raises(ModelError, match="min_steps"):
        SetFitTrainer(min_steps=400, max_steps=300)


def test_tuned_vectors_are_cached_per_version_and_given_as_embeddings(tmp_path: Path) -> None:
    trainer = make_trainer(
        "setfit", cache_dir=tmp_path, max_steps=6, min_steps=0, max_length=32, device="cpu"
    )
    texts, labels = sentiment_set(16)
    clf = trainer.train(texts, labels, classes=("pos", "neg"), seed=1)
    assert isinstance(clf, SetFitClassifier) and isinstance(clf, EmbeddingClassifier)
    assert clf.info["steps"] == 6 and not clf.info["stopped_by_time_budget"]
    frozen = make_trainer("embed-lr", cache_dir=tmp_path).embedder.fingerprint
    assert clf.head.embedder.fingerprint != frozen  # the tuned weights are another encoder
    probe, _ = heldout_set()
    emb = clf.embed(probe)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cache = clf.head.embedder
    misses = cache.misses
    clf.predict_proba(probe)
    assert cache.misses == misses  # scored from the vectors embedded above
    other = trainer.train(texts, labels, classes=("pos", "neg"), seed=2)
    assert other.head.embedder.fingerprint != clf.head.embedder.fingerprint


def test_time_budget_stops_tuning(tmp_path: Path) -> None:
    trainer = SetFitTrainer(cache_dir=None, max_steps=200, time_budget_s=1e-3, max_length=32)
    texts, labels = sentiment_set(8)
    clf = trainer.train(texts, labels, classes=("pos", "neg"), seed=0)
    assert clf.info["stopped_by_time_budget"] and clf.info["steps"] < 200


def test_token_embeddings_stay_frozen_and_tune_layers_freezes_the_lower_layers() -> None:
    texts, labels = sentiment_set(8)
    base = SetFitTrainer(cache_dir=None, max_steps=2, min_steps=0, max_length=32, device="cpu")
    _, model = base._load_base("cpu")  # noqa: SLF001 - the untouched encoder
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for p in model.embeddings.parameters())
    per_layer = sum(p.numel() for p in model.encoder.layer[0].parameters())
    full = base.train(texts, labels, classes=("pos", "neg"), seed=0)
    assert full.info["trainable_parameters"] == total - emb
    top2 = SetFitTrainer(
        cache_dir=None, max_steps=2, min_steps=0, max_length=32, device="cpu", tune_layers=2
    )
    clf = top2.train(texts, labels, classes=("pos", "neg"), seed=0)
    n_layers = len(model.encoder.layer)
    assert clf.info["trainable_parameters"] == total - emb - (n_layers - 2) * per_layer
    tuned = dict(clf.encoder._model.named_parameters())  # noqa: SLF001 - inspection
    for name, p in before.items():
        changed = not np.allclose(tuned[name].detach().numpy(), p.numpy())
        frozen = name.startswith("embeddings.") or any(
            name.startswith(f"encoder.layer.{i}.") for i in range(n_layers - 2)
        )
        if frozen:
            assert not changed, name
    assert any(
        not np.allclose(tuned[n].detach().numpy(), before[n].numpy())
        for n in before
        if n.startswith(f"encoder.layer.{n_layers - 1}.")
    )
    with pytest.raises(ModelError, match="tune_layers >= 0"):
        SetFitTrainer(tune_layers=-1)


def test_init_previous_goes_on_from_the_previous_tuned_encoder(tmp_path: Path) -> None:
    texts, labels = sentiment_set(8)
    kw = dict(cache_dir=None, max_steps=2, min_steps=0, max_length=32, device="cpu")
    first = SetFitTrainer(**kw).train(texts, labels, classes=("pos", "neg"), seed=0)
    first.save(tmp_path / "v1")
    warm = SetFitTrainer(**kw, init="previous")
    assert warm.warm_start and not SetFitTrainer(**kw).warm_start
    assert warm.config()["init"] == "previous"
    # tuning went on from v1's weights: the same seed and steps from the base give other weights
    cont = warm.train(texts, labels, classes=("pos", "neg"), seed=1, previous=tmp_path / "v1")
    fresh = SetFitTrainer(**kw).train(texts, labels, classes=("pos", "neg"), seed=1)
    assert cont.info["start"] == "previous" and fresh.info["start"] == "base"
    assert cont.encoder.fingerprint not in (first.encoder.fingerprint, fresh.encoder.fingerprint)
    # without a previous model a warm-starting trainer starts from the base encoder
    same = warm.train(texts, labels, classes=("pos", "neg"), seed=1)
    assert same.info["start"] == "base" and same.encoder.fingerprint == fresh.encoder.fingerprint
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "setfit.json").write_text('{"format": "alloop.embed-lr/1"}')
    with pytest.raises(ModelError, match="to start from"):
        warm.train(texts, labels, classes=("pos", "neg"), seed=1, previous=tmp_path / "bad")
    with pytest.raises(ModelError, match="setfit.init"):
        SetFitTrainer(init="last")
