"""Agents as callers: the Model Context Protocol server, over the same retrieval as /ask.

`build_server(settings, gate)` makes one server for both transports: `qa mcp` (stdio, for
desktop clients) and /mcp in the HTTP app (streamable HTTP). What differs between them is the
`Gate`, which says how a call reaches a collection: the CLI's reaches every collection of its
index (the operator's own files, as `qa ask`); the app's authenticates the request's key and
authorizes it exactly as /ask does (qa/api/mcp.py). Every search then runs the one path of
/ask: the key's fixed filter ANDed with the caller's, `retrieve`, `answer_of`.
"""

# No `from __future__ import annotations`: the SDK reads the tools' signatures at run time,
# and their limits come from `settings`, a local of build_server.

import time
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from mcp.server.mcpserver import Context, MCPServer, ResourceSecurity
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from qa import __version__
from qa.catalog import Catalog
from qa.collection import Collection
from qa.errors import DocumentNotFound, QAError
from qa.filters import Filter, all_of, parse_filter
from qa.loaders import MAX_ID_CHARS
from qa.retrieval import answer_of, retrieve
from qa.settings import Mode, Settings
from qa.telemetry import record_question
from qa.types import Answer, Passage

__all__ = ["Gate", "LocalGate", "Reach", "build_server"]

# The most characters one get_document call returns: a span of a long document is asked for
# with start/end, page by page, rather than filling the model's context at once.
MAX_SPAN_CHARS = 100_000
QUOTE_CHARS = 300  # of a passage quoted in the text rendering when it has no highlight
COLLECTION_FIELD = Field(None, max_length=64, description=(
    "Which collection to read (list_collections names them); omitted: the server's own."))

INSTRUCTIONS = (
    "Searches a document collection and returns passages with exact citations. Call `search` "
    "with the user's question; quote the passages you rely on and cite them as document "
    "title + document_id + start:end. `get_document` returns a document's canonical text (or "
    "a span of it), which every citation's start/end index: text[start:end] is the passage. "
    "When answer.found is false, say the documents do not seem to answer instead of guessing.")

SEARCH_DESCRIPTION = (
    "Find the passages of the indexed documents that answer a natural-language question. Use "
    "it for any question about what the documents say, before answering from memory. Returns "
    "ranked passages; each has its text, a highlight (the sentence most likely to answer), a "
    "confidence in [0, 1] that it answers, and a citation: document_id, title, url, page (for "
    "PDFs) and start/end, the character offsets of the passage in the document's canonical "
    "text, so get_document(document_id).text[start:end] is exactly the passage text. "
    "answer.found says whether the best passage is confident enough to count as an answer; "
    "when false, the passages are only the closest ones. `filter` keeps only documents that "
    'match, e.g. {"date": {"$gte": "2025-01-01"}} or {"metadata.tag": {"$in": ["news"]}}; '
    "`mode` picks dense (meaning), keyword (exact words) or hybrid (both, the default).")

DOCUMENT_DESCRIPTION = (
    "Read a document's canonical text, whole or a span: the text that search citations point "
    "into (a citation's start/end are character offsets into it, end exclusive). Use it to "
    "read around a passage (e.g. start=citation.start-500) or to check a quote. Returns at "
    f"most {MAX_SPAN_CHARS} characters; `length` is the whole text's, so read a long "
    "document in spans.")

COLLECTIONS_DESCRIPTION = (
    "List the document collections this caller may search, with how many documents each "
    "holds; pass a name as `collection` to search or get_document.")


# -- what a call may reach ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """A collection one call may read, with the filter the caller's key fixes (None: none)."""

    name: str
    collection: Collection
    filter: Filter | None
    public: bool | None = None  # read only where it is shown (list_collections)


class Gate(Protocol):
    """How a call reaches collections. `request` is the transport's request (the HTTP
    request over /mcp; None over stdio)."""

    default: str

    def reach(self, request: object | None, name: str, *, asking: bool) -> Reach:
        """The collection `name` as this caller may read it, or a QAError; `asking`: the
        call is a question, counted by the ask rate limit."""
        ...

    def reachable(self, request: object | None) -> list[Reach]:
        """Every collection this caller may search."""
        ...


