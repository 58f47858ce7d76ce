"""Training and loading Part 5's image models: one recipe per model, trained through ``insideout.training.fit`` and
cached by ``insideout.cache.cached`` (the recipe is the key), so every chapter can reload what an earlier one
trained, or retrain it identically when the cache is empty.

A recipe (``Recipe``) names the model (its config), the data (kind, split, size, seed), the path and the quantity
the network predicts, the optimiser and batch size, and for conditional models the probability of dropping the
condition (for classifier-free guidance). ``PRESETS`` holds the recipes of the ``cpu`` preset (what the book
executes on two cores) and the ``gpu`` preset (larger models, longer training).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from insideout.cache import Artifact, cached
from insideout.diffusion.data import (
    KINDS,
    N_CLASSES,
    SPLITS,
    VOCABULARY,
    CaptionTokenizer,
    class_labels,
    make_shapes,
    to_model,
)
from insideout.diffusion.dit import DiT, DiTConfig
from insideout.diffusion.metrics import FeatureNet, FeatureNetConfig, feature_loss, feature_targets
from insideout.diffusion.paths import PREDICTIONS, make_path
from insideout.diffusion.text import TextEncoderConfig, TextToImage
from insideout.diffusion.unet import UNet, UNetConfig
from insideout.diffusion.vae import VAE, VAEConfig, vae_loss
from insideout.training import OptimConfig, fit
from insideout.utils import DictConfig, get_device, get_preset

ARCHS = ("unet", "dit", "text-dit", "vae", "features")
TIME_SAMPLING = ("uniform", "logit-normal")
VERSION = 2  # bump when a change of code changes what a recipe trains


@dataclass
class DataSpec(DictConfig):
    n: int = 12000
    kind: str = "single"
    split: str = "train"
    seed: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"DataSpec.kind={self.kind!r}: choose one of {', '.join(KINDS)}")
        if self.split not in SPLITS:
            raise ValueError(f"DataSpec.split={self.split!r}: choose one of {', '.join(SPLITS)}")


@dataclass
class Recipe(DictConfig):
    """Everything one model's training depends on; ``to_dict()`` is its cache key."""

    name: str  # the cache kind, e.g. "diffusion-unet"
    arch: str
    model: dict
    data: dict = field(default_factory=lambda: DataSpec().to_dict())
    path: str = "linear"
    prediction: str = "velocity"
    time_sampling: str = "uniform"
    batch_size: int = 64
    optim: dict = field(default_factory=lambda: OptimConfig().to_dict())
    p_uncond: float = 0.0  # probability of dropping the condition (label or caption) in a training step
    beta: float = 0.0  # VAE: KL weight
    latent: dict | None = None  # latent diffusion: the VAE recipe whose latents the model learns
    init: dict | None = None  # start from another recipe's weights (matching names), e.g. fine-tuning
    stop_at: int | None = None  # stop early on the same schedule (an ablation that needs only the first steps)
    seed: int = 0
    version: int = VERSION

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"Recipe.arch={self.arch!r}: choose one of {', '.join(ARCHS)}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"Recipe.prediction={self.prediction!r}: choose one of {', '.join(PREDICTIONS)}")
        if self.time_sampling not in TIME_SAMPLING:
            raise ValueError(f"Recipe.time_sampling={self.time_sampling!r}: choose one of "
                             f"{', '.join(TIME_SAMPLING)}")
        make_path(self.path)
        DataSpec.from_dict(self.data)
        OptimConfig.from_dict(self.optim)
        if not 0 <= self.p_uncond < 1:
            raise ValueError(f"Recipe.p_uncond={self.p_uncond}: must be in [0, 1)")

    @property
    def optim_config(self) -> OptimConfig:
        return OptimConfig.from_dict(self.optim)

    def replace(self, **changes) -> Recipe:
        return Recipe.from_dict({**copy.deepcopy(self.to_dict()), **changes})


def build(recipe: Recipe) -> nn.Module:
    """A freshly initialised model of the recipe's architecture and config (seeded by the caller)."""
    if recipe.arch == "unet":
        return UNet(UNetConfig.from_dict(recipe.model))
    if recipe.arch == "dit":
        return DiT(DiTConfig.from_dict(recipe.model))
    if recipe.arch == "text-dit":
        return TextToImage(DiTConfig.from_dict(recipe.model["dit"]), TextEncoderConfig.from_dict(recipe.model["text"]))
    if recipe.arch == "vae":
        return VAE(VAEConfig.from_dict(recipe.model))
    return FeatureNet(FeatureNetConfig.from_dict(recipe.model))


# ---- data streams ----------------------------------------------------------------------------------------------


