"""The service's slow lane (two-speed loop) with the fake Label Studio and bag-of-words trainers
(pure logic: the real Label Studio with the real models is in test_service_slow_lane_live.py).
The slow lane trains in its own thread under its own lease; the worker keeps running iterations
meanwhile; status and the API show the slow lane and which model picked the current batch."""

from __future__ import annotations

import threading

from loop.service.core import SLOW_LEASE_NAME
from tests.fakes import BowTrainer
from tests.service.conftest import Env, wait_until


class GatedSlow(BowTrainer):
    name = "fake-slow"

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.fail_next = False

    def train(self, texts, labels, *, classes, seed, progress=None):  # type: ignore[no-untyped-def]
        self.entered.set()
        if progress is not None:
            with progress.task("contrastive tuning", total=1) as advance:
                assert self.gate.wait(20), "the test never released the slow training"
                advance(1)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected failure in the slow lane")
        return super().train(texts, labels, classes=classes, seed=seed)


def _answer_sent(env: Env) -> int:
    items = env.tool.unanswered()
    for item in items:
        assert env.hook(env.tool.annotate(item, env.gold[item])).status_code == 200
    return len(items)


def _with_slow_lane(env: Env, slow: GatedSlow, min_new: int = 5) -> None:
    env.controller.slow_trainer = slow
    env.controller.slow_min_new_labels = min_new


def test_batches_keep_coming_while_the_slow_lane_trains(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    slow = GatedSlow()
    env.extra.append(slow.gate)  # released at teardown whatever happens
    _with_slow_lane(env, slow)
    env.service.start()
    env.idle()
    assert len(env.tool.sent()) == 8  # cold start
    assert env.service.status()["slow_lane"]["due"] is False  # no labels yet
    _answer_sent(env)  # 8 labels: the fast lane trains, the slow lane becomes due
    assert slow.entered.wait(10)
    wait_until(lambda: env.service.status()["slow_lane"]["running"], 5, "the slow job in status")
    env.idle()
    sent_before = len(env.tool.sent())
    assert sent_before > 8  # the fast model's batches went out while the slow lane trains
    assert env.service.status()["slow_lane"]["running"] is not None

    # more labels arrive while it still trains: the worker runs the next iteration anyway
    _answer_sent(env)
    wait_until(lambda: len(env.tool.sent()) > sent_before, 10, "the next batch")
    env.idle()
    st = env.client.get("/api/status", headers=env.auth()).json()
    lane = st["slow_lane"]
    assert lane["model"] == "fake-slow" and lane["thread_running"]
    assert lane["running"]["kind"] == "slow-train"
    assert lane["running"]["progress"][0]["description"] == "contrastive tuning"
    assert st["lease"]["holder"] is None  # the worker's lease is free: the slow lane has its own
    assert env.store.lease(SLOW_LEASE_NAME)[0] == env.service.holder
    assert st["current_batch"]["trainer"] == env.trainer.name  # the fast lane picked it
    assert st["current_batch"]["model_version"] == env.controller.current_model().id

    slow.gate.set()
    wait_until(
        lambda: env.service.status()["slow_lane"]["recent"][-1]["status"] != "running",
        10,
        "the slow job to end",
    )
    job = env.service.status()["slow_lane"]["recent"][-1]
    assert job["status"] == "done", job
    mv = env.store.get_model_version(job["result"]["model_version"])
    assert mv.trainer == "fake-slow" and mv.n_labels >= 5 and mv.config["lane"] == "slow"
    promo = mv.metrics["promotion"]
    assert promo["rule"] == "not-worse"
    assert promo["promoted"] == (promo["candidate"] >= promo["current"])
    # released right after the job is recorded done (the heartbeat stops first)
    wait_until(lambda: env.store.lease(SLOW_LEASE_NAME) is None, 10, "the slow lease's release")
    # every label reached the training set once, every item was pushed once
    sent = env.tool.sent()
    assert len(sent) == len(set(sent))


def test_a_failed_slow_training_is_recorded_and_the_loop_goes_on(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    slow = GatedSlow()
    slow.fail_next = True
    slow.gate.set()
    _with_slow_lane(env, slow)
    env.service.start()
    env.idle()
    _answer_sent(env)
    wait_until(
        lambda: (
            (env.service.status()["slow_lane"]["recent"] or [{}])[-1].get("status")
            in ("done", "failed")
        ),
        10,
        "the slow job",
    )
    job = env.service.status()["slow_lane"]["recent"][-1]
    assert job["status"] == "failed" and "injected failure" in job["error"]
    env.idle()
    assert len(env.tool.sent()) > 8  # the fast lane was not held up
    assert all(mv.trainer != "fake-slow" for mv in env.store.model_versions())
    assert env.store.lease(SLOW_LEASE_NAME) is None


def test_without_a_slow_lane_status_says_so(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env(start=True)
    env.idle()
    assert env.service.status()["slow_lane"] is None
    assert env.service._slow is None  # noqa: SLF001 - no thread started


class BetterSlow(GatedSlow):
    """Trains on the whole corpus with its gold labels: better than the fast model on held-out
    data (a stand-in for a stronger model; the promotion rule decides as for any)."""

    name = "fake-slow-better"

    def __init__(self, texts: list[str], labels: list[str]) -> None:
        super().__init__()
        self.all = (texts, labels)

    def train(self, texts, labels, *, classes, seed, progress=None):  # type: ignore[no-untyped-def]
        return super().train(*self.all, classes=classes, seed=seed, progress=progress)


def test_when_the_slow_model_takes_over_the_waiting_tasks_get_its_predictions(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    items = env.store.items("train") + env.store.items("test")
    slow = BetterSlow([it.text for it in items], [env.gold[it.id] for it in items])
    slow.gate.set()
    # one slow model only (its first needs no threshold; 100 more changes never come): a second
    # one, when the first trained before all the answers were in, would refresh again
    _with_slow_lane(env, slow, min_new=100)
    env.service.start()
    env.idle()
    _answer_sent(env)  # the fast lane trains and pushes a batch; the slow lane becomes due
    wait_until(
        lambda: any(mv.trainer == slow.name for mv in env.store.model_versions()),
        10,
        "the slow model",
    )
    env.idle()
    mv = next(mv for mv in env.store.model_versions() if mv.trainer == slow.name)
    waiting = {q.item_id for q in env.controller.waiting()}
    assert mv.status == "promoted", mv.metrics["promotion"]
    jobs = [j for j in env.service.job_status()["recent"] if j["kind"] == "refresh"]
    assert len(jobs) == 1 and jobs[0]["status"] == "done", jobs
    refreshed = env.tool.refreshed[-1]
    assert jobs[0]["result"]["refreshed"] == len(refreshed) > 0
    # tasks that were waiting then (sent, not answered before the refresh); those still
    # waiting now are among them unless a later batch added them
    assert set(refreshed) <= set(env.tool.sent())
    later = {q.item_id for q in env.store.queries() if q.model_version != mv.id}
    assert waiting - set(refreshed) <= later
    assert mv.id in jobs[0]["result"]["summary"]
    # nothing was pushed twice
    sent = env.tool.sent()
    assert len(sent) == len(set(sent))
