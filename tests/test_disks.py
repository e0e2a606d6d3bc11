"""Read-only and full disks (issue 14, defect 8): a read-only index answers and refuses writes
plainly; a full disk is a clear 507 / one CLI line, and nothing committed is lost.

Real mounts, not permission bits: tests run as root (here and in CI), and root writes through
`chmod a-w`. A read-only bind mount and a small tmpfs need CAP_SYS_ADMIN; without it those
tests skip, saying so.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, LiveServer, seed_paragraphs

from qa.collection import DATABASE, LOCK, Collection
from qa.embedding import Embedder
from qa.errors import ReadOnlyIndex, StorageFull
from qa.indexing import IndexSummary, merge_keyword_index
from qa.retrieval import retrieve
from qa.settings import Settings
from qa.types import Document

KEY = "disk-key-41f0"
PROBLEM = "application/problem+json"
QUESTION = "who led the Russian delegation?"
VOLCANO = ("Mount Tambora erupted in April 1815, the largest eruption in recorded history; "
           "the following year became known as the year without a summer in Europe.")


def _mount(target: Path, *steps: list[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for n, step in enumerate(steps):
        result = subprocess.run(["mount", *step, str(target)], capture_output=True, text=True)
        if result.returncode:
            if n:
                _unmount(target)
            pytest.skip(f"cannot mount here ({result.stderr.strip()}); needs CAP_SYS_ADMIN")


def _unmount(target: Path) -> None:
    if subprocess.run(["umount", str(target)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)  # still busy


@contextmanager
def read_only_mount(source: Path, target: Path) -> Iterator[Path]:
    _mount(target, ["--bind", str(source)], ["-o", "remount,ro,bind"])
    try:
        yield target
    finally:
        _unmount(target)


@contextmanager
def small_disk(target: Path, size: str = "8m") -> Iterator[Path]:
    _mount(target, ["-t", "tmpfs", "-o", f"size={size}", "tmpfs"])
    try:
        yield target
    finally:
        _unmount(target)


def fill(directory: Path) -> Path:
    """Write a file until the disk has no byte left; deleting it frees the disk again."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for size in (65536, 4096, 512, 1):  # down to the last few bytes
            try:
                while fh.write(b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def closed_index(built_index: Collection, settings: Settings) -> Path:
    built_index.close()
    return settings.index_dir


# -- read-only ------------------------------------------------------------------------------


def test_read_only_setting_answers_and_refuses_writes_with_a_503_problem(
    closed_index: Path, embedder: Embedder
) -> None:
    before = digest(closed_index / DATABASE)
    (closed_index / LOCK).unlink()
    settings = Settings(index_dir=closed_index, read_only=True, api_keys=KEY,
                        ask_rate_limit=None)
    with LiveServer(settings, embedder) as server, httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}
    ) as client:
        answer = client.post("/ask", json={"question": QUESTION, "k": 1})
        assert answer.status_code == 200 and "Medinsky" in answer.json()["passages"][0]["text"]
        for response in (client.put("/documents/new", json={"text": VOLCANO}),
                         client.post("/documents", json=[{"id": "new", "text": VOLCANO}]),
                         client.delete("/documents/new")):
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == PROBLEM
            assert "read-only" in response.json()["detail"]
    assert digest(closed_index / DATABASE) == before
    assert not (closed_index / LOCK).exists(), "a read-only index writes nothing, not a lock"


def test_an_index_on_a_read_only_mount_answers_and_refuses_writes(
    closed_index: Path, tmp_path: Path, embedder: Embedder
) -> None:
    with read_only_mount(closed_index, tmp_path / "replica") as replica:
        settings = Settings(index_dir=replica)  # no QA_READ_ONLY: the mount is detected
        collection = Collection.open(settings, embedder)
        try:
            assert collection.read_only
            assert "Medinsky" in retrieve(collection, QUESTION, 1)[0].text
            with pytest.raises(ReadOnlyIndex, match="read-only"):
                collection.add([Document(id="new", text=VOLCANO, title="Tambora")])
        finally:
            collection.close()
        with pytest.raises(ReadOnlyIndex, match="cannot be built or changed|not be built"):
            Collection.open(settings, embedder, create=True)