def training_tensors(recipe: Recipe) -> dict[str, torch.Tensor]:
    """The recipe's training set as tensors: images (model space) or VAE latents, labels, caption ids."""
    spec = DataSpec.from_dict(recipe.data)
    data = make_shapes(spec.n, spec.kind, spec.split, spec.seed)
    if recipe.arch == "features":
        present, attrs = feature_targets(data.scenes)
        return {"images": data.images, "present": present, "attrs": attrs}
    out = {"x": to_model(data.images)}
    if recipe.latent is not None:
        vae, info = train(Recipe.from_dict(recipe.latent), log=None, device="cpu")
        mu, logvar = encode_dataset(vae, out["x"])
        out = {"mu": mu * info["scale"], "std": torch.exp(0.5 * logvar) * info["scale"]}
    if recipe.arch == "unet" and recipe.model.get("n_classes", 0) or recipe.arch == "dit" and \
            recipe.model.get("n_classes", 0):
        out["y"] = class_labels(data.scenes)
    if recipe.arch == "text-dit":
        with torch.no_grad():
            out["ids"] = CaptionTokenizer().encode(data.captions, strict=True)
    return out


def batch_stream(tensors: dict[str, torch.Tensor], batch_size: int, seed: int) -> Iterator[dict]:
    """Endless batches: shuffled epochs over the rows (the last partial batch of an epoch is dropped). Latent
    sets ({mu, std}) are sampled afresh, z = mu + std * n, from the same generator."""
    g = torch.Generator().manual_seed(seed)
    n = next(iter(tensors.values())).shape[0]
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the data ({n} rows)")
    while True:
        order = torch.randperm(n, generator=g)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            batch = {k: v[idx] for k, v in tensors.items()}
            if "mu" in batch:
                mu, std = batch.pop("mu"), batch.pop("std")
                batch["x"] = mu + std * torch.randn(mu.shape, generator=g)
            yield batch


# ---- losses ----------------------------------------------------------------------------------------------------


def sample_times(n: int, how: str) -> torch.Tensor:
    """(n,) training times: uniform on [0, 1], or logit-normal (sigmoid of a standard normal; Esser et al.)."""
    if how == "uniform":
        return torch.rand(n)
    if how == "logit-normal":
        return torch.sigmoid(torch.randn(n))
    raise ValueError(f"time sampling {how!r}: choose one of {', '.join(TIME_SAMPLING)}")


def diffusion_loss(recipe: Recipe):
    """loss_fn(model, batch) of ``fit`` for flow matching / diffusion on the recipe's path and prediction.

    Draws noise x0 ~ N(0, I) and times t, forms x_t on the path, and regresses the model's output on the target
    (velocity x_1 - x_0 on the linear path, the noise, or the data). Labels or captions are replaced by the null
    condition with probability ``p_uncond``.
    """
    path = make_path(recipe.path)

    def loss_fn(model: nn.Module, batch: dict) -> torch.Tensor:
        x1 = batch["x"]
        b = x1.shape[0]
        x0 = torch.randn_like(x1)
        t = sample_times(b, recipe.time_sampling).to(x1.device)
        x_t, _ = path.sample(x0, x1, t)
        kwargs = {}
        drop = (torch.rand(b) < recipe.p_uncond).to(x1.device)
        if "y" in batch:
            null = model.config.n_classes
            kwargs["y"] = torch.where(drop, null, batch["y"])
        if "ids" in batch:
            kwargs = model.encode(batch["ids"], drop if recipe.p_uncond > 0 else None)
        out = model(x_t, t, **kwargs)
        return F.mse_loss(out, path.target(recipe.prediction, x0, x1, t))

    return loss_fn


def loss_for(recipe: Recipe):
    if recipe.arch == "vae":
        loss = vae_loss(recipe.beta)
        return lambda model, batch: loss(model, batch["x"])
    if recipe.arch == "features":
        return feature_loss
    return diffusion_loss(recipe)


# ---- training and loading ------------------------------------------------------------------------------------


