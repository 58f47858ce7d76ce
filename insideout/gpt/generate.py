"""Text generation: greedy, temperature, top-k, top-p (nucleus) and combined sampling, with or without a KV-cache.

Decoding turns the model's next-token logits into one token at a time. ``next_token_distribution`` returns the
distribution a method samples from (for plotting); ``generate`` runs the loop; ``main`` is the interactive
command ``python -m insideout generate``.

Context-length policy (the same in the library and the command):

* a prompt longer than the model's ``context_length`` is **refused** with a ``ValueError`` — silently dropping the
  start of a prompt would change what was asked; keep its last ``context_length`` tokens yourself if that is meant;
* generation past the context **slides**: every new token is predicted from the last ``context_length`` tokens.
  The KV-cache holds one window; once it is full, each further step recomputes the window without the cache,
  because every cached key and value was computed at positions (and over earlier tokens) that the sliding window
  has moved away from. Cached and uncached generation therefore give the same tokens at any length.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch

from insideout.gpt.model import GPT

# ---- checking arguments ----------------------------------------------------------------------------------


def check_sampling_args(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                        greedy: bool = False) -> None:
    """Raise a ValueError naming the argument, its value and what is allowed."""
    if not isinstance(greedy, bool):
        raise ValueError(f"greedy={greedy!r}: must be True or False")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or math.isnan(temperature):
        raise ValueError(f"temperature={temperature!r}: must be a number > 0")
    if not greedy and not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(
            f"temperature={temperature!r}: must be a finite number > 0; for deterministic decoding "
            f"use greedy=True (the limit temperature -> 0)"
        )
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k={top_k!r}: must be an integer >= 1, or None to keep every token")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                              or not 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p={top_p!r}: must lie in (0, 1], or None to keep every token")


# ---- from logits to the distribution a method samples from ----------------------------------------------


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row, set the others to -inf (Fan et al., 2018). Exactly k survive."""
    values, indices = torch.topk(logits, min(k, logits.shape[-1]), dim=-1)  # (..., k) each
    return torch.full_like(logits, float("-inf")).scatter_(-1, indices, values)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability mass is >= p (Holtzman et al., 2020)."""
    if p >= 1.0:
        return logits
    probs = torch.softmax(logits.double(), dim=-1)  # float64: the cumulative sum decides membership
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)  # (..., V)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the strictly more likely tokens
    drop_sorted = mass_before >= p  # already reached p without this token: not needed
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def process_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, greedy: bool = False) -> torch.Tensor:
    """Apply temperature, then top-k, then top-p to logits (..., V); excluded tokens get -inf. Float32 out."""
    check_sampling_args(temperature, top_k, top_p, greedy)
    logits = logits.float()
    if greedy:  # keep only the argmax (the first one on a tie, as torch.argmax)
        best = logits.argmax(dim=-1, keepdim=True)
        return torch.full_like(logits, float("-inf")).scatter_(-1, best, logits.gather(-1, best))
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


def next_token_distribution(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                            top_p: float | None = None, greedy: bool = False) -> torch.Tensor:
    """The probabilities (..., V) a decoding method draws the next token from (one-hot for greedy)."""
    return torch.softmax(process_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                        greedy=greedy), dim=-1)


def sample_next_token(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                      top_p: float | None = None, greedy: bool = False,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick one token per row of logits (B, V): argmax if greedy, else a draw from the processed distribution."""
    if greedy:
        check_sampling_args(temperature, top_k, top_p, greedy)
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    probs = next_token_distribution(logits, temperature=temperature, top_k=top_k, top_p=top_p)  # (B, V)
    if generator is not None and probs.device != generator.device:
        probs = probs.to(generator.device)  # draw where the generator lives, so a seed means the same draw
    return torch.multinomial(probs, 1, generator=generator).to(logits.device)  # (B, 1)


# ---- the decoding loop -----------------------------------------------------------------------------------


def _check_prompt(model: GPT, idx: torch.Tensor, max_new_tokens: int) -> None:
    if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
        shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx must be a tensor of token ids of shape (batch, seq), got {shape}: "
                         f"for one prompt pass ids[None]")
    if idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"idx must hold integer token ids, got dtype {idx.dtype}")
    if idx.shape[0] < 1 or idx.shape[1] < 1:
        raise ValueError(f"empty prompt (idx of shape {tuple(idx.shape)}): give at least one token to continue "
                         f"(for example the end-of-text token, to start a new document)")
    ctx = model.config.context_length
    if idx.shape[1] > ctx:
        raise ValueError(f"prompt of {idx.shape[1]} tokens is longer than the model's context_length={ctx}: "
                         f"shorten it, or keep its last {ctx} tokens with idx[:, -{ctx}:]")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: must be an integer >= 0")


