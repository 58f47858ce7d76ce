"""LoRA from scratch: equal to PEFT's LoRA on the same weights, exact merge/unmerge, bad ranks and alphas refused."""

from __future__ import annotations

import pytest
import torch

from insideout.finetune.lora import (
    LoRALinear,
    apply_lora,
    lora_layers,
    merge_lora,
    optimizer_state_bytes,
    trainable_parameters,
    unmerge_lora,
)
from insideout.gpt.model import GPT, GPTConfig
from insideout.training import OptimConfig, make_optimizer

_RENAMES = {"attn.qkv": "attn.c_attn", "attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}


def _tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=61, context_length=16, d_model=32, n_layer=2, n_head=4)).eval()


def test_lora_equals_peft_lora_on_the_same_weights():
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    ours = _tiny()
    with torch.no_grad():  # non-trivial biases and LayerNorms so a mapping error would show
        g = torch.Generator().manual_seed(3)
        for p in ours.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=61, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    # our names -> Hugging Face's (Conv1D weights are stored transposed), the inverse of gpt2_to_insideout
    state = {}
    for name, tensor in ours.state_dict().items():
        if name == "lm_head.weight":
            continue
        key = name.replace("tok_emb.", "wte.").replace("pos_emb.", "wpe.").replace("blocks.", "h.")
        key = key.replace(".ln1.", ".ln_1.").replace(".ln2.", ".ln_2.")
        for a, b in _RENAMES.items():
            key = key.replace(f".{a}.", f".{b}.")
        state["transformer." + key] = tensor.t() if key.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) \
            else tensor
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("lm_head.weight") or "attn.bias" in k for k in missing), missing
    hf.tie_weights()

    rank, alpha = 4, 8.0
    apply_lora(ours, rank, alpha, seed=0)
    peft = get_peft_model(hf, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, fan_in_fan_out=True,
                                         target_modules=["c_attn", "c_proj", "c_fc"])).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, module in ours.named_modules():
            if isinstance(module, LoRALinear):
                module.lora_B.copy_(torch.randn(module.lora_B.shape, generator=g) * 0.1)  # B != 0: a real update
                hf_name = name.replace("blocks.", "h.")
                for a, b in _RENAMES.items():
                    hf_name = hf_name.replace(a, b)
                target = peft.base_model.model.transformer.get_submodule(hf_name)
                target.lora_A["default"].weight.copy_(module.lora_A)
                target.lora_B["default"].weight.copy_(module.lora_B)
    idx = torch.randint(0, 61, (3, 16), generator=g)
    with torch.no_grad():
        expected = peft(idx).logits
        got = ours(idx)[0]
        base = hf.base_model if hasattr(hf, "base_model") else hf
        with peft.disable_adapter():
            plain = peft(idx).logits
    assert (got - plain).abs().max() > 1e-2, "the adapters changed nothing: a weak comparison"
    assert (got - expected).abs().max().item() < 1e-5
    assert base is not None
    n_peft = sum(p.numel() for p in peft.parameters() if p.requires_grad)
    assert trainable_parameters(ours) == n_peft


def test_merge_and_unmerge_are_exact_inverses_and_zero_b_is_the_base():
    model = _tiny()
    idx = torch.randint(0, 61, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base_logits = model(idx)[0]
        apply_lora(model, 2, 4.0)
        assert torch.equal(model(idx)[0], base_logits), "B = 0 at init: the adapted model is the base model"
        for layer in lora_layers(model):
            layer.lora_B.normal_(0, 0.2)
        unmerged = model(idx)[0]
        merge_lora(model)
        merged = model(idx)[0]
        unmerge_lora(model)
        again = model(idx)[0]
    assert (merged - unmerged).abs().max() < 1e-5
    assert (again - unmerged).abs().max() < 1e-5
    assert (unmerged - base_logits).abs().max() > 1e-3


def test_only_a_and_b_train_and_the_optimizer_state_shrinks():
    model = _tiny()
    full = trainable_parameters(model)
    apply_lora(model, 2, 2.0)
    n = trainable_parameters(model)
    expected = sum(2 * (layer.in_features + layer.out_features) for layer in lora_layers(model))
    assert n == expected < full
    opt = make_optimizer(model, OptimConfig(max_steps=2, warmup_steps=0))
    loss = model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1]
    loss.backward()
    opt.step()
    assert optimizer_state_bytes(opt) == 2 * 4 * n + 4 * len([p for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("rank, alpha, message", [(0, 1.0, "rank=0"), (33, 1.0, "larger than the layer"),
                                                  (2.5, 1.0, "rank=2.5"), (2, 0.0, "alpha=0.0"),
                                                  (2, -1.0, "alpha=-1.0"), (2, float("nan"), "alpha=nan")])
def test_bad_rank_or_alpha_is_refused(rank, alpha, message):
    with pytest.raises(ValueError, match=message):
        LoRALinear(torch.nn.Linear(32, 64), rank, alpha)


def test_apply_lora_without_matching_layers_is_refused():
    with pytest.raises(ValueError, match="nothing to adapt"):
        apply_lora(_tiny(), 2, 2.0, targets=("no_such_layer",))


def test_only_the_new_token_rows_train_and_the_logits_are_unchanged():
    from insideout.finetune.lora import train_new_token_rows

    model = _tiny()
    idx = torch.randint(0, 61, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(idx)[0]
    apply_lora(model, 2, 2.0)
    train_new_token_rows(model, 3)
    with torch.no_grad():
        after = model(idx)[0]
    assert (after - before).abs().max() < 1e-6
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "tok_emb.new_rows" in trainable and not any("frozen" in n for n in trainable)
    loss = model(idx, idx)[1]
    loss.backward()
    assert model.tok_emb.new_rows.grad is not None and model.tok_emb.new_rows.grad.abs().sum() > 0
    assert model.lm_head.weight.shape == (61, 32)
    with pytest.raises(ValueError, match="n_new"):
        train_new_token_rows(_tiny(), 0)
