"""A small U-Net velocity (or noise) predictor for images: residual conv blocks at three resolutions with skips.

The network maps an image ``x_t`` (B, C, H, W) at time ``t`` (B,) to a tensor of the same shape. The time (and,
optionally, a class label) enters every residual block as a per-channel scale and shift of its normalised
activations (FiLM). Resolutions: H, H/2, H/4, with self-attention at H/4, where the image is only 16 positions wide
for H = 16, so that far-apart pixels can agree on one object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from insideout.utils import DictConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B, dim) sinusoidal features of times t in [0, 1] (scaled by 1000, as in DDPM's integer steps)."""
    if dim % 2:
        raise ValueError(f"timestep embedding dim={dim} must be even")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    """t -> sinusoidal features -> 2-layer MLP; an optional class embedding (with a 'null' class) is added."""

    def __init__(self, dim: int, freq_dim: int = 64, n_classes: int = 0):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.n_classes = n_classes
        # index n_classes is the "no label" class, used for label dropout and classifier-free guidance
        self.class_emb = nn.Embedding(n_classes + 1, dim) if n_classes else None
        if self.class_emb is not None:  # zero: a label starts with no effect (fine-tuning an unconditional model)
            nn.init.zeros_(self.class_emb.weight)

    def forward(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.mlp(timestep_embedding(t, self.freq_dim))  # (B, dim)
        if self.class_emb is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.n_classes, dtype=torch.long, device=t.device)
            emb = emb + self.class_emb(y)
        elif y is not None:
            raise ValueError("this model was built without classes (n_classes=0) but got labels y")
        return emb


@dataclass
class UNetConfig(DictConfig):
    image_size: int = 16
    in_channels: int = 3
    channels: int = 32  # width at full resolution; 2x at the two lower ones
    emb_dim: int = 128
    n_classes: int = 0  # 0: unconditional
    attention: bool = True  # self-attention at the lowest resolution
    groups: int = 8

    def __post_init__(self) -> None:
        for name in ("image_size", "in_channels", "channels", "emb_dim", "groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UNetConfig.{name}={value!r}: must be a positive integer")
        if self.image_size % 4:
            raise ValueError(f"UNetConfig.image_size={self.image_size}: must be divisible by 4 (two halvings)")
        if self.channels % self.groups:
            raise ValueError(f"UNetConfig.channels={self.channels} must be divisible by groups={self.groups}")
        if isinstance(self.n_classes, bool) or not isinstance(self.n_classes, int) or self.n_classes < 0:
            raise ValueError(f"UNetConfig.n_classes={self.n_classes!r}: must be an integer >= 0")


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, FiLM by the embedding, GroupNorm -> SiLU -> conv, plus the (projected) input."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # the block starts as its skip connection
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, c_out, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H*W positions of a feature map (residual)."""

    def __init__(self, channels: int, groups: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        z = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(z.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """Encoder (H -> H/2 -> H/4), middle, decoder with skip connections; predicts a tensor shaped like x."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c, e, g = config.channels, config.emb_dim, config.groups
        self.embed = TimeEmbedding(e, n_classes=config.n_classes)
        self.stem = nn.Conv2d(config.in_channels, c, 3, padding=1)
        self.down1 = ResBlock(c, c, e, g)  # H
        self.pool1 = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.down2 = ResBlock(c, 2 * c, e, g)  # H/2
        self.pool2 = nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1)
        self.mid1 = ResBlock(2 * c, 2 * c, e, g)  # H/4
        self.attn = SelfAttention2d(2 * c, g) if config.attention else nn.Identity()
        self.mid2 = ResBlock(2 * c, 2 * c, e, g)
        self.up2 = ResBlock(4 * c, 2 * c, e, g)  # H/2, after concatenating the skip
        self.up1 = ResBlock(3 * c, c, e, g)  # H
        self.head = nn.Sequential(nn.GroupNorm(g, c), nn.SiLU(), nn.Conv2d(c, config.in_channels, 3, padding=1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        check_input(x, t, self.config.in_channels, self.config.image_size)
        emb = self.embed(t, y)  # (B, emb_dim)
        h0 = self.down1(self.stem(x), emb)  # (B, c, H, W)
        h1 = self.down2(self.pool1(h0), emb)  # (B, 2c, H/2, W/2)
        h = self.mid1(self.pool2(h1), emb)  # (B, 2c, H/4, W/4)
        h = self.mid2(self.attn(h), emb)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.up2(torch.cat([h, h1], dim=1), emb)  # (B, 2c, H/2, W/2)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.up1(torch.cat([h, h0], dim=1), emb)  # (B, c, H, W)
        return self.head(h)


def check_input(x: torch.Tensor, t: torch.Tensor, channels: int, size: int) -> None:
    """ValueError unless x is (B, channels, size, size) and t is (B,)."""
    if x.dim() != 4 or x.shape[1] != channels or x.shape[2] != size or x.shape[3] != size:
        raise ValueError(f"input of shape {tuple(x.shape)}: this model takes (B, {channels}, {size}, {size})")
    if t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"times of shape {tuple(t.shape)}: expected ({x.shape[0]},), one time per image")
