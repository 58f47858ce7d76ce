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
# # 07 · An Autoencoder for Latent Diffusion
#
# Every model so far denoised pixels: 768 numbers per 16 × 16 image, and many more for a real photograph. Most of
# those numbers are predictable from their neighbours. **Latent diffusion** {cite}`rombach2022high` first trains an
# **autoencoder** that squeezes an image into a smaller grid of numbers, the **latent**, and back; the diffusion
# model then learns the distribution of latents, which is cheaper per step, and the decoder turns its samples into
# images. This chapter builds that autoencoder, a small convolutional **variational autoencoder** (VAE)
# {cite}`kingma2014auto`, and measures
#
# 1. the latent shape and what it saves;
# 2. how faithfully images come back (PSNR, and whether the judge still reads the same scene);
# 3. the trade-off set by the weight $\beta$ of the KL term: faithful reconstructions against latents close to a
#    standard normal distribution, which is what a diffusion model starts from.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package first
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "insideout @ git+https://github.com/insideout-course/transformers-inside-out"], check=True)

# %%
import time
import warnings

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

from insideout.diffusion import judge as J
from insideout.diffusion import train as T
from insideout.diffusion.data import from_model, make_shapes, to_model
from insideout.diffusion.metrics import psnr
from insideout.diffusion.plots import image_grid, table
from insideout.diffusion.vae import VAEConfig, kl_per_number
from insideout.utils import setup, within

warnings.filterwarnings("ignore", message="IProgress not found")
preset, device = setup(seed=0)
betas = [1e-4, 1e-3, 1e-2]
recipes = {beta: T.recipe(f"vae-{beta:g}", preset) for beta in betas}
cfg = VAEConfig.from_dict(recipes[1e-3].model)
print(f"VAE: {cfg.channels} channels, {cfg.n_down} downsampling, latent {cfg.latent_shape}; KL weights "
      f"{', '.join(f'{b:g}' for b in betas)}; {recipes[1e-3].optim['max_steps']} steps of "
      f"{recipes[1e-3].batch_size} images each")

# %% [markdown]
# ## Encoder, latent, decoder
#
# The encoder is a few residual convolution blocks with one stride-2 convolution: a 3 × 16 × 16 image becomes a
# grid of 8 × 8 positions with 4 channels. The decoder mirrors it, with a nearest-neighbour upsampling in place of
# the stride. Each latent number is not one value but a Gaussian: the encoder outputs its mean $\mu$ and
# log-variance $\log s^2$, and a latent is drawn as $z = \mu + s\,n$ with $n \sim \mathcal{N}(0, 1)$ — the
# *reparameterisation trick*, which lets the gradient flow through the draw into $\mu$ and $s$.

# %%
torch.manual_seed(0)
vae = T.build(recipes[1e-3])
x = to_model(make_shapes(2, "mixed", "test", seed=700).images)  # (2, 3, 16, 16) in [-1, 1]
recon, mu, logvar = vae(x)
latent_numbers, pixel_numbers = mu[0].numel(), x[0].numel()
print(f"image {tuple(x.shape)} -> mu, log s^2 {tuple(mu.shape)} -> reconstruction {tuple(recon.shape)}")
print(f"numbers per image: {pixel_numbers} pixels -> {latent_numbers} latent numbers "
      f"({pixel_numbers / latent_numbers:.0f}x fewer); parameters: encoder "
      f"{sum(p.numel() for p in vae.encoder.parameters()):,}, "
      f"decoder {sum(p.numel() for p in vae.decoder.parameters()):,}")

# %% [markdown]
# ## The loss: reconstruction plus $\beta$ times KL
#
# Per number, the loss is the squared reconstruction error plus $\beta$ times the KL divergence of the encoder's
# Gaussian from a standard normal,
#
# $$
# L = \overline{(x - D(z))^2} + \beta \cdot \tfrac12\, \overline{\mu^2 + s^2 - 1 - \log s^2}.
# $$
#
# Without the KL term ($\beta = 0$) the encoder may put its latents anywhere, at any scale, with $s \to 0$: a
# plain autoencoder. The KL term pulls every $q(z \mid x)$ towards $\mathcal{N}(0, 1)$, which makes the set of
# latents smooth and of a known scale. The closed form above, checked against PyTorch's distributions:

