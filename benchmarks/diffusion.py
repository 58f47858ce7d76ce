"""Part 5's throughput: training images per second and sampling milliseconds per image of each image model.

    python benchmarks/diffusion.py                 # the cpu preset's models, 2 threads and 1 thread
    python benchmarks/diffusion.py --preset gpu --device cuda

What is timed: one optimizer step of ``insideout.training.fit``'s own code (forward, backward, clipping, AdamW) on
a batch of the recipe's size drawn from its training stream, after two warm-up steps; and guided sampling of a
batch with 16 Euler steps (two network evaluations per step; the latent model includes decoding). Reported per
model: wall seconds and CPU seconds (``time.process_time``, all threads together), so that runs on a loaded
machine can still be compared: on a quiet machine the wall time is the number to read. Results go to
``benchmarks/results/diffusion_<preset>_<threads>threads.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from insideout.diffusion import train as T
from insideout.diffusion.data import make_shapes
from insideout.diffusion.pipeline import generate
from insideout.training import make_optimizer
from insideout.utils import fix_threads, get_device

MODELS = ("unet", "dit", "text-dit", "vae-0.001", "latent-text-dit", "features")


def time_training(name: str, preset: str, device, steps: int = 5) -> dict:
    recipe = T.recipe(name, preset)
    torch.manual_seed(0)
    model = T.build(recipe).to(device)
    stream = T.batch_stream(T.training_tensors(recipe), recipe.batch_size, 0)
    loss_fn = T.loss_for(recipe)
    opt = make_optimizer(model, recipe.optim_config, device)
    model.train()
    wall = cpu = 0.0
    for i in range(steps + 2):
        batch = {k: v.to(device) for k, v in next(stream).items()}
        w0, c0 = time.perf_counter(), time.process_time()
        out = loss_fn(model, batch)
        loss = out[0] if isinstance(out, tuple) else out
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            wall += time.perf_counter() - w0
            cpu += time.process_time() - c0
    n = steps * recipe.batch_size
    return {"model": name, "parameters": sum(p.numel() for p in model.parameters()), "batch": recipe.batch_size,
            "train_images_per_s_wall": n / wall, "train_images_per_cpu_s": n / cpu}


def time_sampling(name: str, preset: str, n: int = 100) -> dict:
    recipe = T.recipe(name, preset)
    model, _ = T.train(recipe, log=None)
    kw = {}
    if recipe.latent is not None:
        vae, meta = T.train(T.Recipe.from_dict(recipe.latent), log=None)
        kw = {"vae": vae, "latent_scale": meta["scale"]}
    if recipe.arch == "text-dit":
        kw["captions"] = make_shapes(n, "mixed", "test", seed=1).captions
        kw["guidance"] = 3.0
    timing: dict = {}
    generate(model, n, steps=16, seed=0, timing=timing, **kw)
    return {"sample_ms_per_image_wall": 1000 * timing["wall_seconds"] / n,
            "sample_cpu_ms_per_image": 1000 * timing["cpu_seconds"] / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, nargs="*", default=[2, 1])
    parser.add_argument("--sample", action="store_true", help="also time sampling (trains missing models first)")
    args = parser.parse_args()
    device = get_device(args.device)
    out_dir = Path(__file__).resolve().parent / "results"
    out_dir.mkdir(exist_ok=True)
    for threads in args.threads:
        fix_threads(threads)
        rows = []
        for name in MODELS:
            row = time_training(name, args.preset, device)
            if args.sample and name not in ("vae-0.001", "features"):
                row.update(time_sampling(name, args.preset))
            rows.append(row)
            print(json.dumps(row))
        record = {"preset": args.preset, "device": str(device), "threads": threads, "torch": torch.__version__,
                  "cpu": platform.processor() or platform.machine(), "load_average": os.getloadavg(),
                  "rows": rows}
        path = out_dir / f"diffusion_{args.preset}_{threads}threads.json"
        path.write_text(json.dumps(record, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
