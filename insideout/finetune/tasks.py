"""Instruction tasks whose answers a program can check, generated from the lines of the training plays.

Every task asks for one line of verse with a property a program can test: a question, an exclamation, a line of
``n`` words, a line containing a given word, a line starting with a given letter, a line without a given letter.
The answers of the instruction data are real lines of the **training** plays that have the property (the
validation plays are never read here). Each task has a judge: ``judge(task, arg, response, stopped)`` returns
``Verdict(passed, gold, ...)`` — a strict pass/fail and a graded **gold score** in [0, 1] that stands in for a human
rater: how well the constraint is met, times how well the answer keeps to the format (one line that ends with the
end-of-turn token, a sensible length, real words).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

WORD = re.compile(r"[A-Za-z]+(?:['\-][A-Za-z]+)*")  # a word: letters, with inner apostrophes or hyphens
CONTROL = re.compile(r"<\|[a-z_]+\|>")  # the strings of special tokens, e.g. <|end|>, <|endoftext|>
MAX_WORDS = 12  # a longer answer is not "a line"; gold decays to 0 at 2 * MAX_WORDS words
MIN_LINE_WORDS, MAX_LINE_WORDS = 3, 12  # the lines used as answers

TASKS = ("question", "exclamation", "n_words", "contains", "starts_with", "avoid_letter")
TASK_TITLES = {
    "question": "ask a question", "exclamation": "write an exclamation", "n_words": "line of n words",
    "contains": "contains a word", "starts_with": "starts with a letter", "avoid_letter": "avoids a letter",
}
# Phrasings of each instruction; {arg} is the task's argument.
TEMPLATES = {
    "question": ("Write a question.", "Ask me a question.", "Give me a line that asks something."),
    "exclamation": ("Write an exclamation.", "Give me a line that ends with an exclamation mark.",
                    "Exclaim something."),
    "n_words": ("Write a line of {arg} words.", "Give me a line with exactly {arg} words.",
                "Write {arg} words."),
    "contains": ('Write a line with the word "{arg}".', 'Use the word "{arg}" in a line.',
                 'Give me a line that says "{arg}".'),
    "starts_with": ("Write a line that starts with the letter {arg}.", "Give me a line beginning with {arg}.",
                    "Start a line with the letter {arg}."),
    "avoid_letter": ('Write a line without the letter "{arg}".', 'Give me a line with no "{arg}" in it.',
                     'Write a line that never uses the letter "{arg}".'),
}
N_WORDS = (3, 5, 8)
START_LETTERS = tuple("BHMW")
AVOID_LETTERS = tuple("aost")
N_WORD_ARGS = 9  # words the contains task asks for (the most frequent content words of the training lines)
HELD_OUT_WORD_EVERY = 3  # every third of them is kept out of the instruction data (the unseen words)
STOPWORDS = frozenset(
    "the and that with this what thou thee thy thine have will your from they them their there then than when "
    "which shall were would should could here hath doth more most make made upon unto such some into like well "
    "been must come know good speak tell mine much let now not but for you his her him our are was all one yet "
    "say see may how why who she did too its out own any nor off old way".split())


def words(text: str) -> list[str]:
    """The words of a text (letters with inner apostrophes or hyphens; punctuation and digits dropped)."""
    return WORD.findall(text)


# ---- the lines of the training plays ---------------------------------------------------------------------


def clean_line(raw: str) -> str | None:
    """One spoken line of a play text, whitespace collapsed; None for headings, stage directions, speaker names."""
    s = re.sub(r"\s+", " ", raw.strip())
    if not s or s.startswith("[") or s.endswith("]") or s.upper() == s:
        return None  # empty, a stage direction, or a speaker name / heading in capitals
    if re.match(r"^(ACT|SCENE|Scene|Act)\b", s) or not (s[0].isupper() or s[0] == "'"):
        return None  # headings, and wrapped prose that starts mid-sentence
    if not all(c.isalpha() or c in " ,.;:!?'-" for c in s):
        return None  # digits, brackets, odd symbols
    n = len(words(s))
    if not MIN_LINE_WORDS <= n <= MAX_LINE_WORDS:
        return None
    return s


@lru_cache(maxsize=1)
def training_lines() -> tuple[str, ...]:
    """Distinct clean lines of the training plays and poems, in corpus order (never a validation play)."""
    from insideout.gpt.corpus import shakespeare_works

    seen, out = set(), []
    for work in shakespeare_works("train"):
        for raw in work.text.split("\n"):
            line = clean_line(raw)
            if line is not None and line not in seen:
                seen.add(line)
                out.append(line)
    return tuple(out)


@lru_cache(maxsize=1)
def vocabulary() -> frozenset[str]:
    """Lower-cased words of the training plays: the judge's test of whether an answer is made of real words."""
    from insideout.gpt.corpus import shakespeare_works

    vocab = set()
    for work in shakespeare_works("train"):
        vocab.update(w.lower() for w in words(work.text))
    return frozenset(vocab)


