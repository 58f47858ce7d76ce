"""Batched sampling with the KV-cache: many prompts at once, left-padded, for evaluation and reinforcement learning.

``sample(model, prompts, max_new_tokens, ...)`` continues every prompt (a list of token ids) and returns a
``SampleResult``. It draws from the same distribution as ``insideout.gpt.generate.generate`` — greedy, temperature,
top-k, top-p and their combination, with the same definitions — but runs a whole batch per forward pass:

* **Padding.** The prompts of a batch are left-padded to the longest one and run with ``GPT.forward``'s
  ``attention_mask``, so each row gets the positions and attention it would get alone (tested: equal logits up to
  float rounding). Prompts are batched in their given order, ``batch_size`` at a time.
* **Cache.** The batch's prompt is run once (prefill); then each step feeds only the new token of every row.
* **Stopping.** A row ends when it draws one of ``stop_tokens`` (kept in its tokens) or after ``max_new_tokens``.
  Finished rows stop costing work: they are dropped from the batch (and from the KV-cache) once they make up an
  eighth of it, and a batch whose rows have all finished stops at once.
* **Context.** A prompt longer than the model's context, or a prompt plus ``max_new_tokens`` that does not fit in
  it, is refused with a ``ValueError``: every sampled sequence fits the context, so it can be scored by one forward
  pass later (for example the log-probabilities of reinforcement learning). ``generate`` slides a window instead.

How a token is drawn. The logits go through ``logits_hook`` (if given), then the same processing as ``generate``:
greedy is the argmax; otherwise division by the temperature, then top-k, then top-p (``generate``'s own
``top_k_filter``/``top_p_filter``, so the kept set is the same). The draw itself is inverse-CDF sampling: with
``w_j = exp(l_j - max l)`` (0 for an excluded token), cumulative sums ``c_j = w_1 + ... + w_j`` in float64 and one
uniform ``u`` in [0, 1) per row (float64, from ``generator``), the token is the first ``j`` with ``c_j > u * c_V``.
Token ``j`` is chosen exactly when ``u * c_V`` falls in ``[c_{j-1}, c_j)``, an interval of length ``w_j``, so its
probability is ``w_j / c_V = softmax(l)_j`` — the distribution ``torch.multinomial`` draws from in ``generate``, with
one random number per row instead of one per vocabulary entry. An excluded token has an empty interval and is never
drawn. Without top-p the kept top-k values are drawn from directly (no full-vocabulary pass).

A seeded ``generator`` gives the same tokens for the same prompts, arguments and ``batch_size`` (the draws of a
batch depend on which prompts share it). The tokens differ from ``generate``'s for the same seed, because the two
use their random numbers differently; their distributions are the same (tests: a frequency test against the exact
probabilities, and greedy decoding token for token equal to ``generate(greedy=True)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from insideout.gpt.generate import check_sampling_args, top_k_filter, top_p_filter
from insideout.gpt.model import GPT

LogitsHook = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
COMPACT_FRACTION = 8  # drop finished rows once they are at least 1/8 of the batch


@dataclass
class SampleResult:
    """What ``sample`` returns, in the order of the prompts."""

    tokens: list[list[int]]  # each prompt's continuation (its stop token included when it drew one)
    finished: list[bool]  # True where the continuation ended with a stop token
    n_generated: int = 0  # total tokens generated over all prompts
    forward_calls: int = 0  # model forward passes (one prefill per batch, then one per step)
    rows_computed: int = 0  # rows run, summed over the forward passes (dropped finished rows no longer count)


# ---- checking arguments ----------------------------------------------------------------------------------


def _check_prompts(model: GPT, prompts, max_new_tokens) -> list[list[int]]:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: must be an integer >= 0")
    if isinstance(prompts, torch.Tensor) or not isinstance(prompts, Sequence) or isinstance(prompts, str):
        raise ValueError(f"prompts must be a list of prompts, each a list of token ids, got {type(prompts).__name__}"
                         f"{': use .tolist()' if isinstance(prompts, torch.Tensor) else ''}")
    if len(prompts) == 0:
        raise ValueError("prompts is empty: give at least one prompt (a list of token ids)")
    V, ctx = model.config.vocab_size, model.config.context_length
    out = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, torch.Tensor):
            if prompt.dim() != 1 or prompt.dtype.is_floating_point or prompt.dtype == torch.bool:
                raise ValueError(f"prompt {i}: a tensor prompt must be 1-D integer token ids, got shape "
                                 f"{tuple(prompt.shape)} and dtype {prompt.dtype}")
            prompt = prompt.tolist()
        if isinstance(prompt, (str, bytes)) or not isinstance(prompt, Sequence):
            raise ValueError(f"prompt {i} is a {type(prompt).__name__}, not a list of token ids: encode text with "
                             f"the tokenizer first")
        if len(prompt) == 0:
            raise ValueError(f"prompt {i} is empty: give at least one token to continue (for example the "
                             f"end-of-text token, to start a new document)")
        bad = [t for t in prompt if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < V]
        if bad:
            raise ValueError(f"prompt {i} holds {bad[:3]!r}: token ids must be integers in [0, {V})")
        if len(prompt) > ctx:
            raise ValueError(f"prompt {i} has {len(prompt)} tokens, more than the model's context_length={ctx}: "
                             f"shorten it, or keep its last {ctx} tokens")
        if len(prompt) + max_new_tokens > ctx:
            raise ValueError(f"prompt {i} ({len(prompt)} tokens) + max_new_tokens={max_new_tokens} exceeds the "
                             f"context_length={ctx}: sample() keeps every sequence inside the context; lower "
                             f"max_new_tokens to {ctx - len(prompt)} or shorten the prompt (generate() slides a "
                             f"window past the context instead)")
        out.append(list(prompt))
    return out


def _check_stop_tokens(stop_tokens, vocab_size: int) -> list[int]:
    if isinstance(stop_tokens, (int, str)) or not isinstance(stop_tokens, Iterable):
        raise ValueError(f"stop_tokens={stop_tokens!r}: must be a collection of token ids, e.g. "
                         f"(tokenizer.eot_id,)")
    stops = list(stop_tokens)
    bad = [t for t in stops if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"stop_tokens holds {bad[:3]!r}: token ids must be integers in [0, {vocab_size})")
    return sorted(set(stops))


# ---- one draw per row --------------------------------------------------------------------------------------


def inverse_cdf_draw(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One index per row of logits (B, N), drawn with probability softmax(logits) (-inf: never); (B,) long.

    Inverse-CDF sampling with one float64 uniform per row (see the module docstring for why the distribution is
    exactly the softmax). Raises ValueError for a row without any finite logit.
    """
    top = logits.max(dim=-1, keepdim=True).values  # (B, 1)
    if not bool(torch.isfinite(top).all()):
        rows = (~torch.isfinite(top[:, 0])).nonzero()[:, 0].tolist()
        raise ValueError(f"rows {rows[:5]} have no token with a finite logit (NaN logits, or every token excluded by "
                         f"the logits_hook): nothing can be drawn")
    cdf = (logits - top).exp_().to(torch.float64).cumsum_(dim=-1)  # (B, N) increasing; c_N >= 1 (the max term)
    total = cdf[:, -1:]
    device = generator.device if generator is not None else logits.device
    u = torch.rand(logits.shape[0], 1, dtype=torch.float64, generator=generator, device=device).to(logits.device)
    # u < 1, but u * total may round up to total: keep the point below it so some interval always contains it
    point = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, point, right=True)[:, 0]


