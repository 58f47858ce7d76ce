"""The tiny GPT of Part 1 in pure Python: vocabulary, configuration, initialisation and the forward pass.

The architecture is exactly the course's PyTorch GPT (``insideout.gpt.model.GPT``) at a tiny size: token
embedding + learned positions, pre-LN blocks ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``, a final LayerNorm
and an LM head tied to the token embedding. Parameters are a dict keyed by the GPT's state-dict names, each a
nested list in PyTorch's layout (a linear layer's weight is ``(out, in)``), so ``torch.tensor`` of each value
loads into ``GPT(GPTConfig(**TINY_CONFIG))`` with ``load_state_dict_strict``.
"""

from __future__ import annotations

import math
import random

from .linalg import Matrix, Vector, add, columns, hstack, linear, matmul, matmul_t

VOCAB: list[str] = ["<pad>", "<bos>", "<eos>", "I", "like", "transformers"]
TEXT = "I like transformers"
IGNORE_INDEX = -100  # the target value PyTorch's cross-entropy skips

TINY_CONFIG: dict = {
    "vocab_size": 6,
    "context_length": 5,
    "d_model": 16,
    "n_layer": 1,
    "n_head": 2,
    "d_ff": 64,
    "position": "learned",
    "dropout": 0.0,
    "bias": True,
    "tie_weights": True,
}
LN_EPS = 1e-5  # GPTConfig.ln_eps, PyTorch's LayerNorm default
SEED = 0

# How the initial values are drawn (see initial_parameters): a matrix weight with fan-in n gets N(0, 1/n),
# biases N(0, 0.1^2), LayerNorm gains 1 + N(0, 0.1^2) and shifts N(0, 0.1^2); all rounded to 4 decimals.
INIT_BIAS_STD = 0.1
INIT_LN_STD = 0.1
INIT_DECIMALS = 4


def tokenize(text: str) -> list[int]:
    """Split on spaces, look every word up in VOCAB and wrap the ids in <bos> ... <eos>."""
    ids = [VOCAB.index("<bos>")]
    for word in text.split():
        if word not in VOCAB:
            raise ValueError(f"word {word!r} is not in the vocabulary {VOCAB}: use only these words")
        ids.append(VOCAB.index(word))
    return ids + [VOCAB.index("<eos>")]


TOKENS: list[int] = tokenize(TEXT)  # [1, 3, 4, 5, 2] = <bos> I like transformers <eos>
TARGETS: list[int] = TOKENS[1:]  # position t (0..3) must predict the token at t + 1
# For PyTorch: the model reads all 5 tokens; position 4 (<eos>) has nothing to predict, so its target is ignored.
TARGETS_WITH_IGNORE: list[int] = TARGETS + [IGNORE_INDEX]


def check_config(config: dict) -> dict:
    """Validate the fields the pure-Python model supports and return a full copy (d_head added)."""
    c = dict(config)
    for name in ("vocab_size", "context_length", "d_model", "n_layer", "n_head", "d_ff"):
        value = c.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"config[{name!r}]={value!r}: must be a positive integer")
    if c["d_model"] % c["n_head"]:
        raise ValueError(f"config['d_model']={c['d_model']} is not divisible by n_head={c['n_head']}")
    allowed = {"position": "learned", "dropout": 0.0, "bias": True, "tie_weights": True}
    for name, value in allowed.items():
        if c.get(name, value) != value:
            raise ValueError(f"config[{name!r}]={c[name]!r}: the hand-calculated model supports only {value!r}")
    c["d_head"] = c["d_model"] // c["n_head"]
    return c


def parameter_shapes(config: dict | None = None) -> dict[str, tuple[int, ...]]:
    """Every parameter tensor's name and shape, in the order of the PyTorch GPT's state dict."""
    c = check_config(TINY_CONFIG if config is None else config)
    d, f = c["d_model"], c["d_ff"]
    shapes: dict[str, tuple[int, ...]] = {
        "tok_emb.weight": (c["vocab_size"], d),
        "pos_emb.weight": (c["context_length"], d),
    }
    for i in range(c["n_layer"]):
        p = f"blocks.{i}."
        shapes.update({
            p + "ln1.weight": (d,), p + "ln1.bias": (d,),
            p + "attn.qkv.weight": (3 * d, d), p + "attn.qkv.bias": (3 * d,),
            p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,),
            p + "ln2.weight": (d,), p + "ln2.bias": (d,),
            p + "mlp.fc.weight": (f, d), p + "mlp.fc.bias": (f,),
            p + "mlp.proj.weight": (d, f), p + "mlp.proj.bias": (d,),
        })
    shapes.update({"ln_f.weight": (d,), "ln_f.bias": (d,)})
    return shapes


