"""Hostile requests at the HTTP edge: deep nesting, loose types, spoofed headers, odd methods."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import LiveServer

from qa.api.guards import MAX_BODY_DEPTH, json_depth
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
