"""Benchmark corpora: real SciFact text, real embeddings cached on disk, labelled synthetic growth.

Embedding is the one slow step (≈ 30 chunks/s on a quiet 2-core machine), so the real vectors of
the SciFact chunks are cached under bench/results/cache, keyed by model and chunker, and grown
on demand: a later, larger run embeds only the chunks it lacks. Anything bigger than the real
corpus is synthetic and says so: copies of real documents whose vectors are the real ones plus
Gaussian noise (for /ask at 100k), or draws from a Gaussian mixture fitted to the real vectors
(for the 1M ANN).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qa.chunking import split_document
from qa.types import Chunk, Document

SCIFACT = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "beir-scifact"
CACHE = Path(__file__).resolve().parent / "results" / "cache"
COPY_NOISE = 0.025  # per-dimension σ: a copy's vector keeps cosine ≈ 0.9 with its original
Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Corpus:
    """Documents with their chunks in a fixed order, and one vector per chunk."""

    documents: list[Document]
    chunks: list[list[Chunk]]
    vectors: Vectors
    synthetic_vectors: int = 0

    @property
    def size(self) -> int:
        return sum(len(c) for c in self.chunks)

    def texts(self) -> list[str]:
        return [c.text for chunks in self.chunks for c in chunks]


def scifact_documents() -> list[Document]:
    documents = []
    with open(SCIFACT / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["text"].strip():
                documents.append(Document(id=f"scifact/{row['_id']}", text=row["text"],
                                          title=row["title"] or row["_id"]))
    return documents


def scifact_questions() -> list[str]:
    with open(SCIFACT / "queries.jsonl", encoding="utf-8") as fh:
        return [json.loads(line)["text"] for line in fh]


def chunked(documents: list[Document], tokens: int, overlap: int, at_least: int
            ) -> tuple[list[Document], list[list[Chunk]]]:
    """Whole documents, in corpus order, until they hold `at_least` chunks (or run out)."""
    kept: list[Document] = []
    chunks: list[list[Chunk]] = []
    total = 0
    for document in documents:
        if total >= at_least:
            break
        parts = split_document(document, tokens, overlap)
        kept.append(document)
        chunks.append(parts)
        total += len(parts)
    return kept, chunks


def cached_vectors(texts: list[str], embedder: object, key: str, *, log: bool = True) -> Vectors:
    """Real embeddings of `texts`; the cache keeps per-text hashes so any matching prefix counts."""
    CACHE.mkdir(parents=True, exist_ok=True)
    data, meta = CACHE / f"{key}.npy", CACHE / f"{key}.json"
    wanted = [_digest(t) for t in texts]
    have = np.zeros((0, 0), dtype=np.float32)
    if data.exists() and meta.exists():
        stored = json.loads(meta.read_text())["hashes"]
        same = 0
        while same < min(len(stored), len(wanted)) and stored[same] == wanted[same]:
            same += 1
        if same:
            have = np.load(data, mmap_mode="r")[:same]
    if len(have) >= len(texts):
        return np.ascontiguousarray(have[: len(texts)], dtype=np.float32)
    parts = [np.asarray(have, dtype=np.float32)] if len(have) else []
    step = 512
    for start in range(len(have), len(texts), step):
        parts.append(embedder.embed(texts[start : start + step], progress=False))  # type: ignore[attr-defined]
        sofar = np.vstack(parts)
        np.save(data.with_suffix(".tmp.npy"), sofar)
        data.with_suffix(".tmp.npy").replace(data)
        meta.write_text(json.dumps({"hashes": wanted[: len(sofar)]}))
        if log:
            print(f"  embedded {len(sofar)}/{len(texts)} real chunks (cached)", file=sys.stderr)
    return np.ascontiguousarray(np.vstack(parts), dtype=np.float32)


def grown(base: Corpus, target: int, seed: int = 0) -> Corpus:
    """`base` plus copies of its documents (ids `ID~j`) until `target` chunks.

    The copies' text is real; their vectors are synthetic: the original's plus N(0, σ²) noise,
    renormalised, so the vector index cannot answer them by exact duplicates.
    """
    rng = np.random.default_rng(seed)
    documents, chunks, blocks = list(base.documents), list(base.chunks), [base.vectors]
    total, copy = base.size, 1
    while total < target:
        offset = 0
        for document, parts in zip(base.documents, base.chunks, strict=True):
            if total >= target:
                break
            clone = Document(id=f"{document.id}~{copy}", text=document.text,
                             title=document.title)
            documents.append(clone)
            chunks.append(parts)
            noisy = base.vectors[offset : offset + len(parts)] + rng.normal(
                0.0, COPY_NOISE, (len(parts), base.vectors.shape[1])).astype(np.float32)
            blocks.append(noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
            offset += len(parts)
            total += len(parts)
        copy += 1
    vectors = np.ascontiguousarray(np.vstack(blocks), dtype=np.float32)
    return Corpus(documents, chunks, vectors, synthetic_vectors=len(vectors) - base.size)


def clustered(real: Vectors, n: int, seed: int = 1, clusters: int = 64, block: int = 100_000):
    """Synthetic vectors for the 1M case, shaped like the real ones: a Gaussian mixture fitted
    to them. k-means splits the real vectors into `clusters` topics; each synthetic vector is
    drawn from its topic's Gaussian (its mean and covariance: mean + w·residuals with
    w ~ N(0, 1/m) over the topic's m real vectors), then normalised. The collection keeps the
    real topics and their spread, without near-copies of any one real vector.

    An earlier generator, normalise(a + u·b + ε) over random real pairs, put ~n/len(real)
    near-copies around every real vector, a density no corpus has: there recall@10 measured
    tie-breaking among near-duplicates (0.927 at 200k, efSearch 192).
    """
    import faiss

    kmeans = faiss.Kmeans(real.shape[1], clusters, niter=20, seed=seed, spherical=True)
    kmeans.train(np.ascontiguousarray(real, dtype=np.float32))
    _, assigned = kmeans.index.search(np.ascontiguousarray(real, dtype=np.float32), 1)
    topics = [real[assigned[:, 0] == c] for c in range(clusters)]
    topics = [t for t in topics if len(t) > 1]
    means = [t.mean(axis=0) for t in topics]
    residuals = [t - m for t, m in zip(topics, means, strict=True)]
    share = np.array([len(t) for t in topics], dtype=np.float64)
    rng = np.random.default_rng(seed)
    for start in range(0, n, block):
        m = min(block, n - start)
        topic = rng.choice(len(topics), size=m, p=share / share.sum())
        out = np.empty((m, real.shape[1]), dtype=np.float32)
        for c in np.unique(topic):
            rows = np.flatnonzero(topic == c)
            r = residuals[c]
            w = rng.standard_normal((len(rows), len(r))).astype(np.float32) / np.sqrt(len(r))
            out[rows] = means[c] + w @ r
        yield np.ascontiguousarray(out / np.linalg.norm(out, axis=1, keepdims=True))


def scifact_corpus(embedder: Any, at_least: int) -> Corpus:
    """SciFact documents chunked with the default chunker until `at_least` chunks, with their
    vectors from the cache (embedded once per model and chunker)."""
    from qa.settings import Settings

    settings = Settings()
    documents, chunks = chunked(scifact_documents(), settings.chunk_tokens,
                                settings.chunk_overlap, at_least)
    vectors = cached_vectors([c.text for cs in chunks for c in cs], embedder,
                             corpus_key(embedder.name, settings.chunk_tokens,
                                        settings.chunk_overlap))
    return Corpus(documents, chunks, vectors)


def corpus_key(model: str, tokens: int, overlap: int) -> str:
    return f"scifact-{model.replace('/', '_')}-{tokens}-{overlap}"


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]


if __name__ == "__main__":
    # Warm the cache ahead of a run: python -m bench.corpus [N]
    from qa.embedding import Embedder
    from qa.settings import Settings

    settings = Settings()
    scifact_corpus(Embedder(settings.model, batch_size=settings.batch_size),
                   int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
