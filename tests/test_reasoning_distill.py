"""Distillation and the chapter 08/09 runs: the KL loss against a float64 reference, bad inputs, GRPO's evaluation."""

from __future__ import annotations

import math
import random

import pytest
import torch

from insideout.gpt.model import GPT, GPTConfig
from insideout.reasoning import pipeline
from insideout.reasoning.data import collate, example_ids
from insideout.reasoning.distill import StudentConfig, kl_loss, train_student
from insideout.reasoning.grpo import GRPOConfig, train_grpo
from insideout.reasoning.task import random_problem
from insideout.reasoning.tokenizer import CharTokenizer

TOK = CharTokenizer()
RNG = random.Random(1)


def tiny(seed: int, d_model: int = 16) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, context_length=64, d_model=d_model, n_layer=1, n_head=2)).eval()


def batch(n: int = 3):
    rng = random.Random(0)
    return collate([example_ids(TOK, random_problem(2, rng), "cot") for _ in range(n)], TOK.pad_id)


def test_kl_loss_matches_float64_reference():
    teacher, student = tiny(0), tiny(1, d_model=8)
    b = batch()
    loss, _ = kl_loss(teacher)(student, b)
    with torch.no_grad():
        p = torch.softmax(teacher(b["idx"])[0].double(), -1)
        q = torch.softmax(student(b["idx"])[0].double(), -1)
    total, count = 0.0, 0
    for i in range(b["idx"].shape[0]):
        for t in range(b["idx"].shape[1]):
            if b["targets"][i, t] == -100:
                continue
            total += sum(float(p[i, t, v]) * math.log(float(p[i, t, v]) / float(q[i, t, v]))
                         for v in range(p.shape[-1]))
            count += 1
    assert abs(float(loss.detach()) - total / count) < 1e-5


def test_kl_loss_is_zero_for_a_copy_of_the_teacher():
    teacher = tiny(0)
    copy = tiny(5)
    copy.load_state_dict(teacher.state_dict())
    loss, _ = kl_loss(teacher)(copy, batch())
    assert abs(float(loss.detach())) < 1e-6


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one example"):
        train_student([], StudentConfig(steps=2, warmup_steps=1))
    with pytest.raises(ValueError, match="needs the teacher"):
        train_student([example_ids(TOK, random_problem(1, RNG), "cot")[:2]],
                      StudentConfig(steps=2, warmup_steps=1, mode="kl"))
    with pytest.raises(ValueError, match="mode"):
        StudentConfig(mode="logit")
    with pytest.raises(ValueError, match="student mode"):
        pipeline.student("sampled")
    with pytest.raises(ValueError, match="GRPO variant"):
        pipeline.grpo_config("beta1")


def test_train_student_runs_and_counts(restore_torch_state):
    examples = [example_ids(TOK, random_problem(1, RNG), "cot")[:2] for _ in range(8)]
    model, meta = train_student(examples, StudentConfig(d_model=8, n_layer=1, n_head=2, context_length=64, steps=2,
                                                        batch_size=4, warmup_steps=1))
    assert meta["examples"] == 8 and meta["parameters"] == model.num_parameters() and len(meta["loss"]) == 2


def test_grpo_evaluate_may_return_several_accuracies(restore_torch_state):
    config = GRPOConfig(steps=2, problems_per_step=2, group_size=2, levels=(1,), warmup_steps=1, eval_every=1)
    calls = []

    def evaluate(model):
        calls.append(1)
        return {"sampled": 0.25 * len(calls), "greedy": 0.5}

    _, history = train_grpo(tiny(0), config, exclude=set(), evaluate=evaluate)
    assert history["eval_step"] == [0, 1, 2]
    assert history["eval_sampled"] == [0.25, 0.5, 0.75] and history["eval_greedy"] == [0.5] * 3
    _, history = train_grpo(tiny(0), config, exclude=set(), evaluate=lambda m: 0.5)
    assert history["eval_accuracy"] == [0.5] * 3
