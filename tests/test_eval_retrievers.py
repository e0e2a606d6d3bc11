"""Retrievers: a running service over HTTP returns what the local index does, or a ServiceError."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa.collection import Collection
from qa.embedding import Embedder
from qa.eval.datasets import Dataset, Question, load_dataset
from qa.eval.retrievers import HttpRetriever, LocalRetriever, ServiceError
from qa.eval.runner import evaluate
from qa.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_http_evaluation_sees_the_same_passages_as_the_local_index(
        served_index: str, settings: Settings, embedder: Embedder) -> None:
    far = Dataset("far", "jsonl", (Question("far", "What is the boiling point of tungsten?"),))
    dataset = load_dataset(ROOT / "seeds" / "questions.jsonl").with_unanswerable(far)
    http = HttpRetriever(served_index)
    try:
        (over_http,) = evaluate(dataset, http, ["hybrid"], 5)
    finally:
        http.close()
    local_index = Collection.open(settings, embedder)
    try:
        (local,) = evaluate(dataset, LocalRetriever(local_index), ["hybrid"], 5)
    finally:
        local_index.close()
    # The same passages in the same order; scores equal but for the last float bits (torch
    # may sum in another order on the server's thread than here).
    assert {q: list(r) for q, r in over_http.run.items()} == {
        q: list(r) for q, r in local.run.items()}
    for q, ranked in local.run.items():
        for passage, score in ranked.items():
            assert over_http.run[q][passage] == pytest.approx(score, abs=1e-5)
    without_latency = {k: v for k, v in local.metrics.items() if not k.startswith("latency")}
    assert {k: over_http.metrics[k] for k in without_latency} == pytest.approx(
        without_latency, abs=1e-4)
    assert over_http.metrics["hit@10"] >= 0.8  # the seed questions are answerable
    # The service's own verdicts (answer.found at its threshold) score as the local ones do.
    assert over_http.metrics["answered_coverage"] is not None
    assert over_http.metrics["min_confidence"] == settings.min_confidence


def test_an_unreachable_service_is_a_service_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dataset = Dataset("t", "jsonl", (Question("1", "who?", answers=("a",)),))
    http = HttpRetriever(f"http://127.0.0.1:{port}")
    with pytest.raises(ServiceError, match="ConnectError"):
        evaluate(dataset, http, ["dense"], 5)
    http.close()


def test_a_service_answer_without_its_threshold_is_left_to_the_local_one() -> None:
    from qa.eval.retrievers import answer_from_json

    assert answer_from_json({"found": True, "confidence": 0.7}) is None
    assert answer_from_json(None) is None
    answer = answer_from_json({"found": False, "confidence": 0.2, "threshold": 0.4})
    assert answer is not None and (answer.found, answer.threshold) == (False, 0.4)
