"""Log-probabilities of completions under a model, for RL, reward models and distillation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pack(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int
         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids of prompt + completion, the (B, Tc) positions predicting each completion token
    (index into the model's output) and the (B, Tc) mask of real completion tokens."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if not prompts:
        raise ValueError("pack needs at least one sequence")
    T = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
    Tc = max(1, max(len(c) for c in completions))
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    where = torch.zeros((len(prompts), Tc), dtype=torch.long)
    mask = torch.zeros((len(prompts), Tc), dtype=torch.bool)
    for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        if len(p) < 1:
            raise ValueError(f"prompt {b} is empty")
        ids[b, : len(p) + len(c)] = torch.tensor(list(p) + list(c), dtype=torch.long)
        where[b, : len(c)] = torch.arange(len(p) - 1, len(p) - 1 + len(c))
        mask[b, : len(c)] = True
    return ids, where, mask


def completion_logprobs(model, ids: torch.Tensor, where: torch.Tensor, mask: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per completion token: its log-probability (B, Tc) (0 where masked) and the full log-softmax there
    (B, Tc, V), from one forward pass over the packed sequences."""
    device = model.tok_emb.weight.device
    ids, where, mask = ids.to(device), where.to(device), mask.to(device)
    T = ids.shape[1]
    logits = model(ids[:, : T - 1] if T > 1 else ids)[0]  # (B, T-1, V): position t predicts token t+1
    logp_all = F.log_softmax(logits.float(), dim=-1)
    pos = where.clamp(max=logits.shape[1] - 1)
    logp_at = logp_all.gather(1, pos[:, :, None].expand(-1, -1, logp_all.shape[-1]))  # (B, Tc, V)
    targets = ids.gather(1, (pos + 1).clamp(max=T - 1))  # (B, Tc) the completion tokens
    token_logp = logp_at.gather(2, targets[:, :, None]).squeeze(2)
    return token_logp.masked_fill(~mask, 0.0), logp_at
