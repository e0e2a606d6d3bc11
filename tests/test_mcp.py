"""Agents through MCP: `qa mcp` over stdio and /mcp on `qa serve`, driven by the SDK's own
client, against a real seed index; citations must slice get_document's text exactly, and
/mcp must see what /ask would with the same key."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import httpx2
import pytest
from conftest import ROOT, SEEDS, LiveServer, qa_serve_workers
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from qa.catalog import CATALOG_FILE, Catalog
from qa.embedding import Embedder
from qa.indexing import index_paths
from qa.keys import KeyStore
from qa.settings import Settings

QUESTION = "who led the Russian delegation?"
LEDGER = "The ledger of the harbour office records that the lighthouse keeper was paid in salt."

Session = Callable[[ClientSession], Awaitable[Any]]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Path:
    """The seed article in `default` (public), a private collection, and two search keys."""
    root = tmp_path_factory.mktemp("mcp") / "index"
    ledger = root.parent / "ledger.txt"
    ledger.write_text(LEDGER)
    with Catalog(Settings(index_dir=root), embedder) as catalog:
        for name, source in (("default", SEEDS), ("private", ledger)):
            if name != "default":
                catalog.create_collection(name, public=False)
            collection = catalog.open(name, create=name == "default")
            assert not index_paths(collection, [source], progress=False).errors
            collection.close()
    return root


@pytest.fixture(scope="module")
def secrets(index: Path) -> dict[str, str]:
    store = KeyStore(index / CATALOG_FILE)
    made = {
        # A fixed filter no seed document passes: the key sees nothing of `default`.
        "filtered": store.create("search", ["default"], filter={"title": "No such title"})[1],
        "private": store.create("search", ["private"])[1],
    }
    store.close()
    return made


@pytest.fixture(scope="module")
def served(index: Path, secrets: dict[str, str], tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[str]:
    """`qa serve --workers 2` over the index: /mcp must not depend on which worker answers."""
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with qa_serve_workers(index, log, workers=2, QA_ASK_RATE_LIMIT="") as (url, _):
        yield url


def run_async(session: Callable[[], Awaitable[Any]]) -> Any:
    """`anyio.run` on a thread of its own: Playwright's sync API (the e2e tests, when the
    whole suite runs) leaves an event loop on the main thread, where a second one refuses to
    start ("Already running asyncio in this thread")."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, session).result()


def run_stdio(index: Path, use: Session) -> Any:
    params = StdioServerParameters(command=str(Path(sys.executable).parent / "qa"),
                                   args=["mcp", "--index", str(index)], cwd=ROOT,
                                   env={"HF_HUB_OFFLINE": "1", "PATH": os.environ["PATH"]})

    async def session() -> Any:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
            await client.initialize()
            return await use(client)

    return run_async(session)


@asynccontextmanager
async def http_session(url: str, key: str | None = None) -> AsyncIterator[ClientSession]:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http, \
            streamable_http_client(f"{url}/mcp", http_client=http) as (read, write), \
            ClientSession(read, write) as client:
        await client.initialize()
        yield client


def run_http(url: str, use: Session, key: str | None = None) -> Any:
    async def session() -> Any:
        async with http_session(url, key) as client:
            return await use(client)

    return run_async(session)


async def cited_search(client: ClientSession) -> dict[str, Any]:
    """list_tools, search, and get_document on the first passage's document."""
    tools = {t.name: t for t in (await client.list_tools()).tools}
    found = await client.call_tool("search", {"question": QUESTION})
    first = (found.structured_content or {})["passages"][0]
    document = await client.call_tool(
        "get_document", {"document_id": first["citation"]["document_id"]})
    return {"tools": tools, "found": found, "first": first, "document": document}


def assert_cited(out: dict[str, Any]) -> None:
    tools = out["tools"]
    assert {"search", "get_document"} <= set(tools)
    for name in ("search", "get_document"):
        assert tools[name].input_schema["type"] == "object"
        assert tools[name].output_schema["type"] == "object"
        assert "start" in tools[name].description and tools[name].description.count(" ") > 30
    assert tools["search"].input_schema["required"] == ["question"]
    assert not out["found"].is_error and not out["document"].is_error
    first, citation = out["first"], out["first"]["citation"]
    assert "Medinsky" in first["text"]
    text = out["document"].structured_content["text"]
    assert text[citation["start"]:citation["end"]] == first["text"]
    # The text rendering quotes the highlight with the citation it comes from.
    rendering = out["found"].content[0].text
    assert f'"{first["highlight"]["text"]}"' in rendering
    assert f'{citation["document_id"]} chars {citation["start"]}-{citation["end"]}' in rendering


def error_of(result: CallToolResult) -> str:
    assert result.is_error, result
    return str(result.content[0].text)


def test_stdio_search_returns_passages_whose_citations_slice_get_document(index: Path) -> None:
    async def use(client: ClientSession) -> dict[str, Any]:
        out = await cited_search(client)
        document_id = out["first"]["citation"]["document_id"]
        resource = await client.read_resource(f"qa://documents/{quote(document_id)}")
        out["resource"] = resource.contents[0].text
        out["zero_k"] = await client.call_tool("search", {"question": QUESTION, "k": 0})
        return out

    out = run_stdio(index, use)
    assert_cited(out)
    assert out["resource"] == out["document"].structured_content["text"]
    assert "greater than or equal to 1" in error_of(out["zero_k"])


