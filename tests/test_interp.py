"""Tests of insideout.gpt.interp (caching, hooks, logit lens, induction score, patching) on small random models."""

import math

import pytest
import torch

from insideout.gpt import interp
from insideout.gpt.induction import InductionConfig, split_losses, train_induction_model
from insideout.gpt.model import GPT, GPTConfig


def small_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    kwargs = dict(vocab_size=37, context_length=16, d_model=24, n_layer=2, n_head=3, init_std=0.2)
    kwargs.update(overrides)
    return GPT(GPTConfig(**kwargs)).eval()


def all_hooks_removed(model: GPT) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_cache_names_and_shapes():
    model = small_model()
    idx = torch.randint(0, 37, (2, 9), generator=torch.Generator().manual_seed(1))
    logits, cache = interp.run_with_cache(model, idx)
    per_block = ["hook_resid_pre", "attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_pattern", "attn.hook_z",
                 "attn.hook_result", "hook_attn_out", "hook_resid_mid", "mlp.hook_post", "hook_mlp_out",
                 "hook_resid_post"]
    expected = ["hook_embed"] + [f"blocks.{i}.{n}" for i in range(2) for n in per_block] + ["hook_final"]
    assert list(cache) == expected
    B, T, H, D = 2, 9, 3, 8
    shapes = {"hook_resid_pre": (B, T, 24), "attn.hook_q": (B, T, H, D), "attn.hook_pattern": (B, H, T, T),
              "attn.hook_z": (B, T, H, D), "attn.hook_result": (B, T, H, 24), "hook_attn_out": (B, T, 24),
              "mlp.hook_post": (B, T, 96), "hook_resid_post": (B, T, 24)}
    for name, shape in shapes.items():
        assert tuple(cache[f"blocks.1.{name}"].shape) == shape, name
    assert tuple(cache["hook_final"].shape) == (B, T, 24)
    assert not any(t.requires_grad for t in cache.values())
    # the pattern is a causal probability distribution over keys
    pattern = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(B, H, T))
    assert (pattern.triu(diagonal=1) == 0).all()
    # caching patterns uses the written-out path: equal to SDPA up to rounding; without patterns it is exact
    plain, _ = model(idx)
    torch.testing.assert_close(logits, plain, rtol=0, atol=1e-5)
    exact, subset = interp.run_with_cache(model, idx, ["blocks.1.hook_resid_post", "hook_embed"])
    assert list(subset) == ["blocks.1.hook_resid_post", "hook_embed"]
    assert torch.equal(exact, plain)
    _, by_predicate = interp.run_with_cache(model, idx, lambda n: n.endswith("hook_z"))
    assert list(by_predicate) == ["blocks.0.attn.hook_z", "blocks.1.attn.hook_z"]
    assert all_hooks_removed(model)


def test_cache_of_attention_only_model():
    model = small_model(mlp=False)
    idx = torch.randint(0, 37, (1, 5), generator=torch.Generator().manual_seed(11))
    _, cache = interp.run_with_cache(model, idx)
    assert not any("mlp" in name for name in cache)  # the MLP's hook points never run
    assert torch.equal(cache["blocks.1.hook_resid_mid"], cache["blocks.1.hook_resid_post"])
    with pytest.raises(ValueError, match="never ran"):
        interp.run_with_cache(model, idx, ["blocks.0.hook_mlp_out"])
    assert all_hooks_removed(model)


@pytest.mark.parametrize("position", ["learned", "alibi", "rope", "none"])
def test_pattern_path_matches_sdpa(position):
    model = small_model(position=position)
    idx = torch.randint(0, 37, (2, 12), generator=torch.Generator().manual_seed(2))
    logits, cache = interp.run_with_cache(model, idx, ["blocks.1.attn.hook_pattern"])
    torch.testing.assert_close(logits, model(idx)[0], rtol=0, atol=1e-5)