@lru_cache(maxsize=1)
def word_arguments() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(seen, unseen) words for the contains task: frequent content words, every third one held out."""
    counts = Counter(w.lower() for line in training_lines() for w in words(line))
    chosen = [w for w, _ in counts.most_common() if len(w) >= 4 and w.isalpha() and w not in STOPWORDS]
    chosen = chosen[:N_WORD_ARGS]
    unseen = tuple(w for i, w in enumerate(chosen) if i % HELD_OUT_WORD_EVERY == HELD_OUT_WORD_EVERY - 1)
    seen = tuple(w for w in chosen if w not in unseen)
    return seen, unseen


def task_arguments(task: str, split: str = "train") -> tuple:
    """The arguments a task takes ((None,) for none); for 'contains', the seen or the unseen words."""
    check_task(task)
    if split not in ("train", "unseen"):
        raise ValueError(f"split={split!r}: choose 'train' or 'unseen'")
    if task == "n_words":
        return N_WORDS
    if task == "starts_with":
        return START_LETTERS
    if task == "avoid_letter":
        return AVOID_LETTERS
    if task == "contains":
        seen, unseen = word_arguments()
        return seen if split == "train" else unseen
    return (None,)


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task type {task!r}: choose one of {', '.join(TASKS)}")
    return task


# ---- the judges --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A judge's decision: strict pass/fail, the graded gold score in [0, 1] and its two factors."""

    passed: bool
    gold: float
    constraint: float  # how well the task's constraint is met, in [0, 1]
    form: float  # one line, ended by the end-of-turn token, a sensible length, real words: in [0, 1]


def constraint_score(task: str, arg, text: str) -> float:
    """How well ``text`` meets the task's constraint: 1 when met, partial credit when nearly met, else 0."""
    check_task(task)
    ws = words(text)
    stripped = text.rstrip()
    if not ws:
        return 0.0
    if task in ("question", "exclamation"):
        mark = "?" if task == "question" else "!"
        return 1.0 if stripped.endswith(mark) else 0.5 if mark in stripped else 0.0
    if task == "n_words":
        n = int(arg)
        return max(0.0, 1.0 - abs(len(ws) - n) / n)
    if task == "contains":
        target = str(arg).lower()
        lower = [w.lower() for w in ws]
        if target in lower:
            return 1.0
        return 0.5 if any(target in w for w in lower) else 0.0  # inside another word ("love" in "lovely")
    if task == "starts_with":
        first = ws[0][0].upper()
        return 1.0 if first == str(arg).upper() and text.lstrip()[:1].upper() == first else 0.0
    # avoid_letter: every occurrence costs a third of the score
    count = text.lower().count(str(arg).lower())
    return max(0.0, 1.0 - count / 3)


MIN_KNOWN = 0.75  # a passing answer is made of real words: at least this fraction found in the training plays


def known_fraction(text: str) -> float:
    """Fraction of the words of a text that occur in the training plays (0 for no words)."""
    ws = words(text)
    vocab = vocabulary()
    return sum(w.lower() in vocab for w in ws) / len(ws) if ws else 0.0


def form_score(text: str, stopped: bool) -> float:
    """One line (else x0.5), ended by the end-of-turn token (else x0.5), <= MAX_WORDS words (linear decay to 0
    at twice that), made of real words (x the fraction found in the training plays), no control-token strings."""
    ws = words(text)
    if not ws or CONTROL.search(text):
        return 0.0
    score = 1.0 if stopped else 0.5
    if "\n" in text.strip():
        score *= 0.5
    if len(ws) > MAX_WORDS:
        score *= max(0.0, 1.0 - (len(ws) - MAX_WORDS) / MAX_WORDS)
    return score * known_fraction(text)


