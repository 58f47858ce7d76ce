"""The course's one training loop: a model, a stream of batches, a loss function, AdamW on a schedule.

Every part trains through ``fit``: Part 2's pretraining (``insideout.gpt.train`` adds the data pipeline, DDP and
checkpoints around it), fine-tuning, reward models, the reasoning models and the diffusion models. What differs
between them is only the model, the batches and the loss, so those are the arguments:

* ``batches`` — any iterator; each item is the batch of one optimizer step (a tensor, a tuple or a dict of
  tensors), split into ``grad_accum`` equal micro-batches along its first dimension;
* ``loss_fn(model, micro_batch)`` — returns the mean loss of the micro-batch, or ``(loss, {name: value})`` to
  record more numbers per step;
* ``OptimConfig`` — AdamW's hyper-parameters and the learning-rate schedule (linear warmup, cosine decay).

The learning rate is a pure function of the step (``lr_at``), so a resumed run needs only the step number. Only
parameters with ``requires_grad`` are optimised (LoRA freezes the rest); weight decay applies to matrices only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from insideout.utils import DictConfig


def _check_number(owner: str, name: str, value, *, low: float | None = None, low_open: bool = False,
                  high: float | None = None, high_open: bool = False) -> None:
    """Raise a ValueError naming ``owner.name`` unless value is a finite real number within the bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name}={value!r}: must be a finite number")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{owner}.{name}={value!r}: must be {'>' if low_open else '>='} {low}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{owner}.{name}={value!r}: must be {'<' if high_open else '<='} {high}")


def _check_int(owner: str, name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}.{name}={value!r}: must be an integer >= {minimum}")


@dataclass
class OptimConfig(DictConfig):
    """AdamW and its learning-rate schedule: warmup to ``lr``, cosine to ``lr * min_lr_ratio`` at ``max_steps``."""

    max_steps: int = 100  # optimizer steps; also the length of the cosine schedule
    lr: float = 1e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio
    warmup_steps: int = 10
    weight_decay: float = 0.1  # applied to weight matrices only (see parameter_groups)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_int(owner, "max_steps", self.max_steps, minimum=1)
        _check_int(owner, "warmup_steps", self.warmup_steps, minimum=0)
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"{owner}.warmup_steps={self.warmup_steps} must be smaller than "
                             f"max_steps={self.max_steps}")
        _check_number(owner, "lr", self.lr, low=0.0, low_open=True)
        _check_number(owner, "min_lr_ratio", self.min_lr_ratio, low=0.0, high=1.0)
        _check_number(owner, "weight_decay", self.weight_decay, low=0.0)
        _check_number(owner, "beta1", self.beta1, low=0.0, high=1.0, high_open=True)
        _check_number(owner, "beta2", self.beta2, low=0.0, high=1.0, high_open=True)
        _check_number(owner, "eps", self.eps, low=0.0, low_open=True)
        _check_number(owner, "grad_clip", self.grad_clip, low=0.0)


