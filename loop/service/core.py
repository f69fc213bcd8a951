"""``LoopService``: the loop running inside a long-lived process.

Threads::

    webhook requests --(store.add_labels, signal)--+
                                                   v
    poller: controller.sync() every poll_seconds --> worker: ONE job at a time, under the
            (and at once after a deletion)                   database lease "iteration":
                                                             run / resume an iteration, or the
    API / schedule: trigger(...) ----------------------->    nightly retrain
                                                      (lease renewed by a heartbeat thread)

A watcher thread (every ``WATCH_SECONDS``) takes the job requests other processes wrote into
the database (``Store.request_job``), notices labels written by other processes (the label
revision), writes the running jobs' progress into their ``jobs`` records and reports the
worker's state (meta ``worker``). That is how the worker runs apart from the web process:
``LoopService(..., worker=False)`` is a front (HTTP only: webhooks store labels, triggers
become job requests, status comes from the database) and ``alloop worker`` (or the child
process ``alloop serve`` starts) runs the worker threads.

Requests only write and signal: training never happens inside a request. Signals set flags
(a burst of events is one pending check, not a queue), so events arriving while a job runs
lead to at most one more job. The worker takes the lease before any job; when another process
holds it the work stays pending and is retried every ``lease_retry_seconds``. A lease whose
holder is a process of this machine that no longer runs is taken over at once; any other
holder's lease is waited out (it expires ``lease_seconds`` after its last renewal).

The controller and the labeling tool are not thread-safe: the worker and the poller use them
under one lock (the poller skips a tick while a job runs; the job syncs itself). Webhook
requests touch only the store (thread-safe) and the tool's pure payload parser.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loop import lease
from loop.contracts import Store
from loop.errors import AlloopError, ConfigError, DataError, StoreError
from loop.lease import holder_id
from loop.progress import SILENT, Progress
from loop.records import LabelRejection, LabelWriteResult
from loop.service.status import iteration_info, model_info, project_status
from loop.service.tokens import ServiceSecrets, load_or_create_secrets
from loop.settings import Settings

if TYPE_CHECKING:
    from loop.controller import Controller, IterationReport
    from loop.wiring import LabelStudioHandle

log = logging.getLogger("alloop.service")

LEASE_NAME = lease.ITERATION
SLOW_LEASE_NAME = lease.SLOW_LANE  # one slow-lane training at a time across processes
WEBHOOK_PATH = "/webhooks/label-studio"
SECRET_HEADER = "X-Alloop-Secret"
WEBHOOK_SOURCE = "label-studio"  # the Label object's source for Label Studio answers
JOB_HISTORY = 50
MAX_FAILURE_BACKOFF_S = 300.0
WATCH_SECONDS = 0.5  # the watcher's tick: job requests, label revision, progress, heartbeat
HEARTBEAT_SECONDS = 2.0  # the worker's report (meta "worker") and its jobs' records, at least
WORKER_STALE_SECONDS = 15.0  # a report or running job record older than this: its worker is gone
WORKER_META = "worker"


def _now() -> datetime:
    return datetime.now(UTC)


def _plain(value: Any) -> Any:
    """``value`` as plain JSON for a job record (NaN and infinity become None)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


# -- progress and jobs -----------------------------------------------------------------------
class JobProgress:
    """A :class:`loop.progress.Progress` that records the tasks in flight (description, total,
    done) for the status API and forwards to ``inner``. Thread-safe."""

    def __init__(self, inner: Progress = SILENT) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._tasks: list[dict[str, Any]] = []

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        entry: dict[str, Any] = {"description": description, "total": total, "done": 0}
        entry["_t0"] = time.monotonic()
        with self._lock:
            self._tasks.append(entry)
        try:
            with self._inner.task(description, total) as inner_advance:

                def advance(n: int = 1) -> None:
                    with self._lock:
                        entry["done"] += n
                    inner_advance(n)

                yield advance
        finally:
            with self._lock:
                self._tasks.remove(entry)

    def snapshot(self) -> list[dict[str, Any]]:
        """The tasks in flight, outermost first, with seconds elapsed."""
        now = time.monotonic()
        with self._lock:
            return [
                {
                    "description": e["description"],
                    "total": e["total"],
                    "done": e["done"],
                    "seconds": round(now - e["_t0"], 3),
                }
                for e in self._tasks
            ]


@dataclass
class JobRecord:
    """One job the worker ran: ``kind`` iteration | retrain | nightly."""

    id: int
    kind: str
    sources: tuple[str, ...]
    reason: str
    started_at: datetime
    finished_at: datetime | None = None
    status: str = "running"  # running | done | failed
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    lease_lost: bool = False

    def as_dict(self) -> dict[str, Any]:
        end = self.finished_at or _now()
        return {
            "id": self.id,
            "kind": self.kind,
            "sources": list(self.sources),
            "reason": self.reason,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "seconds": round((end - self.started_at).total_seconds(), 3),
            "result": self.result,
            "error": self.error,
            "lease_lost": self.lease_lost,
        }


@dataclass
class _Pending:
    """Work waiting for the worker; flags, so repeated signals coalesce."""

    check: bool = False  # labels arrived / a poll ran / start: is an iteration due?
    iteration: bool = False  # an iteration was asked for (API, ML backend)
    force_train: bool = False  # ... with a retrain (skipped when the model is up to date)
    push: bool = False  # ... pushing a new batch even when no label arrived
    nightly: bool = False
    refresh: bool = False  # another lane's model took over: refresh the waiting tasks
    # who asked, per kind ("check" | "iteration" | "nightly"), in order
    sources: dict[str, dict[str, None]] = field(
        default_factory=lambda: {"check": {}, "iteration": {}, "nightly": {}}
    )

    def any(self) -> bool:
        return self.check or self.iteration or self.nightly or self.refresh

    def flags(self) -> dict[str, bool]:
        """What is waiting, as the status API shows it."""
        return {
            "check": self.check,
            "iteration": self.iteration,
            "force_train": self.force_train,
            "nightly": self.nightly,
            "refresh": self.refresh,
        }

    def merge(self, other: _Pending) -> None:
        self.check |= other.check
        self.iteration |= other.iteration
        self.force_train |= other.force_train
        self.push |= other.push
        self.nightly |= other.nightly
        self.refresh |= other.refresh
        for kind, who in other.sources.items():
            self.sources[kind].update(who)

    def who(self, *kinds: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for k in kinds for s in self.sources[k]))


