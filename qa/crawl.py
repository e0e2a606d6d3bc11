"""A web site → documents, kept in step: `qa crawl` and `qa serve --crawl-every`.

A crawl starts from the seed pages, the sitemaps (given, or named by robots.txt) and every page
of the site already indexed, follows same-site links, and indexes HTML, PDF and DOCX with the
loaders `qa index` uses. A document's id is its canonical URL; its `url` is the same.

Rules worth knowing:
- Validators (ETag, Last-Modified) live in the document's own metadata (`crawl`), so they are
  committed in the same transaction as the text they describe. Kept apart, a crash between two
  writes could leave validators for a page never indexed, and its next 304 would hide it.
- Every page already indexed is asked for again with its validators: an unchanged page costs
  one 304 and no parsing or embedding. Asking for them all is also what finds a deleted page
  (404/410). A 304 brings no links, so the URLs found but not yet visited (the frontier) are
  saved in crawl.json before each commit: a crawl cut short (killed, --max-pages, a server
  stopping) resumes from them, and never loses a page that only an unchanged page links to.
- Nothing is deleted until the crawl has finished, and only with `prune`: pages that answered
  404/410, pages that left a sitemap that was read whole, and pages robots.txt or the
  include/exclude patterns now rule out. A page that timed out or answered 5xx is kept,
  reported, and asked for first next run.
- Pages are committed in small groups (one transaction each), so a crawl killed half-way keeps
  every group it committed and the next crawl asks for those with their validators.
- The crawl never leaves the origins (scheme, host, port) of its seeds and sitemaps.
- robots.txt and sitemaps are asked for with their validators too: their text (robots.txt) or
  their URLs (a sitemap) are kept in crawl.json, so on a 304 the stored copy is read instead,
  and counts as read whole for pruning. A copy is kept only with a validator and within a size
  budget; one over it is simply fetched whole each run.

State that is not an index (the last crawl's options, its sitemap's URLs, pages to retry, its
summary, robots.txt and sitemaps with their validators) is kept in `crawl.json` beside the
collection's database; losing it costs only the retries, one run's sitemap pruning and full
fetches of robots.txt and the sitemaps.
"""

from __future__ import annotations

import fcntl
import fnmatch
import json
import logging
import os
import re
import sys
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit

import httpx

from qa import __version__
from qa.collection import Collection
from qa.errors import DocumentNotFound, InvalidInput, QAError
from qa.indexing import CHARS_PER_CHUNK, GROUP_CHUNKS, IndexSummary
from qa.loaders import (
    MAX_FILE_BYTES,
    MAX_ID_CHARS,
    build_document,
    id_problem,
    parse_bytes,
    parser_for,
    shown,
    title_from_name,
)
from qa.types import DEFAULT_COLLECTION, Document

if TYPE_CHECKING:
    from qa.catalog import Catalog

USER_AGENT = f"qa-crawler/{__version__}"
DEFAULT_MAX_PAGES = 1_000
MAX_PAGES = 100_000
DEFAULT_DELAY_S = 0.5  # between two requests to one site; robots.txt's Crawl-delay wins if longer
MAX_DELAY_S = 60.0  # a robots.txt asking for more is capped: one page a minute is still polite
MAX_URL_CHARS = MAX_ID_CHARS  # a page's URL becomes its id
MAX_RESPONSE_BYTES = min(20 * 1024 * 1024, MAX_FILE_BYTES)
MAX_ROBOTS_BYTES = 500 * 1024  # what Google reads of a robots.txt
MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemap protocol's limit, uncompressed
MAX_SITEMAP_URLS = 50_000  # per sitemap file, as the protocol says
MAX_SITEMAP_FILES = 100  # an index of indexes cannot make us fetch without end
MAX_REDIRECTS = 5
MAX_LINKS_PER_PAGE = 2_000
TIMEOUT_S = 15.0  # connect, and between two reads
PAGE_DEADLINE_S = 60.0  # a whole response: a server dripping bytes cannot hold us longer
GROUP_PAGES = 16  # commit at least every 16 pages ...
GROUP_SECONDS = 10.0  # ... or 10 s, so a slow, polite crawl keeps what it has
STATE_FILE = "crawl.json"
MAX_STATE_BYTES = 64 * 1024 * 1024  # crawl.json is never written larger than it is read
MAX_STORED_CHARS = 16 * 1024 * 1024  # robots.txt and sitemap copies kept in it, all together
LOCK_FILE = "crawl.lock"
log = logging.getLogger("uvicorn.error")  # the server's log, where a crawl reports
META_KEY = "crawl"  # metadata["crawl"] = {"etag": ..., "last_modified": ...}

