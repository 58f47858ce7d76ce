"""insideout.diffusion.metrics: the Fréchet distance against a direct float64 computation with scipy's sqrtm,
nearest-neighbour precision/recall, the energy distance against a double loop, PSNR."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm

from insideout.diffusion import metrics as M


def direct_frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_frechet_distance_equals_scipy_sqrtm_in_float64():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 8, generator=g, dtype=torch.float64)
    b = torch.randn(200, 8, generator=g, dtype=torch.float64) @ torch.randn(8, 8, generator=g, dtype=torch.float64)
    b = b * 0.5 + 1.0
    assert M.frechet_distance(a, b) == pytest.approx(direct_frechet(a.numpy(), b.numpy()), rel=1e-9)
    assert abs(M.frechet_distance(a, a)) < 1e-9


def test_frechet_distance_of_known_gaussians():
    # N(0, I) vs N(m, 4 I) in d dimensions: |m|^2 + d (1 + 4 - 2 * 2) = |m|^2 + d
    d = 5
    mu1, s1 = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    mu2, s2 = torch.full((d,), 0.5, dtype=torch.float64), 4 * torch.eye(d, dtype=torch.float64)
    assert M.frechet_from_stats(mu1, s1, mu2, s2) == pytest.approx(0.25 * d + d, rel=1e-12)


def test_precision_recall_extremes():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(200, 4, generator=g)
    assert M.precision_recall(real, real.clone()) == (1.0, 1.0)
    far = torch.randn(200, 4, generator=g) + 100
    assert M.precision_recall(real, far) == (0.0, 0.0)
    # samples collapsed onto a few real points: precise, but they cover little of the real set
    collapsed = real[:5].repeat(40, 1)
    p, r = M.precision_recall(real, collapsed)
    assert p == 1.0 and r < 0.2
    with pytest.raises(ValueError, match="k="):
        M.precision_recall(real, far, k=0)


def test_energy_distance_equals_a_double_loop():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(30, 2, generator=g), torch.randn(25, 2, generator=g) + 0.5

    def mean_dist(a, b):
        return sum(math.dist(p.tolist(), q.tolist()) for p in a for q in b) / (len(a) * len(b))

    want = 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)
    assert M.energy_distance(x, y) == pytest.approx(want, rel=1e-9)
    assert M.energy_distance(x, x) == 0.0 and M.energy_distance(x[:10], x[10:]) > 0


def test_psnr():
    a = torch.full((2, 3, 4, 4), 0.5)
    b = a.clone()
    b[0] += 0.1  # mse 0.01 -> 20 dB
    out = M.psnr(a, b)
    assert out[0].item() == pytest.approx(20.0, abs=1e-4) and out[1].item() > 100
    with pytest.raises(ValueError, match="range"):
        M.psnr(a, a * 3)


def test_features_need_matching_widths_and_enough_rows():
    with pytest.raises(ValueError, match="widths"):
        M.frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        M.frechet_distance(torch.randn(1, 3), torch.randn(10, 3))
