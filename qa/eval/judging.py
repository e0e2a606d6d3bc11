"""Whether a retrieved passage answers a question, and the judged run a ranking becomes.

How passages are judged:
    SQuAD   a passage is a hit when its `[start, end)` in the document covers a gold answer span
    JSONL   a passage is a hit when its text contains an answer string (case-insensitive), or,
            for a question with `relevant` spans (feedback), when it overlaps one of them in
            the same document by at least half of the shorter of the two: an index cut into
            other chunks still finds the approved text, while a neighbouring chunk, which
            shares only the chunk overlap (48 of 200 tokens), is not taken for it
    BEIR    passages become documents by MaxP: a document's score is its best passage's score,
            i.e. its first occurrence in the ranked passages; documents are judged by the qrels
For SQuAD and JSONL every question has one thing to find, the answer: the first answering
passage is the relevant item, so hit@k, MRR@10 and nDCG@10 all measure how high it ranks.
"""

from __future__ import annotations

from collections.abc import Sequence

from qa.eval.datasets import AnswerSpan, Question
from qa.types import Passage

ANSWER = "<answer>"  # the relevant item of span-judged questions; passage ids contain "#"


def covers(passage_start: int, passage_end: int, span: AnswerSpan, document_id: str) -> bool:
    return (document_id == span.document_id and passage_start <= span.start
            and span.end <= passage_end)


def overlaps(start: int, end: int, span: AnswerSpan, document_id: str) -> bool:
    """Whether `[start, end)` shares at least half of the shorter of it and `span`."""
    shared = min(end, span.end) - max(start, span.start)
    return (document_id == span.document_id and shared > 0
            and 2 * shared >= min(end - start, span.end - span.start))


def passage_hits(question: Question, passage: Passage) -> bool:
    c = passage.citation
    if question.relevant:
        return any(overlaps(c.start, c.end, s, c.document_id) for s in question.relevant)
    if question.spans:
        return any(covers(c.start, c.end, s, c.document_id) for s in question.spans)
    text = passage.text.casefold()
    return any(a.casefold() in text for a in question.answers)


def highlight_hits(question: Question, passage: Passage) -> bool:
    h, c = passage.highlight, passage.citation
    if h is None:
        return False
    if question.relevant:
        return any(overlaps(h.start, h.end, s, c.document_id) for s in question.relevant)
    if question.spans:
        return any(covers(h.start, h.end, s, c.document_id) for s in question.spans)
    text = h.text.casefold()
    return any(a.casefold() in text for a in question.answers)


def passage_id(passage: Passage) -> str:
    c = passage.citation
    return "_".join(f"{c.document_id}#{c.start}-{c.end}".split())


def document_run(passages: Sequence[Passage]) -> dict[str, float]:
    """MaxP: each document scored by its best passage, i.e. its first in the ranking."""
    run: dict[str, float] = {}
    for p in passages:
        run.setdefault(p.citation.document_id, p.score)
    return run


def answer_run(question: Question, passages: Sequence[Passage]) -> dict[str, float]:
    """Passages as a run in which every answering passage is the one relevant item, ANSWER."""
    run: dict[str, float] = {}
    for p in passages:
        run.setdefault(ANSWER if passage_hits(question, p) else passage_id(p), p.score)
    return run


def first_relevant(relevance: dict[str, int], ranked: list[str]) -> int | None:
    """The 1-based rank of the first relevant item in `ranked`, None if there is none."""
    return next((r for r, d in enumerate(ranked, start=1) if relevance.get(d, 0) > 0), None)