# What is indexed, by the response's media type → the loader's suffix.
CONTENT_TYPES = {
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
}
_DURATION = re.compile(r"\s*(\d{1,6})\s*([smhd])\s*", re.I)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """"30m", "6h", "1d" → seconds (the range allowed is Settings.crawl_every_s's)."""
    match = _DURATION.fullmatch(text or "")
    if not match:
        raise InvalidInput(f"duration {text[:40]!r} is not a number and a unit (s, m, h, d), "
                           "e.g. 30m, 6h, 1d")
    return float(int(match.group(1)) * _UNITS[match.group(2).lower()])


def normalize_url(url: str, base: str | None = None) -> str | None:
    """An absolute http(s) URL without its fragment, scheme and host lower-cased, default port
    dropped, dot segments resolved, an empty path made "/"; None for anything else (mailto:,
    javascript:, garbage)."""
    try:
        absolute = urljoin(base, url.strip()) if base else url.strip()
        parts = urlsplit(urldefrag(absolute)[0])
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    # Dot segments resolved (urljoin does it for a path joined to a root): an id holds none.
    path = urlsplit(urljoin("http://h/", parts.path or "/")).path if "." in parts.path else (
        parts.path or "/")
    return urlunsplit((scheme, host, path, parts.query, ""))


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def check_url(url: str, what: str) -> str:
    """A URL given by the operator, normalized, or InvalidInput saying why not."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"{what} is longer than {MAX_URL_CHARS} characters")
    normal = normalize_url(url)
    if normal is None:
        raise InvalidInput(f"{what} {shown(url)!r} is not an http(s) URL")
    return normal


@dataclass(frozen=True)
class CrawlOptions:
    """What to crawl and how politely; saved in crawl.json so a later crawl can repeat it."""

    seeds: tuple[str, ...] = ()
    sitemaps: tuple[str, ...] = ()
    include: tuple[str, ...] = ()  # glob patterns on the URL's path (and query)
    exclude: tuple[str, ...] = ()
    max_pages: int = DEFAULT_MAX_PAGES
    delay: float = DEFAULT_DELAY_S
    prune: bool = False
    user_agent: str = USER_AGENT

    def __post_init__(self) -> None:
        if not self.seeds and not self.sitemaps:
            raise InvalidInput("nothing to crawl: give page URLs or --sitemap")
        object.__setattr__(self, "seeds", tuple(check_url(u, "URL") for u in self.seeds))
        object.__setattr__(self, "sitemaps",
                           tuple(check_url(u, "sitemap URL") for u in self.sitemaps))
        if len(self.seeds) + len(self.sitemaps) > 100:
            raise InvalidInput("at most 100 start URLs and sitemaps")
        for pattern in (*self.include, *self.exclude):
            if not pattern or len(pattern) > 200:
                raise InvalidInput("an --include/--exclude pattern must be 1-200 characters")
        if not 1 <= self.max_pages <= MAX_PAGES:
            raise InvalidInput(f"--max-pages must be between 1 and {MAX_PAGES}")
        if not 0 <= self.delay <= MAX_DELAY_S:
            raise InvalidInput(f"--delay must be between 0 and {MAX_DELAY_S:g} seconds")
        if not self.user_agent.isprintable() or not 0 < len(self.user_agent) <= 200:
            raise InvalidInput("--user-agent must be 1-200 printable characters")

    @property
    def origins(self) -> set[str]:
        """The site: every origin of a seed or a sitemap. Nothing else is fetched."""
        return {origin_of(u) for u in (*self.seeds, *self.sitemaps)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CrawlOptions:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for name in ("seeds", "sitemaps", "include", "exclude"):
            fields[name] = tuple(fields.get(name, ()))
        return cls(**fields)

    def wanted(self, url: str) -> bool:
        """Whether --include/--exclude let this URL in (patterns match its path and query)."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if self.include and not any(fnmatch.fnmatchcase(target, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(target, p) for p in self.exclude)


@dataclass
class CrawlSummary(IndexSummary):
    """`qa index`'s counts (a page for a file; `errors` hold (url, why)), and what a crawl adds."""

    skipped: int = 0  # not HTML/PDF/DOCX, noindex, or a duplicate of a canonical page
    requests: int = 0
    finished_at: str = ""

    @property
    def pages(self) -> int:
        return self.files + self.skipped

    def line(self) -> str:
        return (f"{self.pages} pages: {self.added} added, {self.replaced} replaced, "
                f"{self.unchanged} unchanged, {self.pruned} pruned, {len(self.errors)} failed, "
                f"{self.skipped} skipped; {self.embedded} chunks embedded, {self.requests} "
                f"requests in {self.seconds:.2f}s")

    def to_dict(self) -> dict[str, Any]:
        return {"finished_at": self.finished_at, "seconds": round(self.seconds, 3),
                "pages": self.pages, "added": self.added, "replaced": self.replaced,
                "unchanged": self.unchanged, "pruned": self.pruned, "skipped": self.skipped,
                "failed": len(self.errors), "embedded": self.embedded,
                "requests": self.requests}


