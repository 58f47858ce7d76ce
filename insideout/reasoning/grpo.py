"""Group Relative Policy Optimization (Shao et al., 2024) with the task's verifiable reward.

For each training problem the policy samples a group of ``G`` solutions; each gets the reward 1 (right answer in
a well-formed trace) or 0. The advantage of solution i is its reward relative to its group,

    A_i = (r_i - mean(r)) / (std(r) + eps)        (``scale="group"``; ``"none"`` drops the division),

the same for every token of the solution. The loss is PPO's clipped surrogate per token with a KL penalty to a
frozen reference policy, averaged over each solution's tokens and then over the solutions:

    L = -1/G sum_i 1/|o_i| sum_t [ min(rho_t A_i, clip(rho_t, 1-e, 1+e) A_i) - beta KL_t ],
    rho_t = pi(o_t | ...) / pi_old(o_t | ...),   KL_t = pi_ref/pi - log(pi_ref/pi) - 1   (the k3 estimator).

A group whose rewards are all equal has A = 0 for every member (no policy gradient): ``history["zero_spread"]``
records how many such groups each step had. The loop steps the optimiser itself (rollouts, advantages, several
updates per batch) with the course's ``make_optimizer`` and ``lr_at``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from insideout.gpt.model import GPT
from insideout.reasoning.data import prompt_ids
from insideout.reasoning.logprobs import completion_logprobs, pack
from insideout.reasoning.sampling import sample
from insideout.reasoning.task import Problem, ProblemStream, check_trace
from insideout.reasoning.tokenizer import CharTokenizer
from insideout.training import OptimConfig, lr_at, make_optimizer
from insideout.utils import DictConfig

TOK = CharTokenizer()
SCALES = ("group", "none")


def group_advantages(rewards: torch.Tensor, scale: str = "group", eps: float = 1e-4) -> torch.Tensor:
    """Advantages (N, G) from rewards (N, G): minus the group mean, divided by the group's standard deviation
    (Bessel-corrected, as TRL) plus ``eps`` when ``scale="group"``. Equal rewards give zeros."""
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}: choose one of {', '.join(SCALES)}")
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape (problems, group), got {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError(f"group size G={rewards.shape[1]}: GRPO needs G >= 2 samples per problem (the advantage "
                         "of a single sample relative to its own group is always 0)")
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "none":
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + eps)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
              clip_eps: float = 0.2, beta: float = 0.0, ref_logp: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """The clipped GRPO loss over (B, T) per-token log-probabilities, advantages (B,), mask (B, T)."""
    if beta and ref_logp is None:
        raise ValueError("beta > 0 needs the reference policy's log-probabilities (ref_logp)")
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    surrogate = torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    per_token = -surrogate
    stats = {}
    if ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1
        if beta:
            per_token = per_token + beta * kl
        stats["kl"] = float((kl.detach() * mask).sum() / mask.sum().clamp(min=1))
    lengths = mask.sum(dim=1).clamp(min=1)
    loss = ((per_token * mask).sum(dim=1) / lengths).mean()
    clipped = ((ratio < 1 - clip_eps) & (adv < 0)) | ((ratio > 1 + clip_eps) & (adv > 0))
    stats["clip_fraction"] = float((clipped.detach().to(logp.dtype) * mask).sum() / mask.sum().clamp(min=1))
    return loss, stats


@dataclass
class GRPOConfig(DictConfig):
    """One GRPO run."""

    steps: int = 40
    problems_per_step: int = 16
    group_size: int = 8
    updates_per_batch: int = 2  # optimiser steps on each batch of rollouts (the ratio differs from 1 after the first)
    lr: float = 3e-4
    warmup_steps: int = 4
    clip_eps: float = 0.2
    beta: float = 0.0  # KL penalty to the reference (starting) policy
    scale: str = "group"  # group: divide by the group's std; none: only subtract the mean
    temperature: float = 1.0
    levels: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    eval_every: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        self.levels = tuple(self.levels)
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 2:
            raise ValueError(f"GRPOConfig.group_size={self.group_size!r}: GRPO needs groups of at least 2 samples")
        for name in ("steps", "problems_per_step", "updates_per_batch", "eval_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"GRPOConfig.{name}={v!r}: must be an integer >= 1")
        if self.scale not in SCALES:
            raise ValueError(f"GRPOConfig.scale={self.scale!r}: choose one of {', '.join(SCALES)}")
        if not (0 < self.clip_eps < 1) or self.beta < 0 or self.temperature <= 0:
            raise ValueError("GRPOConfig: need 0 < clip_eps < 1, beta >= 0 and temperature > 0")
        self.optim()

    def optim(self) -> OptimConfig:
        return OptimConfig(max_steps=self.steps * self.updates_per_batch, lr=self.lr,
                           warmup_steps=self.warmup_steps, min_lr_ratio=0.1, weight_decay=0.0)


def rewards_of(problems: Sequence[Problem], completions: Sequence[list[int]]) -> list[float]:
    """The verifiable reward of each completion (0 for one that never produced <eos>)."""
    out = []
    for p, c in zip(problems, completions, strict=True):
        if not c or c[-1] != TOK.eos_id:
            out.append(0.0)
            continue
        out.append(check_trace(p, TOK.decode(c)).reward)
    return out


def train_grpo(policy: GPT, config: GRPOConfig, *, exclude: set[str],
               evaluate: Callable[[GPT], float | dict[str, float]] | None = None,
               log: Callable[[str], None] | None = None,
               reward_fn: Callable[[Sequence[Problem], Sequence[list[int]]], list[float]] | None = None
               ) -> tuple[GPT, dict[str, list]]:
    """Run GRPO from ``policy`` (copied; the copy is the frozen reference); return the new policy and its history.

    ``reward_fn(problems, completions)`` defaults to the verifiable reward ``rewards_of``. ``evaluate(model)`` is
    called before the first step and every ``eval_every`` steps; it returns one accuracy (kept as
    ``history["eval_accuracy"]``) or a dict of them (``history["eval_<name>"]``).
    """
    reward_fn = reward_fn or rewards_of
    device = policy.tok_emb.weight.device
    torch.manual_seed(config.seed)
    ref = GPT(policy.config).to(device)
    ref.load_state_dict(policy.state_dict())
    ref.eval().requires_grad_(False)
    model = GPT(policy.config).to(device)
    model.load_state_dict(policy.state_dict())
    optim = config.optim()
    optimizer = make_optimizer(model, optim, device)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    stream = ProblemStream(config.levels, f"grpo-{config.seed}", exclude)
    gen = torch.Generator().manual_seed(config.seed)
    history: dict[str, list] = {k: [] for k in ("step", "reward", "zero_spread", "length", "kl", "clip_fraction",
                                                "loss", "eval_step", "seconds")}

    def record_eval(step: int) -> None:
        history["eval_step"].append(step)
        result = evaluate(model)
        for k, v in (result.items() if isinstance(result, dict) else (("accuracy", result),)):
            history.setdefault(f"eval_{k}", []).append(float(v))

    G = config.group_size
    update = 0
    start = time.perf_counter()
    if evaluate is not None:
        record_eval(0)
    for step in range(config.steps):
        problems = [next(stream) for _ in range(config.problems_per_step)]
        prompts = [prompt_ids(TOK, p) for p in problems for _ in range(G)]
        model.eval()
        max_new = model.config.context_length - max(len(p) for p in prompts)
        out = sample(model, prompts, max_new, temperature=config.temperature, stop_tokens=(TOK.eos_id,),
                     generator=gen)
        flat_problems = [p for p in problems for _ in range(G)]
        rewards = torch.tensor(reward_fn(flat_problems, out.tokens)).view(-1, G)  # (N, G)
        adv = group_advantages(rewards, config.scale).view(-1)  # (N*G,)
        ids, where, mask = pack(prompts, out.tokens, TOK.pad_id)
        with torch.no_grad():
            old_logp, _ = completion_logprobs(model, ids, where, mask)
            ref_logp, _ = completion_logprobs(ref, ids, where, mask)  # also for beta = 0: the KL is recorded
        stats_sum: dict[str, float] = {}
        model.train()
        for _ in range(config.updates_per_batch):
            lr = lr_at(update, optim)
            for g in optimizer.param_groups:
                g["lr"] = lr
            logp, _ = completion_logprobs(model, ids, where, mask)
            loss, stats = grpo_loss(logp, old_logp, adv.to(device), mask.to(device), clip_eps=config.clip_eps,
                                    beta=config.beta, ref_logp=ref_logp)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, optim.grad_clip)
            optimizer.step()
            update += 1
            for k, v in {"loss": float(loss.detach()), **stats}.items():
                stats_sum[k] = stats_sum.get(k, 0.0) + v / config.updates_per_batch
        model.eval()
        history["step"].append(step + 1)
        history["reward"].append(float(rewards.mean()))
        history["zero_spread"].append(float((rewards.std(dim=1) == 0).float().mean()))
        history["length"].append(float(mask.sum(dim=1).float().mean()))
        for k in ("kl", "clip_fraction", "loss"):
            history[k].append(stats_sum.get(k, 0.0))
        history["seconds"].append(time.perf_counter() - start)
        if evaluate is not None and ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
            record_eval(step + 1)
            if log is not None:
                evals = {k.removeprefix("eval_"): v[-1] for k, v in history.items()
                         if k.startswith("eval_") and k != "eval_step" and v}
                log(f"step {step + 1:3d} | reward {history['reward'][-1]:.3f} | held-out "
                    + " ".join(f"{k} {v:.3f}" for k, v in evals.items()) + f" | KL {history['kl'][-1]:.4f}")
    return model.eval(), history
