"""Label Studio's ML-backend protocol over the loop's current model.

Connect it in Label Studio (Settings > Model, or ``ml.create(url=<service>/ml, project=...)``)
and the server calls, with these timeouts (Label Studio 1.23.2, ``ml/api_connector.py``):

- ``GET /health`` (1 s) -> ``{"status": "UP", "model_class": "alloop", ...}``; no database;
- ``POST /setup`` (3 s) with ``{"project": "<id>.<created-ts>", "schema": <label config>,
  "hostname", "access_token", "extra_params"}`` -> ``{"model_version": <current version id> |
  "untrained"}``. Called before every prediction request; a new model version makes Label
  Studio ask again for the tasks that have no prediction of that version (refreshed
  predictions). A schema whose choices share no class with the loop's is refused (422);
- ``POST /predict`` (100 s) with ``{"tasks": [...], "project", "label_config", "params"}`` ->
  ``{"results": [{"result": [<choices region>], "score": p, "model_version": v}, ...]}``, one
  item per task, in order, scored in one batch. ``score`` is the model's probability of the
  class it predicts (Label Studio's uncertainty queue shows low scores first);
- ``POST /webhook`` (1 s; 100 s for ``START_TRAINING``): the "Start training" button sends
  ``{"action": "START_TRAINING", "project": {...}}``, which calls
  ``service.request_retrain(reason)`` (training happens in the background, never inside the
  request); every other project event is acknowledged and ignored (labels arrive through the
  service's own authenticated webhook and polling);
- ``POST /train``: what "Start training" sends instead when Label Studio runs with the
  ``ff_back_dev_1417_start_training_mlbackend_webhooks_250122_long`` flag off; same effect;
- ``GET /versions`` -> ``{"versions": [<model version ids, newest first>]}``.

Authentication: Label Studio 1.23 sends HTTP basic auth on *every* call to an ML backend
whose connection has ``auth_method = BASIC_AUTH`` (health and setup when connecting, predict,
train, versions). So every ``/ml`` endpoint needs ``Authorization: Basic`` with the service's
``service.ml_user`` and ML password (``ml_password`` in ``<home>/service.json``); anything else
is 401 before the body is read, and nothing changes. ``alloop serve`` connects itself with
those credentials. The project webhook Label Studio adds by itself when a backend is connected
(``<url>/webhook``, every project event, sent *without* the basic auth) is removed by the
service, since labels reach it through its own authenticated webhook.

These endpoints never return secrets (the setup's ``access_token`` and the predict ``params``
login are neither stored nor echoed, also not in 422 answers).
"""

from __future__ import annotations

import json
import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request, Security
from fastapi.encoders import jsonable_encoder
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from loop.contracts import Classifier
from loop.errors import AlloopError, ModelError
from loop.service.errors import ApiError, error_responses, summary, validation_items
from loop.text import escape_forbidden

log = logging.getLogger(__name__)

MODEL_CLASS = "alloop"
UNTRAINED = "untrained"
DEFAULT_FROM_NAME = "label"
DEFAULT_TO_NAME = "text"
DEFAULT_TEXT_KEY = "text"
TRAIN_ACTION = "START_TRAINING"
_TEXT_TAGS = {"Text", "HyperText", "Paragraphs"}


BaseModelT = TypeVar("BaseModelT", bound=BaseModel)
_basic = HTTPBasic(
    auto_error=False,
    scheme_name="mlBasic",
    realm="alloop ML backend",
    description="service.ml_user and the ML password (ml_password in <home>/service.json)",
)


async def _json_body(request: Request) -> Any:
    """The body as JSON, read only once the credentials passed (a dependency after the auth
    check); validated by ``_parse``, since FastAPI's own 422 would echo what was sent."""
    raw = await request.body()
    try:
        return json.loads(raw) if raw.strip() else None
    except ValueError:
        raise ApiError(
            422,
            "expected a JSON body, found bytes that are not JSON. Fix: send the request as "
            "Label Studio does (Content-Type: application/json).",
            [{"loc": ["body"], "msg": "not valid JSON", "type": "json_invalid"}],
        ) from None


