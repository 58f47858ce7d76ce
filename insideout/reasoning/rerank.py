"""Best-of-N: choosing one of N sampled solutions by vote, by a reward model, or (as a ceiling) by the truth."""

from __future__ import annotations

from collections.abc import Sequence

from insideout.reasoning.reward import aggregate, auc
from insideout.reasoning.voting import best_of, majority_vote, pass_at_k, weighted_vote

METHODS = ("majority vote", "ORM", "PRM-min", "PRM-product", "PRM-last", "PRM-weighted vote")


def pick(method: str, answers: Sequence[int | None], prm_steps: Sequence[Sequence[float]],
         orm_final: Sequence[float], valid: Sequence[bool] | None = None) -> int | None:
    """The answer a method chooses among N samples (their answers, PRM step scores and ORM final scores).

    ``valid`` (optional, one flag per sample) restricts the choice to the flagged samples — a format filter that
    needs no answer key — unless none is flagged, when every sample stays a candidate.
    """
    if not answers:
        raise ValueError("best-of-N needs N >= 1 samples")
    if valid is not None:
        if len(valid) != len(answers):
            raise ValueError(f"{len(answers)} answers but {len(valid)} validity flags: give one flag per sample")
        keep = [j for j, v in enumerate(valid) if v]
        if keep and len(keep) < len(answers):
            answers, prm_steps = [answers[j] for j in keep], [prm_steps[j] for j in keep]
            orm_final = [orm_final[j] for j in keep]
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
                     prm_steps: Sequence[Sequence[Sequence[float]]], orm_final: Sequence[Sequence[float]],
                     valid: Sequence[Sequence[bool]] | None = None) -> list[float]:
    """Per problem, the fraction of its disjoint groups of N samples in which the method picks the right answer;
    for ``method="oracle"``, the unbiased pass@N from all its samples. ``valid``: per problem and sample, the
    format flags of ``pick`` (the oracle ignores them)."""
    if isinstance(N, bool) or not isinstance(N, int) or N < 1:
        raise ValueError(f"N={N!r}: best-of-N needs an integer N >= 1")
    if valid is None:
        valid = [None] * len(answers)
    out = []
    for a, t, ps, of, va in zip(answers, truths, prm_steps, orm_final, valid, strict=True):
        n = len(a)
        if N > n:
            raise ValueError(f"N={N} but only {n} samples for a problem")
        if method == "oracle":
            out.append(pass_at_k(n, sum(x == t for x in a), N))
            continue
        groups = [range(g * N, (g + 1) * N) for g in range(n // N)]
        out.append(sum(pick(method, [a[j] for j in g], [ps[j] for j in g], [of[j] for j in g],
                            None if va is None else [va[j] for j in g]) == t
                       for g in groups) / len(groups))
    return out


def sample_score(method: str, prm_steps: Sequence[float], orm_final: float) -> float:
    """The score by which a reranking method orders one sample ('ORM', 'PRM-min', 'PRM-product', 'PRM-last')."""
    if method == "ORM":
        return float(orm_final)
    if method.startswith("PRM-") and method[4:] in ("min", "product", "last"):
        return aggregate(prm_steps, method[4:])
    raise ValueError(f"method {method!r} has no per-sample score: choose ORM, PRM-min, PRM-product or PRM-last")


def within_problem_auc(scores: Sequence[Sequence[float]], correct: Sequence[Sequence[bool]]) -> tuple[float, int]:
    """The mean, over problems with both right and wrong samples, of the AUC among that problem's samples: how
    often a right sample outscores a wrong one *of the same problem* (ties 1/2) — what reranking relies on.
    Returns (mean AUC, number of problems used)."""
    aucs = []
    for sc, ok in zip(scores, correct, strict=True):
        if len(sc) != len(ok):
            raise ValueError(f"{len(sc)} scores but {len(ok)} labels for a problem")
        if any(ok) and not all(ok):
            aucs.append(auc(sc, ok))
    if not aucs:
        raise ValueError("no problem has both right and wrong samples: the within-problem AUC is undefined")
    return sum(aucs) / len(aucs), len(aucs)
