"""HTML, PDF and DOCX → `Parsed`: canonical text with page and heading sections.

Each parser lays its blocks out as plain text, one blank line apart, and records where each page
or heading section starts, so a chunk's offsets, page and heading path all point into the same
stored text. The libraries are imported inside each parser: `qa --help` stays instant.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from qa.errors import InvalidInput, UnsupportedFile
from qa.types import MAX_TEXT_CHARS, Parsed, Section

if TYPE_CHECKING:
    from docx.document import Document as DocxDocument
    from lxml.etree import _Element

BLOCK_SEPARATOR = "\n\n"
_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.I)
# Trafilatura's last-resort fallback can hand back raw page elements; these are never content.
_PAGE_CHROME = frozenset({"nav", "header", "footer", "aside", "script", "style", "form", "menu"})
_CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # OLE2: encrypted OOXML and legacy .doc
# A DOCX is a zip: 65 KB can hold 8 MB of XML. Caps on what unzipping may cost, checked on the
# zip's directory before anything is inflated (images included in the total, not the XML).
MAX_DOCX_XML_BYTES = 32 * 1024 * 1024
MAX_DOCX_UNZIPPED_BYTES = 256 * 1024 * 1024


class TextBuilder:
    """Appends blocks and headings; each heading (or page) opens a new section. Stops with a
    clear error once the text passes MAX_TEXT_CHARS, before a hostile file costs more."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._parts: list[str] = []
        self._length = 0
        self._sections: list[Section] = []
        self._open_at = 0
        self._page: int | None = None
        self._stack: list[tuple[int, str]] = []

    @property
    def heading_path(self) -> tuple[str, ...]:
        return tuple(title for _, title in self._stack)

    def add_block(self, text: str) -> None:
        text = text.strip()
        if not text:
            return
        if self._parts:
            self._parts.append(BLOCK_SEPARATOR)
            self._length += len(BLOCK_SEPARATOR)
        self._parts.append(text)
        self._length += len(text)
        if self._length > MAX_TEXT_CHARS:
            raise InvalidInput(f"{self._name}: text is over the {MAX_TEXT_CHARS:,}-character "
                               "limit for one document; split it")

    def add_heading(self, level: int, title: str) -> None:
        title = " ".join(title.split())
        if not title:
            return
        self._open_section()
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self.add_block(title)

    def start_page(self, page: int) -> None:
        self._open_section()
        self._page = page

    def _open_section(self) -> None:
        """Close the running section; the separator before the next block belongs to it."""
        start = self._length + (len(BLOCK_SEPARATOR) if self._parts else 0)
        if start > self._open_at and self._length > self._open_at:
            self._sections.append(Section(self._open_at, start, self._page, self.heading_path))
        self._open_at = start

    def build(self) -> tuple[str, tuple[Section, ...]]:
        text = "".join(self._parts)
        sections = list(self._sections)
        if len(text) > self._open_at:
            sections.append(Section(self._open_at, len(text), self._page, self.heading_path))
        if sections:
            # The last section's trailing separator is not part of the text.
            last = sections[-1]
            sections[-1] = Section(last.start, len(text), last.page, last.heading_path)
        return text, tuple(s for s in sections if s.start < len(text))


# -- HTML --------------------------------------------------------------------------------------


def parse_html(data: bytes, name: str) -> Parsed:
    """Main content via trafilatura (nav, scripts and boilerplate dropped); <hN> give headings."""
    import trafilatura

    if not data.strip():
        raise InvalidInput(f"{name}: file is empty")
    extracted = trafilatura.bare_extraction(
        data,
        with_metadata=True,
        include_comments=False,
        include_tables=True,
        # A missed paragraph costs an answer; recall also keeps the headings of short pages.
        favor_recall=True,
        # Dates come from the page's markup (meta tags, JSON-LD, <time>), not guessed from text.
        date_extraction_params={"extensive_search": False, "original_date": True},
    )
    # as_dict=False (the default) gives a Document; the dict branch is for the type checker.
    if extracted is None or isinstance(extracted, dict) or extracted.body is None:
        raise InvalidInput(f"{name}: no main text found in the HTML")
    builder = TextBuilder(name)
    _walk_html(extracted.body, builder)
    text, sections = builder.build()
    if not text.strip():
        raise InvalidInput(f"{name}: no main text found in the HTML")
    meta: dict[str, Any] = {
        "date": extracted.date,
        "url": extracted.url,
        "author": extracted.author,
        "sitename": extracted.sitename,
    }
    return Parsed(
        text=text,
        metadata={k: v for k, v in meta.items() if v},
        sections=sections,
        title=extracted.title or None,
    )


