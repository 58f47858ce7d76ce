"""Configuration of a pretraining run: ``TrainConfig``, AdamW's ``OptimConfig`` plus the data and the run's rhythm.

It lives in its own module so that ``presets`` (named configurations) and ``train`` (the loop) both import it and
neither imports the other. The model's ``GPTConfig`` stays beside the model, in ``insideout.gpt.model``.

``TrainConfig`` *is* an ``insideout.training.OptimConfig``: it inherits the optimizer's fields (with their defaults)
and their validation, and adds the data and run fields before and after them, in the order they have always been
printed and stored (a dataclass orders inherited fields by the class hierarchy: data fields, optimizer fields, run
fields). The numbers of the course's runs are in ``presets``; the defaults here are generic, not a preset's.
"""

from __future__ import annotations

from dataclasses import dataclass

from insideout.gpt.tokenizer import TOKENIZERS
from insideout.training import OptimConfig, _check_int
from insideout.utils import DictConfig


@dataclass
class _DataFields(DictConfig):
    """What is trained on (the fields that come first in a TrainConfig)."""

    dataset: str = "shakespeare"  # shakespeare | fineweb | a local .parquet/.jsonl/.txt file
    tokenizer: str = "course"  # one of insideout.gpt.tokenizer.TOKENIZERS
    seq_len: int | None = None  # tokens per training sequence; None = the model's context_length
    batch_size: int = 8  # sequences per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step


@dataclass
class _RunFields:
    """Validation, data order, checkpoints and speed switches (the fields after the optimizer's)."""

    eval_every: int = 0  # validate every this many steps (and at the end); 0 = only at the end
    eval_batches: int = 8  # validation set size in global batches (the first ones of the unshuffled stream)
    shuffle_buffer: int = 1024  # blocks in the shuffle buffer
    validation_documents: int = 100  # documents held out from FineWeb / a local file
    seed: int = 0  # initial weights and data order
    checkpoint_every: int = 0  # also save every this many steps (0 = only at the end)
    compile: bool = False  # torch.compile the model
    autocast: bool = True  # bf16 autocast on CUDA (ignored on CPU, where training stays float32)


@dataclass
class TrainConfig(_RunFields, OptimConfig, _DataFields):
    """Hyper-parameters of a pretraining run (an OptimConfig plus data and run fields). Validated on construction."""

    def __post_init__(self) -> None:
        super().__post_init__()  # OptimConfig: max_steps, warmup_steps, lr, ..., grad_clip (finite, in range)
        owner = type(self).__name__
        if not isinstance(self.dataset, str) or not self.dataset.strip():
            raise ValueError(f"{owner}.dataset={self.dataset!r}: name 'shakespeare', 'fineweb' or a local file")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"{owner}.tokenizer={self.tokenizer!r}: choose one of {', '.join(TOKENIZERS)}")
        for name in ("batch_size", "grad_accum", "eval_batches", "shuffle_buffer", "validation_documents"):
            _check_int(owner, name, getattr(self, name), minimum=1)
        for name in ("eval_every", "checkpoint_every", "seed"):
            _check_int(owner, name, getattr(self, name), minimum=0)
        if self.seq_len is not None:
            _check_int(owner, "seq_len", self.seq_len, minimum=1)
        for name in ("compile", "autocast"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{owner}.{name}={getattr(self, name)!r}: must be True or False")


__all__ = ["OptimConfig", "TrainConfig"]
