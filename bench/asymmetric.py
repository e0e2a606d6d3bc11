"""`python -m bench.asymmetric`: int8 documents, fp32 questions (as FAISS's asymmetric distance
compares coded database vectors with exact queries), measured against all-fp32.

The opt-in int8 graph (`QA_ONNX_PRECISION=int8`) scales its activations per call over the
whole padded batch, so a text's vector depends on its batch companions, and it makes short
texts (questions) less alike. Here documents go through the int8 graph one text per run (batch
of 1, no padding: the vector depends on the text alone), while questions stay fp32, so
question-to-question similarity and the query path are the default's. Measured side by side,
in one process, alternating rounds, medians: encode and ingestion rates against torch, cosine
to fp32 and determinism, retrieval on the Super Bowl article and SciFact, and how often the
top passage's confidence crosses 0.5 differently. Changes no default; prints and saves JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.backends import SUPER_BOWL
from bench.corpus import SCIFACT, chunked, scifact_documents
from bench.ingest import ingest_seconds
from bench.measure import ROOT, revision
from qa.chunking import split_document
from qa.embedding import Embedder, Vectors, bundled_model_path
from qa.onnx_embedding import OnnxEncoder
from qa.settings import Settings

THRESHOLD = 0.5  # the service's default min_confidence: an answer is "found" at or above it


class AsymmetricEmbedder(Embedder):
    """fp32 for questions (`embed_query`, `warm_queries`: the inherited path and cache), the
    int8 graph one text per run for everything else (`embed`: documents at ingestion).

    `sessions` > 1 runs that many int8 sessions of one intra-op thread each, side by side,
    instead of one session using every core.
    """

    def __init__(self, *, sessions: int = 1, batch_size: int = 32) -> None:
        super().__init__(precision="fp32", batch_size=batch_size)
        path = bundled_model_path()
        threads = 1 if sessions > 1 else None
        self._int8 = [OnnxEncoder(path, precision="int8", threads=threads)
                      for _ in range(sessions)]
        self._pool = ThreadPoolExecutor(sessions) if sessions > 1 else None
        self._local = threading.local()

    @contextmanager
    def _questions(self) -> Iterator[None]:
        self._local.questions = True
        try:
            yield
        finally:
            self._local.questions = False

    def embed_query(self, question: str) -> Vectors:
        with self._questions():
            return super().embed_query(question)

    def warm_queries(self, questions: list[str]) -> None:
        with self._questions():
            super().warm_queries(questions)

    def embed(self, texts: list[str], *, progress: bool | None = None) -> Vectors:
        if not texts or getattr(self._local, "questions", False):
            return super().embed(texts, progress=progress)
        self.calls += len(texts)
        # batch_size 1: each run holds one text, unpadded, so its activation scales are its own.
        if self._pool is None:
            return self._int8[0].encode(texts, 1, False)
        n = len(self._int8)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        shares = [list(range(i, len(texts), n)) for i in range(n)]
        done = self._pool.map(lambda pair: pair[0].encode([texts[j] for j in pair[1]], 1, False),
                              zip(self._int8, shares, strict=True))
        for share, vectors in zip(shares, done, strict=True):
            out[share] = vectors
        return out


def cosines(a: Vectors, b: Vectors) -> dict[str, float]:
    c = np.sum(a * b, axis=1)
    return {"n": len(c), "min": round(float(c.min()), 5), "mean": round(float(c.mean()), 5),
            "p01": round(float(np.percentile(c, 1)), 5)}


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def measure_speed(embedders: dict[str, Embedder], rounds: int, chunks: int) -> dict[str, Any]:
    """Encode (`embed`) and full ingestion (`Collection.add`) of the same SciFact chunks the
    bench picks, each embedder in turn, `rounds` times; rates from medians, ratios to torch."""
    settings = Settings()
    documents, parts = chunked(scifact_documents(), settings.chunk_tokens,
                               settings.chunk_overlap, chunks)
    texts = [c.text for cs in parts for c in cs]
    for embedder in embedders.values():
        embedder.embed(texts[:8], progress=False)
    enc: dict[str, list[float]] = {name: [] for name in embedders}
    ing: dict[str, list[float]] = {name: [] for name in embedders}
    for r in range(rounds):
        order = list(embedders) if r % 2 == 0 else list(reversed(embedders))
        for name in order:
            started = time.perf_counter()
            embedders[name].embed(texts, progress=False)
            enc[name].append(time.perf_counter() - started)
            seconds, embedded = ingest_seconds(documents, embedders[name])
            if embedded != len(texts):
                raise RuntimeError(f"ingested {embedded} chunks, expected {len(texts)}")
            ing[name].append(seconds)
        log(f"speed round {r + 1}/{rounds}: " + ", ".join(
            f"{n} {len(texts) / enc[n][-1]:.1f}/{len(texts) / ing[n][-1]:.1f}" for n in order))

    def table(samples: dict[str, list[float]]) -> dict[str, Any]:
        base = float(np.median(samples["torch"]))
        return {name: {"chunks_per_s": round(len(texts) / float(np.median(s)), 2),
                       "vs_torch": round(base / float(np.median(s)), 2),
                       "rounds_chunks_per_s": [round(len(texts) / x, 1) for x in s]}
                for name, s in samples.items()}

    return {"chunks": len(texts), "rounds": rounds, "encode": table(enc),
            "ingest": table(ing)}


def shared_chunks(scifact: int) -> dict[str, list[str]]:
    """The Super Bowl paragraphs' chunks, the first `scifact` SciFact chunks (corpus order),
    and the Super Bowl questions."""
    from qa.eval.datasets import load_dataset

    settings = Settings()
    bowl = load_dataset(SUPER_BOWL)
    bowl_chunks = [c.text for d in bowl.documents
                   for c in split_document(d, settings.chunk_tokens, settings.chunk_overlap)]
    _, parts = chunked(scifact_documents(), settings.chunk_tokens, settings.chunk_overlap,
                       scifact)
    return {"super_bowl": bowl_chunks, "scifact": [c.text for cs in parts for c in cs],
            # Short texts quantise worst: the article's questions, as if they were documents.
            "super_bowl_questions_as_documents": [q.text for q in bowl.questions]}


def measure_agreement(fp32: Embedder, asym: AsymmetricEmbedder, int8: Embedder,
                      scifact: int) -> dict[str, Any]:
    """Cosine of int8 one-per-run document vectors to fp32's; and whether a text's vector
    depends on what was embedded with or before it (one-per-run: it must not)."""
    groups = shared_chunks(scifact)
    out: dict[str, Any] = {}
    every_fp32, every_asym, every_int8 = [], [], []
    for name, texts in groups.items():  # "all" below: the chunks, without the questions
        a, b, c = fp32.embed(texts, progress=False), asym.embed(texts, progress=False), \
            int8.embed(texts, progress=False)
        out[name] = {"int8_one_per_run": cosines(a, b), "int8_batched_32": cosines(a, c)}
        if name == "super_bowl_questions_as_documents":
            continue
        every_fp32.append(a)
        every_asym.append(b)
        every_int8.append(c)
    out["all"] = {"int8_one_per_run": cosines(np.vstack(every_fp32), np.vstack(every_asym)),
                  "int8_batched_32": cosines(np.vstack(every_fp32), np.vstack(every_int8))}
    # Determinism: each probe alone, then last in a call after 40 other texts of every length.
    pool = groups["scifact"][:40] + groups["super_bowl"][:10]
    probes = groups["super_bowl"][10:20] + groups["scifact"][40:50] + [
        "who led the Russian delegation?", "Which team won Super Bowl 50?"]
    alone_asym = np.vstack([asym.embed([p], progress=False) for p in probes])
    after_asym = np.vstack([asym.embed(pool + [p], progress=False)[-1:] for p in probes])
    alone_int8 = np.vstack([int8.embed([p], progress=False) for p in probes])
    after_int8 = np.vstack([int8.embed(pool + [p], progress=False)[-1:] for p in probes])
    out["determinism"] = {
        "probes": len(probes), "companions": len(pool),
        "int8_one_per_run_alone_vs_after_others": cosines(alone_asym, after_asym),
        "int8_one_per_run_bitwise_equal": bool(np.array_equal(alone_asym, after_asym)),
        "int8_batched_alone_vs_in_batch": cosines(alone_int8, after_int8),
    }
    return out


def evaluate_dataset(path: Path, embedders: dict[str, Embedder], cache: Path | None
                     ) -> dict[str, Any]:
    """Dense and hybrid over the dataset's own documents, indexed with each embedder (BEIR cut
    to the model's input, as `qa eval` does); questions embedded ahead in batches."""
    from qa.eval.datasets import load_dataset
    from qa.eval.retrievers import LocalRetriever
    from qa.eval.runner import dataset_index, evaluate

    dataset = load_dataset(path)
    settings = Settings()
    results: dict[str, Any] = {}
    outcomes: dict[str, Any] = {}
    for name, embedder in embedders.items():
        indexed = dataset.cut(embedder.model_input) if dataset.kind == "beir" else dataset
        started = time.perf_counter()
        with dataset_index(indexed, settings, embedder, log=log,
                           cache_dir=None if cache is None else cache / name) as collection:
            built = time.perf_counter() - started
            modes = evaluate(dataset, LocalRetriever(collection), ["dense", "hybrid"], k=10,
                             batch_queries=True)
        keep = ("hit@1", "hit@5", "mrr@10", "ndcg@10")
        results[name] = {m.mode: {key: m.metrics[key] for key in keep} for m in modes}
        results[name]["index_seconds"] = round(built, 1)
        outcomes[name] = {m.mode: m.outcomes for m in modes}
        log(f"{dataset.name} {name}: {results[name]}")
    if dataset.kind != "beir":
        results["confidence"] = confidence_shifts(outcomes)
    return results