@dataclass(frozen=True)
class TriggerResult:
    """What became of a trigger: ``started`` (the idle worker takes it now), ``queued`` (runs
    after the job in progress), ``coalesced`` (the same request was already waiting: one job
    serves both), ``up-to-date`` (a retrain with nothing new to learn: no job) or ``blocked``
    (another process holds the iteration lease; retried until it is free)."""

    kind: str
    state: str
    detail: str
    running: str | None = None
    lease_holder: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "state": self.state,
            "detail": self.detail,
            "running": self.running,
            "lease_holder": self.lease_holder,
        }


@dataclass(frozen=True)
class WebhookResult:
    """What one webhook did: labels written (as ``Store.add_labels`` counts them), answers
    recorded as rejected, whether a reconciliation poll was requested, or why it was ignored."""

    action: str
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    reconcile: bool = False
    ignored: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "inserted": self.inserted,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "reconcile": self.reconcile,
            "ignored": self.ignored,
        }


class UnknownItemError(DataError):
    """A webhook names an item this loop's store does not hold."""


class _WebhookStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.inserted = 0
        self.updated = 0
        self.rejected = 0
        self.ignored = 0
        self.failed = 0
        self.unauthorized = 0
        self.max_seconds = 0.0
        self.total_seconds = 0.0
        self.last_at: datetime | None = None

    def record(self, seconds: float, result: WebhookResult | None) -> None:
        with self._lock:
            self.received += 1
            self.total_seconds += seconds
            self.max_seconds = max(self.max_seconds, seconds)
            self.last_at = _now()
            if result is None:
                self.failed += 1
                return
            self.inserted += result.inserted
            self.updated += result.updated
            self.rejected += result.rejected
            self.ignored += result.ignored is not None

    def refused(self) -> None:
        with self._lock:
            self.unauthorized += 1

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "received": self.received,
                "labels_inserted": self.inserted,
                "labels_updated": self.updated,
                "rejected_answers": self.rejected,
                "ignored": self.ignored,
                "failed": self.failed,
                "unauthorized": self.unauthorized,
                "max_seconds": round(self.max_seconds, 4),
                "mean_seconds": round(self.total_seconds / self.received, 4)
                if self.received
                else None,
                "last_at": self.last_at.isoformat() if self.last_at else None,
            }


