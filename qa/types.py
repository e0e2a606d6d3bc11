"""Domain values: frozen, validated on construction, free of I/O."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# A collection's name: a folder name and a URL path segment as it stands, in every file system.
COLLECTION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
DEFAULT_COLLECTION = "default"  # today's routes and an existing index directory mean this one

# A document's text is one transaction of chunks; 4M characters is ~6,000 chunks (a long book).
MAX_TEXT_CHARS = 4_000_000


@dataclass(frozen=True)
class Section:
    """A stretch of a document's text that shares a page and a heading path."""

    start: int
    end: int
    page: int | None = None
    heading_path: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad section span {self.start}:{self.end}")


@dataclass(frozen=True)
class Parsed:
    """What a format parser extracts before the common metadata rules apply."""

    text: str
    metadata: Mapping[str, Any]
    sections: tuple[Section, ...] = ()
    title: str | None = None


@dataclass(frozen=True)
class Document:
    """A loaded document; `text` is the canonical text every citation offset points into."""

    id: str
    text: str
    title: str
    source: str | None = None
    date: str | None = None
    url: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    sections: tuple[Section, ...] = ()

    def __post_init__(self) -> None:
        if not self.id or not self.id.strip():
            raise ValueError("document id must not be empty")
        if not self.text.strip():
            raise ValueError(f"document {self.id!r} has no text")
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))

    @property
    def content_hash(self) -> str:
        """Identifies the indexed content, so unchanged documents can be skipped."""
        h = hashlib.sha256()
        for part in (self.text, self.title, self.date or "", self.url or ""):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        return h.hexdigest()

    def section_at(self, offset: int) -> Section | None:
        for section in self.sections:
            if section.start <= offset < section.end:
                return section
        return None


@dataclass(frozen=True)
class Chunk:
    """A window of a document: `text == document.text[start:end]` always."""

    document_id: str
    ordinal: int
    start: int
    end: int
    text: str
    token_count: int
    page: int | None = None
    heading_path: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"bad chunk span {self.start}:{self.end}")
        if len(self.text) != self.end - self.start:
            raise ValueError("chunk text length does not match its span")


@dataclass(frozen=True)
class Citation:
    """Where a passage comes from, precise to the character."""

    document_id: str
    title: str
    source: str | None
    date: str | None
    url: str | None
    chunk_id: int
    start: int
    end: int
    page: int | None = None
    heading_path: tuple[str, ...] = ()


@dataclass(frozen=True)
class Highlight:
    """The span of a passage most likely to answer, as offsets into the document text."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Passage:
    rank: int
    score: float
    text: str
    citation: Citation
    highlight: Highlight | None = None
    confidence: float | None = None

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError("rank starts at 1")
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            raise ValueError("confidence must lie in [0, 1]")


@dataclass(frozen=True)
class Answer:
    """Whether the passages hold an answer: `confidence` against the `threshold` it needs."""

    found: bool
    confidence: float
    threshold: float


@dataclass(frozen=True)
class ChunkRow:
    """A stored chunk joined with what its citation needs."""

    id: int
    document_id: str
    start: int
    end: int
    text: str
    page: int | None
    heading_path: tuple[str, ...]
    title: str
    source: str | None
    date: str | None
    url: str | None
    sentences: list[tuple[int, int]] | None = None  # spans within `text`; None: not stored


@dataclass(frozen=True)
class DocumentRow:
    """A stored document as the store returns it (`text` only when asked for)."""

    id: str
    title: str
    source: str | None
    date: str | None
    url: str | None
    metadata: dict[str, Any]
    content_hash: str
    indexed_at: str
    chunk_count: int
    text: str | None = None
