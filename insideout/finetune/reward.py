"""Preference pairs labelled by a Bradley–Terry draw from the gold score, and a reward model trained on them.

Labels. For two responses ``a`` and ``b`` to one prompt with gold scores :math:`g_a, g_b`, a simulated rater
prefers ``a`` with probability :math:`\\sigma((g_a - g_b)/\\tau)` (Bradley and Terry, 1952); ``tau`` sets the
label noise. The best any predictor can do on such labels is to pick the gold-better response, which agrees
with the drawn label with probability :math:`\\max(p, 1 - p)`: the mean of that over the pairs is the **accuracy
ceiling**.

Reward model. The GPT trunk (its LM head removed) plus a scalar head on the final hidden state of the last token
of ``prompt + response``; trained through the shared ``fit`` with the Bradley–Terry loss
:math:`-\\log \\sigma(r_\\text{chosen} - r_\\text{rejected})`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from insideout.gpt.model import GPT
from insideout.training import OptimConfig, _check_int, _check_number, fit
from insideout.utils import DictConfig


def bt_probability(gold_a: float, gold_b: float, tau: float) -> float:
    """P(a preferred over b) = sigmoid((gold_a - gold_b) / tau)."""
    check_positive("tau", tau)
    return 1.0 / (1.0 + math.exp(-(gold_a - gold_b) / tau))


def check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}={value!r}: must be a finite number > 0")


@dataclass(frozen=True)
class Pair:
    """One preference pair: a prompt (token ids), the chosen and the rejected response (token ids), their golds."""

    task: str
    arg: str
    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]
    gold_chosen: float
    gold_rejected: float
    p_label: float  # probability the rater prefers the gold-better response: max(p, 1 - p)

    def __post_init__(self):
        if tuple(self.chosen) == tuple(self.rejected):
            raise ValueError("a preference pair needs two different responses; got the same response twice "
                             "(drop such pairs: they carry no preference)")

    @property
    def gold_gap(self) -> float:
        return abs(self.gold_chosen - self.gold_rejected)

    @property
    def label_agrees_with_gold(self) -> bool:
        """Whether the drawn label picked the gold-better response (ties count as agreeing)."""
        return self.gold_chosen >= self.gold_rejected


def label_pairs(candidates: list[dict], tau: float, seed: int) -> list[Pair]:
    """Bradley–Terry labels for candidate pairs ``{task, arg, prompt, a, b, gold_a, gold_b}`` (a != b)."""
    check_positive("tau", tau)
    rng = random.Random(seed)
    pairs = []
    for c in candidates:
        p = bt_probability(c["gold_a"], c["gold_b"], tau)
        a_wins = rng.random() < p
        chosen, rejected = (c["a"], c["b"]) if a_wins else (c["b"], c["a"])
        g_c, g_r = (c["gold_a"], c["gold_b"]) if a_wins else (c["gold_b"], c["gold_a"])
        pairs.append(Pair(task=c["task"], arg=c["arg"], prompt=tuple(c["prompt"]), chosen=tuple(chosen),
                          rejected=tuple(rejected), gold_chosen=g_c, gold_rejected=g_r, p_label=max(p, 1 - p)))
    return pairs


def accuracy_ceiling(pairs: list[Pair]) -> float:
    """Expected accuracy of the gold-aware predictor on Bradley–Terry labels: mean of max(p, 1 - p)."""
    if not pairs:
        raise ValueError("no pairs")
    return sum(p.p_label for p in pairs) / len(pairs)


# ---- the reward model ----------------------------------------------------------------------------------------


class RewardModel(nn.Module):
    """A GPT trunk without its LM head plus a scalar head: one reward per sequence, read at its last token."""

    role = "reward_model"

    def __init__(self, gpt: GPT):
        super().__init__()
        if not isinstance(gpt, GPT):
            raise ValueError(f"RewardModel wraps a GPT, got {type(gpt).__name__}")
        gpt.lm_head = nn.Identity()  # the trunk returns its final hidden states (B, T, d_model) as "logits"
        self.trunk = gpt
        self.config = gpt.config
        self.head = nn.Linear(gpt.config.d_model, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Rewards (B,) of right-padded sequences ids (B, T), read at position lengths - 1."""
        hidden = self.trunk(ids)[0]  # (B, T, d_model)
        last = hidden[torch.arange(ids.shape[0], device=ids.device), lengths - 1]  # (B, d_model)
        return self.head(last).squeeze(-1)  # (B,)


def reward_model_from_policy(policy: GPT) -> RewardModel:
    """A reward model whose trunk starts as a copy of ``policy`` (the SFT model), with a zero scalar head."""
    gpt = GPT(policy.config).to(policy.tok_emb.weight.device)
    gpt.load_state_dict_strict({k: v for k, v in policy.state_dict().items()})
    return RewardModel(gpt)