JsonBody = Annotated[Any, Depends(_json_body)]


class MLBackendService(Protocol):
    """What the router needs from the service: the loop's controller and a way to ask for a
    retrain that runs in the background (it must return at once)."""

    controller: Any  # loop.controller.Controller

    def request_retrain(self, reason: str) -> dict[str, Any]: ...


# --------------------------------------------------------------------------------------------
# request bodies
# --------------------------------------------------------------------------------------------


class SetupRequest(BaseModel):
    """Label Studio's ``/setup`` body. ``access_token`` and ``extra_params`` are accepted and
    never validated, kept or echoed."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    project: StrictStr | StrictInt | None = Field(
        None, description="'<project id>.<created timestamp>'"
    )
    label_config: StrictStr | None = Field(
        None, alias="schema", description="the labeling config XML"
    )
    hostname: StrictStr | None = None


class TaskIn(BaseModel):
    """A Label Studio task as ``/predict`` receives it: its ``data`` holds the text."""

    model_config = ConfigDict(extra="allow")

    id: StrictInt | StrictStr | None = None
    data: dict[str, Any] = Field(
        description="the task's data, e.g. {'text': ..., 'alloop_id': ...}"
    )


class PredictRequest(BaseModel):
    """Label Studio's ``/predict`` body. ``params`` (task data login/password, context) is
    ignored and never echoed."""

    model_config = ConfigDict(extra="ignore")

    tasks: list[TaskIn] = Field(
        description="Label Studio tasks, each with a 'data' object holding the text"
    )
    project: StrictStr | StrictInt | None = None
    label_config: StrictStr | None = None


class WebhookRequest(BaseModel):
    """A Label Studio project event; ``START_TRAINING`` is the "Start training" button."""

    model_config = ConfigDict(extra="allow")

    action: StrictStr = Field(min_length=1, description="START_TRAINING or any project event")
    project: dict[str, Any] | StrictInt | None = Field(
        None, description="the project (an object with its id) or its id"
    )


# --------------------------------------------------------------------------------------------
# the labeling config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChoicesTarget:
    """Where a prediction goes in a project's labeling config.

    ``choices`` is None when the config was missing, unreadable or lists no ``<Choice>`` (then
    every class may be predicted), else the ``<Choice>`` values of the ``<Choices>`` tag."""

    from_name: str = DEFAULT_FROM_NAME
    to_name: str = DEFAULT_TO_NAME
    text_key: str = DEFAULT_TEXT_KEY
    choices: tuple[str, ...] | None = None


def choices_target(label_config: str | None) -> ChoicesTarget:
    """The first ``<Choices>`` tag of ``label_config``: its name (``from_name``), its ``toName``
    and the data key of the text tag it points at (``$text`` -> ``text``). Falls back to
    ``label`` / ``text`` / ``text`` for what the config does not say, or when it is missing or
    not valid XML."""
    if not label_config or not label_config.strip():
        return ChoicesTarget()
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError:
        log.warning("the label config sent by Label Studio is not valid XML; using defaults")
        return ChoicesTarget()
    tag = next((el for el in root.iter() if el.tag == "Choices"), None)
    if tag is None:
        return ChoicesTarget()
    from_name = tag.get("name") or DEFAULT_FROM_NAME
    to_name = tag.get("toName") or DEFAULT_TO_NAME
    text_key = DEFAULT_TEXT_KEY
    for el in root.iter():
        if el.tag in _TEXT_TAGS and el.get("name") == to_name:
            value = el.get("value") or ""
            if value.startswith("$") and len(value) > 1:
                text_key = value[1:]
            break
    choices = tuple(v for c in tag.iter("Choice") if (v := c.get("value") or c.get("alias")))
    # no <Choice> children (e.g. choices loaded from task data): any class may be predicted
    return ChoicesTarget(from_name, to_name, text_key, choices or None)


def choices_result(target: ChoicesTarget, value: str) -> list[dict[str, Any]]:
    """One ``choices`` region selecting ``value``, in Label Studio's result format."""
    return [
        {
            "from_name": target.from_name,
            "to_name": target.to_name,
            "type": "choices",
            "value": {"choices": [value]},
        }
    ]


