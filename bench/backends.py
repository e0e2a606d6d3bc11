"""ONNX Runtime against PyTorch, side by side on the same texts: query embedding, encode rate,
ingestion rate and how close their vectors are; and the int8-quantised ONNX graph against fp32.

Every pair alternates (onnx, torch, onnx, torch...) so both see the same load on a shared box;
the speed-ups are ratios of medians taken in one run.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.ingest import ingest_seconds
from bench.measure import median_ms
from qa.embedding import Embedder
from qa.settings import Settings
from qa.types import Document

SUPER_BOWL = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / \
    "squad-v1.1-dev-super-bowl-50.json"


def measure_backends(documents: list[Document], texts: list[str], questions: list[str],
                     onnx: Embedder, torch: Embedder, rounds: int) -> dict[str, Any]:
    a, b = onnx.embed(texts, progress=False), torch.embed(texts, progress=False)
    # The equal-vectors check is the fp32 graph's (the default); int8 is within 0.99 of it.
    fp32 = onnx if onnx.precision == "fp32" else Embedder(precision="fp32")
    cosine = np.sum(fp32.embed(texts, progress=False) * b, axis=1)
    cosine_default = np.sum(a * b, axis=1)
    q_onnx: list[float] = []
    q_torch: list[float] = []
    for q in questions:  # embed_questions(), not embed_query(): no cache on either side
        for embedder, samples in ((onnx, q_onnx), (torch, q_torch)):
            started = time.perf_counter()
            embedder.embed_questions([q], progress=False)
            samples.append(time.perf_counter() - started)
    enc: dict[str, list[float]] = {"onnx": [], "torch": []}
    ing: dict[str, list[float]] = {"onnx": [], "torch": []}
    for _ in range(rounds):
        for name, embedder in (("onnx", onnx), ("torch", torch)):
            started = time.perf_counter()
            embedder.embed(texts, progress=False)
            enc[name].append(time.perf_counter() - started)
            seconds, embedded = ingest_seconds(documents, embedder)
            if embedded != len(texts):
                raise RuntimeError(f"ingested {embedded} chunks, expected {len(texts)}")
            ing[name].append(seconds)

    def rate(samples: list[float]) -> float:
        return round(len(texts) / float(np.median(samples)), 2)

    return {
        "chunks": len(texts), "questions": len(questions), "rounds": rounds,
        "onnx_precision": onnx.precision,
        "cosine_min_onnx_to_torch": round(float(cosine.min()), 6),
        "cosine_min_default_onnx_to_torch": round(float(cosine_default.min()), 6),
        "query_embed_p50_ms": {"onnx": median_ms(q_onnx), "torch": median_ms(q_torch)},
        "query_embed_speedup": round(float(np.median(q_torch) / np.median(q_onnx)), 2),
        "encode_chunks_per_s": {"onnx": rate(enc["onnx"]), "torch": rate(enc["torch"])},
        "encode_speedup": round(float(np.median(enc["torch"]) / np.median(enc["onnx"])), 2),
        "ingest_chunks_per_s": {"onnx": rate(ing["onnx"]), "torch": rate(ing["torch"])},
        "ingest_speedup": round(float(np.median(ing["torch"]) / np.median(ing["onnx"])), 2),
    }


def hybrid_hit_at_1(embedder: Embedder, questions: int | None = None) -> float:
    """hybrid hit@1 on the shared Super Bowl article, indexed afresh with `embedder`: what
    `qa eval ../shared/eval/squad-v1.1-dev-super-bowl-50.json` reports (on its first
    `questions` only, when given: the smoke run checks that it runs, not what it says)."""
    from qa.eval.datasets import load_dataset
    from qa.eval.retrievers import LocalRetriever
    from qa.eval.runner import dataset_index, evaluate

    dataset = load_dataset(SUPER_BOWL)
    if questions is not None:
        dataset = dataclasses.replace(dataset, questions=dataset.questions[:questions])
    with dataset_index(dataset, Settings(), embedder, cache_dir=None) as collection:
        # Questions embedded in batches first, as `qa eval --batch-queries` does: faster.
        result, = evaluate(dataset, LocalRetriever(collection), ["hybrid"], k=10,
                           batch_queries=True)
    return float(result.metrics["hit@1"])


def measure_int8(texts: list[str], embedder: Embedder, questions: int | None = None
                 ) -> dict[str, Any]:
    """Documents through the int8 graph, questions fp32 (QA_ONNX_PRECISION=int8-documents)
    against fp32: speed and cosine of documents, hybrid hit@1. `embedder` supplies the batch
    size; both graphs come from the export cache."""
    fp32 = Embedder(precision="fp32", batch_size=embedder.batch_size)
    quantized = Embedder(precision="int8-documents", batch_size=embedder.batch_size)
    quantized.embed(texts[:8], progress=False)
    fp32.embed(texts[:8], progress=False)
    fp32_s, int8_s = [], []
    for _ in range(3):  # alternated, medians: both see the same load
        started = time.perf_counter()
        a = fp32.embed(texts, progress=False)
        fp32_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        b = quantized.embed(texts, progress=False)
        int8_s.append(time.perf_counter() - started)
    cosine = np.sum(a * b, axis=1)
    hit_fp32 = hybrid_hit_at_1(fp32, questions) if SUPER_BOWL.is_file() else None
    hit_int8 = hybrid_hit_at_1(quantized, questions) if SUPER_BOWL.is_file() else None
    drop = None if hit_fp32 is None or hit_int8 is None else round(hit_fp32 - hit_int8, 4)
    ok = float(cosine.min()) >= 0.99 and drop is not None and drop <= 0.005
    return {"texts": len(texts), "questions": questions or "all",
            "kind": "documents: ONNX dynamic int8, weights per channel, FFN output of layers "
                    "0-1 in fp32; questions fp32",
            "speedup": round(float(np.median(fp32_s) / np.median(int8_s)), 2),
            "cosine_min": round(float(cosine.min()), 4),
            "cosine_mean": round(float(cosine.mean()), 4),
            "hybrid_hit_at_1": {"fp32": hit_fp32, "int8": hit_int8, "drop": drop},
            "adopted": ok, "default_precision": embedder.precision,
            "rule": "adopt only if cosine_min >= 0.99 and hybrid hit@1 drops <= 0.005"}
