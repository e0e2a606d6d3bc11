"""The query log on a real SQLite file: what a row keeps, the salted client hash, feedback,
retention, what a locked file does to a writer, and the export's shape."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from qa.errors import InvalidInput, QueryNotFound
from qa.querylog import (
    LOG_FILE,
    LoggedPassage,
    LoggedQuery,
    QueryLog,
    judged_questions,
    parse_since,
)

NOW = datetime(2025, 5, 15, 12, 0, tzinfo=UTC)


def logged(log: QueryLog, *, at: datetime | None = None, question: str = "who leads?",
           passages: int = 3, found: bool = True, collection: str = "default") -> LoggedQuery:
    return LoggedQuery(
        id=QueryLog.new_id(), at=at or datetime.now(UTC), collection=collection,
        question=question, mode="hybrid", k=5, filter={"metadata.tag": {"$in": ["news"]}},
        found=found, confidence=0.8, latency_ms=12.5, client=log.client_hash("203.0.113.7"),
        key_id="abc123def456",
        passages=tuple(LoggedPassage(rank, "seeds/a.txt", 100 * rank, 100 * rank + 90,
                                     1.0 / rank, 0.9 / rank) for rank in range(1, passages + 1)))


@pytest.fixture
def log(tmp_path: Path):
    opened = QueryLog(tmp_path / LOG_FILE, retention_days=30)
    yield opened
    opened.close()


def test_a_recorded_question_reads_back_whole(log: QueryLog) -> None:
    query = logged(log)
    log.record(query)
    log.flush()
    [(back, feedback)] = log.history()
    assert back == query
    assert feedback is None


def test_history_is_oldest_first_and_since_cuts_it(log: QueryLog) -> None:
    old, new = logged(log, at=NOW - timedelta(days=3)), logged(log, at=NOW)
    log.record(new)
    log.record(old)
    log.flush()
    assert [q.id for q, _ in log.history()] == [old.id, new.id]
    assert [q.id for q, _ in log.history(NOW - timedelta(days=1))] == [new.id]


def test_client_hash_is_salted_stable_and_never_the_address(tmp_path: Path) -> None:
    path = tmp_path / LOG_FILE
    first = QueryLog(path)
    a, b = first.client_hash("203.0.113.7"), first.client_hash("203.0.113.8")
    first.close()
    again = QueryLog(path)
    try:
        assert again.client_hash("203.0.113.7") == a  # the salt is kept in the file
    finally:
        again.close()
    assert a != b
    # Salted: not the plain hash anyone could compute from a guessed address.
    assert a != hashlib.sha256(b"203.0.113.7").hexdigest()
    other = QueryLog(tmp_path / "other.sqlite3")
    try:
        assert other.client_hash("203.0.113.7") != a  # each log file its own salt
    finally:
        other.close()


def test_feedback_is_stored_and_a_second_vote_replaces_the_first(log: QueryLog) -> None:
    query = logged(log)
    log.record(query)  # not flushed: feedback must find a row still queued
    first = log.feedback(query.id, "up", passage=2, comment="  the second one  ")
    assert (first.rating, first.passage, first.comment) == ("up", 2, "the second one")
    log.feedback(query.id, "down", comment="wrong after all")
    [(_, feedback)] = log.history()
    assert feedback is not None
    assert (feedback.rating, feedback.passage, feedback.comment) == ("down", None,
                                                                     "wrong after all")


def test_feedback_for_an_unknown_query_is_not_found(log: QueryLog) -> None:
    with pytest.raises(QueryNotFound, match="no logged question"):
        log.feedback(QueryLog.new_id(), "up")


@pytest.mark.parametrize(("rating", "passage", "comment", "message"), [
    ("meh", None, None, "rating"),
    ("up", 0, None, r"passage: 0 .*\(1\.\.3\)"),
    ("up", 4, None, r"passage: 4 .*\(1\.\.3\)"),
    ("down", 2, None, "rating must be \"up\""),
    ("up", None, "x" * 1001, "at most 1000"),
    ("up", None, "bad\0byte", "NUL"),
    ("up", None, "half \ud800 pair", "surrogate"),
])
def test_bad_feedback_is_refused_naming_the_field(log: QueryLog, rating: str,
                                                  passage: int | None, comment: str | None,
                                                  message: str) -> None:
    query = logged(log)
    log.record(query)
    with pytest.raises(InvalidInput, match=message):
        log.feedback(query.id, rating, passage, comment)
    assert log.history()[0][1] is None


def test_purge_deletes_questions_past_retention_with_their_feedback(log: QueryLog) -> None:
    old = logged(log, at=NOW - timedelta(days=31))
    kept = logged(log, at=NOW - timedelta(days=29))
    for query in (old, kept):
        log.record(query)
        log.feedback(query.id, "up")
    assert log.purge(now=NOW) == 1
    assert [q.id for q, _ in log.history()] == [kept.id]
    with sqlite3.connect(log.path) as raw:
        assert raw.execute("SELECT query_id FROM feedback").fetchall() == [(kept.id,)]


def test_a_locked_log_drops_and_counts_rows_without_making_record_wait(log: QueryLog
                                                                       ) -> None:
    log.record(logged(log))
    log.flush()
    holder = sqlite3.connect(log.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        started = time.perf_counter()
        for _ in range(5):
            log.record(logged(log))
        assert time.perf_counter() - started < 0.5  # far below the writer's busy timeout
        log.flush(timeout=10)
        assert log.dropped == 5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    log.record(logged(log))  # once the lock is gone, rows are written again
    log.flush()
    assert len(log.history()) == 2
    assert log.dropped == 5


def test_a_row_that_cannot_be_stored_is_dropped_alone_and_the_writer_goes_on(
        log: QueryLog) -> None:
    odd = LoggedQuery(**{**logged(log).__dict__, "filter": {"when": datetime.now(UTC)}})
    good = logged(log)
    log.record(odd)  # its filter is no JSON
    log.record(good)  # in the same batch
    log.flush()
    assert log.dropped == 1
    log.record(later := logged(log))
    log.flush()
    assert [q.id for q, _ in log.history()] == [good.id, later.id]


def test_two_logs_on_one_file_share_its_salt_and_lose_no_rows(tmp_path: Path) -> None:
    """As two worker processes do: each its own QueryLog on the same file."""
    path = tmp_path / LOG_FILE
    logs = [QueryLog(path), QueryLog(path)]
    try:
        assert logs[0].client_hash("10.0.0.1") == logs[1].client_hash("10.0.0.1")

        def ask(log: QueryLog) -> None:
            for _ in range(200):
                log.record(logged(log))

        threads = [threading.Thread(target=ask, args=(log,)) for log in logs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for log in logs:
            log.flush(timeout=30)
        assert len(logs[0].history()) == 400
        assert logs[0].dropped == logs[1].dropped == 0
    finally:
        for log in logs:
            log.close()


def test_close_writes_what_is_still_queued(tmp_path: Path) -> None:
    log = QueryLog(tmp_path / LOG_FILE)
    queries = [logged(log) for _ in range(300)]
    for query in queries:
        log.record(query)
    log.close()
    log.record(logged(log))  # after close: dropped, not raised
    reader = QueryLog(tmp_path / LOG_FILE, read_only=True)
    try:
        assert len(reader.history()) == 300
    finally:
        reader.close()


def test_a_read_only_log_of_a_missing_file_is_empty_and_creates_nothing(tmp_path: Path
                                                                       ) -> None:
    path = tmp_path / LOG_FILE
    reader = QueryLog(path, read_only=True)
    try:
        assert reader.history() == []
        assert reader.purge() == 0
    finally:
        reader.close()
    assert list(tmp_path.iterdir()) == []


def test_the_export_holds_approved_spans_and_the_failures_their_passages(log: QueryLog
                                                                         ) -> None:
    marked, thumbs_up, thumbs_down, unjudged = (logged(log, question=f"q{i}")
                                                for i in range(4))
    for query in (marked, thumbs_up, thumbs_down, unjudged):
        log.record(query)
    log.feedback(marked.id, "up", passage=2)
    log.feedback(thumbs_up.id, "up", comment="spot on")
    log.feedback(thumbs_down.id, "down", comment="not this")
    up = {line["question"]: line for line in judged_questions(log.history(), "up")}
    assert set(up) == {"q0", "q1"}
    assert up["q0"]["relevant"] == [{"document_id": "seeds/a.txt", "start": 200, "end": 290}]
    assert up["q1"]["relevant"] == [{"document_id": "seeds/a.txt", "start": 100, "end": 190}]
    assert up["q1"]["comment"] == "spot on" and "comment" not in up["q0"]
    assert up["q0"]["id"] == marked.id and up["q0"]["collection"] == "default"
    [down] = judged_questions(log.history(), "down")
    assert (down["question"], down["rating"], down["comment"]) == ("q2", "down", "not this")
    assert [p["rank"] for p in down["passages"]] == [1, 2, 3]


def test_since_takes_durations_and_iso_dates() -> None:
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("24h", NOW) == NOW - timedelta(hours=24)
    assert parse_since("2025-05-01", NOW) == datetime(2025, 5, 1, tzinfo=UTC)
    assert parse_since("2025-05-01T02:00+02:00", NOW) == datetime(2025, 5, 1, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="since: 'last week'"):
        parse_since("last week", NOW)
    for past_the_calendar in ("999999d", "0001-01-01T00:00+01:00"):
        with pytest.raises(InvalidInput, match="past the year 1"):
            parse_since(past_the_calendar, NOW)
