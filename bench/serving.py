"""/ask over real HTTP against a server process, beside the floor measured in the same run.

The floor is what no implementation can skip: embedding the question and searching the
vectors, timed here on the very snapshot the server opened. Every question goes to the floor
and to the server once, taking turns by blocks (see BLOCK), so both see the same machine load
and the same questions, and neither can be helped by a cache (the server's query cache never
sees a question twice).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.corpus import Corpus
from bench.measure import directory_bytes, median_ms, percentiles, rss_bytes
from qa.collection import SNAPSHOT, Collection
from qa.embedding import Embedder
from qa.filters import parse_filter
from qa.querylog import LOG_FILE, QueryLog
from qa.settings import Settings
from qa.vectors import VectorIndex

DEPTH = 30  # what retrieve() asks of the vector index for k=5: max(2k, 30)
# Floor and server take turns by blocks of questions, the same questions for both. Each
# question interleaved singly would make the server compete with the client's compute
# threads, which keep spinning for a while after the floor's embedding (measured here: +5 ms
# on every request); a pause between them lets the 2-core VM idle down and slows whatever
# runs next. Blocks keep both warm and out of each other's way, and still share the load.
BLOCK = 20
GROUP = 512


# Filtered /ask: every document gets a `bucket` in 0..99 from its id (copies land anywhere),
# so a filter on it keeps about that share of the chunks, unrelated to what they are about.
FILTERS: dict[str, dict[str, Any]] = {
    "1%": {"metadata.bucket": 7},
    "50%": {"metadata.bucket": {"$lt": 50}},
}


def bucket_of(document_id: str) -> int:
    return int(hashlib.sha1(document_id.encode("utf-8"), usedforsecurity=False)
               .hexdigest()[:8], 16) % 100


def build_collection(corpus: Corpus, directory: Path, embedder: Embedder) -> dict[str, Any]:
    """Commit `corpus` with its precomputed vectors, as `qa index --ray` would."""
    settings = Settings(index_dir=directory)
    started = time.perf_counter()
    collection = Collection.open(settings, embedder, create=True)
    offset, items, pending = 0, [], 0
    for document, chunks in zip(corpus.documents, corpus.chunks, strict=True):
        document = replace(document, metadata={**document.metadata,
                                               "bucket": bucket_of(document.id)})
        items.append((document, chunks, corpus.vectors[offset : offset + len(chunks)]))
        offset += len(chunks)
        pending += len(chunks)
        if pending >= GROUP:
            collection.write_embedded(items)
            items, pending = [], 0
    if items:
        collection.write_embedded(items)
    collection.merge_keyword_index(len(corpus.vectors))  # as `qa index` ends a bulk load
    layout = collection._vectors.layout
    collection.close()
    return {"build_s": round(time.perf_counter() - started, 2), "layout": layout,
            "disk_bytes": directory_bytes(directory)}


class LeanClient:
    """POST /ask over one keep-alive connection with the standard library's http.client: what
    a latency measurement should add on the client side is the wire, not the client library.
    httpx adds ~1-3 ms of Python a request on this 2-core VM (measured in every run:
    `client_overhead`), which would be counted against the server."""

    def __init__(self, url: str) -> None:
        parts = httpx.URL(url)
        self._conn = http.client.HTTPConnection(parts.host, parts.port, timeout=60)

    def ask(self, body: dict[str, Any]) -> dict[str, Any]:
        """The answer's JSON; raises on any status but 200."""
        self._conn.request("POST", "/ask", json.dumps(body),
                           {"Content-Type": "application/json"})
        response = self._conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"/ask answered {response.status}: {data[:300]!r}")
        return json.loads(data)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> LeanClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def client_overhead(url: str, questions: list[str]) -> dict[str, Any]:
    """What httpx adds to an /ask over LeanClient: each question asked through both, in turns,
    one right after the other (worded apart, so neither finds it in the server's query cache);
    the paired difference's median."""
    with httpx.Client(base_url=url, timeout=60) as rich, LeanClient(url) as lean:
        differences = []
        for number, q in enumerate(questions):
            timed = {}
            for name in (("httpx", "lean") if number % 2 else ("lean", "httpx")):
                started = time.perf_counter()
                if name == "httpx":
                    rich.post("/ask", json={"question": f"{q} ({name})", "k": 5}
                              ).raise_for_status()
                else:
                    lean.ask({"question": f"{q} ({name})", "k": 5})
                timed[name] = time.perf_counter() - started
            differences.append(timed["httpx"] - timed["lean"])
    return {"httpx_minus_http_client_p50_ms": median_ms(differences),
            "questions": len(questions)}