def _walk_html(element: _Element, builder: TextBuilder) -> None:
    """Trafilatura's XML: <head rend="hN">, <p>, <list>/<item>, <table>/<row>/<cell>, ..."""
    if len(element) == 0 and element.tag not in _PAGE_CHROME:  # a page of one bare paragraph
        builder.add_block(_block_text(element))
    for child in element:
        tag = child.tag
        if tag in _PAGE_CHROME:
            continue
        if tag == "head":
            rend = child.get("rend") or "h2"
            level = int(rend[1]) if re.fullmatch(r"h[1-6]", rend) else 2
            builder.add_heading(level, _inline_text(child))
        elif tag == "list":
            builder.add_block("\n".join(f"- {_inline_text(item)}" for item in child.iter("item")
                                        if _inline_text(item)))
        elif tag == "table":
            rows = (" | ".join(_inline_text(cell) for cell in row.iter("cell"))
                    for row in child.iter("row"))
            builder.add_block("\n".join(r for r in rows if r.strip(" |")))
        elif tag == "code":
            builder.add_block("".join(child.itertext()))
        elif child.find(".//head") is not None:
            _walk_html(child, builder)
        else:
            builder.add_block(_block_text(child))


def _inline_text(element: _Element) -> str:
    return " ".join("".join(element.itertext()).split())


def _block_text(element: _Element) -> str:
    """Whitespace collapsed within lines; line breaks kept (trafilatura's fallback uses them)."""
    lines = (" ".join(line.split()) for line in "".join(element.itertext()).splitlines())
    return "\n".join(line for line in lines if line)


# -- PDF ---------------------------------------------------------------------------------------


def parse_pdf(data: bytes, name: str) -> Parsed:
    """Text page by page via pypdf; each page is a section carrying its 1-based number."""
    if not data.strip():
        raise InvalidInput(f"{name}: file is empty")
    if b"%PDF-" not in data[:1024]:
        raise InvalidInput(f"{name}: not a PDF (no %PDF- header)")
    try:
        reader, pages = _read_pdf(data, name)
    except (InvalidInput, UnsupportedFile):
        raise
    except Exception as exc:  # pypdf raises many types on malformed files; each is a bad file
        raise InvalidInput(f"{name}: corrupt or unreadable PDF ({_first_line(exc)})") from None
    builder = TextBuilder(name)
    for number, page_text in enumerate(pages, start=1):
        if page_text.strip():
            builder.start_page(number)
            builder.add_block(page_text)
    text, sections = builder.build()
    if not text.strip():
        raise InvalidInput(
            f"{name}: no extractable text in {len(pages)} page(s) (scanned images need OCR)"
        )
    return Parsed(text=text, metadata=_pdf_metadata(reader), sections=sections,
                  title=_pdf_title(reader))


@contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """pypdf logs repairs ("EOF marker not found") to stderr; a file's fate is reported by us."""
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_pdf(data: bytes, name: str) -> tuple[Any, list[str]]:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError

    with _quiet_pypdf():
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many PDFs are encrypted only to set permissions, with an empty user password.
            try:
                opened = reader.decrypt("")
            except DependencyError as exc:
                raise UnsupportedFile(f"{name}: encrypted PDF needs {_first_line(exc)}") from None
            if not opened:
                raise UnsupportedFile(
                    f"{name}: PDF is encrypted with a password; decrypt it first"
                )
        return reader, [_clean_page(page.extract_text() or "") for page in reader.pages]


