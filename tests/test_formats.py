"""HTML, PDF and DOCX: main text, pages and headings, through indexing to cited passages.

Every file is made here (HTML as a string, DOCX with python-docx, PDF with fpdf2): no downloads.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docx
import httpx
import pytest
from click.testing import CliRunner
from conftest import LiveServer
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

from qa.chunking import get_encoding, split_document
from qa.cli import cli
from qa.collection import Collection
from qa.embedding import Embedder
from qa.errors import InvalidInput, UnsupportedFile
from qa.formats import MAX_DOCX_XML_BYTES, TextBuilder
from qa.indexing import IndexSummary, index_paths
from qa.loaders import document_id_for, load_file
from qa.retrieval import retrieve
from qa.settings import Settings
from qa.types import MAX_TEXT_CHARS, Document, Passage

# -- files made by the tests -------------------------------------------------------------------

_TEMPLATES = (
    "The {t} was reviewed by the committee during the spring meeting.",
    "Several members asked for a clearer summary of the {t} before the next review.",
    "Records about the {t} are kept in the archive for seven years.",
    "A short report on the {t} is shared with every department each quarter.",
    "Changes to the {t} must be approved in writing by two officers.",
    "The {t} follows the guidance published by the national regulator.",
    "Questions about the {t} can be sent to the office by post or email.",
    "Last year the {t} was updated twice to reflect new requirements.",
    "Staff received training on the {t} in small groups.",
    "The board expects the {t} to remain stable over the coming years.",
)


def filler(topic: str, sentences: int) -> str:
    """Plain on-topic prose, long enough that a chunk starts inside the section it fills."""
    return " ".join(_TEMPLATES[i % len(_TEMPLATES)].format(t=topic) for i in range(sentences))


PDF_ANSWER = "The Lake Tamsin reservoir holds 48 million cubic metres of water when it is full."
PDF_PAGES = [
    "Annual report of the Northvale water board.\n" + filler("annual report", 20),
    "Budget.\n" + filler("budget for pipe repairs", 20),
    "Reservoirs.\n" + filler("storage plan", 20) + "\n" + PDF_ANSWER + "\n"
    + filler("storage plan", 4),
    "Staffing.\n" + filler("staffing plan", 20),
]

DOCX_ANSWER = ("On Linux, install QuillMate with sudo apt install quillmate and start the "
               "service with systemctl start quillmate.")

HTML_ANSWER = ("To reset a forgotten Harbourline password, open the login page, choose "
               "Forgot password and follow the link sent to your email within 15 minutes.")


def make_pdf(pages: list[str], title: str | None = None,
             created: dt.datetime | None = None) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_font("Helvetica", size=10)
    if title:
        pdf.set_title(title)
    pdf.set_creation_date(created or dt.datetime(2024, 6, 1, tzinfo=dt.UTC))
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 5, text)
    data = bytes(pdf.output())
    assert len(PdfReader(io.BytesIO(data)).pages) == len(pages), "a page overflowed"
    return data


def encrypt_pdf(data: bytes, user_password: str, owner_password: str = "owner") -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password=owner_password,
                   algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "QuillMate administration guide"
    document.core_properties.created = dt.datetime(2023, 11, 20, 9, 30)
    document.core_properties.author = "Ops team"
    document.add_paragraph("This guide explains how to run the QuillMate note server.")
    document.add_heading("Installation", level=1)
    document.add_paragraph(filler("installation checklist", 6))
    document.add_heading("Windows", level=2)
    document.add_paragraph("On Windows, run the QuillMate installer from the downloads page.")
    document.add_paragraph(filler("Windows installer", 16))
    document.add_heading("Linux", level=2)
    document.add_paragraph(filler("Linux package", 18))
    document.add_paragraph(DOCX_ANSWER)
    document.add_heading("Backups", level=1)
    table = document.add_table(rows=2, cols=2)
    for (r, c), value in {(0, 0): "Schedule", (0, 1): "Nightly",
                          (1, 0): "Kept for", (1, 1): "30 days"}.items():
        table.cell(r, c).text = value
    document.add_paragraph(filler("backup policy", 16))
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_html(*, date: bool = True) -> str:
    date_meta = '<meta property="article:published_time" content="2024-03-05">' if date else ""
    return f"""<!doctype html>
