"""LoRA from scratch: a frozen linear layer plus a trainable low-rank update, mergeable into the weight.

For a frozen weight :math:`W \\in \\mathbb{R}^{d_{out} \\times d_{in}}`, LoRA (Hu et al., 2022) learns
:math:`A \\in \\mathbb{R}^{r \\times d_{in}}` and :math:`B \\in \\mathbb{R}^{d_{out} \\times r}` and computes
:math:`y = x W^\\top + b + \\tfrac{\\alpha}{r}\\, x A^\\top B^\\top`. ``B`` starts at zero, so the adapted model
starts exactly at the base model; ``A`` starts like a ``nn.Linear`` weight (Kaiming-uniform). ``merge`` adds
:math:`\\tfrac{\\alpha}{r} B A` into ``W`` (inference then costs nothing extra) and ``unmerge`` subtracts it again.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

DEFAULT_TARGETS = ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")


def check_lora_args(rank, alpha, in_features: int, out_features: int) -> None:
    """ValueError for a rank < 1 or above min(d_in, d_out) (not low rank), or alpha <= 0."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA rank={rank!r}: must be an integer >= 1")
    if rank > min(in_features, out_features):
        raise ValueError(f"LoRA rank={rank} is larger than the layer ({out_features} x {in_features}): a rank above "
                         f"min(d_out, d_in)={min(in_features, out_features)} adds parameters and no expressiveness")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"LoRA alpha={alpha!r}: must be a finite number > 0 (the update is scaled by alpha / rank)")


class LoRALinear(nn.Module):
    """``base(x) + (alpha / rank) * x A^T B^T`` with ``base`` frozen; ``merge``/``unmerge`` fold the update in/out."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, *, generator: torch.Generator | None = None):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        check_lora_args(rank, alpha, base.in_features, base.out_features)
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank, self.alpha = rank, float(alpha)
        self.scaling = self.alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=w.device, dtype=w.dtype))
        bound = 1.0 / math.sqrt(base.in_features)  # nn.Linear's Kaiming-uniform(a=sqrt(5)) bound
        with torch.no_grad():
            self.lora_A.uniform_(-bound, bound, generator=generator)
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A: the update LoRA adds to W, (d_out, d_in)."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # (..., d_out)
        if self.merged:
            return y
        return y + self.scaling * ((x @ self.lora_A.t()) @ self.lora_B.t())  # (..., r) then (..., d_out)

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False


def apply_lora(model: nn.Module, rank: int, alpha: float, targets: tuple[str, ...] = DEFAULT_TARGETS,
               seed: int = 0) -> list[str]:
    """Freeze every parameter of ``model`` and wrap each ``nn.Linear`` whose name ends with a target in LoRA.

    Returns the wrapped names. The A matrices are drawn from a generator seeded with ``seed``.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and full.endswith(targets):
                check_lora_args(rank, alpha, child.in_features, child.out_features)
                setattr(module, child_name, LoRALinear(child, rank, alpha, generator=generator))
                wrapped.append(full)
    if not wrapped:
        raise ValueError(f"no nn.Linear named like {targets} in the model: nothing to adapt")
    return wrapped


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model):
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model):
        layer.unmerge()


def lora_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA tensors (A and B of every wrapped layer): what an adapter checkpoint stores."""
    return {k: v for k, v in model.state_dict().items() if ".lora_A" in k or ".lora_B" in k}


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters with requires_grad (a tied matrix counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer's per-parameter state tensors (AdamW: two moments per trained number, plus steps)."""
    return sum(v.numel() * v.element_size() for state in optimizer.state.values() for v in state.values()
               if torch.is_tensor(v))


# ---- the new tokens' rows -----------------------------------------------------------------------------------


class NewRowsEmbedding(nn.Module):
    """A token embedding whose first rows are frozen and whose last ``n_new`` rows train (the chat tokens).

    LoRA adapts the linear layers, but the rows of the tokens added in chapter 01 start as the mean row and must
    be learned: this is PEFT's ``trainable_token_indices`` for the last rows. ``weight`` is the whole matrix.
    """

    def __init__(self, embedding: nn.Embedding, n_new: int):
        super().__init__()
        if not 1 <= n_new < embedding.num_embeddings:
            raise ValueError(f"n_new={n_new}: must be between 1 and {embedding.num_embeddings - 1}")
        w = embedding.weight.detach()
        self.register_buffer("frozen_rows", w[:-n_new].clone())  # (V - n, d)
        self.new_rows = nn.Parameter(w[-n_new:].clone())  # (n, d)

    @property
    def weight(self) -> torch.Tensor:
        return torch.cat([self.frozen_rows, self.new_rows], dim=0)  # (V, d)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(idx, self.weight)


class NewRowsHead(nn.Module):
    """The LM head tied to a ``NewRowsEmbedding``: logits of the frozen rows need no weight gradient."""

    def __init__(self, embedding: NewRowsEmbedding):
        super().__init__()
        object.__setattr__(self, "_embedding", embedding)  # not a submodule: its tensors belong to tok_emb

    @property
    def weight(self) -> torch.Tensor:
        return self._embedding.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self._embedding
        return torch.cat([nn.functional.linear(x, e.frozen_rows), nn.functional.linear(x, e.new_rows)], dim=-1)


def train_new_token_rows(model: nn.Module, n_new: int) -> None:
    """Freeze the token embedding (and the tied head) of a GPT except its last ``n_new`` rows."""
    if not getattr(model.config, "tie_weights", False):
        raise ValueError("train_new_token_rows expects a GPT with a tied LM head")
    embedding = NewRowsEmbedding(model.tok_emb, n_new)
    model.tok_emb = embedding
    model.lm_head = NewRowsHead(embedding)