INIT_SCHEMES = ("course", "gpt2")
GPT2_STD = 0.02  # GPTConfig.init_std: GPT-2's initialisation


def init_std(name: str, shape: tuple[int, ...], scheme: str = "course", n_layer: int = 1) -> tuple[float, float]:
    """(mean, std) of the Gaussian a parameter is drawn from under an initialisation scheme.

    "course": N(0, 1/fan_in) matrices, N(0, 0.1^2) biases, LayerNorm 1 + N(0, 0.1^2) and N(0, 0.1^2).
    "gpt2": what GPT.reset_parameters does: N(0, 0.02^2) matrices and embeddings (the two residual projections
    0.02 / sqrt(2 n_layer)), zero biases, LayerNorm gains 1 and shifts 0 (std 0: constants).
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"scheme={scheme!r}: choose one of {', '.join(INIT_SCHEMES)}")
    is_ln_gain = name.endswith((".ln1.weight", ".ln2.weight")) or name == "ln_f.weight"
    if scheme == "gpt2":
        if len(shape) == 2:
            if name.endswith(("attn.proj.weight", "mlp.proj.weight")):
                return 0.0, GPT2_STD / math.sqrt(2 * n_layer)
            return 0.0, GPT2_STD
        return (1.0 if is_ln_gain else 0.0), 0.0
    if len(shape) == 2:  # a weight matrix (out, in) or an embedding table (rows, d_model)
        return 0.0, 1.0 / math.sqrt(shape[1])
    if name.endswith((".ln1.weight", ".ln2.weight")) or name == "ln_f.weight":
        return 1.0, INIT_LN_STD
    if name.endswith((".ln1.bias", ".ln2.bias")) or name == "ln_f.bias":
        return 0.0, INIT_LN_STD
    return 0.0, INIT_BIAS_STD  # biases of the linear layers


def initial_parameters(seed: int = SEED, config: dict | None = None, scheme: str = "course") -> dict[str, list]:
    """Seeded initial weights: for every tensor in state-dict order, row-major draws of random.Random(seed).gauss.

    Course scheme: a matrix with fan-in n (its number of columns) gets N(0, 1/n), so every output of x W^T has
    about the variance of x; biases get N(0, 0.1^2); LayerNorm gains 1 + N(0, 0.1^2) and shifts N(0, 0.1^2).
    Values are rounded to 4 decimals, so the tables in the book show the weights exactly. ``scheme="gpt2"``
    draws GPT-2's initialisation instead (for comparison).
    """
    rng = random.Random(seed)
    params: dict[str, list] = {}
    n_layer = check_config(TINY_CONFIG if config is None else config)["n_layer"]
    for name, shp in parameter_shapes(config).items():
        mean, std = init_std(name, shp, scheme, n_layer)

        def draw(mean: float = mean, std: float = std) -> float:
            return round(rng.gauss(mean, std), INIT_DECIMALS)

        if len(shp) == 2:
            params[name] = [[draw() for _ in range(shp[1])] for _ in range(shp[0])]
        else:
            params[name] = [draw() for _ in range(shp[0])]
    return params


def config_from_parameters(params: dict[str, list], n_head: int | None = None) -> dict:
    """Recover the model's sizes from its parameter shapes; n_head is not in the shapes (default: TINY_CONFIG's)."""
    vocab_size, d_model = len(params["tok_emb.weight"]), len(params["tok_emb.weight"][0])
    n_layer = sum(1 for k in params if k.endswith(".ln1.weight"))
    return check_config({
        **TINY_CONFIG,
        "vocab_size": vocab_size,
        "context_length": len(params["pos_emb.weight"]),
        "d_model": d_model,
        "n_layer": n_layer,
        "d_ff": len(params["blocks.0.mlp.fc.weight"]),
        "n_head": TINY_CONFIG["n_head"] if n_head is None else n_head,
    })


# ---- the forward pass, one small function per step ---------------------------------------------------


def embed(tok_emb: Matrix, pos_emb: Matrix, ids: list[int]) -> Matrix:
    """X[t] = E[ids[t]] + P[t]: token embedding rows plus position rows, (T, d_model)."""
    if len(ids) > len(pos_emb):
        raise ValueError(f"{len(ids)} tokens exceed the context length {len(pos_emb)}: shorten the input")
    return [[e + p for e, p in zip(tok_emb[i], pos_emb[t], strict=True)] for t, i in enumerate(ids)]


def layer_norm_stats(x: Matrix, eps: float = LN_EPS) -> tuple[Vector, Vector, Matrix]:
    """Per row: mean mu, 1/sqrt(var + eps) with the biased variance (divide by d), and x_hat = (x - mu) / sqrt(...)."""
    means, rstds, xhat = [], [], []
    for row in x:
        d = len(row)
        mu = sum(row) / d
        var = sum((v - mu) ** 2 for v in row) / d
        rstd = 1.0 / math.sqrt(var + eps)
        means.append(mu)
        rstds.append(rstd)
        xhat.append([(v - mu) * rstd for v in row])
    return means, rstds, xhat


def layer_norm(x: Matrix, gamma: Vector, beta: Vector, eps: float = LN_EPS) -> Matrix:
    """LayerNorm over each row: gamma * x_hat + beta, (T, d) -> (T, d)."""
    _, _, xhat = layer_norm_stats(x, eps)
    return [[g * v + b for v, g, b in zip(row, gamma, beta, strict=True)] for row in xhat]


def split_heads(m: Matrix, n_head: int) -> list[Matrix]:
    """(T, d_model) -> n_head matrices (T, d_head): head h owns the columns h*d_head ... (h+1)*d_head - 1."""
    d_head = len(m[0]) // n_head
    return [columns(m, h * d_head, (h + 1) * d_head) for h in range(n_head)]


def causal_scores(q: Matrix, k: Matrix) -> Matrix:
    """Scaled scores q_i . k_j / sqrt(d_head) for j <= i and -inf above the diagonal: (T, T)."""
    d_head = len(q[0])
    raw = matmul_t(q, k)  # (T, T): row i holds query i against every key j
    s = 1.0 / math.sqrt(d_head)
    return [[raw[i][j] * s if j <= i else -math.inf for j in range(len(k))] for i in range(len(q))]


def softmax(row: Vector) -> Vector:
    """exp(z_j - max z) / sum: a probability vector; -inf entries get exactly 0."""
    top = max(row)
    exps = [math.exp(z - top) if z != -math.inf else 0.0 for z in row]
    total = sum(exps)
    return [e / total for e in exps]


def softmax_rows(m: Matrix) -> Matrix:
    """softmax applied to every row."""
    return [softmax(row) for row in m]


def attention_head(q: Matrix, k: Matrix, v: Matrix) -> tuple[Matrix, Matrix, Matrix]:
    """One causal head: (scores (T, T), pattern A (T, T), output Z = A V (T, d_head))."""
    scores = causal_scores(q, k)
    pattern = softmax_rows(scores)
    return scores, pattern, matmul(pattern, v)


GELU_C = math.sqrt(2.0 / math.pi)
GELU_A = 0.044715


def gelu(x: float) -> float:
    """GPT-2's GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + math.tanh(GELU_C * (x + GELU_A * x**3)))


