"""The two-speed loop in the controller (pure logic: bag-of-words trainers on the real SQLite
store). The fast lane trains in the iteration; the slow lane (``slow_trainer``) trains apart and
takes over only when not worse on the same held-out data. The service's slow-lane thread and the
real Label Studio with the real models are tested in tests/service."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from loop.controller import Controller
from loop.errors import ConfigError
from loop.oracle import OracleTool
from loop.service.status import current_batch, project_status
from loop.settings import Settings
from tests.fakes import BowClassifier, BowTrainer, toy_store


class Reversed(BowTrainer):
    """Learns the classes the wrong way round: a model worse than any other on held-out data."""

    name = "fake-reversed"

    def train(self, texts, labels, *, classes, seed, progress=None):  # type: ignore[no-untyped-def]
        clf = super().train(texts, labels, classes=classes, seed=seed)
        return BowClassifier(classes, clf.log_prior[::-1].copy(), clf.log_lik[::-1].copy())


class SlowBow(BowTrainer):
    name = "fake-slow"


class SlowReversed(Reversed):
    name = "fake-slow-reversed"


@pytest.fixture
def make(tmp_path: Path):  # type: ignore[no-untyped-def]
    store, items, gold, test_ids, classes = toy_store(tmp_path / "state.db")
    tool = OracleTool({i: y for i, y in gold.items() if i not in test_ids})

    def build(fast, slow, **kw):  # type: ignore[no-untyped-def]
        args = dict(
            classes=classes,
            models_dir=tmp_path / "models",
            strategy="margin",
            batch_size=5,
            initial_batch_size=8,
            min_new_labels=5,
            cold_start="random",
            seed=3,
            slow_trainer=slow,
            slow_min_new_labels=5,
        )
        args.update(kw)
        return Controller(store, fast, tool, **args)

    yield store, build
    store.close()


def test_a_better_slow_model_takes_over_and_a_worse_fast_one_does_not_replace_it(make) -> None:  # type: ignore[no-untyped-def]
    store, build = make
    fast, slow = Reversed(), SlowBow()
    ctrl = build(fast, slow)
    assert ctrl.slow_due() == (False, "0 labeled items; the slow lane needs 2 classes")
    ctrl.run_iteration()  # cold start: 8 sent, answered at once by the oracle
    ctrl.run_iteration()  # the fast model (8 labels) picks 5 more
    fast_v = ctrl.current_model()
    assert fast_v is not None and fast_v.trainer == "fake-reversed"
    due, why = ctrl.slow_due()
    assert due and "no fake-slow model yet" in why

    slow_v = ctrl.train_slow()
    assert slow_v.trainer == "fake-slow" and slow_v.iteration is None
    assert slow_v.config["lane"] == "slow" and fast_v.config["lane"] == "fast"
    promo = slow_v.metrics["promotion"]
    assert promo["rule"] == "not-worse" and promo["promoted"] is True
    assert promo["current_id"] == fast_v.id and promo["candidate"] > promo["current"]
    assert promo["candidate"] == slow_v.metrics["test_accuracy"]
    assert ctrl.current_model().id == slow_v.id
    assert ctrl.slow_due()[0] is False  # no label since it

    # labels arrive (the oracle answers the 5 sent): the fast lane retrains; under its own rule
    # ("always") it replaces a model of its lane, but the slow lane's model only when not worse
    rep = ctrl.run_iteration()
    assert rep.trained
    fast2 = store.get_model_version(rep.model_version)
    assert fast2.trainer == "fake-reversed" and fast2.status == "rejected"
    p2 = fast2.metrics["promotion"]
    assert p2["rule"] == "not-worse" and not p2["promoted"] and p2["current_id"] == slow_v.id
    assert ctrl.current_model().id == slow_v.id
    # so the batch is picked by the slow model, loaded by its own trainer
    it = store.iterations()[-1]
    assert it.info["picked_by"] == {"model_version": slow_v.id, "trainer": "fake-slow"}
    assert {q.model_version for q in store.queries(iteration=it.number)} == {slow_v.id}
    assert isinstance(ctrl.load_classifier(slow_v), BowClassifier)
    # a turned-down retrain counts as trained: the same labels do not retrain again
    need, why = ctrl.needs_training()
    assert not need and fast2.id in why
    # the slow lane is due again after slow_min_new_labels label changes
    assert ctrl.slow_due()[0] is True
    info = project_status(store)
    assert info["current_batch"]["model_version"] == slow_v.id
    assert info["current_batch"]["trainer"] == "fake-slow"


def test_a_worse_slow_model_is_recorded_and_rejected(make) -> None:  # type: ignore[no-untyped-def]
    store, build = make
    ctrl = build(BowTrainer(), SlowReversed())
    ctrl.run_iteration()
    ctrl.run_iteration()
    fast_v = ctrl.current_model()
    slow_v = ctrl.train_slow()
    promo = slow_v.metrics["promotion"]
    assert slow_v.status == "rejected" and not promo["promoted"]
    assert promo["candidate"] < promo["current"] and promo["current_id"] == fast_v.id
    assert ctrl.current_model().id == fast_v.id
    # the fast lane goes on under its own rule ("always": its versions replace each other)
    ctrl.run_iteration()
    rep = ctrl.run_iteration()
    assert rep.trained and store.get_model_version(rep.model_version).status == "promoted"
    assert store.get_model_version(rep.model_version).metrics["promotion"]["rule"] == "always"


class GatedSlow(SlowBow):
    """The slow trainer, held inside ``train`` until released (a training still running)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def train(self, texts, labels, *, classes, seed, progress=None):  # type: ignore[no-untyped-def]
        self.entered.set()
        assert self.gate.wait(10), "the test never released the slow training"
        return super().train(texts, labels, classes=classes, seed=seed)


