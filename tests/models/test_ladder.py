"""The model ladder: the trainer contract, the rule, what it records, loading whichever rung
was saved, finetune gating, and that texts are embedded once per training."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connectors.models import make_trainer
from connectors.models.cache import CachedEmbedder
from connectors.models.embed_lr import EmbedLRTrainer
from connectors.models.ladder import META_FILE, MODEL_DIR, RUNGS, LadderTrainer, choose_rung
from connectors.models.tfidf import TfidfLRTrainer
from connectors.models.tuning import EMBED_CS
from loop.errors import ConfigError, ModelError
from loop.progress import SILENT, Progress
from tests.models.models_testdata import NEGATIVE, POSITIVE, TOPICS, heldout_set, sentiment_set

# the shared trainer contract suite, run here against the ladder (the ``trained`` fixture below)
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
def trained(shared_cache_dir: Path):
    trainer = make_trainer("ladder", cache_dir=shared_cache_dir)
    texts, labels = sentiment_set(16)
    return trainer, trainer.train(texts, labels, classes=CLASSES, seed=7), texts, labels


def keyword_set(n_per_class: int = 20) -> tuple[list[str], list[str]]:
    """Varied English sentences, each tagged with a made-up code word that alone gives the
    class ("zorblax" -> alpha, "quintor" -> beta); the sentences say nothing about it."""
    filler = POSITIVE + NEGATIVE + [t for ts in TOPICS.values() for t in ts]
    texts, labels = [], []
    for i in range(n_per_class):
        texts.append(f"{filler[(2 * i) % len(filler)]} Reference zorblax.")
        labels.append("alpha")
        texts.append(f"{filler[(2 * i + 1) % len(filler)]} Reference quintor.")
        labels.append("beta")
    return texts, labels


def _records(clf: Any) -> dict[str, dict[str, Any]]:
    return {r["rung"]: r for r in clf.info["ladder"]}


def test_picks_tfidf_where_keywords_decide_and_records_every_rung(shared_cache_dir: Path) -> None:
    trainer = make_trainer("ladder", cache_dir=shared_cache_dir)
    texts, labels = keyword_set(20)
    clf = trainer.train(texts, labels, classes=["alpha", "beta"], seed=0)
    records = _records(clf)
    assert [r["rung"] for r in clf.info["ladder"]] == list(RUNGS)
    for r in clf.info["ladder"]:
        assert {"rung", "cv_accuracy", "std", "seconds", "chosen", "why"} <= set(r)
        assert r["why"]
    assert clf.info["chosen"] == "tfidf-lr" and clf.rung == "tfidf-lr"
    assert [r["rung"] for r in clf.info["ladder"] if r["chosen"]] == ["tfidf-lr"]
    assert records["tfidf-lr"]["cv_accuracy"] == 1.0 and records["tfidf-lr"]["n_folds"] == 10
    assert records["embed-lr"]["status"] == "scored" and records["embed-lr"]["seconds"] > 0
    assert records["embed-lr"]["cv_accuracy"] <= 1.0
    assert "cheaper tfidf-lr is kept" in records["embed-lr"]["why"]
    assert records["finetune"]["status"] == "disabled"
    assert "not enabled" in records["finetune"]["why"]
    assert clf.info["cv"]["folds_run"] == 10
    assert clf.inner.__class__.__name__ == "TfidfLRClassifier"
    json.dumps(clf.info)  # recorded with the model version: must serialise


def test_picks_embeddings_where_words_mislead(trained) -> None:
    # the sentiment pairs share their words ("I loved/hated this movie from start to
    # finish"): tf-idf learns the shared words, the sentence embeddings the meaning
    _, clf, _, _ = trained
    records = _records(clf)
    assert clf.info["chosen"] == "embed-lr"
    gain = records["embed-lr"]["cv_accuracy"] - records["tfidf-lr"]["cv_accuracy"]
    assert gain > records["embed-lr"]["std"]
    assert records["embed-lr"]["why"].startswith("beats tfidf-lr")
    assert "beaten by embed-lr" in records["tfidf-lr"]["why"]
    probe, truth = heldout_set()
    pred = np.array(clf.classes)[np.argmax(clf.predict_proba(probe), axis=1)]
    assert np.mean(pred == np.array(truth)) >= 0.8


def _scored(acc: float, std: float) -> dict[str, Any]:
    return {"status": "scored", "cv_accuracy": acc, "std": std, "chosen": False, "why": ""}


@pytest.mark.parametrize(
    ("tfidf", "embed", "finetune", "chosen"),
    [
        ((0.80, 0.05), (0.84, 0.05), None, "tfidf-lr"),  # +0.04 is within the std
        ((0.80, 0.05), (0.86, 0.05), None, "embed-lr"),  # +0.06 beats it
        ((0.80, 0.00), (0.80, 0.00), None, "tfidf-lr"),  # a tie keeps the cheaper rung
        ((0.90, 0.02), (0.85, 0.02), None, "tfidf-lr"),
        ((0.80, 0.05), (0.86, 0.05), (0.88, 0.03), "embed-lr"),  # +0.02 vs embed-lr: no
        ((0.80, 0.05), (0.86, 0.05), (0.90, 0.03), "finetune"),
        ((0.80, 0.05), (0.84, 0.05), (0.86, 0.03), "finetune"),  # vs the incumbent tfidf-lr
    ],
)
def test_the_rule(tfidf, embed, finetune, chosen: str) -> None:
    records = {"tfidf-lr": _scored(*tfidf), "embed-lr": _scored(*embed)}
    if finetune is not None:
        records["finetune"] = _scored(*finetune)
    order = [r for r in RUNGS if r in records]
    assert choose_rung(records, order, "embed-lr") == chosen
    assert [r for r in order if records[r]["chosen"]] == [chosen]
    assert records[chosen]["why"].endswith("-> chosen")


def _folds(scores: list[float]) -> dict[str, Any]:
    return {**_scored(float(np.mean(scores)), float(np.std(scores))), "fold_scores": scores}


def test_the_margins() -> None:
    # embed-lr wins on every fold by 0.04-0.06, with a large fold-to-fold spread
    tfidf = [0.60, 0.70, 0.80, 0.90, 0.60, 0.70, 0.80, 0.90, 0.75, 0.65]
    embed = [s + d for s, d in zip(tfidf, [0.05, 0.04, 0.06, 0.05] * 2 + [0.05, 0.05], strict=True)]
    chosen = {}
    for margin in ("std", "paired-se", "none"):
        records = {"tfidf-lr": _folds(tfidf), "embed-lr": _folds(embed)}
        chosen[margin] = choose_rung(records, RUNGS[:2], "embed-lr", margin=margin)
        if margin == "paired-se":
            assert "paired standard error" in records["embed-lr"]["why"]
    assert chosen == {"std": "tfidf-lr", "paired-se": "embed-lr", "none": "embed-lr"}
    # noisy differences: +0.02 on average, but the folds disagree
    embed = [s + d for s, d in zip(tfidf, [0.2, -0.15, 0.1, -0.05] * 2 + [0.0, 0.0], strict=True)]
    records = {"tfidf-lr": _folds(tfidf), "embed-lr": _folds(embed)}
    assert choose_rung(records, RUNGS[:2], "embed-lr", margin="paired-se") == "tfidf-lr"
    records = {"tfidf-lr": _folds(tfidf), "embed-lr": _folds(embed)}
    assert choose_rung(records, RUNGS[:2], "embed-lr", margin="none") == "embed-lr"
    with pytest.raises(ConfigError, match="margin"):
        choose_rung(records, RUNGS[:2], "embed-lr", margin="sometimes")


def test_the_rule_without_scores_takes_the_default() -> None:
    records = {r: {"status": "not scored", "chosen": False, "why": "not scored: x"} for r in RUNGS}
    assert choose_rung(records, RUNGS[:2], "embed-lr") == "embed-lr"
    assert records["embed-lr"]["chosen"] and "default rung" in records["embed-lr"]["why"]


@pytest.mark.parametrize("data", ["keywords", "sentiment"])
def test_load_restores_whichever_rung_was_saved(
    data: str, shared_cache_dir: Path, tmp_path: Path
) -> None:
    texts, labels = keyword_set(20) if data == "keywords" else sentiment_set(16)
    classes = sorted(set(labels))
    clf = make_trainer("ladder", cache_dir=shared_cache_dir).train(
        texts, labels, classes=classes, seed=1
    )
    clf.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [META_FILE, MODEL_DIR]
    assert json.loads((tmp_path / "m" / META_FILE).read_text("utf-8"))["rung"] == clf.rung
    fresh = make_trainer("ladder", cache_dir=shared_cache_dir)
    loaded = fresh.load(tmp_path / "m")
    assert loaded.rung == clf.rung == ("tfidf-lr" if data == "keywords" else "embed-lr")
    assert loaded.version == clf.version and loaded.classes == clf.classes
    assert loaded.info["ladder"] == clf.info["ladder"]
    probe, _ = heldout_set()
    np.testing.assert_array_equal(loaded.predict_proba(probe), clf.predict_proba(probe))


def test_load_refuses_a_damaged_record(trained, tmp_path: Path) -> None:
    trainer, clf, _, _ = trained
    clf.save(tmp_path / "m")
    meta_path = tmp_path / "m" / META_FILE
    meta = json.loads(meta_path.read_text("utf-8"))
    meta_path.write_text(json.dumps({**meta, "rung": "svm"}), "utf-8")
    with pytest.raises(ModelError, match="'svm'"):
        trainer.load(tmp_path / "m")
    meta_path.write_text(json.dumps({**meta, "inner_version": "0" * 12}), "utf-8")
    with pytest.raises(ModelError, match="000000000000"):
        trainer.load(tmp_path / "m")


class CountingEmbedder:
    """Passes everything to a real embedder and counts the texts it is asked to embed."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.texts = 0

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def config(self) -> Any:
        return self.inner.config()

    def embed(self, texts: Sequence[str], progress: Progress = SILENT) -> np.ndarray:
        self.texts += len(texts)
        return self.inner.embed(texts, progress=progress)


