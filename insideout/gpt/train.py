"""Pretraining the GPT: the data streams, DDP, checkpoints and resume around the course's one loop, and the CLI.

The optimizer step itself — scheduled learning rate, gradient accumulation, clipping, AdamW, validation every
``eval_every`` steps — is ``insideout.training.fit``, the loop every part trains through. This module adds what
pretraining needs around it, one piece per function:

* ``pretraining_streams`` — the shuffled training ``BatchStream`` and the fixed validation batches of a source;
* ``train`` — a fresh (or resumed) model, DDP under ``torchrun``, checkpoints, then ``fit`` with the next-token
  loss ``lm_loss``; ``train_course_model`` runs a preset's configuration and caches the result;
* ``main`` — the command ``python -m insideout train``.

A step consumes one *global batch* of ``batch_size * grad_accum * world_size`` blocks from the shuffled stream;
process ``r`` takes its own contiguous slice and splits it into ``grad_accum`` micro-batches, each loss divided by
``grad_accum``; DDP averages the gradients over processes, so every configuration with the same global batch follows
the same trajectory up to float rounding. The learning rate is a pure function of the step (``lr_at``), so resuming
needs only the step number; a checkpoint (``insideout.gpt.checkpoint``) stores weights, AdamW moments, step, data
position and RNG state: on CPU a resumed run continues bit-identically.

On CUDA the loop uses bf16 autocast, fused AdamW, TF32 matmuls and (flag) ``torch.compile``; attention is always
``F.scaled_dot_product_attention`` (flash attention on GPUs that have it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist

from insideout import training
from insideout.gpt import presets
from insideout.gpt.config import TrainConfig
from insideout.gpt.model import GPT, GPTConfig
from insideout.gpt.tokenizer import TOKENIZERS, load_tokenizer, tokenizer_info
from insideout.training import lr_at, make_optimizer, parameter_groups

__all__ = [
    "TrainConfig", "TrainResult", "evaluate", "forward_backward", "init_model", "lm_loss", "lr_at", "main",
    "make_optimizer", "parameter_groups", "pretraining_streams", "tokenizer_info", "train", "train_course_model",
]


# ---- the pieces of a step ------------------------------------------------------------------------------------


def init_model(model_config: GPTConfig, seed: int) -> GPT:
    """A freshly initialised GPT; the same seed gives the same weights (the 'before training' model)."""
    torch.manual_seed(seed)
    return GPT(model_config)


def lm_loss(model: torch.nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of blocks ``rows`` (n, T + 1): inputs ``rows[:, :-1]``, targets ``rows[:, 1:]``."""
    return model(rows[:, :-1], rows[:, 1:])[1]


def forward_backward(model: torch.nn.Module, rows: torch.Tensor, micro_steps: int = 1, *,
                     autocast=nullcontext, no_sync=None) -> torch.Tensor:
    """Accumulate the gradient of the mean loss over ``rows`` (n, T+1) in ``micro_steps`` chunks; return the loss.

    ``insideout.training.forward_backward`` with the next-token loss: each chunk's mean loss is divided by
    ``micro_steps``, so the summed gradient equals the gradient of the loss over all rows at once (the chunks have
    equal sizes). ``no_sync`` (DDP's) skips the all-reduce on all but the last chunk.
    """
    loss, _ = training.forward_backward(model, rows, lm_loss, micro_steps, autocast=autocast, no_sync=no_sync)
    return loss


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


# ---- data ----------------------------------------------------------------------------------------------------


