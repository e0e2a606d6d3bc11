"""Files → `Document`: decoding, front matter, the `date YYYY-MM-DD` prefix, titles and ids.

Each supported suffix maps to one parser in `PARSERS`; new formats register there. Text and
Markdown are parsed here; HTML, PDF and DOCX in `qa.formats` (which imports its heavy libraries
inside each parser, so importing it here costs nothing). `load_file` (a path) and `load_bytes`
(an upload) apply the same rules.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import math
import os
import re
import stat
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from qa.errors import InvalidInput, QAError, UnsupportedFile
from qa.formats import parse_docx, parse_html, parse_pdf
from qa.types import MAX_TEXT_CHARS, Document, Parsed, Section

MAX_FILE_BYTES = 50 * 1024 * 1024
# Front matter and metadata are small by nature; caps keep a hostile file from expanding.
MAX_FRONT_MATTER_CHARS = 64 * 1024
MAX_METADATA_BYTES = 64 * 1024  # serialized as JSON, UTF-8
MAX_METADATA_DEPTH = 32  # nested lists/objects; the metadata object itself is depth 1

_FRONT_MATTER = re.compile(
    r"\A\ufeff?---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.S
)
_DATE_PREFIX = re.compile(r"\A\s*date[ \t:]+(\d{4}-\d{2}-\d{2})\b[ \t]*", re.I)
_ATX_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
# Text SQLite cannot keep whole: `substr` stops at NUL, and a lone surrogate is not UTF-8.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def text_problem(value: str, what: str) -> str | None:
    """Why `value` cannot be stored as text (a NUL or a lone surrogate), or None."""
    unstorable = _UNSTORABLE.search(value)
    if unstorable is None:
        return None
    if unstorable.group() == "\x00":
        return f"{what} must not contain NUL characters"
    return f"{what} is not valid Unicode (lone surrogate)"


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


class _FrontMatterLoader(yaml.SafeLoader):
    """SafeLoader without aliases and with a depth cap: an alias bomb or a 3,000-deep nest is
    refused while composing, before it can expand or recurse."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise InvalidInput("uses a YAML alias (*name); write the value out instead")
        self._depth += 1
        try:
            if self._depth > MAX_METADATA_DEPTH:
                raise InvalidInput(f"is nested deeper than {MAX_METADATA_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def split_front_matter(text: str, name: str) -> tuple[str, dict[str, Any]]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return text, {}
    if len(match.group(1)) > MAX_FRONT_MATTER_CHARS:
        raise InvalidInput(f"{name}: front matter is longer than {MAX_FRONT_MATTER_CHARS} "
                           "characters")
    try:
        meta = yaml.load(match.group(1), Loader=_FrontMatterLoader) or {}  # noqa: S506
    except InvalidInput as exc:
        raise InvalidInput(f"{name}: front matter {exc.detail}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 2}" if mark is not None else ""  # after the ---
        raise InvalidInput(f"{name}: front matter is not valid YAML ({problem}{where})") from None
    if not isinstance(meta, dict):
        raise InvalidInput(f"{name}: front matter must be a mapping")
    try:
        return text[match.end() :], {str(k): _plain(v) for k, v in meta.items()}
    except TypeError as exc:
        raise InvalidInput(f"{name}: front matter {exc}") from None


def _plain(value: Any) -> Any:
    """YAML dates and nested values → JSON values; any other YAML type (`!!binary`, `!!set`,
    `!!omap`) is refused, so stored metadata is always plain JSON."""
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {_plain_key(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise TypeError(f"holds a {_yaml_type(value)} value; only text, numbers, true/false, "
                    "dates, lists and mappings are accepted")


def _plain_key(key: Any) -> str:
    if key is None or isinstance(key, str | bool | int | float | dt.date):
        return str(key)
    raise TypeError(f"has a {_yaml_type(key)} as a key; keys must be text")


def _yaml_type(value: Any) -> str:
    names = {bytes: "binary (!!binary)", set: "set (!!set)", tuple: "pair list (!!pairs)",
             float: "non-finite number (.nan/.inf)"}
    return names.get(type(value), type(value).__name__)


_UNSTORABLE_METADATA = "metadata must not contain NUL characters or unpaired surrogates"


def metadata_problem(value: Any) -> str | None:
    """Why `value` cannot be stored as a document's metadata, or None when it can: a JSON
    object of at most MAX_METADATA_DEPTH levels and MAX_METADATA_BYTES serialized, with text
    keys, finite numbers and no NUL (SQLite text functions stop at NUL)."""
    if not isinstance(value, Mapping):
        return "metadata must be an object"
    stack: list[tuple[Any, int]] = [(value, 1)]  # iterative: a deep value cannot recurse us
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list):
            if depth > MAX_METADATA_DEPTH:
                return f"metadata is nested deeper than {MAX_METADATA_DEPTH} levels"
            if isinstance(item, Mapping):
                for key in item:
                    if not isinstance(key, str):
                        return "metadata keys must be text"
                    if _UNSTORABLE.search(key):
                        return _UNSTORABLE_METADATA
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            if _UNSTORABLE.search(item):
                return _UNSTORABLE_METADATA
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "metadata numbers must be finite"
        elif item is not None and not isinstance(item, bool | int):
            return f"metadata holds a {type(item).__name__}, which is not a JSON value"
    size = len(json.dumps(dict(value), ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        return f"metadata is {size} bytes as JSON, over the {MAX_METADATA_BYTES}-byte limit"
    return None


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
    """Why `value` cannot be a document id, or None when it can.

    An id is a path in URLs and on the source page: dot segments would address another
    document, and invisible or direction-changing characters would show one id as another.
    """
    if not value.strip():
        return "document id must not be empty"
    if len(value) > MAX_ID_CHARS:
        return f"document id is longer than {MAX_ID_CHARS} characters"
    if value != value.strip():
        return "document id must not start or end with whitespace"
    for c in value:
        category = unicodedata.category(c)
        if category == "Cs":  # on Linux, a file name byte that is not UTF-8
            return f"document id must be valid UTF-8 text (it holds {_escaped(c)})"
        if category in ("Cc", "Zl", "Zp"):
            return f"document id must not contain control characters ({_escaped(c)})"
        if category == "Cf":  # bidi overrides and isolates, zero-width characters, BOM
            return f"document id must not contain invisible formatting characters ({_escaped(c)})"
    if any(segment in (".", "..") for segment in value.split("/")):
        return "document id must not contain '.' or '..' path segments"
    return None


def shown(name: str) -> str:
    """A file name as one printable line: undecodable bytes as \\xNN, controls escaped."""
    return "".join(c if c.isprintable() and unicodedata.category(c) != "Cf" else _escaped(c)
                   for c in name)


def _escaped(c: str) -> str:
    if "\udc80" <= c <= "\udcff":  # a byte that was not UTF-8, kept by surrogateescape
        return f"\\x{ord(c) - 0xDC00:02x}"
    return c.encode("unicode_escape").decode("ascii")


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
    """Apply the shared rules: date prefix, title fallbacks, trimmed canonical text, and the caps
    on text and metadata every document meets, whether from a file, an upload or JSON."""
    meta = dict(parsed.metadata)
    meta.update(extra_metadata or {})
    text = parsed.text
    sections = parsed.sections
    prefix = _DATE_PREFIX.match(text)
    if prefix:
        meta.setdefault("date", prefix.group(1))
    cut = prefix.end() if prefix else len(text) - len(text.lstrip())
    text = text[cut:].rstrip()
    name = shown(source or doc_id)
    if not text.strip():
        raise InvalidInput(f"{name}: document has no text")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidInput(f"{name}: text is {len(text):,} characters, over the "
                           f"{MAX_TEXT_CHARS:,}-character limit for one document; split it")
    unstorable = _UNSTORABLE.search(text)
    if unstorable:
        what = "a NUL character" if unstorable.group() == "\x00" else "an unpaired surrogate"
        raise InvalidInput(f"{name}: text contains {what} at character {unstorable.start()}")
    problem = id_problem(doc_id) or metadata_problem(meta)
    if problem:
        raise InvalidInput(f"{name}: {problem}")
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


def read_regular_file(path: Path, *, follow_link: bool = True) -> bytes:
    """The bytes of a regular file, at most MAX_FILE_BYTES: the type and size are checked on
    the opened file, so a device, a FIFO or /proc cannot hang us or fill memory."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO opens at once, unread
    if not follow_link:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_link:
            raise InvalidInput(f"{shown(str(path))}: is a symbolic link; not followed") from None
        raise
    with open(fd, "rb", closefd=True) as file:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise InvalidInput(f"{shown(str(path))}: is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise UnsupportedFile(f"{shown(str(path))}: not a regular file "
                                  "(a device, FIFO or socket); only regular files are indexed")
        _check_size(shown(str(path)), info.st_size)
        data = file.read(MAX_FILE_BYTES + 1)  # st_size can lie (/proc files say 0)
    _check_size(shown(str(path)), len(data))
    return data


def load_file(path: Path, doc_id: str | None = None, *, follow_link: bool = True) -> Document:
    """A file on disk → its Document; the id defaults to the path (see document_id_for)."""
    name = shown(str(path))
    parser = parser_for(name, path.suffix)
    doc_id = doc_id or document_id_for(path)
    problem = id_problem(doc_id)
    if problem:
        raise InvalidInput(f"{name}: this file name cannot be a document id: {problem}; "
                           "rename the file")
    parsed = parse_bytes(parser, read_regular_file(path, follow_link=follow_link), name,
                         path.suffix.lower())
    return build_document(doc_id, parsed, source=str(path))


def load_bytes(name: str, data: bytes, doc_id: str | None = None) -> Document:
    """An uploaded file's bytes → its Document, with the same rules as `load_file`; the id
    defaults to the file name as sent."""
    suffix = PurePosixPath(name).suffix
    parser = parser_for(shown(name), suffix)
    _check_size(shown(name), len(data))
    parsed = parse_bytes(parser, data, shown(name), suffix.lower())
    return build_document(doc_id or id_from_filename(name), parsed, source=name)


@dataclass(frozen=True)
class Refused:
    """A file found under a folder that is not indexed, and why (reported, not read)."""

    path: Path
    reason: str


def walk_files(paths: list[Path], *, follow_links: bool = False) -> Iterator[Path | Refused]:
    """Files named directly, and supported files under folders (recursive, hidden skipped).

    Under a folder only regular files are taken; a symbolic link is refused unless
    `follow_links`, and then only when it resolves inside one of the given `paths`, so a link
    cannot pull in a file from elsewhere (a secret, /proc, /dev/zero).
    """
    roots = [p.resolve() for p in paths if p.is_dir()]
    for path in paths:
        if not path.is_dir():
            yield path
            continue
        visited: set[tuple[int, int]] = set()
        unreadable: list[OSError] = []
        for folder, dirs, files in os.walk(path, onerror=unreadable.append,
                                           followlinks=follow_links):
            here = Path(folder)
            info = here.stat()
            if (info.st_dev, info.st_ino) in visited:  # a link back up the tree
                dirs[:] = []
                continue
            visited.add((info.st_dev, info.st_ino))
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and _link_allowed(here / d, roots, follow_links))
            for name in sorted(files):
                found = here / name
                if name.startswith(".") or found.suffix.lower() not in PARSERS:
                    continue
                if found.is_symlink() and not follow_links:
                    yield Refused(found, f"{shown(str(found))}: is a symbolic link; not "
                                  "followed (use --follow-links for links inside the folders "
                                  "being indexed)")
                elif found.is_symlink() and not _inside(found.resolve(), roots):
                    yield Refused(found, f"{shown(str(found))}: is a symbolic link to "
                                  f"{shown(str(found.resolve()))}, outside the folders being "
                                  "indexed; not followed")
                else:
                    yield found
        for error in unreadable:
            where = shown(str(error.filename))
            yield Refused(Path(error.filename), f"{where}: folder not read ({error.strerror})")


def _link_allowed(path: Path, roots: list[Path], follow_links: bool) -> bool:
    return not path.is_symlink() or (follow_links and _inside(path.resolve(), roots))


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def iter_files(paths: list[Path], *, follow_links: bool = False) -> Iterator[Path]:
    """The files `walk_files` would index, without the refused ones."""
    for found in walk_files(paths, follow_links=follow_links):
        if isinstance(found, Path):
            yield found
