"""Part 4's models: the course's GPT trained from scratch on the task, cached, reloaded with a tokenizer check.

``ReasonerConfig`` holds everything a training run depends on (model shape, format, data, optimiser); it is the
cache key together with the split. ``reasoner(config)`` returns the trained model, training it through the shared
loop ``insideout.training.fit`` when the cache does not have it. The run can store snapshots at given steps (the
deliberately undertrained starting point of GRPO is such a snapshot of the same run).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field

import torch

from insideout.cache import cached, load_artifact
from insideout.gpt.model import GPT, GPTConfig
from insideout.reasoning.data import FORMATS, PROMPT_WIDTH, batch_stream, lm_loss
from insideout.reasoning.task import DEFAULT_SPLIT, SplitConfig, held_out_problems
from insideout.reasoning.tokenizer import CharTokenizer
from insideout.training import OptimConfig, fit
from insideout.utils import DictConfig, get_preset


@dataclass
class ReasonerConfig(DictConfig):
    """A reasoning model and its training run (from scratch, loss on the solution only)."""

    fmt: str = "cot"  # cot (the trace, then the answer) | direct (the answer only)
    d_model: int = 64
    n_layer: int = 2
    n_head: int = 4
    context_length: int = 128
    position: str = "learned"
    train_levels: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    steps: int = 650
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    p_error: float = 0.05  # per line: a wrong line (shown, not trained on), 'wait', the right line
    p_confirm: float = 0.05  # per line: the right line, 'wait', the right line again
    seed: int = 0
    snapshot_steps: tuple[int, ...] = ()  # also keep the weights at these steps

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"ReasonerConfig.fmt={self.fmt!r}: choose one of {', '.join(FORMATS)}")
        self.train_levels = tuple(self.train_levels)
        self.snapshot_steps = tuple(self.snapshot_steps)
        for s in self.snapshot_steps:
            if not 0 < s < self.steps:
                raise ValueError(f"ReasonerConfig.snapshot_steps: {s} must lie strictly between 0 and "
                                 f"steps={self.steps}")
        self.optim()  # validates the optimiser fields
        self.gpt_config(CharTokenizer().vocab_size)

    def gpt_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, context_length=self.context_length, d_model=self.d_model,
                         n_layer=self.n_layer, n_head=self.n_head, position=self.position)

    def optim(self) -> OptimConfig:
        return OptimConfig(max_steps=self.steps, lr=self.lr, warmup_steps=self.warmup_steps,
                           min_lr_ratio=self.min_lr_ratio, weight_decay=self.weight_decay)


def preset_config(preset: str | None = None, **overrides) -> ReasonerConfig:
    """The chain-of-thought model of a preset: ``cpu`` (what the book runs) or ``gpu`` (larger, trained longer)."""
    preset = get_preset(preset)
    if preset == "cpu":
        base = ReasonerConfig()
    else:
        base = ReasonerConfig(d_model=256, n_layer=4, n_head=8, steps=3000, batch_size=64, lr=1e-3, warmup_steps=200)
    return dataclasses.replace(base, **overrides)


def _key(config: ReasonerConfig, split: SplitConfig, tok: CharTokenizer) -> dict:
    return {"config": json.loads(json.dumps(config.to_dict())),
            "split": json.loads(json.dumps(dataclasses.asdict(split))), "tokenizer": tok.signature,
            "prompt_width": PROMPT_WIDTH}  # the example format: prompts padded to this width


def positions_per_step(config: ReasonerConfig, split: SplitConfig = DEFAULT_SPLIT, steps: int = 64) -> float:
    """The mean number of (padded) token positions of one training batch, measured on the run's first batches."""
    tok = CharTokenizer()
    exclude = {p.text for p in held_out_problems(split)}
    stream = batch_stream(tok, config.train_levels, config.batch_size, config.seed, exclude, config.fmt,
                          config.p_error, config.p_confirm)
    return sum(next(stream)["idx"].numel() for _ in range(steps)) / steps


def steps_for_positions(config: ReasonerConfig, positions: float, split: SplitConfig = DEFAULT_SPLIT) -> int:
    """How many steps of ``config`` process about ``positions`` token positions (to equalise training compute)."""
    return max(1, math.ceil(positions / positions_per_step(config, split)))


