"""The runs of Part 4, each a deterministic function of the preset whose result is cached.

Every chapter calls these functions; the first call trains or samples (and caches), later calls — in the same
chapter run again, in a later chapter, or in the final table — load. A chapter executed on its own therefore
recomputes exactly what it needs. Keys chain: a run's cache key contains the keys of the runs it builds on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import torch

from insideout.cache import cached, key_digest
from insideout.reasoning.data import prompt_ids
from insideout.reasoning.evaluate import Solutions, solve
from insideout.reasoning.models import (
    ReasonerConfig,
    TrainedReasoner,
    positions_per_step,
    preset_config,
    reasoner,
)
from insideout.reasoning.task import DEFAULT_SPLIT, ProblemStream, check_trace, held_out_problems
from insideout.reasoning.tokenizer import CharTokenizer
from insideout.utils import get_preset

TOK = CharTokenizer()
SPLIT = DEFAULT_SPLIT


def _plain(obj) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj))


def held_out():
    """The fixed held-out test set of the part (512 problems, levels 1-8)."""
    return held_out_problems(SPLIT)


def exclude_set() -> set[str]:
    return {p.text for p in held_out()}


# ---- chapter 01: the chain-of-thought model and its direct-answer twin ---------------------------------------


def cot_config(preset: str | None = None) -> ReasonerConfig:
    """The chain-of-thought model of the preset; the run keeps a snapshot at 80% of its steps (GRPO's start)."""
    config = preset_config(preset)
    return dataclasses.replace(config, snapshot_steps=(round(0.8 * config.steps),))


def direct_config(preset: str | None = None) -> ReasonerConfig:
    """The direct-answer twin: the same model and optimiser, trained on as many token positions as the CoT run.

    Its sequences are shorter, so it takes more steps (and sees more problems) for the same compute: a training
    step costs about 6 x parameters x positions floating-point operations for both.
    """
    cot = cot_config(preset)
    base = dataclasses.replace(cot, fmt="direct", snapshot_steps=(), p_error=0.0, p_confirm=0.0)
    cot_positions = cot.steps * positions_per_step(cot, SPLIT)
    steps = math.ceil(cot_positions / positions_per_step(base, SPLIT))
    warmup = round(cot.warmup_steps * steps / cot.steps)
    return dataclasses.replace(base, steps=steps, warmup_steps=warmup)


def cot_model(preset: str | None = None, device=None, log=print) -> TrainedReasoner:
    return reasoner(cot_config(preset), SPLIT, device, log=log)


def direct_model(preset: str | None = None, device=None, log=print) -> TrainedReasoner:
    return reasoner(direct_config(preset), SPLIT, device, log=log)


def grpo_start(preset: str | None = None, device=None, log=print):
    """The deliberately undertrained starting point of GRPO: the CoT run's snapshot at 80% of its steps."""
    run = cot_model(preset, device, log=log)
    return run.snapshot(run.config.snapshot_steps[0])


def cot_key(preset: str | None = None) -> str:
    """The digest of the CoT model's whole cache key (config, split, tokenizer, example format)."""
    from insideout.reasoning.models import _key

    return key_digest(_key(cot_config(preset), SPLIT, TOK))


# ---- chapter 02: sampled solutions of the test set --------------------------------------------------------


SAMPLES = 32  # samples per test problem (chapters 02 and 04)
TEMPERATURE = 1.0


def _pack_tokens(rows: list[list[int]]) -> torch.Tensor:
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), -1, dtype=torch.int16)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.int16)
    return out


def _unpack_tokens(t: torch.Tensor) -> list[list[int]]:
    return [[int(x) for x in row if x >= 0] for row in t.tolist()]


