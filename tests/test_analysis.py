"""Measurement helpers: the parameter-count formula against instantiated models, softmax statistics, grad norms."""

import itertools
import math

import pytest
import torch

from insideout.gpt.analysis import (
    GPT2_SMALL,
    GPT3_175B,
    block_grad_norms,
    count_parameters,
    parameter_breakdown,
    position_similarity,
    score_softmax_stats,
    softmax_entropy,
)
from insideout.gpt.model import GPT, GPTConfig

SWITCHES = list(itertools.product([True, False], [True, False], ["learned", "rope", "none"], [True, False]))


@pytest.mark.parametrize("tie, bias, position, layer_norm", SWITCHES)
def test_count_parameters_matches_instantiated_model(tie, bias, position, layer_norm):
    config = GPTConfig(vocab_size=37, context_length=11, d_model=24, n_layer=3, n_head=2, tie_weights=tie,
                       bias=bias, position=position, layer_norm=layer_norm)
    model = GPT(config)
    assert count_parameters(config) == model.num_parameters()
    assert count_parameters(config, non_embedding=True) == model.num_parameters(non_embedding=True)


@pytest.mark.parametrize("overrides", [dict(mlp=False), dict(d_ff=40), dict(mlp=False, bias=False), dict(n_layer=7)])
def test_count_parameters_other_shapes(overrides):
    config = GPTConfig(**{**dict(vocab_size=37, context_length=11, d_model=24, n_layer=3, n_head=2), **overrides})
    assert count_parameters(config) == GPT(config).num_parameters()


def test_breakdown_covers_every_tensor_of_the_model():
    config = GPTConfig(vocab_size=37, context_length=11, d_model=24, n_layer=3, n_head=2, tie_weights=False)
    parts = parameter_breakdown(config)
    model = GPT(config)
    by_kind = {"token embedding": "tok_emb", "position embedding": "pos_emb", "attention": ".attn.",
               "MLP": ".mlp.", "LM head": "lm_head"}
    for kind, marker in by_kind.items():
        assert parts[kind] == sum(p.numel() for n, p in model.named_parameters() if marker in n), kind
    assert parts["LayerNorms"] == sum(p.numel() for n, p in model.named_parameters() if "ln" in n)


def test_reference_configs_match_hugging_face_and_published_sizes():
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):  # shapes only, no memory
        hf = GPT2LMHeadModel(GPT2Config(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257))
        ours = GPT(GPTConfig(**GPT2_SMALL))
    assert count_parameters(GPTConfig(**GPT2_SMALL)) == hf.num_parameters() == ours.num_parameters() == 124_439_808
    gpt3 = count_parameters(GPTConfig(**GPT3_175B))
    assert abs(gpt3 / 175.0e9 - 1) < 0.01, "Brown et al. (2020) report 175.0B parameters"


def test_softmax_entropy_limits():
    assert softmax_entropy(torch.full((5,), 0.2, dtype=torch.float64)).item() == pytest.approx(math.log(5), abs=1e-12)
    assert softmax_entropy(torch.tensor([0.0, 1.0, 0.0])).item() == 0.0


def test_score_softmax_stats_scaling_keeps_scores_unit_variance():
    for d_k in (4, 64, 256):
        scaled, raw = score_softmax_stats(d_k, n_queries=256), score_softmax_stats(d_k, n_queries=256, scaled=False)
        assert abs(scaled["score_std"] - 1) < 0.05
        assert abs(raw["score_std"] / math.sqrt(d_k) - 1) < 0.05
    assert score_softmax_stats(256, scaled=False, n_queries=256)["entropy"] < 0.5
    assert score_softmax_stats(256, n_queries=256)["entropy"] > 3.5


def test_score_softmax_jacobian_norm_matches_autograd():
    stats = score_softmax_stats(8, n_keys=5, n_queries=6, seed=2, key_sets=2)
    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 3, 8, generator=g, dtype=torch.float64)
    k = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    scores = torch.cat([q[s] @ k[s].T for s in range(2)]) / math.sqrt(8)  # (6, 5)
    norms = [torch.autograd.functional.jacobian(lambda s: torch.softmax(s, -1), row).norm() for row in scores]
    assert stats["jacobian_norm"] == pytest.approx(torch.stack(norms).mean().item(), abs=1e-12)


