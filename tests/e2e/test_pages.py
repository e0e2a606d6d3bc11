"""The widget's HTTP side without a browser: the script, the demo page and the source page."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from html import unescape
from importlib import resources
from urllib.parse import quote

import httpx
import pytest

from qa.api.pages import http_link, render_text

from .conftest import MARKUP_DOCUMENT

WIDGET = resources.files("qa") / "widget" / "qa-chat.js"


@pytest.fixture(scope="module")
def http(api: str) -> Iterator[httpx.Client]:
    """A client of the module's live API (one index build for the whole module)."""
    with httpx.Client(base_url=api, timeout=30) as client:
        yield client


def test_widget_is_under_15_kb_gzipped() -> None:
    assert len(gzip.compress(WIDGET.read_bytes(), 9)) < 15 * 1024


def test_widget_is_ascii_so_a_host_page_charset_cannot_garble_it() -> None:
    WIDGET.read_bytes().decode("ascii")


def test_widget_never_parses_strings_as_html() -> None:
    source = WIDGET.read_text("utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source


def test_widget_script_is_javascript_with_a_cache_header(http: httpx.Client) -> None:
    response = http.get("/widget.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/javascript")
    assert "max-age=" in response.headers["cache-control"]
    assert response.text == WIDGET.read_text("utf-8")
    again = http.get("/widget.js", headers={"If-None-Match": response.headers["etag"]})
    assert again.status_code == 304


def test_demo_page_embeds_the_widget_with_a_relative_endpoint(http: httpx.Client) -> None:
    response = http.get("/", headers={"Host": "attacker.example"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<script src="widget.js" data-endpoint="."' in response.text
    assert "attacker.example" not in response.text  # nothing a shared cache could keep


def citation(http: httpx.Client) -> dict[str, object]:
    body = http.post("/ask", json={"question": "who led the Russian delegation?", "k": 1}).json()
    passage = body["passages"][0]
    return {**passage["citation"], "highlight": passage["highlight"]}


def test_source_page_marks_the_cited_span_and_the_sentence(http: httpx.Client) -> None:
    cited = citation(http)
    document = http.get(f"/documents/{cited['document_id']}").json()
    highlight = cited["highlight"]
    assert isinstance(highlight, dict)
    response = http.get(f"/source/{cited['document_id']}", params={
        "start": cited["start"], "end": cited["end"],
        "highlight_start": highlight["start"], "highlight_end": highlight["end"],
    })
    assert response.status_code == 200
    assert "script-src 'nonce-" in response.headers["content-security-policy"]
    marked = re.search(r'<mark id="cited"[^>]*>(.*?)</mark>', response.text, re.S)
    assert marked is not None
    inner = re.sub(r"</?strong[^>]*>", "", marked.group(1))
    assert unescape(inner) == document["text"][cited["start"]:cited["end"]]
    sentence = re.search(r'<strong id="sentence"[^>]*>(.*?)</strong>', response.text, re.S)
    assert sentence is not None and unescape(sentence.group(1)) == highlight["text"]


@pytest.mark.parametrize("params, message", [
    ({"start": 10}, "give both bounds"),
    ({"start": 50, "end": 10}, "need start < end"),
    ({"start": 0, "end": 10**7}, "need start < end"),
    ({"highlight_start": 5, "highlight_end": 5}, "highlight_start/highlight_end"),
])
def test_source_page_rejects_a_bad_span(http: httpx.Client, params: dict[str, int],
                                        message: str) -> None:
    document_id = citation(http)["document_id"]
    response = http.get(f"/source/{document_id}", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert message in response.json()["detail"]


def test_source_page_shows_document_markup_as_text(http: httpx.Client) -> None:
    response = http.get(f"/source/{quote(MARKUP_DOCUMENT.id)}", params={"start": 0, "end": 20})
    assert response.status_code == 200
    assert "<img" not in response.text and "window.__qaPwned=2</script>" not in response.text
    assert "&lt;script&gt;window.__qaPwned=2&lt;/script&gt;" in response.text
    assert 'href="javascript' not in response.text


def test_source_page_of_an_unknown_document_is_404(http: httpx.Client) -> None:
    response = http.get("/source/no/such/document.txt")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_render_text_escapes_markup_inside_and_outside_the_mark() -> None:
    text = "<b>x</b> then <img src=x onerror=alert(1)> and <script>go()</script>"
    html = render_text(text, (9, 42), (14, 42))
    assert "<img" not in html and "<script" not in html and "<b>" not in html
    assert html.startswith("&lt;b&gt;x&lt;/b&gt; ")
    assert '<mark id="cited" class="cited" tabindex="-1">then <strong id="sentence"' in html


def test_render_text_clips_the_sentence_to_the_cited_span() -> None:
    html = render_text("0123456789", (2, 6), (4, 9))
    assert html == ('01<mark id="cited" class="cited" tabindex="-1">23'
                    '<strong id="sentence" class="sentence">45</strong></mark>6789')


def test_only_http_urls_become_links() -> None:
    assert http_link("https://example.org/a") == "https://example.org/a"
    assert http_link("javascript:alert(1)") is None
    assert http_link(" JavaScript:alert(1)") is None
    assert http_link("data:text/html,x") is None
