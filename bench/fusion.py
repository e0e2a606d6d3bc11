"""Our feature fusion against plain reciprocal-rank fusion, on the shared labelled data.

    .venv/bin/python -m bench.fusion            # SQuAD article and SciFact (cached indexes)

Both use the same candidates, chunks, merging and highlights; only the fusion differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from qa.embedding import Embedder
from qa.eval.datasets import load_dataset
from qa.eval.runner import dataset_index, evaluate
from qa.retrieval import retrieve
from qa.settings import Settings

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "eval"
DATASETS = [SHARED / "squad-v1.1-dev-super-bowl-50.json", SHARED / "beir-scifact"]
KEYS = ("hit@1", "hit@5", "mrr@10", "ndcg@10", "highlight_hit@1")


def main() -> None:
    settings = Settings()
    embedder = Embedder(settings.model, batch_size=settings.batch_size)
    results = {}
    for path in DATASETS:
        dataset = load_dataset(path)
        with dataset_index(dataset, settings, embedder, cache_dir=Path(".cache/eval"),
                           log=lambda line: print(line, file=sys.stderr)) as collection:
            for fusion in ("rrf", "features"):
                def retriever(question: str, k: int, mode: str, fusion: str = fusion) -> list:
                    return retrieve(collection, question, k, "hybrid", fusion=fusion)  # type: ignore[arg-type]

                (result,) = evaluate(dataset, retriever, ["hybrid"], k=10)
                results[f"{path.name} {fusion}"] = {k: result.metrics.get(k) for k in KEYS}
                print(f"{path.name:40} {fusion:9} " + "  ".join(
                    f"{k} {result.metrics.get(k)}" for k in KEYS), file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