@pytest.mark.slow
def test_cli_ask_on_a_read_only_mount_answers(closed_index: Path, tmp_path: Path) -> None:
    with read_only_mount(closed_index, tmp_path / "replica") as replica:
        asked = qa("ask", "who heads the Russian delegation?", "-k", "1", "--index", str(replica))
        assert asked.returncode == 0, asked.stderr
        assert "Medinsky" in asked.stdout
        indexed = qa("index", str(ROOT / "seeds"), "--index", str(replica))
        assert indexed.returncode == 1
        assert one_line(indexed.stderr).startswith(f"error: index {replica} is read-only")


# -- full ----------------------------------------------------------------------------------


def test_a_full_disk_is_storage_full_and_keeps_every_committed_document(
    closed_index: Path, tmp_path: Path, embedder: Embedder
) -> None:
    with small_disk(tmp_path / "small") as disk:
        shutil.copytree(closed_index, disk / "index")
        settings = Settings(index_dir=disk / "index")
        collection = Collection.open(settings, embedder)
        try:
            filler = fill(disk)
            with pytest.raises(StorageFull, match="disk is full"):
                collection.add([Document(id="big", text=VOLCANO * 60, title="Tambora")])
            filler.unlink()
            assert collection.counts()[0] == 1, "the failed write left nothing behind"
            collection.add([Document(id="later", text=VOLCANO, title="Tambora")])
        finally:
            collection.close()
        reopened = Collection.open(settings, embedder)
        try:
            assert reopened.counts()[0] == 2
            report = reopened.check()
            assert report["missing_vectors"] == report["orphan_vectors"] == 0
        finally:
            reopened.close()


def test_a_disk_too_full_to_merge_the_keyword_index_costs_a_warning_not_the_run(
    tmp_path: Path, embedder: Embedder
) -> None:
    with small_disk(tmp_path / "small", "16m") as disk:
        collection = Collection.open(Settings(index_dir=disk / "index"), embedder, create=True)
        try:
            for document in seed_paragraphs(3):  # a segment each
                collection.add([document])
            before = collection.keyword_search("Russian delegation", 5)
            # The WAL emptied, so the merge must grow it, on a disk with no byte left.
            collection.store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            filler = fill(disk)
            summary = IndexSummary(embedded=collection.counts()[1])
            merge_keyword_index(collection, summary)
            assert len(summary.warnings) == 1
            assert summary.warnings[0].startswith("keyword index left in segments: disk is full")
            assert collection.store.keyword_segments() == 3
            assert collection.keyword_search("Russian delegation", 5) == before
            filler.unlink()
            merge_keyword_index(collection, summary)  # with room again, it merges
            assert collection.store.keyword_segments() == 1 and len(summary.warnings) == 1
            assert collection.keyword_search("Russian delegation", 5) == before
        finally:
            collection.close()


def test_a_full_disk_answers_writes_with_a_507_problem(
    closed_index: Path, tmp_path: Path, embedder: Embedder
) -> None:
    with small_disk(tmp_path / "small") as disk:
        shutil.copytree(closed_index, disk / "index")
        settings = Settings(index_dir=disk / "index", api_keys=KEY, ask_rate_limit=None)
        with LiveServer(settings, embedder) as server, httpx.Client(
            base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}
        ) as client:
            filler = fill(disk)
            response = client.put("/documents/big", json={"text": VOLCANO * 60})
            assert response.status_code == 507, response.text
            assert response.headers["content-type"] == PROBLEM
            assert "disk is full" in response.json()["detail"]
            assert client.post("/ask", json={"question": QUESTION}).status_code == 200
            filler.unlink()
            assert client.put("/documents/big", json={"text": VOLCANO * 60}).status_code == 201


@pytest.mark.slow
def test_cli_index_on_a_full_disk_says_so_in_one_line(closed_index: Path, tmp_path: Path
                                                      ) -> None:
    with small_disk(tmp_path / "small") as disk:
        shutil.copytree(closed_index, disk / "index")
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "volcano.txt").write_text(VOLCANO * 60)
        fill(disk)
        indexed = qa("index", str(docs), "--index", str(disk / "index"))
        assert indexed.returncode == 1
        assert one_line(indexed.stderr).startswith("error: disk is full")


def qa(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=300)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]
