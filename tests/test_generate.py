"""Sampling methods and the generation loop on small random models (no trained model needed)."""

import math

import pytest
import torch

from insideout.gpt.generate import (
    check_sampling_args,
    generate,
    next_token_distribution,
    process_logits,
    sample_next_token,
)
from insideout.gpt.model import GPT, GPTConfig


def small_model(**overrides) -> GPT:
    kwargs = dict(vocab_size=50, context_length=16, d_model=32, n_layer=2, n_head=4, init_std=0.2)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return GPT(GPTConfig(**kwargs)).eval()


def logits_batch(rows: int = 8, vocab: int = 200, seed: int = 0) -> torch.Tensor:
    return 3.0 * torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed))  # (rows, V)


# ---- argument checks -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(top_p=0.0), "top_p=0.0"), (dict(top_p=1.5), "top_p=1.5"), (dict(top_p=-0.2), "top_p"),
    (dict(top_k=0), "top_k=0"), (dict(top_k=-3), "top_k"), (dict(top_k=2.5), "top_k"),
    (dict(temperature=0.0), "temperature=0.0"), (dict(temperature=-1.0), "temperature"),
    (dict(temperature=float("nan")), "temperature"), (dict(temperature=float("inf")), "temperature"),
])
def test_bad_sampling_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_sampling_args(**kwargs)
    model = small_model()
    with pytest.raises(ValueError, match=match):
        generate(model, torch.zeros(1, 3, dtype=torch.long), 2, **kwargs)


def test_greedy_allows_any_temperature():
    check_sampling_args(temperature=0.0, greedy=True)
    out = generate(small_model(), torch.zeros(1, 3, dtype=torch.long), 2, temperature=0.0, greedy=True)
    assert out.shape == (1, 5)


def test_bad_prompts_are_refused():
    model = small_model()
    with pytest.raises(ValueError, match="empty prompt"):
        generate(model, torch.zeros(1, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="longer than the model's context_length=16"):
        generate(model, torch.zeros(1, 17, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"ids\[None\]"):
        generate(model, torch.zeros(5, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="integer token ids"):
        generate(model, torch.zeros(1, 3), 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, torch.zeros(1, 3, dtype=torch.long), -1)
    exact = generate(model, torch.zeros(1, 16, dtype=torch.long), 3, greedy=True)  # a full context is fine
    assert exact.shape == (1, 19)


# ---- the distributions ---------------------------------------------------------------------------------

def test_temperature_divides_the_logits():
    z = logits_batch()
    for t in (0.3, 1.0, 2.5):
        assert torch.allclose(next_token_distribution(z, temperature=t), torch.softmax(z / t, dim=-1), atol=1e-7)


def test_greedy_is_the_argmax_and_low_temperature_approaches_it():
    z = logits_batch()
    greedy = next_token_distribution(z, greedy=True)
    assert torch.equal(greedy, torch.nn.functional.one_hot(z.argmax(-1), z.shape[-1]).float())
    gap = (z.topk(2, -1).values[:, 0] - z.topk(2, -1).values[:, 1]).min().item()  # smallest lead of the argmax
    temps = (1.0, 0.3, 0.1, gap / 20)
    top = [next_token_distribution(z, temperature=t).max(-1).values.min().item() for t in temps]
    assert top == sorted(top)  # the argmax's probability rises as the temperature falls ...
    assert top[-1] > 1 - z.shape[-1] * math.exp(-20)  # ... towards 1: T = gap/20 leaves <= V e^-20 elsewhere
    assert torch.equal(next_token_distribution(z, temperature=gap / 20).argmax(-1), z.argmax(-1))


def test_entropy_rises_with_temperature_towards_uniform():
    z = logits_batch()
    entropies = []
    for t in (0.25, 0.5, 1.0, 2.0, 4.0, 1000.0):
        p = next_token_distribution(z, temperature=t).double()
        entropies.append(-(p * p.clamp_min(1e-300).log()).sum(-1).mean().item())
    assert entropies == sorted(entropies)
    assert abs(entropies[-1] - math.log(z.shape[-1])) < 1e-3


@pytest.mark.parametrize("k", [1, 5, 37, 200, 1000])
def test_top_k_keeps_exactly_k_tokens_the_most_likely(k):
    z = logits_batch()
    p = next_token_distribution(z, top_k=k)
    kept = min(k, z.shape[-1])
    assert ((p > 0).sum(-1) == kept).all()
    assert torch.allclose(p.sum(-1), torch.ones(z.shape[0]))
    assert ((p > 0) == (z >= z.topk(kept, dim=-1).values[:, -1:])).all()
    # renormalised: the kept probabilities keep their ratios
    full = torch.softmax(z, -1)
    ratio = p[p > 0] / full[p > 0]
    assert torch.allclose(ratio.view(z.shape[0], kept), ratio.view(z.shape[0], kept)[:, :1].expand(-1, kept))


def test_top_k_keeps_exactly_k_even_with_ties():
    z = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.5]])
    assert (next_token_distribution(z, top_k=2) > 0).sum().item() == 2