def confidence_shifts(outcomes: dict[str, Any]) -> dict[str, Any]:
    """Per mode: the share of questions whose top-passage confidence falls on the other side
    of THRESHOLD than with fp32 documents, and how far confidences move."""
    out: dict[str, Any] = {}
    for name in outcomes:
        if name == "fp32":
            continue
        out[name] = {}
        for mode, theirs in outcomes[name].items():
            ours = outcomes["fp32"][mode]
            base = [o.passages[0].confidence if o.passages else 0.0 for o in ours]
            other = [o.passages[0].confidence if o.passages else 0.0 for o in theirs]
            if [o.question.id for o in ours] != [o.question.id for o in theirs]:
                raise RuntimeError("questions in a different order")
            flips = [(a >= THRESHOLD) != (b >= THRESHOLD) for a, b in zip(base, other,
                                                                          strict=True)]
            moved = np.abs(np.asarray(base) - np.asarray(other))
            same_top = [bool(a.passages and b.passages and a.passages[0].citation.chunk_id
                             == b.passages[0].citation.chunk_id) for a, b in zip(ours, theirs,
                                                                                 strict=True)]
            out[name][mode] = {
                "questions": len(flips), "crossed_0.5": sum(flips),
                "crossed_share": round(sum(flips) / len(flips), 4),
                "found_fp32": sum(a >= THRESHOLD for a in base),
                "found_other": sum(b >= THRESHOLD for b in other),
                "confidence_abs_change_mean": round(float(moved.mean()), 4),
                "confidence_abs_change_max": round(float(moved.max()), 4),
                "same_top_passage_share": round(sum(same_top) / len(same_top), 4),
            }
    return out


