"""HTTP API: `create_app(settings)` builds the FastAPI app; errors are RFC 9457 problem+json."""

# No `from __future__ import annotations`: FastAPI must see the locally built AskRequest.

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
from qa.retrieval import retrieve
from qa.schemas import (
    AskResponse,
    DocumentOut,
    DocumentPage,
    Health,
    ask_request_model,
    ask_response,
    document_out,
    document_summary,
)
from qa.settings import Settings

PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or the framework's, leaves as the same problem+json shape."""

    @app.exception_handler(QAError)
    async def _qa_error(request: Request, exc: QAError) -> JSONResponse:
        return problem(exc.status, exc.title, exc.detail)

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
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        response = problem(exc.status_code, title, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return problem(500, "Internal error", f"{type(exc).__name__}: the server failed; see logs")


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
              responses={422: {"description": "Invalid question, k or mode"}})
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
        offset: Annotated[int, Query(ge=0)] = 0,
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

    return app


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory` and `qa serve --workers N`: settings from QA_*."""
    return create_app(Settings())
