"""Part 4's task: generator, parser, exact checker (incl. malformed traces), chance levels, split, tokenizer."""

from __future__ import annotations

import itertools
import random

import pytest

from insideout.reasoning.task import (
    ANSWER,
    MAX_LEVEL,
    OPS,
    WAIT,
    Problem,
    ProblemStream,
    SplitConfig,
    answer_distribution,
    chance_accuracy,
    check_level,
    check_trace,
    format_solution,
    gold_steps,
    gold_trace,
    held_out_problems,
    parse_problem,
    random_problem,
)
from insideout.reasoning.tokenizer import CharTokenizer


def brute_value(text: str) -> int:
    """Left-to-right evaluation of a chain written independently of the library."""
    value = int(text[0])
    for i in range(1, len(text), 2):
        op, d = text[i], int(text[i + 1])
        value = (value + d) % 10 if op == "+" else (value * d) % 10
    return value


def test_problem_text_answer_and_gold_lines():
    p = parse_problem("3+4*2+7")
    assert p.level == 3 and p.answer == 1
    assert gold_steps(p) == ["3+4=7", "7*2=4", "4+7=1"]
    rng = random.Random(0)
    for level in range(1, MAX_LEVEL + 1):
        for _ in range(20):
            q = random_problem(level, rng)
            assert q.level == level and parse_problem(q.text) == q
            assert q.answer == brute_value(q.text)


@pytest.mark.parametrize("text", ["", "3", "3+", "+4", "3+4*", "x", "3-4", "3+42", "34+4", "3 + 4", "3+4\n5",
                                  "3" + "+1" * 13])
def test_unparsable_problems_raise(text):
    with pytest.raises(ValueError):
        parse_problem(text)


def test_problem_validation_and_level_range():
    with pytest.raises(ValueError, match="outside the generator's range"):
        random_problem(0, random.Random(0))
    with pytest.raises(ValueError, match="outside the generator's range"):
        check_level(MAX_LEVEL + 1)
    with pytest.raises(ValueError, match="outside the generator's range"):
        SplitConfig(test_levels=(1, 99))
    with pytest.raises(ValueError):
        Problem(11, (("+", 1),))
    with pytest.raises(ValueError):
        Problem(1, (("-", 1),))
    with pytest.raises(ValueError):
        Problem(1, ())


def test_gold_trace_is_correct_and_self_checks_are_well_formed():
    rng = random.Random(1)
    for level in range(1, 9):
        p = random_problem(level, rng)
        plain = check_trace(p, format_solution(gold_trace(p), p.answer), strict=True)
        assert plain.correct and plain.well_formed and plain.complete and all(plain.step_valid)
        lines = gold_trace(p, rng, p_error=0.5, p_confirm=0.5)
        check = check_trace(p, format_solution(lines, p.answer), strict=True)
        assert check.correct and check.well_formed and check.n_waits == level
        for i in range(len(lines)):  # every wrong line is retracted by the next one
            if check.step_valid[i] is False:
                assert lines[i + 1] == WAIT and not check.prefix_correct[i]
    with pytest.raises(ValueError):
        gold_trace(p, None, p_error=0.1)
    with pytest.raises(ValueError):
        gold_trace(p, rng, p_error=0.8, p_confirm=0.5)


def test_step_labels_after_an_error():
    p = parse_problem("3+4*2+7")
    # a wrong result at the first step, then steps that compute correctly from the wrong value
    check = check_trace(p, "3+4=8\n8*2=6\n6+7=3\n<answer>3")
    assert check.well_formed and not check.correct
    assert check.step_valid == [False, True, True]
    assert check.prefix_correct == [False, False, False]
    fixed = check_trace(p, "3+4=8\nwait\n3+4=7\n7*2=4\n4+7=1\n<answer>1")
    assert fixed.correct and fixed.well_formed and fixed.step_valid == [False, None, True, True, True]
    assert fixed.prefix_correct == [False, True, True, True, True]