# -- state beside the collection -------------------------------------------------------------


def read_state(directory: Path) -> dict[str, Any]:
    """crawl.json, or {} when it is missing or unreadable (it holds nothing indexed)."""
    try:
        with open(directory / STATE_FILE, "rb") as file:
            data = json.loads(file.read(MAX_STATE_BYTES))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_state(directory: Path, state: dict[str, Any]) -> None:
    """crawl.json replaced whole (a reader sees the old file or the new one), and never larger
    than read_state reads: past MAX_STATE_BYTES the stored robots.txt and sitemaps go first (a
    cache), then the URL lists are cut (pages then missed are found again by later crawls)."""
    data = json.dumps(state, ensure_ascii=False).encode()
    if len(data) > MAX_STATE_BYTES:
        state = {k: v for k, v in state.items() if k != "stored"}
        data = json.dumps(state, ensure_ascii=False).encode()
    while len(data) > MAX_STATE_BYTES and any(isinstance(v, list) and v
                                              for v in state.values()):
        state = {k: v[:len(v) // 2] if isinstance(v, list) else v for k, v in state.items()}
        data = json.dumps(state, ensure_ascii=False).encode()
    tmp = directory / f"{STATE_FILE}.tmp"
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, directory / STATE_FILE)


def saved_options(directory: Path) -> CrawlOptions | None:
    """The options of the last crawl of this collection, if one was saved."""
    data = read_state(directory).get("options")
    if not isinstance(data, dict):
        return None
    try:
        return CrawlOptions.from_dict(data)
    except (InvalidInput, TypeError):
        return None


def last_crawl(directory: Path) -> dict[str, Any] | None:
    """The last crawl's summary (for /healthz), or None."""
    last = read_state(directory).get("last")
    if not isinstance(last, dict):
        return None
    numbers = ("pages", "added", "replaced", "unchanged", "pruned", "skipped", "failed",
               "embedded", "requests")
    typed = (isinstance(last.get("finished_at"), str)
             and isinstance(last.get("seconds"), int | float)
             and all(type(last.get(k)) is int for k in numbers))
    return {k: last[k] for k in ("finished_at", "seconds", *numbers, "complete")
            if k in last} if typed else None


@contextmanager
def crawl_lock(directory: Path) -> Iterator[None]:
    """One crawl of a collection at a time, across processes (released if we die)."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise QAError(f"another crawl of {directory} is running; try when it ends"
                          ) from None
        yield
    finally:
        os.close(fd)


# -- fetching --------------------------------------------------------------------------------


class PageError(Exception):
    """A page that could not be fetched this run; `retry` when asking again may work."""

    def __init__(self, reason: str, *, retry: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


@dataclass
class Fetched:
    url: str  # after redirects
    status: int
    headers: httpx.Headers
    body: bytes = b""


class Fetcher:
    """GETs within the site: redirects followed by hand (each hop checked), politeness delay per
    origin, a byte cap and a deadline on every body."""

    def __init__(self, options: CrawlOptions, summary: CrawlSummary) -> None:
        self.options = options
        self.summary = summary
        self.client = httpx.Client(
            timeout=httpx.Timeout(TIMEOUT_S), follow_redirects=False,
            headers={"User-Agent": options.user_agent})
        self.delays: dict[str, float] = {}  # origin → seconds between requests
        self._last: dict[str, float] = {}

    def close(self) -> None:
        self.client.close()

    def _wait(self, url: str) -> None:
        origin = origin_of(url)
        delay = self.delays.get(origin, self.options.delay)
        last = self._last.get(origin)
        if last is not None and delay > 0:
            time.sleep(max(0.0, last + delay - time.monotonic()))
        self._last[origin] = time.monotonic()

    def get(self, url: str, *, limit: int, headers_for: Callable[[str], dict[str, str]]
            = lambda _: {}, allowed: Callable[[str], str | None] = lambda _: None,
            body_if: Callable[[httpx.Response], bool] = lambda _: True) -> Fetched:
        """The response at `url` after same-site redirects; its body (at most `limit` bytes)
        read only for a 200 that `body_if` accepts. `allowed(url)` says why a hop may not be
        fetched (robots, patterns), or None."""
        for _ in range(MAX_REDIRECTS + 1):
            self._wait(url)
            self.summary.requests += 1
            try:
                with self.client.stream("GET", url, headers=headers_for(url)) as response:
                    if response.has_redirect_location:  # not 304 (is_redirect: any 3xx)
                        target = normalize_url(response.headers.get("location", ""), url)
                        if target is None or origin_of(target) not in self.options.origins:
                            where = shown(response.headers.get("location", ""))[:200]
                            raise PageError(f"redirects off the site (HTTP "
                                            f"{response.status_code} to {where})", retry=False)
                        why = allowed(target)
                        if why:
                            raise PageError(f"redirects to {target}, {why}", retry=False)
                        url = target
                        continue
                    body = b""
                    if response.status_code == 200 and body_if(response):
                        body = read_capped(response, limit)
                    return Fetched(url, response.status_code, response.headers, body)
            except httpx.TimeoutException:
                raise PageError("timed out") from None
            except httpx.HTTPError as exc:
                detail = " ".join(str(exc).split())[:200] or type(exc).__name__
                raise PageError(f"could not be fetched ({detail})") from None
        raise PageError(f"more than {MAX_REDIRECTS} redirects", retry=False)


def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The body, refused past `limit` bytes or PAGE_DEADLINE_S seconds (checked as it comes)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PageError(f"is {int(declared)} bytes, over the {limit}-byte limit", retry=False)
    deadline = time.monotonic() + PAGE_DEADLINE_S
    parts: list[bytes] = []
    size = 0
    for part in response.iter_bytes():
        size += len(part)
        if size > limit:
            raise PageError(f"is over the {limit}-byte limit", retry=False)
        if time.monotonic() > deadline:
            raise PageError(f"took over {PAGE_DEADLINE_S:g}s to arrive")
        parts.append(part)
    return b"".join(parts)


# -- robots.txt and sitemaps -----------------------------------------------------------------


class StoredResponses:
    """robots.txt and sitemaps as last read, with their validators (crawl.json's "stored"):
    what this run fetched or confirmed with a 304 is kept, the rest forgotten."""

    def __init__(self, saved: object) -> None:
        self.saved: dict[str, Any] = saved if isinstance(saved, dict) else {}
        self.kept: dict[str, dict[str, Any]] = {}  # url → {"etag", "last_modified", "content"}
        self.chars = 0

    def headers_for(self, url: str) -> dict[str, str]:
        """Validators to send, only for a URL whose content is stored: a 304 must have
        something to stand for."""
        entry = self.saved.get(url)
        if not isinstance(entry, dict) or "content" not in entry:
            return {}
        return conditional_headers(entry)

    def reuse(self, url: str) -> Any:
        """The stored content of a URL that answered 304 (kept for next run), or None."""
        entry = self.saved.get(url)
        if not self.headers_for(url) or not isinstance(entry, dict):
            return None
        self._keep(url, entry)
        return entry["content"]

    def keep(self, url: str, headers: httpx.Headers, content: Any) -> None:
        """Remember a 200's content with its validators (none: nothing to ask with)."""
        validators = validators_of(headers)
        if validators:
            self._keep(url, validators | {"content": content})

    def _keep(self, url: str, entry: dict[str, Any]) -> None:
        chars = len(json.dumps(entry, ensure_ascii=False))
        if self.chars + chars <= MAX_STORED_CHARS:  # over the budget: fetched whole next run
            self.kept[url] = entry
            self.chars += chars


class Robots:
    """robots.txt per origin, read with protego (Google's rules: wildcards, longest match)."""

    def __init__(self, fetcher: Fetcher, stored: StoredResponses) -> None:
        self.fetcher = fetcher
        self.stored = stored
        self.rules: dict[str, Any] = {}  # origin → Protego, or None: every path allowed
        self.unavailable: dict[str, str] = {}  # origin → why nothing there is fetched this run

    def load(self, origin: str) -> None:
        from protego import Protego

        if origin in self.rules or origin in self.unavailable:
            return
        try:
            fetched = self.fetcher.get(f"{origin}/robots.txt", limit=MAX_ROBOTS_BYTES * 4,
                                       headers_for=self.stored.headers_for)
        except PageError as exc:
            self.unavailable[origin] = f"robots.txt {exc.reason}"
            return
        text = self.stored.reuse(fetched.url) if fetched.status == 304 else None
        if fetched.status == 200:
            text = fetched.body[:MAX_ROBOTS_BYTES].decode("utf-8", "replace")
            self.stored.keep(fetched.url, fetched.headers, text)
        if isinstance(text, str):
            rules = Protego.parse(text)
            self.rules[origin] = rules
            delay = rules.crawl_delay(self.fetcher.options.user_agent)
            if delay is not None:
                self.fetcher.delays[origin] = min(max(float(delay), self.fetcher.options.delay),
                                                  MAX_DELAY_S)
        elif 400 <= fetched.status < 500:
            self.rules[origin] = None  # no robots.txt: everything is allowed (RFC 9309)
        else:
            # RFC 9309: a server error on robots.txt means assume complete disallow.
            self.unavailable[origin] = f"robots.txt answered HTTP {fetched.status}"

    def why_not(self, url: str) -> str | None:
        origin = origin_of(url)
        self.load(origin)
        if origin in self.unavailable:
            return self.unavailable[origin]
        rules = self.rules.get(origin)
        if rules is not None and not rules.can_fetch(url, self.fetcher.options.user_agent):
            return "disallowed by robots.txt"
        return None

    def sitemaps(self, origin: str) -> list[str]:
        self.load(origin)
        rules = self.rules.get(origin)
        return list(rules.sitemaps) if rules is not None else []


def read_sitemaps(fetcher: Fetcher, robots: Robots, urls: list[str],
                  summary: CrawlSummary) -> tuple[list[str], bool]:
    """Page URLs listed by these sitemaps (indexes followed, gzip undone), and whether every
    sitemap was read whole (only then may a page missing from them be pruned). A sitemap that
    answers 304 is read from its stored copy, which counts as whole.

    Parsed here with lxml rather than ultimate-sitemap-parser or trafilatura's sitemaps: both
    fetch on their own, past our robots, origin, size and time rules, and the format is two
    elements (<sitemapindex><sitemap><loc>, <urlset><url><loc>).
    """
    pages: list[str] = []
    complete = True
    queue = deque(urls)
    done: set[str] = set()
    while queue and len(done) < MAX_SITEMAP_FILES:
        url = queue.popleft()
        if url in done:
            continue
        done.add(url)
        why = robots.why_not(url)
        if why:
            summary.errors.append((url, f"sitemap {why}"))
            complete = False
            continue
        try:
            fetched = fetcher.get(url, limit=MAX_SITEMAP_BYTES, allowed=robots.why_not,
                                  headers_for=robots.stored.headers_for)
            if fetched.status == 304 and (copy := stored_sitemap(robots.stored, fetched.url)):
                kind, locs = copy
            elif fetched.status == 200:
                kind, locs = sitemap_locs(fetched.body)
                robots.stored.keep(fetched.url, fetched.headers, {"kind": kind, "locs": locs})
            else:
                raise PageError(f"answered HTTP {fetched.status}")
        except PageError as exc:
            summary.errors.append((url, f"sitemap {exc.reason}"))
            complete = False
            continue
        for loc in locs:
            normal = normalize_url(loc)
            if normal is None or origin_of(normal) not in fetcher.options.origins:
                continue  # the protocol forbids other sites' URLs in a sitemap
            (queue if kind == "sitemapindex" else pages).append(normal)
    if queue:
        complete = False
        summary.errors.append((queue[0], f"sitemap not read: over {MAX_SITEMAP_FILES} files"))
    return list(dict.fromkeys(pages)), complete


def stored_sitemap(stored: StoredResponses, url: str) -> tuple[str, list[str]] | None:
    """A sitemap's stored (kind, locs) after a 304, or None when the copy is unusable."""
    copy = stored.reuse(url)
    if (isinstance(copy, dict) and copy.get("kind") in ("urlset", "sitemapindex")
            and isinstance(copy.get("locs"), list)):
        return copy["kind"], [u for u in copy["locs"] if isinstance(u, str)]
    return None


def sitemap_locs(data: bytes) -> tuple[str, list[str]]:
    """("urlset" | "sitemapindex", the <loc>s) of one sitemap file, gzipped or not."""
    from lxml import etree

    if data[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = inflater.decompress(data, MAX_SITEMAP_BYTES)
        except zlib.error as exc:
            raise PageError(f"is not valid gzip ({exc})", retry=False) from None
        if inflater.unconsumed_tail:
            raise PageError(f"is over {MAX_SITEMAP_BYTES} bytes unzipped", retry=False)
    # No entities resolved, no DTD or network: a hostile sitemap cannot expand or reach out.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, recover=False)
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise PageError(f"is not valid XML ({exc})", retry=False) from None
    kind = etree.QName(root).localname
    if kind not in ("urlset", "sitemapindex"):
        raise PageError(f"is not a sitemap (root element <{kind}>)", retry=False)
    locs = [(el.text or "").strip() for el in root.iter("{*}loc")][:MAX_SITEMAP_URLS]
    return kind, [loc for loc in locs if loc]


# -- pages -----------------------------------------------------------------------------------


@dataclass
class PageLinks:
    canonical: str | None = None
    links: list[str] = field(default_factory=list)
    noindex: bool = False
    nofollow: bool = False


def page_links(data: bytes, url: str) -> PageLinks:
    """An HTML page's canonical URL, its links (nofollow ones left out) and robots meta."""
    import lxml.html
    from lxml import etree

    found = PageLinks()
    try:
        root = lxml.html.document_fromstring(data)
    except (etree.ParserError, ValueError):
        return found
    base = url
    for element in root.iter("base"):
        base = normalize_url(element.get("href", ""), url) or url
        break
    for meta in root.iter("meta"):
        if (meta.get("name") or "").lower() == "robots":
            words = {w.strip() for w in (meta.get("content") or "").lower().split(",")}
            found.noindex |= bool(words & {"noindex", "none"})
            found.nofollow |= bool(words & {"nofollow", "none"})
    for link in root.iter("link"):
        if "canonical" in (link.get("rel") or "").lower().split():
            found.canonical = normalize_url(link.get("href", ""), base)
            break
    if not found.nofollow:
        for anchor in root.iter("a"):
            href = anchor.get("href")
            if href is None or "nofollow" in (anchor.get("rel") or "").lower().split():
                continue
            normal = normalize_url(href, base)
            if normal is not None:
                found.links.append(normal)
            if len(found.links) >= MAX_LINKS_PER_PAGE:
                break
    return found


def media_suffix(headers: httpx.Headers) -> str | None:
    media = headers.get("content-type", "").split(";")[0].strip().lower()
    return CONTENT_TYPES.get(media)


def validators_of(headers: httpx.Headers) -> dict[str, str]:
    kept = {"etag": headers.get("etag"), "last_modified": headers.get("last-modified")}
    return {k: v[:200] for k, v in kept.items() if v}


def conditional_headers(validators: dict[str, Any]) -> dict[str, str]:
    """Stored validators (validators_of's keys) → the request headers that ask for a 304."""
    headers = {}
    if isinstance(validators.get("etag"), str):
        headers["If-None-Match"] = validators["etag"]
    if isinstance(validators.get("last_modified"), str):
        headers["If-Modified-Since"] = validators["last_modified"]
    return headers


def page_document(doc_id: str, data: bytes, suffix: str, validators: dict[str, str]) -> Document:
    """The page's bytes through the loaders `qa index` uses. No `source`: that names a file,
    and `qa index --prune` deletes documents whose file is gone."""
    parser = parser_for(shown(doc_id), suffix)
    parsed = parse_bytes(parser, data, shown(doc_id), suffix)
    path = PurePosixPath(urlsplit(doc_id).path)
    fallback = None
    if not parsed.title and "title" not in parsed.metadata:
        fallback = title_from_name(path.stem) if path.stem else urlsplit(doc_id).hostname
    return build_document(doc_id, parsed, title=fallback,
                          extra_metadata={"url": doc_id, META_KEY: validators})


# -- the crawl -------------------------------------------------------------------------------


def crawled_ids(collection: Collection, origins: set[str]) -> list[str]:
    """Ids of the documents a crawl of these origins indexed earlier."""
    ids: list[str] = []
    offset = 0
    while True:
        rows, total = collection.list_documents(offset, 1000)
        ids += [r.id for r in rows
                if META_KEY in r.metadata and r.url == r.id and origin_of(r.id) in origins]
        offset += len(rows)
        if not rows or offset >= total:
            return ids


def crawl_site(collection: Collection, options: CrawlOptions, *,
               progress: bool | None = None, stop: threading.Event | None = None,
               on_commit: Callable[[list[str]], None] | None = None) -> CrawlSummary:
    """Crawl the site into `collection`; see the module docstring for the rules."""
    with crawl_lock(collection.directory):
        crawl = SiteCrawl(collection, options, stop=stop, on_commit=on_commit)
        return crawl.run(progress=sys.stderr.isatty() if progress is None else progress)


class SiteCrawl:
    """One crawl: the frontier, what this run saw, and the group of pages not yet committed."""

    def __init__(self, collection: Collection, options: CrawlOptions, *,
                 stop: threading.Event | None = None,
                 on_commit: Callable[[list[str]], None] | None = None) -> None:
        self.collection = collection
        self.options = options
        self.stop = stop or threading.Event()
        self.on_commit = on_commit
        self.summary = CrawlSummary()
        self.state = read_state(collection.directory)
        self.fetcher = Fetcher(options, self.summary)
        self.robots = Robots(self.fetcher, StoredResponses(self.state.get("stored")))
        self.frontier: deque[str] = deque()
        self.queued: set[str] = set()
        self.left: set[str] = set()  # pages that left the sitemaps (deleted with --prune)
        self.done: set[str] = set()  # URLs and document ids written or confirmed this run
        self.gone: set[str] = set()  # answered 404/410, or now redirect elsewhere
        self.ruled_out: set[str] = set()  # robots.txt, noindex or the patterns keep out
        self.unreachable: set[str] = set()  # origins whose robots.txt could not be read
        self.retry: list[str] = []  # pages to ask for first next time
        self.pending: list[Document] = []
        self.pending_since = 0.0

    def run(self, *, progress: bool) -> CrawlSummary:
        from tqdm import tqdm

        started = time.perf_counter()
        try:
            listed, whole = self.plan()
            requested = 0
            with tqdm(total=len(self.frontier), unit="page", disable=not progress,
                      desc="crawling") as bar:
                while self.frontier and requested < self.options.max_pages:
                    if self.stop.is_set():
                        break
                    url = self.frontier.popleft()
                    bar.total = min(requested + len(self.frontier) + 1, self.options.max_pages)
                    bar.update(1)
                    if url not in self.done and self.admit(url):
                        requested += 1
                        self.crawl_page(url)
            self.flush()
        finally:
            self.fetcher.close()
        if self.options.prune and not self.stop.is_set():
            self.prune()
        self.collection.save_snapshot()
        self.summary.seconds = time.perf_counter() - started
        self.summary.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
        self.finish(listed, whole)
        return self.summary

    def plan(self) -> tuple[list[str], bool]:
        """Fill the frontier: pages to retry or left unvisited last time, the start URLs, the
        sitemaps' pages and every page crawled before. Returns the sitemaps' pages and whether
        every sitemap was read whole."""
        origins = self.options.origins
        sitemaps = list(self.options.sitemaps)
        for origin in sorted(origins):  # robots.txt may name the site's sitemaps
            sitemaps += [u for u in map(normalize_url, self.robots.sitemaps(origin))
                         if u and origin_of(u) in origins]
        sitemaps = list(dict.fromkeys(sitemaps))
        listed, whole = read_sitemaps(self.fetcher, self.robots, sitemaps, self.summary)
        # Judged only when every sitemap was read whole this run: a sitemap that failed to
        # load says nothing about its pages.
        if sitemaps and whole:
            self.left = set(self.saved_urls("sitemap_pages")) - set(listed)
        for url in (*self.saved_urls("retry"), *self.saved_urls("frontier"),
                    *self.options.seeds, *listed, *crawled_ids(self.collection, origins)):
            self.enqueue(url)
        return listed, whole

    def saved_urls(self, key: str) -> list[str]:
        value = self.state.get(key)
        return [u for u in value if isinstance(u, str)] if isinstance(value, list) else []

    def enqueue(self, url: str) -> None:
        # Links are capped too: a site of endless generated URLs cannot fill memory.
        if (url not in self.queued and len(self.queued) < 10 * MAX_PAGES
                and not (self.options.prune and url in self.left)):
            self.queued.add(url)
            self.frontier.append(url)

    def why_not(self, url: str) -> str | None:
        """Why `url` may not be fetched (off the site, too long, the patterns, robots.txt)."""
        if origin_of(url) not in self.options.origins:
            return "off the site"
        if len(url) > MAX_URL_CHARS:
            return f"URL over {MAX_URL_CHARS} characters"
        if not self.options.wanted(url):
            return "left out by --include/--exclude"
        return self.robots.why_not(url)

    def admit(self, url: str) -> bool:
        """Whether to fetch `url`; a page kept out is remembered for --prune."""
        why = self.why_not(url)
        if why is None:
            return True
        if why.startswith("robots.txt "):  # unreadable: nothing on that site is fetched
            origin = origin_of(url)
            if origin not in self.unreachable:
                self.unreachable.add(origin)
                self.summary.errors.append((f"{origin}/robots.txt", why))
            self.retry.append(url)
        elif why != "off the site":
            self.ruled_out.add(url)
        return False

    def validators_for(self, url: str) -> dict[str, str]:
        return conditional_headers(crawl_meta(self.collection, url) or {})

    def crawl_page(self, url: str) -> None:
        summary = self.summary
        try:
            fetched = self.fetcher.get(
                url, limit=MAX_RESPONSE_BYTES, headers_for=self.validators_for,
                allowed=self.why_not, body_if=lambda r: media_suffix(r.headers) is not None)
        except PageError as exc:
            summary.errors.append((url, exc.reason))
            if exc.retry:
                self.retry.append(url)
            return
        final = fetched.url
        if final != url:
            self.gone.add(url)  # the page now lives elsewhere; its old id goes with --prune
        if final in self.done:
            return  # a redirect to a page crawled already
        if fetched.status == 304:
            self.done.add(final)
            summary.unchanged += 1
        elif fetched.status in (404, 410):
            self.gone.add(final)
        elif fetched.status != 200:
            summary.errors.append((final, f"answered HTTP {fetched.status}"))
            if fetched.status >= 500 or fetched.status in (408, 429):
                self.retry.append(url)
        elif (suffix := media_suffix(fetched.headers)) is None:
            summary.skipped += 1
        else:
            self.take_page(fetched, suffix)

    def take_page(self, fetched: Fetched, suffix: str) -> None:
        """A 200 of a type we index: follow its links, then load it under its canonical id."""
        origins = self.options.origins
        links = page_links(fetched.body, fetched.url) if suffix == ".html" else PageLinks()
        for link in links.links:
            if link not in self.done and origin_of(link) in origins:
                self.enqueue(link)
        doc_id = fetched.url
        if (links.canonical and origin_of(links.canonical) in origins
                and not id_problem(links.canonical)):
            doc_id = links.canonical
        if links.noindex or "noindex" in fetched.headers.get("x-robots-tag", "").lower():
            self.summary.skipped += 1
            self.ruled_out.update((fetched.url, doc_id))
            return
        if doc_id in self.done:
            self.summary.skipped += 1
            self.done.add(fetched.url)  # another URL of a page indexed this run
            return
        self.done.update((fetched.url, doc_id))
        try:
            document = page_document(doc_id, fetched.body, suffix,
                                     validators_of(fetched.headers))
        except QAError as exc:
            self.summary.errors.append((fetched.url, exc.detail))
            return
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append(document)
        chunks = sum(max(1, len(d.text) // CHARS_PER_CHUNK) for d in self.pending)
        if (chunks >= GROUP_CHUNKS or len(self.pending) >= GROUP_PAGES
                or time.monotonic() - self.pending_since >= GROUP_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Commit the pending pages (one transaction), after saving the frontier: the links
        of the pages about to be committed are in it, so a crawl killed after the commit still
        reaches the pages they lead to."""
        if not self.pending:
            return
        write_state(self.collection.directory, self.state | {
            "options": self.options.to_dict(),
            "retry": list(dict.fromkeys(self.saved_urls("retry") + self.retry)),
            "frontier": list(self.frontier)[:MAX_PAGES],
            "stored": self.robots.stored.kept})
        self.summary.record(self.collection.add(self.pending, progress=False))
        if self.on_commit:
            self.on_commit([d.id for d in self.pending])
        self.pending = []

    def prune(self) -> None:
        """Delete crawled pages that went away, left the sitemaps or are now kept out."""
        for doc_id in sorted((self.gone | self.left | self.ruled_out) - self.done):
            if crawl_meta(self.collection, doc_id) is not None:
                with suppress(DocumentNotFound):
                    self.collection.delete(doc_id)
                    self.summary.pruned += 1

    def finish(self, listed: list[str], whole: bool) -> None:
        """Save the state the next crawl starts from, and this crawl's summary."""
        # Pages that left a sitemap stay remembered until a --prune run deletes them.
        left = sorted(self.left) if not self.options.prune else []
        complete = not self.frontier and not self.stop.is_set()
        write_state(self.collection.directory, {
            "options": self.options.to_dict(),
            "sitemap_pages": listed + left if whole else self.saved_urls("sitemap_pages"),
            "retry": list(dict.fromkeys(self.retry))[:MAX_PAGES],
            "frontier": list(self.frontier)[:MAX_PAGES],  # left by --max-pages or a stop
            "stored": self.robots.stored.kept,  # robots.txt and sitemaps, asked for with these
            "last": self.summary.to_dict() | {"complete": complete, "failed_pages": [
                {"url": u, "reason": r} for u, r in self.summary.errors[:20]]},
        })


def crawl_meta(collection: Collection, doc_id: str) -> dict[str, Any] | None:
    """The stored validators of a crawled document; None when there is none or it was not
    crawled (a document of the same id from a file or the API is never touched)."""
    states = collection.store.document_states([doc_id])
    stored = states[doc_id][1].get(META_KEY) if doc_id in states else None
    return stored if isinstance(stored, dict) else None


# -- the server's schedule -------------------------------------------------------------------


class CrawlSchedule:
    """`qa serve --crawl-every`: crawls the `default` collection at start and then `every`
    seconds after each crawl ends, on one daemon thread (so one crawl at a time), writing
    through the server's own open collection, as PUT /documents does: questions go on being
    answered, each from its own read snapshot."""

    def __init__(self, every: float, seeds: list[str] | tuple[str, ...] = (),
                 collection: str = DEFAULT_COLLECTION) -> None:
        self.every = every
        # Validated now: a bad URL stops the server at start, not an hour later.
        self.options = CrawlOptions(seeds=tuple(seeds), prune=True) if seeds else None
        self.collection = collection
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, catalog: Catalog) -> CrawlSchedule:
        self._thread = threading.Thread(target=self._run, args=(catalog,), name="qa-crawl",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ends the crawl in flight after its current page (what it fetched is committed)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self, catalog: Catalog) -> None:
        while not self._stop.is_set():
            try:
                collection = catalog.get(self.collection)
                options = self.options or saved_options(collection.directory)
                if options is None:
                    log.warning("crawl: no start URLs; give --crawl URL, or run "
                                "`qa crawl URL` once")
                    return
                # A schedule keeps the index in step: pages that went away go too.
                options = CrawlOptions.from_dict(options.to_dict() | {"prune": True})
                summary = crawl_site(collection, options, progress=False, stop=self._stop)
                log.info("crawl: %s", summary.line())
            except Exception as exc:  # one bad run must not end the schedule
                log.warning("crawl failed: %s: %s", type(exc).__name__, exc)
            self._stop.wait(self.every)
