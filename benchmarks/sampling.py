"""Sampling throughput: generated tokens/s of ``generate`` (today's loop) and ``sample`` (batched, KV-cache) vs batch.

    python benchmarks/sampling.py                       # CPU preset, batches 1/16/64/256, 2 threads, then 1 thread
    python benchmarks/sampling.py --batches 64 256 --new-tokens 64 --repeats 3

Workload (the same for both samplers): ``batch`` prompts of ``--prompt-tokens`` tokens cut from the validation
plays at seeded places, each continued by exactly ``--new-tokens`` tokens drawn at temperature 1 (no top-k/top-p,
no stop token, so every row does the full work and both loops generate the same number of tokens). ``generate``
runs the whole batch as one (B, T) tensor; ``sample`` gets the prompts as lists, ``batch_size=batch``.

Model: the trained course model if its checkpoint is cached, else a randomly initialised model of the preset's
shape — without stop tokens the work of a step does not depend on the weights' values, so both time the same.

Two measurements per sampler and batch, each the best of ``--repeats`` runs:

* with ``--threads`` threads (default 2): wall-clock tokens/s — the number the course's budget is about, but on a
  machine shared with other work it is inflated by waiting for the scheduler;
* with 1 thread: CPU-seconds per generated token (``time.process_time``), which other programs' load inflates far
  less (it still does: they share caches and memory bandwidth). The load average is recorded before and after.

Writes ``<out>/sampling_<preset>.json`` and ``.csv`` (one row per sampler, batch and thread count) and prints a
table, the speed-up of ``sample`` over ``generate``, and whether ``sample`` reached 10,000 tokens/s at a batch of
at least 64 (issue 12's target, stated for a quiet reference machine with 2 threads).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import torch

from insideout.gpt.generate import generate
from insideout.gpt.model import GPT
from insideout.gpt.sampling import sample
from insideout.utils import cpu_name, fix_threads, get_device, seed_everything

TARGET_TOKENS_PER_S = 10_000
TARGET_MIN_BATCH = 64




def load_model(preset: str, device: torch.device) -> tuple[GPT, str]:
    """The trained course model if its checkpoint is cached, else a random model of the preset's shape."""
    from insideout.gpt import presets
    from insideout.gpt.checkpoint import load_model as load_checkpoint

    path = presets.checkpoint_path(preset)
    if path.is_file():
        model, ckpt = load_checkpoint(path, device=device)
        return model, f"trained checkpoint {path.name} (step {ckpt.step})"
    torch.manual_seed(0)
    return GPT(presets.model_config(preset)).to(device).eval(), "random weights (same shape as the preset)"


def validation_prompts(n: int, length: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """n windows of `length` tokens from the validation plays (course tokenizer), at seeded offsets."""
    from insideout.gpt.corpus import shakespeare_works
    from insideout.gpt.tokenizer import course_tokenizer

    tokenizer = course_tokenizer()
    ids = [t for work in shakespeare_works("validation") for t in tokenizer.encode(work.text, disallowed_special=())]
    ids = [t % vocab_size for t in ids]  # (identity for the course model; keeps other shapes valid)
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - length, (n,), generator=g).tolist()
    return [ids[s : s + length] for s in starts]


