"""RLHF with PPO: a policy with a value head, a frozen reference, per-token KL penalty, GAE and the clipped loss.

One iteration (Ouyang et al., 2022; Schulman et al., 2017):

1. **Rollouts.** Sample a response for each of a batch of training prompts from the current policy (batched, with
   the KV-cache). Score it once: the reward model's score :math:`R` of the whole response, the old policy's and the
   reference's log-probability of each response token, and the value head's estimate :math:`V_t`.
2. **Rewards per token.** :math:`r_t = -\\beta\\,(\\log\\pi_\\text{old}(y_t) - \\log\\pi_\\text{ref}(y_t))`, plus
   :math:`R` at the last token: the KL penalty keeps the policy near the SFT model it started from.
3. **Advantages** with GAE (Schulman et al., 2016): :math:`\\delta_t = r_t + \\gamma V_{t+1} - V_t`,
   :math:`A_t = \\delta_t + \\gamma\\lambda A_{t+1}`, and returns :math:`A_t + V_t` as the value targets.
4. **Several epochs** of minibatch steps on the clipped surrogate
   :math:`-\\min(\\rho_t A_t, \\operatorname{clip}(\\rho_t, 1 \\pm \\epsilon) A_t)` with
   :math:`\\rho_t = \\pi_\\theta(y_t)/\\pi_\\text{old}(y_t)`, plus the clipped value loss.

The optimiser is the course's ``make_optimizer`` with the learning rate of ``lr_at``; weights really change.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from insideout.finetune.generation import pack_responses, sample
from insideout.finetune.reward import check_positive
from insideout.gpt.model import GPT
from insideout.training import OptimConfig, _check_int, _check_number, lr_at, make_optimizer
from insideout.utils import DictConfig

# ---- KL estimators ------------------------------------------------------------------------------------------


def kl_estimators(logp: torch.Tensor, logq: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample estimators of KL(p || q) from x ~ p, with log r = log q(x) - log p(x) (Schulman, 2020):

    k1 = -log r (unbiased, high variance, can be negative), k2 = (log r)^2 / 2 (biased, low variance),
    k3 = (r - 1) - log r (unbiased, never negative).
    """
    log_r = logq - logp
    return {"k1": -log_r, "k2": 0.5 * log_r**2, "k3": torch.expm1(log_r) - log_r}


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || policy) = log n - (n - 1) / n for a continuous reward (no ties) (Stiennon et al., 2020)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: must be an integer >= 1")
    return math.log(n) - (n - 1) / n


# ---- GAE ------------------------------------------------------------------------------------------------------


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) of right-padded rows: rewards, values, mask (B, T); the episode ends at the mask's end.

    The value after the last real token is 0 (the response is over). Padding gets advantage and return 0.
    """
    if not (rewards.shape == values.shape == mask.shape):
        raise ValueError(f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
                         f"{tuple(mask.shape)} must have one shape")
    m = mask.to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = delta + gamma * lam * running
        running = running * m[:, t]  # padding (after the end) contributes nothing and resets nothing before it
        advantages[:, t] = running
        next_value = values[:, t] * m[:, t]
    return advantages, (advantages + values) * m


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Advantages normalised to mean 0, std 1 over the real tokens."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) / torch.sqrt(var + eps) * mask


# ---- the policy with a value head ---------------------------------------------------------------------------


class PolicyWithValue(nn.Module):
    """A GPT policy and a scalar value head that reads the final hidden state of every position."""

    role = "policy"

    def __init__(self, gpt: GPT):
        super().__init__()
        if not isinstance(gpt, GPT):
            raise ValueError(f"PolicyWithValue wraps a GPT policy, got {type(gpt).__name__}")
        if isinstance(getattr(gpt, "lm_head", None), nn.Identity):
            raise ValueError("this GPT has no LM head (it is a reward model's trunk): a policy must produce tokens")
        self.gpt = gpt
        self.value_head = nn.Linear(gpt.config.d_model, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self._hidden = None
        gpt.hook_final.register_forward_hook(self._keep_hidden)

    def _keep_hidden(self, module, inputs, output):
        self._hidden = output

    def forward(self, ids: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(token log-probs of ids[:, 1:] under softmax(logits / temperature) (B, T-1), values (B, T-1))."""
        logits = self.gpt(ids[:, :-1])[0] / temperature  # (B, T-1, V)
        values = self.value_head(self._hidden).squeeze(-1)  # (B, T-1)
        logp = -nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        return logp, values


# ---- PPO ------------------------------------------------------------------------------------------------------


