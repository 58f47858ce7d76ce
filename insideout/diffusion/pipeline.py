"""From a trained model to judged images: sampling in batches (pixel or latent space, with guidance), the
feature network of the metrics, and one evaluation that every chapter prints.

``generate`` draws the starting noise from its own seeded generator, so the same call always returns the same
images; ``cached_samples`` keeps generated images in the course cache (keyed by the model's recipe and the sampler
settings), so a later chapter can compare against them without sampling again. ``evaluate`` returns the Fréchet
distance and nearest-neighbour precision/recall in the feature network's space against real images, and what the
judge reads: the rate of well-formed scenes and, given the scenes that were asked for, attribute accuracies.
"""

from __future__ import annotations

import time

import torch

from insideout.cache import cached
from insideout.diffusion import judge as J
from insideout.diffusion.data import CaptionTokenizer, Scenes, from_model, make_shapes
from insideout.diffusion.metrics import extract_features, frechet_distance, precision_recall
from insideout.diffusion.paths import make_path
from insideout.diffusion.sampling import check_guidance, check_solver, guided, solve
from insideout.diffusion.text import TextToImage
from insideout.diffusion.vae import VAE

N_REF = 1000  # real test images every chapter compares with
N_GEN = 500  # generated images per evaluation
REFERENCE_SEED = 100


def reference(kind: str, feature_net) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, FeatureNet features) of the N_REF real test images of a kind ('single' or 'mixed')."""
    images = make_shapes(N_REF, kind, "test", seed=REFERENCE_SEED).images
    return images, extract_features(feature_net, images)


def input_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """(channels, height, width) of what the denoiser takes."""
    cfg = model.dit.config if isinstance(model, TextToImage) else model.config
    return (cfg.in_channels, cfg.image_size, cfg.image_size)


def check_latent_match(model: torch.nn.Module, vae: VAE) -> None:
    """ValueError unless the denoiser's input is the autoencoder's latent shape."""
    if input_shape(model) != vae.config.latent_shape:
        raise ValueError(f"the diffusion model takes {input_shape(model)} but the autoencoder's latents are "
                         f"{vae.config.latent_shape}: train the model on this autoencoder's latents")


@torch.no_grad()
def generate(model: torch.nn.Module, n: int, *, path: str = "linear", prediction: str = "velocity",
             steps: int = 20, solver: str = "euler", guidance: float = 1.0, labels: torch.Tensor | None = None,
             captions: list[str] | None = None, vae: VAE | None = None, latent_scale: float = 1.0,
             seed: int = 0, batch_size: int = 250, timing: dict | None = None) -> torch.Tensor:
    """``n`` images (N, 3, H, W) in [0, 1] from noise seeded by ``seed``.

    ``labels`` (N,) or ``captions`` (N strings) condition the model, with classifier-free ``guidance`` (0:
    unconditional, 1: conditional). With ``vae`` the model works in its latent space (latents scaled by
    ``latent_scale``) and the result is decoded. ``timing``, if given, receives the CPU and wall seconds spent.
    """
    check_solver(solver, steps)
    check_guidance(guidance)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n={n!r}: the number of images must be a positive integer")
    if vae is not None:
        check_latent_match(model, vae)
    g = torch.Generator().manual_seed(seed)  # on the CPU, so that every device starts from the same noise
    p = make_path(path)
    dev = next(model.parameters()).device
    ids = None
    if captions is not None:
        if len(captions) != n:
            raise ValueError(f"{len(captions)} captions for {n} images: give one caption per image")
        ids = CaptionTokenizer(max_words=model.text.config.max_words).encode(captions)
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} images: give one label per image")
    cpu, wall = time.process_time(), time.perf_counter()
    model.eval()
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = torch.randn((b, *input_shape(model)), generator=g).to(dev)
        if ids is not None:
            cond = model.encode(ids[start:start + b].to(dev))
            fn = guided(model, cond, model.encode_null(b), guidance)
        elif labels is not None:
            null = torch.full((b,), model.config.n_classes, dtype=torch.long, device=dev)
            fn = guided(model, {"y": labels[start:start + b].to(dev)}, {"y": null}, guidance)
        else:
            fn = model
        z = solve(fn, x, steps, solver, path=p, prediction=prediction, generator=g,
                  clip=None if vae is not None else 1.0)
        if vae is not None:
            z = vae.decode(z.to(next(vae.parameters()).device) / latent_scale)
        out.append(from_model(z.float().cpu()))
    if timing is not None:
        timing["cpu_seconds"] = time.process_time() - cpu
        timing["wall_seconds"] = time.perf_counter() - wall
    return torch.cat(out)


def cached_samples(name: str, key: dict, make, log=None) -> torch.Tensor:
    """Images made by ``make()`` and cached under ``key`` (the model's recipe and the sampler's settings)."""
    art = cached(f"diffusion-samples-{name}", key, lambda: ({"images": make()}, {}), log=log)
    return art.tensors["images"]


def evaluate(images: torch.Tensor, real: torch.Tensor, feature_net, kind: str = "single",
             scenes: Scenes | None = None, real_features: torch.Tensor | None = None) -> dict[str, float]:
    """Fréchet distance, precision, recall (k = 3) against ``real``; the judge's valid-scene rate; and, when the
    ``scenes`` asked for are given, the judge's attribute accuracies (``acc_colour``, ``acc_all``, ...)."""
    fake = extract_features(feature_net, images)
    ref = real_features if real_features is not None else extract_features(feature_net, real)
    fd = frechet_distance(ref, fake)
    precision, recall = precision_recall(ref, fake)
    objects = J.find_objects(images)
    out = {"frechet": fd, "precision": precision, "recall": recall,
           "valid": J.validity(objects, kind).float().mean().item()}
    if scenes is not None:
        for key, value in J.accuracy(J.score(images, scenes, objects)).items():
            out[f"acc_{key}"] = value
    return out


def prompt_accuracy(model: torch.nn.Module, scenes: Scenes, prompts: list[str], *, guidance: float = 3.0,
                    steps: int = 16, seed: int = 0, vae: VAE | None = None, latent_scale: float = 1.0,
                    path: str = "linear", prediction: str = "velocity", cache: tuple[str, dict] | None = None
                    ) -> tuple[dict[str, float], torch.Tensor]:
    """(the judge's per-attribute accuracy, the images) of a text-conditioned model asked for ``prompts``, the
    captions of ``scenes``. ``cache`` = (name, key of the model) keeps the images in the course cache, so that a
    later chapter can score the same samples without drawing them again."""

    def make() -> torch.Tensor:
        return generate(model, len(prompts), captions=prompts, guidance=guidance, steps=steps, seed=seed, vae=vae,
                        latent_scale=latent_scale, path=path, prediction=prediction)

    if cache is None:
        images = make()
    else:
        key = {"model": cache[1], "prompts": prompts, "guidance": guidance, "steps": steps, "seed": seed}
        images = cached_samples(cache[0], key, make)
    return J.accuracy(J.score(images, scenes)), images
