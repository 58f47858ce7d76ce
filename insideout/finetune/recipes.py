"""Every model of Part 3, trained by one deterministic function each and cached by what it was trained with.

A chapter that needs an earlier chapter's model calls the same function (``sft_policy``, ``reward_model``,
``ppo_policy``, ...): it loads the model from ``insideout.cache`` or, when missing, trains it now. Each cache key
holds the identity of the base checkpoint (its configuration, step and a hash of its tensors), the data and the
training configuration, and the keys of the models it builds on, so a new base model or recipe never loads a stale
fine-tune. The ``cpu`` recipe is what the book executes; ``gpu`` trains longer on more data.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from functools import lru_cache

import torch

from insideout.cache import Artifact, cached
from insideout.finetune import tasks as T
from insideout.finetune.chat import ChatTokenizer, add_chat_tokens, chat_tokenizer, check_chat_model
from insideout.finetune.dpo import DPOConfig, train_dpo
from insideout.finetune.evaluate import TEMPERATURE, answer
from insideout.finetune.lora import apply_lora, lora_state, train_new_token_rows, trainable_parameters
from insideout.finetune.ppo import PolicyWithValue, PPOConfig, ppo
from insideout.finetune.reward import (
    Pair,
    RewardConfig,
    RewardModel,
    label_pairs,
    reward_model_from_policy,
    score,
    train_reward_model,
)
from insideout.finetune.sft import SFTConfig, encode_examples, train_sft
from insideout.gpt.model import GPT, GPTConfig

SAMPLER = "insideout.gpt.sampling.sample/1"  # part of the keys of everything trained on sampled responses


@dataclass
class PairsConfig:
    """Preference data: prompts, samples from the SFT policy, Bradley–Terry label noise, held-out share."""

    prompts_per_task: int = 1000
    tau: float = 0.1  # Bradley–Terry temperature of the simulated rater
    min_gap: float = 0.1  # pairs whose gold scores differ less are the "tiny gap" set, not trained on
    held_out: float = 0.2  # fraction of the prompts whose pairs are held out
    seed: int = 11

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Recipe:
    """The training configurations of every stage for one preset."""

    sft: SFTConfig
    lora_rank: int
    lora_alpha: float
    lora_lr: float
    rank_sweep: tuple[int, ...]
    rank_sweep_steps: int
    pairs: PairsConfig
    reward: RewardConfig
    ppo: PPOConfig
    ppo_betas: tuple[float, ...]
    dpo: DPOConfig
    eval_per_task: int
    eval_seed: int = 12345
    extra: dict = field(default_factory=dict)


def recipe(preset: str) -> Recipe:
    """The ``cpu`` recipe (what the book runs) or the larger ``gpu`` one."""
    from insideout.utils import get_preset

    preset = get_preset(preset)
    cpu = Recipe(
        sft=SFTConfig(steps=320, batch_size=32, lr=2e-3, warmup_steps=20, examples_per_task=1500),
        lora_rank=16, lora_alpha=32.0, lora_lr=5e-3, rank_sweep=(1, 4, 16), rank_sweep_steps=100,
        pairs=PairsConfig(), reward=RewardConfig(steps=200, batch_size=32, lr=3e-4),
        ppo=PPOConfig(beta=0.2, iterations=30, rollouts=64, epochs=2, minibatch=32, lr=3e-4),
        ppo_betas=(0.05, 0.01), dpo=DPOConfig(beta=0.1, steps=120, batch_size=32, lr=2e-4),
        eval_per_task=48,
    )
    if preset == "cpu":
        return cpu
    return replace(
        cpu, sft=replace(cpu.sft, steps=1500, batch_size=64, examples_per_task=6000),
        rank_sweep=(1, 4, 16, 64), rank_sweep_steps=600, pairs=replace(cpu.pairs, prompts_per_task=1500),
        reward=replace(cpu.reward, steps=800, batch_size=64), ppo=replace(cpu.ppo, iterations=150, rollouts=256,
                                                                       minibatch=64),
        dpo=replace(cpu.dpo, steps=600, batch_size=64), eval_per_task=200)


# ---- the base model and its identity ------------------------------------------------------------------------


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """16 hex digits of a sha256 over every tensor's name, shape, dtype and bytes (sorted by name)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


