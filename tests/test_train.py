"""The training loop's pieces: schedule, decay groups, accumulation, clipping, validation and config checks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from byte_tokenizer import ByteTokenizer

from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.model import GPT, GPTConfig
from insideout.gpt.train import (
    TrainConfig,
    forward_backward,
    lr_at,
    make_optimizer,
    parameter_groups,
    train,
)

TINY = GPTConfig(vocab_size=257, context_length=32, d_model=32, n_layer=2, n_head=2)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_warmup_then_cosine():
    cfg = TrainConfig(lr=1e-3, min_lr_ratio=0.1, warmup_steps=10, max_steps=110)
    lrs = [lr_at(s, cfg) for s in range(cfg.max_steps + 1)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3), "linear warmup to the peak"
    assert all(b > a for a, b in zip(lrs[:9], lrs[1:10], strict=True)), "warmup must increase"
    assert all(b <= a for a, b in zip(lrs[10:-1], lrs[11:], strict=True)), "cosine must decrease"
    assert lrs[60] == pytest.approx(0.55e-3), "half-way down the cosine: the mean of peak and floor"
    assert lrs[110] == pytest.approx(1e-4) and min(lrs) >= 1e-4 - 1e-12, "the floor is lr * min_lr_ratio"


def test_decay_groups():
    model = GPT(TINY)
    decay, no_decay = parameter_groups(model)
    assert set(decay) == {n for n, p in model.named_parameters() if n.endswith(".weight") and p.dim() == 2} - {
        "tok_emb.weight", "pos_emb.weight"}
    assert {"tok_emb.weight", "pos_emb.weight", "ln_f.weight", "ln_f.bias", "blocks.0.attn.qkv.bias"} <= set(no_decay)
    assert not set(decay) & set(no_decay)
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    opt = make_optimizer(model, TrainConfig(weight_decay=0.1))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_gradient_accumulation_equals_the_big_batch():
    torch.manual_seed(0)
    model = GPT(TINY).double()
    rows = torch.randint(0, 257, (8, 33))
    loss_big = forward_backward(model, rows, 1)
    big = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    loss_acc = forward_backward(model, rows, 4)  # 4 micro-batches of 2 rows
    assert abs(loss_big.item() - loss_acc.item()) < 1e-12
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, big[n], rtol=0, atol=1e-12), n
    with pytest.raises(ValueError, match="equal micro-batches"):
        forward_backward(model, rows, 3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "plays.jsonl"
    works = shakespeare_works("train")[:10]
    path.write_text("".join(json.dumps({"text": w.text[5000:10000]}) + "\n" for w in works))
    return str(path)


def test_training_lowers_the_validation_loss_and_clips(corpus):
    cfg = TrainConfig(dataset=corpus, validation_documents=2, batch_size=8, max_steps=40, warmup_steps=4, lr=3e-3,
                      eval_every=20, eval_batches=4, grad_clip=0.5, shuffle_buffer=64)
    result = train(TINY, cfg, tokenizer=ByteTokenizer(), progress=False, verbose=False)
    h = result.history
    assert h["step"] == list(range(1, 41)) and h["val_step"] == [20, 40]
    assert h["lr"] == [lr_at(s, cfg) for s in range(40)]
    assert h["loss"][0] == pytest.approx(math.log(257), abs=0.2), "an untrained model is near-uniform"
    assert h["val_loss"][-1] < h["loss"][0] - 1.5, f"validation loss did not fall: {h['val_loss']}"
    assert max(h["grad_norm"]) > 0.5, "the test needs steps whose gradient norm exceeds the clip"
    assert result.tokens_trained == 40 * 8 * 32 and result.tokens_per_second > 0
    assert not result.model.training


def test_clipping_bounds_the_update():
    torch.manual_seed(0)
    model = GPT(TINY)
    rows = torch.randint(0, 257, (4, 33))
    forward_backward(model, rows, 1)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
    after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()]))
    assert norm > 1e-3 and after == pytest.approx(1e-3, rel=1e-4)


@pytest.mark.parametrize("field, value, message", [
    ("batch_size", 0, "batch_size=0"), ("lr", -1.0, "lr=-1.0"), ("warmup_steps", 600, "warmup_steps=600"),
    ("min_lr_ratio", 1.5, "min_lr_ratio=1.5"), ("beta2", 1.0, "beta2=1.0"), ("tokenizer", "bert", "tokenizer='bert'"),
    ("seq_len", 0, "seq_len=0"),
])
def test_config_validation(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        TrainConfig(**{field: value})


def test_bad_run_arguments(corpus):
    cfg = TrainConfig(dataset=corpus, validation_documents=2, max_steps=4, warmup_steps=1)
    with pytest.raises(ValueError, match="stop_at=9"):
        train(TINY, cfg, tokenizer=ByteTokenizer(), stop_at=9)
    with pytest.raises(ValueError, match="seq_len=64 exceeds"):
        train(TINY, TrainConfig(**{**cfg.to_dict(), "seq_len": 64}), tokenizer=ByteTokenizer())
    small = GPTConfig(**{**TINY.to_dict(), "vocab_size": 100})
    with pytest.raises(ValueError, match="tokenizer has 257 tokens"):
        train(small, cfg, tokenizer=ByteTokenizer(), progress=False)


def test_pretraining_on_fit_is_bit_identical_to_the_written_out_loop(corpus):
    """The wrapper on insideout.training.fit against the loop it replaced, written out here: same weights, bit for
    bit, with gradient accumulation, clipping (which depends on the order of the norms) and dropout."""
    from insideout.gpt.train import evaluate, pretraining_streams

    model_cfg = GPTConfig(**{**TINY.to_dict(), "dropout": 0.1})
    cfg = TrainConfig(dataset=corpus, validation_documents=2, batch_size=4, grad_accum=2, max_steps=8,
                      warmup_steps=2, lr=3e-3, eval_every=4, eval_batches=2, grad_clip=0.3, shuffle_buffer=32)
    result = train(model_cfg, cfg, tokenizer=ByteTokenizer(), progress=False, verbose=False)

    torch.manual_seed(cfg.seed)
    model = GPT(model_cfg)
    optimizer = make_optimizer(model, cfg)
    stream, val_batches = pretraining_streams(cfg, ByteTokenizer(), 32)
    losses, vals = [], []
    model.train()
    for step in range(cfg.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        losses.append(forward_backward(model, next(stream), cfg.grad_accum).item())
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % cfg.eval_every == 0:
            vals.append(evaluate(model, val_batches))
    assert result.history["loss"] == losses and result.history["val_loss"] == vals
    assert max(result.history["grad_norm"]) > cfg.grad_clip, "clipping must be active for the test to bite"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, result.model.state_dict()[name]), name
