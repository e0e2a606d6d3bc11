"""`qa analytics` and GET /analytics: the numbers of a hand-made log (the contract's schema,
written with plain SQL), questions asked in other words grouped by the real model, the report
files, and the route's keys."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import LiveServer
from pydantic import SecretStr

from qa.analytics import (
    DUPLICATE_THRESHOLD,
    normalize_question,
    percentile,
    read_history,
    summarize,
)
from qa.catalog import CATALOG_FILE
from qa.cli import cli
from qa.collection import Collection
from qa.embedding import Embedder
from qa.keys import KeyStore
from qa.settings import Settings

# The query log contract, verbatim: the analytics must read what the contract writes.
CONTRACT_SCHEMA = """
CREATE TABLE queries (
  id TEXT PRIMARY KEY, at TEXT NOT NULL, collection TEXT NOT NULL, question TEXT NOT NULL,
  mode TEXT NOT NULL, k INTEGER NOT NULL, filter TEXT, found INTEGER NOT NULL,
  confidence REAL NOT NULL, latency_ms REAL NOT NULL, client TEXT NOT NULL, key_id TEXT,
  passages TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS queries_at ON queries(at);
CREATE TABLE feedback (
  query_id TEXT PRIMARY KEY REFERENCES queries(id) ON DELETE CASCADE, at TEXT NOT NULL,
  rating TEXT NOT NULL, passage INTEGER, comment TEXT
);
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

ADMIN = "analytics-admin-key"
NOW = datetime(2025, 5, 20, 12, 0, tzinfo=UTC)


def write_log(index_dir: Path, rows: list[dict[str, Any]]) -> None:
    """querylog.sqlite3 beside the index, one row per dict: `at`, `question`, and optionally
    `found`, `confidence`, `latency_ms`, `collection`, `rating`."""
    index_dir.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(index_dir / "querylog.sqlite3") as db:
        db.executescript(CONTRACT_SCHEMA)
        for row in rows:
            query_id = uuid.uuid4().hex
            passages = [{"rank": 1, "document_id": "a.txt", "start": 0, "end": 10,
                         "score": 1.0, "confidence": row.get("confidence", 0.9)}]
            db.execute("INSERT INTO queries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", (
                query_id, row["at"].isoformat(), row.get("collection", "default"),
                row["question"], "hybrid", 5, None, int(row.get("found", True)),
                row.get("confidence", 0.9), row.get("latency_ms", 10.0), "0" * 64, None,
                json.dumps(passages)))
            if "rating" in row:
                db.execute("INSERT INTO feedback VALUES (?,?,?,?,?)",
                           (query_id, row["at"].isoformat(), row["rating"], None, None))


def day(n: int, hour: int = 9) -> datetime:
    """`n` days before NOW's date, at `hour` UTC."""
    return (NOW - timedelta(days=n)).replace(hour=hour)


RUSSIAN = "Who led the Russian delegation?"
HAND_MADE = [
    {"at": day(2, 9), "question": RUSSIAN, "confidence": 0.91, "latency_ms": 10,
     "rating": "up"},
    {"at": day(2, 10), "question": "who led the russian delegation", "confidence": 0.86,
     "latency_ms": 20},
    {"at": day(2, 11), "question": "  Who  led the Russian delegation ?? ", "confidence": 0.81,
     "latency_ms": 30, "rating": "down"},
    {"at": day(1, 9), "question": "Where is the office?", "found": False,
     "confidence": 0.22, "latency_ms": 40},
    {"at": day(1, 10), "question": "where is the office", "found": False,
     "confidence": 0.12, "latency_ms": 50},
    {"at": day(1, 11), "question": "What is the refund policy?", "confidence": 0.72,
     "latency_ms": 60, "rating": "down"},
    {"at": day(1, 23), "question": RUSSIAN, "confidence": 0.93, "latency_ms": 70},
    {"at": day(0, 1), "question": "What is the refund policy?", "confidence": 0.77,
     "latency_ms": 80, "rating": "up"},
    {"at": day(0, 2), "question": "where is the office?", "found": False,
     "confidence": 0.33, "latency_ms": 90, "rating": "down"},
    {"at": day(0, 3), "question": "How many prisoners were exchanged?", "confidence": 0.96,
     "latency_ms": 100, "collection": "notes"},
]


@pytest.fixture
def hand_made(tmp_path: Path) -> Path:
    index_dir = tmp_path / "index"
    write_log(index_dir, HAND_MADE)
    return index_dir


def test_numbers_of_a_hand_made_log(hand_made: Path, embedder: Embedder) -> None:
    result = summarize(read_history(hand_made), now=NOW, embed=embedder.embed).to_dict()
    assert result["questions"] == 10 and result["note"] is None
    assert result["per_day"] == {
        "2025-05-18": {"questions": 3, "not_found": 0, "not_found_share": 0.0},
        "2025-05-19": {"questions": 4, "not_found": 2, "not_found_share": 0.5},
        "2025-05-20": {"questions": 3, "not_found": 1, "not_found_share": 0.3333},
    }
    assert result["latency_ms"] == {"p50": 50.0, "p95": 100.0}
    assert result["answered"] == {"found": 7, "not_found": 3, "found_share": 0.7,
                                  "not_found_share": 0.3}
    assert result["feedback"] == {"up": 2, "down": 3, "rated": 5, "up_rate": 0.4,
                                  "down_rate": 0.6, "rated_share": 0.5}
    # Case, spaces and trailing punctuation aside, one question; shown as most often typed.
    assert result["top_questions"] == [
        {"question": RUSSIAN, "count": 4},
        {"question": "Where is the office?", "count": 3},
        {"question": "What is the refund policy?", "count": 2},
        {"question": "How many prisoners were exchanged?", "count": 1},
    ]
    assert result["knowledge_gaps"] == [
        {"question": "Where is the office?", "count": 3, "not_found": 3, "down": 1, "asked": 3},
        {"question": RUSSIAN, "count": 1, "not_found": 0, "down": 1, "asked": 4},
        {"question": "What is the refund policy?", "count": 1, "not_found": 0, "down": 1,
         "asked": 2},
    ]
    assert result["collections"] == {"default": 9, "notes": 1}
    assert result["confidence_histogram"]["counts"] == [0, 1, 1, 1, 0, 0, 0, 2, 2, 3]
    # Four different questions: nothing to group.
    assert result["near_duplicates"]["groups"] == []
    assert result["near_duplicates"]["distinct"] == 4


def test_since_leaves_out_older_questions(hand_made: Path) -> None:
    result = summarize(read_history(hand_made, day(0, 0)), since=day(0, 0), now=NOW)
    assert result.questions == 3
    assert list(result.per_day) == ["2025-05-20"]


def test_a_single_collection_is_not_broken_down(tmp_path: Path) -> None:
    write_log(tmp_path, [{"at": day(0), "question": "a?"}, {"at": day(0), "question": "b?"}])
    assert summarize(read_history(tmp_path), now=NOW).collections == {}


def test_quiet_days_count_zero_up_to_today(tmp_path: Path) -> None:
    write_log(tmp_path, [{"at": day(3), "question": "a?"}])
    per_day = summarize(read_history(tmp_path), now=NOW).per_day
    assert list(per_day) == ["2025-05-17", "2025-05-18", "2025-05-19", "2025-05-20"]
    assert [row["questions"] for row in per_day.values()] == [1, 0, 0, 0]


def test_normalizing_keeps_words_and_drops_case_spaces_trailing_punctuation() -> None:
    assert normalize_question("  Who  LED the delegation ?! ") == "who led the delegation"
    assert normalize_question("Who led the delegation？") == "who led the delegation"
    assert normalize_question("?") == "?"  # nothing but punctuation stays itself


def test_percentiles_are_nearest_rank() -> None:
    latencies = [float(x) for x in range(1, 101)]
    assert percentile(latencies, 50) == 50.0 and percentile(latencies, 95) == 95.0
    assert percentile([7.0], 95) == 7.0 and percentile([], 50) == 0.0


def test_a_missing_log_gives_zeros_and_says_why(tmp_path: Path) -> None:
    result = summarize(read_history(tmp_path / "nothing"), now=NOW).to_dict()
    assert result["questions"] == 0 and result["per_day"] == {}
    assert result["latency_ms"] == {"p50": 0.0, "p95": 0.0}
    assert result["feedback"]["up_rate"] == 0.0 and result["top_questions"] == []
    assert "no questions logged" in result["note"]


# -- near-duplicates, with the real model -------------------------------------------------------


def test_paraphrases_group_and_the_other_delegation_does_not(tmp_path: Path,
                                                             embedder: Embedder) -> None:
    asked = (["who led the Russian delegation?"] * 3 + ["who headed the Russian delegation?"] * 2
             + ["who led the Ukrainian delegation?"] * 2
             + ["where were the peace talks held?", "where did the peace talks take place?",
                "how many prisoners were exchanged?"])
    write_log(tmp_path, [{"at": day(0), "question": q} for q in asked])
    groups = summarize(read_history(tmp_path), now=NOW,
                       embed=embedder.embed).near_duplicates["groups"]
    assert groups == [
        {"count": 5, "questions": [{"question": "who led the Russian delegation?", "count": 3},
                                   {"question": "who headed the Russian delegation?",
                                    "count": 2}]},
        {"count": 2, "questions": [{"question": "where did the peace talks take place?",
                                    "count": 1},
                                   {"question": "where were the peace talks held?",
                                    "count": 1}]},
    ]


def test_the_work_is_capped_and_the_output_says_so(tmp_path: Path, embedder: Embedder) -> None:
    asked = ["who led the Russian delegation?"] * 3 + ["where is the office?"] * 2 + [
        "who headed the Russian delegation?"]
    write_log(tmp_path, [{"at": day(0), "question": q} for q in asked])
    dup = summarize(read_history(tmp_path), now=NOW, embed=embedder.embed,
                    limit=2).near_duplicates
    assert (dup["distinct"], dup["considered"], dup["groups"]) == (3, 2, [])
    assert dup["note"] == "grouped the 2 most frequent of 3 distinct questions"


# The threshold, tried on pairs: the same question in other words, and questions that share
# most of their words but ask something else.
PARAPHRASES = [
    ("who led the Russian delegation?", "who headed the Russian delegation?"),
    ("who led the Russian delegation?", "who was the head of the russian delegation"),
    ("who led the Russian delegation?", "Who leads the Russian delegation at the talks?"),
    ("who led the Russian delegation?", "russian delegation leader"),
    ("Who heads the Russian delegation to the talks?",
     "who is leading russia's delegation at the talks"),
    ("who led the Ukrainian delegation?", "who headed the Ukrainian delegation?"),
    ("where were the peace talks held?", "where did the peace talks take place?"),
    ("where were the peace talks held?", "in which city were the talks held?"),
    ("when did the talks start?", "when did the negotiations begin?"),
    ("At which airport did Zelenskyy's plane land?", "which airport did zelensky land at"),
    ("Which Turkish leader was Zelenskyy scheduled to meet?",
     "who was zelenskyy supposed to meet in turkey"),
    ("How did Zelenskyy describe the level of the Russian delegation?",
     "what did zelenskyy say about the russian delegation's level"),
    ("In which city did Putin propose direct negotiations with Ukraine?",
     "where did putin suggest direct talks with ukraine"),
    ("how do I reset my password?", "how can I change my password?"),
    ("how do I reset my password?", "password reset"),
    ("how do I reset my password?", "how to reset password"),
    ("what is the refund policy?", "how do refunds work?"),
    ("how many prisoners were exchanged?", "how many prisoners were swapped?"),
    ("who won the Super Bowl?", "which team won Super Bowl 50?"),
    ("who won the Super Bowl?", "who was the winner of the super bowl"),
    ("what is the capital of France?", "what's France's capital city?"),
    ("how do I cancel my subscription?", "how can I cancel my subscription?"),
    ("how do I cancel my subscription?", "cancel subscription"),
    ("what are the opening hours?", "when are you open?"),
    ("how do I install the cli?", "how to install the command line tool"),
    ("how do I create an API key?", "how can I make a new api key"),
    ("what file formats are supported?", "which document formats can I index?"),
    ("how do I delete a document?", "how to remove a document from the index"),
    ("where is the index stored?", "where does the index live on disk?"),
    ("what model is used for embeddings?", "which embedding model does it use"),
    ("how much does the premium plan cost?", "what is the price of the premium plan?"),
    ("can I use it offline?", "does it work without internet?"),
    ("who is the CEO?", "who runs the company?"),
    ("when does the store close?", "what time does the shop close?"),
    ("how long is the warranty?", "what is the warranty period?"),
]
NEAR_MISSES = [
    ("who led the Russian delegation?", "who led the Ukrainian delegation?"),
    ("who headed the Russian delegation?", "who headed the Ukrainian delegation?"),
    ("Who heads the Russian delegation to the talks?",
     "Who heads the Ukrainian delegation to the talks?"),
    ("in which city were the talks held?", "what date did the talks begin"),
    ("where were the peace talks held?", "when did the talks start?"),
    ("what did Zelensky say?", "what did Putin say?"),
    ("who won the Super Bowl?", "who lost the Super Bowl?"),
    ("when was the company founded?", "who founded the company?"),
    ("when was the company founded?", "where is the company headquartered?"),
    ("how do I reset my password?", "how do I reset my username?"),
    ("how do I cancel my subscription?", "how do I renew my subscription?"),
    ("how many prisoners were exchanged?", "how many soldiers died?"),
    ("what is the capital of France?", "what is the capital of Germany?"),
    ("who led the Russian delegation?", "who is in the Russian delegation?"),
    ("who led the Russian delegation?", "where did the Russian delegation go?"),
    ("At which airport did Zelenskyy's plane land?", "At which airport did Putin's plane land?"),
    ("Which Turkish leader was Zelenskyy scheduled to meet?",
     "Which American leader was Zelenskyy scheduled to meet?"),
    ("how do I create an API key?", "how do I revoke an API key?"),
    ("how do I delete a document?", "how do I add a document?"),
    ("what file formats are supported?", "what languages are supported?"),
    ("how much does the premium plan cost?", "how much does the basic plan cost?"),
    ("can I use it offline?", "can I use it on mobile?"),
    ("who is the CEO?", "who is the CTO?"),
    ("when does the store open?", "when does the store close?"),
    ("how long is the warranty?", "how long is the delivery time?"),
    ("how do I install the cli?", "how do I uninstall the cli?"),
    ("where is the index stored?", "how big is the index?"),
    ("what model is used for embeddings?", "what model is used for reranking?"),
    ("how many people died in the attack?", "how many people were injured in the attack?"),
    ("when did the war start?", "when did the war end?"),
]


def grouped_share(embedder: Embedder, pairs: list[tuple[str, str]]) -> float:
    """As analytics embeds questions: through the questions' (fp32) graph."""
    left = embedder.embed_questions([a for a, _ in pairs], progress=False)
    right = embedder.embed_questions([b for _, b in pairs], progress=False)
    return float(np.mean((left * right).sum(axis=1) >= DUPLICATE_THRESHOLD))


def test_the_threshold_groups_half_the_paraphrases_and_few_near_misses(
        embedder: Embedder) -> None:
    # Measured: 19/35 paraphrases (0.54) and 3/30 near misses (0.10, all opposites such as
    # won/lost that no useful threshold separates); see DUPLICATE_THRESHOLD.
    assert grouped_share(embedder, PARAPHRASES) >= 0.5
    assert grouped_share(embedder, NEAR_MISSES) <= 0.1


# -- the command line ---------------------------------------------------------------------


def run_cli(*args: str) -> Any:
    result = CliRunner().invoke(cli, ["analytics", *args], catch_exceptions=False)
    return result


def test_cli_prints_a_readable_summary_and_one_json_object(hand_made: Path) -> None:
    since = (day(2, 0)).date().isoformat()
    text = run_cli("--index", str(hand_made), "--since", since)
    assert text.exit_code == 0, text.output
    assert "10 questions" in text.output and "answered 70%, not found 30%" in text.output
    assert "3  Where is the office?  (3 not found, 1 👎, asked 3)" in text.output
    assert "per collection: default 9, notes 1" in text.output
    as_json = run_cli("--index", str(hand_made), "--since", since, "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout)["answered"]["not_found"] == 3


def test_cli_report_writes_markdown_and_two_plots(hand_made: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run_cli("--index", str(hand_made), "--since", "2025-01-01", "--report", str(out))
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text("utf-8")
    assert "![questions per day](questions_per_day.png)" in report
    assert "| 3 | 3 | 1 | 3 | Where is the office? |" in report
    for png in ("questions_per_day.png", "confidence.png"):
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


def test_cli_on_a_missing_log_says_so_and_succeeds(tmp_path: Path) -> None:
    result = run_cli("--index", str(tmp_path / "index"), "--report", str(tmp_path / "r"))
    assert result.exit_code == 0
    assert result.stdout.startswith("no questions logged since ")
    assert "the query log is empty or missing" in result.stdout
    assert (tmp_path / "r" / "report.md").exists()
    assert not (tmp_path / "r" / "confidence.png").exists()


def test_cli_refuses_a_since_it_cannot_read(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["analytics", "--index", str(tmp_path), "--since",
                                      "last week"])
    assert result.exit_code == 2
    assert "error: --since: 'last week' is neither a duration" in result.output
    too_far = CliRunner().invoke(cli, ["analytics", "--index", str(tmp_path), "--since",
                                       "999999d"])
    assert too_far.exit_code == 2
    assert "error: --since: '999999d' reaches past the year 1" in too_far.output


# -- over HTTP ----------------------------------------------------------------------------


@pytest.fixture
def keyed_server(settings: Settings, embedder: Embedder) -> Iterator[tuple[str, str]]:
    """A server over an empty index with a recent hand-made log; its URL and a search key."""
    Collection.open(settings, embedder, create=True).close()
    now = datetime.now(UTC)
    write_log(settings.index_dir, [
        {**row, "at": now - (NOW - row["at"])} for row in HAND_MADE])
    store = KeyStore(settings.index_dir / CATALOG_FILE)
    _, search_key = store.create("search", ["default"])
    store.close()
    served = settings.model_copy(update={"api_keys": [SecretStr(ADMIN)]})
    with LiveServer(served, embedder) as server:
        yield server.url, search_key


def test_http_analytics_is_for_admin_keys_only(keyed_server: tuple[str, str]) -> None:
    url, search_key = keyed_server
    assert httpx.get(f"{url}/analytics").status_code == 401
    forbidden = httpx.get(f"{url}/analytics", headers={"Authorization": f"Bearer {search_key}"})
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == "application/problem+json"
    for since in ("soon", "999999d", "0001-01-01T00:00:00+01:00"):
        bad = httpx.get(f"{url}/analytics", params={"since": since},
                        headers={"Authorization": f"Bearer {ADMIN}"})
        assert bad.status_code == 422 and "since" in bad.json()["detail"]


def test_http_analytics_gives_the_json_of_the_cli(keyed_server: tuple[str, str],
                                                  settings: Settings) -> None:
    url, _ = keyed_server
    since = (datetime.now(UTC) - timedelta(days=7)).date().isoformat()
    response = httpx.get(f"{url}/analytics", params={"since": since}, timeout=60,
                         headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200
    over_http = response.json()
    assert over_http["questions"] == 10
    assert over_http["knowledge_gaps"][0]["question"] == "Where is the office?"
    cli_result = run_cli("--index", str(settings.index_dir), "--since", since, "--json")
    assert json.loads(cli_result.stdout) == over_http


def test_a_down_voted_answer_shows_up_as_a_knowledge_gap(built_index: Collection,
                                                         settings: Settings,
                                                         embedder: Embedder) -> None:
    built_index.close()
    served = settings.model_copy(update={"api_keys": [SecretStr(ADMIN)]})
    with LiveServer(served, embedder) as server, httpx.Client(base_url=server.url,
                                                              timeout=60) as http:
        question = "Who heads the Russian delegation?"
        answer = http.post("/ask", json={"question": question, "k": 3}).json()
        assert http.post("/feedback", json={"query_id": answer["query_id"],
                                            "rating": "down"}).status_code == 200
        http.post("/ask", json={"question": "At which airport did Zelenskyy land?"})
        gaps = http.get("/analytics", headers={"Authorization": f"Bearer {ADMIN}"}
                        ).json()["knowledge_gaps"]
    assert [(g["question"], g["down"]) for g in gaps if g["down"]] == [(question, 1)]
