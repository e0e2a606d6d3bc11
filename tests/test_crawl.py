"""`qa crawl` against a site the test serves on 127.0.0.1: ~30 HTML pages and a PDF, a nav bar,
a sitemap index over a gzipped sitemap, a robots.txt that forbids /private/, a redirect and a
page that answers 500. The server counts every request and answers 304 to matching validators.

The tests of the shared site run in file order: first crawl, unchanged recrawl, then the site
changes and a pruning crawl (one index, so the 30-page embedding is paid once).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from fpdf import FPDF

from qa import crawl
from qa.cli import cli
from qa.collection import Collection, drift_in
from qa.crawl import CrawlOptions, crawl_site, page_links, parse_duration, sitemap_locs
from qa.embedding import Embedder
from qa.errors import InvalidInput
from qa.retrieval import retrieve
from qa.settings import Settings
from tests.conftest import ROOT, LiveServer

PAGES = 30
LAST_MODIFIED = "Mon, 01 Dec 2025 10:00:00 GMT"
COLOURS = ["amber", "cobalt", "crimson", "emerald", "indigo", "ochre", "saffron", "teal",
           "umber", "violet"]


def page_html(n: int, *, extra: str = "", canonical: str | None = None) -> bytes:
    """A page with a nav bar and three paragraphs of facts found on no other page."""
    nav = ('<nav><a href="/">Home</a> <a href="/docs/page-01.html">Docs</a> '
           '<a href="/guide.pdf">Guide</a> <a href="/private/secret.html">Staff</a> '
           '<a href="/old-page.html">Old</a> <a href="/broken.html">Status</a> '
           f'<a href="/docs/page-{(n - 2) % PAGES + 1:02d}.html">Previous</a> '
           f'<a href="/docs/page-{n % PAGES + 1:02d}.html">Next</a></nav>')
    head = f'<link rel="canonical" href="{canonical}">' if canonical else ""
    colour = COLOURS[n % len(COLOURS)]
    body = (f"<h1>Lighthouse number {n}</h1>"
            f"<p>The lighthouse on island {n} was painted {colour} in the year {1800 + n * 3}. "
            f"Its keeper, a sailor called Keeper{n}son, lit the lamp every evening for "
            f"{n + 10} years without missing a single night.</p>"
            f"<p>Visitors to island {n} arrive by ferry from the harbour of Port{n}ville, a "
            f"crossing of {n * 7} minutes when the sea is calm. {extra}</p>"
            f"<p>The tower is {20 + n} metres tall and its light reaches {n + 5} nautical "
            "miles on a clear night, guiding fishing boats past the reef.</p>")
    return (f"<html><head><title>Lighthouse {n}</title>{head}</head><body>{nav}"
            f"<main><article>{body}</article></main></body></html>").encode()


def guide_pdf() -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, "The keepers' guide explains that every lamp wick must be trimmed "
                   "at dawn with brass scissors kept in the oil room. The guide was written "
                   "by the harbour master Ottoline Brask in the winter of 1871.")
    return bytes(pdf.output())


@dataclass
class Site:
    """The files, the rules and the request log of the test's web server."""

    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # path → (type, body)
    redirects: dict[str, str] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    log: list[tuple[str, int]] = field(default_factory=list)  # (path, status)
    slow: float = 0.0  # seconds each page takes
    url: str = ""

    def sitemap_paths(self) -> list[str]:
        return [p for p in self.files if p.startswith("/docs/") and p not in self.unlisted]

    unlisted: set[str] = field(default_factory=set)

    def write_sitemaps(self) -> None:
        entries = "".join(f"<url><loc>{self.url}{p}</loc></url>" for p in self.sitemap_paths())
        urlset = ('<?xml version="1.0" encoding="UTF-8"?><urlset xmlns='
                  f'"http://www.sitemaps.org/schemas/sitemap/0.9">{entries}'
                  f"<url><loc>{self.url}/guide.pdf</loc></url></urlset>")
        self.files["/sitemap-pages.xml.gz"] = ("application/gzip",
                                               gzip.compress(urlset.encode()))
        self.files["/sitemap.xml"] = ("application/xml", (
            '<?xml version="1.0" encoding="UTF-8"?><sitemapindex xmlns='
            '"http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap>'
            f"<loc>{self.url}/sitemap-pages.xml.gz</loc></sitemap></sitemapindex>").encode())

    def page_requests(self) -> list[tuple[str, int]]:
        """Requests for pages (not robots.txt or sitemaps)."""
        return [(p, s) for p, s in self.log
                if not p.startswith(("/robots.txt", "/sitemap"))]


