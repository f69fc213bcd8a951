"""embed-lr: it learns, it computes what scikit-learn computes, it saves without pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from connectors.models.cache import CachedEmbedder
from connectors.models.embed_lr import EmbedLRTrainer
from connectors.models.encoder import MiniLMEmbedder
from loop.errors import ModelError
from tests.models.models_testdata import TOPICS, heldout_set, sentiment_set


@pytest.fixture(scope="module")
def trainer(minilm: MiniLMEmbedder, shared_cache_dir: Path) -> EmbedLRTrainer:
    return EmbedLRTrainer(CachedEmbedder(minilm, shared_cache_dir))


def test_learns_sentiment_from_40_sentences(trainer: EmbedLRTrainer) -> None:
    texts, labels = sentiment_set(20)
    clf = trainer.train(texts, labels, classes=["neg", "pos"], seed=0)
    probe, truth = heldout_set()
    pred = np.array(clf.classes)[np.argmax(clf.predict_proba(probe), axis=1)]
    accuracy = float(np.mean(pred == np.array(truth)))
    assert accuracy >= 0.8, f"held-out accuracy {accuracy:.2f} (chance is 0.5)"
    assert clf.info["train_accuracy"] >= 0.9
    assert clf.info["converged"] is True
    assert clf.info["class_counts"] == {"pos": 20, "neg": 20}


def test_learns_three_topics(trainer: EmbedLRTrainer) -> None:
    texts = [t for ts in TOPICS.values() for t in ts[:6]]
    labels = [c for c, ts in TOPICS.items() for _ in ts[:6]]
    classes = ["weather", "sports", "food"]
    clf = trainer.train(texts, labels, classes=classes, seed=0)
    probe = [t for ts in TOPICS.values() for t in ts[6:]]
    truth = [c for c, ts in TOPICS.items() for _ in ts[6:]]
    pred = [classes[i] for i in np.argmax(clf.predict_proba(probe), axis=1)]
    assert pred == truth


@pytest.mark.parametrize("n_classes", [2, 3])
def test_probabilities_equal_scikit_learns(trainer: EmbedLRTrainer, n_classes: int) -> None:
    from sklearn.linear_model import LogisticRegression

    names = list(TOPICS)[:n_classes]
    texts = [t for c in names for t in TOPICS[c]]
    labels = [c for c in names for _ in TOPICS[c]]
    classes = [*reversed(names), "unused"]
    clf = trainer.train(texts, labels, classes=classes, seed=3)
    x = trainer.embedder.embed(texts).astype(np.float64)  # the vectors training saw
    reference = LogisticRegression(C=1.0, max_iter=1000, random_state=3).fit(x, labels)
    ours = clf.predict_proba(texts)
    expected = np.zeros_like(ours)
    for j, c in enumerate(reference.classes_):
        expected[:, classes.index(c)] = reference.predict_proba(x)[:, j]
    np.testing.assert_allclose(ours, expected, atol=1e-9)


def test_c_changes_the_head(minilm: MiniLMEmbedder, shared_cache_dir: Path) -> None:
    texts, labels = sentiment_set(10)
    embedder = CachedEmbedder(minilm, shared_cache_dir)
    strong = EmbedLRTrainer(embedder, C=100.0).train(texts, labels, classes=["pos", "neg"], seed=0)
    weak = EmbedLRTrainer(embedder, C=0.01).train(texts, labels, classes=["pos", "neg"], seed=0)
    assert strong.version != weak.version
    spread = lambda clf: float(np.abs(clf.predict_proba(texts)[:, 0] - 0.5).mean())  # noqa: E731
    assert spread(strong) > spread(weak)
    assert EmbedLRTrainer(embedder, C=0.01).config()["C"] == 0.01


def test_saved_head_has_no_pickle(trainer: EmbedLRTrainer, tmp_path: Path) -> None:
    texts, labels = sentiment_set(8)
    clf = trainer.train(texts, labels, classes=["pos", "neg"], seed=0)
    clf.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["embed_lr.json", "head.npz"]
    with np.load(tmp_path / "m" / "head.npz", allow_pickle=False) as head:
        assert head["coef"].shape == (1, 384)
        assert list(head["model_classes"]) == ["neg", "pos"]
    meta = json.loads((tmp_path / "m" / "embed_lr.json").read_text())
    assert meta["version"] == clf.version
    assert meta["embedder_fingerprint"] == trainer.embedder.fingerprint


def test_load_refuses_another_encoder(trainer: EmbedLRTrainer, tmp_path: Path) -> None:
    texts, labels = sentiment_set(8)
    trainer.train(texts, labels, classes=["pos", "neg"], seed=0).save(tmp_path / "m")
    other = EmbedLRTrainer(CachedEmbedder(MiniLMEmbedder(max_length=64), tmp_path / "c"))
    with pytest.raises(ModelError, match="trained on the current encoder") as err:
        other.load(tmp_path / "m")
    assert "retrain" in str(err.value)


def test_load_refuses_altered_parameters(trainer: EmbedLRTrainer, tmp_path: Path) -> None:
    texts, labels = sentiment_set(8)
    trainer.train(texts, labels, classes=["pos", "neg"], seed=0).save(tmp_path / "m")
    with np.load(tmp_path / "m" / "head.npz") as head:
        arrays = dict(head)
    arrays["coef"] = arrays["coef"] * 2
    np.savez(tmp_path / "m" / "head.npz", **arrays)
    with pytest.raises(ModelError, match="changed after saving"):
        trainer.load(tmp_path / "m")


def test_embeddings_of_the_wrong_size_are_refused(trainer: EmbedLRTrainer) -> None:
    texts, labels = sentiment_set(4)
    clf = trainer.train(texts, labels, classes=["pos", "neg"], seed=0)
    with pytest.raises(ModelError, match=r"shape \(n, 384\)"):
        clf.predict_proba_embeddings(np.zeros((2, 10)))


def test_bad_settings_are_refused(minilm: MiniLMEmbedder) -> None:
    with pytest.raises(ModelError, match="C > 0"):
        EmbedLRTrainer(minilm, C=0)


def test_chunked_scoring_equals_one_pass(
    trainer: EmbedLRTrainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connectors.models import linear

    names = list(TOPICS)
    texts = [t for c in names for t in TOPICS[c]]
    labels = [c for c in names for _ in TOPICS[c]]
    clf = trainer.train(texts, labels, classes=names, seed=0)
    x = trainer.embedder.embed(texts)
    whole = clf.predict_proba_embeddings(x)
    monkeypatch.setattr(linear, "_CHUNK", 5)  # the head shared with tfidf-lr
    np.testing.assert_allclose(clf.predict_proba_embeddings(x), whole, rtol=0, atol=1e-12)
