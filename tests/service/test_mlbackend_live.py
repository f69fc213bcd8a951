"""The real Label Studio 1.23.2 calling the ML-backend router, served by uvicorn on loopback,
over the real controller (SQLite store, embed-lr on the offline MiniLM).

Checks what Label Studio actually sends and stores: health and setup on connect, predictions
for every task in one request with the current model version and the config's choices, no
second request for tasks that already have the current version, refreshed predictions after a
new model, the training button reaching ``request_retrain``, project events acknowledged."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from connectors.labelstudio.tool import label_config
from connectors.store import SqlStore
from loop.controller import Controller
from loop.oracle import OracleTool
from loop.records import Item, Label, LabelRequest
from loop.service.errors import install_error_handlers
from loop.service.mlbackend import UNTRAINED, ml_backend_router
from tests.models.models_testdata import (
    HELDOUT_NEGATIVE,
    HELDOUT_POSITIVE,
    NEGATIVE,
    POSITIVE,
)

pytestmark = [pytest.mark.labelstudio, pytest.mark.slow]

CLASSES = ("neg", "pos")
ML_AUTH = ("alloop", "ml-password-" + uuid.uuid4().hex)


@dataclass
class Call:
    method: str
    path: str
    body: Any
    status: int = 0


@dataclass
class Recorder:
    """An ASGI wrapper that records every request (method, path, JSON body, status)."""

    app: Any
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        call = Call(scope["method"], scope["path"], body)
        with self.lock:
            self.calls.append(call)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        async def capture(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                call.status = message["status"]
            await send(message)

        await self.app(scope, replay, capture)

    def of(self, method: str, path: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method and c.path == path]


class StubService:
    """The real controller plus a retrain request that only records (the real service runs it
    in the background)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.retrains: list[str] = []

    def request_retrain(self, reason: str) -> dict[str, Any]:
        self.retrains.append(reason)
        return {"accepted": True}