def test_head_results_sum_to_attn_out():
    model = small_model()
    idx = torch.randint(0, 37, (3, 10), generator=torch.Generator().manual_seed(3))
    _, cache = interp.run_with_cache(model, idx)
    for layer in range(2):
        result = cache[f"blocks.{layer}.attn.hook_result"]  # (B, T, H, d_model)
        total = result.sum(dim=2) + model.blocks[layer].attn.proj.bias
        torch.testing.assert_close(total, cache[f"blocks.{layer}.hook_attn_out"], rtol=0, atol=1e-6)
    # one head by hand: z_h @ W_O[:, h-block].T
    z = cache["blocks.1.attn.hook_z"][:, :, 2]  # (B, T, d_head)
    w = model.blocks[1].attn.proj.weight[:, 16:24]
    torch.testing.assert_close(cache["blocks.1.attn.hook_result"][:, :, 2], z @ w.T, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="heads"):
        interp.head_results(model, torch.zeros(1, 2, 4, 6), 0)
    with pytest.raises(ValueError, match="layer=5"):
        interp.head_results(model, z, 5)


def test_unknown_names_raise_and_leave_no_hooks():
    model = small_model()
    idx = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="unknown hook name"):
        interp.run_with_cache(model, idx, ["blocks.0.hook_resid_pre", "blocks.9.hook_resid_pre"])
    with pytest.raises(ValueError, match="unknown hook name"):
        interp.run_with_hooks(model, idx, {"blocks.0.attn.hook_result": lambda a, n: None})  # derived, not hookable
    with pytest.raises(ValueError, match="unknown hook name"):
        interp.run_with_cache(model, idx, ["blocks.2.attn.hook_result"])  # the model has blocks 0 and 1
    assert all_hooks_removed(model)


def test_hooks_removed_after_use_even_on_exceptions():
    model = small_model()
    idx = torch.randint(0, 37, (1, 6), generator=torch.Generator().manual_seed(4))
    seen = []
    interp.run_with_hooks(model, idx, {"blocks.1.hook_resid_mid": lambda a, n: seen.append((n, a.shape))})
    assert seen == [("blocks.1.hook_resid_mid", torch.Size([1, 6, 24]))]
    assert all_hooks_removed(model)

    def boom(activation, name):
        raise RuntimeError("hook failed")

    hooks = {"hook_embed": lambda a, n: None, "blocks.0.attn.hook_pattern": lambda a, n: None,
             "blocks.1.attn.hook_z": boom}
    with pytest.raises(RuntimeError, match="hook failed"):
        interp.run_with_hooks(model, idx, hooks)
    assert all_hooks_removed(model)
    with pytest.raises(RuntimeError, match="hook failed"):
        with interp.hooks(model, {"hook_embed": lambda a, n: None}):
            raise RuntimeError("hook failed")
    assert all_hooks_removed(model)
    with pytest.raises(ValueError, match="not a function"):
        interp.run_with_hooks(model, idx, {"hook_embed": lambda a, n: None, "hook_final": 3})
    assert all_hooks_removed(model)
    # a failed hook must not leave the pattern hook behind, so attention is back on the SDPA path
    assert not model.blocks[0].attn.hook_pattern.has_hooks()


def test_hook_can_patch_and_run_with_hooks_returns_patched_logits():
    model = small_model()
    idx = torch.randint(0, 37, (1, 5), generator=torch.Generator().manual_seed(5))
    zero = {f"blocks.{i}.hook_attn_out": lambda a, n: torch.zeros_like(a) for i in range(2)}
    zeroed = interp.run_with_hooks(model, idx, zero)
    assert not torch.allclose(zeroed, model(idx)[0])
    # with every attention output zeroed, position 2 sees only its own token and position: compute it by hand
    x = model.tok_emb(idx[:, 2]) + model.pos_emb.weight[2]  # (1, d_model)
    for block in model.blocks:
        x = x + block.mlp(block.ln2(x))
    torch.testing.assert_close(zeroed[:, 2], model.lm_head(model.ln_f(x)), rtol=0, atol=1e-5)


def test_patching_clean_everywhere_reproduces_clean_logits():
    model = small_model()
    gen = torch.Generator().manual_seed(6)
    clean = torch.randint(0, 37, (1, 8), generator=gen)
    corrupted = clean.clone()
    corrupted[0, 3] = (clean[0, 3] + 5) % 37
    clean_logits, clean_cache = interp.run_with_cache(model, clean, lambda n: "pattern" not in n)
    corrupted_logits = model(corrupted)[0]
    assert not torch.allclose(clean_logits, corrupted_logits)
    # every hook point (patterns excepted) overwritten with its clean value: the clean logits, bit for bit
    everything = {n: (lambda a, n: clean_cache[n]) for n in clean_cache if not n.endswith("hook_result")}
    assert torch.equal(interp.run_with_hooks(model, corrupted, everything), clean_logits)
    for name in interp.residual_names(model):  # any one full residual stream suffices
        patched = interp.run_with_hooks(model, corrupted, {name: lambda a, n: clean_cache[n]})
        assert torch.equal(patched, clean_logits), name
    # patching only the positions before the corrupted token changes nothing
    early = interp.run_with_hooks(model, corrupted, {"blocks.0.hook_resid_pre": lambda a, n: torch.cat(
        [clean_cache[n][:, :3], a[:, 3:]], dim=1)})
    assert torch.equal(early, corrupted_logits)


