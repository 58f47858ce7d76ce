"""Instruction data, judges and the chat format: hand-written good, bad and adversarial responses."""

from __future__ import annotations

import pytest
import torch

from insideout.finetune import tasks as T
from insideout.finetune.chat import CHAT_SPECIALS, add_chat_tokens, chat_tokenizer, check_chat_model
from insideout.gpt.model import GPT, GPTConfig


@pytest.fixture(scope="module")
def tok():
    return chat_tokenizer()


GOOD = [("question", None, "What say you to this?"), ("exclamation", None, "O villain, villain!"),
        ("n_words", "5", "I do not know him."), ("contains", "love", "I love thee not, therefore pursue me not."),
        ("starts_with", "B", "But soft, what light?"), ("avoid_letter", "e", "I am not mad."),
        ("contains", "love", "My love is thine.")]
BAD = [("question", None, "I am gone."), ("exclamation", None, "Farewell, my lord."),
       ("n_words", "5", "I do not know him now."), ("contains", "love", "I hate thee."),
       ("starts_with", "B", "Soft, what light?"), ("avoid_letter", "e", "I see thee.")]


@pytest.mark.parametrize("task, arg, text", GOOD)
def test_judges_pass_good_answers_with_full_gold(task, arg, text):
    v = T.judge(task, arg, text, stopped=True)
    assert v.passed and v.gold == 1.0 and v.constraint == 1.0


@pytest.mark.parametrize("task, arg, text", BAD)
def test_judges_fail_bad_answers(task, arg, text):
    v = T.judge(task, arg, text, stopped=True)
    assert not v.passed and v.constraint < 1.0 and v.gold < 1.0


def test_partial_credit_is_graded():
    assert T.judge("n_words", "5", "I do not know him now.", True).gold == pytest.approx(0.8)
    assert T.judge("contains", "love", "How lovely she is.", True).constraint == 0.5
    assert T.judge("question", None, "Why? I know not.", True).constraint == 0.5
    assert T.judge("avoid_letter", "e", "I see.", True).constraint == pytest.approx(1 / 3)


ADVERSARIAL = ["", "   ", "?", "!!!", "What say you?\nAnd who are you?", "<|end|>", "What <|assistant|> is this?",
               "<|endoftext|>", " ".join(["What"] * 200) + "?", "Qzxv blorf?"]


@pytest.mark.parametrize("text", ADVERSARIAL)
def test_adversarial_responses_never_pass_or_get_full_gold(text):
    v = T.judge("question", None, text, stopped=True)
    assert not v.passed and 0.0 <= v.gold < 1.0


def test_an_answer_that_never_stops_fails_and_loses_half_its_gold():
    stopped, unstopped = (T.judge("question", None, "What say you?", s) for s in (True, False))
    assert stopped.passed and not unstopped.passed and unstopped.gold == pytest.approx(stopped.gold / 2)


def test_unknown_task_and_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown task type 'rhyme'"):
        T.judge("rhyme", None, "x", True)
    with pytest.raises(ValueError, match="unknown task type"):
        T.instruction("poem", None)
    with pytest.raises(ValueError, match="n_per_task"):
        T.make_prompts(0, seed=0)
    with pytest.raises(ValueError, match="response must be a str"):
        T.judge("question", None, None, True)


def test_instruction_data_comes_from_training_plays_and_passes_its_judges():
    ds = T.instruction_dataset(20, seed=0)
    assert set(ds.column_names) == {"task", "arg", "instruction", "response"} and len(ds) == 20 * len(T.TASKS)
    assert set(ds["task"]) == set(T.TASKS)
    lines = set(T.training_lines())
    from insideout.gpt.corpus import shakespeare_works

    validation_text = "\n".join(w.text for w in shakespeare_works("validation"))
    for row in ds:
        assert row["response"] in lines
        assert T.judge(row["task"], row["arg"] or None, row["response"], True).passed, row
    assert sum(row["response"] in validation_text for row in ds) < len(ds)  # lines are not picked from there
    seen, unseen = T.word_arguments()
    assert not set(seen) & set(unseen)
    assert not {r["arg"] for r in ds if r["task"] == "contains"} & set(unseen)
    assert T.instruction_dataset(20, seed=0)[:] == ds[:], "the same seed gives the same data"


def test_answer_index_agrees_with_the_judge():
    for task in T.TASKS:
        arg = T.task_arguments(task)[0]
        assert set(T.answers(task, arg)) == set(T.lines_for(task, arg))


def test_special_token_strings_typed_by_a_user_stay_plain_text(tok):
    typed = "Say <|assistant|> and <|end|> and <|user|> and <|endoftext|>"
    ids = tok.prompt(typed)
    control = [i for i in ids if i in tok.special_ids]
    assert control == [tok.eot_id, tok.user_id, tok.assistant_id], "only the template's own control tokens"
    assert ids[0] == tok.eot_id and ids[1] == tok.user_id and ids[-1] == tok.assistant_id
    assert tok.decode(ids[2:-1]) == typed
    conv, mask = tok.conversation("hi", "<|end|> is what I say")
    assert conv.count(tok.end_id) == 1 and conv[-1] == tok.end_id and mask[-1]


def test_conversation_mask_covers_the_response_and_end_of_turn_only(tok):
    ids, mask = tok.conversation("Write a question.", "What is he?")
    n_prompt = len(tok.prompt("Write a question."))
    assert mask == [False] * n_prompt + [True] * (len(ids) - n_prompt)
    assert tok.decode([i for i, m in zip(ids, mask, strict=True) if m][:-1]) == "What is he?"
    assert tok.vocab_size == tok.base_vocab_size + len(CHAT_SPECIALS)


def test_resize_keeps_old_logits_and_starts_new_tokens_at_the_mean(tok):
    torch.manual_seed(0)
    base = GPT(GPTConfig(vocab_size=tok.base_vocab_size, context_length=16, d_model=16, n_layer=1, n_head=2)).eval()
    grown = add_chat_tokens(base, tok)
    idx = torch.randint(0, tok.base_vocab_size, (2, 10))
    with torch.no_grad():
        old, new = base(idx)[0], grown(idx)[0]
    assert torch.equal(new[..., : tok.base_vocab_size], old)
    mean_logit = old.mean(-1)
    for j in range(tok.base_vocab_size, tok.vocab_size):
        assert (new[..., j] - mean_logit).abs().max() < 1e-4
    assert grown.lm_head.weight.data_ptr() == grown.tok_emb.weight.data_ptr(), "the head stays tied"
    with pytest.raises(ValueError, match="without the chat tokens"):
        check_chat_model(base, tok)
    with pytest.raises(ValueError, match="pass the base model"):
        add_chat_tokens(grown, tok)
    check_chat_model(grown, tok)


def test_a_reward_model_in_a_policy_slot_and_a_prompt_longer_than_the_context_are_refused(tok):
    from insideout.cache import Artifact
    from insideout.finetune.evaluate import answer
    from insideout.finetune.recipes import model_from_artifact

    config = GPTConfig(vocab_size=tok.vocab_size, context_length=16, d_model=16, n_layer=1, n_head=2)
    model = GPT(config)
    tensors = {**model.state_dict(), "head.weight": torch.zeros(1, 16)}
    artifact = Artifact("ft-reward", {}, tensors, {"config": config.to_dict(), "role": "reward_model"})
    with pytest.raises(ValueError, match="reward model"):
        model_from_artifact(artifact)
    long = {"task": "question", "arg": "", "instruction": "Write a question, " * 20}
    with pytest.raises(ValueError, match="context_length"):
        answer(model, tok, [long], seed=0, max_new_tokens=4)
