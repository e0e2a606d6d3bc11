"""Crash safety: `qa index` killed with SIGKILL at random points never costs a committed document.

After every kill the index must open, pass its consistency check without re-embedding anything,
and answer a question about each document the killed process had reported committed.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, SHARED

from qa.collection import MANIFEST, Collection
from qa.embedding import Embedder
from qa.retrieval import retrieve
from qa.settings import Settings

CORPUS = SHARED / "eval" / "beir-scifact" / "corpus.jsonl"
DOCUMENTS = 300
KILLS = 6
# The real CLI, with smaller commit groups than the default so that one ingest has many commit
# points for a kill to land before, inside or after.
INDEX_WITH_SMALL_GROUPS = (
    "import sys, qa.indexing; qa.indexing.GROUP_CHUNKS = 16; "
    "from qa.cli import main; sys.argv[0] = 'qa'; main()"
)


def write_corpus(folder: Path, count: int) -> dict[str, str]:
    """A few hundred small real-text files (SciFact abstracts, cut to a few sentences);
    returns id → title."""
    folder.mkdir()
    titles: dict[str, str] = {}
    with CORPUS.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            title, text = record["title"].strip(), record["text"].strip()
            # A title is the question that must find its document, so it must be specific
            # ("Summary" is the title of several abstracts).
            if len(title.split()) < 4 or len(text) < 200:
                continue
            # Small files (one chunk each) keep the embedding, and so the test, short.
            text = text[: text.rfind(". ", 0, 600) + 1 or 600]
            name = f"doc-{record['_id']}.md"
            (folder / name).write_text(f"# {title}\n\n{text}\n", encoding="utf-8")
            titles[f"corpus/{name}"] = title
            if len(titles) == count:
                break
    return titles


class IndexRun:
    """One `qa index --print-ids` in a subprocess, its committed ids collected as they come."""

    def __init__(self, cwd: Path, index: Path, log: Path) -> None:
        self.committed: queue.Queue[str] = queue.Queue()
        self._log = log.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-c", INDEX_WITH_SMALL_GROUPS, "index", "corpus", "--index",
             str(index), "--print-ids"],
            cwd=cwd, env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE, stderr=self._log, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.committed.put(line.strip())

    def wait_for_commits(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.committed.qsize() < count and self.process.poll() is None:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)

    def kill(self) -> bool:
        """SIGKILL; True when it was still running (a real crash, not a finished run)."""
        running = self.process.poll() is None
        if running:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        self._log.close()
        return running

    def drain(self) -> set[str]:
        ids = set()
        while not self.committed.empty():
            ids.add(self.committed.get())
        return ids


def verify(settings: Settings, embedder: Embedder, committed: set[str],
           titles: dict[str, str]) -> dict[str, int]:
    """The index opens, agrees with itself, and answers for every committed document."""
    if not (settings.index_dir / MANIFEST).exists():  # killed before the index was created
        assert not committed
        return {"documents": 0, "chunks": 0}
    calls = embedder.calls
    collection = Collection.open(settings, embedder)
    try:
        report = collection.check()
        assert report["missing_vectors"] == report["orphan_vectors"] == 0, report
        assert report["unembedded_chunks"] == 0, report
        assert report["vectors"] == report["chunks"], report
        assert embedder.calls == calls, "opening after a crash must not need the model"
        stored = {row.id for row in collection.list_documents(0, len(committed) + 1000)[0]}
        assert committed <= stored, f"lost committed documents: {sorted(committed - stored)[:5]}"
        unanswered = []
        for doc_id in sorted(committed):
            passages = retrieve(collection, titles[doc_id], 10, "hybrid")
            if doc_id not in {p.citation.document_id for p in passages}:
                unanswered.append(doc_id)
        assert not unanswered, f"no answer cites {unanswered[:5]} ({len(unanswered)} in all)"
        return report
    finally:
        collection.close()


@pytest.mark.slow
def test_sigkilled_ingest_keeps_every_reported_document_and_a_consistent_index(
    tmp_path: Path, embedder: Embedder
) -> None:
    titles = write_corpus(tmp_path / "corpus", DOCUMENTS)
    settings = Settings(index_dir=tmp_path / "index")
    seed = int(os.environ.get("QA_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"\ncrash test seed {seed} (QA_CRASH_SEED={seed} reproduces the kill points)")
    committed: set[str] = set()
    kills = 0
    started = time.monotonic()
    while kills < KILLS and len(committed) < len(titles):
        run = IndexRun(tmp_path, settings.index_dir, tmp_path / "index.log")
        # Kill after a random number of commits plus a random delay: before the model has
        # loaded, between groups, inside a transaction, or while the snapshot is written.
        run.wait_for_commits(rng.randint(0, 30), timeout=120)
        time.sleep(rng.uniform(0.0, 1.0))
        crashed = run.kill()
        if not crashed:  # it finished first: it must have succeeded, or we would loop forever
            log = (tmp_path / "index.log").read_text()[-2000:]
            assert run.process.returncode == 0, log
        committed |= run.drain()
        kills += crashed
        report = verify(settings, embedder, committed, titles)
        print(f"kill {kills}: {'killed' if crashed else 'finished'} with "
              f"{len(committed)} committed, {report['chunks']} chunks, check ok")
    assert kills >= 3, f"only {kills} kills landed before the ingest finished"

    final = IndexRun(tmp_path, settings.index_dir, tmp_path / "index.log")
    assert final.process.wait(timeout=300) == 0, (tmp_path / "index.log").read_text()[-2000:]
    final.kill()
    committed |= final.drain()
    assert committed <= set(titles)
    # Every file is in now (a document committed just before a kill, too late to be printed,
    # was found unchanged by the final run), and each one answers.
    report = verify(settings, embedder, set(titles), titles)
    assert report["documents"] == len(titles)
    print(f"{kills} kills in {time.monotonic() - started:.1f}s; all {len(titles)} documents "
          "answerable after the final run")
