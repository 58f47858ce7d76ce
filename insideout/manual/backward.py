"""Backpropagation for the tiny GPT, written out: one function per forward step, then the whole chain.

Each ``*_backward`` takes the upstream gradient dL/d(output) of its step (same shape as the output) and the
values the forward pass saved, and returns dL/d(input) and dL/d(parameters). ``backward`` chains them in
reverse order through the real forward pass; ``loss_and_gradients`` is the one-call interface.
"""

from __future__ import annotations

import math

from .linalg import Matrix, Vector, add, col_sums, hstack, matmul, matmul_t, transpose, zeros
from .model import GELU_A, GELU_C, config_from_parameters, forward, split_heads


def cross_entropy_backward(probs: Matrix, targets: list[int]) -> Matrix:
    """dL/dlogits of the mean cross-entropy over N = len(targets) rows: (p - onehot) / N; rows past N get 0."""
    n = len(targets)
    grad = zeros(len(probs), len(probs[0]))
    for t, y in enumerate(targets):
        for j, p in enumerate(probs[t]):
            grad[t][j] = (p - (1.0 if j == y else 0.0)) / n
    return grad


def linear_backward(x: Matrix, w: Matrix, dy: Matrix) -> tuple[Matrix, Matrix, Vector]:
    """For y = x W^T + b: dx = dy W (T, in), dW = dy^T x (out, in), db = column sums of dy (out,)."""
    dx = matmul(dy, w)
    dw = matmul(transpose(dy), x)
    db = col_sums(dy)
    return dx, dw, db


def layer_norm_backward(dy: Matrix, xhat: Matrix, rstd: Vector, gamma: Vector) -> tuple[Matrix, Vector, Vector]:
    """For y = gamma x_hat + beta: (dx, dgamma, dbeta); dx = rstd (g - mean(g) - x_hat mean(g x_hat)), g = dy gamma."""
    dgamma = [sum(dy[t][j] * xhat[t][j] for t in range(len(dy))) for j in range(len(gamma))]
    dbeta = col_sums(dy)
    dx = []
    for dyr, xr, r in zip(dy, xhat, rstd, strict=True):
        g = [a * b for a, b in zip(dyr, gamma, strict=True)]
        d = len(g)
        g_mean = sum(g) / d
        gx_mean = sum(a * b for a, b in zip(g, xr, strict=True)) / d
        dx.append([r * (gj - g_mean - xj * gx_mean) for gj, xj in zip(g, xr, strict=True)])
    return dx, dgamma, dbeta


def gelu_derivative(x: float) -> float:
    """d gelu / dx for the tanh form: 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    th = math.tanh(GELU_C * (x + GELU_A * x**3))
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * GELU_C * (1.0 + 3.0 * GELU_A * x * x)


def gelu_backward(pre: Matrix, dpost: Matrix) -> Matrix:
    """dL/d(pre-activation) = dL/d(post) * gelu'(pre), element by element."""
    return [[g * gelu_derivative(u) for u, g in zip(ur, gr, strict=True)] for ur, gr in zip(pre, dpost, strict=True)]


def softmax_jacobian(a: Vector) -> Matrix:
    """J[i][j] = d a_i / d s_j = a_i (delta_ij - a_j) for a = softmax(s): diag(a) - a a^T."""
    return [[ai * ((1.0 if i == j else 0.0) - aj) for j, aj in enumerate(a)] for i, ai in enumerate(a)]


def softmax_backward(pattern: Matrix, dpattern: Matrix) -> Matrix:
    """dL/dscores row by row: J^T da = a * (da - sum_k a_k da_k); masked entries (a = 0) get exactly 0."""
    out = []
    for a, da in zip(pattern, dpattern, strict=True):
        dot = sum(x * y for x, y in zip(a, da, strict=True))
        out.append([x * (y - dot) for x, y in zip(a, da, strict=True)])
    return out


def attention_head_backward(q: Matrix, k: Matrix, v: Matrix, pattern: Matrix, dz: Matrix) -> dict[str, Matrix]:
    """Back through Z = A V, A = softmax(mask(Q K^T / sqrt(d_head))): dA, dV, dS (scaled scores), dQ, dK."""
    s = 1.0 / math.sqrt(len(q[0]))
    dpattern = matmul_t(dz, v)  # (T, T): dA = dZ V^T
    dv = matmul(transpose(pattern), dz)  # (T, d_head): dV = A^T dZ
    dscores = softmax_backward(pattern, dpattern)  # (T, T)
    dq = [[s * x for x in row] for row in matmul(dscores, k)]  # (T, d_head): dQ = dS K / sqrt(d_head)
    dk = [[s * x for x in row] for row in matmul(transpose(dscores), q)]  # dK = dS^T Q / sqrt(d_head)
    return {"pattern": dpattern, "v": dv, "scores": dscores, "q": dq, "k": dk}


def embedding_backward(tokens: list[int], dx: Matrix, vocab_size: int, context_length: int) -> tuple[Matrix, Matrix]:
    """For X[t] = E[tokens[t]] + P[t]: dE adds row t of dX into row tokens[t]; dP[t] = dX[t] (unused rows 0)."""
    d = len(dx[0])
    de = zeros(vocab_size, d)
    dp = zeros(context_length, d)
    for t, i in enumerate(tokens):
        de[i] = [a + b for a, b in zip(de[i], dx[t], strict=True)]
        dp[t] = list(dx[t])
    return de, dp


