"""Reading the collection over HTTP: POST /ask, GET /documents[/{id}], GET /healthz."""

# No `from __future__ import annotations`: FastAPI must see the locally built AskRequest.

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from qa.api.deps import CollectionDep
from qa.api.guards import AskRateLimit
from qa.api.problems import RATE_LIMITED_RESPONSE
from qa.api.schemas import (
    AskResponse,
    DocumentOut,
    DocumentPage,
    Health,
    ask_request_model,
    ask_response,
    document_out,
    document_summary,
)
from qa.retrieval import answer_of, retrieve
from qa.settings import Settings


def search_router(settings: Settings) -> APIRouter:
    """The read routes, with the /ask limits (k, question length, rate) of these settings."""
    router = APIRouter()
    AskRequest = ask_request_model(settings)
    ask_rate_limit = AskRateLimit(settings.ask_rate_limit)

    @router.post("/ask", response_model=AskResponse, tags=["search"],
                 dependencies=[Depends(ask_rate_limit)],
                 responses={422: {"description": "Invalid question, k or mode"},
                            **RATE_LIMITED_RESPONSE})
    def ask(body: AskRequest, collection: CollectionDep) -> AskResponse:  # type: ignore[valid-type]
        started = time.perf_counter()
        question = body.question.strip()  # type: ignore[attr-defined]
        # `retrieve` refuses a blank question (422), so the rule lives in one place.
        passages = retrieve(collection, question, body.k, body.mode)  # type: ignore[attr-defined]
        return ask_response(question, passages, answer_of(passages, settings.min_confidence),
                            (time.perf_counter() - started) * 1000)

    @router.get("/documents", response_model=DocumentPage, tags=["documents"])
    def list_documents(
        collection: CollectionDep,
        offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,  # SQLite's largest integer
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> DocumentPage:
        rows, total = collection.list_documents(offset, limit)
        return DocumentPage(documents=[document_summary(r) for r in rows], total=total,
                            offset=offset, limit=limit)

    @router.get("/documents/{document_id:path}", response_model=DocumentOut, tags=["documents"],
                responses={404: {"description": "Unknown document"}})
    def get_document(document_id: str, collection: CollectionDep) -> DocumentOut:
        return document_out(collection.get_document(document_id))

    @router.get("/healthz", response_model=Health, tags=["service"])
    def healthz(collection: CollectionDep) -> Health:
        documents, chunks = collection.counts()
        return Health(status="ok", documents=documents, chunks=chunks,
                      model=collection.manifest.model)

    return router