class LocalGate:
    """Stdio's gate: one local client, the operator's own index, every collection of it (as
    `qa ask`), kept open for the life of the server; no keys and no rate limit."""

    def __init__(self, catalog: Catalog, default: str) -> None:
        self.catalog = catalog
        self.default = default

    def reach(self, request: object | None, name: str, *, asking: bool) -> Reach:
        info = self.catalog.info(name)
        return Reach(name, self.catalog.get(name, info), None, info.public)

    def reachable(self, request: object | None) -> list[Reach]:
        return [self.reach(request, name, asking=False) for name in self.catalog.names()]


# -- what the tools return ---------------------------------------------------------------------


class SearchCitation(BaseModel):
    document_id: str = Field(description="Pass to get_document to read the whole text.")
    title: str
    url: str | None
    start: int = Field(description="Character offset of the passage in the document's "
                       "canonical text (get_document).")
    end: int = Field(description="Exclusive end offset: text[start:end] is the passage.")
    page: int | None = Field(None, description="Page number, for paged formats (PDF).")


class SearchHighlight(BaseModel):
    text: str = Field(description="The sentence most likely to answer the question.")
    start: int = Field(description="Its offset in the document's canonical text.")
    end: int


class SearchPassage(BaseModel):
    rank: int
    text: str
    confidence: float | None = Field(
        None, description="Estimated probability, in [0, 1], that this passage answers.")
    highlight: SearchHighlight | None
    citation: SearchCitation


class SearchAnswer(BaseModel):
    found: bool = Field(description="Whether the first passage is confident enough to count "
                        "as an answer; passages are returned either way.")
    confidence: float = Field(description="The first passage's confidence, in [0, 1].")


class SearchResult(BaseModel):
    collection: str = Field(description="The collection searched.")
    question: str
    answer: SearchAnswer
    passages: list[SearchPassage]


class DocumentText(BaseModel):
    document_id: str
    title: str
    url: str | None
    collection: str
    start: int = Field(description="Offset of `text` in the canonical text.")
    end: int = Field(description="Exclusive end offset of `text`.")
    length: int = Field(description="Characters in the whole canonical text.")
    text: str


class CollectionOut(BaseModel):
    name: str
    public: bool = Field(description="Whether it can be searched without a key.")
    documents: int


class Collections(BaseModel):
    collections: list[CollectionOut]


def search_result(question: str, collection: str, passages: list[Passage], answer: Answer
                  ) -> SearchResult:
    return SearchResult(
        question=question, collection=collection,
        answer=SearchAnswer(found=answer.found, confidence=answer.confidence),
        passages=[SearchPassage(
            rank=p.rank, text=p.text, confidence=p.confidence,
            highlight=None if p.highlight is None else SearchHighlight(
                text=p.highlight.text, start=p.highlight.start, end=p.highlight.end),
            citation=SearchCitation(document_id=p.citation.document_id, title=p.citation.title,
                                 url=p.citation.url, start=p.citation.start,
                                 end=p.citation.end, page=p.citation.page),
        ) for p in passages])


def render_search(result: SearchResult) -> str:
    """The text a model reads: each passage's highlight (or its opening) quoted, with where
    it comes from, so an answer can cite without reading the structured content."""
    if not result.passages:
        return "No passages found."
    head = (f"Answer found (confidence {result.answer.confidence:.2f})." if result.answer.found
            else f"No passage seems to answer this (confidence {result.answer.confidence:.2f});"
            " the closest passages:")
    lines = [head]
    for p in result.passages:
        c = p.citation
        quoted = p.highlight.text if p.highlight else " ".join(p.text.split())[:QUOTE_CHARS]
        where = f"{c.document_id} chars {c.start}-{c.end}" + (f", page {c.page}" if c.page else "")
        lines.append(f'{p.rank}. "{" ".join(quoted.split())}" ({c.title}; {where}'
                     + (f"; {c.url}" if c.url else "") + ")")
    return "\n".join(lines)


# -- the server --------------------------------------------------------------------------------


