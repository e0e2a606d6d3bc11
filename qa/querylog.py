"""The query log: each answered question, what it returned, and the feedback it got, in one
SQLite file beside the index (`querylog.sqlite3`), kept `retention_days`.

An answer never waits on this file: `record` puts the row on a bounded queue and one writer
thread inserts queued rows in small batches. Anything that stops a write (a full disk, a file
locked by another process past the busy timeout, a read-only file) drops those rows and counts
them in `dropped`; the answer has already gone out. The client address is stored only as a
SHA-256 under a random salt made once and kept in the file (`meta`), so the same client can be
counted without the address being written anywhere.

Several worker processes each hold their own `QueryLog` on the same file: WAL lets readers go
on beside a writer, and the busy timeout queues their short write transactions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import re
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Literal, cast

from qa.errors import IndexBusy, InvalidInput, QueryNotFound, ReadOnlyIndex, StorageFull

__all__ = [
    "LOG_FILE", "MAX_COMMENT_CHARS", "Feedback", "LoggedPassage", "LoggedQuery", "QueryLog",
    "judged_questions", "parse_since",
]

LOG_FILE = "querylog.sqlite3"
MAX_COMMENT_CHARS = 1000
MAX_QUEUED = 10_000  # rows waiting for the writer; past this they are dropped, not buffered
BATCH = 64  # rows per write transaction: one fsync-free commit (WAL, synchronous=NORMAL)
LINGER_S = 0.5  # how long the writer gathers rows after the first before it commits them
OTHER_WRITERS_S = LINGER_S + 0.5  # how long feedback waits for a row another worker queued
# The writer waits this long for another process's write; a log row is not worth longer.
BUSY_TIMEOUT_S = 2.0
PURGE_EVERY_S = 3600.0
Rating = Literal["up", "down"]
RATINGS: tuple[Rating, ...] = ("up", "down")

_log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
  id TEXT PRIMARY KEY,
  at TEXT NOT NULL,
  collection TEXT NOT NULL,
  question TEXT NOT NULL,
  mode TEXT NOT NULL, k INTEGER NOT NULL,
  filter TEXT,
  found INTEGER NOT NULL,
  confidence REAL NOT NULL,
  latency_ms REAL NOT NULL,
  client TEXT NOT NULL,
  key_id TEXT,
  passages TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queries_at ON queries(at);
CREATE TABLE IF NOT EXISTS feedback (
  query_id TEXT PRIMARY KEY REFERENCES queries(id) ON DELETE CASCADE,
  at TEXT NOT NULL,
  rating TEXT NOT NULL,
  passage INTEGER,
  comment TEXT
);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_QUERY_COLUMNS = ("id, at, collection, question, mode, k, filter, found, confidence, "
                  "latency_ms, client, key_id, passages")
_SINCE = re.compile(r"(\d{1,6})\s*([dhm])")


class _Signal(Enum):
    """What else the writer's queue carries besides rows."""

    FLUSH = "write what is gathered now"
    STOP = "write what is queued, then end"


@dataclass(frozen=True)
class LoggedPassage:
    """A returned passage as the log keeps it: where it is, not its text."""

    rank: int
    document_id: str
    start: int
    end: int
    score: float
    confidence: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "document_id": self.document_id, "start": self.start,
                "end": self.end, "score": self.score, "confidence": self.confidence}


@dataclass(frozen=True)
class LoggedQuery:
    """One answered question: what was asked, of which collection, and what came back."""

    id: str
    at: datetime
    collection: str
    question: str
    mode: str
    k: int
    filter: Mapping[str, Any] | None
    found: bool
    confidence: float
    latency_ms: float
    client: str  # the salted hash (`QueryLog.client_hash`), never the address
    key_id: str | None
    passages: tuple[LoggedPassage, ...]


@dataclass(frozen=True)
class Feedback:
    """A reader's verdict on one answer; `passage` is the rank marked "This answered it"."""

    query_id: str
    at: datetime
    rating: Rating
    passage: int | None
    comment: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"query_id": self.query_id, "at": _stamp(self.at), "rating": self.rating,
                "passage": self.passage, "comment": self.comment}


