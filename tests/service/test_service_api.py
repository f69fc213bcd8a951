"""The HTTP API on a real SQLite store with the in-memory Label Studio: auth, bodies, shapes,
model management, triggers."""

from __future__ import annotations

import json
import logging
import stat

import pytest

from loop.service.core import SECRET_HEADER, WEBHOOK_PATH
from loop.service.tokens import FILE_NAME, load_or_create_secrets
from tests.service.conftest import Env, wait_until

WRITES = [
    ("post", "/api/iterations"),
    ("post", "/api/retrain"),
    ("post", "/api/nightly"),
    ("post", "/api/models/rollback"),
    ("post", "/api/models/v0001-x/promote"),
]


def _answer_sent(env: Env) -> int:
    """Annotate every sent, unanswered item with its gold class through the webhook."""
    todo = env.tool.unanswered()
    for item in todo:
        r = env.hook(env.tool.annotate(item, env.gold[item]))
        assert r.status_code == 200, r.text
    return len(todo)


# -- secrets -------------------------------------------------------------------------------
def test_secrets_are_generated_once_private_and_reused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = load_or_create_secrets(tmp_path)
    path = tmp_path / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(a.api_token) >= 32 and len(a.webhook_secret) >= 32 and len(a.ml_password) >= 32
    assert len({a.api_token, a.webhook_secret, a.ml_password}) == 3
    b = load_or_create_secrets(tmp_path)
    assert (b.api_token, b.webhook_secret) == (a.api_token, a.webhook_secret)
    assert a.api_token not in repr(a) and a.webhook_secret not in repr(a)
    path.chmod(0o644)  # made readable by others: made private again
    load_or_create_secrets(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secrets_from_settings_win_and_short_ones_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from loop.errors import ConfigError

    s = load_or_create_secrets(
        tmp_path, api_token="t" * 20, webhook_secret="w" * 20, ml_password="m" * 20
    )
    assert (s.api_token, s.webhook_secret, s.ml_password) == ("t" * 20, "w" * 20, "m" * 20)
    assert not (tmp_path / FILE_NAME).exists()
    with pytest.raises(ConfigError, match=">= 16 characters") as err:
        load_or_create_secrets(
            tmp_path, api_token="short", webhook_secret="w" * 20, ml_password="m" * 20
        )
    assert "short" not in str(err.value)
    # given ones win, the others are generated into the file
    s = load_or_create_secrets(tmp_path, ml_password="m" * 20, ml_user="annotator-bot")
    assert s.ml_password == "m" * 20 and s.ml_user == "annotator-bot"
    assert s.ml_ok("annotator-bot", "m" * 20)
    assert not s.ml_ok("alloop", "m" * 20) and not s.ml_ok("annotator-bot", "m" * 19)
    assert "m" * 20 not in repr(s) and len(s.api_token) >= 32


# -- auth ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method,path", WRITES)
def test_write_api_needs_the_bearer_token(make_env, method, path, caplog) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    caplog.set_level(logging.DEBUG)
    wrong = "x" * 43
    for headers in (
        {},
        {"Authorization": f"Bearer {wrong}"},
        {"Authorization": f"Basic {env.token}"},
    ):
        r = getattr(env.client, method)(path, headers=headers)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in r.json()["detail"]
        assert env.token not in r.text and wrong not in r.text
    # nothing happened: no job asked for, no model touched
    assert not any(env.service.job_status()["pending"].values())
    assert env.store.iterations() == []
    logged = caplog.text
    assert "refused" in logged
    assert env.token not in logged and env.service.secrets.webhook_secret not in logged


def test_webhook_needs_the_secret_header_and_stores_nothing_without_it(make_env, caplog) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    caplog.set_level(logging.DEBUG)
    secret = env.service.secrets.webhook_secret
    payload = env.tool.annotate("pos-001", "pos")
    for headers in ({}, {SECRET_HEADER: "not-the-secret-at-all"}, {SECRET_HEADER: secret[:-1]}):
        r = env.client.post(WEBHOOK_PATH, json=payload, headers=headers)
        assert r.status_code == 401
        assert SECRET_HEADER in r.json()["detail"]
        assert secret not in r.text
    # the API token is not the webhook secret
    r = env.client.post(WEBHOOK_PATH, json=payload, headers={SECRET_HEADER: env.token})
    assert r.status_code == 401
    assert env.store.labels(["pos-001"]) == []
    assert env.service.webhook_stats.as_dict()["unauthorized"] == 4
    assert secret not in caplog.text and env.token not in caplog.text
    assert "refused a webhook" in caplog.text
    r = env.hook(payload)
    assert r.status_code == 200 and r.json()["inserted"] == 1


# -- bodies --------------------------------------------------------------------------------
def test_malformed_and_wrongly_shaped_webhooks_are_refused_clearly(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    h = {SECRET_HEADER: env.service.secrets.webhook_secret, "Content-Type": "application/json"}
    r = env.client.post(WEBHOOK_PATH, content=b'{"action": "ANNOTATION_CREATED", ', headers=h)
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = env.client.post(WEBHOOK_PATH, content=b"\xff\xfe", headers=h)
    assert r.status_code == 400
    r = env.client.post(WEBHOOK_PATH, json=[1, 2], headers=h)
    assert r.status_code == 422 and "not of type 'object'" in r.json()["detail"]
    r = env.client.post(WEBHOOK_PATH, json={"annotation": {}}, headers=h)
    assert r.status_code == 422 and "action" in r.json()["detail"]
    r = env.client.post(
        WEBHOOK_PATH, json={"action": "ANNOTATION_CREATED", "annotation": 3, "task": {}}, headers=h
    )
    assert r.status_code == 422 and "annotation" in r.json()["detail"]
    # an item the store does not hold: refused, nothing stored
    r = env.hook(env.tool.annotate("no-such-item", "pos"))
    assert r.status_code == 422 and "no-such-item" in r.json()["detail"]
    assert [lab for lab in env.store.labels() if lab.source != "import"] == []
    assert env.store.rejections() == []


def test_oversized_bodies_get_413_declared_or_streamed(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env(service={"max_body_bytes": 4096})
    h = {SECRET_HEADER: env.service.secrets.webhook_secret, "Content-Type": "application/json"}
    payload = env.tool.annotate("pos-001", "pos")
    payload["padding"] = "x" * 5000
    r = env.client.post(WEBHOOK_PATH, content=json.dumps(payload).encode(), headers=h)
    assert r.status_code == 413 and "4096" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is counted while reading
        body = json.dumps(payload).encode()
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    r = env.client.post(WEBHOOK_PATH, content=chunks(), headers=h)
    assert r.status_code == 413
    assert env.store.labels(["pos-001"]) == []
    del payload["padding"]
    assert env.hook(payload).status_code == 200  # the same event, small enough


# -- read API ------------------------------------------------------------------------------
def test_read_api_shapes_and_openapi(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    env.controller.run_iteration()  # cold start: 8 sent
    _answer_sent(env)
    env.controller.run_iteration()  # trains on 8 answers
    st = env.client.get("/api/status").json()
    for key in (
        "items", "pool", "classes", "labels_per_class", "agreement", "ties_left_out",
        "rejected_answers", "eval_sample", "metrics_note", "model_versions", "iterations",
        "current_model", "job", "lease", "webhooks", "poll", "schedule", "service",
    ):  # fmt: skip
        assert key in st, key
    assert st["items"] == {"train": 60, "test": 20, "eval": 0}
    assert sum(st["labels_per_class"].values()) == 8
    assert st["metrics_note"] == "metrics are on the held-out test split"
    assert (
        st["current_model"]["id"].startswith("v0001")
        and "test_accuracy" in st["current_model"]["metrics"]
    )
    assert st["job"]["running"] is None and st["webhooks"]["labels_inserted"] == 8
    assert st["pool"] == 60 - 8 - 5
    its = env.client.get("/api/iterations").json()["iterations"]
    assert [i["number"] for i in its] == [1, 2] and its[1]["model_version"] == st["current_model"][
        "id"
    ]
    assert "timings" in its[1] and its[1]["status"] == "done"
    models = env.client.get("/api/models").json()
    assert models["current"] == st["current_model"]["id"] and len(models["models"]) == 1
    assert models["models"][0]["metrics"]["promotion"]["promoted"] is True
    curve = env.client.get("/api/learning-curve").json()["points"]
    assert curve[0]["n_labels"] == 8 and 0 <= curve[0]["test_accuracy"] <= 1
    assert set(curve[0]) >= {"test_macro_f1", "eval_accuracy", "eval_macro_f1", "model_version"}
    assert env.client.get("/health").json() == {
        "status": "ok",
        "worker_running": False,
        "scheduler": False,
    }
    spec = env.client.get("/openapi.json").json()
    for path in ("/api/status", WEBHOOK_PATH, "/api/models/{version_id}/promote", "/ml/predict"):
        assert path in spec["paths"], path
    assert env.client.get("/docs").status_code == 200
    # no secret anywhere in what the read API shows
    body = json.dumps(st) + json.dumps(spec)
    assert env.token not in body and env.service.secrets.webhook_secret not in body


def test_project_status_is_what_alloop_status_shows(make_env) -> None:  # type: ignore[no-untyped-def]
    from loop.service.status import project_status

    env: Env = make_env(eval_sample_size=4)
    env.controller.run_iteration()
    info = project_status(env.store, database="sqlite:///x.db")
    assert info["database"] == "sqlite:///x.db"
    assert info["eval_sample"] == {"size": 4, "labeled": 0}
    assert info["metrics_note"].startswith("NOT YET TRUSTWORTHY: 0/4")
    for item in [i for i in env.tool.sent() if env.store.get_items([i])[0].split == "eval"]:
        env.hook(env.tool.annotate(item, env.gold[item]))
    info = project_status(env.store)
    assert "database" not in info and info["metrics_note"].startswith("trustworthy")


def test_the_last_data_check_is_in_the_read_api(make_env) -> None:  # type: ignore[no-untyped-def]
    from loop.quality import META_KEY, check_project, summary

    env: Env = make_env()
    assert env.client.get("/api/check").json() == {"check": None, "stale": None}
    assert env.client.get("/api/status").json()["quality"] is None
    report = check_project(
        env.store,
        classes=["neg", "pos"],
        embed=None,
        count_tokens=None,
        max_tokens=None,
        trainer=None,
        find_issues=None,
    )
    env.store.set_meta(META_KEY, summary(report))
    got = env.client.get("/api/check").json()
    assert got["stale"] is False
    assert [f["check"] for f in got["check"]["findings"]] == [
        f["check"] for f in report["findings"]
    ]
    quality = env.client.get("/api/status").json()["quality"]
    assert quality["counts"] == {f["check"]: f["count"] for f in report["findings"]}
    env.controller.run_iteration()  # cold start sent; an answer changes the labels
    _answer_sent(env)
    assert env.client.get("/api/check").json()["stale"] is True


# -- model management ----------------------------------------------------------------------
def test_promote_and_rollback_through_the_api(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    env.controller.run_iteration()
    _answer_sent(env)
    env.controller.run_iteration()
    _answer_sent(env)
    env.controller.run_iteration(force_train=True)
    v1, v2 = [m.id for m in env.store.model_versions()]
    assert env.client.get("/api/models").json()["current"] == v2
    r = env.client.post("/api/models/rollback", headers=env.auth())
    assert r.status_code == 200, r.text
    assert r.json() == {"id": v1, "status": "promoted", "current": v1}
    assert env.store.get_model_version(v2).status == "rejected"
    r = env.client.post("/api/models/rollback", headers=env.auth())
    assert r.status_code == 409 and "nothing to roll back" in r.json()["detail"]
    r = env.client.post(f"/api/models/{v2}/promote", headers=env.auth())
    assert r.status_code == 200 and r.json()["current"] == v2
    r = env.client.post("/api/models/v9999-nope/promote", headers=env.auth())
    assert r.status_code == 404 and v1 in r.json()["detail"]


# -- triggers ------------------------------------------------------------------------------
def test_api_iteration_runs_in_the_background_and_reports_progress(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env(start=True)
    env.idle()
    assert len(env.store.iterations()) == 1  # the worker's first iteration (cold start)
    env.trainer.hold()
    _answer_sent(env)  # the worker trains the first model (held at the gate)
    assert env.trainer.entered.wait(10)
    st = wait_until(
        lambda: (s := env.client.get("/api/status").json())["job"]["running"] and s, 10, "a job"
    )
    job = st["job"]["running"]
    assert job["kind"] == "iteration" and job["status"] == "running"
    assert [p["description"] for p in job["progress"]] == ["training"]
    assert st["lease"]["ours"] is True
    r = env.client.post("/api/iterations", headers=env.auth())
    assert r.status_code == 202 and r.json()["state"] == "queued"
    r = env.client.post("/api/iterations", headers=env.auth())
    assert r.json()["state"] == "coalesced"
    r = env.client.post("/api/retrain", headers=env.auth())
    assert r.json()["state"] == "queued" and r.json()["kind"] == "retrain"
    env.trainer.release()
    env.idle()
    # the running one, then ONE more for the three requests (with the forced retrain)
    its = env.store.iterations()
    assert len(its) == 3 and all(i.status == "done" for i in its)
    assert its[2].info["train_reason"] == "forced"
    assert env.client.get("/api/status").json()["lease"]["holder"] is None


def test_nightly_via_the_api_retrains_with_not_worse_and_refreshes_waiting(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env(start=True, min_new_labels=50)
    env.idle()
    _answer_sent(env)
    env.idle()
    assert len(env.store.model_versions()) == 1
    waiting = {q.item_id for q in env.controller.waiting()}
    assert waiting  # the second batch was pushed and is not answered
    r = env.client.post("/api/nightly", headers=env.auth())
    assert r.status_code == 202 and r.json()["kind"] == "nightly"
    env.idle()
    versions = env.store.model_versions()
    assert len(versions) == 2
    promo = versions[-1].metrics["promotion"]
    assert promo["rule"] == "not-worse" and promo["metric"] == "test_accuracy" and promo["n"] == 20
    assert promo["promoted"] == (promo["candidate"] >= promo["current"])
    jobs = env.client.get("/api/status").json()["job"]["recent"]
    nightly = [j for j in jobs if j["kind"] == "nightly"]
    assert len(nightly) == 1 and nightly[0]["status"] == "done"
    assert nightly[0]["sources"] == ["api"]
    if promo["promoted"]:
        assert set(env.tool.refreshed[-1]) == waiting
    else:
        assert env.tool.refreshed == []


def test_the_server_thread_serves_on_loopback_and_refuses_a_busy_port(make_env) -> None:  # type: ignore[no-untyped-def]
    import httpx

    from loop.errors import ConfigError
    from loop.service.app import create_app
    from loop.service.server import ServiceServer

    env: Env = make_env()
    with ServiceServer(create_app(env.service)) as server:
        assert httpx.get(f"{server.url}/health", timeout=5).json()["status"] == "ok"
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            ServiceServer(create_app(env.service), port=server.port).start()
    assert not server.alive


def test_a_retrain_with_nothing_new_pushes_no_batch_and_repeated_presses_coalesce(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env(start=True, batch_size=4, refill_below=0)
    env.idle()
    _answer_sent(env)  # enough labels: the worker trains and pushes the next batch
    env.idle()
    # labels may have arrived after the last training: one retrain takes them all
    r = env.client.post("/api/retrain", headers=env.auth())
    env.idle()
    n_models, n_sent = len(env.store.model_versions()), len(env.tool.sent())
    assert n_models >= 1 and env.controller.up_to_date()[0]
    # labels arrived? none: the current model is already trained on them
    for _ in range(5):
        r = env.client.post("/api/retrain", headers=env.auth())
        assert r.status_code == 202 and r.json()["state"] == "up-to-date", r.json()
        assert "push=true" in r.json()["detail"]
    env.idle()
    assert len(env.store.model_versions()) == n_models and len(env.tool.sent()) == n_sent
    # the ML backend's training button: the same rule
    assert env.service.request_retrain("Label Studio: Start training")["state"] == "up-to-date"
    # asked explicitly: a batch from the current model, without retraining
    r = env.client.post("/api/retrain?push=true", headers=env.auth())
    assert r.json()["state"] == "started", r.json()
    env.idle()
    assert len(env.store.model_versions()) == n_models
    assert len(env.tool.sent()) == n_sent + 4
    # a changed setting is something new: it retrains, but with no new label, pushes nothing
    env.trainer.name = "fake-bow-2"
    r = env.client.post("/api/retrain", headers=env.auth())
    assert r.json()["state"] == "started"
    env.idle()
    assert len(env.store.model_versions()) == n_models + 1
    assert len(env.tool.sent()) == n_sent + 4
    last = env.service.job_status()["recent"][-1]
    assert "no new batch" in last["result"]["summary"]


def test_presses_during_a_retrain_on_the_same_labels_coalesce_into_it(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env(start=True, batch_size=4, refill_below=0)
    env.idle()
    _answer_sent(env)
    env.idle()
    env.client.post("/api/retrain", headers=env.auth())
    env.idle()
    n_models = len(env.store.model_versions())
    n_trainings = len(env.trainer.intervals)
    env.trainer.name = "fake-bow-2"  # something new to learn: a changed trainer
    env.trainer.hold()
    r = env.client.post("/api/retrain", headers=env.auth())
    assert r.json()["state"] == "started"
    assert env.trainer.entered.wait(10)
    states = [env.client.post("/api/retrain", headers=env.auth()).json()["state"] for _ in range(3)]
    assert states == ["queued", "coalesced", "coalesced"]
    env.trainer.release()
    env.idle()
    # one model more: the queued press found it up to date and neither retrained nor pushed
    assert len(env.store.model_versions()) == n_models + 1
    assert len(env.trainer.intervals) == n_trainings + 1
    summaries = [j["result"]["summary"] for j in env.service.job_status()["recent"][-2:]]
    assert "no retrain" in summaries[-1] and "no new batch" in summaries[-1]


def test_webhook_strings_with_control_characters_become_rejections_not_labels(make_env) -> None:  # type: ignore[no-untyped-def]
    env: Env = make_env()
    env.controller.run_iteration()
    item = env.tool.sent()[0]
    ev = env.tool.annotate(item, "pos")
    ev["annotation"]["completed_by"] = "eve\x00"
    r = env.hook(ev)
    assert r.status_code == 200 and r.json()["rejected"] == 1 and r.json()["inserted"] == 0
    (rej,) = env.store.rejections()
    assert "U+0000" in rej.reason and "\x00" not in rej.reason
    ev = env.tool.annotate(item, "pos")
    ev["task"]["data"]["alloop_id"] = item + "\x00"
    r = env.hook(ev)
    assert r.status_code == 200 and r.json()["inserted"] == 0
    assert [lab for lab in env.store.labels() if lab.source != "import"] == []