def build_server(settings: Settings, gate: Gate) -> MCPServer[Any]:
    """The MCP server: tools `search`, `get_document`, `list_collections` and the resource
    template qa://documents/{document_id}, with /ask's limits from `settings`."""
    server: MCPServer[Any] = MCPServer(
        "qa", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    def reach(ctx: Context, collection: str | None, *, asking: bool = False) -> Reach:
        return gate.reach(ctx.request_context.request, collection or gate.default,
                          asking=asking)

    @server.tool(description=SEARCH_DESCRIPTION, annotations=read_only)
    def search(
        question: Annotated[str, Field(min_length=1, max_length=settings.max_question_chars,
                                       description="A natural-language question.")],
        ctx: Context,
        k: Annotated[int, Field(ge=1, le=settings.max_k,
                                description="How many passages to return.")] = settings.default_k,
        mode: Annotated[Mode | None, Field(description="Retrieval mode; omitted: the "
                                           "server's default.")] = None,
        collection: Annotated[str | None, COLLECTION_FIELD] = None,
        filter: Annotated[dict[str, Any] | None, Field(description=(
            "Only passages whose document (or page) matches; see the description."))] = None,
    ) -> Annotated[CallToolResult, SearchResult]:
        try:
            target = reach(ctx, collection, asking=True)
            # A key's fixed filter is ANDed with the caller's: a call can narrow it, not widen.
            where = all_of(target.filter, None if filter is None else parse_filter(filter))
            started = time.perf_counter()
            # `retrieve` refuses a blank question, as for /ask.
            passages = retrieve(target.collection, question, k, mode or settings.mode,
                                filter=where)
        except QAError as exc:
            raise ToolError(exc.detail) from exc
        answer = answer_of(passages, settings.min_confidence)
        record_question(target.name, answer.found, time.perf_counter() - started)
        result = search_result(question.strip(), target.name, passages, answer)
        return CallToolResult(content=[TextContent(type="text", text=render_search(result))],
                              structured_content=result.model_dump(mode="json"))

    @server.tool(description=DOCUMENT_DESCRIPTION, annotations=read_only)
    def get_document(
        document_id: Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS,
                                          description="A citation's document_id.")],
        ctx: Context,
        start: Annotated[int | None, Field(ge=0, description="First character; omitted: 0.")
                         ] = None,
        end: Annotated[int | None, Field(ge=0, description=(
            "Character after the last; omitted: the end (or start + the limit)."))] = None,
        collection: Annotated[str | None, COLLECTION_FIELD] = None,
    ) -> Annotated[CallToolResult, DocumentText]:
        try:
            target = reach(ctx, collection)
            row = target.collection.get_document(document_id, filter=target.filter)
        except QAError as exc:
            raise ToolError(exc.detail) from exc
        text = row.text or ""
        first = 0 if start is None else start
        last = min(len(text), first + MAX_SPAN_CHARS) if end is None else end
        if not first <= last <= len(text):
            raise ToolError(f"start {first} and end {last} must satisfy 0 <= start <= end <= "
                            f"{len(text)} (the document's length)")
        if last - first > MAX_SPAN_CHARS:
            raise ToolError(f"a span is at most {MAX_SPAN_CHARS} characters; ask for "
                            f"{first}:{first + MAX_SPAN_CHARS}, then on from there")
        found = DocumentText(document_id=row.id, title=row.title, url=row.url,
                             collection=target.name, start=first, end=last,
                             length=len(text), text=text[first:last])
        head = f"{row.title} ({row.id}, characters {first}-{last} of {len(text)})"
        return CallToolResult(content=[TextContent(type="text", text=f"{head}\n\n{found.text}")],
                              structured_content=found.model_dump(mode="json"))

    @server.tool(description=COLLECTIONS_DESCRIPTION, annotations=read_only)
    def list_collections(ctx: Context) -> Collections:
        try:
            reached = gate.reachable(ctx.request_context.request)
        except QAError as exc:
            raise ToolError(exc.detail) from exc
        return Collections(collections=[
            CollectionOut(name=r.name, public=bool(r.public),
                          documents=r.collection.list_documents(0, 1, filter=r.filter)[1])
            for r in reached])

    # `+`: ids may hold slashes (a file's path). They are keys looked up in SQLite, never
    # opened as paths, so the SDK's path-traversal checks do not apply.
    @server.resource("qa://documents/{+document_id}", mime_type="text/plain",
                     security=ResourceSecurity(reject_path_traversal=False,
                                               reject_absolute_paths=False),
                     description="A document's canonical text, in the server's own collection "
                     "(the one search uses by default); citations' start/end index it.")
    def document(document_id: str, ctx: Context) -> str:
        try:
            target = reach(ctx, None)
            row = target.collection.get_document(document_id, filter=target.filter)
        except DocumentNotFound as exc:
            raise ResourceNotFoundError(exc.detail) from exc
        except QAError as exc:
            raise ResourceError(exc.detail) from exc
        return row.text or ""

    return server
