"""Preference losses against TRL on the same numbers; Bradley-Terry labels, the ceiling and bad pairs."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch

from insideout.finetune.dpo import DPOConfig, dpo_loss, make_dpo_loss, pair_tensors, sequence_logprobs
from insideout.finetune.reward import (
    Pair,
    RewardModel,
    accuracy_ceiling,
    bradley_terry_loss,
    bt_probability,
    label_pairs,
    rm_loss,
)
from insideout.gpt.model import GPT, GPTConfig


def _accelerator():
    return SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x, gather=lambda x: x)


def _trl_dpo_loss(per_token: torch.Tensor, completion_mask: torch.Tensor, ref: torch.Tensor, beta: float,
                  loss_type: str) -> torch.Tensor:
    """TRL 1.16's DPOTrainer._compute_loss on given per-token log-probabilities (a stand-in model returns them)."""
    from trl import DPOTrainer

    n = per_token.shape[0]
    outputs = SimpleNamespace(log_probs=per_token, entropy=torch.zeros_like(per_token),
                              mean_logits=torch.zeros_like(per_token),
                              is_top1=torch.zeros_like(per_token, dtype=torch.bool))
    model = SimpleNamespace(training=True)
    fake = SimpleNamespace(model=model, accelerator=_accelerator(), aux_loss_enabled=False, ld_alpha=None,
                           precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[loss_type],
                           loss_weights=[1.0], beta=beta, use_weighting=False,
                           _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
                           _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(n, per_token.shape[1] + 1, dtype=torch.long),
              "attention_mask": torch.ones(n, per_token.shape[1] + 1, dtype=torch.long),
              "completion_mask": completion_mask, "ref_chosen_logps": ref[:, 0], "ref_rejected_logps": ref[:, 1]}
    return DPOTrainer._compute_loss(fake, lambda **kw: outputs, inputs, return_outputs=False)


def _tiny_model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=40, context_length=24, d_model=16, n_layer=1, n_head=2, init_std=0.2)).eval()


def _pairs(n: int = 6) -> list[Pair]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        prompt = torch.randint(1, 40, (3 + i % 3,), generator=g).tolist()
        chosen = torch.randint(1, 40, (2 + i % 4,), generator=g).tolist()
        rejected = torch.randint(1, 40, (5 - i % 3,), generator=g).tolist()
        out.append(Pair("question", "", tuple(prompt), tuple(chosen), tuple(rejected), 1.0, 0.0, 0.9))
    return out


@pytest.mark.parametrize("aggregate, trl_type", [("sum", "sigmoid"), ("mean", "sigmoid_norm")])
def test_dpo_loss_equals_trl_on_the_same_log_probabilities(aggregate, trl_type):
    model, pairs, beta = _tiny_model(), _pairs(), 0.3
    t = pair_tensors(pairs, pad_id=0)
    B, _, T = t["ids"].shape
    ref = torch.randn(B, 2, generator=torch.Generator().manual_seed(1)) * 3 - 20
    ours, _ = make_dpo_loss(beta, aggregate)(model, {**t, "ref": ref})
    # the same per-token log-probabilities, laid out the way TRL's batch is: all chosen rows, then all rejected
    from insideout.finetune.generation import token_logprobs

    ids = torch.cat([t["ids"][:, 0], t["ids"][:, 1]])
    mask = torch.cat([t["mask"][:, 0], t["mask"][:, 1]])
    per_token = token_logprobs(model, ids) * mask
    completion = torch.cat([torch.zeros(2 * B, 1), mask.float()], dim=1)  # TRL's mask is over the input tokens
    ref_sums = ref
    if aggregate == "mean":  # ours holds mean reference log-probs; TRL divides summed log-ratios by the length
        ref_sums = ref * torch.stack([t["mask"][:, 0].sum(-1), t["mask"][:, 1].sum(-1)], 1)
    theirs = _trl_dpo_loss(per_token, completion, ref_sums, beta, trl_type)
    assert abs(ours.item() - theirs.item()) < 1e-6, (ours.item(), theirs.item())
    lp = sequence_logprobs(model, ids, mask, aggregate)
    assert lp.shape == (2 * B,)


