"""The same workload through txtai (in-memory, same model, hybrid), side by side with ours.

Both ingest the same chunks of the same documents and answer the same questions in-process
(txtai's HTTP API is a separate package, so HTTP is left out on both sides). txtai is given our
chunks ready-made, so its ingestion skips chunking; ours does its own. Rounds alternate.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import Corpus
from bench.measure import median_ms
from qa.collection import Collection
from qa.embedding import Embedder, bundled_model_path
from qa.retrieval import retrieve
from qa.settings import Settings
from qa.types import Document


def txtai_available() -> str | None:
    try:
        import txtai  # noqa: F401
    except ImportError:
        return "txtai is not installed (pip install 'qa[bench]')"
    return None


def measure_peer(documents: list[Document], texts: list[str], questions: list[str],
                 embedder: Embedder) -> dict[str, Any]:
    from txtai import Embeddings

    half = len(questions) // 2
    with tempfile.TemporaryDirectory(prefix="qa-bench-peer-") as tmp:
        collection = Collection.open(Settings(index_dir=Path(tmp) / "index"), embedder,
                                     create=True)
        started = time.perf_counter()
        collection.add(documents, progress=False)
        collection.save_snapshot()
        ours_ingest = time.perf_counter() - started

        peer = Embeddings(path=str(bundled_model_path()), method="sentence-transformers",
                          content=True, hybrid=True, batch=embedder.batch_size,
                          encodebatch=embedder.batch_size)
        started = time.perf_counter()
        peer.index((i, t, None) for i, t in enumerate(texts))
        peer_ingest = time.perf_counter() - started

        ours_s, peer_s = [], []
        # Alternate, each question once per system: no query cache can help either side.
        for q in questions[:half] + questions[half:]:
            started = time.perf_counter()
            retrieve(collection, q, 5, "hybrid")
            ours_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            peer.search(q, 5)
            peer_s.append(time.perf_counter() - started)
        collection.close()
        peer.close()
    return {
        "peer": "txtai (Embeddings, content=True, hybrid=True, faiss; same MiniLM model)",
        "chunks": len(texts),
        "ingest_chunks_per_s": {"qa": round(len(texts) / ours_ingest, 2),
                                "txtai": round(len(texts) / peer_ingest, 2)},
        "ingest_speed_ratio_qa_over_txtai": round(peer_ingest / ours_ingest, 3),
        "query_p50_ms": {"qa": median_ms(ours_s), "txtai": median_ms(peer_s)},
        "query_p50_ratio_qa_over_txtai": round(float(np.median(ours_s) / np.median(peer_s)), 3),
        "questions": len(questions),
    }


def measure_peer_at_scale(corpus: Corpus, questions: list[str]) -> dict[str, Any]:
    """txtai's in-process hybrid query over the very chunks /ask was served (the largest size),
    for the acceptance ratio. Embedding 100k chunks with txtai would take an hour, so its index
    gets our vectors through its `external` method; questions are embedded by
    sentence-transformers on torch, as txtai's own default (`sentence-transformers`) does."""
    from sentence_transformers import SentenceTransformer
    from txtai import Embeddings

    model = SentenceTransformer(str(bundled_model_path()), device="cpu", local_files_only=True)
    texts = corpus.texts()
    known: dict[str, np.ndarray] = {}
    for text, vector in zip(texts, corpus.vectors, strict=True):
        known.setdefault(text, vector)

    def transform(batch: list[str]) -> np.ndarray:
        rows = [known.get(t) for t in batch]
        if all(r is not None for r in rows):
            return np.stack(rows)  # type: ignore[arg-type]
        return np.asarray(model.encode(batch, normalize_embeddings=True,
                                       convert_to_numpy=True))

    peer = Embeddings(method="external", transform=transform, content=True, hybrid=True)
    started = time.perf_counter()
    peer.index((i, t, None) for i, t in enumerate(texts))
    built = time.perf_counter() - started
    for q in questions[:3]:
        peer.search(q, 5)
    samples = []
    for q in questions:
        started = time.perf_counter()
        peer.search(q, 5)
        samples.append(time.perf_counter() - started)
    peer.close()
    return {"peer": "txtai (Embeddings, external vectors = ours, sbert question embedding, "
                    "content=True, hybrid=True)",
            "chunks": len(texts), "questions": len(questions), "build_s": round(built, 1),
            "query_p50_ms": median_ms(samples)}
