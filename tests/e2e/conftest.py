"""Browser fixtures: Debian's Chromium driven by Playwright, a host site on another origin, and
the live API over the seed corpus plus a document full of markup."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import SEEDS, LiveServer
from playwright.sync_api import Browser, Page, sync_playwright

from qa.collection import Collection
from qa.embedding import Embedder
from qa.indexing import index_paths
from qa.settings import Settings
from qa.types import Document

# Debian's Chromium, never `playwright install`; .ci/run installs it on a fresh machine.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]

# A document whose text and title are markup that would run if anything parsed it as HTML.
MARKUP_DOCUMENT = Document(
    id="notes/keeper log #1.md",
    title='Keeper\'s log <img src=x onerror="window.__qaPwned=3">',
    text=(
        'Visitors wrote <img src=x onerror="window.__qaPwned=1"> on the lighthouse door. '
        "The keeper answered with <script>window.__qaPwned=2</script> in the log. "
        "The shutters are painted blue every spring."
    ),
    date="2024-06-01",
    url="javascript:window.__qaPwned=4",
)
MARKUP_QUESTION = "What did visitors write on the lighthouse door?"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class HostSite:
    """Static pages on their own 127.0.0.1 port: another origin than the API's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        handler = partial(_QuietHandler, directory=str(root))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def page(self, name: str, body: str, head: str = "") -> str:
        """Write a page and return its URL."""
        (self.root / name).write_text(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>host</title>{head}</head><body>{body}</body></html>",
            encoding="utf-8",
        )
        return f"{self.origin}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Phrased as the article says it ("headed by"): the confidence model leans on shared wording,
# and "who led ..." scores under the threshold (see README, Knowing when there is no answer).
QUESTION = "who heads the Russian delegation?"
# Host-page CSS that would wreck the widget if it leaked into the shadow root.
HOSTILE_CSS = ("<style>button{display:none} p{color:red;font-size:40px} "
               "ol,li{display:inline} input{width:5px}</style>")


def embed(host_site: HostSite, api: str, name: str, **data: str) -> str:
    """A host page with the one-tag embed; extra data-* attributes from keywords."""
    extra = "".join(f' data-{key}="{value}"' for key, value in data.items())
    return host_site.page(
        name,
        f"<main><h1>A site about something else</h1><p>Some host content.</p></main>"
        f'<script src="{api}/widget.js" data-endpoint="{api}"{extra} defer></script>',
        head=HOSTILE_CSS,
    )


def inline(host_site: HostSite, api: str, name: str, attributes: str) -> str:
    """A host page with <qa-chat> placed inline."""
    return host_site.page(
        name,
        f'<script src="{api}/widget.js" defer></script>'
        f"<main><qa-chat {attributes}></qa-chat></main>",
    )


def ask(page: Page, question: str) -> None:
    chat_input = page.locator("qa-chat input[part=input]")
    chat_input.fill(question)
    chat_input.press("Enter")


def shadow_active_part(page: Page) -> str | None:
    return page.evaluate(
        "() => { const el = document.querySelector('qa-chat');"
        " return document.activeElement === el && el.shadowRoot.activeElement"
        " ? el.shadowRoot.activeElement.getAttribute('part') : null; }"
    )


@pytest.fixture(scope="session")
def host_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSite]:
    site = HostSite(tmp_path_factory.mktemp("host"))
    yield site
    site.close()


@pytest.fixture(scope="session")
def api(host_site: HostSite, embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[str]:
    """The live API over the seeds and MARKUP_DOCUMENT, answering the host site's origin; one for
    the whole session, since no browser test writes to it."""
    root = tmp_path_factory.mktemp("api")
    settings = Settings(index_dir=root / "index", cors_origins=[host_site.origin],
                        max_question_chars=300)
    seeds = root / "seeds"
    shutil.copytree(SEEDS, seeds, ignore=shutil.ignore_patterns("*.jsonl"))
    collection = Collection.open(settings, embedder, create=True)
    try:
        assert not index_paths(collection, [seeds], progress=False).errors
        collection.add([MARKUP_DOCUMENT])
    finally:
        collection.close()
    with LiveServer(settings, embedder) as server:
        yield server.url


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers: a server too slow to wait for."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh browser context; uncaught page errors fail the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
