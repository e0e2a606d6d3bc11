"""Errors leave as RFC 9457 problem+json: one renderer, the handlers, the OpenAPI saying so."""

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qa.api.schemas import Problem
from qa.errors import QAError

logger = logging.getLogger("qa")
PROBLEM = "application/problem+json"

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No `Authorization: Bearer` key",
          "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    403: {"description": "Key not accepted, or HTTP writes disabled (no QA_API_KEYS)"},
    413: {"description": "Body over QA_MAX_BODY_BYTES"},
    415: {"description": "Neither JSON nor multipart, or an unsupported file type"},
    422: {"description": "Malformed JSON, invalid fields, or a file that cannot be indexed"},
    503: {"description": "The index is read-only (QA_READ_ONLY, or a read-only volume)"},
    507: {"description": "The disk holding the index is full; nothing was written"},
}

RATE_LIMITED_RESPONSE: dict[int | str, dict[str, Any]] = {
    429: {"description": "Over QA_ASK_RATE_LIMIT for this client",
          "headers": {"Retry-After": {"description": "Seconds to wait",
                                      "schema": {"type": "integer"}}}},
}


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def error_response(exc: QAError) -> JSONResponse:
    """The one rendering of a `QAError`: its class gives status and title, it may add headers."""
    response = problem(exc.status, exc.title, exc.detail)
    response.headers.update(exc.headers)
    return response


def internal_error(exc: Exception) -> JSONResponse:
    """The 500 body: the exception's type only, since its message may hold server internals."""
    return problem(500, "Internal error", f"{type(exc).__name__}: the server failed; see logs")


def validation_message(errors: Iterable[Mapping[str, Any]], where: str = "", *,
                       skip: int = 0) -> str:
    """"0.text: Field required; 1.id: ..." — where each problem is, then what it is.

    `where` goes before each location (an item's index in a batch); `skip` drops leading parts
    of it (FastAPI's "body" or "query").
    """
    messages = []
    for e in errors:
        parts = [where, *(str(p) for p in list(e.get("loc", ()))[skip:])]
        messages.append(f"{'.'.join(p for p in parts if p) or 'body'}: {e.get('msg', '')}")
    return "; ".join(messages)


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, leaves as the same problem+json shape.

    Call it before adding other middleware: the failure net must be the innermost one.
    """

    # Starlette looks handlers up along the exception's MRO, so every QAError subclass,
    # present or future, is rendered here by its class's status and title.
    @app.exception_handler(QAError)
    async def _qa_error(request: Request, exc: QAError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")}
            for e in exc.errors()
        ]
        detail = validation_message(errors, skip=1)
        return problem(422, "Invalid input", detail or "invalid request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, ValueError):
            # FastAPI's "error parsing the body" (e.g. bytes that are not UTF-8) is malformed
            # JSON like any other, so it gets the same 422.
            return problem(422, "Invalid input", f"malformed JSON body: {exc.__cause__}")
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        response = problem(exc.status_code, title, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return internal_error(exc)

    # Innermost, so even a 500 passes back through CORS: a browser then reads the
    # problem instead of reporting the server unreachable.
    app.add_middleware(ContainFailures)


class ContainFailures:
    """An exception no handler took becomes the 500 problem, answered here, inside the other
    middleware. Plain ASGI rather than `@app.middleware("http")`, whose BaseHTTPMiddleware
    runs the app in a task and streams its response back through a channel: 1.6 ms of every
    /ask on a busy 2-core box (100k chunks, two servers side by side)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_watched)
        except Exception as exc:
            # Not HTTP (lifespan), or half a response is out: nothing can replace it.
            if scope["type"] != "http" or started:
                raise
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await internal_error(exc)(scope, receive, send)


def declare_problem_responses(app: FastAPI) -> None:
    """Make the OpenAPI schema say what the handlers send: every 4xx/5xx is problem+json."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Problem"] = Problem.model_json_schema()
        ref = {"schema": {"$ref": "#/components/schemas/Problem"}}
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if "security" in operation:  # it reads a key: see qa/api/deps.py
                    responses.setdefault("401", {"description": "No key where one is needed, "
                                                 "or one that is unknown, expired or revoked"})
                    responses.setdefault("403", {"description": "The key may not do this"})
                if "{collection}" in path:
                    responses.setdefault("404", {"description": "Unknown collection"})
                if "requestBody" in operation:
                    responses.setdefault("413", {"description": "Body over QA_MAX_BODY_BYTES"})
                    responses.setdefault("415", {"description": "Unsupported content type"})
                for code, response in responses.items():
                    if code[:1] in ("4", "5"):
                        response["content"] = {PROBLEM: ref}
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
