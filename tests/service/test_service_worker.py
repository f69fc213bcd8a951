"""The background machinery: the database lease between processes, resuming, polling, the
nightly schedule, failures and stopping."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from datetime import datetime
from zoneinfo import ZoneInfo

from loop.errors import LabelingToolError
from loop.lease import _pid_namespace, holder_id, holder_is_stale
from loop.service.core import LEASE_NAME
from tests.service.conftest import Env, wait_until


def _answer_sent(env: Env) -> None:
    for item in env.tool.unanswered():
        assert env.hook(env.tool.annotate(item, env.gold[item])).status_code == 200


def _overlaps(intervals: list[tuple[float, float]]) -> bool:
    iv = sorted(intervals)
    return any(b[0] < a[1] for a, b in zip(iv, iv[1:], strict=False))


def test_a_second_service_on_the_same_database_waits_for_the_lease(make_env) -> None:  # type: ignore[no-untyped-def]
    a: Env = make_env(start=True, service={"lease_seconds": 1.5})
    a.idle()
    b: Env = make_env(db=a.store.url, tool=a.tool, service={"lease_seconds": 1.5})
    assert b.service.holder != a.service.holder
    a.trainer.hold()
    _answer_sent(a)
    assert a.trainer.entered.wait(10)
    r = b.client.post("/api/iterations", headers=b.auth())
    assert r.status_code == 202
    assert r.json()["state"] == "blocked" and r.json()["lease_holder"] == a.service.holder
    b.service.start()
    time.sleep(2.5)  # longer than the lease's time-to-live: A's heartbeat keeps renewing it
    assert b.trainer.train_calls == 0 and b.service.job_status()["recent"] == []
    assert b.store.lease(LEASE_NAME)[0] == a.service.holder
    n_before = len(a.store.iterations())
    a.trainer.release()
    wait_until(
        lambda: any(j["status"] == "done" for j in b.service.job_status()["recent"]),
        10,
        "the second service's iteration",
    )
    a.idle()
    b.idle()
    its = a.store.iterations()
    assert len(its) > n_before and all(i.status == "done" for i in its)
    assert [i.number for i in its] == list(range(1, len(its) + 1))
    assert not _overlaps(a.trainer.intervals + b.trainer.intervals)
    sent = a.tool.sent()
    assert len(sent) == len(set(sent))  # no item pushed twice


def test_the_lease_of_a_dead_process_on_this_machine_is_taken_over_at_once(
    make_env, caplog
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="alloop.service")
    env: Env = make_env(service={"lease_seconds": 60.0})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = f"{socket.gethostname()}:{dead.pid}:{_pid_namespace()}:0123456789ab"
    assert holder_is_stale(stale) and not holder_is_stale(env.service.holder)
    assert env.store.acquire_lease(LEASE_NAME, stale, 60.0)
    env.store.begin_iteration({"strategy": "margin"})  # it died during this iteration
    t0 = time.monotonic()
    env.service.start()
    # the iteration row is finished a moment before the job records its result: wait for both
    wait_until(
        lambda: (
            env.store.unfinished_iteration() is None
            and any(
                "summary" in (j.get("result") or {}) for j in env.service.job_status()["recent"]
            )
        ),
        10,
        "the resumed iteration",
    )
    assert time.monotonic() - t0 < 10  # not the 60 s of the lease
    (job,) = env.service.job_status()["recent"]
    assert job["reason"] == "resume iteration 1 at step begin"
    assert "resumed at step begin" in job["result"]["summary"]
    assert "no longer runs: taking it over" in caplog.text
    assert len(env.tool.sent()) == 8


def test_a_live_or_foreign_holder_is_waited_out(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    foreign = "another-host:12345:4026531836:0123456789ab"
    assert not holder_is_stale(foreign)
    assert not holder_is_stale("not a holder id")
    assert not holder_is_stale(holder_id())  # this process
    assert env.store.acquire_lease(LEASE_NAME, foreign, 1.2)
    env.service.start()
    time.sleep(0.5)
    assert env.store.iterations() == []  # blocked while the lease lasts
    assert env.service.lease_status()["holder"] == foreign
    wait_until(lambda: env.store.iterations(), 10, "the iteration after the lease expired")
    env.idle()
    assert env.store.iterations()[0].status == "done"


def test_the_poller_ingests_answers_whose_webhooks_were_lost(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env(start=True, label_studio={"poll_seconds": 0.2})
    env.idle()
    for item in env.tool.unanswered():
        env.tool.annotate(item, env.gold[item])  # no webhook reaches the service
    wait_until(
        lambda: len([lab for lab in env.store.labels() if lab.source == "label-studio"]) == 8,
        10,
        "the poll to ingest 8 answers",
    )
    # the polled labels trigger the retrain like webhook ones
    wait_until(lambda: env.store.model_versions(), 10, "a model trained on the polled labels")
    env.idle()
    assert env.service.status()["poll"]["last"]["seconds"] >= 0


def test_a_failing_job_is_recorded_and_resumed_later(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    env.tool.fail_fetch = LabelingToolError("Label Studio at http://x: unreachable.", "start it")
    env.service.start()
    wait_until(
        lambda: any(j["status"] == "failed" for j in env.service.job_status()["recent"]),
        10,
        "the failed first iteration",
    )
    job = env.service.job_status()["recent"][-1]
    assert job["error"].startswith("Label Studio at http://x: unreachable.")
    assert env.store.unfinished_iteration() is not None
    env.tool.fail_fetch = None
    r = env.client.post("/api/iterations", headers=env.auth())  # API triggers skip the back-off
    assert r.status_code == 202
    wait_until(lambda: env.store.unfinished_iteration() is None, 10, "the resumed iteration")
    assert [i.status for i in env.store.iterations()] == ["done"]


def test_nightly_schedule_in_its_time_zone(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env(service={"nightly": "03:30", "timezone": "Europe/Paris"})
    assert env.service.schedule_status()["next_run"] is None
    env.service.start()
    env.idle()
    sched = env.service.schedule_status()
    nxt = datetime.fromisoformat(sched["next_run"])
    paris = nxt.astimezone(ZoneInfo("Europe/Paris"))
    assert (paris.hour, paris.minute) == (3, 30) and nxt.utcoffset() == paris.utcoffset()
    assert (nxt.hour, nxt.minute) == (3, 30)
    assert env.client.get("/health").json()["scheduler"] is True
    _answer_sent(env)
    env.idle()
    res = env.service.scheduled_nightly()  # what the cron trigger calls
    assert res.kind == "nightly" and res.state in ("started", "queued")
    env.idle()
    nightly = [j for j in env.service.job_status()["recent"] if j["kind"] == "nightly"]
    assert len(nightly) == 1 and nightly[0]["sources"] == ["schedule"]
    assert nightly[0]["status"] == "done" and nightly[0]["result"]["trained"] is True


def test_start_registers_the_webhook_and_stop_releases_everything(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env(service={"public_url": "http://loop.example:9000/"})
    env.service.start()
    assert env.tool.webhooks == [
        (
            "http://loop.example:9000/webhooks/label-studio",
            {"X-Alloop-Secret": env.service.secrets.webhook_secret},
        )
    ]
    env.idle()
    env.trainer.hold()
    _answer_sent(env)
    assert env.trainer.entered.wait(10)
    assert env.service.lease_status()["ours"]
    env.trainer.release()
    assert env.service.stop(timeout=10) is True
    assert not env.service.running and env.store.lease(LEASE_NAME) is None
    env.service.start()  # again: registering is idempotent
    assert len(env.tool.webhooks) == 1
    env.idle()
    assert env.service.stop(timeout=10)
