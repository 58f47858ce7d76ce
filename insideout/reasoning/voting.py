"""Aggregating several sampled solutions: majority vote (self-consistency), reranking, and pass@k.

* ``majority_vote`` — the most frequent answer; a tie goes to the answer that was sampled first (the order of the
  samples is random, so this is a uniformly random tie-break that is still reproducible); unreadable answers
  (None) do not vote.
* ``pass_at_k`` — the unbiased estimator of Chen et al. (2021): with ``n`` samples of which ``c`` are correct, the
  probability that at least one of ``k`` drawn without replacement is correct, ``1 - C(n-c, k) / C(n, k)``.
* ``grouped_vote_accuracy`` — accuracy of voting over ``k`` samples, averaged over the ``n // k`` disjoint groups of
  ``n`` samples per problem (one sampling run serves every ``k``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _check_k(name: str, k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{name}={k!r}: must be an integer >= 1 (the number of samples)")
    return k


def majority_vote(answers: Sequence[int | None]) -> int | None:
    """The most frequent non-None answer; ties go to the one that appears first; None if every answer is None."""
    counts: dict[int, int] = {}
    first: dict[int, int] = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        counts[a] = counts.get(a, 0) + 1
        first.setdefault(a, i)
    if not counts:
        return None
    return max(counts, key=lambda a: (counts[a], -first[a]))


def best_of(answers: Sequence[int | None], scores: Sequence[float]) -> int | None:
    """The answer of the highest-scoring sample (the first one on a tie): reranking by a reward model."""
    if len(answers) != len(scores):
        raise ValueError(f"{len(answers)} answers but {len(scores)} scores: give one score per sample")
    if not answers:
        raise ValueError("best_of needs at least one sample (N >= 1)")
    best = max(range(len(answers)), key=lambda i: (scores[i], -i))
    return answers[best]


def weighted_vote(answers: Sequence[int | None], weights: Sequence[float]) -> int | None:
    """The answer with the largest total weight (ties: first appearance); None answers do not vote."""
    if len(answers) != len(weights):
        raise ValueError(f"{len(answers)} answers but {len(weights)} weights: give one weight per sample")
    totals: dict[int, float] = {}
    first: dict[int, int] = {}
    for i, (a, w) in enumerate(zip(answers, weights, strict=True)):
        if a is None:
            continue
        totals[a] = totals.get(a, 0.0) + float(w)
        first.setdefault(a, i)
    if not totals:
        return None
    return max(totals, key=lambda a: (totals[a], -first[a]))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct: 1 - C(n-c, k)/C(n, k), as a stable product."""
    _check_k("n", n)
    _check_k("k", k)
    if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= n:
        raise ValueError(f"c={c!r}: the number of correct samples must be an integer in [0, n={n}]")
    if k > n:
        raise ValueError(f"k={k} > n={n}: pass@k needs at least k samples per problem")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def grouped_vote_accuracy(samples: Sequence[Sequence[int | None]], truths: Sequence[int], k: int) -> list[float]:
    """Per problem: the fraction of its disjoint groups of k samples whose majority vote is right."""
    _check_k("k", k)
    if len(samples) != len(truths):
        raise ValueError(f"{len(samples)} sample lists but {len(truths)} answers")
    out = []
    for answers, truth in zip(samples, truths, strict=True):
        groups = len(answers) // k
        if groups < 1:
            raise ValueError(f"k={k} but only {len(answers)} samples for a problem: need at least k")
        out.append(sum(majority_vote(answers[g * k:(g + 1) * k]) == truth for g in range(groups)) / groups)
    return out