def sampled_solutions(preset: str | None = None, device=None, log=print) -> Solutions:
    """``SAMPLES`` solutions per test problem from the CoT model at temperature 1, in one batched run (cached)."""
    preset = get_preset(preset)
    problems = held_out()
    key = {"model": cot_key(preset), "n": SAMPLES, "temperature": TEMPERATURE, "seed": 2, "split": _plain(SPLIT)}

    def run():
        model = cot_model(preset, device, log=None).model
        gen = torch.Generator().manual_seed(2)
        sols = solve(model, problems, n=SAMPLES, temperature=TEMPERATURE, generator=gen)
        tokens = [TOK.encode(t) for row in sols.texts for t in row]
        return {"tokens": _pack_tokens(tokens)}, {"tokens": sols.tokens, "forward_calls": sols.forward_calls,
                                                  "seconds": sols.seconds}

    art = cached("reasoning-samples", key, run, log=log)
    flat = _unpack_tokens(art.tensors["tokens"])
    sols = Solutions(problems, tokens=art.meta["tokens"], forward_calls=art.meta["forward_calls"],
                     seconds=art.meta["seconds"])
    for i, p in enumerate(problems):
        texts = [TOK.decode(flat[i * SAMPLES + j]) for j in range(SAMPLES)]
        sols.texts.append(texts)
        sols.checks.append([check_trace(p, t) for t in texts])
    return sols


def training_problems(n: int, tag: str, levels=None) -> list:
    """``n`` fresh training-level problems from their own seeded stream (never a test problem)."""
    stream = ProblemStream(tuple(levels or SPLIT.train_levels), f"{tag}", exclude_set())
    return [next(stream) for _ in range(n)]


# ---- rows of the part's table ------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    """One technique on the test set: accuracy by level, and what it spent per problem."""

    technique: str
    chapter: str
    accuracy: dict[int, float]  # level -> accuracy
    overall: float
    tokens: float  # generated tokens per problem (policy), all samples, steps and rollouts
    calls: float  # model calls per problem: sampled solutions or steps, plus reward-model gradings
    seconds: float  # wall-clock seconds for the whole test set on this machine (not compared by the checks)


def row_from_correct(technique: str, chapter: str, correct: list[float], tokens: float, calls: float,
                     seconds: float) -> Row:
    problems = held_out()
    from insideout.reasoning.evaluate import by_level

    return Row(technique, chapter, by_level(problems, correct), sum(correct) / len(correct), tokens / len(problems),
               calls / len(problems), seconds)


def rows_frame(rows: list[Row], seconds: bool = False):
    """The rows as a DataFrame: accuracy per level, overall, tokens and calls per problem (and seconds)."""
    import pandas as pd

    data = {}
    for r in rows:
        entry = {f"L{lv}": round(a, 3) for lv, a in r.accuracy.items()}
        entry.update({"all": round(r.overall, 3), "tokens/problem": round(r.tokens, 1),
                      "calls/problem": round(r.calls, 1)})
        if seconds:
            entry["seconds"] = round(r.seconds, 1)
        data[r.technique] = entry
    frame = pd.DataFrame(data).T
    frame.index.name = "technique"
    return frame


def rows_greedy(preset: str | None = None, device=None, log=print) -> list[Row]:
    """Chapter 01's rows: the direct-answer model and the CoT model, greedy."""
    out = []
    for name, run in (("direct answer (greedy)", direct_model(preset, device, log=log)),
                      ("chain of thought (greedy)", cot_model(preset, device, log=log))):
        s = solve(run.model, held_out(), greedy=True)
        out.append(row_from_correct(name, "01", [float(r[0]) for r in s.correct()], s.tokens, len(held_out()),
                                    s.seconds))
    return out


def rows_self_consistency(preset: str | None = None, device=None, log=print, ks=(8, 32)) -> list[Row]:
    """Chapter 02's rows: majority vote over k of the 32 samples (accuracy over disjoint groups of k)."""
    from insideout.reasoning.voting import grouped_vote_accuracy

    s = sampled_solutions(preset, device, log=log)
    n = len(s.texts[0])
    truths = [p.answer for p in held_out()]
    out = []
    for k in ks:
        correct = grouped_vote_accuracy(s.answers(), truths, k)
        out.append(row_from_correct(f"self-consistency, k={k}", "02", correct, s.tokens * k / n,
                                    len(held_out()) * k, s.seconds * k / n))
    return out


# ---- chapter 03: process and outcome reward models ---------------------------------------------------------


REWARD_PROBLEMS = 1024  # fresh training-level problems whose sampled traces train the reward models
REWARD_SAMPLES = 4