MALFORMED = [
    ("3+4=7\n7*2=4\n4+7=1\n", "markers"),  # no answer marker
    ("3+4=7\n<answer>1<answer>1", "markers"),  # two markers
    ("3+4=7\n7*2=4\n4+7=1<answer>1", "newline"),  # no newline before the marker
    ("3+4=7\n7*2=4\n4+7=1\n<answer>x", "number"),  # the answer is not a number
    ("3+4=7\n7*2=4\n4+7=1\n<answer>", "number"),  # no answer
    ("wait\n3+4=7\n7*2=4\n4+7=1\n<answer>1", WAIT),  # wait with nothing to retract
    ("3+4=7\nwait\nwait\n3+4=7\n7*2=4\n4+7=1\n<answer>1", WAIT),  # wait after wait
    ("3+4=7\n7*2=4\n4+7=11\n<answer>1", "neither"),  # a line that is not a step
    ("3+4=7\n\n4+7=1\n<answer>1", "neither"),  # an empty line
    ("3+4=7\n7*2=4\n<answer>4", "unfinished"),  # stops before the last operation
    ("3+4=7\n7*2=4\n4+7=1\n<answer>2", "differs"),  # answer disagrees with the last line
    ("3+4=7\nwait\n<answer>7", "retracted"),  # everything retracted
    ("3+4=7\n7*2=4\n4+7=1\n1+1=2\n<answer>2", "too long"),  # a step beyond the last operation
]


@pytest.mark.parametrize("solution,reason", MALFORMED)
def test_malformed_traces(solution, reason):
    p = parse_problem("3+4*2+7")
    check = check_trace(p, solution)
    assert not check.well_formed and reason in check.error and check.reward == 0.0
    with pytest.raises(ValueError, match=reason):
        check_trace(p, solution, strict=True)


def test_direct_answer_format_and_bad_types():
    p = parse_problem("3+4*2+7")
    assert check_trace(p, f"{ANSWER}1").reward == 1.0
    assert check_trace(p, f"{ANSWER}2").reward == 0.0
    assert check_trace("3+4*2+7", f"{ANSWER}1").correct
    with pytest.raises(ValueError):
        check_trace(p, None)
    with pytest.raises(ValueError, match="cannot parse the problem"):
        check_trace("3-4", f"{ANSWER}7")


def test_answer_distribution_matches_enumeration():
    for level in (1, 2, 3):
        counts = [0] * 10
        for start in range(10):
            for ops in itertools.product(itertools.product(OPS, range(10)), repeat=level):
                counts[Problem(start, ops).answer] += 1
        total = sum(counts)
        exact = answer_distribution(level)
        assert max(abs(c / total - e) for c, e in zip(counts, exact, strict=True)) < 1e-12
        assert chance_accuracy(level) == max(exact)


def test_split_is_fixed_distinct_and_disjoint_from_training():
    config = SplitConfig(per_level=16)
    test = held_out_problems(config)
    assert [p.text for p in test] == [p.text for p in held_out_problems(config)]
    assert len({p.text for p in test}) == len(test) == 16 * len(config.test_levels)
    assert config.unseen_levels == (7, 8)
    exclude = {p.text for p in test}
    stream = ProblemStream(config.train_levels, seed=0, exclude=exclude)
    drawn = [next(stream) for _ in range(3000)]
    assert not any(p.text in exclude for p in drawn)
    assert {p.level for p in drawn} == set(config.train_levels)
    with pytest.raises(ValueError):
        SplitConfig(per_level=0)


def test_tokenizer_round_trip_and_errors():
    tok = CharTokenizer()
    p = random_problem(5, random.Random(3))
    text = p.text + "\n" + format_solution(gold_trace(p, random.Random(4), 0.3, 0.3), p.answer)
    ids = tok.encode(text)
    assert tok.decode(ids) == text and max(ids) < tok.vocab_size
    assert tok.encode(ANSWER) == [tok.answer_id] and tok.encode(WAIT) == [tok.wait_id]
    assert tok.decode([tok.bos_id, *ids, tok.eos_id]) == text
    assert tok.decode([tok.eos_id], keep_special=True) == "<eos>"
    with pytest.raises(ValueError, match="not in the task's alphabet"):
        tok.encode("3-4")
    with pytest.raises(ValueError):
        tok.encode(None)
    with pytest.raises(ValueError, match="outside this tokenizer's vocabulary"):
        tok.decode([tok.vocab_size])
    assert len(tok.signature) == 12 and tok.signature == CharTokenizer().signature
