"""Retrieval metrics as pure functions over qrels and runs, the shapes ranx and pytrec_eval use.

    qrels: dict[qid, dict[docid, relevance]]   relevance > 0 means relevant
    run:   dict[qid, dict[docid, score]]       higher is better; a docid appears once per query

A run is ranked by score, highest first; equal scores keep the run's insertion order, so a run
built from an already ranked list keeps that order. Each metric is the mean over the queries
in qrels (a query absent from the run scores 0); tests check them against ranx.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]


def ranking(scores: Mapping[str, float]) -> list[str]:
    """Doc ids by score, highest first; ties keep insertion order (sorted() is stable)."""
    return sorted(scores, key=lambda doc: -scores[doc])


def _mean(qrels: Qrels, run: Run, per_query: Callable[[Mapping[str, int], list[str]], float]
          ) -> float:
    if not qrels:
        return 0.0
    return sum(per_query(qrels[q], ranking(run.get(q, {}))) for q in qrels) / len(qrels)


def hit_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """hit@k = mean over queries of [any relevant doc among the top k] (success@k)."""
    return _mean(qrels, run, lambda rel, ranked: float(any(rel.get(d, 0) > 0
                                                           for d in ranked[:k])))


def recall_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """recall@k = mean over queries of |relevant ∩ top k| / |relevant|; 0 if nothing relevant.

    Doc ids are dict keys, so a repeated id cannot count twice and recall never exceeds 1.
    """
    def per_query(rel: Mapping[str, int], ranked: list[str]) -> float:
        relevant = {d for d, r in rel.items() if r > 0}
        if not relevant:
            return 0.0
        return len(relevant.intersection(ranked[:k])) / len(relevant)

    return _mean(qrels, run, per_query)


def mrr_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """MRR@k = mean over queries of 1 / rank of the first relevant doc in the top k, else 0."""
    def per_query(rel: Mapping[str, int], ranked: list[str]) -> float:
        for rank, doc in enumerate(ranked[:k], start=1):
            if rel.get(doc, 0) > 0:
                return 1.0 / rank
        return 0.0

    return _mean(qrels, run, per_query)


def dcg(gains: Sequence[float]) -> float:
    """DCG = Σ_i gain_i / log2(i + 1), i counting from 1 (linear gain, as trec_eval and BEIR)."""
    return sum(g / math.log2(i + 1) for i, g in enumerate(gains, start=1))


def ndcg_at_k(qrels: Qrels, run: Run, k: int) -> float:
    """nDCG@k = DCG of the top k / DCG of the ideal top k.

    The ideal ranking is every judged relevance of the query sorted high to low, cut at k:
    it depends on the qrels alone, not on what the run retrieved. 0 if nothing is relevant.
    """
    def per_query(rel: Mapping[str, int], ranked: list[str]) -> float:
        ideal = dcg(sorted((r for r in rel.values() if r > 0), reverse=True)[:k])
        if ideal == 0:
            return 0.0
        return dcg([max(rel.get(d, 0), 0) for d in ranked[:k]]) / ideal

    return _mean(qrels, run, per_query)


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """AUROC = P(score of a random positive > score of a random negative) + ½ P(tie).

    Computed as the Mann-Whitney U / (|P|·|N|), U = Σ ranks of the positives − |P|(|P|+1)/2
    with tied scores given their average rank. None when either class is empty.
    """
    if not positives or not negatives:
        return None
    pooled = sorted([(s, True) for s in positives] + [(s, False) for s in negatives],
                    key=lambda item: item[0])
    rank_sum, i = 0.0, 0
    while i < len(pooled):
        j = i
        while j < len(pooled) and pooled[j][0] == pooled[i][0]:
            j += 1
        average_rank = (i + 1 + j) / 2  # ranks i+1 .. j share their mean
        rank_sum += average_rank * sum(1 for _, positive in pooled[i:j] if positive)
        i = j
    p, n = len(positives), len(negatives)
    return (rank_sum - p * (p + 1) / 2) / (p * n)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default):
    position (n - 1)·q/100 in the sorted values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
