"""How sure an answer is: a passage's evidence → the probability that it answers the question.

A logistic model over a few features every retrieval computes anyway, fitted once on the shared
evaluation data (`python -m bench.calibration` refits it and prints these coefficients):

- cosine: the passage's cosine with the question (meaning);
- coverage: the share of the question's IDF mass that its best sentence holds (wording);
- cosine_gap: how far its cosine falls below the best candidate's (is it the best match?);
- absent: the share of the question's content words that occur nowhere in the collection
  (a question about "tungsten" over news about peace talks);
- type_missing: the question asks for a date, number or name and the best sentence holds
  none near the question's words.

The answer as a whole is as likely as its first passage: that is the one shown as the answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Evidence:
    """What the confidence model sees of one passage."""

    cosine: float
    coverage: float
    cosine_gap: float
    absent: float
    type_missing: bool

    def features(self) -> tuple[float, ...]:
        return (self.cosine, self.coverage, self.cosine_gap, self.absent,
                float(self.type_missing))


FEATURES = ("cosine", "coverage", "cosine_gap", "absent", "type_missing")
BIAS = -4.25
WEIGHTS = (4.86, 4.12, 0.0, 0.0, 0.0)


def passage_confidence(evidence: Evidence, bias: float = BIAS,
                       weights: Sequence[float] = WEIGHTS) -> float:
    """Estimated probability, in [0, 1], that this passage answers the question."""
    z = bias + sum(w * x for w, x in zip(weights, evidence.features(), strict=True))
    return 1.0 / (1.0 + math.exp(-z))