def reward_model_state_is(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict is a reward model's (it has the scalar head)."""
    return "head.weight" in state and any(k.startswith("trunk.") for k in state)


def pack_sequences(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T) and lengths (B,)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return ids, torch.tensor([len(s) for s in seqs], dtype=torch.long)


def pair_batch(pairs: list[Pair], pad_id: int) -> dict[str, torch.Tensor]:
    """``{"ids": (2B, T), "lengths": (2B,)}``: the B chosen sequences, then the B rejected ones... kept as
    (B, 2, T) so that ``fit`` can split micro-batches along the pairs."""
    seqs = [list(p.prompt) + list(p.chosen) for p in pairs] + [list(p.prompt) + list(p.rejected) for p in pairs]
    ids, lengths = pack_sequences(seqs, pad_id)
    B = len(pairs)
    return {"ids": torch.stack([ids[:B], ids[B:]], dim=1), "lengths": torch.stack([lengths[:B], lengths[B:]], 1)}


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected)."""
    return -F.logsigmoid(chosen - rejected).mean()


def rm_loss(model: RewardModel, batch: dict[str, torch.Tensor]):
    ids, lengths = batch["ids"], batch["lengths"]  # (B, 2, T), (B, 2)
    B, _, T = ids.shape
    rewards = model(ids.reshape(2 * B, T), lengths.reshape(2 * B)).view(B, 2)
    loss = bradley_terry_loss(rewards[:, 0], rewards[:, 1])
    return loss, {"accuracy": float((rewards[:, 0] > rewards[:, 1]).float().mean())}


@dataclass
class RewardConfig(DictConfig):
    """Training of the reward model: steps, pairs per batch, learning rate."""

    steps: int = 150
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 15
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self):
        owner = type(self).__name__
        _check_int(owner, "steps", self.steps, minimum=1)
        _check_int(owner, "batch_size", self.batch_size, minimum=1)
        _check_int(owner, "warmup_steps", self.warmup_steps, minimum=0)
        _check_number(owner, "lr", self.lr, low=0.0, low_open=True)

    def optim(self) -> OptimConfig:
        return OptimConfig(max_steps=self.steps, lr=self.lr, warmup_steps=self.warmup_steps,
                           weight_decay=self.weight_decay)


def pair_stream(pairs: list[Pair], batch_size: int, pad_id: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of pairs, reshuffled every epoch with seed + epoch."""
    if len(pairs) < batch_size:
        raise ValueError(f"{len(pairs)} pairs cannot fill a batch of {batch_size}")
    epoch = 0
    while True:
        order = list(range(len(pairs)))
        random.Random(seed + epoch).shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield pair_batch([pairs[i] for i in order[start:start + batch_size]], pad_id)
        epoch += 1


def train_reward_model(model: RewardModel, pairs: list[Pair], pad_id: int, config: RewardConfig):
    """Train in place with the Bradley–Terry loss through the shared loop; returns ``fit``'s result."""
    return fit(model, pair_stream(pairs, config.batch_size, pad_id, config.seed), rm_loss, config.optim(),
               desc="reward model")


@torch.no_grad()
def score(model: RewardModel, prompts: list[list[int]], responses: list[list[int]], pad_id: int,
          batch_size: int = 128) -> torch.Tensor:
    """Reward of each prompt + response, (N,) float32."""
    was_training = model.training
    model.eval()
    out = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        seqs = [list(p) + list(r) for p, r in zip(prompts[start:start + batch_size],
                                                  responses[start:start + batch_size], strict=True)]
        ids, lengths = pack_sequences(seqs, pad_id)
        out.append(model(ids.to(device), lengths.to(device)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def pair_accuracy(model: RewardModel, pairs: list[Pair], pad_id: int) -> dict[str, float]:
    """On pairs: agreement with the drawn labels, with the gold-better response, and the mean reward margin."""
    prompts = [list(p.prompt) for p in pairs]
    r_c = score(model, prompts, [list(p.chosen) for p in pairs], pad_id)
    r_r = score(model, prompts, [list(p.rejected) for p in pairs], pad_id)
    agree = (r_c > r_r).float()
    gold_better_is_chosen = torch.tensor([p.gold_chosen > p.gold_rejected for p in pairs])
    gold_differs = torch.tensor([p.gold_chosen != p.gold_rejected for p in pairs])
    picks_gold_better = ((r_c > r_r) == gold_better_is_chosen)[gold_differs].float()
    return {"label_accuracy": float(agree.mean()), "gold_accuracy": float(picks_gold_better.mean()),
            "margin": float((r_c - r_r).mean())}
