"""The chat widget in real Chromium, embedded in a page on another origin than the API."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from playwright.sync_api import Page, expect

from .conftest import (
    MARKUP_DOCUMENT,
    MARKUP_QUESTION,
    QUESTION,
    HostSite,
    ask,
    embed,
    inline,
    shadow_active_part,
)

pytestmark = pytest.mark.slow


def test_script_tag_answers_across_origins_and_citation_shows_highlighted_span(
    page: Page, host_site: HostSite, api: str
) -> None:
    page.goto(embed(host_site, api, "embed.html"))
    assert urllib.parse.urlsplit(page.url).port != urllib.parse.urlsplit(api).port
    launcher = page.locator("qa-chat [part=launcher]")
    expect(launcher).to_be_visible()  # the host's `button{display:none}` does not reach it
    launcher.click()
    expect(page.locator("qa-chat [part=panel]")).to_be_visible()
    assert shadow_active_part(page) == "input"

    ask(page, QUESTION)
    expect(page.locator("qa-chat [part=question]")).to_have_text(QUESTION)
    first = page.locator("qa-chat [part~=passage]").first
    expect(first).to_be_visible(timeout=30_000)
    expect(first.locator("mark[part=highlight]")).to_contain_text("Medinsky")
    expect(first.locator("[part=meta]")).to_contain_text("Istanbul peace talks")
    expect(first.locator("time")).to_have_attribute("datetime", "2025-05-15")

    link = first.locator("a[part=citation]")
    href = link.get_attribute("href")
    assert href and href.startswith(f"{api}/source/")
    with page.context.expect_page() as opened:
        link.click()
    source = opened.value
    source.wait_for_load_state()

    query = urllib.parse.parse_qs(urllib.parse.urlsplit(href).query)
    start, end = int(query["start"][0]), int(query["end"][0])
    document_id = urllib.parse.unquote(urllib.parse.urlsplit(href).path)[len("/source/"):]
    text = httpx.get(f"{api}/documents/{urllib.parse.quote(document_id)}").json()["text"]
    cited = source.locator("mark#cited")
    assert cited.text_content() == text[start:end]
    expect(cited).to_be_in_viewport()
    expect(source.locator("#sentence")).to_contain_text("Medinsky")
    expect(source.locator("#sentence")).to_be_in_viewport()


def test_document_markup_is_shown_as_text_and_never_run(
    page: Page, host_site: HostSite, api: str
) -> None:
    page.goto(embed(host_site, api, "markup.html", open=""))
    ask(page, MARKUP_QUESTION)
    passage = page.locator("qa-chat [part~=passage]", has_text="Keeper's log")
    expect(passage).to_be_visible(timeout=30_000)
    expect(passage).to_contain_text('Visitors wrote <img src=x onerror="window.__qaPwned=1">')
    expect(passage).to_contain_text("<script>window.__qaPwned=2</script>")
    expect(passage.locator("strong")).to_have_text(MARKUP_DOCUMENT.title)
    assert page.locator("qa-chat img, qa-chat li script").count() == 0

    with page.context.expect_page() as opened:
        passage.locator("a[part=citation]").click()
    source = opened.value
    source.wait_for_load_state()
    expect(source.locator("h1")).to_have_text(MARKUP_DOCUMENT.title)
    expect(source.locator("#text")).to_have_text(MARKUP_DOCUMENT.text)
    assert source.locator("#text img, #text script").count() == 0
    assert source.locator("a[href^='javascript:']").count() == 0
    for shown in (page, source):
        assert shown.evaluate("() => window.__qaPwned") is None


def test_escape_closes_the_panel_and_returns_focus_to_the_launcher(
    page: Page, host_site: HostSite, api: str
) -> None:
    page.goto(embed(host_site, api, "escape.html"))
    page.locator("qa-chat [part=launcher]").click()
    panel = page.locator("qa-chat [part=panel]")
    expect(panel).to_be_visible()
    page.keyboard.type("half a question")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    assert shadow_active_part(page) == "launcher"
    expect(page.locator("qa-chat [part=launcher]")).to_have_attribute("aria-expanded", "false")


def test_controls_are_labelled_and_results_are_announced(
    page: Page, host_site: HostSite, api: str
) -> None:
    page.goto(embed(host_site, api, "a11y.html", open="", title="Ask the archive"))
    expect(page.get_by_role("button", name="Close chat: Ask the archive")).to_be_visible()
    expect(page.get_by_role("button", name="Close", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(page.get_by_role("textbox", name="Your question")).to_be_visible()
    expect(page.get_by_role("dialog", name="Ask the archive")).to_be_visible()
    # Answers are announced by one short status line; the log itself is not a live region.
    expect(page.get_by_role("status")).to_have_count(1)
    expect(page.get_by_role("region", name="Conversation")).not_to_have_attribute(
        "aria-live", re.compile(".+"))


def test_panel_fits_a_360px_viewport_without_horizontal_overflow(
    page: Page, host_site: HostSite, api: str, tmp_path: Path
) -> None:
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(embed(host_site, api, "narrow.html"))
    page.locator("qa-chat [part=launcher]").click()
    ask(page, QUESTION)
    expect(page.locator("qa-chat [part~=passage]").first).to_be_visible(timeout=30_000)
    screenshot = tmp_path / "widget-360.png"
    page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 0

    page_overflow = page.evaluate(
        "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert page_overflow[0] <= page_overflow[1]
    box = page.locator("qa-chat [part=panel]").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
    log = page.evaluate(
        "() => { const log = document.querySelector('qa-chat').shadowRoot"
        ".querySelector('[part=log]'); return [log.scrollWidth, log.clientWidth]; }"
    )
    assert log[0] <= log[1]


def test_unreachable_server_shows_a_readable_message_and_the_widget_recovers(
    page: Page, host_site: HostSite, api: str
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # bound, then released: nothing listens
    page.goto(inline(host_site, api, "down.html", f'endpoint="{nobody}" open'))
    ask(page, QUESTION)
    error = page.locator("qa-chat [part=error]")
    expect(error).to_contain_text("Could not reach the server", timeout=15_000)
    expect(page.locator("qa-chat input[part=input]")).to_be_enabled()

    page.locator("qa-chat").evaluate(f"(el) => el.setAttribute('endpoint', '{api}')")
    ask(page, QUESTION)
    expect(page.locator("qa-chat [part~=passage]").first).to_be_visible(timeout=30_000)


def test_server_rejection_shows_the_problem_detail(
    page: Page, host_site: HostSite, api: str
) -> None:
    page.goto(inline(host_site, api, "reject.html", f'endpoint="{api}" open'))
    ask(page, "why " * 100)
    expect(page.locator("qa-chat [part=error]")).to_contain_text(
        "(422): question: String should have at most 300 characters"
    )


def test_slow_answer_shows_a_spinner_then_a_timeout_message(
    page: Page, host_site: HostSite, api: str, silent_port: int
) -> None:
    page.goto(inline(host_site, api, "slow.html",
                     f'endpoint="http://127.0.0.1:{silent_port}" timeout="1500" open'))
    ask(page, QUESTION)
    expect(page.locator("qa-chat [part=spinner]")).to_be_visible()
    expect(page.locator("qa-chat [part=error]")).to_contain_text("taking too long",
                                                                 timeout=10_000)
    expect(page.locator("qa-chat [part=spinner]")).to_have_count(0)


def test_origin_outside_cors_origins_is_refused(
    page: Page, host_site: HostSite, api: str
) -> None:
    # Same files, another origin: "localhost" is not in QA_CORS_ORIGINS, so the browser blocks.
    url = embed(host_site, api, "other-origin.html", open="").replace("127.0.0.1", "localhost", 1)
    page.goto(url)
    ask(page, QUESTION)
    expect(page.locator("qa-chat [part=error]")).to_contain_text("Could not reach the server",
                                                                 timeout=15_000)


def test_k_attribute_limits_the_passages_shown(
    page: Page, host_site: HostSite, api: str
) -> None:
    page.goto(inline(host_site, api, "k.html", f'endpoint="{api}" k="2" open'))
    ask(page, QUESTION)
    expect(page.locator("qa-chat [part~=passage]")).to_have_count(2, timeout=30_000)


def test_removing_the_widget_aborts_the_question_in_flight(
    page: Page, host_site: HostSite, api: str, silent_port: int
) -> None:
    page.goto(inline(host_site, api, "remove.html",
                     f'endpoint="http://127.0.0.1:{silent_port}" timeout="60000" open'))
    ask(page, QUESTION)
    expect(page.locator("qa-chat [part=spinner]")).to_be_visible()
    page.evaluate("() => { window.removedChat = document.querySelector('qa-chat');"
                  " window.removedChat.remove(); }")
    page.wait_for_function(
        "() => window.removedChat.shadowRoot.querySelector('[part=status]')"
        ".textContent === 'Cancelled.'", timeout=5_000)


def test_lang_attribute_translates_the_controls(
    page: Page, host_site: HostSite, api: str
) -> None:
    page.goto(inline(host_site, api, "fr.html", f'endpoint="{api}" lang="fr" open'))
    expect(page.get_by_role("button", name="Envoyer")).to_be_visible()
    expect(page.get_by_role("textbox", name="Votre question")).to_be_visible()


def answer_event(page: Page) -> None:
    """Keep the detail of the next `qa-chat:answer` event in window.answered."""
    page.evaluate("() => document.addEventListener('qa-chat:answer',"
                  " (event) => { window.answered = event.detail; }, { once: true })")


def test_found_answer_comes_first_with_its_source_and_its_passage_expandable(
    page: Page, host_site: HostSite, api: str
) -> None:
    page.goto(inline(host_site, api, "found.html", f'endpoint="{api}" open'))
    ask(page, QUESTION)
    card = page.locator("qa-chat [part~=answer-card]")
    expect(card.locator("[part=answer]")).to_contain_text("Medinsky", timeout=30_000)
    # The bubble comes straight after the question, before any other passage.
    assert page.locator("qa-chat [part=turn] > :nth-child(2)").get_attribute("part") == \
        "passage answer-card"
    expect(card.locator("[part=meta]")).to_contain_text("Istanbul peace talks")
    expect(card.locator("time")).to_have_attribute("datetime", "2025-05-15")
    expect(card.locator("a[part=citation]")).to_have_text("View source")
    expect(page.locator("qa-chat [part=no-answer]")).to_have_count(0)

    context = card.locator("[part=text]")
    expect(context).to_be_hidden()
    card.locator("summary[part=toggle]").click()
    expect(context).to_be_visible()
    expect(context.locator("mark[part=highlight]")).to_contain_text("Medinsky")
    expect(page.locator("qa-chat h3[part=more]")).to_have_text("More passages")


def test_question_the_documents_cannot_answer_says_so_and_shows_no_answer(
    page: Page, host_site: HostSite, api: str
) -> None:
    # Waits on the backend's `answer` field: without it, any passage counts as found.
    page.goto(inline(host_site, api, "not-found.html", f'endpoint="{api}" open'))
    ask(page, "what is the boiling point of tungsten?")
    expect(page.locator("qa-chat [part=no-answer]")).to_have_text(
        "I couldn\u2019t find this in these documents.", timeout=30_000)
    expect(page.locator("qa-chat [part=answer]")).to_have_count(0)
    expect(page.locator("qa-chat mark")).to_have_count(0)
    expect(page.get_by_role("status")).to_contain_text("No answer found in these documents")
    # The closest passages wait behind a toggle.
    passages = page.locator("qa-chat [part~=passage]")
    expect(passages.first).to_be_hidden()
    page.locator("qa-chat [part=related] > summary").click()
    expect(passages.first).to_be_visible()


def test_more_passages_under_the_threshold_are_collapsed(
    page: Page, host_site: HostSite, api: str
) -> None:
    # Waits on the backend's `answer` field (its threshold).
    page.goto(inline(host_site, api, "threshold.html", f'endpoint="{api}" k="8" open'))
    answer_event(page)
    ask(page, QUESTION)
    expect(page.locator("qa-chat [part=answer]")).to_be_visible(timeout=30_000)
    detail = page.evaluate("() => window.answered")
    assert detail["answer"] is not None, "the server sent no `answer`"
    threshold = detail["answer"]["threshold"]
    rest = page.locator("qa-chat ol[part=answers] > li")
    assert rest.count() == len(detail["passages"]) - 1
    for i, passage in enumerate(detail["passages"][1:]):
        collapsed = rest.nth(i).locator(":scope > details").count() == 1
        assert collapsed == (passage["confidence"] < threshold), (i, passage["confidence"])


def test_greeting_offers_the_sites_examples_and_asking_one_answers_it(
    page: Page, host_site: HostSite, api: str
) -> None:
    # Only non-empty strings count: the number and the blank are dropped.
    examples = f'["{QUESTION}", 3, "  ", "Who hosted the talks?"]'
    page.goto(inline(host_site, api, "examples.html", f"endpoint=\"{api}\" open "
                     f"data-examples='{examples}'"))
    greeting = page.locator("qa-chat [part=greeting]")
    expect(greeting).to_contain_text("Ask a question about these documents.")
    buttons = page.locator("qa-chat button[part=example]")
    expect(buttons).to_have_text([QUESTION, "Who hosted the talks?"])
    buttons.first.click()
    expect(page.locator("qa-chat [part=question]")).to_have_text(QUESTION)
    expect(page.locator("qa-chat [part=answer]")).to_contain_text("Medinsky", timeout=30_000)
    expect(greeting).to_be_hidden()
    assert shadow_active_part(page) == "input"


def test_examples_that_are_not_a_json_list_are_ignored(
    page: Page, host_site: HostSite, api: str
) -> None:
    page.goto(inline(host_site, api, "bad-examples.html",
                     f'endpoint="{api}" open examples="{{not json"'))
    expect(page.locator("qa-chat [part=greeting]")).to_be_visible()
    expect(page.locator("qa-chat button[part=example]")).to_have_count(0)
    page.locator("qa-chat").evaluate("(el) => { el.examples = ['Who hosted the talks?']; }")
    expect(page.locator("qa-chat button[part=example]")).to_have_text(["Who hosted the talks?"])


def test_demo_page_answers_under_its_content_security_policy(page: Page, api: str) -> None:
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    response = page.goto(f"{api}/")
    assert response is not None and "frame-ancestors" in response.headers[
        "content-security-policy"]
    page.locator("qa-chat [part=launcher]").click()
    ask(page, QUESTION)
    first = page.locator("qa-chat [part~=passage]").first
    expect(first).to_be_visible(timeout=30_000)
    href = first.locator("a[part=citation]").get_attribute("href")
    assert href and href.startswith(f"{api}/source/")
    assert not violations, violations
