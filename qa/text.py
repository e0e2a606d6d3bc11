"""Text analysis shared by the keyword index and the highlighter: words, stopwords, stems,
and a question's keyword query. Pure functions; no I/O."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import cache, lru_cache

# Words too common to help a keyword query; BM25's IDF would mute them, but dropping them keeps
# OR-queries from touching every row of a large collection.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves""".split()  # noqa: SIM905
)
WORD = re.compile(r"\w+", re.UNICODE)


@cache
def snowball(algorithm: str):  # type: ignore[no-untyped-def]
    """One Snowball stemmer per algorithm, loaded on first use (C PyStemmer when installed)."""
    import snowballstemmer

    return snowballstemmer.stemmer(algorithm)


# Sentence matching stems with Snowball's English (Porter 2), which conflates more forms
# ("negotiations"/"negotiated") and is what the ranking weights were tuned with. The keyword
# index's terms are FTS5's own (its `porter` tokenizer): what it holds is asked of FTS5 itself,
# by MATCH, never by stemming here.
@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """Snowball (Porter 2) English stem, so "negotiations" meets "negotiated"."""
    return snowball("english").stemWord(word)  # type: ignore[no-any-return]


def split_words(text: str) -> list[str]:
    """`text`'s words, lower-cased (Unicode word characters)."""
    return WORD.findall(text.lower())


def terms(text: str) -> list[str]:
    """Content words of `text`, lower-cased and stemmed; stopwords dropped."""
    return [stem(w) for w in split_words(text) if w not in STOPWORDS]


# FTS5 scores every row that holds any query word, at ~1 µs a posting, so a question made of
# common words costs a large collection tens of milliseconds (40 ms at 100k chunks). Hybrid
# search passes this budget: past this many postings its keyword query keeps only its rarest
# words, those that fit, as Lucene's common-terms query and Elasticsearch's `cutoff_frequency`
# do. A word found in a tenth of all chunks adds little BM25, and the dense side covers the
# recall it would add: on SciFact (12k chunks) hybrid nDCG@10 was 0.7224 with the budget and
# 0.7229 without, while keyword-only search lost 0.025, so keyword mode stays exact.
# Collections of up to this many chunks are never pruned.
KEYWORD_POSTINGS = 1500


def query_words(question: str) -> tuple[list[str], list[tuple[str, str]]]:
    """A question's content words (all words if it has none) and adjacent content-word pairs."""
    tokens = split_words(question)
    content = [w for w in tokens if w not in STOPWORDS] or tokens
    pairs = [(a, b) for a, b in zip(tokens, tokens[1:], strict=False)
             if a not in STOPWORDS and b not in STOPWORDS]
    return content, pairs


def keyword_phrases(question: str, keep: Callable[[str], bool] = lambda _: True) -> list[str]:
    """The phrases of a question's keyword query, in query order: its content words that
    `keep` accepts, then its adjacent pairs of them, each once."""
    content, pairs = query_words(question)
    # Adjacent content words also go in as a phrase ("russian delegation"), so chunks that
    # hold the question's phrases outrank those that only share its words.
    phrases = [f"{a} {b}" for a, b in pairs if keep(a) and keep(b)]
    return list(dict.fromkeys([w for w in content if keep(w)] + phrases))


def keyword_query(question: str, keep: Callable[[str], bool] = lambda _: True) -> str | None:
    """A question → an FTS5 OR-query of its quoted phrases (no FTS syntax can leak in),
    limited to the words `keep` accepts."""
    unique = keyword_phrases(question, keep)
    return " OR ".join(f'"{w}"' for w in unique) if unique else None


def rarest(words: Sequence[str], frequency: dict[str, int], budget: int) -> set[str]:
    """The rarest `words` whose document frequencies sum to at most `budget` (at least one)."""
    kept: set[str] = set()
    spent = 0
    for word in sorted(dict.fromkeys(words), key=lambda w: frequency.get(w, 0)):
        cost = frequency.get(word, 0) * words.count(word)
        if kept and spent + cost > budget:
            break
        kept.add(word)
        spent += cost
    return kept
