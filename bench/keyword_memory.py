"""What FTS5's postings kept in memory would save the keyword side of /ask: a measured prototype.

The keyword side of every /ask (FTS5's BM25 over the question's affordable words, their counts
for the postings budget, the absent-word probes) runs beside the question's embedding and costs
an /ask at 100k chunks ~4 ms over HTTP (README "Performance and scale"). This builds, from an
index's own FTS5 tables, an in-memory copy of its postings (every term's (chunk, position)
instances, each chunk's token count, the row and token totals), answers the same three calls
from it, checks that every answer is bit-identical to FTS5's (same chunks, same order, same
float scores, same counts, same absent words), and times both:

    python -m bench.keyword_memory --index /tmp/qa-profile-ask-100000 -n 300

Nothing here is used by `qa`. It is the evidence for planning an in-memory keyword engine:
its build cost (read from FTS5, whole), its memory, and what a question costs with it.

Exactness rests on doing what FTS5 does: tokens come from FTS5 itself (a private in-memory FTS5
table with the index's tokenizer tokenizes each quoted word or pair), and each row's score is
fts5_aux.c's bm25 with k1 = 1.2, b = 0.75, summed phrase by phrase in query order:
idf * ((f * (k1 + 1)) / (f + k1 * (1 - b + b * D / avgdl))), idf = ln((N - n + 0.5) / (n + 0.5))
(1e-6 when not positive), N and the token total from FTS5's averages record, D from docsize.
"""

from __future__ import annotations

import argparse
import math
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.corpus import scifact_questions
from bench.measure import percentiles
from qa.store import Store
from qa.text import KEYWORD_POSTINGS, query_words, rarest

K1, B = 1.2, 0.75
POSITION_BITS = 20  # a chunk's token offsets stay far below 2^20
TOKENIZER = "porter unicode61 remove_diacritics 2"  # qa/store.py's chunks_fts


def varints(blob: bytes) -> list[int]:
    """SQLite's (and FTS5's) varints: big-endian groups of 7 bits, 9 bytes at most."""
    values, value, count = [], 0, 0
    for byte in blob:
        count += 1
        if count == 9:
            values.append((value << 8) | byte)
            value, count = 0, 0
        elif byte & 0x80:
            value = (value << 7) | (byte & 0x7F)
        else:
            values.append((value << 7) | byte)
            value, count = 0, 0
    return values


@dataclass
class Phrase:
    docs: npt.NDArray[np.int64]  # rows holding the phrase, ascending
    freq: npt.NDArray[np.float64]  # how often each holds it


