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
# # 02 · Diffusion as a Special Case
#
# Diffusion models {cite}`sohldickstein2015deep,ho2020denoising,song2021score` were invented before flow matching
# and are usually told as a different story: a *forward process* that destroys data by adding Gaussian noise in
# many small steps, and a network trained to *predict the noise* so that the process can be run backwards. This
# chapter shows that it is the construction of [chapter 01](01_flow_matching_2d.ipynb) with another path and
# another parametrisation of the same regression. You will
#
# 1. write the Gaussian noising path in the form $x_t = \alpha_t x_1 + \sigma_t x_0$ and compare it with DDPM's
#    discrete schedule,
# 2. see that predicting the noise, the data or the velocity are linear re-expressions of one another,
# 3. train the same network as in chapter 01 on the Gaussian path with the noise-prediction objective,
# 4. compare the stochastic DDPM sampler with the deterministic DDIM and ODE samplers at equal numbers of network
#    evaluations — and the noise target with the velocity target on the same path.

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
from myst_nb import glue

from insideout.diffusion.data import sample_toy
from insideout.diffusion.metrics import energy_distance
from insideout.diffusion.paths import GaussianPath, LinearPath, ddpm_alphas_cumprod
from insideout.diffusion.plots import scatter
from insideout.diffusion.sampling import solve
from insideout.diffusion.toy import ToyRecipe, train_toy
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")
preset, device = setup(seed=0)
TOY = "moons"
data = sample_toy(TOY, 2000, seed=10)
floor = energy_distance(data, sample_toy(TOY, 2000, seed=11))
print(f"{TOY}: energy distance between two real sets of 2,000 points {floor:.4f}")

# %% [markdown]
# ## The Gaussian path
#
# DDPM {cite}`ho2020denoising` noises a data point $x$ in $N = 1000$ steps, $q(x_k \mid x_{k-1}) =
# \mathcal{N}(\sqrt{1 - \beta_k}\,x_{k-1}, \beta_k I)$ with small variances $\beta_k$ rising linearly from
# $10^{-4}$ to $0.02$. Composing the steps gives a closed form for any $k$: with
# $\bar\alpha_k = \prod_{i \le k} (1 - \beta_i)$,
#
# $$
# x_k = \sqrt{\bar\alpha_k}\; x + \sqrt{1 - \bar\alpha_k}\;\varepsilon, \qquad \varepsilon \sim \mathcal{N}(0, I).
# $$
#
# That is an affine path between data and noise. In the notation of chapter 01 (time $t$ from noise at 0 to data at
# 1, data $x_1 = x$, noise $x_0 = \varepsilon$), $x_t = \alpha_t x_1 + \sigma_t x_0$ with $\alpha_t^2 + \sigma_t^2 = 1$:
# the path *preserves variance* instead of interpolating linearly. As $N \to \infty$ the linear-$\beta$ schedule
# becomes $\alpha_t = \exp\!\big(-\tfrac12 \int_0^{1-t} \beta(s)\,\mathrm{d}s\big)$ with $\beta(s) = 0.1 + 19.9\,s$,
# Song et al.'s variance-preserving SDE {cite}`song2021score` (`GaussianPath("linear")`). Compare it with the
# discrete schedule (the course's tests check the discrete one against `diffusers`' `DDPMScheduler` and the
# continuous one against `flow_matching`'s `VPScheduler`):

# %%
abar = ddpm_alphas_cumprod(1000, "linear")
vp = GaussianPath("linear")
k = torch.arange(1000, dtype=torch.float64)
continuous = vp.alpha_bar(1 - (k + 1) / 1000)  # diffusion time tau = (k + 1) / N
gap = (abar - continuous).abs().max().item()
print(f"max |alpha_bar discrete - continuous| over 1000 steps = {gap:.2e}; alpha_t at t = 0: "
      f"{vp.coefficients(torch.zeros(1, dtype=torch.float64))[0].item():.4f} (DDPM's last step: "
      f"{abar[-1].sqrt().item():.4f})")

