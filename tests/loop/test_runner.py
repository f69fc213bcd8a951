"""The live loop's decisions (retrain, refill the queue) on the real SQLite store with the
tiny trainer and a tool whose annotators answer only when told to."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from connectors.store import SqlStore
from loop.controller import Controller
from loop.oracle import OracleTool
from loop.records import Item
from loop.runner import LoopRunner
from tests.fakes import BowTrainer, toy_corpus


class SlowAnnotators(OracleTool):
    """Takes requests; answers ``n`` of the waiting ones when ``answer(n)`` is called."""

    def __init__(self, gold: dict[str, str]) -> None:
        super().__init__(gold)
        self.waiting: list = []

    def send(self, requests):  # type: ignore[no-untyped-def]
        self.waiting.extend(
            r for r in requests if r.item.id not in self._sent and r not in self.waiting
        )

    def answer(self, n: int) -> None:
        batch, self.waiting = self.waiting[:n], self.waiting[n:]
        super().send(batch)


@pytest.fixture
def runner(tmp_path: Path):  # type: ignore[no-untyped-def]
    rows, classes = toy_corpus(40)
    store = SqlStore.open(f"sqlite:///{tmp_path / 's.db'}")
    store.add_items([Item(id=i, text=t) for i, t, _ in rows])
    tool = SlowAnnotators({i: y for i, _, y in rows})
    trainer = BowTrainer()
    ctrl = Controller(
        store,
        trainer,
        tool,
        classes=classes,
        models_dir=tmp_path / "m",
        batch_size=6,
        min_new_labels=6,
        cold_start="random",
        seed=0,
    )
    said: list[str] = []
    yield LoopRunner(ctrl, poll_seconds=0.0, refill_below=3, say=said.append), tool, trainer, said
    store.close()


def test_first_poll_cold_starts_then_waits_for_labels(runner) -> None:  # type: ignore[no-untyped-def]
    r, tool, trainer, said = runner
    rep = r.poll()
    assert rep is not None and rep.sent == 6 and "sent 6" in said[-1]
    assert r.awaiting() == 6
    assert r.poll() is None  # nothing answered: no retrain, queue still full
    assert trainer.train_calls == 0


def test_refills_the_queue_without_retraining_below_the_threshold(runner) -> None:  # type: ignore[no-untyped-def]
    r, tool, trainer, said = runner
    r.poll()
    tool.answer(6)
    rep = r.poll()
    assert rep is not None and rep.trained and "6 new" in said[-2]  # first model: no model yet
    tool.answer(4)  # 4 label changes < 6, and 2 left awaiting < refill_below 3
    rep = r.poll()
    assert rep is not None and not rep.trained and rep.sent == 6
    assert "queue refill: 2 sent item(s) await" in said[-1] and trainer.train_calls == 1
    assert r.poll() is None  # 8 awaiting now: nothing to do


def test_retrains_after_enough_new_labels_and_stops_on_event(runner) -> None:  # type: ignore[no-untyped-def]
    r, tool, trainer, said = runner
    r.poll()
    tool.answer(6)
    r.poll()
    calls = trainer.train_calls
    tool.answer(6)
    rep = r.poll()
    assert rep is not None and rep.trained and trainer.train_calls == calls + 1
    stop = threading.Event()
    stop.set()
    r.run(stop)  # returns at once
    r.run(threading.Event(), max_polls=2)


def test_no_iteration_while_another_process_holds_the_lease(runner, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`alloop run` takes the same database lease as `alloop serve` and `alloop iterate`."""
    from loop.cli import _try_lease
    from loop.service.core import LEASE_NAME
    from loop.settings import Settings

    r, tool, trainer, said = runner
    store = r.ctrl.store
    s = Settings(home=tmp_path / "h")
    r.lease = lambda: _try_lease(store, s)
    assert store.acquire_lease(LEASE_NAME, "other-host:123:serve", 600)
    assert r.poll() is None and "holds the iteration lease" in said[-1]
    assert store.iterations() == [] and tool.waiting == []
    store.release_lease(LEASE_NAME, "other-host:123:serve")
    rep = r.poll()
    assert rep is not None and rep.sent == 6
    assert store.lease(LEASE_NAME) is None  # released after the iteration


