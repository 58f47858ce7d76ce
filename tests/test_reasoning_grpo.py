"""GRPO: group advantages and the clipped loss against a float64 reference from the paper and TRL's own code."""

from __future__ import annotations

import math
import types
from collections import defaultdict

import pytest
import torch

from insideout.gpt.model import GPT, GPTConfig
from insideout.reasoning.grpo import GRPOConfig, group_advantages, grpo_loss, train_grpo
from insideout.reasoning.tokenizer import CharTokenizer


def reference_advantages(rewards: list[list[float]], scale: bool = True, eps: float = 1e-4) -> list[list[float]]:
    """A_i = (r_i - mean) / (std + eps), std with Bessel's correction, written with plain floats."""
    out = []
    for group in rewards:
        m = sum(group) / len(group)
        s = math.sqrt(sum((r - m) ** 2 for r in group) / (len(group) - 1))
        out.append([(r - m) / (s + eps) if scale else r - m for r in group])
    return out


def reference_loss(logp, old, ref, adv, mask, eps, beta) -> float:
    """-1/G sum_i 1/|o_i| sum_t [min(rho A, clip(rho) A) - beta (ref/pi - log(ref/pi) - 1)], float64 loops."""
    total = 0.0
    for i in range(len(logp)):
        terms = []
        for t in range(len(logp[i])):
            if not mask[i][t]:
                continue
            rho = math.exp(logp[i][t] - old[i][t])
            surrogate = min(rho * adv[i], min(max(rho, 1 - eps), 1 + eps) * adv[i])
            d = ref[i][t] - logp[i][t]
            terms.append(-(surrogate - beta * (math.exp(d) - d - 1)))
        total += sum(terms) / max(1, len(terms))
    return total / len(logp)


def tensors(seed: int = 0, B: int = 8, T: int = 6):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 3
    old = logp + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)  # ratios well outside [0.8, 1.2]
    ref = logp + 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = torch.rand(B, T, generator=g) > 0.25
    mask[:, 0] = True
    rewards = (torch.rand(B // 4, 4, generator=g) > 0.5).double()
    rewards[0] = 1.0  # one group with all-equal rewards
    return logp, old, ref, mask, rewards


def test_advantages_match_reference_including_equal_rewards():
    _, _, _, _, rewards = tensors()
    for scale in ("group", "none"):
        adv = group_advantages(rewards, scale)
        ref = reference_advantages(rewards.tolist(), scale == "group")
        assert max(abs(a - b) for ra, rb in zip(adv.tolist(), ref, strict=True)
                   for a, b in zip(ra, rb, strict=True)) < 1e-12
    assert group_advantages(torch.ones(3, 5)).abs().max() == 0  # all equal: no gradient signal at all
    assert group_advantages(torch.zeros(2, 4), "none").abs().max() == 0


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_matches_float64_reference(beta):
    logp, old, ref, mask, rewards = tensors(1)
    adv = group_advantages(rewards).view(-1)
    loss, stats = grpo_loss(logp, old, adv, mask, clip_eps=0.2, beta=beta, ref_logp=ref)
    expected = reference_loss(logp.tolist(), old.tolist(), ref.tolist(), adv.tolist(), mask.tolist(), 0.2, beta)
    assert abs(float(loss) - expected) < 1e-12
    assert 0 < stats["clip_fraction"] < 1 and stats["kl"] > 0


def trl_loss(logp, old, ref, mask, adv, beta, eps):
    """TRL 1.16's GRPOTrainer._compute_loss (loss_type 'grpo') run on our tensors through a minimal stand-in."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    class Accelerator:
        sync_gradients = True

        def gather(self, x):
            return x

        gather_for_metrics = gather

        def reduce(self, x, reduction="sum"):
            return x

    B, T = logp.shape
    fake = types.SimpleNamespace(
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token", beta=beta,
        args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None), loss_type="grpo", epsilon_low=eps,
        epsilon_high=eps, use_vllm=False, model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, _entropy_bonus_enabled=False, aux_loss_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)), accelerator=Accelerator())
    fake._get_per_token_logps_and_entropies = lambda *a, **k: (logp, torch.zeros_like(logp), None)
    inputs = {"prompt_ids": torch.zeros(B, 1, dtype=torch.long), "prompt_mask": torch.ones(B, 1, dtype=torch.long),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask.long(),
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref}
    return GRPOTrainer._compute_loss(fake, None, inputs)


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_and_gradient_match_trl(beta):
    pytest.importorskip("trl")
    logp, old, ref, mask, rewards = tensors(2)
    adv = group_advantages(rewards).view(-1)
    ours_in = logp.clone().requires_grad_(True)
    trl_in = logp.clone().requires_grad_(True)
    ours, _ = grpo_loss(ours_in, old, adv, mask, clip_eps=0.2, beta=beta, ref_logp=ref)
    theirs = trl_loss(trl_in, old, ref, mask, adv, beta, 0.2)
    assert abs(float(ours) - float(theirs)) < 1e-12
    ours.backward()
    theirs.backward()
    assert (ours_in.grad - trl_in.grad).abs().max() < 1e-12


def test_equal_rewards_give_zero_policy_gradient():
    logp, old, ref, mask, _ = tensors(3)
    adv = group_advantages(torch.ones(2, 4)).view(-1)
    x = logp.clone().requires_grad_(True)
    loss, _ = grpo_loss(x, old, adv, mask, beta=0.0)
    loss.backward()
    assert float(loss) == 0.0 and x.grad.abs().max() == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.ones(4, 1))
    with pytest.raises(ValueError, match="at least 2"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError):
        group_advantages(torch.ones(4))
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), torch.ones(1, 2, dtype=torch.bool), beta=0.1)


def test_train_grpo_updates_the_weights(restore_torch_state):
    torch.manual_seed(0)
    tok = CharTokenizer()
    policy = GPT(GPTConfig(vocab_size=tok.vocab_size, context_length=48, d_model=16, n_layer=1, n_head=2))
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    config = GRPOConfig(steps=2, problems_per_step=2, group_size=2, levels=(1,), warmup_steps=1, lr=1e-2, beta=0.1)
    # a stand-in reward that differs within groups: 1 for an even number of generated tokens
    model, history = train_grpo(policy, config, exclude=set(),
                                reward_fn=lambda problems, outs: [float(len(o) % 2 == 0) for o in outs])
    assert history["step"] == [1, 2] and len(history["kl"]) == 2
    changed = sum(float((model.state_dict()[k] - v).abs().max()) > 0 for k, v in before.items())
    assert changed > 0  # the policy moved
    assert all(torch.equal(policy.state_dict()[k], v) for k, v in before.items())  # the input is not modified
