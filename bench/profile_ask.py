"""Where /ask spends its time outside embedding: `rank_passages` timed, and optionally profiled,
on the seed index and on a ~2k-chunk index (the Super Bowl SQuAD article + SciFact documents,
SciFact's vectors from the bench cache).

Every question is embedded once before timing, so the query cache answers and what is timed is
everything but the model: FAISS, FTS5, sentence matching, rows, passages. With `--baseline REV`
the same questions also run through the `qa` package as of git revision REV (extracted beside
this one under another name), in turns, on the same index, so a change is measured against its
base under the same machine load; and their outputs are compared.

    python -m bench.profile_ask --baseline HEAD          # medians, before vs after
    python -m bench.profile_ask --profile                # cProfile of the current code
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import pstats
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import Corpus, cached_vectors, chunked, corpus_key, scifact_documents
from bench.serving import build_collection
from qa.collection import Collection
from qa.embedding import Embedder
from qa.eval.datasets import load_dataset
from qa.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SUPER_BOWL = ROOT.parent / "shared" / "eval" / "squad-v1.1-dev-super-bowl-50.json"
MIXED = 2000  # chunks in the mixed index


def mixed_index(directory: Path, embedder: Embedder) -> Path:
    """Super Bowl article + SciFact documents up to MIXED chunks; built once, then reused."""
    if (directory / "manifest.json").exists():
        return directory
    settings = Settings()
    squad = load_dataset(SUPER_BOWL)
    sb_docs, sb_chunks = chunked(list(squad.documents), settings.chunk_tokens,
                                 settings.chunk_overlap, 10**9)
    sb_vectors = embedder.embed([c.text for cs in sb_chunks for c in cs], progress=False)
    sf_docs, sf_chunks = chunked(scifact_documents(), settings.chunk_tokens,
                                 settings.chunk_overlap, MIXED - sum(map(len, sb_chunks)))
    sf_vectors = cached_vectors([c.text for cs in sf_chunks for c in cs], embedder,
                                corpus_key(embedder.name, settings.chunk_tokens,
                                           settings.chunk_overlap))
    corpus = Corpus(sb_docs + sf_docs, sb_chunks + sf_chunks, np.vstack([sb_vectors, sf_vectors]))
    build_collection(corpus, directory, embedder)
    return directory


def baseline_package(revision: str, into: Path) -> str:
    """`qa` as of `revision`, importable as `qa_base` (its own imports renamed)."""
    archive = subprocess.run(["git", "archive", revision, "qa"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "qa").rename(into / "qa_base")
    for path in (into / "qa_base").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("from qa.", "from qa_base.").replace("import qa.",
                        "import qa_base.").replace("from qa import", "from qa_base import"),
                        encoding="utf-8")
    sys.path.insert(0, str(into))
    return "qa_base"


def outputs(passages: list[Any]) -> list[tuple[Any, ...]]:
    return [(p.rank, p.score, p.text, p.citation.chunk_id, p.citation.start, p.citation.end,
             p.highlight and (p.highlight.start, p.highlight.end, p.highlight.text),
             p.confidence) for p in passages]


def same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            if isinstance(u, float) and isinstance(v, float):
                if abs(u - v) > 1e-9:
                    return False
            elif u != v:
                return False
    return True


def forget_sentences() -> None:
    import qa.highlight

    for cached in (qa.highlight._sentence_terms, qa.highlight._anchors,
                   qa.highlight._typed_words):
        cached.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git revision to compare with (e.g. HEAD)")
    parser.add_argument("--profile", action="store_true", help="cProfile the current code")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--index-dir", type=Path, default=Path(tempfile.gettempdir())
                        / "qa-profile-ask-mixed")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--cold", action="store_true",
                        help="empty the current code's sentence caches before each call")
    args = parser.parse_args()

    import qa.retrieval

    embedder = Embedder(Settings().model)
    questions = [q.text for q in load_dataset(SUPER_BOWL).questions]
    indexes = {"seed": ROOT / "index", "mixed-2k": mixed_index(args.index_dir, embedder)}
    base: Any = None
    if args.baseline:
        name = baseline_package(args.baseline, Path(tempfile.mkdtemp(prefix="qa-base-")))
        base = (importlib.import_module(f"{name}.retrieval"),
                importlib.import_module(f"{name}.collection").Collection,
                importlib.import_module(f"{name}.settings").Settings)
    for label, directory in indexes.items():
        collection = Collection.open(Settings(index_dir=directory), embedder)
        old = (base[1].open(base[2](index_dir=directory), embedder)
               if base else None)
        for q in questions:  # warm: every query vector cached, every page read once
            qa.retrieval.retrieve(collection, q, args.k)
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for q in questions:
                qa.retrieval.rank_passages(collection, q, 5)
            profiler.disable()
            print(f"== {label}: cProfile of rank_passages over {len(questions)} questions")
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        if old is not None:
            differ = sum(not same(outputs(qa.retrieval.retrieve(collection, q, args.k)),
                                  outputs(base[0].retrieve(old, q, args.k)))
                         for q in questions)
            print(f"{label}: retrieve() outputs differing from {args.baseline}: "
                  f"{differ} of {len(questions)}")
        times: dict[str, list[float]] = {"current": [], "baseline": []}
        for _ in range(args.rounds):
            for q in questions:  # in turns, question by question: the same load for both
                for which, module, coll in (("current", qa.retrieval, collection),
                                            ("baseline", base and base[0], old)):
                    if coll is None:
                        continue
                    if args.cold and which == "current":
                        forget_sentences()
                    started = time.perf_counter()
                    module.rank_passages(coll, q, max(args.k, 5))
                    times[which].append(time.perf_counter() - started)
        for which, values in times.items():
            if values:
                print(f"{label} ({collection.counts()[1]} chunks) {which}: rank_passages "
                      f"median {1000 * float(np.median(values)):.2f} ms, "
                      f"p90 {1000 * float(np.percentile(values, 90)):.2f} ms "
                      f"over {len(values)} calls")
        collection.close()
        if old is not None:
            old.close()


if __name__ == "__main__":
    main()
