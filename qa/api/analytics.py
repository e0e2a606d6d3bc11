"""GET /analytics: what the query log teaches (admin keys only), the JSON of
`qa analytics --json`."""

# No `from __future__ import annotations`: FastAPI reads these signatures at run time.

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from qa.analytics import read_history, summarize, window_start
from qa.api.deps import AdminKey
from qa.api.problems import PROBLEM_RESPONSES
from qa.embedding import Embedder
from qa.querylog import QueryLog


class AskedOut(BaseModel):
    question: str = Field(description="Its most common wording.")
    count: int


class GapOut(AskedOut):
    count: int = Field(description="Askings not found or marked 👎.")
    not_found: int
    down: int
    asked: int


class GroupOut(BaseModel):
    count: int = Field(description="Askings of all its wordings.")
    questions: list[AskedOut]


class DuplicatesOut(BaseModel):
    threshold: float = Field(description="Cosine to the group's most asked wording.")
    limit: int = Field(description="The most frequent distinct questions compared, at most.")
    distinct: int
    considered: int
    groups: list[GroupOut]
    note: str | None


class DayOut(BaseModel):
    questions: int
    not_found: int
    not_found_share: float


class AnalyticsOut(BaseModel):
    """The documented shape of the body (the route sends `Analytics.to_dict()` as it is)."""

    since: str | None = Field(description="The window's start, ISO 8601 UTC.")
    questions: int
    note: str | None = Field(description="Why there is nothing to show, when there is not.")
    per_day: dict[str, DayOut] = Field(description="UTC date → that day's questions.")
    latency_ms: dict[str, float] = Field(description="p50 and p95 (nearest rank).")
    answered: dict[str, float] = Field(description="found, not_found and their shares.")
    feedback: dict[str, float] = Field(description="up, down, rated, up_rate, down_rate "
                                       "(of rated), rated_share (of questions).")
    top_questions: list[AskedOut] = Field(description="Case, spaces and trailing "
                                          "punctuation aside; the ten most asked.")
    knowledge_gaps: list[GapOut] = Field(description="The ten most often not found or 👎.")
    near_duplicates: DuplicatesOut
    collections: dict[str, int] = Field(description="Questions per collection, when more "
                                        "than one was asked.")
    confidence_histogram: dict[str, list[float]] = Field(description="edges (11), counts "
                                                         "(10) of answer confidence.")


router = APIRouter(responses=PROBLEM_RESPONSES)

Since = Annotated[str, Query(max_length=64, description="A duration back from now (7d, 24h, "
                             "90m) or an ISO 8601 date or time.")]


@router.get("/analytics", tags=["analytics"], response_class=JSONResponse,
            responses={200: {"model": AnalyticsOut, "description": "The summary"}})
def analytics(request: Request, _: AdminKey, since: Since = "30d") -> JSONResponse:
    """Questions per day, latency, the answered share, 👍/👎, the most asked questions, the
    knowledge gaps and the questions asked in other words, over every collection."""
    start = window_start(since)
    log: QueryLog | None = getattr(request.app.state, "query_log", None)
    settings = request.app.state.settings
    history = log.history(start) if log is not None else read_history(settings.index_dir,
                                                                      start)
    embedder: Embedder = request.app.state.catalog.embedder
    result: dict[str, Any] = summarize(
        history, since=start, embed=lambda texts: embedder.embed_questions(texts, progress=False),
    ).to_dict()
    return JSONResponse(result)
