"""Interpretability tools for the course's GPT: read and overwrite activations by name.

Every activation site of :mod:`insideout.gpt.model` is an identity ``HookPoint``. The functions here attach
ordinary PyTorch forward hooks to those sites for the length of one forward pass and always remove them
afterwards, even when the pass raises. Names follow TransformerLens's conventions, e.g.
``blocks.0.hook_resid_pre``, ``blocks.0.attn.hook_pattern`` (batch, head, query, key) and ``blocks.0.attn.hook_z``
(batch, position, head, d_head). One name is derived rather than hooked: ``blocks.{i}.attn.hook_result``
(batch, position, head, d_model), each head's contribution to the residual stream, computed from ``hook_z`` and
the head's slice of the output projection.

On top of caching and hooking: the logit lens (nostalgebraist, 2020), the induction score of attention patterns
(Olsson et al., 2022), and activation patching over layers x positions and layers x heads with a user metric
(Meng et al., 2022; Wang et al., 2023; Heimersheim & Nanda, 2024).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from insideout.gpt.model import GPT, HookPoint

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]  # fn(activation, name) -> replacement or None
Metric = Callable[[torch.Tensor], float]  # metric(logits) -> a number
_RESULT = re.compile(r"^blocks\.(\d+)\.attn\.hook_result$")


# ---- hooks ------------------------------------------------------------------------------------------------


_FLOW = ("hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern", "attn.hook_z",
         "attn.hook_result", "hook_attn_out", "hook_resid_mid", "mlp.hook_post", "hook_mlp_out", "hook_resid_post")


def _flow_key(name: str) -> tuple[int, int, int]:
    if name == "hook_embed":
        return (0, 0, 0)
    match = re.match(r"^blocks\.(\d+)\.(.+)$", name)
    if match and match.group(2) in _FLOW:
        return (1, int(match.group(1)), _FLOW.index(match.group(2)))
    return (2, 0, 0)  # hook_final (and anything unknown) last


def hook_points(model: GPT) -> dict[str, HookPoint]:
    """Every hookable activation site of the model, by name, in the order data flows through them."""
    points = [(name, m) for name, m in model.named_modules() if isinstance(m, HookPoint)]
    return dict(sorted(points, key=lambda item: _flow_key(item[0])))  # sorted() is stable


def _check_names(model: GPT, names: Iterable[str], allow_derived: bool = False) -> list[str]:
    points = hook_points(model)
    names = list(names)
    def derived(n: str) -> bool:
        match = _RESULT.match(n)
        return allow_derived and match is not None and int(match.group(1)) < model.config.n_layer

    bad = [n for n in names if n not in points and not derived(n)]
    if bad:
        raise ValueError(
            f"unknown hook name(s) {bad}: valid names look like {list(points)[:4]} ... "
            f"(see insideout.gpt.interp.hook_points(model) for all {len(points)})"
        )
    return names


def _check_layer(model: GPT, layer: int) -> None:
    if not 0 <= layer < model.config.n_layer:
        raise ValueError(f"layer={layer} out of range: the model has layers 0..{model.config.n_layer - 1}")


@contextmanager
def hooks(model: GPT, fwd_hooks: dict[str, HookFn]) -> Iterator[None]:
    """Attach ``{name: fn(activation, name)}`` as forward hooks for the ``with`` block; always detach them.

    A hook that returns a tensor replaces the activation (patching); one that returns None only reads it.
    """
    points = hook_points(model)
    _check_names(model, fwd_hooks)
    handles = []
    try:
        for name, fn in fwd_hooks.items():
            if not callable(fn):
                raise ValueError(f"hook for {name!r} is {type(fn).__name__}, not a function fn(activation, name)")

            def forward_hook(module, args, output, fn=fn, name=name):
                return fn(output, name)

            handles.append(points[name].register_forward_hook(forward_hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _grad_context(grad: bool):
    return nullcontext() if grad else torch.no_grad()


def run_with_hooks(model: GPT, idx: torch.Tensor, fwd_hooks: dict[str, HookFn], grad: bool = False) -> torch.Tensor:
    """Logits (batch, seq, vocab) of one forward pass with the given hooks attached (and removed afterwards)."""
    with _grad_context(grad), hooks(model, fwd_hooks):
        logits, _ = model(idx)
    return logits


def head_results(model: GPT, z: torch.Tensor, layer: int) -> torch.Tensor:
    """Each head's write into the residual stream: z (B, T, H, d_head) -> (B, T, H, d_model), bias not included.

    The output projection acts on the concatenated heads, so its weight W_O (d_model, H * d_head) splits into
    H column blocks; head h contributes z_h @ W_O[:, h].T, and the heads' sum plus the bias is the attention output.
    """
    _check_layer(model, layer)
    attn = model.blocks[layer].attn
    B, T, H, d_head = z.shape
    if (H, d_head) != (attn.n_head, attn.head_dim):
        raise ValueError(f"z has {H} heads of size {d_head}, layer {layer} has {attn.n_head} of size {attn.head_dim}")
    w_o = attn.proj.weight.view(model.config.d_model, H, d_head)  # (d_model, H, d_head)
    return torch.einsum("bthd,mhd->bthm", z, w_o.to(z.dtype))  # (B, T, H, d_model)


def run_with_cache(
    model: GPT,
    idx: torch.Tensor,
    names: Iterable[str] | Callable[[str], bool] | None = None,
    grad: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run the model once and record activations: ``(logits, {name: tensor})``.

    ``names`` is None (every hook point that runs, and every ``blocks.{i}.attn.hook_result``), a list of names,
    or a predicate on names. Caching an attention pattern switches that layer to the written-out attention path,
    which agrees with SDPA to float rounding, not bit for bit; leave the patterns out when exactness matters.
    """
    points = hook_points(model)
    derived = [f"blocks.{i}.attn.hook_result" for i in range(model.config.n_layer)]
    everything = sorted(list(points) + derived, key=_flow_key)
    if names is None:
        wanted = everything
    elif callable(names):
        wanted = [n for n in everything if names(n)]
    else:
        wanted = _check_names(model, names, allow_derived=True)
    results = {int(_RESULT.match(n).group(1)): n for n in wanted if _RESULT.match(n)}
    hooked = [n for n in wanted if n in points]
    hooked += [f"blocks.{i}.attn.hook_z" for i in results if f"blocks.{i}.attn.hook_z" not in hooked]
    cache: dict[str, torch.Tensor] = {}

    def save(activation: torch.Tensor, name: str) -> None:
        cache[name] = activation if grad else activation.detach()

    with _grad_context(grad), hooks(model, {n: save for n in hooked}):
        logits, _ = model(idx)
        for layer, name in results.items():
            cache[name] = head_results(model, cache[f"blocks.{layer}.attn.hook_z"], layer)
    silent = [n for n in wanted if n not in cache]
    if silent and names is not None and not callable(names):
        raise ValueError(f"hook point(s) {silent} exist but never ran in this model's forward pass "
                         f"(an attention-only model, mlp=False, has no MLP output): leave them out")
    return logits, {n: cache[n] for n in wanted if n in cache}  # in the order asked for; helper-only z's dropped