def test_metric_normalisation_and_patch_grids():
    model = small_model()
    gen = torch.Generator().manual_seed(7)
    clean = torch.randint(0, 37, (1, 7), generator=gen)
    corrupted = clean.clone()
    corrupted[0, 2] = (clean[0, 2] + 11) % 37
    clean_logits, corrupted_logits = model(clean)[0], model(corrupted)[0]
    answer, wrong = int(clean_logits[0, -1].argmax()), int(corrupted_logits[0, -1].argmax())
    if answer == wrong:
        wrong = int(corrupted_logits[0, -1].argsort()[-2])
    metric = interp.normalised_logit_diff(clean_logits, corrupted_logits, answer, wrong)
    assert metric(clean_logits) == 1.0
    assert metric(corrupted_logits) == 0.0
    ld = interp.logit_diff(clean_logits, answer, wrong)
    assert ld.dtype == torch.float64 and ld.shape == (1,)
    assert ld.item() == pytest.approx((clean_logits[0, -1, answer] - clean_logits[0, -1, wrong]).item(), abs=1e-5)
    with pytest.raises(ValueError, match="nothing to recover"):
        interp.normalised_logit_diff(clean_logits, clean_logits, answer, wrong)

    grid = interp.patch_residual(model, clean, corrupted, metric)  # (n_layer + 1, T)
    assert grid.shape == (3, 7)
    assert grid[0, 2] == 1.0  # the corrupted token's own embedding: the whole clean run
    assert (grid[0, :2] == 0.0).all()  # positions before the change carry no information about it
    assert grid[-1, -1].item() == pytest.approx(1.0, abs=1e-9)  # the last residual stream at the last position
    assert (grid[-1, :-1] == 0.0).all()  # after the last block, only the last position reaches the logits
    heads = interp.patch_heads(model, clean, corrupted, metric)
    assert heads.shape == (2, 3) and torch.isfinite(heads).all()
    at_last = interp.patch_heads(model, clean, corrupted, metric, position=-1)
    assert at_last.shape == (2, 3)
    with pytest.raises(ValueError, match="same shape"):
        interp.patch_residual(model, clean, corrupted[:, :-1], metric)
    assert all_hooks_removed(model)


def test_patch_summary_matches_the_full_grids():
    model = small_model()
    gen = torch.Generator().manual_seed(7)
    clean = torch.randint(0, 37, (1, 7), generator=gen)
    corrupted = clean.clone()
    corrupted[0, 2] = (clean[0, 2] + 11) % 37
    clean_logits, corrupted_logits = model(clean)[0], model(corrupted)[0]
    answer, wrong = int(clean_logits[0, -1].argmax()), int(corrupted_logits[0, -1].argmax())
    if answer == wrong:
        wrong = int(corrupted_logits[0, -1].argsort()[-2])
    ld = interp.logit_diff
    swap = interp.TokenSwap(clean, corrupted, 2, answer, wrong, ld(clean_logits, answer, wrong).item(),
                            ld(corrupted_logits, answer, wrong).item())
    summary = interp.patch_summary(model, swap)
    metric = interp.normalised_logit_diff(clean_logits, corrupted_logits, answer, wrong)
    grid = interp.patch_residual(model, clean, corrupted, metric)
    assert torch.equal(summary.at_swap, grid[:, 2]) and torch.equal(summary.at_last, grid[:, -1])
    assert summary.at_swap[0] == 1.0 and summary.at_last[-1].item() == pytest.approx(1.0, abs=1e-9)
    assert torch.equal(summary.heads_last, interp.patch_heads(model, clean, corrupted, metric, position=-1))
    assert summary.attn_out.shape == (2,)
    for layer in range(2):  # every head of a block at once = the block's attention output
        names = [f"blocks.{layer}.attn.hook_z"]
        z = interp.run_with_cache(model, clean, names)[1][names[0]]
        every_head = interp.patch(model, corrupted, names[0], z, (slice(None),), metric)
        assert every_head == pytest.approx(summary.attn_out[layer].item(), abs=1e-5)
    with pytest.raises(ValueError, match="outside the prompt"):
        interp.patch_summary(model, interp.TokenSwap(clean, corrupted, 9, answer, wrong, 1.0, -1.0))
    assert all_hooks_removed(model)


