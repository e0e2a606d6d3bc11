"""The /ask response as plain JSON values: one shape for HTTP and `qa ask --json`.

Built from the frozen domain values directly, without pydantic: the server serializes it with
orjson in one pass, and `qa ask` needs neither FastAPI nor pydantic models to print it. The
pydantic `AskResponse` (qa/api/schemas.py) stays the documented schema; a test checks that
every body built here validates against it.
"""

from __future__ import annotations

from typing import Any

from qa.types import Answer, Passage


def passage_json(p: Passage) -> dict[str, Any]:
    c = p.citation
    return {
        "rank": p.rank, "score": float(p.score), "text": p.text,
        "citation": {
            "document_id": c.document_id, "title": c.title, "source": c.source, "date": c.date,
            "url": c.url, "chunk_id": c.chunk_id, "start": c.start, "end": c.end,
            "page": c.page, "heading_path": list(c.heading_path),
        },
        "highlight": None if p.highlight is None else {
            "start": p.highlight.start, "end": p.highlight.end, "text": p.highlight.text},
        "confidence": None if p.confidence is None else float(p.confidence),
    }


def ask_json(question: str, passages: list[Passage], answer: Answer, took_ms: float,
             query_id: str | None = None) -> dict[str, Any]:
    return {
        "question": question,
        "answer": {"found": answer.found, "confidence": float(answer.confidence),
                   "threshold": float(answer.threshold)},
        "passages": [passage_json(p) for p in passages],
        "took_ms": round(took_ms, 2),
        "query_id": query_id,
    }
