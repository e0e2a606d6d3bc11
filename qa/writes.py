"""Changing the collection over HTTP, who may do it, and the limits every request meets.

`documents_router` adds POST /documents, PUT and DELETE /documents/{id} behind a bearer-key
check (`WriteAccess`); `AskRateLimit` throttles /ask per client; `BodyLimitMiddleware` refuses
an oversized body (413) before any route reads it. Each write goes through `Collection.add` or
`Collection.delete`, so it is one SQLite transaction and other workers see it on their next search.
"""

# No `from __future__ import annotations`: FastAPI reads these signatures at run time.

import hashlib
import hmac
import json
import math
import time
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qa.collection import Collection
from qa.errors import (
    DocumentNotFound,
    Forbidden,
    InvalidInput,
    PayloadTooLarge,
    QAError,
    RateLimited,
    Unauthorized,
    UnsupportedFile,
    UnsupportedMediaType,
)
from qa.loaders import MAX_FILE_BYTES, PARSERS, Parsed, build_document, supported_suffixes
from qa.settings import Settings
from qa.types import Document

MAX_ID_CHARS = 512
MAX_TITLE_CHARS = 1000
FILE_FIELD = "file"

# -- request and response bodies -----------------------------------------------------------


def id_problem(value: str) -> str | None:
    """Why `value` cannot be a document id, or None when it can."""
    if not value.strip():
        return "document id must not be empty"
    if len(value) > MAX_ID_CHARS:
        return f"document id is longer than {MAX_ID_CHARS} characters"
    if value != value.strip():
        return "document id must not start or end with whitespace"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        return "document id must not contain control characters"
    return None


def text_problem(value: str, what: str) -> str | None:
    if "\x00" in value:
        return f"{what} must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"{what} is not valid Unicode (lone surrogate)"
    return None


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
        problem = text_problem(json.dumps(value, ensure_ascii=False), "metadata")
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


# -- turning a request into documents ------------------------------------------------------

Item = Document | QAError


def document_from_fields(fields: DocumentFields, doc_id: str | None) -> Document:
    doc_id = doc_id or "text-" + hashlib.sha256(fields.text.encode("utf-8")).hexdigest()[:20]
    extra = {k: v for k, v in (("date", fields.date), ("url", fields.url)) if v is not None}
    return build_document(doc_id, Parsed(text=fields.text, metadata=fields.metadata),
                          title=fields.title, extra_metadata=extra)


def id_from_filename(filename: str) -> str:
    """An uploaded file's id is its name as sent, as a clean relative posix path."""
    parts = [p for p in PurePosixPath(filename.replace("\\", "/")).parts
             if p not in ("", ".", "..", "/")]
    doc_id = "/".join(parts)
    problem = id_problem(doc_id)
    if problem:
        raise InvalidInput(f"file name {filename!r}: {problem}")
    return doc_id


