"""GPTConfig's ablation switches (post-LN blocks, attention without normalisation), d_ff derivation, validation."""

import dataclasses
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from insideout.gpt.model import GPT, GPTConfig, KVCache

SMALL = dict(vocab_size=50, context_length=16, d_model=32, n_layer=2, n_head=4)


def small(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**SMALL, **overrides})).eval()


def tokens(batch: int = 2, length: int = 16, vocab: int = 50, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---- post-LN ----------------------------------------------------------------------------------------------------


def test_post_ln_equals_torch_transformer_encoder_layers():
    """Reference: torch.nn.TransformerEncoderLayer with norm_first=False is the post-LN block, ln(x + f(x))."""
    model = small(norm_position="post", position="none", init_std=0.3).double()
    layers = []
    for block in model.blocks:
        ref = nn.TransformerEncoderLayer(32, 4, dim_feedforward=128, dropout=0.0, batch_first=True, norm_first=False,
                                         activation=lambda x: F.gelu(x, approximate="tanh")).double().eval()
        with torch.no_grad():
            ref.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
            ref.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
            ref.self_attn.out_proj.weight.copy_(block.attn.proj.weight)
            ref.self_attn.out_proj.bias.copy_(block.attn.proj.bias)
            for ours, theirs in ((block.mlp.fc, ref.linear1), (block.mlp.proj, ref.linear2),
                                 (block.ln1, ref.norm1), (block.ln2, ref.norm2)):
                theirs.weight.copy_(ours.weight)
                theirs.bias.copy_(ours.bias)
        layers.append(ref)
    idx = tokens()
    causal = nn.Transformer.generate_square_subsequent_mask(16, dtype=torch.float64)
    with torch.no_grad():
        x = model.tok_emb(idx)
        for ref in layers:
            x = ref(x, src_mask=causal, is_causal=True)
        expected = model.lm_head(x)  # post-LN has no final LayerNorm: the last block already ends in one
        got = model(idx)[0]
    assert isinstance(model.ln_f, nn.Identity)
    assert got.std().item() > 0.3
    assert (got - expected).abs().max().item() <= 1e-12


def test_post_ln_hooks_and_cache():
    model = small(norm_position="post", init_std=0.3)
    block = model.blocks[0]
    seen = {}
    for name in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"):
        getattr(block, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    idx = tokens()
    with torch.no_grad():
        full = model(idx)[0]
        act = dict(seen)  # the full pass's activations (the cached passes below overwrite `seen`)
        cache = model.new_cache(2)
        cached = torch.cat([model(idx[:, :4], cache=cache)[0]]
                           + [model(idx[:, t:t + 1], cache=cache)[0] for t in range(4, 16)], dim=1)
    assert act["hook_resid_mid"].shape == (2, 16, 32)
    assert torch.allclose(act["hook_resid_mid"], block.ln1(act["hook_resid_pre"] + act["hook_attn_out"]), atol=1e-6)
    assert torch.allclose(act["hook_resid_post"], block.ln2(act["hook_resid_mid"] + act["hook_mlp_out"]), atol=1e-6)
    assert (cached - full).abs().max().item() <= 1e-5
    pre = small(init_std=0.3)
    with torch.no_grad():
        assert (pre(idx)[0] - full).abs().max().item() > 1e-2, "post-LN must compute something else than pre-LN"


# ---- attention without normalisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("position", ["learned", "alibi", "rope"])
def test_unnormalised_attention_weights_are_masked_exp_scores(position):
    model = small(attn_normalize=False, position=position, init_std=0.1)
    attn = model.blocks[0].attn
    seen = {}
    for name in ("hook_q", "hook_k", "hook_v", "hook_pattern", "hook_z"):
        getattr(attn, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    idx = tokens(length=10)
    with torch.no_grad():
        logits = model(idx)[0]
    weights = seen["hook_pattern"]  # (B, H, T, T)
    T = 10
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    assert torch.equal(weights[..., ~causal], torch.zeros_like(weights[..., ~causal])), "future keys get weight 0"
    if position == "learned":  # scores are q.k / sqrt(d_head) exactly: compare with the formula
        q, k = seen["hook_q"].transpose(1, 2), seen["hook_k"].transpose(1, 2)
        expected = torch.exp(q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~causal, 0.0)
        assert torch.allclose(weights, expected, rtol=1e-5, atol=0)
    row_sums = weights.sum(-1)
    assert (row_sums - 1).abs().max().item() > 0.5, "without normalisation the rows do not sum to 1"
    assert torch.allclose(row_sums[..., 0], weights[..., 0, 0]), "the first query weighs only itself: exp(s_00)"
    z = seen["hook_z"].transpose(1, 2)  # (B, H, T, d_head)
    assert torch.allclose(z, weights @ seen["hook_v"].transpose(1, 2), atol=1e-6)
    assert torch.isfinite(logits).all()
    with torch.no_grad():
        cache = model.new_cache(2)
        cached = torch.cat([model(idx[:, t:t + 1], cache=cache)[0] for t in range(T)], dim=1)
    assert (cached - logits).abs().max().item() <= 1e-4 * logits.abs().max().item()


def test_unnormalised_attention_differs_from_softmax():
    idx = tokens()
    with torch.no_grad():
        a = small(init_std=0.3)(idx)[0]
        b = small(init_std=0.3, attn_normalize=False)(idx)[0]
    assert (a - b).abs().max().item() > 1e-2


# ---- d_ff ------------------------------------------------------------------------------------------------------


def test_d_ff_is_derived_and_stays_derived_in_copies():
    c = GPTConfig(**SMALL)
    assert c.d_ff == 128 and c.d_ff_derived and c.to_dict()["d_ff"] is None
    assert dataclasses.replace(c, d_model=64).d_ff == 256
    assert GPTConfig.from_dict({**c.to_dict(), "d_model": 16}).d_ff == 64
    explicit = GPTConfig(**SMALL, d_ff=40)
    assert not explicit.d_ff_derived and explicit.to_dict()["d_ff"] == 40
    assert dataclasses.replace(explicit, d_model=64).d_ff == 40
    assert GPTConfig(**SMALL, d_ff=128) == c, "an explicit d_ff equal to the derived one is the same model"
    assert small(d_model=16, n_head=2).blocks[0].mlp.fc.out_features == 64


# ---- validation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, words",
    [
        (dict(dropout="0.1"), ["dropout='0.1'", "number in [0, 1)"]),
        (dict(dropout=float("nan")), ["dropout=nan"]),
        (dict(init_std=float("nan")), ["init_std=nan", "finite number > 0"]),
        (dict(rope_base=float("nan")), ["rope_base=nan"]),
        (dict(ln_eps=float("inf")), ["ln_eps=inf"]),
        (dict(init_std=0), ["init_std=0"]),
        (dict(d_ff=0), ["d_ff=0", "None for 4 * d_model"]),
        (dict(d_ff=2.5), ["d_ff=2.5"]),
        (dict(d_model=32.0), ["d_model=32.0", "positive integer"]),
        (dict(n_head=True), ["n_head=True"]),
        (dict(bias="yes"), ["bias='yes'", "True or False"]),
        (dict(attn_normalize=0), ["attn_normalize=0"]),
        (dict(norm_position="sandwich"), ["norm_position='sandwich'", "pre, post"]),
        (dict(position=None), ["position=None"]),
    ],
)
def test_config_rejects_wrong_types_and_non_finite_numbers(overrides, words):
    with pytest.raises(ValueError) as err:
        GPTConfig(**{**SMALL, **overrides})
    for word in words:
        assert word in str(err.value)


def test_kv_cache_rejects_bad_sizes():
    config = GPTConfig(**SMALL)
    for kwargs, word in ((dict(max_len=-3), "max_len=-3"), (dict(max_len=0), "max_len=0"),
                         (dict(batch_size=0), "batch_size=0"), (dict(max_len=2.5), "max_len=2.5")):
        with pytest.raises(ValueError, match=word.replace(".", r"\.")):
            KVCache(config, **{"batch_size": 1, **kwargs})
    with pytest.raises(ValueError, match="exceeds the model's context_length=16"):
        KVCache(config, 1, max_len=17)


def test_forward_rejects_bad_targets_and_inputs():
    model = small()
    idx = tokens()
    with pytest.raises(ValueError, match="got a list: pass torch.tensor"):
        model(idx.tolist())
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 50\) or be -100"):
        model(idx, torch.full_like(idx, 50))
    with pytest.raises(ValueError, match="targets must lie"):
        model(idx, torch.full_like(idx, -5))
    with pytest.raises(ValueError, match="integer token ids.*float32"):
        model(idx, idx.float())
    with pytest.raises(ValueError, match="every target is -100"):
        model(idx, torch.full_like(idx, -100))
    with pytest.raises(ValueError, match="targets must be a tensor"):
        model(idx, idx.tolist())
    with pytest.raises(ValueError, match="needs a GPTConfig"):
        GPT(dict(SMALL))
    partly = torch.full_like(idx, -100)
    partly[0, 3] = 7
    assert torch.isfinite(model(idx, partly)[1])
