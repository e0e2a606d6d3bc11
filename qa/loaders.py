"""Files → `Document`: decoding, front matter, the `date YYYY-MM-DD` prefix, titles and ids.

Each supported suffix maps to one parser in `PARSERS`; new formats register there. Text and
Markdown are parsed here; HTML, PDF and DOCX in `qa.formats` (which imports its heavy libraries
inside each parser, so importing it here costs nothing). `load_file` (a path) and `load_bytes`
(an upload) apply the same rules.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from qa.errors import InvalidInput, QAError, UnsupportedFile
from qa.formats import parse_docx, parse_html, parse_pdf
from qa.types import Document, Parsed, Section

MAX_FILE_BYTES = 50 * 1024 * 1024

_FRONT_MATTER = re.compile(
    r"\A\ufeff?---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S
)
_DATE_PREFIX = re.compile(r"\A\s*date[ \t:]+(\d{4}-\d{2}-\d{2})\b[ \t]*", re.I)
_ATX_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def decode_text(data: bytes, name: str) -> str:
    """Strict UTF-8, so a wrong encoding is reported rather than indexed as mojibake."""
    if not data.strip():
        raise InvalidInput(f"{name}: file is empty")
    if b"\x00" in data[:8192]:
        raise UnsupportedFile(f"{name}: looks binary (contains NUL bytes)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"{name}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def split_front_matter(text: str, name: str) -> tuple[str, dict[str, Any]]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return text, {}
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as exc:
        message = f"{name}: front matter is not valid YAML ({exc})".splitlines()[0]
        raise InvalidInput(message) from None
    if not isinstance(meta, dict):
        raise InvalidInput(f"{name}: front matter must be a mapping")
    return text[match.end() :], {str(k): _plain(v) for k, v in meta.items()}


def _plain(value: Any) -> Any:
    """YAML dates and nested values → JSON-safe values."""
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def markdown_sections(text: str) -> tuple[Section, ...]:
    """Each ATX heading opens a section carrying the path of headings above it."""
    heads = [(m.start(), len(m.group(1)), m.group(2).strip()) for m in _ATX_HEADING.finditer(text)]
    if not heads:
        return ()
    sections = []
    stack: list[tuple[int, str]] = []
    if heads[0][0] > 0:
        sections.append(Section(0, heads[0][0]))
    for i, (start, level, title) in enumerate(heads):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, title))
        end = heads[i + 1][0] if i + 1 < len(heads) else len(text)
        sections.append(Section(start, end, heading_path=tuple(t for _, t in stack)))
    return tuple(sections)


def parse_plain(data: bytes, name: str) -> Parsed:
    text, meta = split_front_matter(decode_text(data, name), name)
    return Parsed(text=text, metadata=meta)


def parse_markdown(data: bytes, name: str) -> Parsed:
    parsed = parse_plain(data, name)
    return Parsed(parsed.text, parsed.metadata, markdown_sections(parsed.text))


Parser = Callable[[bytes, str], Parsed]

PARSERS: dict[str, Parser] = {
    ".txt": parse_plain,
    ".md": parse_markdown,
    ".markdown": parse_markdown,
    ".html": parse_html,
    ".htm": parse_html,
    ".pdf": parse_pdf,
    ".docx": parse_docx,
}


def supported_suffixes() -> list[str]:
    return sorted(PARSERS)


def parser_for(name: str, suffix: str) -> Parser:
    """The parser for a file name's suffix, or UnsupportedFile naming the supported ones."""
    parser = PARSERS.get(suffix.lower())
    if parser is None:
        raise UnsupportedFile(f"{name}: unsupported file type {suffix or '(none)'!r}; "
                              f"supported: {', '.join(supported_suffixes())}")
    return parser


MAX_ID_CHARS = 512


def id_problem(value: str) -> str | None:
    """Why `value` cannot be a document id, or None when it can."""
    if not value.strip():
        return "document id must not be empty"
    if len(value) > MAX_ID_CHARS:
        return f"document id is longer than {MAX_ID_CHARS} characters"
    if value != value.strip():
        return "document id must not start or end with whitespace"
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
        return "document id must not contain control characters"
    return None


