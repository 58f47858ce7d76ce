"""Part 4's training data, the cached reasoning models, equal-compute twins and the tokenizer check."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from insideout.cache import save_artifact
from insideout.reasoning.data import PROMPT_WIDTH, collate, example_ids, prompt_ids
from insideout.reasoning.models import (
    ReasonerConfig,
    load_reasoner_file,
    positions_per_step,
    reasoner,
    steps_for_positions,
)
from insideout.reasoning.task import SplitConfig, parse_problem
from insideout.reasoning.tokenizer import CharTokenizer

TOK = CharTokenizer()


def test_loss_mask_covers_the_solution_but_not_prompt_or_deliberate_errors():
    p = parse_problem("3+4*2+7")
    ids, n_prompt, keep = example_ids(TOK, p, "cot", random.Random(3), p_error=0.5, p_confirm=0.3)
    text = "".join(TOK.vocab[i] for i in ids)
    assert text == "<bos>3+4*2+7" + "<pad>" * (PROMPT_WIDTH - 9) + "\n" + text.split("\n", 1)[1]
    assert len(prompt_ids(TOK, p)) == n_prompt == PROMPT_WIDTH and text.endswith("<answer>1<eos>")
    longest = parse_problem("1" + "+2" * 8)  # a level-8 prompt fills the width without padding
    assert TOK.pad_id not in prompt_ids(TOK, longest) and len(prompt_ids(TOK, longest)) == PROMPT_WIDTH
    batch = collate([(ids, n_prompt, keep)], TOK.pad_id)
    targets = batch["targets"][0]
    assert (targets[: n_prompt - 1] == -100).all()  # nothing of the prompt is predicted
    trained = "".join(TOK.vocab[int(t)] for t in targets if t != -100)
    assert "3+4=8" not in trained and trained.endswith("<answer>1<eos>")
    shown = "".join(TOK.vocab[int(t)] for t in batch["idx"][0])
    assert "wait" in shown
    direct, n, _ = example_ids(TOK, p, "direct")
    assert TOK.decode(direct[n:]) == "<answer>1"
    with pytest.raises(ValueError, match="format"):
        example_ids(TOK, p, "essay")


def test_config_validation():
    with pytest.raises(ValueError, match="fmt"):
        ReasonerConfig(fmt="essay")
    with pytest.raises(ValueError, match="snapshot_steps"):
        ReasonerConfig(steps=10, warmup_steps=2, snapshot_steps=(10,))
    with pytest.raises(ValueError):
        ReasonerConfig(d_model=30, n_head=4)
    with pytest.raises(ValueError):
        ReasonerConfig(steps=10, warmup_steps=20)


def test_equal_compute_steps():
    split = SplitConfig(per_level=4)
    cot = ReasonerConfig(steps=50, warmup_steps=2, batch_size=8)
    direct = dataclasses.replace(cot, fmt="direct", p_error=0.0, p_confirm=0.0)
    steps = steps_for_positions(direct, cot.steps * positions_per_step(cot, split), split)
    assert steps > 2 * cot.steps  # the direct sequences are much shorter
    ratio = steps * positions_per_step(direct, split) / (cot.steps * positions_per_step(cot, split))
    assert 1.0 <= ratio < 1.02


TINY = ReasonerConfig(d_model=16, n_layer=1, n_head=2, context_length=64, steps=6, warmup_steps=1, batch_size=4,
                      train_levels=(1, 2), snapshot_steps=(3,))


def test_reasoner_trains_caches_and_reloads(tmp_path, monkeypatch, restore_torch_state):
    monkeypatch.setenv("INSIDEOUT_CACHE", str(tmp_path))
    split = SplitConfig(per_level=2, test_levels=(1, 2, 3), train_levels=(1, 2))
    first = reasoner(TINY, split, log=None)
    again = reasoner(TINY, split, log=None)
    assert first.trained_now and not again.trained_now
    for (k, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    early = again.snapshot(3)
    assert any(not torch.equal(a, b) for a, b in zip(early.state_dict().values(),
                                                     again.model.state_dict().values(), strict=True))
    assert len(first.meta["loss"]) == TINY.steps and first.meta["problems"] == TINY.steps * TINY.batch_size
    with pytest.raises(ValueError, match="no snapshot"):
        again.snapshot(4)
    path = next(tmp_path.glob("reasoning-cot-*.safetensors"))
    assert load_reasoner_file(path, TINY) is not None


def test_checkpoint_of_another_tokenizer_is_refused(tmp_path):
    from insideout.gpt.model import GPT

    model = GPT(TINY.gpt_config(TOK.vocab_size))
    tensors = {f"model.{k}": v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    path = save_artifact(tmp_path / "foreign.safetensors", tensors, key={"x": 1},
                         meta={"tokenizer": "0123456789ab"}, kind="reasoning-cot")
    with pytest.raises(ValueError, match="another tokenizer"):
        load_reasoner_file(path, TINY)
    with pytest.raises(FileNotFoundError):
        load_reasoner_file(tmp_path / "missing.safetensors", TINY)