def test_each_text_is_embedded_once_per_training(minilm, shared_cache_dir: Path) -> None:
    counting = CountingEmbedder(CachedEmbedder(minilm, shared_cache_dir))
    ladder = LadderTrainer(tfidf=TfidfLRTrainer(), embed_lr=EmbedLRTrainer(counting), tune=True)
    texts, labels = sentiment_set(12)
    clf = ladder.train(texts, labels, classes=["neg", "pos"], seed=0)
    assert clf.rung == "embed-lr"
    assert counting.texts == len(texts)  # CV over 6 Cs x 10 folds and the final fit: once
    clf.predict_proba(texts[:3])
    assert counting.texts == len(texts) + 3  # predictions go through the real embedder


def test_one_rung_with_tuning_records_its_candidates(shared_cache_dir: Path) -> None:
    trainer = make_trainer(
        "ladder", cache_dir=shared_cache_dir, rungs=["embed-lr"], tune=True, embed_lr={"C": 3.0}
    )
    texts, labels = sentiment_set(16)
    clf = trainer.train(texts, labels, classes=["neg", "pos"], seed=0)
    rec = _records(clf)["embed-lr"]
    assert rec["chosen"] and rec["status"] == "scored"
    assert [c["params"]["C"] for c in rec["candidates"]] == list(EMBED_CS)  # 3.0 is in it
    assert clf.info["chosen_params"]["C"] in EMBED_CS
    best = max(c["cv_accuracy"] for c in rec["candidates"])
    assert rec["cv_accuracy"] == best
    assert _records(clf)["tfidf-lr"]["status"] == "disabled"


