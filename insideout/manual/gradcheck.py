"""Finite-difference checks of the analytic gradients, in pure Python."""

from __future__ import annotations

from dataclasses import dataclass

from .model import TINY_CONFIG, check_config, loss_only, parameter_shapes

FD_STEP = 1e-5  # delta of the central difference: truncation error ~delta^2, rounding error ~1e-16 / delta


def _get(value: list, index: tuple[int, ...]) -> float:
    for i in index:
        value = value[i]
    return value


def _set(value: list, index: tuple[int, ...], x: float) -> None:
    for i in index[:-1]:
        value = value[i]
    value[index[-1]] = x


def central_difference(params: dict[str, list], name: str, index: tuple[int, ...], step: float = FD_STEP,
                       **forward_kwargs) -> float:
    """(L(theta + step e) - L(theta - step e)) / (2 step) for the one entry ``params[name][index]``; restored after."""
    if name not in params:
        raise ValueError(f"no parameter {name!r}; choose one of {list(params)}")
    original = _get(params[name], index)
    try:
        _set(params[name], index, original + step)
        up = loss_only(params, **forward_kwargs)
        _set(params[name], index, original - step)
        down = loss_only(params, **forward_kwargs)
    finally:
        _set(params[name], index, original)
    return (up - down) / (2.0 * step)


def relative_error(a: float, b: float) -> float:
    """|a - b| / max(|a|, |b|), and 0 when both are 0."""
    scale = max(abs(a), abs(b))
    return 0.0 if scale == 0.0 else abs(a - b) / scale


def largest_entry(value: list) -> tuple[int, ...]:
    """Index of the entry with the largest magnitude (first one on ties): where a spot check is most telling."""
    if isinstance(value[0], list):
        best = max(((i, j) for i in range(len(value)) for j in range(len(value[0]))),
                   key=lambda ij: abs(value[ij[0]][ij[1]]))
        return best
    return (max(range(len(value)), key=lambda i: abs(value[i])),)


def get_entry(value: list, index: tuple[int, ...]) -> float:
    """value[index[0]][index[1]]... for a nested list."""
    return _get(value, index)


@dataclass(frozen=True)
class LogicalTensor:
    """One tensor of the maths (W_Q, b_K, ...) and where it lives: rows ``offset ...`` of a stored parameter."""

    symbol: str  # e.g. "W_Q", "b_K", "γ₁"
    param: str  # the state-dict name that stores it, e.g. "blocks.0.attn.qkv.weight"
    offset: int  # its first row (matrices) or entry (vectors) inside ``param``
    shape: tuple[int, ...]

    def param_index(self, index: tuple[int, ...]) -> tuple[int, ...]:
        """The index in ``param`` of entry ``index`` of this logical tensor."""
        if len(index) != len(self.shape) or not all(0 <= i < n for i, n in zip(index, self.shape, strict=True)):
            raise ValueError(f"{self.symbol}: index {index} is outside its shape {self.shape}")
        return (index[0] + self.offset, *index[1:])

    def view(self, value: list) -> list:
        """This tensor's part of a stored value (the parameter or its gradient)."""
        return value[self.offset:self.offset + self.shape[0]]


_SYMBOLS = {"ln1.weight": "γ₁", "ln1.bias": "β₁", "attn.proj.weight": "W_O", "attn.proj.bias": "b_O",
            "ln2.weight": "γ₂", "ln2.bias": "β₂", "mlp.fc.weight": "W_1", "mlp.fc.bias": "b_1",
            "mlp.proj.weight": "W_2", "mlp.proj.bias": "b_2"}


def logical_tensors(config: dict | None = None) -> list[LogicalTensor]:
    """Every tensor of the maths, in state-dict order, with the fused [W_Q; W_K; W_V] and [b_Q; b_K; b_V] split.

    With more than one block the symbols carry the block index (``W_Q^0``, ``W_Q^1``, ...).
    """
    c = check_config(TINY_CONFIG if config is None else config)
    d, out = c["d_model"], []
    for name, shape in parameter_shapes(c).items():
        if name in ("tok_emb.weight", "pos_emb.weight", "ln_f.weight", "ln_f.bias"):
            symbol = {"tok_emb.weight": "E", "pos_emb.weight": "P", "ln_f.weight": "γ_f", "ln_f.bias": "β_f"}[name]
            out.append(LogicalTensor(symbol, name, 0, shape))
            continue
        layer, rest = name.split(".", 2)[1], name.split(".", 2)[2]
        tag = "" if c["n_layer"] == 1 else f"^{layer}"
        if rest in ("attn.qkv.weight", "attn.qkv.bias"):
            letter = "W" if rest.endswith("weight") else "b"
            for j, part in enumerate("QKV"):
                out.append(LogicalTensor(f"{letter}_{part}{tag}", name, j * d, (d, *shape[1:])))
        else:
            out.append(LogicalTensor(_SYMBOLS[rest] + tag, name, 0, shape))
    return out


__all__ = ["FD_STEP", "LogicalTensor", "central_difference", "relative_error", "largest_entry", "get_entry",
           "logical_tensors"]
