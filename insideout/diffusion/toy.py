"""Flow matching and diffusion in two dimensions: an MLP field on (x, t) and its training on a toy distribution.

``MLPField`` maps a point x (B, 2) and a time t (B,) to a 2-vector (a velocity, a noise estimate or a data
estimate, depending on how it is trained). ``train_toy`` trains one through the course's loop ``fit`` and caches it
(``insideout.cache``): the same recipe always gives the same weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from insideout.cache import cached
from insideout.diffusion.data import TOYS, sample_toy
from insideout.diffusion.paths import PREDICTIONS, make_path, ot_pair
from insideout.diffusion.unet import timestep_embedding
from insideout.training import OptimConfig, fit
from insideout.utils import DictConfig

COUPLINGS = ("independent", "ot")


class MLPField(nn.Module):
    """[x, sinusoidal(t)] -> hidden layers with SiLU -> 2 outputs."""

    def __init__(self, dim: int = 2, hidden: int = 128, layers: int = 3, freq_dim: int = 16):
        super().__init__()
        self.dim, self.freq_dim = dim, freq_dim
        sizes = [dim + freq_dim] + [hidden] * layers
        mods: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            mods += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*mods, nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"points of shape {tuple(x.shape)}: expected (B, {self.dim})")
        # t enters as sines and cosines of angular frequencies 4, ..., 4e-4 (timestep_embedding scales by 1000)
        return self.net(torch.cat([x, timestep_embedding(t * 0.004, self.freq_dim)], dim=1))


@dataclass
class ToyRecipe(DictConfig):
    """Everything a 2-D model's training depends on (the cache key)."""

    toy: str = "moons"
    path: str = "linear"
    prediction: str = "velocity"
    coupling: str = "independent"
    hidden: int = 128
    layers: int = 3
    batch_size: int = 256
    steps: int = 1000
    lr: float = 3e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.toy not in TOYS:
            raise ValueError(f"ToyRecipe.toy={self.toy!r}: choose one of {', '.join(TOYS)}")
        make_path(self.path)
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"ToyRecipe.prediction={self.prediction!r}: choose one of {', '.join(PREDICTIONS)}")
        if self.coupling not in COUPLINGS:
            raise ValueError(f"ToyRecipe.coupling={self.coupling!r}: choose one of {', '.join(COUPLINGS)}")
        for name in ("hidden", "layers", "batch_size", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ToyRecipe.{name}={value!r}: must be a positive integer")


def toy_loss(recipe: ToyRecipe):
    """loss_fn(model, x1) of ``fit``: noise x0 (OT-paired to the batch if asked), t ~ U[0, 1], regression on the
    path's target for the recipe's prediction."""
    path = make_path(recipe.path)

    def loss_fn(model: nn.Module, x1: torch.Tensor) -> torch.Tensor:
        x0 = torch.randn_like(x1)
        if recipe.coupling == "ot":
            x0 = ot_pair(x0, x1)
        t = torch.rand(x1.shape[0])
        x_t, _ = path.sample(x0, x1, t)
        return ((model(x_t, t) - path.target(recipe.prediction, x0, x1, t)) ** 2).mean()

    return loss_fn


def train_toy(recipe: ToyRecipe, log=print) -> tuple[MLPField, dict]:
    """The recipe's model (eval mode) and its training metadata, from the cache or trained now."""

    def train():
        torch.manual_seed(recipe.seed)
        model = MLPField(hidden=recipe.hidden, layers=recipe.layers)
        g = torch.Generator().manual_seed(recipe.seed + 1)

        def batches():
            while True:
                yield sample_toy(recipe.toy, recipe.batch_size, generator=g)

        cfg = OptimConfig(max_steps=recipe.steps, lr=recipe.lr, warmup_steps=min(100, recipe.steps // 10),
                          weight_decay=0.0)
        cpu = time.process_time()
        result = fit(model, batches(), toy_loss(recipe), cfg)
        meta = {"loss": result.history["loss"], "train_seconds": result.train_seconds,
                "cpu_seconds": time.process_time() - cpu, "items": result.items}
        return model.state_dict(), meta

    art = cached("diffusion-toy", {"v": 1, **recipe.to_dict()}, train, log=log)
    model = MLPField(hidden=recipe.hidden, layers=recipe.layers)
    model.load_state_dict(art.tensors)
    return model.eval(), art.meta
