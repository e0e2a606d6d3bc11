"""SQLite: documents, chunks, their embeddings and the keyword index, changed in transactions.

Why SQLite: one file, transactions that survive a crash (WAL), readers in many processes while
one process writes, and FTS5 for keyword search kept in the same transaction as the chunk rows.
Embeddings are stored beside their chunk so the FAISS snapshot can always be rebuilt from
here without re-embedding, and so vectors computed elsewhere can be written in directly.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qa.chunking import split_sentences
from qa.errors import DocumentNotFound, IndexNotFound, ReadOnlyIndex, StorageFull
from qa.filters import Filter
from qa.keywords import Fingerprint, KeywordMirror, fingerprint
from qa.text import keyword_query, query_words, rarest
from qa.types import Chunk, ChunkRow, Document, DocumentRow

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# SQLite's default limit on bound parameters is 999: `IN (...)` lists are sent in batches.
MAX_PARAMETERS = 900
BUSY_TIMEOUT_S = 30.0  # how long a write waits for another process's write to finish
# Chunk rows kept in memory by chunk id (SciFact's: ~3 KB each, with what they hold: ~50 MB at
# most; Python's memory grew 40 MB over 300 questions at 100k, 11.7k rows kept). A chunk id
# is never reused, and nothing in its row changes while it lives but its document's `source`
# (a details update; any other change replaces the document, so its chunks get new ids):
# chunk_rows reads the ids, the filter and the source again unless nothing was committed since
# (then a kept row is as it was read), and the text, spans and citation fields only of chunks
# not kept. At 100k chunks, for ~57 candidates: whole rows 0.9 ms to read (and 0.5 ms to make
# ChunkRow objects of), ids, filter and source 0.35 ms, the version alone a few µs.
CHUNK_ROWS = 1 << 14

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id           TEXT PRIMARY KEY,
    title        TEXT NOT NULL,
    source       TEXT,
    date         TEXT,
    url          TEXT,
    metadata     TEXT NOT NULL DEFAULT '{}',
    text         TEXT NOT NULL,          -- canonical text: every offset points into it
    content_hash TEXT NOT NULL,
    indexed_at   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,  -- also the FAISS id; never reused
    document_id  TEXT NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    ordinal      INTEGER NOT NULL,
    start        INTEGER NOT NULL,
    end          INTEGER NOT NULL,
    token_count  INTEGER NOT NULL,
    page         INTEGER,
    heading_path TEXT NOT NULL DEFAULT '[]',
    embedding    BLOB,                   -- float32, normalized; NULL means "embed me"
    sentences    BLOB,                   -- int32 (start, end) pairs within the chunk's text
    UNIQUE (document_id, ordinal)
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(document_id);
-- Contentless: the chunk text lives once, in documents.text; rowid is the chunk id.
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    text, content='', tokenize='porter unicode61 remove_diacritics 2'
);
-- A read-only view of chunks_fts's terms and their document frequencies (stores nothing).
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vocab USING fts5vocab(chunks_fts, 'row');
"""