def _clean_page(text: str) -> str:
    """Layout line breaks inside sentences joined, blank-line runs collapsed, NULs dropped.

    pypdf ends every printed line with a newline, and the chunker and highlighter treat a
    newline as a sentence end; a line that runs on into a lowercase word is one sentence.
    """
    lines = [line.strip() for line in text.replace("\x00", "").splitlines()]
    text = "\n".join(lines)
    text = re.sub(r"(?<=-)\n(?=[a-z])", "", text)  # "well-\nknown" → "well-known"
    text = re.sub(r"(?<=[^\s.!?:])\n(?=[a-z(])|(?<=[,;])\n(?=\S)", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _pdf_title(reader: Any) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:  # a broken info dictionary costs the title, not the document
        return None
    cleaned = " ".join(str(title or "").split())
    return cleaned or None


def _pdf_metadata(reader: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"pages": len(reader.pages)}
    try:
        info = reader.metadata
        created = info.creation_date if info else None
        author = info.author if info else None
    except Exception:  # dates in PDFs are often malformed; keep the text
        return meta
    if isinstance(created, dt.datetime):
        meta["date"] = created.date().isoformat()
    if author and str(author).strip():
        meta["author"] = str(author).strip()
    return meta


# -- DOCX --------------------------------------------------------------------------------------


def parse_docx(data: bytes, name: str) -> Parsed:
    """Paragraphs and tables in body order via python-docx; "Heading N" styles give headings."""
    import docx

    if not data.strip():
        raise InvalidInput(f"{name}: file is empty")
    if data.startswith(_CFB_MAGIC):
        raise UnsupportedFile(
            f"{name}: password-protected (encrypted) or legacy binary Word file; "
            "save it as an unencrypted .docx"
        )
    try:
        _check_docx_sizes(data, name)
        document = docx.Document(io.BytesIO(data))
        builder = TextBuilder(name)
        for kind, level, text in _docx_blocks(document):
            if kind == "heading":
                builder.add_heading(level, text)
            else:
                builder.add_block(text)
        props = document.core_properties
        title, created, author = props.title, props.created, props.author
    except (InvalidInput, UnsupportedFile):
        raise
    except Exception as exc:  # zip, XML and package errors all mean a damaged file
        raise InvalidInput(f"{name}: corrupt or unreadable DOCX ({_first_line(exc)})") from None
    text, sections = builder.build()
    if not text.strip():
        raise InvalidInput(f"{name}: document has no text")
    meta: dict[str, Any] = {}
    if isinstance(created, dt.datetime):
        meta["date"] = created.date().isoformat()
    if author and author.strip():
        meta["author"] = author.strip()
    return Parsed(text=text, metadata=meta, sections=sections, title=(title or "").strip() or None)


def _check_docx_sizes(data: bytes, name: str) -> None:
    """Refuse a DOCX whose members would inflate past the caps (the zip's sizes are what
    zipfile lets each member inflate to, so checking them bounds the work)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
    xml = sum(m.file_size for m in members if m.filename.endswith((".xml", ".rels")))
    total = sum(m.file_size for m in members)
    if xml > MAX_DOCX_XML_BYTES or total > MAX_DOCX_UNZIPPED_BYTES:
        raise InvalidInput(
            f"{name}: DOCX unzips to {total:,} bytes ({xml:,} of XML), over the limits of "
            f"{MAX_DOCX_UNZIPPED_BYTES:,} bytes and {MAX_DOCX_XML_BYTES:,} bytes of XML"
        )


def _docx_blocks(document: DocxDocument) -> Iterator[tuple[str, int, str]]:
    """("heading", level, text) or ("block", 0, text) in the order they appear in the body."""
    from docx.table import Table

    levels, default_level = _heading_levels(document)
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            yield "block", 0, "\n".join(_table_rows(item))
            continue
        # `item.style` would search every style per paragraph (32 s on an 8 MB body); the
        # paragraph's style id and a table made once per document cost nothing.
        style_id = item._p.style
        level = levels.get(style_id, default_level) if style_id else default_level
        if level:
            yield "heading", level, item.text
        else:
            yield "block", 0, item.text


def _heading_levels(document: DocxDocument) -> tuple[dict[str, int], int]:
    """Each paragraph style id → its heading level (0: not a heading), and the level of the
    default paragraph style. A "Heading N" style, or one based on it, is a level-N heading."""
    from docx.enum.style import WD_STYLE_TYPE

    named: dict[str, tuple[str, str | None]] = {}
    default_id: str | None = None
    for element in document.styles.element.style_lst:
        if element.type != WD_STYLE_TYPE.PARAGRAPH or element.styleId is None:
            continue
        named.setdefault(element.styleId, (element.name_val or "", element.basedOn_val))
        if element.default and default_id is None:
            default_id = element.styleId
    levels: dict[str, int] = {}
    for style_id in named:
        chain: list[str] = []
        current: str | None = style_id
        level = 0
        while current in named and current not in chain and current not in levels:
            chain.append(current)
            style_name, current = named[current]
            match = _HEADING_STYLE.match(style_name)
            if match:
                level = int(match.group(1))
                break
        else:
            level = levels.get(current, 0) if current is not None else 0
        for seen in chain:  # every style on the walked chain shares the level found
            levels[seen] = level
    return levels, levels.get(default_id, 0) if default_id else 0


def _table_rows(table: Any) -> Iterable[str]:
    for row in table.rows:
        cells: list[str] = []
        seen: set[int] = set()
        for cell in row.cells:
            # A merged cell is returned once per grid column it spans.
            if id(cell._tc) in seen:
                continue
            seen.add(id(cell._tc))
            cells.append(" ".join(cell.text.split()))
        line = " | ".join(cells)
        if line.strip(" |"):
            yield line


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
