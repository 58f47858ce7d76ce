"""A diffusion transformer (DiT): patches as tokens, conditioning by adaptive LayerNorm, optional cross-attention.

* **Patchify.** A (B, C, H, W) input is cut into (H/p)(W/p) patches of p x p pixels; each is flattened and
  projected to ``d_model`` (one linear map, written as a stride-p convolution), plus a fixed 2-D sine-cosine
  position embedding.
* **Conditioning vector.** ``c`` = MLP(sinusoidal(t)) + class embedding (optional) + pooled text (optional).
* **adaLN-Zero block.** From ``c``, a linear map (``modulation``) produces a shift ``beta``, a scale ``gamma`` and
  a gate ``alpha`` for each of the block's sub-layers:
  ``x <- x + alpha_1 * Attn(LN(x) * (1 + gamma_1) + beta_1)``, ``x <- x + alpha_2 * MLP(LN(x) * (1 + gamma_2) +
  beta_2)``; the modulation is initialised to zero, so every gate starts at 0 and every block is the identity.
  ``adaln="adaLN"`` is the same without gates and with the default initialisation (the ablation of Peebles & Xie).
* **Cross-attention** (``d_context > 0``): after self-attention, the tokens attend to the text encoder's token
  features, ``x <- x + CrossAttn(LN(x), text)``, its output projection initialised to zero under adaLN-Zero.
* **Unpatchify.** A final adaptive LayerNorm and a linear map (zero-initialised) back to p x p x C per token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from insideout.diffusion.unet import check_input, timestep_embedding
from insideout.utils import DictConfig

ADALN_KINDS = ("adaLN-Zero", "adaLN")


@dataclass
class DiTConfig(DictConfig):
    image_size: int = 16
    in_channels: int = 3
    patch: int = 2
    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    mlp_ratio: int = 4
    n_classes: int = 0  # > 0: class embedding (+1 "null" class for guidance)
    d_context: int = 0  # > 0: cross-attention to text features of this width; the pooled text joins c
    adaln: str = "adaLN-Zero"

    def __post_init__(self) -> None:
        for name in ("image_size", "in_channels", "patch", "d_model", "n_layer", "n_head", "mlp_ratio"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DiTConfig.{name}={value!r}: must be a positive integer")
        for name in ("n_classes", "d_context"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"DiTConfig.{name}={value!r}: must be an integer >= 0")
        if self.image_size % self.patch:
            raise ValueError(f"DiTConfig.patch={self.patch} must divide image_size={self.image_size}")
        if self.d_model % self.n_head or (self.d_model // self.n_head) % 2:
            raise ValueError(f"DiTConfig.d_model={self.d_model} must split into n_head={self.n_head} heads of an "
                             "even width")
        if self.d_model % 4:
            raise ValueError(f"DiTConfig.d_model={self.d_model} must be divisible by 4 (2-D position embedding)")
        if self.adaln not in ADALN_KINDS:
            raise ValueError(f"DiTConfig.adaln={self.adaln!r}: choose one of {', '.join(ADALN_KINDS)}")

    @property
    def n_tokens(self) -> int:
        return (self.image_size // self.patch) ** 2


def sincos_2d(grid: int, dim: int) -> torch.Tensor:
    """(grid*grid, dim) fixed position embedding: half the features encode the row, half the column."""
    pos = torch.arange(grid, dtype=torch.float32)
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    row = pos[:, None] * freqs[None]  # (grid, dim/4)
    emb_1d = torch.cat([torch.sin(row), torch.cos(row)], dim=1)  # (grid, dim/2)
    rows = emb_1d[:, None, :].expand(grid, grid, dim // 2)
    cols = emb_1d[None, :, :].expand(grid, grid, dim // 2)
    return torch.cat([rows, cols], dim=-1).reshape(grid * grid, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """LN(x) * (1 + scale) + shift, with per-sample (B, d) scale and shift broadcast over tokens."""
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head attention; keys/values from ``context`` when given (cross-attention), else from x."""

    def __init__(self, d_model: int, n_head: int, d_context: int | None = None):
        super().__init__()
        self.n_head = n_head
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_context or d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        src = x if context is None else context
        q = self.q(x).view(b, t, self.n_head, d // self.n_head).transpose(1, 2)  # (B, H, T, dh)
        k, v = self.kv(src).view(b, src.shape[1], 2, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)
        mask = None if context_mask is None else context_mask[:, None, None, :]  # (B, 1, 1, S): True = attend
        z = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, dh)
        return self.out(z.transpose(1, 2).reshape(b, t, d))


