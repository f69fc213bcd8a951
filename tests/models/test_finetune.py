"""finetune: validation split, per-epoch curve, best epoch, scoring, saved files (slow: trains)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from connectors.models.finetune import FinetuneTrainer
from loop.errors import ModelError
from tests.models.models_testdata import RecordingProgress, heldout_set, sentiment_set

pytestmark = pytest.mark.slow
SMALL = {"max_length": 32, "batch_size": 8, "min_steps": 0}


@pytest.fixture(scope="module")
def two_epochs():
    """2 epochs on 32 sentences (>= 20 labels: a stratified validation split is used)."""
    trainer = FinetuneTrainer(epochs=2, learning_rate=1e-4, **SMALL)
    texts, labels = sentiment_set(16)
    progress = RecordingProgress()
    clf = trainer.train(texts, labels, classes=["pos", "neg"], seed=3, progress=progress)
    return trainer, clf, progress


def test_validation_curve_and_best_epoch(two_epochs) -> None:
    trainer, clf, _ = two_epochs
    info = clf.info
    assert info["validation"] == {"used": True, "n": 3}  # round(0.1 * 32) = 3
    assert info["n_train"] == 29
    curve = info["curve"]
    assert [r["epoch"] for r in curve] == [1, 2]
    for r in curve:
        assert np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"])
        assert 0.0 <= r["val_accuracy"] <= 1.0
    best = min(curve, key=lambda r: r["val_loss"])
    assert info["best_epoch"] == best["epoch"]
    assert info["steps"] == 2 * 4 and info["warmup_steps"] == 1
    assert trainer.config()["learning_rate"] == 1e-4


def test_training_steps_are_reported(two_epochs) -> None:
    _, _, progress = two_epochs
    assert progress.tasks[0] == {"description": "fine-tuning", "total": 8, "done": 8}


def test_kept_weights_are_those_of_the_best_epoch(two_epochs) -> None:
    """Re-scoring the validation texts reproduces the chosen epoch's validation loss."""
    trainer, clf, _ = two_epochs
    texts, labels = sentiment_set(16)
    y = np.array([clf.model_classes.index(lab) for lab in labels])
    _, val_idx, _ = trainer._split(y, 3)
    p = clf.predict_proba([texts[i] for i in val_idx])
    cols = [clf.classes.index(c) for c in clf.model_classes]
    loss = -np.mean(np.log(p[:, cols][np.arange(len(val_idx)), y[val_idx]]))
    chosen = clf.info["curve"][clf.info["best_epoch"] - 1]
    assert loss == pytest.approx(chosen["val_loss"], abs=1e-4)


def test_few_labels_train_on_everything_and_say_so() -> None:
    texts, labels = sentiment_set(5)
    clf = FinetuneTrainer(epochs=1, **SMALL).train(texts, labels, classes=["pos", "neg"], seed=0)
    assert clf.info["validation"]["used"] is False
    assert "10 labels < 20" in clf.info["validation"]["reason"]
    assert clf.info["n_train"] == 10
    assert clf.info["best_epoch"] == 1
    assert "val_loss" not in clf.info["curve"][0]


def test_sorting_by_length_does_not_change_scores(two_epochs) -> None:
    _, clf, _ = two_epochs
    probe, _ = heldout_set()
    sorted_scores = clf.predict_proba(probe)
    clf.sort_by_length = False
    try:
        unsorted_scores = clf.predict_proba(probe)
    finally:
        clf.sort_by_length = True
    np.testing.assert_allclose(unsorted_scores, sorted_scores, atol=1e-6)


def test_scoring_reports_progress(two_epochs) -> None:
    _, clf, _ = two_epochs
    probe, _ = heldout_set()
    progress = RecordingProgress()
    clf.predict_proba(probe, progress=progress)
    assert progress.tasks == [{"description": "scoring", "total": len(probe), "done": len(probe)}]


def test_saved_files(two_epochs, tmp_path: Path) -> None:
    trainer, clf, _ = two_epochs
    clf.save(tmp_path / "m")
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"model.safetensors", "config.json", "alloop_finetune.json", "tokenizer.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    meta = json.loads((tmp_path / "m" / "alloop_finetune.json").read_text())
    assert meta["classes"] == ["pos", "neg"] and meta["info"]["curve"] == clf.info["curve"]
    loaded = trainer.load(tmp_path / "m")
    assert loaded.info["best_epoch"] == clf.info["best_epoch"]


def test_mc_dropout_samples(two_epochs) -> None:
    """Dropout passes: the declared capability, shape, rows on the simplex, samples that differ
    from each other around the deterministic prediction, seeded, eval mode restored."""
    import torch

    from loop.contracts import SamplingClassifier

    _, clf, _ = two_epochs
    assert isinstance(clf, SamplingClassifier)
    probe, _ = heldout_set()
    before = torch.random.get_rng_state()
    samples = clf.predict_proba_samples(probe, 6, seed=11)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert samples.shape == (len(probe), 6, 2) and samples.dtype == np.float64
    np.testing.assert_allclose(samples.sum(axis=2), 1.0, atol=1e-9)
    assert not clf.model.training
    spread = samples[:, :, 0].std(axis=1)
    assert (spread > 1e-4).mean() > 0.9  # dropout is really on
    np.testing.assert_array_equal(samples, clf.predict_proba_samples(probe, 6, seed=11))
    assert not np.array_equal(samples, clf.predict_proba_samples(probe, 6, seed=12))
    mean_gap = np.abs(samples.mean(axis=1) - clf.predict_proba(probe)).mean()
    assert mean_gap < 0.1  # centred near the deterministic prediction
    assert clf.predict_proba_samples([], 3, seed=0).shape == (0, 3, 2)
    with pytest.raises(ModelError, match="n_samples >= 2"):
        clf.predict_proba_samples(probe, 1, seed=0)
