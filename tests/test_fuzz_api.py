"""Schemathesis against /openapi.json of a live server: no 5xx, no response that breaks the schema.

Every operation is exercised, writes included (a key is configured and sent), with examples,
boundary cases and random data, valid and invalid.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from schemathesis import checks
from schemathesis.openapi import from_url

from qa.api.guards import MAX_BODY_DEPTH
from qa.settings import Settings

KEY = "fuzz-key-2e6f0b"
EXAMPLES_PER_OPERATION = 40
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A write key so writes get past the door; a small body limit and rate limit so that
    413 and 429 answers are met and checked against the schema too."""
    return Settings(index_dir=tmp_path / "index", api_keys=KEY, ask_rate_limit="20/second",
                    max_body_bytes=64 * 1024, max_batch_documents=20)


def schemathesis() -> str:
    found = Path(sys.executable).parent / "schemathesis"
    if found.exists():
        return str(found)
    on_path = shutil.which("schemathesis")
    assert on_path, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    return on_path


@pytest.mark.slow
def test_fuzzed_requests_get_no_5xx_and_only_schema_conforming_answers(
    served_index: str, tmp_path: Path
) -> None:
    seed = os.environ.get("QA_FUZZ_SEED", "20251115")
    command = [
        schemathesis(), "run", f"{served_index}/openapi.json",
        "--checks", CHECKS,
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", str(EXAMPLES_PER_OPERATION),
        "--seed", seed,
        "--workers", "1",
        "--header", f"Authorization: Bearer {KEY}",
        "--request-timeout", "60",
        "--generation-database", "none",
        "--no-color",
    ]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    summary = result.stdout[-6000:]
    print(summary)
    assert result.returncode == 0, summary + result.stderr[-2000:]
    total = httpx.get(f"{served_index}/documents", timeout=30).json()["total"]
    assert total > 1, "no fuzzed write got through: the key did not reach the server"
    print(f"{total} documents in the index after fuzzing (1 before)")


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


# Hand-written cases the generators rarely reach: nesting past the body cap, and values of the
# wrong JSON type that a lax parser would coerce. Each must be refused with a declared 422.
HOSTILE_CASES = [
    ("/ask", "POST", {"question": nested(MAX_BODY_DEPTH + 10)}),
    ("/ask", "POST", {"question": "who?", "k": True}),
    ("/ask", "POST", {"question": "who?", "k": "3"}),
    ("/ask", "POST", {"question": "who?", "k": 2.0}),
    ("/ask", "POST", {"question": ["who?"]}),
    ("/documents", "POST", {"text": "deep", "metadata": {"a": nested(MAX_BODY_DEPTH + 10)}}),
    ("/documents", "POST", {"text": "deep", "metadata": {"a": nested(40)}}),
    ("/documents", "POST", {"text": "nul", "metadata": {"a": ["x\x00"]}}),
    ("/documents", "POST", [{"text": "deep", "metadata": {"a": nested(MAX_BODY_DEPTH)}}]),
]


def test_hostile_bodies_get_a_declared_422(served_index: str) -> None:
    schema = from_url(f"{served_index}/openapi.json")
    for path, method, body in HOSTILE_CASES:
        case = schema[path][method].Case(body=body, media_type="application/json")
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {KEY}"},
            checks=[checks.not_a_server_error, checks.status_code_conformance,
                    checks.content_type_conformance, checks.response_schema_conformance],
        )
        assert response.status_code == 422, (path, body, response.text)
