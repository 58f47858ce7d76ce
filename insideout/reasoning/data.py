"""Training examples of Part 4 as token ids: prompt + solution, with the loss on the solution only."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch

from insideout.reasoning.task import ANSWER, WAIT, Problem, ProblemStream, format_solution, gold_trace
from insideout.reasoning.tokenizer import CharTokenizer

FORMATS = ("cot", "direct")


PROMPT_WIDTH = 19  # <bos>, a level-8 problem (17 characters), newline


def prompt_ids(tok: CharTokenizer, problem: Problem, width: int = PROMPT_WIDTH) -> list[int]:
    """What every model is given: ``<bos>``, the problem, ``<pad>`` up to ``width`` tokens, and a newline.

    The padding gives every prompt of level <= 8 the same length, so the k-th operation always sits at positions
    2k-1, 2k and the solution always starts at the same position, whatever the problem's length.
    """
    ids = [tok.bos_id] + tok.encode(problem.text)
    return ids + [tok.pad_id] * max(0, width - 1 - len(ids)) + [tok.newline_id]


def solution_ids(tok: CharTokenizer, lines: Sequence[str], answer: int | str) -> list[int]:
    """The solution's tokens: the lines, ``<answer>``, the answer and ``<eos>``."""
    return tok.encode(format_solution(list(lines), answer)) + [tok.eos_id]


def retracted_wrong(lines: Sequence[str]) -> list[bool]:
    """For each line, whether it is a deliberate error: a line that a ``wait`` retracts and the redo changes."""
    return [i + 2 < len(lines) and lines[i + 1] == WAIT and lines[i + 2] != line for i, line in enumerate(lines)]


def example_ids(tok: CharTokenizer, problem: Problem, fmt: str = "cot", rng: random.Random | None = None,
                p_error: float = 0.0, p_confirm: float = 0.0) -> tuple[list[int], int, list[bool]]:
    """(ids, prompt length, loss mask) of one training example in the chain-of-thought or direct format.

    The mask is False on the prompt and on the tokens of deliberately wrong lines: a correction's wrong line is
    shown to the model (it learns to write ``wait`` after it and the right line next) but never trained on, so the
    model does not learn to make the error itself.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: choose one of {', '.join(FORMATS)}")
    lines = gold_trace(problem, rng, p_error, p_confirm) if fmt == "cot" else []
    prompt = prompt_ids(tok, problem)
    ids, train = list(prompt), [False] * len(prompt)
    for line, wrong in zip(lines, retracted_wrong(lines), strict=True):
        t = tok.encode(line + "\n")
        ids += t
        train += [not wrong] * len(t)
    tail = tok.encode(f"{ANSWER}{problem.answer}") + [tok.eos_id]
    return ids + tail, len(prompt), train + [True] * len(tail)


def collate(examples: Sequence[tuple], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad examples (ids, prompt length[, loss mask]) to one length; inputs are ids[:-1], targets ids[1:]
    with -100 on the prompt, on masked tokens and on padding."""
    T = max(len(ex[0]) for ex in examples) - 1
    idx = torch.full((len(examples), T), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), T), -100, dtype=torch.long)
    for row, ex in enumerate(examples):
        ids, n_prompt = ex[0], ex[1]
        t = torch.tensor(ids, dtype=torch.long)
        idx[row, : len(ids) - 1] = t[:-1]
        targets[row, n_prompt - 1: len(ids) - 1] = t[n_prompt:]  # predict every solution token, none of the prompt
        if len(ex) > 2:
            keep = torch.tensor(ex[2][1:], dtype=torch.bool)  # the mask of each predicted token
            targets[row, : len(ids) - 1][~keep] = -100
    return {"idx": idx, "targets": targets}


def batch_stream(tok: CharTokenizer, levels: tuple[int, ...], batch_size: int, seed: int, exclude: set[str],
                 fmt: str = "cot", p_error: float = 0.0, p_confirm: float = 0.0) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of fresh training problems (never one of ``exclude``), seeded."""
    problems = ProblemStream(levels, seed, exclude)
    rng = random.Random(f"traces-{seed}")
    while True:
        yield collate([example_ids(tok, next(problems), fmt, rng, p_error, p_confirm) for _ in range(batch_size)],
                      tok.pad_id)


def lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the solution tokens of a batch (targets -100 elsewhere)."""
    return model(batch["idx"], batch["targets"])[1]
