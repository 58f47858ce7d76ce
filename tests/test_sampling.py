"""Batched sampling: greedy equals generate(greedy=True), draws follow the exact distribution and today's sampler's,
excluded tokens never appear, seeds reproduce, stop tokens end rows (which then cost no work), bad input is refused."""

import pytest
import torch
from scipy import stats

from insideout.gpt.generate import generate, next_token_distribution, sample_next_token
from insideout.gpt.model import GPT, GPTConfig
from insideout.gpt.sampling import SampleResult, inverse_cdf_draw, sample

V = 61


def small_model(position: str = "learned", dtype=torch.float32, **overrides) -> GPT:
    # init_std 0.3: a peaked, far-from-uniform next-token distribution, so frequency tests have power
    kwargs = dict(vocab_size=V, context_length=40, d_model=32, n_layer=2, n_head=4, position=position,
                  init_std=0.3, **overrides)
    torch.manual_seed(0)
    return GPT(GPTConfig(**kwargs)).to(dtype).eval()


def prompts_of(lengths, seed: int = 3) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=g).tolist() for n in lengths]


MIXED = (1, 7, 3, 12, 5, 9, 14, 2, 11, 6)


# ---- the same decoding as generate ---------------------------------------------------------------------------


@pytest.mark.parametrize("position", ["learned", "alibi", "rope", "none"])
def test_greedy_equals_generate_for_every_prompt(position):
    model = small_model(position, torch.float64)
    prompts = prompts_of(MIXED)
    result = sample(model, prompts, 20, greedy=True, batch_size=4)  # 3 batches, each padded differently
    for prompt, tokens in zip(prompts, result.tokens, strict=True):
        expected = generate(model, torch.tensor([prompt]), 20, greedy=True)[0, len(prompt):].tolist()
        assert tokens == expected
    assert result.n_generated == 20 * len(prompts) and not any(result.finished)
    assert result.forward_calls == 3 * 20  # a prefill and 19 single-token steps per batch


def test_greedy_with_stop_tokens_is_generate_cut_at_the_first_stop():
    model = small_model("rope", torch.float64)
    prompts = prompts_of(MIXED, seed=5)
    free = sample(model, prompts, 25, greedy=True)
    stops = sorted({t[3] for t in free.tokens})[:3]  # tokens that do occur early in some continuations
    cut = sample(model, prompts, 25, greedy=True, stop_tokens=stops)
    for tokens, done, full in zip(cut.tokens, cut.finished, free.tokens, strict=True):
        first = next((i for i, t in enumerate(full) if t in stops), None)
        assert tokens == (full if first is None else full[: first + 1])
        assert done == (first is not None)
    assert any(cut.finished) and not all(cut.finished)
    assert cut.rows_computed < free.rows_computed, "finished rows must stop costing work"


def test_float32_greedy_on_padded_batches_matches_generate():
    """In float32 the padded batch rounds differently from a lone row (bound ~2e-5 on logits); on this model no
    argmax is that close to a tie, so the tokens agree."""
    model = small_model("rope")
    prompts = prompts_of(MIXED, seed=11)
    result = sample(model, prompts, 15, greedy=True)
    for prompt, tokens in zip(prompts, result.tokens, strict=True):
        assert tokens == generate(model, torch.tensor([prompt]), 15, greedy=True)[0, len(prompt):].tolist()


# ---- the distribution -----------------------------------------------------------------------------------------