def _task_text(task: Mapping[str, Any], key: str) -> str | None:
    data = task.get("data")
    text = data.get(key) if isinstance(data, Mapping) else None
    if isinstance(text, str) and text.strip():
        return text
    return None


def _inline_defs(schema: Any, defs: Mapping[str, Any]) -> Any:
    """``schema`` with its local ``#/$defs/...`` references replaced by what they name."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline_defs(defs[ref.rsplit("/", 1)[1]], defs)
        return {k: _inline_defs(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline_defs(v, defs) for v in schema]
    return schema


def _body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The request body schema for the OpenAPI page (validation itself is ``_parse``)."""
    schema = model.model_json_schema(by_alias=True)
    schema = _inline_defs(schema, schema.get("$defs", {}))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _parse(model: type[BaseModelT], payload: Any) -> BaseModelT:
    """Validate a body against ``model``; a 422 lists where and what, never the values sent
    (bodies carry Label Studio's access token and task-data password)."""
    try:
        return model.model_validate(payload)
    except ValidationError as err:
        items = validation_items(err.errors(include_url=False, include_input=False))
        raise ApiError(422, summary(items), items) from None


# --------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------


def predict_tasks(
    classifier: Classifier,
    model_version: str,
    tasks: Sequence[Mapping[str, Any]],
    target: ChoicesTarget,
) -> list[dict[str, Any]]:
    """One Label Studio prediction per task, in order: the top class among the config's
    choices as a ``choices`` result, ``score`` = its probability. All texts are scored in one
    ``predict_proba`` call. A task without text, or a config that offers none of the model's
    classes, gets an empty result."""
    classes = tuple(classifier.classes)
    texts = [_task_text(t, target.text_key) for t in tasks]
    rows = [i for i, t in enumerate(texts) if t is not None]
    present = [t for t in texts if t is not None]
    allowed = np.array([target.choices is None or c in target.choices for c in classes], dtype=bool)
    out: list[dict[str, Any]] = [
        {"result": [], "score": None, "model_version": model_version} for _ in tasks
    ]
    if not rows or not allowed.any():
        return out
    proba = np.asarray(classifier.predict_proba(present), dtype=np.float64)
    if proba.shape != (len(rows), len(classes)):
        raise ModelError(
            f"model {model_version} returned probabilities of shape {proba.shape}, expected "
            f"({len(rows)}, {len(classes)}).",
            "retrain (alloop iterate --train).",
        )
    masked = np.where(allowed[None, :], proba, -np.inf)
    top = np.argmax(masked, axis=1)
    for n, (row, j) in enumerate(zip(rows, top, strict=True)):
        out[row] = {
            "result": choices_result(target, classes[j]),
            "score": float(proba[n, j]),
            "model_version": model_version,
        }
    return out


# --------------------------------------------------------------------------------------------
# the router
# --------------------------------------------------------------------------------------------


def _unavailable(err: AlloopError) -> HTTPException:
    return HTTPException(status_code=503, detail=str(err))


