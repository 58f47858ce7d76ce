"""Position helpers of insideout.gpt.model: ALiBi slopes and biases, RoPE's relative-position property."""

import math

import pytest
import torch

from insideout.gpt.model import alibi_bias, alibi_slopes, apply_rope, rope_cos_sin


def rope_score(q, k, m, n, base=10000.0):
    """q·k after rotating q to position m and k to position n (both (head_dim,) float64)."""
    cos, sin = rope_cos_sin(q.numel(), torch.tensor([m, n]), base)
    qk = torch.stack([q, k])[None, None]  # (1, 1, 2, head_dim)
    rq, rk = apply_rope(qk, cos, sin)[0, 0]
    return torch.dot(rq, rk).item()


@pytest.mark.parametrize("head_dim", [2, 8, 64])
def test_rope_score_depends_only_on_offset(head_dim):
    g = torch.Generator().manual_seed(head_dim)
    q, k = torch.randn(head_dim, generator=g, dtype=torch.float64), torch.randn(head_dim, generator=g,
                                                                                  dtype=torch.float64)
    for m, n in [(0, 0), (5, 2), (2, 5), (17, 3), (100, 99)]:
        reference = rope_score(q, k, m, n)
        for shift in (1, 7, 1000, 12345):
            assert rope_score(q, k, m + shift, n + shift) == pytest.approx(reference, abs=1e-9)
    # and it does depend on the offset, so the check above can fail
    assert abs(rope_score(q, k, 0, 0) - rope_score(q, k, 3, 0)) > 1e-3


def test_rope_is_a_rotation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 10, 16, generator=g, dtype=torch.float64)  # (batch, head, T, head_dim)
    cos, sin = rope_cos_sin(16, torch.arange(10))
    y = apply_rope(x, cos, sin)
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-12)  # lengths unchanged
    assert torch.equal(y[:, :, 0], x[:, :, 0])  # position 0: angle 0
    # pair (x_i, x_{i+d/2}) at position p is rotated by p * base^(-2i/d)
    i, p = 3, 7
    angle = p * 10000.0 ** (-2 * i / 16)
    a, b = x[0, 0, p, i].item(), x[0, 0, p, i + 8].item()
    assert y[0, 0, p, i].item() == pytest.approx(a * math.cos(angle) - b * math.sin(angle), abs=1e-12)
    assert y[0, 0, p, i + 8].item() == pytest.approx(b * math.cos(angle) + a * math.sin(angle), abs=1e-12)


def test_alibi_slopes_power_of_two():
    assert alibi_slopes(8).tolist() == [2.0 ** -k for k in range(1, 9)]
    assert alibi_slopes(4).tolist() == [2.0 ** -k for k in (2, 4, 6, 8)]
    assert alibi_slopes(1).tolist() == [2.0 ** -8]


def test_alibi_slopes_non_power_of_two():
    # 6 heads: the 4 slopes of 4 heads, then every other slope of 8 heads (2^-1, 2^-3), as in the ALiBi paper's code
    assert alibi_slopes(6).tolist() == pytest.approx([2.0 ** -k for k in (2, 4, 6, 8, 1, 3)], abs=0)
    twelve = alibi_slopes(12).tolist()
    assert twelve[:8] == [2.0 ** -k for k in range(1, 9)]
    assert twelve[8:] == pytest.approx([2.0 ** -(k + 0.5) for k in range(4)], rel=1e-15)
    assert len(set(alibi_slopes(12).tolist())) == 12  # every head gets its own slope


def test_alibi_bias_values_and_offsets():
    slopes = alibi_slopes(4)
    bias = alibi_bias(4, torch.arange(5), torch.arange(5))  # (head, Tq, Tk)
    assert bias.shape == (4, 5, 5)
    for h in range(4):
        for i in range(5):
            for j in range(5):
                assert bias[h, i, j].item() == -slopes[h].item() * (i - j)
    assert torch.all(bias.diagonal(dim1=1, dim2=2) == 0)
    # a decoding step with a KV-cache: one query at position 7 against keys 0..7 gives the last row of the full bias
    step = alibi_bias(4, torch.tensor([7]), torch.arange(8))
    full = alibi_bias(4, torch.arange(8), torch.arange(8))
    assert torch.equal(step[:, 0], full[:, 7])
