"""PPO end to end on a tiny GPT and a reward a program computes: the reward rises, the KL penalty holds the policy
back (a larger beta, a smaller KL), the run is deterministic, and bad input is refused."""

from __future__ import annotations

import pytest
import torch

from insideout.finetune.ppo import PolicyWithValue, PPOConfig, ppo
from insideout.gpt.model import GPT, GPTConfig

VOCAB, END, TARGET = 24, 23, 5


def _gpt() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=VOCAB, context_length=16, d_model=16, n_layer=1, n_head=2)).eval()


def _target_share(prompts, responses) -> torch.Tensor:
    """The share of response tokens equal to TARGET: a reward the random model rarely earns."""
    return torch.tensor([sum(t == TARGET for t in r) / len(r) for r in responses], dtype=torch.float32)


PROMPTS = [{"ids": [1 + i % 4, 6 + i % 3, 9]} for i in range(12)]


def _run(beta: float, iterations: int = 12, seed: int = 0):
    reference = _gpt()
    policy = PolicyWithValue(_gpt())
    config = PPOConfig(beta=beta, iterations=iterations, rollouts=32, epochs=2, minibatch=16, lr=3e-3,
                       warmup_steps=0, max_new_tokens=6, temperature=1.0, seed=seed)
    history = ppo(policy, reference, _target_share, PROMPTS, config, end_id=END, pad_id=0,
                  gold_fn=lambda batch, responses: _target_share(None, responses).tolist())
    return policy, history


@pytest.fixture(scope="module")
def runs():
    return {beta: _run(beta) for beta in (0.02, 1.0)}


def test_ppo_raises_the_reward_it_optimises(runs):
    _, h = runs[0.02]
    first, last = sum(h["proxy"][:3]) / 3, sum(h["proxy"][-3:]) / 3
    assert first < 0.15, f"the random policy should rarely draw the target token: {first:.3f}"
    assert last > first + 0.1, f"PPO should raise the reward: first iterations {first:.3f}, last {last:.3f}"
    assert h["gold"] == pytest.approx(h["proxy"], abs=1e-6), "gold_fn is recorded on the same rollouts"


def test_a_larger_beta_keeps_the_policy_closer_to_the_reference(runs):
    kl_small = runs[0.02][1]["kl"][-1]
    kl_large = runs[1.0][1]["kl"][-1]
    assert kl_small > 0.1, f"the policy should move away from the reference: KL {kl_small:.3f}"
    assert kl_large < kl_small, f"beta 1.0 gave KL {kl_large:.3f}, beta 0.02 gave {kl_small:.3f}"


def test_ppo_history_and_the_weights_change(runs):
    policy, h = runs[0.02]
    assert set(h) >= {"proxy", "gold", "kl", "length", "finished", "policy_loss", "value_loss", "clip_fraction",
                      "entropy", "seconds", "cpu_seconds", "sample_seconds", "tokens"}
    assert all(len(v) == 12 for v in h.values())
    assert all(0 <= c <= 1 for c in h["clip_fraction"])
    assert all(1 <= n <= 32 * 6 for n in h["tokens"])
    ref = _gpt()
    moved = max((a - b).abs().max().item() for a, b in zip(policy.gpt.parameters(), ref.parameters(), strict=True))
    assert moved > 1e-3
    assert policy.value_head.weight.abs().max().item() > 0, "the value head trains too"


def test_ppo_is_deterministic():
    _, h1 = _run(0.1, iterations=2, seed=3)
    _, h2 = _run(0.1, iterations=2, seed=3)
    for key in ("proxy", "kl", "length", "policy_loss", "value_loss"):
        assert h1[key] == h2[key], key


def test_ppo_refuses_a_bare_gpt_as_the_policy():
    with pytest.raises(ValueError, match="PolicyWithValue"):
        ppo(_gpt(), _gpt(), _target_share, PROMPTS, PPOConfig(iterations=1, rollouts=4, minibatch=4), end_id=END,
            pad_id=0)
