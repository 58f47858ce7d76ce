"""A small text encoder for captions, and the text-conditioned DiT that cross-attends to it.

The encoder is a bidirectional transformer (pre-LN blocks, no causal mask, padding masked out) over the caption's
word tokens: learned word and position embeddings, ``n_layer`` blocks, a final LayerNorm. It returns one feature
vector per word (the *context* the image model attends to), the padding mask, and their masked mean (the *pooled*
vector that joins the DiT's conditioning vector c). It is trained in this part, from scratch, together with the
image model (no downloaded CLIP).

For classifier-free guidance the model also learns a *null caption*: a single learned token that stands for "no
text"; training replaces a random fraction of captions by it (``drop``), and sampling contrasts the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from insideout.diffusion.dit import Attention, DiT, DiTConfig
from insideout.utils import DictConfig


@dataclass
class TextEncoderConfig(DictConfig):
    vocab_size: int = 21
    max_words: int = 12
    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_words", "d_model", "n_layer", "n_head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TextEncoderConfig.{name}={value!r}: must be a positive integer")
        if self.d_model % self.n_head:
            raise ValueError(f"TextEncoderConfig.d_model={self.d_model} must be divisible by n_head={self.n_head}")


class TextBlock(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, n_head)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, mask)  # every word attends to every real word (padding masked)
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """Caption ids (B, L) -> word features (B, L, d), mask (B, L) (True = a real word), pooled (B, d)."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.tok_emb = nn.Embedding(config.vocab_size, d)
        self.pos_emb = nn.Embedding(config.max_words, d)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.blocks = nn.ModuleList(TextBlock(d, config.n_head) for _ in range(config.n_layer))
        self.norm = nn.LayerNorm(d)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if ids.dim() != 2 or ids.shape[1] > self.config.max_words:
            raise ValueError(f"caption ids of shape {tuple(ids.shape)}: expected (B, L) with L <= "
                             f"{self.config.max_words}")
        if int(ids.max()) >= self.config.vocab_size or int(ids.min()) < 0:
            raise ValueError(f"caption ids must lie in [0, {self.config.vocab_size}): encode text with "
                             "CaptionTokenizer")
        mask = ids != 0  # (B, L)
        if not bool(mask.any(dim=1).all()):
            raise ValueError("a caption has no words (all padding)")
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok_emb(ids) + self.pos_emb(pos)[None]  # (B, L, d)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        return x, mask, masked_mean(x, mask)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, d) mean of x (B, L, d) over the positions where mask (B, L) is True."""
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp_min(1)


class TextToImage(nn.Module):
    """Text encoder + cross-attending DiT: ``encode(ids)`` gives the DiT's keyword arguments for a caption."""

    def __init__(self, dit: DiTConfig, text: TextEncoderConfig):
        super().__init__()
        if dit.d_context != text.d_model:
            raise ValueError(f"DiTConfig.d_context={dit.d_context} must equal the text encoder's d_model="
                             f"{text.d_model}")
        self.config = {"dit": dit.to_dict(), "text": text.to_dict()}
        self.text = TextEncoder(text)
        self.dit = DiT(dit)
        self.null = nn.Parameter(torch.zeros(1, 1, text.d_model))  # the learned "no caption" token

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, ids: torch.Tensor, drop: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{context, context_mask, pooled} for caption ids (B, L); rows where ``drop`` is True get the null
        caption (the null token in position 0, everything else masked)."""
        context, mask, _ = self.text(ids)
        if drop is not None:
            d = drop[:, None, None]
            null = torch.zeros_like(context)
            null[:, :1] = self.null
            context = torch.where(d, null, context)
            first = torch.zeros_like(mask)
            first[:, 0] = True
            mask = torch.where(drop[:, None], first, mask)
        return {"context": context, "context_mask": mask, "pooled": masked_mean(context, mask)}

    def encode_null(self, batch: int) -> dict[str, torch.Tensor]:
        """The null caption for a batch: one token, the learned null embedding."""
        context = self.null.expand(batch, 1, -1)
        mask = torch.ones(batch, 1, dtype=torch.bool, device=context.device)
        return {"context": context, "context_mask": mask, "pooled": context[:, 0]}

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor,
                pooled: torch.Tensor) -> torch.Tensor:
        return self.dit(x, t, context=context, context_mask=context_mask, pooled=pooled)
