"""Retrieval metrics as pure functions over qrels and runs, the shapes ranx and pytrec_eval use.

    qrels: dict[qid, dict[docid, relevance]]   relevance > 0 means relevant
    run:   dict[qid, dict[docid, score]]       higher is better; a docid appears once per query

A run is ranked by score, highest first; equal scores keep the run's insertion order, so a run
built from an already ranked list keeps that order. Each metric is the mean over the queries
in qrels (a query absent from the run scores 0); tests check them against ranx.

Calibration metrics take one value per question instead, in parallel sequences: the top
passage's `confidence` in [0, 1], whether that passage is a `hit`, and whether the answer was
`found` (confidence at or over the threshold).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class CalibrationBin:
    """Questions whose confidence fell in `[low, high)` (the last bin includes 1.0)."""

    low: float
    high: float
    count: int
    mean_confidence: float | None  # None: empty bin
    hit_rate: float | None


def calibration_bins(confidences: Sequence[float], hits: Sequence[bool], bins: int = 10
                     ) -> list[CalibrationBin]:
    """`bins` equal-width bins over [0, 1]: question i goes to bin min(⌊c_i · bins⌋, bins − 1)
    (confidences outside [0, 1] are clipped); each bin's mean confidence and observed hit rate."""
    members: list[list[int]] = [[] for _ in range(bins)]
    for i, c in enumerate(confidences):
        members[min(max(math.floor(c * bins), 0), bins - 1)].append(i)
    return [
        CalibrationBin(
            b / bins, (b + 1) / bins, len(m),
            sum(confidences[i] for i in m) / len(m) if m else None,
            sum(1 for i in m if hits[i]) / len(m) if m else None,
        )
        for b, m in enumerate(members)
    ]


def expected_calibration_error(confidences: Sequence[float], hits: Sequence[bool],
                               bins: int = 10) -> float | None:
    """ECE = Σ_b (n_b / N) · |hit rate_b − mean confidence_b| over `bins` equal-width bins of
    [0, 1] (see `calibration_bins`); 0 is perfectly calibrated. None when N = 0."""
    if not confidences:
        return None
    return sum(b.count / len(confidences) * abs(b.hit_rate - b.mean_confidence)
               for b in calibration_bins(confidences, hits, bins)
               if b.hit_rate is not None and b.mean_confidence is not None)


def answered_precision(found: Sequence[bool], hits: Sequence[bool]) -> float | None:
    """answered_precision = |found ∧ hit| / |found|: of the questions answered, the share whose
    top passage is a hit (unanswerable questions included, where found is always wrong).
    None when nothing was found."""
    answered = [hit for f, hit in zip(found, hits, strict=True) if f]
    return sum(answered) / len(answered) if answered else None


def answered_coverage(found: Sequence[bool], answerable: Sequence[bool]) -> float | None:
    """answered_coverage = |found ∧ answerable| / |answerable|: the share of the questions that
    have an answer which were answered (right or wrong). None when none is answerable."""
    asked = [f for f, a in zip(found, answerable, strict=True) if a]
    return sum(asked) / len(asked) if asked else None


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
