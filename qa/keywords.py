"""FTS5's postings held in memory: a question's keyword calls answered from numpy arrays,
bit-identical to FTS5's own answers.

At 100k chunks FTS5's `bm25()` costs the keyword side of an /ask ~4 ms of CPU (each matching
row's position lists and its length, read and decoded per question), which the question's
embedding beside it feels on two cores. A mirror reads the index's FTS5 tables once (every
term's (chunk, offset) instances, each chunk's token count, the row and token totals) and then
answers keyword_search, absent_words and the postings budget's counts from arrays: 1.5 ms
instead of 4.3 at 100k (README "Performance and scale").

Exactness rests on doing what FTS5 does, never an approximation of it:
- tokens come from FTS5 itself: each quoted word or pair of the keyword query is tokenized by a
  private in-memory FTS5 table with the index's tokenizer;
- a phrase of several tokens matches where its tokens sit at consecutive offsets;
- each row's score is fts5_aux.c's bm25, k1 = 1.2 and b = 0.75, summed phrase by phrase in
  query order with the same floating-point operations:
  idf * ((f * (k1 + 1)) / (f + k1 * (1 - b + b * D / avgdl))), with
  idf = ln((N - n + 0.5) / (n + 0.5)) (1e-6 when not positive), n counted over all rows (a
  filter restricts which rows are ranked, not the statistics), N and the token total from
  FTS5's averages record, D from its docsize table.

A mirror is of one state of the index, named by its fingerprint (FTS5's row and token totals
and the chunk ids issued): any write that changes the keyword index changes it, and a store
answers from a mirror only while the fingerprints agree.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from qa.text import keyword_phrases, query_words, rarest

K1, B = 1.2, 0.75  # FTS5's bm25 defaults
OFFSET_BITS = 24  # a term instance is stored as chunk id << 24 | its token offset in the chunk
TOKENIZER = "porter unicode61 remove_diacritics 2"  # the chunks_fts table's (qa/store.py)
# What a process remembers of questions: each word's or pair's tokens (this many), and each
# phrase's rows (up to this many rows in all: 16 bytes each, 64 MiB).
REMEMBERED = 1 << 15
REMEMBERED_ROWS = 1 << 22

Fingerprint = tuple[int, int, int]  # FTS5 rows, FTS5 tokens, chunk ids issued


def varints(blob: bytes) -> list[int]:
    """SQLite's (and FTS5's) varints: big-endian groups of 7 bits, 9 bytes at most."""
    values: list[int] = []
    value = count = 0
    for byte in blob:
        count += 1
        if count == 9:
            values.append((value << 8) | byte)
            value = count = 0
        elif byte & 0x80:
            value = (value << 7) | (byte & 0x7F)
        else:
            values.append((value << 7) | byte)
            value = count = 0
    return values


def fingerprint(conn: sqlite3.Connection) -> Fingerprint | None:
    """The keyword index's state as this connection reads it (None: nothing indexed yet)."""
    averages, issued = conn.execute(
        "SELECT (SELECT block FROM chunks_fts_data WHERE id = 1),"
        " (SELECT seq FROM sqlite_sequence WHERE name = 'chunks')").fetchone()
    if averages is None or issued is None:
        return None
    totals = varints(averages)
    return totals[0], totals[1], int(issued)


class _Phrase:
    __slots__ = ("docs", "freq")

    def __init__(self, docs: npt.NDArray[np.int64], freq: npt.NDArray[np.float64]) -> None:
        self.docs = docs  # the rows holding the phrase, ascending
        self.freq = freq  # how often each holds it