# %%
q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
reference_kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean()
gap = abs(kl_per_number(mu, logvar) - reference_kl).item()
print(f"KL per number: closed form {kl_per_number(mu, logvar).item():.5f}, torch.distributions "
      f"{reference_kl.item():.5f}; difference {within(gap, 1e-6, 'float32 rounding')}")

# %% [markdown]
# ## Three KL weights
#
# Train the same autoencoder with $\beta = 10^{-4}, 10^{-3}, 10^{-2}$ on the 16,000 captioned scenes of chapter 06
# (one and two objects), same data order, same noise:

# %%
# NBVAL_IGNORE_OUTPUT
# (says whether each model was loaded from the cache or trained now)
trained = {beta: T.train(r) for beta, r in recipes.items()}

# %%
# NBVAL_IGNORE_OUTPUT
# (throughput depends on the machine and its load)
for beta, (_, meta) in trained.items():
    print(f"beta {beta:g}: {meta['train_seconds']:.1f} s wall, {meta['cpu_seconds']:.1f} s CPU, "
          f"{meta['items'] / meta['train_seconds']:.0f} images per second")

# %% [markdown]
# Measure each on 500 test scenes it has never seen: the PSNR of the reconstruction from the mean latent $\mu$
# (peak signal-to-noise ratio, $10 \log_{10}(1/\text{MSE})$ on [0, 1] images: 20 dB is visibly blurred, 30 dB
# nearly exact), the judge's verdict that the reconstruction shows the same scene, the KL per latent number, and the
# standard deviation of the latents $z$.

# %%
test = make_shapes(500, "mixed", "test", seed=701)
x_test = to_model(test.images)
rows, recons = {}, {}
for beta, (vae_b, meta) in trained.items():
    with torch.no_grad():
        mu_b, logvar_b = vae_b.encode(x_test)
        recons[beta] = from_model(vae_b.decode(mu_b))
    verdict = J.accuracy(J.score(recons[beta], test.scenes))
    rows[f"{beta:g}"] = {"PSNR (dB)": psnr(test.images, recons[beta]).mean().item(),
                         "judge: same scene": verdict["all"], "KL per number": kl_per_number(mu_b, logvar_b).item(),
                         "latent std": meta["latent_std"]}
results = pd.DataFrame(rows).T
results.index.name = "beta"
real_verdict = J.accuracy(J.score(test.images, test.scenes))["all"]
display(table(results, 3))
print(f"the judge on the real test images themselves: {real_verdict:.3f}")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
ax1.plot(betas, results["PSNR (dB)"], "o-")
ax1.set(xscale="log", xlabel="KL weight beta", ylabel="PSNR (dB)", title="Reconstruction quality")
ax2.plot(betas, results["KL per number"], "o-", color="C1")
ax2.set(xscale="log", yscale="log", xlabel="KL weight beta", ylabel="KL per latent number (nats)",
        title="Distance of q(z|x) from N(0, 1)")
fig.tight_layout()
plt.show()

# %%
fig, axes = plt.subplots(4, 12, figsize=(12, 4.4))
image_grid(test.images[:12], ncol=12, axes=axes[:1])
for row, beta in enumerate(betas, start=1):
    image_grid(recons[beta][:12], ncol=12, axes=axes[row:row + 1])
    axes[row, 0].text(-10, 8, f"beta {beta:g}", fontsize=8, ha="right", va="center")
axes[0, 0].text(-10, 8, "real", fontsize=8, ha="right", va="center")
fig.suptitle("Test images and their reconstructions from the mean latent")
plt.show()