def make_handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            path = self.path.split("?")[0]
            if site.slow and not path.startswith(("/robots", "/sitemap")):
                time.sleep(site.slow)
            if path in site.redirects:
                self.answer(path, 301, headers={"Location": site.redirects[path]})
            elif path in site.failing:
                self.answer(path, 500, b"oops")
            elif path not in site.files:
                self.answer(path, 404, b"not found")
            else:
                kind, body = site.files[path]
                etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
                if (self.headers.get("If-None-Match") == etag
                        or self.headers.get("If-Modified-Since") == LAST_MODIFIED
                        and self.headers.get("If-None-Match") is None):
                    self.answer(path, 304, headers={"ETag": etag})
                else:
                    self.answer(path, 200, body, {"Content-Type": kind, "ETag": etag,
                                                  "Last-Modified": LAST_MODIFIED})

        def answer(self, path: str, status: int, body: bytes = b"",
                   headers: dict[str, str] | None = None) -> None:
            site.log.append((path, status))
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if status != 304:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != 304:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    site = Site()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(site))
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    for n in range(1, PAGES + 1):
        site.files[f"/docs/page-{n:02d}.html"] = ("text/html; charset=utf-8", page_html(n))
    # The home page links to page 5 under a second URL; page 5 names its canonical URL.
    site.files["/"] = ("text/html", b"<html><head><title>Lighthouses</title></head><body>"
                       b"<nav><a href='/docs/page-01.html'>Docs</a> <a href='/docs/page-05."
                       b"html?ref=home'>Featured</a> <a href='/logo.png'>Logo</a> "
                       b"<a href='/away'>Away</a></nav>"
                       b"<main><p>Welcome to the registry of the lighthouses of the "
                       b"northern islands, their towers and keepers."
                       b"</p></main></body></html>")
    site.files["/docs/page-05.html"] = ("text/html", page_html(
        5, canonical=f"{site.url}/docs/page-05.html"))
    site.files["/guide.pdf"] = ("application/pdf", guide_pdf())
    site.files["/private/secret.html"] = ("text/html", page_html(99))
    site.files["/logo.png"] = ("image/png", b"\x89PNG not really")
    site.files["/robots.txt"] = ("text/plain", (
        f"User-agent: *\nDisallow: /private/\nSitemap: {site.url}/sitemap.xml\n").encode())
    site.redirects["/old-page.html"] = "/docs/page-03.html"
    site.redirects["/away"] = "http://127.0.0.1:1/docs/page-01.html"  # another origin
    site.failing.add("/broken.html")
    site.write_sitemaps()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site
    server.shutdown()


def allowed_ids(site: Site) -> set[str]:
    """Every page a crawl should index: all but /private/, the image and the sitemaps."""
    return {f"{site.url}{p}" for p, (kind, _) in site.files.items()
            if kind.startswith(("text/html", "application/pdf"))
            and not p.startswith("/private/")}


@pytest.fixture(scope="module")
def crawled(site: Site, embedder: Embedder, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[Collection, list[object]]]:
    """The site crawled once into a fresh index: (collection, [first summary])."""
    settings = Settings(index_dir=tmp_path_factory.mktemp("crawl") / "index")
    collection = Collection.open(settings, embedder, create=True)
    summary = crawl_site(collection, CrawlOptions(seeds=(site.url + "/",), delay=0),
                         progress=False)
    yield collection, [summary]
    collection.close()


def stored_ids(collection: Collection) -> set[str]:
    rows, _ = collection.list_documents(0, 1000)
    return {r.id for r in rows}