def test_reward_loss_equals_trl_reward_loss():
    from trl import RewardTrainer

    torch.manual_seed(0)
    gpt = GPT(GPTConfig(vocab_size=40, context_length=24, d_model=16, n_layer=1, n_head=2))
    rm = RewardModel(gpt).eval()
    torch.nn.init.normal_(rm.head.weight, std=1.0)
    pairs = _pairs()
    from insideout.finetune.reward import pair_batch

    batch = pair_batch(pairs, pad_id=0)
    ours, _ = rm_loss(rm, batch)
    B, _, T = batch["ids"].shape
    flat_ids, flat_len = batch["ids"].transpose(0, 1).reshape(2 * B, T), batch["lengths"].transpose(0, 1).reshape(-1)
    rewards = rm(flat_ids, flat_len)  # chosen rows first, then rejected: TRL's layout
    fake = SimpleNamespace(model=SimpleNamespace(training=True), accelerator=_accelerator(),
                           args=SimpleNamespace(center_rewards_coefficient=None),
                           _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
                           _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": flat_ids, "attention_mask": torch.ones_like(flat_ids)}
    theirs = RewardTrainer.compute_loss(fake, lambda **kw: SimpleNamespace(logits=rewards[:, None]), inputs)
    assert rewards.std() > 0.1, "rewards nearly constant: a weak comparison"
    assert abs(ours.item() - theirs.item()) < 1e-6
    assert abs(bradley_terry_loss(rewards[:B], rewards[B:]).item() - theirs.item()) < 1e-6


def test_reward_model_reads_the_last_real_token_whatever_the_padding():
    torch.manual_seed(0)
    rm = RewardModel(GPT(GPTConfig(vocab_size=40, context_length=24, d_model=16, n_layer=1, n_head=2))).eval()
    torch.nn.init.normal_(rm.head.weight)
    seq = torch.tensor([[5, 6, 7, 8]])
    padded = torch.tensor([[5, 6, 7, 8, 0, 0, 0]])
    with torch.no_grad():
        a = rm(seq, torch.tensor([4]))
        b = rm(padded, torch.tensor([4]))
    assert (a - b).abs().max() < 1e-6


def test_bradley_terry_labels_match_their_probability_and_the_ceiling():
    assert bt_probability(0.7, 0.2, 0.1) == pytest.approx(1 / (1 + torch.e ** -5.0))
    candidates = [{"task": "question", "arg": "", "prompt": [1], "a": [2], "b": [3], "gold_a": 0.6, "gold_b": 0.5}
                  for _ in range(4000)]
    pairs = label_pairs(candidates, tau=0.1, seed=0)
    p = bt_probability(0.6, 0.5, 0.1)
    a_chosen = sum(pr.chosen == (2,) for pr in pairs) / len(pairs)
    assert abs(a_chosen - p) < 0.025  # 3 standard errors of a 4000-draw frequency
    assert accuracy_ceiling(pairs) == pytest.approx(max(p, 1 - p))


def test_identical_responses_and_bad_betas_are_refused():
    with pytest.raises(ValueError, match="two different responses"):
        Pair("question", "", (1,), (2, 3), (2, 3), 1.0, 0.0, 1.0)
    z = torch.zeros(2)
    for beta in (0.0, -0.1, float("inf")):
        with pytest.raises(ValueError, match="beta"):
            dpo_loss(z, z, z, z, beta)
        with pytest.raises(ValueError, match="beta"):
            DPOConfig(beta=beta)
    with pytest.raises(ValueError, match="tau"):
        label_pairs([], tau=0.0, seed=0)
    with pytest.raises(ValueError, match="aggregate"):
        DPOConfig(aggregate="max")