class GatedOracleSlow(BowTrainer):
    """A slow-lane trainer that waits for ``gate`` and learns from every gold label (so it is
    better on held-out data than the fast model and takes over)."""

    name = "fake-slow"

    def __init__(self, texts: list[str], labels: list[str]) -> None:
        super().__init__()
        self.all = (texts, labels)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def train(self, texts, labels, *, classes, seed, progress=None):  # type: ignore[no-untyped-def]
        self.entered.set()
        assert self.gate.wait(20), "the test never released the slow training"
        return super().train(*self.all, classes=classes, seed=seed)


class RefreshingAnnotators(SlowAnnotators):
    def __init__(self, gold: dict[str, str]) -> None:
        super().__init__(gold)
        self.refreshed: list[list[str]] = []

    def refresh_predictions(self, requests):  # type: ignore[no-untyped-def]
        self.refreshed.append([r.item.id for r in requests])


def test_alloop_run_trains_the_slow_lane_in_the_background(tmp_path: Path) -> None:
    from loop.cli import _try_lease
    from loop.service.core import SLOW_LEASE_NAME
    from loop.settings import Settings

    rows, classes = toy_corpus(40)
    store = SqlStore.open(f"sqlite:///{tmp_path / 's.db'}")
    test_ids = {i for i, _, _ in rows[::4]}
    store.add_items(
        [Item(id=i, text=t, split="test" if i in test_ids else "train") for i, t, _ in rows]
    )
    from loop.records import Label

    store.add_labels(
        [
            Label(item_id=i, value=y, source="import", annotation_id=f"import:{i}")
            for i, _, y in rows
            if i in test_ids
        ]
    )
    gold = {i: y for i, _, y in rows}
    tool = RefreshingAnnotators(gold)
    slow = GatedOracleSlow([t for _, t, _ in rows], [y for _, _, y in rows])
    ctrl = Controller(
        store,
        BowTrainer(),
        tool,
        classes=classes,
        models_dir=tmp_path / "m",
        batch_size=4,
        initial_batch_size=6,
        min_new_labels=4,
        cold_start="random",
        seed=0,
        slow_trainer=slow,
        slow_min_new_labels=4,
    )
    said: list[str] = []
    s = Settings(home=tmp_path / "h")
    r = LoopRunner(
        ctrl,
        poll_seconds=0.0,
        refill_below=1,
        say=said.append,
        lease=lambda: _try_lease(store, s),
        slow_lease=lambda: _try_lease(store, s, name=SLOW_LEASE_NAME),
    )
    try:
        r.poll()  # cold start
        tool.answer(6)
        r.poll()  # the fast model, and the slow lane is due: it starts in the background
        assert slow.entered.wait(10) and r.slow_running
        assert store.lease(SLOW_LEASE_NAME) is not None
        # the loop goes on while it trains: answers are ingested, the fast lane retrains
        tool.answer(4)
        rep = r.poll()
        assert rep is not None and rep.trained and r.slow_running
        slow.gate.set()
        r._slow.join(10)  # noqa: SLF001 - the test waits for the background training
        mv = next(mv for mv in store.model_versions() if mv.trainer == "fake-slow")
        assert mv.status == "promoted", mv.metrics["promotion"]
        assert store.lease(SLOW_LEASE_NAME) is None
        r.poll()  # the next poll refreshes the waiting tasks with the slow model
        assert tool.refreshed and set(tool.refreshed[-1]) == {q.item_id for q in ctrl.waiting()}
        assert any("now show" in line and mv.id in line for line in said)
        assert any(line.startswith("slow lane: training fake-slow") for line in said)
    finally:
        slow.gate.set()
        store.close()