# %%
t = torch.linspace(0, 1, 201, dtype=torch.float64)
paths = {"linear (flow matching)": LinearPath(), "Gaussian, VP linear-beta (DDPM)": vp,
         "Gaussian, cosine": GaussianPath("cosine")}
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
for (name, path), color in zip(paths.items(), ("C0", "C1", "C2"), strict=True):
    a, s, _, _ = path.coefficients(t)
    ax1.plot(t, a, color=color, label=f"{name}: $\\alpha_t$")
    ax1.plot(t, s, color=color, ls="--", label="$\\sigma_t$")
    ax2.plot(t[1:-1], (a**2 / s**2)[1:-1], color=color, label=name)
ax1.plot((k + 1) / 1000, abar.sqrt().flip(0), "k:", lw=1, label="DDPM discrete $\\sqrt{\\bar\\alpha}$")
ax1.set(xlabel="t (0 = noise, 1 = data)", ylabel="coefficient", title="$x_t = \\alpha_t x_1 + \\sigma_t x_0$")
ax1.legend(fontsize=7)
ax2.set(xlabel="t", ylabel="signal-to-noise ratio $\\alpha_t^2 / \\sigma_t^2$", yscale="log",
        title="How fast the signal appears")
ax2.legend(fontsize=7)
fig.tight_layout()
plt.show()
a_vp, s_vp, _, _ = vp.coefficients(t)
a_lin, s_lin, _, _ = LinearPath().coefficients(t)
t_vp = t[torch.nonzero(a_vp**2 / s_vp**2 >= 0.01)[0, 0]].item()
t_lin = t[torch.nonzero(a_lin**2 / s_lin**2 >= 0.01)[0, 0]].item()
glue("t_vp", f"{t_vp:.2f}", display=False)
glue("t_lin", f"{t_lin:.2f}", display=False)
print(f"signal-to-noise ratio reaches 0.01 at t = {t_lin:.2f} on the linear path, at t = {t_vp:.2f} on the VP path")

# %% [markdown]
# The curves differ in *when* the signal appears: the linear path lets it grow steadily (its signal-to-noise ratio
# reaches 0.01 at $t$ = {glue:text}`t_lin`), while the DDPM schedule keeps the image almost pure noise for a third
# of the time (until $t$ = {glue:text}`t_vp`) and then reveals it quickly.
#
# ## Noise, data or velocity: one regression, three parametrisations
#
# DDPM trains a network $\varepsilon_\theta(x_t, t)$ to predict the noise, $\mathcal{L} =
# \mathbb{E}\lVert\varepsilon_\theta(x_t, t) - x_0\rVert^2$. On an affine path, knowing $x_t$ and the noise
# determines the data, $x_1 = (x_t - \sigma_t x_0)/\alpha_t$, and therefore the velocity
# $u_t = \dot\alpha_t x_1 + \dot\sigma_t x_0$:
#
# $$
# u_t = \frac{\dot\alpha_t}{\alpha_t}\,x_t + \Big(\dot\sigma_t - \frac{\dot\alpha_t\,\sigma_t}{\alpha_t}\Big)\,x_0 .
# $$
#
# The map is linear in the prediction, so the optimal noise predictor (the conditional mean of $x_0$) maps to the
# optimal velocity (the conditional mean of $u_t$): a noise-prediction model *is* a velocity field, seen through
# a time-dependent linear change of variables. The objectives differ only in how they weight errors at each
# time. Check the conversion on a batch:

# %%
g = torch.Generator().manual_seed(0)
x1, x0 = sample_toy(TOY, 6, generator=g), torch.randn(6, 2, generator=g)
tb = torch.rand(6, generator=g) * 0.9 + 0.05
x_t, u_t = vp.sample(x0, x1, tb)
a, s, da, ds = (c[:, None] for c in vp.coefficients(tb))
by_hand = da / a * x_t + (ds - da * s / a) * x0
for kind, output in (("epsilon", x0), ("data", x1), ("velocity", u_t)):
    err = (vp.to_velocity(kind, output, x_t, tb) - u_t).abs().max().item()
    print(f"velocity from the {kind:8s} prediction: max error {err:.1e}")
