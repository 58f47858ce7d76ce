"""Measuring a policy: sample answers to held-out prompts, judge them, and the numbers of the part's table.

* ``answer`` — sample responses (batched, KV-cache) to prompts in the chat format and judge each one;
* ``answer_plain`` — the same for a model without chat tokens, in plain text ("Instruction: ... / Answer:"),
  zero-shot or with ``shots`` solved examples of the same task before the question;
* ``summarize`` — pass rate per task, mean gold score, how often the answer stopped, mean length;
* ``distinct_n`` — the fraction of distinct n-grams among all n-grams of a set of answers (diversity);
* ``validation_nats_per_char`` — language-model loss on the validation plays, in nats per character
  (what fine-tuning costs the base model: forgetting);
* ``kl_to_reference`` — the mean over prompts of :math:`\\sum_t \\log\\pi(y_t)/\\pi_\\text{ref}(y_t)` for
  responses sampled from the policy: a Monte-Carlo estimate of KL(policy || reference) per response.
"""

from __future__ import annotations

import random
from collections import defaultdict

import torch

from insideout.finetune import tasks as T
from insideout.finetune.chat import ChatTokenizer
from insideout.finetune.generation import response_logprobs, sample

MAX_NEW_TOKENS = 32  # an answer is one line: 12 words are ~16 tokens of the course tokenizer
# Every policy of the part is sampled at this temperature: its distribution is softmax(logits / TEMPERATURE).
# A model this small writes many non-words at temperature 1; 0.7 keeps the answers varied but mostly English.
TEMPERATURE = 0.7


def answer(model, tokenizer: ChatTokenizer, prompts: list[dict], *, seed: int, samples_per_prompt: int = 1,
           max_new_tokens: int = MAX_NEW_TOKENS, temperature: float = TEMPERATURE, greedy: bool = False) -> list[dict]:
    """Sample and judge responses in the chat format: one row per (prompt, sample) with the verdict."""
    ids = [tokenizer.prompt(p["instruction"]) for p in prompts for _ in range(samples_per_prompt)]
    meta = [p for p in prompts for _ in range(samples_per_prompt)]
    gen = torch.Generator().manual_seed(seed)
    out = sample(model, ids, max_new_tokens, temperature=temperature, greedy=greedy,
                 stop_tokens=(tokenizer.end_id,), generator=gen)
    rows = []
    for p, prompt_ids, toks in zip(meta, ids, out.tokens, strict=True):
        text, stopped = tokenizer.response_text(toks)
        v = T.judge(p["task"], p["arg"] or None, text, stopped)
        rows.append({**p, "prompt_ids": prompt_ids, "tokens": toks, "response": text, "stopped": stopped,
                     "passed": v.passed, "gold": v.gold, "constraint": v.constraint, "form": v.form})
    return rows


PLAIN_TEMPLATE = "Instruction: {instruction}\nAnswer:"


def plain_prompt(instruction: str, shots: list[tuple[str, str]] = ()) -> str:
    """Plain-text prompt: solved examples (instruction, answer) separated by blank lines, then the question."""
    parts = [PLAIN_TEMPLATE.format(instruction=i) + " " + a for i, a in shots]
    return "".join(part + "\n\n" for part in parts) + PLAIN_TEMPLATE.format(instruction=instruction)


def few_shot_examples(prompts: list[dict], shots: int, seed: int) -> list[list[tuple[str, str]]]:
    """For each prompt, ``shots`` solved examples of the same task from the instruction data's answers."""
    rng = random.Random(seed)
    out = []
    for p in prompts:
        args = T.task_arguments(p["task"])
        examples = []
        for _ in range(shots):
            arg = args[rng.randrange(len(args))]
            lines = T.answers(p["task"], arg)
            template = rng.randrange(len(T.TEMPLATES[p["task"]]))
            examples.append((T.instruction(p["task"], arg, template), lines[rng.randrange(len(lines))]))
        out.append(examples)
    return out