def ml_backend_router(
    service: MLBackendService, credentials_ok: Callable[[str, str], bool] | None
) -> APIRouter:
    """The ML-backend endpoints over ``service.controller`` (read on every request, so a
    service may replace its controller). Mount with ``app.include_router(router, prefix="/ml")``
    and connect Label Studio to ``<service url>/ml``.

    ``credentials_ok(user, password)`` decides the basic auth every endpoint needs (401 before
    anything is read or done); None serves them without authentication (an app that checks
    credentials itself, in front of the router)."""

    async def authorized(
        request: Request, cred: Annotated[HTTPBasicCredentials | None, Security(_basic)]
    ) -> None:
        if credentials_ok is None:
            return
        if cred is None or not credentials_ok(cred.username, cred.password):
            log.warning(
                "refused %s %s from %s: %s ML-backend credentials",
                request.method,
                escape_forbidden(request.url.path),
                request.client.host if request.client else "?",
                "no" if cred is None else "wrong",
            )
            raise ApiError(
                401,
                "the ML backend needs HTTP basic auth with service.ml_user and the ML password "
                "(ml_password in <home>/service.json). Fix: in Label Studio's model connection "
                "turn on Basic Authentication with those values (alloop serve connects itself "
                "with them).",
                headers={"WWW-Authenticate": 'Basic realm="alloop ML backend"'},
            )

    router = APIRouter(
        dependencies=[Depends(authorized)],
        responses=error_responses(401, 503) if credentials_ok is not None else {},
    )
    predict_lock = threading.Lock()  # one scoring batch at a time: the CPU is the limit

    def current_version() -> Any:
        try:
            return service.controller.current_model()
        except AlloopError as err:
            raise _unavailable(err) from err

    @router.get("/health")
    def health() -> dict[str, Any]:
        """Liveness for Label Studio (1 s timeout): answers without touching the database."""
        return {
            "status": "UP",
            "model_class": MODEL_CLASS,
            "classes": list(service.controller.classes),
        }

    @router.post(
        "/setup", openapi_extra=_body_doc(SetupRequest), responses=error_responses(413, 422)
    )
    def setup(payload: JsonBody) -> dict[str, Any]:
        """The current model version (``untrained`` before the first model)."""
        body = _parse(SetupRequest, payload)
        target = choices_target(body.label_config)
        classes = tuple(service.controller.classes)
        if target.choices is not None and not set(target.choices) & set(classes):
            raise ApiError(
                422,
                (
                    f"the project's labeling config offers choices {list(target.choices)}, "
                    f"none of the loop's classes {list(classes)}. Fix: connect this backend to "
                    "the project the loop labels, or set the loop's classes to the project's."
                ),
            )
        mv = current_version()
        version = mv.id if mv is not None else UNTRAINED
        log.debug("setup from Label Studio project %s: model version %s", body.project, version)
        return {"model_version": version}

    @router.post(
        "/predict", openapi_extra=_body_doc(PredictRequest), responses=error_responses(413, 422)
    )
    def predict(payload: JsonBody) -> dict[str, Any]:
        """One prediction per task, in order, from the current model."""
        body = _parse(PredictRequest, payload)
        tasks = [t.model_dump() for t in body.tasks]
        target = choices_target(body.label_config)
        mv = current_version()
        if mv is None:
            return {
                "results": [{"result": [], "score": None, "model_version": UNTRAINED}] * len(tasks)
            }
        with predict_lock:
            try:
                clf = service.controller.load_classifier(mv)
                results = predict_tasks(clf, mv.id, tasks, target)
            except AlloopError as err:
                raise _unavailable(err) from err
        return {"results": results}

    @router.post(
        "/webhook", openapi_extra=_body_doc(WebhookRequest), responses=error_responses(413, 422)
    )
    def webhook(payload: JsonBody) -> dict[str, Any]:
        """``START_TRAINING`` asks the service for a background retrain; every other event is
        acknowledged."""
        body = _parse(WebhookRequest, payload)
        if body.action != TRAIN_ACTION:
            return {"status": "ok", "action": body.action, "handled": False}
        project = body.project
        pid = project.get("id") if isinstance(project, dict) else project
        return {"status": "ok", "action": body.action, "handled": True, **_retrain(pid)}

    @router.post("/train")
    def train() -> dict[str, Any]:
        """The older "Start training" call (tasks with annotations in the body, not read: the
        loop trains on its own store, synced from Label Studio)."""
        return {"status": "ok", **_retrain(None)}

    def _retrain(project_id: Any) -> dict[str, Any]:
        where = f" (project {project_id})" if isinstance(project_id, int | str) else ""
        try:
            outcome = service.request_retrain(f"Label Studio: Start training{where}")
        except AlloopError as err:
            raise _unavailable(err) from err
        return {"retrain": jsonable_encoder(outcome)}

    @router.get("/versions")
    def versions() -> dict[str, Any]:
        """Every recorded model version id, newest first."""
        try:
            recorded = service.controller.store.model_versions()
        except AlloopError as err:
            raise _unavailable(err) from err
        return {"versions": [mv.id for mv in reversed(recorded)]}

    return router