def check_state(model: nn.Module, tensors: dict[str, torch.Tensor], what: str) -> None:
    """ValueError naming the first mismatch if a checkpoint's tensors do not fit the model (e.g. another
    resolution, patch size or latent shape)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    if missing or extra:
        raise ValueError(f"{what}: the checkpoint does not match this model (missing {missing[:3]}, unexpected "
                         f"{extra[:3]}): it was trained for another architecture")
    for name, value in own.items():
        if tuple(value.shape) != tuple(tensors[name].shape):
            raise ValueError(f"{what}: checkpoint tensor {name!r} has shape {tuple(tensors[name].shape)}, this model "
                             f"needs {tuple(value.shape)}: the checkpoint was trained at another resolution, patch "
                             "size or latent shape")


def check_recipe_config(stored: dict, model_config: dict, what: str) -> None:
    """ValueError when a checkpoint's stored model config differs from the model's, naming the fields."""
    diff = {k: (stored.get(k), v) for k, v in model_config.items() if stored.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"{what}: checkpoint of another configuration ({detail})")


def load_into(model: nn.Module, artifact: Artifact, what: str = "model") -> nn.Module:
    """Load a cached artifact into a model after checking that it was trained with the same configuration."""
    stored = artifact.meta.get("model_config")
    config = model.config if isinstance(model.config, dict) else model.config.to_dict()
    if stored is not None:
        if "dit" in config:
            check_recipe_config(stored["dit"], config["dit"], what)
            check_recipe_config(stored["text"], config["text"], what)
        else:
            check_recipe_config(stored, config, what)
    check_state(model, artifact.tensors, what)
    model.load_state_dict(artifact.tensors)
    return model.eval()


def train(recipe: Recipe, log=print, progress: bool = False, device: torch.device | str | None = None
          ) -> tuple[nn.Module, dict]:
    """The recipe's model in eval mode on ``device`` (default: ``insideout.utils.get_device()``, i.e.
    $INSIDEOUT_DEVICE or the best available) and its training metadata: loaded from the cache, or trained now by
    ``fit`` (deterministically: the seed is set inside) and cached."""
    if isinstance(recipe, dict):
        recipe = Recipe.from_dict(recipe)
    device = get_device(None if device is None else str(device))

    def run():
        tensors = training_tensors(recipe)
        torch.manual_seed(recipe.seed)
        model = build(recipe)
        if recipe.init is not None:
            base, _ = train(Recipe.from_dict(recipe.init), log=None, device="cpu")
            own = model.state_dict()
            shared = {k: v for k, v in base.state_dict().items() if k in own and own[k].shape == v.shape}
            model.load_state_dict(shared, strict=False)
        # the training noise gets its own seed, so that two architectures trained by the same recipe draw the same
        # noise and times step for step (however many random numbers their initialisation consumed)
        torch.manual_seed(recipe.seed + 2)
        cfg = recipe.optim_config
        model.to(device)
        cpu = time.process_time()
        result = fit(model, batch_stream(tensors, recipe.batch_size, recipe.seed + 1), loss_for(recipe), cfg,
                     stop_at=recipe.stop_at, progress=progress, desc=recipe.name, device=device)
        model.cpu()
        cpu = time.process_time() - cpu
        config = model.config if isinstance(model.config, dict) else model.config.to_dict()
        meta = {"history": {k: v for k, v in result.history.items() if k in ("loss", "mse", "kl")},
                "train_seconds": result.train_seconds, "cpu_seconds": cpu, "items": result.items,
                "steps": result.step, "parameters": sum(p.numel() for p in model.parameters()),
                "model_config": config}
        if recipe.arch == "vae":
            meta.update(latent_statistics(model, tensors["x"]))
        return model.state_dict(), meta

    artifact = cached(recipe.name, recipe.to_dict(), run, log=log)
    return load_into(build(recipe), artifact, recipe.name).to(device), artifact.meta


# ---- autoencoder helpers ---------------------------------------------------------------------------------------


@torch.no_grad()
def encode_dataset(vae: VAE, x: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of every image (model space), in batches."""
    parts = [vae.encode(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@torch.no_grad()
def latent_statistics(vae: VAE, x: torch.Tensor) -> dict:
    """The scale that gives the training latents unit standard deviation (Rombach et al.'s scale factor)."""
    mu, logvar = encode_dataset(vae.eval(), x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=torch.Generator().manual_seed(0))
    return {"scale": float(1.0 / z.std()), "latent_std": float(z.std()), "latent_mean": float(z.mean())}


def load_feature_net(preset: str | None = None, log=print) -> tuple[FeatureNet, dict]:
    """The feature network of the metrics (chapter 00), on the CPU, from the cache or trained now."""
    return train(recipe("features", preset), log=log, device="cpu")



# ---- presets ---------------------------------------------------------------------------------------------------


def _optim(steps: int, lr: float, warmup: int = 20) -> dict:
    return OptimConfig(max_steps=steps, lr=lr, warmup_steps=warmup, weight_decay=0.0, min_lr_ratio=0.1).to_dict()


def recipes(preset: str | None = None) -> dict[str, Recipe]:
    """Every model of Part 5 for a preset, by name (the cpu preset is sized for two CPU cores; gpu: wider models
    and ten times more training steps)."""
    preset = get_preset(preset)
    big = preset == "gpu"
    mul = 10 if big else 1
    single = DataSpec(n=12000, kind="single", split="train", seed=1).to_dict()
    mixed = DataSpec(n=16000, kind="mixed", split="train", seed=2).to_dict()
    out: dict[str, Recipe] = {}
    out["features"] = Recipe(name="diffusion-features", arch="features",
                             model=FeatureNetConfig(channels=32, features=64).to_dict(),
                             data=DataSpec(n=12000, kind="mixed", split="all", seed=3).to_dict(),
                             batch_size=64, optim=_optim(600, 3e-3), seed=0)
    # chapter 03: pixel-space flow matching with a U-Net, single objects, unconditional
    out["unet"] = Recipe(name="diffusion-unet", arch="unet", model=UNetConfig(channels=64 if big else 32).to_dict(),
                         data=single, time_sampling="logit-normal", batch_size=32,
                         optim=_optim(560 * mul, 2e-3, warmup=40), seed=0)
    # chapter 04: a DiT of about the U-Net's size, for about the U-Net's training time; and the adaLN ablation
    dit_cfg = DiTConfig(d_model=176 if big else 88, n_layer=8 if big else 4, n_head=4, patch=2)
    out["dit"] = Recipe(name="diffusion-dit", arch="dit", model=dit_cfg.to_dict(), data=single,
                        time_sampling="logit-normal", batch_size=32, optim=_optim(480 * mul, 3e-3, warmup=40),
                        seed=0)
    out["dit-adaln"] = out["dit"].replace(name="diffusion-dit-adaln",
                                          model={**dit_cfg.to_dict(), "adaln": "adaLN"},
                                          stop_at=200 * mul)
    # chapter 05: the U-Net of chapter 03 with a class embedding, fine-tuned with label dropout
    unet_class = {**out["unet"].model, "n_classes": N_CLASSES}
    out["unet-class"] = out["unet"].replace(name="diffusion-unet-class", model=unet_class, p_uncond=0.2,
                                            optim=_optim(256 * mul, 1e-3, warmup=20), init=out["unet"].to_dict())
    # chapter 06: text encoder + cross-attending DiT in pixel space, one- and two-object scenes
    text_cfg = TextEncoderConfig(vocab_size=len(VOCABULARY), d_model=64, n_layer=2, n_head=4)
    text_dit = DiTConfig(d_model=dit_cfg.d_model, n_layer=dit_cfg.n_layer, n_head=4, patch=2, d_context=64)
    out["text-dit"] = Recipe(name="diffusion-text-dit", arch="text-dit",
                             model={"dit": text_dit.to_dict(), "text": text_cfg.to_dict()}, data=mixed,
                             time_sampling="logit-normal", batch_size=32, p_uncond=0.1,
                             optim=_optim(300 * mul, 3e-3, warmup=40), seed=0)
    # chapter 07: autoencoders 16x16x3 -> 8x8x4 with three KL weights
    for beta in (1e-4, 1e-3, 1e-2):
        out[f"vae-{beta:g}"] = Recipe(name="diffusion-vae", arch="vae",
                                      model=VAEConfig(channels=64 if big else 32, latent_channels=4,
                                                      n_down=1).to_dict(),
                                      data=mixed, batch_size=32, beta=beta, optim=_optim(250 * mul, 2e-3), seed=0)
    # chapter 08: the text-conditioned DiT in the latent space of chapter 07's autoencoder
    latent_dit = DiTConfig(image_size=8, in_channels=4, d_model=dit_cfg.d_model, n_layer=dit_cfg.n_layer, n_head=4,
                           patch=2, d_context=64)
    out["latent-text-dit"] = out["text-dit"].replace(name="diffusion-latent-text-dit",
                                                     model={"dit": latent_dit.to_dict(), "text": text_cfg.to_dict()},
                                                     latent=out["vae-0.001"].to_dict(),
                                                     optim=_optim(720 * mul, 3e-3, warmup=40))
    return out


def recipe(name: str, preset: str | None = None) -> Recipe:
    table = recipes(preset)
    if name not in table:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(table)}")
    return table[name]


def prompt_sets(n: int = 64) -> dict[tuple[str, str], object]:
    """The prompt sets of chapters 06 and 08: captions of real scenes, single/pair x seen/held-out combinations."""
    return {("single", "seen"): make_shapes(n, "single", "test", seed=601),
            ("pair", "seen"): make_shapes(n, "pair", "test", seed=602),
            ("single", "held out"): make_shapes(n, "single", "held_out", seed=603),
            ("pair", "held out"): make_shapes(n, "pair", "held_out", seed=604)}


def evaluation_prompts(n: int = 500):
    """The mixed test scenes whose captions chapters 06 and 08 sample for the Fréchet distance."""
    return make_shapes(n, "mixed", "test", seed=606)