def pretraining_streams(config: TrainConfig, tokenizer, seq_len: int, *, world: int = 1,
                        data_state: dict[str, int] | None = None):
    """(training BatchStream of global batches, fixed validation micro-batches) of ``config.dataset``.

    The training stream yields ``batch_size * grad_accum * world`` blocks of ``seq_len + 1`` tokens per step,
    shuffled with ``config.seed``, starting at ``data_state`` (epoch, batches drawn) when resuming. The validation
    set is the first ``eval_batches`` global batches of the unshuffled validation stream, in micro-batches.
    """
    from insideout.gpt.data import BatchStream, fixed_batches, packed_dataset, text_dataset

    data_state = data_state or {"epoch": 0, "batches": 0}
    blocks = packed_dataset(
        text_dataset(config.dataset, "train", validation_documents=config.validation_documents), tokenizer,
        seq_len, shuffle_seed=config.seed, buffer_size=config.shuffle_buffer)
    stream = BatchStream(blocks, config.batch_size * config.grad_accum * world, epoch=data_state["epoch"],
                         batches=data_state["batches"], source=f"the training split of {config.dataset!r}")
    val_blocks = packed_dataset(
        text_dataset(config.dataset, "validation", validation_documents=config.validation_documents),
        tokenizer, seq_len)
    val_batches = fixed_batches(val_blocks, config.batch_size, config.eval_batches * config.grad_accum * world,
                                source=f"the validation split of {config.dataset!r}")
    return stream, val_batches


def _rank_slices(stream: Iterator[torch.Tensor], rank: int, per_rank: int) -> Iterator[torch.Tensor]:
    """This process's contiguous slice of every global batch."""
    for batch in stream:
        yield batch[rank * per_rank : (rank + 1) * per_rank]  # (per_rank, T + 1)


# ---- the run -------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What a run returns: the trained model, its history and throughput."""

    model: GPT
    model_config: GPTConfig
    config: TrainConfig
    tokenizer: object
    step: int
    history: dict[str, list] = field(default_factory=dict)
    data_state: dict[str, int] = field(default_factory=dict)
    train_seconds: float = 0.0  # wall time spent in training steps (validation and saving excluded)
    tokens_trained: int = 0  # tokens processed by the steps of this call (all processes)
    checkpoint: Path | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens_trained / self.train_seconds if self.train_seconds > 0 else float("nan")


HISTORY_KEYS = ("step", "lr", "loss", "grad_norm", "val_step", "val_loss")


def _new_history() -> dict[str, list]:
    return {key: [] for key in HISTORY_KEYS}


def _to_fit_history(history: dict[str, list]) -> dict[str, list]:
    """Pretraining's history (val_step, val_loss) as fit keeps it (eval_step and the eval_fn's key val_loss)."""
    out = {("eval_step" if k == "val_step" else k): list(v) for k, v in history.items()}
    out.setdefault("eval_step", [])
    out.setdefault("val_loss", [])
    return out


def _from_fit_history(history: dict[str, list]) -> dict[str, list]:
    out = {("val_step" if k == "eval_step" else k): v for k, v in history.items()}
    return {**{key: out.pop(key, []) for key in HISTORY_KEYS}, **out}


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