@pytest.mark.parametrize("p_threshold", [0.05, 0.5, 0.9, 0.99, 1.0])
def test_top_p_keeps_the_smallest_set_with_enough_mass(p_threshold):
    z = logits_batch()
    full = torch.softmax(z.double(), -1)
    q = next_token_distribution(z, top_p=p_threshold)
    for row in range(z.shape[0]):
        keep = q[row] > 0
        mass = full[row][keep].sum().item()
        assert mass >= p_threshold - 1e-12
        if p_threshold < 1.0:  # minimal: dropping the least likely kept token falls below p
            assert mass - full[row][keep].min().item() < p_threshold
            # and the kept tokens are the most likely ones
            assert full[row][keep].min() >= full[row][~keep].max()


def test_top_p_always_keeps_the_most_likely_token():
    z = torch.tensor([[5.0, 0.0, -1.0]])
    assert torch.equal(next_token_distribution(z, top_p=0.01) > 0, torch.tensor([[True, False, False]]))


def test_combined_methods_apply_temperature_then_top_k_then_top_p():
    z = logits_batch()
    combined = process_logits(z, temperature=0.7, top_k=20, top_p=0.8)
    by_hand = z / 0.7
    kth = by_hand.topk(20, -1).values[:, -1:]
    by_hand = by_hand.masked_fill(by_hand < kth, float("-inf"))
    probs, order = torch.softmax(by_hand.double(), -1).sort(-1, descending=True)
    drop = (probs.cumsum(-1) - probs) >= 0.8
    by_hand = by_hand.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    assert torch.equal(combined, by_hand)
    assert ((torch.softmax(combined, -1) > 0).sum(-1) <= 20).all()


def test_sampling_follows_the_distribution():
    z = torch.tensor([[2.0, 1.0, 0.0, -1.0, -9.0, -9.0]]).repeat(20000, 1)
    draws = sample_next_token(z, temperature=1.0, top_k=4, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draws.view(-1), minlength=6).double() / draws.numel()
    expected = next_token_distribution(z[:1], top_k=4)[0].double()
    assert counts[4:].sum() == 0  # never outside the top k
    assert (counts - expected).abs().max().item() < 0.015  # ~4 standard errors at n = 20000


# ---- the loop ------------------------------------------------------------------------------------------

def test_greedy_generation_takes_the_argmax_at_every_step():
    model = small_model()
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    out = generate(model, prompt, 8, greedy=True)
    assert torch.equal(out[:, :5], prompt)
    with torch.no_grad():
        for t in range(5, 13):
            assert out[0, t].item() == model(out[:, :t])[0][0, -1].argmax().item()


def test_seeded_generation_is_reproducible():
    model = small_model()
    prompt = torch.tensor([[3, 1, 4], [2, 7, 1]])
    run = lambda seed: generate(model, prompt, 10, temperature=1.5, top_p=0.95,  # noqa: E731
                                generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_generation_restores_training_mode_and_keeps_gradients_off():
    model = small_model(dropout=0.5).train()
    prompt = torch.tensor([[3, 1, 4]])
    a = generate(model, prompt, 6, greedy=True)
    b = generate(model, prompt, 6, greedy=True)
    assert torch.equal(a, b)  # dropout was off during generation
    assert model.training
    assert not a.requires_grad


def test_zero_new_tokens_returns_the_prompt():
    prompt = torch.tensor([[3, 1, 4]])
    assert torch.equal(generate(small_model(), prompt, 0), prompt)


def test_processing_matches_hugging_face_logits_warpers():
    """The trusted reference: transformers' TemperatureLogitsWarper, TopKLogitsWarper and TopPLogitsWarper."""
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    z = logits_batch(rows=16, vocab=500, seed=3)
    for t in (0.5, 1.7):
        assert torch.allclose(process_logits(z, temperature=t), TemperatureLogitsWarper(t)(None, z.clone()))
    for k in (1, 7, 120):
        assert torch.equal(process_logits(z, top_k=k), TopKLogitsWarper(k)(None, z.clone()))
    for p in (0.05, 0.5, 0.9, 0.99):
        assert torch.equal(process_logits(z, top_p=p).isinf(), TopPLogitsWarper(p)(None, z.clone()).isinf())
    chain = LogitsProcessorList([TemperatureLogitsWarper(0.8), TopKLogitsWarper(40), TopPLogitsWarper(0.9)])
    ours = process_logits(z, temperature=0.8, top_k=40, top_p=0.9)
    theirs = chain(None, z.clone())
    assert torch.equal(ours.isinf(), theirs.isinf())
    assert torch.allclose(torch.softmax(ours, -1), torch.softmax(theirs, -1), atol=1e-6)
