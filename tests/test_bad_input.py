"""Issue 9's list of inputs that gave a raw traceback or a silently wrong result: each is now a clear error."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from byte_tokenizer import ByteTokenizer
from safetensors.torch import load_file, save_file

import insideout
from insideout import utils
from insideout.gpt import presets
from insideout.gpt.bpe import BPE, parse_ranks, read_ranks
from insideout.gpt.checkpoint import load_model, save_checkpoint
from insideout.gpt.config import TrainConfig
from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.data import text_dataset
from insideout.gpt.model import GPT, GPTConfig
from insideout.gpt.tokenizer import TOKENIZERS, course_tokenizer
from insideout.gpt.train import build_parser, check_writable, train
from insideout.training import OptimConfig

TINY = GPTConfig(vocab_size=257, context_length=32, d_model=32, n_layer=1, n_head=2)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "plays.jsonl"
    path.write_text("".join(json.dumps({"text": w.text[5000:8000]}) + "\n" for w in shakespeare_works("train")[:6]))
    return str(path)


def small_run(corpus: str, **overrides) -> TrainConfig:
    return TrainConfig(**{**dict(dataset=corpus, validation_documents=2, batch_size=2, max_steps=2, warmup_steps=1,
                                 eval_batches=1, shuffle_buffer=16), **overrides})


# ---- configurations --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["grad_clip", "weight_decay", "eps", "lr", "beta1", "min_lr_ratio"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.1"])
def test_train_config_refuses_nan_inf_and_strings(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}=.*must be a finite number"):
        TrainConfig(**{field: value})


def test_train_config_is_an_optim_config_with_the_old_field_order():
    fields = list(TrainConfig().to_dict())
    assert isinstance(TrainConfig(), OptimConfig)
    assert fields[:5] == ["dataset", "tokenizer", "seq_len", "batch_size", "grad_accum"]
    assert fields[5:14] == list(OptimConfig().to_dict())
    assert fields[14:] == ["eval_every", "eval_batches", "shuffle_buffer", "validation_documents", "seed",
                           "checkpoint_every", "compile", "autocast"]
    assert TrainConfig().lr == OptimConfig().lr, "optimizer defaults are inherited, not restated"
    with pytest.raises(ValueError, match="TrainConfig.compile='yes'"):
        TrainConfig(compile="yes")


def test_one_preset_list_and_one_tokenizer_list(monkeypatch):
    assert presets.PRESET_NAMES == utils.PRESETS
    monkeypatch.setenv(utils.PRESET_ENV, "gpt2-small")
    assert utils.get_preset() == "gpt2-small"
    assert presets.tokenizer_name(" GPT2-Small ") == "gpt2"
    assert {presets.tokenizer_name(p) for p in presets.PRESET_NAMES} <= set(TOKENIZERS)
    tokenizer_flag = next(a for a in build_parser()._actions if a.dest == "tokenizer")
    assert tuple(tokenizer_flag.choices) == TOKENIZERS
    with pytest.raises(ValueError, match="unknown preset 'tpu'.*cpu, gpu, gpt2-small"):
        presets.train_config("tpu")


def test_device_names_are_normalised_like_presets(monkeypatch):
    monkeypatch.setenv(utils.DEVICE_ENV, " CPU")
    assert utils.get_device() == torch.device("cpu")
    assert utils.get_device(" Cpu ") == torch.device("cpu")
    for bad in ("cuda:x", "cpu:", "tpu"):
        with pytest.raises(ValueError, match="unknown device"):
            utils.get_device(bad)


def test_the_command_derives_d_ff_from_its_d_model():
    from insideout.gpt.train import _configs_from_args

    mc, _ = _configs_from_args(build_parser().parse_args(["--d-model", "32", "--n-head", "2"]))
    assert mc.d_model == 32 and mc.d_ff == 128 and mc.d_ff_derived


# ---- the command line ----------------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    root = str(Path(insideout.__file__).resolve().parents[1])
    env = {**(os.environ if env is None else env),
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "insideout", *args], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


@pytest.mark.parametrize("flags, message", [
    (["--grad-clip", "nan"], "TrainConfig.grad_clip=nan"),
    (["--weight-decay", "nan"], "TrainConfig.weight_decay=nan"),
    (["--out", "/dev/null/x"], "cannot write a checkpoint at /dev/null/x/checkpoint.safetensors"),
])
def test_the_command_refuses_before_training(flags, message, corpus, capsys, monkeypatch, tmp_path):
    from insideout.gpt.train import main

    monkeypatch.chdir(tmp_path)
    assert main(["--data", corpus, "--validation-documents", "2", "--no-progress", *flags]) == 2
    out = capsys.readouterr()
    assert message in out.err and "step " not in out.out, "the error must come before any training step"


def test_train_checks_the_checkpoint_path_before_training(corpus, capsys):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="cannot write a checkpoint at /dev/null/x"):
        train(TINY, small_run(corpus, eval_every=1), tokenizer=ByteTokenizer(), progress=False,
              checkpoint_path="/dev/null/x/c.safetensors")
    assert "step" not in capsys.readouterr().out
    assert time.perf_counter() - t0 < 60
    with pytest.raises(ValueError, match="is a folder"):
        check_writable(Path(corpus).parent)


def test_the_command_puts_datasets_offline_for_local_data(tmp_path, corpus):
    from insideout.__main__ import needs_network

    assert not needs_network("train", ["--data", corpus])
    assert not needs_network("train", [])  # the cpu preset: the embedded corpus
    assert not needs_network("generate", ["--preset", "cpu"])
    assert needs_network("train", ["--data=fineweb"]) and needs_network("train", ["--preset", "gpt2-small"])
    ckpt = save_checkpoint(tmp_path / "c.safetensors", GPT(TINY), extra={"train_config": {"dataset": "fineweb"}})
    assert needs_network("train", ["--resume", str(ckpt)])
    probe = ("import os, sys; from insideout.__main__ import set_offline_mode; "
             "set_offline_mode('train', sys.argv[1:]); import datasets, huggingface_hub.constants as c; "
             "print(datasets.config.HF_HUB_OFFLINE, c.HF_HUB_OFFLINE)")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    root = str(Path(insideout.__file__).resolve().parents[1])
    env["PYTHONPATH"] = root
    local = subprocess.run([sys.executable, "-c", probe, "--data", corpus], capture_output=True, text=True, env=env,
                           timeout=120)
    hub = subprocess.run([sys.executable, "-c", probe, "--data", "fineweb"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert local.stdout.split() == ["True", "True"], local.stderr[-2000:]
    assert hub.stdout.split() == ["False", "False"], "negative control: FineWeb keeps the network"


# ---- data ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", "", "is empty: its 1 document(s) hold no text"),
    ("empty.jsonl", "", "is empty: it holds no documents"),
    ("blank.jsonl", '{"text": ""}\n{"text": ""}\n', "is empty"),
    ("one.txt", "A play of one document.\n" * 50, "a .txt file is one document"),
    ("few.jsonl", '{"text": "a"}\n{"text": "b"}\n', "holds 2 document(s), and the first validation_documents=100"),
    ("number.jsonl", '{"text": 5}\n', "has a 'text' of type int"),
    ("list.jsonl", '{"text": "fine"}\n{"text": ["x"]}\n', "document 1 of data source"),
])
def test_bad_local_sources_name_the_problem(name, content, message, tmp_path):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError) as err:
        text_dataset(str(path), "train")
    assert message in str(err.value)


def test_a_late_non_string_text_is_caught_while_packing(tmp_path):
    from insideout.gpt.data import BatchStream, packed_dataset

    path = tmp_path / "late.jsonl"
    path.write_text("".join(json.dumps({"text": "ok " * 50}) + "\n" for _ in range(4)) + '{"text": {"a": 1}}\n')
    stream = BatchStream(packed_dataset(text_dataset(str(path), "train", validation_documents=1), ByteTokenizer(),
                                        8), 1000)
    with pytest.raises(ValueError, match="has a 'text' of type dict"):
        next(stream)


# ---- tokenizers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ids, word", [([1.7], "1.7"), (["5"], "'5'"), ([True], "True"),
                                       (torch.tensor([1.0]), "dtype torch.float32"), ("12", "str")])
def test_decode_refuses_what_is_not_an_integer_id(ids, word):
    with pytest.raises(ValueError, match="integer") as err:
        course_tokenizer().decode(ids)
    assert word in str(err.value)


def test_decode_accepts_integer_tensors_and_numpy_ints():
    tok = course_tokenizer()
    ids = tok.encode("To be")
    assert tok.decode(torch.tensor(ids)) == tok.decode([int(i) for i in torch.tensor(ids).numpy()]) == "To be"


@pytest.mark.parametrize("text, word", [(b"bytes", "decode bytes to str first"), (None, "NoneType"), (5, "int")])
def test_encode_refuses_what_is_not_a_string(text, word):
    with pytest.raises(ValueError, match="encode needs a str") as err:
        course_tokenizer().encode(text)
    assert word in str(err.value)


def test_one_parser_of_the_rank_format(tmp_path):
    from insideout.gpt import gpt2_ranks

    assert gpt2_ranks.parse_ranks is parse_ranks
    path = tmp_path / "r.tiktoken"
    path.write_text("YQ== 0\nYg== 1\n")
    assert read_ranks(path) == parse_ranks(path.read_bytes()) == {b"a": 0, b"b": 1}
    with pytest.raises(ValueError, match=r":2: expected 'base64-token rank'"):
        parse_ranks(b"YQ== 0\nnot a line at all\n")


def test_bpe_save_uses_its_own_temporary_file_and_cleans_up(tmp_path, monkeypatch):
    bpe = BPE({bytes([b]): b for b in range(256)}, {"<|endoftext|>": 256})
    target = tmp_path / "ranks.tiktoken"
    (tmp_path / "ranks.tiktoken.tmp").write_text("someone else's file")  # the old fixed name: left alone now
    bpe.save(target)
    assert read_ranks(target) == bpe.ranks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranks.tiktoken", "ranks.tiktoken.tmp"]

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        bpe.save(tmp_path / "other.tiktoken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranks.tiktoken", "ranks.tiktoken.tmp"], \
        "a failed save must leave no temporary file behind"


# ---- checkpoints -----------------------------------------------------------------------------------------------


def test_nan_weights_are_refused_when_loading(tmp_path):
    model = GPT(TINY)
    with torch.no_grad():
        model.blocks[0].mlp.fc.weight[3, 4] = float("nan")
    path = save_checkpoint(tmp_path / "nan.safetensors", model)
    with pytest.raises(ValueError, match="NaN or infinite values in model.blocks.0.mlp.fc.weight.*diverged"):
        load_model(path)


@pytest.fixture(scope="module")
def run_checkpoint(corpus, tmp_path_factory):
    """A real 1-step checkpoint of a 2-step run (resumable)."""
    path = tmp_path_factory.mktemp("run") / "run.safetensors"
    train(TINY, small_run(corpus), tokenizer=ByteTokenizer(), progress=False, verbose=False, stop_at=1,
          checkpoint_path=path)
    return path


def edited(src: Path, dst: Path, drop=(), change=None, meta_drop=()) -> Path:
    """A copy of a checkpoint without some tensors/metadata, or with some tensors replaced."""
    from safetensors import safe_open

    with safe_open(str(src), framework="pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k not in meta_drop}
    tensors = {k: v for k, v in load_file(str(src)).items() if not k.startswith(tuple(drop))}
    tensors.update(change or {})
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.mark.parametrize("how, message", [
    (dict(meta_drop=("train_config", "data")), "lacks metadata 'train_config', metadata 'data'"),
    (dict(drop=("rng.",)), "random generator's state"),
    (dict(drop=("optimizer.",)), "unusable optimizer state (optimizer.0.* missing"),
    (dict(change={"optimizer.1.exp_avg": torch.zeros(3, 3)}), "optimizer.1.exp_avg: shape (3, 3), parameter"),
])
def test_resume_names_what_a_checkpoint_lacks(how, message, run_checkpoint, corpus, tmp_path):
    broken = edited(run_checkpoint, tmp_path / "broken.safetensors", **how)
    with pytest.raises(ValueError) as err:
        train(TINY, small_run(corpus), tokenizer=ByteTokenizer(), progress=False, verbose=False, resume=broken)
    assert message in str(err.value)


def test_resume_from_weights_only_says_how_to_start_instead(corpus, tmp_path):
    plain = save_checkpoint(tmp_path / "weights.safetensors", GPT(TINY))
    with pytest.raises(ValueError, match="cannot resume a training run.*load_model"):
        train(TINY, small_run(corpus), tokenizer=ByteTokenizer(), progress=False, resume=plain)


def test_a_complete_checkpoint_still_resumes(run_checkpoint, corpus, tmp_path):
    copy = edited(run_checkpoint, tmp_path / "copy.safetensors")
    result = train(TINY, small_run(corpus), tokenizer=ByteTokenizer(), progress=False, verbose=False, resume=copy)
    assert result.step == 2 and math.isfinite(result.history["loss"][-1])
