"""Judging passages, scoring modes, and the cached index of a dataset's documents."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from qa.embedding import Embedder
from qa.eval.datasets import AnswerSpan, Dataset, Question, load_dataset
from qa.eval.judging import ANSWER, answer_run, document_run, passage_hits
from qa.eval.report import report_markdown, write_report, write_run_file
from qa.eval.retrievers import LocalRetriever
from qa.eval.runner import COMPLETE, Outcome, dataset_index, evaluate, score_mode
from qa.settings import Settings
from qa.types import Citation, Highlight, Passage


def passage(rank: int, doc: str, start: int, end: int, score: float = 1.0,
            confidence: float | None = None, text: str | None = None,
            highlight: tuple[int, int] | None = None) -> Passage:
    return Passage(
        rank=rank, score=score, text=text if text is not None else "x" * (end - start),
        confidence=confidence,
        citation=Citation(document_id=doc, title=doc, source=None, date=None, url=None,
                          chunk_id=rank, start=start, end=end),
        highlight=Highlight(highlight[0], highlight[1], "h") if highlight else None,
    )


GOLD = Question("q", "?", answers=("Ann",), spans=(AnswerSpan("doc", 20, 30),))


def test_a_passage_hits_only_when_its_span_covers_a_whole_gold_span() -> None:
    assert passage_hits(GOLD, passage(1, "doc", 10, 50))
    assert passage_hits(GOLD, passage(1, "doc", 20, 30))
    assert not passage_hits(GOLD, passage(1, "doc", 25, 60))  # cuts the answer
    assert not passage_hits(GOLD, passage(1, "doc", 0, 29))
    assert not passage_hits(GOLD, passage(1, "other", 10, 50))


def test_a_jsonl_passage_hits_when_it_contains_an_answer_string_in_any_case() -> None:
    question = Question("q", "?", answers=("Vladimir Medinsky",))
    assert passage_hits(question, passage(1, "d", 0, 30, text="…headed by VLADIMIR medinsky."))
    assert not passage_hits(question, passage(1, "d", 0, 30, text="headed by Medinsky"))


def test_documents_are_scored_by_their_best_passage() -> None:
    ranked = [passage(1, "A", 0, 5, 0.9), passage(2, "B", 0, 5, 0.8),
              passage(3, "A", 9, 15, 0.7)]
    assert document_run(ranked) == {"A": 0.9, "B": 0.8}


def test_every_answering_passage_counts_as_the_one_answer() -> None:
    ranked = [passage(1, "doc", 40, 60, 0.9), passage(2, "doc", 10, 35, 0.8),
              passage(3, "doc", 0, 31, 0.7)]
    assert list(answer_run(GOLD, ranked)) == ["doc#40-60", ANSWER]


def test_score_mode_gives_hand_checkable_metrics_and_no_answer_auroc() -> None:
    dataset = Dataset("t", "squad", ())
    q2 = Question("q2", "?", answers=("B",), spans=(AnswerSpan("doc", 100, 110),))
    impossible = Question("q3", "?", impossible=True)
    outcomes = [
        # q: hit at rank 1, and its highlight covers the answer.
        Outcome(GOLD, (passage(1, "doc", 10, 50, 0.9, 0.9, highlight=(15, 35)),),
                10.0, None),
        # q2: miss, miss, hit at rank 3.
        Outcome(q2, (passage(1, "doc", 0, 40, 0.9, 0.8), passage(2, "doc", 200, 240, 0.8),
                     passage(3, "doc", 90, 130, 0.7)), 30.0, None),
        # q3 (impossible): low confidence, as it should be.
        Outcome(impossible, (passage(1, "doc", 0, 40, 0.5, 0.2),), 20.0, None),
    ]
    result = score_mode(dataset, "dense", outcomes, 10)
    m = result.metrics
    assert m["questions"] == 2  # the impossible question is not counted in hit@k
    assert (m["hit@1"], m["hit@3"], m["hit@10"]) == (0.5, 1.0, 1.0)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 2, abs=1e-4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 2, abs=1e-4)
    assert m["highlight_hit@1"] == 0.5
    assert (m["latency_ms_p50"], m["latency_ms_p95"]) == (20.0, 29.0)
    # No-answer score 1 - 0.2 = 0.8 beats both answerable ones (0.1 and 0.2).
    assert m["no_answer_auroc"] == 1.0 and m["no_answer_questions"] == 1
    assert [o.first_hit for o in result.outcomes] == [1, 3, None]


def test_passages_without_confidence_give_null_no_answer_auroc_and_ece() -> None:
    impossible = Question("q3", "?", impossible=True)
    outcomes = [Outcome(GOLD, (passage(1, "doc", 10, 50),), 1.0, None),
                Outcome(impossible, (passage(1, "doc", 0, 5),), 1.0, None)]
    m = score_mode(Dataset("t", "squad", ()), "keyword", outcomes, 10).metrics
    assert m["no_answer_auroc"] is None and m["ece"] is None


def test_unanswerable_questions_add_calibration_and_answered_metrics_at_the_threshold(
        ) -> None:
    from qa.types import Answer

    def outcome(question: Question, start: int, confidence: float) -> Outcome:
        return Outcome(question, (passage(1, "doc", start, start + 40, 0.9, confidence),), 1.0,
                       None, Answer(confidence >= 0.5, confidence, 0.5))

    q2 = Question("q2", "?", answers=("B",), spans=(AnswerSpan("doc", 100, 110),))
    outcomes = [
        outcome(GOLD, 10, 0.95),                                # found, hit
        outcome(q2, 0, 0.55),                                   # found, miss
        outcome(Question("n1", "?", impossible=True), 0, 0.6),  # found, wrongly
        outcome(Question("n2", "?", impossible=True), 0, 0.05),  # not found, rightly
    ]
    result = score_mode(Dataset("t", "squad", ()), "hybrid", outcomes, 10)
    m = result.metrics
    assert m["questions"] == 2 and m["hit@1"] == 0.5  # retrieval metrics: answerable only
    assert m["no_answer_questions"] == 2 and m["min_confidence"] == 0.5
    # No-answer scores 0.4, 0.95 against 0.05, 0.45: three of four pairs ordered right.
    assert m["no_answer_auroc"] == 0.75
    # Bins 9 {0.95: hit}, 5 {0.55, miss}, 6 {0.6, miss}, 0 {0.05, miss}.
    assert m["ece"] == pytest.approx((0.05 + 0.55 + 0.6 + 0.05) / 4, abs=1e-4)
    assert m["answered_precision"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["answered_coverage"] == 1.0
    assert [b.count for b in result.calibration] == [1, 0, 0, 0, 0, 1, 1, 0, 0, 1]


def test_a_set_without_unanswerable_questions_reports_no_calibration() -> None:
    result = score_mode(Dataset("t", "squad", ()), "dense",
                        [Outcome(GOLD, (passage(1, "doc", 10, 50, 0.9, 0.9),), 1.0, None)], 10)
    assert "ece" not in result.metrics and result.calibration == []


TOPICS = {
    "tides": ("Ocean tides", "The gravitational pull of the moon raises ocean tides twice a "
              "day along every coast."),
    "bees": ("Honey bees", "Worker bees collect nectar from flowers and turn it into honey "
             "inside the hive."),
    "volcano": ("Volcanoes", "Magma rises through the crust and erupts from a volcano as "
                "lava and ash."),
    "chess": ("Chess openings", "The Sicilian Defence is a chess opening that answers the "
              "king's pawn with the c-pawn."),
}


def make_beir(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    corpus = [json.dumps({"_id": k, "title": t, "text": x}) for k, (t, x) in TOPICS.items()]
    (folder / "corpus.jsonl").write_text("\n".join(corpus) + "\n", encoding="utf-8")
    queries = {"1": "what makes the sea rise and fall", "2": "how is honey produced",
               "3": "lava eruptions"}
    (folder / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": q, "text": t}) for q, t in queries.items()) + "\n",
        encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n1\ttides\t1\n2\tbees\t1\n3\tvolcano\t1\n", encoding="utf-8")
    return folder


def test_beir_dense_ranks_the_judged_documents_first_and_writes_a_trec_run(
        tmp_path: Path, settings: Settings, embedder: Embedder) -> None:
    dataset = load_dataset(make_beir(tmp_path / "beir"))
    with dataset_index(dataset, settings, embedder, cache_dir=tmp_path / "cache") as index:
        (result,) = evaluate(dataset, LocalRetriever(index), ["dense"], 10)
    assert result.metrics["ndcg@10"] == 1.0 and result.metrics["recall@10"] == 1.0
    assert result.metrics["highlight_hit@1"] is None
    assert set(result.run["1"]) == set(TOPICS)  # every document, scored once
    (path,) = write_run_file(tmp_path / "run.trec", [result])
    lines = [line.split() for line in path.read_text().splitlines()]
    assert lines[0][:4] == ["1", "Q0", "tides", "1"] and lines[0][5] == "qa-dense"
    assert len(lines) == 3 * len(TOPICS)


def test_a_cached_dataset_index_is_reused_without_embedding_again(
        tmp_path: Path, settings: Settings, embedder: Embedder) -> None:
    dataset = load_dataset(make_beir(tmp_path / "beir"))
    cache = tmp_path / "cache"
    with dataset_index(dataset, settings, embedder, cache_dir=cache):
        pass
    calls = embedder.calls
    with dataset_index(dataset, settings, embedder, cache_dir=cache) as index:
        assert index.check()["documents"] == len(TOPICS)
    assert embedder.calls == calls
    (entry,) = cache.iterdir()
    assert (entry / COMPLETE).exists()
    # Other chunk settings are another index.
    other = settings.model_copy(update={"chunk_tokens": 64, "chunk_overlap": 8})
    with dataset_index(dataset, other, embedder, cache_dir=cache):
        pass
    assert embedder.calls > calls and len(list(cache.iterdir())) == 2


def test_squad_evaluation_with_small_chunks_finds_answers_and_reports_misses(
        tmp_path: Path, embedder: Embedder) -> None:
    paragraphs = [x for _, x in TOPICS.values()]
    text = "\n\n".join(paragraphs)
    qas = []
    for i, (question, answer) in enumerate([("What raises ocean tides?", "the moon"),
                                            ("What do worker bees collect?", "nectar"),
                                            ("What erupts from a volcano?", "lava and ash")]):
        start = text.index(answer) - sum(len(p) + 2 for p in paragraphs[:i])
        qas.append({"context": paragraphs[i], "qas": [
            {"id": f"q{i}", "question": question,
             "answers": [{"text": answer, "answer_start": start}]}]})
    qas.append({"context": paragraphs[3], "qas": []})
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "Nature",
                                                            "paragraphs": qas}]}))
    dataset = load_dataset(path)
    small = Settings(index_dir=tmp_path / "unused", chunk_tokens=24, chunk_overlap=4)
    with dataset_index(dataset, small, embedder, cache_dir=None) as index:
        assert index.check()["chunks"] >= 4  # several passages compete for each question
        results = evaluate(dataset, LocalRetriever(index), ["dense", "keyword"], 10)
    for result in results:
        assert result.metrics["questions"] == 3
        assert result.metrics["hit@10"] == 1.0
        assert result.metrics["hit@1"] >= 2 / 3
        assert result.hit_curve[10] == 1.0
    paths = write_report(tmp_path / "report", dataset, results, 1, compare=True)
    assert json.loads(paths[0].read_text())["modes"]["dense"]["questions"] == 3
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = report_markdown(dataset, results, 1)
    assert "| hit@1 |" in markdown and "## Worst missed at k=1: keyword" in markdown


FILLER = "The morning was cold, and the team checked the weather instruments once again. " * 30
LATE = "Finally the glacier calved an iceberg as large as a city block into the fjord."


def test_model_input_is_exactly_what_the_model_embeds(embedder: Embedder) -> None:
    long = FILLER + LATE
    cut = embedder.model_input(long)
    assert long.startswith(cut) and "glacier" not in cut and len(cut) < len(long)
    assert embedder.model_input("a short claim") == "a short claim"
    # The model drops the same word pieces itself: the cut text embeds as the whole does.
    whole, kept = embedder.embed([long, cut], progress=False)
    assert float(whole @ kept) > 0.9999


def test_beir_documents_cut_to_the_model_input_hide_what_lies_past_it(
        tmp_path: Path, settings: Settings, embedder: Embedder) -> None:
    folder = make_beir(tmp_path / "beir")
    with (folder / "corpus.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"_id": "late", "title": "Field notes", "text": FILLER + LATE}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n4\tlate\t1\n")
    with (folder / "queries.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"_id": "4", "text": "a glacier calving an iceberg"}) + "\n")
    full = load_dataset(folder)
    cut = full.cut(embedder.model_input)
    assert [q.id for q in cut.questions] == ["4"] and cut.qrels == full.qrels
    results = {}
    for name, dataset in (("full", full), ("cut", cut)):
        with dataset_index(dataset, settings, embedder, cache_dir=tmp_path / "cache") as index:
            (results[name],) = evaluate(full, LocalRetriever(index), ["dense"], 10)
    assert results["full"].metrics["hit@1"] == 1.0
    assert "glacier" in results["full"].outcomes[0].passages[0].text
    # Cut, the document holds only what the model would have read: the filler.
    passages = results["cut"].outcomes[0].passages
    assert any(p.citation.document_id == "late" for p in passages)
    assert not any("glacier" in p.text for p in passages)
    assert len(list((tmp_path / "cache").iterdir())) == 2  # the cut corpus is its own index
