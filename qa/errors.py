"""One error hierarchy: each `QAError` knows its HTTP status and title; one handler renders it."""

from __future__ import annotations


class QAError(Exception):
    """Base of every error the service reports to a user."""

    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


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
