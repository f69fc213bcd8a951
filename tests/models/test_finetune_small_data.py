"""finetune for small data (slow: trains the real MiniLM): early stopping with patience and the
best weights restored, validation every N steps, warm start from a previous model, sequential
fine-tuning from a checkpoint (head kept or replaced), domain adaptation by MLM, and the
hyper-parameter search."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from connectors.models import adapt, finetune_search, make_trainer
from connectors.models.finetune import FinetuneTrainer
from loop.errors import ModelError
from tests.models.models_testdata import heldout_set, sentiment_set

pytestmark = pytest.mark.slow
SMALL = {"max_length": 32, "batch_size": 8, "min_steps": 0}
CLASSES = ["pos", "neg"]


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode() + t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[FinetuneTrainer, Path]:
    """A model trained 2 epochs on 32 sentences, saved: the 'previous' model / a checkpoint."""
    trainer = FinetuneTrainer(epochs=2, learning_rate=1e-4, **SMALL)
    texts, labels = sentiment_set(16)
    clf = trainer.train(texts, labels, classes=CLASSES, seed=3)
    path = tmp_path_factory.mktemp("models") / "v1"
    clf.save(path)
    return trainer, path


# -- early stopping ---------------------------------------------------------------------------


def test_patience_stops_training_and_restores_the_best_weights(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Validation losses 0.5, 0.4, 0.45, 0.47 with patience 2: stop after epoch 4 of 8 and
    restore the weights as they were when epoch 2 was scored."""
    trainer = FinetuneTrainer(epochs=8, patience=2, learning_rate=1e-4, **SMALL)
    losses = iter([0.5, 0.4, 0.45, 0.47, 0.1, 0.1, 0.1, 0.1])
    snapshots: list[str] = []

    def fake_validate(model, tokenizer, texts, y):  # type: ignore[no-untyped-def]
        snapshots.append(_digest(model))
        return next(losses), 0.5

    monkeypatch.setattr(trainer, "_validate", fake_validate)
    texts, labels = sentiment_set(16)
    clf = trainer.train(texts, labels, classes=CLASSES, seed=0)
    info = clf.info
    assert [r["epoch"] for r in info["curve"]] == [1, 2, 3, 4]
    assert [r["val_loss"] for r in info["curve"]] == [0.5, 0.4, 0.45, 0.47]
    assert info["stopped_early"] is True and info["restored_best"] is True
    assert info["best_epoch"] == 2 and info["best_step"] == 8  # 29 train rows / 8 = 4 steps
    assert info["steps_run"] == 16 and info["steps"] == 32
    assert _digest(clf.model) == snapshots[1]
    assert clf.config["patience"] == 2