def document_from_upload(name: str, data: bytes, doc_id: str | None) -> Document:
    """Bytes of one uploaded file → a Document, with the same rules as `qa index`."""
    suffix = PurePosixPath(name).suffix.lower()
    parser = PARSERS.get(suffix)
    if parser is None:
        raise UnsupportedFile(f"{name}: unsupported file type {suffix or '(none)'!r}; "
                              f"supported: {', '.join(supported_suffixes())}")
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInput(f"{name}: file is {len(data)} bytes, over the "
                           f"{MAX_FILE_BYTES}-byte limit")
    try:
        parsed = parser(data, name)
    except QAError:
        raise
    except Exception as exc:  # a third-party parser choking on hostile bytes is bad input
        raise InvalidInput(f"{name}: could not be read as {suffix} ({type(exc).__name__})"
                           ) from None
    return build_document(doc_id or id_from_filename(name), parsed, source=name)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def read_json(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput("request body is empty; send a JSON document")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError and bad UTF-8 both land here
        raise InvalidInput(f"malformed JSON: {exc}") from None


def _validation_message(exc: ValidationError, where: str) -> str:
    """"0.text: Field required; 1.id: ..." — where each problem is, then what it is."""
    messages = []
    for e in exc.errors():
        loc = ".".join(p for p in [where, *(str(p) for p in e["loc"])] if p) or "body"
        messages.append(f"{loc}: {e['msg']}")
    return "; ".join(messages)


def parse_json_item(data: Any, model: type[DocumentFields], where: str,
                    doc_id: str | None = None) -> Item:
    try:
        fields = model.model_validate(data)
        given = getattr(fields, "id", None)
        return document_from_fields(fields, doc_id or given)
    except ValidationError as exc:
        return InvalidInput(_validation_message(exc, where))
    except QAError as exc:
        return exc


async def read_uploads(request: Request, settings: Settings, doc_id: str | None = None
                       ) -> list[Item]:
    try:
        form = await request.form(max_files=settings.max_batch_documents,
                                  max_fields=settings.max_batch_documents)
    except StarletteHTTPException as exc:  # Starlette's multipart errors
        raise InvalidInput(f"malformed multipart body: {exc.detail}") from None
    try:
        unexpected = sorted(set(form.keys()) - {FILE_FIELD})
        if unexpected:
            raise InvalidInput(f"unexpected form field(s) {', '.join(unexpected)}; "
                               f"send files in {FILE_FIELD!r} parts")
        parts = form.getlist(FILE_FIELD)
        if not parts:
            raise InvalidInput(f"no {FILE_FIELD!r} part: upload one or more files")
        items: list[Item] = []
        for n, part in enumerate(parts):
            if not isinstance(part, UploadFile) or not part.filename:
                items.append(InvalidInput(f"{FILE_FIELD}[{n}]: not a file upload (no filename)"))
                continue
            data = await part.read()
            try:
                items.append(await run_in_threadpool(document_from_upload, part.filename, data,
                                                     doc_id))
            except QAError as exc:
                items.append(exc)
        return items
    finally:
        await form.close()


def media_type(request: Request) -> Literal["json", "multipart"]:
    value = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if value == "application/json" or value.endswith("+json"):
        return "json"
    if value == "multipart/form-data":
        return "multipart"
    raise UnsupportedMediaType(
        f"content type {value or '(none)'!r} is not accepted; send application/json "
        "or multipart/form-data"
    )


# -- committing ----------------------------------------------------------------------------


def write_documents(collection: Collection, items: Sequence[Item]) -> WriteResult:
    """Commit the good items (one transaction), report each item's outcome in order."""
    started = time.perf_counter()
    errors: dict[int, QAError] = {}
    first_index: dict[str, int] = {}
    for n, item in enumerate(items):
        if isinstance(item, QAError):
            errors[n] = item
        elif item.id in first_index:
            errors[n] = InvalidInput(f"document id {item.id!r} appears more than once in "
                                     "this request")
        else:
            first_index[item.id] = n
    documents = [item for n, item in enumerate(items)
                 if isinstance(item, Document) and n not in errors]
    # The content hash covers only what is embedded; a change of metadata or source alone must
    # still be stored, so those documents are written regardless.
    refresh = {d.id for d in documents if _only_details_changed(collection, d)}
    plain = [d for d in documents if d.id not in refresh]
    report = collection.add(plain, progress=False)
    forced = collection.add([d for d in documents if d.id in refresh], force=True,
                            progress=False)
    status: dict[str, Literal["added", "replaced", "unchanged"]] = {}
    for r in (report, forced):
        status.update({i: "added" for i in r.added})
        status.update({i: "replaced" for i in r.replaced})
        status.update({i: "unchanged" for i in r.skipped})
    results = []
    for n, item in enumerate(items):
        if n in errors:
            error = errors[n]
            results.append(WriteItem(
                id=item.id if isinstance(item, Document) else None, status="failed",
                error=ItemError(title=error.title, status=error.status, detail=error.detail)))
        else:
            assert isinstance(item, Document)
            results.append(WriteItem(id=item.id, status=status[item.id]))
    counts = {s: sum(r.status == s for r in results)
              for s in ("added", "replaced", "unchanged", "failed")}
    return WriteResult(results=results, **counts,
                       chunks_embedded=report.embedded + forced.embedded,
                       took_ms=round((time.perf_counter() - started) * 1000, 2))


def _only_details_changed(collection: Collection, document: Document) -> bool:
    try:
        row = collection.store.get_document(document.id, with_text=False)
    except DocumentNotFound:
        return False
    return row.content_hash == document.content_hash and (
        row.metadata != dict(document.metadata) or row.source != document.source
    )


# -- access and limits ---------------------------------------------------------------------

bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                    description="A key from QA_API_KEYS, as `Authorization: Bearer <key>`.")


