"""Safetensors checkpoints: atomic writes, no pickle, clear errors, and bit-identical resume on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from byte_tokenizer import ByteTokenizer
from safetensors.torch import save_file

from insideout.gpt.checkpoint import FORMAT, load_model, read_checkpoint, save_checkpoint
from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.model import GPT, GPTConfig
from insideout.gpt.train import TrainConfig, make_optimizer, train

MODEL = GPTConfig(vocab_size=257, context_length=32, d_model=32, n_layer=2, n_head=2, dropout=0.1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A small local corpus (slices of real plays) so each run starts fast."""
    path = tmp_path_factory.mktemp("data") / "plays.jsonl"
    works = shakespeare_works("train")[:12]
    path.write_text("".join(json.dumps({"text": w.text[5000:9000]}) + "\n" for w in works))
    return str(path)


def config(corpus: str) -> TrainConfig:
    return TrainConfig(dataset=corpus, validation_documents=2, batch_size=4, grad_accum=2, max_steps=10,
                       warmup_steps=3, eval_every=5, eval_batches=2, shuffle_buffer=32, seed=1)


def test_resume_is_bit_identical(corpus, tmp_path):
    torch.set_num_threads(2)
    tok, cfg, path = ByteTokenizer(), config(corpus), tmp_path / "run.safetensors"
    straight = train(MODEL, cfg, tokenizer=tok, progress=False, verbose=False)
    first = train(MODEL, cfg, tokenizer=tok, progress=False, verbose=False, stop_at=5, checkpoint_path=path)
    assert first.checkpoint == path and read_checkpoint(path).step == 5
    torch.manual_seed(12345)  # scramble the global RNG: resuming must restore it (dropout uses it)
    resumed = train(MODEL, cfg, tokenizer=tok, progress=False, verbose=False, resume=path, checkpoint_path=path)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after resuming"
    assert resumed.history == straight.history, "the loss history must continue identically"
    assert resumed.data_state == straight.data_state
    assert read_checkpoint(path).step == 10


def test_checkpoint_round_trip_and_format(tmp_path):
    torch.manual_seed(0)
    model = GPT(MODEL)
    opt = make_optimizer(model, TrainConfig())
    x = torch.randint(0, 257, (2, 33))
    model(x[:, :-1], x[:, 1:])[1].backward()
    opt.step()
    path = save_checkpoint(tmp_path / "sub" / "c.safetensors", model, optimizer=opt, step=7, extra={"note": [1, 2]})
    assert [p.name for p in path.parent.iterdir()] == ["c.safetensors"], "the temporary file must be gone"
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])  # a safetensors header: JSON, no pickle anywhere
    assert json.loads(header["__metadata__"]["format"]) == FORMAT
    assert "model.lm_head.weight" not in header, "the tied head is stored once"
    assert header["rng.torch_cpu"]["dtype"] == "U8"
    loaded, ckpt = load_model(path)
    assert ckpt.step == 7 and ckpt.meta["note"] == [1, 2] and ckpt.model_config == MODEL
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.lm_head.weight is loaded.tok_emb.weight, "weight tying must survive loading"
    assert not loaded.training


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*python -m insideout train"):
        read_checkpoint(tmp_path / "nothing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="corrupt"):
        read_checkpoint(garbage)
    good = save_checkpoint(tmp_path / "good.safetensors", GPT(MODEL))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(ValueError, match="corrupt"):
        read_checkpoint(truncated)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ValueError, match="not an insideout GPT checkpoint"):
        read_checkpoint(foreign)


def test_resume_refuses_a_different_configuration(corpus, tmp_path):
    tok, cfg, path = ByteTokenizer(), config(corpus), tmp_path / "run.safetensors"
    train(MODEL, cfg, tokenizer=tok, progress=False, verbose=False, stop_at=1, checkpoint_path=path)
    with pytest.raises(ValueError, match="resume with the checkpoint's own TrainConfig"):
        train(MODEL, TrainConfig(**{**cfg.to_dict(), "lr": cfg.lr * 2}), tokenizer=tok, progress=False, resume=path)
    other = GPTConfig(**{**MODEL.to_dict(), "d_model": 64})
    with pytest.raises(ValueError, match="resume with the checkpoint's own configuration"):
        train(other, cfg, tokenizer=tok, progress=False, resume=path)


def test_load_course_model_trains_once_then_loads(monkeypatch, tmp_path, capsys):
    """load_course_model: trains when the cache is empty or stale, loads otherwise (tiny stand-in preset)."""
    from insideout.gpt import presets, pretrained
    from insideout.gpt.data import load_tokenizer

    vocab = load_tokenizer("course").vocab_size
    tiny_model = GPTConfig(vocab_size=vocab, context_length=32, d_model=32, n_layer=1, n_head=2)
    tiny_train = TrainConfig(batch_size=2, max_steps=3, warmup_steps=1, eval_every=0, eval_batches=1,
                             shuffle_buffer=16)
    monkeypatch.setenv("INSIDEOUT_CACHE", str(tmp_path))
    monkeypatch.setattr(presets, "model_config", lambda preset: tiny_model)
    monkeypatch.setattr(presets, "train_config", lambda preset, **kw: tiny_train)
    model, tok = pretrained.load_course_model("cpu", device="cpu")
    assert "training the cpu course model (no cached checkpoint" in capsys.readouterr().out
    assert tok.vocab_size == vocab and not model.training and model.config == tiny_model
    again, _ = pretrained.load_course_model("cpu", device="cpu")
    assert "loaded the cpu course model from the cache (course-gpt-cpu.safetensors)" in capsys.readouterr().out
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name])
    via_file, _ = pretrained.load_for_generation(checkpoint=tmp_path / "course-gpt-cpu.safetensors")
    assert torch.equal(via_file.tok_emb.weight, model.tok_emb.weight)
    monkeypatch.setattr(presets, "train_config", lambda preset, **kw: TrainConfig(**{**tiny_train.to_dict(),
                                                                                     "lr": 5e-4}))
    pretrained.load_course_model("cpu", device="cpu")
    assert "its training configuration differs" in capsys.readouterr().out
    (tmp_path / "course-gpt-cpu.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        pretrained.load_course_model("cpu", device="cpu")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        pretrained.load_for_generation(checkpoint=tmp_path / "missing.safetensors")
