"""Training throughput (tokens/s) and model FLOPs utilisation (MFU) of a preset's training step.

    python benchmarks/train_throughput.py --preset cpu                      # the book's model, 2 CPU threads
    python benchmarks/train_throughput.py --preset gpt2-small --device cuda --compile   # GPT-2 small, bf16

What is timed: one optimizer step of the training loop's own code (``forward_backward`` over the micro-batches,
gradient clipping, AdamW), on batches of random token ids of the preset's shape; the data pipeline is not timed
(it runs ahead of the model and costs well under 1% of a CPU step).

FLOP formula (per trained token; PaLM's MFU convention, Chowdhery et al. 2022, after Kaplan et al. 2020):

    FLOPs/token = 6 * N + 12 * n_layer * d_model * T

N counts the parameters that enter matrix multiplies: every parameter except the position embedding (a lookup);
the token embedding counts once, for the LM head tied to it. 6N = forward (2N) + backward (4N). The second term is
attention's QK^T and AV products (2 * 2 * T * d_model per layer and token forward, x3 with backward), counted
without the causal half, as PaLM does. T is the training sequence length.

MFU = achieved FLOP/s / peak FLOP/s. Peak on CPU: cores x nominal clock x FLOPs per cycle of the widest FMA unit
(AVX-512: 2 FMA x 16 float32 lanes x 2 = 64; AVX2: 32), nominal clock taken from /proc/cpuinfo's bogomips / 2;
a measured float32 matmul rate is reported beside it as the attainable peak. On CUDA: a table of dense bf16
peaks (H100 SXM 989 TFLOP/s), or --peak-tflops.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import nullcontext

import torch

from insideout.gpt.model import GPT
from insideout.gpt.presets import PRESET_NAMES, model_config, train_config
from insideout.gpt.train import forward_backward, make_optimizer
from insideout.utils import get_device, seed_everything

GPU_BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "T4": 65.0, "A10": 125.0}


def train_flops_per_token(model: GPT, seq_len: int) -> tuple[float, int]:
    """(6N + 12 * n_layer * d_model * T, N) for one trained token."""
    c = model.config
    n = model.num_parameters() - (model.pos_emb.weight.numel() if model.pos_emb is not None else 0)
    return 6.0 * n + 12.0 * c.n_layer * c.d_model * seq_len, n


def cpu_peak_flops(threads: int) -> tuple[float, str]:
    """Theoretical float32 peak of `threads` cores from the ISA flags and the nominal clock."""
    info = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    bogomips = [float(line.split(":")[1]) for line in info.splitlines() if line.startswith("bogomips")]
    ghz = bogomips[0] / 2000.0 if bogomips else float("nan")
    per_cycle = 64 if " avx512f" in flags else 32 if " avx2" in flags and " fma" in flags else 8
    return threads * ghz * 1e9 * per_cycle, f"{threads} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle"


def measured_matmul_flops(device: torch.device, dtype: torch.dtype, n: int = 1024, repeats: int = 20) -> float:
    """FLOP/s of a square matmul: the attainable peak on this device."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cpu", choices=PRESET_NAMES)
    p.add_argument("--device", default=None)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on CPU, 30 on GPU)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--batch-size", type=int, default=None, help="micro-batch (default: the preset's)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (default 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the device's peak")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    args = p.parse_args()

    seed_everything(0, threads=args.threads)
    device = get_device(args.device)
    mc, tc = model_config(args.preset), train_config(args.preset)
    batch = args.batch_size or tc.batch_size
    seq_len = tc.seq_len or mc.context_length
    model = GPT(mc).to(device)
    optimizer = make_optimizer(model, tc, device)
    step_model = torch.compile(model) if args.compile else model
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda else nullcontext
    steps = args.steps or (30 if cuda else 20)
    rows = torch.randint(0, mc.vocab_size, (batch * args.grad_accum, seq_len + 1), device=device)

    def step() -> None:
        forward_backward(step_model, rows, args.grad_accum, autocast=autocast)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = steps * batch * args.grad_accum * seq_len
    flops_per_token, n = train_flops_per_token(model, seq_len)
    achieved = tokens / seconds * flops_per_token
    if cuda:
        name = torch.cuda.get_device_name(device)
        table = next((v for k, v in GPU_BF16_PEAK_TFLOPS.items() if k in name), float("nan"))
        peak, peak_how = (args.peak_tflops or table) * 1e12, f"{name} dense bf16"
        attainable = measured_matmul_flops(device, torch.bfloat16, 8192, 20)
    else:
        peak, peak_how = cpu_peak_flops(torch.get_num_threads())
        if args.peak_tflops:
            peak, peak_how = args.peak_tflops * 1e12, "given"
        attainable = measured_matmul_flops(device, torch.float32)
    out = {
        "preset": args.preset, "device": str(device), "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "compile": args.compile,
        "batch": batch * args.grad_accum, "seq_len": seq_len, "params_in_matmuls": n,
        "flops_per_token": flops_per_token, "tokens_per_second": tokens / seconds,
        "achieved_tflops": achieved / 1e12, "peak_tflops": peak / 1e12, "peak": peak_how,
        "mfu": achieved / peak, "matmul_tflops": attainable / 1e12, "mfu_vs_matmul": achieved / attainable,
    }
    print(f"{args.preset} on {device}: {out['tokens_per_second']:,.0f} tokens/s | "
          f"{flops_per_token / 1e6:.2f} MFLOP/token (6N + 12 L d T, N={n:,}, T={seq_len}) | "
          f"{achieved / 1e9:,.1f} GFLOP/s | MFU {out['mfu']:.1%} of {peak / 1e9:,.0f} GFLOP/s ({peak_how}) | "
          f"{out['mfu_vs_matmul']:.1%} of a measured matmul's {attainable / 1e9:,.0f} GFLOP/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
