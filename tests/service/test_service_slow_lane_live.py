"""The two-speed loop for real: uvicorn on loopback, the real Label Studio of the session, the
real embed-lr model answering every batch and the real setfit trainer (offline MiniLM, tuned on
the labels) in the slow lane, on SQLite.

Labels arrive -> the next batch is in Label Studio while the setfit training runs (the slow lane
is held open after its real training so that the batch is measured while it runs); the setfit
version is recorded with its not-worse decision against the embed-lr model current at that
moment, and when promoted it picks the next batch (status and API say which model did).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from connectors.labelstudio import server as lss
from connectors.store import SqlStore
from tests.service.conftest import wait_until
from tests.service.test_service_live import (
    MEASURED,
    _bot,
    _idle,
    _seed,
    _settings,
    _tasks_per_item,
    serving,
)

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]


class HeldOpen:
    """Wraps the real slow-lane trainer: it trains for real, then waits for ``release`` before
    returning, so the test can act while the slow lane is still running."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.started = threading.Event()
        self.trained = threading.Event()
        self.release = threading.Event()
        self.seconds: float | None = None

    def train(self, *args: Any, **kwargs: Any) -> Any:
        self.started.set()
        t0 = time.perf_counter()
        clf = self.inner.train(*args, **kwargs)
        self.seconds = time.perf_counter() - t0
        self.trained.set()
        assert self.release.wait(120), "the test never released the slow lane"
        return clf

    def __getattr__(self, name: str) -> Any:  # load, config, ...
        return getattr(self.inner, name)


def _tasks(ls: lss.LocalLabelStudio, title: str) -> int:
    return sum(_tasks_per_item(ls, title).values())


def test_the_next_batch_reaches_label_studio_while_setfit_trains_and_setfit_takes_over_only_when_better(
    ls_server: lss.LocalLabelStudio, cache_dir: Path, tmp_path: Path
) -> None:
    store = SqlStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        gold, _ = _seed(store, pool=60)
        settings = _settings(
            tmp_path,
            ls_server,
            cache_dir,
            initial_batch_size=8,
            batch_size=8,
            min_new_labels=8,
            refill_below=1,
            slow_model="setfit",
            slow_min_new_labels=8,
            setfit={"max_steps": 30, "min_steps": 30, "max_length": 32, "time_budget_s": 120},
            label_studio={"poll_seconds": 3600},  # labels by webhook
        )
        title = settings.label_studio.project_title
        with serving(settings, store, ls_server) as service:
            ctrl = service.controller
            held = HeldOpen(ctrl.slow_trainer)
            ctrl.slow_trainer = held
            _idle(service)
            assert _tasks(ls_server, title) == 8  # cold start
            bot = _bot(ls_server, service.tool.project_id, gold)

            # 8 labels: embed-lr trains and pushes the next batch (nothing else runs yet)
            t0 = time.perf_counter()
            assert bot.answer_pending().annotations == 8
            wait_until(lambda: _tasks(ls_server, title) == 16, 60, "the second batch")
            fast_alone = time.perf_counter() - t0
            first_fast = ctrl.current_model()
            assert first_fast is not None and first_fast.trainer == "embed-lr"
            # ... and the slow lane starts setfit on those 8 labels
            assert held.started.wait(30)
            ctrl.slow_min_new_labels = 1000  # one slow training in this test

            # 8 more labels while setfit trains: the next batch does not wait for it
            t1 = time.perf_counter()
            assert bot.answer_pending().annotations == 8
            wait_until(lambda: _tasks(ls_server, title) == 24, 60, "the third batch")
            fast_during = time.perf_counter() - t1
            lane = service.status()["slow_lane"]
            assert lane["running"] is not None and lane["running"]["kind"] == "slow-train"
            _idle(service)
            batch = service.status()["current_batch"]
            assert batch["trainer"] == "embed-lr"  # the fast lane picked it
            current_fast = ctrl.current_model()
            assert current_fast.n_labels == 16

            assert held.trained.wait(180), "the real setfit training did not finish"
            held.release.set()
            wait_until(
                lambda: service.status()["slow_lane"]["recent"][-1]["status"] != "running",
                120,
                "the slow job to end",
            )
            job = service.status()["slow_lane"]["recent"][-1]
            assert job["status"] == "done", job
            mv = store.get_model_version(job["result"]["model_version"])
            assert mv.trainer == "setfit" and mv.n_labels == 8 and mv.config["lane"] == "slow"
            assert mv.metrics["pool_embedded"] == len(store.pool())  # embedded before its turn
            promo = mv.metrics["promotion"]
            # compared with the embed-lr model current when it finished, on the same held-out set
            assert promo["rule"] == "not-worse" and promo["current_id"] == current_fast.id
            assert promo["n"] == 20 and promo["metric"] == "test_accuracy"
            assert promo["promoted"] == (promo["candidate"] >= promo["current"])
            assert (ctrl.current_model().id == mv.id) == promo["promoted"]

            # 8 more labels: the loop's next batch comes from the current model, whichever won
            t2 = time.perf_counter()
            assert bot.answer_pending().annotations == 8
            wait_until(lambda: _tasks(ls_server, title) == 32, 120, "the fourth batch")
            fast_after = time.perf_counter() - t2  # nothing else running
            _idle(service)
            fast3 = [v for v in store.model_versions() if v.trainer == "embed-lr"][-1]
            assert fast3.n_labels == 24
            p3 = fast3.metrics["promotion"]
            if promo["promoted"]:  # embed-lr on 24 labels replaces setfit only when not worse
                assert p3["rule"] == "not-worse" and p3["current_id"] == mv.id
                assert p3["promoted"] == (p3["candidate"] >= p3["current"])
            else:
                assert p3["rule"] == "always" and p3["promoted"]
            picker = ctrl.current_model()
            assert service.status()["current_batch"]["model_version"] == picker.id
            MEASURED["slow_lane"] = {
                "first_batch_s_with_pool_embedding": round(fast_alone, 2),
                "embed_lr_batch_s_while_setfit_trains": round(fast_during, 2),
                "batch_s_after_the_slow_lane": round(fast_after, 2),
                "setfit_train_s": round(held.seconds or 0.0, 2),
                "setfit_promoted": promo["promoted"],
                "setfit_vs_embed_lr": (promo["candidate"], promo["current"]),
            }
            print("two-speed loop:", MEASURED["slow_lane"])
        labels = [lab for lab in store.labels() if lab.source == "label-studio"]
        assert len(labels) == len({lab.item_id for lab in labels}) == 24  # each exactly once
        assert max(_tasks_per_item(ls_server, title).values()) == 1
    finally:
        store.close()
