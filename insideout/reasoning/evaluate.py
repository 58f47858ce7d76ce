"""Solving problems with a model and scoring the answers: accuracy by level, tokens, model calls, seconds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from insideout.reasoning.data import prompt_ids
from insideout.reasoning.sampling import sample
from insideout.reasoning.task import Problem, TraceCheck, check_trace
from insideout.reasoning.tokenizer import CharTokenizer

TOK = CharTokenizer()


@dataclass
class Solutions:
    """``n`` sampled solutions per problem, checked; and what producing them cost."""

    problems: list[Problem]
    texts: list[list[str]] = field(default_factory=list)  # per problem, n solution texts (<eos> removed)
    checks: list[list[TraceCheck]] = field(default_factory=list)
    tokens: int = 0  # generated tokens, all samples
    forward_calls: int = 0  # batched forward passes of the model
    seconds: float = 0.0  # wall-clock seconds of sampling

    def answers(self) -> list[list[int | None]]:
        return [[c.answer for c in row] for row in self.checks]

    def correct(self) -> list[list[bool]]:
        return [[c.correct for c in row] for row in self.checks]

    def mean_correct(self) -> list[float]:
        """Per problem, the fraction of its samples that are right (the expected accuracy of one sample)."""
        return [sum(row) / len(row) for row in self.correct()]


def default_max_new_tokens(model, problems: Sequence[Problem]) -> int:
    """Room for a trace with a self-check on every line, within the model's context."""
    longest = max(len(prompt_ids(TOK, p)) for p in problems)
    want = max(14 * max(p.level for p in problems) + 8, 8)
    return max(1, min(want, model.config.context_length - longest))


def solve(model, problems: Sequence[Problem], *, n: int = 1, greedy: bool = False, temperature: float = 1.0,
          generator: torch.Generator | None = None, max_new_tokens: int | None = None, batch_size: int = 512,
          logits_hook=None, prefixes: Sequence[Sequence[int]] | None = None) -> Solutions:
    """Sample ``n`` solutions per problem (all in batches with the KV-cache) and check each one exactly.

    ``prefixes`` (one per problem) are tokens forced after the prompt; the texts then include them.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: the number of samples per problem must be an integer >= 1")
    problems = list(problems)
    if not problems:
        raise ValueError("solve needs at least one problem")
    prefixes = [list(p) for p in prefixes] if prefixes is not None else [[] for _ in problems]
    prompts = [prompt_ids(TOK, p) + pre for p, pre in zip(problems, prefixes, strict=True) for _ in range(n)]
    max_new = max_new_tokens or default_max_new_tokens(model, problems)
    max_new = min(max_new, model.config.context_length - max(len(p) for p in prompts))
    start = time.perf_counter()
    out = sample(model, prompts, max_new, greedy=greedy, temperature=temperature, stop_tokens=(TOK.eos_id,),
                 generator=generator, batch_size=batch_size, logits_hook=logits_hook)
    seconds = time.perf_counter() - start
    result = Solutions(problems, tokens=out.n_generated, forward_calls=out.forward_calls, seconds=seconds)
    for i, p in enumerate(problems):
        texts, checks = [], []
        for j in range(n):
            text = TOK.decode(prefixes[i] + out.tokens[i * n + j])
            texts.append(text)
            checks.append(check_trace(p, text))
        result.texts.append(texts)
        result.checks.append(checks)
    return result


def by_level(problems: Sequence[Problem], values: Sequence[float]) -> dict[int, float]:
    """The mean of per-problem values at each level, levels in increasing order."""
    if len(problems) != len(values):
        raise ValueError(f"{len(problems)} problems but {len(values)} values")
    sums: dict[int, list[float]] = {}
    for p, v in zip(problems, values, strict=True):
        sums.setdefault(p.level, []).append(float(v))
    return {level: sum(v) / len(v) for level, v in sorted(sums.items())}


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
