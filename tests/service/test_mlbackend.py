"""The ML-backend router on a tiny app: the real SQLite store, the real controller, a small
bag-of-words trainer (pure logic). Label Studio itself calls it in test_mlbackend_live.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from connectors.store import SqlStore
from loop.controller import Controller
from loop.errors import ConfigError
from loop.oracle import OracleTool
from loop.records import Item, Label
from loop.service.errors import install_error_handlers
from loop.service.mlbackend import (
    UNTRAINED,
    ChoicesTarget,
    choices_target,
    ml_backend_router,
    predict_tasks,
)
from tests.fakes import BowTrainer, toy_corpus

SECRET = "0123456789abcdef0123456789abcdef01234567"
ML_AUTH = ("alloop", "ml-password-0123456789")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def config(
    classes: tuple[str, ...] = ("neg", "pos"), name: str = "label", text: str = "text"
) -> str:
    choices = "".join(f'<Choice value="{c}"/>' for c in classes)
    return (
        f'<View><Text name="{text}" value="${text}"/>'
        f'<Choices name="{name}" toName="{text}" choice="single">{choices}</Choices></View>'
    )


class Service:
    """The two things the router needs; records retrain requests."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.retrains: list[str] = []
        self.refuse: Exception | None = None

    def request_retrain(self, reason: str) -> dict[str, Any]:
        if self.refuse is not None:
            raise self.refuse
        self.retrains.append(reason)
        return {"accepted": True, "queued": len(self.retrains)}


@pytest.fixture
def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    rows, classes = toy_corpus(15)
    store = SqlStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    store.add_items([Item(id=i, text=t) for i, t, _ in rows])
    labeled = rows[::3]  # both classes, a third of the items
    store.add_labels(
        [
            Label(item_id=i, value=y, source="import", annotation_id=f"import:{i}")
            for i, _, y in labeled
        ]
    )
    ctrl = Controller(
        store,
        BowTrainer(),
        OracleTool({}),
        classes=classes,
        models_dir=tmp_path / "models",
        cold_start="random",
    )
    service = Service(ctrl)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(ml_backend_router(service, lambda u, p: (u, p) == ML_AUTH), prefix="/ml")
    with TestClient(app, headers={"Authorization": basic(*ML_AUTH)}) as client:
        yield client, service, ctrl, store
    store.close()


def task(i: int, text: str | None, key: str = "text") -> dict[str, Any]:
    data: dict[str, Any] = {"alloop_id": f"x{i}"}
    if text is not None:
        data[key] = text
    return {"id": i, "data": data, "project": 1, "annotations": [], "predictions": []}


def predict_body(tasks: list[dict[str, Any]], label_config: str | None = None) -> dict[str, Any]:
    return {
        "tasks": tasks,
        "project": "1.1700000000",
        "label_config": label_config if label_config is not None else config(),
        "params": {"login": "user", "password": SECRET, "context": None},
    }


TEXTS = [
    "a wonderful, moving film and brilliant acting",
    "a dull, boring mess with terrible jokes",
    "delightful and beautifully made, superb",
    "tedious, flat and lifeless, awful script",
]


