"""HTTP API: `create_app(settings)` builds the FastAPI app; errors are RFC 9457 problem+json."""

# No `from __future__ import annotations`: FastAPI must see the locally built AskRequest.

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qa import __version__
from qa.collection import Collection
from qa.embedding import Embedder
from qa.errors import InvalidInput, QAError
from qa.pages import router as pages_router
from qa.retrieval import retrieve
from qa.schemas import (
    AskResponse,
    DocumentOut,
    DocumentPage,
    Health,
    Problem,
    ask_request_model,
    ask_response,
    document_out,
    document_summary,
)
from qa.settings import Settings
from qa.writes import (
    RATE_LIMITED_RESPONSE,
    AskRateLimit,
    BodyLimitMiddleware,
    documents_router,
)

logger = logging.getLogger("qa")
PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def error_response(exc: QAError) -> JSONResponse:
    response = problem(exc.status, exc.title, exc.detail)
    response.headers.update(exc.headers)
    return response


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, leaves as the same problem+json shape."""

    @app.exception_handler(QAError)
    async def _qa_error(request: Request, exc: QAError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
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
        return problem(500, "Internal error", f"{type(exc).__name__}: the server failed; see logs")


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
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
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


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None) -> FastAPI:
    """Build the app. The model and index load in the lifespan, never at import."""
    settings = settings or Settings()
    AskRequest = ask_request_model(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        model = embedder or Embedder(settings.model, device=settings.device,
                                     batch_size=settings.batch_size)
        app.state.collection = Collection.open(settings, model)
        try:
            yield
        finally:
            app.state.collection.close()

    app = FastAPI(
        title="qa",
        version=__version__,
        description="Answers questions over your documents with cited passages.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    declare_problem_responses(app)

    @app.middleware("http")
    async def contain_failures(request: Request, call_next: Any) -> Any:
        # Innermost, so even a 500 passes back through CORS: a browser then reads the
        # problem instead of reporting the server unreachable.
        try:
            return await call_next(request)
        except Exception as exc:
            logger.exception("unhandled error on %s %s", request.method, request.url.path)
            return problem(500, "Internal error",
                           f"{type(exc).__name__}: the server failed; see logs")

    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                       render=error_response)
    ask_rate_limit = AskRateLimit(settings.ask_rate_limit)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Content-Type", "Authorization"],
        )

    def get_collection(request: Request) -> Collection:
        return request.app.state.collection  # type: ignore[no-any-return]

    CollectionDep = Annotated[Collection, Depends(get_collection)]

    @app.post("/ask", response_model=AskResponse, tags=["search"],
              dependencies=[Depends(ask_rate_limit)],
              responses={422: {"description": "Invalid question, k or mode"},
                         **RATE_LIMITED_RESPONSE})
    def ask(body: AskRequest, collection: CollectionDep) -> AskResponse:  # type: ignore[valid-type]
        started = time.perf_counter()
        question = body.question.strip()  # type: ignore[attr-defined]
        if not question:
            raise InvalidInput("question must not be empty or only whitespace")
        passages = retrieve(collection, question, body.k, body.mode)  # type: ignore[attr-defined]
        return ask_response(question, passages, (time.perf_counter() - started) * 1000)

    @app.get("/documents", response_model=DocumentPage, tags=["documents"])
    def list_documents(
        collection: CollectionDep,
        offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # SQLite's largest integer
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> DocumentPage:
        rows, total = collection.store.list_documents(offset, limit)
        return DocumentPage(documents=[document_summary(r) for r in rows], total=total,
                            offset=offset, limit=limit)

    @app.get("/documents/{document_id:path}", response_model=DocumentOut, tags=["documents"],
             responses={404: {"description": "Unknown document"}})
    def get_document(document_id: str, collection: CollectionDep) -> DocumentOut:
        return document_out(collection.store.get_document(document_id))

    @app.get("/healthz", response_model=Health, tags=["service"])
    def healthz(collection: CollectionDep) -> Health:
        documents, chunks = collection.store.counts()
        return Health(status="ok", documents=documents, chunks=chunks,
                      model=collection.manifest.model)

    app.include_router(pages_router)
    app.include_router(documents_router(settings))
    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and `qa serve --workers N`: settings from QA_*."""
    return create_app(Settings())
