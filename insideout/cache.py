"""The course's one cache of trained models, keyed by what they were trained with.

A chapter that needs a model trained earlier (the SFT policy, a reward model, the reasoning model, a diffusion
model, ...) calls ``cached(kind, key, train)``: ``key`` is a JSON-able description of everything the training
depends on (configurations, data seeds, the base model's key); the file name carries a hash of it, so a change of
recipe never loads a stale model. When the file is missing, ``train()`` runs (it must be deterministic: seed inside)
and its tensors are saved atomically as safetensors with the key and ``train``'s metadata; nothing is pickled.
The caller's random stream is the same whether the model was loaded or trained.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from insideout.utils import cache_dir

FORMAT = "insideout-artifact/1"
_KIND = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass
class Artifact:
    """A cached training result: tensors by name, the key it was trained with, and the trainer's metadata."""

    kind: str
    key: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    trained_now: bool = False


def key_digest(key: dict[str, Any]) -> str:
    """12 hex digits of the sha256 of the key's canonical JSON (sorted keys)."""
    try:
        text = json.dumps(key, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"cache key must be JSON-able with finite numbers: {exc}") from exc
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def artifact_path(kind: str, key: dict[str, Any]) -> Path:
    """Where an artifact of this kind and key lives: ``cache_dir()/<kind>-<digest>.safetensors``."""
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"artifact kind {kind!r}: use lower-case letters, digits, '-', '_' or '.'")
    return cache_dir() / f"{kind}-{key_digest(key)}.safetensors"


def save_artifact(path: str | os.PathLike, tensors: dict[str, torch.Tensor], key: dict[str, Any],
                  meta: dict[str, Any] | None = None, kind: str = "") -> Path:
    """Write tensors + key + metadata via a temporary file and os.replace (a reader never sees half a file)."""
    path = Path(path)
    clean = {}
    for name, tensor in tensors.items():
        if not torch.is_tensor(tensor):
            raise TypeError(f"artifact entry {name!r} is a {type(tensor).__name__}, not a tensor")
        clean[name] = tensor.detach().cpu().contiguous().clone()  # clone: tied tensors are stored separately
    metadata = {"format": FORMAT, "kind": kind, "key": json.dumps(key, sort_keys=True),
                "meta": json.dumps(meta or {}, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(clean, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_artifact(path: str | os.PathLike) -> Artifact:
    """Read an artifact; FileNotFoundError if absent, ValueError naming the file if corrupt, foreign or not finite."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no cached artifact at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ValueError(f"cached artifact {path} is corrupt or not a safetensors file ({exc}): delete it, and it "
                         f"is retrained") from exc
    if raw.get("format") != FORMAT:
        raise ValueError(f"{path} is not an insideout artifact (format {raw.get('format')!r}, expected {FORMAT!r})")
    try:
        key, meta = json.loads(raw["key"]), json.loads(raw["meta"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"cached artifact {path} has unreadable metadata ({exc}): delete it") from exc
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ValueError(f"cached artifact {path} holds non-finite values in {bad[:5]}: delete it and retrain")
    return Artifact(kind=raw.get("kind", ""), key=key, tensors=tensors, meta=meta, path=path)


def cached(kind: str, key: dict[str, Any], train: Callable[[], tuple[dict[str, torch.Tensor], dict[str, Any]]],
           *, log: Callable[[str], None] | None = print) -> Artifact:
    """Load the artifact of (kind, key) from the cache, or run ``train()`` -> (tensors, metadata) and cache it.

    ``log`` gets one line saying which of the two happened (None: silent). A cached file whose stored key differs
    from ``key`` (a hash collision or a hand-copied file) or that cannot be read is retrained, and the line says why.
    """
    path = artifact_path(kind, key)
    reason = "not in the cache"
    if path.is_file():
        try:
            artifact = load_artifact(path)
        except ValueError as exc:
            reason = f"the cached file was unusable ({exc})"
        else:
            if artifact.key == json.loads(json.dumps(key, sort_keys=True)):
                if log is not None:
                    log(f"loaded {kind} from the cache ({path.name})")
                return artifact
            reason = "the cached file was trained with another key"
    if log is not None:
        log(f"training {kind} ({reason}); it is cached afterwards as {path.name}")
    with torch.random.fork_rng(devices=[]):
        tensors, meta = train()
    for name, tensor in tensors.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FloatingPointError(f"training {kind} produced non-finite values in {name!r}: not caching it")
    _check_json(meta)
    save_artifact(path, tensors, key, meta, kind=kind)
    artifact = load_artifact(path)
    artifact.trained_now = True
    return artifact


def _check_json(meta: dict[str, Any]) -> None:
    try:
        json.dumps(meta, allow_nan=True)
    except TypeError as exc:
        raise TypeError(f"artifact metadata must be JSON-able (numbers, strings, lists, dicts): {exc}") from exc
