"""The induction-head experiment: a 2-layer attention-only GPT trained on repeated random tokens.

Each training sequence is ``s + s`` for a random sequence ``s`` of distinct tokens whose length changes from
batch to batch. The first copy is unpredictable; the second is predictable only by looking up where the current
token occurred before and copying the token that followed it: an induction head, which needs a previous-token
head in an earlier layer to compose with (Elhage et al., 2021; Olsson et al., 2022). Varying the length stops
the model from cheating with positions alone ("copy from i - n + 1"). During training we log the loss on both
halves and every head's induction score on a fixed evaluation batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from insideout.gpt.interp import (
    induction_score,
    induction_targets,
    previous_token_score,
    repeated_random_tokens,
    run_with_cache,
)
from insideout.gpt.model import GPT, GPTConfig


@dataclass
class InductionConfig:
    """Data, model and optimiser settings of the induction-head run. Validated on construction."""

    vocab_size: int = 64
    min_half: int = 8  # each batch draws its half length uniformly from [min_half, max_half]
    max_half: int = 24
    eval_half: int = 16  # half length of the fixed evaluation batch
    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    batch_size: int = 32
    steps: int = 1000
    lr: float = 1e-3
    eval_every: int = 20
    eval_batch: int = 64
    position: str = "learned"
    tie_weights: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "min_half", "max_half", "eval_half", "d_model", "n_layer", "n_head",
                     "batch_size", "steps", "eval_every", "eval_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"InductionConfig.{name}={value!r}: must be a positive integer")
        if not self.min_half <= self.max_half <= self.vocab_size:
            raise ValueError(
                f"InductionConfig needs min_half <= max_half <= vocab_size (distinct tokens per half), got "
                f"{self.min_half}, {self.max_half}, {self.vocab_size}"
            )
        if not 2 <= self.eval_half <= self.vocab_size:
            raise ValueError(f"InductionConfig.eval_half={self.eval_half}: must lie in [2, vocab_size]")
        if self.lr <= 0:
            raise ValueError(f"InductionConfig.lr={self.lr!r}: must be positive")

    def gpt_config(self) -> GPTConfig:
        """The attention-only GPT: no MLP, learned positions, room for the longest sequence."""
        context = 2 * max(self.max_half, self.eval_half)
        return GPTConfig(vocab_size=self.vocab_size, context_length=context, d_model=self.d_model,
                         n_layer=self.n_layer, n_head=self.n_head, mlp=False, position=self.position,
                         tie_weights=self.tie_weights)


@dataclass
class InductionHistory:
    """What was measured at each evaluation step (step 0 is the untrained model)."""

    steps: list[int] = field(default_factory=list)
    loss_first: list[float] = field(default_factory=list)  # mean loss predicting the first copy, nats/token
    loss_repeat: list[float] = field(default_factory=list)  # mean loss predicting the second copy, nats/token
    induction: list[torch.Tensor] = field(default_factory=list)  # each (n_layer, n_head)
    previous_token: list[torch.Tensor] = field(default_factory=list)  # each (n_layer, n_head)

    def induction_scores(self) -> torch.Tensor:
        """(n_evals, n_layer, n_head)."""
        return torch.stack(self.induction)

    def previous_token_scores(self) -> torch.Tensor:
        """(n_evals, n_layer, n_head)."""
        return torch.stack(self.previous_token)


def split_losses(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[float, float]:
    """Mean next-token loss where the current token is new (first copy) and where it was seen (second copy)."""
    losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")  # (B, T-1)
    seen = induction_targets(tokens)[:, :-1] >= 0  # (B, T-1): the current token occurred earlier
    first = torch.zeros_like(seen)
    first[:, :-1] = ~seen[:, 1:]  # predicting a token of the first copy (the next token is new)
    return losses[first].mean().item(), losses[seen].mean().item()


def evaluate(model: GPT, tokens: torch.Tensor) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Losses on both copies, and every head's induction and previous-token scores: (L, H) each."""
    n = model.config.n_layer
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(n)]
    was_training = model.training
    model.eval()
    logits, cache = run_with_cache(model, tokens, names)
    model.train(was_training)
    first, repeat = split_losses(logits, tokens)
    induction = torch.stack([induction_score(cache[name], tokens) for name in names])  # (L, H)
    previous = torch.stack([previous_token_score(cache[name]) for name in names])  # (L, H)
    return first, repeat, induction, previous


def train_induction_model(
    config: InductionConfig, progress: bool = True, threads: int | None = 1,
) -> tuple[GPT, InductionHistory]:
    """Train the attention-only model with AdamW, evaluating every ``eval_every`` steps; deterministic given seed.

    The model's matrices are tiny, so by default it trains on one CPU thread (restored afterwards): a second thread
    only adds synchronisation, and on a busy machine it can make each step many times slower.
    """
    if threads is None:
        return _train(config, progress)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _train(config, progress)
    finally:
        torch.set_num_threads(before)


def _train(config: InductionConfig, progress: bool) -> tuple[GPT, InductionHistory]:
    torch.manual_seed(config.seed)
    model = GPT(config.gpt_config())
    data = torch.Generator().manual_seed(config.seed + 1)
    eval_tokens = repeated_random_tokens(config.eval_batch, config.eval_half, config.vocab_size,
                                         torch.Generator().manual_seed(config.seed + 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
    history = InductionHistory()

    def log(step: int) -> None:
        first, repeat, induction, previous = evaluate(model, eval_tokens)
        history.steps.append(step)
        history.loss_first.append(first)
        history.loss_repeat.append(repeat)
        history.induction.append(induction)
        history.previous_token.append(previous)

    log(0)
    model.train()
    bar = tqdm(range(1, config.steps + 1), desc="induction", disable=not progress, mininterval=1.0)
    for step in bar:
        half = int(torch.randint(config.min_half, config.max_half + 1, (1,), generator=data))
        tokens = repeated_random_tokens(config.batch_size, half, config.vocab_size, data)  # (B, 2 half)
        _, loss = model(tokens[:, :-1], tokens[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % config.eval_every == 0 or step == config.steps:
            log(step)
            bar.set_postfix(repeat_loss=f"{history.loss_repeat[-1]:.3f}")
    model.eval()
    return model, history
