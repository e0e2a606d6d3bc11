"""The chunker's rules: exact offsets, token limits, sentence snapping, overlap."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa.chunking import get_encoding, split_document, split_sentences, split_text
from qa.types import Document, Section

prose = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from(list(" .!?\n\n\t  …。“”'\"")),
    ),
    max_size=1500,
)


@settings(max_examples=300, deadline=None)
@given(text=prose, size=st.integers(16, 120), overlap_ratio=st.floats(0, 0.9))
def test_every_chunk_is_the_exact_slice_of_arbitrary_unicode(
    text: str, size: int, overlap_ratio: float
) -> None:
    overlap = int(size * overlap_ratio)
    windows = split_text(text, size, overlap)
    enc = get_encoding()
    covered = [False] * len(text)
    previous_start = -1
    for start, end, _ in windows:
        assert 0 <= start < end <= len(text)
        assert start > previous_start, "windows must advance"
        previous_start = start
        piece = text[start:end]
        assert piece == piece.strip(), "chunks are trimmed of surrounding whitespace"
        # Within limits, except a single indivisible character that encodes to many tokens.
        assert len(enc.encode_ordinary(piece)) <= size or len(piece) == 1
        for i in range(start, end):
            covered[i] = True
    missed = [c for c, hit in zip(text, covered, strict=True) if not hit and not c.isspace()]
    assert not missed, "every non-space character lies in some chunk"


@settings(max_examples=100, deadline=None)
@given(text=prose.filter(lambda t: t.strip()))
def test_document_chunks_carry_their_text(text: str) -> None:
    doc = Document(id="d", text=text, title="t")
    for chunk in split_document(doc, 32, 8):
        assert doc.text[chunk.start : chunk.end] == chunk.text


def test_chunks_end_on_sentence_boundaries_when_sentences_fit() -> None:
    text = " ".join(f"Sentence number {i} says something short." for i in range(60))
    for start, end, _ in split_text(text, 50, 10):
        assert text[end - 1] == "."
        assert text[start] == "S"


def test_overlap_repeats_trailing_sentences() -> None:
    text = " ".join(f"Fact {i} is true." for i in range(40))
    windows = split_text(text, 40, 12)
    assert all(b[0] < a[1] for a, b in zip(windows, windows[1:], strict=False))
    no_overlap = split_text(text, 40, 0)
    assert all(b[0] >= a[1] for a, b in zip(no_overlap, no_overlap[1:], strict=False))


def test_a_sentence_longer_than_a_window_is_cut_at_token_boundaries() -> None:
    text = "word " * 500
    windows = split_text(text.strip(), 64, 0)
    assert len(windows) >= 8
    assert all(tokens <= 64 for _, _, tokens in windows)


def test_abbreviations_do_not_end_sentences() -> None:
    text = "U.S. President Trump spoke. Dr. Smith agreed. It rained."
    assert [text[s:e] for s, e in split_sentences(text)] == [
        "U.S. President Trump spoke.", "Dr. Smith agreed.", "It rained."
    ]


def test_chunks_inherit_page_and_heading_of_their_section() -> None:
    text = "Intro text here.\n\nSetup steps follow here."
    doc = Document(id="d", text=text, title="t",
                   sections=(Section(0, 18, page=1), Section(18, len(text), 2, ("Setup",))))
    chunks = split_document(doc, 5, 0)
    assert chunks[0].page == 1 and chunks[-1].page == 2
    assert chunks[-1].heading_path == ("Setup",)


def test_overlap_not_smaller_than_size_is_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        split_text("text", 10, 10)
