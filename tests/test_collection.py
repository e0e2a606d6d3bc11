"""The on-disk index: reopening, refusing a mismatched model, repairing its vector snapshot."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import seed_paragraphs

from qa.collection import MANIFEST, SNAPSHOT, Collection
from qa.embedding import Embedder
from qa.errors import DocumentNotFound, IndexMismatch, IndexNotFound
from qa.indexing import index_paths
from qa.settings import Settings
from qa.types import Document


def test_reopened_index_answers_the_same(built_index: Collection, settings: Settings,
                                          embedder: Embedder) -> None:
    before = built_index.dense_search("who led the Russian delegation?", 3)
    built_index.close()
    reopened = Collection.open(settings, embedder)
    assert reopened.dense_search("who led the Russian delegation?", 3) == before
    assert reopened.check()["missing_vectors"] == 0


def test_opening_with_another_model_is_refused(built_index: Collection, settings: Settings,
                                               embedder: Embedder) -> None:
    built_index.close()
    manifest = settings.index_dir / MANIFEST
    data = json.loads(manifest.read_text())
    data["model"] = "some-other-model"
    manifest.write_text(json.dumps(data))
    with pytest.raises(IndexMismatch, match="some-other-model"):
        Collection.open(settings, embedder)


def test_opening_a_missing_index_says_how_to_build_one(tmp_path: Path, embedder: Embedder
                                                       ) -> None:
    with pytest.raises(IndexNotFound, match="qa index"):
        Collection.open(Settings(index_dir=tmp_path / "nope"), embedder)


def test_lost_snapshot_is_rebuilt_from_sqlite_without_embedding(
    built_index: Collection, settings: Settings, embedder: Embedder
) -> None:
    built_index.close()
    (settings.index_dir / SNAPSHOT).unlink()
    calls = embedder.calls
    reopened = Collection.open(settings, embedder)
    report = reopened.check()
    assert report["vectors"] == report["chunks"] > 0
    assert embedder.calls == calls, "vectors come back from SQLite, not from the model"


def test_stale_snapshot_is_reconciled_at_open(built_index: Collection, settings: Settings,
                                              embedder: Embedder) -> None:
    built_index.save_snapshot()
    stale = (settings.index_dir / SNAPSHOT).read_bytes()
    built_index.add([Document(id="new", text="Penguins live in Antarctica.", title="New")])
    built_index.delete(built_index.list_documents(0, 1)[0][0].id)
    built_index.close()
    (settings.index_dir / SNAPSHOT).write_bytes(stale)  # as if we crashed before saving
    reopened = Collection.open(settings, embedder)
    report = reopened.check()
    assert report["missing_vectors"] == report["orphan_vectors"] == 0
    top = reopened.dense_search("where do penguins live?", 1)
    assert reopened.chunk_rows([top[0][0]])[top[0][0]].document_id == "new"


def test_unchanged_documents_cost_no_embedding(built_index: Collection, seed_docs: Path,
                                               embedder: Embedder) -> None:
    calls = embedder.calls
    summary = index_paths(built_index, [seed_docs], progress=False)
    assert summary.unchanged == 1 and summary.embedded == 0
    assert embedder.calls == calls


def test_indexing_with_progress_shows_the_embedding_bar_and_is_quiet_without(
        collection: Collection, seed_docs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index_paths(collection, [seed_docs], progress=False)
    assert capsys.readouterr().err == ""
    index_paths(collection, [seed_docs], force=True, progress=True)
    shown = capsys.readouterr().err
    # Files, then the embedding itself (ONNX's bar, or sentence-transformers' "Batches").
    assert "indexing" in shown and ("embedding" in shown or "Batches" in shown)


def test_deleting_an_unknown_document_is_not_found(built_index: Collection) -> None:
    with pytest.raises(DocumentNotFound):
        built_index.delete("missing")


def test_one_file_named_three_ways_is_one_document_and_leaves_no_orphan_vectors(
    collection: Collection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("f.txt").write_text("The lighthouse keeper paints the shutters blue.", "utf-8")
    summary = index_paths(collection, [Path("f.txt"), Path("f.txt"), Path("./f.txt")],
                          progress=False)
    assert (summary.added, summary.embedded) == (1, 1)
    assert collection.counts() == (1, 1)
    report = collection.check()
    assert report["orphan_vectors"] == report["missing_vectors"] == 0


def test_a_metadata_only_change_is_stored_without_embedding(collection: Collection,
                                                            embedder: Embedder) -> None:
    text = "The tide rose 40 cm at noon."
    collection.add([Document(id="t", text=text, title="Tides", metadata={"tag": "a"})])
    calls = embedder.calls
    report = collection.add([Document(id="t", text=text, title="Tides",
                                      metadata={"tag": "b"})])
    assert report.replaced == ["t"] and report.embedded == 0 and embedder.calls == calls
    assert collection.get_document("t").metadata == {"tag": "b"}


def test_a_question_inside_its_snapshot_never_waits_for_a_write_holding_the_vectors(
        built_index: Collection) -> None:
    """A write takes the vector index, then the store; a question's snapshot holds the store
    while it reads its candidates' vectors. Waiting there for the index would deadlock the two
    (a load test of questions beside writes once hung on it): it reads SQLite's copy instead."""
    ids = built_index.store.chunk_ids()[:5].tolist()
    victim = built_index.list_documents(0, 1)[0][0].id
    expected = built_index.cosines("who led the Russian delegation?", ids)

    def interrupted(*_: object) -> None:
        raise TimeoutError("the question waited for the write: deadlock")

    previous = signal.signal(signal.SIGALRM, interrupted)
    try:
        with built_index.snapshot():
            writer = threading.Thread(target=built_index.delete, args=(victim,), daemon=True)
            writer.start()
            deadline = time.monotonic() + 30
            while built_index._lock.acquire(blocking=False):  # until the write holds the index
                built_index._lock.release()
                assert time.monotonic() < deadline, "the write never took the vector index"
                time.sleep(0.005)
            signal.alarm(10)  # a lock wait is interrupted by a signal: a hang becomes a failure
            found = built_index.cosines("who led the Russian delegation?", ids)
            signal.alarm(0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    writer.join(30)
    assert not writer.is_alive()
    assert found == expected  # the same floats from SQLite's copy as from the index's


KEYWORD_QUESTIONS = ("who led the Russian delegation?", "where were the talks held?",
                     "prisoner exchange", "what did Zelensky say about Putin?")


def test_a_bulk_write_merges_the_keyword_index_into_one_segment_with_the_same_scores(
        collection: Collection) -> None:
    parts = seed_paragraphs(3)
    for document in parts:  # one commit each: FTS5 leaves a segment per commit
        collection.add([document])
    assert collection.store.keyword_segments() == 3
    before = [collection.keyword_search(q, 10) for q in KEYWORD_QUESTIONS]
    assert any(before)
    assert collection.merge_keyword_index(collection.counts()[1])
    assert collection.store.keyword_segments() == 1
    # The same postings read from one place: the same chunks, and bit-identical BM25.
    assert [collection.keyword_search(q, 10) for q in KEYWORD_QUESTIONS] == before
    assert not collection.merge_keyword_index(collection.counts()[1])  # nothing left to merge


def test_a_small_write_leaves_the_keyword_index_to_fts5s_own_merging(
        collection: Collection) -> None:
    parts = seed_paragraphs(12)
    collection.add(parts[:-1])
    collection.add(parts[-1:])
    chunks = collection.counts()[1]
    assert chunks > 10 and collection.store.keyword_segments() == 2
    # One chunk of 12: merging would rewrite the whole index for a twelfth of it.
    assert not collection.merge_keyword_index(1)
    assert collection.store.keyword_segments() == 2


def test_qa_index_leaves_a_merged_keyword_index(collection: Collection, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for document in seed_paragraphs(3):  # fewer than FTS5's automerge (4 segments)
        (folder / f"{document.id}.txt").write_text(document.text, encoding="utf-8")
    monkeypatch.setattr("qa.indexing.GROUP_CHUNKS", 1)  # a commit per file, as a big load
    summary = index_paths(collection, [folder], progress=False)
    assert summary.added == 3 and not summary.errors and not summary.warnings
    assert collection.store.keyword_segments() == 1
    assert collection.keyword_search("Russian delegation", 3)