# ---- logit lens ---------------------------------------------------------------------------------------------


def residual_names(model: GPT) -> list[str]:
    """The residual stream before every block and after the last one: n_layer + 1 names."""
    n = model.config.n_layer
    return [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]


def residual_labels(model: GPT) -> list[str]:
    """Short labels for :func:`residual_names`: 'embed', 'after block 0', ..."""
    return ["embed"] + [f"after block {i}" for i in range(model.config.n_layer)]


def logit_lens(model: GPT, cache: dict[str, torch.Tensor]) -> torch.Tensor:
    """Decode every residual stream as if it were the last: ln_f then the LM head -> (n_layer + 1, B, T, vocab).

    The last entry is the model's own logits (nostalgebraist, 2020).
    """
    missing = [n for n in residual_names(model) if n not in cache]
    if missing:
        raise ValueError(f"cache lacks {missing}: run run_with_cache(model, idx, residual_names(model)) first")
    with torch.no_grad():
        stack = torch.stack([cache[n] for n in residual_names(model)])  # (L + 1, B, T, d_model)
        return model.lm_head(model.ln_f(stack))  # (L + 1, B, T, vocab)


def next_token_stats(logits: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability and rank (1 = top) of the true next token: logits (..., B, T, V), idx (B, T) -> (..., B, T-1)."""
    if logits.shape[-3:-1] != idx.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match token ids {tuple(idx.shape)} in (batch, seq)")
    logits = logits[..., :-1, :].double()  # the last position has no next token here
    target = idx[:, 1:].expand(*logits.shape[:-1])  # (..., B, T-1)
    correct = logits.gather(-1, target.unsqueeze(-1))  # (..., B, T-1, 1)
    prob = torch.softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
    rank = (logits > correct).sum(-1) + 1
    return prob, rank


# ---- attention scores ---------------------------------------------------------------------------------------


def previous_token_score(pattern: torch.Tensor) -> torch.Tensor:
    """Mean attention from each position i >= 1 to position i - 1: pattern (B, H, T, T) -> (H,)."""
    return pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(dim=(0, -1))


def induction_targets(tokens: torch.Tensor) -> torch.Tensor:
    """For each position i, the position right after the latest earlier occurrence of token i, else -1: (B, T)."""
    B, T = tokens.shape
    pos = torch.arange(T, device=tokens.device)
    same = (tokens[:, :, None] == tokens[:, None, :]) & (pos[None, None, :] < pos[None, :, None])  # (B, Tq, Tk)
    latest = torch.where(same, pos, torch.full_like(pos, -1)).amax(dim=-1)  # (B, Tq): -1 where none
    return torch.where(latest >= 0, latest + 1, latest)


def induction_score(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean attention to the token after the previous occurrence of the current token: (B, H, T, T) -> (H,).

    Averaged over every position that has an earlier occurrence (Olsson et al., 2022); on a random sequence
    repeated twice these are the positions of the second copy.
    """
    B, H, T, T2 = pattern.shape
    if tokens.shape != (B, T) or T2 != T:
        raise ValueError(f"pattern {tuple(pattern.shape)} needs tokens of shape {(B, T)}, got {tuple(tokens.shape)}")
    target = induction_targets(tokens)  # (B, T)
    valid = target >= 0
    if not valid.any():
        raise ValueError("no token occurs twice: the induction score needs repeated tokens")
    picked = pattern.gather(-1, target.clamp(min=0)[:, None, :, None].expand(B, H, T, 1)).squeeze(-1)  # (B, H, T)
    return (picked * valid[:, None, :]).sum(dim=(0, 2)) / valid.sum()


def repeated_random_tokens(
    batch: int, half_len: int, vocab: int | Iterable[int], generator: torch.Generator | None = None,
    prefix: Iterable[int] = (),
) -> torch.Tensor:
    """``prefix + s + s`` for a random sequence s of ``half_len`` distinct tokens per row: (batch, P + 2 half_len).

    ``vocab`` is a vocabulary size or the list of token ids to draw from; prefix tokens are never drawn. Distinct
    tokens make "the previous occurrence" unique, so the only way to predict the second copy is to look it up in
    the first.
    """
    prefix = [int(t) for t in prefix]
    pool = torch.arange(vocab) if isinstance(vocab, int) else torch.as_tensor(list(vocab), dtype=torch.long)
    pool = pool[~torch.isin(pool, torch.tensor(prefix, dtype=torch.long))]
    if half_len > len(pool):
        raise ValueError(f"half_len={half_len} distinct tokens cannot be drawn from {len(pool)} ids: lower half_len")
    order = torch.rand(batch, len(pool), generator=generator).argsort(dim=1)[:, :half_len]  # (batch, half_len)
    first = pool[order]
    head = torch.tensor(prefix, dtype=torch.long).expand(batch, -1)
    return torch.cat([head, first, first], dim=1)


# ---- activation patching ------------------------------------------------------------------------------------


def logit_diff(logits: torch.Tensor, answer: int, wrong: int, position: int = -1) -> torch.Tensor:
    """logit[answer] - logit[wrong] at one position, in float64: (B, T, V) -> (B,)."""
    at = logits[:, position].double()
    return at[:, answer] - at[:, wrong]


def normalised_logit_diff(
    clean_logits: torch.Tensor, corrupted_logits: torch.Tensor, answer: int, wrong: int, position: int = -1,
) -> Metric:
    """A metric(logits) that is exactly 0 on the corrupted logits and exactly 1 on the clean ones.

    (LD - LD_corrupted) / (LD_clean - LD_corrupted) with LD the batch-mean logit difference answer - wrong.
    """
    clean = logit_diff(clean_logits, answer, wrong, position).mean().item()
    corrupted = logit_diff(corrupted_logits, answer, wrong, position).mean().item()
    if abs(clean - corrupted) < 1e-6:
        raise ValueError(
            f"clean and corrupted logit differences are equal ({clean:.6f}): there is nothing to recover; "
            f"choose a corruption that changes the prediction"
        )

    def metric(logits: torch.Tensor) -> float:
        return (logit_diff(logits, answer, wrong, position).mean().item() - corrupted) / (clean - corrupted)

    return metric


def patch(
    model: GPT, corrupted_idx: torch.Tensor, name: str, clean: torch.Tensor, where: tuple, metric: Metric,
) -> float:
    """metric of the corrupted run with ``activation[where]`` replaced by ``clean[where]`` at hook ``name``."""

    def replace(activation: torch.Tensor, _name: str) -> torch.Tensor:
        patched = activation.clone()
        patched[where] = clean[where].to(activation.dtype)
        return patched

    return metric(run_with_hooks(model, corrupted_idx, {name: replace}))


def _clean_cache(model: GPT, clean_idx: torch.Tensor, corrupted_idx: torch.Tensor, names: list[str]) -> dict:
    if clean_idx.shape != corrupted_idx.shape:
        raise ValueError(
            f"clean {tuple(clean_idx.shape)} and corrupted {tuple(corrupted_idx.shape)} prompts must have the same "
            f"shape so positions line up: pick a corruption with the same number of tokens"
        )
    return run_with_cache(model, clean_idx, names)[1]


def patch_residual(model: GPT, clean_idx: torch.Tensor, corrupted_idx: torch.Tensor, metric: Metric) -> torch.Tensor:
    """Patch the clean residual stream into the corrupted run, one (layer, position) at a time: (n_layer + 1, T).

    Row i < n_layer patches ``blocks.{i}.hook_resid_pre``; the last row patches the final ``hook_resid_post``.
    """
    names = residual_names(model)
    cache = _clean_cache(model, clean_idx, corrupted_idx, names)
    T = clean_idx.shape[1]
    out = torch.empty(len(names), T, dtype=torch.float64)
    for i, name in enumerate(names):
        for t in range(T):
            out[i, t] = patch(model, corrupted_idx, name, cache[name], (slice(None), t), metric)
    return out


def patch_heads(
    model: GPT, clean_idx: torch.Tensor, corrupted_idx: torch.Tensor, metric: Metric, position: int | None = None,
) -> torch.Tensor:
    """Patch one head's clean output (its ``hook_z`` slice) into the corrupted run at a time: (n_layer, n_head).

    ``position`` None patches the head at every position; an int patches that position only.
    """
    n_layer, n_head = model.config.n_layer, model.config.n_head
    names = [f"blocks.{i}.attn.hook_z" for i in range(n_layer)]
    cache = _clean_cache(model, clean_idx, corrupted_idx, names)
    pos = slice(None) if position is None else position
    out = torch.empty(n_layer, n_head, dtype=torch.float64)
    for i, name in enumerate(names):
        for h in range(n_head):
            out[i, h] = patch(model, corrupted_idx, name, cache[name], (slice(None), pos, h), metric)
    return out


@dataclass(frozen=True, eq=False)
class TokenSwap:
    """A clean/corrupted prompt pair that differs in one token, found by :func:`find_token_swaps`."""

    clean: torch.Tensor  # (1, T) token ids from the text
    corrupted: torch.Tensor  # (1, T) the same ids with one token substituted
    position: int  # where the two prompts differ
    answer: int  # the clean run's top prediction for the next token (also the text's true next token)
    wrong: int  # the corrupted run's top prediction for the next token
    clean_diff: float  # logit[answer] - logit[wrong] at the last position, clean run (> 0)
    corrupted_diff: float  # the same on the corrupted run (< 0)

    @property
    def margin(self) -> float:
        """How decisive both runs are: min(clean_diff, -corrupted_diff)."""
        return min(self.clean_diff, -self.corrupted_diff)


@dataclass(frozen=True, eq=False)
class PatchSummary:
    """Denoising recoveries of one clean/corrupted pair, each normalised to 0 (corrupted) .. 1 (clean)."""

    at_swap: torch.Tensor  # (n_layer + 1,) residual stream patched at the swapped position, per stream
    at_last: torch.Tensor  # (n_layer + 1,) residual stream patched at the last position, per stream
    attn_out: torch.Tensor  # (n_layer,) one block's whole attention output patched (every position)
    heads_last: torch.Tensor  # (n_layer, n_head) one head's output patched at the last position


def patch_summary(model: GPT, swap: TokenSwap) -> PatchSummary:
    """The few patches that trace a swap's route for one pair (its own normalised logit-difference metric).

    Cheaper than the full grids (2 (n_layer + 1) + n_layer + n_layer n_head forward passes), so that it can be
    averaged over many pairs: the residual stream at the swapped and at the last position, every block's attention
    output, and every head at the last position.
    """
    device = next(model.parameters()).device
    clean, corrupted = swap.clean.to(device), swap.corrupted.to(device)
    if not -clean.shape[1] <= swap.position < clean.shape[1]:
        raise ValueError(f"swap.position={swap.position} lies outside the prompt of {clean.shape[1]} tokens")
    metric = normalised_logit_diff(run_with_hooks(model, clean, {}), run_with_hooks(model, corrupted, {}),
                                   swap.answer, swap.wrong)
    streams = residual_names(model)
    attn = [f"blocks.{i}.hook_attn_out" for i in range(model.config.n_layer)]
    cache = _clean_cache(model, clean, corrupted, streams + attn)
    every = slice(None)

    def along(names: list[str], where: tuple) -> torch.Tensor:
        return torch.tensor([patch(model, corrupted, n, cache[n], where, metric) for n in names], dtype=torch.float64)

    return PatchSummary(at_swap=along(streams, (every, swap.position)), at_last=along(streams, (every, -1)),
                        attn_out=along(attn, (every,)), heads_last=patch_heads(model, clean, corrupted, metric, -1))


def _last_logits(model: GPT, prompts: torch.Tensor, batch: int) -> torch.Tensor:
    device = model.tok_emb.weight.device
    with torch.no_grad():
        return torch.cat([model(prompts[i:i + batch].to(device))[0][:, -1].cpu().double()
                          for i in range(0, len(prompts), batch)])


def find_token_swaps(
    model: GPT, tokens: torch.Tensor, substitutes: dict[int, Iterable[int]], window: int,
    distances: Iterable[int], batch: int = 256,
) -> list[TokenSwap]:
    """Search a token stream for one-token substitutions that flip the model's next-token prediction.

    For every occurrence of a token that has substitutes and every distance d, the clean prompt is the ``window``
    tokens ending d tokens after that occurrence (so the token sits at index ``window - d``); a corrupted prompt
    replaces it by one substitute. A pair is kept when the clean run's top prediction is the text's true next token
    and the corrupted run's top prediction is another token. Sorted by ``margin``, most decisive first.
    """
    tokens = torch.as_tensor(tokens).flatten().cpu()
    distances = sorted({int(d) for d in distances})
    if not 1 < window <= model.config.context_length:
        raise ValueError(f"window={window}: must lie in [2, context_length={model.config.context_length}]")
    if not distances or distances[0] < 1 or distances[-1] > window:
        raise ValueError(f"distances={distances}: each must lie in [1, window={window}]")
    table = {int(a): [int(b) for b in bs if int(b) != int(a)] for a, bs in substitutes.items()}
    if not any(table.values()):
        raise ValueError("substitutes is empty: give at least one token with a different substitute")
    sites = []  # (start of the prompt, index of the swapped token in it)
    for s in torch.isin(tokens, torch.tensor(list(table), dtype=torch.long)).nonzero().flatten().tolist():
        for d in distances:
            if s + d - window >= 0 and s + d < len(tokens):  # the true next token must exist
                sites.append((s + d - window, window - d))
    if not sites:
        return []
    clean = torch.stack([tokens[a:a + window] for a, _ in sites])  # (N, window)
    truth = torch.stack([tokens[a + window] for a, _ in sites])  # (N,)
    clean_logits = _last_logits(model, clean, batch)  # (N, vocab)
    right = (clean_logits.argmax(-1) == truth).nonzero().flatten().tolist()
    trials = [(i, b) for i in right for b in table[int(clean[i, sites[i][1]])]]
    if not trials:
        return []
    corrupted = clean[[i for i, _ in trials]].clone()  # (M, window)
    corrupted[torch.arange(len(trials)), [sites[i][1] for i, _ in trials]] = torch.tensor([b for _, b in trials])
    corrupted_logits = _last_logits(model, corrupted, batch)
    found = []
    for k, (i, _) in enumerate(trials):
        answer, wrong = int(truth[i]), int(corrupted_logits[k].argmax())
        if wrong == answer:
            continue
        clean_diff = (clean_logits[i, answer] - clean_logits[i, wrong]).item()
        corrupted_diff = (corrupted_logits[k, answer] - corrupted_logits[k, wrong]).item()
        found.append(TokenSwap(clean[i:i + 1], corrupted[k:k + 1], sites[i][1], answer, wrong,
                               clean_diff, corrupted_diff))
    return sorted(found, key=lambda swap: -swap.margin)
