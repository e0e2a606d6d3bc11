"""Question → ranked, non-overlapping passages with citations, highlights and confidence."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from qa.collection import Collection
from qa.errors import InvalidInput
from qa.highlight import highlight_passage
from qa.settings import Mode
from qa.store import ChunkRow
from qa.types import Citation, Passage

RRF_K = 60


@dataclass(frozen=True)
class Candidate:
    chunk_id: int
    score: float
    dense: float | None = None


def fuse_rankings(rankings: Sequence[Sequence[tuple[int, float]]], k: int = RRF_K
                  ) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion: sum over lists of 1 / (k + rank)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (chunk_id, _) in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def drop_overlaps(ranked: Sequence[tuple[int, float]], rows: dict[int, ChunkRow]
                  ) -> list[tuple[ChunkRow, float]]:
    """Keep the best of any passages whose document spans overlap (deleted chunks vanish)."""
    kept: list[tuple[ChunkRow, float]] = []
    for chunk_id, score in ranked:
        row = rows.get(chunk_id)
        if row is None:
            continue
        if any(o.document_id == row.document_id and o.start < row.end and row.start < o.end
               for o, _ in kept):
            continue
        kept.append((row, score))
    return kept


def confidence_from_cosine(cosine: float) -> float:
    """Map the best passage's cosine to [0, 1]: MiniLM puts unrelated text near 0.1-0.3 and
    answering passages above 0.5, so a logistic centred at 0.4 separates the two."""
    return 1.0 / (1.0 + math.exp(-(cosine - 0.4) / 0.06))


def retrieve(collection: Collection, question: str, k: int, mode: Mode = "hybrid"
             ) -> list[Passage]:
    question = question.strip()
    if not question:
        raise InvalidInput("question must not be empty")
    depth = max(4 * k, 40)
    dense = collection.dense_search(question, depth) if mode != "keyword" else []
    keyword = collection.keyword_search(question, depth) if mode != "dense" else []
    if mode == "dense":
        ranked = dense
    elif mode == "keyword":
        ranked = keyword
    else:
        ranked = fuse_rankings([dense, keyword])
    cosines = dict(dense)
    rows = collection.store.chunk_rows([cid for cid, _ in ranked])
    passages = []
    for rank, (row, score) in enumerate(drop_overlaps(ranked, rows)[:k], start=1):
        cosine = cosines.get(row.id)
        passages.append(
            Passage(
                rank=rank,
                score=round(score, 6),
                text=row.text,
                citation=Citation(
                    document_id=row.document_id, title=row.title, source=row.source,
                    date=row.date, url=row.url, chunk_id=row.id, start=row.start, end=row.end,
                    page=row.page, heading_path=row.heading_path,
                ),
                highlight=highlight_passage(question, row.text, row.start),
                confidence=round(confidence_from_cosine(cosine), 4) if cosine is not None
                else None,
            )
        )
    return passages