def reward_config(kind: str, preset: str | None = None):
    from insideout.reasoning.reward import RewardConfig

    steps = 160 if get_preset(preset) == "cpu" else 1000
    return RewardConfig(kind=kind, steps=steps, batch_size=32, lr=1e-3, warmup_steps=10, seed=0)


def reward_training_data(preset: str | None = None, device=None):
    """Traces the CoT model samples (temperature 1) on fresh training-level problems, labelled by the checker."""
    from insideout.reasoning.reward import labelled_traces

    model = cot_model(preset, device, log=None).model
    problems = training_problems(REWARD_PROBLEMS, "reward-models")
    sols = solve(model, problems, n=REWARD_SAMPLES, temperature=TEMPERATURE,
                 generator=torch.Generator().manual_seed(3))
    flat_p = [p for p in problems for _ in range(REWARD_SAMPLES)]
    flat_t = [t for row in sols.texts for t in row]
    flat_c = [c for row in sols.checks for c in row]
    return labelled_traces(flat_p, flat_t, flat_c), sols


def reward_models(preset: str | None = None, device=None, log=print):
    """(PRM, ORM, metadata): both initialised from the CoT model and trained on the same sampled traces (cached)."""
    from insideout.gpt.model import GPT
    from insideout.reasoning.reward import RewardGPT, train_reward_model

    preset = get_preset(preset)
    configs = {k: reward_config(k, preset) for k in ("prm", "orm")}
    key = {"model": cot_key(preset), "problems": REWARD_PROBLEMS, "samples": REWARD_SAMPLES, "seed": 3,
           "configs": {k: c.to_dict() for k, c in configs.items()}}

    def run():
        base = cot_model(preset, device, log=None).model
        traces, sols = reward_training_data(preset, device)
        tensors, meta = {}, {"traces": len(traces), "sampled_tokens": sols.tokens,
                             "steps_labelled": sum(len(t.ends) for t in traces),
                             "steps_off_path": sum(1 for t in traces for y in t.step_labels if y < 0.5),
                             "traces_wrong": sum(1 for t in traces if t.outcome < 0.5)}
        for kind, config in configs.items():
            model, info = train_reward_model(base, traces, config)
            tensors.update({f"{kind}.{k}": v for k, v in model.state_dict().items() if k != "gpt.lm_head.weight"})
            meta[kind] = info
        return tensors, meta

    art = cached("reasoning-rewards", key, run, log=log)
    cfg = cot_config(preset).gpt_config(TOK.vocab_size)
    out = []
    for kind in ("prm", "orm"):
        model = RewardGPT(GPT(cfg))
        state = {k.removeprefix(f"{kind}."): v for k, v in art.tensors.items() if k.startswith(f"{kind}.")}
        state["gpt.lm_head.weight"] = state["gpt.tok_emb.weight"]
        model.load_state_dict(state)
        out.append(model.eval().to(device or "cpu"))
    return out[0], out[1], art.meta


def sample_scores(preset: str | None = None, device=None, log=print) -> dict:
    """The PRM's step scores and both models' final scores of every sampled test solution (cached)."""
    from insideout.reasoning.reward import final_scores, trace_step_scores

    preset = get_preset(preset)
    key = {"samples": {"model": cot_key(preset), "n": SAMPLES, "seed": 2},
           "rewards": {k: reward_config(k, preset).to_dict() for k in ("prm", "orm")}, "version": 1}

    def run():
        s = sampled_solutions(preset, device, log=None)
        prm, orm, _ = reward_models(preset, device, log=None)
        problems = [p for p in held_out() for _ in range(SAMPLES)]
        texts = [t for row in s.texts for t in row]
        start = time.perf_counter()
        steps = trace_step_scores(prm, problems, texts)
        prm_seconds = time.perf_counter() - start
        start = time.perf_counter()
        orm_final = final_scores(orm, problems, texts)
        orm_seconds = time.perf_counter() - start
        width = max(1, max(len(x) for x in steps))
        t = torch.full((len(steps), width), -1.0)
        for i, row in enumerate(steps):
            t[i, : len(row)] = torch.tensor(row)
        return ({"prm_steps": t, "orm_final": torch.tensor(orm_final)},
                {"prm_seconds": prm_seconds, "orm_seconds": orm_seconds})

    art = cached("reasoning-scores", key, run, log=log)
    prm_steps = [[float(x) for x in row if x >= 0] for row in art.tensors["prm_steps"].tolist()]
    return {"prm_steps": prm_steps, "orm_final": art.tensors["orm_final"].tolist(), **art.meta}


