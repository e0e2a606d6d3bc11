"""One error hierarchy: each `QAError` knows its HTTP status and title; one handler renders it."""

from __future__ import annotations

from collections.abc import Mapping


class QAError(Exception):
    """Base of every error the service reports to a user."""

    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers or {})  # e.g. Retry-After, WWW-Authenticate


class InvalidInput(QAError):
    status = 422
    title = "Invalid input"


class DocumentNotFound(QAError):
    status = 404
    title = "Document not found"


class UnsupportedFile(QAError):
    status = 415
    title = "Unsupported file"


class IndexNotFound(QAError):
    status = 503
    title = "Index not found"


class IndexMismatch(QAError):
    """The index was built with another model, dimension or chunker than the settings ask for."""

    status = 409
    title = "Index does not match settings"


class IndexBusy(QAError):
    """Another process holds the index in a way this one cannot share (a rebuild, a server)."""

    status = 409
    title = "Index in use"


class ReadOnlyIndex(QAError):
    """The index is served read-only (QA_READ_ONLY, or its volume cannot be written)."""

    status = 503
    title = "Index is read-only"


class StorageFull(QAError):
    """The disk holding the index is full: the write was rolled back, nothing half-stored."""

    status = 507
    title = "Insufficient storage"


class Unauthorized(QAError):
    """No credentials, or not a Bearer key: the client should authenticate."""

    status = 401
    title = "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(QAError):
    """Credentials given but not accepted, or writes are disabled on this server."""

    status = 403
    title = "Forbidden"


class PayloadTooLarge(QAError):
    status = 413
    title = "Payload too large"


class UnsupportedMediaType(QAError):
    status = 415
    title = "Unsupported media type"


class RateLimited(QAError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after


class CollectionNotFound(QAError):
    status = 404
    title = "Collection not found"


class CollectionExists(QAError):
    """A collection of that name exists already (or `default`, which cannot be deleted)."""

    status = 409
    title = "Collection conflict"


class KeyNotFound(QAError):
    status = 404
    title = "Key not found"


class QueryNotFound(QAError):
    """Feedback for a query id the log does not hold (unknown, purged, or logging is off)."""

    status = 404
    title = "Query not found"