@torch.no_grad()
def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, greedy: bool = False,
             generator: torch.Generator | None = None, use_cache: bool = True) -> torch.Tensor:
    """Continue the prompts idx (B, T) by max_new_tokens tokens; returns (B, T + max_new_tokens).

    Methods: ``greedy=True`` takes the argmax (temperature, top_k, top_p are then ignored); otherwise a token is
    drawn from softmax(logits / temperature) restricted by top_k and/or top_p. Pass a seeded ``generator`` for
    reproducible samples. A prompt longer than the context is refused (ValueError); past the context the window
    slides (see the module docstring). The model runs in eval mode (dropout off) and is restored afterwards.
    """
    check_sampling_args(temperature, top_k, top_p, greedy)
    _check_prompt(model, idx, max_new_tokens)
    if max_new_tokens == 0:
        return idx.clone()
    ctx = model.config.context_length
    device = model.tok_emb.weight.device
    out = idx.to(device=device, dtype=torch.long)  # (B, T)
    was_training = model.training
    model.eval()
    try:
        # the last step's logits are never needed, so the cache needs room for T + max_new_tokens - 1 positions
        cache = model.new_cache(out.shape[0], min(ctx, out.shape[1] + max_new_tokens)) if use_cache else None
        logits = model(out, cache=cache)[0][:, -1]  # (B, V) prefill: the whole prompt in one pass
        for step in range(max_new_tokens):
            nxt = sample_next_token(logits, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy,
                                    generator=generator)  # (B, 1)
            out = torch.cat([out, nxt], dim=1)
            if step == max_new_tokens - 1:
                break
            if cache is not None and cache.length < cache.max_len:
                logits = model(nxt, cache=cache)[0][:, -1]  # one new position; keys/values of the rest are cached
            else:  # no cache, or the window is full and slides: recompute over the last ctx tokens
                logits = model(out[:, -ctx:])[0][:, -1]
    finally:
        model.train(was_training)
    return out


def cache_nbytes_formula(config, batch_size: int, max_len: int, bytes_per_value: int = 4) -> int:
    """Bytes of a KV-cache: 2 (K and V) * n_layer * batch * n_head * max_len * d_head * bytes per value."""
    return 2 * config.n_layer * batch_size * config.n_head * max_len * config.head_dim * bytes_per_value


def time_generation(model: GPT, idx: torch.Tensor, max_new_tokens: int, *, use_cache: bool) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of one greedy generation of max_new_tokens tokens (for benchmarks, not tests).

    The CPU time is that of the calling thread (``time.thread_time``): other programs on a busy machine do not
    inflate it. With ``torch.set_num_threads(1)`` all of torch's work runs on that thread, so on an idle machine
    the two agree; with more threads the CPU time misses the helper threads' work.
    """
    wall, cpu = time.perf_counter(), time.thread_time()
    out = generate(model, idx, max_new_tokens, greedy=True, use_cache=use_cache)
    if out.device.type == "cuda":
        torch.cuda.synchronize(out.device)  # kernels run asynchronously: wait for the last one
    return time.perf_counter() - wall, time.thread_time() - cpu


def kv_cache_speedups(model: GPT, idx: torch.Tensor, lengths: list[int], *, repeats: int = 3) -> list[dict]:
    """Time greedy generation with and without the KV-cache for each number of new tokens; one row per length.

    Each time is the best of ``repeats`` runs (per clock), cached and uncached runs alternating, after one warm-up
    of each: the minimum is the run least disturbed by other work on the machine. Speed-up = uncached / cached.
    """
    for use_cache in (True, False):
        time_generation(model, idx, 4, use_cache=use_cache)  # warm-up: first calls allocate and initialise
    rows = []
    for n in lengths:
        best = {key: float("inf") for key in ("cached_wall_s", "cached_cpu_s", "uncached_wall_s", "uncached_cpu_s")}
        for _ in range(repeats):
            for kind, use_cache in (("cached", True), ("uncached", False)):
                wall, cpu = time_generation(model, idx, n, use_cache=use_cache)
                best[f"{kind}_wall_s"] = min(best[f"{kind}_wall_s"], wall)
                best[f"{kind}_cpu_s"] = min(best[f"{kind}_cpu_s"], cpu)
        rows.append({"new_tokens": n, "prompt_tokens": idx.shape[1], "batch": idx.shape[0],
                     "threads": torch.get_num_threads(), **best,
                     "speedup_wall": best["uncached_wall_s"] / best["cached_wall_s"],
                     "speedup_cpu": best["uncached_cpu_s"] / best["cached_cpu_s"],
                     "cached_tokens_per_s": n * idx.shape[0] / best["cached_wall_s"]})
    return rows


# ---- the command line ------------------------------------------------------------------------------------


SEPARATOR = "-" * 40  # printed after each text, so a reader (or a script) sees where one ends


class CLIError(Exception):
    """A problem to report to the user in one readable line (no traceback)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m insideout generate",
        description="Interactive text generation: reads one prompt per line from stdin and prints it with "
                    "its continuation (up to the first end-of-text token), then a line of dashes; an empty line "
                    "or the end of input stops. Type <|endoftext|> to start a new document. A prompt longer "
                    "than the model's context is refused (and the next one read); past the context the window "
                    "slides. Exit status: 0, or 1 if a prompt was refused or the model could not be loaded, "
                    "2 for bad options.",
    )
    from insideout.utils import PRESETS

    parser.add_argument("--preset", choices=PRESETS, default=None,
                        help="which course model to load from the cache (default: $INSIDEOUT_PRESET, else cpu)")
    parser.add_argument("--checkpoint", default=None,
                        help="a safetensors checkpoint written by training (default: the preset's cached model)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: best available)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate per prompt (default 200)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature, > 0 (default 1.0)")
    parser.add_argument("--top-k", type=int, default=None, help="keep only the k most likely tokens")
    parser.add_argument("--top-p", type=float, default=None, help="keep the smallest set with mass >= p (0 < p <= 1)")
    parser.add_argument("--greedy", action="store_true", help="always take the most likely token")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampler; same seed and prompts, same text")
    parser.add_argument("--threads", type=int, default=2,
                        help="CPU threads (fixed, because the thread count changes float rounding; default 2)")
    return parser


