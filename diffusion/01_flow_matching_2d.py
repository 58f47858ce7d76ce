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
# # 01 · Flow Matching in 2-D
#
# A generative model has to turn something easy to sample — standard normal noise — into something hard: samples
# of the data. **Flow matching** {cite}`lipman2023flow,liu2023flow,albergo2023building` does it with a
# *velocity field*: a network $v_\theta(x, t)$ that says, at every point $x$ and time $t \in [0, 1]$, in which
# direction and how fast to move. Start at noise $x_0 \sim \mathcal{N}(0, I)$ at $t = 0$, follow the ordinary
# differential equation
#
# $$
# \frac{\mathrm{d}x_t}{\mathrm{d}t} = v_\theta(x_t, t)
# $$
#
# to $t = 1$, and the endpoint should be a sample of the data. This chapter does it in two dimensions, where every
# sample can be seen. You will
#
# 1. build the linear path from noise to data and its velocity target, and check them against the library,
# 2. train a small MLP velocity field with the flow-matching loss,
# 3. sample with Euler's method and with the second-order midpoint method, and measure quality against the number
#    of network evaluations,
# 4. pair noise and data by minibatch optimal transport and measure how much straighter the learned paths get.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package first
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "insideout @ git+https://github.com/insideout-course/transformers-inside-out"], check=True)

# %%
import warnings

import matplotlib.pyplot as plt
import torch

from insideout.diffusion.data import sample_toy
from insideout.diffusion.metrics import energy_distance
from insideout.diffusion.paths import LinearPath, ot_pair
from insideout.diffusion.plots import scatter
from insideout.diffusion.sampling import solve
from insideout.diffusion.toy import ToyRecipe, train_toy
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")
preset, device = setup(seed=0)
TOY = "moons"
data = sample_toy(TOY, 2000, seed=10)  # held-out data samples to compare with
floor = energy_distance(data, sample_toy(TOY, 2000, seed=11))
print(f"toy distribution: {TOY}; energy distance between two real sets of 2,000 points: {floor:.4f}")

# %% [markdown]
# ## The linear path and its velocity
#
# Pick a data point $x_1$ and a noise point $x_0$, and join them by a straight line:
#
# $$
# x_t = t\,x_1 + (1 - t)\,x_0, \qquad u_t = \frac{\mathrm{d}x_t}{\mathrm{d}t} = x_1 - x_0 .
# $$
#
# Along this *conditional* path the velocity $u_t$ is constant. No single network can follow every such line, since
# many lines pass through the same point $x$ at the same $t$, heading to different data points. What the network
# can learn is their average, the *marginal* velocity $v(x, t) = \mathbb{E}[\,x_1 - x_0 \mid x_t = x\,]$; the ODE
# with that field carries the whole noise distribution to the whole data distribution {cite}`lipman2023flow`. And
# the average is exactly what least squares learns: minimising
#
# $$
# \mathcal{L}(\theta) = \mathbb{E}_{t \sim U[0,1],\; x_0,\; x_1}\,\big\lVert v_\theta(x_t, t) - (x_1 - x_0)\big\rVert^2
# $$
#
# over all pairs gives, at every $(x, t)$, the conditional mean of the target. So training needs only samples:
# draw data, draw noise, draw a time, regress. Build a batch by hand and compare with the library's path:

# %%
g = torch.Generator().manual_seed(0)
x1 = sample_toy(TOY, 8, generator=g)  # data
x0 = torch.randn(8, 2, generator=g)  # noise
t = torch.rand(8, generator=g)
x_t = t[:, None] * x1 + (1 - t[:, None]) * x0  # (8, 2) by hand
u_t = x1 - x0
lib_x, lib_u = LinearPath().sample(x0, x1, t)
print(f"max |x_t - library| = {(x_t - lib_x).abs().max().item():.1e}, max |u_t - library| = "
      f"{(u_t - lib_u).abs().max().item():.1e}")
assert torch.equal(x_t, lib_x) and torch.equal(u_t, lib_u)

# %% [markdown]
# The library's path is also checked against Meta's `flow_matching` package in the course's tests. Here is what the
# path does to a whole cloud of independent pairs: at $t = 0$ it is the noise, at $t = 1$ the data, and in between a
# blend of the two.

# %%
x1_many, x0_many = sample_toy(TOY, 2000, seed=1), torch.randn(2000, 2, generator=torch.Generator().manual_seed(2))
fig, axes = plt.subplots(1, 5, figsize=(14, 3))
for ax, tau in zip(axes, (0.0, 0.25, 0.5, 0.75, 1.0), strict=True):
    scatter(ax, LinearPath().sample(x0_many, x1_many, torch.full((2000,), tau))[0], f"$x_t$ at t = {tau}")
fig.suptitle("The linear path from noise (t = 0) to data (t = 1), independent pairs")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Training a velocity field
#
# The network is an MLP with three hidden layers of 128 units; the time enters as sines and cosines
# (`toy.MLPField`). The training recipe — 1,000 steps of 256 fresh samples, AdamW with warmup and cosine decay —
# runs through the course's shared loop `insideout.training.fit` and is cached, like every model of this part.

