"""Training the GPT: AdamW with decay groups, warmup + cosine, clipping, accumulation, validation, checkpoints, DDP.

One loop serves the book, the command ``python -m insideout train`` and ``torchrun --nproc_per_node=N``:

* a step consumes one *global batch* of ``batch_size * grad_accum * world_size`` blocks from the shuffled stream;
  process ``r`` takes its own contiguous slice and splits it into ``grad_accum`` micro-batches, each loss divided
  by ``grad_accum``; DDP averages the gradients over processes, so every configuration with the same global batch
  follows the same trajectory up to float rounding;
* the learning rate is a pure function of the step (``lr_at``), so resuming needs only the step number;
* a checkpoint (``insideout.gpt.checkpoint``) stores weights, AdamW moments, step, data position and RNG state:
  on CPU a resumed run continues bit-identically.

On CUDA the loop uses bf16 autocast, fused AdamW, TF32 matmuls and (flag) ``torch.compile``; attention is always
``F.scaled_dot_product_attention`` (flash attention on GPUs that have it).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from insideout.gpt.checkpoint import read_checkpoint, restore_training_state, save_checkpoint
from insideout.gpt.data import (
    BatchStream,
    TokenizerLike,
    fixed_batches,
    load_tokenizer,
    packed_dataset,
    text_dataset,
)
from insideout.gpt.model import GPT, GPTConfig
from insideout.utils import DictConfig


@dataclass
class TrainConfig(DictConfig):
    """Hyper-parameters of a training run. Validated on construction."""

    dataset: str = "shakespeare"  # shakespeare | fineweb | a local .parquet/.jsonl/.txt file
    tokenizer: str = "course"  # course | gpt2
    seq_len: int | None = None  # tokens per training sequence; None = the model's context_length
    batch_size: int = 8  # sequences per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 520  # optimizer steps; also the length of the cosine schedule
    lr: float = 2e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    warmup_steps: int = 40
    weight_decay: float = 0.1  # applied to the weight matrices of Linear layers only
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    eval_every: int = 65  # validate every this many steps (and at the end); 0 = only at the end
    eval_batches: int = 8  # validation set size in global batches (the first ones of the unshuffled stream)
    shuffle_buffer: int = 1024  # blocks in the shuffle buffer
    validation_documents: int = 100  # documents held out from FineWeb / a local file
    seed: int = 0  # initial weights and data order
    checkpoint_every: int = 0  # also save every this many steps (0 = only at the end)
    compile: bool = False  # torch.compile the model
    autocast: bool = True  # bf16 autocast on CUDA (ignored on CPU, where training stays float32)

    def __post_init__(self) -> None:
        positive = ("batch_size", "grad_accum", "max_steps", "eval_batches", "shuffle_buffer", "validation_documents")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name}={value!r}: must be a positive integer")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"TrainConfig.{name}={value!r}: must be an integer >= 0")
        if self.seq_len is not None and (not isinstance(self.seq_len, int) or self.seq_len < 1):
            raise ValueError(f"TrainConfig.seq_len={self.seq_len!r}: must be a positive integer or None")
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"TrainConfig.warmup_steps={self.warmup_steps} must be smaller than "
                             f"max_steps={self.max_steps}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr={self.lr!r}: must be a finite number > 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"TrainConfig.min_lr_ratio={self.min_lr_ratio!r}: must be in [0, 1]")
        if self.weight_decay < 0 or self.grad_clip < 0 or self.eps <= 0:
            raise ValueError("TrainConfig.weight_decay and grad_clip must be >= 0 and eps > 0")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}: must be in [0, 1)")
        if self.tokenizer not in ("course", "gpt2"):
            raise ValueError(f"TrainConfig.tokenizer={self.tokenizer!r}: choose 'course' or 'gpt2'")


# ---- the pieces of the loop ----------------------------------------------------------------------------


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate at a step: linear warmup to ``lr``, then a cosine down to ``lr * min_lr_ratio`` at max_steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    min_lr = config.lr * config.min_lr_ratio
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - min_lr)


def parameter_groups(model: GPT) -> tuple[list[str], list[str]]:
    """Names of the parameters that get weight decay (Linear weight matrices) and those that do not.

    No decay on biases, LayerNorm gains/biases and the embeddings (the token embedding doubles as the tied
    LM head): decay pulls weights towards zero, which only makes sense for the matrices that mix features.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # the tied lm_head.weight appears once, as tok_emb.weight
        if p.dim() >= 2 and name not in ("tok_emb.weight", "pos_emb.weight"):
            decay.append(name)
        else:
            no_decay.append(name)
    return decay, no_decay


