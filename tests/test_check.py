"""`qa check` sees drift before anything mends it, and `--repair` mends it (issue 14, defect 12)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from conftest import ROOT

from qa.collection import DATABASE, SNAPSHOT, Collection, drift_in
from qa.embedding import Embedder
from qa.settings import Settings
from qa.types import Document

PENGUINS = "Penguins live in Antarctica and dive for krill under the ice."


def make_stale_snapshot(index: Collection, settings: Settings) -> None:
    """A snapshot saved before a delete and an add, as if the writer crashed before saving."""
    index.save_snapshot()
    stale = (settings.index_dir / SNAPSHOT).read_bytes()
    index.delete(index.list_documents(0, 1)[0][0].id)
    index.add([Document(id="new", text=PENGUINS, title="Penguins")])
    index.close()
    (settings.index_dir / SNAPSHOT).write_bytes(stale)


def test_check_reports_orphan_vectors_before_repairing_them(
    built_index: Collection, settings: Settings, embedder: Embedder
) -> None:
    make_stale_snapshot(built_index, settings)
    looked = Collection.open(settings, None, reconcile=False)
    try:
        report = looked.check()
        assert report["orphan_vectors"] > 0 and report["missing_vectors"] > 0
        assert drift_in(report) == ["missing_vectors", "orphan_vectors"]
    finally:
        looked.close()
    mended = Collection.open(settings, embedder, reconcile=False)
    try:
        assert drift_in(mended.check()), "looking did not repair anything"
        mended.repair()
        assert drift_in(mended.check()) == []
    finally:
        mended.close()
    again = Collection.open(settings, None, reconcile=False)
    assert drift_in(again.check()) == [], "the repaired snapshot was saved"
    again.close()


def test_check_compares_keyword_rows_with_chunk_rows_and_repair_reindexes_them(
    built_index: Collection, settings: Settings
) -> None:
    built_index.add([Document(id="new", text=PENGUINS, title="Penguins")])
    (chunk_id,) = [c for c, _ in built_index.keyword_search("penguins krill", 5)]
    built_index.close()
    with sqlite3.connect(settings.index_dir / DATABASE) as db:  # drift made behind its back
        db.execute("INSERT INTO chunks_fts (chunks_fts, rowid, text) VALUES ('delete', ?, ?)",
                   (chunk_id, PENGUINS))
        db.execute("INSERT INTO chunks_fts (rowid, text) VALUES (999999, 'ghost words')")
    collection = Collection.open(settings, None, reconcile=False)
    try:
        report = collection.check()
        assert report["missing_keyword_rows"] == 1 and report["orphan_keyword_rows"] == 1
        assert drift_in(report) == ["missing_keyword_rows", "orphan_keyword_rows"]
        collection.repair()
        assert drift_in(collection.check()) == []
        assert [c for c, _ in collection.keyword_search("penguins krill", 5)] == [chunk_id]
        assert collection.keyword_search("ghost", 5) == []
    finally:
        collection.close()


@pytest.mark.slow
def test_cli_check_exits_1_on_drift_and_repair_mends_it(
    built_index: Collection, settings: Settings
) -> None:
    make_stale_snapshot(built_index, settings)
    snapshot = (settings.index_dir / SNAPSHOT).read_bytes()
    looked = qa("check", "--index", str(settings.index_dir))
    assert looked.returncode == 1
    assert json.loads(looked.stdout)["orphan_vectors"] > 0
    assert looked.stderr.strip() == ("error: the index has drifted (missing_vectors, "
                                     "orphan_vectors); run `qa check --repair` to mend it")
    assert (settings.index_dir / SNAPSHOT).read_bytes() == snapshot, "check alone writes nothing"
    repaired = qa("check", "--repair", "--index", str(settings.index_dir))
    assert repaired.returncode == 0, repaired.stderr
    assert "repaired: missing_vectors, orphan_vectors" in repaired.stderr
    clean = qa("check", "--index", str(settings.index_dir))
    assert clean.returncode == 0, clean.stderr


def qa(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "qa.cli", *args], cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=300)
