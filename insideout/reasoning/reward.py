"""Reward models over traces: a process reward model (PRM, one score per step) and an outcome reward model (ORM).

Both are the course's GPT with a linear head on its final hidden state (``RewardGPT``), initialised from the
chain-of-thought model and trained through ``insideout.training.fit`` with a binary cross-entropy:

* PRM — at the newline that ends every line of a trace, the label "every line kept so far is on the gold path"
  (``TraceCheck.prefix_correct``, exact, from the checker), and at the final ``<eos>`` (the answer step) the
  outcome;
* ORM — one label at the end of the trace: the verifiable reward (right answer, well-formed trace).

Traces are sampled from the chain-of-thought model on training problems. ``auc`` is the rank statistic used to
grade step scores.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from insideout.gpt.model import GPT
from insideout.reasoning.data import prompt_ids
from insideout.reasoning.task import Problem, TraceCheck
from insideout.reasoning.tokenizer import CharTokenizer
from insideout.training import OptimConfig, fit
from insideout.utils import DictConfig

TOK = CharTokenizer()
KINDS = ("prm", "orm")


class RewardGPT(nn.Module):
    """A GPT trunk and a linear head: one score (a logit) per position."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.d_model, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits (B, T) of "this prefix is still right" at every position."""
        store = {}
        handle = self.gpt.hook_final.register_forward_hook(lambda m, i, o: store.__setitem__("h", o))
        try:
            self.gpt(idx)
        finally:
            handle.remove()
        return self.head(store["h"]).squeeze(-1)  # (B, T)


def step_end_positions(ids: Sequence[int], n_prompt: int) -> list[int]:
    """Positions (in ``ids``) of the newline that ends each line after the prompt."""
    return [i for i in range(n_prompt, len(ids)) if ids[i] == TOK.newline_id]


@dataclass
class LabelledTrace:
    """A sampled trace as ids, where its lines end, and one label per line (exact or Monte-Carlo) + the outcome."""

    ids: list[int]
    n_prompt: int
    ends: list[int]
    step_labels: list[float]
    outcome: float


def labelled_traces(problems: Sequence[Problem], texts: Sequence[str], checks: Sequence[TraceCheck]
                    ) -> list[LabelledTrace]:
    """Exact step labels (prefix on the gold path) and outcome labels for sampled traces."""
    out = []
    for p, text, check in zip(problems, texts, checks, strict=True):
        prompt = prompt_ids(TOK, p)
        try:
            body = TOK.encode(text)
        except ValueError:
            continue
        ids = prompt + body + [TOK.eos_id]
        ends = step_end_positions(ids, len(prompt))[: len(check.prefix_correct)]
        labels = [float(x) for x in check.prefix_correct[: len(ends)]]
        out.append(LabelledTrace(ids, len(prompt), ends, labels, check.reward))
    return out


def collate_rewards(traces: Sequence[LabelledTrace], kind: str) -> dict[str, torch.Tensor]:
    """(B, T) ids, (B, S) label positions and (B, S) labels (-1 where there is none) for the PRM or the ORM."""
    if kind not in KINDS:
        raise ValueError(f"reward model kind {kind!r}: choose one of {', '.join(KINDS)}")
    T = max(len(t.ids) for t in traces)
    S = max(len(t.ends) for t in traces) + 1 if kind == "prm" else 1
    idx = torch.full((len(traces), T), TOK.pad_id, dtype=torch.long)
    pos = torch.zeros((len(traces), S), dtype=torch.long)
    lab = torch.full((len(traces), S), -1.0)
    for b, t in enumerate(traces):
        idx[b, : len(t.ids)] = torch.tensor(t.ids)
        if kind == "prm":  # every line end, and the <eos> (the answer step) with the outcome
            ends, labels = t.ends + [len(t.ids) - 1], t.step_labels + [t.outcome]
            pos[b, : len(ends)] = torch.tensor(ends, dtype=torch.long)
            lab[b, : len(ends)] = torch.tensor(labels)
        else:
            pos[b, 0] = len(t.ids) - 1  # the <eos>
            lab[b, 0] = t.outcome
    return {"idx": idx, "pos": pos, "labels": lab}


def reward_loss(model: RewardGPT, batch: dict[str, torch.Tensor]):
    """Binary cross-entropy of the scores at the labelled positions; also their accuracy."""
    logits = model(batch["idx"]).gather(1, batch["pos"])  # (B, S)
    valid = batch["labels"] >= 0
    loss = F.binary_cross_entropy_with_logits(logits[valid], batch["labels"][valid])
    acc = ((logits[valid] > 0).float() == (batch["labels"][valid] > 0.5).float()).float().mean()
    return loss, {"accuracy": float(acc)}


@dataclass
class RewardConfig(DictConfig):
    """Training of a reward model on labelled traces."""

    kind: str = "prm"
    steps: int = 150
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"RewardConfig.kind={self.kind!r}: choose one of {', '.join(KINDS)}")
        self.optim()

    def optim(self) -> OptimConfig:
        return OptimConfig(max_steps=self.steps, lr=self.lr, warmup_steps=self.warmup_steps, min_lr_ratio=0.1,
                           weight_decay=0.0)