class WriteAccess:
    """Dependency guarding writes: a configured key is required; no keys means no HTTP writes."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        self._keys = [k.get_secret_value().encode("utf-8") for k in keys]

    def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> None:
        if not self._keys:
            raise Forbidden(
                "writes over HTTP are disabled on this server: set QA_API_KEYS to one or more "
                "comma-separated keys and send `Authorization: Bearer <key>` "
                "(`qa index` changes the collection without a key)"
            )
        if credentials is None:
            raise Unauthorized("this endpoint needs `Authorization: Bearer <key>`, with a key "
                               "from QA_API_KEYS")
        given = credentials.credentials.encode("utf-8")
        # Compare with every key, in constant time, so timing tells nothing about them.
        if not any([hmac.compare_digest(given, key) for key in self._keys]):
            raise Forbidden("this API key is not accepted")


class AskRateLimit:
    """Dependency limiting /ask per client address, in this process's memory.

    `limits` does the moving-window bookkeeping (and its reset time gives Retry-After); each
    worker process counts separately, so N workers admit up to N times the rate.
    """

    def __init__(self, rate: str | None) -> None:
        self._limiter: Any = None
        if rate:
            from limits import parse
            from limits.storage import MemoryStorage
            from limits.strategies import MovingWindowRateLimiter

            self._item = parse(rate)
            self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def __call__(self, request: Request) -> None:
        if self._limiter is None:
            return
        client = request.client.host if request.client else "unknown"
        if self._limiter.hit(self._item, "ask", client):
            return
        reset = self._limiter.get_window_stats(self._item, "ask", client).reset_time
        retry_after = max(1, math.ceil(reset - time.time()))
        raise RateLimited(f"more than {self._item} questions from {client}; "
                          f"retry in {retry_after} s (QA_ASK_RATE_LIMIT)", retry_after)


class BodyLimitMiddleware:
    """Refuses a body over `max_bytes` (413) before the app reads any of it.

    It must answer itself: an error raised here would miss the app's exception handlers, and
    one raised while FastAPI reads a body becomes a 400. `render` is the app's one renderer.
    """

    def __init__(self, app: ASGIApp, max_bytes: int,
                 render: Callable[[QAError], Response]) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        too_big = PayloadTooLarge(
            f"request body is over the {self.max_bytes}-byte limit (QA_MAX_BODY_BYTES)")
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self.render(too_big)(scope, receive, send)
            return
        # No (or an honest) Content-Length: read up to the limit, then replay to the app.
        buffered: list[Message] = []
        size = 0
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self.render(too_big)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        pending = iter(buffered)

        async def replay() -> Message:
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)


# -- routes --------------------------------------------------------------------------------

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "No `Authorization: Bearer` key",
          "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}},
    403: {"description": "Key not accepted, or HTTP writes disabled (no QA_API_KEYS)"},
    413: {"description": "Body over QA_MAX_BODY_BYTES"},
    415: {"description": "Neither JSON nor multipart, or an unsupported file type"},
    422: {"description": "Malformed JSON, invalid fields, or a file that cannot be indexed"},
}

RATE_LIMITED_RESPONSE: dict[int | str, dict[str, Any]] = {
    429: {"description": "Over QA_ASK_RATE_LIMIT for this client",
          "headers": {"Retry-After": {"description": "Seconds to wait",
                                      "schema": {"type": "integer"}}}},
}


def _request_body(json_schema: dict[str, Any], files: str) -> dict[str, Any]:
    file_schema = {"type": "string", "format": "binary"}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": json_schema},
        "multipart/form-data": {"schema": {
            "type": "object", "required": [FILE_FIELD],
            "properties": {FILE_FIELD: {"type": "array", "items": file_schema,
                                        "description": files}},
        }},
    }}}


def documents_router(settings: Settings) -> APIRouter:
    """POST/PUT/DELETE /documents, each needing a key from `settings.api_keys`."""
    router = APIRouter(tags=["documents"], dependencies=[Depends(WriteAccess(settings.api_keys))],
                       responses=PROBLEM_RESPONSES)
    one = DocumentIn.model_json_schema()
    many = {"type": "array", "items": one, "minItems": 1,
            "maxItems": settings.max_batch_documents}
    suffixes = ", ".join(supported_suffixes())

    def collection_of(request: Request) -> Collection:
        return request.app.state.collection  # type: ignore[no-any-return]

    @router.post(
        "/documents", status_code=201, response_model=WriteResult,
        summary="Add or replace documents",
        description="JSON: one document, or an array of up to QA_MAX_BATCH_DOCUMENTS (each "
        "item succeeds or fails on its own). Multipart: one or more `file` parts "
        f"({suffixes}); a file's id is its name. Unchanged documents cost no embedding. "
        "201 when any document was added, else 200.",
        responses={200: {"model": WriteResult, "description": "Nothing new: all replaced, "
                         "unchanged or failed"}},
        openapi_extra=_request_body({"anyOf": [one, many]}, "Files to index"),
    )
    async def add_documents(request: Request, response: Response) -> WriteResult:
        if media_type(request) == "multipart":
            items = await read_uploads(request, settings)
        else:
            data = await read_json(request)
            if isinstance(data, list):
                if not data:
                    raise InvalidInput("the array holds no documents")
                if len(data) > settings.max_batch_documents:
                    raise InvalidInput(f"{len(data)} documents in one request; at most "
                                       f"{settings.max_batch_documents} (QA_MAX_BATCH_DOCUMENTS)")
                items = [parse_json_item(d, DocumentIn, str(n)) for n, d in enumerate(data)]
            else:
                item = parse_json_item(data, DocumentIn, "")
                if isinstance(item, QAError):
                    raise item
                items = [item]
        if len(items) > settings.max_batch_documents:
            raise InvalidInput(f"{len(items)} files in one request; at most "
                               f"{settings.max_batch_documents} (QA_MAX_BATCH_DOCUMENTS)")
        result = await run_in_threadpool(write_documents, collection_of(request), items)
        response.status_code = 201 if result.added else 200
        return result

    @router.put(
        "/documents/{document_id:path}", status_code=200, response_model=WriteItem,
        summary="Create or replace one document",
        description="JSON fields, or one multipart `file` part; the id is the path. "
        "201 when the document is new.",
        responses={201: {"model": WriteItem, "description": "Created"}},
        openapi_extra=_request_body(DocumentFields.model_json_schema(),
                                    "Exactly one file"),
    )
    async def put_document(document_id: str, request: Request, response: Response) -> WriteItem:
        problem = id_problem(document_id)
        if problem:
            raise InvalidInput(problem)
        if media_type(request) == "multipart":
            items = await read_uploads(request, settings, document_id)
            if len(items) != 1:
                raise InvalidInput(f"PUT takes exactly one {FILE_FIELD!r} part, got {len(items)}")
            item = items[0]
        else:
            item = parse_json_item(await read_json(request), DocumentFields, "", document_id)
        if isinstance(item, QAError):
            raise item
        result = await run_in_threadpool(write_documents, collection_of(request), [item])
        response.status_code = 201 if result.added else 200
        return result.results[0]

    @router.delete(
        "/documents/{document_id:path}", status_code=204, response_class=Response,
        summary="Delete one document",
        responses={404: {"description": "Unknown document"}},
    )
    async def delete_document(document_id: str, request: Request) -> Response:
        problem = id_problem(document_id)
        if problem:
            raise InvalidInput(problem)
        await run_in_threadpool(collection_of(request).delete, document_id)
        return Response(status_code=204)

    return router