def gelu_exact(x: float) -> float:
    """The exact GELU x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), which the tanh form approximates."""
    return 0.5 * x * (1.0 + math.erf(x / math.sqrt(2.0)))


def log_softmax(row: Vector) -> Vector:
    """z_j - log sum_k exp z_k, computed with the max subtracted first."""
    top = max(row)
    lse = top + math.log(sum(math.exp(z - top) for z in row))
    return [z - lse for z in row]


def cross_entropy(logits: Matrix, targets: list[int]) -> tuple[float, Vector]:
    """Mean over the targets of -log softmax(logits[t])[targets[t]]; rows beyond len(targets) are unused."""
    losses = [-log_softmax(logits[t])[y] for t, y in enumerate(targets)]
    return sum(losses) / len(losses), losses


def forward(params: dict[str, list], tokens: list[int] | None = None, targets: list[int] | None = None,
            n_head: int | None = None) -> dict:
    """Run the whole model and return every intermediate value by name (TransformerLens-like keys).

    Per layer ``blocks.{i}.``: ``resid_pre``, ``ln1.mean/rstd/xhat/out``, ``attn.qkv`` (T, 3d), ``attn.q/k/v``
    (lists of per-head (T, d_head)), ``attn.scores`` / ``attn.pattern`` (per head (T, T)), ``attn.z`` (per head),
    ``attn.z_cat`` (T, d), ``attn.out``, ``resid_mid``, ``ln2.*``, ``mlp.pre`` / ``mlp.post`` (T, d_ff),
    ``mlp.out``, ``resid_post``; then ``ln_f.*``, ``logits`` (T, vocab), ``probs``, ``losses`` and ``loss``.
    """
    tokens = TOKENS if tokens is None else tokens
    targets = TARGETS if targets is None else targets
    c = config_from_parameters(params, n_head)
    acts: dict = {"tokens": list(tokens), "targets": list(targets)}
    acts["tok"] = [list(params["tok_emb.weight"][i]) for i in tokens]  # (T, d) looked-up rows
    acts["pos"] = [list(params["pos_emb.weight"][t]) for t in range(len(tokens))]  # (T, d)
    x = embed(params["tok_emb.weight"], params["pos_emb.weight"], tokens)  # (T, d)
    acts["embed"] = x
    for i in range(c["n_layer"]):
        p = f"blocks.{i}."
        acts[p + "resid_pre"] = x
        x = _block_forward(params, acts, p, x, c["n_head"])
    acts["ln_f.mean"], acts["ln_f.rstd"], acts["ln_f.xhat"] = layer_norm_stats(x)
    h = layer_norm(x, params["ln_f.weight"], params["ln_f.bias"])  # (T, d)
    acts["ln_f.out"] = h
    logits = matmul_t(h, params["tok_emb.weight"])  # (T, vocab): the LM head is the token embedding, tied
    acts["logits"] = logits
    acts["probs"] = softmax_rows(logits)
    acts["loss"], acts["losses"] = cross_entropy(logits, targets)
    return acts