def lr_at(step: int, config: OptimConfig) -> float:
    """Learning rate at a step: linear warmup to ``lr``, then a cosine down to ``lr * min_lr_ratio`` at max_steps."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    min_lr = config.lr * config.min_lr_ratio
    progress = min(1.0, (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - min_lr)


NO_DECAY_NAMES = ("tok_emb.weight", "pos_emb.weight")


def parameter_groups(model: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters that get weight decay (matrices) and those that do not.

    No decay on biases, LayerNorm gains/biases and embedding tables (the token embedding doubles as the tied LM
    head): decay pulls weights towards zero, which only makes sense for the matrices that mix features. Frozen
    parameters (``requires_grad=False``) are in neither list.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # a tied parameter appears once
        if not p.requires_grad:
            continue
        if p.dim() >= 2 and not name.endswith(NO_DECAY_NAMES) and "embedding" not in name:
            decay.append(name)
        else:
            no_decay.append(name)
    return decay, no_decay


def make_optimizer(model: torch.nn.Module, config: OptimConfig,
                   device: torch.device | str | None = None) -> torch.optim.AdamW:
    """AdamW over two groups (decay / no decay) of the trainable parameters; fused kernels on CUDA."""
    params = dict(model.named_parameters())
    decay, no_decay = parameter_groups(model)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (every requires_grad is False): nothing to train")
    groups = [
        {"params": [params[n] for n in decay], "weight_decay": config.weight_decay},
        {"params": [params[n] for n in no_decay], "weight_decay": 0.0},
    ]
    if device is None:
        device = next(model.parameters()).device
    extra = {"fused": True} if torch.device(device).type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr_at(0, config), betas=(config.beta1, config.beta2), eps=config.eps,
                             **extra)


# ---- batches -------------------------------------------------------------------------------------------------


Batch = Any  # a tensor, a tuple/list of tensors, or a dict of tensors (anything else is passed through whole)


def batch_size_of(batch: Batch) -> int:
    """The first dimension of the first tensor in a batch."""
    if torch.is_tensor(batch):
        return batch.shape[0]
    values = batch.values() if isinstance(batch, dict) else batch
    for value in values:
        if torch.is_tensor(value):
            return value.shape[0]
    raise ValueError(f"a batch of type {type(batch).__name__} holds no tensor: cannot tell its size")


def split_batch(batch: Batch, parts: int) -> list[Batch]:
    """``parts`` equal micro-batches along the first dimension (ValueError if the size does not divide)."""
    n = batch_size_of(batch)
    if n % parts:
        raise ValueError(f"a batch of {n} rows cannot be split into {parts} equal micro-batches: "
                         f"choose grad_accum among the divisors of {n}")
    if parts == 1:
        return [batch]
    if torch.is_tensor(batch):
        return list(batch.chunk(parts))
    if isinstance(batch, dict):
        chunks = {k: split_batch(v, parts) if torch.is_tensor(v) else [v] * parts for k, v in batch.items()}
        return [{k: chunks[k][i] for k in batch} for i in range(parts)]
    chunks = [split_batch(v, parts) if torch.is_tensor(v) else [v] * parts for v in batch]
    return [type(batch)(c[i] for c in chunks) for i in range(parts)]


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """Move every tensor of a batch to a device."""
    if torch.is_tensor(batch):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


LossFn = Callable[[torch.nn.Module, Batch], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]


def _loss_and_metrics(out) -> tuple[torch.Tensor, dict[str, Any]]:
    if isinstance(out, tuple):
        loss, metrics = out
        return loss, dict(metrics)
    return out, {}


def forward_backward(model: torch.nn.Module, batch: Batch, loss_fn: LossFn, micro_steps: int = 1, *,
                     autocast=nullcontext, no_sync=None) -> tuple[torch.Tensor, dict[str, float]]:
    """Accumulate the gradient of the mean loss over ``batch`` in ``micro_steps`` chunks; return loss and metrics.

    Each chunk's loss is divided by ``micro_steps``, so the summed gradient equals the gradient of the loss over the
    whole batch at once (the chunks have equal sizes and each loss is a mean over its chunk). ``no_sync`` (DDP's)
    skips the gradient all-reduce on all but the last chunk. Metrics are averaged over the chunks.
    """
    total = None
    sums: dict[str, float] = {}
    for i, chunk in enumerate(split_batch(batch, micro_steps)):
        sync = no_sync is None or i == micro_steps - 1
        with nullcontext() if sync else no_sync():
            with autocast():
                loss, metrics = _loss_and_metrics(loss_fn(model, chunk))
            if loss.dim() != 0:
                raise ValueError(f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)}")
            (loss / micro_steps).backward()
        total = loss.detach() if total is None else total + loss.detach()  # in the loss's own dtype
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + float(value) / micro_steps
    return total / micro_steps, sums


# ---- the loop ------------------------------------------------------------------------------------------------


@dataclass
class FitResult:
    """What ``fit`` returns: the step reached, the per-step history, the optimizer and the time spent."""

    step: int
    history: dict[str, list] = field(default_factory=dict)
    optimizer: torch.optim.Optimizer | None = None
    train_seconds: float = 0.0  # wall time in training steps (evaluation and callbacks excluded)
    items: int = 0  # rows (sequences, images, ...) processed by this call's steps, all processes

    @property
    def items_per_second(self) -> float:
        return self.items / self.train_seconds if self.train_seconds > 0 else float("nan")


def new_history() -> dict[str, list]:
    """Empty history: per step (step, lr, loss, grad_norm, metrics...), per evaluation (eval_step, eval values)."""
    return {"step": [], "lr": [], "loss": [], "grad_norm": [], "eval_step": []}


def fit(model: torch.nn.Module, batches: Iterator[Batch], loss_fn: LossFn, config: OptimConfig, *,
        optimizer: torch.optim.Optimizer | None = None, start_step: int = 0, stop_at: int | None = None,
        grad_accum: int = 1, eval_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        eval_every: int = 0, on_step: Callable[[int, dict[str, list]], None] | None = None,
        history: dict[str, list] | None = None, device: torch.device | str | None = None,
        train_model: torch.nn.Module | None = None, no_sync=None, autocast=nullcontext,
        progress: bool = False, log: Callable[[str], None] | None = None, desc: str = "training",
        on_nonfinite: str = "raise", clip_parameters: list[torch.nn.Parameter] | None = None) -> FitResult:
    """Train ``model`` from ``start_step`` up to ``stop_at`` (default ``config.max_steps``) on ``batches``.

    Per step: set the scheduled learning rate, take the next batch, accumulate gradients over ``grad_accum``
    micro-batches, clip the global gradient norm, step AdamW, record loss, gradient norm and the loss function's
    metrics. Every ``eval_every`` steps and at the end, ``eval_fn(model)`` (a dict of numbers) is recorded and,
    with ``log``, printed on one line. ``on_step(step, history)`` runs after each step (checkpointing).
    ``train_model`` is what the forward pass calls (a DDP or compiled wrapper of ``model``); the model is left in
    eval mode. A non-finite loss raises ``FloatingPointError`` (``on_nonfinite="raise"``) or, with ``"stop"``, ends
    the run there and records the step in ``history["diverged_at"]`` (for ablations that are meant to diverge).
    ``clip_parameters`` lists the parameters whose global gradient norm is clipped, in that order (default: the
    optimizer's, group by group); the order changes the last bits of the norm, so a caller that must reproduce an
    earlier loop bit for bit passes that loop's order (Part 2's pretraining: ``model.parameters()``).
    """
    from tqdm.auto import tqdm

    stop_at = config.max_steps if stop_at is None else stop_at
    if not 0 <= start_step <= stop_at <= config.max_steps:
        raise ValueError(f"steps: need 0 <= start_step ({start_step}) <= stop_at ({stop_at}) <= "
                         f"max_steps ({config.max_steps})")
    _check_int("fit", "grad_accum", grad_accum, minimum=1)
    _check_int("fit", "eval_every", eval_every, minimum=0)
    if on_nonfinite not in ("raise", "stop"):
        raise ValueError(f"on_nonfinite={on_nonfinite!r}: choose 'raise' or 'stop'")
    device = device if device is not None else next(model.parameters()).device
    optimizer = optimizer if optimizer is not None else make_optimizer(model, config, device)
    train_model = train_model if train_model is not None else model
    history = history if history is not None else new_history()
    params = (list(clip_parameters) if clip_parameters is not None
              else [p for group in optimizer.param_groups for p in group["params"]])
    world = dist.get_world_size() if dist.is_initialized() else 1
    result = FitResult(step=start_step, history=history, optimizer=optimizer)
    clip = config.grad_clip if config.grad_clip > 0 else float("inf")
    bar = tqdm(total=stop_at, initial=start_step, disable=not progress, desc=desc, unit="step")
    step = start_step
    model.train()
    try:
        while step < stop_at:
            t0 = time.perf_counter()
            lr = lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                batch = next(batches)
            except StopIteration:
                raise ValueError(f"the batch stream ended after {step} steps, before stop_at={stop_at}: give an "
                                 f"endless stream (or more data)") from None
            batch = to_device(batch, device)
            loss, metrics = forward_backward(train_model, batch, loss_fn, grad_accum, autocast=autocast,
                                             no_sync=no_sync)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if world > 1:
                dist.all_reduce(loss)
                loss /= world
            loss_value, norm_value = loss.item(), grad_norm.item()  # (synchronises a GPU, once per step)
            if not math.isfinite(loss_value):
                if on_nonfinite == "stop":
                    history["diverged_at"] = [step + 1]
                    break
                raise FloatingPointError(f"the loss became {loss_value} at step {step + 1}: lower the learning rate "
                                         f"(lr={config.lr}) or check the data")
            result.train_seconds += time.perf_counter() - t0
            result.items += batch_size_of(batch) * world
            step += 1
            for key, value in (("step", step), ("lr", lr), ("loss", loss_value), ("grad_norm", norm_value),
                               *metrics.items()):
                history.setdefault(key, []).append(value)
            bar.set_postfix(loss=f"{loss_value:.4f}", refresh=False)
            bar.update(1)
            if eval_fn is not None and (step == stop_at or (eval_every and step % eval_every == 0)):
                values = eval_fn(model)
                model.train()
                history.setdefault("eval_step", []).append(step)
                for key, value in values.items():
                    history.setdefault(key, []).append(value)
                if log is not None:
                    shown = " | ".join(f"{k} {v:.4f}" for k, v in values.items())
                    log(f"step {step:5d} | lr {lr:.2e} | train loss {loss_value:.4f} | {shown}")
            if on_step is not None:
                on_step(step, history)
    finally:
        bar.close()
        model.eval()
    result.step = step
    return result