def settled(health: dict[str, Any]) -> bool:
    """Whether a server's /healthz says it is done starting: a server reads its keyword index
    into memory on a thread after it starts (settings.keywords_in_memory; FTS5 answers
    meanwhile), and what is measured is the server as it then runs, not that read beside it."""
    return health.get("keywords") != "building"


class ServerProcess:
    """`uvicorn qa.api:app_from_env` in its own process, as `qa serve --workers N` runs each."""

    def __init__(self, directory: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        # A file, not a pipe: an unread pipe fills up and stalls the server mid-benchmark.
        self.log_path = directory.parent / f"server-{port}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in __exit__)
        # The per-client rate limit would turn a load test into a test of the limiter.
        env = {**os.environ, "QA_INDEX_DIR": str(directory), "QA_ASK_RATE_LIMIT": "off",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "qa.api:app_from_env", "--factory",
             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log,
        )

    def __enter__(self) -> ServerProcess:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.errors()}")
            try:
                health = httpx.get(self.url + "/healthz", timeout=2)
                if health.status_code == 200 and settled(health.json()):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError("server did not become healthy in 300 s")

    def errors(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        if exc[0] is not None:
            print(f"server log ({self.log_path}):\n{self.errors()}", file=sys.stderr)


def measure_size(directory: Path, embedder: Embedder, questions: list[str], *, port: int,
                 concurrency: int, throughput_questions: list[str],
                 filtered_questions: Sequence[str] = ()) -> dict[str, Any]:
    """Latency (hybrid and dense) and throughput of /ask, the floor, memory and open time;
    with `filtered_questions`, filtered /ask against unfiltered (see measure_filtered)."""
    settings = Settings(index_dir=directory)
    opens = []
    shares: dict[str, float] = {}
    for _ in range(3):
        started = time.perf_counter()
        collection = Collection.open(settings, embedder)
        opens.append(time.perf_counter() - started)
        if not shares:
            chunks = collection.counts()[1]
            shares = {name: round(len(collection.allowed_ids(parse_filter(raw))) / chunks, 4)
                      for name, raw in FILTERS.items()}
        collection.close()
    vectors = VectorIndex.load(directory / SNAPSHOT, embedder.dimension)
    assert vectors is not None
    half = len(questions) // 2
    result: dict[str, Any] = {"chunks": len(vectors), "layout": vectors.layout,
                              "index_open_ms": median_ms(opens)}
    with ServerProcess(directory, port) as server, LeanClient(server.url) as http:
        for q in throughput_questions[-5:]:  # warm-up: first-request costs are not latency
            http.ask({"question": q + " warm", "k": 5})
        result["server_rss_bytes"] = rss_bytes(server.process.pid)
        floor_s: list[float] = []
        queries = []
        for mode, batch in (("hybrid", questions[:half]), ("dense", questions[half:])):
            latencies, took = [], []
            for block in range(0, len(batch), BLOCK):
                for q in batch[block : block + BLOCK]:
                    started = time.perf_counter()
                    row = embedder.embed_questions([q], progress=False)
                    vectors.search(row, DEPTH)
                    floor_s.append(time.perf_counter() - started)
                    queries.append(row[0])
                for q in batch[block : block + BLOCK]:
                    started = time.perf_counter()
                    answer = http.ask({"question": q, "k": 5, "mode": mode})
                    latencies.append(time.perf_counter() - started)
                    took.append(answer["took_ms"] / 1000.0)
            result[f"ask_{mode}"] = {**percentiles(latencies),
                                     "server_took_p50_ms": median_ms(took)}
        result["floor"] = percentiles(floor_s)
        for mode in ("hybrid", "dense"):
            result[f"ask_{mode}"]["p50_over_floor"] = round(
                result[f"ask_{mode}"]["p50_ms"] / result["floor"]["p50_ms"], 2)
        if filtered_questions:
            result["ask_filtered"] = measure_filtered(http, list(filtered_questions), shares)
        # Questions no latency above asked (the server's query cache must not answer them).
        result["client_overhead"] = client_overhead(server.url, throughput_questions[:20])
        result["requests_per_s"] = _throughput(server.url, throughput_questions[:-5],
                                               concurrency)
        result["server_rss_bytes_after"] = rss_bytes(server.process.pid)
    result["ask_query_log"] = measure_query_log(directory, questions[:half],
                                                throughput_questions[-5:])
    result["recall_at_10_vs_exact"] = recall_at_10(vectors, np.stack(queries))
    return result


def measure_filtered(http: LeanClient, questions: list[str], shares: dict[str, float]
                     ) -> dict[str, Any]:
    """Hybrid /ask p50 with each of FILTERS and without, and each one's ratio to unfiltered.

    The questions are split in as many sets as cases, and the cases take turns question by
    question (so a burst of load on a shared machine falls on all of them alike), the sets
    rotating over the cases so that each asks a share of every set: no case gets the easy
    questions, and the server never sees a question twice (its query cache would flatter
    whoever came second).
    """
    cases: list[tuple[str, dict[str, Any] | None]] = [("unfiltered", None),
                                                      *FILTERS.items()]
    size = len(questions) // len(cases)
    sets = [questions[i * size : (i + 1) * size] for i in range(len(cases))]
    latencies: dict[str, list[float]] = {name: [] for name, _ in cases}
    short: dict[str, int] = {name: 0 for name, _ in cases}
    for j in range(size):
        for i, (name, raw) in enumerate(cases):
            body: dict[str, Any] = {"question": sets[(i + j) % len(cases)][j], "k": 5}
            if raw is not None:
                body["filter"] = raw
            started = time.perf_counter()
            answer = http.ask(body)
            latencies[name].append(time.perf_counter() - started)
            short[name] += len(answer["passages"]) < 5
    base = percentiles(latencies["unfiltered"])
    out: dict[str, Any] = {"unfiltered": {**base, "fewer_than_k": short["unfiltered"]}}
    for name, raw in FILTERS.items():
        measured = percentiles(latencies[name])
        out[name] = {**measured, "filter": raw, "allowed_share": shares.get(name),
                     "fewer_than_k": short[name],
                     "p50_over_unfiltered": round(measured["p50_ms"] / base["p50_ms"], 2)}
    return out


def measure_query_log(directory: Path, questions: list[str], warm: list[str]
                      ) -> dict[str, Any]:
    """Hybrid /ask p50 with the query log on and off (QA_QUERY_LOG), and their ratio.

    Two fresh servers on the same index, one logging and one not, each get every question
    once (each has its own query cache), one right after the other, the logging one first for
    every other question: the pair sees the same question under the same machine load, which
    on a shared machine moves far more than the log costs. The rows the logging server wrote
    are counted, to show it logged every answer.
    """
    log_file = directory / LOG_FILE
    before = _logged_rows(log_file)
    with ServerProcess(directory, _free_port(), {"QA_QUERY_LOG": "on"}) as on, \
            ServerProcess(directory, _free_port(), {"QA_QUERY_LOG": "off"}) as off, \
            LeanClient(on.url) as on_http, LeanClient(off.url) as off_http:
        cases = [("on", on_http), ("off", off_http)]
        for _, http in cases:
            for q in warm:  # first-request costs are not latency
                http.ask({"question": q + " warm", "k": 5})
        latencies: dict[str, list[float]] = {"on": [], "off": []}
        for number, q in enumerate(questions):
            for name, http in cases[::-1] if number % 2 else cases:
                started = time.perf_counter()
                http.ask({"question": q, "k": 5})
                latencies[name].append(time.perf_counter() - started)
    on_ms, off_ms = percentiles(latencies["on"]), percentiles(latencies["off"])
    paired = [a - b for a, b in zip(latencies["on"], latencies["off"], strict=True)]
    return {"on": on_ms, "off": off_ms,
            "p50_on_over_off": round(on_ms["p50_ms"] / off_ms["p50_ms"], 3),
            "paired_difference_p50_ms": median_ms(paired),
            "rows_logged": _logged_rows(log_file) - before,
            "questions_asked": len(questions) + len(warm)}


def _logged_rows(path: Path) -> int:
    reader = QueryLog(path, read_only=True)
    try:
        return len(reader.history())
    finally:
        reader.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _throughput(url: str, questions: list[str], concurrency: int) -> dict[str, Any]:
    def worker(batch: list[str]) -> list[int]:
        with httpx.Client(base_url=url, timeout=60) as http:
            return [http.post("/ask", json={"question": q, "k": 5}).status_code for q in batch]

    batches = [questions[i::concurrency] for i in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        codes = [c for batch in pool.map(worker, batches) for c in batch]
    elapsed = time.perf_counter() - started
    failed = sum(c != 200 for c in codes)
    return {"hybrid": round((len(codes) - failed) / elapsed, 1), "concurrency": concurrency,
            "requests": len(codes), "failed": failed,
            "statuses": {str(c): codes.count(c) for c in sorted(set(codes))}}


def recall_at_10(index: VectorIndex, queries: np.ndarray) -> float | None:
    """Share of the exact top-10 that the index returns; None when the index is exact."""
    if index.layout == "flat":
        return None
    import faiss

    ids, vectors = index._live()
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    _, truth = exact.search(np.ascontiguousarray(queries, dtype=np.float32), 10)
    hits = 0
    for q, row in zip(queries, truth, strict=True):
        hits += len(set(index.search(q, 10)[0].tolist()) & set(ids[row].tolist()))
    return round(hits / (10 * len(queries)), 4)