def orm_step_scores(preset: str | None = None, device=None, log=print) -> list[list[float]]:
    """The ORM read at the end of every line of every sampled test solution (cached; for chapter 03's AUC)."""
    from insideout.reasoning.reward import step_end_positions

    preset = get_preset(preset)
    key = {"samples": {"model": cot_key(preset), "n": SAMPLES, "seed": 2},
           "orm": reward_config("orm", preset).to_dict(), "version": 1}

    def run():
        from insideout.reasoning.reward import score_positions

        s = sampled_solutions(preset, device, log=None)
        _, orm, _ = reward_models(preset, device, log=None)
        seqs, where = [], []
        for p, row in zip(held_out(), s.texts, strict=True):
            prompt = prompt_ids(TOK, p)
            for text in row:
                ids = prompt + TOK.encode(text) + [TOK.eos_id]
                seqs.append(ids)
                where.append(step_end_positions(ids, len(prompt)))
        steps = score_positions(orm, seqs, where)
        width = max(1, max(len(x) for x in steps))
        t = torch.full((len(steps), width), -1.0)
        for i, row in enumerate(steps):
            t[i, : len(row)] = torch.tensor(row)
        return {"orm_steps": t}, {}

    art = cached("reasoning-orm-steps", key, run, log=log)
    return [[float(x) for x in row if x >= 0] for row in art.tensors["orm_steps"].tolist()]


# ---- chapter 04: best-of-N ---------------------------------------------------------------------------------


def best_of_n_inputs(preset: str | None = None, device=None, log=print):
    """(answers, truths, PRM step scores, ORM final scores), per problem and sample, of the cached samples."""
    s = sampled_solutions(preset, device, log=log)
    sc = sample_scores(preset, device, log=log)
    n = len(s.texts[0])
    prm = [sc["prm_steps"][i * n:(i + 1) * n] for i in range(len(held_out()))]
    orm = [sc["orm_final"][i * n:(i + 1) * n] for i in range(len(held_out()))]
    return s, sc, s.answers(), [p.answer for p in held_out()], prm, orm


def rows_best_of_n(preset: str | None = None, device=None, log=print,
                   choices=(("PRM-min", 8), ("ORM", 32), ("PRM-min", 32), ("PRM-weighted vote", 32), ("oracle", 32))
                   ) -> list[Row]:
    """Chapter 04's rows: reranking N of the 32 samples; 'oracle' is pass@N (a ceiling, not a method)."""
    from insideout.reasoning.rerank import grouped_accuracy

    s, sc, answers, truths, prm, orm = best_of_n_inputs(preset, device, log)
    n, P = len(s.texts[0]), len(held_out())
    out = []
    for method, N in choices:
        correct = grouped_accuracy(method, N, answers, truths, prm, orm)
        grading = 0.0 if method in ("oracle", "majority vote") else N / n * (
            sc["orm_seconds"] if method == "ORM" else sc["prm_seconds"])
        calls = P * N * (1 if method == "oracle" else 2)
        name = f"best-of-{N}, {method}" if method != "oracle" else f"oracle pass@{N} (ceiling)"
        out.append(row_from_correct(name, "04", correct, s.tokens * N / n, calls, s.seconds * N / n + grading))
    return out


# ---- chapters 05 and 06: search over steps -------------------------------------------------------------------


