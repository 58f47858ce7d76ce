"""Part 4's use of the course's batched sampler (greedy = the reference generator, stop tokens, seeds, the budget
forcing hooks) and the log-probabilities of completions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from insideout.gpt.generate import generate
from insideout.gpt.model import GPT, GPTConfig
from insideout.reasoning.budget import cap_hook, thinking_tokens, wait_hook
from insideout.reasoning.logprobs import completion_logprobs, pack
from insideout.reasoning.sampling import sample
from insideout.reasoning.tokenizer import CharTokenizer

TOK = CharTokenizer()


@pytest.fixture
def model(restore_torch_state):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, context_length=48, d_model=32, n_layer=2, n_head=2)).eval()


PROMPTS = [[1, 10, 12], [1, 11], [1, 10, 12], [1, 13, 14, 15, 16], [1, 11]]


def test_greedy_equals_the_reference_generator(model):
    out = sample(model, PROMPTS, 12, greedy=True, batch_size=2)  # variable-length prompts in batches of two
    for p, toks in zip(PROMPTS, out.tokens, strict=True):
        ref = generate(model, torch.tensor([p]), 12, greedy=True)[0, len(p):].tolist()
        assert toks == ref
    assert out.n_generated == 12 * len(PROMPTS) and not any(out.finished)


def test_stop_tokens_end_rows_early(model):
    ref = sample(model, PROMPTS, 12, greedy=True).tokens
    stop = ref[0][3]  # a token the first row produces at its fourth step
    out = sample(model, PROMPTS, 12, greedy=True, stop_tokens=(stop,))
    for r, toks in zip(ref, out.tokens, strict=True):
        k = r.index(stop) + 1 if stop in r else len(r)
        assert toks == r[:k]  # the same tokens, cut after the first stop token
    assert out.finished[0] and out.n_generated == sum(len(t) for t in out.tokens)


def test_seeded_sampling_is_reproducible(model):
    a = sample(model, PROMPTS, 10, generator=torch.Generator().manual_seed(5)).tokens
    b = sample(model, PROMPTS, 10, generator=torch.Generator().manual_seed(5)).tokens
    c = sample(model, PROMPTS, 10, generator=torch.Generator().manual_seed(6)).tokens
    assert a == b and a != c


def test_logits_hook_forces_tokens(model):
    def hook(step, logits, generated):
        assert generated.shape == (logits.shape[0], step)
        forced = torch.full_like(logits, float("-inf"))
        forced[:, 10 + step % 3] = 0.0
        return forced

    out = sample(model, PROMPTS, 6, logits_hook=hook, generator=torch.Generator().manual_seed(0))
    assert all(t == [10, 11, 12, 10, 11, 12] for t in out.tokens)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample(model, PROMPTS, -1)
    with pytest.raises(ValueError, match="exceeds"):
        sample(model, [[1] * 40], 20)
    with pytest.raises(ValueError, match="empty"):
        sample(model, [[]], 2)


def test_budget_hooks(model):
    prompt = [[TOK.bos_id] + TOK.encode("3+4\n")]
    out = sample(model, prompt, 12, greedy=True, logits_hook=cap_hook(3))
    toks = out.tokens[0]
    assert toks[3] == TOK.answer_id and TOK.ids["0"] <= toks[4] <= TOK.ids["9"] and toks[5] == TOK.eos_id

    def wants_to_answer(step, logits, generated):  # a stand-in model that always wants to end its thinking
        logits = logits.clone()
        logits[:, TOK.answer_id] = 100.0
        return logits

    def combined(step, logits, generated):
        return wait_hook(2)(step, wants_to_answer(step, logits, generated), generated)

    toks = sample(model, prompt, 8, greedy=True, logits_hook=combined).tokens[0]
    assert toks[:3] == [TOK.wait_id, TOK.wait_id, TOK.answer_id]
    assert thinking_tokens("3+4=7\n<answer>7") == 6
    with pytest.raises(ValueError):
        cap_hook(-1)


@torch.no_grad()
def test_completion_logprobs_match_one_sequence_at_a_time(model):
    prompts = [[1, 10, 12], [1, 11], [1, 13, 14, 15]]
    completions = [[9, 10], [11, 12, 13, 14], [15]]
    ids, where, mask = pack(prompts, completions, TOK.pad_id)
    logp, _ = completion_logprobs(model, ids, where, mask)
    for b, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        seq = torch.tensor([p + c])
        ref = F.log_softmax(model(seq)[0][0, len(p) - 1:-1], dim=-1).gather(1, torch.tensor(c)[:, None])[:, 0]
        assert (logp[b, : len(c)] - ref).abs().max() < 1e-5
        assert mask[b].sum() == len(c) and float(logp[b, len(c):].abs().sum()) == 0.0