def train_reward_model(base: GPT, traces: Sequence[LabelledTrace], config: RewardConfig) -> tuple[RewardGPT, dict]:
    """A RewardGPT initialised from ``base`` (copied), trained on ``traces``; returns it and what was measured."""
    if not traces:
        raise ValueError("train_reward_model needs at least one labelled trace")
    gpt = GPT(base.config)
    gpt.load_state_dict(base.state_dict())
    torch.manual_seed(config.seed)
    model = RewardGPT(gpt)
    rng = random.Random(f"reward-{config.seed}")
    order = list(range(len(traces)))

    def batches():
        while True:
            rng.shuffle(order)
            for i in range(0, len(order) - config.batch_size + 1, config.batch_size):
                yield collate_rewards([traces[j] for j in order[i:i + config.batch_size]], config.kind)

    cpu0 = time.process_time()
    result = fit(model, batches(), reward_loss, config.optim())
    return model.eval(), {"loss": result.history["loss"], "accuracy": result.history["accuracy"],
                          "train_cpu_s": time.process_time() - cpu0}


@torch.no_grad()
def score_positions(model: RewardGPT, seqs: Sequence[Sequence[int]], positions: Sequence[Sequence[int]],
                    batch_size: int = 256) -> list[list[float]]:
    """Sigmoid scores of the reward model at the given positions of each sequence."""
    out: list[list[float]] = []
    model.eval()
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))  # similar lengths together: less padding
    result: dict[int, list[float]] = {}
    for s in range(0, len(order), batch_size):
        chunk = order[s:s + batch_size]
        T = max(len(seqs[i]) for i in chunk)
        idx = torch.full((len(chunk), T), TOK.pad_id, dtype=torch.long)
        for b, i in enumerate(chunk):
            idx[b, : len(seqs[i])] = torch.tensor(list(seqs[i]), dtype=torch.long)
        probs = torch.sigmoid(model(idx.to(model.head.weight.device)).float()).cpu()
        for b, i in enumerate(chunk):
            result[i] = [float(probs[b, p]) for p in positions[i]]
    for i in range(len(seqs)):
        out.append(result[i])
    return out


def trace_step_scores(model: RewardGPT, problems: Sequence[Problem], texts: Sequence[str]) -> list[list[float]]:
    """Per trace, the reward model's score after each line and, last, at its ``<eos>`` (the answer step); empty
    for a trace that cannot be encoded."""
    seqs, positions = [], []
    for p, text in zip(problems, texts, strict=True):
        prompt = prompt_ids(TOK, p)
        try:
            ids = prompt + TOK.encode(text) + [TOK.eos_id]
            where = step_end_positions(ids, len(prompt)) + [len(ids) - 1]
        except ValueError:
            ids, where = prompt, []
        seqs.append(ids)
        positions.append(where)
    return score_positions(model, seqs, positions)


def final_scores(model: RewardGPT, problems: Sequence[Problem], texts: Sequence[str]) -> list[float]:
    """Per trace, the reward model's score at its last token (the ORM's outcome score)."""
    seqs = []
    for p, text in zip(problems, texts, strict=True):
        try:
            seqs.append(prompt_ids(TOK, p) + TOK.encode(text) + [TOK.eos_id])
        except ValueError:
            seqs.append(prompt_ids(TOK, p))
    return [s[0] for s in score_positions(model, seqs, [[len(s) - 1] for s in seqs])]


AGGREGATES = ("min", "product", "last")


def aggregate(step_scores: Sequence[float], how: str) -> float:
    """One score per trace from its step scores: the minimum, the product or the last (0 for no step)."""
    if how not in AGGREGATES:
        raise ValueError(f"aggregate {how!r}: choose one of {', '.join(AGGREGATES)}")
    if not step_scores:
        return 0.0
    if how == "min":
        return min(step_scores)
    if how == "product":
        return math.prod(step_scores)
    return step_scores[-1]


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: P(score of a random positive > that of a random negative), ties counting 1/2."""
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    pos = sum(1 for y in labels if y)
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        raise ValueError(f"AUC needs both classes: {pos} positives and {neg} negatives")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def mc_values(policy: GPT, problems: Sequence[Problem], traces: Sequence[LabelledTrace], rollouts: int,
              generator: torch.Generator | None = None, temperature: float = 1.0) -> tuple[list[list[float]], int]:
    """Monte-Carlo step labels (Wang et al., 2024): for every line of every trace, the fraction of ``rollouts``
    continuations sampled from that prefix whose answer is right. Returns the values and the tokens generated."""
    from insideout.reasoning.sampling import sample
    from insideout.reasoning.task import check_trace

    if isinstance(rollouts, bool) or not isinstance(rollouts, int) or rollouts < 1:
        raise ValueError(f"rollouts={rollouts!r}: must be an integer >= 1")
    prompts, owner = [], []
    for ti, t in enumerate(traces):
        for si, end in enumerate(t.ends):
            prompts += [t.ids[: end + 1]] * rollouts
            owner += [(ti, si)] * rollouts
    room = policy.config.context_length - max(len(p) for p in prompts)
    out = sample(policy, prompts, room, temperature=temperature, generator=generator, stop_tokens=(TOK.eos_id,))
    hits: dict[tuple[int, int], float] = {}
    for (ti, si), prompt, toks in zip(owner, prompts, out.tokens, strict=True):
        t = traces[ti]
        text = TOK.decode(prompt[t.n_prompt:] + toks)
        hits[(ti, si)] = hits.get((ti, si), 0.0) + check_trace(problems[ti], text).correct / rollouts
    values = [[hits[(ti, si)] for si in range(len(t.ends))] for ti, t in enumerate(traces)]
    return values, out.n_generated