def id_from_filename(filename: str) -> str:
    """An uploaded file's id is its name as sent, as a clean relative posix path."""
    parts = [p for p in PurePosixPath(filename.replace("\\", "/")).parts
             if p not in ("", ".", "..", "/")]
    doc_id = "/".join(parts)
    problem = id_problem(doc_id)
    if problem:
        raise InvalidInput(f"file name {filename!r}: {problem}")
    return doc_id


def parse_bytes(parser: Parser, data: bytes, name: str, suffix: str) -> Parsed:
    """Run a parser; a third-party parser choking on hostile bytes is bad input, not a 500."""
    try:
        return parser(data, name)
    except QAError:
        raise
    except Exception as exc:
        raise InvalidInput(f"{name}: could not be read as {suffix} ({type(exc).__name__})"
                           ) from None


def _check_size(name: str, size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise InvalidInput(f"{name}: file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit")


def build_document(
    doc_id: str,
    parsed: Parsed,
    *,
    source: str | None = None,
    title: str | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> Document:
    """Apply the shared rules: date prefix, title fallbacks, trimmed canonical text."""
    meta = dict(parsed.metadata)
    meta.update(extra_metadata or {})
    text = parsed.text
    sections = parsed.sections
    prefix = _DATE_PREFIX.match(text)
    if prefix:
        meta.setdefault("date", prefix.group(1))
    cut = prefix.end() if prefix else len(text) - len(text.lstrip())
    text = text[cut:].rstrip()
    if not text.strip():
        raise InvalidInput(f"{source or doc_id}: document has no text")
    sections = tuple(
        Section(max(s.start - cut, 0), min(s.end - cut, len(text)), s.page, s.heading_path)
        for s in sections
        if s.end - cut > 0 and s.start - cut < len(text)
    )
    heading = _ATX_HEADING.search(text)
    resolved_title = (
        title
        or _str_or_none(meta.pop("title", None))
        or parsed.title
        or (heading.group(2).strip() if heading else None)
        or title_from_name(Path(source).stem if source else doc_id)
    )
    return Document(
        id=doc_id,
        text=text,
        title=resolved_title,
        source=source,
        date=_str_or_none(meta.pop("date", None)),
        url=_str_or_none(meta.pop("url", None)),
        metadata=meta,
        sections=sections,
    )


def title_from_name(stem: str) -> str:
    """"2025-05-15-istanbul-peace-talks" → "Istanbul peace talks"."""
    words = re.sub(r"^\d{4}-\d{2}-\d{2}[-_ ]*", "", stem).replace("_", " ").replace("-", " ")
    words = " ".join(words.split()) or stem
    return words[:1].upper() + words[1:]


def _str_or_none(value: Any) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value)


def document_id_for(path: Path, root: Path | None = None) -> str:
    """Stable ids from the source path: relative to the working directory when inside it."""
    resolved = path.resolve()
    base = (root or Path.cwd()).resolve()
    try:
        return resolved.relative_to(base).as_posix()
    except ValueError:
        return resolved.as_posix()


def load_file(path: Path, doc_id: str | None = None) -> Document:
    """A file on disk → its Document; the id defaults to the path (see document_id_for)."""
    parser = parser_for(str(path), path.suffix)
    _check_size(str(path), path.stat().st_size)
    parsed = parse_bytes(parser, path.read_bytes(), str(path), path.suffix.lower())
    return build_document(doc_id or document_id_for(path), parsed, source=str(path))


def load_bytes(name: str, data: bytes, doc_id: str | None = None) -> Document:
    """An uploaded file's bytes → its Document, with the same rules as `load_file`; the id
    defaults to the file name as sent."""
    suffix = PurePosixPath(name).suffix
    parser = parser_for(name, suffix)
    _check_size(name, len(data))
    parsed = parse_bytes(parser, data, name, suffix.lower())
    return build_document(doc_id or id_from_filename(name), parsed, source=name)


def iter_files(paths: list[Path]) -> Iterator[Path]:
    """Files named directly, and supported files under folders (recursive, hidden skipped)."""
    for path in paths:
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                rel = found.relative_to(path).parts
                if found.is_file() and found.suffix.lower() in PARSERS and not any(
                    p.startswith(".") for p in rel
                ):
                    yield found
        else:
            yield path
