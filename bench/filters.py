"""`python -m bench.filters [N]`: a filtered vector search on HNSW, graph walk against exact.

With a filter, the HNSW layout can walk its graph keeping only allowed nodes, or score the
allowed vectors exactly (qa/vectors.py `_search_allowed`). This measures both, per share of
allowed vectors, on N synthetic vectors shaped like real MiniLM ones (bench.corpus.clustered)
with SciFact questions as queries: search time p50 and recall@30 of the walk against exact
(the exact search is the truth). Allowed sets are drawn two ways: at random (a filter
unrelated to meaning, e.g. a date range), and as one topic (the vectors nearest a random one:
a filter that follows meaning, e.g. one site's documents). EXACT_BELOW is chosen from this.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench.corpus import clustered, scifact_corpus, scifact_questions  # noqa: E402

DEPTH = 30  # what retrieve() asks of the vector index for k=5
SHARES = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def measure(n: int, queries: int = 60, seed: int = 3) -> dict[str, Any]:
    import qa.vectors as vectors
    from qa.embedding import Embedder
    from qa.settings import Settings

    settings = Settings()
    embedder = Embedder(settings.model, batch_size=settings.batch_size)
    real = scifact_corpus(embedder, 2000).vectors
    data = np.vstack(list(clustered(real, n)))
    index = vectors.VectorIndex(data.shape[1])
    started = time.perf_counter()
    index.add(np.arange(1, n + 1, dtype=np.int64), data)
    build_s = time.perf_counter() - started
    asked = embedder.embed_questions(scifact_questions()[:queries], progress=False)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for share in SHARES:
        m = max(DEPTH, int(share * n))
        for how in ("random", "topic"):
            times: dict[str, list[float]] = {"graph": [], "exact": []}
            recall, short = [], 0
            for q in asked:
                if how == "random":
                    allowed = np.sort(rng.choice(n, m, replace=False) + 1).astype(np.int64)
                else:
                    centre = data[rng.integers(n)]
                    allowed = np.sort(np.argsort(-(data @ centre))[:m] + 1).astype(np.int64)
                found = {}
                for path, crossover in (("graph", 0), ("exact", 10**12)):
                    vectors.EXACT_BELOW = crossover
                    t0 = time.perf_counter()
                    ids, _ = index.search(q, DEPTH, allowed=allowed)
                    times[path].append(time.perf_counter() - t0)
                    found[path] = set(ids.tolist())
                recall.append(len(found["graph"] & found["exact"]) / len(found["exact"]))
                short += len(found["graph"]) < DEPTH
            rows.append({"share": share, "allowed": m, "allowed_as": how,
                         "graph_p50_ms": round(1000 * float(np.median(times["graph"])), 2),
                         "exact_p50_ms": round(1000 * float(np.median(times["exact"])), 2),
                         "graph_recall_at_30": round(float(np.mean(recall)), 3),
                         "graph_short": short})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    unfiltered = []
    for q in asked:
        t0 = time.perf_counter()
        index.search(q, DEPTH)
        unfiltered.append(time.perf_counter() - t0)
    return {"vectors": n, "layout": index.layout, "build_s": round(build_s, 1),
            "queries": len(asked), "depth": DEPTH,
            "unfiltered_p50_ms": round(1000 * float(np.median(unfiltered)), 2), "rows": rows}


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000), indent=1))
