"""Changing the collection: the document API over a real server, keys, limits, re-indexing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SEEDS, LiveServer, qa_serve_workers

from qa.collection import Collection
from qa.embedding import Embedder
from qa.indexing import index_paths
from qa.settings import Settings

KEY = "test-key-7f3a9c1e"
PROBLEM = "application/problem+json"
ARMADILLO = ("The nine-banded armadillo rolls into a ball only rarely; it mostly escapes "
             "predators by jumping straight up, as high as a metre, when startled.")
VOLCANO = ("Mount Tambora erupted in April 1815, the largest eruption in recorded history; "
           "the following year became known as the year without a summer in Europe.")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Overrides conftest's: a write key, and no rate limit to trip over."""
    return Settings(index_dir=tmp_path / "index", api_keys=KEY, ask_rate_limit=None)


@pytest.fixture
def authed(http: httpx.Client) -> httpx.Client:
    http.headers["Authorization"] = f"Bearer {KEY}"
    return http


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
             ) -> Iterator[httpx.Client]:
    """One server for the tests whose requests are all refused: nothing they send is kept."""
    directory = tmp_path_factory.mktemp("refusing") / "index"
    settings = Settings(index_dir=directory, api_keys=KEY, ask_rate_limit=None)
    collection = Collection.open(settings, embedder, create=True)
    index_paths(collection, [SEEDS], progress=False)
    collection.close()
    with LiveServer(settings, embedder) as server, httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}
    ) as client:
        yield client


@contextmanager
def serve(index: Collection, embedder: Embedder, **overrides: Any) -> Iterator[httpx.Client]:
    """A live server over the same index with other settings (keys, limits)."""
    index.close()
    settings = Settings(index_dir=index.directory, **overrides)
    with LiveServer(settings, embedder) as server, httpx.Client(base_url=server.url,
                                                                timeout=30) as client:
        yield client


def ask(client: httpx.Client, question: str, k: int = 5, mode: str = "hybrid"
        ) -> list[dict[str, Any]]:
    response = client.post("/ask", json={"question": question, "k": k, "mode": mode})
    assert response.status_code == 200, response.text
    return response.json()["passages"]  # type: ignore[no-any-return]


def cited_ids(passages: list[dict[str, Any]]) -> set[str]:
    return {p["citation"]["document_id"] for p in passages}


