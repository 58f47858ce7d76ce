"""Training checkpoints as one safetensors file, written atomically; never pickle.

Tensors: ``model.<name>`` (the tied LM head is stored once, as ``model.tok_emb.weight``), ``optimizer.<i>.<key>``
(AdamW's per-parameter state), ``rng.torch_cpu`` (torch's CPU generator state, uint8) and ``rng.cuda.<d>``.
Metadata (strings): the model config, training config, step, data position, optimizer hyper-parameters, history
and tokenizer fingerprint as JSON. Everything a run needs to continue bit-identically is in the file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from insideout.gpt.model import GPT, GPTConfig

FORMAT = "insideout-gpt-checkpoint/1"


@dataclass
class Checkpoint:
    """What a checkpoint file holds, read back: tensors by name plus the decoded metadata."""

    path: Path
    model_config: GPTConfig
    step: int
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k.removeprefix("model."): v for k, v in self.tensors.items() if k.startswith("model.")}


def _unwrap(model: torch.nn.Module) -> GPT:
    """The GPT inside DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    if not isinstance(model, GPT):
        raise TypeError(f"expected a GPT (possibly wrapped), got {type(model).__name__}")
    return model


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, *, optimizer: torch.optim.Optimizer | None = None,
                    step: int = 0, extra: dict[str, Any] | None = None) -> Path:
    """Write model (+ optimizer, RNG) state and JSON metadata to ``path`` via a temporary file and os.replace."""
    gpt = _unwrap(model)
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in gpt.state_dict().items():
        if name == "lm_head.weight" and gpt.config.tie_weights:
            continue  # the same storage as tok_emb.weight; safetensors refuses shared tensors
        tensors[f"model.{name}"] = tensor.detach().cpu().contiguous()
    meta: dict[str, Any] = {"format": FORMAT, "model_config": gpt.config.to_dict(), "step": step}
    if optimizer is not None:
        opt_state = optimizer.state_dict()
        for index, state in opt_state["state"].items():
            for key, value in state.items():
                if not torch.is_tensor(value):
                    raise TypeError(f"optimizer state {index}.{key} is not a tensor: cannot store it without pickle")
                tensors[f"optimizer.{index}.{key}"] = value.detach().cpu().contiguous()
        meta["optimizer"] = {"type": type(optimizer).__name__, "param_groups": opt_state["param_groups"]}
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for d, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{d}"] = state
    meta.update(extra or {})
    metadata = {key: json.dumps(value) for key, value in meta.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)  # readable like any other cached file
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never half of one
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint file; FileNotFoundError if absent, ValueError naming the file if corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: train one with `python -m insideout train --out {path.parent}` "
            f"or load the course model with insideout.gpt.pretrained.load_course_model()"
        )
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            raw_meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ValueError(f"checkpoint {path} is corrupt or not a safetensors file ({exc}): "
                         f"delete it and retrain") from exc
    try:
        meta = {key: json.loads(value) for key, value in raw_meta.items()}
    except json.JSONDecodeError as exc:
        raise ValueError(f"checkpoint {path} has unreadable metadata ({exc}): delete it and retrain") from exc
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an insideout GPT checkpoint (format {meta.get('format')!r}, "
                         f"expected {FORMAT!r})")
    try:
        config = GPTConfig.from_dict(meta["model_config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint {path} has an invalid model config: {exc}") from exc
    return Checkpoint(path=path, model_config=config, step=int(meta.get("step", 0)), tensors=tensors, meta=meta)


def check_finite(ckpt: Checkpoint, prefixes: tuple[str, ...] = ("model.",)) -> None:
    """ValueError naming every stored tensor (with one of the prefixes) that holds NaN or infinity."""
    bad = sorted(name for name, t in ckpt.tensors.items()
                 if name.startswith(prefixes) and t.is_floating_point() and not bool(torch.isfinite(t).all()))
    if bad:
        raise ValueError(f"checkpoint {ckpt.path} holds NaN or infinite values in {', '.join(bad[:5])}"
                         f"{f' and {len(bad) - 5} more tensors' if len(bad) > 5 else ''}: the run diverged before "
                         f"it was saved; use an earlier checkpoint, or retrain with a lower learning rate")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[GPT, Checkpoint]:
    """A GPT built from the checkpoint's config with its weights loaded, in eval mode (NaN weights refused)."""
    ckpt = read_checkpoint(path)
    check_finite(ckpt)
    model = GPT(ckpt.model_config)
    try:
        model.load_state_dict_strict(ckpt.model_state())
    except ValueError as exc:
        raise ValueError(f"checkpoint {ckpt.path}: {exc}") from exc
    return model.to(device).eval(), ckpt


RESUME_META = ("train_config", "data", "tokenizer")  # what train() writes besides the weights, needed to resume


def check_resumable(ckpt: Checkpoint) -> None:
    """ValueError naming what a checkpoint lacks to continue a training run (metadata, optimizer, RNG state)."""
    missing = [f"metadata '{key}'" for key in RESUME_META if key not in ckpt.meta]
    if "optimizer" not in ckpt.meta:
        missing.append("the optimizer's state")
    if "rng.torch_cpu" not in ckpt.tensors:
        missing.append("the random generator's state (rng.torch_cpu)")
    if missing:
        raise ValueError(f"checkpoint {ckpt.path} cannot resume a training run: it lacks {', '.join(missing)} "
                         f"(was it written by save_checkpoint without the training state?); load its weights with "
                         f"insideout.gpt.checkpoint.load_model and start a new run instead")


def _optimizer_state(ckpt: Checkpoint, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state dict stored in a checkpoint, checked against the live optimizer's parameters."""
    groups = ckpt.meta["optimizer"]["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    live = [p for group in optimizer.param_groups for p in group["params"]]  # index i of the state dict
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in optimizer.param_groups]:
        raise ValueError(f"checkpoint {ckpt.path}: its optimizer has parameter groups of sizes "
                         f"{[len(g['params']) for g in groups]}, this run's "
                         f"{[len(g['params']) for g in optimizer.param_groups]}: resume with the same model")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in ckpt.tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = tensor
    step = ckpt.step
    problems = []
    for i, p in enumerate(live):
        saved = state.get(i)
        if saved is None:
            if step > 0:
                problems.append(f"optimizer.{i}.* missing")
            continue
        for name, tensor in saved.items():
            if name in ("exp_avg", "exp_avg_sq") and tuple(tensor.shape) != tuple(p.shape):
                problems.append(f"optimizer.{i}.{name}: shape {tuple(tensor.shape)}, parameter {tuple(p.shape)}")
        for name in ("step", "exp_avg", "exp_avg_sq"):
            if name not in saved:
                problems.append(f"optimizer.{i}.{name} missing")
    extra = sorted(set(state) - set(range(len(live))))
    if extra:
        problems.append(f"state for parameters {extra[:5]} that the optimizer does not have")
    if problems:
        raise ValueError(f"checkpoint {ckpt.path} has an unusable optimizer state ({'; '.join(problems[:5])}"
                         f"{f'; and {len(problems) - 5} more' if len(problems) > 5 else ''}): AdamW's moments "
                         f"would silently restart or fail; resume from a complete checkpoint")
    return {"state": state, "param_groups": groups}


def restore_training_state(ckpt: Checkpoint, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Load weights, optimizer state and RNG state from a checkpoint into a live model/optimizer.

    Checked first, with a ValueError naming the problem: the model configuration, finite weights, and (with an
    optimizer) every parameter's AdamW state present and of the parameter's shape.
    """
    gpt = _unwrap(model)
    if ckpt.model_config != gpt.config:
        raise ValueError(f"checkpoint {ckpt.path} was written for {ckpt.model_config}, not for this model's "
                         f"{gpt.config}: resume with the checkpoint's own configuration")
    check_finite(ckpt, ("model.", "optimizer."))
    if "rng.torch_cpu" not in ckpt.tensors:
        raise ValueError(f"checkpoint {ckpt.path} holds no random generator state (rng.torch_cpu): it cannot "
                         f"resume a run exactly")
    if optimizer is not None and "optimizer" not in ckpt.meta:
        raise ValueError(f"checkpoint {ckpt.path} holds no optimizer state: it cannot resume training")
    opt_state = _optimizer_state(ckpt, optimizer) if optimizer is not None else None
    gpt.load_state_dict_strict(ckpt.model_state())
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
    torch.set_rng_state(ckpt.tensors["rng.torch_cpu"])
    cuda_states = [ckpt.tensors[k] for k in sorted(ckpt.tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[: torch.cuda.device_count()])
