"""Where /ask spends its time outside embedding: `rank_passages` timed, and optionally profiled,
on the seed index and on a ~2k-chunk index (the Super Bowl SQuAD article + SciFact documents,
SciFact's vectors from the bench cache); with `--scale N`, also on an N-chunk index built the way
`python -m bench --quick` builds its large size (2,000 real SciFact chunks grown by copies to N,
cached vectors plus noise), asked SciFact questions.

Every question is embedded once before timing, so the query cache answers and what is timed is
everything but the model: FAISS, FTS5, sentence matching, rows, passages. With `--baseline REV`
the same questions also run through the `qa` package as of git revision REV (extracted beside
this one under another name), in turns, on the same index, so a change is measured against its
base under the same machine load; and their outputs are compared.

    python -m bench.profile_ask --baseline HEAD          # medians, before vs after
    python -m bench.profile_ask --profile                # cProfile of the current code
    python -m bench.profile_ask --scale 100000 --only scifact-100000 --stages
                                                         # per-stage medians at 100k chunks
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import pstats
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import Corpus, chunked, grown, scifact_corpus, scifact_questions
from bench.measure import extract_package
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
    sf = scifact_corpus(embedder, MIXED - sum(map(len, sb_chunks)))
    corpus = Corpus(sb_docs + sf.documents, sb_chunks + sf.chunks,
                    np.vstack([sb_vectors, sf.vectors]))
    build_collection(corpus, directory, embedder)
    return directory


def scaled_index(directory: Path, embedder: Embedder, size: int) -> Path:
    """The corpus `python -m bench --quick` serves at `size` chunks: its 2,000 real SciFact
    chunks (cached vectors), grown by copies with noisy vectors; built once, then reused."""
    if (directory / "manifest.json").exists():
        return directory
    from bench.__main__ import PLANS

    build_collection(grown(scifact_corpus(embedder, PLANS["quick"]["real"]), size), directory,
                     embedder)
    return directory


# What `--stages` times inside rank_passages: the collection's reads and the pure steps.
COLLECTION_STAGES = ("dense_search", "keyword_search", "absent_words", "chunk_rows", "cosines",
                     "text_span")
RETRIEVAL_STAGES = ("match_sentences", "fuse_features", "_fused", "assemble_passages",
                    "highlight_of", "query_words")


# The stages that run after the keyword and dense sides have joined, inside the snapshot.
POST_JOIN_STAGES = ("chunk_rows", "cosines", "text_span", "match_sentences", "fuse_features",
                    "_fused", "assemble_passages", "highlight_of")


class PostJoinClock:
    """Times the `with collection.snapshot():` block of rank_passages (all the work after the
    keyword side has joined the dense one), on one collection instance."""

    def __init__(self, collection: Any) -> None:
        self.samples: list[float] = []
        self._collection = collection
        original = type(collection).snapshot
        samples = self.samples

        @contextmanager
        def timed() -> Iterator[None]:
            started = time.perf_counter()
            with original(collection):
                yield
            samples.append(time.perf_counter() - started)

        collection.snapshot = timed

    def restore(self) -> None:
        del self._collection.snapshot


class StageClock:
    """Wraps named methods of a collection and functions of a retrieval module with
    perf_counter, summing each call's time per question. The keyword side runs on a thread
    beside the dense one, so their times overlap: `post_join` is the snapshot block after
    they joined, and `rest` what of it the named stages leave (dicts, z-score inputs,
    Passage and Evidence objects, the snapshot's BEGIN/COMMIT)."""

    def __init__(self, module: Any, collection: Any) -> None:
        self.spent: dict[str, float] = {}
        self.samples: dict[str, list[float]] = {}
        self._undo: list[tuple[Any, str, Any]] = []
        for name in COLLECTION_STAGES:
            self._wrap(collection, name)
        for name in RETRIEVAL_STAGES:
            if hasattr(module, name):
                self._wrap(module, name)
        self._post_join = PostJoinClock(collection)

    def _wrap(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)
        spent = self.spent

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

        self._undo.append((owner, name, owner.__dict__.get(name)))
        setattr(owner, name, timed)

    def record(self, total: float) -> None:
        post_join = self._post_join.samples.pop()
        self.spent["rest"] = post_join - sum(v for k, v in self.spent.items()
                                             if k in POST_JOIN_STAGES)
        self.spent["post_join"] = post_join
        self.spent["total"] = total
        for name, value in self.spent.items():
            self.samples.setdefault(name, []).append(value)
        self.spent.clear()

    def restore(self) -> None:
        self._post_join.restore()
        for owner, name, before in reversed(self._undo):
            if before is None:
                delattr(owner, name)
            else:
                setattr(owner, name, before)

    def report(self, label: str) -> None:
        print(f"== {label}: per-stage median / mean ms over {len(self.samples['total'])} calls")
        for name, values in sorted(self.samples.items(), key=lambda kv: -float(np.mean(kv[1]))):
            print(f"  {name:18} {1000 * float(np.median(values)):7.2f} "
                  f"{1000 * float(np.mean(values)):7.2f}")


def baseline_package(revision: str, into: Path) -> str:
    """`qa` as of `revision`, importable as `qa_base` (its own imports renamed)."""
    extract_package(revision, into).rename(into / "qa_base")
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


def forget_sentences(collection: Collection) -> None:
    """Empty the current code's caches of analysed sentences and passages, and the store's
    kept chunk rows: what a question about chunks not asked about lately costs."""
    import qa.highlight

    for cached in (qa.highlight._sentence_terms, qa.highlight._anchors,
                   qa.highlight._typed_words, qa.highlight._analyse_passage):
        cached.cache_clear()
    collection.store._rows.clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="git revision to compare with (e.g. HEAD)")
    parser.add_argument("--profile", action="store_true", help="cProfile the current code")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--index-dir", type=Path, default=Path(tempfile.gettempdir())
                        / "qa-profile-ask-mixed")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--cold", action="store_true",
                        help="empty the current code's sentence, passage and row caches "
                        "before each call")
    parser.add_argument("--scale", type=int, help="also an index of this many chunks, as "
                        "`python -m bench --quick --sizes ...,N` builds it (SciFact questions)")
    parser.add_argument("--scale-dir", type=Path, help="where the scaled index is kept "
                        "(default: a folder named for its size in the temp dir)")
    parser.add_argument("--questions", type=int, default=300,
                        help="SciFact questions asked of the scaled index")
    parser.add_argument("--only", help="comma-separated index labels to run "
                        "(seed, mixed-2k, scifact-N)")
    parser.add_argument("--stages", action="store_true",
                        help="time each stage of the current code's rank_passages")
    args = parser.parse_args()

    import qa.retrieval

    embedder = Embedder.from_settings(Settings())
    super_bowl = [q.text for q in load_dataset(SUPER_BOWL).questions]
    indexes = {"seed": ROOT / "index", "mixed-2k": mixed_index(args.index_dir, embedder)}
    asked = {"seed": super_bowl, "mixed-2k": super_bowl}
    if args.scale:
        label = f"scifact-{args.scale}"
        indexes[label] = scaled_index(args.scale_dir or Path(tempfile.gettempdir())
                                      / f"qa-profile-ask-{args.scale}", embedder, args.scale)
        asked[label] = scifact_questions()[: args.questions]
    if args.only:
        indexes = {k: v for k, v in indexes.items() if k in args.only.split(",")}
    base: Any = None
    if args.baseline:
        name = baseline_package(args.baseline, Path(tempfile.mkdtemp(prefix="qa-base-")))
        base = (importlib.import_module(f"{name}.retrieval"),
                importlib.import_module(f"{name}.collection").Collection,
                importlib.import_module(f"{name}.settings").Settings)
    for label, directory in indexes.items():
        questions = asked[label]
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
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        if args.stages:  # with --baseline, the baseline's stages too, in turns
            runs = [(label, qa.retrieval, collection)]
            if old is not None:
                for q in questions:  # warm as the current code was
                    base[0].retrieve(old, q, args.k)
                runs.append((f"{label} at {args.baseline}", base[0], old))
            clocks = [StageClock(module, coll) for _, module, coll in runs]
            for _ in range(args.rounds):
                for q in questions:
                    for clock, (_, module, coll) in zip(clocks, runs, strict=True):
                        started = time.perf_counter()
                        module.rank_passages(coll, q, max(args.k, 5))
                        clock.record(time.perf_counter() - started)
            for clock, (name, _, _) in zip(clocks, runs, strict=True):
                clock.restore()
                clock.report(name)
        if old is not None:
            differ = sum(not same(outputs(qa.retrieval.retrieve(collection, q, args.k)),
                                  outputs(base[0].retrieve(old, q, args.k)))
                         for q in questions)
            print(f"{label}: retrieve() outputs differing from {args.baseline}: "
                  f"{differ} of {len(questions)}")
        times: dict[str, list[float]] = {"current": [], "baseline": []}
        post_join = {"current": PostJoinClock(collection)}
        if old is not None:
            post_join["baseline"] = PostJoinClock(old)
        for _ in range(args.rounds):
            for q in questions:  # in turns, question by question: the same load for both
                turns: list[tuple[str, Any, Collection | None]] = [
                    ("current", qa.retrieval, collection), ("baseline", base and base[0], old)]
                for which, module, target in turns:
                    if target is None:
                        continue
                    if args.cold and which == "current":
                        forget_sentences(collection)
                    started = time.perf_counter()
                    module.rank_passages(target, q, max(args.k, 5))
                    times[which].append(time.perf_counter() - started)
        for which, values in times.items():
            if values:
                print(f"{label} ({collection.counts()[1]} chunks) {which}: rank_passages "
                      f"median {1000 * float(np.median(values)):.2f} ms, "
                      f"p90 {1000 * float(np.percentile(values, 90)):.2f} ms "
                      f"over {len(values)} calls; after the join (snapshot block) median "
                      f"{1000 * float(np.median(post_join[which].samples)):.2f} ms")
        for post_join_clock in post_join.values():
            post_join_clock.restore()
        collection.close()
        if old is not None:
            old.close()


if __name__ == "__main__":
    main()
