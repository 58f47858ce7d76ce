"""Budget forcing (Muennighoff et al., 2025): control how long the model thinks, through the logits alone.

* ``cap_hook(B)`` — truncation: once ``B`` thinking tokens are written without ``<answer>``, force ``<answer>``; the
  model then writes its answer digit and ``<eos>``.
* ``wait_hook(W)`` — extension: while the thinking holds fewer than ``W`` ``wait`` tokens, the end of thinking is
  suppressed, and where the model would have ended it (``<answer>`` its most likely token) ``wait`` is forced
  instead; the model then redoes its last step.

Both are ``logits_hook(step, logits, generated)`` functions for the batched sampler: they read only the tokens
generated so far, so they need no state of their own. After ``<answer>`` both allow only a digit, then ``<eos>``.
"""

from __future__ import annotations

import torch

from insideout.reasoning.tokenizer import CharTokenizer

TOK = CharTokenizer()
DIGITS = torch.tensor([TOK.ids[str(d)] for d in range(10)])


def _only(logits: torch.Tensor, rows: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Set every logit of the given rows to -inf except the allowed tokens."""
    if not bool(rows.any()):
        return logits
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[allowed.to(logits.device)] = True
    block = rows[:, None] & ~keep[None, :]
    return logits.masked_fill(block, float("-inf"))


def _answer_rules(logits: torch.Tensor, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply 'after <answer> a digit, then <eos>'; return the new logits and the rows still thinking."""
    B = logits.shape[0]
    if generated.shape[1] == 0:
        return logits, torch.ones(B, dtype=torch.bool, device=logits.device)
    answered = (generated == TOK.answer_id).any(dim=1)
    last = generated[:, -1]
    logits = _only(logits, last == TOK.answer_id, DIGITS)
    logits = _only(logits, answered & (last != TOK.answer_id), torch.tensor([TOK.eos_id]))
    return logits, ~answered


def _check(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}={value!r}: must be an integer >= 0 (tokens or waits)")
    return value


def cap_hook(budget: int):
    """Force ``<answer>`` once ``budget`` thinking tokens have been generated."""
    _check("budget", budget)

    def hook(step: int, logits: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        logits, thinking = _answer_rules(logits, generated)
        if step >= budget:
            logits = _only(logits, thinking, torch.tensor([TOK.answer_id]))
        return logits

    return hook


def wait_hook(min_waits: int):
    """Suppress the end of thinking until the thinking holds ``min_waits`` waits; force ``wait`` where it would end."""
    _check("min_waits", min_waits)

    def hook(step: int, logits: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
        logits, thinking = _answer_rules(logits, generated)
        waits = (generated == TOK.wait_id).sum(dim=1)  # (B,) zeros when nothing is generated yet
        short = thinking & (waits < min_waits)
        would_end = logits.argmax(dim=-1) == TOK.answer_id
        logits = _only(logits, short & would_end, torch.tensor([TOK.wait_id]))
        logits = logits.masked_fill(short[:, None] & (torch.arange(logits.shape[-1], device=logits.device)
                                                      == TOK.answer_id)[None, :], float("-inf"))
        return logits

    return hook


def thinking_tokens(text: str) -> int:
    """How many tokens a solution spends before ``<answer>`` (all of it if there is none)."""
    ids = TOK.encode(text)
    return ids.index(TOK.answer_id) if TOK.answer_id in ids else len(ids)
