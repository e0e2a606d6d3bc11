"""Question → ranked, non-overlapping passages with citations, highlights and confidence.

Hybrid ranking, in three steps:
1. Candidates: the top `depth` chunks by dense cosine (FAISS) and by BM25 (SQLite FTS5; in a
   large collection over the question's rarer words only, see store.KEYWORD_POSTINGS).
2. Features for every candidate: cosine (exact, from the stored vector when FAISS did not
   return it), BM25 (from the first 1000 FTS5 matches), and sentence coverage (the share of
   the question's IDF mass found in the chunk's best sentence; see qa/highlight.py).
3. Score = weighted sum of the features, each z-normalized over this question's candidates, so
   no feature's scale dominates. The weights were tuned once on ../shared/eval (SQuAD and
   SciFact together) and are the same for every collection.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from qa.collection import Collection
from qa.confidence import FITTED_K, Evidence, passage_confidences
from qa.errors import DocumentNotFound, InvalidInput
from qa.filters import Filter
from qa.highlight import SentenceMatch, highlight_of, match_sentences
from qa.settings import Mode
from qa.text import KEYWORD_POSTINGS, query_words
from qa.types import Answer, ChunkRow, Citation, Passage

RRF_K = 60
BM25_DEPTH = 1000
# Candidates taken from each ranking: twice what is asked, and never fewer than this, so that
# merging neighbours and dropping overlaps still leaves k passages.
MIN_DEPTH = 30
DENSE_WEIGHT = 0.8
KEYWORD_WEIGHT = 0.2
COVERAGE_WEIGHT = 0.6
# The keyword side of a question (FTS5's BM25 and the absent-word probes) runs on one of these
# threads while the caller embeds the question and searches the vectors: SQLite and ONNX
# Runtime both release the GIL. At 100k chunks it took ~2.8 ms off a ~28 ms answer (median,
# 600 SciFact questions, 2 cores; README "Performance"). A single core has nothing to overlap.
_BESIDE = (ThreadPoolExecutor(max_workers=8, thread_name_prefix="qa-keyword")
           if (os.cpu_count() or 1) > 1 else None)


@dataclass(frozen=True)
class Features:
    chunk_id: int
    dense: float
    keyword: float
    coverage: float


def fuse_rankings(rankings: Sequence[Sequence[tuple[int, float]]], k: int = RRF_K
                  ) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion, the baseline: sum over lists of 1 / (k + rank)."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (chunk_id, _) in enumerate(ranking, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def fuse_features(candidates: Sequence[Features], *, dense: float = DENSE_WEIGHT,
                  keyword: float = KEYWORD_WEIGHT, coverage: float = COVERAGE_WEIGHT
                  ) -> list[tuple[int, float]]:
    """Weighted sum of z-normalized features, best first."""
    return _fused([c.chunk_id for c in candidates], [c.dense for c in candidates],
                  [c.keyword for c in candidates], [c.coverage for c in candidates],
                  weights=(dense, keyword, coverage))


def _fused(ids: Sequence[int], dense: Sequence[float], keyword: Sequence[float],
           coverage: Sequence[float], *,
           weights: tuple[float, float, float] = (DENSE_WEIGHT, KEYWORD_WEIGHT, COVERAGE_WEIGHT)
           ) -> list[tuple[int, float]]:
    """fuse_features over the features as columns (no Features object per candidate)."""
    if not ids:
        return []
    # Each feature z-scored over this question's candidates (0 where it does not vary). As
    # rows of one array: the same sums over the same contiguous values as an array each,
    # in a third of the numpy calls.
    features = np.array([dense, keyword, coverage], dtype=np.float64)
    z = [(row - mean) / spread if spread > 1e-12 else np.zeros_like(row)
         for row, mean, spread in zip(features, features.mean(axis=1), features.std(axis=1),
                                      strict=True)]
    score = weights[0] * z[0] + weights[1] * z[1] + weights[2] * z[2]
    order = np.argsort(-score, kind="stable").tolist()
    scores = score.tolist()
    return [(ids[i], scores[i]) for i in order]


@dataclass
class _Span:
    """A passage being assembled: one chunk, or up to `MAX_MERGED` neighbouring ones."""

    lead: ChunkRow  # the best-ranked chunk: its score, highlight and chunk id represent the span
    first: ChunkRow  # the chunk at the span's start: its page and heading path apply
    start: int
    end: int
    score: float
    best_match: int = 0  # chunk id whose sentence match is the highlight
    merged: list[ChunkRow] = field(default_factory=list)  # the neighbours merged into it

    @property
    def parts(self) -> int:
        """How many chunks the span is made of."""
        return 1 + len(self.merged)

    def pieced_text(self) -> str | None:
        """The span's text pieced from its chunks' texts (each is its document's text from
        the chunk's start to end), or None when they leave a gap between them."""
        if not self.merged:
            return self.lead.text
        text, end = "", self.start
        for row in sorted((self.lead, *self.merged), key=lambda row: row.start):
            if row.start > end:
                return None
            text += row.text[end - row.start :]
            end = max(end, row.end)
        return text


MAX_MERGED = 2
# Neighbours are looked for among at least this many top chunks whatever k is, so the first
# passage is the same for k=1 as for k=10.
MERGE_DEPTH = 10
NEIGHBOUR_GAP = 4  # characters (a paragraph break) between chunks that count as neighbours


def assemble_passages(ranked: Sequence[tuple[int, float]], rows: dict[int, ChunkRow], k: int,
                      sentence_scores: dict[int, float]) -> list[_Span]:
    """Best-first, non-overlapping spans; a ranked chunk that touches a kept span of its
    document is merged into it (up to MAX_MERGED chunks), else dropped. Deleted chunks vanish.
    Once k spans are kept, the rest of the top MERGE_DEPTH chunks may still merge into them."""
    kept: list[_Span] = []
    for scanned, (chunk_id, score) in enumerate(ranked):
        full = len(kept) >= k
        if full and scanned >= MERGE_DEPTH:
            break
        row = rows.get(chunk_id)
        if row is None:
            continue
        near = next((s for s in kept if s.lead.document_id == row.document_id
                     and row.start < s.end + NEIGHBOUR_GAP and s.start < row.end + NEIGHBOUR_GAP),
                    None)
        if near is None:
            if not full:
                kept.append(_Span(row, row, row.start, row.end, score, best_match=row.id))
        elif near.parts < MAX_MERGED:
            if row.start < near.start:
                near.first = row
            near.start, near.end = min(near.start, row.start), max(near.end, row.end)
            near.merged.append(row)
            if sentence_scores.get(row.id, 0.0) > sentence_scores.get(near.best_match, 0.0):
                near.best_match = row.id
    return kept


def retrieve(collection: Collection, question: str, k: int, mode: Mode = "hybrid", *,
             fusion: Literal["features", "rrf"] = "features", filter: Filter | None = None
             ) -> list[Passage]:
    """Top-k passages, each with its confidence; `fusion="rrf"` swaps in the reciprocal-rank
    baseline (benchmarks). With a `filter`, only chunks it allows are searched and returned."""
    # Ranked as if k were at least FITTED_K, so the list the confidence model reads is the one
    # it was fitted on: `-k 1` and `-k 5` give the first passage the same confidence.
    ranked = rank_passages(collection, question, max(k, FITTED_K), mode, fusion=fusion,
                           filter=filter)
    evidence = [e for _, e in ranked]
    confidences = passage_confidences(evidence[:FITTED_K])
    if len(ranked) > FITTED_K:  # the passages past the window, each read among all of them
        confidences += passage_confidences(evidence)[FITTED_K:]
    return [replace(passage, confidence=round(p, 4))
            for (passage, _), p in zip(ranked[:k], confidences, strict=False)]


def rank_passages(collection: Collection, question: str, k: int, mode: Mode = "hybrid", *,
                  fusion: Literal["features", "rrf"] = "features", filter: Filter | None = None
                  ) -> list[tuple[Passage, Evidence]]:
    """Top-k passages (no confidence yet) with the evidence the confidence model reads.

    A `filter` is applied inside each search, not to its results: the vector search only
    visits allowed chunks and the keyword query joins the filter, so both candidate lists
    are full of allowed chunks however selective the filter is. The rows are read under it
    once more, in the snapshot, so a passage (and any neighbour merged into it) is allowed
    by the data it is cut from, even if a write changed a document meanwhile.
    """
    question = question.strip()
    if not question:
        raise InvalidInput("question must not be empty")
    if filter is not None and filter.matches_all:
        filter = None
    depth = max(2 * k, MIN_DEPTH)
    content, _ = query_words(question)

    def keyword_side() -> tuple[list[tuple[int, float]], dict[int, float], list[str]]:
        # One FTS5 query serves twice: its head is the keyword candidate list, and its long
        # tail gives BM25 to dense candidates (ranking every match costs FTS5 the same either
        # way, while asking again for given rowids costs twice as much). Dense mode asks it
        # too: BM25 is one of the confidence model's features in every mode.
        if mode == "keyword":
            found = collection.keyword_search(question, depth, filter=filter)
        else:
            found = collection.keyword_search(question, BM25_DEPTH, budget=KEYWORD_POSTINGS,
                                              filter=filter)
        # BM25 by chunk id, made here, off the path that waits: a candidate beyond the first
        # BM25_DEPTH matches counts 0.
        return found, dict(found), collection.absent_words(content)

    if filter is not None:
        collection.allowed_ids(filter)  # computed once, here: both sides then share it
    dense: list[tuple[int, float]] = []
    if mode == "keyword":
        scored, bm25, absent_words = keyword_side()
    elif _BESIDE is None:
        dense = collection.dense_search(question, depth, filter=filter)
        scored, bm25, absent_words = keyword_side()
    else:
        # The vectors' freshness check reads SQLite, as the keyword side does from the moment
        # it starts: checked first, it never waits for a keyword search to finish.
        collection.refresh()
        beside = _BESIDE.submit(keyword_side)
        dense = collection.dense_search(question, depth, filter=filter, refresh=False)
        scored, bm25, absent_words = beside.result()
    keyword = scored[:depth] if mode != "dense" else []
    absent = len(absent_words) / max(len(content), 1)
    ids = list(dict.fromkeys([c for c, _ in dense] + [c for c, _ in keyword]))
    # One read for the rows and every text sliced from them: a concurrent write of a document
    # can never give a passage one version's offsets and another's text.
    with collection.snapshot():
        rows = collection.chunk_rows(ids, filter=filter)
        ids = [c for c in ids if c in rows]
        cosines = dict(dense)
        missing = [c for c in ids if c not in cosines]
        if missing:
            cosines.update(collection.cosines(question, missing))
        chosen = [rows[c] for c in ids]
        matches = dict(zip(ids, match_sentences(question, [r.text for r in chosen],
                                                [r.sentences for r in chosen]), strict=True))
        sentence_scores = {c: _sentence_score(m) for c, m in matches.items()}
        if mode == "dense":
            ranked = dense
        elif mode == "keyword":
            ranked = keyword
        elif fusion == "rrf":
            ranked = fuse_rankings([dense, keyword])
        else:
            ranked = _fused(ids, [cosines[c] for c in ids], [bm25.get(c, 0.0) for c in ids],
                            list(sentence_scores.values()))
        best_bm25 = (scored[0][1] if scored else 0.0) or 1.0  # keyword_search: best first
        found: list[tuple[Passage, Evidence]] = []
        for span in assemble_passages(ranked, rows, k, sentence_scores):
            lead, first = span.lead, span.first
            # Neighbours that overlap or touch are pieced together from their rows, read in
            # this snapshot; across a gap the text is read from the document.
            text = span.pieced_text()
            if text is None:
                try:
                    text = collection.text_span(lead.document_id, span.start, span.end)
                except DocumentNotFound:
                    continue  # deleted while we ranked it: answer without it, never with half
            source = rows[span.best_match]
            match = matches.get(source.id)
            cosine = cosines.get(lead.id, 0.0)
            passage = Passage(
                rank=len(found) + 1,
                score=round(span.score, 6),
                text=text,
                citation=Citation(
                    document_id=lead.document_id, title=lead.title, source=lead.source,
                    date=lead.date, url=lead.url, chunk_id=lead.id, start=span.start,
                    end=span.end, page=first.page, heading_path=first.heading_path,
                ),
                highlight=highlight_of(source.text, source.start, match),
            )
            evidence = Evidence(
                cosine=cosine, coverage=_coverage(match),
                keyword=bm25.get(lead.id, 0.0) / best_bm25, absent=absent,
                length=span.end - span.start,
            )
            found.append((passage, evidence))
    return found


def answer_of(passages: Sequence[Passage], min_confidence: float) -> Answer:
    """Whether the passages hold an answer: as likely as the first, shown as the answer."""
    confidence = (passages[0].confidence or 0.0) if passages else 0.0
    return Answer(found=bool(passages) and confidence >= min_confidence,
                  confidence=confidence, threshold=min_confidence)


def _coverage(match: SentenceMatch | None) -> float:
    return match.coverage if match else 0.0


def _sentence_score(match: SentenceMatch | None) -> float:
    return match.score if match else 0.0