class MemoryPostings:
    """One index's FTS5 postings in numpy arrays, and the three keyword calls of /ask."""

    def __init__(self, path: Path) -> None:
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        for kind in ("row", "instance"):
            conn.execute(f"CREATE VIRTUAL TABLE temp.{kind}s USING"
                         f" fts5vocab(main, chunks_fts, '{kind}')")
        # The instance table lists every term's (chunk, offset) instances in term order, and
        # the row table each term's count of them in the same order: read as numbers alone
        # (10M rows at 100k chunks), then cut by those counts.
        counts = conn.execute("SELECT term, cnt FROM temp.rows").fetchall()
        keys = np.empty(sum(c for _, c in counts), dtype=np.int64)
        cursor = conn.execute("SELECT doc, offset FROM temp.instances")
        at = 0
        while batch := cursor.fetchmany(1 << 16):
            pairs = np.array(batch, dtype=np.int64)
            keys[at : at + len(pairs)] = (pairs[:, 0] << POSITION_BITS) | pairs[:, 1]
            at += len(pairs)
        assert at == len(keys), "the index changed while it was read"
        bounds = np.cumsum([0] + [c for _, c in counts])
        # term → its instances as doc << 20 | offset, ascending (the instance table's order)
        self.terms = {t: keys[a:b] for (t, _), a, b in zip(counts, bounds[:-1], bounds[1:],
                                                               strict=True)}
        # Rows holding each term: a one-token word's count for the postings budget, at once.
        self.holding = {t: int(np.count_nonzero(np.diff(a >> POSITION_BITS))) + 1
                        for t, a in self.terms.items()}
        sizes = conn.execute("SELECT id, sz FROM chunks_fts_docsize").fetchall()
        top = max((i for i, _ in sizes), default=0)
        self.length = np.zeros(top + 1, dtype=np.float64)  # D by chunk id
        for i, blob in sizes:
            self.length[i] = varints(blob)[0]
        averages = varints(conn.execute(
            "SELECT block FROM chunks_fts_data WHERE id = 1").fetchone()[0])
        self.rows, self.total_tokens = averages[0], averages[1]
        self.avgdl = float(self.total_tokens) / float(self.rows)
        issued = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
        self.issued = 0 if issued is None else int(issued[0])
        conn.close()
        # FTS5 itself tokenizes: a private table with the index's tokenizer.
        self._tokenizer = sqlite3.connect(":memory:", check_same_thread=False)
        self._lock = threading.Lock()  # the tokenizer's table is shared scratch
        self._tokenizer.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize='{TOKENIZER}')")
        self._tokenizer.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        self._tokens: dict[str, tuple[str, ...]] = {}
        self._phrases: dict[str, Phrase] = {}

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.terms.values()) + self.length.nbytes

    def tokens(self, texts: Sequence[str]) -> list[tuple[str, ...]]:
        """Each text's tokens as FTS5 makes them, in order (remembered by text)."""
        new = [t for t in dict.fromkeys(texts) if t not in self._tokens]
        if new:
            with self._lock:
                self._tokenize(new)
        return [self._tokens[t] for t in texts]

    def _tokenize(self, new: list[str]) -> None:
        self._tokenizer.executemany("INSERT INTO t(rowid, x) VALUES (?, ?)", list(enumerate(new)))
        found: dict[int, list[tuple[int, str]]] = {i: [] for i in range(len(new))}
        for term, doc, offset in self._tokenizer.execute("SELECT term, doc, offset FROM v"):
            found[doc].append((offset, term))
        self._tokenizer.execute("DELETE FROM t")
        for i, text in enumerate(new):
            self._tokens[text] = tuple(term for _, term in sorted(found[i]))

    def phrase(self, text: str) -> Phrase:
        """The rows holding `text` (as FTS5 matches the quoted string) and how often."""
        known = self._phrases.get(text)
        if known is not None:
            return known
        tokens = self.tokens([text])[0]
        empty = np.zeros(0, dtype=np.int64)
        keys = self.terms.get(tokens[0], empty) if tokens else empty
        for shift, token in enumerate(tokens[1:], start=1):
            keys = np.intersect1d(keys, self.terms.get(token, empty) - shift, assume_unique=True)
        docs, freq = np.unique(keys >> POSITION_BITS, return_counts=True)
        found = Phrase(docs, freq.astype(np.float64))
        self._phrases[text] = found
        return found

    def count(self, word: str) -> int:
        tokens = self.tokens([word])[0]
        if len(tokens) == 1:
            return self.holding.get(tokens[0], 0)
        return len(self.phrase(word).docs)

    def absent_words(self, words: Sequence[str]) -> list[str]:
        self.tokens(words)
        return [w for w in dict.fromkeys(words) if self.count(w) == 0]

    def keyword_search(self, question: str, k: int, *, budget: int | None = None
                       ) -> list[tuple[int, float]]:
        """Store.keyword_search, unfiltered."""
        content, pairs = query_words(question)
        self.tokens(content + [f"{a} {b}" for a, b in pairs])  # all new ones in one pass
        keep: set[str] | None = None
        if budget is not None and len(content) >= 2 and self.issued > budget:
            keep = rarest(content, {w: self.count(w) for w in content}, budget)
        kept = [w for w in content if keep is None or w in keep]
        joined = [f"{a} {b}" for a, b in pairs if keep is None or (a in keep and b in keep)]
        phrases = [self.phrase(text) for text in dict.fromkeys(kept + joined)]
        if not phrases:
            return []
        docs = np.unique(np.concatenate([p.docs for p in phrases]))
        score = np.zeros(len(docs), dtype=np.float64)
        length = self.length[docs]
        for p in phrases:
            idf = math.log((self.rows - len(p.docs) + 0.5) / (len(p.docs) + 0.5))
            idf = idf if idf > 0.0 else 1e-6
            at = np.searchsorted(docs, p.docs)
            d = length[at]
            f = p.freq
            score[at] += idf * ((f * (K1 + 1.0)) / (f + K1 * (1 - B + B * d / self.avgdl)))
        rank = -1.0 * score  # FTS5's value; Store.keyword_search returns its negation
        order = np.argsort(rank, kind="stable")[:k]
        return list(zip(docs[order].tolist(), (-rank[order]).tolist(), strict=True))


