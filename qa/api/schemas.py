"""HTTP request and response models, and the converters from domain values to them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from qa.loaders import MAX_ID_CHARS, id_problem, metadata_problem, text_problem
from qa.settings import Mode, Settings
from qa.types import Answer, DocumentRow, Passage
from qa.wire import ask_json

MAX_TITLE_CHARS = 1000

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
        None, description="Estimated probability, in [0, 1], that this passage answers the "
        "question."
    )


class AnswerOut(BaseModel):
    found: bool = Field(description="Whether the passages hold an answer: `confidence` is at "
                        "least `threshold` (QA_MIN_CONFIDENCE). Passages are returned either way.")
    confidence: float = Field(description="Estimated probability, in [0, 1], that the first "
                              "passage answers the question.")
    threshold: float = Field(description="The confidence an answer needs (QA_MIN_CONFIDENCE).")


class AskResponse(BaseModel):
    question: str
    answer: AnswerOut
    passages: list[PassageOut]
    took_ms: float
    query_id: str | None = Field(
        None, description="This answer's id in the query log, for POST /feedback; null when "
        "the log is off (QA_QUERY_LOG=off) or from the command line.")


class AskRequestBase(BaseModel):
    # Strict: `k: true` or `k: "3"` is a client's mistake to report, not a number to guess.
    model_config = ConfigDict(extra="forbid", strict=True)


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
        filter=(dict[str, Any] | None, Field(
            None, description="Only passages whose document (or page) matches, e.g. "
            '{"metadata.tag": {"$in": ["policy", "news"]}, "date": {"$gte": "2025-01-01"}}; '
            "see the README's filter language.")),
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


class LastCrawl(BaseModel):
    """The `default` collection's last crawl (`qa crawl` or `qa serve --crawl-every`)."""

    finished_at: str
    seconds: float
    pages: int
    added: int
    replaced: int
    unchanged: int
    pruned: int
    skipped: int
    failed: int
    embedded: int
    requests: int
    complete: bool = True  # False: stopped early (max pages, or the server stopping)


class Health(BaseModel):
    status: str
    documents: int
    chunks: int
    model: str
    last_crawl: LastCrawl | None = None
    # Where keyword search runs: "memory", "building" (FTS5 meanwhile) or "fts5"; the answers
    # are the same, only their speed differs (settings.keywords_in_memory).
    keywords: str = "fts5"


# -- writes ----------------------------------------------------------------------------------


class DocumentFields(BaseModel):
    """A document's content as JSON; the body of PUT /documents/{id}."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, min_length=1, max_length=MAX_TITLE_CHARS,
                              description="Defaults to the first Markdown heading, then the id.")
    text: str = Field(min_length=1, description="The document's text (UTF-8, no NUL).")
    date: str | None = Field(None, max_length=64, description="Publication date, e.g. 2025-05-15.")
    url: str | None = Field(None, max_length=2048, description="Where the document lives.")
    metadata: dict[str, Any] = Field(default_factory=dict,
                                     description="Kept with the document and returned as is.")

    @field_validator("text", "title", "date", "url")
    @classmethod
    def _clean_text(cls, value: str | None) -> str | None:
        problem = None if value is None else text_problem(value, "this field")
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("metadata")
    @classmethod
    def _clean_metadata(cls, value: dict[str, Any]) -> dict[str, Any]:
        # The values themselves, not their JSON: `json.dumps` escapes a NUL as \u0000.
        problem = metadata_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class DocumentIn(DocumentFields):
    """One document of POST /documents; without an id, one is derived from the text."""

    id: str | None = Field(None, min_length=1, max_length=MAX_ID_CHARS,
                           description="Stable id; default `text-` + a hash of the text.")

    @field_validator("id")
    @classmethod
    def _clean_id(cls, value: str | None) -> str | None:
        problem = None if value is None else id_problem(value)
        if problem:
            raise ValueError(problem)
        return value


class ItemError(BaseModel):
    title: str
    status: int
    detail: str


class WriteItem(BaseModel):
    id: str | None = Field(description="The document id; null if the item failed before one "
                                       "was known.")
    status: Literal["added", "replaced", "unchanged", "failed"]
    error: ItemError | None = None


class WriteResult(BaseModel):
    results: list[WriteItem] = Field(description="One entry per document, in request order.")
    added: int
    replaced: int
    unchanged: int
    failed: int
    chunks_embedded: int
    took_ms: float


# -- converters ------------------------------------------------------------------------------


def ask_response(question: str, passages: list[Passage], answer: Answer, took_ms: float
                 ) -> AskResponse:
    """The /ask body as a model (for Python callers); the route itself sends `ask_json`."""
    return AskResponse.model_validate(ask_json(question, passages, answer, took_ms))


def document_summary(row: DocumentRow) -> DocumentSummary:
    return DocumentSummary(**{k: getattr(row, k) for k in DocumentSummary.model_fields})


def document_out(row: DocumentRow) -> DocumentOut:
    return DocumentOut(**{k: getattr(row, k) for k in DocumentOut.model_fields})