def time_run(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(model: GPT, prompts: list[list[int]], new_tokens: int, repeats: int) -> dict[str, dict[str, float]]:
    """Best wall and CPU seconds of each sampler over `repeats` runs (alternating), after a short warm-up."""
    device = model.tok_emb.weight.device
    idx = torch.tensor(prompts, dtype=torch.long, device=device)
    runs = {
        "generate": lambda g: generate(model, idx, new_tokens, temperature=1.0, generator=g),
        "sample": lambda g: sample(model, prompts, new_tokens, temperature=1.0, generator=g,
                                   batch_size=len(prompts)),
    }
    generate(model, idx[:2], 2)  # warm-up: first calls allocate and initialise
    sample(model, prompts[:2], 2)
    best = {name: {"wall_s": float("inf"), "cpu_s": float("inf")} for name in runs}
    for r in range(repeats):
        for name, run in runs.items():
            g = torch.Generator().manual_seed(r)
            wall, cpu = time_run(lambda run=run, g=g: run(g))
            best[name]["wall_s"] = min(best[name]["wall_s"], wall)
            best[name]["cpu_s"] = min(best[name]["cpu_s"], cpu)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=("cpu", "gpu", "gpt2-small"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="threads of the wall-clock run (0: skip it)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)

    seed_everything(0, threads=max(args.threads, 1))
    device = get_device(args.device)
    model, what = load_model(args.preset, device)
    if args.prompt_tokens + args.new_tokens > model.config.context_length:
        print(f"error: --prompt-tokens + --new-tokens must fit the context of {model.config.context_length}",
              file=sys.stderr)
        return 2
    prompts = validation_prompts(max(args.batches), args.prompt_tokens, model.config.vocab_size)
    load_before = os.getloadavg()
    print(f"model: {what}; {args.prompt_tokens}-token prompts + {args.new_tokens} new tokens; "
          f"{cpu_name()}; torch {torch.__version__}; load average {load_before[0]:.2f} (of {os.cpu_count()} CPUs)")
    rows = []
    for threads in ([args.threads] if args.threads > 0 else []) + [1]:
        fix_threads(threads)
        for batch in args.batches:
            best = measure(model, prompts[:batch], args.new_tokens, args.repeats)
            tokens = batch * args.new_tokens
            for name, t in best.items():
                rows.append({"sampler": name, "batch": batch, "threads": threads, "new_tokens": tokens,
                             "wall_s": t["wall_s"], "cpu_s": t["cpu_s"], "tokens_per_s": tokens / t["wall_s"],
                             "cpu_us_per_token": 1e6 * t["cpu_s"] / tokens, "load_avg_1min": os.getloadavg()[0]})
            g, s = best["generate"], best["sample"]
            print(f"threads {threads} | batch {batch:4d} | generate {tokens / g['wall_s']:8,.0f} tokens/s "
                  f"({1e6 * g['cpu_s'] / tokens:6.0f} CPU-us/token) | sample {tokens / s['wall_s']:8,.0f} tokens/s "
                  f"({1e6 * s['cpu_s'] / tokens:6.0f} CPU-us/token) | speed-up x{g['wall_s'] / s['wall_s']:.2f} wall, "
                  f"x{g['cpu_s'] / s['cpu_s']:.2f} CPU", flush=True)
    load_after = os.getloadavg()
    loaded = max(load_before[0], load_after[0]) > 0.5 * (os.cpu_count() or 1)
    wall_rows = [r for r in rows if r["sampler"] == "sample" and r["threads"] == args.threads
                 and r["batch"] >= TARGET_MIN_BATCH]
    best_rate = max((r["tokens_per_s"] for r in wall_rows), default=float("nan"))
    one_thread = [r for r in rows if r["sampler"] == "sample" and r["threads"] == 1 and r["batch"] >= TARGET_MIN_BATCH]
    best_cpu = min((r["cpu_us_per_token"] for r in one_thread), default=float("nan"))
    verdict = "reached" if best_rate >= TARGET_TOKENS_PER_S else "NOT reached"
    print(f"sample at batch >= {TARGET_MIN_BATCH}: best {best_rate:,.0f} tokens/s with {args.threads} threads "
          f"(target {TARGET_TOKENS_PER_S:,}: {verdict}); 1 thread: {best_cpu:.0f} CPU-us/token = "
          f"{1e6 / best_cpu:,.0f} tokens per CPU-second")
    print(f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after: "
          + ("a LOADED machine: wall-clock rates are lower bounds" if loaded else "a quiet machine"))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"sampling_{args.preset}"
    meta = {"model": what, "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
            "cpu": cpu_name(), "cpus": os.cpu_count(), "torch": torch.__version__, "device": str(device),
            "load_avg_before": load_before[0], "load_avg_after": load_after[0], "loaded": loaded,
            "target_tokens_per_s": TARGET_TOKENS_PER_S, "best_sample_tokens_per_s_batch_ge_64": best_rate,
            "best_sample_cpu_us_per_token_1thread_batch_ge_64": best_cpu}
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {stem}.json and .csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
