"""HTTP request and response models (pydantic lives here and in settings only)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from qa.settings import Mode, Settings
from qa.store import DocumentRow
from qa.types import Passage


class Problem(BaseModel):
    """RFC 9457 problem details: the body of every error response."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        None, description="Each invalid field of a 422: its location and message."
    )


class HighlightOut(BaseModel):
    start: int = Field(description="Offset of the answer span in the document text.")
    end: int
    text: str


class CitationOut(BaseModel):
    document_id: str
    title: str
    source: str | None
    date: str | None
    url: str | None
    chunk_id: int
    start: int = Field(description="Character offset into the document's canonical text.")
    end: int = Field(description="Exclusive end offset; text == document.text[start:end].")
    page: int | None = None
    heading_path: list[str] = Field(default_factory=list)


class PassageOut(BaseModel):
    rank: int
    score: float
    text: str
    citation: CitationOut
    highlight: HighlightOut | None = None
    confidence: float | None = Field(
        None, description="Chance, in [0, 1], that this passage answers the question."
    )


class AskResponse(BaseModel):
    question: str
    passages: list[PassageOut]
    took_ms: float


class AskRequestBase(BaseModel):
    model_config = ConfigDict(extra="forbid")


def ask_request_model(settings: Settings) -> type[AskRequestBase]:
    """The /ask body, with the limits of these settings in the OpenAPI schema."""
    return create_model(
        "AskRequest",
        __base__=AskRequestBase,
        question=(str, Field(min_length=1, max_length=settings.max_question_chars,
                             description="A natural-language question.")),
        k=(int, Field(settings.default_k, ge=1, le=settings.max_k,
                      description="How many passages to return.")),
        mode=(Mode, Field(settings.mode, description="Retrieval mode.")),
    )


class DocumentSummary(BaseModel):
    id: str
    title: str
    source: str | None
    date: str | None
    url: str | None
    metadata: dict[str, Any]
    content_hash: str
    indexed_at: str
    chunk_count: int


class DocumentOut(DocumentSummary):
    text: str = Field(description="Canonical text; every citation's [start:end] slices it.")


class DocumentPage(BaseModel):
    documents: list[DocumentSummary]
    total: int
    offset: int
    limit: int


class Health(BaseModel):
    status: str
    documents: int
    chunks: int
    model: str


def passage_out(p: Passage) -> PassageOut:
    c = p.citation
    return PassageOut(
        rank=p.rank, score=p.score, text=p.text, confidence=p.confidence,
        citation=CitationOut(
            document_id=c.document_id, title=c.title, source=c.source, date=c.date, url=c.url,
            chunk_id=c.chunk_id, start=c.start, end=c.end, page=c.page,
            heading_path=list(c.heading_path),
        ),
        highlight=HighlightOut(start=p.highlight.start, end=p.highlight.end,
                               text=p.highlight.text) if p.highlight else None,
    )


def ask_response(question: str, passages: list[Passage], took_ms: float) -> AskResponse:
    return AskResponse(question=question, passages=[passage_out(p) for p in passages],
                       took_ms=round(took_ms, 2))


def document_summary(row: DocumentRow) -> DocumentSummary:
    return DocumentSummary(**{k: getattr(row, k) for k in DocumentSummary.model_fields})


def document_out(row: DocumentRow) -> DocumentOut:
    return DocumentOut(**{k: getattr(row, k) for k in DocumentOut.model_fields})