class QueryLog:
    """The log file at `path`: written by one background thread, read on demand.

    `read_only` opens an existing file for reading (`qa analytics`, `qa feedback export`):
    nothing is created or written, and a missing file reads as an empty log.
    """

    def __init__(self, path: Path, *, retention_days: int = 30, read_only: bool = False
                 ) -> None:
        self.path = path
        self.retention_days = retention_days
        self.read_only = read_only
        self.dropped = 0
        self._warned = False
        self._closed = False
        self._lock = threading.Lock()  # guards the reading connection
        self._pending = 0  # rows recorded and not yet written (or dropped)
        self._settled = threading.Condition()
        self._queue: queue.Queue[LoggedQuery | _Signal] = queue.Queue(MAX_QUEUED)
        self._hurry = threading.Event()  # ends the writer's linger: a flush, a close, a batch
        self._salt = secrets.token_hex(16)  # replaced by the file's own salt once it opens
        self._conn: sqlite3.Connection | None = None
        self._writer: threading.Thread | None = None
        try:
            self._conn = self._connect()
            if self._conn is not None:
                self._salt = self._read_salt(self._conn)
        except sqlite3.Error as exc:
            # The server starts anyway: rows are dropped (and counted) until writes succeed.
            self._warn(f"query log {path} cannot be opened ({exc}); questions are answered "
                       "but not logged, and the client hash uses a salt of this process only")
            self._conn = None
        if not read_only:
            self._writer = threading.Thread(target=self._write_loop, name="qa-querylog",
                                            daemon=True)
            self._writer.start()

    # -- recording (the request path) ----------------------------------------------------

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def client_hash(self, address: str) -> str:
        """The client as a salted SHA-256: the same address gives the same hash in this file,
        and the address itself is never stored."""
        return hashlib.sha256(f"{self._salt}\0{address}".encode("utf-8", "replace")).hexdigest()

    def record(self, query: LoggedQuery) -> None:
        """Queue `query` for the writer; never waits on the disk and never raises."""
        try:
            if self._closed or self.read_only:
                self._drop(1, "the query log is closed or read-only")
                return
            with self._settled:
                self._pending += 1
            try:
                self._queue.put_nowait(query)
                if self._queue.qsize() >= BATCH:
                    self._hurry.set()
            except queue.Full:
                self._settle(1)
                self._drop(1, f"more than {MAX_QUEUED} rows are waiting to be written")
        except Exception as exc:  # a log row must never fail an answer
            self._drop(1, f"{type(exc).__name__}: {exc}")

    def flush(self, timeout: float = 5.0) -> None:
        """Wait (at most `timeout` s) until every row recorded so far is written or dropped."""
        with self._settled:
            if self._pending == 0:
                return
        with suppress(queue.Full):  # a full queue is being written in whole batches anyway
            self._queue.put_nowait(_Signal.FLUSH)
        self._hurry.set()
        with self._settled:
            self._settled.wait_for(lambda: self._pending == 0, timeout)

    # -- the writer thread -----------------------------------------------------------------

    def _write_loop(self) -> None:
        conn: sqlite3.Connection | None = None
        next_purge = time.monotonic() + PURGE_EVERY_S  # the server purges once at start
        stop = False
        while not stop:
            batch, stop = self._take(max(0.0, next_purge - time.monotonic()))
            rows = self._rows(batch)
            try:
                conn = conn or self._connect()
                if conn is None:
                    raise sqlite3.OperationalError("no log file")
                if rows:
                    with conn:
                        conn.executemany(
                            f"INSERT OR IGNORE INTO queries ({_QUERY_COLUMNS}) "
                            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_EVERY_S
                    self._purge(conn, datetime.now(UTC))
            except Exception as exc:  # whatever it is, the thread must live on to write more
                self._drop(len(rows), f"{type(exc).__name__}: {exc}")
                if conn is not None:  # opened afresh next time: the file may have changed
                    conn.close()
                    conn = None
            finally:
                self._settle(len(batch))
        if conn is not None:
            conn.close()

    def _rows(self, batch: list[LoggedQuery]) -> list[tuple[Any, ...]]:
        """The batch as table rows; one that cannot be stored (say, a filter that is no JSON)
        is dropped alone, not with the batch."""
        rows = []
        for query in batch:
            try:
                rows.append(_row(query))
            except (TypeError, ValueError) as exc:
                self._drop(1, f"{type(exc).__name__}: {exc}")
        return rows

    def _take(self, wait: float) -> tuple[list[LoggedQuery], bool]:
        """Up to BATCH rows, and whether to stop. Waits `wait` s for the first row (none by
        then: time to purge), then lets more gather for LINGER_S, so that one commit serves
        many answers and none runs beside each answer; a flush, a close or a full batch cuts
        the wait short. Rows that come meanwhile wait in the queue: the writer wakes once a
        batch, not once a row, which would take a core from the answer being computed."""
        batch: list[LoggedQuery] = []
        lingered = False
        while len(batch) < BATCH:
            try:
                item = (self._queue.get_nowait() if lingered
                        else self._queue.get(timeout=max(0.0, wait)))
            except queue.Empty:
                break
            if item is _Signal.STOP:
                return batch, True
            if item is _Signal.FLUSH:
                if batch:
                    break
                continue  # what it waits for is already being written
            batch.append(item)
            if not lingered:
                self._hurry.wait(LINGER_S)
                self._hurry.clear()
                lingered = True
        return batch, False

    def _settle(self, rows: int) -> None:
        with self._settled:
            self._pending -= rows
            self._settled.notify_all()

    def _drop(self, rows: int, why: str) -> None:
        if rows <= 0:
            return
        with self._settled:  # counted from request threads and the writer alike
            self.dropped += rows
        self._warn(f"query log {self.path}: {rows} row(s) dropped ({why}); answers are not "
                   "affected")

    def _warn(self, message: str) -> None:
        if not self._warned:  # once: a full disk would otherwise log on every question
            self._warned = True
            _log.warning("%s (further drops are only counted)", message)

    # -- feedback and reading --------------------------------------------------------------

    def feedback(self, query_id: str, rating: str, passage: int | None = None,
                 comment: str | None = None) -> Feedback:
        """Store a reader's verdict on an answer, replacing an earlier one for it.

        `passage` marks that ranked passage as the one that answered (so `rating` is up);
        it must be one the query returned. QueryNotFound for an id the log does not hold.
        """
        if rating not in RATINGS:
            raise InvalidInput(f"rating: must be \"up\" or \"down\", not {rating!r}")
        if passage is not None and rating != "up":
            raise InvalidInput("passage: marks the passage that answered, so rating must be "
                               "\"up\"")
        comment = _clean_comment(comment)
        if self.read_only:
            raise ReadOnlyIndex("the query log is read-only here: feedback cannot be stored")
        self.flush()  # the question may still be queued behind this process's writer
        returned = self._returned(query_id)
        if passage is not None and not 1 <= passage <= returned:
            raise InvalidInput(f"passage: {passage} is not the rank of a passage this answer "
                               f"returned (1..{returned})")
        at = datetime.now(UTC)
        with self._lock, _stored(self.path):
            conn = self._reader()
            assert conn is not None  # `_returned` found the row through it
            with conn:
                conn.execute(
                    "INSERT INTO feedback (query_id, at, rating, passage, comment) "
                    "VALUES (?,?,?,?,?) ON CONFLICT(query_id) DO UPDATE SET at = excluded.at, "
                    "rating = excluded.rating, passage = excluded.passage, "
                    "comment = excluded.comment", (query_id, _stamp(at), rating, passage, comment))
        return Feedback(query_id, at, cast(Rating, rating), passage, comment)

    def _returned(self, query_id: str) -> int:
        """How many passages the logged question returned; QueryNotFound once another worker
        process, which may still hold the row in its own queue, has had time to write it."""
        deadline = time.monotonic() + OTHER_WRITERS_S
        while True:
            with self._lock, _stored(self.path):
                conn = self._reader()
                row = None if conn is None else conn.execute(
                    "SELECT passages FROM queries WHERE id = ?", (query_id,)).fetchone()
            if row is not None:
                return len(json.loads(row[0]))
            if time.monotonic() >= deadline:
                raise QueryNotFound(f"no logged question with query_id {query_id!r} (unknown, "
                                    f"or older than {self.retention_days} days and purged)")
            time.sleep(0.05)

    def history(self, since: datetime | None = None
                ) -> list[tuple[LoggedQuery, Feedback | None]]:
        """Logged questions (from `since` on), oldest first, each with its feedback if any.

        Rows this process has queued are written first (waiting a second at most).
        """
        if self._writer is not None:
            self.flush(1.0)
        sql = (f"SELECT {', '.join('q.' + c for c in _QUERY_COLUMNS.split(', '))}, "
               "f.at, f.rating, f.passage, f.comment FROM queries q "
               "LEFT JOIN feedback f ON f.query_id = q.id")
        args: tuple[str, ...] = ()
        if since is not None:
            sql += " WHERE q.at >= ?"
            args = (_stamp(since),)
        with self._lock:
            conn = self._reader()
            rows = [] if conn is None else conn.execute(sql + " ORDER BY q.at, q.id",
                                                        args).fetchall()
        return [(_query_of(row[:13]), _feedback_of(row[0], row[13:])) for row in rows]

    def purge(self, now: datetime | None = None) -> int:
        """Delete the questions (and their feedback) older than `retention_days`; how many."""
        if self.read_only:
            return 0
        with self._lock, _stored(self.path):
            conn = self._reader()
            return 0 if conn is None else self._purge(conn, now or datetime.now(UTC))

    def _purge(self, conn: sqlite3.Connection, now: datetime) -> int:
        cutoff = _stamp(now - timedelta(days=self.retention_days))
        with conn:
            conn.execute("DELETE FROM feedback WHERE query_id IN "
                         "(SELECT id FROM queries WHERE at < ?)", (cutoff,))
            return conn.execute("DELETE FROM queries WHERE at < ?", (cutoff,)).rowcount

    def close(self) -> None:
        """Write what is queued (waiting a few seconds at most), then stop."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self.flush()
            with suppress(queue.Full):
                self._queue.put(_Signal.STOP, timeout=1.0)
            self._hurry.set()
            self._writer.join(timeout=BUSY_TIMEOUT_S + 1.0)
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- connections -----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection | None:
        """A connection with the schema in place; None for a read-only log with no file."""
        if self.read_only:
            if not self.path.exists():
                return None
            try:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                       check_same_thread=False, timeout=BUSY_TIMEOUT_S)
                conn.execute("SELECT 1 FROM queries LIMIT 1")
            except sqlite3.OperationalError:
                # A WAL file on a read-only mount cannot be opened `mode=ro` (it needs -shm).
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1",
                                       uri=True, check_same_thread=False)
            return conn
        conn = sqlite3.connect(self.path, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # WAL stays consistent; a crash may lose
            conn.execute("PRAGMA foreign_keys=ON")     # the last rows, which a log can afford
            conn.executescript(_SCHEMA)
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _reader(self) -> sqlite3.Connection | None:
        if self._conn is None and not self._closed:
            self._conn = self._connect()
            if self._conn is not None and not self.read_only:
                self._salt = self._read_salt(self._conn)
        return self._conn

    @staticmethod
    def _read_salt(conn: sqlite3.Connection) -> str:
        """The file's salt, made by whichever process opened it first."""
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            return secrets.token_hex(16)  # a read-only file from before the salt: none to read
        try:
            with conn:
                conn.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('salt', ?)",
                             (secrets.token_hex(16),))
        except sqlite3.OperationalError:
            pass  # read-only: read what is there
        row = conn.execute("SELECT value FROM meta WHERE name = 'salt'").fetchone()
        return str(row[0]) if row else secrets.token_hex(16)