@dataclass
class PPOConfig(DictConfig):
    beta: float = 0.05  # KL penalty per nat
    iterations: int = 30
    rollouts: int = 64  # responses per iteration
    epochs: int = 2  # passes over each iteration's rollouts
    minibatch: int = 32
    lr: float = 5e-5
    warmup_steps: int = 4  # optimizer steps of linear warmup
    clip: float = 0.2
    value_clip: float = 0.2
    value_coef: float = 0.5
    gamma: float = 1.0
    lam: float = 0.95
    max_new_tokens: int = 32
    temperature: float = 0.7  # the policy is softmax(logits / temperature): sampled, scored and penalised so
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        owner = type(self).__name__
        check_positive(f"{owner}.beta", self.beta)
        for name in ("iterations", "rollouts", "epochs", "minibatch", "max_new_tokens"):
            _check_int(owner, name, getattr(self, name), minimum=1)
        _check_int(owner, "warmup_steps", self.warmup_steps, minimum=0)
        if self.rollouts % self.minibatch:
            raise ValueError(f"{owner}.rollouts={self.rollouts} must be a multiple of minibatch={self.minibatch}")
        _check_number(owner, "lr", self.lr, low=0.0, low_open=True)
        for name in ("clip", "value_clip", "value_coef", "temperature"):
            _check_number(owner, name, getattr(self, name), low=0.0, low_open=True)
        for name in ("gamma", "lam"):
            _check_number(owner, name, getattr(self, name), low=0.0, high=1.0)

    @property
    def optimizer_steps(self) -> int:
        return self.iterations * self.epochs * (self.rollouts // self.minibatch)

    def optim(self) -> OptimConfig:
        return OptimConfig(max_steps=self.optimizer_steps, lr=self.lr, warmup_steps=self.warmup_steps,
                           weight_decay=0.0, min_lr_ratio=1.0, grad_clip=self.grad_clip)


def ppo(policy: PolicyWithValue, reference: GPT, reward_fn, prompts: list[dict], config: PPOConfig, *,
        end_id: int, pad_id: int, gold_fn=None) -> dict[str, list]:
    """Run PPO in place on ``policy``; returns the per-iteration history.

    ``prompts``: dicts with ``ids`` (prompt token ids) and whatever ``gold_fn`` needs;
    ``reward_fn(prompt_ids, response_ids) -> (N,) tensor`` is the proxy reward (the reward model);
    ``gold_fn(prompts, responses) -> list[float]`` (optional) is only recorded, never optimised.
    """
    if not isinstance(policy, PolicyWithValue):
        raise ValueError(f"ppo trains a PolicyWithValue, got {type(policy).__name__}")
    optim = config.optim()
    optimizer = make_optimizer(policy, optim)
    reference.eval()
    generator = torch.Generator().manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = next(policy.parameters()).device
    history: dict[str, list] = {k: [] for k in ("iteration", "proxy", "gold", "kl", "length", "finished",
                                                "policy_loss", "value_loss", "clip_fraction", "entropy",
                                                "seconds", "cpu_seconds", "sample_seconds", "tokens")}
    step = 0
    for it in range(config.iterations):
        t0, c0 = time.perf_counter(), time.process_time()
        batch = [prompts[rng.randrange(len(prompts))] for _ in range(config.rollouts)]
        prompt_ids = [list(p["ids"]) for p in batch]
        policy.eval()
        samples = sample(policy.gpt, prompt_ids, config.max_new_tokens, temperature=config.temperature,
                         stop_tokens=(end_id,), generator=generator)
        responses = samples.tokens
        sample_seconds = time.perf_counter() - t0
        ids, mask = pack_responses(prompt_ids, responses, pad_id)  # (B, T), (B, T-1)
        ids, maskf = ids.to(device), mask.to(device).float()
        with torch.no_grad():
            old_logp, old_values = policy(ids, config.temperature)
            ref_logits = reference(ids[:, :-1])[0] / config.temperature
            ref_logp = -nn.functional.cross_entropy(ref_logits.transpose(1, 2), ids[:, 1:], reduction="none")
            score = reward_fn(prompt_ids, responses).to(device)  # (B,)
            kl_tok = (old_logp - ref_logp) * maskf  # k1 per token, (B, T-1)
            entropy = -masked_mean(old_logp, maskf)  # per token, estimated from the sampled tokens
            rewards = -config.beta * kl_tok
            last = mask.long().cumsum(-1).argmax(-1).to(device)  # index of each row's last response position
            rewards[torch.arange(len(batch), device=device), last] += score
            advantages, returns = gae(rewards, old_values * maskf, maskf, config.gamma, config.lam)
            advantages = whiten(advantages, maskf)
        policy.train()
        stats = {"policy_loss": 0.0, "value_loss": 0.0, "clip_fraction": 0.0}
        n_steps = 0
        for _ in range(config.epochs):
            order = torch.randperm(len(batch), generator=generator)
            for start in range(0, len(batch), config.minibatch):
                mb = order[start:start + config.minibatch].to(device)
                lr = lr_at(step, optim)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                logp, values = policy(ids[mb], config.temperature)
                m = maskf[mb]
                ratio = torch.exp(logp - old_logp[mb])
                adv = advantages[mb]
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - config.clip, 1 + config.clip))
                policy_loss = masked_mean(pg, m)
                v_old = old_values[mb]
                v_clipped = v_old + (values - v_old).clamp(-config.value_clip, config.value_clip)
                v_loss = 0.5 * masked_mean(torch.max((values - returns[mb]) ** 2, (v_clipped - returns[mb]) ** 2), m)
                loss = policy_loss + config.value_coef * v_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
                optimizer.step()
                step += 1
                n_steps += 1
                stats["policy_loss"] += policy_loss.item()
                stats["value_loss"] += v_loss.item()
                stats["clip_fraction"] += masked_mean(((ratio.detach() - 1).abs() > config.clip).float(), m).item()
        policy.eval()
        history["iteration"].append(it + 1)
        history["proxy"].append(float(score.mean()))
        history["kl"].append(float(kl_tok.sum(-1).mean()))
        history["length"].append(float(mask.sum(-1).float().mean()))
        history["finished"].append(sum(samples.finished) / len(batch))
        history["gold"].append(float(sum(gold_fn(batch, responses)) / len(batch)) if gold_fn else float("nan"))
        history["entropy"].append(float(entropy))
        for key, value in stats.items():
            history[key].append(value / n_steps)
        history["seconds"].append(time.perf_counter() - t0)
        history["cpu_seconds"].append(time.process_time() - c0)
        history["sample_seconds"].append(sample_seconds)
        history["tokens"].append(samples.n_generated)
    return history
