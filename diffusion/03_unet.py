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
# # 03 · Images with a U-Net
#
# An image of 16 × 16 pixels in three colours is a point in $\mathbb{R}^{768}$. Nothing in
# [chapter 01](01_flow_matching_2d.ipynb)'s flow matching cared about the dimension: draw noise $x_0$ of the
# image's shape, a training image $x_1$, a time $t$, and regress a network's output at $x_t = t x_1 + (1-t) x_0$ on
# $x_1 - x_0$. What changes is the network. An MLP on 768 numbers would have to learn from scratch that
# neighbouring pixels belong together; a **U-Net** {cite}`ronneberger2015unet`, the network of DDPM
# {cite}`ho2020denoising`, builds that in. This chapter
#
# 1. builds the U-Net and follows a batch through it,
# 2. trains it by flow matching on the single-object images of [chapter 00](00_introduction.ipynb),
# 3. samples 500 images and measures them: Fréchet distance, precision and recall in FeatureNet space, and what the
#    judge reads in them.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package first
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "insideout @ git+https://github.com/insideout-course/transformers-inside-out"], check=True)

# %%
import warnings

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display
from myst_nb import glue

from insideout.diffusion import judge as J
from insideout.diffusion import train as T
from insideout.diffusion.data import COLOUR_NAMES, QUADRANTS, SHAPES, SIZES, from_model, make_shapes
from insideout.diffusion.pipeline import N_GEN, cached_samples, evaluate, generate, reference
from insideout.diffusion.plots import image_grid, table
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")
preset, device = setup(seed=0)
recipe = T.recipe("unet", preset)
print(f"recipe: {recipe.arch} {recipe.model} | {recipe.optim['max_steps']} steps of {recipe.batch_size} images | "
      f"path {recipe.path}, target {recipe.prediction}, times {recipe.time_sampling}")

# %% [markdown]
# ## The U-Net
#
# The network maps $(x_t, t)$ to a velocity of the same shape as the image. It has three resolutions:
#
# - an **encoder**: a convolution lifts the 3 colour channels to $c = 32$ feature channels at 16 × 16; a residual
#   block; a stride-2 convolution down to 8 × 8; a residual block to $2c$ channels; down to 4 × 4;
# - a **middle** at 4 × 4: two residual blocks around a multi-head **self-attention** layer — at 4 × 4, 16 positions
#   can all see each other, so the two ends of an object can agree on its shape;
# - a **decoder** that mirrors the encoder: upsample, concatenate the encoder's features of the same resolution
#   (the **skip connections**, which hand fine detail straight across), residual block.
#
# Each residual block is GroupNorm → SiLU → 3 × 3 convolution, twice, added to its input. The time enters every
# block: $t$ is turned into sinusoidal features, an MLP maps them to an embedding $e$, and each block scales and
# shifts its normalised activations by a per-channel $(1 + \gamma(e))$ and $\beta(e)$ (FiLM
# {cite}`perez2018film`). The last convolution of each block and of the output starts at zero, so the untrained
# network outputs zero velocity. Follow a batch through it:

# %%
torch.manual_seed(0)
net = T.build(recipe)
x = torch.randn(4, 3, 16, 16)
t = torch.rand(4)
shapes = {}
hooks = [getattr(net, name).register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, tuple(o.shape)))
         for name in ("stem", "down1", "pool1", "down2", "pool2", "mid1", "attn", "mid2", "up2", "up1", "head")]
out = net(x, t)
for h in hooks:
    h.remove()
parts = {name: sum(p.numel() for p in getattr(net, name).parameters()) for name in
         ("embed", "stem", "down1", "pool1", "down2", "pool2", "mid1", "attn", "mid2", "up2", "up1", "head")}
display(pd.DataFrame({"output shape (batch, channels, height, width)": {k: shapes.get(k, "—") for k in parts},
                      "parameters": parts}))
print(f"total {net.num_parameters():,} parameters; output {tuple(out.shape)}, all zero at initialisation: "
      f"{bool((out == 0).all())}")

