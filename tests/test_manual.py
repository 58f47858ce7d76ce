"""Part 1's pure-Python GPT against the course's PyTorch GPT in float64: logits, loss, every gradient, AdamW."""

from __future__ import annotations

import math

import pytest
import torch

from insideout import manual as M
from insideout.gpt.model import GPT, GPTConfig

TOL = 1e-12


def _torch_model(params: dict) -> GPT:
    model = GPT(GPTConfig(**M.TINY_CONFIG)).double()
    model.load_state_dict_strict({k: torch.tensor(v, dtype=torch.float64) for k, v in params.items()})
    return model


def _diff(a: torch.Tensor, b) -> float:
    return (a.detach() - torch.tensor(b, dtype=torch.float64)).abs().max().item()


@pytest.fixture(scope="module")
def params():
    return M.initial_parameters()


def _torch_forward(model: GPT):
    idx = torch.tensor([M.TOKENS])
    targets = torch.tensor([M.TARGETS_WITH_IGNORE])
    return model(idx, targets)


def test_interface(params):
    assert M.VOCAB == ["<pad>", "<bos>", "<eos>", "I", "like", "transformers"]
    assert [M.VOCAB[i] for i in M.TOKENS] == ["<bos>", "I", "like", "transformers", "<eos>"]
    assert M.TARGETS == M.TOKENS[1:] and M.TARGETS_WITH_IGNORE == M.TOKENS[1:] + [-100]
    cfg = GPTConfig(**M.TINY_CONFIG)
    assert (cfg.vocab_size, cfg.context_length, cfg.d_model, cfg.n_layer, cfg.n_head, cfg.d_ff) == (6, 5, 16, 1, 2, 64)
    assert cfg.tie_weights and cfg.bias and cfg.position == "learned" and cfg.dropout == 0.0
    model = GPT(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "lm_head.weight"}
    assert {k: M.shape(v) for k, v in params.items()} == expected
    assert list(params) == list(expected), "initial_parameters must follow the state-dict order"
    assert M.num_parameters(params) == model.num_parameters() == 3488


def test_initialisation_is_seeded_and_documented(params):
    assert M.initial_parameters() == params, "same seed must give the same weights"
    assert M.initial_parameters(seed=1) != params
    for name, value in params.items():
        flat = M.flatten(value)
        assert all(round(x, 4) == x for x in flat), f"{name}: values must be rounded to 4 decimals"
        mean, std = M.init_std(name, M.shape(value))
        sample_mean = sum(flat) / len(flat)
        assert abs(sample_mean - mean) < 4 * std / math.sqrt(len(flat)) + 1e-4, name
    assert abs(M.init_std("blocks.0.mlp.proj.weight", (16, 64))[1] - 0.125) < 1e-15


def test_logits_and_loss_match_pytorch(params):
    model = _torch_model(params)
    logits, loss = _torch_forward(model)
    my_logits, my_loss = M.logits_and_loss(params)
    assert _diff(logits[0], my_logits) <= TOL
    assert abs(loss.item() - my_loss) <= TOL


def test_every_activation_matches_pytorch_hooks(params):
    model = _torch_model(params)
    seen = {}
    names = {"hook_embed": "embed", "blocks.0.hook_resid_mid": "blocks.0.resid_mid",
             "blocks.0.hook_resid_post": "blocks.0.resid_post", "blocks.0.hook_attn_out": "blocks.0.attn.out",
             "blocks.0.hook_mlp_out": "blocks.0.mlp.out", "blocks.0.mlp.hook_post": "blocks.0.mlp.post",
             "hook_final": "ln_f.out", "blocks.0.attn.hook_pattern": "blocks.0.attn.pattern",
             "blocks.0.attn.hook_q": "blocks.0.attn.q", "blocks.0.attn.hook_z": "blocks.0.attn.z"}
    modules = dict(model.named_modules())
    for hook, key in names.items():
        modules[hook].register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, o.detach()[0]))
    _torch_forward(model)
    acts = M.forward(params)
    for key, value in seen.items():
        mine = acts[key]
        if key.endswith((".q", ".z")):  # torch: (T, H, d_head); ours: H x (T, d_head)
            value = value.transpose(0, 1)
        assert _diff(value, mine) <= TOL, key


def test_every_gradient_matches_autograd(params):
    model = _torch_model(params)
    _, loss = _torch_forward(model)
    loss.backward()
    my_loss, grads = M.loss_and_gradients(params)
    named = dict(model.named_parameters())
    assert set(named) == set(grads), "one gradient per distinct parameter (the tied head is tok_emb.weight)"
    for name, p in named.items():
        assert _diff(p.grad, grads[name]) <= TOL, name
    # the causal mask makes the last position irrelevant to the loss: its position row gets exactly zero gradient
    assert grads["pos_emb.weight"][4] == [0.0] * 16


