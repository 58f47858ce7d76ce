"""AdamW (Loshchilov & Hutter, 2019) in pure Python, operation for operation as ``torch.optim.AdamW``."""

from __future__ import annotations

import math

ADAMW: dict = {"lr": 0.01, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}


def decays(name: str, value: list) -> bool:
    """Weight decay goes to matrices (linear weights and embeddings), not to biases or LayerNorm gains/shifts."""
    return bool(value) and isinstance(value[0], list)


def _map2(f, *nested):
    """Apply f element-wise to nested lists of the same shape."""
    if isinstance(nested[0], list):
        return [_map2(f, *items) for items in zip(*nested, strict=True)]
    return f(*nested)


def zeros_like(value: list) -> list:
    """A nested list of 0.0 with the shape of ``value``."""
    return _map2(lambda _: 0.0, value)


def init_state(params: dict[str, list]) -> dict:
    """AdamW's state before the first step: step 0, first and second moments all zero."""
    return {"step": 0, "m": {k: zeros_like(v) for k, v in params.items()},
            "v": {k: zeros_like(v) for k, v in params.items()}}


def adamw_step(params: dict[str, list], grads: dict[str, list], state: dict | None = None, *,
               lr: float = ADAMW["lr"], betas: tuple[float, float] = ADAMW["betas"], eps: float = ADAMW["eps"],
               weight_decay: float = ADAMW["weight_decay"], decay=decays) -> tuple[dict[str, list], dict]:
    """One AdamW step; returns (new parameters, new state) and leaves the inputs unchanged.

    Per element, with step t: theta <- theta (1 - lr lambda) if the tensor decays; m <- b1 m + (1 - b1) g;
    v <- b2 v + (1 - b2) g^2; theta <- theta - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    """
    state = init_state(params) if state is None else state
    missing = sorted(set(params) - set(grads))
    if missing:
        raise ValueError(f"adamw_step: no gradient for {missing}; pass grads with the same keys as params")
    b1, b2 = betas
    t = state["step"] + 1
    bias1 = 1.0 - b1**t
    bias2_sqrt = math.sqrt(1.0 - b2**t)
    step_size = lr / bias1
    new_params, new_m, new_v = {}, {}, {}
    for name, theta in params.items():
        wd = weight_decay if decay(name, theta) else 0.0
        m = _map2(lambda m0, g: b1 * m0 + (1.0 - b1) * g, state["m"][name], grads[name])
        v = _map2(lambda v0, g: b2 * v0 + (1.0 - b2) * g * g, state["v"][name], grads[name])
        new_params[name] = _map2(
            lambda p, mi, vi, wd=wd: p * (1.0 - lr * wd) - step_size * mi / (math.sqrt(vi) / bias2_sqrt + eps),
            theta, m, v)
        new_m[name], new_v[name] = m, v
    return new_params, {"step": t, "m": new_m, "v": new_v}


__all__ = ["ADAMW", "decays", "zeros_like", "init_state", "adamw_step"]
