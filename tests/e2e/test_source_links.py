"""'View source' opens the live page at the sentence: a document with an http(s) url links to
it with a `#:~:text=` fragment, in real Chromium; `source-links="local"` keeps /source/{id}."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import LiveServer
from playwright.sync_api import Page, expect

from qa.collection import Collection
from qa.embedding import Embedder
from qa.loaders import load_file
from qa.settings import Settings

from .conftest import HostSite, ask, inline

pytestmark = pytest.mark.slow

# The log sentence is long, so it is linked by its first and last words, and these hold every
# character the fragment syntax reserves ("-", ",", "&") and one outside the unreserved set.
# "The bell rang." is short and written twice, so it needs the words around it to be found.
ARTICLE = """
<nav><a href="/">Home</a> <a href="/about.html">About</a></nav>
<main><article><h1>The Karsk lighthouse</h1>
<p>The Karsk lighthouse stands on a granite spur north of the harbour. Its lamp was first
lit in 1871 and has burned every night since.</p>
<div style="height:3000px"></div>
<p>Forty-two storms &amp; three shipwrecks fill the log, each with the hour it began, in the
keeper's own hand, unbroken.</p>
<p>Fog came in from the west at dusk. The bell rang. The fishing boats turned back to port.</p>
<p>At midnight the wind dropped and the fog lifted. The bell rang. The harbour master lit the
quay lamps again.</p>
</article></main>
"""
LOG_QUESTION = "How many storms and shipwrecks fill the keeper's log?"
BELL_QUESTION = "Which bell rang?"


@pytest.fixture(scope="module")
def site(host_site: HostSite, embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[str, str]]:
    """(the article's URL on the host site, the API over it): the page is indexed from the very
    HTML the host serves, its canonical link giving the document's `url`."""
    url = f"{host_site.origin}/karsk/lighthouse.html"
    (host_site.root / "karsk").mkdir(exist_ok=True)
    page_file = host_site.root / "karsk" / "lighthouse.html"
    host_site.page("karsk/lighthouse.html", ARTICLE,
                   head=f'<link rel="canonical" href="{url}">')
    document = load_file(page_file, doc_id="karsk/lighthouse.html")
    assert document.url == url
    settings = Settings(index_dir=tmp_path_factory.mktemp("links") / "index",
                        cors_origins=[host_site.origin], ask_rate_limit=None)
    collection = Collection.open(settings, embedder, create=True)
    try:
        collection.add([document])
    finally:
        collection.close()
    with LiveServer(settings, embedder) as server:
        yield url, server.url


def first_citation(page: Page, question: str) -> tuple[str, dict[str, Any]]:
    """Ask in the widget: the first passage's "View source" href and the passage as sent."""
    page.evaluate("() => document.addEventListener('qa-chat:answer',"
                  " (e) => { window.__qaAnswer = e.detail; })")
    ask(page, question)
    link = page.locator("qa-chat a[part=citation]").first
    expect(link).to_be_attached(timeout=30_000)
    href = link.get_attribute("href")
    assert href
    return href, page.evaluate("() => window.__qaAnswer.passages[0]")


def directive(href: str, url: str) -> dict[str, str]:
    """The text directive of `href` (which must be `url#:~:text=...`), decoded by its parts."""
    assert href.startswith(f"{url}#:~:text="), href
    raw = href[len(f"{url}#:~:text="):]
    parts = raw.split(",")
    for part in parts:  # "-" only as the prefix/suffix marks; all else unreserved or escaped
        assert re.fullmatch(r"(?:[A-Za-z0-9._~]|%[0-9A-F]{2})+", part.strip("-")), raw
    found: dict[str, str] = {}
    if parts[0].endswith("-"):
        found["prefix"] = urllib.parse.unquote(parts.pop(0)[:-1])
    if parts[-1].startswith("-"):
        found["suffix"] = urllib.parse.unquote(parts.pop()[1:])
    assert 1 <= len(parts) <= 2, raw
    found["start"] = urllib.parse.unquote(parts[0])
    if len(parts) == 2:
        found["end"] = urllib.parse.unquote(parts[1])
    return found


def sentence_of(passage: dict[str, Any]) -> str:
    """The passage's highlighted sentence (server offsets count code points, as Python does)."""
    start = passage["citation"]["start"]
    return passage["text"][passage["highlight"]["start"] - start:
                           passage["highlight"]["end"] - start]


def flat(text: str) -> str:
    return " ".join(text.split())


def test_view_source_opens_the_page_at_the_highlighted_sentence(
        page: Page, host_site: HostSite, site: tuple[str, str]) -> None:
    url, api = site
    page.goto(inline(host_site, api, "links-page.html", f'endpoint="{api}" open'))
    href, passage = first_citation(page, LOG_QUESTION)
    assert passage["citation"]["url"] == url
    parts = directive(href, url)
    sentence = flat(sentence_of(passage))
    assert sentence.startswith("Forty-two storms & three")  # the one the question asks for
    # Long: its first and last words, with "-", "&", "'" and "," in them, escaped.
    assert parts == {"start": "Forty-two storms & three", "end": "keeper's own hand, unbroken."}
    assert sentence.startswith(parts["start"]) and sentence.endswith(parts["end"])
    # The page the link opens (a new tab, as a reader's click) holds the text, in order.
    link = page.locator("qa-chat a[part=citation]").first
    with page.context.expect_page() as opened:
        link.click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url.split("#")[0] == url
    # Chromium found the fragment's text: it scrolled past the 3000px spacer to the sentence.
    tab.wait_for_function("() => window.scrollY > 2000", timeout=5_000)
    shown = flat(tab.evaluate("() => document.body.innerText"))
    begin = shown.find(parts["start"])
    assert begin >= 0 and shown.find(parts["end"], begin) > begin, (parts, shown)
    tab.close()


def test_a_sentence_that_recurs_is_linked_with_the_words_around_it(
        page: Page, host_site: HostSite, site: tuple[str, str]) -> None:
    url, api = site
    page.goto(inline(host_site, api, "links-bell.html", f'endpoint="{api}" open'))
    href, passage = first_citation(page, BELL_QUESTION)
    parts = directive(href, url)
    assert flat(sentence_of(passage)) == "The bell rang." == parts["start"]
    shown = flat(host_site_text(page, url))
    assert shown.count("The bell rang.") == 2
    # prefix + sentence + suffix occurs once on the page: the fragment picks the right one.
    together = f"{parts['prefix']} {parts['start']} {parts['suffix']}"
    assert shown.count(together) == 1, (together, shown)
    assert parts["prefix"].endswith("at dusk.") and parts["suffix"].startswith("The fishing")


def host_site_text(page: Page, url: str) -> str:
    """The served page's text as Chromium renders it."""
    tab = page.context.new_page()
    try:
        tab.goto(url)
        return str(tab.evaluate("() => document.body.innerText"))
    finally:
        tab.close()


def test_local_source_links_keep_the_api_source_page(
        page: Page, host_site: HostSite, site: tuple[str, str]) -> None:
    url, api = site
    page.goto(inline(host_site, api, "links-local.html",
                     f'endpoint="{api}" source-links="local" open'))
    href, passage = first_citation(page, LOG_QUESTION)
    assert passage["citation"]["url"] == url  # a url there is, and it is not used
    assert href.startswith(f"{api}/source/karsk/lighthouse.html?"), href
    assert "#" not in href
