"""What the pinned numeric profile costs in speed: the same work under the pinned profile and under native kernels.

    python benchmarks/numerics_cost.py                 # 2 threads, 3 alternating rounds
    python benchmarks/numerics_cost.py --threads 1 --rounds 5

Each measurement runs in a fresh process (the profile is fixed when PyTorch's kernels first run), alternating pinned
and native so that a change in the machine's load hits both alike. Timed, after a warm-up: one training step of the
CPU-preset GPT (forward, backward, clipping, AdamW on a batch of the preset's shape), a batched decoding step of the
same model with the KV-cache (64 rows), and a training step of a small convolutional network (oneDNN's path).
Reported: the median over steps of the wall time and of the process CPU time (which other programs do not inflate),
per round, and the pinned/native ratio of the medians. Results go to benchmarks/results/numerics_cost.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, os, statistics, sys, time
import torch, torch.nn as nn, torch.nn.functional as F
import insideout
from insideout import utils
from insideout.gpt.model import GPT
from insideout.gpt.presets import model_config
from insideout.training import OptimConfig, make_optimizer

threads, steps = int(sys.argv[1]), int(sys.argv[2])
utils.seed_everything(0, threads=threads)
profile = utils.numeric_profile()


def timed(fn, n):
    fn(); fn()  # warm-up
    walls, cpus = [], []
    for _ in range(n):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


cfg = model_config("cpu")
model = GPT(cfg)
opt = make_optimizer(model, OptimConfig(max_steps=100, warmup_steps=1))
rows = torch.randint(0, cfg.vocab_size, (8, cfg.context_length + 1))


def train_step():
    _, loss = model(rows[:, :-1], rows[:, 1:])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


prompt = torch.randint(0, cfg.vocab_size, (64, 32))


@torch.no_grad()
def decode_steps():
    model.eval()
    cache = model.new_cache(64, 32 + 16)
    logits = model(prompt, cache=cache)[0][:, -1]
    for _ in range(16):
        nxt = logits.argmax(-1, keepdim=True)
        logits = model(nxt, cache=cache)[0][:, -1]
    model.train()


conv = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 32, 3, padding=1), nn.SiLU(),
                     nn.Conv2d(32, 3, 3, padding=1))
conv_opt = torch.optim.AdamW(conv.parameters(), lr=1e-3)
images = torch.randn(64, 3, 16, 16)


def conv_step():
    loss = F.mse_loss(conv(images), images)
    loss.backward()
    conv_opt.step()
    conv_opt.zero_grad(set_to_none=True)


print(json.dumps({"mode": profile["mode"], "capability": profile["capability"],
                  "gpt_train_step": timed(train_step, steps),
                  "gpt_decode_16_tokens_x64": timed(decode_steps, max(3, steps // 2)),
                  "conv_train_step": timed(conv_step, steps)}))
"""


def run(mode: str, threads: int, steps: int) -> dict:
    env = dict(os.environ)
    env["INSIDEOUT_NUMERICS"] = mode
    if mode == "native":
        for name in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA", "MKL_DYNAMIC", "OMP_DYNAMIC"):
            env.pop(name, None)
    out = subprocess.run([sys.executable, "-c", PROBE, str(threads), str(steps)], env=env, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating pinned/native pairs")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{platform.processor() or platform.machine()}, {args.threads} thread(s), load average {load:.1f}")
    results = {"pinned": [], "native": []}
    for r in range(args.rounds):
        for mode in ("pinned", "native"):
            res = run(mode, args.threads, args.steps)
            results[mode].append(res)
            print(f"round {r + 1} {mode:<6} (ATen {res['capability']}): " + ", ".join(
                f"{k} {v['wall_s'] * 1e3:.1f} ms wall / {v['cpu_s'] * 1e3:.1f} ms CPU"
                for k, v in res.items() if isinstance(v, dict)))
    summary = {}
    for task in ("gpt_train_step", "gpt_decode_16_tokens_x64", "conv_train_step"):
        row = {}
        for clock in ("wall_s", "cpu_s"):
            pinned = statistics.median(r[task][clock] for r in results["pinned"])
            native = statistics.median(r[task][clock] for r in results["native"])
            row[clock] = {"pinned": pinned, "native": native, "ratio": pinned / native}
        summary[task] = row
        print(f"{task:<26} pinned/native: wall {row['wall_s']['ratio']:.3f}x, CPU {row['cpu_s']['ratio']:.3f}x")
    out = ROOT / "benchmarks" / "results" / "numerics_cost.json"
    out.write_text(json.dumps({"threads": args.threads, "load_average": load, "rounds": results,
                               "summary": summary}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
