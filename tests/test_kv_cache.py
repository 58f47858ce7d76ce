"""KV-cache: cached logits equal uncached ones at every step for learned, ALiBi and RoPE positions; memory formula."""

import pytest
import torch

from insideout.gpt.generate import cache_nbytes_formula, generate
from insideout.gpt.model import GPT, GPTConfig, KVCache

POSITIONS = ("learned", "alibi", "rope", "none")


def small_model(position: str, attn_impl: str = "sdpa", dtype=torch.float32, **overrides) -> GPT:
    # init_std 0.3 (not GPT-2's 0.02) so attention is far from uniform and positions change the logits
    kwargs = dict(vocab_size=61, context_length=20, d_model=24, n_layer=2, n_head=3, position=position,
                  attn_impl=attn_impl, init_std=0.3)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return GPT(GPTConfig(**kwargs)).to(dtype).eval()


def tokens(batch: int, length: int, vocab: int = 61, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
@pytest.mark.parametrize("position", POSITIONS)
def test_cached_logits_equal_uncached_at_every_step(position, attn_impl):
    model = small_model(position, attn_impl)
    seq = tokens(2, 20)  # (B, T) fills the whole context
    with torch.no_grad():
        full = model(seq)[0]  # (B, T, V) one uncached pass: logits at every position
        cache = model.new_cache(batch_size=2)
        prefill = model(seq[:, :5], cache=cache)[0]  # prompt in one pass
        steps = [model(seq[:, t:t + 1], cache=cache)[0] for t in range(5, 20)]  # then one token at a time
    cached = torch.cat([prefill, *steps], dim=1)
    assert cache.length == 20
    assert (cached - full).abs().max().item() <= 1e-5
    assert full.std().item() > 0.5  # the comparison is not between near-constant logits


@pytest.mark.parametrize("position", POSITIONS)
def test_cached_logits_equal_uncached_in_float64(position):
    model = small_model(position, dtype=torch.float64)
    seq = tokens(1, 20)
    with torch.no_grad():
        full = model(seq)[0]
        cache = model.new_cache()
        assert cache.k[0].dtype == torch.float64
        cached = torch.cat([model(seq[:, t:t + 1], cache=cache)[0] for t in range(20)], dim=1)
    assert (cached - full).abs().max().item() <= 1e-12


@pytest.mark.parametrize("position", POSITIONS)
def test_cached_logits_equal_uncached_with_chunks(position):
    model = small_model(position)
    seq = tokens(1, 20)
    with torch.no_grad():
        full = model(seq)[0]
        cache = model.new_cache()
        cached = torch.cat([model(seq[:, a:a + 3], cache=cache)[0] for a in range(0, 18, 3)]
                           + [model(seq[:, 18:], cache=cache)[0]], dim=1)
    assert (cached - full).abs().max().item() <= 1e-5


@pytest.mark.parametrize("position", ["learned", "alibi", "rope"])
def test_the_comparison_can_fail(position):
    """Negative control: a token fed without its cached past (or at the wrong position) gives other logits."""
    model = small_model(position)
    seq = tokens(1, 12)
    with torch.no_grad():
        full = model(seq)[0][:, -1]
        alone = model(seq[:, -1:])[0][:, -1]  # no past at all
        cache = model.new_cache()
        model(seq[:, :10], cache=cache)  # the past misses one token: position and context are off by one
        shifted = model(seq[:, -1:], cache=cache)[0][:, -1]
    assert (alone - full).abs().max().item() > 1e-2
    assert (shifted - full).abs().max().item() > 1e-2


@pytest.mark.parametrize("position", POSITIONS)
def test_generate_with_and_without_cache_give_the_same_tokens(position):
    model = small_model(position, init_std=0.1)
    prompt = tokens(2, 4)
    greedy = [generate(model, prompt, 12, greedy=True, use_cache=c) for c in (True, False)]
    assert torch.equal(greedy[0], greedy[1])
    sampled = [generate(model, prompt, 12, temperature=0.9, top_k=30, top_p=0.95, use_cache=c,
                        generator=torch.Generator().manual_seed(3)) for c in (True, False)]
    assert torch.equal(sampled[0], sampled[1])


@pytest.mark.parametrize("position", ["learned", "rope"])
def test_generation_past_the_context_slides_the_same_way_with_the_cache(position):
    model = small_model(position, init_std=0.1)
    prompt = tokens(1, 6)
    runs = [generate(model, prompt, 40, temperature=1.0, use_cache=c, generator=torch.Generator().manual_seed(5))
            for c in (True, False)]  # 46 tokens > context_length 20
    assert runs[0].shape == (1, 46)
    assert torch.equal(runs[0], runs[1])
    # greedy past the context: every token is the argmax given the last context_length tokens only
    ctx = model.config.context_length
    out = generate(model, prompt, 40, greedy=True)
    with torch.no_grad():
        for t in range(prompt.shape[1], out.shape[1]):
            window = out[:, max(0, t - ctx):t]
            assert out[0, t].item() == model(window)[0][0, -1].argmax().item()


def test_cache_memory_formula_matches_the_tensors():
    for dtype, size in ((torch.float32, 4), (torch.float64, 8), (torch.bfloat16, 2)):
        model = small_model("rope", dtype=dtype)
        cfg = model.config
        cache = model.new_cache(batch_size=3, max_len=17)
        by_tensors = sum(t.numel() * t.element_size() for t in cache.k + cache.v)
        assert len(cache.k) == len(cache.v) == cfg.n_layer
        assert tuple(cache.k[0].shape) == (3, cfg.n_head, 17, cfg.head_dim)
        assert cache.nbytes() == by_tensors == cache_nbytes_formula(cfg, 3, 17, size)
        assert cache_nbytes_formula(cfg, 3, 17, size) == 2 * 2 * 3 * 3 * 17 * 8 * size


def test_cache_refuses_to_overflow():
    model = small_model("learned")
    with pytest.raises(ValueError, match="exceeds the model's context_length"):
        KVCache(model.config, 1, max_len=21)
    cache = model.new_cache(max_len=4)
    with torch.no_grad():
        model(tokens(1, 4), cache=cache)
        with pytest.raises(ValueError, match="KVCache is full"):
            model(tokens(1, 1), cache=cache)


def test_the_benchmark_helper_reports_both_clocks_for_each_length():
    """Structure only (timings are never asserted in tests; benchmarks/kv_cache.py measures them)."""
    from insideout.gpt.generate import kv_cache_speedups

    rows = kv_cache_speedups(small_model("learned"), tokens(1, 3), [2, 5], repeats=1)
    assert [r["new_tokens"] for r in rows] == [2, 5]
    for r in rows:
        assert r["prompt_tokens"] == 3 and r["batch"] == 1
        for key in ("cached_wall_s", "cached_cpu_s", "uncached_wall_s", "uncached_cpu_s"):
            assert r[key] > 0
        assert r["speedup_wall"] == r["uncached_wall_s"] / r["cached_wall_s"]