def test_one_rung_without_tuning_skips_cross_validation(tmp_path: Path) -> None:
    trainer = make_trainer(
        "ladder", cache_dir=tmp_path, rungs=["tfidf-lr"], default_rung="tfidf-lr"
    )
    texts, labels = keyword_set(10)
    clf = trainer.train(texts, labels, classes=["alpha", "beta"], seed=0)
    rec = _records(clf)["tfidf-lr"]
    assert rec["chosen"] and rec["cv_accuracy"] is None
    assert "only enabled rung" in rec["why"]


def test_a_class_with_one_example_trains_the_default_rung(shared_cache_dir: Path) -> None:
    trainer = make_trainer("ladder", cache_dir=shared_cache_dir)
    texts, labels = keyword_set(10)
    labels[-1] = "gamma"
    clf = trainer.train(texts, labels, classes=["alpha", "beta", "gamma"], seed=0)
    assert clf.rung == "embed-lr"
    rec = _records(clf)["embed-lr"]
    assert "1 example" in rec["why"] and "default rung" in rec["why"]
    assert _records(clf)["tfidf-lr"]["cv_accuracy"] is None


def test_a_spent_cv_budget_trains_the_default_rung(shared_cache_dir: Path) -> None:
    trainer = make_trainer(
        "ladder", cache_dir=shared_cache_dir, cv_budget_s=1e-6, default_rung="tfidf-lr"
    )
    texts, labels = keyword_set(10)
    clf = trainer.train(texts, labels, classes=["alpha", "beta"], seed=0)
    assert clf.rung == "tfidf-lr"
    assert clf.info["cv"]["budget_hit"] is True
    assert "budget ran out" in _records(clf)["tfidf-lr"]["why"]


