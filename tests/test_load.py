"""Load: concurrent questions while documents are added and deleted over HTTP (127.0.0.1 only).

Every question must succeed, no answer may show a document half-written, and every deleted
document must be gone from answers afterwards. Latency percentiles are printed, not asserted.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import SHARED

from qa.settings import Settings

KEY = "load-test-key-5b1d"
CLIENTS = 4
SECONDS = float(os.environ.get("QA_LOAD_SECONDS", "30"))
CORPUS = SHARED / "eval" / "beir-scifact" / "corpus.jsonl"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A write key and no rate limit: every client here is 127.0.0.1."""
    return Settings(index_dir=tmp_path / "index", api_keys=KEY, ask_rate_limit=None)


def load_pool(count: int) -> list[dict[str, str]]:
    pool = []
    with CORPUS.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record["title"].strip() and len(record["text"]) > 300:
                pool.append({"id": f"load/{record['_id']}", "title": record["title"].strip(),
                             "text": record["text"].strip()})
            if len(pool) == count:
                return pool
    return pool


@pytest.mark.slow
def test_questions_never_fail_while_documents_change(served_index: str) -> None:
    pool = load_pool(120)
    texts = {d["id"]: d["text"] for d in pool}
    questions = [d["title"] for d in pool] + ["who led the Russian delegation?", "peace talks"]
    latencies: list[float] = []
    failures: list[str] = []
    torn: list[str] = []
    deleted: list[str] = []
    written: list[str] = []
    write_failures: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def query(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=served_index, timeout=60) as client:
            while not stop.is_set():
                body = {"question": rng.choice(questions), "k": 5,
                        "mode": rng.choice(["hybrid", "dense", "keyword"])}
                started = time.perf_counter()
                try:
                    response = client.post("/ask", json=body)
                except httpx.HTTPError as exc:
                    with lock:
                        failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if response.status_code != 200:
                        failures.append(f"{response.status_code}: {response.text[:200]}")
                        continue
                    for passage in response.json()["passages"]:
                        c = passage["citation"]
                        if c["document_id"] in texts and (
                            texts[c["document_id"]][c["start"]:c["end"]] != passage["text"]
                        ):
                            torn.append(c["document_id"])

    def write() -> None:
        rng = random.Random(0)
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=served_index, timeout=60, headers=headers) as client:
            for document in pool:
                if stop.is_set():
                    return
                fields = {"title": document["title"], "text": document["text"]}
                response = client.put(f"/documents/{document['id']}", json=fields)
                if response.status_code != 201:
                    write_failures.append(f"PUT {response.status_code}: {response.text[:200]}")
                    return
                written.append(document["id"])
                if len(written) > 3 and rng.random() < 0.5:
                    victim = written.pop(rng.randrange(len(written) - 1))
                    response = client.delete(f"/documents/{victim}")
                    if response.status_code != 204:
                        write_failures.append(f"DELETE {response.status_code}")
                        return
                    deleted.append(victim)

    threads = [threading.Thread(target=query, args=(n,)) for n in range(CLIENTS)]
    threads.append(threading.Thread(target=write))
    for thread in threads:
        thread.start()
    stop.wait(SECONDS)  # the writer may run out of documents first; questions go on
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    assert not failures, f"{len(failures)} failed questions, e.g. {failures[:3]}"
    assert not write_failures, write_failures
    assert not torn, f"answers showed half-written documents: {sorted(set(torn))[:5]}"
    assert len(deleted) >= 5 and len(written) >= 5, (len(deleted), len(written))
    with httpx.Client(base_url=served_index, timeout=60) as client:
        for doc_id in deleted:
            assert client.get(f"/documents/{doc_id}").status_code == 404
            title = next(d["title"] for d in pool if d["id"] == doc_id)
            for mode in ("hybrid", "dense", "keyword"):
                response = client.post("/ask", json={"question": title, "k": 20, "mode": mode})
                cited = {p["citation"]["document_id"] for p in response.json()["passages"]}
                assert doc_id not in cited, f"deleted {doc_id} still answers ({mode})"
        for doc_id in written[:10]:  # and the survivors are still there
            title = next(d["title"] for d in pool if d["id"] == doc_id)
            response = client.post("/ask", json={"question": title, "k": 10})
            assert doc_id in {p["citation"]["document_id"] for p in response.json()["passages"]}

    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    print(f"\nload: {len(ordered)} questions from {CLIENTS} clients, {len(written)} documents "
          f"kept, {len(deleted)} deleted, 0 failed; p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms")