def test_http_mcp_on_qa_serve_cites_like_stdio(served: str) -> None:
    assert_cited(run_http(served, cited_search))


def test_http_search_answers_as_ask_does(served: str) -> None:
    """One retrieval path: the same passages, citations, confidences and verdict as /ask."""
    body = {"question": QUESTION, "k": 3, "filter": {"date": {"$gte": "2025-01-01"}}}

    async def use(client: ClientSession) -> dict[str, Any]:
        return (await client.call_tool("search", body)).structured_content or {}

    found = run_http(served, use)
    asked = httpx.post(f"{served}/ask", json=body, timeout=30).json()
    assert found["answer"]["found"] == asked["answer"]["found"]
    assert found["answer"]["confidence"] == pytest.approx(asked["answer"]["confidence"], abs=1e-3)
    assert len(found["passages"]) == len(asked["passages"]) > 0
    for mine, theirs in zip(found["passages"], asked["passages"], strict=True):
        assert mine["text"] == theirs["text"]
        assert mine["highlight"] == theirs["highlight"]
        assert mine["confidence"] == pytest.approx(theirs["confidence"], abs=1e-3)
        assert mine["citation"] == {name: theirs["citation"][name] for name in mine["citation"]}


def test_http_bad_arguments_are_tool_errors_not_crashes(served: str) -> None:
    async def use(client: ClientSession) -> list[str]:
        calls = [("search", {"question": QUESTION, "k": 0}),
                 ("search", {"question": ""}),
                 ("search", {"question": "   "}),
                 ("search", {"question": "x" * 5000}),
                 ("search", {"question": QUESTION, "filter": {"colour": "red"}}),
                 ("search", {"question": QUESTION, "collection": "nowhere"}),
                 ("get_document", {"document_id": "no-such-document"}),
                 ("get_document", {"document_id": "seeds/2025-05-15-istanbul-peace-talks.txt",
                                   "start": 10, "end": 5})]
        errors = [error_of(await client.call_tool(name, args)) for name, args in calls]
        # The server still answers after all of them.
        still = await client.call_tool("search", {"question": QUESTION, "k": 1})
        assert not still.is_error
        return errors

    errors = run_http(served, use)
    for error, expected in zip(errors, [
        "greater than or equal to 1", "at least 1 character", "must not be empty",
        "at most 1000 characters", 'unknown field "colour"',
        "'nowhere' is private",  # as /ask: no key learns which collections exist
        "no document with id 'no-such-document'", "0 <= start <= end"], strict=True):
        assert expected in error


def test_http_search_key_sees_only_its_collection_through_its_filter(
        served: str, secrets: dict[str, str]) -> None:
    async def use(client: ClientSession) -> dict[str, Any]:
        return {
            "own": await client.call_tool("search", {"question": QUESTION}),
            "other": await client.call_tool("search", {"question": "lighthouse",
                                                       "collection": "private"}),
            "document": await client.call_tool(
                "get_document", {"document_id": "seeds/2025-05-15-istanbul-peace-talks.txt"}),
            "listed": await client.call_tool("list_collections", {}),
        }

    out = run_http(served, use, key=secrets["filtered"])
    assert out["own"].structured_content["passages"] == []  # its fixed filter allows none
    assert "not 'private'" in error_of(out["other"])
    assert "no document with id" in error_of(out["document"])
    assert out["listed"].structured_content == {
        "collections": [{"name": "default", "public": True, "documents": 0}]}


def test_http_private_collection_needs_its_key(served: str, secrets: dict[str, str]) -> None:
    async def ask_private(client: ClientSession) -> CallToolResult:
        return await client.call_tool("search", {"question": "who was paid in salt?",
                                                 "collection": "private"})

    assert "needs a search key" in error_of(run_http(served, ask_private))
    found = run_http(served, ask_private, key=secrets["private"]).structured_content
    assert found["passages"][0]["text"] == LEDGER


def test_http_unknown_key_is_refused_before_mcp(served: str) -> None:
    response = httpx.post(f"{served}/mcp", json={}, timeout=30,
                          headers={"Authorization": "Bearer qa_nope_nope"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_http_questions_count_against_the_ask_rate_limit(index: Path, embedder: Embedder
                                                         ) -> None:
    settings = Settings(index_dir=index, ask_rate_limit="2/minute")

    async def use(client: ClientSession) -> list[CallToolResult]:
        return [await client.call_tool("search", {"question": QUESTION, "k": 1})
                for _ in range(3)]

    with LiveServer(settings, embedder) as server:
        first, second, third = run_http(server.url, use)
    assert not first.is_error and not second.is_error
    assert "QA_ASK_RATE_LIMIT" in error_of(third)


def test_http_refuses_a_foreign_host_on_a_loopback_server(served: str) -> None:
    """DNS rebinding: a page on another name that resolves to 127.0.0.1 cannot reach /mcp."""
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"}}}

    def post(**extra: str) -> httpx.Response:
        return httpx.post(f"{served}/mcp", json=initialize, timeout=30,
                          headers={"Accept": "application/json, text/event-stream", **extra})

    assert post().status_code == 200
    assert post(Host="evil.example").status_code == 421
    assert post(Origin="http://evil.example").status_code == 403