class Store:
    """All SQL lives here. One connection per store, guarded by a lock (FastAPI uses threads)."""

    # The last allowed ids a keyword search was restricted to, with their byte table.
    _members: tuple[npt.NDArray[np.int64], bytes] | None = None
    # The keyword index held in memory, answering while it is of the index's current state.
    _mirror: KeywordMirror | None = None

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.RLock()
        # word → (chunks holding it as FTS5 tokenizes it, whether that count is whole or
        # stopped at a cap); see _affordable
        self._frequency: dict[str, tuple[int, bool]] = {}
        self._frequency_at = 0  # chunk ids issued when those counts were taken
        # chunk id → its row and the `version` it was last read at; see CHUNK_ROWS
        self._rows: dict[int, tuple[ChunkRow, tuple[int, int]]] = {}
        if read_only:
            self._conn = _connect_read_only(path)
            _map_pages(self._conn)
            return
        # `timeout` is SQLite's busy timeout: a write waits this long for another's to end.
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                     timeout=BUSY_TIMEOUT_S)
        with self._lock, _storage_errors(path):
            # WAL: readers in other processes never block on, or see half of, a write.
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            _map_pages(self._conn)
            self._conn.executescript(_SCHEMA)
            columns = {r[1] for r in self._conn.execute("PRAGMA table_info(chunks)")}
            if "sentences" not in columns:  # an index from before sentence spans were stored
                self._conn.execute("ALTER TABLE chunks ADD COLUMN sentences BLOB")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def data_version(self) -> int:
        """Changes whenever another connection commits: the cue to refresh the vectors."""
        with self._lock:
            return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One write transaction: committed when the block ends, rolled back if it raises.
        IMMEDIATE takes the write lock up front, so two writers queue instead of deadlocking."""
        with self._lock, _storage_errors(self.path):
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk among them):
                # a second ROLLBACK would fail and hide the error that matters.
                if self._conn.in_transaction:
                    with suppress(sqlite3.Error):
                        cur.execute("ROLLBACK")
                raise

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads inside the block see one committed state of the index (a read transaction),
        so rows and texts read for one question never mix two versions of a document."""
        with self._lock:
            if self._conn.in_transaction:  # nested: the outer snapshot already holds
                yield
                return
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                self._conn.execute("COMMIT")

    # -- writes ------------------------------------------------------------------------------

    def replace_documents(
        self,
        items: Sequence[tuple[Document, Sequence[Chunk], npt.NDArray[np.float32] | None]],
        details: Sequence[Document] = (),
    ) -> tuple[list[int], list[int]]:
        """Insert or replace documents with their chunks, and update the metadata and source of
        `details` (documents whose indexed content is unchanged), all in one transaction.

        Returns (new chunk ids, removed chunk ids) so the vector index can follow.
        """
        added: list[int] = []
        removed: list[int] = []
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._transaction() as cur:
            cur.executemany(
                "UPDATE documents SET metadata = ?, source = ?, indexed_at = ? WHERE id = ?",
                [(json.dumps(dict(d.metadata), ensure_ascii=False), d.source, now, d.id)
                 for d in details],
            )
            for document, chunks, vectors in items:
                removed += self._delete_document(cur, document.id)
                cur.execute(
                    "INSERT INTO documents (id, title, source, date, url, metadata, text,"
                    " content_hash, indexed_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (document.id, document.title, document.source, document.date,
                     document.url, json.dumps(dict(document.metadata), ensure_ascii=False),
                     document.text, document.content_hash, now),
                )
                for i, chunk in enumerate(chunks):
                    blob = None if vectors is None else vectors[i].astype(np.float32).tobytes()
                    # Sentence spans are found once here rather than on every question
                    # that retrieves the chunk (they are the highlight's candidates).
                    spans = np.asarray(split_sentences(chunk.text), dtype=np.int32)
                    cur.execute(
                        "INSERT INTO chunks (document_id, ordinal, start, end, token_count,"
                        " page, heading_path, embedding, sentences)"
                        " VALUES (?,?,?,?,?,?,?,?,?)",
                        (document.id, chunk.ordinal, chunk.start, chunk.end,
                         chunk.token_count, chunk.page,
                         json.dumps(list(chunk.heading_path), ensure_ascii=False), blob,
                         spans.tobytes()),
                    )
                    chunk_id = int(cur.lastrowid or 0)
                    cur.execute("INSERT INTO chunks_fts (rowid, text) VALUES (?, ?)",
                                (chunk_id, chunk.text))
                    added.append(chunk_id)
        return added, removed

    def delete_document(self, document_id: str) -> list[int]:
        with self._transaction() as cur:
            return self._delete_document(cur, document_id)

    def _delete_document(self, cur: sqlite3.Cursor, document_id: str) -> list[int]:
        row = cur.execute("SELECT text FROM documents WHERE id = ?", (document_id,)).fetchone()
        if row is None:
            return []
        text = row[0]
        spans = cur.execute(
            "SELECT id, start, end FROM chunks WHERE document_id = ?", (document_id,)
        ).fetchall()
        # A contentless FTS5 row is deleted by repeating exactly the text it indexed.
        cur.executemany(
            "INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', ?, ?)",
            [(cid, text[s:e]) for cid, s, e in spans],
        )
        cur.execute("DELETE FROM documents WHERE id = ?", (document_id,))
        return [cid for cid, _, _ in spans]

    def set_embeddings(self, ids: Sequence[int], vectors: npt.NDArray[np.float32]) -> None:
        with self._transaction() as cur:
            cur.executemany(
                "UPDATE chunks SET embedding = ? WHERE id = ?",
                [(v.astype(np.float32).tobytes(), int(i))
                 for i, v in zip(ids, vectors, strict=True)],
            )

    # -- reads -------------------------------------------------------------------------------

    def document_states(self, ids: Sequence[str]
                        ) -> dict[str, tuple[str, dict[str, Any], str | None]]:
        """(content hash, metadata, source) of those of `ids` that are stored."""
        found: dict[str, tuple[str, dict[str, Any], str | None]] = {}
        for batch in _batches(list(dict.fromkeys(ids)), MAX_PARAMETERS):
            with self._lock:
                rows = self._conn.execute(
                    "SELECT id, content_hash, metadata, source FROM documents"
                    f" WHERE id IN ({','.join('?' * len(batch))})", batch).fetchall()
            found.update({r[0]: (r[1], json.loads(r[2]), r[3]) for r in rows})
        return found

    def sources(self) -> dict[str, str]:
        with self._lock:
            return dict(
                self._conn.execute(
                    "SELECT id, source FROM documents WHERE source IS NOT NULL"
                ).fetchall()
            )

    def counts(self) -> tuple[int, int]:
        with self._lock:
            docs = self._conn.execute("SELECT count(*) FROM documents").fetchone()[0]
            chunks = self._conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return int(docs), int(chunks)

    def embedded_chunk_ids(self) -> npt.NDArray[np.int64]:
        return self._ids("SELECT id FROM chunks WHERE embedding IS NOT NULL ORDER BY id")

    def _ids(self, query: str) -> npt.NDArray[np.int64]:
        """The one integer column of `query`, as an int64 array."""
        with self._lock:
            rows = self._conn.execute(query).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def chunk_ids(self) -> npt.NDArray[np.int64]:
        return self._ids("SELECT id FROM chunks ORDER BY id")

    def keyword_ids(self) -> npt.NDArray[np.int64]:
        """Chunk ids the keyword index holds postings for (a contentless FTS5 table still
        lists its rowids)."""
        return self._ids("SELECT rowid FROM chunks_fts ORDER BY rowid")

    def keyword_index_intact(self) -> bool:
        """FTS5's own structural check of its b-trees (it cannot compare a contentless
        table's postings with the text: `keyword_ids` covers which rows are indexed)."""
        with self._lock:
            try:
                self._conn.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('integrity-check')")
            except sqlite3.DatabaseError:
                return False
        return True

    def rebuild_keyword_index(self) -> None:
        """Index every chunk's text anew. A contentless table has no 'rebuild' command:
        empty it, then insert each chunk's text as it is sliced from its document."""
        with self._transaction() as cur:
            cur.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('delete-all')")
            cur.execute(
                "INSERT INTO chunks_fts (rowid, text) SELECT c.id,"
                " substr(d.text, c.start + 1, c.end - c.start)"
                " FROM chunks c JOIN documents d ON d.id = c.document_id")

    def keyword_segments(self) -> int:
        """How many segments the keyword index is split into. FTS5 appends one per commit
        and merges some as it goes (automerge); every term a query reads is looked up in
        each of them."""
        with self._lock:
            return int(self._conn.execute(
                "SELECT count(DISTINCT segid) FROM chunks_fts_idx").fetchone()[0])

    def optimize_keyword_index(self) -> None:
        """Merge the keyword index into one segment (FTS5 'optimize'), in one transaction: a
        failure (a full disk) leaves it as it was. The same postings, so the same matches
        and BM25 scores, read in fewer places."""
        with self._transaction() as cur:
            cur.execute("INSERT INTO chunks_fts (chunks_fts) VALUES ('optimize')")

    def embeddings(self, ids: Sequence[int], dimension: int) -> npt.NDArray[np.float32]:
        out = np.zeros((len(ids), dimension), dtype=np.float32)
        position = {int(i): n for n, i in enumerate(ids)}
        for batch in _batches(list(position), MAX_PARAMETERS):
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT id, embedding FROM chunks WHERE id IN ({','.join('?' * len(batch))})",
                    batch,
                ).fetchall()
            for cid, blob in rows:
                out[position[cid]] = np.frombuffer(blob, dtype=np.float32)
        return out

    def chunks_missing_embeddings(self) -> list[tuple[int, str]]:
        with self._lock:
            return self._conn.execute(
                "SELECT c.id, substr(d.text, c.start + 1, c.end - c.start) FROM chunks c"
                " JOIN documents d ON d.id = c.document_id WHERE c.embedding IS NULL"
            ).fetchall()

    def chunk_rows(self, ids: Sequence[int], *, filter: Filter | None = None
                   ) -> dict[int, ChunkRow]:
        """Chunks by id, with their text sliced from the document; deleted ids are absent, and
        so are those `filter` does not allow (as the rows stand in this read).

        A row kept in `_rows` (see CHUNK_ROWS) is read again only for what can change: whether
        its chunk lives and passes the filter, and its document's source; not even that when
        nothing was committed since it was read (`version`) and there is no filter. The
        others are read whole and kept."""
        found: dict[int, ChunkRow] = {}
        where, params = filter.sql() if filter is not None else ("1", [])
        # One read transaction for all of it (joins the caller's snapshot if it holds one).
        # Its first statement reads the version, so the version is that of what it reads.
        with self.snapshot():
            now = self.version()
            for batch in _batches(sorted({int(i) for i in ids}), MAX_PARAMETERS):
                kept: list[int] = []
                unread: list[int] = []
                for i in batch:
                    entry = self._rows.get(i)
                    if entry is None:
                        unread.append(i)
                    elif entry[1] == now and filter is None:
                        found[i] = entry[0]
                    else:
                        kept.append(i)
                if len(self._rows) + len(unread) > CHUNK_ROWS:
                    self._rows.clear()  # all at once: cheaper than an LRU's upkeep on each hit
                    kept, unread = [], [i for i in batch if i not in found]
                if unread:
                    for r in self._conn.execute(
                        "SELECT c.id, c.document_id, c.start, c.end,"
                        " substr(d.text, c.start + 1, c.end - c.start), c.page, c.heading_path,"
                        " d.title, d.source, d.date, d.url, c.sentences"
                        " FROM chunks c JOIN documents d ON d.id = c.document_id"
                        f" WHERE c.id IN ({','.join('?' * len(unread))}) AND ({where})",
                        [*unread, *params],
                    ).fetchall():
                        found[r[0]] = row = ChunkRow(
                            r[0], r[1], r[2], r[3], r[4], r[5], _heading_path(r[6]), r[7], r[8],
                            r[9], r[10], None if r[11] is None else _spans(r[11]))
                        self._rows[r[0]] = (row, now)
                if kept:
                    for cid, source in self._conn.execute(
                        "SELECT c.id, d.source FROM chunks c JOIN documents d"
                        f" ON d.id = c.document_id WHERE c.id IN ({','.join('?' * len(kept))})"
                        f" AND ({where})", [*kept, *params],
                    ).fetchall():
                        row = self._rows[cid][0]
                        if row.source != source:  # its document's details changed since
                            row = replace(row, source=source)
                        found[cid] = row
                        self._rows[cid] = (row, now)
        return found

    def keyword_search(self, question: str, k: int, *, budget: int | None = None,
                       allowed: npt.NDArray[np.int64] | None = None) -> list[tuple[int, float]]:
        """BM25 over chunks (FTS5); scores are positive, higher is better. With a `budget`,
        common words are left out when the question's postings would exceed it (see
        KEYWORD_POSTINGS). With `allowed` chunk ids (a filter's, ascending), only those are
        ranked: k allowed matches come back whenever k exist.

        The restriction is in the query, before ranking and LIMIT, as a lookup of each match's
        rowid in the allowed ids. Joining chunks and documents to test the filter itself
        parses a document's metadata JSON for every match: at 100k chunks (SciFact questions,
        median) the keyword query took 9.8 ms joined and 1.9 ms looked up with 1% of chunks
        allowed, 10.2 and 4.5 ms with 50%, against 5.5 ms unfiltered.
        """
        if allowed is not None and len(allowed) == 0:
            return []
        mirror = self.current_mirror()
        if mirror is not None:
            return mirror.keyword_search(question, k, budget=budget, allowed=allowed)
        with self._lock:
            keep = (lambda _: True) if budget is None else self._affordable(question, budget)
            query = keyword_query(question, keep)
            if query is None:
                return []
            if allowed is None:
                matches = self._conn.execute(
                    "SELECT rowid, bm25(chunks_fts) FROM chunks_fts WHERE chunks_fts MATCH ?",
                    (query,))
                rows = _best_ranked(matches, k)
            else:
                # The same array comes back for the same filter until the data changes.
                if self._members is None or self._members[0] is not allowed:
                    self._members = (allowed, _member_bytes(allowed))
                member = self._members[1]
                size = len(member)
                # Registered anew for each query (under the lock): it reads this query's ids.
                self._conn.create_function(
                    "qa_allowed", 1, lambda rowid: rowid < size and member[rowid])
                matches = self._conn.execute(
                    "SELECT rowid, bm25(chunks_fts) FROM chunks_fts"
                    " WHERE chunks_fts MATCH ? AND qa_allowed(rowid)",
                    (query,))
                rows = _best_ranked(matches, k)
        return [(rowid, -rank) for rowid, rank in rows]

    def filtered_chunk_ids(self, filter: Filter) -> npt.NDArray[np.int64]:
        """The ids of the chunks `filter` allows, ascending (one query over chunks and their
        documents)."""
        where, params = filter.sql()
        # Documents first (CROSS JOIN fixes the order): a document-level condition is tested
        # once per document, not once per chunk (3x faster on SciFact's 20k chunks).
        with self._lock:
            rows = self._conn.execute(
                "SELECT c.id FROM documents d CROSS JOIN chunks c ON c.document_id = d.id"
                f" WHERE {where}", params).fetchall()
        return np.sort(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))

    def version(self) -> tuple[int, int]:
        """Changes with every commit that can change what a read returns: another
        connection's (`data_version`) or this one's (its count of changed rows)."""
        with self._lock:
            return (int(self._conn.execute("PRAGMA data_version").fetchone()[0]),
                    self._conn.total_changes)

    def absent_words(self, words: Sequence[str]) -> list[str]:
        """Those of `words` that no chunk holds (as FTS5 stems them). One indexed probe each:
        EXISTS without ranking reads a single posting, whatever the collection's size."""
        mirror = self.current_mirror()
        if mirror is not None:
            return mirror.absent_words(words)
        absent: list[str] = []
        # All probes in one statement (a column each): one round trip instead of one a word.
        for batch in _batches(list(dict.fromkeys(words)), MAX_PARAMETERS):
            probes = ", ".join(["EXISTS (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ?)"]
                               * len(batch))
            with self._lock:
                held = self._conn.execute(f"SELECT {probes}",
                                          [f'"{w}"' for w in batch]).fetchone()
            absent += [w for w, found in zip(batch, held, strict=True) if not found]
        return absent

    # -- the keyword index in memory (qa/keywords.py) ----------------------------------------

    def read_keyword_mirror(self, max_instances: int) -> KeywordMirror | None:
        """The keyword index as it stands, read whole into memory on a connection of its own
        (one read transaction: the arrays and their fingerprint are of one state); None when
        it is empty or larger than `max_instances`. Seconds at 100k chunks: not on a
        question's path."""
        conn = _connect_read_only(self.path)
        try:
            _map_pages(conn)
            conn.execute("BEGIN")
            return KeywordMirror.read(conn, max_instances=max_instances)
        finally:
            conn.close()

    def use_keyword_mirror(self, mirror: KeywordMirror | None) -> None:
        self._mirror = mirror

    def keyword_fingerprint(self) -> Fingerprint | None:
        with self._lock:
            return fingerprint(self._conn)

    def current_mirror(self) -> KeywordMirror | None:
        """The mirror in use, if it is of the state this connection reads now."""
        mirror = self._mirror
        if mirror is None:
            return None
        return mirror if self.keyword_fingerprint() == mirror.fingerprint else None

    def _affordable(self, question: str, budget: int) -> Callable[[str], bool]:
        """Which of the question's words fit the postings budget (all, in a small collection)."""
        words, _ = query_words(question)
        issued = self._conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
        if len(words) < 2 or issued is None or issued[0] <= budget:
            return lambda _: True
        # Each word's chunks are counted as the keyword query will read them: a MATCH of the
        # word, tokenized by FTS5 itself. Counting stops past the budget, so a common word
        # costs what the budget does, not its whole postings list (the vocabulary's count
        # reads all of them: 20-40 ms for a common word's first count at 100k chunks, 2.8 ms
        # a question against 1.2). A word past the budget is never kept beside another, so
        # only when every word is past it are whole counts needed, to keep the rarest.
        # Counts are remembered until the collection grows or shrinks by a tenth: they only
        # decide which words to keep.
        if abs(issued[0] - self._frequency_at) > issued[0] // 10:
            self._frequency.clear()
            self._frequency_at = issued[0]
        unique = list(dict.fromkeys(words))
        counts = {w: self._chunks_holding(w, budget + 1) for w in unique}
        if min(counts.values()) > budget:
            counts = {w: self._chunks_holding(w, None) for w in unique}
        kept = rarest(words, counts, budget)
        return kept.__contains__

    def _chunks_holding(self, word: str, cap: int | None) -> int:
        """How many chunks hold `word` as FTS5 tokenizes it: all of them, or with a `cap`,
        up to it (a count of `cap` means at least that many)."""
        known = self._frequency.get(word)
        if known is not None and (known[1] or (cap is not None and known[0] >= cap)):
            return known[0]
        match = f'"{word}"'  # query_words gives word characters only: no FTS syntax
        if cap is None:
            row = self._conn.execute(
                "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?", (match,)).fetchone()
        else:
            row = self._conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM chunks_fts WHERE chunks_fts MATCH ? LIMIT ?)",
                (match, cap)).fetchone()
        count = int(row[0])
        if len(self._frequency) > 100_000:
            self._frequency.clear()
        self._frequency[word] = (count, cap is None or count < cap)
        return count

    def text_span(self, document_id: str, start: int, end: int) -> str:
        with self._lock:
            row = self._conn.execute(
                "SELECT substr(text, ? + 1, ? - ?) FROM documents WHERE id = ?",
                (start, end, start, document_id),
            ).fetchone()
        if row is None:
            raise DocumentNotFound(f"no document with id {document_id!r}")
        return str(row[0])

    def get_document(self, document_id: str, *, with_text: bool = True,
                     filter: Filter | None = None) -> DocumentRow:
        """One document; with a `filter`, only if one of its chunks is allowed (else it is
        not found: a scoped key learns nothing of what it may not read)."""
        where, params = _documents_allowed(filter)
        rows = self._document_rows(f"WHERE d.id = ? AND {where}", (document_id, *params),
                                   with_text=with_text)
        if not rows:
            raise DocumentNotFound(f"no document with id {document_id!r}")
        return rows[0]

    def list_documents(self, offset: int, limit: int, *, filter: Filter | None = None
                       ) -> tuple[list[DocumentRow], int]:
        if filter is not None:
            where, params = _documents_allowed(filter)
            with self._lock:
                total = int(self._conn.execute(
                    f"SELECT count(*) FROM documents d WHERE {where}", params).fetchone()[0])
            return self._document_rows(f"WHERE {where} ORDER BY d.id LIMIT ? OFFSET ?",
                                       (*params, limit, offset)), total
        total = self.counts()[0]
        return self._document_rows("ORDER BY d.id LIMIT ? OFFSET ?", (limit, offset)), total

    def _document_rows(
        self, tail: str, params: tuple[Any, ...], *, with_text: bool = False
    ) -> list[DocumentRow]:
        text_col = "d.text" if with_text else "NULL"
        with self._lock:
            rows = self._conn.execute(
                "SELECT d.id, d.title, d.source, d.date, d.url, d.metadata, d.content_hash,"
                f" d.indexed_at, (SELECT count(*) FROM chunks c WHERE c.document_id = d.id),"
                f" {text_col} FROM documents d {tail}",
                params,
            ).fetchall()
        return [
            DocumentRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8], r[9])
            for r in rows
        ]


