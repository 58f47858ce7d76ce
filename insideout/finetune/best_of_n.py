"""Best-of-N: sample N answers from the SFT policy, keep the one the reward model scores highest.

Estimator. With ``n`` samples per prompt, the expected value of any quantity of the best-of-N answer (N <= n) is
estimated without bias by averaging over **all** N-subsets of the ``n`` samples (a U-statistic): sort the samples
by proxy reward; the one of rank k (1 = lowest) is the best of a random N-subset with probability
:math:`\\binom{k-1}{N-1} / \\binom{n}{N}`. One set of 16 samples per prompt gives every N from 1 to 16.

KL. If all answers are distinct with distinct rewards, the best-of-N policy's KL from the sampling policy is
:math:`\\log N - (N - 1)/N` (Stiennon et al., 2020); when answers repeat it is an upper bound (Beirami et al.,
2024). ``exact_bon_kl`` computes the exact value on a discrete distribution, which checks the formula.
"""

from __future__ import annotations

import math
import time

import torch

from insideout.cache import cached


def analytic_kl(n: int) -> float:
    """KL(best-of-n || policy) = log n - (n - 1) / n for distinct answers with distinct rewards."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"N={n!r}: best-of-N needs an integer N >= 1")
    return math.log(n) - (n - 1) / n


def subset_weights(n: int, N: int) -> torch.Tensor:
    """(n,) float64: probability that the sample of rank k (0 = lowest of n) is the best of a random N-subset."""
    if not 1 <= N <= n:
        raise ValueError(f"N={N}: best-of-N from {n} samples per prompt needs 1 <= N <= {n}")
    total = math.comb(n, N)
    return torch.tensor([math.comb(k, N - 1) / total for k in range(n)], dtype=torch.float64)


def best_of_n_mean(proxy: torch.Tensor, value: torch.Tensor, N: int) -> float:
    """Expected ``value`` of the best-of-N answer by ``proxy``, averaged over prompts: proxy, value (P, n)."""
    if proxy.shape != value.shape or proxy.dim() != 2:
        raise ValueError(f"proxy {tuple(proxy.shape)} and value {tuple(value.shape)} must both be (prompts, n)")
    order = proxy.double().argsort(dim=1, stable=True)  # ascending: rank 0 = lowest proxy
    ranked = value.double().gather(1, order)
    return float((ranked @ subset_weights(proxy.shape[1], N)).mean())


def exact_bon_kl(probs: torch.Tensor, N: int) -> float:
    """Exact KL(best-of-N || p) for a discrete distribution ``probs`` whose outcomes are sorted by distinct
    rewards (ascending): outcome i is the best of N draws with probability F_i^N - F_{i-1}^N."""
    p = probs.double() / probs.double().sum()
    F = p.cumsum(0)
    q = F.pow(N) - torch.cat([torch.zeros(1, dtype=torch.float64), F[:-1]]).pow(N)
    keep = q > 0
    return float((q[keep] * (q[keep] / p[keep]).log()).sum())


def bon_samples(preset: str, n: int = 16) -> dict:
    """``n`` SFT samples per evaluation prompt, judged (gold) and scored by the reward model: cached.

    Returns {"prompts": [...], "gold": (P, n), "proxy": (P, n), "passed": (P, n), "words": (P, n),
    "distinct": (P,) distinct answers per prompt, "responses": [[str]], "sample_seconds", "sample_cpu_seconds"}.
    """
    from insideout.finetune import tasks as T
    from insideout.finetune.evaluate import TEMPERATURE, answer
    from insideout.finetune.recipes import (
        SAMPLER,
        chat_base,
        evaluation_prompts,
        recipe,
        reward_fn,
        reward_model,
        sft_policy,
    )

    r = recipe(preset)
    sft, rm = sft_policy(preset), reward_model(preset)
    _, chat, _ = chat_base(preset)
    prompts = evaluation_prompts(preset)
    key = {"stage": "best_of_n", "sft": sft.key, "reward": rm.key, "n": n, "prompts": "evaluation_prompts/1",
           "eval_per_task": r.eval_per_task, "seed": r.eval_seed, "sampler": SAMPLER, "temperature": TEMPERATURE}

    def train():
        t0, c0 = time.perf_counter(), time.process_time()
        rows = answer(sft.model, chat, prompts, seed=r.eval_seed + 16, samples_per_prompt=n)
        proxy = reward_fn(rm.model, chat.eot_id)([row["prompt_ids"] for row in rows], [row["tokens"] for row in rows])
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        P = len(prompts)
        tensors = {"gold": torch.tensor([row["gold"] for row in rows], dtype=torch.float64).view(P, n),
                   "proxy": proxy.double().view(P, n),
                   "passed": torch.tensor([row["passed"] for row in rows]).view(P, n),
                   "words": torch.tensor([len(T.words(row["response"])) for row in rows]).view(P, n)}
        return tensors, {"responses": [row["response"] for row in rows],
                         "distinct": [len({tuple(row["tokens"]) for row in rows[i * n:(i + 1) * n]})
                                      for i in range(P)],
                         "sample_seconds": seconds, "sample_cpu_seconds": cpu, "role": "data"}

    art = cached("ft-bon", key, train, log=None)
    responses = art.meta["responses"]
    return {"prompts": prompts, **art.tensors, "distinct": torch.tensor(art.meta["distinct"]),
            "responses": [responses[i * n:(i + 1) * n] for i in range(len(prompts))],
            "sample_seconds": art.meta["sample_seconds"], "sample_cpu_seconds": art.meta["sample_cpu_seconds"],
            "trained_now": art.trained_now, "key": key}