def _search_result(kind: str, params: dict, preset: str | None, device, log) -> dict:
    """Run a search on the test set once (cached): per-problem correctness, texts and the cost.

    ``params`` are the search's arguments, plus optionally ``seed`` and ``value`` ('prm', the default, or
    'checker': the exact step values from the answer key, a ceiling).
    """
    from insideout.reasoning.search import beam_search, checker_values, mcts

    if kind not in ("beam", "mcts"):
        raise ValueError(f"search kind {kind!r}: choose 'beam' or 'mcts'")
    value = params.get("value", "prm")
    if value not in ("prm", "checker"):
        raise ValueError(f"search value {value!r}: choose 'prm' or 'checker'")
    preset = get_preset(preset)
    key = {"search": kind, "params": params, "model": cot_key(preset),
           "rewards": reward_config("prm", preset).to_dict(), "version": 2}

    def run():
        policy = cot_model(preset, device, log=None).model
        prm = reward_models(preset, device, log=None)[0] if value == "prm" else None
        gen = torch.Generator().manual_seed(params.get("seed", 5))
        fn = beam_search if kind == "beam" else mcts
        args = {k: v for k, v in params.items() if k not in ("seed", "value")}
        res = fn(policy, prm, held_out(), generator=gen, scorer=checker_values if value == "checker" else None,
                 **args)
        meta = {"correct": [float(c) for c in res.correct], "tokens": res.tokens, "policy_calls": res.policy_calls,
                "reward_calls": res.reward_calls, "seconds": res.seconds, "cpu_seconds": res.cpu_seconds,
                "texts": [t if t is not None else "" for t in res.texts]}
        return {"done": torch.ones(1)}, meta

    return cached(f"reasoning-{kind}", key, run, log=log).meta


BEAM_SETTINGS = ({"beam_width": 1, "expand": 2}, {"beam_width": 2, "expand": 2}, {"beam_width": 4, "expand": 2})


def beam_results(preset: str | None = None, device=None, log=print, settings=BEAM_SETTINGS) -> list[dict]:
    return [{"params": s, **_search_result("beam", dict(s), preset, device, log)} for s in settings]


MCTS_SETTINGS = ({"simulations": 4, "expand": 2}, {"simulations": 8, "expand": 2}, {"simulations": 16, "expand": 2},
                 {"simulations": 32, "expand": 2})


def mcts_results(preset: str | None = None, device=None, log=print, settings=MCTS_SETTINGS) -> list[dict]:
    return [{"params": s, **_search_result("mcts", dict(s), preset, device, log)} for s in settings]


MCTS_CHECKER_SETTINGS = ({"simulations": 8, "expand": 2, "value": "checker"},
                         {"simulations": 32, "expand": 2, "value": "checker"})  # chapter 06's ceiling


def rows_mcts(preset: str | None = None, device=None, log=print) -> list[Row]:
    """Chapter 06's rows: UCT with PRM values at 8 and 32 simulations, and at 32 with the checker's exact values
    (a ceiling that uses the answer key, not a method)."""
    out = []
    for r in mcts_results(preset, device, log=log):
        if r["params"]["simulations"] in (8, 32):
            out.append(search_row(f"MCTS (PRM), {r['params']['simulations']} simulations", "06", r))
    r = mcts_results(preset, device, log=log, settings=MCTS_CHECKER_SETTINGS[1:])[0]
    out.append(search_row(f"MCTS (exact step values, ceiling), {r['params']['simulations']} simulations", "06", r))
    return out


def search_row(name: str, chapter: str, result: dict) -> Row:
    return row_from_correct(name, chapter, result["correct"], result["tokens"],
                            result["policy_calls"] + result["reward_calls"], result["seconds"])


CHECKER_BEAM = {"beam_width": 2, "expand": 2, "value": "checker"}  # chapter 05's ceiling: exact step values


def rows_tree_search(preset: str | None = None, device=None, log=print) -> list[Row]:
    """Chapter 05's rows: PRM-guided beam search at each width of ``BEAM_SETTINGS``, and the same search with the
    checker's exact step values (a ceiling that uses the answer key, not a method)."""
    out = []
    for r in beam_results(preset, device, log=log):
        p = r["params"]
        out.append(search_row(f"beam search (PRM), width {p['beam_width']} x {p['expand']}", "05", r))
    r = _search_result("beam", dict(CHECKER_BEAM), preset, device, log)
    out.append(search_row(f"beam search (exact step values, ceiling), width {CHECKER_BEAM['beam_width']} x "
                          f"{CHECKER_BEAM['expand']}", "05", r))
    return out


# ---- chapter 07: budget forcing ----------------------------------------------------------------------------