@contextmanager
def _stored(path: Path) -> Iterator[None]:
    """Turns SQLite's reasons a feedback write failed into the service's errors."""
    try:
        yield
    except sqlite3.Error as exc:
        message = str(exc).lower()
        if "full" in message:
            raise StorageFull(f"the disk holding {path.name} is full") from exc
        if "readonly" in message or "read-only" in message:
            raise ReadOnlyIndex(f"{path.name} cannot be written") from exc
        raise IndexBusy(f"{path.name} is busy ({exc}); try again") from exc


# -- rows ------------------------------------------------------------------------------------


def _stamp(at: datetime) -> str:
    """ISO 8601 in UTC at a fixed width, so that text order is time order."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _parse_stamp(value: str) -> datetime:
    at = datetime.fromisoformat(value)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _row(q: LoggedQuery) -> tuple[Any, ...]:
    # A lone surrogate cannot be stored as UTF-8: replaced, so one odd row fails no batch.
    question = q.question.encode("utf-8", "replace").decode("utf-8")
    return (q.id, _stamp(q.at), q.collection, question, q.mode, q.k,
            None if q.filter is None else json.dumps(q.filter),  # ASCII: surrogates escaped
            int(q.found), float(q.confidence), float(q.latency_ms), q.client, q.key_id,
            json.dumps([p.to_dict() for p in q.passages]))


def _query_of(row: tuple[Any, ...]) -> LoggedQuery:
    (id_, at, collection, question, mode, k, filter_, found, confidence, latency_ms, client,
     key_id, passages) = row
    return LoggedQuery(
        id=id_, at=_parse_stamp(at), collection=collection, question=question, mode=mode,
        k=int(k), filter=None if filter_ is None else json.loads(filter_), found=bool(found),
        confidence=float(confidence), latency_ms=float(latency_ms), client=client,
        key_id=key_id,
        passages=tuple(LoggedPassage(
            rank=int(p["rank"]), document_id=str(p["document_id"]), start=int(p["start"]),
            end=int(p["end"]), score=float(p["score"]),
            confidence=None if p.get("confidence") is None else float(p["confidence"]))
            for p in json.loads(passages)))


def _feedback_of(query_id: str, row: tuple[Any, ...]) -> Feedback | None:
    at, rating, passage, comment = row
    if at is None:
        return None
    return Feedback(query_id, _parse_stamp(at), rating, passage, comment)


def _clean_comment(comment: str | None) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str):
        raise InvalidInput("comment: must be a string")
    if len(comment) > MAX_COMMENT_CHARS:
        raise InvalidInput(f"comment: at most {MAX_COMMENT_CHARS} characters")
    if "\0" in comment or any("\ud800" <= c <= "\udfff" for c in comment):
        raise InvalidInput("comment: must not contain NUL or a lone surrogate (not UTF-8)")
    return comment.strip() or None


# -- reading the log as an evaluation set ---------------------------------------------------


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`7d`, `24h`, `90m` before `now`, or an ISO 8601 date or time (UTC when it names no
    zone), as an aware UTC time; InvalidInput for anything else, or a time before the year 1."""
    found = _SINCE.fullmatch(value.strip())
    now = now or datetime.now(UTC)
    try:
        if found:
            unit = {"d": "days", "h": "hours", "m": "minutes"}[found[2]]
            return (now - timedelta(**{unit: int(found[1])})).astimezone(UTC)
        return _parse_stamp(value.strip()).astimezone(UTC)
    except OverflowError:
        raise InvalidInput(f"since: {value!r} reaches past the year 1") from None
    except ValueError:
        raise InvalidInput(f"since: {value!r} is neither a duration (7d, 24h, 90m) nor an ISO "
                           "date such as 2025-05-01") from None


def judged_questions(history: Iterable[tuple[LoggedQuery, Feedback | None]],
                     rating: Rating = "up") -> list[dict[str, Any]]:
    """The questions readers judged `rating`, as lines of an evaluation set.

    up: `relevant` is the passage marked "This answered it", else the top passage (the
    answer the reader approved); a 👍 on an answer with no passages says nothing and is left
    out. down: the failures to look at, each with the passages it got.
    """
    lines = []
    for query, feedback in history:
        if feedback is None or feedback.rating != rating:
            continue
        line: dict[str, Any] = {"id": query.id, "question": query.question}
        if rating == "up":
            chosen = [p for p in query.passages if p.rank == (feedback.passage or 1)]
            if not chosen:
                continue
            line["relevant"] = [{"document_id": p.document_id, "start": p.start, "end": p.end}
                                for p in chosen]
        else:
            line["found"] = query.found
            line["confidence"] = query.confidence
            line["passages"] = [p.to_dict() for p in query.passages]
        line |= {"collection": query.collection, "rating": feedback.rating,
                 "at": _stamp(query.at)}
        if feedback.comment:
            line["comment"] = feedback.comment
        lines.append(line)
    return lines