# %% [markdown]
# ## Training
#
# The recipe trains on the 12,000 single-object images of chapter 00 for
# {glue:text}`unet_steps` steps of {glue:text}`unet_batch` images, with the linear path and the velocity target of
# chapter 01. One change: the times are drawn from a **logit-normal** distribution, $t = 1/(1 + e^{-z})$ with
# $z \sim \mathcal{N}(0, 1)$, instead of uniformly {cite}`esser2024scaling`. It spends more of the training on
# intermediate times, where the target is hardest to predict: near $t = 0$ the best guess is the average image,
# near $t = 1$ the image is almost given.

# %%
# NBVAL_IGNORE_OUTPUT
# (says whether the model was loaded from the cache or trained now)
model, meta = T.train(recipe)

# %%
loss = torch.tensor(meta["history"]["loss"])
glue("unet_steps", f"{meta['steps']:,}", display=False)
glue("unet_batch", f"{recipe.batch_size}", display=False)
print(f"{meta['parameters']:,} parameters, {meta['steps']} steps, {meta['items']:,} training images "
      f"({meta['items'] / 12000:.1f} passes over the data)")
print(f"training loss: {loss[:20].mean():.4f} (first 20 steps) -> {loss[-50:].mean():.4f} (last 50)")
fig, ax = plt.subplots(figsize=(6, 3.2))
smooth = torch.nn.functional.avg_pool1d(loss[None, None], 20, 1)[0, 0]
ax.plot(loss, alpha=0.3, label="per step")
ax.plot(range(19, len(loss)), smooth, label="mean of 20 steps")
ax.set(xlabel="step", ylabel="flow-matching loss (MSE)", yscale="log", title="U-Net training")
ax.legend()
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
# (throughput depends on the machine and its load)
print(f"training: {meta['train_seconds']:.1f} s wall, {meta['cpu_seconds']:.1f} s CPU time; "
      f"{meta['items'] / meta['train_seconds']:.0f} images per second")

# %% [markdown]
# ## Samples
#
# Draw {glue:text}`n_gen03` noise images and integrate the learned ODE with 20 Euler steps. Real test images above,
# samples below:

# %%
glue("n_gen03", f"{N_GEN}", display=False)
settings = {"n": N_GEN, "steps": 20, "solver": "euler", "seed": 1}  # chapter 04 reuses these samples
samples = cached_samples(recipe.name, {"recipe": recipe.to_dict(), **settings},
                         lambda: generate(model, N_GEN, steps=20, solver="euler", seed=1))
real_test = make_shapes(N_GEN, "single", "test", seed=301)
fig, axes = plt.subplots(4, 12, figsize=(12, 4.4))
image_grid(real_test.images[:24], ncol=12, axes=axes[:2])
image_grid(samples[:24], ncol=12, axes=axes[2:])
fig.suptitle("Top: real test images. Bottom: U-Net samples (20 Euler steps)")
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
# (timings vary from run to run and machine to machine)
timing = {}
generate(model, 100, steps=20, solver="euler", seed=2, timing=timing)
print(f"sampling 100 images, 20 steps: {timing['wall_seconds']:.2f} s wall, "
      f"{1000 * timing['wall_seconds'] / 100:.1f} ms per image ({1000 * timing['cpu_seconds'] / 100:.1f} ms CPU)")

# %% [markdown]
# ## Measured
#
# The evaluation of every chapter: Fréchet distance, precision and recall against the 1,000 real test images
# (chapter 00 measured the floor of two real sets and the value for noise), and the judge's **valid-scene rate** —
# the fraction of samples that show exactly one object whose shape fits a circle, a square or a triangle with an
# overlap of at least 0.6.

# %%
# NBVAL_IGNORE_OUTPUT
# (says whether FeatureNet was loaded from the cache or trained now)
feature_net, _ = T.load_feature_net(preset)