def measure_abstention(embedders: dict[str, Embedder]) -> dict[str, Any]:
    """The README's abstention figures (`qa eval SUPER_BOWL --unanswerable SCIFACT`, hybrid):
    the Super Bowl questions plus SciFact's as unanswerable ones, over the article alone."""
    from qa.eval.datasets import load_dataset
    from qa.eval.retrievers import LocalRetriever
    from qa.eval.runner import dataset_index, evaluate

    dataset = load_dataset(SUPER_BOWL).with_unanswerable(load_dataset(SCIFACT))
    keep = ("hit@1", "no_answer_auroc", "ece", "answered_precision", "answered_coverage")
    out: dict[str, Any] = {}
    for name, embedder in embedders.items():
        with dataset_index(dataset, Settings(), embedder, cache_dir=None) as collection:
            result, = evaluate(dataset, LocalRetriever(collection), ["hybrid"], k=10,
                               min_confidence=THRESHOLD, batch_queries=True)
        out[name] = {key: result.metrics[key] for key in keep}
        log(f"abstention {name}: {out[name]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.asymmetric", description=__doc__)
    parser.add_argument("--rounds", type=int, default=4, help="speed rounds (alternating)")
    parser.add_argument("--chunks", type=int, default=150, help="SciFact chunks for speed")
    parser.add_argument("--agreement-chunks", type=int, default=600,
                        help="SciFact chunks for the cosine check")
    parser.add_argument("--skip", default="",
                        help="comma list of speed,agreement,squad,abstention,scifact")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep the built SciFact indexes here, one folder per variant")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    out: dict[str, Any] = {"revision": revision(),
                           "started": datetime.now(UTC).isoformat(timespec="seconds"),
                           "variant": "documents: ONNX int8 (FFN output of layers 0-1 fp32), "
                                      "one text per run; questions: ONNX fp32"}
    fp32 = Embedder(precision="fp32")
    int8 = Embedder(precision="int8")
    asym = AsymmetricEmbedder()
    if "speed" not in skip:
        log("speed: torch; fp32 and int8, batched and one text per run")
        torch = Embedder(backend="torch")
        out["speed"] = measure_speed(
            {"torch": torch, "onnx_fp32": fp32, "int8_batched": int8,
             "int8_one_per_run": asym, "int8_one_per_run_2x1": AsymmetricEmbedder(sessions=2),
             # The control: is it the int8 graph, or one text per run, that is faster?
             "onnx_fp32_one_per_run": Embedder(precision="fp32", batch_size=1)},
            args.rounds, args.chunks)
        del torch
    if "agreement" not in skip:
        log("agreement: cosine to fp32, determinism")
        out["agreement"] = measure_agreement(fp32, asym, int8, args.agreement_chunks)
    if "squad" not in skip and SUPER_BOWL.is_file():
        log("Super Bowl article: fp32, int8 documents + fp32 questions, int8 both")
        out["super_bowl"] = evaluate_dataset(
            SUPER_BOWL, {"fp32": fp32, "int8_docs_fp32_questions": asym, "int8_both": int8},
            None)
    if "abstention" not in skip and SUPER_BOWL.is_file() and SCIFACT.is_dir():
        log("abstention: Super Bowl + SciFact questions as unanswerable, hybrid")
        out["abstention"] = measure_abstention({"fp32": fp32, "int8_docs_fp32_questions": asym})
    if "scifact" not in skip and SCIFACT.is_dir():
        log("SciFact: fp32 vs int8 documents + fp32 questions")
        out["scifact"] = evaluate_dataset(
            SCIFACT, {"fp32": fp32, "int8_docs_fp32_questions": asym}, args.cache_dir)
    out["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    target = ROOT / "bench" / "results" / f"asymmetric-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))
    log(f"saved {target}")


if __name__ == "__main__":
    main()
