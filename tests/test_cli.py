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
    assert set(body) == {"question", "answer", "passages", "took_ms", "query_id"}
    assert body["query_id"] is None  # the command line keeps no query log
    assert set(body["answer"]) == {"found", "confidence", "threshold"}
    first = body["passages"][0]
    assert "Medinsky" in first["text"]
    assert set(first["citation"]) >= {"document_id", "title", "source", "date", "chunk_id",
                                      "start", "end"}

    readable = qa("ask", "who heads the Russian delegation?", "-k", "1", "--index", "idx",
                  cwd=tmp_path)
    assert readable.returncode == 0 and "» The Russian delegation" in readable.stdout

    unanswerable = qa("ask", "what is the boiling point of tungsten?", "--index", "idx",
                      cwd=tmp_path)
    assert unanswerable.returncode == 0
    assert unanswerable.stdout.startswith("No passage in the index seems to answer this")
    assert "»" not in unanswerable.stdout, "no sentence is presented as the answer"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ask", "anything", "--index", "nowhere"), "no index at nowhere"),
        (("ask", "anything", "-k", "0"), "-k must be between 1 and"),
        (("ask", "   "), "question must not be empty"),
        (("ask", os.fsdecode(b"\xff")), "question is not valid UTF-8"),
        (("ask", "anything", "--index", "/etc/passwd"), "--index /etc/passwd is a file"),
        (("index", "notes", "--index", "/etc/passwd"), "--index /etc/passwd is a file"),
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


@pytest.mark.slow
def test_hostile_files_each_cost_one_error_line_and_the_good_ones_are_stored(
        tmp_path: Path) -> None:
    docs, outside = tmp_path / "docs", tmp_path / "outside"
    docs.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("The vault code is 0000.", "utf-8")
    good = {
        "tides.md": "---\ntags: [sea]\n---\n# Tides\n\nThe tide rose 40 cm at noon.\n",
        "long-line.txt": "The harbour wall is old. " * 4000,  # one 100 KB line
        "x.txt/inside.txt": "A folder named x.txt is walked like any folder.",
    }
    aliases = "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
                      for p, n in zip("abcdef", "bcdefg", strict=True))
    bad: dict[str, str | bytes] = {
        "binary-tag.md": "---\nblob: !!binary aGVsbG8=\n---\nbody\n",
        "set-tag.md": "---\ntags: !!set {a, b}\n---\nbody\n",
        "python-tag.md": "---\nx: !!python/object/apply:os.system [ls]\n---\nbody\n",
        "deep.md": "---\nd: " + "[" * 3000 + "]" * 3000 + "\n---\nbody\n",
        "bomb.md": "---\na: &a [x, x, x, x, x, x, x, x, x, x]\n" + aliases + "---\nbody\n",
        "list-front-matter.md": "---\n- a\n- b\n---\nbody\n",
        "late-nul.txt": b"a" * 9000 + b"\x00tail",
        "empty.txt": b"",
        "fake.pdf": b"\x7fELF\x02\x01\x01 not a pdf at all",
        os.fsdecode(b"bad\xffname.txt"): "body",
        "right\u202etxt.md": "body",
        "zero\u200bwidth.txt": "body",
    }
    for name, content in {**good, **bad}.items():
        path = docs / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    links = {"innocent.txt": outside / "secret.txt", "status.txt": Path("/proc/self/status"),
             "zero.txt": Path("/dev/zero"), "dangling.txt": tmp_path / "gone.txt"}
    for name, target in links.items():
        (docs / name).symlink_to(target)
    os.mkfifo(docs / "pipe.txt")

    result = qa("index", "docs", "--index", "idx", cwd=tmp_path)

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(lines) == len(errors) + 1, "one line per bad file, then the summary"
    failed = len(bad) + len(links) + 1  # and the FIFO
    assert len(errors) == failed
    assert f"{len(good)} added" in lines[-1] and f"{failed} failed" in lines[-1]
    for name in [*bad, *links, "pipe.txt"]:
        shown = os.fsencode(name).decode("utf-8", "backslashreplace").encode(
            "ascii", "backslashreplace").decode("ascii")
        assert sum(shown in line for line in errors) == 1, name

    from qa.collection import Collection
    from qa.settings import Settings

    stored = Collection.open(Settings(index_dir=tmp_path / "idx"))
    try:
        assert sorted(stored.sources()) == sorted(f"docs/{name}" for name in good)
    finally:
        stored.close()
