"""The highlighter alone: which sentence of a passage answers, from the words alone."""

from __future__ import annotations

from qa.highlight import highlight_of, match_sentences

PASSAGE = ("The talks opened in Istanbul on Friday. "
           "The Russian delegation was led by Vladimir Medinsky, an aide to the president. "
           "Ukraine sent its defence minister.")


def test_the_sentence_holding_the_questions_words_is_chosen() -> None:
    [match] = match_sentences("who led the Russian delegation?", [PASSAGE])
    assert match is not None
    assert PASSAGE[match.start:match.end].startswith("The Russian delegation was led")


def test_a_question_phrase_outranks_the_same_words_apart() -> None:
    scattered = "Russian officials arrived. The delegation of Ukraine was late."
    together = "The Russian delegation arrived first."
    matches = match_sentences("Russian delegation", [scattered, together])
    assert matches[0] is not None and matches[1] is not None
    assert matches[1].score > matches[0].score


def test_coverage_is_the_share_of_the_questions_weight_found_and_at_most_one() -> None:
    full, none = match_sentences("Medinsky delegation", [PASSAGE, "Ukraine sent a minister."])
    assert full is not None and none is not None
    assert full.coverage == 1.0
    assert none.coverage == 0.0


def test_a_sentence_with_what_the_question_asks_for_is_marked_typed() -> None:
    [when] = match_sentences("when did the talks open in Istanbul?", [PASSAGE])
    assert when is not None and when.typed, "Friday answers a 'when' question"
    [who] = match_sentences("who opened the talks in Istanbul?", ["The talks opened in Istanbul."])
    assert who is not None and not who.typed, "no name besides the question's own words"


def test_an_empty_passage_has_no_match_and_no_highlight() -> None:
    assert match_sentences("anything?", [""]) == [None]
    assert highlight_of("", 0, None) is None


def test_highlight_offsets_point_into_the_document() -> None:
    offset = 1000
    [match] = match_sentences("who led the Russian delegation?", [PASSAGE])
    highlight = highlight_of(PASSAGE, offset, match)
    assert highlight is not None
    document = " " * offset + PASSAGE
    assert document[highlight.start:highlight.end] == highlight.text
