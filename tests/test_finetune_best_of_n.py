"""Best-of-N: the all-subsets estimator against brute force and Monte Carlo, the KL formula against exact values."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from insideout.finetune.best_of_n import analytic_kl, best_of_n_mean, exact_bon_kl, subset_weights


def test_weights_are_a_distribution_and_match_brute_force():
    gen = torch.Generator().manual_seed(0)
    proxy = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    value = torch.rand(3, 7, generator=gen, dtype=torch.float64)
    for N in range(1, 8):
        assert float(subset_weights(7, N).sum()) == pytest.approx(1.0, abs=1e-12)
        brute = sum(float(value[p, list(s)][proxy[p, list(s)].argmax()])
                    for p in range(3) for s in itertools.combinations(range(7), N)) / (3 * math.comb(7, N))
        assert best_of_n_mean(proxy, value, N) == pytest.approx(brute, abs=1e-12)
    assert best_of_n_mean(proxy, value, 1) == pytest.approx(float(value.mean()), abs=1e-12)
    assert best_of_n_mean(proxy, value, 7) == pytest.approx(
        float(value.gather(1, proxy.argmax(1, keepdim=True)).mean()), abs=1e-12)


def test_estimator_is_unbiased_for_fresh_draws():
    """E[value of best of N fresh draws] (Monte Carlo) equals the mean of the all-subsets estimate."""
    gen = torch.Generator().manual_seed(1)
    support_proxy = torch.tensor([0.1, 0.5, 0.9, 1.3])
    support_value = torch.tensor([0.0, 1.0, 0.2, 0.7], dtype=torch.float64)
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    N, n, trials = 3, 8, 20000
    draws = torch.multinomial(probs, trials * n, replacement=True, generator=gen).view(trials, n)
    estimate = best_of_n_mean(support_proxy[draws].double(), support_value[draws], N)
    F = probs.double().cumsum(0)
    q = F.pow(N) - torch.cat([torch.zeros(1, dtype=torch.float64), F[:-1]]).pow(N)
    exact = float((q * support_value).sum())
    assert estimate == pytest.approx(exact, abs=0.01)


def test_kl_formula_exact_for_many_distinct_outcomes_and_a_bound_otherwise():
    fine = torch.rand(50000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.01
    for N in (1, 2, 5, 16):
        assert exact_bon_kl(fine, N) == pytest.approx(analytic_kl(N), abs=5e-3)
        assert exact_bon_kl(torch.tensor([0.6, 0.4]), N) <= analytic_kl(N) + 1e-12
    assert analytic_kl(1) == 0.0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_n(bad):
    with pytest.raises(ValueError, match="N"):
        analytic_kl(bad)


def test_bad_shapes_and_subset_size():
    with pytest.raises(ValueError, match="1 <= N <= 4"):
        subset_weights(4, 5)
    with pytest.raises(ValueError, match="prompts, n"):
        best_of_n_mean(torch.zeros(2, 3), torch.zeros(2, 4), 1)
