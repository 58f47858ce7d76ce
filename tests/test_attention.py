"""Attention: the SDPA fast path equals the written-out attention for every position scheme, dtype and cache use."""

import math

import pytest
import torch
import torch.nn.functional as F

from insideout.gpt.model import GPT, CausalSelfAttention, GPTConfig, alibi_bias, apply_rope, rope_cos_sin

POSITIONS = ("learned", "alibi", "rope", "none")
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def model_pair(position: str, dtype: torch.dtype, **overrides) -> tuple[GPT, GPT]:
    """Two GPTs with identical weights, one per attention implementation."""
    # init_std 0.3 (not 0.02) so attention patterns are far from uniform and differences would show
    kwargs = dict(vocab_size=53, context_length=16, d_model=24, n_layer=2, n_head=4, position=position, init_std=0.3)
    kwargs.update(overrides)
    torch.manual_seed(0)
    sdpa = GPT(GPTConfig(attn_impl="sdpa", **kwargs)).to(dtype).eval()
    manual = GPT(GPTConfig(attn_impl="manual", **kwargs)).to(dtype).eval()
    manual.load_state_dict(sdpa.state_dict())
    return sdpa, manual


def tokens(batch: int = 3, length: int = 16, vocab: int = 53) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("position", POSITIONS)
def test_sdpa_equals_manual(position, dtype):
    sdpa, manual = model_pair(position, dtype)
    idx = tokens()
    with torch.no_grad():
        a, b = sdpa(idx)[0], manual(idx)[0]
    assert a.dtype == dtype
    assert a.std().item() > 0.5, "logits nearly constant: the comparison would be weak"
    assert (a - b).abs().max().item() <= TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("position", POSITIONS)
def test_sdpa_equals_manual_with_kv_cache(position, dtype):
    sdpa, manual = model_pair(position, dtype)
    idx = tokens(batch=2)
    with torch.no_grad():
        reference = manual(idx)[0]  # (B, T, V) uncached, written out
        for model in (sdpa, manual):
            cache = model.new_cache(batch_size=2)
            prefill = model(idx[:, :6], cache=cache)[0]  # a prompt of 6 tokens, then one token at a time
            steps = [model(idx[:, t:t + 1], cache=cache)[0] for t in range(6, idx.shape[1])]
            cached = torch.cat([prefill, *steps], dim=1)
            assert (cached - reference).abs().max().item() <= TOL[dtype], model.config.attn_impl


@pytest.mark.parametrize("position", POSITIONS)
def test_sdpa_equals_manual_without_scale(position):
    sdpa, manual = model_pair(position, torch.float64, scale_attention=False)
    idx = tokens()
    with torch.no_grad():
        assert (sdpa(idx)[0] - manual(idx)[0]).abs().max().item() <= 1e-12


@pytest.mark.parametrize("position", POSITIONS)
def test_attention_equals_formula_written_here(position):
    """The module equals softmax(QK^T / sqrt(d) + bias + causal mask) V, rebuilt here from its weights."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=10, context_length=12, d_model=16, n_head=2, position=position,
                       attn_impl="sdpa", init_std=0.3)
    attn = CausalSelfAttention(config).double().eval()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, 12, 16, dtype=torch.float64)
    H, dh = 2, 8
    q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).split(16, dim=-1)
    q, k, v = (t.view(2, 12, H, dh).transpose(1, 2) for t in (q, k, v))  # (B, H, T, dh)
    pos = torch.arange(12)
    if position == "rope":
        cos, sin = rope_cos_sin(dh, pos)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    if position == "alibi":
        scores = scores + alibi_bias(H, pos, pos)
    scores = scores.masked_fill(torch.ones(12, 12, dtype=torch.bool).triu(1), float("-inf"))
    z = torch.softmax(scores, -1) @ v  # (B, H, T, dh)
    expected = z.transpose(1, 2).reshape(2, 12, 16) @ attn.proj.weight.T + attn.proj.bias
    with torch.no_grad():
        assert (attn(x) - expected).abs().max().item() <= 1e-12


def test_pattern_hook_switches_to_written_out_path_and_gives_causal_rows():
    sdpa, _ = model_pair("alibi", torch.float64)
    idx = tokens()
    seen = []
    handle = sdpa.blocks[0].attn.hook_pattern.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        hooked = sdpa(idx)[0]
    handle.remove()
    with torch.no_grad():
        plain = sdpa(idx)[0]
    (pattern,) = seen  # (B, H, T, T)
    assert pattern.shape == (3, 4, 16, 16)
    assert (pattern.sum(-1) - 1).abs().max().item() <= 1e-12, "rows of the pattern are probabilities"
    assert pattern.triu(1).abs().max().item() == 0.0, "no attention to future positions"
    assert (hooked - plain).abs().max().item() <= 1e-12


def test_future_tokens_do_not_change_past_logits():
    for position in POSITIONS:
        sdpa, _ = model_pair(position, torch.float64)
        idx = tokens(batch=1)
        changed = idx.clone()
        changed[0, 10:] = (changed[0, 10:] + 1) % 53
        with torch.no_grad():
            a, b = sdpa(idx)[0], sdpa(changed)[0]
        assert (a[:, :10] - b[:, :10]).abs().max().item() <= 1e-12, position
        assert (a[:, 10:] - b[:, 10:]).abs().max().item() > 1e-3, position


def test_manual_attention_matches_torch_sdpa_directly():
    """The library's SDPA call and torch's reference agree with the formula on random q, k, v with a causal mask."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 5, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(9, 9, dtype=torch.bool).tril()
    written = torch.softmax((q @ k.transpose(-1, -2) / math.sqrt(5)).masked_fill(~mask, float("-inf")), -1) @ v
    assert (F.scaled_dot_product_attention(q, k, v, is_causal=True) - written).abs().max().item() <= 1e-12