def make_optimizer(model: GPT, config: TrainConfig, device: torch.device | None = None) -> torch.optim.AdamW:
    """AdamW over two groups (decay / no decay); fused kernels on CUDA."""
    params = dict(model.named_parameters())
    decay, no_decay = parameter_groups(model)
    groups = [
        {"params": [params[n] for n in decay], "weight_decay": config.weight_decay},
        {"params": [params[n] for n in no_decay], "weight_decay": 0.0},
    ]
    device = device if device is not None else next(model.parameters()).device
    extra = {"fused": True} if torch.device(device).type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr_at(0, config), betas=(config.beta1, config.beta2), eps=config.eps,
                             **extra)


def init_model(model_config: GPTConfig, seed: int) -> GPT:
    """A freshly initialised GPT; the same seed gives the same weights (the 'before training' model)."""
    torch.manual_seed(seed)
    return GPT(model_config)


def forward_backward(model: torch.nn.Module, rows: torch.Tensor, micro_steps: int = 1, *,
                     autocast=nullcontext, no_sync=None) -> torch.Tensor:
    """Accumulate the gradient of the mean loss over ``rows`` (n, T+1) in ``micro_steps`` chunks; return the loss.

    Each chunk's mean loss is divided by ``micro_steps``, so the summed gradient equals the gradient of the loss
    over all rows at once (the chunks have equal sizes). ``no_sync`` (DDP's) skips the all-reduce on all but the
    last chunk.
    """
    if rows.shape[0] % micro_steps:
        raise ValueError(f"{rows.shape[0]} rows cannot be split into {micro_steps} equal micro-batches")
    total = None
    for i, chunk in enumerate(rows.chunk(micro_steps)):  # each (n / micro_steps, T+1)
        sync = no_sync is None or i == micro_steps - 1
        with nullcontext() if sync else no_sync():
            with autocast():
                _, loss = model(chunk[:, :-1], chunk[:, 1:])
            (loss / micro_steps).backward()
        total = loss.detach() if total is None else total + loss.detach()  # in the loss's own dtype
    return total / micro_steps


@torch.no_grad()
def evaluate(model: GPT, batches: list[torch.Tensor], *, autocast=nullcontext, device=None) -> float:
    """Mean next-token loss (nats/token) over fixed batches; under DDP each process takes its share."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    was_training = model.training
    model.eval()
    device = device if device is not None else next(model.parameters()).device
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # (loss sum, token count)
    for batch in batches[rank::world]:
        batch = batch.to(device)
        with autocast():
            _, loss = model(batch[:, :-1], batch[:, 1:])
        n = batch[:, 1:].numel()
        sums += torch.tensor([loss.double().item() * n, n], dtype=torch.float64, device=device)
    if world > 1:
        dist.all_reduce(sums)
    model.train(was_training)
    return float(sums[0] / sums[1])


def tokenizer_info(tokenizer: TokenizerLike) -> dict[str, Any]:
    """Name, sizes and a fingerprint of every token's bytes: a checkpoint only fits the tokenizer it was made with."""
    h = hashlib.sha256()
    encoding = getattr(tokenizer, "encoding", None)
    for i in range(tokenizer.vocab_size):
        if encoding is not None:
            try:
                piece = encoding.decode_single_token_bytes(i)
            except KeyError:
                piece = b"<unused>"
        else:
            piece = tokenizer.decode([i]).encode("utf-8", "surrogatepass")
        h.update(len(piece).to_bytes(4, "little") + piece)
    return {"name": getattr(tokenizer, "name", type(tokenizer).__name__), "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id, "sha256": h.hexdigest()}


# ---- the loop ------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a run returns: the trained model, its history and throughput."""

    model: GPT
    model_config: GPTConfig
    config: TrainConfig
    tokenizer: TokenizerLike
    step: int
    history: dict[str, list] = field(default_factory=dict)
    data_state: dict[str, int] = field(default_factory=dict)
    train_seconds: float = 0.0  # wall time spent in training steps (validation and saving excluded)
    tokens_trained: int = 0  # tokens processed by the steps of this call (all processes)
    checkpoint: Path | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_trained / self.train_seconds if self.train_seconds > 0 else float("nan")


def _new_history() -> dict[str, list]:
    return {"step": [], "lr": [], "loss": [], "grad_norm": [], "val_step": [], "val_loss": []}


def _setup_distributed(device: torch.device | str | None) -> tuple[int, int, torch.device, bool]:
    """(rank, world_size, device, we_initialised) — from torchrun's environment, or a single process."""
    from insideout.utils import get_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, get_device(None if device is None else str(device)), False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    kind = get_device(None if device is None else str(device)).type
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        chosen = torch.device(f"cuda:{local_rank}")
    else:
        chosen = torch.device(kind)
    initialised = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if kind == "cuda" else "gloo")
        initialised = True
    return dist.get_rank(), dist.get_world_size(), chosen, initialised


