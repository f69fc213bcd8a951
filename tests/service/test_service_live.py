"""Reliability of the real service: uvicorn on loopback, the real Label Studio of the session,
the real embed-lr model (offline MiniLM), on SQLite and on PostgreSQL.

- a burst of 1,000 webhook events (+100 repeats) from a second process: every one answered
  200 and stored exactly once while the service polls and retrains (the answer times are
  recorded, not asserted: latency is a goal of ``bench/bench_service.py``, measured there);
- answers given while the service is down are reconciled by the start-up poll;
- the schedule, the webhook threshold and the API firing at once run one iteration;
- the service killed (SIGKILL) during an iteration and started again resumes it: no task pushed
  twice, no label lost.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.labelstudio import server as lss
from connectors.labelstudio.bot import AnnotatorBot
from connectors.labelstudio.tool import LabelStudioTool
from connectors.store import SqlStore
from loop.records import Item, Label
from loop.service.app import create_app
from loop.service.core import LEASE_NAME, WEBHOOK_PATH, LoopService
from loop.service.process import WorkerProcess
from loop.service.server import ServiceServer
from loop.service.tokens import FILE_NAME
from loop.settings import as_environment
from loop.wiring import LabelStudioHandle
from tests.models.models_testdata import HELDOUT_NEGATIVE, HELDOUT_POSITIVE, NEGATIVE, POSITIVE
from tests.service.conftest import make_settings, wait_until
from tests.service.payloads import annotation_event

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ["neg", "pos"]
BASE = [(t, "pos") for t in POSITIVE] + [(t, "neg") for t in NEGATIVE]
MEASURED: dict[str, Any] = {}


def _generated(prefix: str, n: int, words: int | None = None) -> list[tuple[str, str, str]]:
    """``(id, text, label)``: the hand-written sentences (their first ``words`` words), classes
    alternating, each text made distinct by a number."""
    out = []
    for k in range(n):
        text, label = BASE[(k % 2) * 20 + (k // 2) % 20]
        text = " ".join(text.split()[:words]) if words else text
        out.append((f"{prefix}{k:04d}", f"{text} (note {prefix}{k})", label))
    return out


def _seed(
    store: SqlStore, *, pool: int, labeled: int = 0, burst: int = 0
) -> tuple[dict[str, str], list[str]]:
    """Items: ``pool`` unlabeled train items, ``labeled`` train items with imported labels, 20
    held-out test items with labels, and ``burst`` unlabeled test items (never pushed as tasks).
    Returns the gold labels and the burst item ids."""
    rows = _generated("p", pool + labeled)
    held = [(f"h{k:02d}", t, "pos") for k, t in enumerate(HELDOUT_POSITIVE)]
    held += [(f"h{k + 10:02d}", t, "neg") for k, t in enumerate(HELDOUT_NEGATIVE)]
    burst_rows = _generated("b", burst, words=4)  # short: cheap to evaluate on
    store.add_items(
        [Item(id=i, text=t) for i, t, _ in rows]
        + [Item(id=i, text=t, split="test") for i, t, _ in held + burst_rows]
    )
    store.set_meta("classes", CLASSES)
    imported = held + rows[pool:]
    store.add_labels(
        [
            Label(item_id=i, value=y, source="import", annotation_id=f"import:{i}")
            for i, _, y in imported
        ]
    )
    gold = {i: y for i, _, y in rows + held + burst_rows}
    return gold, [i for i, _, _ in burst_rows]


def _settings(tmp_path: Path, ls_server: lss.LocalLabelStudio, cache_dir: Path, **over: Any) -> Any:
    title = f"alloop-svc-{os.urandom(4).hex()}"
    service = {"host": "127.0.0.1", "port": lss.free_port(), **over.pop("service", {})}
    return make_settings(
        tmp_path / "home",
        cache_dir=cache_dir,
        label_studio={
            "url": ls_server.url,
            "token": ls_server.token,
            "project_title": title,
            **over.pop("label_studio", {}),
        },
        service=service,
        **over,
    )


@contextmanager
def serving(
    settings: Any, store: SqlStore, ls_server: lss.LocalLabelStudio
) -> Iterator[LoopService]:
    """The real service (from settings, through loop.wiring) behind uvicorn on loopback."""
    handle = LabelStudioHandle(ls_server.url, ls_server.token)
    service = LoopService.from_settings(settings, store=store, handle=handle)
    server = ServiceServer(create_app(service), settings.service.host, settings.service.port)
    server.start()
    service.start()
    try:
        yield service
    finally:
        server.stop()
        assert service.stop(timeout=120)


def _idle(service: LoopService, timeout: float = 120.0) -> None:
    def quiet() -> bool:
        js = service.job_status()
        return js["running"] is None and not js["worker_busy"] and not any(js["pending"].values())

    wait_until(quiet, timeout, "the worker to become idle")
    time.sleep(0.2)
    wait_until(quiet, timeout, "the worker to become idle")


def _ls_labels(store: SqlStore) -> list[Label]:
    return [lab for lab in store.labels() if lab.source == "label-studio"]


def _tasks_per_item(ls: lss.LocalLabelStudio, title: str) -> Counter[str]:
    """How many Label Studio tasks each item has in the project titled ``title``."""
    tool = LabelStudioTool(ls.url, ls.token, project_title=title, classes=CLASSES)
    pid = tool.ensure_project()
    tasks = tool._list_tasks(pid, [], fields="task_only", what="listing")  # noqa: SLF001 - inspection
    return Counter(str(t["data"]["alloop_id"]) for t in tasks)


def _bot(ls: lss.LocalLabelStudio, project_id: int, gold: dict[str, str]) -> AnnotatorBot:
    return AnnotatorBot(
        ls.url, ls.token, project_id=project_id, gold=gold, classes=CLASSES, workers=4
    )


@contextmanager
def serving_apart(
    settings: Any, store: SqlStore, ls_server: lss.LocalLabelStudio, store_url: str
) -> Iterator[LoopService]:
    """The service as ``alloop serve`` runs it by default: this process is the front (uvicorn,
    webhooks, API; no worker thread) and the worker is a real ``alloop worker`` process on the
    same settings (given through the environment), reached only through the database."""
    handle = LabelStudioHandle(ls_server.url, ls_server.token)
    service = LoopService.from_settings(settings, store=store, handle=handle, worker=False)
    server = ServiceServer(create_app(service), settings.service.host, settings.service.port)
    server.start()
    service.start()  # registers the webhook (creates the project) before the worker looks
    env = {**os.environ, **as_environment(settings), "ALLOOP_DATABASE_URL": store_url}
    argv = [sys.executable, "-m", "loop.cli", "worker", "--parent-pid", str(os.getpid())]
    child = WorkerProcess(argv, env).start()
    try:
        wait_until(lambda: service.worker_status()["running"], 120, "the worker process")
        yield service
    finally:
        assert child.stop(timeout=120) == 0
        server.stop()
        assert service.stop(timeout=30)


# -- 1. a burst of 1,000 events ------------------------------------------------------------
@pytest.mark.parametrize("worker", ["thread", "process"])
def test_a_burst_of_1000_webhooks_is_stored_exactly_once(
    store_url: str, ls_server: lss.LocalLabelStudio, cache_dir: Path, tmp_path: Path, worker: str
) -> None:
    """``worker``: the worker in the web process, or apart (``alloop worker``)."""
    store = SqlStore.open(store_url)
    try:
        gold, burst = _seed(store, pool=60, labeled=10, burst=1000)
        settings = _settings(
            tmp_path,
            ls_server,
            cache_dir,
            min_new_labels=500,
            batch_size=10,
            label_studio={"poll_seconds": 0.5},
        )
        running = (
            serving(settings, store, ls_server)
            if worker == "thread"
            else serving_apart(settings, store, ls_server, store_url)
        )
        with running as service:
            _idle(service)  # the first iteration: trains on the imported labels, pushes 10
            assert len(store.model_versions()) == 1
            pid = service.tool.project_id
            events = [
                annotation_event(
                    project_id=pid,
                    task_id=900_000 + k,
                    item_id=item,
                    annotation_id=800_000 + k,
                    value=gold[item],
                    text=f"text of {item}",
                )
                for k, item in enumerate(burst)
            ]
            rng = random.Random(0)
            repeats = rng.sample(range(len(events)), 100)
            payloads = list(events)
            for k in sorted(repeats, reverse=True):  # a repeat right behind its original: they race
                payloads.insert(k + 1, events[k])
            (tmp_path / "payloads.json").write_text(json.dumps(payloads))
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.service.burst_sender",
                    f"http://127.0.0.1:{settings.service.port}{WEBHOOK_PATH}",
                    str(tmp_path / "payloads.json"),
                    str(tmp_path / "result.json"),
                    "--workers",
                    "8",
                ],
                cwd=ROOT,
                env={**os.environ, "ALLOOP_TEST_WEBHOOK_SECRET": service.secrets.webhook_secret},
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert r.returncode == 0, r.stderr[-2000:]
            result = json.loads((tmp_path / "result.json").read_text())
            _idle(service)
            stats = service.webhook_stats.as_dict()
            trainings = [j for j in service.job_status()["recent"] if j["result"].get("iterations")]
            if worker == "process":
                _apart_checks(service, store)
        assert Counter(result["statuses"]) == {200: 1100}
        slowest = max(result["seconds"])
        labels = [lab for lab in _ls_labels(store) if lab.item_id in set(burst)]
        assert len(labels) == 1000 and len({lab.item_id for lab in labels}) == 1000
        assert all(lab.value == gold[lab.item_id] for lab in labels)
        assert stats["received"] == 1100 and stats["labels_inserted"] == 1000
        assert stats["failed"] == 0
        models = store.model_versions()
        assert len(models) >= 2  # retrained while the burst came in (>= 500 label changes)
        MEASURED[f"burst[{store.dialect},{worker}]"] = {
            "events": 1100,
            "wall_s": round(result["wall_seconds"], 2),
            "client_max_s": round(slowest, 3),
            "client_p99_s": round(sorted(result["seconds"])[1088], 3),
            "server_max_s": stats["max_seconds"],
            "server_mean_s": stats["mean_seconds"],
            "models_trained": len(models),
            "iteration_jobs": len(trainings),
        }
        print(MEASURED)
    finally:
        store.close()


def _apart_checks(service: LoopService, store: SqlStore) -> None:
    """The front holds no worker: the jobs ran in the worker process, and a request through
    the API reaches it through the database and runs there."""
    ws = service.worker_status()
    assert ws["apart"] is True and ws["running"] is True
    worker_pid = int(ws["holder"].split(":")[1])
    assert worker_pid != os.getpid()
    assert {j.holder for j in store.jobs(limit=None)} == {ws["holder"]}
    before = len(store.model_versions())
    got = service.trigger("retrain", "api", push=True)
    assert got.state == "started", got
    wait_until(
        lambda: any("api" in j.sources and j.status == "done" for j in store.jobs()),
        120,
        "the API's retrain in the worker process",
    )
    _idle(service)
    done = [j for j in store.jobs(limit=None) if "api" in j.sources]
    assert all(j.status == "done" and j.holder == ws["holder"] for j in done)
    assert len(done) == 1 and done[0].kind == "retrain" and done[0].result["iterations"]
    assert len(store.model_versions()) in (before, before + 1)  # no retrain when up to date
    st = service.status()
    assert st["worker"]["apart"] and st["service"]["worker_running"]
    assert st["poll"]["last"] is not None  # the worker's poller, reported through the database
    assert store.job_requests() == []


# -- 2. receiver down, then up ------------------------------------------------------------
def test_answers_given_while_the_service_is_down_are_reconciled_at_start(
    store_url: str, ls_server: lss.LocalLabelStudio, cache_dir: Path, tmp_path: Path
) -> None:
    store = SqlStore.open(store_url)
    try:
        gold, _ = _seed(store, pool=40)
        settings = _settings(
            tmp_path,
            ls_server,
            cache_dir,
            initial_batch_size=12,
            batch_size=6,
            min_new_labels=100,
            label_studio={"poll_seconds": 3600},  # webhooks only, after the start-up poll
        )
        with serving(settings, store, ls_server) as service:
            _idle(service)
            sent = [q.item_id for q in store.queries(iteration=1)]
            assert len(sent) == 12
            pid = service.tool.project_id
            report = _bot(ls_server, pid, gold).answer_pending(item_ids=sent[:6])
            assert report.annotations == 6
            wait_until(lambda: len(_ls_labels(store)) == 6, 10, "6 labels by webhook")
            stats = service.webhook_stats.as_dict()
            assert stats["received"] >= 6 and stats["failed"] == stats["unauthorized"] == 0
            _idle(service)
        # the service is down: Label Studio's webhooks fail and are never retried
        report = _bot(ls_server, pid, gold).answer_pending(item_ids=sent[6:])
        assert report.annotations == 6
        assert len(_ls_labels(store)) == 6
        with serving(settings, store, ls_server) as service:
            wait_until(lambda: len(_ls_labels(store)) == 12, 30, "the start-up poll")
            assert service.webhook_stats.as_dict()["received"] == 0  # all by reconciliation
            _idle(service)
        labels = _ls_labels(store)
        assert sorted(lab.item_id for lab in labels) == sorted(sent)  # each exactly once
        assert all(lab.value == gold[lab.item_id] for lab in labels)
        assert max(_tasks_per_item(ls_server, settings.label_studio.project_title).values()) == 1
    finally:
        store.close()


# -- 3. triggers at once -------------------------------------------------------------------
def test_schedule_webhook_threshold_and_api_at_once_run_one_iteration(
    store_url: str, ls_server: lss.LocalLabelStudio, cache_dir: Path, tmp_path: Path
) -> None:
    store = SqlStore.open(store_url)
    try:
        gold, _ = _seed(store, pool=60)
        settings = _settings(
            tmp_path,
            ls_server,
            cache_dir,
            initial_batch_size=10,
            batch_size=10,
            min_new_labels=10,
            refill_below=5,
            label_studio={"poll_seconds": 3600},
            service={"nightly": "03:00", "lease_seconds": 8.0},
        )
        with serving(settings, store, ls_server) as service:
            _idle(service)
            first = [q.item_id for q in store.queries(iteration=1)]
            bot = _bot(ls_server, service.tool.project_id, gold)
            bot.answer_pending(item_ids=first[:4])  # the first model, and the second batch
            _idle(service)
            n_before = len(store.iterations())
            assert n_before == 2 and len(store.model_versions()) == 1
            second = [q.item_id for q in store.queries(iteration=2)]
            # another replica is busy for 3 s while the three triggers arrive together
            assert store.acquire_lease(LEASE_NAME, "replica-b:1:1:0123456789ab", 3.0)
            jobs_before = len(service.job_status()["recent"])
            barrier = threading.Barrier(3)
            answers: dict[str, Any] = {}

            def schedule() -> None:
                barrier.wait()
                answers["schedule"] = service.scheduled_nightly().state

            def webhooks() -> None:  # Label Studio sends one per answer: 10 >= min_new_labels
                barrier.wait()
                answers["bot"] = bot.answer_pending(item_ids=first[4:] + second[:4]).annotations

            def api() -> None:
                barrier.wait()
                r = httpx.post(
                    f"http://127.0.0.1:{settings.service.port}/api/iterations",
                    headers={"Authorization": f"Bearer {service.secrets.api_token}"},
                    timeout=10,
                )
                answers["api"] = (r.status_code, r.json()["state"])

            threads = [threading.Thread(target=f) for f in (schedule, webhooks, api)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert answers["bot"] == 10 and answers["api"] == (202, "blocked")
            _idle(service)
            jobs = service.job_status()["recent"][jobs_before:]
        its = store.iterations()
        assert len(its) == n_before + 1, [(i.number, i.info) for i in its]
        assert all(i.status == "done" for i in its)
        assert sorted(j["kind"] for j in jobs) == ["iteration", "nightly"], jobs
        assert all(j["status"] == "done" for j in jobs)
        spans = sorted((j["started_at"], j["finished_at"]) for j in jobs)
        assert spans[0][1] <= spans[1][0]  # one after the other
        (nightly,) = [j for j in jobs if j["kind"] == "nightly"]
        assert nightly["sources"] == ["schedule"]
        if nightly["result"]["trained"]:
            mv = store.get_model_version(nightly["result"]["model_version"])
            assert mv.metrics["promotion"]["rule"] == "not-worse"
        assert max(_tasks_per_item(ls_server, settings.label_studio.project_title).values()) == 1
    finally:
        store.close()


# -- 4. killed during an iteration --------------------------------------------------------
def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "loop.cli", "serve"],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _get(url: str) -> Any:
    try:
        r = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def test_killed_during_an_iteration_the_restarted_service_resumes_it(
    store_url: str, ls_server: lss.LocalLabelStudio, tmp_path: Path
) -> None:
    store = SqlStore.open(store_url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        gold, _ = _seed(store, pool=60)
        port = lss.free_port()
        title = f"alloop-kill-{os.urandom(4).hex()}"
        env = {
            **os.environ,
            "ALLOOP_HOME": str(tmp_path / "home"),
            "ALLOOP_DATABASE_URL": store_url,
            # a cache of its own: embedding the texts makes the training take a few seconds
            "ALLOOP_CACHE_DIR": str(tmp_path / "cache"),
            "ALLOOP_LABEL_STUDIO__URL": ls_server.url,
            "ALLOOP_LABEL_STUDIO__TOKEN": ls_server.token,
            "ALLOOP_LABEL_STUDIO__PROJECT_TITLE": title,
            "ALLOOP_LABEL_STUDIO__POLL_SECONDS": "1",
            "ALLOOP_SERVICE__PORT": str(port),
            "ALLOOP_SERVICE__LEASE_SECONDS": "120",
            "ALLOOP_COLD_START": "random",
            "ALLOOP_BATCH_SIZE": "10",
            "ALLOOP_MIN_NEW_LABELS": "10",
            "COLUMNS": "200",
        }
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / "serve.log"
        procs.append(_serve(env, log))
        wait_until(lambda: _get(f"{base}/health"), 90, "alloop serve to answer")

        def idle() -> Any:
            st = _get(f"{base}/api/status")
            job = st and st["job"]
            ok = job and not (job["running"] or job["worker_busy"] or any(job["pending"].values()))
            return (
                st
                if ok and st["last_iteration"] and st["last_iteration"]["status"] == "done"
                else None
            )

        wait_until(idle, 90, "the first iteration")
        first = [q.item_id for q in store.queries(iteration=1)]
        assert len(first) == 10
        pid = LabelStudioTool(
            ls_server.url, ls_server.token, project_title=title, classes=CLASSES
        ).ensure_project()
        assert _bot(ls_server, pid, gold).answer_pending(item_ids=first).annotations == 10

        def training() -> Any:
            st = _get(f"{base}/api/status")
            job = st and st["job"]["running"]
            return job if job and job["kind"] in ("iteration", "retrain") else None

        job = wait_until(training, 60, "the iteration on the 10 answers")
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        broken = store.unfinished_iteration()
        assert broken is not None and broken.number == 2, "the kill came after the iteration ended"
        assert store.lease(LEASE_NAME) is not None  # the dead process's lease: 120 s to go
        MEASURED[f"killed[{store.dialect}]"] = {"step": broken.step, "job": job["progress"]}

        t0 = time.monotonic()
        procs.append(_serve(env, log))
        wait_until(lambda: _get(f"{base}/health"), 90, "alloop serve to answer again")
        wait_until(
            lambda: store.unfinished_iteration() is None and idle(), 90, "the resumed iteration"
        )
        resumed_s = time.monotonic() - t0
        assert resumed_s < 100  # the stale lease was taken over, not waited out (120 s)
        its = store.iterations()
        assert [i.number for i in its] == [1, 2] and its[1].status == "done"
        assert its[1].model_version is not None  # it trained
        queries = store.queries()
        assert len(queries) == len({q.item_id for q in queries}) == 20
        tasks = _tasks_per_item(ls_server, title)
        assert max(tasks.values()) == 1 and set(tasks) == {q.item_id for q in queries}
        labels = _ls_labels(store)
        assert sorted(lab.item_id for lab in labels) == sorted(first)
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(60) == 0
        assert store.lease(LEASE_NAME) is None
        text = log.read_text(errors="replace")
        assert "no longer runs: taking it over" in text
        secrets = json.loads((tmp_path / "home" / FILE_NAME).read_text())
        assert secrets["api_token"] not in text and secrets["webhook_secret"] not in text
        MEASURED[f"killed[{store.dialect}]"]["resumed_after_restart_s"] = round(resumed_s, 1)
        print(MEASURED)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        store.close()