# -- the service -----------------------------------------------------------------------------
class LoopService:
    """Owns the store, the controller, the labeling tool and the background threads.

    Build it from parts (tests, embedding) or with :meth:`from_settings`. ``start()`` registers
    the Label Studio webhook (when the tool can) and starts the poller, the worker and the
    nightly schedule; ``stop()`` ends them, waiting for a running job up to ``timeout``.
    """

    def __init__(
        self,
        store: Store,
        controller: Controller,
        tool: Any,
        settings: Settings,
        *,
        secrets: ServiceSecrets | None = None,
        refill_below: int | None = None,
        lease_retry_seconds: float | None = None,
        holder: str | None = None,
        owns_store: bool = False,
        worker: bool = True,
    ) -> None:
        self.store = store
        # False: a front; the worker runs in another process (alloop worker) and is reached
        # through the database
        self.has_worker = worker
        self.controller = controller
        self.tool = tool
        self.settings = settings
        svc = settings.service
        self.secrets = secrets or load_or_create_secrets(
            settings.home,
            svc.api_token,
            svc.webhook_secret,
            svc.ml_password,
            ml_user=svc.ml_user,
        )
        if refill_below is None:
            refill_below = (
                settings.refill_below
                if settings.refill_below is not None
                else max(1, settings.batch_size // 2)
            )
        self.refill_below = refill_below
        self.poll_seconds = settings.label_studio.poll_seconds
        self.lease_seconds = svc.lease_seconds
        self.lease_retry_seconds = (
            lease_retry_seconds
            if lease_retry_seconds is not None
            else min(5.0, self.lease_seconds / 4)
        )
        self.holder = holder or holder_id()
        self.progress = JobProgress(getattr(controller, "progress", SILENT))
        controller.progress = self.progress  # the status API shows what the running job does
        self._owns_store = owns_store

        self._cv = threading.Condition()
        self._pending = _Pending()
        self._stop = threading.Event()
        self._reconcile = threading.Event()
        self._ctrl_lock = threading.Lock()  # controller + tool: one thread at a time
        self._worker: threading.Thread | None = None
        self._poller: threading.Thread | None = None
        self._scheduler: Any = None
        self._job_ids = 0
        self._running: JobRecord | None = None
        self._busy = False  # the worker is handling work (deciding, waiting for the lease, running)
        self._jobs: deque[JobRecord] = deque(maxlen=JOB_HISTORY)
        self._blocked_by: str | None = None
        self._backoff_until = 0.0
        self._failures = 0
        self._last_poll: dict[str, Any] | None = None
        self.webhook_stats = _WebhookStats()
        # the slow lane (settings.slow_model): its own thread, lease, progress and job records
        self._slow: threading.Thread | None = None
        self._slow_kick = threading.Event()
        self._slow_progress = JobProgress()
        self._slow_running: JobRecord | None = None
        self._slow_jobs: deque[JobRecord] = deque(maxlen=JOB_HISTORY)
        self._slow_backoff_until = 0.0
        self._slow_failures = 0
        self.webhook_id: int | None = None
        self.ml_backend: int | None = None  # Label Studio's id of the ML backend connection
        self._watcher: threading.Thread | None = None
        self._started = False
        self._seen_revision: int | None = None
        self._reported: tuple[Any, float] = (None, 0.0)  # (what was reported, when)
        self._flushed: dict[int, tuple[Any, float]] = {}  # job id -> (progress, when)
        self._started_at = _now()

    # -- construction from settings ------------------------------------------------------
    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        store: Store | None = None,
        handle: LabelStudioHandle | None = None,
        say: Callable[[str], None] = print,
        progress: Progress = SILENT,
        worker: bool = True,
    ) -> LoopService:
        """Build every part through :mod:`loop.wiring`: the store (when none is given; the
        service then closes it on ``stop``), the class list, Label Studio (``handle``, or the
        configured / local one), the tool on the project, and the controller. ``worker=False``:
        a front (see :class:`LoopService`)."""
        from loop.wiring import (
            build_controller,
            label_studio,
            make_labelstudio_tool,
            open_store,
            project_classes,
        )

        owns = store is None
        store = store if store is not None else open_store(settings)
        try:
            classes = project_classes(settings, store)
            handle = handle if handle is not None else label_studio(settings, say=say)
            tool = make_labelstudio_tool(settings, handle, classes)
            controller = build_controller(settings, store, tool, classes, progress=progress)
        except BaseException:
            if owns:
                store.close()
            raise
        return cls(store, controller, tool, settings, owns_store=owns, worker=worker)

    # -- addresses -----------------------------------------------------------------------
    @property
    def public_url(self) -> str:
        """How Label Studio reaches this service (``service.public_url``, else host:port)."""
        svc = self.settings.service
        if svc.public_url:
            return svc.public_url.rstrip("/")
        host = "127.0.0.1" if svc.host in ("0.0.0.0", "::", "") else svc.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{svc.port}"

    @property
    def webhook_url(self) -> str:
        return self.public_url + WEBHOOK_PATH

    @property
    def ml_url(self) -> str:
        return self.public_url + "/ml"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, *, register_webhook: bool = True, connect_ml_backend: bool = True) -> None:
        """Register the webhook (idempotent) and, with ``service.connect_ml_backend``, connect
        ``<public_url>/ml`` as the project's ML backend with basic auth (the HTTP server must
        already listen: Label Studio calls it while connecting); then start the poller (it
        polls at once: events lost while the service was down are ingested), the worker (it
        resumes an unfinished iteration) and the nightly schedule."""
        if self._worker is not None or self._watcher is not None:
            raise ConfigError("the service is already started.", "call stop() first.")
        register = getattr(self.tool, "register_webhook", None)
        if register_webhook and register is not None:
            self.webhook_id = register(
                self.webhook_url, {SECRET_HEADER: self.secrets.webhook_secret}
            )
            log.info("Label Studio sends annotation events to %s", self.webhook_url)
        self.ml_backend = None
        connect = getattr(self.tool, "connect_ml_backend", None)
        if connect_ml_backend and self.settings.service.connect_ml_backend and connect is not None:
            try:
                self.ml_backend = connect(
                    self.ml_url, self.secrets.ml_user, self.secrets.ml_password
                )
                log.info("connected %s as the project's ML backend (basic auth)", self.ml_url)
            except AlloopError as err:  # the loop works without it: say so and go on
                log.warning("could not connect the ML backend %s: %s", self.ml_url, err)
        self._stop.clear()
        if not self.has_worker:  # a front: the worker runs in another process
            self._started = True
            return
        self._interrupt_orphaned_jobs()
        self._seen_revision = None
        self._signal(check=True, source="start")
        self._watcher = threading.Thread(target=self._watch_loop, name="alloop-watch", daemon=True)
        self._watcher.start()
        self._worker = threading.Thread(target=self._worker_loop, name="alloop-worker", daemon=True)
        self._poller = threading.Thread(target=self._poll_loop, name="alloop-poller", daemon=True)
        self._worker.start()
        self._poller.start()
        if getattr(self.controller, "slow_trainer", None) is not None:
            self._slow_kick.set()
            self._slow = threading.Thread(target=self._slow_loop, name="alloop-slow", daemon=True)
            self._slow.start()
        self._start_scheduler()

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop the schedule, the poller and the worker (a running job finishes first, up to
        ``timeout`` seconds; an unfinished iteration resumes on the next start) and give up the
        lease. Returns whether every thread ended."""
        self._stop.set()
        self._reconcile.set()
        self._slow_kick.set()
        with self._cv:
            self._cv.notify_all()
        if self._scheduler is not None:
            from apscheduler.schedulers import SchedulerNotRunningError

            with contextlib.suppress(SchedulerNotRunningError):
                self._scheduler.shutdown(wait=False)
            self._scheduler = None
        deadline = time.monotonic() + timeout
        ended = True
        for t in (self._poller, self._worker, self._slow, self._watcher):
            if t is not None:
                t.join(max(0.0, deadline - time.monotonic()))
                ended &= not t.is_alive()
        if ended:
            was_worker = self._watcher is not None
            self._worker = self._poller = self._slow = self._watcher = None
            self._started = False
            with contextlib.suppress(AlloopError):
                self.store.release_lease(LEASE_NAME, self.holder)
            if was_worker:
                with contextlib.suppress(AlloopError):
                    self._report(force=True, stopped=True)
            if self._owns_store:
                self.store.close()
        else:
            running = self._running
            log.warning(
                "stopped waiting for the running %s job after %.0f s; it resumes on the next start",
                running.kind if running else "background",
                timeout,
            )
        return ended

    @property
    def running(self) -> bool:
        """Whether a worker runs: this process's threads, or (a front) a worker process that
        reported within ``WORKER_STALE_SECONDS``."""
        if self.has_worker:
            return self._worker is not None and self._worker.is_alive()
        return self._worker_report() is not None

    # -- signals and triggers ------------------------------------------------------------
    def _signal(
        self,
        *,
        check: bool = False,
        iteration: bool = False,
        force_train: bool = False,
        nightly: bool = False,
        push: bool = False,
        source: str,
    ) -> bool:
        """Add work for the worker; returns whether the same kind of work was already waiting."""
        with self._cv:
            p = self._pending
            if nightly:
                already = p.nightly
            elif iteration:
                already = (
                    p.iteration and (p.force_train or not force_train) and (p.push or not push)
                )
            else:
                already = p.check
            p.check |= check
            p.iteration |= iteration
            p.force_train |= force_train
            p.push |= push
            p.nightly |= nightly
            kind = "nightly" if nightly else "iteration" if iteration else "check"
            p.sources[kind][source] = None
            self._cv.notify_all()
        return already

    def notify_labels(self, source: str = "labels") -> None:
        """Labels arrived: the worker checks whether an iteration is due (a worker process
        notices the new label revision by itself)."""
        if self.has_worker:
            self._signal(check=True, source=source)

    def request_reconcile(self) -> None:
        """Have the poller sync at once (e.g. an annotation was deleted); a front asks the
        worker process through the database."""
        if self.has_worker:
            self._reconcile.set()
        else:
            self.store.request_job("reconcile", "webhook")

    def trigger(self, kind: str, source: str, *, push: bool = False) -> TriggerResult:
        """Ask for a job: ``iteration`` (train if due, select, push), ``retrain`` (an
        iteration with a retrain) or ``nightly`` (retrain on all labels, promote if not
        worse, refresh waiting tasks). Returns at once; see :class:`TriggerResult`.

        A retrain learns only from something new: when the current model is already trained on
        the current labels with the current settings it is ``up-to-date`` and no job runs
        (also for a retrain that waited behind a job that trained on the same labels). It
        pushes a new batch only when labels changed since the previous model, the queue needs
        a refill, or ``push`` asks for one."""
        if kind not in ("iteration", "retrain", "nightly"):
            raise ConfigError(f"unknown job kind {kind!r}.", "use iteration, retrain or nightly.")
        if not self.has_worker:
            return self._request_apart(kind, source, push)
        running = self._running
        if kind == "retrain" and not push and running is None:
            with self._cv:
                waiting = self._pending.iteration
            fresh = None if waiting else self._up_to_date(kind, source)
            if fresh is not None:
                return fresh
        coalesced = self._signal(
            iteration=kind != "nightly",
            force_train=kind == "retrain",
            push=push,
            nightly=kind == "nightly",
            source=source,
        )
        holder = self._lease_holder()
        other = holder if holder is not None and holder != self.holder else None
        if coalesced:
            state, detail = (
                "coalesced",
                f"a {kind} request was already waiting; one job serves both",
            )
        elif running is not None:
            state, detail = "queued", f"runs after the {running.kind} job in progress"
        elif other is not None:
            state, detail = (
                "blocked",
                (
                    f"another process ({other}) holds the {LEASE_NAME!r} lease; retried every "
                    f"{self.lease_retry_seconds:g} s until it is free"
                ),
            )
        elif not self.running:
            state, detail = "queued", "the service's worker is not running; runs once it starts"
        else:
            state, detail = "started", f"the worker starts the {kind} now"
        log.info("%s requested by %s: %s", kind, source, state)
        return TriggerResult(kind, state, detail, running.kind if running else None, other)

    def _up_to_date(self, kind: str, source: str) -> TriggerResult | None:
        """The answer to a retrain with nothing new to learn, else None."""
        fresh, why = self.controller.up_to_date()
        if not fresh:
            return None
        log.info("retrain requested by %s: up to date (%s)", source, why)
        return TriggerResult(
            kind,
            "up-to-date",
            f"{why}: nothing new to learn, no retrain and no new batch (POST "
            "/api/retrain?push=true pushes a batch from the current model)",
        )

    def _request_apart(self, kind: str, source: str, push: bool) -> TriggerResult:
        """``trigger`` of a front: the request goes into the database for the worker process
        (which takes it within ``WATCH_SECONDS``); the answer says what it will find."""
        waiting = self.store.job_requests()
        running = next(iter(self._store_jobs("fast", running=True)), None)
        if kind == "retrain" and not push and running is None:
            asked = any(r.kind in ("iteration", "retrain") for r in waiting)
            fresh = None if asked else self._up_to_date(kind, source)
            if fresh is not None:
                return fresh
        same = [r for r in waiting if r.kind == kind and (r.push or not push)]
        if not same:
            self.store.request_job(kind, source, push=push)
        report = self._worker_report()
        holder = self._lease_holder()
        worker_holder = report.get("holder") if report else None
        other = holder if holder is not None and holder != worker_holder else None
        if same:
            state, detail = (
                "coalesced",
                f"a {kind} request was already waiting; one job serves both",
            )
        elif running is not None:
            state, detail = "queued", f"runs after the {running.kind} job in progress"
        elif report is None:
            state, detail = (
                "queued",
                "no worker process is running (start alloop worker); it runs once one starts",
            )
        elif other is not None:
            state, detail = (
                "blocked",
                f"another process ({other}) holds the {LEASE_NAME!r} lease; the worker retries "
                "until it is free",
            )
        else:
            state, detail = "started", f"the worker process takes the {kind} now"
        log.info("%s requested by %s: %s (through the database)", kind, source, state)
        return TriggerResult(kind, state, detail, running.kind if running else None, other)

    def request_retrain(self, reason: str) -> dict[str, Any]:
        """A forced retrain in the background (the ML backend's "Start training")."""
        return self.trigger("retrain", reason).as_dict()

    def scheduled_nightly(self) -> TriggerResult:
        """What the nightly schedule runs: ask the worker for the nightly job."""
        log.info("nightly schedule fired")
        return self.trigger("nightly", "schedule")

    def _lease_holder(self) -> str | None:
        try:
            lease = self.store.lease(LEASE_NAME)
        except AlloopError:
            return None
        return lease[0] if lease else None

    # -- webhooks ------------------------------------------------------------------------
    def ingest_webhook(self, payload: Any) -> WebhookResult:
        """Store what a Label Studio webhook carries, through the same idempotent writes as
        polling: ``add_labels`` for a created or updated annotation (a repeated event changes
        nothing), ``record_rejections`` for an answer that cannot be a label; a deletion asks
        the poller to reconcile at once. Then signal the worker. No training here.

        Raises DataError (wrong shape), UnknownItemError (an item not in the store; nothing
        written) or StoreError (the database)."""
        t0 = time.perf_counter()
        result: WebhookResult | None = None
        try:
            result = self._ingest(payload)
            return result
        finally:
            self.webhook_stats.record(time.perf_counter() - t0, result)

    def _ingest(self, payload: Any) -> WebhookResult:
        event = self.tool.parse_webhook(payload)
        project = getattr(self.tool, "project_id", None)
        if event.project_id is not None and project is not None and event.project_id != project:
            return WebhookResult(event.action, ignored=f"event of project {event.project_id}")
        if not (event.labels or event.rejections or event.deleted_annotation_ids):
            return WebhookResult(event.action, ignored=f"nothing to store for {event.action}")
        written = LabelWriteResult()
        if event.labels:
            try:
                written = self.store.add_labels(event.labels)
            except StoreError:
                self._raise_if_unknown([lab.item_id for lab in event.labels])
                raise
        rejections = [
            LabelRejection(r.item_id, WEBHOOK_SOURCE, r.annotation_id, r.reason)
            for r in event.rejections
            if r.item_id is not None
        ]
        if rejections:
            try:
                self.store.record_rejections(rejections)
            except StoreError:
                self._raise_if_unknown([r.item_id for r in rejections])
                raise
        reconcile = bool(event.deleted_annotation_ids)
        if reconcile:
            self.request_reconcile()
        if written.inserted or written.updated or written.withdrawn or rejections:
            self.notify_labels("webhook")
        return WebhookResult(
            event.action,
            inserted=written.inserted,
            updated=written.updated,
            unchanged=written.unchanged,
            rejected=len(event.rejections),
            reconcile=reconcile,
        )

    def _raise_if_unknown(self, item_ids: list[str]) -> None:
        """After a failed write: UnknownItemError when an item is not in the store (the write
        failed for that reason), else return (the caller re-raises the store's error)."""
        missing = []
        for item_id in dict.fromkeys(item_ids):
            try:
                self.store.get_items([item_id])
            except StoreError:
                missing.append(item_id)
        if missing and len(missing) == len(set(item_ids)):
            self.store.count_items()  # raises StoreError itself when the database is down
        if missing:
            raise UnknownItemError(
                f"the webhook names item(s) {missing[:5]} that this loop's store does not hold; "
                "nothing was stored.",
                "point the webhook only at the project this loop pushes to (tasks need the "
                "alloop_id of an ingested item), or ingest those items first.",
            )

    # -- the poller ----------------------------------------------------------------------
    def poll_once(self) -> LabelWriteResult | None:
        """Reconcile with the labeling tool now (``controller.sync()``); None when a job holds
        the controller (the job syncs itself)."""
        if not self._ctrl_lock.acquire(blocking=False):
            return None
        t0 = time.perf_counter()
        try:
            res = self.controller.sync()
        except AlloopError as err:
            self._last_poll = {"at": _now().isoformat(), "error": str(err)}
            log.warning("polling the labeling tool failed: %s", err)
            raise
        finally:
            self._ctrl_lock.release()
        self._last_poll = {
            "at": _now().isoformat(),
            "seconds": round(time.perf_counter() - t0, 3),
            "inserted": res.inserted,
            "updated": res.updated,
            "withdrawn": res.withdrawn,
        }
        if res.inserted or res.updated or res.withdrawn:
            log.info(
                "poll: %d new, %d changed, %d withdrawn label(s)",
                res.inserted,
                res.updated,
                res.withdrawn,
            )
        return res

    def _poll_loop(self) -> None:
        next_at = 0.0  # poll at once: catch up on events lost while the service was down
        while not self._stop.is_set():
            self._reconcile.wait(max(0.0, next_at - time.monotonic()))
            if self._stop.is_set():
                return
            self._reconcile.clear()
            try:
                res = self.poll_once()
            except AlloopError:
                res = LabelWriteResult()  # logged; tried again next tick
            except Exception:  # noqa: BLE001 - a background thread must survive to retry
                log.exception("polling the labeling tool failed")
                res = LabelWriteResult()
            if res is None:  # a job holds the controller: retry shortly
                next_at = time.monotonic() + min(1.0, self.poll_seconds)
                continue
            next_at = time.monotonic() + self.poll_seconds
            self._signal(check=True, source="poll")

    # -- the worker ----------------------------------------------------------------------
    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                while not self._pending.any() and not self._stop.is_set():
                    self._cv.wait()
                if self._stop.is_set():
                    return
                work, self._pending = self._pending, _Pending()
                self._busy = True
            try:
                outcome = self.run_pending(work)
            except AlloopError as err:  # e.g. the database is unreachable: retried on next signal
                log.error("the worker could not look for work: %s", err)
                outcome = "idle"
            except Exception:  # noqa: BLE001 - keep the worker alive to retry
                log.exception("the worker failed")
                outcome = "idle"
            finally:
                with self._cv:
                    self._busy = False
            if outcome == "blocked":
                with self._cv:
                    work.merge(self._pending)
                    self._pending = work
                self._stop.wait(self.lease_retry_seconds)

    def run_pending(self, work: _Pending | None = None) -> str:
        """Run what is pending (taken from the queue when ``work`` is None) in this thread:
        ``"ran"`` when a job ran, ``"idle"`` when nothing was due, ``"blocked"`` when another
        process holds the lease (the work is not consumed when taken here)."""
        own = work is None
        if work is None:
            with self._cv:
                work, self._pending = self._pending, _Pending()
        if not work.any():
            return "idle"
        plan_iteration = bool(work.iteration or work.check)
        refresh = work.refresh and not work.nightly  # the nightly job refreshes by itself
        if plan_iteration and not work.nightly and not refresh:
            due, _, _ = self._iteration_due(work)
            if not due:
                return "idle"
        with self._ctrl_lock:
            if not self._take_lease():
                if own:
                    with self._cv:
                        work.merge(self._pending)
                        self._pending = work
                return "blocked"
            heartbeat = self._heartbeat(LEASE_NAME, lambda: self._running)
            ran = False
            try:
                if work.nightly:
                    self._run_job("nightly", work, "requested", self._nightly)
                    ran = True
                if refresh:
                    self._run_job(
                        "refresh",
                        work,
                        "the slow lane's model took over",
                        self._refresh_waiting,
                    )
                    ran = True
                if plan_iteration:
                    due, force, reason = self._iteration_due(work)  # again, under the lease
                    if due:
                        kind = "retrain" if force else "iteration"
                        push = work.push
                        self._run_job(kind, work, reason, lambda: self._iterate(force, push))
                        ran = True
            finally:
                heartbeat.stop()
                lease.release(self.store, LEASE_NAME, self.holder)
        return "ran" if ran else "idle"

    def _iteration_due(self, work: _Pending) -> tuple[bool, bool, str]:
        """Whether to run an iteration now: ``(due, force_train, reason)``: asked for, else
        the controller's rule (:meth:`Controller.iteration_due`, shared with `alloop run`)
        unless a failed job is backing off."""
        if work.iteration:
            return True, work.force_train, "requested by " + ", ".join(work.who("iteration"))
        if time.monotonic() < self._backoff_until:
            return False, False, "waiting after a failed job"
        due, why = self.controller.iteration_due(self.refill_below)
        return due, False, why

    def _acquire(self, name: str) -> bool:
        """Take the lease ``name`` (free, expired, or held by a dead process of this machine)."""
        return lease.acquire(self.store, name, self.holder, self.lease_seconds)

    def _heartbeat(self, name: str, job: Callable[[], JobRecord | None]) -> lease.Heartbeat:
        """Renews ``name`` while a job runs; a lost lease is marked on the running job."""

        def lost() -> None:
            running = job()
            if running is not None:
                running.lease_lost = True

        return lease.Heartbeat(self.store, name, self.holder, self.lease_seconds, on_lost=lost)

    def _take_lease(self) -> bool:
        got = self._acquire(LEASE_NAME)
        if not got:
            holder = self._lease_holder()
            if holder != self._blocked_by:
                log.info("the %r lease is held by %s: waiting", LEASE_NAME, holder)
            self._blocked_by = holder
        else:
            self._blocked_by = None
        return got

    def _run_job(
        self, kind: str, work: _Pending, reason: str, fn: Callable[[], dict[str, Any]]
    ) -> JobRecord:
        who = work.who("nightly") if kind == "nightly" else work.who("iteration", "check")
        job = JobRecord(self._record_start("fast", kind, who, reason), kind, who, reason, _now())
        self._jobs.append(job)
        self._running = job
        log.info("%s started (%s)", kind, reason)
        try:
            job.result = fn()
            job.status = "done"
            why = self.controller.stopped()
            if why:
                log.warning("the loop has stopped pushing batches (stop_when): %s", why)
            self._failures = 0
            self._backoff_until = 0.0
            log.info("%s done: %s", kind, job.result.get("summary", ""))
        except Exception as err:  # noqa: BLE001 - recorded, logged, retried later
            job.status = "failed"
            job.error = str(err) if isinstance(err, AlloopError) else f"{type(err).__name__}: {err}"
            self._failures += 1
            delay = min(MAX_FAILURE_BACKOFF_S, self.poll_seconds * 2 ** (self._failures - 1))
            self._backoff_until = time.monotonic() + delay
            if isinstance(err, AlloopError):
                log.error("%s failed: %s (retried in %.0f s)", kind, err, delay)
            else:
                log.exception("%s failed (retried in %.0f s)", kind, delay)
        finally:
            job.finished_at = _now()
            self._running = None
            self._record_end(job)
            self._slow_kick.set()  # new labels may make the slow lane due
        return job

    # -- job records, the watcher and the worker's report ---------------------------------
    def _record_start(self, lane: str, kind: str, who: tuple[str, ...], reason: str) -> int:
        """The job's record in the store (its id); a local id when the store cannot take it
        (the job itself then reports the store's error)."""
        try:
            return self.store.start_job(lane, kind, self.holder, who, reason).id
        except AlloopError as err:
            log.warning("could not record the %s job: %s", kind, err)
            self._job_ids -= 1
            return self._job_ids

    def _record_end(self, job: JobRecord) -> None:
        self._flushed.pop(job.id, None)
        if job.id < 0:
            return
        try:
            self.store.update_job(
                job.id,
                status=job.status if job.status in ("done", "failed") else "failed",
                result=_plain(job.result),
                error=job.error,
                lease_lost=job.lease_lost,
            )
        except AlloopError as err:
            log.warning("could not record the end of the %s job: %s", job.kind, err)

    def _interrupt_orphaned_jobs(self) -> None:
        """Mark running job records whose process died (or stopped reporting) interrupted."""
        try:
            running = self.store.jobs(status="running", limit=None)
        except AlloopError as err:
            log.warning("could not read the job records: %s", err)
            return
        cutoff = _now().timestamp() - WORKER_STALE_SECONDS
        for j in running:
            seen = (j.updated_at or j.started_at).timestamp()
            if j.holder != self.holder and (lease.holder_is_stale(j.holder) or seen < cutoff):
                with contextlib.suppress(AlloopError):
                    self.store.update_job(
                        j.id, status="interrupted", error="its process ended while it ran"
                    )
                log.info(
                    "job %d (%s of %s) was interrupted by its process's end", j.id, j.kind, j.holder
                )

    def _watch_loop(self) -> None:
        failing = False
        while not self._stop.wait(WATCH_SECONDS):
            try:
                self.watch_once()
                failing = False
            except AlloopError as err:  # e.g. the database is down: tried again next tick
                if not failing:
                    log.warning("the watcher could not read the database: %s", err)
                failing = True
            except Exception:  # noqa: BLE001 - a background thread must survive to retry
                log.exception("the watcher failed")

    def watch_once(self) -> None:
        """One watcher tick: take the job requests written by other processes, notice labels
        they wrote, write the running jobs' progress, report the worker's state."""
        for req in self.store.take_job_requests(self.holder):
            log.info("%s requested by %s (through the database)", req.kind, req.source)
            if req.kind == "reconcile":
                self._reconcile.set()
            elif req.kind == "nightly":
                self._signal(nightly=True, source=req.source)
            else:
                self._signal(
                    iteration=True,
                    force_train=req.kind == "retrain",
                    push=req.push,
                    source=req.source,
                )
        revision = self.store.label_revision()
        if self._seen_revision is not None and revision != self._seen_revision:
            self._signal(check=True, source="labels")
        self._seen_revision = revision
        for job, progress in (
            (self._running, self.progress),
            (self._slow_running, self._slow_progress),
        ):
            if job is not None and job.id >= 0:
                self._flush(job, progress.snapshot())
        self._report()

    def _flush(self, job: JobRecord, snapshot: list[dict[str, Any]]) -> None:
        """Write a running job's progress when its steps moved (or every HEARTBEAT_SECONDS,
        which also shows the job is alive)."""
        shape = [(p["description"], p["total"], p["done"]) for p in snapshot]
        last, at = self._flushed.get(job.id, (None, 0.0))
        if shape == last and time.monotonic() - at < HEARTBEAT_SECONDS:
            return
        self.store.update_job(job.id, progress=_plain(snapshot))
        self._flushed[job.id] = (shape, time.monotonic())

    def _report(self, *, force: bool = False, stopped: bool = False) -> None:
        """The worker's state in meta ``worker`` (for fronts in other processes), written when
        it changed or every HEARTBEAT_SECONDS."""
        with self._cv:
            pending = self._pending.flags()
            busy = self._busy
        running, slow = self._running, self._slow_running
        state = {
            "busy": busy,
            "pending": pending,
            "running": running.id if running else None,
            "slow_running": slow.id if slow else None,
            "last_poll": self._last_poll,
            "stopped": stopped,
        }
        last, at = self._reported
        if not force and state == last and time.monotonic() - at < HEARTBEAT_SECONDS:
            return
        sched = self.schedule_status()
        self.store.set_meta(
            WORKER_META,
            _plain(
                {
                    **state,
                    "holder": self.holder,
                    "at": _now().isoformat(),
                    "started_at": self._started_at.isoformat(),
                    "slow_thread": self._slow is not None and self._slow.is_alive(),
                    "next_nightly": sched["next_run"],
                }
            ),
        )
        self._reported = (state, time.monotonic())

    def _worker_report(self) -> dict[str, Any] | None:
        """The worker process's last report, when it is recent and it has not stopped."""
        try:
            report = self.store.get_meta(WORKER_META)
        except AlloopError:
            return None
        if not isinstance(report, dict) or report.get("stopped"):
            return None
        try:
            age = _now().timestamp() - datetime.fromisoformat(report["at"]).timestamp()
        except (KeyError, TypeError, ValueError):
            return None
        return {**report, "seconds_ago": round(age, 3)} if age < WORKER_STALE_SECONDS else None

    def _store_jobs(self, lane: str, *, running: bool = False, limit: int = 10) -> list[Any]:
        """Job records of ``lane`` (newest ``limit``; ``running``: those running now, newest
        first). A running record its worker stopped updating is not running."""
        cutoff = _now().timestamp() - WORKER_STALE_SECONDS
        if running:
            rows = self.store.jobs(lane=lane, status="running", limit=limit)
            return [
                j for j in reversed(rows) if (j.updated_at or j.started_at).timestamp() >= cutoff
            ]
        return self.store.jobs(lane=lane, limit=limit)

    def _jobs_from_store(self, lane: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        now = _now()
        running = next(iter(self._store_jobs(lane, running=True)), None)
        recent = [j.as_dict(now) for j in self._store_jobs(lane)]
        shown = (
            {**running.as_dict(now), "progress": [dict(p) for p in running.progress]}
            if running
            else None
        )
        return shown, recent

    # -- the slow lane -------------------------------------------------------------------
    def _slow_loop(self) -> None:
        """Trains the slow lane's model whenever enough labels arrived since its last one,
        apart from the worker: the fast lane keeps training, selecting and pushing batches
        meanwhile. Woken after every job and every ``poll_seconds``."""
        while not self._stop.is_set():
            self._slow_kick.wait(self.poll_seconds)
            self._slow_kick.clear()
            if self._stop.is_set():
                return
            if time.monotonic() < self._slow_backoff_until:
                continue
            try:
                self.run_slow_lane()
            except AlloopError as err:  # e.g. the database is unreachable: retried later
                log.error("the slow lane could not look for work: %s", err)
            except Exception:  # noqa: BLE001 - keep the thread alive to retry
                log.exception("the slow lane failed")

    def run_slow_lane(self) -> JobRecord | None:
        """Train the slow lane's model now when it is due (in this thread); the job record, or
        None when not due or another process holds the slow lane's lease."""
        ctrl = self.controller
        due, why = ctrl.slow_due()
        if not due:
            return None
        store = self.store
        if not self._acquire(SLOW_LEASE_NAME):
            return None
        heartbeat = self._heartbeat(SLOW_LEASE_NAME, lambda: self._slow_running)
        job_id = self._record_start("slow", "slow-train", ("slow-lane",), why)
        job = JobRecord(job_id, "slow-train", ("slow-lane",), why, _now())
        self._slow_jobs.append(job)
        self._slow_running = job
        log.info("slow lane: training %s (%s)", getattr(ctrl.slow_trainer, "name", "?"), why)
        try:
            mv = ctrl.train_slow(progress=self._slow_progress)
            promo = mv.metrics.get("promotion", {})
            job.result = {
                "model_version": mv.id,
                "trainer": mv.trainer,
                "n_labels": mv.n_labels,
                "status": mv.status,
                "promotion": dict(promo),
                "train_seconds": mv.metrics.get("train_seconds"),
                "pool_embed_seconds": mv.metrics.get("pool_embed_seconds"),
                "summary": f"{mv.id} ({mv.trainer}, {mv.n_labels} labels): {mv.status} "
                f"({promo.get('reason', '')})",
            }
            job.status = "done"
            self._slow_failures = 0
            log.info("slow lane: %s", job.result["summary"])
            if mv.status == "promoted":  # the waiting tasks get its predictions
                with self._cv:
                    self._pending.refresh = True
                self._signal(check=True, source="slow-lane")
        except Exception as err:  # noqa: BLE001 - recorded, logged, retried later
            job.status = "failed"
            job.error = str(err) if isinstance(err, AlloopError) else f"{type(err).__name__}: {err}"
            self._slow_failures += 1
            delay = min(MAX_FAILURE_BACKOFF_S, self.poll_seconds * 2 ** (self._slow_failures - 1))
            self._slow_backoff_until = time.monotonic() + delay
            log.error("slow lane failed: %s (retried in %.0f s)", job.error, delay)
        finally:
            job.finished_at = _now()
            self._slow_running = None
            heartbeat.stop()
            self._record_end(job)
            lease.release(store, SLOW_LEASE_NAME, self.holder)
        return job

    def slow_lane_status(self) -> dict[str, Any] | None:
        """The slow lane: its model, whether it is due, the running training (with progress)
        and the recent ones; None without a slow lane."""
        ctrl = self.controller
        slow = getattr(ctrl, "slow_trainer", None)
        if slow is None:
            return None
        try:
            due, why = ctrl.slow_due()
        except AlloopError as err:
            due, why = False, str(err)
        if not self.has_worker:
            shown, recent = self._jobs_from_store("slow")
            report = self._worker_report()
            thread = bool(report and report.get("slow_thread"))
        else:
            running = self._slow_running
            shown = (
                {**running.as_dict(), "progress": self._slow_progress.snapshot()}
                if running
                else None
            )
            recent = [j.as_dict() for j in list(self._slow_jobs)[-10:]]
            thread = self._slow is not None and self._slow.is_alive()
        return {
            "model": slow.name,
            "min_new_labels": ctrl.slow_min_new_labels,
            "due": due,
            "reason": why,
            "thread_running": thread,
            "running": shown,
            "recent": recent,
        }

    def _iterate(self, force: bool, push: bool = False) -> dict[str, Any]:
        """One iteration (a resumed one first). ``force``: a retrain, unless the model is up to
        date; its batch is pushed only when labels changed, the queue needs a refill or
        ``push`` asks (else the iteration selects nothing)."""
        from loop.runner import describe

        ctrl = self.controller
        notes: list[str] = []
        rep = None
        if self.store.unfinished_iteration() is not None:
            rep = ctrl.run_iteration()
        reports = [rep] if rep is not None else []
        if force or rep is None:
            k: int | None = None
            train = force
            if force:
                fresh, why = ctrl.up_to_date()
                train = not fresh
                current = ctrl.current_model()
                new_labels = current is None or self.store.label_revision() > current.label_revision
                refill = len(ctrl.waiting()) < self.refill_below and bool(self.store.count_pool())
                if not (push or new_labels or refill):
                    k = 0
                    notes.append(
                        "no label arrived since the current model: no new batch (POST "
                        "/api/retrain?push=true pushes one)"
                    )
                if fresh:
                    notes.append(f"no retrain: {why}")
            reports.append(ctrl.run_iteration(force_train=train, k=k))
        return {
            "iterations": [_report_dict(r) for r in reports],
            "summary": "; ".join([*(describe(r) for r in reports), *notes]),
        }

    def _refresh_waiting(self) -> dict[str, Any]:
        ctrl = self.controller
        current = ctrl.current_model()
        n = ctrl.refresh_waiting(current) if current is not None else 0
        who = current.id if current is not None else "no model"
        return {"refreshed": n, "summary": f"{n} waiting task(s) now show {who}'s predictions"}

    def _nightly(self) -> dict[str, Any]:
        out = dict(self.controller.nightly())
        if out.get("trained"):
            promo = out.get("promotion", {})
            out["summary"] = (
                f"retrained {out['model_version']} on all labels: {out['status']} "
                f"({promo.get('reason', '')}); refreshed {out.get('refreshed', 0)} waiting task(s)"
            )
        else:
            out["summary"] = f"no retrain: {out.get('reason', '')}"
        return out

    # -- status --------------------------------------------------------------------------
    def job_status(self) -> dict[str, Any]:
        """The running job (with the progress of its current step) and the recent ones."""
        if not self.has_worker:
            return self._job_status_apart()
        running = self._running
        with self._cv:
            pending = self._pending.flags()
            busy = self._busy
        return {
            "running": (
                {**running.as_dict(), "progress": self.progress.snapshot()} if running else None
            ),
            "worker_busy": busy,
            "pending": pending,
            "recent": [j.as_dict() for j in list(self._jobs)[-10:]],
        }

    def _job_status_apart(self) -> dict[str, Any]:
        """``job_status`` of a front: the worker process's records and report, and the
        requests it has not taken yet."""
        running, recent = self._jobs_from_store("fast")
        report = self._worker_report()
        pending = dict.fromkeys(("check", "iteration", "force_train", "nightly", "refresh"), False)
        if report:
            pending.update(
                {k: bool(v) for k, v in report.get("pending", {}).items() if k in pending}
            )
        for req in self.store.job_requests():
            if req.kind in ("iteration", "retrain"):
                pending["iteration"] = True
                pending["force_train"] |= req.kind == "retrain"
            elif req.kind == "nightly":
                pending["nightly"] = True
        return {
            "running": running,
            "worker_busy": bool(report and report.get("busy")),
            "pending": pending,
            "recent": recent,
        }

    def worker_status(self) -> dict[str, Any]:
        """Where the worker runs: in this process, or apart (its holder id and last report)."""
        if self.has_worker:
            return {"apart": False, "holder": self.holder, "running": self.running}
        report = self._worker_report()
        return {
            "apart": True,
            "holder": report.get("holder") if report else None,
            "running": report is not None,
            "reported_seconds_ago": report.get("seconds_ago") if report else None,
            "started_at": report.get("started_at") if report else None,
        }

    def lease_status(self) -> dict[str, Any]:
        lease = self.store.lease(LEASE_NAME)
        return {
            "name": LEASE_NAME,
            "holder": lease[0] if lease else None,
            "expires_at": lease[1].isoformat() if lease else None,
            "ours": bool(lease and lease[0] == self.holder),
            "this_process": self.holder,
        }

    def schedule_status(self) -> dict[str, Any]:
        svc = self.settings.service
        next_run = None
        if not self.has_worker:
            report = self._worker_report()
            next_run = report.get("next_nightly") if report else None
        elif self._scheduler is not None:
            job = self._scheduler.get_job("nightly")
            if job is not None and job.next_run_time is not None:
                next_run = job.next_run_time.isoformat()
        return {"nightly": svc.nightly, "timezone": svc.timezone, "next_run": next_run}

    def status(self) -> dict[str, Any]:
        """``project_status`` plus the current model, the job in progress, the lease, webhook
        and poll figures and the schedule (what ``GET /api/status`` returns)."""
        info = project_status(self.store, database=getattr(self.store, "url", None))
        current = self.controller.current_model()
        info["current_model"] = model_info(current) if current else None
        its = self.store.iterations()
        info["last_iteration"] = iteration_info(its[-1]) if its else None
        info["slow_lane"] = self.slow_lane_status()
        info["waiting_for_answers"] = len(self.controller.waiting())
        info["stopping"] = self.controller.stopping_status() if current else None
        info["job"] = self.job_status()
        info["lease"] = self.lease_status()
        info["webhooks"] = self.webhook_stats.as_dict()
        last_poll = self._last_poll
        if not self.has_worker:
            report = self._worker_report()
            last_poll = report.get("last_poll") if report else None
        info["poll"] = {"every_seconds": self.poll_seconds, "last": last_poll}
        info["worker"] = self.worker_status()
        info["schedule"] = self.schedule_status()
        info["service"] = {
            "public_url": self.public_url,
            "webhook_url": self.webhook_url,
            "worker_running": self.running,
            "refill_below": self.refill_below,
            "min_new_labels": self.controller.min_new_labels,
        }
        return info

    # -- the nightly schedule ------------------------------------------------------------
    def _start_scheduler(self) -> None:
        svc = self.settings.service
        if svc.nightly is None:
            return
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger

        hh, _, mm = svc.nightly.partition(":")
        sched = BackgroundScheduler(timezone=svc.timezone)
        sched.add_job(
            self.scheduled_nightly,
            CronTrigger(hour=int(hh), minute=int(mm), timezone=svc.timezone),
            id="nightly",
            name="nightly retrain",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3600,
        )
        sched.start()
        self._scheduler = sched
        job = sched.get_job("nightly")
        log.info("nightly retrain at %s %s; next %s", svc.nightly, svc.timezone, job.next_run_time)


def _report_dict(rep: IterationReport) -> dict[str, Any]:
    return {
        "number": rep.number,
        "trained": rep.trained,
        "model_version": rep.model_version,
        "n_labels": rep.n_labels,
        "metrics": dict(rep.metrics),
        "selected": rep.selected,
        "sent": rep.sent,
        "resumed_from": rep.resumed_from,
        "timings": {k: round(v, 4) for k, v in rep.timings.items()},
    }