# %%
ref_images, ref_features = reference("single", feature_net)
scores = evaluate(samples, ref_images, feature_net, "single", real_features=ref_features)
noise_fd = evaluate(from_model(torch.randn(N_GEN, 3, 16, 16, generator=torch.Generator().manual_seed(6))),
                    ref_images, feature_net, "single", real_features=ref_features)["frechet"]
floor_fd = evaluate(real_test.images, ref_images, feature_net, "single", real_features=ref_features)["frechet"]
print(f"U-Net samples: Fréchet distance {scores['frechet']:.3f} (two real sets: {floor_fd:.3f}, noise: "
      f"{noise_fd:.1f}); precision {scores['precision']:.3f}, recall {scores['recall']:.3f}; "
      f"valid scenes {scores['valid']:.3f}")

# %% [markdown]
# An unconditional model is asked for no particular scene, so the judge cannot score it against a caption. It can
# say whether the model draws the *data's mixture*: colours, shapes, sizes and quadrants in the proportions of the
# real images.

# %%
objects = J.find_objects(samples)
real_objects = J.find_objects(real_test.images)
freq, real_freq = J.attribute_frequencies(objects), J.attribute_frequencies(real_objects)
names = {"colour": COLOUR_NAMES, "shape": SHAPES, "size": SIZES, "quadrant": QUADRANTS}
fig, axes = plt.subplots(1, 4, figsize=(14, 3))
tv = {}
for ax, (attr, labels) in zip(axes, names.items(), strict=True):
    pos = torch.arange(len(labels))
    ax.bar(pos - 0.2, real_freq[attr], 0.4, label="real")
    ax.bar(pos + 0.2, freq[attr], 0.4, label="U-Net samples")
    ax.set_xticks(pos, labels, rotation=20, fontsize=8)
    tv[attr] = 0.5 * (freq[attr] - real_freq[attr]).abs().sum().item()
    ax.set(title=f"{attr} (total variation {tv[attr]:.3f})", ylabel="fraction of objects")
axes[0].legend(fontsize=8)
fig.tight_layout()
plt.show()
fits = torch.tensor([o.fit for objs in objects for o in objs])
real_fits = torch.tensor([o.fit for objs in real_objects for o in objs])
print(f"objects per sample: {len(fits) / N_GEN:.3f}; median template fit {fits.median():.3f} (real: "
      f"{real_fits.median():.3f})")

# %% [markdown]
# The number of Euler steps is the sampler's cost. Quality against steps, on the first 250 noise images:

# %%
step_rows = []
for steps in (5, 10, 20):
    imgs = samples[:250] if steps == 20 else generate(model, 250, steps=steps, seed=1)
    s = evaluate(imgs, ref_images, feature_net, "single", real_features=ref_features)
    step_rows.append({"Euler steps": steps, **{k: s[k] for k in ("frechet", "precision", "recall", "valid")}})
display(table(pd.DataFrame(step_rows).set_index("Euler steps"), 3))

# %% [markdown]
# ## Check

# %%
assert scores["frechet"] < noise_fd / 20, f"samples should be far closer to data than noise: {scores['frechet']}"
assert scores["valid"] > 0.7, f"most samples should be well-formed scenes: {scores['valid']}"
assert scores["precision"] > 0.5 and scores["recall"] > 0.5, scores
assert tv["colour"] < 0.1 and tv["quadrant"] < 0.1, tv
print(f"checks passed: Fréchet distance {scores['frechet']:.2f} (noise {noise_fd:.0f}), "
      f"{100 * scores['valid']:.0f}% valid scenes")

# %% [markdown]
# ## Recap
#
# - Flow matching on images is flow matching in 2-D with 768 coordinates; the network is what changes.
# - The U-Net processes the image at three resolutions with skip connections, and the time modulates every
#   residual block.
# - Trained for a minute or two on two cores, its samples are recognisable shapes, most of them well formed, in the
#   data's proportions of colours and positions; the Fréchet distance is far below that of noise but well above
#   the floor of two real sets — there is room to improve, which the next chapters use.
# - [Chapter 04](04_dit.ipynb) replaces the U-Net by a transformer that reads the image as patches.
