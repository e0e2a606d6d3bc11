"""Files → documents: metadata sources, title fallbacks, and clear per-file errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qa.errors import InvalidInput, UnsupportedFile
from qa.loaders import document_id_for, iter_files, load_file, supported_suffixes


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
