"""Ingestion rate against `model.encode` alone on the same chunks, and a quantized embedder.

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


def measure_ingestion(documents: list[Document], texts: list[str], embedder: Embedder,
                      rounds: int) -> dict[str, Any]:
    raw_s, ours_s, ratios = [], [], []
    model = embedder._model
    for _ in range(rounds):
        started = time.perf_counter()
        model.encode(texts, batch_size=embedder.batch_size, normalize_embeddings=True,
                     convert_to_numpy=True, show_progress_bar=False)
        raw = time.perf_counter() - started
        with tempfile.TemporaryDirectory(prefix="qa-bench-") as tmp:
            collection = Collection.open(Settings(index_dir=Path(tmp) / "index"), embedder,
                                         create=True)
            started = time.perf_counter()
            report = collection.add(documents, progress=False)
            collection.close()
            ours = time.perf_counter() - started
        if report.embedded != len(texts):
            raise RuntimeError(f"ingested {report.embedded} chunks, expected {len(texts)}")
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


def measure_int8(texts: list[str], embedder: Embedder) -> dict[str, Any]:
    """torch dynamic int8 quantization of the Linear layers: speed-up and cosine to fp32."""
    import torch

    quantized = Embedder(batch_size=embedder.batch_size)
    torch.ao.quantization.quantize_dynamic(quantized._model, {torch.nn.Linear},
                                           dtype=torch.qint8, inplace=True)
    quantized.embed(texts[:8], progress=False)
    fp32_s, int8_s = [], []
    for _ in range(2):
        started = time.perf_counter()
        a = embedder.embed(texts, progress=False)
        fp32_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        b = quantized.embed(texts, progress=False)
        int8_s.append(time.perf_counter() - started)
    cosine = np.sum(a * b, axis=1)
    speedup = float(np.median(fp32_s) / np.median(int8_s))
    ok = speedup >= 1.5 and float(cosine.min()) >= 0.99
    return {"texts": len(texts), "speedup": round(speedup, 2),
            "cosine_min": round(float(cosine.min()), 4),
            "cosine_mean": round(float(cosine.mean()), 4),
            "adopted": ok,
            "rule": "adopt only if speedup >= 1.5 and cosine_min >= 0.99"}