def _block_forward(params: dict, acts: dict, p: str, x: Matrix, n_head: int) -> Matrix:
    acts[p + "ln1.mean"], acts[p + "ln1.rstd"], acts[p + "ln1.xhat"] = layer_norm_stats(x)
    a_in = layer_norm(x, params[p + "ln1.weight"], params[p + "ln1.bias"])  # (T, d)
    acts[p + "ln1.out"] = a_in
    qkv = linear(a_in, params[p + "attn.qkv.weight"], params[p + "attn.qkv.bias"])  # (T, 3d): [Q | K | V]
    d = len(x[0])
    acts[p + "attn.qkv"] = qkv
    q, k, v = (split_heads(columns(qkv, j * d, (j + 1) * d), n_head) for j in range(3))  # each: H x (T, d_head)
    acts[p + "attn.q"], acts[p + "attn.k"], acts[p + "attn.v"] = q, k, v
    heads = [attention_head(q[h], k[h], v[h]) for h in range(n_head)]
    acts[p + "attn.scores"] = [s for s, _, _ in heads]
    acts[p + "attn.pattern"] = [a for _, a, _ in heads]
    acts[p + "attn.z"] = [z for _, _, z in heads]
    z_cat = hstack(acts[p + "attn.z"])  # (T, d): heads side by side
    acts[p + "attn.z_cat"] = z_cat
    attn_out = linear(z_cat, params[p + "attn.proj.weight"], params[p + "attn.proj.bias"])  # (T, d)
    acts[p + "attn.out"] = attn_out
    x = add(x, attn_out)  # residual
    acts[p + "resid_mid"] = x
    acts[p + "ln2.mean"], acts[p + "ln2.rstd"], acts[p + "ln2.xhat"] = layer_norm_stats(x)
    m_in = layer_norm(x, params[p + "ln2.weight"], params[p + "ln2.bias"])  # (T, d)
    acts[p + "ln2.out"] = m_in
    pre = linear(m_in, params[p + "mlp.fc.weight"], params[p + "mlp.fc.bias"])  # (T, d_ff)
    acts[p + "mlp.pre"] = pre
    post = [[gelu(u) for u in row] for row in pre]  # (T, d_ff)
    acts[p + "mlp.post"] = post
    mlp_out = linear(post, params[p + "mlp.proj.weight"], params[p + "mlp.proj.bias"])  # (T, d)
    acts[p + "mlp.out"] = mlp_out
    x = add(x, mlp_out)  # residual
    acts[p + "resid_post"] = x
    return x


def logits_and_loss(params: dict[str, list], tokens: list[int] | None = None,
                    targets: list[int] | None = None, n_head: int | None = None) -> tuple[Matrix, float]:
    """The model's logits (T, vocab) and mean cross-entropy, as GPT.forward(idx, targets) returns them."""
    acts = forward(params, tokens, targets, n_head)
    return acts["logits"], acts["loss"]


def loss_only(params: dict[str, list], tokens: list[int] | None = None, targets: list[int] | None = None,
              n_head: int | None = None) -> float:
    """The mean cross-entropy alone (what a finite difference perturbs)."""
    return forward(params, tokens, targets, n_head)["loss"]


def num_parameters(params: dict[str, list]) -> int:
    """How many numbers the model learns (the tied LM head is the token embedding: counted once)."""
    total = 0
    for value in params.values():
        total += len(value) * len(value[0]) if isinstance(value[0], list) else len(value)
    return total


__all__ = [
    "VOCAB", "TEXT", "TOKENS", "TARGETS", "TARGETS_WITH_IGNORE", "IGNORE_INDEX", "TINY_CONFIG", "LN_EPS", "SEED",
    "tokenize", "check_config", "parameter_shapes", "init_std", "initial_parameters", "config_from_parameters",
    "INIT_SCHEMES", "GPT2_STD",
    "embed", "layer_norm_stats", "layer_norm", "split_heads", "causal_scores", "softmax", "softmax_rows",
    "attention_head", "gelu", "gelu_exact", "log_softmax", "cross_entropy", "forward", "logits_and_loss",
    "loss_only", "num_parameters",
]
