"""Rebuilding never pulls an index from under a process that has it open (issue 14, defect 7)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import ROOT, LiveServer

from qa.collection import DATABASE, Collection
from qa.embedding import Embedder
from qa.errors import IndexBusy
from qa.settings import Settings
from qa.types import Document

KEY = "lock-key-93ac"
VOLCANO = ("Mount Tambora erupted in April 1815, the largest eruption in recorded history; "
           "the following year became known as the year without a summer in Europe.")


def test_rebuild_is_refused_while_another_collection_has_the_index_open(
    built_index: Collection, settings: Settings, embedder: Embedder
) -> None:
    with pytest.raises(IndexBusy, match=re.escape("(a server?); stop it first")):
        Collection.open(settings, embedder, create=True, rebuild=True)
    built_index.add([Document(id="after", text=VOLCANO, title="Tambora")])
    built_index.close()
    reopened = Collection.open(settings, embedder)
    try:
        assert reopened.get_document("after").title == "Tambora"
        assert reopened.counts()[0] == 2, "the seed document and the new one, both kept"
    finally:
        reopened.close()


def test_opening_during_a_rebuild_is_refused_and_allowed_once_it_ends(
    built_index: Collection, settings: Settings, embedder: Embedder
) -> None:
    built_index.close()
    rebuilding = Collection.open(settings, embedder, create=True, rebuild=True)
    try:
        assert rebuilding.counts() == (0, 0), "a rebuild starts from nothing"
        with pytest.raises(IndexBusy, match="being rebuilt"):
            Collection.open(settings, embedder)
        rebuilding.add([Document(id="fresh", text=VOLCANO, title="Tambora")])
    finally:
        rebuilding.close()
    reopened = Collection.open(settings, embedder)
    assert reopened.counts()[0] == 1
    reopened.close()


@pytest.mark.slow
def test_cli_rebuild_of_a_served_index_exits_1_and_keeps_acknowledged_writes(
    built_index: Collection, settings: Settings, embedder: Embedder, seed_docs: Path
) -> None:
    built_index.close()
    served = Settings(index_dir=settings.index_dir, api_keys=KEY, ask_rate_limit=None)
    database = settings.index_dir / DATABASE
    inode = database.stat().st_ino
    with LiveServer(served, embedder) as server, httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {KEY}"}
    ) as client:
        result = subprocess.run(
            [sys.executable, "-m", "qa.cli", "index", str(seed_docs), "--rebuild",
             "--index", str(settings.index_dir)],
            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
            text=True, timeout=300)
        assert result.returncode == 1
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert lines == [f"error: index {settings.index_dir} is open by another process "
                         "(a server?); stop it first"]
        assert database.stat().st_ino == inode, "the served database was left in place"
        assert client.put("/documents/acknowledged", json={"text": VOLCANO}).status_code == 201
    reopened = Collection.open(settings, embedder)
    try:
        assert reopened.get_document("acknowledged").text == VOLCANO
    finally:
        reopened.close()
