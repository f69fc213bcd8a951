"""The fine-tuning search's decisions with a stand-in trainer (pure logic: no model is trained;
the real search runs in tests/models/test_finetune_small_data.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from connectors.models import finetune_search

DEFAULT = {
    "learning_rate": 5e-5,
    "epochs": 5,
    "batch_size": 16,
    "weight_decay": 0.01,
    "warmup_ratio": 0.1,
}


class Clf:
    def __init__(self, truth: dict[str, str], confidence: float, correct: bool, seconds: float):
        self.truth = truth
        self.classes = ("a", "b")
        self.confidence = confidence
        self.correct = correct
        self.info = {"steps_run": 10, "steps": 10, "epochs_planned": 5, "train_seconds": seconds}

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), 2))
        for i, t in enumerate(texts):
            right = self.classes.index(self.truth[t])
            p = self.confidence if self.correct else 1 - self.confidence
            out[i, right], out[i, 1 - right] = p, 1 - p
        return out


class StandIn:
    """Accuracy 1 for every candidate; confidence (hence log loss) set by the learning rate,
    except candidates with weight_decay 0.1, which are always wrong."""

    def __init__(
        self, truth: dict[str, str], params: dict[str, Any] | None = None, calls: list | None = None
    ):
        self.truth = truth
        self._params = dict(params or DEFAULT)
        self.calls = calls if calls is not None else []

    def params(self) -> dict[str, Any]:
        return dict(self._params)

    def with_params(self, **changes: Any) -> StandIn:
        return StandIn(self.truth, {**self._params, **changes}, self.calls)

    def train(self, texts, labels, *, classes, seed):  # type: ignore[no-untyped-def]
        self.calls.append((dict(self._params), seed))
        confidence = {2e-5: 0.55, 5e-5: 0.6, 1e-4: 0.9}[self._params["learning_rate"]]
        wrong = self._params["weight_decay"] == 0.1
        return Clf(self.truth, confidence, not wrong, seconds=0.0)


def _data(n: int = 60) -> tuple[list[str], list[str]]:
    texts = [f"t{i}" for i in range(n)]
    return texts, ["a" if i % 2 else "b" for i in range(n)]


def test_equal_accuracy_is_decided_by_log_loss() -> None:
    texts, labels = _data()
    trainer = StandIn(dict(zip(texts, labels, strict=True)))
    result = finetune_search.search(
        trainer, texts, labels, classes=["a", "b"], seed=0, budget_s=60, max_candidates=30
    )
    assert len(result["trials"]) == 30 and result["reason"] is None
    winners = [t for t in result["trials"] if t["mean"] == 1.0]
    assert min(t["log_loss"] for t in winners) == pytest.approx(-np.log(0.9), abs=1e-5)
    assert result["params"]["learning_rate"] == 1e-4 and result["params"]["weight_decay"] != 0.1
    # every candidate was trained on the same two splits, with the same seeds
    seeds = {tuple(s for p, s in trainer.calls if p == t["params"]) for t in result["trials"]}
    assert seeds == {(0, 1)}


def test_a_wrong_candidate_never_wins_on_log_loss() -> None:
    texts, labels = _data()
    trainer = StandIn(dict(zip(texts, labels, strict=True)), {**DEFAULT, "weight_decay": 0.1})
    result = finetune_search.search(
        trainer, texts, labels, classes=["a", "b"], seed=3, budget_s=60, max_candidates=5
    )
    assert result["trials"][0]["mean"] == 0.0  # the default is always wrong here
    assert result["params"]["weight_decay"] != 0.1


def test_full_ties_keep_the_default() -> None:
    texts, labels = _data()
    trainer = StandIn(dict(zip(texts, labels, strict=True)))
    space = {**{k: (v,) for k, v in DEFAULT.items()}, "epochs": (5, 8)}
    result = finetune_search.search(
        trainer, texts, labels, classes=["a", "b"], seed=0, budget_s=60, space=space
    )
    assert [t["params"]["epochs"] for t in result["trials"]] == [5, 8]
    assert result["params"] == DEFAULT


def test_bad_search_settings_are_rejected() -> None:
    from loop.errors import ModelError

    texts, labels = _data()
    trainer = StandIn(dict(zip(texts, labels, strict=True)))
    with pytest.raises(ModelError, match="budget_s > 0"):
        finetune_search.search(trainer, texts, labels, classes=["a", "b"], seed=0, budget_s=0)
