"""The controller on the real SQLite store, with a tiny bag-of-words trainer (pure logic) and the
oracle annotator. Real models and Label Studio are tested elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import strategies
from connectors.store import SqlStore
from loop.controller import Controller
from loop.oracle import OracleTool
from loop.records import Label
from tests.fakes import BowTrainer, toy_store


class FlakyTool(OracleTool):
    """The oracle, but ``send`` can be made to fail once (a crash between record and push)."""

    def __init__(self, gold: dict[str, str]) -> None:
        super().__init__(gold)
        self.fail_next_send = False
        self.sent_batches: list[list[str]] = []

    def send(self, requests):  # type: ignore[no-untyped-def]
        if self.fail_next_send:
            self.fail_next_send = False
            raise ConnectionError("injected failure in send")
        self.sent_batches.append([r.item.id for r in requests])
        super().send(requests)


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    store, items, gold, test_ids, classes = toy_store(tmp_path / "state.db")
    tool = FlakyTool({i: y for i, y in gold.items() if i not in test_ids})
    trainer = BowTrainer()

    def make(**kw):  # type: ignore[no-untyped-def]
        args = dict(
            classes=classes,
            models_dir=tmp_path / "models",
            strategy="margin",
            batch_size=5,
            initial_batch_size=8,
            min_new_labels=5,
            cold_start="random",
            seed=3,
        )
        args.update(kw)
        return Controller(store, trainer, tool, **args)

    yield store, tool, trainer, make, gold
    store.close()


def test_cold_start_then_train_select_and_send(setup) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    ctrl = make()
    pool0 = len(store.pool())
    r1 = ctrl.run_iteration()
    assert not r1.trained and r1.model_version is None
    assert r1.selected == 8 and r1.sent == 8
    assert len(store.pool()) == pool0 - 8
    q1 = store.queries(iteration=1)
    assert {q.strategy for q in q1} == {"cold-start-random"} and all(q.sent for q in q1)

    r2 = ctrl.run_iteration()
    assert r2.trained and trainer.train_calls == 1
    assert r2.n_labels == 8
    assert 0.0 <= r2.metrics["test_accuracy"] <= 1.0 and r2.metrics["test_n"] == 20
    q2 = store.queries(iteration=2)
    assert len(q2) == 5 and all(q.model_version == r2.model_version for q in q2)
    assert [q.rank for q in q2] == list(range(5))
    # the selection is the strategy's top 5 over the pool as it was before selection
    clf = ctrl.load_classifier(store.get_model_version(r2.model_version))
    pool_before = [it for it in store.items("train") if it.id not in {q.item_id for q in q1}]
    scores = strategies.get_measure("margin")(
        clf.predict_proba([it.text for it in pool_before]), np.random.default_rng(0)
    )
    best = np.sort(scores)[::-1][:5]
    assert sorted((q.score for q in q2), reverse=True) == pytest.approx(list(best))
    # never asks an item twice
    all_q = [q.item_id for q in store.queries()]
    assert len(all_q) == len(set(all_q)) == 13


def test_retrains_only_past_the_label_threshold(setup) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    ctrl = make(min_new_labels=10, batch_size=4)
    ctrl.run_iteration()  # cold start, 8 sent
    assert ctrl.run_iteration().trained  # first model: 8 labels
    r = ctrl.run_iteration()  # +4 labels < 10
    assert not r.trained and trainer.train_calls == 1
    assert "below the threshold" in store.iterations()[-1].info["train_reason"]
    ctrl.run_iteration()  # +4 more = 8 < 10
    r = ctrl.run_iteration()  # +4 = 12 >= 10
    assert r.trained and trainer.train_calls == 2 and r.n_labels == 20
    assert ctrl.run_iteration(force_train=True).trained


def test_crash_in_send_resumes_without_reselecting_or_retraining(setup) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    ctrl = make()
    ctrl.run_iteration()
    tool.fail_next_send = True
    with pytest.raises(ConnectionError):
        ctrl.run_iteration()
    it = store.unfinished_iteration()
    assert it is not None and it.step == "selected" and trainer.train_calls == 1
    selected = [q.item_id for q in store.queries(iteration=it.number)]
    # a new controller (a restarted process) resumes the same iteration
    r = make().run_iteration()
    assert r.number == it.number and r.resumed_from == "selected" and not r.trained
    assert trainer.train_calls == 1
    assert tool.sent_batches[-1] == selected
    assert store.unfinished_iteration() is None


def test_crash_in_training_then_resume_trains_once(setup) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    ctrl = make()
    ctrl.run_iteration()
    trainer.fail_next_train = True
    with pytest.raises(RuntimeError):
        ctrl.run_iteration()
    assert store.unfinished_iteration().step == "begin"
    r = make().run_iteration()
    assert r.trained and trainer.train_calls == 1 and len(store.model_versions()) == 1


def test_crash_after_training_before_selection_does_not_retrain(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    ctrl = make()
    ctrl.run_iteration()

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise MemoryError("injected failure while scoring")

    monkeypatch.setattr(ctrl, "_select", boom)
    with pytest.raises(MemoryError):
        ctrl.run_iteration()
    assert store.unfinished_iteration().step == "trained"
    monkeypatch.undo()
    r = make().run_iteration()
    assert r.resumed_from == "trained" and trainer.train_calls == 1 and r.selected == 5


def test_same_seed_same_choices(tmp_path: Path, setup) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    ctrl = make()
    for _ in range(3):
        ctrl.run_iteration()
    first = [q.item_id for q in store.queries()]
    items = store.items()
    labels = [lab for lab in store.labels() if lab.source == "import"]
    other = SqlStore.open(f"sqlite:///{tmp_path / 'other.db'}")
    other.add_items(items)
    other.add_labels(labels)
    ctrl2 = Controller(
        other,
        BowTrainer(),
        OracleTool(tool.gold),
        classes=ctrl.classes,
        models_dir=tmp_path / "m2",
        strategy="margin",
        batch_size=5,
        initial_batch_size=8,
        min_new_labels=5,
        seed=3,
    )
    for _ in range(3):
        ctrl2.run_iteration()
    assert [q.item_id for q in other.queries()] == first
    other.close()


def test_skipped_items_leave_pool_and_training_set(setup) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    ctrl = make()
    ctrl.run_iteration()
    asked = [q.item_id for q in store.queries(iteration=1)]
    store.add_labels(
        [
            Label(
                item_id=asked[0], value=None, source="label-studio", annotation_id="9", skipped=True
            )
        ]
    )
    ctrl.run_iteration()
    ts = store.training_set()
    assert len(ts) == 8  # the oracle's answer for asked[0] is still there
    lone = store.pool()[0].id
    store.add_labels(
        [Label(item_id=lone, value=None, source="label-studio", annotation_id="10", skipped=True)]
    )
    assert lone not in {it.id for it in store.pool()}
    assert lone not in store.training_set().item_ids


def test_unknown_strategy_and_bad_settings_fail_early(setup) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    with pytest.raises(Exception, match="no-such-strategy"):
        make(strategy="no-such-strategy")
    with pytest.raises(Exception, match="needs an embedder"):
        make(cold_start="diverse")


def test_eval_sample_is_sent_first_labeled_and_never_trained_on(setup) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    ctrl = make(eval_sample_size=6)
    r1 = ctrl.run_iteration()
    evals = store.items("eval")
    assert len(evals) == 6 and r1.selected == 6 + 8
    q1 = store.queries(iteration=1)
    assert [q.kind for q in q1[:6]] == ["eval"] * 6 and {q.item_id for q in q1[:6]} == {
        it.id for it in evals
    }
    assert not {it.id for it in evals} & {it.id for it in store.pool()}
    r2 = ctrl.run_iteration()
    assert r2.trained and r2.n_labels == 8  # the 6 eval answers are not in the training set
    assert not set(store.training_set().item_ids) & {it.id for it in evals}
    assert r2.metrics["eval_n"] == 6 and 0 <= r2.metrics["eval_accuracy"] <= 1
    ctrl.run_iteration()
    assert len(store.items("eval")) == 6  # topped up once, not again
    assert len([q for q in store.queries() if q.kind == "eval"]) == 6


def test_eval_sample_survives_a_crash_between_moving_and_recording(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    ctrl = make(eval_sample_size=5)

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise OSError("injected failure before recording")

    monkeypatch.setattr(store, "record_queries", boom)
    with pytest.raises(OSError):
        ctrl.run_iteration()
    assert len(store.items("eval")) == 5 and store.queries() == []
    monkeypatch.undo()
    make(eval_sample_size=5).run_iteration()
    assert len(store.items("eval")) == 5
    assert sorted(q.item_id for q in store.queries() if q.kind == "eval") == sorted(
        it.id for it in store.items("eval")
    )


def test_not_worse_rule_rejects_a_worse_model_and_records_why(setup) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    ctrl = make(promotion="not-worse")
    ctrl.run_iteration()
    ctrl.sync()
    first = ctrl.train(None)  # no current model: promoted
    assert first.status == "promoted" and first.metrics["promotion"]["reason"] == "no current model"
    # poison the training set: flip every label -> a much worse model on the test split
    for lab in store.labels():
        if lab.source == "oracle":
            flipped = "pos" if lab.value == "neg" else "neg"
            store.add_labels(
                [
                    Label(
                        item_id=lab.item_id,
                        value=flipped,
                        source="oracle",
                        annotation_id=lab.annotation_id,
                    )
                ]
            )
    worse = ctrl.train(None)
    p = worse.metrics["promotion"]
    assert worse.status == "rejected" and p["promoted"] is False and p["current_id"] == first.id
    assert p["metric"] == "test_accuracy" and p["candidate"] < p["current"] and p["n"] == 20
    assert ctrl.current_model().id == first.id
    # the rule "always" would have promoted it
    assert ctrl.train(None, rule="always").status == "promoted"


def test_promote_and_rollback(setup) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    ctrl = make()
    ctrl.run_iteration()
    ctrl.sync()
    a = ctrl.train(None)
    b = ctrl.train(None)
    c = ctrl.train(None)
    assert ctrl.current_model().id == c.id
    assert ctrl.rollback().id == b.id and ctrl.current_model().id == b.id
    assert store.get_model_version(c.id).status == "rejected"
    ctrl.promote(a.id)
    assert ctrl.current_model().id == a.id and store.get_model_version(b.id).status == "candidate"
    ctrl.promote(b.id)
    assert ctrl.current_model().id == b.id
    with pytest.raises(Exception, match="nothing to roll back to"):
        ctrl.rollback()
        ctrl.rollback()


def test_nightly_retrains_promotes_and_refreshes_waiting_tasks(setup) -> None:  # type: ignore[no-untyped-def]
    store, tool, trainer, make, gold = setup
    refreshed: list = []
    tool.refresh_predictions = refreshed.extend  # type: ignore[attr-defined]
    ctrl = make()
    ctrl.run_iteration()  # cold start: 8 sent, answered at once by the oracle
    ctrl.run_iteration()  # train v1, send 5 more (answered at once too)
    # 3 tasks still waiting: sent but not answered yet
    waiting_ids = [it.id for it in store.pool()[:3]]
    from loop.records import Query

    it = store.begin_iteration({})
    store.record_queries(
        it.number,
        [
            Query(item_id=i, iteration=it.number, score=0.5, rank=r, strategy="margin")
            for r, i in enumerate(waiting_ids)
        ],
    )
    store.mark_sent(waiting_ids)
    store.update_iteration(it.number, step="done", status="done")
    ctrl.sync()  # the oracle's answers to the 13 earlier items come in
    assert sorted(q.item_id for q in ctrl.waiting()) == sorted(waiting_ids)
    rep = ctrl.nightly()
    assert (
        rep["trained"] and rep["status"] == "promoted" and rep["promotion"]["rule"] == "not-worse"
    )
    assert rep["refreshed"] == 3
    assert sorted(r.item.id for r in refreshed) == sorted(waiting_ids)
    assert all(
        r.model_version == rep["model_version"] and r.prediction in ("neg", "pos")
        for r in refreshed
    )
