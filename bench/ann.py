"""HNSW at 1M vectors: search p50 and recall@10 against exact search, on synthetic vectors.

The vectors are mixtures of real MiniLM vectors of SciFact chunks (see `corpus.mixtures`), the
queries real SciFact questions. Building the graph is the slow part (minutes on two cores), so
the built index is cached under bench/results/cache, keyed by its size and HNSW parameters.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from bench.corpus import CACHE, Vectors, mixtures
from bench.measure import median_ms
from qa import vectors as vector_module
from qa.vectors import VectorIndex


def measure_ann(real: Vectors, queries: Vectors, n: int) -> dict[str, Any]:
    import faiss

    key = (f"ann-{n}-{len(real)}-M{vector_module.HNSW_M}"
           f"-efc{vector_module.HNSW_EF_CONSTRUCTION}.faiss")
    path = CACHE / key
    index = VectorIndex.load(path, real.shape[1])
    built_s = None
    if index is None or len(index) != n:
        index = VectorIndex(real.shape[1])
        started = time.perf_counter()
        done = 0
        for block in mixtures(real, n):
            index.add(np.arange(done, done + len(block), dtype=np.int64), block)
            done += len(block)
            print(f"  ANN: {done}/{n} vectors in the graph", file=sys.stderr)
        built_s = round(time.perf_counter() - started, 1)
        CACHE.mkdir(parents=True, exist_ok=True)
        index.save(path)
    exact = faiss.IndexFlatIP(real.shape[1])
    for block in mixtures(real, n):
        exact.add(block)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    _, truth = exact.search(queries, 10)
    ann_s, hits = [], 0
    for q, row in zip(queries, truth, strict=True):
        started = time.perf_counter()
        found, _ = index.search(q, 10)
        ann_s.append(time.perf_counter() - started)
        hits += len(set(found.tolist()) & set(row.tolist()))
    exact_s = []
    for q in queries[:20]:
        started = time.perf_counter()
        exact.search(q.reshape(1, -1), 10)
        exact_s.append(time.perf_counter() - started)
    return {
        "vectors": n,
        "synthetic": "normalised mixtures of two real MiniLM vectors of SciFact chunks + noise",
        "queries": len(queries),
        "layout": index.layout,
        "hnsw": {"M": vector_module.HNSW_M, "ef_construction": vector_module.HNSW_EF_CONSTRUCTION,
                 "ef_search": index.ef_search},
        "search_p50_ms": median_ms(ann_s),
        "recall_at_10": round(hits / (10 * len(queries)), 4),
        "exact_search_p50_ms": median_ms(exact_s),
        "build_s": built_s if built_s is not None else "cached",
    }
