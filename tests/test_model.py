"""The GPT: Hugging Face GPT-2 weight loading, clear errors on bad input, experiment switches, init and dropout."""

import math
import os

import pytest
import torch
import torch.nn as nn

from insideout.gpt.model import GPT, GPTConfig, gelu

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL = dict(vocab_size=50, context_length=16, d_model=32, n_layer=2, n_head=4)


def small(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**{**SMALL, **overrides})).eval()


def tokens(batch: int = 2, length: int = 16, vocab: int = 50, seed: int = 3) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


# ---- Hugging Face GPT-2 ---------------------------------------------------------------------------------------


def random_hf_gpt2(**overrides):
    """A GPT2LMHeadModel with every tensor drawn at random (no download), so each mapping error would show."""
    from transformers import GPT2Config, GPT2LMHeadModel

    kwargs = dict(vocab_size=97, n_positions=24, n_embd=48, n_layer=3, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
                  attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    kwargs.update(overrides)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(**kwargs)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in hf.parameters():  # biases and LayerNorm gains are 0 / 1 at init: randomise them too
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return hf


def test_gpt2_loader_gives_identical_logits_to_hugging_face():
    hf = random_hf_gpt2()
    ours = GPT(GPTConfig(vocab_size=97, context_length=24, d_model=48, n_layer=3, n_head=4)).eval()
    ours.load_gpt2_state_dict(hf.state_dict())
    idx = tokens(2, 24, 97)
    with torch.no_grad():
        expected = hf(idx).logits
        got = ours(idx)[0]
    assert expected.std().item() > 0.3, "logits nearly constant: weak comparison"
    assert (got - expected).abs().max().item() <= 1e-5
    assert ours.lm_head.weight.data_ptr() == ours.tok_emb.weight.data_ptr(), "the head stays tied after loading"


def test_gpt2_loader_names_every_bad_tensor():
    hf_state = random_hf_gpt2().state_dict()
    ours = GPT(GPTConfig(vocab_size=97, context_length=24, d_model=48, n_layer=3, n_head=4))
    hf_state.pop("transformer.h.1.mlp.c_fc.bias")
    hf_state["transformer.h.2.ln_1.weight"] = torch.ones(47)
    hf_state["transformer.extra.weight"] = torch.ones(3)
    with pytest.raises(ValueError) as err:
        ours.load_gpt2_state_dict(hf_state)
    message = str(err.value)
    assert "blocks.1.mlp.fc.bias" in message and "missing" in message
    assert "extra.weight" in message and "unexpected" in message
    assert "blocks.2.ln1.weight: expected (48,), got (47,)" in message


def test_state_dict_errors_name_all_problems_at_once():
    model = small()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["blocks.0.attn.qkv.weight"], state["ln_f.bias"]
    state["blocks.1.mlp.fc.weight"] = torch.zeros(3, 3)
    state["blocks.7.attn.qkv.weight"] = torch.zeros(3)
    with pytest.raises(ValueError) as err:
        model.load_state_dict_strict(state)
    message = str(err.value)
    for name in ("blocks.0.attn.qkv.weight", "ln_f.bias", "blocks.1.mlp.fc.weight", "blocks.7.attn.qkv.weight"):
        assert name in message


def test_strict_load_round_trip():
    a, b = small(), small(init_std=0.5)
    b.load_state_dict_strict(a.state_dict())
    idx = tokens()
    with torch.no_grad():
        assert torch.equal(a(idx)[0], b(idx)[0])


# ---- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, words",
    [
        (dict(d_model=30, n_head=4), ["d_model=30", "n_head=4", "divisible"]),
        (dict(position="sinusoidal"), ["position='sinusoidal'", "learned", "alibi", "rope", "none"]),
        (dict(activation="tanh"), ["activation='tanh'", "gelu"]),
        (dict(attn_impl="flash"), ["attn_impl='flash'", "sdpa"]),
        (dict(n_layer=0), ["n_layer=0", "positive"]),
        (dict(dropout=1.0), ["dropout=1.0"]),
        (dict(position="rope", d_model=12, n_head=4), ["rope", "even"]),
    ],
)
def test_config_rejects_bad_values_with_a_clear_message(overrides, words):
    with pytest.raises(ValueError) as err:
        GPTConfig(**{**SMALL, **overrides})
    for word in words:
        assert word in str(err.value)


def test_config_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown GPTConfig fields \\['n_embd'\\]"):
        GPTConfig.from_dict({**SMALL, "n_embd": 32})
    assert GPTConfig.from_dict(GPTConfig(**SMALL).to_dict()) == GPTConfig(**SMALL)


