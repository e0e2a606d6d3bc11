"""The widget scoped by `collection`, `key` and `filter`, in real Chromium on another origin,
against a live server holding the seed article in `default` and a private collection `a`."""

from __future__ import annotations

import json
import shutil
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from html import escape

import httpx
import pytest
from conftest import SEEDS, LiveServer
from playwright.sync_api import ConsoleMessage, Page, expect

from qa.collection import Collection
from qa.embedding import Embedder
from qa.indexing import index_paths
from qa.keys import KeyStore
from qa.settings import Settings

from .conftest import QUESTION, HostSite, ask, embed, inline

pytestmark = pytest.mark.slow

ADMIN_KEY = "e2e-admin-key"
# Collection `a`: a few documents of its own, none about the seed article's peace talks.
A_DOCUMENTS = [
    {"id": "a/orchard.md", "title": "Halden orchard", "date": "2024-09-01",
     "metadata": {"topic": "orchard"},
     "text": "The Halden orchard grows forty varieties of apple. The harvest begins in the "
             "second week of September, when the Cox Orange Pippin ripens first. Visitors may "
             "pick their own apples on Saturdays."},
    {"id": "a/ferry.md", "title": "Lindholm ferry", "metadata": {"topic": "ferry"},
     "text": "The Lindholm ferry crosses the fjord every forty minutes from six in the morning "
             "until midnight. A return ticket costs twelve euros, and bicycles travel free."},
    {"id": "a/library.md", "title": "Vester library", "metadata": {"topic": "library"},
     "text": "The Vester library lends books for four weeks. Its reading room opens at nine "
             "and holds the town's newspaper archive since 1870."},
]
A_TITLES = {doc["title"] for doc in A_DOCUMENTS}
ORCHARD_QUESTION = "When does the harvest begin at the Halden orchard?"


@dataclass(frozen=True)
class Server:
    url: str
    secret: str  # a search key for `a`, bound to the host site's origin
    stranger: str  # a search key for `a`, bound to another origin


@pytest.fixture(scope="module")
def server(host_site: HostSite, embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("collections") / "index"
    settings = Settings(index_dir=root, cors_origins=[host_site.origin], api_keys=[ADMIN_KEY])
    seeds = root.parent / "seeds"
    shutil.copytree(SEEDS, seeds, ignore=shutil.ignore_patterns("*.jsonl"))
    collection = Collection.open(settings, embedder, create=True)  # the root: `default`
    try:
        assert not index_paths(collection, [seeds], progress=False).errors
    finally:
        collection.close()
    with LiveServer(settings, embedder) as live:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=live.url, headers=admin, timeout=60) as client:
            created = client.post("/collections", json={"name": "a", "public": False})
            assert created.status_code == 201, created.text
            added = client.post("/collections/a/documents", json=A_DOCUMENTS)
            assert added.status_code == 201, added.text
        keys = KeyStore(root / "catalog.sqlite3")
        try:
            _, secret = keys.create("search", ["a"], name="host site",
                                    origins=[host_site.origin])
            _, stranger = keys.create("search", ["a"], origins=["https://elsewhere.example"])
        finally:
            keys.close()
        yield Server(live.url, secret, stranger)


def wait_for_answer(page: Page, turn: int = 0) -> None:
    """Until the turn's answer shows: found, not found (passages folded away) or an error."""
    expect(page.locator("qa-chat [part=turn]").nth(turn).locator(
        "[part~=answer-card], [part=no-answer], [part=error]").first).to_be_visible(
        timeout=30_000)


def passages_of(page: Page) -> list[tuple[str, str]]:
    """(title, citation href) of every passage the widget shows."""
    return page.evaluate(
        "() => [...document.querySelector('qa-chat').shadowRoot"
        ".querySelectorAll('[part~=passage]')].map(p => [p.querySelector('strong').textContent,"
        " p.querySelector('a[part=citation]').href])"
    )


