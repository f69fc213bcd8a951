"""The web process and the worker apart (pure logic, fake Label Studio and trainer): two
services on one database, a front (``worker=False``: HTTP only) and a worker. They meet only in
the database: job requests, the label revision, job records with progress, the worker's
report. (The real ``alloop worker`` process with the real Label Studio is in
test_service_live.py.)"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from loop.lease import _pid_namespace
from tests.service.conftest import Env, wait_until


def _pair(make_env, tmp_path: Path) -> tuple[Env, Env]:  # type: ignore[no-untyped-def]
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    worker: Env = make_env(db=db)
    front: Env = make_env(db=db, tool=worker.tool, worker=False)  # the same Label Studio
    return front, worker


def test_a_front_and_a_worker_meet_only_in_the_database(make_env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    front, worker = _pair(make_env, tmp_path)
    front.service.start()
    assert front.service._worker is None and front.service._watcher is None  # noqa: SLF001
    # no worker yet: a trigger is kept in the database until one starts
    r = front.client.post("/api/iterations", headers=front.auth())
    assert r.status_code == 202 and r.json()["state"] == "queued"
    assert "no worker process" in r.json()["detail"]
    assert [q.kind for q in front.store.job_requests()] == ["iteration"]
    again = front.client.post("/api/iterations", headers=front.auth()).json()
    assert again["state"] == "coalesced" and len(front.store.job_requests()) == 1
    assert front.service.status()["worker"] == {
        "apart": True,
        "holder": None,
        "running": False,
        "reported_seconds_ago": None,
        "started_at": None,
    }

    worker.service.start()
    wait_until(lambda: front.service.worker_status()["running"], 10, "the worker's report")
    front.idle()
    assert front.store.job_requests() == []  # taken
    # the start's own check and the waiting request: one job, or two when the worker began
    # the first before its watcher took the request
    first = front.service.job_status()["recent"]
    assert {j["kind"] for j in first} == {"iteration"} and len(first) in (1, 2)
    assert all(j["status"] == "done" and j["holder"] == worker.service.holder for j in first)
    assert any("api" in j["sources"] for j in first)
    assert len(worker.tool.sent()) == 8 * len(first)  # cold-start batches, pushed by the worker
    n_first = len(first)

    # answers through the front's webhook: the worker notices the new label revision
    worker.trainer.hold()
    answered = worker.tool.unanswered()
    for item in answered:
        assert front.hook(worker.tool.annotate(item, front.gold[item])).status_code == 200
    assert front.service.webhook_stats.as_dict()["labels_inserted"] == len(answered) > 0
    assert worker.service.webhook_stats.as_dict()["received"] == 0
    assert worker.trainer.entered.wait(10)
    running = wait_until(lambda: front.service.job_status()["running"], 10, "the running job")
    assert running["kind"] == "iteration" and running["holder"] == worker.service.holder
    assert "labels" in running["sources"]  # noticed from the revision, not told
    progress = wait_until(
        lambda: (front.service.job_status()["running"] or {}).get("progress"), 10, "progress"
    )
    assert progress[0]["description"] == "training" and progress[0]["done"] == 0
    assert front.service.job_status()["worker_busy"] is True
    # a retrain asked meanwhile runs after it, once however often it is asked
    r1 = front.client.post("/api/retrain?push=true", headers=front.auth()).json()
    assert r1["state"] == "queued" and r1["running"] == "iteration"
    r2 = front.client.post("/api/retrain?push=true", headers=front.auth()).json()
    assert r2["state"] in ("coalesced", "queued")  # waiting, or already taken by the worker
    worker.trainer.release()
    front.idle()
    kinds = [(j["kind"], j["status"]) for j in front.service.job_status()["recent"]]
    assert kinds[: n_first + 1] == [("iteration", "done")] * (n_first + 1)
    assert ("retrain", "done") in kinds[n_first + 1 :]
    assert kinds.count(("retrain", "done")) <= 2
    st = front.client.get("/api/status").json()
    assert (
        st["service"]["worker_running"] is True and st["worker"]["holder"] == worker.service.holder
    )
    assert st["job"]["running"] is None and st["waiting_for_answers"] == len(
        worker.tool.unanswered()
    )

    # the worker stops: the front says so at once (its last report says it stopped)
    assert worker.service.stop(timeout=10)
    assert front.service.worker_status()["running"] is False
    assert "worker: none reports; jobs wait in the database" in front.client.get("/ui/main").text
    r = front.client.post("/api/iterations", headers=front.auth()).json()
    assert r["state"] == "queued" and "no worker process" in r["detail"]


def test_a_job_whose_process_died_is_marked_interrupted_when_a_worker_starts(
    make_env,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    front, worker = _pair(make_env, tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = f"{socket.gethostname()}:{dead.pid}:{_pid_namespace()}:0123456789ab"
    job = front.store.start_job("fast", "iteration", gone, ["webhook"], "10 new labels")
    alive = front.store.start_job("slow", "slow-train", "elsewhere:1:2:3", ["slow-lane"], "due")
    front.service.start()
    # a fresh running record shows as running (a front cannot tell whether its process runs)
    assert front.service.job_status()["running"]["id"] == job.id
    worker.service.start()
    wait_until(
        lambda: front.store.jobs(status="interrupted"), 10, "the dead process's job interrupted"
    )
    (marked,) = front.store.jobs(status="interrupted")
    assert marked.id == job.id and marked.error == "its process ended while it ran"
    assert marked.finished_at is not None
    # a worker can: it marks it interrupted, and leaves another machine's recent record alone
    worker.idle()
    assert [j.id for j in front.store.jobs(status="running")] == [alive.id]
    assert front.store.jobs(lane="fast")[-1].status == "done"  # the worker's own first job
