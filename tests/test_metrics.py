"""GET /metrics: Prometheus text a scraper parses, counts that match what was sent (in one
process, or over two workers), each collection's size read when scraped, and only for this
machine or an admin key."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import LiveServer, qa_serve_workers
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from qa.api import create_app
from qa.catalog import Catalog
from qa.collection import Collection
from qa.embedding import Embedder
from qa.settings import Settings
from qa.types import Document

ADMIN = "admin-key-metrics-7f3a"
SEED_ID_PART = "istanbul-peace-talks"
ANSWERED = "who heads the Russian delegation?"
NOT_FOUND = "what is the boiling point of liquid nitrogen on Neptune's moon Triton?"
NOTES = {
    "tambora": "Mount Tambora erupted in April 1815, the largest eruption in recorded history.",
    "krakatoa": "Krakatoa erupted in August 1883; the sound was heard 4,800 kilometres away.",
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client, **headers: str) -> Samples:
    """Every sample of GET /metrics, as parsed by prometheus_client's own parser."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_of(samples: Samples, method: str, route: str, status: int) -> float:
    return value(samples, "qa_http_requests_total", method=method, route=route,
                 status=str(status))


@pytest.fixture
def root(built_index: Collection, settings: Settings, embedder: Embedder) -> Path:
    """The seed index as `default`, plus a private collection `notes` of two documents."""
    built_index.close()
    with Catalog(settings, embedder) as catalog:
        catalog.create_collection("notes", public=False)
        notes = catalog.open("notes")
        notes.add([Document(id=d, text=t, title=d) for d, t in NOTES.items()], progress=False)
        notes.close()
    return settings.index_dir


@pytest.fixture
def server(root: Path, settings: Settings, embedder: Embedder) -> Iterator[str]:
    """A live server behind a (pretend) proxy on 127.0.0.1: a request that says
    X-Forwarded-For comes from that address, any other from this machine."""
    served = settings.model_copy(update={"api_keys": [SecretStr(ADMIN)], "ask_rate_limit": None,
                                         "forwarded_allow_ips": ["127.0.0.1"]})
    with LiveServer(served, embedder) as live:
        yield live.url