# -- health / setup / versions -------------------------------------------------------------
def test_health_is_up_without_a_model_and_says_what_it_is(env) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, _ = env
    r = client.get("/ml/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "UP"
    assert body["model_class"] == "alloop"
    assert body["classes"] == list(ctrl.classes)


def test_setup_reports_untrained_then_the_current_version(env) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, _ = env
    body = {
        "project": "3.1712345678",
        "schema": config(),
        "hostname": "http://localhost:8080",
        "access_token": SECRET,
        "extra_params": None,
    }
    r = client.post("/ml/setup", json=body)
    assert r.status_code == 200, r.text
    assert r.json() == {"model_version": UNTRAINED}
    mv = ctrl.train(None)
    r = client.post("/ml/setup", json=body)
    assert r.json() == {"model_version": mv.id}
    assert SECRET not in r.text


def test_setup_follows_promotion_and_rollback(env) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, store = env
    first = ctrl.train(None)
    store.add_labels(
        [Label(item_id="pos-001", value="pos", source="import", annotation_id="extra:1")]
    )
    second = ctrl.train(None)
    assert first.id != second.id
    assert client.post("/ml/setup", json={"schema": config()}).json()["model_version"] == second.id
    ctrl.rollback()
    assert client.post("/ml/setup", json={"schema": config()}).json()["model_version"] == first.id
    assert client.get("/ml/versions").json() == {"versions": [second.id, first.id]}


def test_setup_refuses_a_project_whose_choices_share_no_class(env) -> None:  # type: ignore[no-untyped-def]
    client, _, _, _ = env
    r = client.post(
        "/ml/setup",
        json={"schema": config(("cat", "dog")), "access_token": SECRET, "project": "1.2"},
    )
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "cat" in detail and "neg" in detail and "Fix:" in detail
    assert SECRET not in r.text


def test_malformed_setup_is_422_and_never_echoes_the_token(env) -> None:  # type: ignore[no-untyped-def]
    client, _, _, _ = env
    r = client.post(
        "/ml/setup", json={"project": ["not", "an", "id"], "schema": 5, "access_token": SECRET}
    )
    assert r.status_code == 422
    locs = {tuple(e["loc"]) for e in r.json()["errors"]}
    assert ("body", "schema") in locs and "body.schema" in r.json()["detail"]
    assert SECRET not in r.text


def test_versions_empty_before_training(env) -> None:  # type: ignore[no-untyped-def]
    client, _, _, _ = env
    assert client.get("/ml/versions").json() == {"versions": []}


# -- predict -----------------------------------------------------------------------------------
def test_predict_without_a_model_answers_one_untrained_item_per_task(env) -> None:  # type: ignore[no-untyped-def]
    client, _, _, _ = env
    r = client.post("/ml/predict", json=predict_body([task(1, TEXTS[0]), task(2, TEXTS[1])]))
    assert r.status_code == 200, r.text
    assert r.json() == {"results": [{"result": [], "score": None, "model_version": UNTRAINED}] * 2}


def test_predict_gives_the_models_top_class_in_task_order(env) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, _ = env
    mv = ctrl.train(None)
    clf = ctrl.trainer.load(Path(mv.path))
    tasks = [task(i, t) for i, t in enumerate(TEXTS)]
    r = client.post("/ml/predict", json=predict_body(tasks))
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    proba = clf.predict_proba(TEXTS)
    expected = [clf.classes[j] for j in np.argmax(proba, axis=1)]
    assert len(results) == len(TEXTS)
    assert [res["result"][0]["value"]["choices"] for res in results] == [[c] for c in expected]
    assert expected == ["pos", "neg", "pos", "neg"]  # the toy phrases are unambiguous
    for res, row in zip(results, proba, strict=True):
        assert res["model_version"] == mv.id
        assert res["score"] == pytest.approx(float(row.max()))
        region = res["result"][0]
        assert (region["from_name"], region["to_name"], region["type"]) == (
            "label",
            "text",
            "choices",
        )
    assert SECRET not in r.text


def test_predict_reads_names_and_text_field_from_the_config(env) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, _ = env
    ctrl.train(None)
    cfg = config(name="sentiment", text="review")
    tasks = [task(1, TEXTS[0], key="review"), task(2, TEXTS[1], key="text")]
    results = client.post("/ml/predict", json=predict_body(tasks, cfg)).json()["results"]
    region = results[0]["result"][0]
    assert (region["from_name"], region["to_name"]) == ("sentiment", "review")
    assert region["value"]["choices"] == ["pos"]
    assert results[1]["result"] == []  # that task has no "review" field: nothing to score


def test_tasks_without_text_get_empty_results_and_keep_their_place(env) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, _ = env
    mv = ctrl.train(None)
    tasks = [task(1, "   "), task(2, TEXTS[1]), task(3, None), task(4, TEXTS[0])]
    results = client.post("/ml/predict", json=predict_body(tasks)).json()["results"]
    assert [bool(r["result"]) for r in results] == [False, True, False, True]
    assert [r["model_version"] for r in results] == [mv.id] * 4
    assert results[1]["result"][0]["value"]["choices"] == ["neg"]
    assert results[3]["result"][0]["value"]["choices"] == ["pos"]
    assert results[0]["score"] is None


def test_predict_picks_only_among_the_configs_choices(env) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, _ = env
    mv = ctrl.train(None)
    clf = ctrl.trainer.load(Path(mv.path))
    cfg = config(("neg", "maybe"))  # "pos" is not offered by this project
    results = client.post("/ml/predict", json=predict_body([task(1, TEXTS[0])], cfg)).json()[
        "results"
    ]
    assert results[0]["result"][0]["value"]["choices"] == ["neg"]
    p_neg = clf.predict_proba([TEXTS[0]])[0, clf.classes.index("neg")]
    assert results[0]["score"] == pytest.approx(float(p_neg))
    none = client.post(
        "/ml/predict", json=predict_body([task(1, TEXTS[0])], config(("cat", "dog")))
    ).json()["results"]
    assert none == [{"result": [], "score": None, "model_version": mv.id}]


def test_predict_falls_back_to_label_and_text_without_a_usable_config(env) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, _ = env
    ctrl.train(None)
    for cfg in ("", "<View><Text", "<View><Text name='t' value='$text'/></View>"):
        res = client.post("/ml/predict", json=predict_body([task(1, TEXTS[1])], cfg)).json()
        region = res["results"][0]["result"][0]
        assert (region["from_name"], region["to_name"], region["value"]["choices"]) == (
            "label",
            "text",
            ["neg"],
        )


def test_predict_scores_all_tasks_in_one_batch(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, _ = env
    mv = ctrl.train(None)
    clf = ctrl.load_classifier(mv)
    calls: list[int] = []
    original = clf.predict_proba

    def counting(texts, progress=None):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return original(texts)

    monkeypatch.setattr(clf, "predict_proba", counting)
    tasks = [task(i, TEXTS[i % 4]) for i in range(50)] + [task(99, "")]
    results = client.post("/ml/predict", json=predict_body(tasks)).json()["results"]
    assert calls == [50]
    assert len(results) == 51


def test_predict_validates_the_body(env) -> None:  # type: ignore[no-untyped-def]
    client, _, _, _ = env
    r = client.post("/ml/predict", json={"project": "1.2", "params": {"password": SECRET}})
    assert r.status_code == 422
    assert ("body", "tasks") in {tuple(e["loc"]) for e in r.json()["errors"]}
    assert SECRET not in r.text
    r = client.post("/ml/predict", json={"tasks": "not a list"})
    assert r.status_code == 422
    r = client.post("/ml/predict", json=predict_body([task(1, "x"), {"id": 7, "data": "oops"}]))
    assert r.status_code == 422
    assert [e["loc"] for e in r.json()["errors"]] == [["body", "tasks", 1, "data"]]
    assert "body.tasks.1.data" in r.json()["detail"] and "Fix:" in r.json()["detail"]
    assert SECRET not in r.text
    for project in (False, True, 1.5, ["x"]):  # strict: a boolean is not a project id
        r = client.post("/ml/predict", json={**predict_body([]), "project": project})
        assert r.status_code == 422, project
        r = client.post("/ml/setup", json={"project": project, "schema": config()})
        assert r.status_code == 422, project
    r = client.post(
        "/ml/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


def test_predict_with_missing_model_files_is_503_with_a_fix(env) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, _ = env
    mv = ctrl.train(None)
    for f in Path(mv.path).iterdir():
        f.unlink()
    Path(mv.path).rmdir()
    ctrl._loaded.clear()  # a fresh process: nothing cached
    r = client.post("/ml/predict", json=predict_body([task(1, TEXTS[0])]))
    assert r.status_code == 503
    assert mv.id in r.json()["detail"] and "Fix:" in r.json()["detail"]


def test_empty_task_list_gives_empty_results(env) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, _ = env
    ctrl.train(None)
    assert client.post("/ml/predict", json=predict_body([])).json() == {"results": []}


# -- webhook / train ------------------------------------------------------------------------
def test_start_training_asks_the_service_for_a_retrain(env) -> None:  # type: ignore[no-untyped-def]
    client, service, _, _ = env
    payload = {"action": "START_TRAINING", "project": {"id": 12, "title": "alloop"}}
    r = client.post("/ml/webhook", json=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["handled"] is True and body["action"] == "START_TRAINING"
    assert body["retrain"] == {"accepted": True, "queued": 1}
    assert service.retrains == ["Label Studio: Start training (project 12)"]


def test_other_events_are_acknowledged_and_ignored(env) -> None:  # type: ignore[no-untyped-def]
    client, service, _, store = env
    revision = store.label_revision()
    for action in ("ANNOTATION_CREATED", "TASKS_CREATED", "PROJECT_UPDATED"):
        r = client.post(
            "/ml/webhook",
            json={"action": action, "annotation": {"id": 1, "result": []}, "task": {"id": 2}},
        )
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "action": action, "handled": False}
    assert service.retrains == []
    assert store.label_revision() == revision  # nothing ingested from an unauthenticated hook


def test_webhook_validates_the_body(env) -> None:  # type: ignore[no-untyped-def]
    client, service, _, _ = env
    for bad in ([1, 2], {}, {"project": 1}, {"action": ""}, {"action": 3}):
        r = client.post("/ml/webhook", json=bad)
        assert r.status_code == 422, bad
        assert "body" in r.json()["detail"] and r.json()["errors"]
    assert service.retrains == []


def test_legacy_train_call_also_asks_for_a_retrain(env) -> None:  # type: ignore[no-untyped-def]
    client, service, _, _ = env
    body = {"annotations": [], "project": "1.2", "label_config": config(), "params": {}}
    r = client.post("/ml/train", json=body)
    assert r.status_code == 200
    assert r.json()["retrain"]["accepted"] is True
    assert service.retrains == ["Label Studio: Start training"]


def test_a_refused_retrain_is_503_with_the_reason(env) -> None:  # type: ignore[no-untyped-def]
    client, service, _, _ = env
    service.refuse = ConfigError("an iteration is running.", "wait for it to finish.")
    r = client.post("/ml/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert r.status_code == 503
    assert "an iteration is running" in r.json()["detail"]


# -- pure helpers ------------------------------------------------------------------------------
def test_choices_target_parses_the_first_choices_and_its_text_tag() -> None:
    cfg = (
        '<View><Header value="Review"/><Text name="body" value="$review"/>'
        '<Choices name="sentiment" toName="body"><Choice value="a"/><Choice value="b"/></Choices>'
        '<Choices name="other" toName="body"><Choice value="z"/></Choices></View>'
    )
    assert choices_target(cfg) == ChoicesTarget("sentiment", "body", "review", ("a", "b"))
    assert choices_target(None) == ChoicesTarget()
    assert choices_target("<not xml") == ChoicesTarget()


def test_predict_tasks_output_is_json_ready() -> None:
    class Fixed:
        classes = ("a", "b", "c")

        def predict_proba(self, texts):  # type: ignore[no-untyped-def]
            return np.tile([0.2, 0.5, 0.3], (len(texts), 1))

    out = predict_tasks(Fixed(), "v9", [task(1, "t"), task(2, None)], ChoicesTarget())
    assert json.loads(json.dumps(out)) == [
        {
            "result": [
                {
                    "from_name": "label",
                    "to_name": "text",
                    "type": "choices",
                    "value": {"choices": ["b"]},
                }
            ],
            "score": 0.5,
            "model_version": "v9",
        },
        {"result": [], "score": None, "model_version": "v9"},
    ]


def test_a_config_without_choice_tags_lets_any_class_through(env) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, _ = env
    ctrl.train(None)
    dynamic = (
        '<View><Text name="text" value="$text"/>'
        '<Choices name="label" toName="text" value="$options"/></View>'
    )
    assert client.post("/ml/setup", json={"schema": dynamic}).status_code == 200
    res = client.post("/ml/predict", json=predict_body([task(1, TEXTS[0])], dynamic)).json()
    assert res["results"][0]["result"][0]["value"]["choices"] == ["pos"]


def test_a_model_returning_the_wrong_shape_is_503_not_a_wrong_answer(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client, _, ctrl, _ = env
    mv = ctrl.train(None)
    clf = ctrl.load_classifier(mv)
    monkeypatch.setattr(clf, "predict_proba", lambda texts, progress=None: np.ones((1, 2)) / 2)
    r = client.post("/ml/predict", json=predict_body([task(1, TEXTS[0]), task(2, TEXTS[1])]))
    assert r.status_code == 503
    assert "shape (1, 2)" in r.json()["detail"] and "Fix:" in r.json()["detail"]


# -- authentication --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/ml/health"),
        ("post", "/ml/setup"),
        ("post", "/ml/predict"),
        ("post", "/ml/webhook"),
        ("post", "/ml/train"),
        ("get", "/ml/versions"),
    ],
)
@pytest.mark.parametrize(
    "auth", [None, ("alloop", "wrong-password-000000"), ("someone", ML_AUTH[1])], ids=str
)
def test_every_endpoint_needs_the_basic_auth_and_does_nothing_without(
    env, method, path, auth
) -> None:  # type: ignore[no-untyped-def]
    client, service, ctrl, store = env
    ctrl.train(None)
    n_versions = len(store.model_versions())
    kwargs: dict[str, Any] = {"auth": auth} if auth else {"headers": {"Authorization": ""}}
    if method == "post":  # garbage first: the credentials are checked before the body is read
        kwargs["content"] = b"garbage"
    r = getattr(client, method)(path, **kwargs)
    if auth is None:  # TestClient's default auth must not apply
        r = getattr(TestClient(client.app), method, None)(
            path, **({"content": b"garbage"} if method == "post" else {})
        )
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Basic")
    assert set(r.json()) == {"detail"} and "basic auth" in r.json()["detail"]
    assert ML_AUTH[1] not in r.text
    assert service.retrains == [] and len(store.model_versions()) == n_versions


def test_the_train_repro_with_credentials_asks_for_a_retrain(env) -> None:  # type: ignore[no-untyped-def]
    client, service, _, _ = env
    assert TestClient(client.app).post("/ml/train", content=b"garbage").status_code == 401
    assert service.retrains == []
    r = client.post("/ml/train", content=b"garbage")
    assert r.status_code == 200 and service.retrains == ["Label Studio: Start training"]
