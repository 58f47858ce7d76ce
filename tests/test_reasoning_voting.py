"""Majority vote (ties), reranking, and the unbiased pass@k estimator against brute-force enumeration."""

from __future__ import annotations

import itertools
import math

import pytest

from insideout.reasoning.voting import best_of, grouped_vote_accuracy, majority_vote, pass_at_k, weighted_vote


def test_majority_vote_and_ties():
    assert majority_vote([3, 1, 3, 2]) == 3
    assert majority_vote([1, 2, 2, 1]) == 1  # tie: the first sampled wins
    assert majority_vote([2, 1, 1, 2]) == 2
    assert majority_vote([None, 5, None]) == 5  # unreadable answers do not vote
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None
    assert majority_vote([7, 8, 9]) == 7  # all tied


def test_weighted_vote_and_best_of():
    assert weighted_vote([1, 2, 2], [0.9, 0.3, 0.4]) == 1
    assert weighted_vote([1, 2], [0.5, 0.5]) == 1
    assert weighted_vote([None, 4], [9.0, 0.1]) == 4
    assert best_of([1, 2, 3], [0.1, 0.7, 0.7]) == 2  # tie: the first of the best
    with pytest.raises(ValueError, match="N >= 1"):
        best_of([], [])
    with pytest.raises(ValueError):
        best_of([1, 2], [0.1])


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Enumerate every k-subset of n samples (the first c correct); the fraction containing a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_equals_enumeration():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert abs(pass_at_k(n, c, k) - brute_pass_at_k(n, c, k)) < 1e-12, (n, c, k)
    assert abs(pass_at_k(32, 3, 4) - (1 - math.comb(29, 4) / math.comb(32, 4))) < 1e-12
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 10, 1) == 1.0


@pytest.mark.parametrize("args", [(0, 0, 1), (4, 1, 0), (4, 5, 1), (4, -1, 1), (3, 1, 4), (4, 1.5, 1)])
def test_pass_at_k_bad_input(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)


def test_grouped_vote_accuracy():
    samples = [[1, 1, 2, 2, 1, 3, 3, 3], [5, 5, 5, 5, 5, 5, 5, 5]]
    assert grouped_vote_accuracy(samples, [1, 5], 1) == [3 / 8, 1.0]
    assert grouped_vote_accuracy(samples, [1, 5], 2) == [2 / 4, 1.0]  # groups (1,1) (2,2)->2 (1,3)->1 (3,3)
    assert grouped_vote_accuracy(samples, [1, 5], 8) == [1.0, 1.0]  # 1 and 3 tie (3 votes each): 1 came first
    with pytest.raises(ValueError, match="k=0"):
        grouped_vote_accuracy(samples, [1, 5], 0)
    with pytest.raises(ValueError, match="at least k"):
        grouped_vote_accuracy(samples, [1, 5], 9)
