"""Reading a collection over HTTP: POST /ask, GET /documents[/{id}], GET /healthz (each of
`default`, and of any collection under /collections/{collection}/, healthz excepted)."""

# No `from __future__ import annotations`: FastAPI must see the locally built AskRequest.

import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from qa.api.deps import CallerKey, Scope, collection_name, scope_dependency, scope_of
from qa.api.feedback import log_answer
from qa.api.guards import AskRateLimit
from qa.api.problems import RATE_LIMITED_RESPONSE
from qa.api.schemas import (
    AskResponse,
    DocumentOut,
    DocumentPage,
    Health,
    LastCrawl,
    ask_request_model,
    document_out,
    document_summary,
)
from qa.crawl import last_crawl
from qa.filters import all_of, parse_filter
from qa.keys import ApiKey
from qa.retrieval import answer_of, retrieve
from qa.settings import Settings
from qa.telemetry import record_question
from qa.types import DEFAULT_COLLECTION
from qa.wire import ask_json


def search_router(settings: Settings, *, named: bool = False) -> APIRouter:
    """The read routes of `default`, or with `named` of the collection in the path (mounted
    under /collections/{collection}), with the /ask limits (k, question length, rate) of these
    settings. A private collection needs a search key for it."""
    router = APIRouter()
    AskRequest = ask_request_model(settings)
    ask_rate_limit = AskRateLimit(settings.ask_rate_limit)
    Reader = Annotated[Scope, Depends(scope_dependency("search", named=named))]
    Named = Annotated[str, Depends(collection_name(named=named))]

    @router.post("/ask", response_model=AskResponse, tags=["search"],
                 responses={422: {"description": "Invalid question, k, mode or filter"},
                            **RATE_LIMITED_RESPONSE})
    async def ask(body: AskRequest, name: Named, key: CallerKey,  # type: ignore[valid-type]
                  request: Request) -> Response:
        # The scope (Reader's rules, which may read the catalog or open the collection) is
        # resolved on the worker thread that answers: one hop off the event loop instead of
        # two, ~0.6 ms of every answer on 2 cores (README "Performance").
        return await run_in_threadpool(respond, body, name, key, request)

    def respond(body: Any, name: str, key: ApiKey | None, request: Request) -> Response:
        scope = scope_of(request, name, key, "search")
        ask_rate_limit.check(request, scope.rate_identity)
        started = time.perf_counter()
        question = body.question.strip()  # type: ignore[attr-defined]
        asked = body.filter  # type: ignore[attr-defined]
        # A key's fixed filter is ANDed with the request's: a request can narrow it, never widen.
        where = all_of(scope.filter, None if asked is None else parse_filter(asked))
        # `retrieve` refuses a blank question (422), so the rule lives in one place.
        passages = retrieve(scope.collection, question, body.k,  # type: ignore[attr-defined]
                            body.mode, filter=where)  # type: ignore[attr-defined]
        answer = answer_of(passages, settings.min_confidence)
        took_ms = (time.perf_counter() - started) * 1000
        record_question(scope.name, answer.found, took_ms / 1000)
        query_id = log_answer(request, scope, body, question, passages, answer, took_ms)
        # A Response is sent as is: FastAPI neither re-validates it against `response_model`
        # (which stays, for the OpenAPI schema) nor runs jsonable_encoder; orjson writes it in
        # one native pass. Saves ~0.3 ms of a k=5 answer (README "Performance").
        return Response(orjson.dumps(ask_json(question, passages, answer, took_ms, query_id)),
                        media_type="application/json")

    @router.get("/documents", response_model=DocumentPage, tags=["documents"])
    def list_documents(
        scope: Reader,
        offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # SQLite's largest integer
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> DocumentPage:
        rows, total = scope.collection.list_documents(offset, limit, filter=scope.filter)
        return DocumentPage(documents=[document_summary(r) for r in rows], total=total,
                            offset=offset, limit=limit)

    @router.get("/documents/{document_id:path}", response_model=DocumentOut, tags=["documents"],
                responses={404: {"description": "Unknown document"}})
    def get_document(document_id: str, scope: Reader) -> DocumentOut:
        return document_out(scope.collection.get_document(document_id, filter=scope.filter))

    if named:
        return router

    @router.get("/healthz", response_model=Health, tags=["service"])
    def healthz(request: Request) -> Health:
        collection = request.app.state.catalog.get(DEFAULT_COLLECTION)
        documents, chunks = collection.counts()
        crawl = last_crawl(collection.directory)  # crawl.json: any process's last crawl
        return Health(status="ok", documents=documents, chunks=chunks,
                      model=collection.manifest.model,
                      last_crawl=LastCrawl.model_validate(crawl) if crawl else None,
                      keywords=collection.keywords)

    return router