def train(model_config: GPTConfig, config: TrainConfig, *, device: torch.device | str | None = None,
          tokenizer: TokenizerLike | None = None, checkpoint_path: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, stop_at: int | None = None, progress: bool = True,
          verbose: bool = True) -> TrainResult:
    """Train a GPT (from scratch, or resumed from a checkpoint) up to step ``stop_at`` (default max_steps).

    Saves to ``checkpoint_path`` every ``checkpoint_every`` steps and at the end (process 0 only). Under torchrun
    it runs data-parallel; ``verbose`` prints one line per validation (deterministic, 4 decimals).
    """
    stop_at = config.max_steps if stop_at is None else stop_at
    if not 0 <= stop_at <= config.max_steps:
        raise ValueError(f"stop_at={stop_at}: must lie in [0, max_steps={config.max_steps}]")
    seq_len = config.seq_len or model_config.context_length
    if seq_len > model_config.context_length:
        raise ValueError(f"TrainConfig.seq_len={seq_len} exceeds the model's context_length="
                         f"{model_config.context_length}")
    rank, world, device, own_group = _setup_distributed(device)
    try:
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.tokenizer)
        if tokenizer.vocab_size > model_config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                             f"vocab_size={model_config.vocab_size}: raise GPTConfig.vocab_size")
        model = init_model(model_config, config.seed).to(device)
        optimizer = make_optimizer(model, config, device)
        history, step, data_state = _new_history(), 0, {"epoch": 0, "batches": 0}
        if resume is not None:
            ckpt = read_checkpoint(resume)
            saved = TrainConfig.from_dict(ckpt.meta.get("train_config", {}))
            if saved != config:
                raise ValueError(f"checkpoint {ckpt.path} was trained with {saved}, not {config}: resume with the "
                                 f"checkpoint's own TrainConfig")
            restore_training_state(ckpt, model, optimizer)
            step, data_state = ckpt.step, ckpt.meta["data"]
            history = ckpt.meta.get("history", _new_history())
            if stop_at < step:
                raise ValueError(f"stop_at={stop_at} is before the checkpoint's step {step}")
        cuda = device.type == "cuda"
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        autocast = ((lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cuda and config.autocast
                    else nullcontext)
        train_model: torch.nn.Module = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            train_model = DDP(model, device_ids=[device.index] if cuda else None)
        if config.compile:
            train_model = torch.compile(train_model)

        blocks = packed_dataset(
            text_dataset(config.dataset, "train", validation_documents=config.validation_documents), tokenizer,
            seq_len, shuffle_seed=config.seed, buffer_size=config.shuffle_buffer)
        per_rank = config.batch_size * config.grad_accum
        stream = BatchStream(blocks, per_rank * world, epoch=data_state["epoch"], batches=data_state["batches"],
                             source=f"the training split of {config.dataset!r}")
        val_blocks = packed_dataset(
            text_dataset(config.dataset, "validation", validation_documents=config.validation_documents),
            tokenizer, seq_len)
        # the validation set: the first eval_batches global batches of the unshuffled stream, in micro-batches
        val_batches = fixed_batches(val_blocks, config.batch_size, config.eval_batches * config.grad_accum * world,
                                    source=f"the validation split of {config.dataset!r}")
        no_sync = train_model.no_sync if world > 1 and hasattr(train_model, "no_sync") else None
        log = tqdm.write if progress and rank == 0 else print
        result = TrainResult(model=model, model_config=model_config, config=config, tokenizer=tokenizer, step=step,
                             history=history)
        extra = {"train_config": config.to_dict(), "tokenizer": tokenizer_info(tokenizer)}

        def save(path: str | os.PathLike) -> Path:
            return save_checkpoint(path, model, optimizer=optimizer, step=step,
                                   extra={**extra, "data": stream.state(), "history": history})

        bar = tqdm(total=stop_at, initial=step, disable=not progress or rank != 0, desc="training", unit="step")
        model.train()
        while step < stop_at:
            t0 = time.perf_counter()
            lr = lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            rows = next(stream)[rank * per_rank : (rank + 1) * per_rank].to(device)  # (per_rank, T+1)
            loss = forward_backward(train_model, rows, config.grad_accum, autocast=autocast, no_sync=no_sync)
            clip = config.grad_clip if config.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if world > 1:
                dist.all_reduce(loss)
                loss /= world
            loss_value, norm_value = loss.item(), grad_norm.item()  # (synchronises a GPU, once per step)
            result.train_seconds += time.perf_counter() - t0
            result.tokens_trained += rows[:, 1:].numel() * world
            step += 1
            for key, value in (("step", step), ("lr", lr), ("loss", loss_value), ("grad_norm", norm_value)):
                history[key].append(value)
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            bar.update(1)
            if step == stop_at or (config.eval_every and step % config.eval_every == 0):
                val = evaluate(model, val_batches, autocast=autocast, device=device)
                history["val_step"].append(step)
                history["val_loss"].append(val)
                if verbose and rank == 0:
                    log(f"step {step:5d} | lr {lr:.2e} | train loss {loss_value:.4f} | val loss {val:.4f}")
            if checkpoint_path is not None and rank == 0 and (
                    step == stop_at or (config.checkpoint_every and step % config.checkpoint_every == 0)):
                result.checkpoint = save(checkpoint_path)
        bar.close()
        result.step, result.data_state = step, stream.state()
        model.eval()
        return result
    finally:
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


def train_course_model(preset: str | None = None, device: torch.device | str | None = None, *,
                       progress: bool = False, verbose: bool = True) -> TrainResult:
    """Train the course model of a preset with its fixed configuration and save it where load_course_model looks."""
    from insideout.gpt.presets import checkpoint_path, model_config, train_config
    from insideout.utils import get_preset

    preset = get_preset(preset)
    return train(model_config(preset), train_config(preset), device=device, checkpoint_path=checkpoint_path(preset),
                 progress=progress, verbose=verbose)


# ---- the command ---------------------------------------------------------------------------------------

_MODEL_FLAGS = ("context_length", "d_model", "n_layer", "n_head")
_TRAIN_FLAGS = {  # flag dest -> TrainConfig field
    "data": "dataset", "tokenizer": "tokenizer", "seq_len": "seq_len", "batch_size": "batch_size",
    "grad_accum": "grad_accum", "max_steps": "max_steps", "lr": "lr", "warmup_steps": "warmup_steps",
    "weight_decay": "weight_decay", "grad_clip": "grad_clip", "eval_every": "eval_every",
    "eval_batches": "eval_batches", "checkpoint_every": "checkpoint_every", "seed": "seed",
    "validation_documents": "validation_documents", "compile": "compile",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m insideout train",
        description="Train the course GPT. Under `torchrun --nproc_per_node=N` the same command runs data-parallel.",
    )
    p.add_argument("--preset", default=None, help="cpu | gpu | gpt2-small (default: $INSIDEOUT_PRESET or cpu)")
    p.add_argument("--out", default=None, help="checkpoint folder: writes OUT/checkpoint.safetensors")
    p.add_argument("--resume", default=None, help="continue a run from this checkpoint (file or folder)")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this step (default: --max-steps)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps (default: auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process, fixed for reproducibility (default 2; 1 under torchrun)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    g = p.add_argument_group("data and training (override the preset; not allowed with --resume)")
    g.add_argument("--data", default=None, help="shakespeare | fineweb | a local .parquet/.jsonl/.txt file")
    g.add_argument("--tokenizer", default=None, choices=("course", "gpt2"))
    for flag, kind in (("seq-len", int), ("batch-size", int), ("grad-accum", int), ("max-steps", int),
                       ("lr", float), ("warmup-steps", int), ("weight-decay", float), ("grad-clip", float),
                       ("eval-every", int), ("eval-batches", int), ("checkpoint-every", int), ("seed", int),
                       ("validation-documents", int)):
        g.add_argument(f"--{flag}", type=kind, default=None)
    g.add_argument("--compile", action="store_const", const=True, default=None, help="torch.compile the model")
    m = p.add_argument_group("model shape (override the preset; not allowed with --resume)")
    for flag in ("context-length", "d-model", "n-layer", "n-head"):
        m.add_argument(f"--{flag}", type=int, default=None)
    return p


def _configs_from_args(args: argparse.Namespace) -> tuple[GPTConfig, TrainConfig]:
    from insideout.gpt.presets import PRESET_NAMES, model_config, train_config
    from insideout.utils import get_preset

    preset = args.preset if args.preset in PRESET_NAMES else get_preset(args.preset)
    mc = model_config(preset)
    tc = train_config(preset)
    model_over = {k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k) is not None}
    train_over = {f: getattr(args, a) for a, f in _TRAIN_FLAGS.items() if getattr(args, a) is not None}
    if "tokenizer" in train_over and train_over["tokenizer"] != tc.tokenizer:
        model_over["vocab_size"] = load_tokenizer(train_over["tokenizer"]).vocab_size
    if model_over:
        mc = GPTConfig.from_dict({**mc.to_dict(), **model_over})
    if train_over:
        steps = train_over.get("max_steps")
        if steps is not None and "warmup_steps" not in train_over and tc.warmup_steps >= steps:
            train_over["warmup_steps"] = steps // 10  # keep the preset's warmup unless the run is shorter
        tc = replace(tc, **train_over)
    return mc, tc


def main(argv: list[str] | None = None) -> int:
    """``python -m insideout train``: returns the exit status."""
    args = build_parser().parse_args(argv)
    from insideout.utils import seed_everything

    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        seed_everything(0, threads=args.threads if args.threads is not None else (2 if world == 1 else 1))
        resume = None
        if args.resume is not None:
            resume = Path(args.resume)
            resume = resume / "checkpoint.safetensors" if resume.is_dir() else resume
            overridden = [a for a in (*_MODEL_FLAGS, *_TRAIN_FLAGS) if getattr(args, a) is not None]
            if overridden or args.preset is not None:
                raise ValueError(f"--resume takes the configuration from the checkpoint; drop "
                                 f"{', '.join('--' + a.replace('_', '-') for a in overridden or ['preset'])}")
            ckpt = read_checkpoint(resume)
            mc, tc = ckpt.model_config, TrainConfig.from_dict(ckpt.meta["train_config"])
        else:
            mc, tc = _configs_from_args(args)
        out = Path(args.out) / "checkpoint.safetensors" if args.out else resume
        rank = int(os.environ.get("RANK", "0"))
        if rank == 0:
            print(f"model: {mc}\ntraining: {tc}\ncheckpoint: {out}", flush=True)
        result = train(mc, tc, device=args.device, checkpoint_path=out, resume=resume, stop_at=args.stop_at,
                       progress=not args.no_progress)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:  # RuntimeError: GPT-2 ranks missing offline
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if rank == 0:
        print(f"done: step {result.step}, {result.tokens_per_second:,.0f} tokens/s, checkpoint {result.checkpoint}")
    return 0