def test_without_patience_all_epochs_run_and_the_best_is_still_restored(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    trainer = FinetuneTrainer(epochs=3, learning_rate=1e-4, **SMALL)
    losses = iter([0.3, 0.6, 0.7])
    snapshots: list[str] = []

    def fake_validate(model, tokenizer, texts, y):  # type: ignore[no-untyped-def]
        snapshots.append(_digest(model))
        return next(losses), 1.0

    monkeypatch.setattr(trainer, "_validate", fake_validate)
    texts, labels = sentiment_set(16)
    clf = trainer.train(texts, labels, classes=CLASSES, seed=0)
    assert clf.info["stopped_early"] is False and clf.info["steps_run"] == 12
    assert clf.info["best_epoch"] == 1 and _digest(clf.model) == snapshots[0]


def test_when_the_last_evaluation_is_the_best_nothing_is_restored(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    trainer = FinetuneTrainer(epochs=3, patience=1, learning_rate=1e-4, **SMALL)
    losses = iter([0.5, 0.4, 0.3])
    monkeypatch.setattr(trainer, "_validate", lambda *a: (next(losses), 1.0))
    texts, labels = sentiment_set(16)
    clf = trainer.train(texts, labels, classes=CLASSES, seed=0)
    info = clf.info
    assert (info["best_epoch"], info["restored_best"], info["stopped_early"]) == (3, False, False)


def test_patience_counts_step_evaluations(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Every 2 steps of 8: the loss rises after step 2, patience 2 stops at step 6."""
    trainer = FinetuneTrainer(epochs=2, eval_every_steps=2, patience=2, **SMALL)
    losses = iter([0.5, 0.6, 0.7, 0.8])
    monkeypatch.setattr(trainer, "_validate", lambda *a: (next(losses), 1.0))
    texts, labels = sentiment_set(16)
    clf = trainer.train(texts, labels, classes=CLASSES, seed=0)
    info = clf.info
    assert [r["step"] for r in info["curve"]] == [2, 4, 6]
    assert info["stopped_early"] and info["steps_run"] == 6
    assert (info["best_step"], info["best_epoch"], info["restored_best"]) == (2, 1, True)


def test_with_params_keeps_cached_state_only_when_it_still_applies(
    tmp_path: Path, base_model
) -> None:  # type: ignore[no-untyped-def]
    _, path = base_model
    t = FinetuneTrainer(adapt_epochs=1, adapt_dir=tmp_path, **SMALL)
    t._adapted = ("key", tmp_path / "key")
    assert t.with_params(learning_rate=1e-4, epochs=3)._adapted == t._adapted
    assert t.with_params(adapt_epochs=2)._adapted is None
    assert t.with_params(max_length=64)._adapted is None
    with_ckpt = t.with_params(checkpoint=path)
    assert with_ckpt._adapted is None and with_ckpt.checkpoint == path.resolve()
    assert with_ckpt.config()["checkpoint_fingerprint"] != t.config()["checkpoint_fingerprint"]
    with pytest.raises(ModelError, match="found \\['lr'\\]"):
        t.with_params(lr=1)


def test_validation_every_n_steps(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """4 steps per epoch, 2 epochs, every 3 steps: scored at steps 3 and 6, then at the end (8)."""
    trainer = FinetuneTrainer(epochs=2, eval_every_steps=3, **SMALL)
    texts, labels = sentiment_set(16)
    clf = trainer.train(texts, labels, classes=CLASSES, seed=0)
    curve = clf.info["curve"]
    assert [(r["epoch"], r["step"]) for r in curve] == [(1, 3), (2, 6), (2, 8)]
    assert all(np.isfinite(r["val_loss"]) for r in curve)
    best = min(curve, key=lambda r: r["val_loss"])
    assert clf.info["best_step"] == best["step"]


def test_bad_early_stopping_settings_are_rejected() -> None:
    with pytest.raises(ModelError, match="patience >= 1"):
        FinetuneTrainer(patience=0)
    with pytest.raises(ModelError, match="init among"):
        FinetuneTrainer(init="latest")
    with pytest.raises(ModelError, match="model folder"):
        FinetuneTrainer(checkpoint="/nonexistent/checkpoint")


# -- warm start and checkpoints ---------------------------------------------------------------


def test_warm_start_begins_at_the_previous_model(base_model) -> None:  # type: ignore[no-untyped-def]
    """With a vanishing learning rate the warm-started model scores like the previous one."""
    trainer, path = base_model
    previous = trainer.load(path)
    probe, _ = heldout_set()
    warm = trainer.with_params(init="previous", epochs=1, learning_rate=1e-12)
    texts, labels = sentiment_set(16)
    clf = warm.train(texts, labels, classes=CLASSES, seed=5, previous=path)
    assert clf.info["start"] == "previous" and clf.info["head_reused"] is True
    np.testing.assert_allclose(clf.predict_proba(probe), previous.predict_proba(probe), atol=1e-4)
    assert warm.warm_start and not trainer.warm_start


def test_warm_start_from_a_model_of_other_classes_keeps_the_encoder_only(base_model) -> None:  # type: ignore[no-untyped-def]
    trainer, path = base_model
    previous = trainer.load(path)
    texts, _ = sentiment_set(16)
    labels = ["a", "b", "c", "d"] * (len(texts) // 4)
    warm = trainer.with_params(init="previous", epochs=1, learning_rate=1e-12)
    clf = warm.train(texts, labels, classes=["a", "b", "c", "d"], seed=2, previous=path)
    assert clf.info["start"] == "previous" and clf.info["head_reused"] is False
    assert clf.model.config.num_labels == 4
    torch.testing.assert_close(
        clf.model.base_model.state_dict()["encoder.layer.3.output.dense.weight"],
        previous.model.base_model.state_dict()["encoder.layer.3.output.dense.weight"],
        atol=1e-6,
        rtol=0,
    )


def test_init_base_ignores_the_previous_model(base_model) -> None:  # type: ignore[no-untyped-def]
    trainer, path = base_model
    texts, labels = sentiment_set(16)
    clf = trainer.with_params(epochs=1).train(texts, labels, classes=CLASSES, seed=5, previous=path)
    assert clf.info["start"] == "base" and clf.info["head_reused"] is False


def test_a_checkpoint_for_other_labels_keeps_its_encoder_and_gets_a_new_head(base_model) -> None:  # type: ignore[no-untyped-def]
    trainer, path = base_model
    source = trainer.load(path)
    texts, _ = sentiment_set(16)
    labels = ["up" if i % 2 else "down" for i in range(len(texts))]
    seq = FinetuneTrainer(checkpoint=path, epochs=1, learning_rate=1e-12, **SMALL)
    clf = seq.train(texts, labels, classes=["up", "down"], seed=1)
    assert clf.info["start"] == "checkpoint" and clf.info["head_reused"] is False
    enc_new = clf.model.base_model.state_dict()
    enc_src = source.model.base_model.state_dict()
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        torch.testing.assert_close(enc_new[name], enc_src[name], atol=1e-6, rtol=0)
    # same number of outputs, other labels: the head is re-initialised, not the old one
    assert not torch.allclose(clf.model.classifier.weight, source.model.classifier.weight)
    assert float(clf.model.classifier.weight.detach().std()) < 0.05  # initializer_range 0.02
    cfg = seq.config()
    assert cfg["checkpoint"] == str(path) and len(cfg["checkpoint_fingerprint"]) == 32


def test_a_checkpoint_for_the_same_labels_keeps_its_head(base_model) -> None:  # type: ignore[no-untyped-def]
    trainer, path = base_model
    source = trainer.load(path)
    texts, labels = sentiment_set(16)
    clf = FinetuneTrainer(checkpoint=path, epochs=1, learning_rate=1e-12, **SMALL).train(
        texts, labels, classes=CLASSES, seed=1
    )
    assert clf.info["head_reused"] is True
    torch.testing.assert_close(clf.model.classifier.weight, source.model.classifier.weight)


def test_make_trainer_passes_the_small_data_settings(tmp_path: Path, base_model) -> None:  # type: ignore[no-untyped-def]
    _, path = base_model
    t = make_trainer(
        "finetune",
        cache_dir=tmp_path / "embeddings",
        patience=3,
        eval_every_steps=10,
        init="previous",
        checkpoint=path,
        adapt_epochs=2,
    )
    assert isinstance(t, FinetuneTrainer)
    assert (t.patience, t.eval_every_steps, t.init, t.adapt_epochs) == (3, 10, "previous", 2)
    assert t.checkpoint == path and t.adapt_dir == tmp_path / "adapted"


# -- domain adaptation ------------------------------------------------------------------------


def test_bert_masking_rules() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 2000, size=(64, 40))
    special = np.zeros_like(ids, dtype=bool)
    special[:, 0] = special[:, -1] = True
    special[:5, 10:] = True  # padding
    inputs, targets = adapt.mask_tokens(ids, special, mask_id=103, vocab_size=30522, rng=rng)
    chosen = targets != -100
    assert not (chosen & special).any()
    np.testing.assert_array_equal(targets[chosen], ids[chosen])
    np.testing.assert_array_equal(inputs[~chosen], ids[~chosen])
    rate = chosen.sum() / (~special).sum()
    assert 0.12 < rate < 0.18
    masked = (inputs == 103) & chosen
    assert 0.7 < masked.sum() / chosen.sum() < 0.9
    assert chosen.any(axis=1).all()  # every row predicts at least one token


def test_adapted_encoder_is_built_once_per_pool_and_keeps_the_pooler(tmp_path: Path) -> None:
    from connectors.models._common import resolve_model_path

    base = resolve_model_path()
    texts = list(sentiment_set(20)[0]) + list(heldout_set()[0])
    first = adapt.adapted_encoder(base, texts, tmp_path, epochs=1, max_length=32)
    assert first["built"] is True and len(first["losses"]) == 1
    again = adapt.adapted_encoder(base, list(reversed(texts)), tmp_path, epochs=1, max_length=32)
    assert again["built"] is False and again["path"] == first["path"]  # order-free key
    other = adapt.adaptation_key(base, texts[:-1], epochs=1, max_texts=20000, max_length=32, seed=0)
    assert other != first["key"]

    from transformers import AutoModel

    src = AutoModel.from_pretrained(base, local_files_only=True).state_dict()
    new = AutoModel.from_pretrained(first["path"], local_files_only=True).state_dict()
    assert set(src) == set(new)
    assert not torch.allclose(
        src["encoder.layer.0.attention.self.query.weight"],
        new["encoder.layer.0.attention.self.query.weight"],
    )
    assert "pooler.dense.weight" in src  # the offline MiniLM ships a pooler: kept as it was
    torch.testing.assert_close(src["pooler.dense.weight"], new["pooler.dense.weight"])


def test_prepare_then_train_starts_from_the_adapted_encoder(tmp_path: Path) -> None:
    trainer = FinetuneTrainer(adapt_epochs=1, adapt_dir=tmp_path, epochs=1, **SMALL)
    texts, labels = sentiment_set(16)
    assert FinetuneTrainer(**SMALL).prepare(texts) is None  # off by default
    done = trainer.prepare(texts + list(heldout_set()[0]))
    assert done is not None and done["built"] is True
    clf = trainer.train(texts, labels, classes=CLASSES, seed=0)
    assert clf.info["start"] == "adapted" and clf.info["start_from"] == done["path"]
    assert trainer.config()["adapted_encoder"] == done["key"]
    assert trainer.with_params(epochs=2).config()["adapted_encoder"] == done["key"]


def test_adaptation_needs_texts_and_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unlabeled texts"):
        FinetuneTrainer(adapt_epochs=1, adapt_dir=tmp_path).prepare(["only one"])
    with pytest.raises(ModelError, match="adapt_dir"):
        FinetuneTrainer(adapt_epochs=1).prepare(["a", "b", "c"])


# -- hyper-parameter search -------------------------------------------------------------------


def test_candidates_start_with_the_default_and_are_seeded() -> None:
    default = {
        "learning_rate": 5e-5,
        "epochs": 5,
        "batch_size": 16,
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
    }
    a = finetune_search.candidates(default, seed=1)
    assert a[0] == default
    assert a == finetune_search.candidates(default, seed=1)
    assert a[1:] != finetune_search.candidates(default, seed=2)[1:]
    assert len(a) == 3 * 3 * 3 * 3 * 2
    assert len({tuple(sorted(c.items())) for c in a}) == len(a)


def test_search_on_too_few_labels_keeps_the_default() -> None:
    trainer = FinetuneTrainer(**SMALL)
    texts, labels = sentiment_set(10)
    result = trainer.tune(texts, labels, classes=CLASSES, seed=0, budget_s=60)
    assert result["reason"] == "20 labels < 40 needed to tune fine-tuning"
    assert result["params"] == result["default"] and result["trials"] == []


def test_search_runs_candidates_on_the_same_splits_and_keeps_the_best() -> None:
    trainer = FinetuneTrainer(epochs=1, **SMALL)
    texts, labels = sentiment_set(20)
    result = finetune_search.search(
        trainer, texts, labels, classes=CLASSES, seed=0, budget_s=600, repeats=2, max_candidates=2
    )
    assert result["reason"] is None and len(result["trials"]) == 2
    first, second = result["trials"]
    assert first["params"] == result["default"] and first["params"]["epochs"] == 1
    assert all(len(t["scores"]) == 2 for t in result["trials"])
    assert all(t["log_loss"] > 0 for t in result["trials"])
    if first["mean"] != second["mean"]:
        best = first if first["mean"] > second["mean"] else second
    else:  # the same accuracy: the lower log loss wins
        best = first if first["log_loss"] <= second["log_loss"] else second
    assert result["params"] == best["params"]


def test_the_budget_stops_the_search_after_the_first_candidate() -> None:
    trainer = FinetuneTrainer(epochs=1, **SMALL)
    texts, labels = sentiment_set(20)
    result = trainer.tune(texts, labels, classes=CLASSES, seed=0, budget_s=0.001, repeats=1)
    assert len(result["trials"]) == 1 and result["params"] == result["default"]
    assert result["stopped"].startswith("budget")


def test_min_steps_adds_epochs_for_small_sets(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """29 training rows in batches of 8 = 4 steps an epoch: 10 steps need 3 epochs."""
    trainer = FinetuneTrainer(epochs=1, **{**SMALL, "min_steps": 10})
    monkeypatch.setattr(trainer, "_validate", lambda *a: (0.5, 1.0))
    texts, labels = sentiment_set(16)
    info = trainer.train(texts, labels, classes=CLASSES, seed=0).info
    assert (info["epochs_planned"], info["steps"], info["steps_run"]) == (3, 12, 12)
    assert [r["epoch"] for r in info["curve"]] == [1, 2, 3]
    big = FinetuneTrainer(epochs=2, **{**SMALL, "min_steps": 4})  # already more steps: unchanged
    monkeypatch.setattr(big, "_validate", lambda *a: (0.5, 1.0))
    assert big.train(texts, labels, classes=CLASSES, seed=0).info["epochs_planned"] == 2
    with pytest.raises(ModelError, match="min_steps >= 0"):
        FinetuneTrainer(min_steps=-1)


def test_the_loop_warm_starts_and_adapts_the_real_trainer(tmp_path: Path) -> None:
    """Controller + real FinetuneTrainer: the first model starts from the MLM-adapted encoder,
    the next from the first model (warm start), and the records say so."""
    from connectors.store import SqlStore
    from loop.controller import Controller
    from loop.oracle import OracleTool
    from loop.records import Item

    texts, labels = sentiment_set(12)
    items = [Item(id=f"i{i:02d}", text=t, split="train") for i, t in enumerate(texts)]
    gold = {it.id: lab for it, lab in zip(items, labels, strict=True)}
    store = SqlStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        store.add_items(items)
        trainer = make_trainer(
            "finetune",
            cache_dir=tmp_path / "cache" / "embeddings",
            epochs=1,
            init="previous",
            adapt_epochs=1,
            **SMALL,
        )
        ctrl = Controller(
            store,
            trainer,
            OracleTool(gold),
            classes=CLASSES,
            models_dir=tmp_path / "models",
            batch_size=6,
            initial_batch_size=10,
            min_new_labels=5,
            cold_start="random",
            strategy="margin",
        )
        ctrl.run_iteration()  # cold start: 10 sent, answered by the oracle
        first = store.get_model_version(ctrl.run_iteration().model_version)
        second = store.get_model_version(ctrl.run_iteration().model_version)
    finally:
        store.close()
    assert (
        first.config["training"]["start"] == "adapted" and first.config["warm_start_from"] is None
    )
    assert first.config["adaptation"]["built"] is True
    assert (tmp_path / "cache" / "adapted" / first.config["adaptation"]["key"]).is_dir()
    assert second.config["training"]["start"] == "previous"
    assert second.config["warm_start_from"] == first.id
    assert second.config["training"]["head_reused"] is True and second.n_labels == 16
