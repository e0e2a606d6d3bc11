"""Ranking's pure parts (feature fusion and passage assembly, on hand-made candidates), and
`retrieve` asked from many threads at once on a real collection."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qa.collection import Collection
from qa.retrieval import (
    MAX_MERGED,
    Features,
    assemble_passages,
    fuse_features,
    fuse_rankings,
    retrieve,
)
from qa.types import ChunkRow

SEED_QUESTIONS = Path(__file__).resolve().parent.parent / "seeds" / "questions.jsonl"


def row(chunk_id: int, start: int, end: int, document: str = "doc") -> ChunkRow:
    return ChunkRow(chunk_id, document, start, end, "x" * (end - start), None, (), "Title",
                    None, None, None)


def test_fusion_prefers_the_candidate_strong_on_every_feature() -> None:
    ranked = fuse_features([Features(1, 0.2, 1.0, 0.1), Features(2, 0.9, 8.0, 0.9),
                            Features(3, 0.5, 3.0, 0.4)])
    assert [c for c, _ in ranked] == [2, 3, 1]


def test_fusion_is_blind_to_a_features_scale() -> None:
    a = fuse_features([Features(1, 0.2, 1.0, 0.5), Features(2, 0.4, 2.0, 0.5)])
    b = fuse_features([Features(1, 0.2, 100.0, 0.5), Features(2, 0.4, 200.0, 0.5)])
    assert [c for c, _ in a] == [c for c, _ in b]
    assert [s for _, s in a] == [s for _, s in b]


def test_a_feature_equal_for_all_candidates_changes_nothing() -> None:
    ranked = fuse_features([Features(1, 0.3, 5.0, 0.2), Features(2, 0.6, 5.0, 0.2)])
    assert [c for c, _ in ranked] == [2, 1]


def test_no_candidates_no_ranking() -> None:
    assert fuse_features([]) == []


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = dict(fuse_rankings([[(1, 0.9), (2, 0.8)], [(2, 5.0), (3, 4.0)]], k=60))
    assert fused[2] == 1 / 62 + 1 / 61
    assert max(fused, key=fused.__getitem__) == 2


def test_neighbouring_chunks_merge_into_one_passage_up_to_the_limit() -> None:
    rows = {1: row(1, 0, 100), 2: row(2, 100, 200), 3: row(3, 200, 300)}
    spans = assemble_passages([(1, 3.0), (2, 2.0), (3, 1.0)], rows, k=5, sentence_scores={})
    assert [(s.start, s.end, s.parts) for s in spans][0] == (0, 200, MAX_MERGED)
    assert all(s.parts <= MAX_MERGED for s in spans)


def test_overlapping_passages_are_never_returned_twice() -> None:
    rows = {1: row(1, 0, 100), 2: row(2, 50, 150), 3: row(3, 60, 160), 4: row(4, 500, 600)}
    spans = assemble_passages([(1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0)], rows, k=5,
                              sentence_scores={})
    covered = [(s.start, s.end) for s in spans]
    for i, (a, b) in enumerate(covered):
        for c, d in covered[i + 1:]:
            assert b <= c or d <= a, covered


def test_a_deleted_chunk_is_skipped_and_k_limits_the_passages() -> None:
    rows = {2: row(2, 0, 10, "a"), 3: row(3, 0, 10, "b"), 4: row(4, 0, 10, "c")}
    spans = assemble_passages([(1, 9.0), (2, 3.0), (3, 2.0), (4, 1.0)], rows, k=2,
                              sentence_scores={})
    assert [s.lead.id for s in spans] == [2, 3]


def test_the_merged_span_takes_the_highlight_of_its_better_sentence() -> None:
    rows = {1: row(1, 0, 100), 2: row(2, 100, 200)}
    spans = assemble_passages([(1, 3.0), (2, 2.0)], rows, k=1,
                              sentence_scores={1: 0.2, 2: 0.9})
    assert spans[0].lead.id == 1 and spans[0].best_match == 2


def test_merged_neighbours_are_pieced_into_their_documents_own_text() -> None:
    text = "".join(chr(97 + i % 26) for i in range(400))

    def cut(chunk_id: int, start: int, end: int) -> ChunkRow:
        return ChunkRow(chunk_id, "doc", start, end, text[start:end], None, (), "Title",
                        None, None, None)

    overlapping = {1: cut(1, 100, 200), 2: cut(2, 150, 260)}
    span = assemble_passages([(1, 3.0), (2, 2.0)], overlapping, k=5, sentence_scores={})[0]
    assert (span.start, span.end) == (100, 260) and span.pieced_text() == text[100:260]
    # Two characters apart they are still neighbours, but nothing read holds the gap's text:
    # the passage is then read from the document.
    apart = {1: cut(1, 100, 200), 2: cut(2, 202, 260)}
    span = assemble_passages([(2, 3.0), (1, 2.0)], apart, k=5, sentence_scores={})[0]
    assert (span.start, span.end) == (100, 260) and span.pieced_text() is None


def test_questions_asked_at_once_get_the_answers_they_get_one_at_a_time(
        built_index: Collection) -> None:
    """Each question's keyword side runs on a thread of its own beside its embedding, and every
    read shares one SQLite connection: eight at once must not mix up whose result is whose."""
    with open(SEED_QUESTIONS, encoding="utf-8") as fh:
        questions = [json.loads(line)["question"] for line in fh] * 2
    for mode in ("hybrid", "dense", "keyword"):
        alone = {q: retrieve(built_index, q, 5, mode) for q in questions}
        built_index.embedder.clear_query_cache()  # embedded again, concurrently this time
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda q, m=mode: retrieve(built_index, q, 5, m),
                                     questions))
        assert all(passages for passages in together)
        assert together == [alone[q] for q in questions], mode
