"""The HTTP API, through a real server: answers, verifiable citations, problem+json errors."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from qa.api import SETTINGS_VARIABLE, app_from_env, hand_over_settings
from qa.settings import Settings

QUESTION = "who led the Russian delegation?"


def test_first_passage_names_the_delegation_leader_with_a_verifiable_citation(
    http: httpx.Client,
) -> None:
    response = http.post("/ask", json={"question": QUESTION})
    assert response.status_code == 200
    body = response.json()
    first = body["passages"][0]
    assert "Medinsky" in first["text"]
    citation = first["citation"]
    document = http.get(f"/documents/{citation['document_id']}").json()
    assert document["text"][citation["start"] : citation["end"]] == first["text"]
    assert citation["date"] == "2025-05-15"
    highlight = first["highlight"]
    assert document["text"][highlight["start"] : highlight["end"]] == highlight["text"]
    assert body["question"] == QUESTION and body["took_ms"] >= 0


def test_k_limits_the_number_of_passages_and_ranks_count_from_one(http: httpx.Client) -> None:
    passages = http.post("/ask", json={"question": "peace talks", "k": 2}).json()["passages"]
    assert [p["rank"] for p in passages] == [1, 2]
    assert passages[0]["score"] >= passages[1]["score"]


@pytest.mark.parametrize(
    "body",
    [
        {"question": ""},
        {"question": "   \n\t "},
        {"question": "x" * 1001},
        {"question": QUESTION, "k": 0},
        {"question": QUESTION, "k": 51},
        {"question": QUESTION, "mode": "psychic"},
        {"k": 3},
        {"question": 12},
    ],
)
def test_bad_questions_are_422_problem_json(http: httpx.Client, body: dict[str, object]) -> None:
    response = http.post("/ask", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["title"] and problem["detail"]


def test_malformed_json_is_a_problem_not_a_crash(http: httpx.Client) -> None:
    response = http.post("/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_unknown_document_is_404_problem_json(http: httpx.Client) -> None:
    response = http.get("/documents/no/such/doc.txt")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "no/such/doc.txt" in response.json()["detail"]


def test_documents_are_listed_in_pages(http: httpx.Client) -> None:
    page = http.get("/documents", params={"limit": 1}).json()
    assert page["total"] == 1 and len(page["documents"]) == 1
    assert page["documents"][0]["chunk_count"] > 1
    assert http.get("/documents", params={"offset": 5}).json()["documents"] == []
    assert http.get("/documents", params={"limit": 0}).status_code == 422


def test_health_and_openapi_are_served(http: httpx.Client) -> None:
    assert http.get("/healthz").json()["status"] == "ok"
    schema = http.get("/openapi.json").json()
    assert {"/ask", "/documents", "/healthz"} <= set(schema["paths"])
    assert http.get("/docs").status_code == 200


def test_workers_get_the_settings_qa_serve_built_not_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = Settings(index_dir=tmp_path / "index", max_k=7, port=8123, api_keys="secret-key")
    monkeypatch.setenv("QA_MAX_K", "30")
    monkeypatch.setenv(SETTINGS_VARIABLE, "")  # restored after the test
    assert app_from_env().state.settings.max_k == 30  # plain `uvicorn --factory`: from QA_*
    hand_over_settings(given)
    assert app_from_env().state.settings == given