def draw_tokens(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, greedy: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of every row of logits (B, V): (B,) long. Same distribution as generate's
    ``sample_next_token`` (arguments assumed checked)."""
    if greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_p is None and top_k is not None and top_k < logits.shape[-1]:
        values, indices = torch.topk(logits, top_k, dim=-1)  # the same kept set as top_k_filter
        return indices.gather(-1, inverse_cdf_draw(values, generator)[:, None])[:, 0]
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return inverse_cdf_draw(logits, generator)


# ---- the loop ------------------------------------------------------------------------------------------------


def sample(model: GPT, prompts: list[list[int]], max_new_tokens: int, *, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
           stop_tokens: Iterable[int] = (), generator: torch.Generator | None = None, batch_size: int = 256,
           logits_hook: LogitsHook | None = None) -> SampleResult:
    """Continue each prompt (a list of token ids) by up to ``max_new_tokens`` tokens; see the module docstring.

    ``greedy=True`` takes the argmax (temperature, top_k and top_p are then ignored); otherwise a token is drawn
    from softmax(logits / temperature) restricted by top_k and/or top_p, as in ``generate``. A row stops after
    drawing one of ``stop_tokens``. ``logits_hook(step, logits, generated)`` — with ``logits`` (B, V) the raw
    next-token logits of the batch's rows, ``generated`` (B, step) their tokens so far — returns the logits to
    use (e.g. -inf for forbidden tokens: constrained decoding). With a hook, row ``i`` is always prompt
    ``k * batch_size + i`` of batch ``k`` (finished rows are then kept; their later tokens are discarded and shown
    to the hook as their stop token). The model runs in eval mode and is restored afterwards.
    """
    if not isinstance(model, GPT):
        raise ValueError(f"model must be an insideout GPT, got {type(model).__name__}")
    check_sampling_args(temperature, top_k, top_p, greedy)
    prompts = _check_prompts(model, prompts, max_new_tokens)
    stops = _check_stop_tokens(stop_tokens, model.config.vocab_size)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: must be a positive integer")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator (seeded with .manual_seed), got "
                         f"{type(generator).__name__}")
    if logits_hook is not None and not callable(logits_hook):
        raise ValueError(f"logits_hook must be callable as hook(step, logits, generated), got "
                         f"{type(logits_hook).__name__}")
    result = SampleResult(tokens=[[] for _ in prompts], finished=[False] * len(prompts))
    if max_new_tokens == 0:
        return result
    options = dict(temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy, generator=generator)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                _sample_batch(model, prompts, start, min(start + batch_size, len(prompts)), max_new_tokens,
                              stops, options, logits_hook, result)
    finally:
        model.train(was_training)
    result.n_generated = sum(len(t) for t in result.tokens)
    return result


def _sample_batch(model: GPT, prompts: list[list[int]], start: int, end: int, max_new_tokens: int,
                  stops: list[int], options: dict, hook: LogitsHook | None, result: SampleResult) -> None:
    device = model.tok_emb.weight.device
    batch = prompts[start:end]
    n, width = len(batch), max(len(p) for p in batch)
    idx = torch.zeros(n, width, dtype=torch.long)  # left-padded with token 0 (masked out)
    full_mask = torch.ones(n, width + max_new_tokens, dtype=torch.bool)  # the prompt's pads, then generated tokens
    for i, prompt in enumerate(batch):
        idx[i, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        full_mask[i, : width - len(prompt)] = False
    idx, full_mask = idx.to(device), full_mask.to(device)
    stop_set = torch.tensor(stops, dtype=torch.long, device=device)
    # the last drawn token is never fed back: the cache needs room for width + max_new_tokens - 1 positions
    cache = model.new_cache(n, width + max_new_tokens - 1)
    logits = model(idx, cache=cache, attention_mask=full_mask[:, :width], last_only=True)[0][:, -1]  # (n, V)
    result.forward_calls += 1
    result.rows_computed += n
    rows = torch.arange(n, device=device)  # which prompt of the batch each live row is
    generated = torch.empty(n, max_new_tokens, dtype=torch.long, device=device)  # indexed by prompt of the batch
    length = torch.full((n,), max_new_tokens, dtype=torch.long)  # tokens kept per prompt
    done = torch.zeros(n, dtype=torch.bool, device=device)  # per live row: drew a stop token
    for step in range(max_new_tokens):
        if hook is not None:
            seen = generated[:, :step]
            out = hook(step, logits, seen)
            if not isinstance(out, torch.Tensor) or out.shape != logits.shape:
                raise ValueError(f"logits_hook must return a tensor of shape {tuple(logits.shape)}, got "
                                 f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
            logits = out
            if bool(done.any()):  # a finished row's draw is discarded: whatever the hook left, draw something
                logits = logits.masked_fill(done[:, None], 0.0)
        nxt = draw_tokens(logits, **options)  # (live,)
        if hook is not None:  # rows are never dropped: a finished row repeats its stop token
            nxt = torch.where(done, generated[:, max(step - 1, 0)], nxt)
        generated[rows, step] = nxt
        if len(stops):
            hit = torch.isin(nxt, stop_set) & ~done
            if bool(hit.any()):
                for r in rows[hit].tolist():
                    length[r] = step + 1
                    result.finished[start + r] = True
                done = done | hit
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if hook is None and int(done.sum()) * COMPACT_FRACTION >= len(rows):
            keep = (~done).nonzero()[:, 0]
            cache.keep_rows(keep)
            rows, full_mask, nxt, done = rows[keep], full_mask[keep], nxt[keep], done[keep]
        mask = full_mask[:, : width + step + 1]  # (live, cached + 1): the fed token is real
        logits = model(nxt[:, None], cache=cache, attention_mask=mask, last_only=True)[0][:, -1]
        result.forward_calls += 1
        result.rows_computed += len(rows)
    generated = generated.cpu()
    for i in range(n):
        result.tokens[start + i] = generated[i, : int(length[i])].tolist()


__all__ = ["SampleResult", "draw_tokens", "inverse_cdf_draw", "sample"]