def test_score_softmax_stats_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_keys >= 2"):
        score_softmax_stats(8, n_keys=1)
    with pytest.raises(ValueError, match="multiple of key_sets"):
        score_softmax_stats(8, n_queries=100, key_sets=16)


def test_block_grad_norms():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, context_length=8, d_model=16, n_layer=3, n_head=2))
    idx = torch.randint(0, 20, (2, 8))
    with pytest.raises(ValueError, match="call loss.backward"):
        block_grad_norms(model)
    model(idx, idx)[1].backward()
    norms = block_grad_norms(model)
    expected = [torch.cat([p.grad.flatten() for p in b.parameters()]).norm().item() for b in model.blocks]
    assert norms == pytest.approx(expected, rel=1e-6)
    assert len(norms) == 3 and min(norms) > 0


def test_position_similarity():
    same = torch.randn(2, 1, 8).expand(2, 5, 8)
    assert position_similarity(same) == pytest.approx(1.0, abs=1e-12)
    orthogonal = torch.eye(4)[None]  # 4 positions, 4 orthogonal vectors
    assert position_similarity(orthogonal) == pytest.approx(0.0, abs=1e-12)
    tiny = torch.randn(1, 6, 8, dtype=torch.float64)
    assert position_similarity(tiny * 1e-80) == pytest.approx(position_similarity(tiny), abs=1e-12)
    with pytest.raises(ValueError, match="seq >= 2"):
        position_similarity(torch.ones(1, 1, 3))
    with pytest.raises(ValueError, match="zero vector"):
        position_similarity(torch.zeros(1, 3, 2))


def _tiny_runs(seeds=(0, 1)):
    from insideout.gpt.analysis import NextTokenRun
    from insideout.training import OptimConfig

    data = torch.arange(400) % 23  # a periodic stream: learnable in a few steps
    config = GPTConfig(vocab_size=23, context_length=8, d_model=16, n_layer=1, n_head=2)
    optim = OptimConfig(max_steps=6, lr=3e-3, warmup_steps=1, min_lr_ratio=0.0, weight_decay=0.0)
    return [NextTokenRun(config, optim, data, batch_size=4, seed=s) for s in seeds]


def test_next_token_models_in_workers_equal_those_in_process(monkeypatch, tmp_path, restore_torch_state):
    from insideout import utils
    from insideout.gpt.analysis import trained_next_token_models

    states = {}
    for workers in (1, 2):
        monkeypatch.setenv(utils.CACHE_ENV, str(tmp_path / f"w{workers}"))
        models = trained_next_token_models(_tiny_runs(), workers=workers)
        states[workers] = [m.state_dict() for m in models]
        assert len(list((tmp_path / f"w{workers}").glob("next-token-gpt-*.safetensors"))) == 2
    for a, b in zip(states[1], states[2], strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a), "a worker process must train the same weights"
    assert not torch.equal(states[1][0]["tok_emb.weight"], states[1][1]["tok_emb.weight"]), "seeds must differ"
    again = trained_next_token_models(_tiny_runs(), workers=2)  # from the cache: nothing to train
    assert all(torch.equal(again[0].state_dict()[k], states[2][0][k]) for k in states[2][0])


def test_next_token_runs_validate():
    from insideout.gpt.analysis import random_windows, trained_next_token_models

    with pytest.raises(ValueError, match="workers"):
        trained_next_token_models(_tiny_runs(), workers=0)
    with pytest.raises(ValueError, match="longer than the window"):
        next(random_windows(torch.arange(5), 9, 2, torch.Generator()))
    run = _tiny_runs()[0]
    assert run.key() == _tiny_runs()[0].key() and run.key() != _tiny_runs((1,))[0].key()
