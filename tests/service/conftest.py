"""Fixtures of the service tests: a real SQLite store, the bag-of-words trainer and an in-memory
Label Studio (pure logic: tasks, annotations, the real payload shapes and the real parser).
The real Label Studio, uvicorn and model are in test_service_live.py."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from connectors.labelstudio.tool import WebhookEvent, parse_webhook
from connectors.store import SqlStore
from loop.controller import Controller
from loop.records import Item, Label, LabelRequest, LabelSnapshot
from loop.service.app import create_app
from loop.service.core import SECRET_HEADER, WEBHOOK_PATH, LoopService
from loop.settings import Settings
from tests.contracts.conftest import pg_database, store_url  # noqa: F401 (live tests' fixtures)
from tests.fakes import BowTrainer, toy_corpus
from tests.service.payloads import annotation_event, deleted_event

SOURCE = "label-studio"


class FakeLabelStudio:
    """Tasks and annotations in memory. ``fetch_labels`` answers like the real poll (the full
    current annotations of every item changed after ``since``); ``annotate``/``update``/
    ``delete`` change an annotation and return the webhook payload Label Studio would send."""

    def __init__(self, classes: Sequence[str], project_id: int = 7) -> None:
        self.classes = tuple(classes)
        self.project_id = project_id
        self.tasks: dict[str, int] = {}
        self.texts: dict[str, str] = {}
        self.annotations: dict[int, dict[str, Any]] = {}
        self.changed: dict[str, datetime] = {}
        self.sent_batches: list[list[str]] = []
        self.webhooks: list[tuple[str, dict[str, str]]] = []
        self.refreshed: list[list[str]] = []
        self.fetches = 0
        self.fail_fetch: Exception | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    # -- the LabelingTool contract ---------------------------------------------------------
    def send(self, requests: Sequence[LabelRequest]) -> None:
        with self._lock:
            new = [r for r in requests if r.item.id not in self.tasks]
            for r in new:
                self.tasks[r.item.id] = next(self._ids)
                self.texts[r.item.id] = r.item.text
            self.sent_batches.append([r.item.id for r in new])

    def fetch_labels(self, since: datetime | None) -> LabelSnapshot:
        with self._lock:
            self.fetches += 1
            if self.fail_fetch is not None:
                raise self.fail_fetch
            items = [i for i, t in self.changed.items() if since is None or t > since]
            labels = tuple(
                Label(
                    item_id=a["item"],
                    value=a["value"],
                    source=SOURCE,
                    annotation_id=str(aid),
                    annotator="1",
                    skipped=a["value"] is None,
                )
                for aid, a in sorted(self.annotations.items())
                if a["item"] in items and not a["deleted"]
            )
            cursor = max((self.changed[i] for i in items), default=None)
            return LabelSnapshot(source=SOURCE, item_ids=tuple(items), labels=labels, cursor=cursor)

    # -- what the service uses besides the contract ----------------------------------------
    def parse_webhook(self, payload: Any) -> WebhookEvent:
        return parse_webhook(payload, self.classes)

    def register_webhook(self, url: str, headers: dict[str, str] | None = None) -> int:
        with self._lock:
            hook = (url, dict(headers or {}))
            if hook not in self.webhooks:
                self.webhooks.append(hook)
            return self.webhooks.index(hook) + 1

    def refresh_predictions(self, requests: Sequence[LabelRequest]) -> None:
        with self._lock:
            self.refreshed.append([r.item.id for r in requests])

    # -- annotators --------------------------------------------------------------------------
    def _touch(self, item_id: str) -> None:
        self.changed[item_id] = datetime.now(UTC)

    def annotate(self, item_id: str, value: str | None) -> dict[str, Any]:
        with self._lock:
            task = self.tasks.setdefault(item_id, next(self._ids))
            aid = 1000 + len(self.annotations)
            self.annotations[aid] = {"item": item_id, "value": value, "deleted": False}
            self._touch(item_id)
        return annotation_event(
            project_id=self.project_id,
            task_id=task,
            item_id=item_id,
            annotation_id=aid,
            value=value,
        )

    def update(self, annotation_id: int, value: str) -> dict[str, Any]:
        with self._lock:
            a = self.annotations[annotation_id]
            a["value"] = value
            self._touch(a["item"])
            task = self.tasks[a["item"]]
        return annotation_event(
            project_id=self.project_id,
            task_id=task,
            item_id=a["item"],
            annotation_id=annotation_id,
            value=value,
            action="ANNOTATION_UPDATED",
        )

    def delete(self, annotation_id: int) -> dict[str, Any]:
        with self._lock:
            a = self.annotations[annotation_id]
            a["deleted"] = True
            self._touch(a["item"])
        return deleted_event(project_id=self.project_id, annotation_ids=[annotation_id])

    def sent(self) -> list[str]:
        return [i for batch in self.sent_batches for i in batch]

    def unanswered(self) -> list[str]:
        answered = {a["item"] for a in self.annotations.values() if not a["deleted"]}
        return [i for i in self.sent() if i not in answered]


class GatedTrainer(BowTrainer):
    """The bag-of-words trainer, recording when each training ran; ``hold()`` makes the next
    training wait until ``release()`` (a job that is "still training")."""

    def __init__(self) -> None:
        super().__init__()
        self.intervals: list[tuple[float, float]] = []
        self.entered = threading.Event()
        self._gate = threading.Event()
        self._gate.set()
        self._lock = threading.Lock()

    def hold(self) -> None:
        self.entered.clear()
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def train(self, texts, labels, *, classes, seed, progress=None):  # type: ignore[no-untyped-def]
        t0 = time.monotonic()
        self.entered.set()
        if progress is not None:
            with progress.task("training", total=1) as advance:
                self._gate.wait(30)
                advance(1)
        else:
            self._gate.wait(30)
        try:
            return super().train(texts, labels, classes=classes, seed=seed)
        finally:
            with self._lock:
                self.intervals.append((t0, time.monotonic()))


def wait_until(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Env:
    store: SqlStore
    tool: FakeLabelStudio
    trainer: GatedTrainer
    controller: Controller
    service: LoopService
    client: TestClient
    gold: dict[str, str]
    settings: Settings
    extra: list[Any] = field(default_factory=list)

    @property
    def token(self) -> str:
        return self.service.secrets.api_token

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def hook(self, payload: Any) -> Any:
        return self.client.post(
            WEBHOOK_PATH,
            json=payload,
            headers={SECRET_HEADER: self.service.secrets.webhook_secret},
        )

    def idle(self, timeout: float = 10.0) -> None:
        """Wait until the worker has nothing pending and no job runs."""

        def quiet() -> bool:
            js = self.service.job_status()
            return (
                js["running"] is None and not js["worker_busy"] and not any(js["pending"].values())
            )

        wait_until(quiet, timeout, "the worker to become idle")
        time.sleep(0.05)
        wait_until(quiet, timeout, "the worker to become idle")


def make_settings(home: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "home": home,
        "batch_size": 5,
        "initial_batch_size": 8,
        "min_new_labels": 5,
        "cold_start": "random",
        "strategy": "margin",  # the toy trainer has no encoder for the default's embeddings
        "label_studio": {"poll_seconds": 3600.0},
        "service": {"lease_seconds": 5.0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return Settings(**base)


@pytest.fixture
def corpus() -> tuple[list[Item], dict[str, str], list[str], list[str]]:
    """Items (20 held out for test), gold labels, classes, the held-out ids."""
    rows, classes = toy_corpus(40)
    rng = np.random.default_rng(1)
    test_ids = sorted(rng.choice([r[0] for r in rows], size=20, replace=False))
    items = [Item(id=i, text=t, split="test" if i in test_ids else "train") for i, t, _ in rows]
    return items, {i: y for i, _, y in rows}, classes, list(test_ids)


@pytest.fixture
def make_env(tmp_path: Path, corpus: Any) -> Iterator[Callable[..., Env]]:
    """``make_env(start=False, db=None, tool=None, worker=True, **settings)``: a service over a
    store (a fresh SQLite file, or ``db`` to share one), seeded with the corpus; ``worker=False``
    makes it a front whose worker runs elsewhere."""
    items, gold, classes, test_ids = corpus
    made: list[Env] = []

    def make(
        *,
        start: bool = False,
        db: str | None = None,
        tool: FakeLabelStudio | None = None,
        home: Path | None = None,
        worker: bool = True,
        **settings_overrides: Any,
    ) -> Env:
        n = len(made)
        home = home or tmp_path / f"home{n}"
        settings = make_settings(home, **settings_overrides)
        store = SqlStore.open(db or f"sqlite:///{tmp_path / f'state{n}.db'}")
        store.add_items(items)
        store.set_meta("classes", classes)
        store.add_labels(
            [
                Label(item_id=i, value=gold[i], source="import", annotation_id=f"import:{i}")
                for i in test_ids
            ]
        )
        tool = tool or FakeLabelStudio(classes)
        trainer = GatedTrainer()
        ctrl = Controller(
            store,
            trainer,
            tool,
            classes=classes,
            models_dir=home / "models",
            strategy=settings.strategy,
            batch_size=settings.batch_size,
            initial_batch_size=settings.initial_batch_size,
            min_new_labels=settings.min_new_labels,
            cold_start=settings.cold_start,
            eval_sample_size=settings.eval_sample_size,
            promotion=settings.promotion,
            seed=3,
        )
        service = LoopService(store, ctrl, tool, settings, lease_retry_seconds=0.1, worker=worker)
        client = TestClient(create_app(service))
        env = Env(store, tool, trainer, ctrl, service, client, gold, settings)
        made.append(env)
        if start:
            service.start()
        return env

    yield make
    for env in made:
        env.trainer.release()
        for gate in env.extra:  # e.g. a held slow-lane trainer
            if isinstance(gate, threading.Event):
                gate.set()
        env.service.stop(timeout=10)
        env.client.close()
        env.store.close()
