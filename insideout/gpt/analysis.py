"""Small measurement helpers used by the chapters on the GPT's parts (transformer/00-06).

- ``parameter_breakdown`` / ``count_parameters``: the parameter count of a ``GPTConfig`` derived by hand, tensor by
  tensor, so chapters can check it against ``GPT.num_parameters()`` of an instantiated model.
- ``GPT2_SMALL`` / ``GPT3_175B``: the published sizes of two reference models as ``GPTConfig`` keyword arguments.
- ``softmax_entropy`` / ``score_softmax_stats``: how peaked a softmax over dot-product scores is, with and without
  the 1/sqrt(d_k) scale.
- ``block_grad_norms`` / ``position_similarity``: gradient norm per block of a deep stack, and how alike the
  representations of different positions are (rank collapse).
- ``NextTokenRun`` / ``trained_next_token_models``: small GPTs trained with ``insideout.training.fit`` on a token
  stream from a seed, cached, the missing ones trained two at a time (chapter 01's vocabulary-size measurement).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from insideout.cache import artifact_path, cached
from insideout.gpt.model import GPT, GPTConfig
from insideout.training import OptimConfig

# GPT-2 small (Radford et al., 2019; 12 heads from the released hyper-parameters) and GPT-3 175B (Brown et al.,
# 2020, Table 2.1: 96 layers, d_model 12288, 96 heads of 128, context 2048, d_ff = 4 d_model, GPT-2's tokenizer).
GPT2_SMALL = dict(vocab_size=50257, context_length=1024, d_model=768, n_layer=12, n_head=12)
GPT3_175B = dict(vocab_size=50257, context_length=2048, d_model=12288, n_layer=96, n_head=96)


def parameter_breakdown(config: GPTConfig) -> dict[str, int]:
    """Parameters of each kind of tensor, summed over all blocks, derived from the config alone."""
    c = config
    d, dff, b = c.d_model, c.d_ff, int(c.bias)
    ln = (d + d * b) if c.layer_norm else 0  # gain (+ bias) per LayerNorm; the identity has none
    per_block_attn = (3 * d * d + 3 * d * b) + (d * d + d * b)  # fused W_QKV (+ b) and W_O (+ b)
    per_block_mlp = (d * dff + dff * b) + (dff * d + d * b) if c.mlp else 0  # W_fc (+ b) and W_proj (+ b)
    per_block_ln = ln * (2 if c.mlp else 1)  # ln1, and ln2 only when there is an MLP
    return {
        "token embedding": c.vocab_size * d,
        "position embedding": c.context_length * d if c.position == "learned" else 0,
        "attention": c.n_layer * per_block_attn,
        "MLP": c.n_layer * per_block_mlp,
        "LayerNorms": c.n_layer * per_block_ln + ln,  # + the final LayerNorm
        "LM head": 0 if c.tie_weights else c.vocab_size * d,  # tied: the token embedding is reused
    }


def count_parameters(config: GPTConfig, non_embedding: bool = False) -> int:
    """Total parameters of ``GPT(config)`` by formula; ``non_embedding`` drops token and position embeddings."""
    parts = parameter_breakdown(config)
    total = sum(parts.values())
    if non_embedding:
        total -= parts["token embedding"] + parts["position embedding"]
    return total


def softmax_entropy(probs: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats of probability vectors along ``dim`` (0 log 0 counted as 0)."""
    return -torch.special.xlogy(probs, probs).sum(dim)