def answer_plain(model, base_tokenizer, prompts: list[dict], *, seed: int, shots: int = 0,
                 max_new_tokens: int = MAX_NEW_TOKENS, temperature: float = TEMPERATURE) -> list[dict]:
    """Sample and judge plain-text answers: the answer is the first line of the continuation; it "stopped" if
    the model ended that line (a newline) within ``max_new_tokens``."""
    examples = few_shot_examples(prompts, shots, seed) if shots else [[] for _ in prompts]
    texts = [plain_prompt(p["instruction"], ex) for p, ex in zip(prompts, examples, strict=True)]
    ids = [base_tokenizer.encoding.encode_ordinary(t) for t in texts]
    gen = torch.Generator().manual_seed(seed)
    out = sample(model, ids, max_new_tokens, temperature=temperature, generator=gen)
    rows = []
    for p, prompt_ids, toks in zip(prompts, ids, out.tokens, strict=True):
        text = base_tokenizer.decode(toks)
        stopped = "\n" in text
        line = text.split("\n", 1)[0].strip()
        v = T.judge(p["task"], p["arg"] or None, line, stopped)
        rows.append({**p, "prompt_ids": prompt_ids, "tokens": toks, "response": line, "stopped": stopped,
                     "passed": v.passed, "gold": v.gold, "constraint": v.constraint, "form": v.form})
    return rows


def summarize(rows: list[dict]) -> dict:
    """Pass rate per task (and mean over tasks), mean gold, stop rate and mean length in words."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    if not rows:
        raise ValueError("no rows to summarise")
    per_task = {t: sum(r["passed"] for r in rs) / len(rs) for t, rs in by_task.items()}
    return {"pass": per_task, "pass_mean": sum(per_task.values()) / len(per_task),
            "gold": sum(r["gold"] for r in rows) / len(rows),
            "gold_per_task": {t: sum(r["gold"] for r in rs) / len(rs) for t, rs in by_task.items()},
            "stopped": sum(r["stopped"] for r in rows) / len(rows),
            "words": sum(len(T.words(r["response"])) for r in rows) / len(rows)}


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the words of the texts (1.0: no n-gram repeats)."""
    if n < 1:
        raise ValueError(f"n={n}: must be >= 1")
    grams = [tuple(w.lower() for w in ws[i:i + n]) for ws in map(T.words, texts) for i in range(len(ws) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def validation_blocks(tokenizer, n_blocks: int, seq_len: int) -> list[list[int]]:
    """The first ``n_blocks`` blocks of ``seq_len + 1`` tokens of the validation plays (a fixed set)."""
    from insideout.gpt.data import iterate_blocks, packed_dataset, text_dataset

    blocks = []
    for block in iterate_blocks(packed_dataset(text_dataset("shakespeare", "validation"), tokenizer, seq_len)):
        blocks.append(block)
        if len(blocks) == n_blocks:
            break
    return blocks


@torch.no_grad()
def validation_nats_per_char(model, tokenizer, blocks: list[list[int]]) -> float:
    """Total next-token loss over the blocks divided by the characters of the predicted tokens."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    nats = chars = 0.0
    for block in blocks:
        ids = torch.tensor([block], dtype=torch.long, device=device)
        logits = model(ids[:, :-1])[0]
        nats += float(torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="sum").double())
        chars += len(tokenizer.decode(block[1:]))
    model.train(was_training)
    return nats / chars


def kl_to_reference(policy, reference, rows: list[dict], pad_id: int, temperature: float = TEMPERATURE) -> float:
    """Mean over rows of sum_t [log pi(y_t) - log pi_ref(y_t)] for responses sampled from ``policy`` (k1), both
    distributions at the sampling temperature."""
    prompts = [r["prompt_ids"] for r in rows]
    responses = [r["tokens"] for r in rows]
    lp = response_logprobs(policy, prompts, responses, pad_id, temperature=temperature)
    lq = response_logprobs(reference, prompts, responses, pad_id, temperature=temperature)
    return float(sum(float((a - b).double().sum()) for a, b in zip(lp, lq, strict=True)) / len(rows))