<html lang="en"><head>
<title>Harbourline help centre</title>
<meta property="og:title" content="Harbourline account help">
{date_meta}
<link rel="canonical" href="https://help.example.org/account">
<style>body {{ font-family: sans-serif }} .STYLETEXT {{}}</style>
<script>window.tracker = "SCRIPTTEXT";</script>
</head><body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/pricing">Pricing NAVTEXT</a></li></ul></nav>
<header><div class="banner">Subscribe to the Harbourline newsletter BANNERTEXT</div></header>
<main><article>
<h1>Harbourline account help</h1>
<p>This page answers common questions about Harbourline accounts and sign-in.</p>
<h2>Billing</h2>
<p>{filler("billing cycle", 18)}</p>
<h2>Sign-in</h2>
<p>{filler("sign-in procedure", 6)}</p>
<h3>Passwords</h3>
<p>{filler("password policy", 18)}</p>
<p>{HTML_ANSWER}</p>
<h3>Two-factor codes</h3>
<p>{filler("two-factor setup", 18)}</p>
</article></main>
<footer><p>Copyright 2024 Harbourline Ltd. All rights reserved. FOOTERTEXT</p></footer>
</body></html>"""


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def page_of(document: Document, offset: int) -> int | None:
    section = document.section_at(offset)
    return section.page if section else None


# -- HTML --------------------------------------------------------------------------------------


def test_html_keeps_main_content_and_drops_navigation_scripts_styles_and_footer(
        tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "help.html", make_html()))
    assert HTML_ANSWER in doc.text
    for boilerplate in ("NAVTEXT", "BANNERTEXT", "FOOTERTEXT", "SCRIPTTEXT", "STYLETEXT"):
        assert boilerplate not in doc.text


def test_html_title_date_and_url_come_from_the_page_metadata(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "help.html", make_html()))
    assert (doc.title, doc.date, doc.url) == (
        "Harbourline account help", "2024-03-05", "https://help.example.org/account"
    )


def test_html_without_a_date_in_its_metadata_gets_no_guessed_date(tmp_path: Path) -> None:
    # The footer says "Copyright 2024": a date guessed from text would be wrong.
    assert load_file(write(tmp_path / "help.html", make_html(date=False))).date is None


def test_html_headings_give_nested_heading_paths(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "help.htm", make_html()))
    at = doc.section_at(doc.text.index(HTML_ANSWER))
    assert at is not None
    assert at.heading_path == ("Harbourline account help", "Sign-in", "Passwords")
    billing = doc.section_at(doc.text.index("billing cycle"))
    assert billing is not None and billing.heading_path == ("Harbourline account help", "Billing")


def test_html_short_page_keeps_its_headings_and_a_bare_fragment_is_read(
        tmp_path: Path) -> None:
    short = load_file(write(tmp_path / "tea.html", "<html><body><h1>Tea</h1><p>Green tea is "
                            "steamed.</p><h2>Black</h2><p>Black tea is fully oxidised.</p>"
                            "</body></html>"))
    black = short.section_at(short.text.index("fully oxidised"))
    assert black is not None and black.heading_path == ("Tea", "Black")
    note = load_file(write(tmp_path / "note.html", "<html><body><p>A one-line note.</p>"
                           "</body></html>"))
    assert note.text == "A one-line note."
    fragment = load_file(write(tmp_path / "bare.html", "<p>Just a fragment with no html element "
                               "at all, but text.</p>"))
    assert fragment.text == "Just a fragment with no html element at all, but text."


# -- PDF ---------------------------------------------------------------------------------------


def test_pdf_pages_become_sections_numbered_from_one(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "report.pdf", make_pdf(PDF_PAGES)))
    assert [s.page for s in doc.sections] == [1, 2, 3, 4]
    for section, first_line in zip(doc.sections, ["Annual report", "Budget.", "Reservoirs.",
                                                  "Staffing."], strict=True):
        assert doc.text[section.start:section.end].startswith(first_line)
    assert page_of(doc, doc.text.index("Lake Tamsin")) == 3
    assert doc.metadata["pages"] == 4


def test_pdf_lines_wrapped_by_the_layout_are_joined_back_into_sentences(tmp_path: Path) -> None:
    data = make_pdf(PDF_PAGES)
    sentence = filler("storage plan", 2).split(". ")[1]  # printed three times on page 3
    raw = PdfReader(io.BytesIO(data)).pages[2].extract_text()
    assert raw.count(sentence) < 3, "the layout should wrap this sentence at least once"
    doc = load_file(write(tmp_path / "report.pdf", data))
    page3 = next(s for s in doc.sections if s.page == 3)
    assert doc.text[page3.start:page3.end].count(sentence) == 3


def test_pdf_title_and_date_come_from_the_document_info(tmp_path: Path) -> None:
    data = make_pdf(PDF_PAGES[:1], title="Northvale annual report",
                    created=dt.datetime(2024, 2, 29, 12, 0, tzinfo=dt.UTC))
    doc = load_file(write(tmp_path / "r.pdf", data))
    assert (doc.title, doc.date) == ("Northvale annual report", "2024-02-29")


def test_pdf_blank_pages_keep_the_numbering_of_the_pages_after_them(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "gap.pdf", make_pdf([PDF_PAGES[0], "", PDF_PAGES[2]])))
    assert [s.page for s in doc.sections] == [1, 3]


def test_pdf_encrypted_only_to_set_permissions_is_read(tmp_path: Path) -> None:
    data = encrypt_pdf(make_pdf(PDF_PAGES), user_password="")
    doc = load_file(write(tmp_path / "locked.pdf", data))
    assert page_of(doc, doc.text.index("Lake Tamsin")) == 3


def test_a_chunk_that_spans_a_page_break_carries_the_page_it_starts_on(tmp_path: Path) -> None:
    # A cover page far shorter than a chunk: the first chunk must run on into page 2.
    pages = ["Northvale water board.\nAnnual report.", *PDF_PAGES[1:]]
    doc = load_file(write(tmp_path / "report.pdf", make_pdf(pages)))
    chunks = split_document(doc, chunk_tokens=200, overlap=48)
    assert (chunks[0].page, page_of(doc, chunks[0].end - 1)) == (1, 2)
    for chunk in chunks:
        assert chunk.page == page_of(doc, chunk.start)
        assert doc.text[chunk.start:chunk.end] == chunk.text


# -- DOCX --------------------------------------------------------------------------------------


def test_docx_heading_styles_give_heading_paths_and_properties_give_title_date(
        tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "guide.docx", make_docx()))
    assert (doc.title, doc.date, doc.metadata["author"]) == (
        "QuillMate administration guide", "2023-11-20", "Ops team"
    )
    linux = doc.section_at(doc.text.index(DOCX_ANSWER))
    assert linux is not None and linux.heading_path == ("Installation", "Linux")
    intro = doc.section_at(0)
    assert intro is not None and intro.heading_path == ()


def test_docx_tables_are_kept_in_body_order(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "guide.docx", make_docx()))
    row = doc.text.index("Schedule | Nightly\nKept for | 30 days")
    backups = doc.section_at(row)
    assert backups is not None and backups.heading_path == ("Backups",)


def test_docx_styles_are_resolved_once_per_document_not_per_paragraph(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """python-docx's `paragraph.style` searches every style: 32 s for an 8 MB body."""
    from docx.enum.style import WD_STYLE_TYPE
    from docx.styles.styles import Styles

    lookups = 0
    real = Styles.get_by_id

    def counted(self: Styles, *args: object) -> object:
        nonlocal lookups
        lookups += 1
        return real(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Styles, "get_by_id", counted)
    document = docx.Document()
    custom = document.styles.add_style("Chapter", WD_STYLE_TYPE.PARAGRAPH)
    custom.base_style = document.styles["Heading 1"]
    document.add_paragraph("Tides", style="Chapter")
    for n in range(200):
        document.add_paragraph(f"Paragraph {n} about the tide.")
    out = io.BytesIO()
    document.save(out)
    lookups = 0
    doc = load_file(write(tmp_path / "long.docx", out.getvalue()))
    assert lookups <= 2
    tail = doc.section_at(doc.text.index("Paragraph 199"))
    assert tail is not None and tail.heading_path == ("Tides",)  # a style based on Heading 1


