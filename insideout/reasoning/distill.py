"""Distillation: a smaller student learns from a teacher's traces (filtered by correctness) or its logits.

* sequence-level (``mode="sft"``) — the student is trained with the ordinary next-token loss on a fixed set of
  traces: the teacher's correct traces, or the generator's gold traces for comparison;
* logit-level (``mode="kl"``) — on the same positions, the student matches the teacher's whole next-token
  distribution, ``KL(p_teacher || p_student)`` averaged over the solution tokens (Hinton et al., 2015).

Both train through ``insideout.training.fit`` on batches drawn from the fixed set with a seeded shuffle.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from insideout.gpt.model import GPT, GPTConfig
from insideout.reasoning.data import collate
from insideout.reasoning.tokenizer import CharTokenizer
from insideout.training import OptimConfig, fit
from insideout.utils import DictConfig

TOK = CharTokenizer()
MODES = ("sft", "kl")


@dataclass
class StudentConfig(DictConfig):
    """A student model and its training on a fixed set of examples."""

    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    context_length: int = 128
    steps: int = 500
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 30
    mode: str = "sft"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"StudentConfig.mode={self.mode!r}: choose one of {', '.join(MODES)}")
        self.optim()

    def gpt_config(self) -> GPTConfig:
        return GPTConfig(vocab_size=TOK.vocab_size, context_length=self.context_length, d_model=self.d_model,
                         n_layer=self.n_layer, n_head=self.n_head)

    def optim(self) -> OptimConfig:
        return OptimConfig(max_steps=self.steps, lr=self.lr, warmup_steps=self.warmup_steps, min_lr_ratio=0.1,
                           weight_decay=0.1)


def kl_loss(teacher: GPT):
    """Loss function: KL(teacher || student) of the next-token distributions on the solution positions."""

    def loss_fn(model: GPT, batch: dict[str, torch.Tensor]):
        logits = model(batch["idx"])[0]  # (B, T, V)
        with torch.no_grad():
            target = F.log_softmax(teacher(batch["idx"])[0].float(), dim=-1)
        mask = batch["targets"] != -100  # (B, T) the solution positions
        logp = F.log_softmax(logits.float(), dim=-1)
        kl = (target.exp() * (target - logp)).sum(-1)  # (B, T)
        ce = F.cross_entropy(logits[mask], batch["targets"][mask])
        return kl[mask].mean(), {"ce": float(ce.detach())}

    return loss_fn


def train_student(examples: Sequence[tuple[list[int], int]], config: StudentConfig, teacher: GPT | None = None
                  ) -> tuple[GPT, dict]:
    """Train a fresh student on ``examples`` ((ids, prompt length) pairs), by next-token loss or teacher KL."""
    if not examples:
        raise ValueError("train_student needs at least one example (did the filter keep no trace?)")
    if config.mode == "kl" and teacher is None:
        raise ValueError("mode='kl' needs the teacher model")
    torch.manual_seed(config.seed)
    student = GPT(config.gpt_config())
    rng = random.Random(f"student-{config.seed}")
    order = list(range(len(examples)))

    def batches():
        while True:
            rng.shuffle(order)
            for i in range(0, len(order) - config.batch_size + 1, config.batch_size):
                yield collate([examples[j] for j in order[i:i + config.batch_size]], TOK.pad_id)

    if config.mode == "kl":
        teacher.eval()
        loss_fn = kl_loss(teacher)
    else:
        def loss_fn(model, batch):
            return model(batch["idx"], batch["targets"])[1]
    cpu0 = time.process_time()
    result = fit(student, batches(), loss_fn, config.optim())
    return student.eval(), {"loss": result.history["loss"], "train_cpu_s": time.process_time() - cpu0,
                            "parameters": student.num_parameters(), "examples": len(examples)}
