"""Passage → the sentence most likely to answer the question, as document offsets.

Scored lexically: each question word found in a sentence adds its rarity within the passage's
sentences (an IDF), so the sentence sharing the question's distinctive words wins. Cheap
enough for every passage of every answer, with no model call on the hot path.
"""

from __future__ import annotations

import math
import re

from qa.chunking import split_sentences
from qa.store import STOPWORDS
from qa.types import Highlight

_WORD = re.compile(r"\w+", re.UNICODE)


def _stem(word: str) -> str:
    """A crude suffix strip so "negotiations" meets "negotiation"; enough for overlap counting."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def terms(text: str) -> list[str]:
    return [_stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def highlight_passage(question: str, text: str, offset: int) -> Highlight | None:
    """The best-matching sentence of `text` (which starts at `offset` in its document)."""
    spans = split_sentences(text)
    if not spans:
        return None
    wanted = set(terms(question))
    bags = [set(terms(text[s:e])) for s, e in spans]
    n = len(spans)
    best, best_score = 0, -1.0
    for i, bag in enumerate(bags):
        score = 0.0
        for term in wanted & bag:
            df = sum(1 for b in bags if term in b)
            score += math.log(1 + n / df)
        if score > best_score:
            best, best_score = i, score
    start, end = spans[best]
    return Highlight(offset + start, offset + end, text[start:end])