@pytest.fixture
def backend(tmp_path: Path, cache_dir: Path) -> Iterator[tuple[str, StubService, Recorder]]:
    from connectors.models import make_trainer

    store = SqlStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    pos, neg = POSITIVE, NEGATIVE
    store.add_items(
        [Item(id=f"pos-{i}", text=t) for i, t in enumerate(pos)]
        + [Item(id=f"neg-{i}", text=t) for i, t in enumerate(neg)]
    )
    store.add_labels(
        [
            Label(item_id=f"{y}-{i}", value=y, source="import", annotation_id=f"import:{y}-{i}")
            for i in range(6)
            for y in CLASSES
        ]
    )
    ctrl = Controller(
        store,
        make_trainer("embed-lr", cache_dir=cache_dir / "embeddings"),
        OracleTool({}),
        classes=CLASSES,
        models_dir=tmp_path / "models",
        cold_start="random",
    )
    service = StubService(ctrl)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(ml_backend_router(service, lambda u, p: (u, p) == ML_AUTH), prefix="/ml")
    recorder = Recorder(app)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(recorder, log_level="warning", lifespan="off", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the ML backend app did not start on loopback within 20 s")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/ml", service, recorder
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        store.close()


def _predictions(client: Any, task_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    return {
        tid: [p.model_dump(mode="json") for p in client.predictions.list(task=tid)]
        for tid in task_ids
    }


def _retrieve(client: Any, pid: int) -> None:
    client.actions.create(
        id="retrieve_tasks_predictions",
        project=pid,
        selected_items={"all": True, "excluded": []},
    )


def test_label_studio_calls_the_backend_and_stores_its_predictions(
    ls_server: Any,
    backend: tuple[str, StubService, Recorder],
) -> None:
    from label_studio_sdk import LabelStudio

    url, service, rec = backend
    ctrl = service.controller
    client = LabelStudio(base_url=ls_server.url, api_key=ls_server.token, timeout=120)
    cfg = label_config(CLASSES)
    project = client.projects.create(title=f"alloop-ml-{uuid.uuid4().hex[:8]}", label_config=cfg)
    pid = int(project.id)
    texts = HELDOUT_POSITIVE[:4] + HELDOUT_NEGATIVE[:4]
    imported = client.projects.import_tasks(
        id=pid,
        request=[{"text": t, "alloop_id": f"h{i}"} for i, t in enumerate(texts)]
        + [{"text": "", "alloop_id": "empty"}],
        return_task_ids=True,
    )
    task_ids = [int(t) for t in imported.task_ids]
    assert len(task_ids) == len(texts) + 1
    by_text = {}
    for t in client.tasks.list(project=pid, fields="all", page_size=100):
        by_text[int(t.id)] = t.data["text"]

    # without credentials Label Studio cannot connect it
    with pytest.raises(Exception, match="authentication"):
        client.ml.create(url=url, project=pid, title="alloop")
    assert {c.status for c in rec.of("GET", "/ml/health")} == {401}
    assert not client.ml.list(project=pid)
    # connecting with basic auth (as alloop serve does): health, then setup with the project
    ml = client.ml.create(
        url=url,
        project=pid,
        title="alloop",
        auth_method="BASIC_AUTH",
        basic_auth_user=ML_AUTH[0],
        basic_auth_pass=ML_AUTH[1],
    )
    assert rec.of("GET", "/ml/health")[-1].status == 200
    setup = rec.of("POST", "/ml/setup")[-1]
    assert setup.status == 200
    assert str(setup.body["project"]).split(".")[0] == str(pid)
    assert setup.body["schema"] == cfg
    assert client.ml.get(id=ml.id).model_version == UNTRAINED
    hooks = client.webhooks.list(project=str(pid))
    assert [h.url for h in hooks] == [f"{url}/webhook"]  # Label Studio adds it by itself

    # before any model: one untrained, empty prediction per task
    _retrieve(client, pid)
    predict_calls = rec.of("POST", "/ml/predict")
    assert len(predict_calls) == 1 and predict_calls[0].status == 200
    assert sorted(t["id"] for t in predict_calls[0].body["tasks"]) == sorted(task_ids)
    stored = _predictions(client, task_ids)
    assert all(
        [(p["model_version"], p["result"]) for p in ps] == [(UNTRAINED, [])]
        for ps in stored.values()
    )

    # a model: Label Studio sees the new version in setup and asks for every task again
    mv = ctrl.train(None)
    clf = ctrl.load_classifier(mv)
    _retrieve(client, pid)
    predict_calls = rec.of("POST", "/ml/predict")
    assert len(predict_calls) == 2
    assert len(predict_calls[1].body["tasks"]) == len(task_ids)  # one batch
    stored = _predictions(client, task_ids)
    proba = clf.predict_proba(texts)
    for tid in task_ids:
        mine = [p for p in stored[tid] if p["model_version"] == mv.id]
        assert len(mine) == 1, stored[tid]
        pred = mine[0]
        text = by_text[tid]
        if not text:
            assert pred["result"] == []
            continue
        row = proba[texts.index(text)]
        expected = CLASSES[int(np.argmax(row))]
        assert pred["result"][0]["from_name"] == "label"
        assert pred["result"][0]["to_name"] == "text"
        assert pred["result"][0]["type"] == "choices"
        assert pred["result"][0]["value"]["choices"] == [expected]
        assert pred["score"] == pytest.approx(float(row.max()), abs=1e-6)
    # the held-out sentences are easy: the model gets at least 6 of 8 right
    got = [CLASSES[int(np.argmax(r))] for r in proba]
    truth = ["pos"] * 4 + ["neg"] * 4
    assert sum(g == t for g, t in zip(got, truth, strict=True)) >= 6

    # nothing new to predict: Label Studio does not call predict again
    _retrieve(client, pid)
    assert len(rec.of("POST", "/ml/predict")) == 2

    # a newer model: predictions are refreshed with its version
    ctrl.store.add_labels(
        [
            Label(item_id=f"{y}-{i}", value=y, source="import", annotation_id=f"import:{y}-{i}")
            for i in range(6, 20)
            for y in CLASSES
        ]
    )
    mv2 = ctrl.train(None)
    assert mv2.id != mv.id
    _retrieve(client, pid)
    assert len(rec.of("POST", "/ml/predict")) == 3
    stored = _predictions(client, task_ids)
    assert all(any(p["model_version"] == mv2.id for p in ps) for ps in stored.values())
    assert client.ml.get(id=ml.id).model_version == mv2.id

    # the "Start training" button reaches request_retrain (never trains in the request)
    n_versions = len(ctrl.store.model_versions())
    client.ml.train(id=ml.id)
    if rec.of("POST", "/ml/train"):  # Label Studio run with the webhook-training flag off
        assert service.retrains == ["Label Studio: Start training"]
    else:
        assert service.retrains == [f"Label Studio: Start training (project {pid})"]
    assert len(ctrl.store.model_versions()) == n_versions

    # project events reach the webhook Label Studio added, WITHOUT the basic auth: refused
    client.annotations.create(
        id=task_ids[0],
        result=[
            {
                "from_name": "label",
                "to_name": "text",
                "type": "choices",
                "value": {"choices": ["pos"]},
            }
        ],
    )
    events = [c for c in rec.of("POST", "/ml/webhook") if c.body.get("action") != "START_TRAINING"]
    assert any(c.body.get("action") == "ANNOTATION_CREATED" for c in events)
    assert all(c.status == 401 for c in events)
    assert len(service.retrains) == 1

    # versions as Label Studio lists them
    versions = client.ml.list_model_versions(id=ml.id)
    assert list(getattr(versions, "versions", None) or []) == [mv2.id, mv.id]


def test_the_connector_connects_with_basic_auth_and_drops_the_unauthenticated_webhook(
    ls_server: Any, make_tool: Any, backend: tuple[str, StubService, Recorder]
) -> None:
    """What alloop serve does at start: ``connect_ml_backend`` (idempotent), then the issue's
    repro: ``POST /ml/train`` with a garbage body and no credentials is 401, and Label Studio's
    task count does not change."""
    import httpx

    url, service, rec = backend
    tool = make_tool(CLASSES)
    pid = tool.ensure_project()
    tool.send(  # a task with a prediction of v0007-kept: the project shows that version
        [
            LabelRequest(
                item=Item(id="t1", text=HELDOUT_POSITIVE[0]),
                kind="query",
                score=0.5,
                prediction="pos",
                confidence=0.9,
                model_version="v0007-kept",
            )
        ]
    )
    assert client_version(tool, pid) == "v0007-kept"
    first = tool.connect_ml_backend(url, *ML_AUTH)
    assert tool.connect_ml_backend(url, *ML_AUTH) == first  # idempotent on the URL
    client = tool.client
    (backend_row,) = client.ml.list(project=pid)
    assert backend_row.auth_method == "BASIC_AUTH" and backend_row.basic_auth_user == ML_AUTH[0]
    assert [h.url for h in client.webhooks.list(project=str(pid))] == []  # the auto hook is gone
    assert client_version(tool, pid) == "v0007-kept"  # pre-annotations stay visible
    assert all(c.status == 200 for c in rec.of("POST", "/ml/setup"))
    tasks_before = client.projects.get(id=pid).task_number

    r = httpx.post(f"{url}/train", content=b"garbage")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    r = httpx.post(f"{url}/webhook", json={"action": "START_TRAINING", "project": {"id": pid}})
    assert r.status_code == 401
    assert service.retrains == []
    assert client.projects.get(id=pid).task_number == tasks_before
    # Label Studio's own training button, with the credentials: reaches the service
    client.ml.train(id=first)
    assert len(service.retrains) == 1


def client_version(tool: Any, pid: int) -> str | None:
    return tool.client.projects.get(id=pid).model_version
