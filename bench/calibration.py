"""`python -m bench.calibration`: fit the confidence model (qa/confidence.py) on shared data.

Every question is asked as the service asks it (`rank_passages`, hybrid, k=5) and each returned
passage becomes one row: its evidence and whether it answers (it covers a gold answer span, or
for a question with answer strings, holds one). Questions asked of a collection that cannot
answer them give rows that do not answer: SciFact claims and the seed questions against the
Super Bowl article, Super Bowl questions against SciFact and the seed article, and the 38
near-miss questions written against the Super Bowl article. The fit is a plain logistic
regression (Newton's method, light L2), checked by 2-fold cross-validation over questions; the
printed coefficients are what qa/confidence.py ships. `--with-claims` also adds SciFact's claims
asked of SciFact as answerable rows (a passage answers when its abstract is judged relevant):
tried, since they paraphrase more than SQuAD's questions, and not shipped, as it worsened the
calibration on SQuAD (held-out ECE 0.065, coverage 0.817).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from qa.collection import Collection  # noqa: E402
from qa.confidence import FEATURES, FITTED_K, features  # noqa: E402
from qa.embedding import Embedder  # noqa: E402
from qa.eval.datasets import Dataset, Question, load_dataset  # noqa: E402
from qa.eval.judging import passage_hits  # noqa: E402
from qa.eval.runner import dataset_index  # noqa: E402
from qa.indexing import index_paths  # noqa: E402
from qa.retrieval import rank_passages  # noqa: E402
from qa.settings import Settings  # noqa: E402
from qa.types import Passage  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "eval"
CACHE = ROOT / ".cache"
K = FITTED_K  # qa/retrieval.py scores every answer on a list this long


def answers(question: Question, passage: Passage, qrels: dict[str, dict[str, int]]) -> bool:
    if question.id in qrels:  # SciFact: the passage's abstract is judged relevant
        return qrels[question.id].get(passage.citation.document_id, 0) > 0
    return passage_hits(question, passage)


def rows(collection: Collection, questions: tuple[Question, ...], group: str, answerable: bool,
         qrels: dict[str, dict[str, int]] | None = None
         ) -> Iterator[tuple[str, str, int, tuple[float, ...], bool]]:
    """One row per returned passage: (group, question id, rank, features, answers)."""
    for question in questions:
        ranked = rank_passages(collection, question.text, K)
        for (passage, _), row in zip(ranked, features([e for _, e in ranked]), strict=True):
            hit = answerable and answers(question, passage, qrels or {})
            yield group, question.id, passage.rank, row, hit


def collect(embedder: Embedder, *, with_claims: bool = False
            ) -> list[tuple[str, str, int, tuple[float, ...], bool]]:
    settings = Settings(index_dir=CACHE / "calibration" / f"seeds-{embedder.precision}")
    squad = load_dataset(SHARED / "squad-v1.1-dev-super-bowl-50.json")
    scifact = load_dataset(SHARED / "beir-scifact")
    near = tuple(Question(id=o["id"], text=o["question"], impossible=True) for o in
                 map(json.loads, (SHARED / "super-bowl-50-unanswerable.jsonl").open()))
    seed = load_dataset(ROOT / "seeds" / "questions.jsonl")
    claims = tuple(q for q in scifact.questions)
    out: list[tuple[str, str, int, tuple[float, ...], bool]] = []
    with ExitStack() as stack:
        bowl = stack.enter_context(dataset_index(squad, settings, embedder,
                                                 cache_dir=CACHE / "eval"))
        seeds = Collection.open(settings, embedder, create=True)
        stack.callback(seeds.close)
        index_paths(seeds, [ROOT / "seeds"], progress=False)
        plan = [
            (bowl, squad.questions, "squad", True),
            (bowl, near, "near-miss", False),
            (bowl, claims, "scifact@bowl", False),
            (bowl, seed.questions, "seeds@bowl", False),
            (seeds, seed.questions, "seeds", True),
            (seeds, squad.questions, "squad@seeds", False),
        ]
        embedder.warm_queries([q.text for q in (*squad.questions, *near, *claims,
                                                 *seed.questions)])
        for collection, questions, group, answerable in plan:
            print(f"{group}: {len(questions)} questions", file=sys.stderr)
            out.extend(rows(collection, questions, group, answerable))
        # Last, as the SciFact index is the one that may need building (minutes).
        cut: Dataset = scifact.cut(embedder.model_input)
        science = stack.enter_context(dataset_index(cut, settings, embedder,
                                                    cache_dir=CACHE / "eval"))
        print(f"squad@scifact: {len(squad.questions)} questions", file=sys.stderr)
        out.extend(rows(science, squad.questions, "squad@scifact", False))
        if with_claims:  # tried, not shipped: see the module docstring
            print(f"scifact: {len(claims)} questions", file=sys.stderr)
            out.extend(rows(science, claims, "scifact", True, cut.qrels))
    return out


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method; returns [bias, *weights]."""
    design = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(design.shape[1])
    penalty = l2 * np.eye(len(w))
    penalty[0, 0] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-design @ w))
        gradient = design.T @ (p - y) + penalty @ w
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        w -= np.linalg.solve(hessian, gradient)
    return w


def predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(w[0] + x @ w[1:])))


def auroc(positives: list[float], negatives: list[float]) -> float:
    """P(a positive scores above a negative), ties counting half."""
    pos, neg = np.asarray(positives), np.asarray(negatives)
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def ece(confidence: np.ndarray, hit: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins."""
    edges = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs(confidence[edges == b].mean() - hit[edges == b].mean())
                     * (edges == b).sum() for b in range(bins) if (edges == b).any())
                 / len(confidence))


def report(table: list[list], p: np.ndarray, threshold: float) -> dict[str, float]:
    """The issue's measures for the top passages: answerable SQuAD against the claims (far)
    and the near misses."""
    top = {(row[0], row[1]): (pi, row[4]) for row, pi in zip(table, p, strict=True)
           if row[2] == 1}
    def group(name: str) -> tuple[np.ndarray, np.ndarray]:
        pairs = [v for (g, _), v in top.items() if g == name]
        return (np.array([c for c, _ in pairs]), np.array([h for _, h in pairs], dtype=float))
    squad_c, squad_h = group("squad")
    far_c, _ = group("scifact@bowl")
    near_c, _ = group("near-miss")
    mixed_c = np.concatenate([squad_c, far_c])
    mixed_h = np.concatenate([squad_h, np.zeros(len(far_c))])
    found = mixed_c >= threshold
    return {
        "ece": round(ece(mixed_c, mixed_h), 4),
        "no_answer_auroc": round(auroc(list(1 - far_c), list(1 - squad_c)), 4),
        "near_miss_auroc": round(auroc(list(1 - near_c), list(1 - squad_c)), 4),
        "answered_precision": round(float(mixed_h[found].mean()), 4),
        "answered_coverage": round(float((squad_c >= threshold).mean()), 4),
        "squad_hit@1": round(float(squad_h.mean()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=Path, default=None,
                        help="Where the collected rows are cached (delete to collect again).")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--with-claims", action="store_true",
                        help="Also fit on SciFact claims asked of SciFact (tried, not shipped).")
    args = parser.parse_args()
    embedder = Embedder.from_settings(Settings())  # the shipped embedder, or QA_* settings
    if args.rows is None:  # the rows depend on the vectors: one cache per precision
        name = "rows-claims" if args.with_claims else "rows"
        args.rows = CACHE / "calibration" / f"{name}-{embedder.precision}.json"
    if not args.rows.exists():
        data = collect(embedder, with_claims=args.with_claims)
        args.rows.parent.mkdir(parents=True, exist_ok=True)
        args.rows.write_text(json.dumps([[g, q, r, list(f), h] for g, q, r, f, h in data]))
    table = json.loads(args.rows.read_text())
    x = np.array([row[3] for row in table], dtype=np.float64)
    y = np.array([row[4] for row in table], dtype=np.float64)
    questions = sorted({row[1] for row in table})
    fold = {q: n % 2 for n, q in enumerate(questions)}
    held = np.zeros(len(table))
    for f in (0, 1):
        train = np.array([fold[row[1]] != f for row in table])
        held[~train] = predict(fit(x[train], y[train]), x[~train])
    print("2-fold, held out:", report(table, held, args.threshold))
    w = fit(x, y)
    print("all data:", report(table, predict(w, x), args.threshold))
    print("BIAS =", round(float(w[0]), 3))
    print("WEIGHTS =", tuple(round(float(v), 3) for v in w[1:]), "#", FEATURES)


if __name__ == "__main__":
    main()
