"""The controller's small-data hooks with a bag-of-words trainer (pure logic): hyper-parameter
search modes (searched, reused, re-searched nightly), warm start from the current model, and
domain adaptation on the training split's texts. The real fine-tuning trainer is tested in
tests/models/test_finetune_small_data.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loop.controller import Controller
from loop.errors import ConfigError
from loop.oracle import OracleTool
from tests.fakes import BowTrainer, toy_store


class SmallDataBow(BowTrainer):
    """BowTrainer with the optional hooks of a tunable, warm-starting, adapting trainer."""

    def __init__(self, alpha: float = 1.0, warm: bool = False, log: dict | None = None) -> None:
        super().__init__()
        self.alpha = alpha
        self.warm = warm
        self.log = log if log is not None else {"tune": [], "train": [], "prepare": []}
        self.tune_reason: str | None = None

    @property
    def warm_start(self) -> bool:
        return self.warm

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def with_params(self, **changes: Any) -> SmallDataBow:
        clone = SmallDataBow(changes.get("alpha", self.alpha), self.warm, self.log)
        clone.tune_reason = self.tune_reason
        clone.base = self.base
        return clone

    def tune(self, texts, labels, *, classes, seed, budget_s, progress=None):  # type: ignore[no-untyped-def]
        self.log["tune"].append({"n": len(texts), "budget_s": budget_s})
        best = 0.5 + len(self.log["tune"])  # a different "best" each search
        return {
            "params": {"alpha": best},
            "default": {"alpha": self.alpha},
            "reason": self.tune_reason,
            "trials": [],
        }

    def prepare(self, texts, progress=None):  # type: ignore[no-untyped-def]
        self.log["prepare"].append(sorted(texts))
        return {"key": f"k{len(texts)}", "built": len(self.log["prepare"]) == 1, "path": "/x"}

    def train(self, texts, labels, *, classes, seed, progress=None, previous: Path | None = None):  # type: ignore[no-untyped-def,override]
        self.log["train"].append({"alpha": self.alpha, "previous": previous})
        return super().train(texts, labels, classes=classes, seed=seed)

    def config(self) -> dict:
        return {"trainer": self.name, "alpha": self.alpha, "base_fingerprint": self.base}

    base = "encoder-1"


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    store, items, gold, test_ids, classes = toy_store(tmp_path / "state.db")
    tool = OracleTool({i: y for i, y in gold.items() if i not in test_ids})

    def make(trainer: Any, **kw: Any) -> Controller:
        args: dict[str, Any] = dict(
            classes=classes,
            models_dir=tmp_path / "models",
            batch_size=5,
            initial_batch_size=8,
            min_new_labels=5,
            cold_start="random",
            seed=3,
        )
        args.update(kw)
        return Controller(store, trainer, tool, **args)

    yield store, make, items, test_ids
    store.close()


def _label_round(ctrl: Controller) -> Any:
    """One iteration that trains (the previous one's batch was answered by the oracle)."""
    ctrl.run_iteration()
    return ctrl.store.model_versions()[-1]


def test_nightly_mode_searches_once_then_reuses_until_the_nightly_retrain(setup) -> None:  # type: ignore[no-untyped-def]
    store, make, _, _ = setup
    trainer = SmallDataBow()
    ctrl = make(trainer, tune="nightly", tune_budget_s=42.0)
    ctrl.run_iteration()  # cold start
    v1 = _label_round(ctrl)
    assert v1.config["tuning"]["source"] == "searched"
    assert v1.config["tuning"]["params"] == {"alpha": 1.5}
    assert v1.config["alpha"] == 1.5  # the tuned trainer's config is recorded
    assert trainer.log["tune"] == [{"n": 8, "budget_s": 42.0}]
    assert trainer.log["train"][-1]["alpha"] == 1.5

    v2 = _label_round(ctrl)  # a webhook-like retrain: reuses the searched configuration
    assert v2.id != v1.id
    assert v2.config["tuning"] == {
        "source": "reused",
        "mode": "nightly",
        "from": v1.id,
        "params": {"alpha": 1.5},
        "reason": f"reused the configuration searched for {v1.id}",
    }
    assert len(trainer.log["tune"]) == 1 and trainer.log["train"][-1]["alpha"] == 1.5

    report = ctrl.nightly()  # the nightly retrain searches again
    assert report["trained"] and report["tuning"] == "searched"
    v3 = store.get_model_version(report["model_version"])
    assert v3.config["tuning"]["params"] == {"alpha": 2.5}
    assert len(trainer.log["tune"]) == 2

    v4 = ctrl.train(None)  # the next retrain reuses the nightly result
    assert v4.config["tuning"]["from"] == v3.id and len(trainer.log["tune"]) == 2


def test_always_mode_searches_at_every_retrain_and_off_never(setup) -> None:  # type: ignore[no-untyped-def]
    store, make, _, _ = setup
    trainer = SmallDataBow()
    ctrl = make(trainer, tune="always")
    ctrl.run_iteration()
    _label_round(ctrl)
    _label_round(ctrl)
    assert len(trainer.log["tune"]) == 2
    assert [mv.config["tuning"]["source"] for mv in store.model_versions()] == ["searched"] * 2

    off = SmallDataBow()
    ctrl_off = make(off, tune="off")
    _label_round(ctrl_off)
    assert off.log["tune"] == [] and "tuning" not in store.model_versions()[-1].config


def test_a_search_that_cannot_run_keeps_the_defaults_or_the_last_result(setup) -> None:  # type: ignore[no-untyped-def]
    store, make, _, _ = setup
    trainer = SmallDataBow()
    trainer.tune_reason = "8 labels < 40 needed to tune fine-tuning"
    ctrl = make(trainer, tune="always")
    ctrl.run_iteration()
    v1 = _label_round(ctrl)
    assert v1.config["tuning"] == {
        "source": "default",
        "mode": "always",
        "reason": "8 labels < 40 needed to tune fine-tuning",
    }
    assert trainer.log["train"][-1]["alpha"] == 1.0


def test_trainers_without_a_search_ignore_the_tune_setting(setup) -> None:  # type: ignore[no-untyped-def]
    store, make, _, _ = setup
    plain = BowTrainer()
    ctrl = make(plain, tune="always")
    ctrl.run_iteration()
    mv = _label_round(ctrl)
    assert "tuning" not in mv.config and plain.train_calls == 1


def test_unknown_tune_mode_is_a_config_error(setup) -> None:  # type: ignore[no-untyped-def]
    _, make, _, _ = setup
    with pytest.raises(ConfigError, match="tune must be one of"):
        make(SmallDataBow(), tune="weekly")


def test_warm_start_gets_the_current_models_folder(setup) -> None:  # type: ignore[no-untyped-def]
    store, make, _, _ = setup
    trainer = SmallDataBow(warm=True)
    ctrl = make(trainer)
    ctrl.run_iteration()
    v1 = _label_round(ctrl)
    assert trainer.log["train"][0]["previous"] is None and v1.config["warm_start_from"] is None
    v2 = _label_round(ctrl)
    assert trainer.log["train"][1]["previous"] == Path(v1.path)
    assert v2.config["warm_start_from"] == v1.id


def test_warm_start_follows_the_current_model_not_the_newest(setup) -> None:  # type: ignore[no-untyped-def]
    """After a rollback the next retrain starts from the model the loop uses."""
    store, make, _, _ = setup
    trainer = SmallDataBow(warm=True)
    ctrl = make(trainer)
    ctrl.run_iteration()
    v1 = _label_round(ctrl)
    _label_round(ctrl)
    ctrl.rollback()
    _label_round(ctrl)
    assert trainer.log["train"][-1]["previous"] == Path(v1.path)


def test_a_trainer_that_does_not_warm_start_gets_no_previous(setup) -> None:  # type: ignore[no-untyped-def]
    store, make, _, _ = setup
    trainer = SmallDataBow(warm=False)
    ctrl = make(trainer)
    ctrl.run_iteration()
    _label_round(ctrl)
    mv = _label_round(ctrl)
    assert [c["previous"] for c in trainer.log["train"]] == [None, None]
    assert "warm_start_from" not in mv.config


def test_adaptation_sees_training_split_texts_only(setup) -> None:  # type: ignore[no-untyped-def]
    store, make, items, test_ids = setup
    trainer = SmallDataBow()
    ctrl = make(trainer)
    ctrl.run_iteration()
    mv = _label_round(ctrl)
    seen = trainer.log["prepare"][0]
    assert seen == sorted(it.text for it in items if it.id not in test_ids)
    assert mv.config["adaptation"] == {"key": f"k{len(seen)}", "built": True}
    assert mv.metrics["prepare_seconds"] >= 0 and "tune_seconds" not in mv.metrics


def test_a_search_that_cannot_run_later_reuses_the_last_result(setup) -> None:  # type: ignore[no-untyped-def]
    store, make, _, _ = setup
    trainer = SmallDataBow()
    ctrl = make(trainer, tune="always")
    ctrl.run_iteration()
    v1 = _label_round(ctrl)
    trainer.tune_reason = "the hold-out would leave a class without training data"
    v2 = ctrl.train(None)
    assert v2.config["tuning"]["source"] == "reused" and v2.config["tuning"]["from"] == v1.id
    assert v2.config["tuning"]["reason"].startswith("search not run (the hold-out")
    assert trainer.log["train"][-1]["alpha"] == 1.5 and v2.metrics["tune_seconds"] >= 0


def test_a_changed_setting_or_encoder_invalidates_the_last_search(setup) -> None:  # type: ignore[no-untyped-def]
    store, make, _, _ = setup
    log: dict = {"tune": [], "train": [], "prepare": []}
    ctrl = make(SmallDataBow(log=log), tune="nightly")
    ctrl.run_iteration()
    _label_round(ctrl)
    assert len(log["tune"]) == 1
    make(SmallDataBow(log=log), tune="nightly").train(None)  # same set-up: reused
    assert len(log["tune"]) == 1
    make(SmallDataBow(alpha=3.0, log=log), tune="nightly").train(None)  # the user changed alpha
    assert len(log["tune"]) == 2
    other = SmallDataBow(alpha=3.0, log=log)
    other.base = "encoder-2"  # another encoder
    make(other, tune="nightly").train(None)
    assert len(log["tune"]) == 3


def test_warm_start_needs_the_same_encoder(setup) -> None:  # type: ignore[no-untyped-def]
    store, make, _, _ = setup
    first = SmallDataBow(warm=True)
    ctrl = make(first)
    ctrl.run_iteration()
    _label_round(ctrl)
    other = SmallDataBow(warm=True)
    other.base = "encoder-2"
    mv = make(other).train(None)
    assert other.log["train"][-1]["previous"] is None and mv.config["warm_start_from"] is None
    assert other.log["prepare"]  # a cold start adapts (when the trainer does)


def test_a_warm_start_skips_adaptation(setup) -> None:  # type: ignore[no-untyped-def]
    store, make, _, _ = setup
    trainer = SmallDataBow(warm=True)
    ctrl = make(trainer)
    ctrl.run_iteration()
    _label_round(ctrl)
    v2 = ctrl.train(None)
    assert len(trainer.log["prepare"]) == 1 and "adaptation" not in v2.config