def budget_run(kind: str, value: int, preset: str | None = None, device=None, log=print,
               temperature: float | None = None, seed: int = 6) -> Solutions:
    """The CoT model on the test set with its thinking capped at ``value`` tokens (kind 'cap') or extended to at
    least ``value`` waits (kind 'wait'); greedy unless a temperature is given."""
    from insideout.reasoning.budget import cap_hook, wait_hook

    if kind not in ("cap", "wait"):
        raise ValueError(f"budget kind {kind!r}: choose 'cap' or 'wait'")
    hook = cap_hook(value) if kind == "cap" else wait_hook(value)
    model = cot_model(preset, device, log=log).model
    if temperature is None:
        return solve(model, held_out(), greedy=True, logits_hook=hook)
    return solve(model, held_out(), temperature=temperature, logits_hook=hook,
                 generator=torch.Generator().manual_seed(seed))


BUDGET_CAPS = (0, 6, 12, 18, 24, 30, 36, 48)  # chapter 07's thinking caps (tokens; a line is 6 tokens)
BUDGET_WAITS = (0, 1, 2, 4)  # chapter 07's minimum numbers of waits


def budget_result(kind: str, value: int, preset: str | None = None, device=None, log=print) -> dict:
    """Per-problem correctness and the cost of a greedy budget-forcing run on the test set (cached)."""
    preset = get_preset(preset)
    key = {"kind": kind, "value": value, "model": cot_key(preset), "decoding": "greedy", "version": 1}

    def run():
        cpu = time.process_time()
        s = budget_run(kind, value, preset, device, log=None)
        return {"done": torch.ones(1)}, {"correct": [float(r[0]) for r in s.correct()], "tokens": s.tokens,
                                         "seconds": s.seconds, "cpu_seconds": time.process_time() - cpu}

    return cached("reasoning-budget", key, run, log=log).meta


def rows_budget(preset: str | None = None, device=None, log=print, caps=(12, 24, 36), waits=(1, 2)) -> list[Row]:
    """Chapter 07's rows: greedy decoding with the thinking capped at B tokens, or extended to >= W waits."""
    out = []
    for kind, values in (("cap", caps), ("wait", waits)):
        for v in values:
            r = budget_result(kind, v, preset, device, log)
            name = f"budget forcing, cap {v} thinking tokens" if kind == "cap" else f"budget forcing, >= {v} waits"
            out.append(row_from_correct(name, "07", r["correct"], r["tokens"], len(held_out()), r["seconds"]))
    return out


# ---- chapter 08: GRPO ----------------------------------------------------------------------------------------


def validation_problems() -> list:
    """128 held-out problems (16 per level 1-8) for training curves, disjoint from the test set."""
    from insideout.reasoning.task import SplitConfig

    val = held_out_problems(SplitConfig(per_level=16, seed=SPLIT.seed), seed_tag="validation")
    test = exclude_set()
    return [p for p in val if p.text not in test]


GRPO_BETA = 0.1  # the KL penalty of the 'beta' run
EVAL_SAMPLES = 4  # samples per problem when the accuracy of one sample (temperature 1) is measured


def grpo_config(variant: str = "beta", preset: str | None = None):
    """The GRPO runs of chapter 08: 'beta0' (no KL penalty), 'beta' (KL penalty ``GRPO_BETA``), 'nostd' (no
    division by the group's standard deviation, beta 0)."""
    from insideout.reasoning.grpo import GRPOConfig

    cpu = get_preset(preset) == "cpu"
    base = GRPOConfig(steps=40 if cpu else 300, problems_per_step=16 if cpu else 64, group_size=8,
                      updates_per_batch=2, lr=3e-4, warmup_steps=4, clip_eps=0.2, beta=0.0, scale="group",
                      eval_every=5 if cpu else 25, seed=0)
    variants = {"beta0": {}, "beta": {"beta": GRPO_BETA}, "nostd": {"scale": "none"}}
    if variant not in variants:
        raise ValueError(f"GRPO variant {variant!r}: choose one of {', '.join(variants)}")
    return dataclasses.replace(base, **variants[variant])


def greedy_accuracy(model, problems) -> float:
    s = solve(model, problems, greedy=True)
    return sum(r[0] for r in s.correct()) / len(problems)