@pytest.fixture
def local(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client


def remote(**headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": "203.0.113.7", **headers}


def test_requests_are_counted_by_route_template_and_status_never_by_raw_path(
        local: httpx.Client) -> None:
    before = scrape(local)
    for _ in range(3):
        assert local.post("/collections/default/ask", json={"question": ANSWERED}
                          ).status_code == 200
    for _ in range(2):
        assert local.post("/ask", json={"question": ANSWERED}).status_code == 200
    assert local.post("/ask", json={"question": " "}).status_code == 422
    assert local.post("/collections/nope/ask", json={"question": ANSWERED},
                      headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 404
    document_id = local.get("/documents").json()["documents"][0]["id"]
    assert local.get(f"/documents/{document_id}").status_code == 200
    assert local.head("/healthz").status_code == 200
    assert local.get("/openapi.json").status_code == 200  # a plain Starlette route
    assert local.get("/no/such/page").status_code == 404
    assert local.delete("/healthz").status_code == 405
    after = scrape(local)

    def moved(method: str, route: str, status: int) -> float:
        return requests_of(after, method, route, status) - requests_of(before, method, route,
                                                                        status)

    assert moved("POST", "/collections/{collection}/ask", 200) == 3
    assert moved("POST", "/ask", 200) == 2
    assert moved("POST", "/ask", 422) == 1
    assert moved("POST", "/collections/{collection}/ask", 404) == 1
    assert moved("GET", "/documents/{document_id}", 200) == 1
    assert moved("GET", "/healthz", 200) == 1  # the HEAD
    assert moved("GET", "/openapi.json", 200) == 1
    assert moved("GET", "<unmatched>", 404) == 1
    assert moved("DELETE", "/healthz", 405) == 1
    routes = {dict(labels)["route"] for name, labels in after
              if name == "qa_http_requests_total"}
    assert not any(SEED_ID_PART in r or "nope" in r or "such" in r for r in routes), routes


def test_answered_and_not_found_counters_and_the_timings_move_with_ask(
        local: httpx.Client) -> None:
    before = scrape(local)
    found = local.post("/ask", json={"question": ANSWERED}).json()["answer"]["found"]
    missed = local.post("/ask", json={"question": NOT_FOUND}).json()["answer"]["found"]
    fresh = f"{ANSWERED} ({uuid.uuid4().hex})"  # never asked, so the model embeds it
    assert local.post("/collections/default/ask", json={"question": fresh}).status_code == 200
    after = scrape(local)
    assert (found, missed) == (True, False)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("qa_questions_total", collection="default", outcome="not_found") == 1
    assert moved("qa_questions_total", collection="default", outcome="answered") == 2
    assert moved("qa_ask_duration_seconds_count", collection="default") == 3
    assert moved("qa_ask_duration_seconds_sum", collection="default") > 0
    assert moved("qa_embedding_duration_seconds_count") >= 1
    assert moved("qa_embedding_duration_seconds_sum") > 0


def test_feedback_is_counted_by_rating(local: httpx.Client) -> None:
    before = scrape(local)
    query_id = local.post("/ask", json={"question": ANSWERED}).json()["query_id"]
    assert query_id
    for rating in ("up", "down", "up"):  # a changed vote replaces the stored one; each counts
        assert local.post("/feedback", json={"query_id": query_id, "rating": rating}
                          ).status_code == 200
    assert local.post("/feedback", json={"query_id": "0" * 32, "rating": "up"}
                      ).status_code == 404
    after = scrape(local)
    assert value(after, "qa_feedback_total", rating="up") - value(
        before, "qa_feedback_total", rating="up") == 2
    assert value(after, "qa_feedback_total", rating="down") - value(
        before, "qa_feedback_total", rating="down") == 1


def test_gauges_show_each_collections_documents_and_chunks_as_they_are_now(
        local: httpx.Client, root: Path) -> None:
    samples = scrape(local)
    health = local.get("/healthz").json()
    assert value(samples, "qa_documents", collection="default") == health["documents"] == 1
    assert value(samples, "qa_chunks", collection="default") == health["chunks"]
    assert value(samples, "qa_documents", collection="notes") == 2
    assert value(samples, "qa_chunks", collection="notes") == 2
    admin = {"Authorization": f"Bearer {ADMIN}"}
    assert local.put("/collections/notes/documents/pinatubo", headers=admin, json={
        "text": "Mount Pinatubo erupted in June 1991 and cooled the planet for two years."}
                     ).status_code == 201
    assert value(scrape(local), "qa_documents", collection="notes") == 3


def test_metrics_answer_this_machine_or_an_admin_key_and_no_one_else(
        local: httpx.Client) -> None:
    refused = local.get("/metrics", headers=remote())
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "127.0.0.1" in refused.json()["detail"]
    assert "qa_" not in refused.text
    search_key = local.post("/keys", headers={"Authorization": f"Bearer {ADMIN}"},
                            json={"role": "search", "collections": ["notes"]}).json()["secret"]
    with_search_key = local.get("/metrics", headers=remote(Authorization=f"Bearer {search_key}"))
    assert with_search_key.status_code == 403
    assert "admin key" in with_search_key.json()["detail"]
    unknown_key = local.get("/metrics", headers=remote(Authorization="Bearer qa_nope_nope"))
    assert unknown_key.status_code == 401
    assert "qa_documents" in str(scrape(local, **remote(Authorization=f"Bearer {ADMIN}")))
    assert "qa_documents" in str(scrape(local))


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it(local: httpx.Client) -> None:
    response = local.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_several_apps_in_one_process_share_one_set_of_metrics(settings: Settings) -> None:
    # Metric objects are made once, at import: a second app registers nothing twice.
    first, second = create_app(settings), create_app(settings)
    assert first is not second


# -- several workers -----------------------------------------------------------------------


def worker_files(server: subprocess.Popen[bytes]) -> dict[int, list[Path]]:
    """Each worker's metric files, found through its environment (Linux /proc)."""
    children = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                and _parent_of(p) == server.pid]
    found: dict[int, list[Path]] = {}
    for pid in children:
        environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        folder = next((v.split(b"=", 1)[1].decode() for v in environ
                       if v.startswith(b"PROMETHEUS_MULTIPROC_DIR=")), None)
        paths = [] if folder is None else sorted(Path(folder).glob(f"*_{pid}.db"))
        if paths:  # not multiprocessing's resource tracker, a child too, which counts nothing
            found[pid] = paths
    return found


def _parent_of(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.slow
def test_two_workers_count_every_request_once_in_one_registry(
        root: Path, tmp_path: Path) -> None:
    sent = 40
    with qa_serve_workers(root, tmp_path / "serve.log", QA_ASK_RATE_LIMIT="") as (url, server):
        for n in range(sent):  # a new connection each time: spread over both workers
            with httpx.Client(base_url=url, timeout=30) as fresh:
                question = ANSWERED if n % 2 else NOT_FOUND
                assert fresh.post("/ask", json={"question": question}).status_code == 200
        files = worker_files(server)
        folders = {f.parent for paths in files.values() for f in paths}
        per_worker = {pid: requests_of(_merged(paths), "POST", "/ask", 200)
                      for pid, paths in files.items()}
        with httpx.Client(base_url=url, timeout=30) as fresh:
            samples = scrape(fresh)
            again = scrape(fresh)  # whichever worker answers, the same counts
        print(f"\n/ask answered per worker: {per_worker}")
        assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
        assert requests_of(samples, "POST", "/ask", 200) == sent
        assert requests_of(again, "POST", "/ask", 200) == sent
        assert value(samples, "qa_questions_total", collection="default",
                     outcome="answered") == sent / 2
        assert value(samples, "qa_questions_total", collection="default",
                     outcome="not_found") == sent / 2
        assert value(samples, "qa_ask_duration_seconds_count", collection="default") == sent
        assert value(samples, "qa_documents", collection="notes") == 2
    assert len(folders) == 1
    assert not next(iter(folders)).exists(), "the metrics folder outlived the server"


def _merged(paths: list[Path]) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for metric in MultiProcessCollector.merge([str(p) for p in paths])
            for s in metric.samples}