def test_logit_lens_and_next_token_stats():
    model = small_model()
    idx = torch.randint(0, 37, (2, 6), generator=torch.Generator().manual_seed(8))
    logits, cache = interp.run_with_cache(model, idx, interp.residual_names(model))
    lens = interp.logit_lens(model, cache)
    assert lens.shape == (3, 2, 6, 37)
    assert torch.equal(lens[-1], logits)
    torch.testing.assert_close(lens[0], model.lm_head(model.ln_f(cache["blocks.0.hook_resid_pre"])))
    prob, rank = interp.next_token_stats(lens, idx)
    assert prob.shape == rank.shape == (3, 2, 5)
    # by hand at one point
    p = torch.softmax(logits[1, 3].double(), -1)
    assert prob[-1, 1, 3].item() == pytest.approx(p[idx[1, 4]].item(), abs=1e-12)
    assert rank[-1, 1, 3].item() == int((p > p[idx[1, 4]]).sum()) + 1
    toy = torch.tensor([[[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]]])  # (B=1, T=2, V=3)
    prob, rank = interp.next_token_stats(toy, torch.tensor([[0, 2]]))
    assert rank.tolist() == [[2]] and prob.item() == pytest.approx(math.e / (1 + math.e**3 + math.e))
    with pytest.raises(ValueError, match="run_with_cache"):
        interp.logit_lens(model, {})
    assert interp.residual_labels(model) == ["embed", "after block 0", "after block 1"]


def test_repeated_tokens_and_induction_targets():
    gen = torch.Generator().manual_seed(9)
    tokens = interp.repeated_random_tokens(4, 6, 20, gen, prefix=[19])
    assert tokens.shape == (4, 13)
    assert (tokens[:, 0] == 19).all() and torch.equal(tokens[:, 1:7], tokens[:, 7:])
    assert all(len(set(row[1:7].tolist())) == 6 for row in tokens)
    targets = interp.induction_targets(tokens)
    assert (targets[:, :7] == -1).all()
    assert targets[:, 7:].tolist() == [[2, 3, 4, 5, 6, 7]] * 4  # one after the first occurrence
    assert interp.induction_targets(torch.tensor([[5, 5, 5, 1, 5]])).tolist() == [[-1, 1, 2, -1, 3]]
    drawn = interp.repeated_random_tokens(2, 3, [4, 8, 15], gen)
    assert sorted(drawn[0, :3].tolist()) == [4, 8, 15]
    with pytest.raises(ValueError, match="distinct"):
        interp.repeated_random_tokens(1, 5, 4)


def test_induction_score_of_hand_built_patterns():
    B, H, n = 2, 3, 5
    tokens = interp.repeated_random_tokens(B, n, 50, torch.Generator().manual_seed(10), prefix=[49])
    T = tokens.shape[1]  # 11
    causal = torch.ones(T, T).tril()
    pattern = torch.zeros(B, H, T, T)
    for i in range(T):  # head 0: induction where possible, else attend to itself
        j = i - n + 1 if i > n else i
        pattern[:, 0, i, j] = 1.0
    pattern[:, 1] = causal / causal.sum(-1, keepdim=True)  # head 1: uniform over the past
    pattern[:, 2] = torch.diag(torch.ones(T - 1), -1)  # head 2: previous token (position 0 to itself)
    pattern[:, 2, 0, 0] = 1.0
    torch.testing.assert_close(pattern.sum(-1), torch.ones(B, H, T))
    score = interp.induction_score(pattern, tokens)
    uniform = sum(1 / (i + 1) for i in range(n + 1, T)) / (T - n - 1)  # queries n+1..T-1 have a previous occurrence
    torch.testing.assert_close(score, torch.tensor([1.0, uniform, 0.0]))
    prev = interp.previous_token_score(pattern)
    torch.testing.assert_close(prev[2], torch.tensor(1.0))
    assert prev[0].item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="repeated"):
        interp.induction_score(pattern[..., :4, :4], torch.arange(8).view(2, 4))
    with pytest.raises(ValueError, match="tokens of shape"):
        interp.induction_score(pattern, tokens[:, :-1])


