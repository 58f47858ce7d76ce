"""The course's GPT: one config dataclass and the modules in the order data flows through them.

Pre-LN decoder-only transformer (GPT-2 layout): token embedding (+ learned positions), n_layer blocks of
``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``, a final LayerNorm and an LM head tied to the token embedding.
Positions can be learned, ALiBi or RoPE; switches turn pieces off for the ablation chapter. Every activation
site is an identity ``HookPoint`` so interpretability code can read or overwrite it with ordinary forward hooks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from insideout.utils import DictConfig

POSITIONS = ("learned", "alibi", "rope", "none")
ACTIVATIONS = ("gelu", "relu", "sigmoid")
ATTENTION_IMPLS = ("sdpa", "manual")
NORM_POSITIONS = ("pre", "post")

_POSITIVE_INTS = ("vocab_size", "context_length", "d_model", "n_layer", "n_head")
_BOOLS = ("bias", "tie_weights", "layer_norm", "residual", "mlp", "scale_attention", "scale_residual_init",
          "attn_normalize")
_CHOICES = {"position": POSITIONS, "activation": ACTIVATIONS, "attn_impl": ATTENTION_IMPLS,
            "norm_position": NORM_POSITIONS}


class _DerivedWidth(int):
    """The MLP width ``4 * d_model`` of a GPTConfig whose ``d_ff`` was not given.

    An ``int`` like any other, except that it remembers being derived: a copy of the config (``dataclasses.replace``,
    ``GPTConfig(**config.to_dict())``, a checkpoint's metadata) derives it again from its own ``d_model`` instead of
    carrying the old number over, so ``d_model=32`` never trains with ``d_ff=512``.
    """

    __slots__ = ()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class GPTConfig(DictConfig):
    """Hyper-parameters and experiment switches of the GPT. Validated on construction."""

    vocab_size: int = 4096
    context_length: int = 128
    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_ff: int | None = None  # MLP width; None (default) = 4 * d_model, derived (see _DerivedWidth)
    dropout: float = 0.0
    bias: bool = True
    position: str = "learned"  # learned | alibi | rope | none
    rope_base: float = 10000.0
    tie_weights: bool = True
    layer_norm: bool = True  # False replaces every LayerNorm by the identity
    residual: bool = True  # False drops the two skip connections of every block
    mlp: bool = True  # False gives an attention-only transformer (no MLP, no ln2), as used for induction heads
    scale_attention: bool = True  # False drops the 1/sqrt(d_head) factor
    activation: str = "gelu"  # gelu (tanh form, as GPT-2) | relu | sigmoid
    scale_residual_init: bool = True  # residual projections get std init_std / sqrt(2 * n_layer)
    init_std: float = 0.02
    ln_eps: float = 1e-5
    attn_impl: str = "sdpa"  # sdpa (F.scaled_dot_product_attention) | manual (written out)
    norm_position: str = "pre"  # pre: x + f(ln(x)) (GPT-2) | post: ln(x + f(x)) (the original transformer)
    attn_normalize: bool = True  # False: attention weights exp(score), not divided by their row sum (no softmax)

    def __post_init__(self) -> None:
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name}={value!r}: must be a positive integer")
        if self.d_ff is None or isinstance(self.d_ff, _DerivedWidth):
            self.d_ff = _DerivedWidth(4 * self.d_model)
        elif not isinstance(self.d_ff, int) or isinstance(self.d_ff, bool) or self.d_ff < 1:
            raise ValueError(f"GPTConfig.d_ff={self.d_ff!r}: must be a positive integer, or None for 4 * d_model")
        if self.d_model % self.n_head != 0:
            raise ValueError(
                f"GPTConfig.d_model={self.d_model} is not divisible by n_head={self.n_head}: "
                f"choose n_head among the divisors of d_model"
            )
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise ValueError(f"GPTConfig.{name}={value!r}: choose one of {', '.join(choices)}")
        for name in _BOOLS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"GPTConfig.{name}={value!r}: must be True or False")
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(f"GPTConfig.position='rope' needs an even head dimension, got {self.head_dim}")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:  # (NaN fails the comparison too)
            raise ValueError(f"GPTConfig.dropout={self.dropout!r}: must be a number in [0, 1)")
        for name in ("init_std", "ln_eps", "rope_base"):
            value = getattr(self, name)
            if not _is_number(value) or not (math.isfinite(value) and value > 0):
                raise ValueError(f"GPTConfig.{name}={value!r}: must be a finite number > 0")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def d_ff_derived(self) -> bool:
        """True when ``d_ff`` was not given and is ``4 * d_model``."""
        return isinstance(self.d_ff, _DerivedWidth)

    def to_dict(self) -> dict:
        """Plain dict of the fields; a derived ``d_ff`` is written as None, so a copy derives it again."""
        out = super().to_dict()
        out["d_ff"] = None if self.d_ff_derived else int(self.d_ff)
        return out


class HookPoint(nn.Identity):
    """An identity layer that marks an activation site; register forward hooks on it to read or patch."""

    def has_hooks(self) -> bool:
        return bool(self._forward_hooks) or bool(self._forward_pre_hooks)


class KVCache:
    """Per-layer key/value buffers for incremental decoding, preallocated to ``max_len`` positions.

    Keys are stored after RoPE is applied, so a cached key never needs rotating again. ``length`` positions are
    filled, the same number in every row; with left-padded batches, ``GPT.forward``'s ``attention_mask`` says which
    of them are real tokens.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int | None = None,
                 device=None, dtype: torch.dtype = torch.float32):
        max_len = config.context_length if max_len is None else max_len
        for name, value in (("batch_size", batch_size), ("max_len", max_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"KVCache {name}={value!r}: must be a positive integer "
                                 f"(max_len: positions to hold, at most context_length={config.context_length})")
        if max_len > config.context_length:
            raise ValueError(f"KVCache max_len={max_len} exceeds the model's context_length={config.context_length}")
        shape = (batch_size, config.n_head, max_len, config.head_dim)  # (batch, head, position, d_head)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.max_len = max_len
        self.length = 0  # positions already stored

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new keys/values after the stored ones and return all of them for this layer."""
        start, end = self.length, self.length + k.shape[2]
        if k.shape[0] != self.k[layer].shape[0]:
            raise ValueError(f"KVCache was made for batch size {self.k[layer].shape[0]}, got {k.shape[0]}: "
                             f"create it with model.new_cache(batch_size={k.shape[0]})")
        if end > self.max_len:
            raise ValueError(f"KVCache is full: {end} positions requested, room for {self.max_len}")
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Keep only the given rows (a LongTensor of row indices, in the new order): drops finished sequences."""
        rows = rows.to(self.k[0].device)
        self.k = [t.index_select(0, rows) for t in self.k]
        self.v = [t.index_select(0, rows) for t in self.v]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """ALiBi's per-head slopes: a geometric sequence starting at 2^(-8/n) (Press et al., 2022)."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_head).is_integer():
        slopes = power_of_two(n_head)
    else:  # interleave the slopes of the two neighbouring powers of two, as the paper's code does
        closest = 2 ** math.floor(math.log2(n_head))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_head - closest]
    return torch.tensor(slopes, dtype=torch.float64)


def alibi_bias(n_head: int, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
    """Additive attention bias -slope_h * (i - j) for query position i and key position j: (head, Tq, Tk)."""
    distance = (q_positions[:, None] - k_positions[None, :]).to(torch.float64)  # (Tq, Tk)
    return -alibi_slopes(n_head)[:, None, None] * distance[None]


def rope_cos_sin(head_dim: int, positions: torch.Tensor, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for RoPE at the given positions: each (T, head_dim), frequencies base^(-2i/d)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)  # (head_dim/2,)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # (T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)  # (T, head_dim): pair i with i + head_dim/2
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x_i, x_{i+d/2}) of x: (batch, head, T, head_dim) by the angle of its position."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU in GPT-2's tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return F.gelu(x, approximate="tanh")


class AttentionInputs:
    """What every attention layer of one forward pass shares: positions, the mask, RoPE tables, the ALiBi bias.

    Built once per ``GPT.forward`` (not once per layer). Two cases:

    * no ``attention_mask`` — every row is real: query i sits at position ``offset + i`` and sees keys ``0..i``;
    * an ``attention_mask`` (B, offset + T), True for real tokens — the position of a real token is the number of
      real tokens before it in its row (for a left-padded row: counted from its first real token), and a query sees
      the real keys at or before it. A padding query sees only itself, so no row of the softmax is empty; its output
      is meaningless and no real position reads it.

    Tensors that depend on the activations' dtype (the additive mask, the RoPE tables, the bias) are made on first
    use in that dtype and reused by the next layers.
    """

    def __init__(self, config: GPTConfig, batch: int, T: int, offset: int, device: torch.device,
                 attention_mask: torch.Tensor | None = None, rope_table=None):
        self.config, self.T, self.offset, self.Tk = config, T, offset, offset + T
        self.padded = attention_mask is not None
        self._memo: dict = {}
        q_index = torch.arange(offset, offset + T, device=device)  # where each query sits in the buffer
        k_index = torch.arange(self.Tk, device=device)
        self.causal = k_index[None, :] <= q_index[:, None]  # (Tq, Tk) True where attending is allowed
        if not self.padded:
            self.q_pos, self.k_pos = q_index, k_index  # (T,), (Tk,)
            self.allowed = self.causal
            self._rope = None
            if config.position == "rope":
                cos, sin = rope_cos_sin(config.head_dim, q_index, config.rope_base)
                self._rope = (cos.to(device), sin.to(device))  # (T, head_dim) float64
            return
        real = attention_mask
        positions = (real.long().cumsum(dim=-1) - 1).clamp_(min=0)  # (B, Tk) real tokens before each one
        self.q_pos, self.k_pos = positions[:, offset:], positions  # (B, T), (B, Tk)
        self_only = k_index[None, :] == q_index[:, None]  # (Tq, Tk)
        self.allowed = self.causal[None] & (real[:, None, :] | self_only[None])  # (B, Tq, Tk)
        self._rope = None
        if config.position == "rope":
            cos, sin = rope_table if rope_table is not None else rope_cos_sin(
                config.head_dim, torch.arange(config.context_length, device=device), config.rope_base)
            self._rope = (cos[self.q_pos][:, None], sin[self.q_pos][:, None])  # (B, 1, T, head_dim)

    @property
    def token_positions(self) -> torch.Tensor:
        """Positions of the new tokens: (T,) shared by every row, or (B, T) with a mask."""
        return self.q_pos

    def rope(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = ("rope", dtype)
        if key not in self._memo:
            self._memo[key] = tuple(t.to(dtype) for t in self._rope)
        return self._memo[key]

    def alibi(self, dtype: torch.dtype) -> torch.Tensor:
        """-slope_h * (query position - key position): (H, Tq, Tk), or (B, H, Tq, Tk) with a mask."""
        key = ("alibi", dtype)
        if key not in self._memo:
            n_head = self.config.n_head
            if not self.padded:
                bias = alibi_bias(n_head, self.q_pos.cpu(), self.k_pos.cpu())
            else:
                distance = (self.q_pos[:, :, None] - self.k_pos[:, None, :]).cpu().to(torch.float64)
                bias = -alibi_slopes(n_head)[None, :, None, None] * distance[:, None]  # (B, H, Tq, Tk)
            self._memo[key] = bias.to(device=self.causal.device, dtype=dtype)
        return self._memo[key]

    def score_mask(self) -> torch.Tensor:
        """Boolean allowed-mask broadcastable to the scores (B, H, Tq, Tk)."""
        return self.allowed if not self.padded else self.allowed[:, None]

    def sdpa_mask(self, dtype: torch.dtype) -> torch.Tensor | None:
        """The additive mask for F.scaled_dot_product_attention (0 or -inf, plus the ALiBi bias), or None."""
        key = ("sdpa", dtype)
        if key not in self._memo:
            bias = self.alibi(dtype) if self.config.position == "alibi" else None
            if bias is None and self.offset == 0 and not self.padded:
                mask = None  # is_causal=True does it
            else:
                shape = (self.T, self.Tk) if not self.padded else (self.allowed.shape[0], 1, self.T, self.Tk)
                mask = torch.zeros(shape, device=self.causal.device, dtype=dtype).masked_fill(
                    ~self.score_mask(), float("-inf"))
                mask = mask if bias is None else mask + bias
            self._memo[key] = mask
        return self._memo[key]


def _check_attention_mask(mask, batch: int, total: int) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"attention_mask must be a tensor of shape (batch, cached + new tokens), got "
                         f"{type(mask).__name__}")
    if mask.dtype != torch.bool:
        if mask.dtype.is_floating_point or mask.dtype.is_complex or (mask.numel() and (
                int(mask.min()) < 0 or int(mask.max()) > 1)):
            raise ValueError(f"attention_mask must be bool (True = real token), got dtype {mask.dtype}"
                             f"{'' if mask.dtype.is_floating_point else ' with values other than 0 and 1'}")
        mask = mask.bool()
    if tuple(mask.shape) != (batch, total):
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, expected ({batch}, {total}): one column per "
                         f"cached and new position (True = real token, False = padding)")
    return mask


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int = 0):
        super().__init__()
        self.config = config
        self.layer = layer
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)  # fused Q, K, V
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)  # W_O
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.scale = 1.0 / math.sqrt(self.head_dim) if config.scale_attention else 1.0
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()  # (B, T, H, d_head)
        self.hook_pattern = HookPoint()  # (B, H, Tq, Tk) attention weights (probabilities unless attn_normalize=False)
        self.hook_z = HookPoint()  # (B, T, H, d_head) per-head weighted values, before W_O

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                inputs: AttentionInputs | None = None) -> torch.Tensor:
        B, T, C = x.shape  # (batch, seq, d_model)
        if inputs is None:  # called on its own: every token real, positions from the cache's length
            offset = cache.length if cache is not None else 0
            inputs = AttentionInputs(self.config, B, T, offset, x.device)
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, T, H, d_head); hooks see this layout, attention wants (B, H, T, d_head)
        q = self.hook_q(q.view(B, T, self.n_head, self.head_dim)).transpose(1, 2)
        k = self.hook_k(k.view(B, T, self.n_head, self.head_dim)).transpose(1, 2)
        v = self.hook_v(v.view(B, T, self.n_head, self.head_dim)).transpose(1, 2)
        if self.config.position == "rope":
            cos, sin = inputs.rope(q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, H, offset + T, d_head)
        if (self.config.attn_impl == "manual" or not self.config.attn_normalize
                or self.hook_pattern.has_hooks()):
            scores = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, Tq, Tk)
            if self.config.position == "alibi":
                scores = scores + inputs.alibi(q.dtype)
            scores = scores.masked_fill(~inputs.score_mask(), float("-inf"))
            if self.config.attn_normalize:
                weights = torch.softmax(scores, dim=-1)
            else:  # exp(score) of the allowed keys, 0 for the others; no division by the row sum
                weights = torch.exp(scores)
            pattern = self.hook_pattern(weights)
            y = self.attn_dropout(pattern) @ v  # (B, H, Tq, d_head)
        else:
            mask = inputs.sdpa_mask(q.dtype)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale,
                dropout_p=self.config.dropout if self.training else 0.0,
            )
        y = self.hook_z(y.transpose(1, 2))  # (B, T, H, d_head)
        return self.resid_dropout(self.proj(y.reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)
        self.activation = {"gelu": gelu, "relu": F.relu, "sigmoid": torch.sigmoid}[config.activation]
        self.hook_post = HookPoint()  # (B, T, d_ff) after the activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.hook_post(self.activation(self.fc(x)))))


def _layer_norm(config: GPTConfig) -> nn.Module:
    if not config.layer_norm:
        return nn.Identity()
    return nn.LayerNorm(config.d_model, eps=config.ln_eps, bias=config.bias)


class Block(nn.Module):
    """A transformer block. Pre-LN (default): x + attn(ln1(x)), then x + mlp(ln2(x)).

    Post-LN (``norm_position="post"``, the original transformer's placement): ln1(x + attn(x)), then
    ln2(x + mlp(x)). ``hook_resid_mid`` / ``hook_resid_post`` are the stream after each sublayer (after its
    LayerNorm in post-LN).
    """

    def __init__(self, config: GPTConfig, layer: int = 0):
        super().__init__()
        self.residual = config.residual
        self.post_norm = config.norm_position == "post"
        self.ln1 = _layer_norm(config)
        self.attn = CausalSelfAttention(config, layer)
        self.ln2 = _layer_norm(config) if config.mlp else None
        self.mlp = MLP(config) if config.mlp else None
        self.hook_resid_pre = HookPoint()  # (B, T, d_model) input of the block
        self.hook_attn_out = HookPoint()
        self.hook_resid_mid = HookPoint()
        self.hook_mlp_out = HookPoint()
        self.hook_resid_post = HookPoint()

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                inputs: AttentionInputs | None = None) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        if self.post_norm:
            a = self.hook_attn_out(self.attn(x, cache, inputs))
            x = self.hook_resid_mid(self.ln1(x + a if self.residual else a))
            if self.mlp is None:
                return self.hook_resid_post(x)
            m = self.hook_mlp_out(self.mlp(x))
            return self.hook_resid_post(self.ln2(x + m if self.residual else m))
        a = self.hook_attn_out(self.attn(self.ln1(x), cache, inputs))
        x = self.hook_resid_mid(x + a if self.residual else a)
        if self.mlp is None:
            return self.hook_resid_post(x)
        m = self.hook_mlp_out(self.mlp(self.ln2(x)))
        return self.hook_resid_post(x + m if self.residual else m)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise ValueError(f"GPT needs a GPTConfig, got {type(config).__name__}: build one with GPTConfig(...)")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.context_length, config.d_model) if config.position == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        # post-LN blocks already end in a LayerNorm: no final one (as in the original transformer)
        self.ln_f = _layer_norm(config) if config.norm_position == "pre" else nn.Identity()
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.tok_emb.weight  # one matrix: embeds tokens and scores them
        self.hook_embed = HookPoint()  # (B, T, d_model) token embeddings (+ positions), before block 0
        self.hook_final = HookPoint()  # (B, T, d_model) after the final LayerNorm
        self._rope_tables: dict = {}  # device -> RoPE cos/sin at every position (for padded batches)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, init_std) weights, zero biases; residual projections scaled down."""
        c = self.config
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = c.init_std
                if c.scale_residual_init and (name.endswith("attn.proj") or name.endswith("mlp.proj")):
                    std = c.init_std / math.sqrt(2 * c.n_layer)  # keep the residual stream's variance O(1)
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=c.init_std)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Distinct trainable parameters (a tied matrix counts once); optionally without the embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
            if self.pos_emb is not None:
                n -= self.pos_emb.weight.numel()
        return n

    def _check_input(self, idx, offset: int) -> None:
        if not isinstance(idx, torch.Tensor):
            raise ValueError(f"GPT expects a tensor of token ids of shape (batch, seq), got a "
                             f"{type(idx).__name__}: pass torch.tensor([ids]) for one sequence")
        if idx.dim() != 2:
            raise ValueError(f"GPT expects token ids of shape (batch, seq), got shape {tuple(idx.shape)}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"GPT expects integer token ids, got dtype {idx.dtype}")
        T = idx.shape[1]
        if offset + T > self.config.context_length:
            raise ValueError(
                f"sequence of {offset + T} tokens is longer than the context_length={self.config.context_length}: "
                f"truncate the input to its last {self.config.context_length} tokens"
            )
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.config.vocab_size):
            raise ValueError(
                f"token ids must lie in [0, {self.config.vocab_size}), got min {int(idx.min())}, max {int(idx.max())}: "
                f"was the text encoded with a different tokenizer?"
            )

    def _check_targets(self, targets, idx: torch.Tensor) -> None:
        if not isinstance(targets, torch.Tensor):
            raise ValueError(f"targets must be a tensor of token ids like the input, got {type(targets).__name__}")
        if targets.shape != idx.shape:
            raise ValueError(f"targets shape {tuple(targets.shape)} must equal input shape {tuple(idx.shape)}")
        if targets.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"targets must be integer token ids (int64), got dtype {targets.dtype}: the loss is "
                             f"cross-entropy against the next token's id, not a probability")
        V = self.config.vocab_size
        ignored = targets == -100
        if not bool(((targets >= 0) & (targets < V) | ignored).all()):
            bad = targets[~ignored & ((targets < 0) | (targets >= V))]
            raise ValueError(f"targets must lie in [0, {V}) or be -100 (ignored), got {sorted(set(bad.tolist()))[:5]}")
        if targets.numel() == 0 or bool(ignored.all()):
            raise ValueError("every target is -100 (ignored): the mean loss over no tokens is undefined (NaN); "
                             "keep at least one target, or skip this batch")

    def _rope_table(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._rope_tables:
            c = self.config
            cos, sin = rope_cos_sin(c.head_dim, torch.arange(c.context_length), c.rope_base)
            self._rope_tables[device] = (cos.to(device), sin.to(device))
        return self._rope_tables[device]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                attention_mask: torch.Tensor | None = None, *, last_only: bool = False,
                logits_mask: torch.Tensor | None = None):
        """Logits (batch, seq, vocab) and, if targets are given, the mean cross-entropy (ignore_index -100).

        ``last_only=True`` computes the logits of the last position only, (batch, 1, vocab): what decoding needs,
        without the LM head's cost at every prompt position (no targets then).

        ``logits_mask`` (batch, seq), bool, computes the logits of the True positions only, returned as (N, vocab)
        in row-major order of the True entries (``logits[logits_mask]`` of the full output, up to float rounding):
        fine-tuning losses that score the response tokens only skip the LM head and its softmax on the prompt.
        With targets, the loss is the mean over ``targets[logits_mask]`` (ignore_index -100 still applies).

        ``attention_mask`` (batch, cached + new positions), bool, True for real tokens, runs a padded batch: each
        row's positions count its real tokens only and no real token attends to padding (see
        ``AttentionInputs``), so every real position gets the logits it would get with its row run alone, up to
        float rounding. With a cache, pass the mask of all positions so far (the cache keeps no mask). Padding
        positions get meaningless logits: give them target -100.
        """
        offset = cache.length if cache is not None else 0
        self._check_input(idx, offset)
        if last_only and targets is not None:
            raise ValueError("last_only=True computes no logits for the loss: drop targets or last_only")
        if logits_mask is not None:
            if last_only:
                raise ValueError("last_only=True and logits_mask both choose positions: pass one of them")
            if (not isinstance(logits_mask, torch.Tensor) or logits_mask.dtype != torch.bool
                    or logits_mask.shape != idx.shape):
                got = (f"shape {tuple(logits_mask.shape)}, dtype {logits_mask.dtype}"
                       if isinstance(logits_mask, torch.Tensor) else type(logits_mask).__name__)
                raise ValueError(f"logits_mask must be a bool tensor of the input's shape {tuple(idx.shape)}, "
                                 f"got {got}")
        B, T = idx.shape
        if attention_mask is not None:
            attention_mask = _check_attention_mask(attention_mask, B, offset + T).to(idx.device)
        rope_table = (self._rope_table(idx.device)
                      if attention_mask is not None and self.config.position == "rope" else None)
        inputs = AttentionInputs(self.config, B, T, offset, idx.device, attention_mask, rope_table)
        x = self.tok_emb(idx)  # (B, T, d_model)
        if self.pos_emb is not None:
            x = x + self.pos_emb(inputs.token_positions)  # (T,) broadcast over the batch, or (B, T)
        x = self.drop(self.hook_embed(x))
        for block in self.blocks:
            x = block(x, cache, inputs)
        if cache is not None:
            cache.advance(T)
        x = self.hook_final(self.ln_f(x))
        if logits_mask is not None:
            x = x[logits_mask.to(x.device)]  # (N, d_model): the chosen positions only
        logits = self.lm_head(x[:, -1:] if last_only else x)  # (B, T, vocab), (B, 1, vocab) or (N, vocab)
        loss = None
        if targets is not None:
            self._check_targets(targets, idx)
            if logits_mask is not None:
                targets = targets[logits_mask.to(targets.device)]
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-100)
        return logits, loss

    def new_cache(self, batch_size: int = 1, max_len: int | None = None) -> KVCache:
        """An empty KV-cache on this model's device and dtype."""
        p = self.tok_emb.weight
        return KVCache(self.config, batch_size, max_len, device=p.device, dtype=p.dtype)

    # ---- loading weights -------------------------------------------------------------------------------

    def load_state_dict_strict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a state dict, raising one ValueError that names every missing, unexpected and mis-shaped tensor."""
        own = self.state_dict()
        if self.config.tie_weights:
            own.pop("lm_head.weight", None)  # the same tensor as tok_emb.weight
            state = {k: v for k, v in state.items() if k != "lm_head.weight"}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        misshaped = sorted(
            f"{k}: expected {tuple(own[k].shape)}, got {tuple(state[k].shape)}"
            for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)
        )
        problems = []
        if missing:
            problems.append(f"missing tensors: {', '.join(missing)}")
        if unexpected:
            problems.append(f"unexpected tensors: {', '.join(unexpected)}")
        if misshaped:
            problems.append(f"mis-shaped tensors: {'; '.join(misshaped)}")
        if problems:
            raise ValueError("state dict does not fit this GPT — " + " | ".join(problems))
        with torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v)

    def load_gpt2_state_dict(self, hf_state: dict[str, torch.Tensor]) -> None:
        """Load the state dict of Hugging Face's GPT2LMHeadModel (Conv1D weights are stored transposed)."""
        self.load_state_dict_strict(gpt2_to_insideout(hf_state))


_GPT2_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_GPT2_RENAMES = {
    "ln_1": "ln1", "ln_2": "ln2", "attn.c_attn": "attn.qkv", "attn.c_proj": "attn.proj",
    "mlp.c_fc": "mlp.fc", "mlp.c_proj": "mlp.proj",
}


def gpt2_to_insideout(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and transpose) GPT-2 tensors to this module's names; buffers like attn.bias are dropped."""
    out = {}
    for name, tensor in hf_state.items():
        key = name.removeprefix("transformer.")
        if key.endswith(("attn.bias", "attn.masked_bias")) and tensor.dim() > 1 or key == "lm_head.weight":
            continue  # causal-mask buffers of older versions; the tied head
        if key.endswith(_GPT2_TRANSPOSED):
            tensor = tensor.t()
        if key.startswith("h."):
            key = "blocks." + key[2:]
            for old, new in _GPT2_RENAMES.items():
                key = key.replace(f".{old}.", f".{new}.")
        else:
            key = {"wte.weight": "tok_emb.weight", "wpe.weight": "pos_emb.weight"}.get(key, key)
        out[key] = tensor.contiguous()
    return out
