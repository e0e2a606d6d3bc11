"""Changing the collection over HTTP: POST /documents, PUT and DELETE /documents/{id}.

Requests are decoded here (JSON or multipart uploads, each item succeeding or failing on its
own); each write is one `Collection.add` or `Collection.delete`, so it is one SQLite transaction
and other workers see it on their next search. Every route needs a write key for its
collection (qa/api/deps.py).
"""

# No `from __future__ import annotations`: FastAPI reads these signatures at run time.

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from qa.api.deps import Scope, scope_dependency
from qa.api.problems import PROBLEM_RESPONSES, validation_message
from qa.api.schemas import DocumentFields, DocumentIn, ItemError, WriteItem, WriteResult
from qa.collection import Collection
from qa.errors import InvalidInput, QAError, UnsupportedMediaType
from qa.loaders import build_document, id_problem, load_bytes, supported_suffixes
from qa.settings import Settings
from qa.types import Document, Parsed

FILE_FIELD = "file"

# -- turning a request into documents ------------------------------------------------------

Item = Document | QAError


def document_from_fields(fields: DocumentFields, doc_id: str | None) -> Document:
    doc_id = doc_id or "text-" + hashlib.sha256(fields.text.encode("utf-8")).hexdigest()[:20]
    extra = {k: v for k, v in (("date", fields.date), ("url", fields.url)) if v is not None}
    return build_document(doc_id, Parsed(text=fields.text, metadata=fields.metadata),
                          title=fields.title, extra_metadata=extra)


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


def parse_json_item(data: Any, model: type[DocumentFields], where: str,
                    doc_id: str | None = None) -> Item:
    try:
        fields = model.model_validate(data)
        given = getattr(fields, "id", None)
        return document_from_fields(fields, doc_id or given)
    except ValidationError as exc:
        return InvalidInput(validation_message(exc.errors(), where))
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
                items.append(await run_in_threadpool(load_bytes, part.filename, data, doc_id))
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
    # `add` decides what each document costs (a metadata-only change is stored, not embedded).
    report = collection.add(documents, progress=False)
    status: dict[str, Literal["added", "replaced", "unchanged"]] = {
        **{i: "added" for i in report.added},
        **{i: "replaced" for i in report.replaced},
        **{i: "unchanged" for i in report.skipped},
    }
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
                       chunks_embedded=report.embedded,
                       took_ms=round((time.perf_counter() - started) * 1000, 2))


# -- routes --------------------------------------------------------------------------------

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


def documents_router(settings: Settings, *, named: bool = False) -> APIRouter:
    """POST/PUT/DELETE /documents of `default`, or with `named` of the collection in the path
    (mounted under /collections/{collection}); each needs a write key for that collection."""
    router = APIRouter(tags=["documents"], responses=PROBLEM_RESPONSES)
    Writer = Annotated[Scope, Depends(scope_dependency("write", named=named))]
    one = DocumentIn.model_json_schema()
    many = {"type": "array", "items": one, "minItems": 1,
            "maxItems": settings.max_batch_documents}
    suffixes = ", ".join(supported_suffixes())

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
    async def add_documents(request: Request, response: Response, scope: Writer
                            ) -> WriteResult:
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
        result = await run_in_threadpool(write_documents, scope.collection, items)
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
    async def put_document(document_id: str, request: Request, response: Response,
                           scope: Writer) -> WriteItem:
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
        result = await run_in_threadpool(write_documents, scope.collection, [item])
        response.status_code = 201 if result.added else 200
        return result.results[0]

    @router.delete(
        "/documents/{document_id:path}", status_code=204, response_class=Response,
        summary="Delete one document",
        responses={404: {"description": "Unknown document"}},
    )
    async def delete_document(document_id: str, scope: Writer) -> Response:
        problem = id_problem(document_id)
        if problem:
            raise InvalidInput(problem)
        await run_in_threadpool(scope.collection.delete, document_id)
        return Response(status_code=204)

    return router