print(f"formula above vs path velocity: {(by_hand - u_t).abs().max().item():.1e}")
assert torch.allclose(by_hand, u_t, atol=1e-5)

# %% [markdown]
# ## The same network, trained both ways
#
# Three models with the same MLP, the same data stream, the same optimiser and the same number of steps:
#
# - **FM**: chapter 01's model — linear path, velocity target (loaded from the cache);
# - **DDPM-style**: Gaussian (VP) path, noise target;
# - **VP velocity**: Gaussian path, velocity target — to separate the effect of the path from that of the target.

# %%
# NBVAL_IGNORE_OUTPUT
# (says whether each model was loaded from the cache or trained now)
models = {
    "FM (linear, velocity)": (train_toy(ToyRecipe(toy=TOY))[0], LinearPath(), "velocity"),
    "DDPM-style (Gaussian, noise)": (train_toy(ToyRecipe(toy=TOY, path="gaussian-linear", prediction="epsilon"))[0],
                                     vp, "epsilon"),
    "VP velocity (Gaussian, velocity)": (train_toy(ToyRecipe(toy=TOY, path="gaussian-linear"))[0], vp, "velocity"),
}

# %% [markdown]
# ## Samplers at equal cost
#
# From the noise-prediction model, three ways to go from $t = 0$ to $t = 1$ on a grid of $n$ steps, each with one
# network evaluation per step:
#
# - **DDPM** (ancestral sampling, stochastic): estimate $\hat x_1$, then draw $x_s$ from the Gaussian posterior
#   $q(x_s \mid x_t, \hat x_1)$ — a step toward the data *plus fresh noise*;
# - **DDIM** {cite}`song2021denoising` (deterministic): $x_s = \sqrt{\bar\alpha_s}\,\hat x_1 +
#   \sqrt{1 - \bar\alpha_s}\,\hat\varepsilon$, keeping the predicted noise instead of drawing new noise;
# - **Euler** on the ODE with the velocity converted from the noise prediction.
#
# Both DDPM and DDIM are `ddim_step` with $\eta = 1$ and $\eta = 0$ (the library's version equals `diffusers`'
# schedulers in the tests). Measure the energy distance to the data by number of evaluations:

# %%
noise = torch.randn(2000, 2, generator=torch.Generator().manual_seed(3))
nfes = [5, 10, 20, 50, 100, 200]
runs = {
    "DDPM (stochastic)": ("DDPM-style (Gaussian, noise)", "ddpm"),
    "DDIM (deterministic)": ("DDPM-style (Gaussian, noise)", "ddim"),
    "Euler, noise model": ("DDPM-style (Gaussian, noise)", "euler"),
    "Euler, VP velocity model": ("VP velocity (Gaussian, velocity)", "euler"),
    "Euler, FM model": ("FM (linear, velocity)", "euler"),
}
results, finals = {}, {}
for name, (model_name, solver) in runs.items():
    model, path, prediction = models[model_name]
    results[name] = []
    for n in nfes:
        out = solve(model, noise, n, solver, path=path, prediction=prediction,
                    generator=torch.Generator().manual_seed(4))
        results[name].append(energy_distance(out, data))
        if n == 20:
            finals[name] = out
    print(f"{name:25s}: " + ", ".join(f"{n}: {v:.4f}" for n, v in zip(nfes, results[name], strict=True)))

# %%
fig = plt.figure(figsize=(14, 6.5))
ax = fig.add_subplot(2, 1, 1)
for (name, values), marker in zip(results.items(), "ovs^D", strict=True):
    ax.plot(nfes, values, marker + "-", label=name)
