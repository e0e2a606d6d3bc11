"""Metric functions: hand-computed values on a tiny fixture, and agreement with ranx."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from qa.eval import metrics

# Three queries: q1 has graded judgements (and one judged non-relevant doc, "x"), q2 finds its
# only relevant doc at rank 3, q3 finds nothing.
QRELS = {"q1": {"a": 1, "c": 2, "x": 0}, "q2": {"d": 1}, "q3": {"z": 1}}
RUN = {
    "q1": {"a": 0.9, "b": 0.8, "c": 0.7},
    "q2": {"e": 0.5, "f": 0.4, "d": 0.3},
    "q3": {"y": 1.0},
}


def test_hit_at_k_counts_queries_with_any_relevant_doc_in_the_top_k() -> None:
    assert metrics.hit_at_k(QRELS, RUN, 1) == pytest.approx(1 / 3)  # q1 only
    assert metrics.hit_at_k(QRELS, RUN, 3) == pytest.approx(2 / 3)  # q1 and q2


def test_recall_at_k_divides_by_the_relevant_docs_ignoring_zero_judgements() -> None:
    # q1: {a, c} relevant, top 2 = {a, b} → 1/2; q2: top 2 = {e, f} → 0; q3: 0.
    assert metrics.recall_at_k(QRELS, RUN, 2) == pytest.approx((1 / 2 + 0 + 0) / 3)
    assert metrics.recall_at_k(QRELS, RUN, 3) == pytest.approx((1 + 1 + 0) / 3)


def test_mrr_at_k_is_the_mean_reciprocal_rank_of_the_first_relevant_doc() -> None:
    assert metrics.mrr_at_k(QRELS, RUN, 10) == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert metrics.mrr_at_k(QRELS, RUN, 2) == pytest.approx((1 + 0 + 0) / 3)


def test_ndcg_at_k_uses_linear_gain_and_the_ideal_order_of_the_qrels() -> None:
    # q1: DCG = 1/log2(2) + 0/log2(3) + 2/log2(4) = 2; ideal (2, 1) = 2/1 + 1/log2(3).
    # q2: DCG = 1/log2(4) = 0.5; ideal 1.  q3: 0.
    q1 = 2 / (2 + 1 / math.log2(3))
    assert metrics.ndcg_at_k(QRELS, RUN, 3) == pytest.approx((q1 + 0.5 + 0) / 3)
    # At k=1 q1's ideal is its grade-2 doc alone: DCG 1 / ideal 2.
    assert metrics.ndcg_at_k(QRELS, RUN, 1) == pytest.approx((1 / 2 + 0 + 0) / 3)


def test_a_relevant_doc_the_run_never_retrieved_still_lowers_ndcg() -> None:
    qrels = {"q": {"a": 1, "never": 1}}
    run = {"q": {"a": 1.0}}
    assert metrics.ndcg_at_k(qrels, run, 10) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert metrics.recall_at_k(qrels, run, 10) == pytest.approx(0.5)


def test_equal_scores_keep_the_runs_insertion_order() -> None:
    qrels = {"q": {"a": 1}}
    assert metrics.mrr_at_k(qrels, {"q": {"b": 0.5, "a": 0.5}}, 10) == 0.5
    assert metrics.mrr_at_k(qrels, {"q": {"a": 0.5, "b": 0.5}}, 10) == 1.0


def test_a_query_missing_from_the_run_scores_zero() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    assert metrics.mrr_at_k(qrels, {"q1": {"a": 1.0}}, 10) == 0.5


def test_auroc_counts_pairs_won_and_half_the_ties() -> None:
    # 0.9 beats all three negatives (3); 0.4 loses to 0.5, ties 0.4 (½), beats 0.1 (1).
    assert metrics.auroc([0.9, 0.4], [0.5, 0.4, 0.1]) == pytest.approx(4.5 / 6)
    assert metrics.auroc([1.0], [0.0]) == 1.0
    assert metrics.auroc([0.0], [1.0]) == 0.0
    assert metrics.auroc([], [0.3]) is None


def test_percentile_interpolates_like_numpy() -> None:
    values = [12.0, 3.0, 7.5, 40.0, 1.0, 8.0]
    for q in (0, 50, 95, 100):
        assert metrics.percentile(values, q) == pytest.approx(np.percentile(values, q))


def _generated(seed: int = 7) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, float]]]:
    """60 queries over 400 docs: graded and zero judgements, 100 scored docs per query, some
    relevant docs never retrieved, one query retrieving nothing relevant."""
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(400)]
    qrels: dict[str, dict[str, int]] = {}
    run: dict[str, dict[str, float]] = {}
    for q in range(60):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 12))
        qrels[qid] = {d: rng.choice([0, 1, 1, 2, 3]) for d in judged}
        qrels[qid][judged[0]] = rng.randint(1, 3)  # at least one relevant doc
        retrieved = rng.sample(docs, 100)
        # Mix judged docs in at random depths, so every rank region gets hits.
        for d in judged:
            if rng.random() < 0.7 and d not in retrieved:
                retrieved[rng.randrange(100)] = d
        run[qid] = {d: rng.random() for d in retrieved}
    run["q0"] = {d: rng.random() for d in docs[:50] if d not in qrels["q0"]}
    return qrels, run


RANX = """
import json, sys
from ranx import Qrels, Run, evaluate
qrels, run, names = json.load(sys.stdin)
print(json.dumps({k: float(v) for k, v in evaluate(Qrels(qrels), Run(run), names).items()}))
"""


def test_metrics_equal_ranx_on_a_generated_run() -> None:
    qrels, run = _generated()
    names = ["ndcg@10", "ndcg@3", "recall@10", "recall@100", "mrr@10", "hit_rate@1",
             "hit_rate@5", "hit_rate@10"]
    # ranx's own code, run by Python in a process of its own: numba compiling it took 70 s of
    # the suite (73 s against 6 s here), for 60 queries. The same functions, not compiled.
    done = subprocess.run([sys.executable, "-c", RANX], input=json.dumps([qrels, run, names]),
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUMBA_DISABLE_JIT": "1"})
    assert done.returncode == 0, done.stderr
    reference = json.loads(done.stdout)
    ours = {
        "ndcg@10": metrics.ndcg_at_k(qrels, run, 10),
        "ndcg@3": metrics.ndcg_at_k(qrels, run, 3),
        "recall@10": metrics.recall_at_k(qrels, run, 10),
        "recall@100": metrics.recall_at_k(qrels, run, 100),
        "mrr@10": metrics.mrr_at_k(qrels, run, 10),
        "hit_rate@1": metrics.hit_at_k(qrels, run, 1),
        "hit_rate@5": metrics.hit_at_k(qrels, run, 5),
        "hit_rate@10": metrics.hit_at_k(qrels, run, 10),
    }
    for name in names:
        assert ours[name] == pytest.approx(float(reference[name]), abs=1e-6), name
    assert 0 < ours["ndcg@10"] < 1  # the fixture exercises partial credit, not 0 or 1


# Five questions: confidences of the top passage, whether it was a hit, and whether the question
# has an answer at all (the last is unanswerable, so never a hit).
CONFIDENCES = [0.95, 0.91, 0.62, 0.15, 0.65]
HITS = [True, True, False, False, False]
ANSWERABLE = [True, True, True, True, False]


def test_calibration_bins_are_equal_width_and_the_last_includes_one() -> None:
    bins = metrics.calibration_bins([0.0, 0.05, 0.1, 0.999, 1.0], [True, False, True, True,
                                                                   False])
    assert [(b.low, b.high) for b in bins][:2] == [(0.0, 0.1), (0.1, 0.2)] and len(bins) == 10
    assert [b.count for b in bins] == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert bins[0].mean_confidence == pytest.approx(0.025) and bins[0].hit_rate == 0.5
    assert bins[2].mean_confidence is None and bins[2].hit_rate is None
    assert bins[9].hit_rate == 0.5


def test_ece_weighs_each_bins_gap_between_hit_rate_and_confidence_by_its_share() -> None:
    # bin 9: {0.95, 0.91} mean 0.93, hit rate 1 → gap 0.07; bin 6: {0.62, 0.65} mean 0.635,
    # hit rate 0 → 0.635; bin 1: {0.15} hit rate 0 → 0.15.
    expected = 2 / 5 * 0.07 + 2 / 5 * 0.635 + 1 / 5 * 0.15
    assert metrics.expected_calibration_error(CONFIDENCES, HITS) == pytest.approx(expected)
    assert metrics.expected_calibration_error([1.0, 0.0], [True, False]) == 0.0
    assert metrics.expected_calibration_error([], []) is None


def test_answered_precision_is_the_share_of_found_answers_whose_top_passage_hits() -> None:
    found = [c >= 0.6 for c in CONFIDENCES]  # all but 0.15; the unanswerable one is found
    assert metrics.answered_precision(found, HITS) == pytest.approx(2 / 4)
    assert metrics.answered_precision([False] * 5, HITS) is None


def test_answered_coverage_is_the_share_of_answerable_questions_found() -> None:
    found = [c >= 0.9 for c in CONFIDENCES]
    assert metrics.answered_coverage(found, ANSWERABLE) == pytest.approx(2 / 4)
    assert metrics.answered_coverage([True], [False]) is None
