"""Best-of-N: choosing one of N sampled solutions by vote, by a reward model, or (as a ceiling) by the truth."""

from __future__ import annotations

from collections.abc import Sequence

from insideout.reasoning.reward import aggregate
from insideout.reasoning.voting import best_of, majority_vote, pass_at_k, weighted_vote

METHODS = ("majority vote", "ORM", "PRM-min", "PRM-product", "PRM-last", "PRM-weighted vote")


def pick(method: str, answers: Sequence[int | None], prm_steps: Sequence[Sequence[float]],
         orm_final: Sequence[float]) -> int | None:
    """The answer a method chooses among N samples (their answers, PRM step scores and ORM final scores)."""
    if not answers:
        raise ValueError("best-of-N needs N >= 1 samples")
    if method == "majority vote":
        return majority_vote(answers)
    if method == "ORM":
        return best_of(answers, orm_final)
    if method == "PRM-weighted vote":
        return weighted_vote(answers, [aggregate(s, "last") for s in prm_steps])
    if method.startswith("PRM-") and method[4:] in ("min", "product", "last"):
        return best_of(answers, [aggregate(s, method[4:]) for s in prm_steps])
    raise ValueError(f"unknown best-of-N method {method!r}: choose one of {', '.join(METHODS)}")


def grouped_accuracy(method: str, N: int, answers: Sequence[Sequence[int | None]], truths: Sequence[int],
                     prm_steps: Sequence[Sequence[Sequence[float]]], orm_final: Sequence[Sequence[float]]
                     ) -> list[float]:
    """Per problem, the fraction of its disjoint groups of N samples in which the method picks the right answer;
    for ``method="oracle"``, the unbiased pass@N from all its samples."""
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise ValueError(f"N={N!r}: best-of-N needs an integer N >= 1")
    out = []
    for a, t, ps, of in zip(answers, truths, prm_steps, orm_final, strict=True):
        n = len(a)
        if N > n:
            raise ValueError(f"N={N} but only {n} samples for a problem")
        if method == "oracle":
            out.append(pass_at_k(n, sum(x == t for x in a), N))
            continue
        groups = [range(g * N, (g + 1) * N) for g in range(n // N)]
        out.append(sum(pick(method, [a[j] for j in g], [ps[j] for j in g], [of[j] for j in g]) == t
                       for g in groups) / len(groups))
    return out
