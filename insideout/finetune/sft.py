"""Supervised fine-tuning on the instruction data, with or without the loss mask, through the shared ``fit``.

A batch is a dict ``{"ids": (B, T), "targets": (B, T)}`` of right-padded conversations: ``targets[t]`` is the
token after position t, or -100 where no loss is taken — on padding always, and on the prompt when the loss is
masked. The model's own cross-entropy (``ignore_index=-100``) then averages over the trained tokens only.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from insideout.finetune.chat import ChatTokenizer, pad_batch
from insideout.gpt.model import GPT
from insideout.training import OptimConfig, _check_int, _check_number, fit
from insideout.utils import DictConfig

IGNORE = -100


@dataclass
class SFTConfig(DictConfig):
    """Steps, batch and learning rate of a supervised fine-tuning run, and whether the loss is masked."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    mask_prompt: bool = True  # loss on the response (and end-of-turn) only; False: on every token
    examples_per_task: int = 2000  # instruction data: this many examples of each task
    data_seed: int = 0
    seed: int = 0  # order of the batches

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name in ("steps", "batch_size", "examples_per_task"):
            _check_int(owner, name, getattr(self, name), minimum=1)
        _check_int(owner, "warmup_steps", self.warmup_steps, minimum=0)
        _check_number(owner, "lr", self.lr, low=0.0, low_open=True)
        _check_number(owner, "weight_decay", self.weight_decay, low=0.0)
        if not isinstance(self.mask_prompt, bool):
            raise ValueError(f"{owner}.mask_prompt={self.mask_prompt!r}: must be True or False")

    def optim(self) -> OptimConfig:
        return OptimConfig(max_steps=self.steps, lr=self.lr, warmup_steps=self.warmup_steps,
                           weight_decay=self.weight_decay, min_lr_ratio=0.1)


def encode_examples(dataset, tokenizer: ChatTokenizer) -> list[tuple[list[int], list[bool]]]:
    """(ids, response mask) of every row of an instruction dataset (columns instruction, response)."""
    return [tokenizer.conversation(row["instruction"], row["response"]) for row in dataset]


def make_batch(examples: list[tuple[list[int], list[bool]]], tokenizer: ChatTokenizer, mask_prompt: bool
               ) -> dict[str, torch.Tensor]:
    """Right-padded ``{"ids", "targets"}``: targets are the next tokens, -100 on padding (and on the prompt)."""
    ids, mask = pad_batch([e[0] for e in examples], [e[1] for e in examples], pad_id=tokenizer.eot_id)
    real = pad_batch([e[0] for e in examples], pad_id=tokenizer.eot_id)[1]
    keep = mask if mask_prompt else real  # which tokens are predicted with a loss
    targets = torch.full_like(ids, IGNORE)
    targets[:, :-1] = ids[:, 1:].masked_fill(~keep[:, 1:], IGNORE)
    return {"ids": ids, "targets": targets}


def batch_stream(examples: list, tokenizer: ChatTokenizer, batch_size: int, mask_prompt: bool, seed: int
                 ) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches: the examples shuffled with ``seed`` each epoch (epoch e uses seed + e), cut in batches."""
    if len(examples) < batch_size:
        raise ValueError(f"{len(examples)} examples cannot fill a batch of {batch_size}")
    epoch = 0
    while True:
        order = list(range(len(examples)))
        random.Random(seed + epoch).shuffle(order)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            yield make_batch([examples[i] for i in order[start:start + batch_size]], tokenizer, mask_prompt)
        epoch += 1


def lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the tokens whose target is not -100 (a course GPT computes the LM head there only)."""
    ids, targets = batch["ids"], batch["targets"]
    if isinstance(model, GPT):
        return model(ids, targets, logits_mask=targets != IGNORE)[1]
    return model(ids, targets)[1]


def train_sft(model: torch.nn.Module, examples: list, tokenizer: ChatTokenizer, config: SFTConfig, *,
              eval_fn=None, eval_every: int = 0, log=None):
    """Fine-tune ``model`` in place on the examples through the shared loop; returns ``fit``'s result."""
    stream = batch_stream(examples, tokenizer, config.batch_size, config.mask_prompt, config.seed)
    return fit(model, stream, lm_loss, config.optim(), eval_fn=eval_fn, eval_every=eval_every, log=log,
               desc="SFT")


@torch.no_grad()
def response_nll(model: torch.nn.Module, examples: list, tokenizer: ChatTokenizer, batch_size: int = 64) -> dict:
    """Mean NLL (nats/token) of the response tokens and of the end-of-turn token, summed over the examples."""
    was_training = model.training
    model.eval()
    total = n = end_total = end_n = 0.0
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        batch = make_batch(examples[start:start + batch_size], tokenizer, mask_prompt=True)
        ids, targets = batch["ids"].to(device), batch["targets"].to(device)
        logits = model(ids)[0]
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE,
                                                reduction="none")  # (B, T), 0 where ignored
        keep = targets != IGNORE
        total += float(nll[keep].double().sum())
        n += int(keep.sum())
        at_end = targets == tokenizer.end_id
        end_total += float(nll[at_end].double().sum())
        end_n += int(at_end.sum())
    model.train(was_training)
    return {"response_nll": total / n, "end_nll": end_total / end_n}
