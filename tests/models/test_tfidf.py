"""tfidf-lr: the trainer contract, features and probabilities equal to scikit-learn's, saving
without pickle, refusal of altered files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from connectors.models import make_trainer
from connectors.models.tfidf import (
    ARRAYS_FILE,
    VOCAB_FILE,
    TfidfFeatures,
    TfidfLRTrainer,
    TfidfSpec,
)
from loop.errors import ConfigError, ModelError
from tests.models.models_testdata import TOPICS, heldout_set, sentiment_set

# the shared trainer contract suite, run here against tfidf-lr (the ``trained`` fixture below)
from tests.models.test_trainer_contract import (  # noqa: F401
    CLASSES,
    test_columns_follow_the_order_of_classes,
    test_implements_the_contracts,
    test_load_refuses_the_other_trainers_model,
    test_predict_proba_of_nothing,
    test_predict_proba_rows_follow_input_order,
    test_predict_proba_shape_rows_and_unseen_class,
    test_same_seed_same_version,
    test_save_load_round_trip,
    test_training_reports_progress,
    test_version_changes_with_the_training_data,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    trainer = make_trainer("tfidf-lr", cache_dir=tmp_path_factory.mktemp("cache"))
    texts, labels = sentiment_set(16)
    return trainer, trainer.train(texts, labels, classes=CLASSES, seed=7), texts, labels


def _topics(n: int) -> tuple[list[str], list[str], list[str], list[str]]:
    """The first ``n`` sentences of each topic to train on, the rest to test on."""
    texts = [t for ts in TOPICS.values() for t in ts[:n]]
    labels = [c for c, ts in TOPICS.items() for _ in ts[:n]]
    probe = [t for ts in TOPICS.values() for t in ts[n:]]
    truth = [c for c, ts in TOPICS.items() for _ in ts[n:]]
    return texts, labels, probe, truth


@pytest.mark.parametrize(
    "spec",
    [TfidfSpec(), TfidfSpec(ngram_max=1), TfidfSpec(min_df=2), TfidfSpec(sublinear_tf=False)],
    ids=["default", "unigrams", "min_df2", "raw_tf"],
)
def test_features_equal_scikit_learns_vectorizer(spec: TfidfSpec) -> None:
    texts, _ = sentiment_set(20)
    probe, _ = heldout_set()
    probe = [*probe, "zzz qqq", "", "LOVED the FILM, loved it!"]  # unknown, empty, case
    features, x = TfidfFeatures.fit_transform(spec, texts)
    reference = spec.vectorizer().fit(texts)
    np.testing.assert_allclose(x.toarray(), reference.transform(texts).toarray(), atol=1e-12)
    np.testing.assert_allclose(
        features.transform(probe).toarray(), reference.transform(probe).toarray(), atol=1e-12
    )
    assert list(features.terms) == list(reference.get_feature_names_out())


@pytest.mark.parametrize("n_classes", [2, 3])
def test_probabilities_equal_scikit_learns(n_classes: int) -> None:
    from sklearn.linear_model import LogisticRegression

    names = list(TOPICS)[:n_classes]
    texts = [t for c in names for t in TOPICS[c]]
    labels = [c for c in names for _ in TOPICS[c]]
    classes = [*reversed(names), "unused"]
    clf = TfidfLRTrainer(C=5.0).train(texts, labels, classes=classes, seed=3)
    vec = TfidfSpec().vectorizer()
    x = vec.fit_transform(texts)
    ref = LogisticRegression(C=5.0, max_iter=1000, solver="newton-cg", random_state=3)
    ref.fit(x, labels)
    probe, _ = heldout_set()
    ours = clf.predict_proba(probe)
    expected = np.zeros_like(ours)
    for j, c in enumerate(ref.classes_):
        expected[:, classes.index(c)] = ref.predict_proba(vec.transform(probe))[:, j]
    np.testing.assert_allclose(ours, expected, atol=1e-10)


def test_learns_topics_from_keywords() -> None:
    texts, labels, probe, truth = _topics(6)
    clf = TfidfLRTrainer().train(texts, labels, classes=sorted(TOPICS), seed=0)
    pred = [clf.classes[i] for i in np.argmax(clf.predict_proba(probe), axis=1)]
    assert np.mean(np.array(pred) == np.array(truth)) >= 0.5  # 6 test sentences, chance 1/3
    assert clf.info["train_accuracy"] == 1.0
    assert clf.info["converged"] is True
    assert clf.info["n_terms"] > 50


def test_text_without_known_terms_gets_the_intercept() -> None:
    texts, labels = sentiment_set(10)
    clf = TfidfLRTrainer().train(texts, labels, classes=["neg", "pos"], seed=0)
    p = clf.predict_proba(["", "zzz qqq xyzzy"])
    np.testing.assert_allclose(p[0], p[1])
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_saved_without_pickle(tmp_path: Path) -> None:
    texts, labels, probe, _ = _topics(8)
    clf = TfidfLRTrainer().train(texts, labels, classes=sorted(TOPICS), seed=0)
    clf.save(tmp_path / "m")
    terms = json.loads((tmp_path / "m" / VOCAB_FILE).read_text("utf-8"))
    assert terms == list(clf.features.terms)
    with np.load(tmp_path / "m" / ARRAYS_FILE, allow_pickle=False) as arrays:
        assert arrays["coef"].shape == (3, len(terms))
        assert arrays["idf"].shape == (len(terms),)
    loaded = TfidfLRTrainer(C=0.1, ngram_max=1).load(tmp_path / "m")  # settings come from disk
    np.testing.assert_array_equal(loaded.predict_proba(probe), clf.predict_proba(probe))


def test_load_refuses_changed_weights(tmp_path: Path) -> None:
    texts, labels = sentiment_set(10)
    clf = TfidfLRTrainer().train(texts, labels, classes=["neg", "pos"], seed=0)
    clf.save(tmp_path / "m")
    path = tmp_path / "m" / ARRAYS_FILE
    with np.load(path, allow_pickle=False) as a:
        arrays = {k: a[k] for k in a.files}
    arrays["coef"] = arrays["coef"] * 2
    np.savez(path, **arrays)
    with pytest.raises(ModelError, match="changed after saving"):
        TfidfLRTrainer().load(tmp_path / "m")


def test_load_refuses_a_missing_vocabulary(tmp_path: Path) -> None:
    texts, labels = sentiment_set(10)
    TfidfLRTrainer().train(texts, labels, classes=["neg", "pos"], seed=0).save(tmp_path / "m")
    (tmp_path / "m" / VOCAB_FILE).unlink()
    with pytest.raises(ModelError, match="vocabulary"):
        TfidfLRTrainer().load(tmp_path / "m")


def test_texts_without_words_are_refused() -> None:
    with pytest.raises(ModelError, match="vocabulary") as err:
        TfidfLRTrainer().train(
            ["a", "b", "1"], ["pos", "neg", "pos"], classes=["pos", "neg"], seed=0
        )
    assert "Fix:" in str(err.value)


def test_factory_settings(tmp_path: Path) -> None:
    trainer = make_trainer("tfidf-lr", cache_dir=tmp_path, C=2.0, ngram_max=1, min_df=2)
    assert isinstance(trainer, TfidfLRTrainer)
    config = trainer.config()
    assert (config["C"], config["ngram_max"], config["min_df"]) == (2.0, 1, 2)
    with pytest.raises(ConfigError, match="epochs"):
        make_trainer("tfidf-lr", cache_dir=tmp_path, epochs=3)
    with pytest.raises(ModelError, match="C > 0"):
        make_trainer("tfidf-lr", cache_dir=tmp_path, C=0)
