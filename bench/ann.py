"""HNSW at 1M vectors: search p50 and recall@10 against exact search, on synthetic vectors.

The vectors are drawn from a Gaussian mixture fitted to real MiniLM vectors of SciFact chunks
(see `corpus.clustered`), the queries are real SciFact questions. Building the graph is the
slow part (minutes on two cores), so the built index is cached under bench/results/cache, keyed
by its generator, size and HNSW parameters.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from bench.corpus import CACHE, Vectors, clustered
from bench.measure import median_ms
from qa import vectors as vector_module
from qa.vectors import VectorIndex


def measure_ann(real: Vectors, queries: Vectors, n: int) -> dict[str, Any]:
    import faiss

    key = (f"ann-clustered-{n}-{len(real)}-sq8-M{vector_module.HNSW_M}"
           f"-efc{vector_module.HNSW_EF_CONSTRUCTION}.faiss")
    path = CACHE / key
    index = VectorIndex.load(path, real.shape[1])
    built_s = None
    if index is None or len(index) != n:
        index = VectorIndex(real.shape[1])
        started = time.perf_counter()
        done = 0
        for block in clustered(real, n):
            index.add(np.arange(done, done + len(block), dtype=np.int64), block)
            done += len(block)
            print(f"  ANN: {done}/{n} vectors in the graph", file=sys.stderr)
        built_s = round(time.perf_counter() - started, 1)
        CACHE.mkdir(parents=True, exist_ok=True)
        index.save(path)
    exact = faiss.IndexFlatIP(real.shape[1])
    for block in clustered(real, n):
        exact.add(block)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    _, truth = exact.search(queries, 10)
    default = index.ef_search
    sweep = {}
    for ef in sorted({64, 128, default, 2 * default}):
        index.ef_search = ef
        p50, recall = _search(index, queries, truth)
        sweep[str(ef)] = {"search_p50_ms": p50, "recall_at_10": recall}
    index.ef_search = default
    exact_s = []
    for q in queries[:20]:
        started = time.perf_counter()
        exact.search(q.reshape(1, -1), 10)
        exact_s.append(time.perf_counter() - started)
    return {
        "vectors": n,
        "synthetic": "drawn from a 64-topic Gaussian mixture fitted to real MiniLM vectors of"
                     " SciFact chunks (bench.corpus.clustered)",
        "queries": len(queries),
        "layout": index.layout,
        "hnsw": {"M": vector_module.HNSW_M, "ef_construction": vector_module.HNSW_EF_CONSTRUCTION,
                 "ef_search": index.ef_search, "codes": "8-bit scalar quantizer",
                 "refine_factor": vector_module.REFINE_FACTOR},
        "search_p50_ms": sweep[str(default)]["search_p50_ms"],
        "recall_at_10": sweep[str(default)]["recall_at_10"],
        "ef_search_sweep": sweep,
        "exact_search_p50_ms": median_ms(exact_s),
        "build_s": built_s if built_s is not None else "cached",
    }


def _search(index: VectorIndex, queries: Vectors, truth: np.ndarray) -> tuple[float, float]:
    """Median single-query latency and recall@10 against the exact top 10."""
    took, hits = [], 0
    for q, row in zip(queries, truth, strict=True):
        started = time.perf_counter()
        found, _ = index.search(q, 10)
        took.append(time.perf_counter() - started)
        hits += len(set(found.tolist()) & set(row.tolist()))
    return median_ms(took), round(hits / (10 * len(queries)), 4)
