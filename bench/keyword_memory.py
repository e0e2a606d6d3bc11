"""The keyword index held in memory (qa/keywords.py) against FTS5 on the same index: what reading
it costs (time, memory), whether every answer is the same, and what a question's keyword side
costs each way:

    python -m bench.keyword_memory --index DIR -n 300

For each SciFact question it compares, with the mirror in use and without: /ask's keyword call
(the postings budget, BM25_DEPTH matches), keyword mode's (no budget, 30), both under a filter
allowing 1% and one allowing 50% of the chunks, and the absent-word probes. Exits 1 if any
answer differs in any way (chunks, order, float scores, words). Over HTTP, two servers side by
side, the second holding the index in memory:

    python -m bench.http_overhead --index DIR --base HEAD --base-env QA_KEYWORDS_IN_MEMORY=0
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.corpus import scifact_questions
from bench.measure import percentiles
from qa.retrieval import BM25_DEPTH, MIN_DEPTH
from qa.settings import Settings
from qa.store import Store
from qa.text import KEYWORD_POSTINGS, query_words


def keyword_calls(store: Store, question: str, allowed: dict[float, np.ndarray[Any, Any]]
                  ) -> dict[str, Callable[[], Any]]:
    """The store's keyword calls a question can make, by name."""
    content, _ = query_words(question)
    calls: dict[str, Callable[[], Any]] = {
        "ask": lambda: (store.keyword_search(question, BM25_DEPTH, budget=KEYWORD_POSTINGS),
                        store.absent_words(content)),
        "keyword mode": lambda: store.keyword_search(question, MIN_DEPTH),
    }
    for share, ids in allowed.items():
        calls[f"ask, {share:.0%} allowed"] = partial(
            store.keyword_search, question, BM25_DEPTH, budget=KEYWORD_POSTINGS, allowed=ids)
        calls[f"keyword mode, {share:.0%} allowed"] = partial(
            store.keyword_search, question, MIN_DEPTH, allowed=ids)
    return calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="an index folder")
    parser.add_argument("-n", type=int, default=300, help="SciFact questions asked")
    args = parser.parse_args(argv)

    store = Store(args.index / "qa.sqlite3", read_only=True)
    started = time.perf_counter()
    mirror = store.read_keyword_mirror(Settings().keywords_in_memory)
    read_s = time.perf_counter() - started
    if mirror is None:
        sys.exit(f"{args.index}: no keyword index, or more than keywords_in_memory instances")
    ids = store.chunk_ids()
    rng = np.random.default_rng(0)
    allowed = {share: np.sort(rng.choice(ids, max(1, int(len(ids) * share)), replace=False))
               for share in (0.01, 0.5)}
    spent: dict[str, list[float]] = {"fts5": [], "memory": []}
    differ: dict[str, int] = {}
    questions = scifact_questions()[: args.n]
    for question in questions:
        calls = keyword_calls(store, question, allowed)
        for name, call in calls.items():
            answers = []
            for held, used in (("fts5", None), ("memory", mirror)):
                store.use_keyword_mirror(used)
                started = time.perf_counter()
                answers.append(call())
                if name == "ask":
                    spent[held].append(time.perf_counter() - started)
            if answers[0] != answers[1]:
                differ[name] = differ.get(name, 0) + 1
    print(f"{args.index}: {mirror.rows} chunks, {len(mirror.terms)} terms,"
          f" {sum(len(a) for a in mirror.terms.values())} term instances")
    print(f"read into memory in {read_s:.2f} s: {mirror.nbytes / 2**20:.0f} MiB of arrays")
    for name, samples in spent.items():
        print(f"/ask's keyword side from {name:6s} {percentiles(samples)}")
    print(f"answers that differ, of {len(questions)} questions each:", differ or "none")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