def test_first_crawl_indexes_every_allowed_page_and_nothing_robots_forbids(
        site: Site, crawled: tuple[Collection, list[object]]) -> None:
    collection, (summary, *_) = crawled
    print(f"first crawl: {summary.line()}")  # type: ignore[attr-defined]  # README's numbers
    ids = stored_ids(collection)
    assert ids == allowed_ids(site)
    assert not any("/private/" in i for i in ids)
    assert not any(p.startswith("/private/") for p, _ in site.log)  # never even asked for
    assert summary.added == len(allowed_ids(site))  # type: ignore[attr-defined]
    failed = dict(summary.errors)  # type: ignore[attr-defined]
    assert set(failed) == {f"{site.url}/broken.html", f"{site.url}/away"}
    assert "HTTP 500" in failed[f"{site.url}/broken.html"]
    assert failed[f"{site.url}/away"].startswith("redirects off the site")  # not followed
    # The PNG (not HTML/PDF/DOCX) and page 5's second URL (its canonical one is indexed).
    assert summary.skipped == 2  # type: ignore[attr-defined]
    assert ("/old-page.html", 301) in site.log and ("/docs/page-03.html", 200) in site.log


def test_a_question_finds_the_page_with_its_url(site: Site,
                                                crawled: tuple[Collection, list[object]]) -> None:
    collection, _ = crawled
    passages = retrieve(collection, "Who wrote the keepers' guide about trimming wicks?", 3)
    assert passages[0].citation.url == f"{site.url}/guide.pdf"
    passages = retrieve(collection, "How tall is the lighthouse on island 17?", 3)
    top = passages[0].citation
    assert top.document_id == top.url == f"{site.url}/docs/page-17.html"
    assert top.title == "Lighthouse number 17"


def test_canonical_url_is_the_id_of_a_page_reached_by_another_url(
        site: Site, crawled: tuple[Collection, list[object]]) -> None:
    collection, _ = crawled
    assert ("/docs/page-05.html", 200) in site.log
    assert f"{site.url}/docs/page-05.html" in stored_ids(collection)
    assert not any("ref=home" in i for i in stored_ids(collection))


def test_unchanged_site_costs_one_304_a_request_and_no_embedding(
        site: Site, crawled: tuple[Collection, list[object]], embedder: Embedder) -> None:
    collection, _ = crawled
    site.log.clear()
    calls = embedder.calls
    summary = crawl_site(collection, CrawlOptions(seeds=(site.url + "/",), delay=0),
                         progress=False)
    print(f"unchanged crawl: {summary.line()}")
    assert embedder.calls == calls
    assert summary.unchanged == len(allowed_ids(site))
    assert summary.added == summary.replaced == 0
    # Every request the server saw, robots.txt and both sitemaps included, was answered 304,
    # once each; but the failing page's, retried (only the nav, unread, links it).
    assert [(p, s) for p, s in site.log if s != 304] == [("/broken.html", 500)]
    assert sorted(p for p, s in site.log if s == 304) == sorted(
        {i.removeprefix(site.url) for i in allowed_ids(site)}
        | {"/robots.txt", "/sitemap.xml", "/sitemap-pages.xml.gz"})
    assert summary.requests == len(site.log)
    assert [u for u, _ in summary.errors] == [f"{site.url}/broken.html"]


def test_prune_deletes_pages_gone_or_left_the_sitemap_and_replaces_a_changed_one(
        site: Site, crawled: tuple[Collection, list[object]]) -> None:
    collection, _ = crawled
    before = stored_ids(collection)
    site.files["/docs/page-07.html"] = ("text/html", page_html(
        7, extra="In 2024 the lamp was replaced by a solar beacon made in Trondheim."))
    del site.files["/docs/page-08.html"]  # now 404
    site.unlisted.add("/docs/page-09.html")  # still served, no longer in the sitemap
    site.write_sitemaps()
    summary = crawl_site(collection, CrawlOptions(seeds=(site.url + "/",), delay=0,
                                                  prune=True), progress=False)
    print(f"pruning crawl: {summary.line()}")
    assert (summary.replaced, summary.pruned) == (1, 2)
    assert summary.unchanged == len(before) - 3
    assert summary.added == 0
    assert stored_ids(collection) == before - {f"{site.url}/docs/page-08.html",
                                               f"{site.url}/docs/page-09.html"}
    top = retrieve(collection, "What replaced the lamp of lighthouse 7 in 2024?", 1)[0]
    assert top.citation.url == f"{site.url}/docs/page-07.html"
    assert not drift_in(collection.check())