def test_sequence_longer_than_context_is_rejected():
    model = small()
    with pytest.raises(ValueError, match="sequence of 17 tokens is longer than the context_length=16"):
        model(tokens(1, 17))
    cache = model.new_cache()
    model(tokens(1, 10), cache=cache)
    with pytest.raises(ValueError, match="longer than the context_length"):
        model(tokens(1, 7), cache=cache)


@pytest.mark.parametrize("bad", [-1, 50, 1000])
def test_token_ids_outside_vocabulary_are_rejected(bad):
    idx = tokens()
    idx[1, 4] = bad
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 50\)"):
        small()(idx)


def test_non_integer_or_wrongly_shaped_input_is_rejected():
    with pytest.raises(ValueError, match="integer token ids"):
        small()(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="shape \\(batch, seq\\)"):
        small()(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="targets shape"):
        small()(tokens(), tokens()[:, :5])


# ---- switches ----------------------------------------------------------------------------------------------


def test_layer_norm_off_removes_every_layer_norm():
    with_ln, without = small(), small(layer_norm=False)
    assert sum(isinstance(m, nn.LayerNorm) for m in with_ln.modules()) == 2 * SMALL["n_layer"] + 1
    assert not any(isinstance(m, nn.LayerNorm) for m in without.modules())
    assert with_ln.num_parameters() - without.num_parameters() == (2 * SMALL["n_layer"] + 1) * 2 * SMALL["d_model"]


@pytest.mark.parametrize("residual", [True, False])
def test_residual_switch_changes_the_block_sum(residual):
    model = small(residual=residual, init_std=0.3)
    block = model.blocks[0]
    seen = {}
    for name in ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"):
        getattr(block, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o))
    with torch.no_grad():
        model(tokens())
    skip_mid = seen["hook_resid_pre"] if residual else 0
    skip_post = seen["hook_resid_mid"] if residual else 0
    assert torch.allclose(seen["hook_resid_mid"], skip_mid + seen["hook_attn_out"], atol=1e-6)
    assert torch.allclose(seen["hook_resid_post"], skip_post + seen["hook_mlp_out"], atol=1e-6)


def test_mlp_off_gives_attention_only_blocks():
    model = small(mlp=False)
    assert all(b.mlp is None and b.ln2 is None for b in model.blocks)
    assert not any(".mlp." in name or ".ln2." in name for name in model.state_dict())
    assert model(tokens())[0].shape == (2, 16, 50)


def test_scale_attention_switch_sets_the_score_scale():
    assert small().blocks[0].attn.scale == pytest.approx(1 / math.sqrt(8))
    assert small(scale_attention=False).blocks[0].attn.scale == 1.0
    idx = tokens()
    a, b = small(init_std=0.3), small(init_std=0.3, scale_attention=False)
    with torch.no_grad():
        assert (a(idx)[0] - b(idx)[0]).abs().max().item() > 1e-2, "removing the scale changes the output"


@pytest.mark.parametrize("activation, fn", [("gelu", gelu), ("relu", torch.relu), ("sigmoid", torch.sigmoid)])
def test_activation_switch(activation, fn):
    model = small(activation=activation, init_std=0.3)
    seen = {}
    mlp = model.blocks[0].mlp
    mlp.fc.register_forward_hook(lambda m, i, o: seen.__setitem__("pre", o))
    mlp.hook_post.register_forward_hook(lambda m, i, o: seen.__setitem__("post", o))
    with torch.no_grad():
        model(tokens())
    assert torch.equal(seen["post"], fn(seen["pre"]))


def test_gelu_is_the_tanh_form():
    x = torch.linspace(-6, 6, 1001, dtype=torch.float64)
    tanh_form = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert (gelu(x) - tanh_form).abs().max().item() <= 1e-12


def test_scale_residual_init_measured_std():
    cfg = dict(vocab_size=50, context_length=16, d_model=256, n_layer=8, n_head=4)
    torch.manual_seed(0)
    scaled = GPT(GPTConfig(**cfg))
    torch.manual_seed(0)
    plain = GPT(GPTConfig(**cfg, scale_residual_init=False))
    target = 0.02 / math.sqrt(2 * 8)
    for block_s, block_p in zip(scaled.blocks, plain.blocks, strict=True):
        for name in ("attn.proj", "mlp.proj"):
            std_s = block_s.get_submodule(name).weight.std().item()
            std_p = block_p.get_submodule(name).weight.std().item()
            assert abs(std_s - target) / target < 0.03, (name, std_s)
            assert abs(std_p - 0.02) / 0.02 < 0.03, (name, std_p)
        for name in ("attn.qkv", "mlp.fc"):  # not residual projections: plain init_std in both
            assert abs(block_s.get_submodule(name).weight.std().item() - 0.02) / 0.02 < 0.03
        assert torch.count_nonzero(block_s.attn.qkv.bias) == 0
        assert torch.equal(block_s.ln1.weight, torch.ones(256))