def backward(params: dict[str, list], acts: dict, n_head: int | None = None) -> tuple[dict[str, list], dict]:
    """All parameter gradients and the gradient of every activation (same keys as ``forward``'s, prefixed ``d``)."""
    c = config_from_parameters(params, n_head)
    g: dict = {}
    grads: dict[str, list] = {}
    # loss -> logits -> tied LM head: logits = h E^T, so dh = dlogits E and dE gets dlogits^T h
    g["logits"] = cross_entropy_backward(acts["probs"], acts["targets"])
    dh, de_head, _ = linear_backward(acts["ln_f.out"], params["tok_emb.weight"], g["logits"])
    g["ln_f.out"] = dh
    g["tok_emb.weight.head"] = de_head
    dx, grads["ln_f.weight"], grads["ln_f.bias"] = layer_norm_backward(
        dh, acts["ln_f.xhat"], acts["ln_f.rstd"], params["ln_f.weight"])
    for i in reversed(range(c["n_layer"])):
        p = f"blocks.{i}."
        g[p + "resid_post"] = dx
        dx = _block_backward(params, acts, g, grads, p, dx, c["n_head"])
    g["embed"] = dx
    de_embed, grads["pos_emb.weight"] = embedding_backward(acts["tokens"], dx, c["vocab_size"], c["context_length"])
    g["tok_emb.weight.embed"] = de_embed
    grads["tok_emb.weight"] = add(de_head, de_embed)  # tied: the two uses of E add up
    ordered = {name: grads[name] for name in params}  # state-dict order
    return ordered, g


def _block_backward(params: dict, acts: dict, g: dict, grads: dict, p: str, dx: Matrix, n_head: int) -> Matrix:
    # resid_post = resid_mid + mlp_out: the gradient reaches both terms unchanged
    g[p + "mlp.out"] = dx
    dpost, grads[p + "mlp.proj.weight"], grads[p + "mlp.proj.bias"] = linear_backward(
        acts[p + "mlp.post"], params[p + "mlp.proj.weight"], dx)
    g[p + "mlp.post"] = dpost
    dpre = gelu_backward(acts[p + "mlp.pre"], dpost)
    g[p + "mlp.pre"] = dpre
    dm_in, grads[p + "mlp.fc.weight"], grads[p + "mlp.fc.bias"] = linear_backward(
        acts[p + "ln2.out"], params[p + "mlp.fc.weight"], dpre)
    g[p + "ln2.out"] = dm_in
    dx_ln2, grads[p + "ln2.weight"], grads[p + "ln2.bias"] = layer_norm_backward(
        dm_in, acts[p + "ln2.xhat"], acts[p + "ln2.rstd"], params[p + "ln2.weight"])
    g[p + "resid_mid.via_ln2"] = dx_ln2
    dx = add(dx, dx_ln2)  # residual path + MLP path
    g[p + "resid_mid"] = dx
    # resid_mid = resid_pre + attn_out
    g[p + "attn.out"] = dx
    dz_cat, grads[p + "attn.proj.weight"], grads[p + "attn.proj.bias"] = linear_backward(
        acts[p + "attn.z_cat"], params[p + "attn.proj.weight"], dx)
    g[p + "attn.z_cat"] = dz_cat
    dz = split_heads(dz_cat, n_head)
    heads = [attention_head_backward(acts[p + "attn.q"][h], acts[p + "attn.k"][h], acts[p + "attn.v"][h],
                                     acts[p + "attn.pattern"][h], dz[h]) for h in range(n_head)]
    g[p + "attn.z"] = dz
    for key in ("pattern", "scores", "q", "k", "v"):
        g[p + "attn." + key] = [hd[key] for hd in heads]
    dqkv = hstack([hstack(g[p + "attn." + key]) for key in ("q", "k", "v")])  # (T, 3d) = [dQ | dK | dV]
    g[p + "attn.qkv"] = dqkv
    da_in, grads[p + "attn.qkv.weight"], grads[p + "attn.qkv.bias"] = linear_backward(
        acts[p + "ln1.out"], params[p + "attn.qkv.weight"], dqkv)
    g[p + "ln1.out"] = da_in
    dx_ln1, grads[p + "ln1.weight"], grads[p + "ln1.bias"] = layer_norm_backward(
        da_in, acts[p + "ln1.xhat"], acts[p + "ln1.rstd"], params[p + "ln1.weight"])
    g[p + "resid_pre.via_ln1"] = dx_ln1
    dx = add(dx, dx_ln1)  # residual path + attention path
    g[p + "resid_pre"] = dx
    return dx


def loss_and_gradients(params: dict[str, list], tokens: list[int] | None = None, targets: list[int] | None = None,
                       n_head: int | None = None) -> tuple[float, dict[str, list]]:
    """The mean cross-entropy and dL/d(every parameter), keyed like ``params`` (analytic backpropagation)."""
    acts = forward(params, tokens, targets, n_head)
    grads, _ = backward(params, acts, n_head)
    return acts["loss"], grads


__all__ = [
    "cross_entropy_backward", "linear_backward", "layer_norm_backward", "gelu_derivative", "gelu_backward",
    "softmax_jacobian", "softmax_backward", "attention_head_backward", "embedding_backward", "backward",
    "loss_and_gradients",
]