def test_a_page_that_left_the_sitemap_is_pruned_though_the_sitemap_answers_304(
        site: Site, crawled: tuple[Collection, list[object]]) -> None:
    collection, _ = crawled
    site.unlisted.add("/docs/page-10.html")
    site.write_sitemaps()
    options = CrawlOptions(seeds=(site.url + "/",), delay=0)
    crawl_site(collection, options, progress=False)  # reads the new sitemap; prunes nothing
    assert f"{site.url}/docs/page-10.html" in stored_ids(collection)
    site.log.clear()
    summary = crawl_site(collection, CrawlOptions.from_dict(options.to_dict() | {"prune": True}),
                         progress=False)
    # The stored copy of the unchanged sitemap counts as read whole: the page is judged gone.
    assert {("/sitemap.xml", 304), ("/sitemap-pages.xml.gz", 304)} <= set(site.log)
    assert summary.pruned == 1 and summary.added == summary.replaced == 0
    assert f"{site.url}/docs/page-10.html" not in stored_ids(collection)


def test_crawl_killed_half_way_loses_nothing(site: Site, embedder: Embedder,
                                             tmp_path: Path) -> None:
    index = tmp_path / "index"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    site.log.clear()
    site.slow = 0.1
    try:
        crawler = subprocess.Popen(
            [str(Path(sys.executable).parent / "qa"), "crawl", site.url + "/", "--index",
             str(index), "--delay", "0"], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        # 16 pages make a committed group; kill a few pages into the next one.
        while len(site.page_requests()) < 22:
            assert crawler.poll() is None, crawler.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the crawl did not get going"
            time.sleep(0.02)
        crawler.send_signal(signal.SIGKILL)
        crawler.wait(timeout=10)
    finally:
        site.slow = 0.0
    settings = Settings(index_dir=index)
    calls = embedder.calls
    collection = Collection.open(settings, embedder)  # mends the FAISS snapshot from SQLite
    try:
        assert embedder.calls == calls  # every committed chunk kept its vector
        kept = stored_ids(collection)
        assert len(kept) >= 16  # the group committed before the kill
    finally:
        collection.close()
    # No URL: `qa crawl` repeats the options the killed crawl saved before its first commit.
    again = subprocess.run([str(Path(sys.executable).parent / "qa"), "crawl", "--index",
                            str(index)], cwd=ROOT, env=env, capture_output=True, text=True)
    print(f"crawl after the kill: {again.stderr.splitlines()[-1]}")
    assert again.returncode == 1  # the page that answers 500
    assert f"error: {site.url}/broken.html: answered HTTP 500" in again.stderr
    unchanged = int(re.search(r"(\d+) unchanged", again.stderr).group(1))  # type: ignore
    assert unchanged >= len(kept)  # their validators were committed with them
    collection = Collection.open(settings, embedder)
    try:
        assert stored_ids(collection) == allowed_ids(site)
    finally:
        collection.close()
    checked = subprocess.run([str(Path(sys.executable).parent / "qa"), "check", "--index",
                              str(index)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_serve_crawl_every_shows_the_last_crawl_in_healthz(
        site: Site, crawled: tuple[Collection, list[object]], embedder: Embedder) -> None:
    collection, _ = crawled
    state_file = collection.directory / "crawl.json"  # the last crawl shown must be the server's
    state_file.write_text(json.dumps(json.loads(state_file.read_text()) | {"last": None}))
    # No --crawl URL: the server repeats the collection's last `qa crawl` (saved, delay 0).
    settings = Settings(index_dir=collection.directory, crawl_every_s=3600)
    with LiveServer(settings, embedder) as server, httpx.Client(base_url=server.url,
                                                               timeout=30) as http:
        started, deadline = time.monotonic(), time.monotonic() + 60
        while (health := http.get("/healthz").json())["last_crawl"] is None:
            assert time.monotonic() < deadline, "no crawl finished"
            time.sleep(0.2)
        last = health["last_crawl"]
        print(f"healthz showed the crawl after {time.monotonic() - started:.1f}s: {last}")
        assert last["unchanged"] == len(stored_ids(collection))
        assert last["failed"] == 1 and last["complete"] is True
        answer = http.post("/ask", json={"question": "Who lit the lamp on island 12?"}).json()
        assert answer["passages"][0]["citation"]["url"] == f"{site.url}/docs/page-12.html"


def test_robots_crawl_delay_spaces_requests_and_disallow_holds(
        embedder: Embedder, tmp_path: Path) -> None:
    site = Site()
    stamps: list[float] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(site))
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    for n in range(1, 4):
        site.files[f"/docs/page-{n:02d}.html"] = ("text/html", page_html(n))
    site.files["/robots.txt"] = ("text/plain", b"User-agent: qa-crawler\nCrawl-delay: 0.3\n"
                                 b"Disallow: /docs/page-03.html\n")
    handler = server.RequestHandlerClass
    original = handler.do_GET  # type: ignore[attr-defined]

    def timed(self: BaseHTTPRequestHandler) -> None:
        stamps.append(time.monotonic())
        original(self)

    handler.do_GET = timed  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    collection = Collection.open(Settings(index_dir=tmp_path / "index"), embedder, create=True)
    try:
        summary = crawl_site(collection, CrawlOptions(
            seeds=tuple(f"{site.url}/docs/page-{n:02d}.html" for n in range(1, 4)), delay=0),
            progress=False)
        assert stored_ids(collection) == {f"{site.url}/docs/page-0{n}.html" for n in (1, 2)}
        assert not summary.errors
    finally:
        collection.close()
        server.shutdown()
    assert ("/docs/page-03.html", 200) not in site.log
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    # robots.txt's 0.3 s, though --delay is 0. Stamped on the server's side, a gap can look a
    # few ms short of the crawler's own when one request reached it later than the next did.
    assert len(gaps) >= 2 and min(gaps) >= 0.25


def test_page_links_read_canonical_base_nofollow_and_robots_meta() -> None:
    found = page_links(b'<html><head><base href="https://a.example/docs/">'
                       b'<link rel="canonical" href="intro#top">'
                       b'<meta name="robots" content="noindex"></head><body>'
                       b'<a href="next.html#part">next</a> <a href="mailto:x@a.example">mail</a>'
                       b'<a rel="nofollow" href="/login">log in</a>'
                       b'<a href="HTTPS://A.EXAMPLE:443/up/../faq">faq</a></body></html>',
                       "https://a.example/docs/page")
    assert found.canonical == "https://a.example/docs/intro"
    assert found.links == ["https://a.example/docs/next.html", "https://a.example/faq"]
    assert found.noindex and not found.nofollow
    assert page_links(b'<meta name="robots" content="none"><a href="/x">x</a>',
                      "https://a.example/").links == []


def test_sitemap_gzip_and_index_are_read() -> None:
    kind, locs = sitemap_locs(gzip.compress(
        b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc> '
        b'https://a.example/x </loc></url></urlset>'))
    assert (kind, locs) == ("urlset", ["https://a.example/x"])


def test_crawl_state_is_never_written_larger_than_it_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(crawl, "MAX_STATE_BYTES", 4000)
    urls = [f"https://a.example/page-{n}" for n in range(200)]
    stored = {"https://a.example/robots.txt": {"etag": '"1"', "content": "x" * 3000}}
    crawl.write_state(tmp_path, {"options": {"seeds": urls[:1]}, "stored": stored,
                                 "frontier": urls, "retry": urls[:10]})
    state = crawl.read_state(tmp_path)
    assert (tmp_path / "crawl.json").stat().st_size <= 4000
    assert "stored" not in state  # the cache of robots.txt and sitemaps goes first
    assert state["options"] == {"seeds": urls[:1]} and 0 < len(state["frontier"]) < len(urls)
    assert state["frontier"] == urls[:len(state["frontier"])]  # cut at the end, order kept


def test_durations_and_bad_options_are_refused_plainly() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("6h") == 21600
    assert parse_duration("1d") == 86400
    with pytest.raises(InvalidInput, match="a number and a unit"):
        parse_duration("soon")
    with pytest.raises(InvalidInput, match="not an http"):
        CrawlOptions(seeds=("ftp://example.com/",))
    runner = CliRunner()
    result = runner.invoke(cli, ["serve", "--crawl-every", "6 weeks"])
    assert result.exit_code != 0 and "a number and a unit" in result.output
    result = runner.invoke(cli, ["serve", "--crawl-every", "10s"])
    assert result.exit_code == 2 and "--crawl-every must be between 1m and 30d" in result.output
    result = runner.invoke(cli, ["serve", "--crawl", "https://example.com/"])
    assert result.exit_code == 2 and "--crawl needs --crawl-every" in result.output
    result = runner.invoke(cli, ["crawl", "file:///etc/passwd"])
    assert result.exit_code != 0 and "not an http(s) URL" in result.output