def test_weight_tying_switch():
    tied, untied = small(), small(tie_weights=False)
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert untied.lm_head.weight is not untied.tok_emb.weight
    assert untied.num_parameters() - tied.num_parameters() == 50 * 32
    assert "lm_head.weight" not in dict(tied.named_parameters())  # counted once


def test_bias_switch_removes_every_bias():
    model = small(bias=False)
    assert not any(name.endswith(".bias") for name, _ in model.named_parameters())


@pytest.mark.parametrize("position", ["alibi", "rope", "none"])
def test_only_learned_positions_have_a_position_table(position):
    assert small().pos_emb.weight.shape == (16, 32)
    assert small(position=position).pos_emb is None


def test_no_positions_make_the_model_blind_to_order_of_earlier_tokens():
    """With position='none', one layer's last logits depend on the set of earlier tokens, not their order."""
    model = small(position="none", init_std=0.3, n_layer=1).double()
    idx = torch.tensor([[5, 9, 13, 21, 7]])
    swapped = torch.tensor([[9, 5, 21, 13, 7]])
    learned = small(init_std=0.3, n_layer=1).double()
    with torch.no_grad():
        assert (model(idx)[0][0, -1] - model(swapped)[0][0, -1]).abs().max().item() <= 1e-12
        assert (learned(idx)[0][0, -1] - learned(swapped)[0][0, -1]).abs().max().item() > 1e-3


# ---- dropout and loss -----------------------------------------------------------------------------------------


def test_dropout_is_off_in_eval_and_on_in_train():
    with_dropout, without = small(dropout=0.5), small()
    with_dropout.load_state_dict(without.state_dict())
    idx = tokens()
    with torch.no_grad():
        a, b = with_dropout.eval()(idx)[0], with_dropout(idx)[0]
        c = without(idx)[0]
        assert torch.equal(a, b) and torch.equal(a, c)
        with_dropout.train()
        d, e = with_dropout(idx)[0], with_dropout(idx)[0]
    assert not torch.equal(d, a) and not torch.equal(d, e)


def test_loss_is_mean_cross_entropy_and_ignores_minus_100():
    model = small(init_std=0.3)
    idx = tokens()
    targets = tokens(seed=4)
    targets[0, :5] = -100
    logits, loss = model(idx, targets)
    logp = torch.log_softmax(logits, -1)
    keep = targets != -100
    expected = -logp[keep].gather(-1, targets[keep][:, None]).mean()
    assert abs(loss.item() - expected.item()) <= 1e-6
    at_init = small()(idx, tokens(seed=4))[1].item()
    assert abs(at_init - math.log(50)) < 0.05, "GPT-2 init starts near the uniform loss ln V"


def test_logits_mask_computes_the_chosen_positions_only():
    """logits_mask gives logits[mask] of the full forward and the loss over targets[mask]; gradients too."""
    from insideout.finetune.generation import token_logprobs

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, context_length=16, d_model=32, n_layer=2, n_head=4, position="rope"))
    ids = torch.randint(0, 50, (3, 12))
    targets = torch.randint(0, 50, (3, 12))
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[0, 4:9] = mask[1, 1:3] = mask[2, 11] = True
    full, _ = model(ids)
    part, _ = model(ids, logits_mask=mask)
    assert part.shape == (int(mask.sum()), 50)
    assert torch.allclose(part, full[mask], atol=1e-6)
    masked_targets = targets.masked_fill(~mask, -100)
    _, loss_full = model(ids, masked_targets)
    _, loss_part = model(ids, masked_targets, logits_mask=mask)
    assert torch.allclose(loss_full, loss_part, atol=1e-6)
    grads = []
    for kwargs in ({}, {"mask": mask[:, :-1]}):
        model.zero_grad()
        lp = token_logprobs(model, ids, **kwargs)
        (lp * mask[:, :-1]).sum().backward()
        grads.append(model.tok_emb.weight.grad.clone())
        if kwargs:
            assert (lp[~mask[:, :-1]] == 0).all()
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
    for bad, match in ((mask.float(), "bool tensor"), (mask[:, :5], "bool tensor"), ([True], "bool tensor")):
        with pytest.raises(ValueError, match=match):
            model(ids, logits_mask=bad)
    with pytest.raises(ValueError, match="pass one of them"):
        model(ids, last_only=True, logits_mask=mask)
