"""Batched sampling with the KV-cache for Part 4: the course's sampler, ``insideout.gpt.sampling.sample``.

Every sampled solution, step expansion and rollout of this part goes through it: many prompts per batch
(left-padded, with the model's attention mask), stop tokens, finished rows dropped, and a ``logits_hook`` through
which budget forcing acts. This module only fixes the batch size this part uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from insideout.gpt.model import GPT
from insideout.gpt.sampling import LogitsHook, SampleResult
from insideout.gpt.sampling import sample as _sample

BATCH_SIZE = 512  # rows per forward pass: the tiny model is cheap per row, so big batches amortise the step cost


def sample(model: GPT, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
           stop_tokens: Sequence[int] = (), generator: torch.Generator | None = None, batch_size: int = BATCH_SIZE,
           logits_hook: LogitsHook | None = None) -> SampleResult:
    """``insideout.gpt.sampling.sample`` with this part's batch size (see there)."""
    return _sample(model, [list(p) for p in prompts], max_new_tokens, temperature=temperature, top_k=top_k,
                   top_p=top_p, greedy=greedy, stop_tokens=stop_tokens, generator=generator, batch_size=batch_size,
                   logits_hook=logits_hook)