# %%
# NBVAL_IGNORE_OUTPUT
# (says whether the model was loaded from the cache or trained now)
recipe = ToyRecipe(toy=TOY)
model, meta = train_toy(recipe)

# %%
loss = torch.tensor(meta["loss"])
print(f"{recipe.steps} steps, {meta['items']:,} samples; loss {loss[:50].mean():.4f} (first 50 steps) -> "
      f"{loss[-200:].mean():.4f} (last 200)")

# %% [markdown]
# The loss does not go to zero, and should not: the target $x_1 - x_0$ is random given $(x_t, t)$, and the best the
# network can do is its conditional mean. What remains is the conditional variance.
#
# ## Solving the ODE: Euler and midpoint
#
# Split $[0, 1]$ into $n$ steps of size $h = 1/n$. **Euler's method** follows the current velocity for a whole
# step, $x_{t+h} = x_t + h\,v_\theta(x_t, t)$: one network evaluation per step, error $O(h)$. The **midpoint
# method** first takes half a step to look ahead, then uses the velocity found there:
#
# $$
# x_{t+h} = x_t + h\,v_\theta\!\left(x_t + \tfrac{h}{2}\,v_\theta(x_t, t),\; t + \tfrac{h}{2}\right),
# $$
#
# two evaluations per step but error $O(h^2)$. The fair comparison is at equal *network function evaluations*
# (NFE), the cost that matters. Euler by hand, checked against the library's solver:

# %%
noise = torch.randn(2000, 2, generator=torch.Generator().manual_seed(3))
steps = 8
x = noise.clone()
with torch.no_grad():
    for i in range(steps):
        x = x + (1 / steps) * model(x, torch.full((2000,), i / steps))
library = solve(model, noise, steps, "euler")
print(f"max |hand-written Euler - library| = {(x - library).abs().max().item():.1e}")
assert torch.allclose(x, library, atol=1e-6)