def test_finetune_is_skipped_below_the_minimum_of_labels(shared_cache_dir: Path) -> None:
    trainer = make_trainer(
        "ladder",
        cache_dir=shared_cache_dir,
        rungs=["tfidf-lr", "embed-lr", "finetune"],
        finetune={"epochs": 1},
    )
    texts, labels = sentiment_set(16)
    clf = trainer.train(texts, labels, classes=["neg", "pos"], seed=0)
    rec = _records(clf)["finetune"]
    assert rec["status"] == "skipped" and not rec["chosen"]
    assert "32 labels < finetune_min_labels 200" in rec["why"]
    assert clf.rung == "embed-lr"


def test_finetune_is_skipped_when_it_would_not_fit_the_budget(shared_cache_dir: Path) -> None:
    trainer = make_trainer(
        "ladder",
        cache_dir=shared_cache_dir,
        rungs=["tfidf-lr", "embed-lr", "finetune"],
        finetune_min_labels=10,
        finetune_budget_s=1.0,
    )
    texts, labels = sentiment_set(16)
    clf = trainer.train(texts, labels, classes=["neg", "pos"], seed=0)
    rec = _records(clf)["finetune"]
    assert rec["status"] == "skipped"
    assert "estimated" in rec["why"] and "finetune_budget_s 1" in rec["why"]
    assert rec["estimated_seconds"] > 1.0
    assert trainer.config()["finetune"]["trainer"] == "finetune"


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        ({"rungs": ["svm"]}, ConfigError, "svm"),
        ({"rungs": []}, ConfigError, "rungs"),
        ({"rungs": ["tfidf-lr"]}, ConfigError, "default_rung"),
        ({"embed_lr": {"epochs": 2}}, ConfigError, "epochs"),
        ({"tfidf_lr": "C=3"}, ConfigError, "mapping"),
        ({"finetune_holdout": 0.7}, ConfigError, "finetune_holdout"),
        ({"cv_budget_s": 0}, ModelError, "cv_budget_s"),
        ({"margin": "big"}, ConfigError, "margin"),
        ({"depth": 3}, ConfigError, "depth"),
    ],
)
def test_bad_ladder_settings_are_refused(
    params: dict, error: type, message: str, tmp_path: Path
) -> None:
    with pytest.raises(error, match=message) as err:
        make_trainer("ladder", cache_dir=tmp_path, **params)
    assert "Fix:" in str(err.value)


def test_the_rungs_settings_reach_the_rungs(tmp_path: Path) -> None:
    trainer = make_trainer(
        "ladder",
        cache_dir=tmp_path,
        tfidf_lr={"C": 4.0, "ngram_max": 1},
        embed_lr={"C": 0.5, "max_length": 64},
        rungs=["embed-lr", "tfidf-lr"],  # any order: kept cheapest first
    )
    config = trainer.config()
    assert config["rungs"] == ["tfidf-lr", "embed-lr"]
    assert config["tfidf-lr"]["C"] == 4.0 and config["tfidf-lr"]["ngram_max"] == 1
    assert config["embed-lr"]["C"] == 0.5 and config["embed-lr"]["embedder"]["max_length"] == 64
    assert "finetune" not in config
    json.dumps(config)