# How often a server's collection checks whether its keyword index changed. A mirror is read
# again once the index has changed and then kept still for a whole period, so a run of writes
# (a watch, a crawl, a bulk load) is read once, after it, rather than once a write.
KEYWORDS_CHECK_S = 30.0


class KeywordKeeper:
    """Keeps a store's keyword mirror (qa/keywords.py) of its index's current state, on a
    thread of its own: read at once, then again whenever the index changed and has stayed as
    it is since the last check. While none is current, the store asks FTS5 (same answers)."""

    def __init__(self, store: Store, max_instances: int, every_s: float = KEYWORDS_CHECK_S
                 ) -> None:
        self.store = store
        self.max_instances = max_instances
        self.every_s = every_s
        self.state = "building"  # "memory" | "building" | "fts5"; see Collection.keywords
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qa-keywords", daemon=True)

    def start(self) -> KeywordKeeper:
        self._thread.start()
        return self

    def stop(self, timeout: float = 1.0) -> None:
        """Asks the thread to end; a read in progress is not waited for past `timeout` (it
        holds its own connection, and its arrays are dropped)."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        seen: Fingerprint | None = None  # the index's state at the last check
        tried: Fingerprint | None = None  # the state last read (or found too large)
        first = True
        while not self._stop.is_set():
            try:
                now = self.store.keyword_fingerprint()
                if (self.store.current_mirror() is None and now is not None and now != tried
                        and (first or now == seen)):
                    tried = now
                    self.store.use_keyword_mirror(None)  # behind: its arrays go first
                    self.state = "building"
                    mirror = self.store.read_keyword_mirror(self.max_instances)
                    if not self._stop.is_set():
                        self.store.use_keyword_mirror(mirror)
                self.state = "memory" if self.store.current_mirror() is not None else "fts5"
                seen, first = now, False
            except Exception:  # closed, gone, short of memory: FTS5 answers, as it can
                if not self._stop.is_set():
                    log.warning("keyword index not held in memory", exc_info=True)
                self.store.use_keyword_mirror(None)
                self.state = "fts5"
            self._stop.wait(self.every_s)


def _documents_allowed(filter: Filter | None) -> tuple[str, tuple[Any, ...]]:
    """A condition on documents `d`: some chunk of it passes `filter` (always true without)."""
    if filter is None:
        return "1", ()
    where, params = filter.sql()
    return ("d.id IN (SELECT c.document_id FROM chunks c JOIN documents d"
            f" ON d.id = c.document_id WHERE {where})", tuple(params))


# Pages read through a memory map instead of a read() into SQLite's page cache each: the keyword
# index's postings are read on every question (1000 matches at 100k chunks: 4.7 -> 4.1 ms).
# Address space only; the kernel's page cache holds the pages either way.
MMAP_BYTES = 1 << 30


def _map_pages(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that cannot write: `mode=ro`, so SQLite itself refuses any write.

    A WAL database can only be read `mode=ro` if SQLite may create its -shm beside it; on a
    read-only volume holding a cleanly closed index (no -wal, no -shm) that fails, and the
    file is then opened `immutable=1`: read as it is, without locks. (A -wal left on such a
    volume would go unread: publish an index that was closed, so it was checkpointed.)
    """
    if not path.exists():
        raise IndexNotFound(f"no database at {path}")
    uri = path.absolute().as_uri()
    for options in ("mode=ro", "mode=ro&immutable=1"):
        conn = sqlite3.connect(f"{uri}?{options}", uri=True, check_same_thread=False,
                               isolation_level=None, timeout=BUSY_TIMEOUT_S)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            error = exc
    raise IndexNotFound(f"cannot open {path} read-only: {error}")


