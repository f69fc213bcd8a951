"""The live service under load: webhook latency at a fixed rate, and label-to-next-batch time.

    python bench/bench_service.py [--rate 50] [--seconds 20] [--repeats 3] [--worker process|thread] [--json OUT]

One run starts its own Label Studio from the migrated template (``$ALLOOP_LS_VENV``, default
``.alloop/labelstudio/venv``; ``$ALLOOP_LS_TEMPLATE``, default ``.alloop/labelstudio/template``)
and the real service (``LoopService.from_settings`` behind uvicorn, both on free loopback ports)
over a SQLite store in a temporary folder: the built-in Rotten Tomatoes dataset with its train
split as the pool and its test split's labels held out (``$ALLOOP_CACHE_DIR``, else
``/tmp/simhome/cache`` when it exists, else ``.alloop/cache``), the ``embed-lr`` model, cold
start ``random`` with a first batch of ``rate x seconds`` tasks, ``refill_below=0`` (a new
batch comes only from a retrain) and the poller on its normal schedule. ``--worker process``
(the default, as ``alloop serve`` runs): the web process is a front and the worker a real
``alloop worker`` child process reached through the database; ``--worker thread``: the worker
in the web process. What the worker was doing during each request is only seen in thread
mode (in process mode, only whole iterations from the store).

(a) Webhook latency. A second process posts ``rate x seconds`` ANNOTATION_CREATED payloads (the
    captured Label Studio 1.23.2 shape, one per pushed task of the first batch: its real task
    id, item and gold answer) on an open-loop schedule: request ``k`` leaves at ``k / rate`` s
    whatever the answers before it, each on a new connection as Label Studio's ``requests.post``
    does. Reported: p50/p95/p99/max of the answer time (send -> answer) and of the time from
    the scheduled instant (includes the sender's own lag), the share over Label Studio's 1 s
    webhook timeout, the answer time by what the worker was doing meanwhile (iteration sync,
    train, select, push, a poll, nothing), the server-side ingest time, and every iteration
    (retrain) that ran meanwhile. The posted annotation ids are not in Label Studio, so first
    the cold-start tasks are let age out of the poll's re-read window (one real answer moves
    the cursor past them); otherwise the next sync would rightly withdraw those labels.
(b) Label to next batch. ``--repeats`` times: the bot answers tasks of the newest batch in
    Label Studio until one label short of ``min_new_labels`` changes since the current model,
    waits for the service to store them, then creates the one label that crosses the threshold
    through the API (Label Studio itself sends the webhook, within that request). Timed from
    just before that annotation is created to the moment the SDK lists the whole next batch
    (polled every 0.1 s) with predictions of the new model version. Split: webhook arrival,
    wait for the worker, the iteration's own steps from the store (sync, train = fit +
    evaluate + save, select = score the pool + pick, push, bookkeeping) and the time from the
    iteration's recorded end to the batch being seen (negative: seen before the end was
    recorded); also the Label Studio fetch inside sync and the model-version update inside push.

Prints a table; ``--json`` also writes the report (default ``bench/results/service.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

WEBHOOK_TIMEOUT_S = 1.0  # Label Studio's WEBHOOK_TIMEOUT default
SECRET_ENV = "ALLOOP_BENCH_WEBHOOK_SECRET"
ANNOTATION_ID_BASE = 50_000_000  # ids of the posted events: far above Label Studio's own
WARM_CACHE = Path("/tmp/simhome/cache")


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value) if value else default


def _cache_dir() -> Path:
    if os.environ.get("ALLOOP_CACHE_DIR"):
        return Path(os.environ["ALLOOP_CACHE_DIR"])
    return WARM_CACHE if WARM_CACHE.is_dir() else REPO / ".alloop" / "cache"


def _pcts(values: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max/mean of ``values`` in milliseconds (None when empty)."""
    import numpy as np

    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    a = np.asarray(values, dtype=float) * 1000.0
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "p99_ms": round(float(p99), 1),
        "max_ms": round(float(a.max()), 1),
        "mean_ms": round(float(a.mean()), 1),
    }