@lru_cache(maxsize=2)
def _base(preset: str):
    from insideout.gpt.checkpoint import read_checkpoint
    from insideout.gpt.presets import checkpoint_path
    from insideout.gpt.pretrained import load_course_model

    model, tokenizer = load_course_model(preset, "cpu")
    step = read_checkpoint(checkpoint_path(preset)).step
    key = {"config": model.config.to_dict(), "step": step, "tensors": tensors_digest(model.state_dict())}
    return model, tokenizer, key


def base_model(preset: str) -> tuple[GPT, object, dict]:
    """(a fresh copy of the base GPT, its tokenizer, its identity key): Part 2's course model of the preset."""
    model, tokenizer, key = _base(preset)
    copy = GPT(model.config)
    copy.load_state_dict_strict(model.state_dict())
    return copy.eval(), tokenizer, key


def chat_base(preset: str) -> tuple[GPT, ChatTokenizer, dict]:
    """The base model with the chat tokens added (mean-initialised rows), the chat tokenizer and the base key."""
    model, tokenizer, key = base_model(preset)
    chat = chat_tokenizer(tokenizer)
    return add_chat_tokens(model, chat), chat, key


def model_from_artifact(artifact: Artifact, what: str = "policy") -> GPT:
    """A GPT policy from a cached artifact; ValueError if the artifact holds a reward model."""
    role = artifact.meta.get("role")
    if role == "reward_model" or "head.weight" in artifact.tensors:
        raise ValueError(f"the cached {artifact.kind!r} is a reward model (a trunk and a scalar head), not a "
                         f"{what}: load it with reward_model(), and a policy with sft_policy()/ppo_policy()/...")
    config = GPTConfig.from_dict(artifact.meta["config"])
    model = GPT(config)
    model.load_state_dict_strict({k: v for k, v in artifact.tensors.items()})
    return model.eval()


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}


@dataclass
class Trained:
    """A trained model with what the chapters report about it."""

    model: torch.nn.Module
    key: dict
    meta: dict
    artifact: Artifact

    @property
    def train_seconds(self) -> float:
        return float(self.meta.get("train_seconds", 0.0))

    @property
    def trained_now(self) -> bool:
        return self.artifact.trained_now


# ---- SFT and LoRA --------------------------------------------------------------------------------------------


def instruction_examples(preset: str, config: SFTConfig, chat: ChatTokenizer):
    dataset = T.instruction_dataset(config.examples_per_task, seed=config.data_seed)
    return dataset, encode_examples(dataset, chat)


HELD_OUT_EXAMPLES_PER_TASK = 40
EVAL_EVERY = 40


def held_out_examples(preset: str, chat: ChatTokenizer) -> list:
    """Instruction examples whose answer lines are not in the SFT data: the held-out response NLL of chapters 02
    and 03."""
    r = recipe(preset)
    train_lines = set(T.instruction_dataset(r.sft.examples_per_task, seed=r.sft.data_seed)["response"])
    rows = []
    for p in T.make_prompts(HELD_OUT_EXAMPLES_PER_TASK, seed=r.eval_seed + 1):
        options = [line for line in T.answers(p["task"], p["arg"] or None) if line not in train_lines]
        rows.append({"instruction": p["instruction"], "response": options[len(rows) * 7919 % len(options)]})
    return encode_examples(rows, chat)


def _nll_eval(examples, chat):
    from insideout.finetune.sft import response_nll

    def eval_fn(model):
        out = response_nll(model, examples, chat)
        return {"heldout_response_nll": out["response_nll"], "heldout_end_nll": out["end_nll"]}
    return eval_fn


def sft_policy(preset: str, config: SFTConfig | None = None) -> Trained:
    """Full fine-tuning of the chat base on the instruction data (masked loss unless the config says not).

    Every EVAL_EVERY steps the held-out response NLL is recorded in the history (``heldout_response_nll``).
    """
    config = recipe(preset).sft if config is None else config
    _, _, base_key = base_model(preset)
    key = {"stage": "sft", "base": base_key, "sft": config.to_dict(), "data": "instruction_dataset/1",
           "eval_every": EVAL_EVERY, "held_out": HELD_OUT_EXAMPLES_PER_TASK}

    def train():
        model, chat, _ = chat_base(preset)
        _, examples = instruction_examples(preset, config, chat)
        torch.manual_seed(config.seed)
        result = train_sft(model, examples, chat, config, eval_fn=_nll_eval(held_out_examples(preset, chat), chat),
                           eval_every=EVAL_EVERY)
        return _state(model), {"config": model.config.to_dict(), "history": result.history,
                               "train_seconds": result.train_seconds, "trainable": trainable_parameters(model),
                               "role": "policy"}

    art = cached("ft-sft", key, train, log=None)
    return Trained(model_from_artifact(art), key, art.meta, art)


