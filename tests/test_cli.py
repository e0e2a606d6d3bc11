"""The `qa` command, run as a user runs it: a real process, real files, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def qa(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_index_then_ask_json_prints_the_http_body(seed_docs: Path, tmp_path: Path) -> None:
    (seed_docs / "broken.txt").write_bytes(b"caf\xe9 au lait")
    indexed = qa("index", "seeds", "--index", "idx", cwd=tmp_path)
    assert indexed.returncode == 1, "a bad file makes the exit non-zero"
    assert "broken.txt: not valid UTF-8" in indexed.stderr
    assert "1 added" in indexed.stderr and "1 failed" in indexed.stderr

    asked = qa("ask", "--json", "who led the Russian delegation?", "--index", "idx",
               cwd=tmp_path)
    assert asked.returncode == 0, asked.stderr
    body = json.loads(asked.stdout)
    assert set(body) == {"question", "passages", "took_ms"}
    first = body["passages"][0]
    assert "Medinsky" in first["text"]
    assert set(first["citation"]) >= {"document_id", "title", "source", "date", "chunk_id",
                                      "start", "end"}

    readable = qa("ask", "who led the Russian delegation?", "-k", "1", "--index", "idx",
                  cwd=tmp_path)
    assert readable.returncode == 0 and "Medinsky" in readable.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ask", "anything", "--index", "nowhere"), "no index at nowhere"),
        (("ask", "anything", "-k", "0"), "-k must be between 1 and"),
        (("ask", "   "), "question must not be empty"),
    ],
)
def test_errors_are_one_line_and_a_non_zero_exit(tmp_path: Path, args: tuple[str, ...],
                                                 message: str) -> None:
    result = qa(*args, cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.slow
def test_reindex_stores_a_front_matter_change_without_re_embedding(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    page = notes / "tides.md"
    page.write_text("---\ntag: a\n---\n# Tides\n\nThe tide rose 40 cm at noon.\n", "utf-8")
    assert qa("index", "notes", "--index", "idx", cwd=tmp_path).returncode == 0

    page.write_text("---\ntag: b\n---\n# Tides\n\nThe tide rose 40 cm at noon.\n", "utf-8")
    again = qa("index", "notes", "--index", "idx", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 replaced" in again.stderr and "0 chunks embedded" in again.stderr

    asked = qa("ask", "--json", "how high did the tide rise?", "--index", "idx", cwd=tmp_path)
    document_id = json.loads(asked.stdout)["passages"][0]["citation"]["document_id"]
    from qa.collection import Collection
    from qa.settings import Settings

    stored = Collection.open(Settings(index_dir=tmp_path / "idx"))
    try:
        assert stored.get_document(document_id).metadata == {"tag": "b"}
    finally:
        stored.close()