def sampled_accuracy(model, problems, n: int = EVAL_SAMPLES, seed: int = 11) -> float:
    """The accuracy of one solution sampled at temperature 1: the mean over ``n`` samples per problem (seeded, so
    two models are compared on the same random numbers)."""
    s = solve(model, problems, n=n, temperature=1.0, generator=torch.Generator().manual_seed(seed))
    return sum(s.mean_correct()) / len(problems)


def grpo_policy(variant: str = "beta", preset: str | None = None, device=None, log=print):
    """(policy, history) of a GRPO run from the undertrained snapshot of the CoT run (cached). The history holds
    the held-out accuracy (validation problems) of one sample at temperature 1 and of the greedy chain."""
    from insideout.gpt.model import GPT
    from insideout.reasoning.grpo import train_grpo

    preset = get_preset(preset)
    config = grpo_config(variant, preset)
    key = {"start": cot_key(preset), "snapshot": cot_config(preset).snapshot_steps[0], "config": config.to_dict(),
           "eval_samples": EVAL_SAMPLES, "version": 2}

    def run():
        start = grpo_start(preset, device, log=None)
        val = validation_problems()
        exclude = exclude_set() | {p.text for p in val}
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        policy, history = train_grpo(start, config, exclude=exclude, log=log, evaluate=lambda m: {
            "sampled": sampled_accuracy(m, val), "greedy": greedy_accuracy(m, val)})
        history["train_cpu_s"] = time.process_time() - cpu0
        history["train_wall_s"] = time.perf_counter() - wall0
        return {k: v for k, v in policy.state_dict().items() if k != "lm_head.weight"}, history

    art = cached("reasoning-grpo", key, run, log=log)
    model = GPT(cot_config(preset).gpt_config(TOK.vocab_size))
    model.load_state_dict_strict(art.tensors)
    return model.to(device or "cpu").eval(), art.meta


GRPO_NAMES = {"beta0": "GRPO, beta 0", "beta": f"GRPO, beta {GRPO_BETA}", "nostd": "GRPO, no std scaling"}


def rows_grpo(preset: str | None = None, device=None, log=print, variants=("beta0", "beta", "nostd"),
              sampled: bool = True) -> list[Row]:
    """Chapter 08's rows: the starting snapshot and each GRPO policy, greedy and (``sampled``) one sample at
    temperature 1 (accuracy averaged over ``EVAL_SAMPLES`` samples per problem; tokens and calls of one)."""
    out = []
    models = [("GRPO start (undertrained CoT)", grpo_start(preset, device, log=log))]
    models += [(GRPO_NAMES[v], grpo_policy(v, preset, device, log=log)[0]) for v in variants]
    P = len(held_out())
    for name, model in models:
        s = solve(model, held_out(), greedy=True)
        out.append(row_from_correct(f"{name}, greedy", "08", [float(r[0]) for r in s.correct()], s.tokens, P,
                                    s.seconds))
        if sampled:
            s = solve(model, held_out(), n=EVAL_SAMPLES, temperature=1.0,
                      generator=torch.Generator().manual_seed(11))
            out.append(row_from_correct(f"{name}, one sample (T=1)", "08", s.mean_correct(),
                                        s.tokens / EVAL_SAMPLES, P, s.seconds / EVAL_SAMPLES))
    return out


# ---- chapter 09: distillation --------------------------------------------------------------------------------


DISTILL_PROBLEMS = 4096  # fresh training-level problems the teacher solves


def student_config(mode: str = "sft", preset: str | None = None):
    from insideout.reasoning.distill import StudentConfig

    if get_preset(preset) == "cpu":
        return StudentConfig(d_model=48, n_layer=2, n_head=4, steps=800, batch_size=32, lr=3e-3, warmup_steps=30,
                             mode=mode)
    return StudentConfig(d_model=128, n_layer=4, n_head=4, steps=2000, batch_size=64, lr=1e-3, warmup_steps=100,
                         mode=mode)


def teacher_model(preset: str | None = None, device=None, log=print):
    """The teacher of chapter 09: the fully trained CoT model, the part's best system at one call per problem
    (self-consistency and reranking match or beat it only with many samples)."""
    return cot_model(preset, device, log=log).model


