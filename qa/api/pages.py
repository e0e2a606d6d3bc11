"""Browser-facing pages: the demo at `/`, the widget script, the source page a citation opens.

Document text reaches HTML only through `html.escape`; the source page also sends a CSP that
allows no script but its own (by nonce), so a document can never run code in the browser.
"""

# No `from __future__ import annotations`: FastAPI reads these signatures at run time.

import hashlib
import secrets
from functools import cache
from html import escape
from importlib import resources
from string import Template
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse

from qa.api.deps import Scope, scope_dependency
from qa.errors import InvalidInput

router = APIRouter(include_in_schema=False)

# Browsers may keep the script an hour; the ETag makes revalidation after that cheap.
WIDGET_CACHE_CONTROL = "public, max-age=3600"
SOURCE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# The demo runs one script, widget.js from this origin, which asks this origin; no page may
# frame either page (clickjacking).
DEMO_CSP = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

Offset = Annotated[int | None, Query(ge=0)]


@cache
def widget_asset(name: str) -> str:
    """A file of qa/widget, read once (they ship as package data)."""
    return (resources.files("qa") / "widget" / name).read_text("utf-8")


@cache
def widget_etag() -> str:
    return '"' + hashlib.sha256(widget_asset("qa-chat.js").encode()).hexdigest()[:20] + '"'


@router.get("/", response_class=HTMLResponse)
def demo_page() -> HTMLResponse:
    # The page is the same whatever the Host header says (its endpoint is relative), so a
    # shared cache cannot be taught to serve it pointing elsewhere.
    return HTMLResponse(widget_asset("demo.html"), headers={"Content-Security-Policy": DEMO_CSP})


@router.get("/widget.js")
def widget_script(request: Request) -> Response:
    headers = {
        "Cache-Control": WIDGET_CACHE_CONTROL,
        "ETag": widget_etag(),
        # Pages that isolate themselves (COEP) may still load it from another origin.
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if request.headers.get("if-none-match") == widget_etag():
        return Response(status_code=304, headers=headers)
    return Response(widget_asset("qa-chat.js"),
                    media_type="application/javascript; charset=utf-8", headers=headers)


def checked_span(start: int | None, end: int | None, length: int, names: str
                 ) -> tuple[int, int] | None:
    """A `[start, end)` span inside the text, None when neither bound is given."""
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise InvalidInput(f"{names}: give both bounds or neither")
    if not start < end <= length:
        raise InvalidInput(
            f"{names}: need start < end <= {length} (the document's length), got {start}, {end}"
        )
    return start, end


def render_text(text: str, cited: tuple[int, int] | None,
                sentence: tuple[int, int] | None) -> str:
    """The escaped text with the cited span in `<mark id=cited>`, the sentence inside it."""
    outer = cited or sentence
    if outer is None:
        return escape(text)
    inner = None
    if sentence is not None:
        lo, hi = max(sentence[0], outer[0]), min(sentence[1], outer[1])
        inner = (lo, hi) if lo < hi else None
    a, b = outer
    if inner is None:
        marked = escape(text[a:b])
    else:
        marked = (escape(text[a : inner[0]])
                  + f'<strong id="sentence" class="sentence">{escape(text[inner[0] : inner[1]])}'
                  + f"</strong>{escape(text[inner[1] : b])}")
    return (f'{escape(text[:a])}<mark id="cited" class="cited" tabindex="-1">{marked}</mark>'
            f"{escape(text[b:])}")


def http_link(url: str | None) -> str | None:
    """Only http(s) URLs become links; anything else (javascript:, data:) is dropped."""
    if url and urlsplit(url).scheme.lower() in ("http", "https"):
        return url
    return None


def source_router(*, named: bool = False) -> APIRouter:
    """GET /source/{id} of `default`, or with `named` of the collection in the path (mounted
    under /collections/{collection}); a private collection needs a search key."""
    router = APIRouter()
    Reader = Annotated[Scope, Depends(scope_dependency("search", named=named, link=True))]

    @router.get("/source/{document_id:path}", response_class=HTMLResponse)
    def source_page(document_id: str, scope: Reader, start: Offset = None,
                    end: Offset = None, highlight_start: Offset = None,
                    highlight_end: Offset = None) -> HTMLResponse:
        """The document as a page, the cited span highlighted and scrolled into view."""
        row = scope.collection.get_document(document_id, filter=scope.filter)
        text = row.text or ""
        cited = checked_span(start, end, len(text), "start/end")
        sentence = checked_span(highlight_start, highlight_end, len(text),
                                "highlight_start/highlight_end")
        meta = [escape(part) for part in (row.date, row.source) if part]
        link = http_link(row.url)
        if link:
            meta.append(f'<a href="{escape(link)}" rel="noopener noreferrer">original</a>')
        nonce = secrets.token_urlsafe(16)
        page = Template(widget_asset("source.html")).substitute(
            title=escape(row.title), meta=" · ".join(meta), nonce=nonce,
            body=render_text(text, cited, sentence),
        )
        return HTMLResponse(page, headers={
            "Content-Security-Policy": SOURCE_CSP.format(nonce=nonce),
            "Referrer-Policy": "no-referrer"})

    return router
