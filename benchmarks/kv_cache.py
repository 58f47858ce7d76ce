"""KV-cache speed-up: greedy generation with and without the cache, across numbers of new tokens.

    python benchmarks/kv_cache.py                      # CPU preset, 32/64/128/256 new tokens, 2 threads
    python benchmarks/kv_cache.py --preset gpu --device cuda --threads 0

Uses the trained course model if its checkpoint is cached (``insideout.gpt.pretrained``); otherwise a randomly
initialised model of the preset's shape — the time of a forward pass does not depend on the weights' values, and
generation is greedy with a fixed number of new tokens, so both give the same timings. Writes
``<out>/kv_cache_<preset>_<threads>threads.json`` and ``.csv`` and prints a table: wall-clock and CPU time of
the calling thread, each the best of ``--repeats`` runs. On a machine shared with other work, run it with
``--threads 1``: with 2 threads every parallel region waits for a thread the scheduler may have paused, and
timings swing by an order of magnitude.
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

from insideout.gpt.generate import kv_cache_speedups
from insideout.gpt.model import GPT
from insideout.utils import cpu_name, get_device, seed_everything


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=("cpu", "gpu", "gpt2-small"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs per point")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)

    seed_everything(0, threads=args.threads or None)
    device = get_device(args.device)
    model, source = load_model(args.preset, device)
    cfg = model.config
    if args.prompt_tokens + max(args.lengths) > cfg.context_length:
        parser.error(f"--prompt-tokens + max(--lengths) = {args.prompt_tokens + max(args.lengths)} exceeds the "
                     f"context_length {cfg.context_length}: past it generation slides and the cache stops helping")
    prompt = torch.randint(0, cfg.vocab_size, (args.batch, args.prompt_tokens),
                           generator=torch.Generator().manual_seed(0)).to(device)
    load_before = os.getloadavg()
    start = time.perf_counter()
    rows = kv_cache_speedups(model, prompt, args.lengths, repeats=args.repeats)
    elapsed = time.perf_counter() - start
    result = {
        "benchmark": "kv_cache", "preset": args.preset, "model": source, "config": cfg.to_dict(),
        "parameters": model.num_parameters(), "device": str(device), "cpu": cpu_name(),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "os_cpus": os.cpu_count(),
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
        "repeats": args.repeats,
        "timing": "best of repeats per clock, cached and uncached alternating, after one warm-up run of each; "
                  "greedy decoding; wall = time.perf_counter, cpu = time.thread_time of the calling thread "
                  "(equal to wall on an idle machine with 1 thread; misses helper threads' work with more)",
        "elapsed_s": elapsed, "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"kv_cache_{args.preset}_{torch.get_num_threads()}threads"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    with stem.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    print(f"KV-cache benchmark | preset {args.preset} ({source}) | {model.num_parameters():,} parameters | "
          f"{device} | {torch.get_num_threads()} threads | load average {load_before[0]:.2f} -> "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'new tokens':>10} {'cached s':>9} {'uncached s':>11} {'speed-up':>9}   "
          f"{'cached cpu s':>12} {'uncached cpu s':>14} {'cpu speed-up':>12} {'cached tok/s':>13}")
    for r in rows:
        print(f"{r['new_tokens']:>10} {r['cached_wall_s']:>9.4f} {r['uncached_wall_s']:>11.4f} "
              f"{r['speedup_wall']:>8.2f}x   {r['cached_cpu_s']:>12.4f} {r['uncached_cpu_s']:>14.4f} "
              f"{r['speedup_cpu']:>11.2f}x {r['cached_tokens_per_s']:>13.1f}")
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