ax.axhline(floor, color="grey", ls="--", label="two real sets")
ax.set(xscale="log", yscale="log", xlabel="network function evaluations", ylabel="energy distance to data",
       title="Sample quality vs cost, same network trained on two paths")
ax.set_xticks(nfes, [str(n) for n in nfes])
ax.legend(fontsize=8, ncol=2)
for i, (name, out) in enumerate(finals.items()):
    scatter(fig.add_subplot(2, 5, 6 + i), out, f"{name}\n20 evaluations", s=0.5)
fig.tight_layout()
plt.show()

# %% [markdown]
# What the curves say — three findings, each for one comparison:
#
# - **Stochastic vs deterministic, same noise model.** At 10 evaluations DDPM and DDIM are about equally good. With
#   more steps DDPM keeps improving and ends well below DDIM, which stalls. The deterministic sampler solves the ODE
#   of the *learned* field and carries every error of the network to the end; DDPM's fresh noise at each step keeps
#   pulling the samples back toward the distribution the network was trained on, so its errors do not accumulate
#   the same way — an effect {cite:t}`karras2022elucidating` analyse in detail.
# - **Noise vs velocity target, same Gaussian path.** The network trained to predict the velocity is better at every
#   number of steps than the one trained to predict the noise, with the same sampler (Euler). Noise prediction is
#   ill-conditioned where the image is almost pure noise: the data estimate
#   $\hat x_1 = (x_t - \sigma_t \hat\varepsilon)/\alpha_t$ multiplies the network's error by $1/\alpha_t$, about 150
#   at $t = 0$ here. This is why later diffusion models predict the velocity or the data instead
#   {cite}`salimans2022progressive`.
# - **Linear vs Gaussian path, both velocity models.** On this toy the Gaussian path is the better one for few
#   steps, and the linear path is slightly better with many. Straightness (chapter 01) is not the only thing that
#   matters for a coarse grid: the Gaussian path keeps the points near pure noise for a long time, where the field
#   is simple and easy to follow. The course's image chapters use the linear path, where minibatch OT and the
#   literature on rectified flows {cite}`liu2023flow,esser2024scaling` point.
#
# ## Check

# %%
i10, i200 = nfes.index(10), nfes.index(200)
ddpm, ddim = results["DDPM (stochastic)"], results["DDIM (deterministic)"]
eps_euler, vel_euler = results["Euler, noise model"], results["Euler, VP velocity model"]
fm = results["Euler, FM model"]
assert abs(ddpm[i10] - ddim[i10]) < 0.5 * ddim[i10], f"at 10 evaluations DDPM and DDIM should be close: {results}"
assert ddpm[i200] < 0.75 * ddim[i200], f"with many steps the stochastic sampler should win: {ddpm} vs {ddim}"
assert all(v < e for v, e in zip(vel_euler, eps_euler, strict=True)), "the velocity target should win at every NFE"
assert vel_euler[0] < fm[0] and fm[i200] < 1.1 * vel_euler[i200], (fm, vel_euler)
print(f"checks passed: at 200 evaluations DDPM {ddpm[i200]:.4f} vs DDIM {ddim[i200]:.4f}; velocity vs noise "
      f"target {vel_euler[i200]:.4f} vs {eps_euler[i200]:.4f}")

# %% [markdown]
# ## Recap
#
# - A diffusion model's noising process is an affine path $x_t = \alpha_t x_1 + \sigma_t x_0$ with
#   $\alpha_t^2 + \sigma_t^2 = 1$; DDPM's discrete schedule is a fine discretisation of it.
# - Predicting the noise, the data or the velocity are linear re-expressions of each other given $x_t$; any of them
#   drives the same samplers.
# - Measured at equal numbers of network evaluations: for the noise model, stochastic DDPM sampling matches
#   deterministic DDIM at 10 evaluations and beats it with many; on the same path, training for the velocity beats
#   training for the noise at every budget.
# - From [chapter 03](03_unet.ipynb) on, the course uses the linear path with the velocity target and an ODE
#   solver, on images.