def check_writable(path: str | os.PathLike) -> Path:
    """Make sure a checkpoint can be written at ``path`` (its folder created), before any training time is spent."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"checkpoint path {path} is a folder: give a file name, e.g. "
                         f"{path / 'checkpoint.safetensors'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".{path.name}.{os.getpid()}.probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ValueError(f"cannot write a checkpoint at {path} ({exc.strerror or exc}): choose a folder you can "
                         f"write to, e.g. --out runs/mine") from exc
    return path


def _check_run(model_config: GPTConfig, config: TrainConfig, stop_at, tokenizer) -> tuple[int, int]:
    if not isinstance(model_config, GPTConfig) or not isinstance(config, TrainConfig):
        raise ValueError(f"train(model_config, config) takes a GPTConfig and a TrainConfig, got "
                         f"{type(model_config).__name__} and {type(config).__name__}")
    stop_at = config.max_steps if stop_at is None else stop_at
    if isinstance(stop_at, bool) or not isinstance(stop_at, int) or not 0 <= stop_at <= config.max_steps:
        raise ValueError(f"stop_at={stop_at}: must lie in [0, max_steps={config.max_steps}]")
    seq_len = config.seq_len or model_config.context_length
    if seq_len > model_config.context_length:
        raise ValueError(f"TrainConfig.seq_len={seq_len} exceeds the model's context_length="
                         f"{model_config.context_length}")
    if tokenizer.vocab_size > model_config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model only "
                         f"vocab_size={model_config.vocab_size}: raise GPTConfig.vocab_size")
    return stop_at, seq_len


def train(model_config: GPTConfig, config: TrainConfig, *, device: torch.device | str | None = None,
          tokenizer=None, checkpoint_path: str | os.PathLike | None = None,
          resume: str | os.PathLike | None = None, stop_at: int | None = None, progress: bool = True,
          verbose: bool = True) -> TrainResult:
    """Pretrain a GPT (from scratch, or resumed from a checkpoint) up to step ``stop_at`` (default max_steps).

    Saves to ``checkpoint_path`` every ``checkpoint_every`` steps and at the end (process 0 only; the path is
    checked for writing before training starts). Under torchrun it runs data-parallel; ``verbose`` prints one
    line per validation (deterministic, 4 decimals).
    """
    from insideout.gpt.checkpoint import check_resumable, read_checkpoint, restore_training_state, save_checkpoint

    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.tokenizer)
    stop_at, seq_len = _check_run(model_config, config, stop_at, tokenizer)
    ckpt = None
    if resume is not None:
        ckpt = read_checkpoint(resume)
        check_resumable(ckpt)
        saved = TrainConfig.from_dict(ckpt.meta["train_config"])
        if saved != config:
            raise ValueError(f"checkpoint {ckpt.path} was trained with {saved}, not {config}: resume with the "
                             f"checkpoint's own TrainConfig")
        if stop_at < ckpt.step:
            raise ValueError(f"stop_at={stop_at} is before the checkpoint's step {ckpt.step}")
    rank, world, device, own_group = _setup_distributed(device)
    if checkpoint_path is not None and rank == 0:
        checkpoint_path = check_writable(checkpoint_path)
    try:
        model = init_model(model_config, config.seed).to(device)
        optimizer = make_optimizer(model, config, device)
        history, step, data_state = _new_history(), 0, {"epoch": 0, "batches": 0}
        if ckpt is not None:
            restore_training_state(ckpt, model, optimizer)
            step, data_state = ckpt.step, ckpt.meta["data"]
            history = ckpt.meta.get("history") or _new_history()
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
        stream, val_batches = pretraining_streams(config, tokenizer, seq_len, world=world, data_state=data_state)
        per_rank = config.batch_size * config.grad_accum
        result = TrainResult(model=model, model_config=model_config, config=config, tokenizer=tokenizer, step=step)
        extra = {"train_config": config.to_dict(), "tokenizer": tokenizer_info(tokenizer)}
        log = print
        if progress and rank == 0:
            from tqdm.auto import tqdm

            log = tqdm.write

        def on_step(done: int, fit_history: dict[str, list]) -> None:
            if fit_history["eval_step"] and fit_history["eval_step"][-1] == done and verbose and rank == 0:
                log(f"step {done:5d} | lr {fit_history['lr'][-1]:.2e} | train loss {fit_history['loss'][-1]:.4f} "
                    f"| val loss {fit_history['val_loss'][-1]:.4f}")
            if checkpoint_path is not None and rank == 0 and (
                    done == stop_at or (config.checkpoint_every and done % config.checkpoint_every == 0)):
                result.checkpoint = save_checkpoint(checkpoint_path, model, optimizer=optimizer, step=done, extra={
                    **extra, "data": stream.state(), "history": _from_fit_history(fit_history)})

        fitted = training.fit(
            model, _rank_slices(stream, rank, per_rank), lm_loss, config, optimizer=optimizer, start_step=step,
            stop_at=stop_at, grad_accum=config.grad_accum, history=_to_fit_history(history), device=device,
            eval_fn=lambda m: {"val_loss": evaluate(m, val_batches, autocast=autocast, device=device)},
            eval_every=config.eval_every, on_step=on_step, train_model=train_model,
            no_sync=train_model.no_sync if world > 1 and hasattr(train_model, "no_sync") else None,
            autocast=autocast, progress=progress and rank == 0, clip_parameters=list(model.parameters()))
        result.step, result.history, result.data_state = fitted.step, _from_fit_history(fitted.history), stream.state()
        result.train_seconds = fitted.train_seconds
        result.tokens_trained = fitted.items * seq_len
        model.eval()
        return result
    finally:
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


def train_course_model(preset: str | None = None, device: torch.device | str | None = None, *,
                       progress: bool = False, verbose: bool = True) -> TrainResult:
    """Train the course model of a preset with its fixed configuration and save it where load_course_model looks."""
    from insideout.utils import get_preset

    preset = get_preset(preset)
    return train(presets.model_config(preset), presets.train_config(preset), device=device,
                 checkpoint_path=presets.checkpoint_path(preset), progress=progress, verbose=verbose)


# ---- the command ---------------------------------------------------------------------------------------------

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
    p.add_argument("--preset", default=None,
                   help=f"{' | '.join(presets.PRESET_NAMES)} (default: $INSIDEOUT_PRESET or cpu)")
    p.add_argument("--out", default=None, help="checkpoint folder: writes OUT/checkpoint.safetensors")
    p.add_argument("--resume", default=None, help="continue a run from this checkpoint (file or folder)")
    p.add_argument("--stop-at", type=int, default=None, help="stop after this step (default: --max-steps)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | mps (default: auto)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process, fixed for reproducibility (default 2; 1 under torchrun)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    g = p.add_argument_group("data and training (override the preset; not allowed with --resume)")
    g.add_argument("--data", default=None, help="shakespeare | fineweb | a local .parquet/.jsonl/.txt file")
    g.add_argument("--tokenizer", default=None, choices=TOKENIZERS)
    for flag, kind in (("seq-len", int), ("batch-size", int), ("grad-accum", int), ("max-steps", int),
                       ("lr", float), ("warmup-steps", int), ("weight-decay", float), ("grad-clip", float),
                       ("eval-every", int), ("eval-batches", int), ("checkpoint-every", int), ("seed", int),
                       ("validation-documents", int)):
        g.add_argument(f"--{flag}", type=kind, default=None)
    g.add_argument("--compile", action="store_const", const=True, default=None, help="torch.compile the model")
    m = p.add_argument_group("model shape (override the preset; not allowed with --resume; d_ff stays 4 x d_model)")
    for flag in ("context-length", "d-model", "n-layer", "n-head"):
        m.add_argument(f"--{flag}", type=int, default=None)
    return p


def _configs_from_args(args: argparse.Namespace) -> tuple[GPTConfig, TrainConfig]:
    from insideout.utils import get_preset

    preset = get_preset(args.preset)
    mc = presets.model_config(preset)
    tc = presets.train_config(preset)
    model_over = {k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k) is not None}
    train_over = {f: getattr(args, a) for a, f in _TRAIN_FLAGS.items() if getattr(args, a) is not None}
    if "tokenizer" in train_over and train_over["tokenizer"] != tc.tokenizer:
        model_over["vocab_size"] = load_tokenizer(train_over["tokenizer"]).vocab_size
    if model_over:
        mc = GPTConfig.from_dict({**mc.to_dict(), **model_over})  # a derived d_ff is derived again
    if train_over:
        steps = train_over.get("max_steps")
        if (isinstance(steps, int) and steps > 0 and "warmup_steps" not in train_over
                and tc.warmup_steps >= steps):
            train_over["warmup_steps"] = steps // 10  # keep the preset's warmup unless the run is shorter
        tc = replace(tc, **train_over)
    return mc, tc


def main(argv: list[str] | None = None) -> int:
    """``python -m insideout train``: returns the exit status."""
    from insideout.gpt.checkpoint import check_resumable, read_checkpoint
    from insideout.utils import seed_everything

    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
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
            check_resumable(ckpt)
            mc, tc = ckpt.model_config, TrainConfig.from_dict(ckpt.meta["train_config"])
        else:
            mc, tc = _configs_from_args(args)
        out = Path(args.out) / "checkpoint.safetensors" if args.out else resume
        if out is not None and rank == 0:
            check_writable(out)  # before training, not after
        if rank == 0:
            print(f"model: {mc}\ntraining: {tc}\ncheckpoint: {out}", flush=True)
        result = train(mc, tc, device=args.device, checkpoint_path=out, resume=resume, stop_at=args.stop_at,
                       progress=not args.no_progress)
    except (ValueError, FileNotFoundError, RuntimeError, FloatingPointError) as exc:
        # RuntimeError: GPT-2 ranks missing offline; FloatingPointError: the loss diverged
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if rank == 0:
        print(f"done: step {result.step}, {result.tokens_per_second:,.0f} tokens/s, checkpoint {result.checkpoint}")
    return 0
