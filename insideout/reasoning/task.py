"""Part 4's task: chains of single-digit operations modulo 10, solved one operation per line, checked exactly.

A problem of level ``n`` is a start digit followed by ``n`` operations, each an operator from ``OPS`` and a digit,
applied **left to right** (no precedence) modulo 10: ``3+4*2+7`` means ((3+4)*2+7) mod 10 = 1. A solution trace
does one operation per line, then the answer follows the ``<answer>`` marker::

    3+4*2+7          <- the problem (the prompt)
    3+4=7            <- 3+4 = 7
    7*2=4            <- 7*2 = 14 = 4 (mod 10)
    4+7=1            <- 4+7 = 11 = 1 (mod 10)
    <answer>1

Every line is checkable exactly: its left operand must be the previous line's result (the start digit for the
first line), its operation the problem's next one, its result the right value. A line ``wait`` retracts the line
before it; the next line redoes that step. Gold traces may contain such self-checks (``gold_trace``): a
*correction* (a deliberately wrong result, ``wait``, the right line) or a *confirmation* (a right line, ``wait``,
the same line again), so ``wait`` always means "redo the last step", never "the last line was wrong". The
direct-answer format has no lines: ``3+4*2+7`` then ``<answer>1``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

OPS = ("+", "*")
MODULUS = 10
MIN_LEVEL, MAX_LEVEL = 1, 12  # the generator's range of levels (operations per problem)
ANSWER = "<answer>"
WAIT = "wait"

_PROBLEM = re.compile(r"^[0-9](?:[+*][0-9])+$")
_LINE = re.compile(r"^([0-9])([+*])([0-9])=([0-9])$")


def _apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return (a + b) % MODULUS
    if op == "*":
        return (a * b) % MODULUS
    raise ValueError(f"unknown operator {op!r}: the operators are {', '.join(OPS)}")


def check_level(level: int) -> int:
    """Return ``level`` if the generator supports it, else a ValueError naming the range."""
    if isinstance(level, bool) or not isinstance(level, int) or not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"difficulty level {level!r} is outside the generator's range: choose an integer from "
                         f"{MIN_LEVEL} to {MAX_LEVEL} (the number of operations)")
    return level


@dataclass(frozen=True)
class Problem:
    """A start digit and a tuple of (operator, digit) operations; ``level`` is the number of operations."""

    start: int
    ops: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        if not (isinstance(self.start, int) and 0 <= self.start < MODULUS):
            raise ValueError(f"Problem.start={self.start!r}: must be a digit 0-9")
        if not self.ops:
            raise ValueError("a Problem needs at least one operation")
        for op, d in self.ops:
            if op not in OPS or not (isinstance(d, int) and 0 <= d < MODULUS):
                raise ValueError(f"Problem operation {op!r}{d!r}: operators {OPS}, operands digits 0-9")

    @property
    def level(self) -> int:
        return len(self.ops)

    @property
    def text(self) -> str:
        return str(self.start) + "".join(f"{op}{d}" for op, d in self.ops)

    @property
    def values(self) -> list[int]:
        """The running value after each operation (the last one is the answer)."""
        out, value = [], self.start
        for op, d in self.ops:
            value = _apply(op, value, d)
            out.append(value)
        return out

    @property
    def answer(self) -> int:
        return self.values[-1]

    def __str__(self) -> str:
        return self.text


def parse_problem(text: str) -> Problem:
    """The Problem written as ``text`` (e.g. ``"3+4*2"``); ValueError if it is not a chain of digit operations."""
    if not isinstance(text, str):
        raise ValueError(f"a problem is a string such as '3+4*2', got {type(text).__name__}")
    t = text.strip()
    if not _PROBLEM.match(t):
        raise ValueError(f"cannot parse the problem {text!r}: write a digit followed by one or more operations, each "
                         f"an operator from {OPS} and a digit, e.g. '3+4*2'")
    problem = Problem(int(t[0]), tuple((t[i], int(t[i + 1])) for i in range(1, len(t), 2)))
    check_level(problem.level)
    return problem


def random_problem(level: int, rng: random.Random) -> Problem:
    """A problem of ``level`` operations: start digit, operators and operands each uniform and independent."""
    check_level(level)
    start = rng.randrange(MODULUS)
    ops = tuple((OPS[rng.randrange(len(OPS))], rng.randrange(MODULUS)) for _ in range(level))
    return Problem(start, ops)


# ---- solving ----------------------------------------------------------------------------------------------


def step_line(left: int, op: str, digit: int) -> str:
    """One line of a trace: ``left op digit = value``."""
    return f"{left}{op}{digit}={_apply(op, left, digit)}"


def gold_steps(problem: Problem) -> list[str]:
    """The lines of the correct trace, one operation each."""
    lefts = [problem.start] + problem.values[:-1]
    return [step_line(left, op, d) for left, (op, d) in zip(lefts, problem.ops, strict=True)]


def corrupt_line(line: str, rng: random.Random) -> str:
    """A plausible wrong version of a line: its result digit replaced by another digit."""
    right = int(line[-1])
    wrong = rng.randrange(MODULUS - 1)
    wrong += wrong >= right  # any digit but the right one
    return line[:-1] + str(wrong)


def gold_trace(problem: Problem, rng: random.Random | None = None, p_error: float = 0.0,
               p_confirm: float = 0.0) -> list[str]:
    """The gold lines, with self-checks inserted: per line, a correction with probability ``p_error`` (wrong line,
    ``wait``, right line), else a confirmation with probability ``p_confirm`` (right line, ``wait``, right line)."""
    if not (0.0 <= p_error and 0.0 <= p_confirm and p_error + p_confirm <= 1.0):
        raise ValueError(f"p_error={p_error}, p_confirm={p_confirm}: need two probabilities with sum <= 1")
    checks = bool(p_error or p_confirm)
    if checks and rng is None:
        raise ValueError("gold_trace with self-checks needs an rng (random.Random)")
    out = []
    for line in gold_steps(problem):
        u = rng.random() if checks else 1.0
        if u < p_error:
            out += [corrupt_line(line, rng), WAIT, line]
        elif u < p_error + p_confirm:
            out += [line, WAIT, line]
        else:
            out.append(line)
    return out


def format_solution(lines: list[str], answer: int | str) -> str:
    """The text after the prompt: each line ended by a newline, then ``<answer>`` and the answer."""
    return "".join(f"{line}\n" for line in lines) + f"{ANSWER}{answer}"


def prompt_text(problem: Problem) -> str:
    """What the model is given: the problem and a newline."""
    return problem.text + "\n"


# ---- checking ---------------------------------------------------------------------------------------------


@dataclass
class TraceCheck:
    """What the checker found in one solution text.

    ``lines`` are the thinking lines as written (``wait`` included). For each line, ``step_valid[i]`` says whether
    it is the correct next step after the lines kept before it (None for a ``wait``), and ``prefix_correct[i]``
    whether the lines kept after it (retracted ones dropped) are still the start of the gold trace.
    """

    answer: int | None = None  # the parsed answer, None if absent or not a number
    correct: bool = False  # the answer equals the problem's value
    well_formed: bool = False  # parses, every wait retracts a line, one kept line per operation, answer = last result
    complete: bool = False  # as many kept lines as the problem has operations
    lines: list[str] = field(default_factory=list)
    step_valid: list[bool | None] = field(default_factory=list)
    prefix_correct: list[bool] = field(default_factory=list)
    n_waits: int = 0
    error: str = ""  # why the text is not well formed ("" if it is)

    @property
    def reward(self) -> float:
        """The verifiable reward: 1 for a correct answer in a well-formed trace, else 0."""
        return 1.0 if (self.correct and self.well_formed) else 0.0


def _fail(check: TraceCheck, message: str, strict: bool) -> TraceCheck:
    if strict:
        raise ValueError(message)
    check.well_formed = False
    check.error = message
    return check


def expected_next(problem: Problem, kept: list[str]) -> str | None:
    """The correct next line after the kept lines (None when the chain is already complete)."""
    i = len(kept)
    if i >= problem.level:
        return None
    if i == 0:
        left = problem.start
    else:
        m = _LINE.match(kept[-1])
        if m is None:
            return None
        left = int(m.group(4))
    op, d = problem.ops[i]
    return step_line(left, op, d)


def check_trace(problem: Problem | str, solution: str, *, strict: bool = False) -> TraceCheck:
    """Check a solution text (what follows the prompt, ``<eos>`` removed) against the problem.

    A step is *valid* when it is the correct next step given the lines kept before it (so after one wrong result,
    later lines that compute correctly from it are valid, but no longer on the gold path). A model's output may be
    anything, so by default a malformed text is reported (``well_formed=False`` with ``error`` saying why; the
    answer is still read when it can be); ``strict=True`` raises a ValueError with that message instead. An
    unparsable *problem* always raises.
    """
    if isinstance(problem, str):
        problem = parse_problem(problem)
    if not isinstance(solution, str):
        raise ValueError(f"a solution is a string, got {type(solution).__name__}")
    check = TraceCheck()
    n_markers = solution.count(ANSWER)
    if n_markers != 1:
        return _fail(check, f"the trace has {n_markers} '{ANSWER}' markers, expected exactly one (before the answer)",
                     strict)
    thinking, answer_text = solution.split(ANSWER)
    if answer_text.isascii() and answer_text.isdigit():
        check.answer = int(answer_text)
        check.correct = check.answer == problem.answer
    if thinking and not thinking.endswith("\n"):
        return _fail(check, f"the thinking part must end with a newline before '{ANSWER}', got {thinking[-8:]!r}",
                     strict)
    check.lines = thinking.split("\n")[:-1] if thinking else []
    gold = gold_steps(problem)
    kept: list[str] = []  # the lines not retracted
    malformed = ""
    for i, line in enumerate(check.lines):
        if line == WAIT:
            check.n_waits += 1
            check.step_valid.append(None)
            if not kept or (i > 0 and check.lines[i - 1] == WAIT):
                malformed = malformed or f"line {i + 1}: '{WAIT}' must follow a step line (it retracts that line)"
            else:
                kept.pop()
            check.prefix_correct.append(kept == gold[: len(kept)])
            continue
        if not _LINE.match(line):
            malformed = malformed or (f"line {i + 1} {line!r} is neither a step such as '3+4=7' nor '{WAIT}'")
        check.step_valid.append(line == expected_next(problem, kept))
        kept.append(line)
        check.prefix_correct.append(kept == gold[: len(kept)])
    if malformed:
        return _fail(check, malformed, strict)
    if check.answer is None:
        return _fail(check, f"the answer after '{ANSWER}' must be a number, got {answer_text!r}", strict)
    if check.lines:
        if not kept:
            return _fail(check, "every step was retracted: no line is left", strict)
        check.complete = len(kept) == problem.level
        if not check.complete:
            return _fail(check, f"{len(kept)} kept lines for {problem.level} operations: the trace is "
                                f"{'unfinished' if len(kept) < problem.level else 'too long'}", strict)
        last = _LINE.match(kept[-1]).group(4)
        if int(last) != check.answer:
            return _fail(check, f"the answer {check.answer} differs from the last line's result {last}", strict)
    check.well_formed = True
    return check


# ---- chance and splits ------------------------------------------------------------------------------------


def answer_distribution(level: int) -> list[float]:
    """The exact distribution of the answer at a level under the generator (dynamic programming over digits)."""
    check_level(level)
    probs = [1.0 / MODULUS] * MODULUS
    for _ in range(level):
        new = [0.0] * MODULUS
        for a, pa in enumerate(probs):
            for op in OPS:
                for d in range(MODULUS):
                    new[_apply(op, a, d)] += pa / (len(OPS) * MODULUS)
        probs = new
    return probs


def chance_accuracy(level: int) -> float:
    """The accuracy of the best constant guess at a level: the largest answer probability."""
    return max(answer_distribution(level))


def count_problems(level: int) -> int:
    """How many distinct problems a level has."""
    return MODULUS * (len(OPS) * MODULUS) ** check_level(level)


@dataclass(frozen=True)
class SplitConfig:
    """The fixed held-out test set: ``per_level`` distinct problems at every level of ``test_levels``."""

    test_levels: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    train_levels: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    per_level: int = 64
    seed: int = 20260

    def __post_init__(self) -> None:
        for level in (*self.test_levels, *self.train_levels):
            check_level(level)
        if isinstance(self.per_level, bool) or not isinstance(self.per_level, int) or self.per_level < 1:
            raise ValueError(f"SplitConfig.per_level={self.per_level!r}: must be an integer >= 1")
        for level in self.test_levels:
            if self.per_level > count_problems(level) // 2:
                raise ValueError(f"SplitConfig.per_level={self.per_level}: level {level} has only "
                                 f"{count_problems(level)} problems; keep at most half of them for the test set")

    @property
    def unseen_levels(self) -> tuple[int, ...]:
        return tuple(level for level in self.test_levels if level not in self.train_levels)


DEFAULT_SPLIT = SplitConfig()


def held_out_problems(config: SplitConfig = DEFAULT_SPLIT, seed_tag: str = "test") -> list[Problem]:
    """The held-out test set: for each level in order, ``per_level`` distinct problems from its own seeded stream."""
    out = []
    for level in config.test_levels:
        rng = random.Random(f"{seed_tag}-{config.seed}-{level}")
        seen: set[str] = set()
        while len(seen) < config.per_level:
            p = random_problem(level, rng)
            if p.text not in seen:
                seen.add(p.text)
                out.append(p)
    return out


class ProblemStream:
    """An endless seeded stream of training problems at the given levels (uniform), never one of ``exclude``."""

    def __init__(self, levels: tuple[int, ...], seed: int | str, exclude: set[str] | None = None):
        if not levels:
            raise ValueError("ProblemStream needs at least one level")
        for level in levels:
            check_level(level)
        self.levels, self.rng, self.exclude = tuple(levels), random.Random(f"train-{seed}"), exclude or set()

    def __iter__(self):
        return self

    def __next__(self) -> Problem:
        while True:
            p = random_problem(self.levels[self.rng.randrange(len(self.levels))], self.rng)
            if p.text not in self.exclude:
                return p