def lora_policy(preset: str, rank: int | None = None, steps: int | None = None) -> Trained:
    """LoRA fine-tuning of the chat base: adapters on every block's linear layers, the rest frozen.

    The three new embedding rows of the chat tokens train too (LoRA alone cannot give ``<|end|>`` a meaning: a
    row equal to the mean embedding never has the largest logit), as PEFT's ``trainable_token_indices`` would;
    the other rows of the embedding and the tied head stay frozen.
    """
    r = recipe(preset)
    rank = r.lora_rank if rank is None else rank
    config = replace(r.sft, lr=r.lora_lr, steps=r.sft.steps if steps is None else steps)
    alpha = r.lora_alpha
    _, _, base_key = base_model(preset)
    key = {"stage": "lora", "base": base_key, "sft": config.to_dict(), "rank": rank, "alpha": alpha,
           "data": "instruction_dataset/1", "train_new_rows": 3, "eval_every": EVAL_EVERY,
           "held_out": HELD_OUT_EXAMPLES_PER_TASK}

    def build():
        model, chat, _ = chat_base(preset)
        apply_lora(model, rank, alpha, seed=config.seed)
        train_new_token_rows(model, chat.vocab_size - chat.base_vocab_size)
        return model, chat

    def train():
        model, chat = build()
        _, examples = instruction_examples(preset, config, chat)
        torch.manual_seed(config.seed)
        result = train_sft(model, examples, chat, config, eval_fn=_nll_eval(held_out_examples(preset, chat), chat),
                           eval_every=EVAL_EVERY)
        tensors = {**lora_state(model), "tok_emb.new_rows": model.tok_emb.new_rows.detach()}
        return tensors, {"config": model.config.to_dict(), "history": result.history,
                         "train_seconds": result.train_seconds, "trainable": trainable_parameters(model),
                         "rank": rank, "alpha": alpha, "role": "lora_adapter",
                         "optimizer_bytes": _optimizer_bytes(result.optimizer)}

    art = cached("ft-lora", key, train, log=None)
    model, _ = build()
    own = model.state_dict()
    with torch.no_grad():
        for name, tensor in art.tensors.items():
            own[name].copy_(tensor)
    return Trained(model.eval(), key, art.meta, art)


def _optimizer_bytes(optimizer) -> int:
    from insideout.finetune.lora import optimizer_state_bytes

    return optimizer_state_bytes(optimizer)


# ---- preference data and the reward model -------------------------------------------------------------------