class KeywordMirror:
    """One state of a collection's FTS5 index, in arrays (see the module docstring)."""

    def __init__(self, terms: dict[str, npt.NDArray[np.int64]], ids: npt.NDArray[np.int64],
                 length: npt.NDArray[np.uint32], at: Fingerprint) -> None:
        self.terms = terms  # term → its instances as chunk id << OFFSET_BITS | offset, ascending
        self.holding = {t: int(np.count_nonzero(np.diff(a >> OFFSET_BITS))) + 1
                        for t, a in terms.items()}  # term → chunks holding it
        self.ids = ids  # the indexed chunks, ascending
        self.length = length  # their token counts (D), in the same order
        self.fingerprint = at
        self.rows = at[0]
        self.avgdl = float(at[1]) / float(at[0])
        self._tokenizer = sqlite3.connect(":memory:", check_same_thread=False)
        self._tokenizer.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize='{TOKENIZER}')")
        self._tokenizer.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        self._lock = threading.Lock()  # see _tokenize
        self._tokens: dict[str, tuple[str, ...]] = {}
        self._phrases: dict[str, _Phrase] = {}
        self._phrase_rows = 0  # rows the remembered phrases hold

    @classmethod
    def read(cls, conn: sqlite3.Connection, *, max_instances: int) -> KeywordMirror | None:
        """The FTS5 index `conn` reads, whole; None when it is empty or holds more than
        `max_instances` term instances (the arrays take 8 bytes each). Call inside a read
        transaction, so the arrays and the fingerprint are of one state."""
        at = fingerprint(conn)
        if at is None or at[0] == 0:
            return None
        for kind in ("row", "instance"):
            conn.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.qa_{kind}s"
                         f" USING fts5vocab(main, chunks_fts, '{kind}')")
        # The instance table lists each term's (chunk, offset) instances in term order, and the
        # row table each term's count of them in the same order: read as numbers alone, then
        # cut by those counts (10.4M instances at 100k chunks: ~15 s, almost all of it Python
        # making rows).
        counts = conn.execute("SELECT term, cnt FROM temp.qa_rows").fetchall()
        total = sum(c for _, c in counts)
        if total > max_instances:
            return None
        keys = np.empty(total, dtype=np.int64)
        cursor = conn.execute("SELECT doc, offset FROM temp.qa_instances")
        at_key = 0
        while batch := cursor.fetchmany(1 << 16):
            pairs = np.array(batch, dtype=np.int64)
            keys[at_key : at_key + len(pairs)] = (pairs[:, 0] << OFFSET_BITS) | pairs[:, 1]
            at_key += len(pairs)
        if at_key != total:
            return None  # the index changed under a reader outside a transaction
        bounds = np.cumsum([0] + [c for _, c in counts])
        terms = {t: keys[a:b] for (t, _), a, b in zip(counts, bounds[:-1], bounds[1:],
                                                       strict=True)}
        # Token counts by chunk id, as two arrays: chunk ids are never reused, so a collection
        # rewritten often has ids far beyond its chunk count, and a table indexed by id would
        # grow with them.
        sizes = conn.execute("SELECT id, sz FROM chunks_fts_docsize ORDER BY id").fetchall()
        ids = np.fromiter((i for i, _ in sizes), dtype=np.int64, count=len(sizes))
        length = np.fromiter((varints(blob)[0] for _, blob in sizes), dtype=np.uint32,
                             count=len(sizes))
        return cls(terms, ids, length, at)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.terms.values()) + self.ids.nbytes + self.length.nbytes

    # -- the three keyword calls of a question ------------------------------------------------

    def keyword_search(self, question: str, k: int, *, budget: int | None = None,
                       allowed: npt.NDArray[np.int64] | None = None
                       ) -> list[tuple[int, float]]:
        """Store.keyword_search, from memory: the same chunks, order and scores (an empty
        `allowed` is the store's to answer)."""
        content, pairs = query_words(question)
        self._tokenize(content + [f"{a} {b}" for a, b in pairs])  # new ones in one pass
        kept: Callable[[str], bool] | None = None  # None: every word
        if budget is not None and len(content) >= 2 and self.fingerprint[2] > budget:
            kept = rarest(content, {w: self.count(w) for w in content}, budget).__contains__
        phrases = [self._phrase(text)
                   for text in keyword_phrases(question, kept or (lambda _: True))]
        if not phrases:
            return []
        docs = np.unique(np.concatenate([p.docs for p in phrases]))
        # D as a double, exactly the integer FTS5 converts (token counts fit 32 bits).
        length = self.length[np.searchsorted(self.ids, docs)].astype(np.float64)
        score = np.zeros(len(docs), dtype=np.float64)
        for p in phrases:  # in query order: FTS5 sums its phrases so
            n = len(p.docs)
            idf = math.log((self.rows - n + 0.5) / (n + 0.5))
            idf = idf if idf > 0.0 else 1e-6
            at = np.searchsorted(docs, p.docs)
            f, d = p.freq, length[at]
            score[at] += idf * ((f * (K1 + 1.0)) / (f + K1 * (1 - B + B * d / self.avgdl)))
        rank = -1.0 * score  # bm25()'s value, lower is better; ties stay in rowid order
        if allowed is not None:
            kept_rows = np.isin(docs, allowed, assume_unique=True)
            docs, rank = docs[kept_rows], rank[kept_rows]
        order = np.argsort(rank, kind="stable")[:k]
        return list(zip(docs[order].tolist(), (-rank[order]).tolist(), strict=True))

    def absent_words(self, words: Sequence[str]) -> list[str]:
        """Those of `words` no chunk holds, as FTS5 matches each quoted."""
        self._tokenize(list(words))
        return [w for w in dict.fromkeys(words) if self.count(w) == 0]

    def count(self, word: str) -> int:
        """How many chunks hold `word`, quoted (a MATCH's count)."""
        tokens = self._tokenize([word])[0]
        if len(tokens) == 1:
            return self.holding.get(tokens[0], 0)
        return len(self._phrase(word).docs)

    # -- tokens and phrases --------------------------------------------------------------------

    def _tokenize(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        """Each text's tokens as FTS5 makes them, in order. Under the lock throughout: the
        tokenizer's table is scratch shared by threads, and what is remembered may be
        forgotten all at once."""
        with self._lock:
            known = self._tokens
            new = [t for t in dict.fromkeys(texts) if t not in known]
            if new and len(known) + len(new) > REMEMBERED:
                known.clear()
                new = list(dict.fromkeys(texts))
            if new:
                self._tokenizer.executemany("INSERT INTO t(rowid, x) VALUES (?, ?)",
                                            list(enumerate(new)))
                found: dict[int, list[tuple[int, str]]] = {i: [] for i in range(len(new))}
                for term, row, offset in self._tokenizer.execute(
                        "SELECT term, doc, offset FROM v"):
                    found[row].append((offset, term))
                self._tokenizer.execute("DELETE FROM t")
                for i, text in enumerate(new):
                    known[text] = tuple(term for _, term in sorted(found[i]))
            return [known[t] for t in texts]

    def _phrase(self, text: str) -> _Phrase:
        """The rows holding `text` (as FTS5 matches it quoted) and how often each does."""
        known = self._phrases.get(text)
        if known is not None:
            return known
        tokens = self._tokenize([text])[0]
        empty = np.zeros(0, dtype=np.int64)
        keys = self.terms.get(tokens[0], empty) if tokens else empty
        for shift, token in enumerate(tokens[1:], start=1):  # consecutive offsets
            keys = np.intersect1d(keys, self.terms.get(token, empty) - shift, assume_unique=True)
        docs, freq = np.unique(keys >> OFFSET_BITS, return_counts=True)
        found = _Phrase(docs, freq.astype(np.float64))
        if self._phrase_rows + len(docs) > REMEMBERED_ROWS:  # all at once, as CHUNK_ROWS
            self._phrases.clear()
            self._phrase_rows = 0
        self._phrases[text] = found
        self._phrase_rows += len(docs)
        return found
