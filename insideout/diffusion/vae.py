"""A small convolutional variational autoencoder: images (B, 3, H, W) <-> latents (B, c, H/f, W/f).

The encoder outputs, per latent position and channel, a mean mu and a log-variance log s^2 of a Gaussian
q(z | x); a latent is drawn as z = mu + s * n, n ~ N(0, 1) (the reparameterisation trick, Kingma & Welling). The
decoder maps z back to an image. The loss is the reconstruction error plus beta times the KL divergence of q(z | x)
from N(0, I),

    L = mean (x - D(z))^2 + beta * KL,   KL = 1/2 mean (mu^2 + s^2 - 1 - log s^2)   (both per number),

so beta trades a faithful reconstruction (small beta) against a latent distribution close to a standard normal
(large beta), which is easier for a diffusion model to learn. ``f = 2 ** n_down`` is the downsampling factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from insideout.utils import DictConfig


@dataclass
class VAEConfig(DictConfig):
    image_size: int = 16
    channels: int = 32
    latent_channels: int = 4
    n_down: int = 1  # downsampling factor 2 ** n_down
    groups: int = 8

    def __post_init__(self) -> None:
        for name in ("image_size", "channels", "latent_channels", "n_down", "groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VAEConfig.{name}={value!r}: must be a positive integer")
        if self.image_size % (2 ** self.n_down):
            raise ValueError(f"VAEConfig.image_size={self.image_size} must be divisible by 2**n_down="
                             f"{2 ** self.n_down}")
        if self.channels % self.groups:
            raise ValueError(f"VAEConfig.channels={self.channels} must be divisible by groups={self.groups}")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.image_size // 2 ** self.n_down
        return (self.latent_channels, side, side)


class Block(nn.Module):
    """Residual conv block: GroupNorm -> SiLU -> conv, twice, plus the (projected) input."""

    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__()
        self.net = nn.Sequential(nn.GroupNorm(groups, c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
                                 nn.GroupNorm(groups, c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.net(x)


class VAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        c, g = config.channels, config.groups
        enc = [nn.Conv2d(3, c, 3, padding=1), Block(c, c, g)]
        for _ in range(config.n_down):
            enc += [nn.Conv2d(c, c, 3, stride=2, padding=1), Block(c, c, g)]
        enc += [nn.GroupNorm(g, c), nn.SiLU(), nn.Conv2d(c, 2 * config.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec = [nn.Conv2d(config.latent_channels, c, 3, padding=1), Block(c, c, g)]
        for _ in range(config.n_down):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1), Block(c, c, g)]
        dec += [nn.GroupNorm(g, c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (B, c, H/f, W/f), for images x in the models' [-1, 1]."""
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] != cfg.image_size or x.shape[-2] != cfg.image_size:
            raise ValueError(f"images of shape {tuple(x.shape)}: this autoencoder takes (B, 3, {cfg.image_size}, "
                             f"{cfg.image_size})")
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (not clamped) from latents (B, c, H/f, W/f)."""
        if z.dim() != 4 or tuple(z.shape[1:]) != self.config.latent_shape:
            raise ValueError(f"latents of shape {tuple(z.shape)}: this autoencoder decodes (B, "
                             f"{', '.join(map(str, self.config.latent_shape))})")
        return self.decoder(z)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        mu, logvar = self.encode(x)
        z = mu + torch.exp(0.5 * logvar) * (torch.randn_like(mu) if noise is None else noise)
        return self.decode(z), mu, logvar


def kl_per_number(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, s^2) || N(0, 1)) averaged over every latent number."""
    return 0.5 * (mu**2 + logvar.exp() - 1 - logvar).mean()


def vae_loss(beta: float):
    """loss_fn(model, x) for ``fit``: mean squared reconstruction error + beta * KL per latent number."""
    if not beta >= 0:
        raise ValueError(f"beta={beta}: the KL weight must be >= 0")

    def loss_fn(model: VAE, x: torch.Tensor):
        recon, mu, logvar = model(x)
        mse = F.mse_loss(recon, x)
        kl = kl_per_number(mu, logvar)
        return mse + beta * kl, {"mse": mse.item(), "kl": kl.item()}

    return loss_fn
