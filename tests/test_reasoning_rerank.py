"""Best-of-N reranking: the format filter, per-sample scores, the within-problem AUC and bad input."""

import pytest

from insideout.reasoning.rerank import grouped_accuracy, pick, sample_score, within_problem_auc


def test_pick_by_each_method():
    answers = [3, 5, 5, None]
    prm = [[0.9, 0.2], [0.6, 0.7], [0.5, 0.5], [0.95]]
    orm = [0.1, 0.8, 0.3, 0.9]
    assert pick("majority vote", answers, prm, orm) == 5
    assert pick("ORM", answers, prm, orm) is None  # the malformed chain scores highest
    assert pick("PRM-min", answers, prm, orm) is None
    assert pick("PRM-last", answers, prm, orm) is None
    assert pick("PRM-product", answers, prm, orm) is None
    valid = [True, True, True, False]
    assert pick("ORM", answers, prm, orm, valid) == 5
    assert pick("PRM-min", answers, prm, orm, valid) == 5  # min 0.6 beats 0.5 and 0.2
    assert pick("ORM", answers, prm, orm, [False] * 4) is None  # nothing valid: every chain stays a candidate


def test_grouped_accuracy_with_filter():
    answers = [[1, 2, 1, 2]]
    prm = [[[0.1], [0.9], [0.8], [0.2]]]
    orm = [[0.1, 0.9, 0.8, 0.2]]
    assert grouped_accuracy("ORM", 2, answers, [1], prm, orm) == [0.5]  # groups (1,2) -> 2, (1,2) -> 1
    assert grouped_accuracy("ORM", 2, answers, [1], prm, orm, valid=[[True, False, True, True]]) == [1.0]
    assert grouped_accuracy("oracle", 4, answers, [1], prm, orm) == [1.0]


def test_within_problem_auc():
    scores = [[0.9, 0.1, 0.5], [0.2, 0.2], [0.3, 0.4]]
    correct = [[True, False, False], [True, False], [True, True]]  # the last problem has no wrong chain
    value, used = within_problem_auc(scores, correct)
    assert used == 2 and value == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="undefined"):
        within_problem_auc([[0.1]], [[True]])
    with pytest.raises(ValueError, match="2 scores but 1 labels"):
        within_problem_auc([[0.1, 0.2]], [[True]])


@pytest.mark.parametrize("N", [0, -1, 1.5, True])
def test_bad_n(N):
    with pytest.raises(ValueError, match="N >= 1"):
        grouped_accuracy("ORM", N, [[1]], [1], [[[0.5]]], [[0.5]])


def test_bad_input():
    with pytest.raises(ValueError, match="N >= 1"):
        pick("ORM", [], [], [])
    with pytest.raises(ValueError, match="unknown best-of-N method"):
        pick("best", [1], [[0.5]], [0.5])
    with pytest.raises(ValueError, match="one flag per sample"):
        pick("ORM", [1, 2], [[0.5], [0.5]], [0.5, 0.5], [True])
    with pytest.raises(ValueError, match="only 1 samples"):
        grouped_accuracy("ORM", 2, [[1]], [1], [[[0.5]]], [[0.5]])
    with pytest.raises(ValueError, match="no per-sample score"):
        sample_score("majority vote", [0.5], 0.5)