def judge(task: str, arg, response: str, stopped: bool) -> Verdict:
    """Judge one response (its text without the end-of-turn token; ``stopped``: whether the model produced it).

    Pass: the constraint fully met, the answer ended by the end-of-turn token, one line of 1..MAX_WORDS words,
    at least MIN_KNOWN of them real words, no control-token string. Gold: constraint score x form score.
    """
    if not isinstance(response, str):
        raise ValueError(f"response must be a str, got {type(response).__name__}")
    c = constraint_score(task, arg, response)
    f = form_score(response, bool(stopped))
    ws = words(response)
    passed = (c == 1.0 and bool(stopped) and "\n" not in response.strip() and 1 <= len(ws) <= MAX_WORDS
              and not CONTROL.search(response) and known_fraction(response) >= MIN_KNOWN)
    return Verdict(passed=passed, gold=c * f, constraint=c, form=f)


# ---- prompts and instruction data ---------------------------------------------------------------------------


def instruction(task: str, arg, template: int = 0) -> str:
    """The instruction text of a task with its argument, in one of its phrasings."""
    check_task(task)
    options = TEMPLATES[task]
    if not 0 <= template < len(options):
        raise ValueError(f"template={template}: task {task!r} has phrasings 0..{len(options) - 1}")
    return options[template].format(arg=arg)


def lines_for(task: str, arg, lines: tuple[str, ...] | None = None) -> list[str]:
    """The lines (default: the training lines) whose constraint score is 1 for this task and argument."""
    lines = training_lines() if lines is None else lines  # each already one line of 3..12 real words
    return [line for line in lines if constraint_score(task, arg, line) == 1.0]


@lru_cache(maxsize=1)
def _answer_index() -> dict[tuple[str, str], tuple[str, ...]]:
    """(task, arg) -> the training lines that answer it, built in one pass over the lines (same rule as
    ``lines_for``, which the tests compare with it)."""
    index: dict[tuple[str, str], list[str]] = {}
    seen, unseen = word_arguments()
    targets = set(seen) | set(unseen)
    for line in training_lines():
        ws = words(line)
        stripped = line.rstrip()
        if stripped.endswith("?"):
            index.setdefault(("question", ""), []).append(line)
        if stripped.endswith("!"):
            index.setdefault(("exclamation", ""), []).append(line)
        index.setdefault(("n_words", str(len(ws))), []).append(line)
        for w in {w.lower() for w in ws} & targets:
            index.setdefault(("contains", w), []).append(line)
        if line[:1].isalpha():
            index.setdefault(("starts_with", line[0].upper()), []).append(line)
        lower = line.lower()
        for letter in AVOID_LETTERS:
            if letter not in lower:
                index.setdefault(("avoid_letter", letter), []).append(line)
    return {key: tuple(value) for key, value in index.items()}


def answers(task: str, arg) -> tuple[str, ...]:
    """The training lines that fully meet a task's constraint for an argument (the instruction data's answers)."""
    check_task(task)
    return _answer_index().get((task, "" if arg is None else str(arg)), ())


def make_prompts(n_per_task: int, seed: int, *, split: str = "train", tasks: tuple[str, ...] = TASKS) -> list[dict]:
    """``n_per_task`` prompts of each task: {task, arg, instruction}; arguments and phrasings drawn with a seed.

    ``split='unseen'`` draws the contains task's words from the held-out words (the other tasks have no
    held-out argument).
    """
    if isinstance(n_per_task, bool) or not isinstance(n_per_task, int) or n_per_task < 1:
        raise ValueError(f"n_per_task={n_per_task!r}: must be an integer >= 1")
    rng = random.Random(seed)
    out = []
    for task in tasks:
        args = task_arguments(task, split)
        for i in range(n_per_task):
            arg = args[i % len(args)] if len(args) > 1 else None
            template = rng.randrange(len(TEMPLATES[task]))
            out.append({"task": task, "arg": "" if arg is None else str(arg),
                        "instruction": instruction(task, arg, template)})
    return out


def instruction_dataset(n_per_task: int, seed: int = 0):
    """The SFT data as a ``datasets.Dataset``: columns task, arg, instruction, response (a real training line).

    Arguments cycle through the task's training arguments, phrasings and answers are drawn with ``seed``; the
    answer of each example is a line of the training plays that passes the judge.
    """
    from datasets import Dataset

    rng = random.Random(seed + 1)
    rows = []
    for prompt in make_prompts(n_per_task, seed, split="train"):
        arg = prompt["arg"] or None
        options = answers(prompt["task"], arg)
        if not options:
            raise ValueError(f"no training line passes task {prompt['task']!r} with argument {arg!r}")
        rows.append({**prompt, "response": options[rng.randrange(len(options))]})
    rng.shuffle(rows)
    return Dataset.from_list(rows)
