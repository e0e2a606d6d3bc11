"""The query log over HTTP: each answer /ask returns is logged under a `query_id`, and
POST /feedback stores a reader's 👍/👎 (or "This answered it") on it."""

# No `from __future__ import annotations`: FastAPI reads these signatures at run time.

import logging
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from qa.api.deps import Scope
from qa.api.guards import AskRateLimit
from qa.api.problems import RATE_LIMITED_RESPONSE
from qa.errors import QAError, QueryNotFound
from qa.querylog import LOG_FILE, MAX_COMMENT_CHARS, LoggedPassage, LoggedQuery, QueryLog
from qa.settings import Settings
from qa.telemetry import record_feedback
from qa.types import Answer, Passage

logger = logging.getLogger("qa")


class FeedbackIn(BaseModel):
    # Strict, as /ask: `passage: "2"` is a client's mistake to report, not a number to guess.
    model_config = ConfigDict(extra="forbid", strict=True)

    query_id: str = Field(pattern=r"^[0-9a-f]{32}$",
                          description="The `query_id` of the /ask answer being judged.")
    rating: Literal["up", "down"] = Field(description="Whether the answer helped.")
    passage: int | None = Field(None, ge=1, description="The rank of the passage that "
                                "answered (\"This answered it\"); the rating is then up.")
    comment: str | None = Field(None, max_length=MAX_COMMENT_CHARS,
                                description="A reader's words on the answer (no NUL).")


class FeedbackOut(BaseModel):
    query_id: str
    at: str = Field(description="When it was stored, ISO 8601 UTC.")
    rating: Literal["up", "down"]
    passage: int | None
    comment: str | None


def open_query_log(settings: Settings) -> QueryLog | None:
    """The server's query log, purged of what is past its retention; None when QA_QUERY_LOG
    is off or the index is read-only (then nothing in the folder is written)."""
    if not settings.query_log or settings.read_only:
        return None
    log = QueryLog(settings.index_dir / LOG_FILE, retention_days=settings.query_log_days)
    try:
        log.purge()
    except QAError as exc:  # a busy or full log must not keep the server from answering
        logger.warning("query log not purged at start: %s", exc.detail)
    return log


def log_answer(request: Request, scope: Scope, body: Any, question: str,
               passages: list[Passage], answer: Answer, took_ms: float) -> str | None:
    """Queue this answer for the log (never waiting on the disk); its query id, or None when
    the log is off."""
    log: QueryLog | None = getattr(request.app.state, "query_log", None)
    if log is None:
        return None
    query_id = log.new_id()
    log.record(LoggedQuery(
        id=query_id, at=datetime.now(UTC), collection=scope.name, question=question,
        mode=body.mode, k=body.k, filter=body.filter, found=answer.found,
        confidence=answer.confidence, latency_ms=took_ms,
        client=log.client_hash(request.client.host if request.client else "unknown"),
        key_id=None if scope.key is None else scope.key.id,
        passages=tuple(LoggedPassage(p.rank, p.citation.document_id, p.citation.start,
                                     p.citation.end, p.score, p.confidence) for p in passages)))
    return query_id


def feedback_router(settings: Settings) -> APIRouter:
    """POST /feedback, rate-limited per client address as /ask is (its own count).

    No key is asked for: a query id is 128 random bits that only the asker was given.
    """
    router = APIRouter()
    rate_limit = AskRateLimit(settings.ask_rate_limit)

    @router.post("/feedback", response_model=FeedbackOut, tags=["search"],
                 responses={404: {"description": "Unknown query id, or the query log is off"},
                            422: {"description": "Invalid rating, passage or comment"},
                            **RATE_LIMITED_RESPONSE})
    def feedback(body: FeedbackIn, request: Request) -> FeedbackOut:
        rate_limit.check(request)
        log: QueryLog | None = request.app.state.query_log
        if log is None:
            raise QueryNotFound("this server keeps no query log (QA_QUERY_LOG=off, or a "
                                "read-only index), so there is no answer to give feedback on")
        stored = log.feedback(body.query_id, body.rating, body.passage, body.comment)
        record_feedback(stored.rating)
        return FeedbackOut(**stored.to_dict())

    return router
