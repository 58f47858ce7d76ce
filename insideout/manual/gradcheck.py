"""Finite-difference checks of the analytic gradients, in pure Python."""

from __future__ import annotations

from .model import loss_only

FD_STEP = 1e-5  # h of the central difference: truncation error ~h^2, rounding error ~1e-16 / h


def _get(value: list, index: tuple[int, ...]) -> float:
    for i in index:
        value = value[i]
    return value


def _set(value: list, index: tuple[int, ...], x: float) -> None:
    for i in index[:-1]:
        value = value[i]
    value[index[-1]] = x


def central_difference(params: dict[str, list], name: str, index: tuple[int, ...], h: float = FD_STEP,
                       **forward_kwargs) -> float:
    """(L(theta + h e) - L(theta - h e)) / 2h for the single entry ``params[name][index]``; params are restored."""
    if name not in params:
        raise ValueError(f"no parameter {name!r}; choose one of {list(params)}")
    original = _get(params[name], index)
    try:
        _set(params[name], index, original + h)
        up = loss_only(params, **forward_kwargs)
        _set(params[name], index, original - h)
        down = loss_only(params, **forward_kwargs)
    finally:
        _set(params[name], index, original)
    return (up - down) / (2.0 * h)


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


__all__ = ["FD_STEP", "central_difference", "relative_error", "largest_entry", "get_entry"]