def test_the_fast_lane_goes_on_while_the_slow_one_trains(make) -> None:  # type: ignore[no-untyped-def]
    store, build = make
    slow = GatedSlow()
    ctrl = build(BowTrainer(), slow)
    ctrl.run_iteration()
    ctrl.run_iteration()  # v0001 (fast, 8 labels)
    done: list = []
    t = threading.Thread(target=lambda: done.append(ctrl.train_slow()))
    t.start()
    assert slow.entered.wait(5)
    rep = ctrl.run_iteration()  # 5 labels arrive: the fast lane trains and pushes meanwhile
    assert rep.trained and rep.sent == 5 and t.is_alive()
    slow.gate.set()
    t.join(10)
    slow_v = done[0]
    ids = [mv.id for mv in store.model_versions()]
    assert len(ids) == len(set(ids)) == 3
    assert [int(i[1:5]) for i in ids] == [1, 2, 3] and ids[2] == slow_v.id
    # trained on the 8 labels it saw, compared with the model current when it finished
    assert slow_v.n_labels == 8
    assert slow_v.metrics["promotion"]["current_id"] == rep.model_version


def test_slow_lane_settings_are_checked(make, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, build = make
    with pytest.raises(ConfigError, match="slow lane's model is the fast lane's"):
        build(BowTrainer(), BowTrainer())
    with pytest.raises(ConfigError, match="slow_min_new_labels must be >= 1"):
        build(BowTrainer(), SlowBow(), slow_min_new_labels=0)
    ctrl = build(BowTrainer(), None)
    assert ctrl.slow_due() == (False, "no slow lane (slow_model is not set)")
    with pytest.raises(ConfigError, match="no slow lane is configured"):
        ctrl.train_slow()
    with pytest.raises(ValueError, match="slow_model 'setfit' is the same as model"):
        Settings(home=tmp_path, model="setfit", slow_model="setfit")
    assert Settings(home=tmp_path, slow_model="setfit").slow_model == "setfit"


def test_without_a_slow_lane_a_rejected_retrain_does_not_repeat_on_the_same_labels(make) -> None:  # type: ignore[no-untyped-def]
    store, build = make
    trainer = BowTrainer()
    ctrl = build(trainer, None, promotion="not-worse")
    ctrl.run_iteration()
    ctrl.run_iteration()
    first = ctrl.current_model()
    ctrl.trainer = Reversed()  # a retrain that is worse on held-out data
    ctrl.run_iteration()
    rep = ctrl.run_iteration()
    assert rep.trained
    bad = store.get_model_version(rep.model_version)
    assert bad.status == "rejected" and ctrl.current_model().id == first.id
    assert "lane" not in bad.config
    need, why = ctrl.needs_training()
    assert not need and bad.id in why


def test_current_batch_is_the_newest_batch_a_model_picked() -> None:
    from datetime import UTC, datetime

    from loop.records import Iteration

    def it(n, info):  # type: ignore[no-untyped-def]
        return Iteration(
            number=n, status="done", step="done", started_at=datetime.now(UTC), info=info
        )

    its = [
        it(1, {"selected": 8}),
        it(2, {"selected": 5, "picked_by": {"model_version": "v0001-a", "trainer": "embed-lr"}}),
        it(3, {"selected": 0, "picked_by": {"model_version": "v0002-b", "trainer": "setfit"}}),
    ]
    assert current_batch(its) == {
        "iteration": 2,
        "selected": 5,
        "model_version": "v0001-a",
        "trainer": "embed-lr",
    }
    assert current_batch(its[:1]) is None


class WarmSlow(SlowBow):
    """Records the ``previous`` folder each training got (a warm-starting slow trainer)."""

    name = "fake-slow-warm"
    warm_start = True

    def __init__(self) -> None:
        super().__init__()
        self.previous: list[Path | None] = []

    def train(self, texts, labels, *, classes, seed, progress=None, previous=None):  # type: ignore[no-untyped-def]
        self.previous.append(previous)
        return super().train(texts, labels, classes=classes, seed=seed)


def test_a_warm_starting_slow_lane_goes_on_from_its_newest_version(make) -> None:  # type: ignore[no-untyped-def]
    store, build = make
    slow = WarmSlow()
    ctrl = build(Reversed(), slow)
    ctrl.run_iteration()
    ctrl.run_iteration()
    first = ctrl.train_slow()
    assert slow.previous == [None] and first.config["warm_start_from"] is None
    ctrl.run_iteration()  # 5 more labels arrive: the fast lane retrains
    second = ctrl.train_slow()
    # from the slow lane's own newest version, not from the fast lane's model
    assert slow.previous[-1] == Path(first.path)
    assert second.config["warm_start_from"] == first.id
