"""The course's trained model, shared by every chapter after training: load it from the cache or train it.

Chapter 07 trains the preset's model with ``insideout.gpt.train.train_course_model`` and caches it at
``presets.checkpoint_path(preset)``. ``load_course_model`` loads that file after checking that it was made with the
same model configuration and tokenizer; when it is missing (or stale) it runs the same deterministic training and
says so.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from insideout.gpt.checkpoint import load_model, read_checkpoint
from insideout.gpt.model import GPT
from insideout.gpt.tokenizer import load_tokenizer, tokenizer_info

if TYPE_CHECKING:
    from insideout.gpt.data import TokenizerLike


def _stale_reason(path, preset: str, tokenizer: TokenizerLike) -> str | None:
    """Why the cached checkpoint does not match the preset (None if it does)."""
    from insideout.gpt.presets import model_config, train_config

    ckpt = read_checkpoint(path)
    if ckpt.model_config != model_config(preset):
        return "its model configuration differs from the preset's"
    if ckpt.meta.get("train_config") != train_config(preset).to_dict():
        return "its training configuration differs from the preset's"
    if ckpt.meta.get("tokenizer", {}).get("sha256") != tokenizer_info(tokenizer)["sha256"]:
        return "it was trained with a different tokenizer"
    if ckpt.step != train_config(preset).max_steps:
        return f"its run stopped at step {ckpt.step} of {train_config(preset).max_steps}"
    return None


def load_course_model(preset: str | None = None, device: str | torch.device | None = None
                      ) -> tuple[GPT, TokenizerLike]:
    """(model in eval mode, tokenizer) of the preset's course model, trained by chapter 07 (or now, if missing)."""
    from insideout.gpt.presets import checkpoint_path, tokenizer_name
    from insideout.gpt.train import train_course_model
    from insideout.utils import get_device, get_preset

    preset = get_preset(preset)
    device = get_device(None if device is None else str(device))
    tokenizer = load_tokenizer(tokenizer_name(preset))
    path = checkpoint_path(preset)
    reason = "no cached checkpoint" if not path.is_file() else _stale_reason(path, preset, tokenizer)
    if reason is not None:
        print(f"training the {preset} course model ({reason}: {path.name} in the cache folder); "
              f"this runs once, then it is cached")
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is the same as after a plain load
            train_course_model(preset, device=device, progress=False, verbose=False)
    else:
        print(f"loaded the {preset} course model from the cache ({path.name})")
    model, _ = load_model(path, device=device)
    return model, tokenizer


def load_for_generation(preset: str | None = None, checkpoint: str | os.PathLike | None = None,
                        device: str | torch.device | None = None) -> tuple[GPT, TokenizerLike]:
    """(model, tokenizer) for the generate command: a given checkpoint file/folder, else the course model."""
    from insideout.utils import get_device

    if checkpoint is None:
        return load_course_model(preset, device)
    path = os.fspath(checkpoint)
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.safetensors")
    model, ckpt = load_model(path, device=get_device(None if device is None else str(device)))
    info = ckpt.meta.get("tokenizer")
    if not info:
        raise ValueError(f"checkpoint {path} does not say which tokenizer it was trained with")
    name = ckpt.meta.get("train_config", {}).get("tokenizer", "course")
    tokenizer = load_tokenizer(name)
    if tokenizer_info(tokenizer)["sha256"] != info.get("sha256"):
        raise ValueError(f"checkpoint {path} was trained with a tokenizer that differs from today's {name!r} "
                         f"tokenizer: retrain it")
    return model, tokenizer
