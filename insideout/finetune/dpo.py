"""Direct preference optimisation (Rafailov et al., 2023) on the preference pairs, through the shared ``fit``.

For a pair (prompt x, chosen y_w, rejected y_l), a policy :math:`\\pi_\\theta` and a frozen reference
:math:`\\pi_\\text{ref}`, the implicit reward of a response is :math:`\\hat r(y) = \\beta \\log
\\frac{\\pi_\\theta(y|x)}{\\pi_\\text{ref}(y|x)}` and the loss is
:math:`-\\log\\sigma(\\hat r(y_w) - \\hat r(y_l))`. ``aggregate="sum"`` uses the summed token log-probabilities of
a response (the paper's sequence log-likelihood); ``aggregate="mean"`` divides by the response length, which
removes the loss's direct dependence on length.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from insideout.finetune.generation import pack_responses, token_logprobs
from insideout.finetune.reward import Pair, check_positive
from insideout.training import OptimConfig, _check_int, _check_number, fit
from insideout.utils import DictConfig

AGGREGATES = ("sum", "mean")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss, implicit reward of chosen (B,), of rejected (B,)) from sequence log-probabilities (B,) each."""
    check_positive("beta", beta)
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen - rejected).mean(), chosen, rejected


@dataclass
class DPOConfig(DictConfig):
    beta: float = 0.1
    aggregate: str = "sum"  # sum | mean of the response's token log-probabilities
    steps: int = 120
    batch_size: int = 32
    lr: float = 2e-4
    warmup_steps: int = 10
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self):
        owner = type(self).__name__
        check_positive(f"{owner}.beta", self.beta)
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"{owner}.aggregate={self.aggregate!r}: choose one of {', '.join(AGGREGATES)}")
        _check_int(owner, "steps", self.steps, minimum=1)
        _check_int(owner, "batch_size", self.batch_size, minimum=1)
        _check_int(owner, "warmup_steps", self.warmup_steps, minimum=0)
        _check_number(owner, "lr", self.lr, low=0.0, low_open=True)

    def optim(self) -> OptimConfig:
        return OptimConfig(max_steps=self.steps, lr=self.lr, warmup_steps=self.warmup_steps,
                           weight_decay=self.weight_decay)


def pair_tensors(pairs: list[Pair], pad_id: int) -> dict[str, torch.Tensor]:
    """``ids`` (B, 2, T) of prompt + chosen / rejected and ``mask`` (B, 2, T-1) of the response positions."""
    prompts = [list(p.prompt) for p in pairs]
    ids, mask = pack_responses(prompts + prompts, [list(p.chosen) for p in pairs] + [list(p.rejected) for p in pairs],
                               pad_id)
    B = len(pairs)
    return {"ids": torch.stack([ids[:B], ids[B:]], 1), "mask": torch.stack([mask[:B], mask[B:]], 1)}


def sequence_logprobs(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, aggregate: str) -> torch.Tensor:
    """Summed (or mean) log-probability of the masked tokens of each row: ids (N, T), mask (N, T-1) -> (N,)."""
    lp = token_logprobs(model, ids, mask=mask.bool()) * mask  # (N, T-1): the response positions only
    total = lp.sum(-1)
    return total if aggregate == "sum" else total / mask.sum(-1).clamp(min=1)


@torch.no_grad()
def reference_logprobs(ref: torch.nn.Module, pairs: list[Pair], pad_id: int, aggregate: str,
                       batch_size: int = 64) -> torch.Tensor:
    """(P, 2) reference log-probabilities of chosen and rejected, computed once before training."""
    ref.eval()
    device = next(ref.parameters()).device
    out = []
    for start in range(0, len(pairs), batch_size):
        t = pair_tensors(pairs[start:start + batch_size], pad_id)
        B, _, T = t["ids"].shape
        lp = sequence_logprobs(ref, t["ids"].reshape(2 * B, T).to(device), t["mask"].reshape(2 * B, T - 1).to(device),
                               aggregate)
        out.append(lp.view(B, 2).cpu())
    return torch.cat(out)


def dpo_stream(pairs: list[Pair], ref_lp: torch.Tensor, batch_size: int, pad_id: int, seed: int
               ) -> Iterator[dict[str, torch.Tensor]]:
    if len(pairs) < batch_size:
        raise ValueError(f"{len(pairs)} pairs cannot fill a batch of {batch_size}")
    epoch = 0
    while True:
        order = list(range(len(pairs)))
        random.Random(seed + epoch).shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chunk = order[start:start + batch_size]
            batch = pair_tensors([pairs[i] for i in chunk], pad_id)
            batch["ref"] = ref_lp[chunk]  # (B, 2)
            yield batch
        epoch += 1


def make_dpo_loss(beta: float, aggregate: str):
    def loss_fn(model, batch):
        ids, mask, ref = batch["ids"], batch["mask"], batch["ref"]
        B, _, T = ids.shape
        lp = sequence_logprobs(model, ids.reshape(2 * B, T), mask.reshape(2 * B, T - 1), aggregate).view(B, 2)
        loss, r_c, r_r = dpo_loss(lp[:, 0], lp[:, 1], ref[:, 0], ref[:, 1], beta)
        r_c, r_r = r_c.detach(), r_r.detach()
        return loss, {"accuracy": float((r_c > r_r).float().mean()), "margin": float((r_c - r_r).mean())}
    return loss_fn


def train_dpo(policy: torch.nn.Module, ref: torch.nn.Module, pairs: list[Pair], pad_id: int, config: DPOConfig):
    """Train ``policy`` in place on the pairs against the frozen ``ref``; returns ``fit``'s result."""
    if len(pairs) < config.batch_size:
        raise ValueError(f"{len(pairs)} preference pairs cannot fill a batch of {config.batch_size}")
    ref_lp = reference_logprobs(ref, pairs, pad_id, config.aggregate)
    stream = dpo_stream(pairs, ref_lp, config.batch_size, pad_id, config.seed)
    return fit(policy, stream, make_dpo_loss(config.beta, config.aggregate), config.optim(), desc="DPO")


@torch.no_grad()
def implicit_reward_accuracy(policy: torch.nn.Module, ref: torch.nn.Module, pairs: list[Pair], pad_id: int,
                             beta: float, aggregate: str = "sum") -> dict[str, float]:
    """Held-out: how often the implicit reward ranks chosen over rejected (labels) and gold-better over worse."""
    ref_lp = reference_logprobs(ref, pairs, pad_id, aggregate)
    pol_lp = reference_logprobs(policy, pairs, pad_id, aggregate)
    r = beta * (pol_lp - ref_lp)  # (P, 2)
    chosen_wins = r[:, 0] > r[:, 1]
    gold_better = torch.tensor([p.gold_chosen > p.gold_rejected for p in pairs])
    differs = torch.tensor([p.gold_chosen != p.gold_rejected for p in pairs])
    return {"label_accuracy": float(chosen_wins.float().mean()),
            "gold_accuracy": float((chosen_wins == gold_better)[differs].float().mean()) if differs.any() else 0.5,
            "margin": float((r[:, 0] - r[:, 1]).mean()),
            "chosen_reward": float(r[:, 0].mean()), "rejected_reward": float(r[:, 1].mean())}
