"""Sampling and scoring responses: the shared batched sampler, and log-probabilities of given responses.

``sample`` is the course's batched sampler with the KV-cache (``insideout.gpt.sampling.sample``: left-padded
variable-length prompts, stop tokens, seeded), re-exported here so that every chapter of the part samples the same
way. ``response_logprobs`` scores given responses in one right-padded forward pass (no sampling): the per-token
log-probabilities that the KL estimates, DPO and PPO use. Right padding needs no attention mask for scoring: the
padding comes after every real token, and the causal mask keeps real tokens from seeing it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from insideout.gpt.model import GPT
from insideout.gpt.sampling import sample

__all__ = ["sample", "pack_responses", "token_logprobs", "response_logprobs"]


def pack_responses(prompts: list[list[int]], responses: list[list[int]], pad_id: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded prompt+response ids (B, T) and the mask (B, T - 1) of the positions that predict a response
    token (position t predicts token t + 1)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    seqs = [list(p) + list(r) for p, r in zip(prompts, responses, strict=True)]
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T - 1), dtype=torch.bool)
    for i, (p, s) in enumerate(zip(prompts, seqs, strict=True)):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, len(p) - 1 : len(s) - 1] = True
    return ids, mask


def token_logprobs(model: torch.nn.Module, ids: torch.Tensor, temperature: float = 1.0,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """log p(ids[:, t+1] | ids[:, :t+1]) for every position, (B, T - 1), under softmax(logits / temperature).

    ``mask`` (B, T - 1), bool: only the True positions are needed (a response); a course GPT then computes the
    LM head and its softmax there only, and the other positions hold 0. Gradients flow (no no_grad here)."""
    if mask is not None and isinstance(model, GPT):
        mask = mask.to(ids.device)
        logits = model(ids[:, :-1], logits_mask=mask)[0]  # (N, V)
        if temperature != 1.0:
            logits = logits / temperature
        picked = -F.cross_entropy(logits, ids[:, 1:][mask], reduction="none")  # (N,)
        return torch.zeros(mask.shape, dtype=picked.dtype, device=picked.device).masked_scatter(mask, picked)
    logits = model(ids[:, :-1])[0]  # (B, T-1, V)
    if temperature != 1.0:
        logits = logits / temperature
    lp = -F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # (B, T-1)
    return lp if mask is None else lp * mask


def response_logprobs(model: torch.nn.Module, prompts: list[list[int]], responses: list[list[int]], pad_id: int,
                      batch_size: int = 64, temperature: float = 1.0) -> list[torch.Tensor]:
    """Per-token log-probabilities of each response given its prompt (no gradient), one tensor per response,
    under the distribution sampled at ``temperature``."""
    out: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(prompts), batch_size):
                ids, mask = pack_responses(prompts[start:start + batch_size], responses[start:start + batch_size],
                                           pad_id)
                lp = token_logprobs(model, ids.to(model_device(model)), temperature, mask)
                for row in range(ids.shape[0]):
                    out.append(lp[row][mask[row].to(lp.device)].cpu())
    finally:
        model.train(was_training)
    return out


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device
