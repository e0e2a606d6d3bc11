"""The option policy of `qa eval`: a contradiction is one error line; defaults fit the set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qa.eval import DatasetError, OptionError, plan_evaluation

ROOT = Path(__file__).resolve().parent.parent
SEED_QUESTIONS = ROOT / "seeds" / "questions.jsonl"


def beir_folder(folder: Path) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d", "text": "tides"}) + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "1", "text": "sea"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td\t1\n")
    return folder


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"index_dir": Path("i"), "url": "http://127.0.0.1:1"}, "give --index or --url, not both"),
        ({"compare": "dense,fuzzy"}, "--compare takes modes among dense, keyword, hybrid; got "
                                     "'dense,fuzzy'"),
        ({"compare": " , "}, "--compare takes modes among"),
        ({"doc_length": "full"}, "--doc-length applies to the index built from a BEIR folder, "
                                 "not to --index/--url"),
        ({"unanswerable": SEED_QUESTIONS}, "--unanswerable must name another dataset than "
                                           "DATASET"),
        ({"url": "http://127.0.0.1:1", "batch_queries": True}, "--batch-queries embeds "
                                                               "questions in this process"),
    ],
)
def test_contradictory_options_raise_one_line_naming_the_option(options: dict[str, Any],
                                                                message: str) -> None:
    with pytest.raises(OptionError, match=message):
        plan_evaluation(SEED_QUESTIONS, mode="hybrid", **options)


def test_options_are_checked_before_the_dataset_is_read(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="not both"):
        plan_evaluation(tmp_path / "missing.json", mode="hybrid", index_dir=tmp_path,
                        url="http://127.0.0.1:1")


def test_doc_length_is_refused_for_an_index_built_from_squad(tmp_path: Path) -> None:
    squad = tmp_path / "s.json"
    squad.write_text(json.dumps({"version": "1.1", "data": [{"title": "T", "paragraphs": [
        {"context": "The moon raises tides.", "qas": [
            {"id": "q", "question": "What raises tides?",
             "answers": [{"text": "moon", "answer_start": 4}]}]}]}]}))
    with pytest.raises(OptionError, match="not to a squad dataset"):
        plan_evaluation(squad, mode="dense", doc_length="model")
    assert plan_evaluation(squad, mode="dense").doc_length == "full"


def test_a_beir_folder_is_cut_to_the_model_input_unless_asked_for_full(tmp_path: Path) -> None:
    folder = beir_folder(tmp_path / "beir")
    assert plan_evaluation(folder, mode="dense").doc_length == "model"
    assert plan_evaluation(folder, mode="dense", doc_length="full").doc_length == "full"


def test_compare_lists_its_modes_in_order_and_one_mode_is_not_a_comparison() -> None:
    compared = plan_evaluation(SEED_QUESTIONS, mode="hybrid", compare="keyword, dense")
    assert (compared.modes, compared.compare) == (("keyword", "dense"), True)
    single = plan_evaluation(SEED_QUESTIONS, mode="dense")
    assert (single.modes, single.compare) == (("dense",), False)


def test_unanswerable_questions_join_the_dataset_against_its_own_documents(
        tmp_path: Path) -> None:
    folder = beir_folder(tmp_path / "beir")
    plan = plan_evaluation(folder, mode="dense", unanswerable=SEED_QUESTIONS)
    assert plan.dataset.documents == plan_evaluation(folder, mode="dense").dataset.documents
    asked = [q for q in plan.dataset.questions if q.impossible]
    assert len(asked) == len(plan.dataset.questions) - 1 >= 15
    assert "unanswerable questions.jsonl" in plan.dataset.name


def test_a_copy_of_the_dataset_is_refused_as_its_own_unanswerable_set(tmp_path: Path) -> None:
    folder = beir_folder(tmp_path / "beir")
    copy = beir_folder(tmp_path / "copy")
    with pytest.raises(OptionError, match="holds the same documents"):
        plan_evaluation(folder, mode="dense", unanswerable=copy)


def test_an_unreadable_unanswerable_set_is_a_dataset_error_naming_the_option() -> None:
    with pytest.raises(DatasetError, match="--unanswerable: missing.jsonl: no such file"):
        plan_evaluation(SEED_QUESTIONS, mode="dense", unanswerable=Path("missing.jsonl"))