@contextmanager
def _storage_errors(path: Path) -> Iterator[None]:
    """SQLite's full-disk and read-only failures, as the errors a user can act on."""
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # primary code, without extension
        # SQLite names ENOSPC SQLITE_FULL when writing pages, but a mere "disk I/O error"
        # when growing its -shm: the free space tells those apart.
        if code == sqlite3.SQLITE_FULL or (code == sqlite3.SQLITE_IOERR
                                           and os.statvfs(path.parent).f_bavail == 0):
            raise StorageFull(f"disk is full: cannot write the index at {path.parent}; "
                              "the write was rolled back, free some space and retry") from exc
        if code == sqlite3.SQLITE_READONLY:
            raise ReadOnlyIndex(f"index {path.parent} cannot be written (read-only database "
                                "file or volume); it only answers questions") from exc
        raise


def _best_ranked(matches: Iterable[tuple[int, float]], k: int) -> list[tuple[int, float]]:
    """The k matches of lowest bm25() (FTS5's rank: lower is better), ties in rowid order.

    Ranked here rather than by `ORDER BY bm25(..) LIMIT k`: SQLite then evaluates bm25()
    twice a row (select list and sort key) and keeps its top k in a temporary b-tree, which
    cost a seventh of the keyword query at 100k chunks (~1,000 matches: 5.1 vs 4.4 ms, the
    same rows and scores). FTS5 yields matches in rowid order, and the sort is stable, so
    tied scores keep the order SQLite's sort gave them (as do both ways below). With the
    postings budget there are rarely many more matches than k, and a sort is fastest (1,000:
    0.2 ms, a heap 0.75 ms); keyword mode may match most chunks for k=30, where a heap is
    (50k: 3.7 ms, a sort 20 ms).
    """
    rows = list(matches)
    if len(rows) > 4 * k:
        return heapq.nsmallest(k, rows, key=itemgetter(1))
    rows.sort(key=itemgetter(1))
    return rows[:k]


def _member_bytes(ids: npt.NDArray[np.int64]) -> bytes:
    """A byte per chunk id up to the largest of `ids`: 1 where the id is among them."""
    table = np.zeros(int(ids[-1]) + 1, dtype=np.uint8)
    table[ids] = 1
    return table.tobytes()


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _spans(stored: bytes) -> list[tuple[int, int]]:
    """A chunk's sentence spans from their int32 (start, end) pairs (C ints: 4 bytes
    wherever this runs), without numpy: 5 µs a chunk instead of 10, for ~60 chunks an /ask."""
    values = iter(memoryview(stored).cast("i").tolist())
    return list(zip(values, values, strict=True))


def _heading_path(stored: str) -> tuple[str, ...]:
    """A chunk's heading path from its JSON; most chunks have none, read without parsing."""
    return () if stored == "[]" else tuple(json.loads(stored))
