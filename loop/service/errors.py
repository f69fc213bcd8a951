"""One error shape for every answer of the service that is not a success, and the OpenAPI
responses that document it.

Every 4xx/5xx body is ``{"detail": "<one line: what was expected, what was found, the fix>"}``,
plus ``"errors": [{"loc": [...], "msg": ..., "type": ...}, ...]`` when a request failed
validation field by field. Values sent are never echoed (bodies may carry Label Studio's access
token or a task-data password).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from loop.text import escape_forbidden


class ErrorItem(BaseModel):
    loc: list[str | int] = Field(
        description="where: 'body', 'query', 'path' or 'header', then field names"
    )
    msg: str
    type: str


class ErrorOut(BaseModel):
    """The body of every error answer."""

    detail: str = Field(description="what was expected, what was found, and how to fix it")
    errors: list[ErrorItem] | None = Field(
        None, description="field by field, when the request failed validation"
    )


class ApiError(HTTPException):
    """An HTTPException whose body is :class:`ErrorOut` with ``errors``."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            status_code=status_code, detail=detail, headers=dict(headers or {}) or None
        )
        self.errors = [dict(e) for e in errors] if errors else None


def validation_items(
    errors: Sequence[Mapping[str, Any]], where: str = "body"
) -> list[dict[str, Any]]:
    """pydantic / FastAPI validation errors as :class:`ErrorItem` dicts, without the input."""
    out = []
    for e in errors:
        loc = [p if isinstance(p, int) else str(p) for p in e.get("loc", ())]
        if not loc or loc[0] not in ("body", "query", "path", "header", "cookie"):
            loc = [where, *loc]
        out.append({"loc": loc, "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))})
    return out


def summary(items: Sequence[Mapping[str, Any]]) -> str:
    """One line naming the invalid fields."""
    shown = "; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in items[:5])
    more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
    return (
        f"the request does not match the documented schema: {shown}{more}. Fix: see the "
        "operation's schema at /docs."
    )


def error_body(detail: Any, errors: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    if not isinstance(detail, str):  # a bare HTTPException with a list or dict detail
        items = validation_items(detail) if isinstance(detail, list) else []
        errors = errors or items or None
        detail = summary(items) if items else str(detail)
    body: dict[str, Any] = {"detail": detail}
    if errors:
        body["errors"] = [dict(e) for e in errors]
    return body


def install_error_handlers(app: FastAPI) -> None:
    """Make every HTTP error and every validation failure answer :class:`ErrorOut`."""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        errors = getattr(exc, "errors", None)
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {escape_forbidden(request.url.path)}. Fix: see /docs."
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and detail == "Method Not Allowed":
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            detail = (
                f"{request.method} is not allowed on {escape_forbidden(request.url.path)}. Fix: use "
                f"{' or '.join(allowed)} (see /docs)."
            )
        return JSONResponse(
            error_body(detail, errors), status_code=exc.status_code, headers=headers or None
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        items = validation_items(exc.errors())
        return JSONResponse({"detail": summary(items), "errors": items}, status_code=422)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes on this path (Starlette's 405 names only the
    first route's, when a path has one route per method)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        for m in getattr(route, "methods", None) or ():
            if route.matches({**request.scope, "method": m})[0] == Match.FULL:
                methods.add(m)
    return sorted(methods)


_DESCRIPTIONS = {
    400: "the body is not what the operation reads (not JSON, a bad header)",
    401: "missing or wrong credentials; nothing was done",
    404: "no such resource",
    409: "the request conflicts with the current state",
    413: "the body is larger than service.max_body_bytes",
    422: "the body or a parameter does not match the schema; nothing was done",
    503: "the database, the model or Label Studio is unavailable; try again",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error codes, each with the :class:`ErrorOut` body."""
    return {
        code: {"model": ErrorOut, "description": _DESCRIPTIONS.get(code, "error")} for code in codes
    }


def document_errors(app: FastAPI) -> None:
    """Make the app's OpenAPI document say what the service does: FastAPI's default 422
    (``HTTPValidationError``) becomes :class:`ErrorOut`, and every operation that takes a body
    lists 400 and 413 (the body-size middleware answers them before any route)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        ref = {"$ref": "#/components/schemas/ErrorOut"}
        for ops in schema.get("paths", {}).values():
            for method, op in ops.items():
                responses = op.setdefault("responses", {})
                for code, resp in responses.items():
                    content = resp.get("content", {}).get("application/json", {})
                    target = content.get("schema", {}).get("$ref", "")
                    if code == "422" and target.endswith("/HTTPValidationError"):
                        content["schema"] = dict(ref)
                if method in ("post", "put", "patch"):
                    for code in (400, 413):
                        responses.setdefault(
                            str(code),
                            {
                                "description": _DESCRIPTIONS[code],
                                "content": {"application/json": {"schema": dict(ref)}},
                            },
                        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        if "ErrorOut" not in components:
            components.update(
                ErrorOut.model_json_schema(ref_template="#/components/schemas/{model}").pop(
                    "$defs", {}
                )
            )
            components["ErrorOut"] = ErrorOut.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            components["ErrorOut"].pop("$defs", None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