def wait_until(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")


# --------------------------------------------------------------------------------------------
# the sender process
# --------------------------------------------------------------------------------------------


async def _send_all(url: str, bodies: list[bytes], rate: float, secret: str) -> list[list[Any]]:
    """Post ``bodies`` open-loop at ``rate``/s; per request ``[status, scheduled, sent, done]``
    (epoch seconds; status -1 on a transport error)."""
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    headers = {"X-Alloop-Secret": secret, "Content-Type": "application/json"}
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        start_mono = loop.time() + 0.2
        start_wall = time.time() + (start_mono - loop.time())

        async def one(k: int, body: bytes) -> list[Any]:
            at = start_mono + k / rate
            await asyncio.sleep(max(0.0, at - loop.time()))
            sent = loop.time()
            try:
                r = await client.post(url, content=body, headers=headers)
                status = r.status_code
            except httpx.HTTPError:
                status = -1
            done = loop.time()
            return [
                status,
                start_wall + (at - start_mono),
                start_wall + (sent - start_mono),
                start_wall + (done - start_mono),
            ]

        return list(await asyncio.gather(*(one(k, b) for k, b in enumerate(bodies))))


def sender_main(url: str, payloads: Path, result: Path, rate: float) -> int:
    """The second process: post every payload of ``payloads`` and write the timings."""
    secret = os.environ[SECRET_ENV]
    bodies = [json.dumps(p).encode() for p in json.loads(payloads.read_text())]
    rows = asyncio.run(_send_all(url, bodies, rate, secret))
    result.write_text(json.dumps({"rows": rows}))
    return 0


# --------------------------------------------------------------------------------------------
# set-up
# --------------------------------------------------------------------------------------------


def start_label_studio(root: Path) -> Any:
    from connectors.labelstudio import server as lss

    venv = _env_path("ALLOOP_LS_VENV", REPO / ".alloop" / "labelstudio" / "venv")
    template = (
        _env_path("ALLOOP_LS_TEMPLATE", REPO / ".alloop" / "labelstudio" / "template")
        / lss.LS_VERSION
    )
    lss.install(venv)
    lss.init_template(venv, template)
    server = lss.LocalLabelStudio.from_template(
        template, root / "ls" / "data", venv, lss.free_port(), start_timeout=180
    )
    t0 = time.perf_counter()
    server.start()
    print(f"Label Studio {lss.LS_VERSION} at {server.url} ({time.perf_counter() - t0:.1f} s)")
    return server


class IngestLog:
    """Wraps ``service.ingest_webhook``: ``(annotation id, entered, left)`` epoch seconds for
    every webhook the service handles (the time inside the request's worker thread)."""

    def __init__(self, service: Any) -> None:
        self.rows: list[tuple[int | None, float, float]] = []
        inner = service.ingest_webhook

        def timed(payload: Any) -> Any:
            t0 = time.time()
            try:
                return inner(payload)
            finally:
                ann = payload.get("annotation") if isinstance(payload, dict) else None
                aid = ann.get("id") if isinstance(ann, dict) else None
                self.rows.append((int(aid) if aid is not None else None, t0, time.time()))

        service.ingest_webhook = timed

    def of(self, annotation_id: int) -> tuple[float, float] | None:
        for aid, t0, t1 in self.rows:
            if aid == annotation_id:
                return t0, t1
        return None


class Activity:
    """Wraps methods of the running service's parts to record when they ran:
    ``(what, thread name, entered, left)`` in epoch seconds."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, float, float]] = []

    def wrap(self, obj: Any, attr: str, what: str) -> None:
        inner = getattr(obj, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.time()
            try:
                return inner(*args, **kwargs)
            finally:
                self.spans.append((what, threading.current_thread().name, t0, time.time()))

        setattr(obj, attr, timed)


def _tasks(client: Any, pid: int, after_id: int = 0, fields: str = "task_only") -> list[dict]:
    """Tasks of project ``pid`` with id > ``after_id``, through the SDK, by id pages."""
    from connectors.labelstudio.tool import _as_dict

    out: list[dict] = []
    last = after_id
    while True:
        flt = {"filter": "filter:tasks:id", "operator": "greater", "type": "Number", "value": last}
        query = json.dumps(
            {"filters": {"conjunction": "and", "items": [flt]}, "ordering": ["tasks:id"]}
        )
        pager = client.tasks.list(project=pid, fields=fields, page=1, page_size=500, query=query)
        page = [_as_dict(t) for t in (pager.items or [])]
        out.extend(page)
        if len(page) < 500:
            return out
        last = max(int(t["id"]) for t in page)


def _prediction_versions(client: Any, task: dict) -> list[str]:
    preds = task.get("predictions")
    if preds is None:
        preds = [_as(p) for p in client.predictions.list(task=int(task["id"]))]
    out = []
    for p in preds:
        if isinstance(p, dict) and p.get("model_version"):
            out.append(str(p["model_version"]))
    return out


def _as(obj: Any) -> dict:
    from connectors.labelstudio.tool import _as_dict

    return _as_dict(obj)


def _idle(service: Any, timeout: float = 180.0) -> None:
    def quiet() -> bool:
        js = service.job_status()
        return js["running"] is None and not js["worker_busy"] and not any(js["pending"].values())

    wait_until(quiet, timeout, "the worker to become idle")
    time.sleep(0.3)
    wait_until(quiet, timeout, "the worker to become idle")


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.timestamp()


def age_out_of_poll_window(service: Any, bot: Any, item_id: str) -> dict[str, Any]:
    """Move the poll cursor past the cold-start tasks: wait until they are older than the
    poll's re-read window, have Label Studio record one real answer (on ``item_id``) and poll.

    The posted events of (a) name annotations that Label Studio does not hold; a poll whose
    window still covers their tasks would rightly withdraw those labels again."""
    window = service.tool.overlap.total_seconds()  # the tool owns the re-read margin
    pushed_at = time.time()
    wait = window + 1.0
    print(f"    letting the cold-start tasks age out of the {window:g} s poll window ({wait:g} s)")
    time.sleep(wait)
    rep = bot.answer_pending(item_ids=[item_id])

    def moved() -> str | None:
        cursor = service.store.get_meta("sync_cursor")
        ts = _ts(cursor)
        return cursor if ts is not None and ts - window > pushed_at else None

    service.request_reconcile()  # the poller syncs at once
    cursor = wait_until(moved, 30, "the poll cursor to move past the cold-start tasks")
    return {
        "window_seconds": window,
        "waited_seconds": wait,
        "answer": rep.annotations,
        "cursor": cursor,
    }


# --------------------------------------------------------------------------------------------
# (a) webhook latency at a fixed rate
# --------------------------------------------------------------------------------------------


def bench_webhooks(
    service: Any,
    ingest: IngestLog,
    activity: Activity,
    tasks: list[tuple[int, str]],
    texts: dict[str, str],
    gold: dict[str, str],
    rate: float,
    seconds: float,
    root: Path,
) -> dict[str, Any]:
    from loop.service.core import WEBHOOK_PATH
    from tests.service.payloads import annotation_event

    n = int(round(rate * seconds))
    if len(tasks) < n:
        raise RuntimeError(f"only {len(tasks)} unanswered pushed tasks for {n} events")
    pid = service.tool.project_id
    payloads = [
        annotation_event(
            project_id=pid,
            task_id=task_id,
            item_id=item,
            annotation_id=ANNOTATION_ID_BASE + k,
            value=gold[item],
            text=texts[item],
        )
        for k, (task_id, item) in enumerate(tasks[:n])
    ]
    (root / "payloads.json").write_text(json.dumps(payloads))
    models_before = len(service.store.model_versions())
    its_before = len(service.store.iterations())
    stats_before = service.webhook_stats.as_dict()
    ingest_from = len(ingest.rows)
    url = f"{service.public_url}{WEBHOOK_PATH}"
    print(f"(a) {n} webhooks at {rate:g}/s for {seconds:g} s from a second process -> {url}")
    r = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--send",
            url,
            str(root / "payloads.json"),
            str(root / "sent.json"),
            "--rate",
            str(rate),
        ],
        cwd=REPO,
        env={**os.environ, SECRET_ENV: service.secrets.webhook_secret},
        capture_output=True,
        text=True,
        timeout=seconds + 120,
    )
    if r.returncode != 0:
        raise RuntimeError(f"the sender failed: {r.stderr[-2000:]}")
    rows = json.loads((root / "sent.json").read_text())["rows"]
    _idle(service)
    stats = service.webhook_stats.as_dict()
    statuses: dict[str, int] = {}
    for s, *_ in rows:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    answer = [done - sent for _, _, sent, done in rows]
    from_schedule = [done - at for _, at, _, done in rows]
    lag = [sent - at for _, at, sent, _ in rows]
    first_at = min(at for _, at, _, _ in rows)
    last_done = max(done for *_, done in rows)
    iterations = [
        it
        for it in service.store.iterations()[its_before:]
        if it.started_at is not None and _ts(it.started_at) < last_done
    ]
    # what the service was doing while each request was in flight
    spans: list[tuple[str, float, float]] = []
    for what, thread, a, b in activity.spans:
        if b < first_at or a > last_done:
            continue
        if what == "sync":
            what = "poll (poller's sync)" if thread == "alloop-poller" else "iteration: sync"
        spans.append((what, a, b))
    for it in iterations:
        spans.append(
            ("iteration: select/other", _ts(it.started_at), _ts(it.finished_at) or last_done)
        )
    order = [
        "poll (poller's sync)",
        "iteration: sync",
        "iteration: train",
        "iteration: push",
        "iteration: select/other",
    ]
    by_what: dict[str, list[float]] = {w: [] for w in [*order, "nothing"]}
    slowest = []
    for (_, _at, sent, done), x in zip(rows, answer, strict=True):
        over = {w for w, a, b in spans if sent < b and done > a}
        kind = next((w for w in order if w in over), "nothing")
        by_what[kind].append(x)
        slowest.append((x, round(sent - first_at, 2), sorted(over)))
    slowest.sort(reverse=True)
    server_side = [b - a for _, a, b in ingest.rows[ingest_from:]]
    wall = last_done - first_at
    labels = [
        lab
        for lab in service.store.labels()
        if lab.annotation_id.isdigit() and int(lab.annotation_id) >= ANNOTATION_ID_BASE
    ]
    polls = [(a, b) for w, t, a, b in activity.spans if t == "alloop-poller" and first_at <= b]
    polls = [(a, b) for a, b in polls if a <= last_done]
    out = {
        "requests": n,
        "rate_per_s": rate,
        "seconds": seconds,
        "wall_seconds": round(wall, 2),
        "achieved_rate_per_s": round(n / wall, 1) if wall > 0 else None,
        "statuses": statuses,
        "answer_time": _pcts(answer),
        "from_scheduled_time": _pcts(from_schedule),
        "sender_lag": _pcts(lag),
        "over_1s_share": round(sum(x > WEBHOOK_TIMEOUT_S for x in answer) / n, 4),
        "over_1s_count": sum(x > WEBHOOK_TIMEOUT_S for x in answer),
        "over_1s_from_schedule_share": round(
            sum(x > WEBHOOK_TIMEOUT_S for x in from_schedule) / n, 4
        ),
        "answer_time_by_activity": {w: {**_pcts(v), "n": len(v)} for w, v in by_what.items()},
        "slowest": [
            {"answer_ms": round(1000 * x, 1), "sent_at_s": t, "during": over}
            for x, t, over in slowest[:10]
        ],
        "server_ingest_time": _pcts(server_side),
        "server_stats_delta": {
            "received": stats["received"] - stats_before["received"],
            "labels_inserted": stats["labels_inserted"] - stats_before["labels_inserted"],
            "failed": stats["failed"] - stats_before["failed"],
            "max_seconds": stats["max_seconds"],
        },
        "labels_stored": len(labels),
        "polls_during_run": [
            {"at_s": round(a - first_at, 2), "seconds": round(b - a, 3)} for a, b in polls
        ],
        "iterations_during_run": [
            {
                "number": it.number,
                "at_s": round(_ts(it.started_at) - first_at, 2),
                "seconds": round((_ts(it.finished_at) or last_done) - _ts(it.started_at), 3),
                "model_version": it.model_version,
                "reason": it.info.get("train_reason"),
                "timings": {k: round(v, 3) for k, v in it.timings.items()},
                "sync_fetch_from_label_studio": _within(
                    activity, _ts(it.started_at), _ts(it.finished_at), "fetch"
                ),
            }
            for it in iterations
        ],
        "models_trained_during_and_after": len(service.store.model_versions()) - models_before,
        "iterations_during_and_after": len(service.store.iterations()) - its_before,
    }
    a = out["answer_time"]
    print(
        f"    answers {statuses}; answer p50 {a['p50_ms']} ms, p95 {a['p95_ms']}, p99 "
        f"{a['p99_ms']}, max {a['max_ms']}; over 1 s: {out['over_1s_count']}; iterations "
        f"meanwhile: {len(iterations)} ({out['models_trained_during_and_after']} models trained)"
    )
    return out


# --------------------------------------------------------------------------------------------
# (b) label -> next batch
# --------------------------------------------------------------------------------------------


def _label_events(store: Any, after: int) -> list[tuple[Any, ...]]:
    """The label events after revision ``after`` (diagnostics; SQLite stores only)."""
    import sqlite3

    url = str(store.url)
    if not url.startswith("sqlite:///"):
        return []
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return conn.execute(
            "SELECT e.id, e.item_id, e.action, e.value, l.annotation_id, e.created_at "
            "FROM label_events e JOIN labels l ON l.id = e.label_id WHERE e.id > ? "
            "ORDER BY e.id",
            (after,),
        ).fetchall()


def _unanswered_of_latest_batch(service: Any) -> tuple[int, list[str]]:
    store = service.store
    its = [it for it in store.iterations() if it.status == "done"]
    for it in reversed(its):
        items = [q.item_id for q in store.queries(iteration=it.number) if q.sent]
        answered = {lab.item_id for lab in store.labels(items)} if items else set()
        todo = [i for i in items if i not in answered]
        if todo:
            return it.number, todo
    raise RuntimeError("no pushed item waits for an answer")


def _within(activity: Activity, start: float | None, end: float | None, what: str) -> float | None:
    """Seconds the worker spent in ``what`` between ``start`` and ``end``."""
    if start is None or end is None:
        return None
    return round(
        sum(
            b - a
            for w, t, a, b in activity.spans
            if w == what and t == "alloop-worker" and start - 0.01 <= a and b <= end + 0.01
        ),
        3,
    )


def measure_next_batch(
    service: Any,
    ingest: IngestLog,
    activity: Activity,
    bot: Any,
    client: Any,
    batch_size: int,
    r: int,
) -> dict[str, Any]:
    """One repeat of (b): answer up to one label short of the threshold, then time the
    crossing label to the next batch seen in Label Studio."""
    from connectors.labelstudio.tool import parse_label_config

    store, ctrl = service.store, service.controller
    threshold = ctrl.min_new_labels
    pid = service.tool.project_id
    _idle(service)
    current = ctrl.current_model()
    changes = store.label_revision() - (current.label_revision if current else 0)
    need = threshold - changes
    if current is None or need < 1:
        raise RuntimeError(
            f"unexpected state: model {current}, {changes} changes; jobs "
            f"{json.dumps(service.job_status()['recent'], default=str)[-3000:]}"
        )
    batch_no, todo = _unanswered_of_latest_batch(service)
    if len(todo) < need:
        raise RuntimeError(f"batch {batch_no} has {len(todo)} unanswered items, need {need}")
    first, last = todo[: need - 1], todo[need - 1]
    its_before = len(store.iterations())
    if first:
        rep = bot.answer_pending(item_ids=first)
        if rep.annotations != len(first):
            raise RuntimeError(f"the bot answered {rep.annotations} of {len(first)}")
        wait_until(
            lambda: store.label_revision() - current.label_revision >= need - 1,
            30,
            "the first labels to be stored",
        )
    _idle(service)
    if len(store.iterations()) != its_before:
        # more label events than labels given: see the report's "early_retrains"
        events = _label_events(store, current.label_revision)
        early = store.iterations()[its_before:]
        incident = {
            "repeat": r + 1,
            "answers_given": len(first),
            "label_events": len(events),
            "events_not_insert": [
                {"item": e[1], "action": e[2], "annotation": e[4], "at": e[5]}
                for e in events
                if e[2] != "insert"
            ],
            "iterations": [
                {"number": it.number, "reason": it.info.get("train_reason")} for it in early
            ],
        }
        print(
            f"(b) repeat {r + 1}: an iteration ran before the crossing label: {len(first)} "
            f"answers made {len(events)} label events "
            f"({len(incident['events_not_insert'])} not inserts); trying again"
        )
        return {"incident": incident}
    max_task = max((int(t["id"]) for t in _tasks(client, pid)), default=0)
    known_versions = {mv.id for mv in store.model_versions()}

    # the crossing label: one annotation created through the API, timed from just before it
    config = parse_label_config(str(client.projects.get(id=pid).label_config))
    result = [
        {
            "from_name": config.choices_name,
            "to_name": config.to_name,
            "type": "choices",
            "value": {"choices": [bot.decide(last).value]},
        }
    ]
    task_id = int(bot.find_task(last)["id"])
    user = bot.user_ids[0]
    t0 = time.time()
    ann = client.annotations.create(
        id=task_id, result=result, was_cancelled=False, completed_by=user
    )
    t_created = time.time()
    ann_id = int(ann.id)

    def visible() -> tuple[float, str, list[int]] | None:
        fresh = _tasks(client, pid, after_id=max_task, fields="all")
        by_version: dict[str, list[int]] = {}
        for t in fresh:
            for v in _prediction_versions(client, t):
                if v not in known_versions:
                    by_version.setdefault(v, []).append(int(t["id"]))
        for v, ids in by_version.items():
            if len(ids) >= batch_size:
                return time.time(), v, ids
        return None

    t_visible, version, task_ids = wait_until(visible, 120, "the next batch", every=0.1)
    arrival = ingest.of(ann_id)
    _idle(service)
    it = store.iterations()[its_before]
    mv = store.get_model_version(it.model_version) if it.model_version else None
    metrics = dict(mv.metrics) if mv else {}
    tm = dict(it.timings)
    it_start, it_end = _ts(it.started_at), _ts(it.finished_at)
    if arrival is None or it_start is None or it_start < arrival[0]:
        print(
            f"(b) repeat {r + 1}: iteration {it.number} did not start after the crossing label "
            "arrived (another trigger); trying again"
        )
        return {
            "incident": {
                "repeat": r + 1,
                "iteration": it.number,
                "reason": it.info.get("train_reason"),
                "started_before_crossing_label_s": (
                    round(arrival[0] - it_start, 3) if arrival and it_start else None
                ),
            }
        }
    webhook_s = arrival[1] - t0
    train_step = tm.get("train", 0.0)
    fit = metrics.get("train_seconds") or 0.0
    run = {
        "repeat": r + 1,
        "answered_before": len(first),
        "crossing_annotation": ann_id,
        "iteration": it.number,
        "model_version": mv.id if mv else None,
        "batch_version_seen": version,
        "batch_tasks_seen": len(task_ids),
        "n_labels": mv.n_labels if mv else None,
        "total_s": round(t_visible - t0, 3),
        "annotation_create_call_s": round(t_created - t0, 3),
        "split_s": {
            "webhook_arrival": round(webhook_s, 3),
            "webhook_ingest": round(arrival[1] - arrival[0], 4),
            "wait_for_worker": round(it_start - arrival[1], 3),
            "sync": round(tm.get("sync", 0.0), 3),
            "train_fit": round(fit, 3),
            "train_evaluate": metrics.get("eval_seconds"),
            "train_save_record_other": round(
                train_step - fit - (metrics.get("eval_seconds") or 0.0), 3
            ),
            "select_score_pool": round(tm.get("select", 0.0), 3),
            "push": round(tm.get("send", 0.0), 3),
            "iteration_bookkeeping": round((it_end - it_start) - sum(tm.values()), 3)
            if it_end and it_start
            else None,
            "end_to_seen": round(t_visible - it_end, 3) if it_end else None,
        },
        "detail_s": {
            "sync_fetch_from_label_studio": _within(activity, it_start, it_end, "fetch"),
            "push_set_model_version": _within(activity, it_start, it_end, "set_model_version"),
        },
        "iteration_s": round(it_end - it_start, 3) if it_end and it_start else None,
        "test_accuracy": metrics.get("test_accuracy"),
    }
    if mv is None or version != mv.id:
        run["warning"] = f"batch seen with version {version}, iteration trained {mv}"
    sp = run["split_s"]
    print(
        f"(b) repeat {r + 1}: {run['total_s']:.2f} s from the crossing label to batch "
        f"{it.number} ({len(task_ids)} tasks, {version}) in Label Studio; webhook "
        f"{sp['webhook_arrival']} s, wait {sp['wait_for_worker']} s, sync {sp['sync']}, "
        f"fit {sp['train_fit']}, eval {sp['train_evaluate']}, select {sp['select_score_pool']}"
        f", push {sp['push']}, seen after {sp['end_to_seen']} s (sync's Label Studio fetch "
        f"{run['detail_s']['sync_fetch_from_label_studio']} s, push's set_model_version "
        f"{run['detail_s']['push_set_model_version']} s)"
    )
    return run


def bench_next_batch(
    service: Any,
    ingest: IngestLog,
    activity: Activity,
    bot: Any,
    client: Any,
    repeats: int,
    batch_size: int,
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    incidents: list[dict[str, Any]] = []
    while len(runs) < repeats and len(incidents) <= repeats:
        got = measure_next_batch(service, ingest, activity, bot, client, batch_size, len(runs))
        (incidents if "incident" in got else runs).append(got.get("incident", got))
    if len(runs) < repeats:
        raise RuntimeError(f"only {len(runs)} clean repeats; early retrains: {incidents}")
    totals = [x["total_s"] for x in runs]
    return {
        "min_new_labels": service.controller.min_new_labels,
        "batch_size": batch_size,
        "repeats": runs,
        "total_s": totals,
        "median_total_s": round(statistics.median(totals), 3),
        "early_retrains": incidents,
    }


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------


def _table(report: dict[str, Any]) -> str:
    lines = []
    a = report.get("webhooks")
    if a:
        lines.append(
            f"(a) webhooks: {a['requests']} at {a['rate_per_s']:g}/s (achieved "
            f"{a['achieved_rate_per_s']}/s), statuses {a['statuses']}"
        )
        lines.append(f"    {'':34s} {'p50':>8s} {'p95':>8s} {'p99':>8s} {'max':>8s}  (ms)")
        rows = [
            ("answer (send -> answer)", a["answer_time"]),
            ("from the scheduled instant", a["from_scheduled_time"]),
            *((f"  while {w}", p) for w, p in a["answer_time_by_activity"].items() if p["n"]),
            ("server ingest (in thread)", a["server_ingest_time"]),
            ("sender lag (sent - scheduled)", a["sender_lag"]),
        ]
        for name, p in rows:
            n = f" n={p['n']}" if "n" in p else ""
            lines.append(
                f"    {name:34s} {p['p50_ms']!s:>8s} {p['p95_ms']!s:>8s} {p['p99_ms']!s:>8s} "
                f"{p['max_ms']!s:>8s}{n}"
            )
        lines.append(
            f"    over 1 s: {a['over_1s_count']} ({100 * a['over_1s_share']:.2f} %); iterations "
            f"during the run: {len(a['iterations_during_run'])}, models trained: "
            f"{a['models_trained_during_and_after']}; polls: {len(a['polls_during_run'])}"
        )
    b = report.get("next_batch")
    if b:
        lines.append(
            f"(b) crossing label (min_new_labels {b['min_new_labels']}) -> next batch of "
            f"{b['batch_size']} visible in Label Studio, seconds:"
        )
        cols = [
            "webhook_arrival",
            "wait_for_worker",
            "sync",
            "train_fit",
            "train_evaluate",
            "train_save_record_other",
            "select_score_pool",
            "push",
            "iteration_bookkeeping",
            "end_to_seen",
        ]
        short = [
            "webhook",
            "wait",
            "sync",
            "fit",
            "eval",
            "save+",
            "select",
            "push",
            "book",
            "seen",
        ]
        lines.append("    run  total " + " ".join(f"{s:>7s}" for s in short))
        for run in b["repeats"]:
            sp = run["split_s"]
            lines.append(
                f"    {run['repeat']:>3d} {run['total_s']:6.2f} "
                + " ".join(f"{(sp[c] if sp[c] is not None else float('nan')):7.3f}" for c in cols)
            )
        lines.append(f"    median {b['median_total_s']:.2f} s")
        for inc in b["early_retrains"]:
            lines.append(
                f"    retried repeat {inc['repeat']}: a retrain came before the crossing label "
                f"({inc.get('label_events', '?')} label events for {inc.get('answers_given', '?')} "
                f"answers; {len(inc.get('events_not_insert', []))} withdraw/update events)"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    from connectors.data.datasets import load
    from connectors.labelstudio import server as lss
    from connectors.labelstudio.bot import AnnotatorBot
    from connectors.labelstudio.tool import sdk_client
    from connectors.store import SqlStore
    from loop.service.app import create_app
    from loop.service.core import LoopService
    from loop.service.process import WorkerProcess
    from loop.service.server import ServiceServer
    from loop.settings import Settings, as_environment
    from loop.wiring import LabelStudioHandle, import_labels, make_embedder

    n_events = int(round(args.rate * args.seconds))
    report: dict[str, Any] = {
        "label_studio": lss.LS_VERSION,
        "label_studio_sdk": version("label-studio-sdk"),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    t_run = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="alloop-bench-svc-") as tmp:
        root = Path(tmp)
        server = start_label_studio(root)
        store = None
        service = None
        http = None
        child = None
        try:
            cache = _cache_dir()
            t0 = time.perf_counter()
            ds = load("rotten-tomatoes", cache)
            store = SqlStore.open(f"sqlite:///{root / 'state.db'}")
            store.add_items(ds.items)
            store.set_meta("classes", list(ds.classes))
            test = ds.split("test")
            store.add_labels(import_labels({it.id: ds.gold[it.id] for it in test}))
            pool_n = len(store.pool())
            settings = Settings(
                home=root / "home",
                database_url=store.url,
                cache_dir=cache,
                model="embed-lr",
                batch_size=args.batch_size,
                initial_batch_size=n_events + 1,
                min_new_labels=args.min_new_labels,
                cold_start="random",
                refill_below=0,
                label_studio={
                    "url": server.url,
                    "token": server.token,
                    "project_title": f"alloop-bench-{uuid.uuid4().hex[:8]}",
                    "poll_seconds": args.poll_seconds,
                },
                service={"host": "127.0.0.1", "port": lss.free_port()},
            )
            embedder = make_embedder(settings)
            embedder.embed([it.text for it in ds.items])
            report["dataset"] = {
                "name": ds.name,
                "items": len(ds.items),
                "pool": pool_n,
                "test_labels": len(test),
                "cache": str(cache),
                "embeddings_missing": int(embedder.misses),
                "setup_seconds": round(time.perf_counter() - t0, 2),
            }
            del embedder
            print(
                f"dataset {ds.name}: {len(ds.items)} items, pool {pool_n}, {len(test)} held out; "
                f"{report['dataset']['embeddings_missing']} embeddings missing from {cache}"
            )
            handle = LabelStudioHandle(server.url, server.token)
            apart = args.worker == "process"
            service = LoopService.from_settings(
                settings, store=store, handle=handle, worker=not apart
            )
            ingest = IngestLog(service)
            activity = Activity()  # what the worker does (only seen when it is in this process)
            activity.wrap(service.controller, "sync", "sync")
            activity.wrap(service.controller, "train", "iteration: train")
            activity.wrap(service.tool, "send", "iteration: push")
            activity.wrap(service.tool, "fetch_labels", "fetch")
            activity.wrap(service.tool, "set_model_version", "set_model_version")
            http = ServiceServer(create_app(service), settings.service.host, settings.service.port)
            http.start()
            t0 = time.perf_counter()
            service.start()
            if apart:  # as alloop serve runs it: the worker in a child process of its own
                argv = [
                    sys.executable,
                    "-m",
                    "loop.cli",
                    "worker",
                    "--parent-pid",
                    str(os.getpid()),
                ]
                env = {**os.environ, **as_environment(settings)}
                child = WorkerProcess(argv, env).start()
                wait_until(lambda: service.worker_status()["running"], 180, "the worker process")
            _idle(service)
            first = store.queries(iteration=1)
            report["cold_start"] = {
                "tasks_pushed": len(first),
                "seconds": round(time.perf_counter() - t0, 2),
                "timings": {k: round(v, 3) for k, v in store.iterations()[0].timings.items()},
            }
            print(f"service at {service.public_url}: cold start pushed {len(first)} tasks")
            client = sdk_client(server.url, server.token, 60.0)
            pid = service.tool.project_id
            bot = AnnotatorBot(
                server.url, server.token, project_id=pid, gold=ds.gold, classes=ds.classes
            )
            report["poll_window"] = age_out_of_poll_window(service, bot, first[-1].item_id)
            task_of = {str(t["data"]["alloop_id"]): int(t["id"]) for t in _tasks(client, pid)}
            texts = {it.id: it.text for it in ds.items}
            cold = [(task_of[q.item_id], q.item_id) for q in first[:-1]]
            report["webhooks"] = bench_webhooks(
                service, ingest, activity, cold, texts, ds.gold, args.rate, args.seconds, root
            )
            report["next_batch"] = bench_next_batch(
                service, ingest, activity, bot, client, args.repeats, args.batch_size
            )
            report["webhook_stats_final"] = service.webhook_stats.as_dict()
        finally:
            if child is not None:
                child.stop(timeout=120)
            if http is not None:
                http.stop()
            if service is not None:
                service.stop(timeout=120)
            if store is not None:
                store.close()
            server.stop()
    report["run_seconds"] = round(time.perf_counter() - t_run, 1)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="webhooks per second (50)")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of webhooks (20)")
    parser.add_argument("--repeats", type=int, default=3, help="label->batch repeats (3)")
    parser.add_argument("--min-new-labels", type=int, default=20, help="retrain threshold (20)")
    parser.add_argument("--batch-size", type=int, default=20, help="items per batch (20)")
    parser.add_argument("--poll-seconds", type=float, default=10.0, help="poller period (10)")
    parser.add_argument(
        "--worker",
        choices=("process", "thread"),
        default="process",
        help="the worker in a child process (alloop serve's default) or in the web process",
    )
    parser.add_argument(
        "--json", type=Path, default=REPO / "bench" / "results" / "service.json", help="report"
    )
    parser.add_argument(
        "--send", nargs=3, metavar=("URL", "PAYLOADS", "RESULT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.send:
        url, payloads, result = args.send
        return sender_main(url, Path(payloads), Path(result), args.rate)
    if args.rate <= 0 or args.seconds <= 0 or args.repeats < 1:
        parser.error("--rate and --seconds must be > 0, --repeats >= 1")
    if args.min_new_labels < 2 or args.batch_size < args.min_new_labels:
        parser.error("--min-new-labels must be >= 2 and <= --batch-size")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    report = run(args)
    print(_table(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