def load_for_cli(preset: str | None, checkpoint: str | None, device: str | None):
    """Load (model, tokenizer) for the command, turning every failure into a one-line CLIError.

    Without ``--checkpoint`` it loads the preset's cached course model; it never trains one (that is chapter 07's
    or ``python -m insideout train``'s job), so a missing model is an error that says how to make it.
    """
    from insideout.gpt import pretrained
    from insideout.gpt.presets import checkpoint_path
    from insideout.utils import get_preset

    try:
        if checkpoint is None:
            preset = get_preset(preset)
            checkpoint = checkpoint_path(preset)
            if not checkpoint.is_file():
                raise CLIError(f"no trained {preset} course model at {checkpoint}: run the chapter "
                               f"transformer/07_training, or `python -m insideout train --preset {preset}`, "
                               f"or pass --checkpoint FILE")
        elif not os.path.exists(checkpoint):
            raise CLIError(f"no checkpoint at {checkpoint}: pass the path of a .safetensors file written by "
                           f"`python -m insideout train --out DIR` (or that DIR)")
        return pretrained.load_for_generation(checkpoint=checkpoint, device=device)
    except CLIError:
        raise
    except FileNotFoundError as err:
        raise CLIError(str(err)) from None
    except (ValueError, OSError, RuntimeError, KeyError, TypeError) as err:
        raise CLIError(f"cannot load the checkpoint: {err}") from None


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m insideout generate``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        check_sampling_args(args.temperature, args.top_k, args.top_p, args.greedy)
        if args.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens {args.max_new_tokens}: must be an integer >= 1")
        if args.threads < 1:
            raise ValueError(f"--threads {args.threads}: must be an integer >= 1")
        if args.device is not None:
            from insideout.utils import get_device

            get_device(args.device)
    except ValueError as err:
        message = str(err)
        for api, flag in (("temperature=", "--temperature "), ("top_k=", "--top-k "), ("top_p=", "--top-p "),
                          ("greedy=True", "--greedy")):
            message = message.replace(api, flag)
        print(f"error: {message}", file=sys.stderr)
        return 2
    try:
        model, tokenizer = load_for_cli(args.preset, args.checkpoint, args.device)
    except CLIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    device = model.tok_emb.weight.device
    print(f"loaded a {model.num_parameters():,}-parameter GPT (context {model.config.context_length} tokens) "
          f"on {device}", file=sys.stderr)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)  # one sampler for the whole session
    interactive = sys.stdin.isatty()
    status = 0
    while True:
        if interactive:
            print("prompt (empty line to quit)> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        prompt = line.removesuffix("\n").removesuffix("\r")
        if not prompt:  # end of input, or an empty line
            break
        try:
            try:  # the course tokenizers: a typed <|endoftext|> is the document separator
                ids = tokenizer.encode(prompt, allowed_special="all")
            except TypeError:  # any other tokenizer with a plain encode(text)
                ids = tokenizer.encode(prompt)
            out = generate(model, torch.tensor([ids], dtype=torch.long, device=device), args.max_new_tokens,
                           temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, greedy=args.greedy,
                           generator=generator)
        except ValueError as err:  # e.g. a prompt longer than the context: report it and read the next one
            print(f"error: {err}", file=sys.stderr)
            status = 1
            continue
        new = out[0, len(ids):].tolist()
        eot = getattr(tokenizer, "eot_id", None)
        if eot in new:  # the model ended the document: show the text up to there
            new = new[: new.index(eot)]
        print(prompt + tokenizer.decode(new), flush=True)
        print(SEPARATOR, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