def test_docx_that_unzips_past_the_cap_is_refused_before_parsing(tmp_path: Path) -> None:
    import zipfile

    packed = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(make_docx())) as source, \
            zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            target.writestr(member, source.read(member))
        target.writestr("customXml/item9.xml", b" " * (MAX_DOCX_XML_BYTES + 1))
    assert len(packed.getvalue()) < 200_000
    with pytest.raises(InvalidInput, match="bomb.docx: DOCX unzips to .* over the limits"):
        load_file(write(tmp_path / "bomb.docx", packed.getvalue()))


def test_extracted_text_stops_at_the_per_document_cap() -> None:
    builder = TextBuilder("big.html")
    with pytest.raises(InvalidInput, match="big.html: text is over the 4,000,000-character"):
        for _ in range(MAX_TEXT_CHARS // 1000 + 1):
            builder.add_block("x" * 1000)


# -- bad files ---------------------------------------------------------------------------------


def _corrupt_pdf() -> bytes:
    data = make_pdf(PDF_PAGES)
    return data[: len(data) // 3]  # cut mid-stream: no cross-reference table, no trailer


@pytest.mark.parametrize(
    ("name", "make", "error", "message"),
    [
        ("secret.pdf", lambda: encrypt_pdf(make_pdf(PDF_PAGES), "s3cret"), UnsupportedFile,
         "encrypted with a password"),
        ("cut.pdf", _corrupt_pdf, InvalidInput, "corrupt or unreadable PDF"),
        ("fake.pdf", lambda: b"this is not a pdf", InvalidInput, "not a PDF"),
        ("empty.pdf", lambda: b"", InvalidInput, "empty"),
        ("scanned.pdf", lambda: make_pdf(["", ""]), InvalidInput, "no extractable text"),
        ("cut.docx", lambda: make_docx()[:2000], InvalidInput, "corrupt or unreadable DOCX"),
        ("locked.docx", lambda: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600),
         UnsupportedFile, "encrypted"),
        ("empty.docx", lambda: b"", InvalidInput, "empty"),
        ("blank.docx", lambda: _blank_docx(), InvalidInput, "no text"),
        ("empty.html", lambda: b"  \n", InvalidInput, "empty"),
        ("chrome.html", lambda: b"<html><body><nav>Home</nav><script>x()</script></body></html>",
         InvalidInput, "no main text"),
    ],
)
def test_bad_files_give_a_clear_error_naming_the_file(
        tmp_path: Path, name: str, make: object, error: type[Exception], message: str) -> None:
    assert callable(make)
    with pytest.raises(error, match=message) as info:
        load_file(write(tmp_path / name, make()))
    assert name in str(info.value)


def _blank_docx() -> bytes:
    out = io.BytesIO()
    docx.Document().save(out)
    return out.getvalue()


# -- indexed, asked, cited ---------------------------------------------------------------------


@dataclass(frozen=True)
class FormatCorpus:
    folder: Path
    settings: Settings
    summary: IndexSummary


@pytest.fixture(scope="module")
def format_corpus(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> FormatCorpus:
    """One PDF, DOCX and HTML plus an encrypted PDF and a cut DOCX, indexed once per module."""
    root = tmp_path_factory.mktemp("formats")
    folder = root / "docs"
    folder.mkdir()
    write(folder / "report.pdf", make_pdf(PDF_PAGES, title="Northvale water board report"))
    write(folder / "guide.docx", make_docx())
    write(folder / "help.html", make_html())
    write(folder / "secret.pdf", encrypt_pdf(make_pdf(PDF_PAGES), "s3cret"))
    write(folder / "broken.docx", make_docx()[:2000])
    settings = Settings(index_dir=root / "index")
    collection = Collection.open(settings, embedder, create=True)
    try:
        summary = index_paths(collection, [folder], progress=False)
    finally:
        collection.close()
    return FormatCorpus(folder, settings, summary)


@pytest.fixture
def format_index(format_corpus: FormatCorpus, embedder: Embedder) -> Iterator[Collection]:
    opened = Collection.open(format_corpus.settings, embedder)
    yield opened
    opened.close()


def test_indexing_reports_encrypted_and_corrupt_files_and_indexes_the_rest(
        format_corpus: FormatCorpus) -> None:
    summary = format_corpus.summary
    failed = {Path(path).name: message for path, message in summary.errors}
    assert set(failed) == {"secret.pdf", "broken.docx"}
    assert "encrypted with a password" in failed["secret.pdf"]
    assert "corrupt or unreadable DOCX" in failed["broken.docx"]
    assert (summary.added, summary.files) == (3, 5)


def top_passage_with(passages: list[Passage], answer: str) -> Passage:
    assert passages, "no passages"
    assert answer in passages[0].text, [p.text[:80] for p in passages]
    return passages[0]


def assert_exact_span(collection: Collection, passage: Passage) -> None:
    c = passage.citation
    assert collection.get_document(c.document_id).text[c.start:c.end] == passage.text


def test_question_answered_on_a_pdf_page_cites_that_page(format_index: Collection,
                                                         format_corpus: FormatCorpus) -> None:
    doc = load_file(format_corpus.folder / "report.pdf")
    answer_at = doc.text.index(PDF_ANSWER)
    page_start = next(s.start for s in doc.sections if s.page == 3)
    # The answer lies over a chunk's length into page 3: no chunk from page 2 can reach it.
    assert len(get_encoding().encode(doc.text[page_start:answer_at])) > 200

    passage = top_passage_with(
        retrieve(format_index, "How much water does the Lake Tamsin reservoir hold?", 3,
                 "hybrid"), PDF_ANSWER)
    assert passage.citation.document_id == document_id_for(format_corpus.folder / "report.pdf")
    assert passage.citation.page == 3
    assert passage.citation.title == "Northvale water board report"
    assert_exact_span(format_index, passage)


def test_question_under_a_docx_heading_cites_its_heading_path(format_index: Collection,
                                                              format_corpus: FormatCorpus) -> None:
    passage = top_passage_with(
        retrieve(format_index, "How do I start the QuillMate service on Linux?", 3, "hybrid"),
        DOCX_ANSWER)
    assert passage.citation.document_id == document_id_for(format_corpus.folder / "guide.docx")
    assert passage.citation.heading_path == ("Installation", "Linux")
    assert passage.citation.page is None
    assert_exact_span(format_index, passage)


def test_question_under_an_html_heading_cites_its_heading_path(format_index: Collection,
                                                               format_corpus: FormatCorpus) -> None:
    passage = top_passage_with(
        retrieve(format_index, "How can I reset my forgotten Harbourline password?", 3,
                 "hybrid"), HTML_ANSWER)
    assert passage.citation.heading_path == ("Harbourline account help", "Sign-in", "Passwords")
    assert passage.citation.url == "https://help.example.org/account"
    assert_exact_span(format_index, passage)


@pytest.fixture
def served_formats(format_corpus: FormatCorpus, embedder: Embedder) -> Iterator[str]:
    with LiveServer(format_corpus.settings, embedder) as server:
        yield server.url


def test_ask_over_http_returns_page_and_heading_path_in_citations(served_formats: str) -> None:
    with httpx.Client(base_url=served_formats, timeout=30) as client:
        pdf = client.post("/ask", json={"question": "How much water does the Lake Tamsin "
                                                    "reservoir hold?", "k": 1})
        docx_answer = client.post("/ask", json={"question": "How do I start the QuillMate "
                                                            "service on Linux?", "k": 1})
    assert pdf.status_code == 200 and docx_answer.status_code == 200
    pdf_citation = pdf.json()["passages"][0]["citation"]
    assert (pdf_citation["page"], pdf_citation["heading_path"]) == (3, [])
    docx_citation = docx_answer.json()["passages"][0]["citation"]
    assert (docx_citation["page"], docx_citation["heading_path"]) == (
        None, ["Installation", "Linux"]
    )


@pytest.mark.slow
def test_qa_index_reports_each_bad_file_in_one_line_and_indexes_the_rest(
        format_corpus: FormatCorpus, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["index", str(format_corpus.folder), "--index", str(tmp_path / "cli-index")])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2
    assert any("secret.pdf: PDF is encrypted with a password" in line for line in errors)
    assert any("broken.docx: corrupt or unreadable DOCX" in line for line in errors)
    assert "3 added" in result.stderr and "2 failed" in result.stderr
