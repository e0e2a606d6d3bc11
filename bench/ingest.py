"""Ingestion rate against the embedder's encode alone on the same chunks.

Rounds alternate raw encode and full ingestion (chunking, embedding, SQLite with FTS5, FAISS,
snapshot) so both see the same load; the ratio is taken per round, then the median.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from qa.collection import Collection
from qa.embedding import Embedder
from qa.settings import Settings
from qa.types import Document


def ingest_seconds(documents: list[Document], embedder: Embedder) -> tuple[float, int]:
    """A fresh collection's `add` of `documents`: (seconds, chunks embedded)."""
    with tempfile.TemporaryDirectory(prefix="qa-bench-") as tmp:
        collection = Collection.open(Settings(index_dir=Path(tmp) / "index"), embedder,
                                     create=True)
        started = time.perf_counter()
        report = collection.add(documents, progress=False)
        collection.close()
        return time.perf_counter() - started, report.embedded


def measure_ingestion(documents: list[Document], texts: list[str], embedder: Embedder,
                      rounds: int) -> dict[str, Any]:
    raw_s, ours_s, ratios = [], [], []
    for _ in range(rounds):
        started = time.perf_counter()
        embedder.embed(texts, progress=False)  # the backend's encode alone, no storage
        raw = time.perf_counter() - started
        ours, embedded = ingest_seconds(documents, embedder)
        if embedded != len(texts):
            raise RuntimeError(f"ingested {embedded} chunks, expected {len(texts)}")
        raw_s.append(raw)
        ours_s.append(ours)
        ratios.append(raw / ours)
    return {
        "chunks": len(texts),
        "rounds": rounds,
        "chunks_per_s": round(len(texts) / float(np.median(ours_s)), 2),
        "encode_only_chunks_per_s": round(len(texts) / float(np.median(raw_s)), 2),
        "ratio_to_encode": round(float(np.median(ratios)), 3),
    }
