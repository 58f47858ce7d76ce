"""Throughput of Part 3's training steps and sampling on the preset's model shape (random weights).

    python benchmarks/finetune.py --preset cpu --threads 1     # CPU seconds on one thread (a loaded machine)
    python benchmarks/finetune.py --preset cpu --threads 2     # the book's setting

What is timed (best of ``--repeats`` after a warm-up; wall clock and the process's CPU time):

* one SFT optimizer step of the shared ``fit`` loop on a batch of instruction examples: full fine-tuning and LoRA
  (rank 16 on every block's linear layers, embedding trainable), the per-step time and trained tokens per second;
* batched sampling of the chat prompts with the KV-cache (``insideout.finetune.generation.sample``): generated
  tokens per second at several batch sizes, no stop token, so every row runs the full length.

The results are written to ``benchmarks/results/finetune_<preset>_<threads>threads.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from insideout.finetune import tasks as T
from insideout.finetune.chat import add_chat_tokens, chat_tokenizer
from insideout.finetune.generation import sample
from insideout.finetune.lora import apply_lora, train_new_token_rows
from insideout.finetune.recipes import recipe
from insideout.finetune.sft import encode_examples, lm_loss, make_batch
from insideout.gpt.model import GPT
from insideout.gpt.presets import model_config
from insideout.training import OptimConfig, fit
from insideout.utils import seed_everything


def timed(fn, repeats: int) -> dict[str, float]:
    fn()  # warm-up
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best_wall, best_cpu = min(best_wall, time.perf_counter() - wall), min(best_cpu, time.process_time() - cpu)
    return {"wall_s": best_wall, "cpu_s": best_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=("cpu", "gpu"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    seed_everything(0, threads=args.threads)
    chat = chat_tokenizer()
    r = recipe(args.preset)
    base = GPT(model_config(args.preset)).eval()
    examples = encode_examples(T.instruction_dataset(64, seed=0), chat)
    batch = make_batch(examples[: r.sft.batch_size], chat, mask_prompt=True)
    tokens = int((batch["ids"] != chat.eot_id).sum())
    results: dict = {"preset": args.preset, "threads": args.threads, "batch_size": r.sft.batch_size,
                     "tokens_per_batch": tokens, "torch": torch.__version__}

    for name in ("full", "lora"):
        model = add_chat_tokens(base, chat)
        if name == "lora":
            apply_lora(model, r.lora_rank, r.lora_alpha)
            train_new_token_rows(model, chat.vocab_size - chat.base_vocab_size)
        steps = OptimConfig(max_steps=1000, warmup_steps=1)
        state = {"step": 0}

        def one_step(model=model, steps=steps, state=state):
            fit(model, iter([batch]), lm_loss, steps, start_step=state["step"], stop_at=state["step"] + 1)
            state["step"] += 1

        t = timed(one_step, args.repeats)
        results[f"sft_step_{name}"] = {**t, "tokens_per_s": tokens / t["wall_s"]}
        print(f"SFT step ({name}): {t['cpu_s']:.3f} s CPU, {t['wall_s']:.3f} s wall, "
              f"{tokens / t['wall_s']:,.0f} tokens/s")

    model = add_chat_tokens(base, chat)
    prompts = [chat.prompt(p["instruction"]) for p in T.make_prompts(64, seed=1)]
    for batch_rows in (16, 64, 256):
        chosen = [prompts[i % len(prompts)] for i in range(batch_rows)]
        n_new = 24

        def run(chosen=chosen, n_new=n_new):
            sample(model, chosen, n_new, generator=torch.Generator().manual_seed(0))

        t = timed(run, args.repeats)
        results[f"sample_batch_{batch_rows}"] = {**t, "tokens_per_s": batch_rows * n_new / t["wall_s"]}
        print(f"sampling {batch_rows} prompts x {n_new} tokens: {t['cpu_s']:.3f} s CPU, {t['wall_s']:.3f} s wall, "
              f"{batch_rows * n_new / t['wall_s']:,.0f} tokens/s")

    out = Path(__file__).parent / "results" / f"finetune_{args.preset}_{args.threads}threads.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