@dataclass
class TrainedReasoner:
    """A trained model with what its run measured."""

    model: GPT
    config: ReasonerConfig
    meta: dict = field(default_factory=dict)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    trained_now: bool = False

    def snapshot(self, step: int) -> GPT:
        """A fresh GPT with the weights the run had at ``step`` (one of ``config.snapshot_steps``)."""
        if step not in self.snapshots:
            raise ValueError(f"no snapshot at step {step}; this run kept {sorted(self.snapshots)}")
        model = GPT(self.model.config).to(self.model.tok_emb.weight.device)
        model.load_state_dict_strict(self.snapshots[step])
        return model.eval()


def _train(config: ReasonerConfig, split: SplitConfig, device) -> tuple[dict[str, torch.Tensor], dict]:
    tok = CharTokenizer()
    torch.manual_seed(config.seed)
    model = GPT(config.gpt_config(tok.vocab_size)).to(device)
    exclude = {p.text for p in held_out_problems(split)}
    stream = batch_stream(tok, config.train_levels, config.batch_size, config.seed, exclude, config.fmt,
                          config.p_error, config.p_confirm)
    counted = {"positions": 0, "solution_tokens": 0}

    def counting():
        for batch in stream:
            counted["positions"] += batch["idx"].numel()
            counted["solution_tokens"] += int((batch["targets"] != -100).sum())
            yield batch

    batches = counting()
    tensors: dict[str, torch.Tensor] = {}
    optimizer, history, step = None, None, 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for stop in (*sorted(config.snapshot_steps), config.steps):
        result = fit(model, batches, lm_loss, config.optim(), optimizer=optimizer, history=history, start_step=step,
                     stop_at=stop, device=device)
        optimizer, history, step = result.optimizer, result.history, stop
        prefix = "model." if stop == config.steps else f"snapshot{stop}."
        tensors.update({prefix + k: v.detach().clone() for k, v in model.state_dict().items()
                        if k != "lm_head.weight"})
    meta = {"tokenizer": tok.signature, "loss": history["loss"], "train_cpu_s": time.process_time() - cpu0,
            "train_wall_s": time.perf_counter() - wall0, "problems": config.steps * config.batch_size,
            "parameters": model.num_parameters(), **counted}
    return tensors, meta


def check_tokenizer(meta: dict, tok: CharTokenizer, what: str = "checkpoint") -> None:
    """ValueError unless a checkpoint's stored tokenizer signature is this tokenizer's."""
    found = meta.get("tokenizer")
    if found != tok.signature:
        raise ValueError(f"this {what} was trained with another tokenizer (signature {found!r}, this task's is "
                         f"{tok.signature!r}): its token ids mean different characters; retrain it on this task")


def model_from_tensors(tensors: dict[str, torch.Tensor], gpt_config: GPTConfig, prefix: str = "model.",
                       device=None) -> GPT:
    model = GPT(gpt_config)
    model.load_state_dict_strict({k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)})
    return model.to(device if device is not None else "cpu").eval()


def reasoner(config: ReasonerConfig, split: SplitConfig = DEFAULT_SPLIT, device=None, *,
             kind: str | None = None, log=print) -> TrainedReasoner:
    """The trained model of ``config`` (and ``split``): from the cache, or trained now and cached."""
    tok = CharTokenizer()
    device = torch.device(device) if device is not None else torch.device("cpu")
    kind = kind or f"reasoning-{config.fmt}"
    artifact = cached(kind, _key(config, split, tok), lambda: _train(config, split, device), log=log)
    check_tokenizer(artifact.meta, tok)
    gcfg = config.gpt_config(tok.vocab_size)
    snapshots = {}
    for s in config.snapshot_steps:
        p = f"snapshot{s}."
        snapshots[s] = {k.removeprefix(p): v for k, v in artifact.tensors.items() if k.startswith(p)}
    return TrainedReasoner(model_from_tensors(artifact.tensors, gcfg, device=device), config, artifact.meta,
                           snapshots, artifact.trained_now)


def load_reasoner_file(path, config: ReasonerConfig, device=None) -> GPT:
    """Load a cached reasoning model from a file, refusing one made with another tokenizer."""
    artifact = load_artifact(path)
    check_tokenizer(artifact.meta, CharTokenizer(), what=f"checkpoint {path}")
    return model_from_tensors(artifact.tensors, config.gpt_config(CharTokenizer().vocab_size), device=device)