def _torch_adamw(model: GPT) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if M.decays(n, M.initial_parameters()[n])]
    no_decay = [p for n, p in model.named_parameters() if not M.decays(n, M.initial_parameters()[n])]
    assert all(p.dim() == 2 for p in decay) and all(p.dim() == 1 for p in no_decay)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": M.ADAMW["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=M.ADAMW["lr"], betas=M.ADAMW["betas"], eps=M.ADAMW["eps"], foreach=False)


D = M.TINY_CONFIG["d_model"]
KEY_BIAS = slice(D, 2 * D)  # the K rows of the fused [Q; K; V] bias


def test_key_bias_gradient_is_zero_in_exact_arithmetic(params):
    """q . (k_j + b) = q . k_j + q . b shifts a whole score row by the same amount, which softmax ignores."""
    _, grads = M.loss_and_gradients(params)
    assert max(abs(x) for x in grads["blocks.0.attn.qkv.bias"][KEY_BIAS]) < 1e-15
    assert min(abs(x) for x in grads["blocks.0.attn.qkv.bias"][:D]) > 1e-4


NOISE = 1e-15  # bound on the rounding noise of a gradient that is exactly 0 in exact arithmetic


def _compare_after_step(model: GPT, mine: dict, grads_torch: dict, grads_mine: dict, steps: int) -> None:
    """All parameters agree to TOL, except the key bias: its true gradient is 0, so each side moves by
    lr * m_hat / (sqrt(v_hat) + eps) <= lr * NOISE / eps per step, driven by its own rounding noise."""
    lr, eps = M.ADAMW["lr"], M.ADAMW["eps"]
    tag = steps
    for name, p in model.named_parameters():
        if name == "blocks.0.attn.qkv.bias":
            kb_t, kb_m = p.detach()[KEY_BIAS].tolist(), mine[name][KEY_BIAS]
            g_t, g_m = grads_torch[name][KEY_BIAS], grads_mine[name][KEY_BIAS]
            for a, b, x, y in zip(kb_t, kb_m, g_t, g_m, strict=True):
                assert abs(x) < NOISE and abs(y) < NOISE, (tag, "key-bias gradient is not rounding noise")
                assert abs(a - b) <= 2 * steps * lr * NOISE / eps, tag
            rest = list(range(0, D)) + list(range(2 * D, 3 * D))
            assert max(abs(p.detach()[i].item() - mine[name][i]) for i in rest) <= TOL, (tag, name)
        else:
            assert _diff(p, mine[name]) <= TOL, (tag, name)


def test_adamw_matches_torch_on_the_same_gradients(params):
    """The optimiser alone: torch's gradients fed to our adamw_step give torch's parameters, every entry."""
    model = _torch_model(params)
    opt = _torch_adamw(model)
    _, loss = _torch_forward(model)
    loss.backward()
    grads_torch = {n: p.grad.tolist() for n, p in model.named_parameters()}
    opt.step()
    mine, state = M.adamw_step(params, grads_torch)
    for name, p in model.named_parameters():
        assert _diff(p, mine[name]) <= TOL, name
        assert _diff(opt.state[p]["exp_avg"], state["m"][name]) <= TOL, name
        assert _diff(opt.state[p]["exp_avg_sq"], state["v"][name]) <= TOL, name


def test_adamw_steps_match_torch(params):
    """The whole pipeline, three times: our loss, gradients and AdamW against torch's loss, autograd and AdamW."""
    model = _torch_model(params)
    opt = _torch_adamw(model)
    mine, state = params, None
    for step in range(3):  # the first step is chapter 10's; two more exercise the moments and bias correction
        opt.zero_grad()
        _, loss = _torch_forward(model)
        loss.backward()
        grads_torch = {n: p.grad.tolist() for n, p in model.named_parameters()}
        opt.step()
        my_loss, grads = M.loss_and_gradients(mine)
        assert abs(loss.item() - my_loss) <= TOL, step
        mine, state = M.adamw_step(mine, grads, state)
        _compare_after_step(model, mine, grads_torch, grads, step + 1)
    assert state["step"] == 3


def test_one_step_lowers_the_loss(params):
    loss0, grads = M.loss_and_gradients(params)
    new, _ = M.adamw_step(params, grads)
    assert M.loss_only(new) < loss0
    assert params == M.initial_parameters(), "adamw_step must not modify its inputs"