# %% [markdown]
# The trade-off, as measured: raising $\beta$ a hundredfold pulls the encoder's Gaussians much closer to the standard
# normal (the KL per number falls several times) and costs about two decibels of PSNR. The reconstructions stay
# sharp enough for the judge to read the same scene in most of them; what it misses is mostly a shape whose
# blurred edges fit another template better, or a small object whose coverage falls below half at its rim. (On
# the real images themselves the judge is always right.) A diffusion model on these latents inherits the
# decoder's losses: the PSNR and the judge's rate above are the ceiling of what the next chapter can reach.
#
# %% [markdown]
# ## What a latent looks like
#
# The autoencoder that chapter 08 builds on is the middle one, $\beta = 10^{-3}$. Its latent is still an image
# of sorts, 8 × 8 positions with 4 channels, and each position describes the 2 × 2 pixels above it: the objects
# stay where they were. Latent diffusion works on these grids, scaled so that their standard deviation is one
# (the scale that chapter 08 applies, measured on the training latents: {glue:text}`scale07`).

# %%
from myst_nb import glue  # noqa: E402

vae, meta = trained[1e-3]
glue("scale07", f"{meta['scale']:.3f}", display=False)
with torch.no_grad():
    z = vae.encode(x_test[:3])[0] * meta["scale"]  # (3, 4, 8, 8)
fig, axes = plt.subplots(3, 5, figsize=(7.5, 4.6))
for i in range(3):
    axes[i, 0].imshow(test.images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
    for c in range(4):
        axes[i, c + 1].imshow(z[i, c].numpy(), cmap="RdBu_r", vmin=-3, vmax=3, interpolation="nearest")
        axes[0, c + 1].set_title(f"latent channel {c}", fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("Three test images and their scaled mean latents (8 x 8 x 4)")
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
# (timings vary from run to run and machine to machine)
cpu, wall = time.process_time(), time.perf_counter()
with torch.no_grad():
    vae.decode(vae.encode(x_test)[0])
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(f"encoding and decoding {len(x_test)} images: {wall:.2f} s wall, {1000 * wall / len(x_test):.2f} ms per image "
      f"({1000 * cpu / len(x_test):.2f} ms CPU)")

# %% [markdown]
# ## Check

# %%
p, kl = results["PSNR (dB)"], results["KL per number"]
assert p.is_monotonic_decreasing and kl.is_monotonic_decreasing, f"a larger beta should cost PSNR and KL: {results}"
assert p.iloc[0] - p.iloc[-1] > 1.0 and kl.iloc[0] / kl.iloc[-1] > 3, f"the trade-off should be visible: {results}"
assert p.loc["0.001"] > 28 and results.loc["0.001", "judge: same scene"] > 0.8, f"beta 1e-3: {results.loc['0.001']}"
assert real_verdict == 1.0, "the judge should read every real test image correctly"
print(f"checks passed: beta 1e-4 -> 1e-2: PSNR {p.iloc[0]:.1f} -> {p.iloc[-1]:.1f} dB, KL per number "
      f"{kl.iloc[0]:.2f} -> {kl.iloc[-1]:.2f}; beta 1e-3 keeps {p.loc['0.001']:.1f} dB and the judge reads the same "
      f"scene in {results.loc['0.001', 'judge: same scene']:.0%} of its reconstructions")

# %% [markdown]
# ## Recap
#
# - The VAE maps a 3 × 16 × 16 image to a 4 × 8 × 8 latent (three times fewer numbers, a quarter of the
#   positions) and back; each latent number is a Gaussian, drawn with the reparameterisation trick.
# - The KL weight $\beta$ trades reconstruction (PSNR) against latents close to $\mathcal{N}(0, 1)$: both measured
#   above, monotone over a hundredfold range.
# - [Chapter 08](08_latent_diffusion.ipynb) trains chapter 06's text-conditioned DiT on the latents of the
#   $\beta = 10^{-3}$ autoencoder.