@pytest.mark.slow
def test_finetune_rung_is_scored_on_a_held_out_split(shared_cache_dir: Path) -> None:
    trainer = make_trainer(
        "ladder",
        cache_dir=shared_cache_dir,
        rungs=["embed-lr", "finetune"],
        finetune_min_labels=20,
        finetune={"epochs": 1, "max_length": 32, "min_steps": 0},
    )
    texts, labels = sentiment_set(20)
    clf = trainer.train(texts, labels, classes=["neg", "pos"], seed=0)
    rec = _records(clf)["finetune"]
    assert rec["status"] == "scored" and rec["n_holdout"] == 8 and rec["n_folds"] == 1
    p = rec["cv_accuracy"]
    assert rec["std"] == pytest.approx(np.sqrt(p * (1 - p) / 8), abs=1e-4)
    assert rec["seconds"] > 0
    assert sum(r["chosen"] for r in clf.info["ladder"]) == 1


def test_setfit_is_skipped_below_its_minimum_and_when_over_the_budget(
    shared_cache_dir: Path,
) -> None:
    texts, labels = sentiment_set(16)
    few = make_trainer(
        "ladder", cache_dir=shared_cache_dir, rungs=["embed-lr", "setfit"], setfit_min_labels=40
    )
    rec = _records(few.train(texts, labels, classes=["neg", "pos"], seed=0))["setfit"]
    assert rec["status"] == "skipped" and "32 labels < setfit_min_labels 40" in rec["why"]
    tight = make_trainer(
        "ladder",
        cache_dir=shared_cache_dir,
        rungs=["embed-lr", "setfit"],
        setfit_min_labels=10,
        finetune_budget_s=5.0,
        setfit={"time_budget_s": 30.0, "max_steps": 40},
    )
    rec = _records(tight.train(texts, labels, classes=["neg", "pos"], seed=0))["setfit"]
    assert rec["status"] == "skipped" and rec["estimated_seconds"] == 30.0
    assert "time budget 30 s" in rec["why"] and "finetune_budget_s 5" in rec["why"]
    config = tight.config()
    assert config["setfit"]["trainer"] == "setfit" and config["setfit_min_labels"] == 10
    with pytest.raises(ConfigError, match="setfit_min_labels >= 2"):
        make_trainer("ladder", cache_dir=shared_cache_dir, setfit_min_labels=1)


@pytest.mark.slow
def test_setfit_rung_is_scored_on_a_held_out_split_and_a_setfit_rung_loads(
    shared_cache_dir: Path, tmp_path: Path
) -> None:
    from connectors.models.ladder import LadderClassifier

    trainer = make_trainer(
        "ladder",
        cache_dir=shared_cache_dir,
        rungs=["embed-lr", "setfit"],
        setfit_min_labels=20,
        margin="none",
        setfit={"max_steps": 4, "min_steps": 4, "max_length": 32, "device": "cpu"},
    )
    texts, labels = sentiment_set(20)
    clf = trainer.train(texts, labels, classes=["neg", "pos"], seed=0)
    rec = _records(clf)["setfit"]
    assert rec["status"] == "scored" and rec["n_holdout"] == 8 and rec["n_folds"] == 1
    p = rec["cv_accuracy"]
    assert rec["std"] == pytest.approx(np.sqrt(p * (1 - p) / 8), abs=1e-4)
    emb = _records(clf)["embed-lr"]
    # margin none: setfit is chosen exactly when its held-out accuracy beats embed-lr's CV mean
    assert (clf.rung == "setfit") == (p > emb["cv_accuracy"])
    # whichever won, a ladder model of the setfit rung saves and loads through the ladder
    inner = trainer.setfit_trainer().train(texts, labels, classes=["neg", "pos"], seed=0)
    saved = LadderClassifier(inner, "setfit", {"chosen": "setfit"})
    saved.save(tmp_path / "m")
    back = trainer.load(tmp_path / "m")
    assert back.rung == "setfit" and back.version == saved.version
    probe, _ = heldout_set()
    np.testing.assert_allclose(back.predict_proba(probe), saved.predict_proba(probe), atol=1e-5)
