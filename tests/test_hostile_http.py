"""Hostile requests at the HTTP edge: deep nesting, loose types, spoofed headers, odd methods."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import LiveServer, free_port
from pydantic import ValidationError
from starlette.testclient import TestClient

from qa.api.guards import MAX_BODY_DEPTH, NoSniffMiddleware, json_depth, may_nest_deeper
from qa.collection import Collection
from qa.embedding import Embedder
from qa.loaders import MAX_METADATA_DEPTH
from qa.settings import Settings

KEY = "hostile-key-4b1d"
PROBLEM = "application/problem+json"
WIDGET_ORIGIN = "http://widget.example"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder
           ) -> Iterator[httpx.Client]:
    """One server over an empty index, with a key and a CORS origin; no rate limit."""
    settings = Settings(index_dir=tmp_path_factory.mktemp("hostile") / "index", api_keys=KEY,
                        ask_rate_limit=None, cors_origins=WIDGET_ORIGIN)
    Collection.open(settings, embedder, create=True).close()
    auth = {"Authorization": f"Bearer {KEY}"}
    with LiveServer(settings, embedder) as server, httpx.Client(
            base_url=server.url, timeout=60, headers=auth) as http:
        yield http


def nested(depth: int) -> str:
    """A JSON array nested `depth` levels, as text (json.dumps would recurse on it)."""
    return "[" * depth + "1" + "]" * depth


def document_json(doc_id: str, metadata_value: str) -> str:
    """A document body whose metadata holds `metadata_value` (JSON text) under one key."""
    head = '{"id": "' + doc_id + '", "text": "some text", "metadata": {"a": '
    return head + metadata_value + "}}"


def post_json(client: httpx.Client, path: str, body: str) -> httpx.Response:
    return client.post(path, content=body.encode(), headers={"Content-Type": "application/json"})


def assert_problem(response: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    for needle in needles:
        assert needle in body["detail"]
    return body


# -- defect 3: nesting ----------------------------------------------------------------------


def test_json_depth_counts_brackets_outside_strings_only() -> None:
    assert json_depth(b'{"a": [1, {"b": []}]}') == 4
    assert json_depth(b'{"q": "[[[[{{{{", "r": "\\"[[["}') == 1
    assert json_depth(nested(5000).encode()) == 5000
    assert json_depth(b"") == 0


@pytest.mark.parametrize("raw", [
    b'{"a": [1, {"b": []}]}', b'{"q": "[[[[{{{{", "r": "\\"[[["}', b"[[[]]][[[[]]]]", b"{}",
    nested(MAX_BODY_DEPTH + 1).encode(), b'"[[[[" ' + nested(70).encode(), b"]]]][[[[", b"1",
])
def test_the_bracket_count_never_lets_a_body_nested_past_a_cap_skip_the_depth_count(
    raw: bytes,
) -> None:
    depth = json_depth(raw)
    for cap in range(depth):  # every cap this body goes past
        assert may_nest_deeper(raw, cap)
    assert not may_nest_deeper(b'{"question": "[what] {is} [[this]]?", "k": 5}', MAX_BODY_DEPTH)


@pytest.mark.parametrize("depth, refused", [(MAX_BODY_DEPTH, False), (MAX_BODY_DEPTH + 1, True)])
def test_an_ask_body_nested_one_past_the_cap_is_refused_and_one_at_it_is_not(
    client: httpx.Client, depth: int, refused: bool
) -> None:
    # The outer object is a level: these have depth and exactly as many opening brackets.
    body = '{"question": ' + nested(depth - 1) + "}"
    response = post_json(client, "/ask", body)
    assert response.status_code == 422
    assert ("nested" in response.json()["detail"]) is refused


def test_nosniff_replaces_a_header_the_app_already_set_rather_than_repeat_it() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"x-content-type-options", b"sniff-away"), (b"content-length", b"0"),
            (b"x-content-type-options", b"again")]})
        await send({"type": "http.response.body", "body": b""})

    response = TestClient(NoSniffMiddleware(app)).get("/")  # no lifespan: a bare ASGI app
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]
    assert list(response.headers)[0] == "x-content-type-options"  # where the first one was


@pytest.mark.parametrize("depth", [1200, 5000])
def test_metadata_nested_past_the_recursion_limit_is_refused_before_parsing(
    client: httpx.Client, depth: int
) -> None:
    body = document_json("deep", nested(depth))
    assert_problem(post_json(client, "/documents", body), 422, "nested", str(MAX_BODY_DEPTH))
    assert client.get("/documents/deep").status_code == 404


@pytest.mark.parametrize("depth", [MAX_METADATA_DEPTH, MAX_BODY_DEPTH, 300])
def test_metadata_past_its_depth_cap_is_refused_and_listing_keeps_working(
    client: httpx.Client, depth: int
) -> None:
    body = "[" + document_json(f"deep-{depth}", nested(depth)) + "]"
    response = post_json(client, "/documents", body)
    assert response.status_code in (200, 422), response.text
    if response.status_code == 200:
        failure = response.json()["results"][0]
        assert failure["status"] == "failed"
        assert f"deeper than {MAX_METADATA_DEPTH}" in failure["error"]["detail"]
    assert client.get(f"/documents/deep-{depth}").status_code == 404
    assert client.get("/documents", params={"limit": 500}).status_code == 200


def test_metadata_at_its_depth_cap_is_stored_and_read_back(client: httpx.Client) -> None:
    # The metadata object is level 1, so MAX_METADATA_DEPTH - 2 arrays under one key fit.
    body = document_json("at-cap", nested(MAX_METADATA_DEPTH - 2))
    assert post_json(client, "/documents", body).status_code in (200, 201)
    assert client.get("/documents/at-cap").status_code == 200
    assert client.get("/documents", params={"limit": 500}).status_code == 200
    assert client.delete("/documents/at-cap").status_code == 204


def test_a_deeply_nested_ask_body_is_a_422_problem(client: httpx.Client) -> None:
    body = '{"question": ' + nested(1200) + "}"
    assert_problem(post_json(client, "/ask", body), 422, "nested")


def test_brackets_inside_a_question_are_text_not_nesting(client: httpx.Client) -> None:
    question = "[{" * 100 + ' "quoted" \\ who led the delegation?'
    response = client.post("/ask", json={"question": question, "k": 1})
    assert response.status_code == 200, response.text


# -- defect 5: X-Forwarded-For ----------------------------------------------------------------


@contextmanager
def limited_server(tmp_path: Path, embedder: Embedder, **overrides: Any
                   ) -> Iterator[httpx.Client]:
    """A live server over an empty index admitting two questions a minute per client."""
    settings = Settings(index_dir=tmp_path / "index", ask_rate_limit="2/minute", **overrides)
    Collection.open(settings, embedder, create=True).close()
    with LiveServer(settings, embedder) as server, httpx.Client(base_url=server.url,
                                                                timeout=60) as http:
        yield http


def ask_as(client: httpx.Client, forwarded_for: str) -> httpx.Response:
    return client.post("/ask", json={"question": "who signed the treaty?"},
                       headers={"X-Forwarded-For": forwarded_for})


def test_a_spoofed_x_forwarded_for_does_not_get_a_fresh_rate_limit_bucket(
    tmp_path: Path, embedder: Embedder
) -> None:
    with limited_server(tmp_path, embedder) as client:
        statuses = [ask_as(client, f"10.0.0.{n}").status_code for n in range(2)]
        assert statuses == [200, 200]
        assert_problem(ask_as(client, "10.0.0.99"), 429, "127.0.0.1")


def test_forwarded_addresses_count_only_from_a_configured_proxy(
    tmp_path: Path, embedder: Embedder
) -> None:
    with limited_server(tmp_path, embedder, forwarded_allow_ips="127.0.0.1") as client:
        statuses = [ask_as(client, f"10.0.0.{n}").status_code for n in range(4)]
        assert statuses == [200, 200, 200, 200]
        assert [ask_as(client, "10.0.0.7").status_code for _ in range(2)] == [200, 200]
        assert_problem(ask_as(client, "10.0.0.7"), 429, "10.0.0.7")


def test_forwarded_allow_ips_takes_addresses_and_networks_only() -> None:
    settings = Settings(forwarded_allow_ips="10.0.0.1, 192.168.0.0/16,*")
    assert settings.forwarded_allow_ips == ["10.0.0.1", "192.168.0.0/16", "*"]
    assert Settings().forwarded_allow_ips == []
    with pytest.raises(ValidationError, match="not an IP address"):
        Settings(forwarded_allow_ips="proxy.internal")


@pytest.mark.slow
def test_qa_serve_ignores_x_forwarded_for_by_default(tmp_path: Path, embedder: Embedder
                                                     ) -> None:
    settings = Settings(index_dir=tmp_path / "index")
    Collection.open(settings, embedder, create=True).close()
    port = free_port()
    env = {**os.environ, "QA_ASK_RATE_LIMIT": "2/minute", "HF_HUB_OFFLINE": "1"}
    env.pop("QA_FORWARDED_ALLOW_IPS", None)
    qa = Path(sys.executable).parent / "qa"  # the installed CLI, as a user runs it
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([str(qa), "serve", "--port", str(port), "--index",
                                   str(settings.index_dir)], env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "Application startup complete" not in log_path.read_text():
            assert server.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            assert [ask_as(client, f"10.1.0.{n}").status_code for n in range(2)] == [200, 200]
            assert_problem(ask_as(client, "10.1.0.99"), 429, "127.0.0.1")
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- defect 13: headers, methods, keys, types ---------------------------------------------------


@pytest.mark.parametrize("method, path", [
    ("GET", "/healthz"), ("GET", "/"), ("GET", "/widget.js"), ("GET", "/documents"),
    ("GET", "/documents/missing"), ("POST", "/ask"), ("OPTIONS", "/ask"), ("HEAD", "/healthz"),
])
def test_every_response_says_nosniff(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path, headers={"Origin": "http://elsewhere.example",
                                                     "Access-Control-Request-Method": "POST"})
    assert response.headers["x-content-type-options"] == "nosniff"


def test_the_demo_page_may_not_be_framed_and_runs_only_its_widget(client: httpx.Client) -> None:
    csp = client.get("/").headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp


def test_the_demo_page_ignores_the_host_header(client: httpx.Client) -> None:
    page = client.get("/", headers={"Host": "evil.example"}).text
    assert "evil.example" not in page
    assert 'data-endpoint="."' in page
    assert page == client.get("/").text


def test_the_source_page_may_not_be_framed(client: httpx.Client) -> None:
    client.put("/documents/framed", json={"text": "A page nobody may frame."})
    response = client.get("/source/framed")
    assert response.status_code == 200
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_a_refused_cors_preflight_is_a_problem(client: httpx.Client) -> None:
    refused = client.options("/ask", headers={"Origin": "http://elsewhere.example",
                                              "Access-Control-Request-Method": "POST"})
    body = assert_problem(refused, 400, "origin", "QA_CORS_ORIGINS")
    assert body["title"] == "CORS preflight refused"
    allowed = client.options("/ask", headers={"Origin": WIDGET_ORIGIN,
                                              "Access-Control-Request-Method": "POST"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == WIDGET_ORIGIN


@pytest.mark.parametrize("path", ["/healthz", "/", "/widget.js", "/documents", "/openapi.json"])
def test_head_answers_wherever_get_does_with_no_body(client: httpx.Client, path: str) -> None:
    get = client.get(path)
    head = client.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_head_is_not_a_way_around_a_missing_get(client: httpx.Client) -> None:
    assert client.head("/ask").status_code == 405
    assert client.head("/documents/missing").status_code == 404


@pytest.mark.parametrize("key", ["clé-secrète", "key\x7f", "ключ"])
def test_an_api_key_a_header_cannot_carry_is_refused_in_settings(key: str) -> None:
    with pytest.raises(ValidationError, match="printable ASCII"):
        Settings(api_keys=f"good-key,{key}")


@pytest.mark.parametrize("metadata", [
    {"a": "x\x00y"}, {"a": {"b": ["ok", "x\x00"]}}, {"a\x00": 1}, {"a": "\ud800"},
])
def test_nul_or_a_lone_surrogate_anywhere_in_metadata_is_refused(
    client: httpx.Client, metadata: dict[str, Any]
) -> None:
    body = {"id": "nul-meta", "text": "text with odd metadata", "metadata": metadata}
    payload = json.dumps(body).encode()  # \u0000 and \ud800 escaped, as a client sends them
    response = client.post("/documents", content=payload,
                           headers={"Content-Type": "application/json"})
    assert_problem(response, 422, "metadata must not contain NUL")
    assert client.get("/documents/nul-meta").status_code == 404


@pytest.mark.parametrize("field, value", [
    ("k", True), ("k", "3"), ("k", 3.0), ("question", 42), ("question", ["who?"]), ("mode", 1),
])
def test_ask_takes_strict_types(client: httpx.Client, field: str, value: Any) -> None:
    body = {"question": "who signed the treaty?", "k": 3, field: value}
    response = client.post("/ask", json=body)
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["loc"][-1] == field


# -- defect 9: a large upload does not hold up questions ----------------------------------------


@pytest.mark.slow
def test_questions_are_answered_while_a_large_upload_is_embedded(
    client: httpx.Client, embedder: Embedder
) -> None:
    # ~300 chunks: embedding them takes far longer than a few questions, on any machine here.
    text = " ".join(f"Quarry {n} shipped {n * 7} granite blocks to the harbour of town {n % 97}."
                    for n in range(4_000))
    before = embedder.calls
    outcome: dict[str, int] = {}

    def upload() -> None:
        with httpx.Client(base_url=str(client.base_url), headers=dict(client.headers),
                          timeout=600) as writer:
            outcome["status"] = writer.put("/documents/quarries", json={"text": text}
                                           ).status_code

    writer = threading.Thread(target=upload)
    writer.start()
    try:
        while embedder.calls - before < 100:  # the upload's chunks went to the model
            assert writer.is_alive(), f"the upload ended before embedding: {outcome}"
            time.sleep(0.01)
        for n in range(3):  # new questions, so each is embedded, not taken from the cache
            response = client.post("/ask", json={"question": f"what did quarry {n} ship? #{n}"})
            assert response.status_code == 200, response.text
        assert writer.is_alive(), "the questions waited for the upload to finish"
    finally:
        writer.join()
    assert outcome["status"] == 201
    assert client.delete("/documents/quarries").status_code == 204


# -- defect 1 over HTTP: one bad upload costs only itself -------------------------------------

HOSTILE_UPLOADS: list[tuple[str, bytes]] = [
    ("binary-tag.md", b"---\nblob: !!binary aGVsbG8=\n---\n# Blob\n\nText after front matter.\n"),
    ("a-set.md", b"---\ntags: !!set {a, b}\n---\n# Set\n\nText after front matter.\n"),
    ("deep.md", b"---\nx: " + b"[" * 3000 + b"]" * 3000 + b"\n---\n# Deep\n\nText.\n"),
    ("alias-bomb.md", b"---\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
                      b"b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                      b"c: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n---\nText.\n"),
    ("nul-late.txt", b"x" * 9000 + b"\x00 hidden"),
    ("not-utf8.txt", b"caf\xe9 au lait"),
    ("empty.txt", b""),
    ("fake.pdf", b"%PDF-1.7 this is not a pdf"),
    ("fake.docx", b"PK\x03\x04 not a zip"),
    ("list-front-matter.md", b"---\n- a\n- b\n---\nText.\n"),
    ("../../escape/../a/../..", b"a name that is only dot segments"),
    ("tool.exe", b"MZ"),
]


def test_a_batch_of_good_and_hostile_uploads_stores_the_good_and_reports_each_bad(
    client: httpx.Client,
) -> None:
    good = [("good-one.txt", b"The lighthouse keeper paints the shutters blue every spring."),
            ("good-two.md", b"---\ntag: fine\n---\n# Tides\n\nThe tide rose 40 cm at noon.\n")]
    parts = [("file", (name, data, "application/octet-stream"))
             for name, data in [good[0], *HOSTILE_UPLOADS, good[1]]]
    response = client.post("/documents", files=parts)
    assert response.status_code == 201, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["added", *["failed"] * len(HOSTILE_UPLOADS),
                                              "added"]
    for result in results[1:-1]:
        assert result["error"]["status"] in (413, 415, 422), result
        assert "\n" not in result["error"]["detail"]
    assert client.get("/documents/good-one.txt").json()["metadata"] == {}
    assert client.get("/documents/good-two.md").json()["metadata"] == {"tag": "fine"}
    assert client.get("/healthz").status_code == 200
