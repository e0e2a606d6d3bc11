"""How sure an answer is: the evidence of the returned passages → for each, the probability
that it answers the question.

A logistic model over features every retrieval computes anyway, fitted once on the shared
evaluation data (`python -m bench.calibration` refits it and prints these coefficients). What
it reads of each passage, and of its neighbours in the list:

- meaning: its cosine with the question, and its lead over the next passage and over the
  best other returned passage;
- wording: coverage, the share of the question's IDF mass its best sentence holds, with the
  same leads, and BM25 relative to the best keyword match among the candidates;
- what is asked: the share of the question's content words found nowhere in the collection (a
  question about "tungsten" over news about peace talks);
- where it stands: log of its rank, log of its length (a longer passage covers more).

Tried and left out, as they added nothing measurable: whether the best sentence holds the
asked-for answer type, the gap to the best candidate's cosine, a first-passage flag.

The answer as a whole is as likely as its first passage: that is the one shown as the answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# The model reads each passage beside its neighbours, so it was fitted on lists of this many
# passages, and every answer is scored on a list this long (then cut to k): a passage's
# confidence does not depend on how many passages the caller asked for.
FITTED_K = 5


@dataclass(frozen=True)
class Evidence:
    """What the confidence model sees of one returned passage (raw, before features)."""

    cosine: float
    coverage: float
    keyword: float  # BM25 over the best BM25 among the candidates, in [0, 1]
    absent: float  # share of the question's content words absent from the collection
    length: int  # characters


FEATURES = (
    "cosine", "coverage", "absent", "log_rank", "cosine_lead_next", "coverage_lead_next",
    "cosine_x_coverage", "coverage_lead_others", "cosine_lead_others", "log_length", "keyword",
)


def features(evidence: Sequence[Evidence]) -> list[tuple[float, ...]]:
    """Each passage's features, in FEATURES order; passages in rank order."""
    rows: list[tuple[float, ...]] = []
    for i, e in enumerate(evidence):
        after = evidence[i + 1] if i + 1 < len(evidence) else None
        others = [o for j, o in enumerate(evidence) if j != i]
        rows.append((
            e.cosine, e.coverage, e.absent, math.log(i + 1),
            # The last passage is compared with an imagined next one a little worse.
            e.cosine - (after.cosine if after else e.cosine - 0.1),
            e.coverage - (after.coverage if after else 0.0),
            e.cosine * e.coverage,
            e.coverage - max((o.coverage for o in others), default=0.0),
            e.cosine - max((o.cosine for o in others), default=0.0),
            math.log(max(e.length, 1)), e.keyword,
        ))
    return rows


# Fitted by `python -m bench.calibration` on ../shared/eval (see its docstring for the data),
# with the shipped embedder: documents through the int8 graph, questions fp32.
# The large opposite weights of cosine, coverage and their product say: either one high is
# good evidence, both high is not much better than one (a logistic AND-NOT of the two).
BIAS = -15.064
WEIGHTS = (15.12, 8.947, -1.052, -1.112, 0.043, 0.454, -15.808, 3.826, 4.647, 0.668, 2.284)


def passage_confidences(evidence: Sequence[Evidence], bias: float = BIAS,
                        weights: Sequence[float] = WEIGHTS) -> list[float]:
    """Estimated probability, in [0, 1], that each passage answers the question."""
    out: list[float] = []
    for row in features(evidence):
        z = bias + sum(w * x for w, x in zip(weights, row, strict=True))
        out.append(1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0))))
    return out