def assert_problem(response: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    return body


# -- keys ----------------------------------------------------------------------------------


def test_writes_without_a_bearer_key_are_401_and_ask_for_one(refusing: httpx.Client) -> None:
    for auth in (f"Basic {KEY}", "Bearer", KEY):
        response = refusing.post("/documents", json={"text": ARMADILLO},
                                 headers={"Authorization": auth})
        assert_problem(response, 401, "Authorization: Bearer")
        assert response.headers["www-authenticate"] == "Bearer"
    anonymous = httpx.Client(base_url=str(refusing.base_url), timeout=30)
    with anonymous:
        assert_problem(anonymous.delete("/documents/x"), 401)
        assert_problem(anonymous.put("/documents/x", json={"text": ARMADILLO}), 401)


def test_writes_with_a_wrong_key_are_401_saying_what_a_key_looks_like(
        refusing: httpx.Client) -> None:
    response = refusing.put("/documents/a", json={"text": ARMADILLO},
                            headers={"Authorization": "Bearer not-the-key"})
    assert_problem(response, 401, "qa keys create")
    assert response.headers["www-authenticate"] == "Bearer"
    assert refusing.get("/documents/a").status_code == 404


def test_without_configured_keys_http_writes_are_refused_with_how_to_enable_them(
    built_index: Collection, embedder: Embedder
) -> None:
    with serve(built_index, embedder) as client:
        response = client.post("/documents", json={"text": ARMADILLO},
                               headers={"Authorization": f"Bearer {KEY}"})
        assert_problem(response, 403, "QA_API_KEYS", "qa index")
        assert client.post("/ask", json={"question": "peace talks"}).status_code == 200


# -- adding, replacing, deleting -----------------------------------------------------------


def test_posted_document_is_answerable_with_a_verifiable_citation(authed: httpx.Client) -> None:
    response = authed.post("/documents", json={"id": "notes/armadillo", "text": ARMADILLO,
                                               "title": "Armadillos", "metadata": {"tag": "x"}})
    assert response.status_code == 201
    assert response.json()["results"] == [{"id": "notes/armadillo", "status": "added",
                                           "error": None}]
    top = ask(authed, "how does an armadillo escape predators?", k=1)[0]
    assert top["citation"]["document_id"] == "notes/armadillo"
    assert top["citation"]["title"] == "Armadillos"
    document = authed.get("/documents/notes/armadillo").json()
    assert document["text"][top["citation"]["start"]:top["citation"]["end"]] == top["text"]
    assert document["metadata"] == {"tag": "x"}


def test_posting_the_same_content_again_is_unchanged_and_embeds_nothing(
    authed: httpx.Client,
) -> None:
    first = authed.post("/documents", json={"text": ARMADILLO}).json()
    again = authed.post("/documents", json={"text": ARMADILLO})
    assert again.status_code == 200
    body = again.json()
    assert body["results"][0]["id"] == first["results"][0]["id"]
    assert first["results"][0]["id"].startswith("text-")
    assert body["unchanged"] == 1 and body["chunks_embedded"] == 0


def test_put_replaces_a_document_and_its_old_text_is_no_longer_found(
    authed: httpx.Client,
) -> None:
    assert authed.put("/documents/fact", json={"text": ARMADILLO}).status_code == 201
    response = authed.put("/documents/fact", json={"text": VOLCANO, "title": "Tambora"})
    assert response.status_code == 200 and response.json()["status"] == "replaced"
    assert "fact" in cited_ids(ask(authed, "which volcano erupted in 1815?", k=3))
    assert "fact" not in cited_ids(ask(authed, "armadillo jumping", k=3, mode="keyword"))
    assert authed.get("/documents/fact").json()["title"] == "Tambora"


def test_put_with_only_new_metadata_stores_it(authed: httpx.Client) -> None:
    authed.put("/documents/fact", json={"text": ARMADILLO, "metadata": {"v": 1}})
    response = authed.put("/documents/fact", json={"text": ARMADILLO, "metadata": {"v": 2}})
    assert response.json()["status"] == "replaced"
    assert authed.get("/documents/fact").json()["metadata"] == {"v": 2}


def test_deleted_document_is_gone_from_answers_and_lookups(authed: httpx.Client) -> None:
    authed.put("/documents/fact", json={"text": VOLCANO})
    assert "fact" in cited_ids(ask(authed, "Tambora eruption 1815"))
    response = authed.delete("/documents/fact")
    assert response.status_code == 204 and response.content == b""
    for mode in ("dense", "keyword", "hybrid"):
        assert "fact" not in cited_ids(ask(authed, "Tambora eruption 1815", k=10, mode=mode))
    assert authed.get("/documents/fact").status_code == 404
    assert_problem(authed.delete("/documents/fact"), 404, "fact")


# -- bad input -----------------------------------------------------------------------------


def test_a_batch_indexes_its_good_items_and_explains_each_bad_one(authed: httpx.Client) -> None:
    batch = [
        {"id": "good-1", "text": ARMADILLO},
        {"id": "no-text"},
        {"id": "blank", "text": "   \n "},
        {"id": "nul", "text": "a\x00b"},
        {"id": " padded", "text": VOLCANO},
        {"id": "good-2", "text": VOLCANO, "colour": "red"},
        "not an object",
        {"id": "good-2", "text": VOLCANO},
        {"id": "good-1", "text": VOLCANO},
    ]
    response = authed.post("/documents", json=batch)
    assert response.status_code == 201
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["added", "failed", "failed", "failed", "failed",
                                              "failed", "failed", "added", "failed"]
    details = [r["error"]["detail"] if r["error"] else "" for r in results]
    assert "text: Field required" in details[1]
    assert "has no text" in details[2]
    assert "NUL" in details[3]
    assert "whitespace" in details[4]
    assert "colour" in details[5]
    assert "6: Input should be a valid dictionary" in details[6]
    assert "more than once" in details[8]
    assert {"good-1", "good-2"} <= cited_ids(ask(authed, "armadillo and volcano", k=10))


def test_uploaded_files_are_indexed_and_bad_ones_get_their_own_error(
    authed: httpx.Client,
) -> None:
    files = [
        ("file", ("notes/armadillo.md", f"# Armadillos\n\n{ARMADILLO}\n".encode(),
                  "text/markdown")),
        ("file", ("empty.txt", b"  \n", "text/plain")),
        ("file", ("blob.txt", b"\x00\x01\x02binary", "text/plain")),
        ("file", ("latin1.txt", "café crème".encode("latin-1"), "text/plain")),
        ("file", ("tool.exe", b"MZ\x90\x00", "application/octet-stream")),
        ("file", ("volcano.txt", VOLCANO.encode(), "text/plain")),
    ]
    response = authed.post("/documents", files=files)
    assert response.status_code == 201
    results = response.json()["results"]
    assert [(r["id"], r["status"]) for r in results] == [
        ("notes/armadillo.md", "added"), (None, "failed"), (None, "failed"), (None, "failed"),
        (None, "failed"), ("volcano.txt", "added")]
    errors = [r["error"] for r in results[1:5]]
    assert "empty" in errors[0]["detail"]
    assert "binary" in errors[1]["detail"] and errors[1]["status"] == 415
    assert "UTF-8" in errors[2]["detail"]
    assert "unsupported file type '.exe'" in errors[3]["detail"]
    document = authed.get("/documents/notes/armadillo.md").json()
    assert document["title"] == "Armadillos" and document["source"] == "notes/armadillo.md"


def test_put_takes_one_uploaded_file_under_the_path_id(authed: httpx.Client) -> None:
    response = authed.put("/documents/kb/volcano",
                          files={"file": ("v.txt", VOLCANO.encode(), "text/plain")})
    assert response.status_code == 201
    assert "kb/volcano" in cited_ids(ask(authed, "year without a summer"))


@pytest.mark.parametrize(
    ("content", "content_type", "status", "needle"),
    [
        (b"{not json", "application/json", 422, "malformed JSON"),
        (b"", "application/json", 422, "empty"),
        (b'{"text": NaN}', "application/json", 422, "NaN"),
        (b"\xff\xfe{}", "application/json", 422, "malformed JSON"),
        (b'{"title": "t"}', "application/json", 422, "text: Field required"),
        (b"[]", "application/json", 422, "no documents"),
        (b"plain words", "text/plain", 415, "multipart/form-data"),
    ],
)
def test_malformed_bodies_are_clear_problems(refusing: httpx.Client, content: bytes,
                                             content_type: str, status: int, needle: str) -> None:
    response = refusing.post("/documents", content=content, headers={"content-type": content_type})
    assert_problem(response, status, needle)


def test_bad_document_ids_in_the_path_are_422(refusing: httpx.Client) -> None:
    assert_problem(refusing.put("/documents/%20x", json={"text": ARMADILLO}), 422, "whitespace")
    assert_problem(refusing.delete("/documents/a%01b"), 422, "control")
    assert_problem(refusing.delete("/documents/"), 422, "empty")


# -- limits --------------------------------------------------------------------------------


def test_bodies_over_the_limit_are_413_before_anything_is_indexed(
    built_index: Collection, embedder: Embedder
) -> None:
    with serve(built_index, embedder, api_keys=KEY, max_body_bytes=2048) as client:
        client.headers["Authorization"] = f"Bearer {KEY}"
        big = {"id": "big", "text": "word " * 1000}
        assert_problem(client.post("/documents", json=big), 413, "QA_MAX_BODY_BYTES")

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            yield b'{"question": "'
            yield b"x" * 4000
            yield b'"}'

        response = client.post("/ask", content=chunked(),
                               headers={"content-type": "application/json"})
        assert_problem(response, 413, "2048-byte")
        assert client.get("/documents/big").status_code == 404
        assert client.post("/ask", json={"question": "peace talks"}).status_code == 200


def test_asking_too_often_is_429_with_retry_after(built_index: Collection,
                                                  embedder: Embedder) -> None:
    with serve(built_index, embedder, ask_rate_limit="3/minute") as client:
        statuses = [client.post("/ask", json={"question": "peace talks"}).status_code
                    for _ in range(3)]
        assert statuses == [200, 200, 200]
        response = client.post("/ask", json={"question": "peace talks"})
        assert_problem(response, 429, "QA_ASK_RATE_LIMIT")
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert client.get("/healthz").status_code == 200  # only /ask is limited


def test_openapi_declares_every_error_as_problem_json(refusing: httpx.Client) -> None:
    schema = refusing.get("/openapi.json").json()
    operations = [(path, method, op) for path, ops in schema["paths"].items()
                  for method, op in ops.items()]
    assert {("/documents", "post"), ("/documents/{document_id}", "put"),
            ("/documents/{document_id}", "delete")} <= {(p, m) for p, m, _ in operations}
    for path, method, op in operations:
        for code, response in op["responses"].items():
            if code.startswith(("4", "5")):
                assert list(response["content"]) == [PROBLEM], (path, method, code)
    assert "429" in schema["paths"]["/ask"]["post"]["responses"]
    assert {"401", "403", "413"} <= set(schema["paths"]["/documents"]["post"]["responses"])


# -- re-indexing ---------------------------------------------------------------------------


def test_unchanged_reindex_embeds_nothing_and_reports_its_time(
    built_index: Collection, seed_docs: Path, embedder: Embedder
) -> None:
    for n in range(40):
        (seed_docs / f"note-{n}.txt").write_text(f"Note {n}. {ARMADILLO} {VOLCANO}\n")
    first = index_paths(built_index, [seed_docs], progress=False)
    assert first.added == 40
    calls = embedder.calls
    again = index_paths(built_index, [seed_docs], progress=False)
    assert embedder.calls == calls, "an unchanged folder must cost no embedding"
    assert again.unchanged == 41 and again.embedded == 0 and again.added == again.replaced == 0
    print(f"\nunchanged re-index of {again.files} files: {again.seconds * 1000:.1f} ms "
          f"(first index {first.seconds * 1000:.1f} ms)")


def test_citations_to_unchanged_documents_survive_reindexing(
    built_index: Collection, seed_docs: Path, embedder: Embedder
) -> None:
    (seed_docs / "volcano.txt").write_text(VOLCANO)
    index_paths(built_index, [seed_docs], progress=False)
    with serve(built_index, embedder, api_keys=KEY) as client:
        before = ask(client, "who led the Russian delegation?", k=3)
    (seed_docs / "volcano.txt").write_text(VOLCANO + " Crops failed across New England.")
    (seed_docs / "armadillo.md").write_text(ARMADILLO)
    reopened = Collection.open(Settings(index_dir=built_index.directory), embedder)
    summary = index_paths(reopened, [seed_docs], prune=True, progress=False)
    assert (summary.added, summary.replaced, summary.unchanged) == (1, 1, 1)
    with serve(reopened, embedder, api_keys=KEY) as client:
        for passage in before:
            citation = passage["citation"]
            document = client.get(f"/documents/{citation['document_id']}").json()
            assert document["text"][citation["start"]:citation["end"]] == passage["text"]
        after = ask(client, "who led the Russian delegation?", k=3)
    assert [p["citation"] for p in after] == [p["citation"] for p in before]


def test_a_write_in_one_process_is_not_hidden_by_a_later_write_in_another(
    built_index: Collection, settings: Settings, embedder: Embedder
) -> None:
    """Two collections on one index stand for two workers: each sees the other's documents."""
    other = Collection.open(settings, embedder)
    try:
        built_index.add([_doc("a", ARMADILLO)])
        other.add([_doc("v", VOLCANO)])  # before `other` ever searched
        for collection, wanted in ((other, "a"), (built_index, "v")):
            ids = [cid for cid, _ in collection.dense_search(
                ARMADILLO if wanted == "a" else VOLCANO, 3)]
            rows = collection.chunk_rows(ids)
            assert wanted in {r.document_id for r in rows.values()}
            assert collection.check()["orphan_vectors"] == 0
    finally:
        other.close()


def _doc(doc_id: str, text: str) -> Any:
    from qa.types import Document

    return Document(id=doc_id, text=text, title=doc_id)


# -- several workers -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_change_through_one_worker_is_visible_through_all(
    built_index: Collection, tmp_path: Path
) -> None:
    built_index.close()
    with qa_serve_workers(built_index.directory, tmp_path / "serve.log",
                          QA_API_KEYS=KEY, QA_ASK_RATE_LIMIT="") as (url, _):
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            assert client.put("/documents/fact", json={"text": VOLCANO}).status_code == 201
            written = time.monotonic()
        seen = _visible_everywhere(url, "which volcano erupted in 1815?", "fact", present=True)
        print(f"\nadd visible through every worker after {seen - written:.2f} s")
        assert seen - written < 3.0
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            assert client.delete("/documents/fact").status_code == 204
            written = time.monotonic()
        seen = _visible_everywhere(url, "which volcano erupted in 1815?", "fact", present=False)
        print(f"delete visible through every worker after {seen - written:.2f} s")
        assert seen - written < 3.0


def _visible_everywhere(url: str, question: str, doc_id: str, *, present: bool) -> float:
    """When 20 answers in a row, each on a new connection (so spread over the workers) agree."""
    deadline = time.monotonic() + 10
    streak = 0
    while time.monotonic() < deadline:
        with httpx.Client(base_url=url, timeout=30) as fresh:  # a new connection each time
            found = doc_id in cited_ids(ask(fresh, question, k=3, mode="dense"))
        streak = streak + 1 if found == present else 0
        if streak == 1:
            first = time.monotonic()
        if streak >= 20:
            return first
    raise AssertionError(f"{doc_id} {'never appeared' if present else 'never left'} everywhere")


def test_undecodable_bodies_and_huge_offsets_are_422_not_server_errors(
    refusing: httpx.Client,
) -> None:
    response = refusing.post("/ask", content=b'2\xff\xfe\x19\xc0',
                             headers={"content-type": "application/json"})
    assert_problem(response, 422, "malformed JSON")
    assert_problem(refusing.get("/documents", params={"offset": 10**30}), 422)
