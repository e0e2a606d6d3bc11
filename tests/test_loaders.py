"""Files → documents: metadata sources, title fallbacks, and clear per-file errors."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qa import indexing
from qa.errors import InvalidInput, UnsupportedFile
from qa.indexing import IndexSummary, load_or_record
from qa.loaders import (
    MAX_FILE_BYTES,
    MAX_FRONT_MATTER_CHARS,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    Refused,
    build_document,
    document_id_for,
    id_problem,
    iter_files,
    load_file,
    metadata_problem,
    supported_suffixes,
    walk_files,
)
from qa.types import MAX_TEXT_CHARS, Parsed


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_front_matter_supplies_title_date_url_and_keeps_the_rest(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "a.md", "---\ntitle: Talks\ndate: 2025-05-15\n"
                          "url: https://example.org/t\nauthor: AP\n---\nBody text.\n"))
    assert (doc.title, doc.date, doc.url) == ("Talks", "2025-05-15", "https://example.org/t")
    assert doc.metadata == {"author": "AP"}
    assert doc.text == "Body text."


def test_leading_date_prefix_becomes_the_date_and_leaves_the_text(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "n.txt", " date 2025-05-15 Russian President spoke."))
    assert doc.date == "2025-05-15"
    assert doc.text == "Russian President spoke."


def test_title_falls_back_to_heading_then_file_name(tmp_path: Path) -> None:
    heading_only = write(tmp_path / "x.md", "intro\n\n# Real Title\n\nbody")
    assert load_file(heading_only).title == "Real Title"
    assert load_file(write(tmp_path / "2025-01-02-peace_talks.txt", "body")).title == "Peace talks"


def test_markdown_headings_become_heading_paths(tmp_path: Path) -> None:
    doc = load_file(write(tmp_path / "g.md", "# Setup\n\nintro\n\n## Linux\n\napt install\n"))
    linux = doc.section_at(doc.text.index("apt"))
    assert linux is not None and linux.heading_path == ("Setup", "Linux")


@pytest.mark.parametrize(
    ("name", "content", "error", "message"),
    [
        ("empty.txt", "", InvalidInput, "empty"),
        ("blank.md", "   \n\n", InvalidInput, "empty"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), InvalidInput, "not valid UTF-8"),
        ("bin.txt", b"\x00\x01\x02binary", UnsupportedFile, "binary"),
        ("doc.xyz", "text", UnsupportedFile, "unsupported file type"),
        ("bad.md", "---\ntitle: [unclosed\n---\nbody", InvalidInput, "front matter"),
    ],
)
def test_bad_files_give_a_clear_error(tmp_path: Path, name: str, content: str | bytes,
                                      error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        load_file(write(tmp_path / name, content))


def test_folders_are_walked_recursively_skipping_hidden_and_unsupported(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    for rel in ("a.txt", "sub/b.md", ".git/c.txt", "sub/d.bin"):
        write(tmp_path / rel, "x")
    assert [p.relative_to(tmp_path).as_posix() for p in iter_files([tmp_path])] == [
        "a.txt", "sub/b.md"
    ]


def test_ids_are_paths_relative_to_the_working_directory(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert document_id_for(Path("seeds/a.txt")) == "seeds/a.txt"


def test_folders_yield_html_pdf_and_docx_files(tmp_path: Path) -> None:
    for name in ("page.html", "old.htm", "report.PDF", "guide.docx", "legacy.doc"):
        write(tmp_path / name, "x")
    assert sorted(p.name for p in iter_files([tmp_path])) == [
        "guide.docx", "old.htm", "page.html", "report.PDF"
    ]


def test_loading_text_formats_does_not_import_the_html_pdf_and_docx_libraries() -> None:
    # They cost hundreds of milliseconds; `qa --help` and .txt/.md indexing must not pay it.
    code = (
        "import sys, qa.cli, qa.loaders; "
        "print(sorted(m for m in ('trafilatura', 'pypdf', 'docx', 'lxml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_supported_suffix_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text("utf-8")
    section = readme.split("## Document formats", 1)[1].split("\n## ", 1)[0]
    assert [s for s in supported_suffixes() if f"`{s}`" not in section] == []


# -- hostile files: each costs its own file, and only within fixed caps -------------------------

ALIAS_BOMB = "---\na: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdef", "bcdefg", strict=True)
) + "---\nbody\n"


@pytest.mark.parametrize(
    ("front_matter", "message"),
    [
        ("blob: !!binary aGVsbG8=", "binary"),
        ("tags: !!set {a, b}", "set"),
        ("pairs: !!pairs [a: 1, b: 2]", "pair list"),
        ("n: .nan", "non-finite"),
        ("x: !!python/object:os.system ls", "not valid YAML"),
        ("deep: " + "[" * 3000 + "]" * 3000, f"nested deeper than {MAX_METADATA_DEPTH}"),
        ("? [a, b]\n: 1", "not valid YAML|as a key"),
    ],
)
def test_front_matter_is_refused_unless_it_is_plain_json(tmp_path: Path, front_matter: str,
                                                         message: str) -> None:
    with pytest.raises(InvalidInput, match=f"a.md: front matter .*({message})"):
        load_file(write(tmp_path / "a.md", f"---\n{front_matter}\n---\nbody\n"))


def test_front_matter_aliases_are_refused_so_an_alias_bomb_cannot_expand(tmp_path: Path) -> None:
    assert len(ALIAS_BOMB) < 500  # 10**7 leaves once expanded
    with pytest.raises(InvalidInput, match="front matter uses a YAML alias"):
        load_file(write(tmp_path / "bomb.md", ALIAS_BOMB))


def test_front_matter_over_its_size_cap_is_refused(tmp_path: Path) -> None:
    long = "---\nnote: " + "x" * MAX_FRONT_MATTER_CHARS + "\n---\nbody\n"
    with pytest.raises(InvalidInput, match="front matter is longer than"):
        load_file(write(tmp_path / "long.md", long))


def nested(levels: int) -> dict[str, object]:
    """An object `levels` deep: {} is 1, {"k": {}} is 2."""
    return functools.reduce(lambda inner, _: {"k": inner}, range(levels - 1), {})


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"a": "x" * MAX_METADATA_BYTES}, "over the 65536-byte limit"),
        (nested(MAX_METADATA_DEPTH + 1), "nested deeper than 32"),
        ({"a": [[[[1]]]] * 2, "b": "nul\x00"}, "NUL"),
        ({"a": float("inf")}, "finite"),
        ({"a": b"bytes"}, "not a JSON value"),
    ],
)
def test_every_document_meets_the_metadata_caps(metadata: dict[str, object],
                                                message: str) -> None:
    assert metadata_problem(metadata) is not None
    with pytest.raises(InvalidInput, match=f"doc: {message}|doc: metadata.*{message}"):
        build_document("doc", Parsed(text="body", metadata=metadata))


def test_metadata_within_the_caps_is_accepted() -> None:
    deepest = {"tags": ["a", "b"], "n": 1.5, "ok": True, "deep": nested(MAX_METADATA_DEPTH - 1)}
    assert metadata_problem(deepest) is None


def test_nul_anywhere_in_the_text_is_refused_for_every_source(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"late.txt: text contains a NUL character at"):
        load_file(write(tmp_path / "late.txt", b"a" * 9000 + b"\x00tail"))
    with pytest.raises(InvalidInput, match="text contains a NUL"):
        build_document("json-doc", Parsed(text="body\x00more", metadata={}))


def test_text_over_the_per_document_cap_is_refused_naming_the_limit(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="over the 4,000,000-character limit"):
        load_file(write(tmp_path / "huge.txt", "word " * (MAX_TEXT_CHARS // 5 + 1)))


@pytest.mark.parametrize(
    "doc_id",
    ["a/../b", "../../docs", "./x", "a/.", "a\nb", "a\u202eb", "\u2066x", "a\u200bb", "a\u200db",
     "\ufeffa", "a\u2060b", "a\u2028b", "a\u2029b", "a\udcffb"],
)
def test_ids_that_would_address_or_show_as_another_are_refused(doc_id: str) -> None:
    assert id_problem(doc_id) is not None


@pytest.mark.parametrize("doc_id", ["docs/a.txt", "/srv/notes/a.md", "a..b/c.txt", "text-0f3a"])
def test_plain_path_ids_are_accepted(doc_id: str) -> None:
    assert id_problem(doc_id) is None


@pytest.mark.parametrize(("name", "shown_as"), [
    (os.fsdecode(b"bad\xffname.txt"), "bad\\xffname.txt"),
    ("right\u202etxt.md", "right\\u202etxt.md"),
    ("a\nb.txt", "a\\nb.txt"),
])
def test_a_file_name_that_cannot_be_an_id_is_that_files_error(tmp_path: Path, name: str,
                                                              shown_as: str) -> None:
    path = write(tmp_path / name, "body text")
    with pytest.raises(InvalidInput, match="cannot be a document id") as info:
        load_file(path)
    assert shown_as in info.value.detail and info.value.detail.isprintable()


def test_load_or_record_turns_any_failure_into_that_files_one_line_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy(path: Path, **_: object) -> None:
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(indexing, "load_file", buggy)
    summary = IndexSummary()
    assert load_or_record(write(tmp_path / "a.txt", "x"), summary) is None
    assert summary.errors == [(str(tmp_path / "a.txt"), f"{tmp_path / 'a.txt'}: could not be "
                               "loaded (RuntimeError: a bug over two lines)")]

    def interrupted(path: Path, **_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(indexing, "load_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_or_record(tmp_path / "a.txt", summary)


# -- what is read: regular files inside the roots, at most MAX_FILE_BYTES ------------------------


def test_links_in_folders_are_refused_unless_followed_and_inside_the_roots(
        tmp_path: Path) -> None:
    docs, outside = tmp_path / "docs", tmp_path / "outside"
    docs.mkdir()
    outside.mkdir()
    write(outside / "secret.txt", "the secret")
    write(docs / "real.txt", "real text")
    (docs / "innocent.txt").symlink_to(outside / "secret.txt")
    (docs / "alias.txt").symlink_to(docs / "real.txt")
    (docs / "status.txt").symlink_to("/proc/self/status")
    (docs / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    (docs / "loop").symlink_to(docs)

    def walked(follow: bool) -> tuple[list[str], dict[str, str]]:
        found = list(walk_files([docs], follow_links=follow))
        return ([p.name for p in found if isinstance(p, Path)],
                {r.path.name: r.reason for r in found if isinstance(r, Refused)})

    taken, refused = walked(False)
    assert taken == ["real.txt"]
    assert sorted(refused) == ["alias.txt", "dangling.txt", "innocent.txt", "status.txt"]
    assert "symbolic link; not followed (use --follow-links" in refused["innocent.txt"]

    taken, refused = walked(True)
    assert sorted(taken) == ["alias.txt", "real.txt"]
    assert sorted(refused) == ["dangling.txt", "innocent.txt", "status.txt"]
    assert "outside the folders being indexed" in refused["innocent.txt"]


def test_devices_and_fifos_are_refused_without_reading_or_waiting(tmp_path: Path) -> None:
    (tmp_path / "zero.txt").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "pipe.txt")
    outcomes: dict[str, str] = {}

    def load_all() -> None:
        for name in ("zero.txt", "pipe.txt"):
            with pytest.raises(UnsupportedFile, match="not a regular file") as info:
                load_file(tmp_path / name)
            outcomes[name] = info.value.detail

    worker = threading.Thread(target=load_all, daemon=True)  # a FIFO used to block forever
    worker.start()
    worker.join(30)
    assert sorted(outcomes) == ["pipe.txt", "zero.txt"]


def test_a_file_over_the_size_cap_is_refused_after_reading_at_most_the_cap(
        tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(InvalidInput, match="over the 52428800-byte limit"):
        load_file(big)