def test_widget_with_collection_and_key_answers_from_that_collection_only(
    page: Page, host_site: HostSite, server: Server
) -> None:
    page.goto(embed(host_site, server.url, "collection.html", open="", collection="a",
                    key=server.secret))
    ask(page, ORCHARD_QUESTION)
    answer = page.locator("qa-chat [part~=answer-card]")
    expect(answer).to_be_visible(timeout=30_000)
    expect(answer.locator("[part=meta] strong")).to_have_text("Halden orchard")
    expect(answer.locator("mark[part=highlight]")).to_contain_text("second week of September")
    # "View source" opens the private document in a new tab, which cannot send the header.
    with page.context.expect_page() as opened:
        answer.locator("a[part=citation]").click()
    source = opened.value
    source.wait_for_load_state()
    expect(source.locator("h1")).to_have_text("Halden orchard")
    expect(source.locator("mark#cited")).to_contain_text("second week of September")
    source.close()

    # The seed article's own question, asked of `a`: nothing from `default` comes back.
    ask(page, QUESTION)
    wait_for_answer(page, 1)
    shown = passages_of(page)
    assert shown, "the widget showed no passage"
    for title, href in shown:
        assert title in A_TITLES, f"{title!r} is not a document of collection a"
        assert href.startswith(f"{server.url}/collections/a/source/a/"), href
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(href).query)
        assert set(query) >= {"start", "end"}


def test_widget_without_the_key_shows_the_401_detail(
    page: Page, host_site: HostSite, server: Server
) -> None:
    refused = httpx.post(f"{server.url}/collections/a/ask", json={"question": ORCHARD_QUESTION})
    assert refused.status_code == 401
    detail = refused.json()["detail"]
    page.goto(inline(host_site, server.url, "nokey.html",
                     f'endpoint="{server.url}" data-collection="a" open'))
    ask(page, ORCHARD_QUESTION)
    error = page.locator("qa-chat [part=error]")
    expect(error).to_contain_text(f"(401): {detail}", timeout=30_000)
    assert page.locator("qa-chat [part~=passage]").count() == 0


def test_key_bound_to_another_origin_shows_the_403_detail(
    page: Page, host_site: HostSite, server: Server
) -> None:
    page.goto(inline(host_site, server.url, "stranger.html",
                     f'endpoint="{server.url}" collection="a" key="{server.stranger}" open'))
    ask(page, ORCHARD_QUESTION)
    error = page.locator("qa-chat [part=error]")
    expect(error).to_contain_text("(403): ", timeout=30_000)
    expect(error).to_contain_text(host_site.origin)


def test_filter_attribute_narrows_the_passages(
    page: Page, host_site: HostSite, server: Server
) -> None:
    only_ferry = escape(json.dumps({"metadata.topic": "ferry"}), quote=True)
    page.goto(inline(host_site, server.url, "filter.html",
                     f'endpoint="{server.url}" collection="a" key="{server.secret}" '
                     f'filter="{only_ferry}" open'))
    ask(page, ORCHARD_QUESTION)  # the orchard would answer it: the filter keeps only the ferry
    wait_for_answer(page)
    assert {title for title, _ in passages_of(page)} == {"Lindholm ferry"}


def test_invalid_filter_is_ignored_with_a_console_warning(
    page: Page, host_site: HostSite, server: Server
) -> None:
    warnings: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        if message.type == "warning":
            warnings.append(message.text)

    page.on("console", keep)
    page.goto(inline(host_site, server.url, "badfilter.html",
                     f'endpoint="{server.url}" data-collection="a" data-key="{server.secret}" '
                     'data-filter="[not json" open'))
    ask(page, ORCHARD_QUESTION)
    answer = page.locator("qa-chat [part~=answer-card]")
    expect(answer.locator("[part=meta] strong")).to_have_text("Halden orchard", timeout=30_000)
    assert any("filter attribute" in text for text in warnings), warnings


def test_collection_default_means_todays_routes(
    page: Page, host_site: HostSite, server: Server
) -> None:
    page.goto(embed(host_site, server.url, "default.html", open="", collection="default"))
    ask(page, QUESTION)
    first = page.locator("qa-chat [part~=passage]").first
    expect(first.locator("[part=meta]")).to_contain_text("Istanbul peace talks", timeout=30_000)
    href = first.locator("a[part=citation]").get_attribute("href")
    assert href and href.startswith(f"{server.url}/source/")
