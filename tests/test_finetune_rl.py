"""PPO's pieces: GAE against a plain float64 loop, the KL estimators' bias on known distributions, PPO bad input."""

from __future__ import annotations

import math

import pytest
import torch

from insideout.finetune.ppo import PolicyWithValue, PPOConfig, best_of_n_kl, gae, kl_estimators, whiten
from insideout.finetune.reward import RewardModel
from insideout.gpt.model import GPT, GPTConfig


def _gae_reference(rewards, values, length, gamma, lam):
    """GAE of one episode of ``length`` steps, written as the textbook loop in Python floats (float64)."""
    adv = [0.0] * length
    running = 0.0
    for t in reversed(range(length)):
        next_value = values[t + 1] if t + 1 < length else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        adv[t] = running
    return adv, [a + v for a, v in zip(adv, values, strict=False)]


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
def test_gae_equals_a_plain_float64_loop(gamma, lam):
    g = torch.Generator().manual_seed(0)
    B, T = 5, 9
    rewards = torch.randn(B, T, generator=g, dtype=torch.float64)
    values = torch.randn(B, T, generator=g, dtype=torch.float64)
    lengths = [9, 1, 4, 7, 2]
    mask = torch.zeros(B, T, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, :n] = True
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for i, n in enumerate(lengths):
        ref_adv, ref_ret = _gae_reference(rewards[i].tolist(), values[i].tolist(), n, gamma, lam)
        assert max(abs(a - b) for a, b in zip(adv[i, :n].tolist(), ref_adv, strict=True)) < 1e-12
        assert max(abs(a - b) for a, b in zip(ret[i, :n].tolist(), ref_ret, strict=True)) < 1e-12
        assert adv[i, n:].abs().max().item() == 0 if n < T else True  # padding carries nothing


def test_gae_with_lambda_one_and_gamma_one_is_the_return_to_go_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    values = torch.tensor([[0.2, 0.5, 0.7]], dtype=torch.float64)
    adv, ret = gae(rewards, values, torch.ones(1, 3, dtype=torch.bool), 1.0, 1.0)
    assert torch.allclose(ret, torch.ones(1, 3, dtype=torch.float64))
    assert torch.allclose(adv, 1 - values)


def test_kl_estimators_k1_and_k3_are_unbiased_and_k2_is_biased_on_known_distributions():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    exact = float((p * (p / q).log()).sum())
    # exact expectations over x ~ p (no sampling noise): sum_x p(x) k(x)
    est = kl_estimators(p.log(), q.log())
    means = {k: float((p * v).sum()) for k, v in est.items()}
    assert abs(means["k1"] - exact) < 1e-12
    assert abs(means["k3"] - exact) < 1e-12
    assert abs(means["k2"] - exact) > 1e-3, "k2 is biased for distributions this far apart"
    assert (est["k3"] >= 0).all() and (est["k1"] < 0).any()
    # and by Monte Carlo: 200k draws put k1 and k3 within 4 standard errors of the exact KL
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    draws = kl_estimators(p.log()[x], q.log()[x])
    for name in ("k1", "k3"):
        se = draws[name].std().item() / math.sqrt(len(x))
        assert abs(draws[name].mean().item() - exact) < 4 * se
    assert draws["k3"].std() < draws["k1"].std()


def test_best_of_n_kl_formula():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(4) == pytest.approx(math.log(4) - 0.75)
    with pytest.raises(ValueError, match="n=0"):
        best_of_n_kl(0)


def test_whiten_normalises_over_the_mask_only():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, m)
    assert abs(float((w * m).sum())) < 1e-6 and w[0, 3] == 0


def test_ppo_bad_input_is_refused():
    with pytest.raises(ValueError, match="beta"):
        PPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="multiple of minibatch"):
        PPOConfig(rollouts=10, minibatch=4)
    torch.manual_seed(0)
    rm = RewardModel(GPT(GPTConfig(vocab_size=40, context_length=24, d_model=16, n_layer=1, n_head=2)))
    with pytest.raises(ValueError, match="reward model"):
        PolicyWithValue(rm.trunk)
    with pytest.raises(ValueError, match="GPT policy"):
        PolicyWithValue(rm)
