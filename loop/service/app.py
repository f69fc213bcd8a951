"""The HTTP face of :class:`loop.service.core.LoopService` (FastAPI; OpenAPI at ``/docs`` and
``/openapi.json``).

- ``POST /webhooks/label-studio`` -- Label Studio's annotation events; header ``X-Alloop-Secret``
  must equal the webhook secret (else 401, nothing stored). Stores and acknowledges; never
  trains;
- read API, no auth: ``GET /health``, ``/api/status``, ``/api/iterations``, ``/api/models``,
  ``/api/learning-curve``;
- write API, header ``Authorization: Bearer <api_token>`` (else 401): ``POST /api/iterations``,
  ``/api/retrain``, ``/api/nightly`` (202: the worker runs them), ``/api/models/{id}/promote``,
  ``/api/models/rollback``;
- ``/ml/...`` -- Label Studio's ML-backend protocol (:mod:`loop.service.mlbackend`), HTTP basic
  auth with ``service.ml_user`` and the ML password (else 401, nothing done).

Every request body is limited to ``service.max_body_bytes`` (413). Every error answers one
shape, :class:`loop.service.errors.ErrorOut`, and each operation lists the codes it can return.
Secrets never appear in a response or a log line.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from loop.errors import ConfigError, DataError, ModelError, StoreError
from loop.service.core import SECRET_HEADER, WEBHOOK_PATH, LoopService, UnknownItemError
from loop.service.errors import (
    ApiError,
    document_errors,
    error_responses,
    install_error_handlers,
    summary,
)
from loop.service.mlbackend import ml_backend_router
from loop.service.status import iteration_info, learning_curve, model_info
from loop.text import escape_forbidden

#: the page runs only its own inline script and loads nothing from elsewhere
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

log = logging.getLogger("alloop.service.http")

_bearer = HTTPBearer(
    auto_error=False, scheme_name="apiToken", description="the service's api_token"
)
_secret = APIKeyHeader(
    name=SECRET_HEADER,
    auto_error=False,
    scheme_name="webhookSecret",
    description="the webhook secret Label Studio sends",
)
# what the webhook endpoint reads (parsed by the labeling tool's own parser, not by FastAPI)
_ANNOTATION_ACTIONS = ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]
_WEBHOOK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "title": "LabelStudioEvent",
                    "description": "A Label Studio webhook payload (send_payload=True). "
                    "ANNOTATION_CREATED/UPDATED carry the annotation and its task (whose data "
                    "holds the alloop_id of an ingested item); ANNOTATIONS_DELETED the deleted "
                    "annotations' ids; any other action is acknowledged and ignored.",
                    "type": "object",
                    "required": ["action"],
                    "properties": {
                        "action": {"type": "string", "minLength": 1},
                        "project": {"anyOf": [{"type": "object"}, {"type": "integer"}]},
                        "annotation": {
                            "type": "object",
                            "required": ["id"],
                            "properties": {
                                "id": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                                "result": {"type": "array", "items": {"type": "object"}},
                                "was_cancelled": {"type": "boolean"},
                            },
                        },
                        "task": {
                            "type": "object",
                            "properties": {"id": {"type": "integer"}, "data": {"type": "object"}},
                        },
                        "annotations": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id"],
                                "properties": {
                                    "id": {"anyOf": [{"type": "integer"}, {"type": "string"}]}
                                },
                            },
                        },
                    },
                    "allOf": [
                        {
                            "if": {
                                "properties": {"action": {"enum": _ANNOTATION_ACTIONS}},
                                "required": ["action"],
                            },
                            "then": {"required": ["annotation", "task"]},
                        },
                        {
                            "if": {
                                "properties": {"action": {"const": "ANNOTATIONS_DELETED"}},
                                "required": ["action"],
                            },
                            "then": {"required": ["annotations"]},
                        },
                    ],
                }
            }
        },
    }
}


class TriggerOut(BaseModel):
    kind: str = Field(description="iteration | retrain | nightly")
    state: str = Field(description="started | queued | coalesced | up-to-date | blocked")
    detail: str
    running: str | None = Field(None, description="the kind of the job in progress, if any")
    lease_holder: str | None = Field(
        None, description="the other process holding the iteration lease, if any"
    )


class WebhookOut(BaseModel):
    action: str
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = Field(0, description="answers recorded as rejected (not usable as labels)")
    reconcile: bool = Field(False, description="a reconciliation poll was requested")
    ignored: str | None = None


class ModelOut(BaseModel):
    id: str
    status: str
    current: str | None = Field(description="the model the loop now uses")


class Health(BaseModel):
    status: str
    worker_running: bool
    scheduler: bool


_WEBHOOK_VALIDATOR = Draft202012Validator(
    _WEBHOOK_BODY["requestBody"]["content"]["application/json"]["schema"]
)


def _webhook_problems(payload: Any) -> list[dict[str, Any]]:
    """Where a webhook body breaks the schema documented for it (the same schema object)."""
    return [
        {
            "loc": ["body", *err.absolute_path],
            "msg": err.message if len(err.message) < 200 else err.message[:197] + "...",
            "type": str(err.validator),
        }
        for err in sorted(_WEBHOOK_VALIDATOR.iter_errors(payload), key=lambda e: list(e.path))
    ][:20]


ML_MAX_BYTES = 64 * 1024 * 1024  # Label Studio's "retrieve predictions" sends many tasks at once


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes`` (declared or streamed);
    the ML backend's routes (``/ml/...``) allow ``ml_max_bytes``."""

    def __init__(self, app: Any, max_bytes: int, ml_max_bytes: int = ML_MAX_BYTES) -> None:
        self.app = app
        self.default_max = max_bytes
        self.ml_max_bytes = max(ml_max_bytes, max_bytes)

    def _too_large(self, declared: int | None, limit: int) -> JSONResponse:
        got = f"{declared} bytes" if declared is not None else "more"
        return JSONResponse(
            {
                "detail": f"the request body is too large: at most {limit} bytes are "
                f"accepted, got {got}. Send smaller requests or raise service.max_body_bytes."
            },
            status_code=413,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = (
            self.ml_max_bytes if str(scope.get("path", "")).startswith("/ml/") else self.default_max
        )
        declared: int | None = None
        for key, value in scope.get("headers") or []:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    resp = JSONResponse(
                        {"detail": "the Content-Length header is not a number."}, status_code=400
                    )
                    await resp(scope, receive, send)
                    return
        if declared is not None and declared > limit:
            await self._too_large(declared, limit)(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            await self._too_large(None, limit)(scope, receive, send)


class _TooLarge(Exception):
    """A streamed body passed the limit."""


def create_app(service: LoopService) -> FastAPI:
    """The FastAPI application over ``service`` (which the caller starts and stops)."""
    app = FastAPI(
        title="alloop",
        summary="Active-learning annotation loop for text classification",
        description=__doc__,
        version="0.1.0",
    )
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=service.settings.service.max_body_bytes)
    install_error_handlers(app)

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, err: StoreError) -> JSONResponse:
        log.error("%s %s: %s", request.method, escape_forbidden(request.url.path), err)
        return JSONResponse({"detail": str(err)}, status_code=503)

    def require_token(
        request: Request,
        cred: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> None:
        if cred is None or not service.secrets.token_ok(cred.credentials):
            log.warning(
                "refused %s %s from %s: %s bearer token",
                request.method,
                escape_forbidden(request.url.path),
                request.client.host if request.client else "?",
                "no" if cred is None else "a wrong",
            )
            raise HTTPException(
                status_code=401,
                detail=(
                    "this endpoint needs the header 'Authorization: Bearer <api_token>' with the "
                    "service's API token. Fix: send service.api_token, or api_token from "
                    "<home>/service.json."
                ),
                headers={"WWW-Authenticate": "Bearer"},
            )

    # -- health and webhook ----------------------------------------------------------------
    @app.get("/health", response_model=Health, tags=["read"])
    def health() -> Health:
        """Liveness: the process answers; whether the worker and the schedule run."""
        return Health(
            status="ok",
            worker_running=service.running,
            scheduler=service.settings.service.nightly is not None,
        )

    @app.post(
        WEBHOOK_PATH,
        response_model=WebhookOut,
        tags=["webhook"],
        openapi_extra=_WEBHOOK_BODY,
        responses=error_responses(400, 401, 413, 422, 503),
    )
    async def label_studio_webhook(
        request: Request, secret: Annotated[str | None, Security(_secret)]
    ) -> WebhookOut:
        """Label Studio's ANNOTATION_CREATED / ANNOTATION_UPDATED / ANNOTATIONS_DELETED events
        (registered by the service with ``send_payload``). Stored idempotently on the
        annotation id; never trains."""
        if not service.secrets.webhook_ok(secret):
            service.webhook_stats.refused()
            log.warning(
                "refused a webhook from %s: %s %s header",
                request.client.host if request.client else "?",
                "no" if secret is None else "a wrong",
                SECRET_HEADER,
            )
            raise HTTPException(
                status_code=401,
                detail=(
                    f"missing or wrong {SECRET_HEADER} header: Label Studio's webhook must send "
                    "the service's webhook secret (alloop serve registers it; the value is "
                    "service.webhook_secret or webhook_secret in <home>/service.json)."
                ),
            )
        body = await request.body()
        try:
            payload = json.loads(body)
        except ValueError as err:
            raise HTTPException(
                status_code=400,
                detail=f"the webhook body is not valid JSON ({err}); Label Studio sends a JSON object.",
            ) from None
        problems = _webhook_problems(payload)
        if problems:
            raise ApiError(422, summary(problems), problems)
        try:
            result = await run_in_threadpool(service.ingest_webhook, payload)
        except (UnknownItemError, DataError) as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        return WebhookOut(**result.as_dict())

    # -- the people's page --------------------------------------------------------------------
    def _view() -> dict[str, Any]:
        from loop.dashboard import project_view

        tool = service.tool
        url, pid = getattr(tool, "url", None), getattr(tool, "project_id", None)
        link = f"{url}/projects/{pid}/data" if url and pid else None
        return project_view(service.store, status=service.status(), labeling_url=link)

    @app.get("/", response_class=HTMLResponse, tags=["page"], responses=error_responses(503))
    def dashboard() -> HTMLResponse:
        """The dashboard (read-only; promote and roll back send the API token typed into it)."""
        from loop.dashboard import render_dashboard

        return HTMLResponse(render_dashboard(_view()), headers=_PAGE_HEADERS)

    @app.get("/dashboard", include_in_schema=False)
    def dashboard_alias() -> RedirectResponse:
        return RedirectResponse("/", status_code=307)

    @app.get("/ui/main", response_class=HTMLResponse, tags=["page"], responses=error_responses(503))
    def dashboard_main() -> HTMLResponse:
        """The dashboard's main part, which the page fetches to refresh itself."""
        from loop.dashboard import render_dashboard

        return HTMLResponse(render_dashboard(_view(), fragment=True), headers=_PAGE_HEADERS)

    # -- read API ----------------------------------------------------------------------------
    @app.get("/api/status", tags=["read"], responses=error_responses(503))
    def status() -> dict[str, Any]:
        """Pool, labels per class, agreement, ties, rejected answers, the evaluation sample and
        whether metrics are trustworthy, the current model and its metrics, the running job and
        its progress, the lease, webhook and poll figures, the nightly schedule."""
        return service.status()

    @app.get("/api/iterations", tags=["read"], responses=error_responses(422, 503))
    def iterations(
        limit: Annotated[int, Query(ge=1, le=10_000, description="the newest this many")] = 100,
    ) -> dict[str, Any]:
        """Iterations, oldest first, with steps, timings and what each did."""
        its = service.store.iterations()[-limit:]
        return {"iterations": [iteration_info(i) for i in its]}

    @app.get("/api/models", tags=["read"], responses=error_responses(503))
    def models() -> dict[str, Any]:
        """Model versions, oldest first, with metrics and the promotion decision; ``current``
        is the one the loop uses."""
        current = service.controller.current_model()
        return {
            "current": current.id if current else None,
            "models": [model_info(m) for m in service.store.model_versions()],
        }

    @app.get("/api/learning-curve", tags=["read"], responses=error_responses(503))
    def curve() -> dict[str, Any]:
        """Labels trained on against test / evaluation-sample accuracy and macro-F1, one point
        per model version."""
        return {"points": learning_curve(service.store.model_versions())}

    @app.get("/api/check", tags=["read"], responses=error_responses(503))
    def check() -> dict[str, Any]:
        """The last `alloop check`: every finding with its severity, count, message and a few
        examples, and whether labels changed since (``stale``); ``check`` is null before the
        first one."""
        from loop.quality import META_KEY

        stored = service.store.get_meta(META_KEY)
        if not stored:
            return {"check": None, "stale": None}
        return {
            "check": stored,
            "stale": stored.get("label_revision") != service.store.label_revision(),
        }

    # -- write API ---------------------------------------------------------------------------
    auth = [Depends(require_token)]
    write_errors = error_responses(401, 503)

    @app.post(
        "/api/iterations",
        status_code=202,
        response_model=TriggerOut,
        dependencies=auth,
        tags=["write"],
        responses=write_errors,
    )
    def trigger_iteration() -> TriggerOut:
        """Run one iteration in the background (retrain if enough new labels, select, push)."""
        return TriggerOut(**service.trigger("iteration", "api").as_dict())

    @app.post(
        "/api/retrain",
        status_code=202,
        response_model=TriggerOut,
        dependencies=auth,
        tags=["write"],
        responses=error_responses(401, 422, 503),
    )
    def trigger_retrain(
        push: Annotated[
            bool,
            Query(description="push a new batch even when no label arrived since the last model"),
        ] = False,
    ) -> TriggerOut:
        """Retrain in the background, then push the next batch when labels arrived since the
        last model (or ``push=true``). With nothing new to learn (same labels, same settings)
        the answer is ``up-to-date`` and nothing runs; presses while a retrain waits coalesce."""
        return TriggerOut(**service.trigger("retrain", "api", push=push).as_dict())

    @app.post(
        "/api/nightly",
        status_code=202,
        response_model=TriggerOut,
        dependencies=auth,
        tags=["write"],
        responses=write_errors,
    )
    def trigger_nightly() -> TriggerOut:
        """Run the nightly job now: retrain on all labels, promote only if not worse, refresh
        the predictions of tasks waiting for an answer."""
        return TriggerOut(**service.trigger("nightly", "api").as_dict())

    @app.post(
        "/api/models/rollback",
        response_model=ModelOut,
        dependencies=auth,
        tags=["write"],
        responses=error_responses(401, 409, 503),
    )
    def rollback() -> ModelOut:
        """Reject the current model and return to the promoted version before it."""
        try:
            mv = service.controller.rollback()
        except ConfigError as err:
            raise HTTPException(status_code=409, detail=str(err)) from None
        log.info("rolled back to %s", mv.id)
        current = service.controller.current_model()
        return ModelOut(id=mv.id, status=mv.status, current=current.id if current else None)

    @app.post(
        "/api/models/{version_id}/promote",
        response_model=ModelOut,
        dependencies=auth,
        tags=["write"],
        responses=error_responses(401, 404, 409, 503),
    )
    def promote(version_id: str) -> ModelOut:
        """Make a model version the current one."""
        known = [m.id for m in service.store.model_versions()]
        if version_id not in known:
            raise HTTPException(
                status_code=404,
                detail=f"no model version {version_id!r}; known: {known[-10:]} (GET /api/models).",
            )
        try:
            mv = service.controller.promote(version_id)
        except (ModelError, ConfigError) as err:
            raise HTTPException(status_code=409, detail=str(err)) from None
        log.info("promoted %s", mv.id)
        current = service.controller.current_model()
        return ModelOut(id=mv.id, status=mv.status, current=current.id if current else None)

    app.include_router(
        ml_backend_router(service, service.secrets.ml_ok), prefix="/ml", tags=["ml-backend"]
    )
    document_errors(app)
    return app