def serve(index: Path, port: int) -> None:
    """`qa`'s server on `index` with its keyword calls answered from memory (what an in-memory
    engine would do; filtered and keyword-mode searches stay on FTS5)."""
    import uvicorn

    memory = MemoryPostings(index / "qa.sqlite3")
    searched, probed = Store.keyword_search, Store.absent_words

    def keyword_search(store: Store, question: str, k: int, *, budget: int | None = None,
                       allowed: npt.NDArray[np.int64] | None = None) -> list[tuple[int, float]]:
        if allowed is None and budget is not None:
            return memory.keyword_search(question, k, budget=budget)
        return searched(store, question, k, budget=budget, allowed=allowed)

    def absent_words(store: Store, words: Sequence[str]) -> list[str]:
        return memory.absent_words(words) if store.path == index / "qa.sqlite3" else probed(
            store, words)

    Store.keyword_search = keyword_search  # type: ignore[method-assign,assignment]
    Store.absent_words = absent_words  # type: ignore[method-assign,assignment]
    uvicorn.run("qa.api:app_from_env", factory=True, host="127.0.0.1", port=port,
                log_level="warning")


def over_http(index: Path, n: int) -> None:
    """Two servers side by side on `index`, asked the same questions by turns (see
    bench.http_overhead): the working tree's, and the same with the keyword calls in memory."""
    import os
    import subprocess
    import tempfile

    from bench.http_overhead import PORT, by_turns, connect, start_server, summary
    from bench.measure import ROOT

    questions = scifact_questions()
    scratch = Path(tempfile.mkdtemp(prefix="qa-keyword-memory-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QA_INDEX_DIR": str(index.resolve()),
           "QA_ASK_RATE_LIMIT": "off", "QA_READ_ONLY": "1", "HF_HUB_OFFLINE": "1"}
    servers = [start_server(ROOT, index, PORT, scratch, {}),
               subprocess.Popen([sys.executable, "-m", "bench.keyword_memory", "--index",
                                 str(index.resolve()), "--serve", str(PORT + 1)],
                                env=env, cwd=scratch)]
    try:
        conns = {"fts5": connect(PORT), "memory": connect(PORT + 1)}
        walls, tooks = by_turns(conns, questions, n, "hybrid")
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    for name in conns:
        s = summary(walls[name], tooks[name])
        print(f"/ask hybrid, keyword side in {name:6s}: wall p50 {s['wall_p50_ms']:7.3f} ms"
              f"  took p50 {s['took_p50_ms']:7.3f} ms  ({s['requests']} requests)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="an index folder")
    parser.add_argument("-n", type=int, default=300, help="SciFact questions asked")
    parser.add_argument("--depth", type=int, default=1000, help="k of the keyword query")
    parser.add_argument("--http", type=int, metavar="N",
                        help="also /ask over HTTP, N questions to each of two servers")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.index, args.serve)
        return

    started = time.perf_counter()
    memory = MemoryPostings(args.index / "qa.sqlite3")
    built = time.perf_counter() - started
    store = Store(args.index / "qa.sqlite3", read_only=True)
    questions = scifact_questions()[: args.n]
    spent: dict[str, list[float]] = {"fts5": [], "memory": []}
    differ = 0
    for question in questions:
        content, _ = query_words(question)
        started = time.perf_counter()
        fts5 = (store.keyword_search(question, args.depth, budget=KEYWORD_POSTINGS),
                store.absent_words(content))
        spent["fts5"].append(time.perf_counter() - started)
        started = time.perf_counter()
        mine = (memory.keyword_search(question, args.depth, budget=KEYWORD_POSTINGS),
                memory.absent_words(content))
        spent["memory"].append(time.perf_counter() - started)
        differ += fts5 != mine
    print(f"index {args.index}: {memory.rows} rows, {len(memory.terms)} terms,"
          f" {sum(len(a) for a in memory.terms.values())} instances")
    print(f"build from FTS5 {built:.2f} s, arrays {memory.nbytes() / 2**20:.0f} MiB")
    for name, samples in spent.items():
        print(f"keyword side, {name:6s} {percentiles(samples)}")
    print(f"answers that differ from FTS5's: {differ} of {len(questions)}")
    store.close()
    del memory
    if args.http:
        over_http(args.index, args.http)
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
