"""Passage → the sentence most likely to answer the question, as document offsets.

Scored lexically: each question word found in a sentence adds its IDF, measured over the
candidate passages of this question, so a sentence sharing the question's distinctive words
wins. The same score, the best sentence's share of the question's IDF mass ("coverage"), is a
reranking feature: crowd-written and real questions alike tend to restate one sentence of the
passage that answers them. No model call, so it is cheap on every passage of every answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from qa.chunking import split_sentences
from qa.text import STOPWORDS, WORD, split_words, stem, terms
from qa.types import Highlight


@dataclass(frozen=True)
class SentenceMatch:
    coverage: float  # share of the question's IDF mass found in the best sentence, in [0, 1]
    score: float  # the same with phrase and answer-type bonuses, uncapped: a ranking feature
    start: int  # offsets of that sentence within the passage text
    end: int
    typed: bool = False  # it holds what the question asks for (a date, number or name)


_YEAR_OR_DATE = re.compile(
    r"\b(1[0-9]{3}|20[0-9]{2})\b|\b(January|February|March|April|May|June|July|August|"
    r"September|October|November|December|Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|"
    r"Sunday)\b"
)
_NUMBER = re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|hundred|"
                     r"thousand|million|billion|dozen)\b", re.I)
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][\w'’-]+")
ANSWER_TYPE_BONUS = 0.15  # of the question's IDF mass: a tie-breaker, not a ranking of its own


def answer_type(question: str) -> re.Pattern[str] | None:
    """What an answer to this question looks like: a date, a number or a name (English)."""
    q = question.lower()
    if re.search(r"\b(when|what year|which year|what date|what day)\b", q):
        return _YEAR_OR_DATE
    if re.search(r"\bhow (many|much|long|old|far|big|large)\b", q):
        return _NUMBER
    if re.search(r"\b(who|whom|whose|where)\b", q):
        return _NAME
    return None


ANSWER_WINDOW = 60  # characters: an answer sits close to the words the question restates


def _has_answer_type(pattern: re.Pattern[str], sentence: str, asked: set[str],
                     wanted: set[str]) -> bool:
    """Does the sentence hold something of the asked-for type, near the question's words
    (`wanted`, stemmed), that the question (`asked`, its words) does not already say? (The
    classic answer-type check of TREC QA.)"""
    found = [start for start, word in _typed_words(pattern, sentence) if word not in asked]
    # Most sentences hold nothing of the type: their words' stems are then never needed.
    return bool(found) and any(
        abs(start - anchor) <= ANSWER_WINDOW
        for start in found
        for anchor, stemmed in _anchors(sentence) if stemmed in wanted
    )


# A sentence's analysis depends on its text alone, and the same chunks come back question after
# question (and copies of a document share their sentences), so it is kept, by the sentence.
ANALYSED_SENTENCES = 1 << 15


@lru_cache(maxsize=ANALYSED_SENTENCES)
def _typed_words(pattern: re.Pattern[str], sentence: str) -> tuple[tuple[int, str], ...]:
    """Where `pattern` matches in the sentence, with the match lower-cased; stopwords left out."""
    return tuple((m.start(), word) for m in pattern.finditer(sentence)
                 if (word := m.group(0).lower()) not in STOPWORDS)


@lru_cache(maxsize=ANALYSED_SENTENCES)
def _anchors(sentence: str) -> tuple[tuple[int, str], ...]:
    """The sentence's content words: where each starts, and its stem."""
    return tuple((m.start(), stem(word)) for m in WORD.finditer(sentence)
                 if (word := m.group(0).lower()) not in STOPWORDS)


@lru_cache(maxsize=ANALYSED_SENTENCES)
def _sentence_terms(sentence: str) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """The sentence's content terms (see `terms`) and its pairs of consecutive terms."""
    words = terms(sentence)
    return frozenset(words), frozenset(zip(words, words[1:], strict=False))


# A passage's sentences analysed together, and which of them hold each term, kept by the
# passage's text and spans: a question reads the sentences that hold one of its words only.
ANALYSED_PASSAGES = 1 << 13


@dataclass(frozen=True)
class _Passage:
    sentences: tuple[tuple[frozenset[str], frozenset[tuple[str, str]]], ...]  # _sentence_terms
    holding: dict[str, tuple[int, ...]]  # term → the sentences that hold it (never changed)