def _flatten(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    return torch.tensor([t for s in seqs for t in s], dtype=torch.long), lengths


def _unflatten(flat: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    out, start = [], 0
    for n in lengths.tolist():
        out.append(flat[start:start + n].tolist())
        start += n
    return out


def preference_candidates(preset: str) -> dict:
    """Two SFT samples per training prompt, judged: cached, since chapters 04 and 07 both use them.

    Returns {"rows": [{task, arg, split, prompt, a, b, gold_a, gold_b}], "sample_seconds": ...}.
    """
    r = recipe(preset)
    sft = sft_policy(preset)
    cfg = r.pairs
    key = {"stage": "pairs", "sft": sft.key, "pairs": cfg.to_dict(), "sampler": SAMPLER,
           "temperature": TEMPERATURE}

    def train():
        _, chat, _ = chat_base(preset)
        prompts = T.make_prompts(cfg.prompts_per_task, seed=cfg.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        rows = answer(sft.model, chat, prompts, seed=cfg.seed, samples_per_prompt=2)
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        a_rows, b_rows = rows[0::2], rows[1::2]
        prompt_ids = [ra["prompt_ids"] for ra in a_rows]
        fa, la = _flatten([ra["tokens"] for ra in a_rows])
        fb, lb = _flatten([rb["tokens"] for rb in b_rows])
        fp, lp = _flatten(prompt_ids)
        n_held = int(round(cfg.held_out * len(a_rows)))
        order = torch.randperm(len(a_rows), generator=torch.Generator().manual_seed(cfg.seed))
        held = torch.zeros(len(a_rows), dtype=torch.bool)
        held[order[:n_held]] = True
        tensors = {"a": fa, "a_len": la, "b": fb, "b_len": lb, "prompt": fp, "prompt_len": lp,
                   "gold_a": torch.tensor([ra["gold"] for ra in a_rows], dtype=torch.float64),
                   "gold_b": torch.tensor([rb["gold"] for rb in b_rows], dtype=torch.float64), "held_out": held}
        return tensors, {"tasks": [ra["task"] for ra in a_rows], "args": [ra["arg"] for ra in a_rows],
                         "sample_seconds": seconds, "sample_cpu_seconds": cpu_seconds, "role": "data"}

    art = cached("ft-pairs", key, train, log=None)
    t = art.tensors
    a, b = _unflatten(t["a"], t["a_len"]), _unflatten(t["b"], t["b_len"])
    prompts = _unflatten(t["prompt"], t["prompt_len"])
    rows = [{"task": task, "arg": arg, "split": "held_out" if h else "train", "prompt": p, "a": x, "b": y,
             "gold_a": float(ga), "gold_b": float(gb)}
            for task, arg, h, p, x, y, ga, gb in zip(art.meta["tasks"], art.meta["args"], t["held_out"].tolist(),
                                                      prompts, a, b, t["gold_a"].tolist(), t["gold_b"].tolist(),
                                                      strict=True)]
    return {"rows": rows, "key": key, "sample_seconds": art.meta["sample_seconds"],
            "sample_cpu_seconds": art.meta.get("sample_cpu_seconds", float("nan")), "trained_now": art.trained_now}


def preference_pairs(preset: str) -> dict[str, list[Pair]]:
    """Labelled pairs split into train / held_out (gold gap >= min_gap) and tiny_train / tiny_held_out (0 < gap <
    min_gap); identical responses are dropped."""
    r = recipe(preset)
    data = preference_candidates(preset)
    distinct = [c for c in data["rows"] if c["a"] != c["b"]]
    pairs = label_pairs(distinct, tau=r.pairs.tau, seed=r.pairs.seed)
    out: dict[str, list[Pair]] = {"train": [], "held_out": [], "tiny_train": [], "tiny_held_out": []}
    for c, p in zip(distinct, pairs, strict=True):
        gap = abs(c["gold_a"] - c["gold_b"])
        if gap >= r.pairs.min_gap:
            out[c["split"]].append(p)
        elif gap > 0:
            out[f"tiny_{c['split']}"].append(p)
    return out


def reward_model(preset: str) -> Trained:
    """The reward model: the SFT model's trunk plus a scalar head, trained on the train pairs (Bradley–Terry)."""
    r = recipe(preset)
    sft = sft_policy(preset)
    key = {"stage": "reward", "pairs": preference_candidates(preset)["key"], "labels": r.pairs.to_dict(),
           "reward": r.reward.to_dict()}
    _, chat, _ = chat_base(preset)

    def train():
        pairs = preference_pairs(preset)["train"]
        rm = reward_model_from_policy(sft.model)
        torch.manual_seed(r.reward.seed)
        c0 = time.process_time()
        result = train_reward_model(rm, pairs, chat.eot_id, r.reward)
        return dict(rm.state_dict()), {"config": sft.model.config.to_dict(), "history": result.history,
                                       "train_seconds": result.train_seconds,
                                       "train_cpu_seconds": time.process_time() - c0,
                                       "trainable": trainable_parameters(rm), "role": "reward_model"}

    art = cached("ft-reward", key, train, log=None)
    return Trained(load_reward_model(art), key, art.meta, art)


def load_reward_model(artifact: Artifact) -> RewardModel:
    if artifact.meta.get("role") != "reward_model":
        raise ValueError(f"the cached {artifact.kind!r} is not a reward model (role {artifact.meta.get('role')!r})")
    rm = RewardModel(GPT(GPTConfig.from_dict(artifact.meta["config"])))
    rm.load_state_dict(artifact.tensors)
    return rm.eval()


def reward_fn(rm: RewardModel, pad_id: int):
    """The proxy reward of PPO and best-of-N: the reward model's score of prompt + response."""
    return lambda prompts, responses: score(rm, prompts, responses, pad_id)


def gold_fn(chat: ChatTokenizer):
    """The gold score of responses (token ids) to prompts (dicts with task and arg): the judges."""
    def fn(prompts, responses):
        out = []
        for p, toks in zip(prompts, responses, strict=True):
            text, stopped = chat.response_text(toks)
            out.append(T.judge(p["task"], p["arg"] or None, text, stopped).gold)
        return out
    return fn


# ---- PPO and DPO ----------------------------------------------------------------------------------------------


def ppo_policy(preset: str, beta: float | None = None, config: PPOConfig | None = None) -> Trained:
    """PPO from the SFT policy against the reward model, KL penalty ``beta`` to the SFT policy."""
    r = recipe(preset)
    config = replace(r.ppo if config is None else config, **({} if beta is None else {"beta": beta}))
    sft = sft_policy(preset)
    rm = reward_model(preset)
    key = {"stage": "ppo", "sft": sft.key, "reward": rm.key, "ppo": config.to_dict(), "prompts": "make_prompts/1",
           "sampler": SAMPLER}
    _, chat, _ = chat_base(preset)

    def train():
        policy = PolicyWithValue(model_from_artifact(sft.artifact))
        reference = model_from_artifact(sft.artifact)
        prompts = [{**p, "ids": chat.prompt(p["instruction"])}
                   for p in T.make_prompts(r.pairs.prompts_per_task, seed=config.seed + 101)]
        torch.manual_seed(config.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        history = ppo(policy, reference, reward_fn(rm.model, chat.eot_id), prompts, config, end_id=chat.end_id,
                      pad_id=chat.eot_id, gold_fn=gold_fn(chat))
        seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        tensors = {**_state(policy.gpt), **{f"value_head.{k}": v for k, v in policy.value_head.state_dict().items()}}
        return tensors, {"config": policy.gpt.config.to_dict(), "history": history, "train_seconds": seconds,
                         "train_cpu_seconds": cpu_seconds, "trainable": trainable_parameters(policy),
                         "role": "policy"}

    art = cached("ft-ppo", key, train, log=None)
    policy_only = replace(art, tensors={k: v for k, v in art.tensors.items() if not k.startswith("value_head.")})
    return Trained(model_from_artifact(policy_only), key, art.meta, art)


def ppo_value_model(trained: Trained) -> PolicyWithValue:
    """The PPO policy of ``ppo_policy`` with its trained value head (the value head is stored beside the GPT)."""
    head = {k.removeprefix("value_head."): v for k, v in trained.artifact.tensors.items()
            if k.startswith("value_head.")}
    if not head:
        raise ValueError(f"the cached {trained.artifact.kind!r} has no value head: pass a result of ppo_policy()")
    model = PolicyWithValue(trained.model)
    model.value_head.load_state_dict(head)
    return model.eval()


DPO_VARIANTS = ("main", "mean", "tiny_gap", "no_sft")


def dpo_policy(preset: str, variant: str = "main") -> Trained:
    """DPO on the preference pairs: ``main`` (from SFT, summed log-probs), ``mean`` (mean log-probs),
    ``tiny_gap`` (trained on the pairs whose gold gap is below min_gap), ``no_sft`` (policy and reference are the
    chat base: no SFT first)."""
    if variant not in DPO_VARIANTS:
        raise ValueError(f"DPO variant {variant!r}: choose one of {', '.join(DPO_VARIANTS)}")
    r = recipe(preset)
    config = replace(r.dpo, aggregate="mean") if variant == "mean" else r.dpo
    sft = sft_policy(preset)
    _, chat, base_key = chat_base(preset)
    key = {"stage": "dpo", "variant": variant, "start": base_key if variant == "no_sft" else sft.key,
           "pairs": preference_candidates(preset)["key"], "labels": r.pairs.to_dict(), "dpo": config.to_dict()}

    def start_model():
        return chat_base(preset)[0] if variant == "no_sft" else model_from_artifact(sft.artifact)

    def train():
        sets = preference_pairs(preset)
        pairs = sets["tiny_train"] if variant == "tiny_gap" else sets["train"]
        policy, reference = start_model(), start_model()
        check_chat_model(policy, chat, "DPO policy")
        torch.manual_seed(config.seed)
        c0 = time.process_time()
        result = train_dpo(policy, reference, pairs, chat.eot_id, config)
        return _state(policy), {"config": policy.config.to_dict(), "history": result.history,
                                "train_seconds": result.train_seconds, "train_cpu_seconds": time.process_time() - c0,
                                "trainable": trainable_parameters(policy),
                                "role": "policy", "pairs": len(pairs)}

    art = cached("ft-dpo", key, train, log=None)
    return Trained(model_from_artifact(art), key, art.meta, art)


def evaluation_prompts(preset: str, split: str = "train") -> list[dict]:
    """The fixed test prompts: ``eval_per_task`` per task, drawn with the evaluation seed (new draws of the
    instructions; their answers are what the model must produce). ``split="unseen"`` asks the contains task for
    the held-out words instead (chapter 02 measures that the model cannot copy them)."""
    r = recipe(preset)
    return T.make_prompts(r.eval_per_task, seed=r.eval_seed, split=split)
