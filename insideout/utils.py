"""Seeding, determinism, device selection and the cpu/gpu preset switch shared by every chapter."""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

PRESETS = ("cpu", "gpu")
PRESET_ENV = "INSIDEOUT_PRESET"
DEVICE_ENV = "INSIDEOUT_DEVICE"
CACHE_ENV = "INSIDEOUT_CACHE"
DEFAULT_THREADS = 2


def seed_everything(seed: int = 0, threads: int | None = DEFAULT_THREADS, deterministic: bool = True) -> None:
    """Seed Python and torch, fix the CPU thread count and ask torch for deterministic kernels.

    The thread count is part of determinism: a float reduction split over 2 or 4 threads adds the
    same numbers in a different order, so the low bits of results change with it.
    """
    random.seed(seed)
    try:
        import torch
    except ImportError:  # the pure-Python part of the course needs no torch
        return
    torch.manual_seed(seed)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads={threads!r}: must be a positive integer or None")
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def get_preset(preset: str | None = None) -> str:
    """Return the active preset: the argument, else $INSIDEOUT_PRESET, else 'cpu'."""
    value = preset if preset is not None else os.environ.get(PRESET_ENV, "cpu")
    value = value.strip().lower()
    if value not in PRESETS:
        raise ValueError(
            f"unknown preset {value!r} (from {'argument' if preset is not None else '$' + PRESET_ENV}): "
            f"choose one of {', '.join(PRESETS)}"
        )
    return value


def get_device(device: str | None = None, verbose: bool = False):
    """Pick a torch device: the argument, else $INSIDEOUT_DEVICE, else cuda, then mps, then cpu."""
    import torch

    requested = device if device is not None else os.environ.get(DEVICE_ENV)
    if requested is None or requested == "auto":
        if torch.cuda.is_available():
            chosen = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            chosen = "mps"
        else:
            chosen = "cpu"
    else:
        kind = requested.split(":")[0]
        if kind not in ("cpu", "cuda", "mps"):
            raise ValueError(f"unknown device {requested!r}: choose auto, cpu, cuda, cuda:N or mps")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} requested but CUDA is not available: use cpu or auto")
        if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {requested!r} requested but MPS is not available: use cpu or auto")
        chosen = requested
    if verbose:
        print(f"device: {chosen}")
    return torch.device(chosen)


def cache_dir() -> Path:
    """Where trained artefacts (checkpoints) are cached: $INSIDEOUT_CACHE, else ~/.cache/insideout."""
    root = os.environ.get(CACHE_ENV)
    path = Path(root) if root else Path.home() / ".cache" / "insideout"
    path.mkdir(parents=True, exist_ok=True)
    return path


def setup(seed: int = 0, preset: str | None = None, device: str | None = None, threads: int | None = DEFAULT_THREADS):
    """First-cell helper for torch chapters: seed, pick preset and device, print them, return (preset, device)."""
    import torch

    seed_everything(seed, threads=threads)
    chosen_preset = get_preset(preset)
    chosen_device = get_device(device)
    print(f"torch {torch.__version__} | preset {chosen_preset} | device {chosen_device} | "
          f"threads {torch.get_num_threads()} | seed {seed}")
    return chosen_preset, chosen_device


class DictConfig:
    """Mixin for config dataclasses: plain-dict round trip that names unknown fields instead of a TypeError."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)
