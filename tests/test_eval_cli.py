"""`qa eval` on the command line: one JSON object on stdout, reports, one-line input errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qa.cli import cli
from qa.collection import Collection
from qa.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

PARAGRAPHS = [
    "The gravitational pull of the moon raises ocean tides twice a day along every coast.",
    "Worker bees collect nectar from flowers and turn it into honey inside the hive.",
    "Magma rises through the crust and erupts from a volcano as lava and ash.",
]
QUESTIONS = [("What raises ocean tides?", "moon"), ("What do worker bees collect?", "nectar"),
             ("What erupts from a volcano?", "lava and ash")]


def squad_file(path: Path) -> Path:
    paragraphs = [
        {"context": context, "qas": [{"id": f"q{i}", "question": question, "answers": [
            {"text": answer, "answer_start": context.index(answer)}]}]}
        for i, (context, (question, answer)) in enumerate(zip(PARAGRAPHS, QUESTIONS,
                                                              strict=True))
    ]
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "Nature",
                                                            "paragraphs": paragraphs}]}))
    return path


def test_eval_prints_one_json_object_per_mode_and_writes_report_and_run(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "QA_CHUNK_TOKENS": "24", "QA_CHUNK_OVERLAP": "4"}
    qa = Path(sys.executable).parent / "qa"
    command = [str(qa), "eval", str(squad_file(tmp_path / "s.json")),
               "--compare", "dense,keyword", "--json", "--report", str(tmp_path / "report"),
               "--run-file", str(tmp_path / "run.trec"), "--cache-dir", str(tmp_path / "cache")]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    body = json.loads(line)
    assert set(body["modes"]) == {"dense", "keyword"}
    for metrics in body["modes"].values():
        assert {"hit@1", "hit@5", "mrr@10", "ndcg@10", "highlight_hit@1", "latency_ms_p50",
                "latency_ms_p95", "questions"} <= set(metrics)
        assert metrics["questions"] == 3 and metrics["hit@10"] == 1.0
    assert "no_answer_auroc" not in body["modes"]["dense"]  # v1.1 has no impossible questions
    assert {p.name for p in (tmp_path / "report").iterdir()} == {
        "metrics.json", "report.md", "hit_at_k.png"}
    assert (tmp_path / "run.dense.trec").read_text().startswith("q0 Q0 Nature#")
    assert "indexing 1 documents" in done.stderr


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["eval", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "who?", "answers": ["a"]}\n{not json}\n', "q.jsonl:2: malformed JSON"),
        ('{"rows": [1, 2]}', "unknown shape"),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(tmp_path: Path, content: str,
                                                message: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(content)
    code, out, err = run_cli(str(path), "--index", str(tmp_path / "index"))
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("error: ") and message in line


def test_a_beir_folder_missing_qrels_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    code, _, err = run_cli(str(tmp_path))
    assert code == 2 and "qrels" in err and "missing" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compare", "dense,fuzzy"], "--compare takes modes among"),
        (["--index", "i", "--url", "http://127.0.0.1:1"], "not both"),
        (["--doc-length", "full"], "--doc-length applies to the index built from a BEIR"),
    ],
)
def test_contradictory_options_are_exit_2(args: list[str], message: str) -> None:
    code, _, err = run_cli(str(ROOT / "seeds" / "questions.jsonl"), *args)
    assert code == 2 and message in err


FAR_AWAY = ["What is the boiling point of tungsten?", "Who won the 1998 FIFA World Cup final?",
            "How many moons does Neptune have?", "What is the recipe for sourdough bread?"]


def far_away_questions(path: Path) -> Path:
    """Questions the seed article cannot answer: `"answers": []`."""
    path.write_text("".join(json.dumps({"id": f"far-{i}", "question": q, "answers": []}) + "\n"
                            for i, q in enumerate(FAR_AWAY)))
    return path


def test_unanswerable_questions_report_auroc_ece_and_answered_share_per_mode(
        built_index: Collection, settings: Settings, tmp_path: Path) -> None:
    built_index.close()
    code, out, err = run_cli(
        str(ROOT / "seeds" / "questions.jsonl"), "--index", str(settings.index_dir),
        "--unanswerable", str(far_away_questions(tmp_path / "far.jsonl")),
        "--compare", "dense,keyword,hybrid", "--json", "--report", str(tmp_path / "report"),
        "--batch-queries")
    assert code == 0, err
    body = json.loads(out)
    assert "unanswerable far.jsonl" in body["dataset"]
    for mode, m in body["modes"].items():
        assert m["no_answer_questions"] == len(FAR_AWAY) and m["questions"] >= 15, mode
        assert 0.0 <= m["no_answer_auroc"] <= 1.0 and 0.0 <= m["ece"] <= 1.0, mode
        assert 0.0 <= m["answered_coverage"] <= 1.0, mode
        assert m["answered_precision"] is None or 0.0 <= m["answered_precision"] <= 1.0, mode
        assert m["min_confidence"] == settings.min_confidence
        assert m["latency_ms_p50"] is None  # questions embedded ahead: latency not honest
    # Far-away questions are told from the seed questions far better than by chance.
    assert body["modes"]["hybrid"]["no_answer_auroc"] >= 0.8
    assert body["modes"]["hybrid"]["hit@10"] >= 0.8  # still over the answerable ones only
    assert {p.name for p in (tmp_path / "report").iterdir()} == {
        "metrics.json", "report.md", "hit_at_k.png", "reliability.png"}
    assert "reliability.png" in (tmp_path / "report" / "report.md").read_text()


def test_an_unanswerable_set_that_is_the_dataset_itself_is_exit_2() -> None:
    questions = str(ROOT / "seeds" / "questions.jsonl")
    code, out, err = run_cli(questions, "--unanswerable", questions)
    assert code == 2 and out == "" and "--unanswerable must name another dataset" in err


def test_a_jsonl_set_against_a_missing_index_says_how_to_build_one(tmp_path: Path) -> None:
    code, _, err = run_cli(str(ROOT / "seeds" / "questions.jsonl"), "--index",
                           str(tmp_path / "none"))
    assert code != 0 and "qa index" in err