class DiTBlock(nn.Module):
    """One transformer block conditioned by adaLN(-Zero) on c; optional cross-attention to a context."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        d = config.d_model
        self.zero = config.adaln == "adaLN-Zero"
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(d, config.n_head)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(d, config.mlp_ratio * d), nn.GELU(approximate="tanh"),
                                 nn.Linear(config.mlp_ratio * d, d))
        self.cross = None
        if config.d_context:
            self.norm_c = nn.LayerNorm(d, eps=1e-6)
            self.cross = Attention(d, config.n_head, d_context=config.d_context)
            if self.zero:
                nn.init.zeros_(self.cross.out.weight)
                nn.init.zeros_(self.cross.out.bias)
        self.n_mod = 6 if self.zero else 4  # (shift, scale, gate) x 2, or (shift, scale) x 2
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, self.n_mod * d))
        if self.zero:
            nn.init.zeros_(self.modulation[1].weight)
            nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        mod = self.modulation(c).chunk(self.n_mod, dim=-1)  # each (B, d)
        if self.zero:
            shift1, scale1, gate1, shift2, scale2, gate2 = mod
        else:
            (shift1, scale1, shift2, scale2), gate1, gate2 = mod, None, None
        h = self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + (gate1[:, None] * h if gate1 is not None else h)
        if self.cross is not None:
            x = x + self.cross(self.norm_c(x), context, context_mask)
        h = self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x + (gate2[:, None] * h if gate2 is not None else h)


class DiT(nn.Module):
    """Patchify -> position embedding -> adaLN(-Zero) blocks -> adaptive final norm -> unpatchify."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        d, p = config.d_model, config.patch
        self.patchify = nn.Conv2d(config.in_channels, d, p, stride=p)  # one linear map per p x p patch
        self.register_buffer("pos_emb", sincos_2d(config.image_size // p, d)[None], persistent=False)
        self.freq_dim = 64
        self.t_mlp = nn.Sequential(nn.Linear(self.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.class_emb = nn.Embedding(config.n_classes + 1, d) if config.n_classes else None
        if self.class_emb is not None:
            nn.init.zeros_(self.class_emb.weight)
        self.context_pool = nn.Linear(config.d_context, d) if config.d_context else None
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.n_layer))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_mod = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.final = nn.Linear(d, p * p * config.in_channels)
        nn.init.xavier_uniform_(self.patchify.weight.view(d, -1))
        for block in self.blocks:
            for lin in (block.attn.q, block.attn.kv, block.attn.out, block.mlp[0], block.mlp[2]):
                nn.init.xavier_uniform_(lin.weight)
                nn.init.zeros_(lin.bias)
        nn.init.zeros_(self.final_mod[1].weight)
        nn.init.zeros_(self.final_mod[1].bias)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def condition(self, t: torch.Tensor, y: torch.Tensor | None = None,
                  pooled: torch.Tensor | None = None) -> torch.Tensor:
        """The conditioning vector c (B, d): time, plus class and pooled text when the model has them."""
        c = self.t_mlp(timestep_embedding(t, self.freq_dim))
        if self.class_emb is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.config.n_classes, dtype=torch.long, device=t.device)
            c = c + self.class_emb(y)
        elif y is not None:
            raise ValueError("this DiT was built without classes (n_classes=0) but got labels y")
        if self.context_pool is not None and pooled is not None:
            c = c + self.context_pool(pooled)
        return c

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, T, d): patch embeddings plus positions."""
        return self.patchify(x).flatten(2).transpose(1, 2) + self.pos_emb

    def unpatchify(self, h: torch.Tensor) -> torch.Tensor:
        """(B, T, p*p*C) -> (B, C, H, W)."""
        cfg = self.config
        b, g, p, ch = h.shape[0], cfg.image_size // cfg.patch, cfg.patch, cfg.in_channels
        return h.view(b, g, g, p, p, ch).permute(0, 5, 1, 3, 2, 4).reshape(b, ch, g * p, g * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                pooled: torch.Tensor | None = None) -> torch.Tensor:
        check_input(x, t, self.config.in_channels, self.config.image_size)
        if self.config.d_context and context is None:
            raise ValueError("this DiT cross-attends to text: pass context (B, S, d_context) from the text encoder")
        c = self.condition(t, y, pooled)  # (B, d)
        h = self.tokens(x)  # (B, T, d)
        for block in self.blocks:
            h = block(h, c, context, context_mask)
        shift, scale = self.final_mod(c).chunk(2, dim=-1)
        return self.unpatchify(self.final(modulate(self.final_norm(h), shift, scale)))
