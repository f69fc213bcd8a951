"""One contract suite for every Trainer/Classifier: embed-lr (fast), setfit (a few steps) and
finetune (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from connectors.models import TRAINER_NAMES, make_trainer
from loop.contracts import Classifier, Trainer
from loop.errors import ModelError
from tests.models.models_testdata import RecordingProgress, heldout_set, sentiment_set

CLASSES = ("pos", "neutral", "neg")  # "neutral" never has an example
PERMUTED = ("neg", "pos", "neutral")
FINETUNE_SMALL = {"epochs": 1, "max_length": 32, "min_steps": 0}
SETFIT_SMALL = {"max_steps": 6, "min_steps": 0, "max_length": 32, "device": "cpu"}
SMALL = {"finetune": FINETUNE_SMALL, "setfit": SETFIT_SMALL}


def _trainer(name: str, cache_dir: Path) -> Trainer:
    return make_trainer(name, cache_dir=cache_dir, **SMALL.get(name, {}))


TRAINERS = ["embed-lr", "setfit", pytest.param("finetune", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=TRAINERS)
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(trainer, classifier, training texts, labels): 32 sentences, "neutral" unused."""
    trainer = _trainer(request.param, tmp_path_factory.mktemp("cache"))
    texts, labels = sentiment_set(16)
    clf = trainer.train(texts, labels, classes=CLASSES, seed=7)
    return trainer, clf, texts, labels


def test_implements_the_contracts(trained) -> None:
    trainer, clf, _, _ = trained
    assert isinstance(trainer, Trainer)
    assert isinstance(clf, Classifier)
    assert trainer.name in TRAINER_NAMES
    json.dumps(dict(trainer.config()))  # recorded with every model version: must serialise
    assert clf.classes == CLASSES
    assert isinstance(clf.version, str) and len(clf.version) >= 8


def test_predict_proba_shape_rows_and_unseen_class(trained) -> None:
    _, clf, _, _ = trained
    texts, _ = heldout_set()
    proba = clf.predict_proba(texts)
    assert proba.shape == (len(texts), len(CLASSES))
    assert proba.dtype == np.float64
    assert np.all(np.isfinite(proba)) and np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(proba[:, CLASSES.index("neutral")] == 0.0)
    assert np.all(proba[:, [0, 2]] > 0)


def test_predict_proba_of_nothing(trained) -> None:
    _, clf, _, _ = trained
    assert clf.predict_proba([]).shape == (0, len(CLASSES))


def test_predict_proba_rows_follow_input_order(trained) -> None:
    _, clf, _, _ = trained
    texts, _ = heldout_set()
    proba = clf.predict_proba(texts)
    perm = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_allclose(clf.predict_proba([texts[i] for i in perm]), proba[perm], atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(texts[3:4]), proba[3:4], atol=1e-6)


def test_columns_follow_the_order_of_classes(trained) -> None:
    trainer, clf, texts, labels = trained
    other = trainer.train(texts, labels, classes=PERMUTED, seed=7)
    assert other.classes == PERMUTED
    probe, _ = heldout_set()
    a = clf.predict_proba(probe)
    b = other.predict_proba(probe)
    np.testing.assert_allclose(b, a[:, [CLASSES.index(c) for c in PERMUTED]], atol=1e-6)


def test_save_load_round_trip(trained, tmp_path: Path) -> None:
    trainer, clf, _, _ = trained
    probe, _ = heldout_set()
    before = clf.predict_proba(probe)
    clf.save(tmp_path / "model")
    loaded = trainer.load(tmp_path / "model")
    assert isinstance(loaded, Classifier)
    assert loaded.classes == clf.classes
    assert loaded.version == clf.version
    np.testing.assert_array_equal(loaded.predict_proba(probe), before)
    # saving again over the same folder replaces it and keeps it loadable
    loaded.save(tmp_path / "model")
    assert trainer.load(tmp_path / "model").version == clf.version
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_same_seed_same_version(trained) -> None:
    trainer, clf, texts, labels = trained
    again = trainer.train(texts, labels, classes=CLASSES, seed=7)
    assert again.version == clf.version


def test_version_changes_with_the_training_data(trained) -> None:
    trainer, clf, texts, labels = trained
    flipped = ["neg" if lab == "pos" else "pos" for lab in labels]
    other = trainer.train(texts, flipped, classes=CLASSES, seed=7)
    assert other.version != clf.version


def test_training_reports_progress(trained) -> None:
    trainer, _, texts, labels = trained
    progress = RecordingProgress()
    trainer.train(texts[:24], labels[:24], classes=CLASSES, seed=1, progress=progress)
    assert progress.tasks, "training reported no progress"
    for task in progress.tasks:
        assert task["total"] is None or task["done"] == task["total"]


@pytest.mark.parametrize("name", TRAINER_NAMES)
@pytest.mark.parametrize(
    ("texts", "labels", "classes", "message"),
    [
        ([], [], CLASSES, "found none"),
        (["a", "b", "c"], ["pos", "pos", "pos"], CLASSES, "2 distinct labels"),
        (["a", "b"], ["pos", "happy"], CLASSES, "['happy']"),
        (["a", "b"], ["pos"], CLASSES, "one label per text"),
        (["a", "b"], ["pos", "neg"], ("pos",), ">= 2 distinct class names"),
        (["a", "b"], ["pos", "neg"], ("pos", "neg", "pos"), ">= 2 distinct class names"),
        (["a", None], ["pos", "neg"], CLASSES, "NoneType at position 1"),
    ],
)
def test_bad_training_input_is_refused(
    name: str, texts: list, labels: list, classes: tuple, message: str, tmp_path: Path
) -> None:
    trainer = _trainer(name, tmp_path)
    with pytest.raises(ModelError, match="Fix:") as err:
        trainer.train(texts, labels, classes=classes, seed=0)
    assert message in str(err.value)


@pytest.mark.parametrize("name", TRAINER_NAMES)
def test_load_refuses_a_folder_without_a_model(name: str, tmp_path: Path) -> None:
    trainer = _trainer(name, tmp_path / "cache")
    with pytest.raises(ModelError, match="found no such file"):
        trainer.load(tmp_path / "nothing-here")


def test_load_refuses_the_other_trainers_model(trained, tmp_path: Path) -> None:
    trainer, clf, _, _ = trained
    clf.save(tmp_path / "m")
    other_name = next(n for n in TRAINER_NAMES if n != trainer.name)
    other = _trainer(other_name, tmp_path / "cache")
    with pytest.raises(ModelError):
        other.load(tmp_path / "m")
