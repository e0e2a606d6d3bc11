"""Loading evaluation data: SQuAD offsets, BEIR folders, JSONL, and readable errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qa.eval.datasets import DatasetError, load_dataset

SQUAD: dict[str, Any] = {
    "version": "v2.0",
    "data": [{
        "title": "Harbour_Town",
        "paragraphs": [
            {"context": "The lighthouse was built in 1871 by the harbour board.",
             "qas": [{"id": "q1", "question": "When was the lighthouse built?",
                      "answers": [{"text": "1871", "answer_start": 28},
                                  {"text": "in 1871", "answer_start": 25}]}]},
            {"context": "Fishing boats leave at dawn and return with mackerel.",
             "qas": [{"id": "q2", "question": "What do the boats bring back?",
                      "answers": [{"text": "mackerel", "answer_start": 44}]},
                     {"id": "q3", "question": "Who owns the lighthouse today?",
                      "answers": [], "plausible_answers": [{"text": "x", "answer_start": 0}],
                      "is_impossible": True}]},
        ],
    }],
}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def make_beir(folder: Path, *, qrels: bool = True) -> Path:
    (folder / "qrels").mkdir(parents=True)
    write(folder / "corpus.jsonl",
          json.dumps({"_id": "d1", "title": "Tides", "text": "The moon drives tides."}) + "\n"
          + json.dumps({"_id": "d2", "title": "", "text": "Bees make honey."}) + "\n")
    write(folder / "queries.jsonl",
          json.dumps({"_id": "1", "text": "what causes tides"}) + "\n"
          + json.dumps({"_id": "2", "text": "unjudged query"}) + "\n")
    if qrels:
        write(folder / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\n1\td1\t1\n")
    return folder


def test_squad_gold_span_is_paragraph_offset_plus_answer_start(tmp_path: Path) -> None:
    data = load_dataset(write(tmp_path / "s.json", json.dumps(SQUAD)))
    assert data.kind == "squad"
    (doc,) = data.documents
    assert doc.id == "Harbour_Town" and doc.title == "Harbour Town"
    assert doc.text == SQUAD["data"][0]["paragraphs"][0]["context"] + "\n\n" + \
        SQUAD["data"][0]["paragraphs"][1]["context"]
    q2 = next(q for q in data.questions if q.id == "q2")
    (span,) = q2.spans
    assert doc.text[span.start:span.end] == "mackerel"
    assert span.start == len(SQUAD["data"][0]["paragraphs"][0]["context"]) + 2 + 44


def test_squad_keeps_every_gold_answer_and_marks_v2_impossible_questions(tmp_path: Path) -> None:
    data = load_dataset(write(tmp_path / "s.json", json.dumps(SQUAD)))
    by_id = {q.id: q for q in data.questions}
    assert by_id["q1"].answers == ("1871", "in 1871") and len(by_id["q1"].spans) == 2
    assert by_id["q3"].impossible and by_id["q3"].spans == ()


def test_squad_answer_not_at_its_offset_is_refused(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(SQUAD))
    bad["data"][0]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] = 3
    with pytest.raises(DatasetError, match="q2.*not at answer_start 3"):
        load_dataset(write(tmp_path / "s.json", json.dumps(bad)))


def test_beir_prepends_the_title_and_keeps_only_judged_queries(tmp_path: Path) -> None:
    data = load_dataset(make_beir(tmp_path / "b"))
    assert data.kind == "beir"
    docs = {d.id: d for d in data.documents}
    assert docs["d1"].text == "Tides The moon drives tides." and docs["d1"].title == "Tides"
    assert docs["d2"].text == "Bees make honey."
    assert [q.id for q in data.questions] == ["1"]
    assert data.qrels == {"1": {"d1": 1}}


def test_beir_folder_without_qrels_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"not a BEIR folder.*qrels/test.tsv is missing"):
        load_dataset(make_beir(tmp_path / "b", qrels=False))


def test_jsonl_question_set_loads_with_ids_and_answers(tmp_path: Path) -> None:
    path = write(tmp_path / "q.jsonl",
                 '{"question": "who?", "answers": ["Ann"]}\n\n'
                 '{"id": "x", "question": "where?", "answers": ["Rome", "Italy"]}\n')
    data = load_dataset(path)
    assert data.kind == "jsonl" and data.documents == ()
    assert [(q.id, q.answers) for q in data.questions] == [("1", ("Ann",)),
                                                           ("x", ("Rome", "Italy"))]


def test_a_jsonl_question_with_an_empty_answers_list_is_unanswerable(tmp_path: Path) -> None:
    path = write(tmp_path / "q.jsonl", '{"question": "who?", "answers": ["Ann"]}\n'
                                       '{"id": "na", "question": "why?", "answers": []}\n')
    data = load_dataset(path)
    assert [(q.id, q.answers, q.impossible) for q in data.questions] == [
        ("1", ("Ann",), False), ("na", (), True)]


def test_the_shared_unanswerable_super_bowl_questions_load_as_unanswerable() -> None:
    path = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / \
        "super-bowl-50-unanswerable.jsonl"
    if not path.exists():
        pytest.skip("shared evaluation data not present")
    data = load_dataset(path)
    assert data.questions and all(q.impossible and not q.answers for q in data.questions)


def test_questions_asked_as_unanswerable_keep_the_documents_and_get_distinct_ids(
        tmp_path: Path) -> None:
    main = load_dataset(write(tmp_path / "a.jsonl", '{"question": "who?", "answers": ["Ann"]}\n'))
    other = load_dataset(write(tmp_path / "b.jsonl", '{"question": "who?", "answers": ["Bo"]}\n'))
    merged = main.with_unanswerable(other)
    assert merged.documents == main.documents and merged.kind == "jsonl"
    assert [(q.id, q.answers, q.impossible) for q in merged.questions] == [
        ("1", ("Ann",), False), ("unanswerable:b.jsonl:1", (), True)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"question": "who?", "answers": ["Ann"]}\n{"question": oops}\n',
         r"q.jsonl:2: malformed JSON"),
        ('{"question": "who?"}\n', r"q.jsonl:1: \"answers\" must be a list"),
        ('{"question": "who?", "answers": [" "]}\n', r"q.jsonl:1: \"answers\" must be a list"),
        ('{"question": "  ", "answers": ["a"]}\n', r"q.jsonl:1: \"question\" must be"),
        ("[1, 2, 3]", r"unknown shape"),
        ('{"version": "1.1", "data": [{"paragraphs": []}]}', r"not valid SQuAD JSON"),
        ("", r"no questions"),
    ],
)
def test_malformed_or_unknown_input_gets_one_readable_error(tmp_path: Path, text: str,
                                                            message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        load_dataset(write(tmp_path / "q.jsonl", text))


def test_the_seed_question_set_answers_come_from_the_seed_article() -> None:
    root = Path(__file__).resolve().parent.parent
    data = load_dataset(root / "seeds" / "questions.jsonl")
    article = (root / "seeds" / "2025-05-15-istanbul-peace-talks.txt").read_text("utf-8")
    assert len(data.questions) >= 15
    for question in data.questions:
        assert all(answer in article for answer in question.answers), question.id