def next_token_counts(model, prompt, n: int, seed: int = 0, **options) -> torch.Tensor:
    result = sample(model, [prompt] * n, 1, generator=torch.Generator().manual_seed(seed), batch_size=5000,
                    **options)
    return torch.bincount(torch.tensor([t[0] for t in result.tokens]), minlength=V)


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's test of counts against probabilities; tokens expected fewer than 5 times are pooled."""
    expected = probs.double() * counts.sum()
    big = expected >= 5
    obs = torch.cat([counts[big].double(), counts[~big].double().sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    return float(stats.chisquare(obs.numpy(), (exp * obs.sum() / exp.sum()).numpy()).pvalue)


@pytest.mark.parametrize("options", [dict(), dict(temperature=0.7), dict(temperature=1.3, top_k=8),
                                     dict(top_p=0.8), dict(temperature=0.9, top_k=12, top_p=0.9)],
                         ids=["plain", "T0.7", "T1.3-k8", "p0.8", "T0.9-k12-p0.9"])
def test_draws_follow_the_exact_distribution(options):
    model = small_model()
    prompt = prompts_of([2], seed=2)[0]
    with torch.no_grad():
        logits = model.double()(torch.tensor([prompt]))[0][0, -1]  # exact float64 logits of the next token
    model.float()
    probs = next_token_distribution(logits, **options).double()
    assert probs.max().item() < 0.9 and (probs > 0.01).sum().item() >= 4, "a peaked but not one-hot distribution"
    counts = next_token_counts(model, prompt, 8000, **options)
    assert counts[probs == 0].sum().item() == 0, "a token excluded by top-k/top-p was drawn"
    assert chi_square_p(counts, probs) > 1e-3
    # negative control: the same draws are far from a distribution at another temperature
    other = next_token_distribution(logits, **{**options, "temperature": options.get("temperature", 1.0) * 1.5})
    assert chi_square_p(counts, other.double()) < 1e-6


def test_draws_match_todays_sampler_statistically():
    """Two-sample test against generate's sampler (torch.multinomial) on the same logits."""
    model = small_model()
    prompt = prompts_of([2], seed=8)[0]
    with torch.no_grad():
        logits = model(torch.tensor([prompt]))[0][:, -1]  # (1, V)
    g = torch.Generator().manual_seed(1)
    theirs = sample_next_token(logits.expand(8000, V), temperature=0.8, top_k=20, generator=g)[:, 0]
    ours = next_token_counts(model, prompt, 8000, seed=2, temperature=0.8, top_k=20)
    table = torch.stack([ours, torch.bincount(theirs, minlength=V)])
    table = table[:, table.sum(0) >= 10]
    assert stats.chi2_contingency(table.numpy()).pvalue > 1e-3


def test_inverse_cdf_draw_never_picks_excluded_tokens_and_refuses_empty_rows():
    logits = torch.full((4000, 6), float("-inf"))
    logits[:, 1], logits[:, 4] = 0.0, -30.0  # token 4: probability ~1e-13, still never beyond its interval
    drawn = inverse_cdf_draw(logits, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) <= {1, 4}
    with pytest.raises(ValueError, match=r"rows \[1\] have no token with a finite logit"):
        inverse_cdf_draw(torch.tensor([[0.0, 1.0], [float("-inf")] * 2]))
    with pytest.raises(ValueError, match="no token with a finite logit"):
        inverse_cdf_draw(torch.tensor([[float("nan"), 1.0]]))


# ---- seeds, stopping, hooks -----------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_tokens():
    model = small_model("alibi")
    prompts = prompts_of(MIXED)

    def run(seed):
        return sample(model, prompts, 12, temperature=0.9, top_p=0.95, generator=torch.Generator().manual_seed(seed),
                      batch_size=4, stop_tokens=[3]).tokens

    assert run(0) == run(0)
    assert run(0) != run(1)


def test_rows_that_finish_are_dropped_and_a_finished_batch_stops():
    model = small_model()
    prompts = prompts_of([4] * 16)
    result = sample(model, prompts, 30, generator=torch.Generator().manual_seed(0),
                    stop_tokens=range(V // 2))  # about half the mass: rows end within a few steps
    assert all(result.finished) and all(t[-1] < V // 2 for t in result.tokens)
    assert all(all(x >= V // 2 for x in t[:-1]) for t in result.tokens), "nothing generated after a stop"
    assert result.forward_calls < 30 and result.rows_computed < 16 * result.forward_calls
    assert result.n_generated == sum(len(t) for t in result.tokens)


def test_logits_hook_constrains_decoding_and_sees_the_generated_tokens():
    model = small_model()
    prompts = prompts_of(MIXED[:5])
    seen = []

    def only_even(step, logits, generated):
        seen.append((step, tuple(logits.shape), tuple(generated.shape)))
        out = torch.full_like(logits, float("-inf"))
        out[:, 0::2] = logits[:, 0::2]
        return out

    result = sample(model, prompts, 8, generator=torch.Generator().manual_seed(0), logits_hook=only_even,
                    stop_tokens=[0, 2, 4, 6])
    assert all(t % 2 == 0 for tokens in result.tokens for t in tokens)
    assert seen[0] == (0, (5, V), (5, 0)) and seen[1][2] == (5, 1), "rows are kept: row i is prompt i"

    def copy_step(step, logits, generated):  # force token = step + row, a sequence the hook can check
        out = torch.full_like(logits, float("-inf"))
        want = (step + torch.arange(logits.shape[0])) % V
        out[torch.arange(logits.shape[0]), want] = 0.0
        if step:
            assert torch.equal(generated[:, -1], (want - 1) % V)
        return out

    forced = sample(model, prompts, 6, greedy=True, logits_hook=copy_step)
    assert forced.tokens == [[(s + i) % V for s in range(6)] for i in range(5)]

    stops = range(0, 30, 2)

    def nothing_after_the_stop(step, logits, generated):  # a finished row gets no allowed token at all
        out = only_even(step, logits, generated)
        if step:
            out[generated[:, -1] < 30] = float("-inf")
        return out

    ended = sample(model, prompts, 8, generator=torch.Generator().manual_seed(0), stop_tokens=stops,
                   logits_hook=nothing_after_the_stop)
    assert all(t[-1] in stops or len(t) == 8 for t in ended.tokens)
    assert len({len(t) for t in ended.tokens}) > 1, "rows must finish at different steps for the test to bite"


def test_zero_new_tokens_and_a_sequence_filling_the_context():
    model = small_model()
    empty = sample(model, prompts_of([3, 5]), 0)
    assert empty == SampleResult(tokens=[[], []], finished=[False, False])
    full = sample(model, prompts_of([30]), 10, greedy=True)  # 30 + 10 = the whole context of 40
    assert len(full.tokens[0]) == 10


def test_training_mode_is_restored():
    model = small_model(dropout=0.1).train()
    sample(model, prompts_of([3]), 2, greedy=True)
    assert model.training


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda m: sample(m, torch.zeros(2, 3, dtype=torch.long), 4), ["list of prompts", ".tolist()"]),
        (lambda m: sample(m, [], 4), ["prompts is empty"]),
        (lambda m: sample(m, [[1, 2], []], 4), ["prompt 1 is empty"]),
        (lambda m: sample(m, ["hello"], 4), ["prompt 0 is a str", "tokenizer"]),
        (lambda m: sample(m, [[1, 2.5]], 4), ["prompt 0 holds [2.5]"]),
        (lambda m: sample(m, [[1, V]], 4), [f"prompt 0 holds [{V}]", f"[0, {V})"]),
        (lambda m: sample(m, [[1] * 41], 1), ["41 tokens", "context_length=40"]),
        (lambda m: sample(m, [[1] * 5, [1] * 35], 6),
         ["prompt 1 (35 tokens) + max_new_tokens=6", "lower max_new_tokens to 5"]),
        (lambda m: sample(m, [[1]], -1), ["max_new_tokens=-1"]),
        (lambda m: sample(m, [[1]], 2, temperature=0), ["temperature=0"]),
        (lambda m: sample(m, [[1]], 2, top_p=1.5), ["top_p=1.5"]),
        (lambda m: sample(m, [[1]], 2, stop_tokens=5), ["stop_tokens=5", "collection"]),
        (lambda m: sample(m, [[1]], 2, stop_tokens=[V]), ["stop_tokens holds"]),
        (lambda m: sample(m, [[1]], 2, batch_size=0), ["batch_size=0"]),
        (lambda m: sample(m, [[1]], 2, generator=0), ["torch.Generator"]),
        (lambda m: sample(m, [[1]], 2, logits_hook=lambda s, lg, g: lg[:, :3]),
         ["logits_hook must return", f"(1, {V})"]),
        (lambda m: sample(m, [[1]], 2, logits_hook=lambda s, lg, g: torch.full_like(lg, float("-inf"))),
         ["no token with a finite logit"]),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(call, words):
    with pytest.raises(ValueError) as err:
        call(small_model())
    for word in words:
        assert word in str(err.value)