def score_softmax_stats(d_k: int, n_keys: int = 64, n_queries: int = 512, scaled: bool = True, seed: int = 0,
                        key_sets: int = 16) -> dict[str, float]:
    """Softmax over q.k scores for q, k with i.i.d. N(0, 1) components: how spread out and how trainable it is.

    ``key_sets`` independent sets of ``n_keys`` keys are each scored by ``n_queries // key_sets`` queries (sharing
    keys keeps the random draws small for wide heads). ``scaled`` divides the scores by sqrt(d_k) as scaled
    dot-product attention does. Returns the std of the scores, the mean entropy (nats) and mean largest
    probability of the softmax rows, the fraction of rows that are saturated (largest probability above 0.99) and
    the mean Frobenius norm of the softmax Jacobian diag(p) - p p^T (how much gradient reaches the scores).
    Float64 and seeded, so the numbers do not depend on the thread count.
    """
    if d_k < 1 or n_keys < 2 or key_sets < 1 or n_queries < key_sets or n_queries % key_sets:
        raise ValueError(f"need d_k >= 1, n_keys >= 2 and n_queries a positive multiple of key_sets; got d_k={d_k}, "
                         f"n_keys={n_keys}, n_queries={n_queries}, key_sets={key_sets}")
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(key_sets, n_queries // key_sets, d_k, generator=g, dtype=torch.float64)  # (S, Q/S, d_k)
    k = torch.randn(key_sets, n_keys, d_k, generator=g, dtype=torch.float64)  # (S, N, d_k)
    scores = (q @ k.transpose(1, 2)).reshape(n_queries, n_keys)  # (Q, N)
    if scaled:
        scores = scores / math.sqrt(d_k)
    p = torch.softmax(scores, dim=-1)  # (Q, N)
    jacobian = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (Q, N, N) d softmax / d scores
    return {
        "score_std": scores.std().item(),
        "entropy": softmax_entropy(p).mean().item(),
        "max_prob": p.max(dim=-1).values.mean().item(),
        "saturated": (p.max(dim=-1).values > 0.99).double().mean().item(),
        "jacobian_norm": torch.linalg.matrix_norm(jacobian).mean().item(),
    }


def block_grad_norms(model: GPT) -> list[float]:
    """L2 norm of the gradient of all parameters of each block (after ``loss.backward()``), first block first."""
    norms = []
    for i, block in enumerate(model.blocks):
        grads = [p.grad for p in block.parameters() if p.grad is not None]
        if not grads:
            raise ValueError(f"block {i} has no gradients: call loss.backward() before block_grad_norms")
        norms.append(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item())
    return norms


def position_similarity(x: torch.Tensor) -> float:
    """Mean cosine similarity between the vectors of different positions of x: (batch, seq, d), averaged over batch.

    Near 1 means every position carries (almost) the same vector: the sequence has collapsed to rank one.
    """
    if x.dim() != 3 or x.shape[1] < 2:
        raise ValueError(f"position_similarity expects (batch, seq >= 2, d), got shape {tuple(x.shape)}")
    x = x.double()
    norms = x.norm(dim=-1, keepdim=True)  # (B, T, 1); no epsilon clamp, so tiny vectors keep their direction
    if (norms == 0).any():
        raise ValueError("position_similarity: a position holds the zero vector, whose direction is undefined")
    u = x / norms
    cos = u @ u.transpose(1, 2)  # (B, T, T)
    T = x.shape[1]
    off_diagonal = cos.sum((1, 2)) - cos.diagonal(dim1=1, dim2=2).sum(-1)
    return (off_diagonal / (T * (T - 1))).mean().item()


# ---- small language models trained side by side (chapter 01's vocabulary-size measurement) -------------------


@dataclass(frozen=True)
class NextTokenRun:
    """One small next-token model to train: its config, optimiser, token stream, batch size and seed."""

    config: GPTConfig
    optim: OptimConfig
    data: torch.Tensor  # (N,) token ids; batches are random windows of config.context_length + 1 tokens
    batch_size: int
    seed: int  # fixes the initial weights and the order of the batches

    def key(self) -> dict:
        """Everything the trained weights depend on (the token stream by its sha256), for ``insideout.cache``."""
        return {"model": self.config.to_dict(), "optim": self.optim.to_dict(), "batch_size": self.batch_size,
                "seed": self.seed, "threads": 1, "data_sha256": hashlib.sha256(self.data.numpy().tobytes()).hexdigest()}


def random_windows(data: torch.Tensor, length: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches (batch_size, length) of windows starting at random positions of ``data``."""
    if data.dim() != 1 or len(data) <= length:
        raise ValueError(f"data of shape {tuple(data.shape)}: need a 1-D stream longer than the window ({length})")
    while True:
        starts = torch.randint(0, len(data) - length + 1, (batch_size,), generator=gen)
        yield torch.stack([data[s:s + length] for s in starts.tolist()])


def next_token_loss(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting every token of a (B, T + 1) batch from the ones before it."""
    return model(batch[:, :-1], batch[:, 1:])[1]


def train_next_token_model(run: NextTokenRun) -> dict[str, torch.Tensor]:
    """Train ``GPT(run.config)`` with ``insideout.training.fit`` on one thread; returns its state dict.

    One thread makes the result independent of the machine's core count, and lets two runs share a 2-core machine.
    """
    from insideout.training import fit
    from insideout.utils import seed_everything

    threads = torch.get_num_threads()
    try:
        seed_everything(run.seed, threads=1)
        model = GPT(run.config)
        batches = random_windows(run.data, run.config.context_length + 1, run.batch_size,
                                 torch.Generator().manual_seed(run.seed))
        fit(model, batches, next_token_loss, run.optim)
    finally:
        torch.set_num_threads(threads)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _train_and_cache(kind: str, run: NextTokenRun) -> None:
    cached(kind, run.key(), lambda: (train_next_token_model(run), {"steps": run.optim.max_steps}), log=None)


def trained_next_token_models(runs: list[NextTokenRun], kind: str = "next-token-gpt", workers: int = 2
                              ) -> list[GPT]:
    """The trained models of ``runs`` (eval mode), from ``insideout.cache``; missing ones are trained first.

    With ``workers`` > 1 the missing runs train in that many worker processes at once (one thread each); the
    weights are the same as when they train one after the other in this process (``workers=1``).
    """
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers={workers!r}: must be a positive integer")
    missing = [run for run in runs if not artifact_path(kind, run.key()).is_file()]
    if workers > 1 and len(missing) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, len(missing)), mp_context=multiprocessing.get_context("spawn")) as pool:
            for done in [pool.submit(_train_and_cache, kind, run) for run in missing]:
                done.result()  # re-raises a worker's error here
    models = []
    for run in runs:
        model = GPT(run.config)
        tensors = cached(kind, run.key(), lambda run=run: (train_next_token_model(run), {}), log=None).tensors
        model.load_state_dict(tensors)
        models.append(model.eval())
    return models