def test_induction_training_logs_and_validates():
    config = InductionConfig(vocab_size=16, min_half=3, max_half=5, eval_half=4, d_model=16, n_head=2,
                             batch_size=4, steps=4, eval_every=2, eval_batch=4)
    threads = torch.get_num_threads()
    model, history = train_induction_model(config, progress=False)
    assert torch.get_num_threads() == threads, "the thread count must be restored after training"
    assert history.steps == [0, 2, 4]
    assert history.induction_scores().shape == (3, 2, 2)
    assert history.previous_token_scores().shape == (3, 2, 2)
    assert model.blocks[0].mlp is None and not model.training
    assert len(history.loss_repeat) == 3 and all(math.isfinite(x) for x in history.loss_first)
    again = train_induction_model(config, progress=False)[1]
    assert again.loss_repeat == history.loss_repeat  # deterministic
    with pytest.raises(ValueError, match="max_half"):
        InductionConfig(vocab_size=8, max_half=10)
    with pytest.raises(ValueError, match="steps"):
        InductionConfig(steps=0)


def test_split_losses_selects_the_two_copies():
    tokens = torch.tensor([[3, 1, 2, 3, 1, 2]])  # s = 3 1 2, twice
    logits = torch.zeros(1, 6, 4)
    logits[0, 3, 1] = 10.0  # position 3 (token 3, seen) predicts 1: right
    logits[0, 4, 2] = 10.0  # position 4 predicts 2: right
    first, repeat = split_losses(logits, tokens)
    assert first == pytest.approx(math.log(4))  # positions 0, 1 predict the new tokens 1, 2 uniformly
    assert repeat == pytest.approx(-torch.log_softmax(torch.tensor([0.0, 10.0, 0.0, 0.0]), 0)[1].item())


class Copier(torch.nn.Module):
    """A stand-in model that is a perfect induction head: it predicts the token after the previous occurrence."""

    def __init__(self, vocab: int = 10):
        super().__init__()
        self.config = GPTConfig(vocab_size=vocab, context_length=16, d_model=4, n_layer=1, n_head=1)
        self.tok_emb = torch.nn.Embedding(vocab, 4)

    def forward(self, idx):
        logits = torch.zeros(*idx.shape, self.config.vocab_size)
        targets = interp.induction_targets(idx)[:, -1]  # (B,)
        for b, t in enumerate(targets.tolist()):
            if t >= 0:
                logits[b, -1, idx[b, t]] = 5.0
        return logits, None


def test_find_token_swaps_with_a_perfect_copier():
    tokens = torch.tensor([1, 3, 7, 5, 6, 3, 7, 2, 4, 9, 4])
    swaps = interp.find_token_swaps(Copier(), tokens, {7: [8, 9, 7]}, window=6, distances=[4])
    # after "1 3 7 5 6 3" the copier predicts 7, the true next token; with the 7 swapped for 8 (or 9) it predicts
    # the substitute instead. The 7 at index 6 gives the prompt "6 3 7 2 4 9", where the copier predicts nothing.
    assert [(s.position, s.answer, s.wrong) for s in swaps] == [(2, 7, 8), (2, 7, 9)]
    first = swaps[0]
    assert first.clean.tolist() == [[1, 3, 7, 5, 6, 3]] and first.corrupted.tolist() == [[1, 3, 8, 5, 6, 3]]
    assert first.clean_diff == 5.0 and first.corrupted_diff == -5.0 and first.margin == 5.0
    assert interp.find_token_swaps(Copier(), tokens, {7: [8]}, window=6, distances=[3]) == []  # 7 not copied then
    assert interp.find_token_swaps(Copier(), tokens, {2: [8]}, window=6, distances=[2]) == []
    with pytest.raises(ValueError, match="substitutes is empty"):
        interp.find_token_swaps(Copier(), tokens, {7: [7]}, window=6, distances=[4])
    with pytest.raises(ValueError, match="window"):
        interp.find_token_swaps(Copier(), tokens, {7: [8]}, window=40, distances=[4])
    with pytest.raises(ValueError, match="distances"):
        interp.find_token_swaps(Copier(), tokens, {7: [8]}, window=6, distances=[7])