def teacher_traces(preset: str | None = None, device=None, log=print):
    """The teacher solves ``DISTILL_PROBLEMS`` fresh training-level problems, greedily; a trace is kept when the
    checker accepts it (right answer, well formed) (cached). Returns (problems, texts, kept flags, meta)."""
    from insideout.reasoning.task import parse_problem

    preset = get_preset(preset)
    key = {"teacher": cot_key(preset), "problems": DISTILL_PROBLEMS, "decoding": "greedy", "version": 2}

    def run():
        teacher = teacher_model(preset, device, log=None)
        problems = training_problems(DISTILL_PROBLEMS, "distillation")
        s = solve(teacher, problems, greedy=True)
        texts = [row[0] for row in s.texts]
        kept = [float(row[0].reward) for row in s.checks]
        toks = _pack_tokens([TOK.encode(p.text + "\n" + t) for p, t in zip(problems, texts, strict=True)])
        return {"tokens": toks, "kept": torch.tensor(kept)}, {"tokens": s.tokens, "seconds": s.seconds}

    art = cached("reasoning-teacher-traces", key, run, log=log)
    problems, texts = [], []
    for row in _unpack_tokens(art.tensors["tokens"]):
        text = TOK.decode(row)
        head, _, rest = text.partition("\n")
        problems.append(parse_problem(head))
        texts.append(rest)
    return problems, texts, [bool(k) for k in art.tensors["kept"].tolist()], art.meta


STUDENT_MODES = ("teacher", "gold", "logits")


def student(mode: str, preset: str | None = None, device=None, log=print):
    """A student trained on the teacher's accepted traces ('teacher'), on gold traces of the same problems ('gold'),
    or by matching the teacher's logits on its accepted traces ('logits'). Returns (model, meta) (cached)."""
    import random as _random

    from insideout.gpt.model import GPT
    from insideout.reasoning.data import example_ids
    from insideout.reasoning.distill import train_student

    if mode not in STUDENT_MODES:
        raise ValueError(f"student mode {mode!r}: choose one of {', '.join(STUDENT_MODES)}")
    preset = get_preset(preset)
    config = student_config("kl" if mode == "logits" else "sft", preset)
    key = {"mode": mode, "config": config.to_dict(), "teacher": cot_key(preset), "problems": DISTILL_PROBLEMS,
           "decoding": "greedy", "version": 2}

    def run():
        problems, texts, kept, _ = teacher_traces(preset, device, log=None)
        chosen = [(p, t) for p, t, k in zip(problems, texts, kept, strict=True) if k]
        if mode == "gold":
            cot = cot_config(preset)
            rng = _random.Random("gold-traces")
            examples = [example_ids(TOK, p, "cot", rng, cot.p_error, cot.p_confirm) for p, _ in chosen]
        else:
            examples = []
            for p, t in chosen:
                prompt = prompt_ids(TOK, p)
                examples.append((prompt + TOK.encode(t) + [TOK.eos_id], len(prompt)))
        teacher = teacher_model(preset, device, log=None) if mode == "logits" else None
        wall0 = time.perf_counter()
        model, meta = train_student(examples, config, teacher=teacher)
        meta["train_wall_s"] = time.perf_counter() - wall0
        return {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}, meta

    art = cached("reasoning-student", key, run, log=log)
    model = GPT(config.gpt_config())
    model.load_state_dict_strict(art.tensors)
    return model.to(device or "cpu").eval(), art.meta


STUDENT_NAMES = {"gold": "student on gold traces", "teacher": "student on teacher traces",
                 "logits": "student, logit distillation"}


def rows_distillation(preset: str | None = None, device=None, log=print) -> list[Row]:
    """Chapter 09's rows: the three students, greedy."""
    out = []
    for mode in ("gold", "teacher", "logits"):
        model, _ = student(mode, preset, device, log=log)
        s = solve(model, held_out(), greedy=True)
        out.append(row_from_correct(f"{STUDENT_NAMES[mode]} (greedy)", "09", [float(r[0]) for r in s.correct()],
                                    s.tokens, len(held_out()), s.seconds))
    return out