@lru_cache(maxsize=ANALYSED_PASSAGES)
def _analyse_passage(text: str, spans: tuple[tuple[int, int], ...]) -> _Passage:
    sentences = tuple(_sentence_terms(text[s:e]) for s, e in spans)
    holding: dict[str, list[int]] = {}
    for i, (words, _) in enumerate(sentences):
        for word in words:
            holding.setdefault(word, []).append(i)
    return _Passage(sentences, {word: tuple(at) for word, at in holding.items()})


PHRASE_WEIGHT = 0.5  # a question's word pair found side by side counts half again


def _pairs(words: Sequence[str]) -> set[tuple[str, str]]:
    return set(zip(words, words[1:], strict=False))


def match_sentences(question: str, passages: Sequence[str],
                    found: Sequence[Sequence[tuple[int, int]] | None] | None = None,
                    ) -> list[SentenceMatch | None]:
    """For each passage, its sentence that best covers the question's words (None if empty).
    `found` may give each passage's sentence spans as found at indexing (None: split now).

    A sentence scores the IDF of each question word it holds, more when consecutive question
    words appear side by side there too ("Russian delegation" as a phrase rather than "led" in
    "U.S.-led" and "Russian" elsewhere), plus the answer-type bonus.
    """
    asked = terms(question)
    wanted = set(asked)
    asked_pairs = _pairs(asked)
    given = found if found is not None else [None] * len(passages)
    sentences = [split_sentences(text) if spans is None else spans
                 for text, spans in zip(passages, given, strict=True)]
    analysed = [_analyse_passage(text, tuple(spans))
                for text, spans in zip(passages, sentences, strict=True)]
    # Each passage's question words; only the sentences holding one can score above 0.
    held = [[t for t in wanted if t in passage.holding] for passage in analysed]
    n = max(len(passages), 1)
    df = dict.fromkeys(wanted, 0)
    for terms_held in held:
        for t in terms_held:
            df[t] += 1
    idf = {t: math.log(1 + n / (df[t] or 0.5)) for t in wanted}
    total = sum(idf.values()) or 1.0
    matches: list[SentenceMatch | None] = []
    kind = answer_type(question)
    asked_words = set(split_words(question))
    doubled = {a for a, b in asked_pairs if a == b}  # "bora bora": a pair of one word
    phrase = {(a, b): (idf[a] + idf[b]) / 2 for a, b in asked_pairs}
    bonus = ANSWER_TYPE_BONUS * total
    for text, spans, passage, passage_held in zip(passages, sentences, analysed, held,
                                                  strict=True):
        if not spans:
            matches.append(None)
            continue
        # A sentence without a question word scores 0.0: the first sentence, unless one of
        # those holding a question word (each above 0.0) wins.
        best, best_score, best_typed = 0, 0.0, False
        holding = passage.holding
        if len(passage_held) == 1 and kind is None and passage_held[0] not in doubled:
            # Every sentence holding a question word holds this one alone (a sum of one
            # term, and no phrase): they tie, and the first wins.
            matches.append(SentenceMatch(min(idf[passage_held[0]] / total, 1.0),
                                         idf[passage_held[0]] / total,
                                         *spans[holding[passage_held[0]][0]]))
            continue
        for i in (holding[passage_held[0]] if len(passage_held) == 1 else
                  sorted({i for t in passage_held for i in holding[t]})):
            words, pairs = passage.sentences[i]
            bag = words & wanted
            # A phrase needs two of the question's words in the sentence: skip the pairs
            # otherwise.
            score = sum(map(idf.__getitem__, bag))
            if asked_pairs and (len(bag) > 1 or bag & doubled):
                score += PHRASE_WEIGHT * sum(map(phrase.__getitem__, asked_pairs & pairs))
            typed = False
            if kind is not None:
                a, b = spans[i]
                typed = _has_answer_type(kind, text[a:b], asked_words, wanted)
                score = score + bonus * typed
            if score > best_score:  # ties keep the earlier sentence
                best, best_score, best_typed = i, score, typed
        matches.append(SentenceMatch(min(best_score / total, 1.0), best_score / total,
                                     *spans[best], typed=best_typed))
    return matches


def highlight_of(text: str, offset: int, match: SentenceMatch | None) -> Highlight | None:
    if match is None:
        return None
    return Highlight(offset + match.start, offset + match.end, text[match.start : match.end])