# %%
nfes = [1, 2, 4, 8, 16, 32, 64]
quality = {"euler": [], "midpoint": []}
samples = {}
for nfe in nfes:
    for solver, per_step in (("euler", 1), ("midpoint", 2)):
        if nfe < per_step:
            quality[solver].append(float("nan"))
            continue
        out = solve(model, noise, nfe // per_step, solver)
        samples[(solver, nfe)] = out
        quality[solver].append(energy_distance(out, data))
for solver, values in quality.items():
    shown = ", ".join(f"{n}: {v:.4f}" for n, v in zip(nfes, values, strict=True))
    print(f"{solver:9s}: energy distance by NFE {shown}")
match = next(n for n, v in zip(nfes, quality["euler"], strict=True) if v <= quality["midpoint"][nfes.index(4)])
print(f"Euler needs {match} evaluations to match the midpoint method's quality at 4")

# %%
fig, (ax, *grid) = plt.subplots(1, 4, figsize=(15, 3.6), gridspec_kw={"width_ratios": [1.4, 1, 1, 1]})
for solver, marker in (("euler", "o-"), ("midpoint", "s-")):
    ax.plot(nfes, quality[solver], marker, label=solver)
ax.axhline(floor, color="grey", ls="--", label="two real sets")
ax.set(xscale="log", yscale="log", xlabel="network function evaluations (NFE)", ylabel="energy distance to data",
       title="Sample quality vs cost")
ax.set_xticks(nfes, [str(n) for n in nfes])
ax.legend()
for a, key in zip(grid, (("euler", 2), ("euler", 8), ("midpoint", 8)), strict=True):
    scatter(a, samples[key], f"{key[0]}, NFE {key[1]}")
fig.tight_layout()
plt.show()

# %% [markdown]
# With one or two evaluations the samples are a smeared average; by 16–32 evaluations they are as close to the
# data as the network allows, and more steps no longer help — what is left is the error of the learned field, not
# of the solver. Where the solver error dominates, the midpoint method's second order shows: at equal cost it gets
# much closer to that floor.
#
# ## Straighter paths: optimal-transport pairing
#
# Why does a one-step sample fail? The ODE's trajectories are **curved**: the marginal velocity averages lines that
# cross, and a single Euler step can only follow a straight line. If the pairs $(x_0, x_1)$ crossed less, the
# average would be straighter. Minibatch **optimal transport** {cite}`tong2024improving,pooladian2023multisample`
# re-pairs each training batch: among all $B!$ ways to match the $B$ noise points with the $B$ data points, take
# the one with the least total squared distance (the Hungarian algorithm, `paths.ot_pair`). The training target is
# unchanged; only who is paired with whom.

# %%
gb = torch.Generator().manual_seed(4)
b1, b0 = sample_toy(TOY, 64, generator=gb), torch.randn(64, 2, generator=gb)
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for ax, (name, pair0) in zip(axes, (("independent pairs", b0), ("optimal-transport pairs", ot_pair(b0, b1))),
                             strict=True):
    for p, q in zip(pair0, b1, strict=True):
        ax.plot([p[0], q[0]], [p[1], q[1]], color="grey", lw=0.6)
    ax.scatter(*pair0.T, s=10, color="C0", label="noise $x_0$")
    ax.scatter(*b1.T, s=10, color="C3", label="data $x_1$")
    ax.set(title=f"{name}: total squared length {((pair0 - b1) ** 2).sum():.0f}", aspect="equal",
           xlim=(-3, 3), ylim=(-3, 3))
axes[0].legend(loc="lower left", fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Train the same network, same recipe, with OT pairs:

# %%
# NBVAL_IGNORE_OUTPUT
# (says whether the model was loaded from the cache or trained now)
ot_recipe = ToyRecipe(toy=TOY, coupling="ot")
ot_model, ot_meta = train_toy(ot_recipe)

# %% [markdown]
# Two measures of straightness, both on ODE trajectories solved finely (64 midpoint steps) from the same noise:
#
# - the **length ratio**: the length of the trajectory divided by the distance between its endpoints, 1 for a
#   straight line;
# - the **straightness** of {cite}`liu2023flow`: $S = \int_0^1 \mathbb{E}\,\lVert (x_1 - x_0) - v_\theta(x_t, t)
#   \rVert^2\,\mathrm{d}t$ along the trajectory, zero when the velocity never changes.

# %%
def straightness(field) -> tuple[float, float, list[torch.Tensor]]:
    end, states = solve(field, noise, 64, "midpoint", trajectory=True)
    path = torch.stack(states)  # (65, N, 2)
    length = (path[1:] - path[:-1]).norm(dim=-1).sum(0)
    ratio = (length / (end - noise).norm(dim=-1)).mean().item()
    with torch.no_grad():
        dev = [((end - noise) - field(p, torch.full((len(p),), i / 64))).pow(2).sum(-1).mean()
               for i, p in enumerate(states[:-1])]
    return ratio, torch.stack(dev).mean().item(), states


straight = {}
for name, field in (("independent", model), ("optimal transport", ot_model)):
    ratio, s, states = straightness(field)
    one_step = energy_distance(solve(field, noise, 1, "euler"), data)
    two_step = energy_distance(solve(field, noise, 2, "euler"), data)
    fine = energy_distance(states[-1], data)
    straight[name] = {"ratio": ratio, "S": s, "nfe1": one_step, "nfe2": two_step, "fine": fine, "states": states}
    print(f"{name:18s}: length ratio {ratio:.4f}, straightness S {s:.4f}; energy distance with 1 Euler step "
          f"{one_step:.4f}, 2 steps {two_step:.4f}, 64 midpoint steps {fine:.4f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for ax, (name, info) in zip(axes, straight.items(), strict=True):
    path = torch.stack(info["states"])[:, :300]  # 300 trajectories
    for k in range(path.shape[1]):
        ax.plot(path[:, k, 0], path[:, k, 1], color="C0", lw=0.4, alpha=0.5)
    ax.scatter(*path[-1].T, s=3, color="C3")
    ax.set(title=f"{name}: length ratio {info['ratio']:.3f}", aspect="equal", xlim=(-3, 3), ylim=(-3, 3),
           xlabel="$x_1$", ylabel="$x_2$")
fig.suptitle("ODE trajectories from the same noise (64 midpoint steps); red: where they end")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Check
#
# The claims of this chapter, measured above: more evaluations give better samples with both solvers, up to the
# floor set by the learned field; and OT pairing makes the learned trajectories straighter, which shows as better
# few-step samples.

# %%
euler, mid = quality["euler"], quality["midpoint"]
i4 = nfes.index(4)
assert euler[-1] < euler[0] / 20, f"more Euler steps should give far better samples: {euler}"
assert mid[i4] < euler[i4] / 2, f"at 4 evaluations the midpoint method should beat Euler: {quality}"
assert abs(mid[-1] - euler[-1]) < 0.25 * euler[-1], f"both solvers should reach the same floor: {quality}"
ind, ot = straight["independent"], straight["optimal transport"]
assert ot["ratio"] < ind["ratio"] and ot["S"] < ind["S"] / 2, (ind["ratio"], ot["ratio"], ind["S"], ot["S"])
assert ot["nfe1"] < ind["nfe1"], (ind["nfe1"], ot["nfe1"])
print(f"checks passed: NFE 1 -> 64 improves Euler {euler[0] / euler[-1]:.0f}x; OT straightness "
      f"{ind['S']:.3f} -> {ot['S']:.3f}")

# %% [markdown]
# ## Recap
#
# - Flow matching trains a velocity field by regression on the velocity of a simple conditional path; on the
#   linear path that target is $x_1 - x_0$.
# - Sampling solves an ODE. Its cost is the number of network evaluations; the solver error falls with more steps
#   and a higher-order method, until the network's own error dominates.
# - Pairing noise and data by minibatch optimal transport leaves the target unchanged but makes the trajectories
#   measurably straighter, and few-step sampling better.
# - [Chapter 02](02_diffusion.ipynb) shows that diffusion models are this same construction with a different path.
