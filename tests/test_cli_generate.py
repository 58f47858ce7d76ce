"""`python -m insideout generate`, driven through stdin on a tiny checkpoint written here (no trained model)."""

import io
import os
import subprocess
import sys

import pytest
import torch

from insideout.gpt.checkpoint import save_checkpoint
from insideout.gpt.generate import SEPARATOR, generate, main
from insideout.gpt.model import GPT, GPTConfig
from insideout.gpt.tokenizer import course_tokenizer
from insideout.gpt.train import tokenizer_info


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    tokenizer = course_tokenizer()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=32, d_model=16, n_layer=1, n_head=2,
                          init_std=0.5))  # wide weights: a peaked, prompt-dependent next-token distribution
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, model, step=0,
                    extra={"train_config": {"tokenizer": "course"}, "tokenizer": tokenizer_info(tokenizer)})
    return path, model.eval(), tokenizer


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "INSIDEOUT_DEVICE": "cpu"}
    return subprocess.run([sys.executable, "-m", "insideout", "generate", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, env=env)


def test_greedy_continuations_match_the_library(tiny_checkpoint):
    path, model, tokenizer = tiny_checkpoint
    prompts = ["To be, or not to be", "ROMEO:"]
    result = run_cli("--checkpoint", str(path), "--greedy", "--max-new-tokens", "12",
                     stdin="\n".join(prompts) + "\n\nnever read: the empty line ended the session\n")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    expected = []
    for prompt in prompts:
        ids = tokenizer.encode(prompt)
        new = generate(model, torch.tensor([ids]), 12, greedy=True)[0, len(ids):].tolist()
        if tokenizer.eot_id in new:
            new = new[: new.index(tokenizer.eot_id)]
        expected.append(prompt + tokenizer.decode(new))
    assert result.stdout == "".join(f"{text}\n{SEPARATOR}\n" for text in expected)


def run_main(argv: list[str], stdin: str, monkeypatch, capsys) -> tuple[int, str, str]:
    """The same command in this process (fast: torch is already imported); returns (status, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_sampling_is_reproducible_with_a_seed(tiny_checkpoint, monkeypatch, capsys, restore_torch_state):
    flags = ["--checkpoint", str(tiny_checkpoint[0]), "--max-new-tokens", "20", "--temperature", "1.2",
             "--top-k", "50", "--top-p", "0.95"]
    stdin = "Hamlet\nOphelia"  # the last prompt ends at the end of input, without a newline
    a = run_cli(*flags, "--seed", "7", stdin=stdin)  # a separate process ...
    assert a.returncode == 0, a.stderr
    b = run_main([*flags, "--seed", "7"], stdin, monkeypatch, capsys)  # ... and this one: the same text
    c = run_main([*flags, "--seed", "8"], stdin, monkeypatch, capsys)
    assert b[0] == c[0] == 0
    assert a.stdout == b[1]
    assert a.stdout != c[1]
    assert a.stdout.count(SEPARATOR) == 2 and a.stdout.startswith("Hamlet")  # two texts, each with its prompt


def test_a_prompt_longer_than_the_context_is_refused_and_the_loop_goes_on(tiny_checkpoint, monkeypatch, capsys,
                                                                          restore_torch_state):
    long_prompt = "word " * 40  # > 32 tokens
    status, out, err = run_main(["--checkpoint", str(tiny_checkpoint[0]), "--greedy", "--max-new-tokens", "5"],
                                f"{long_prompt}\nshort\n", monkeypatch, capsys)
    assert status == 1
    assert "longer than the model's context_length=32" in err
    assert out.count(SEPARATOR) == 1 and out.startswith("short")  # the second prompt was still answered


def test_missing_and_corrupt_checkpoints_give_a_readable_error(tmp_path, monkeypatch, capsys):
    missing = run_cli("--checkpoint", str(tmp_path / "nope.safetensors"), stdin="hi\n")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: no checkpoint at")
    assert "Traceback" not in missing.stderr
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00\x01 this is not a safetensors file" * 10)
    status, _, err = run_main(["--checkpoint", str(corrupt)], "hi\n", monkeypatch, capsys)  # returns, no raise
    assert status == 1
    assert err.startswith("error: cannot load the checkpoint")
    assert "corrupt" in err


def test_a_missing_preset_model_is_an_error_not_a_training_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("INSIDEOUT_CACHE", str(tmp_path))  # an empty cache: no course model there
    status, _, err = run_main(["--preset", "cpu"], "hi\n", monkeypatch, capsys)
    assert status == 1
    assert "no trained cpu course model" in err and "python -m insideout train --preset cpu" in err
    assert not list(tmp_path.iterdir())  # nothing was trained or written


@pytest.mark.parametrize("flags, message", [
    (["--top-p", "1.5"], "--top-p 1.5: must lie in (0, 1]"),
    (["--top-p", "0"], "--top-p 0.0"),
    (["--top-k", "0"], "--top-k 0: must be an integer >= 1"),
    (["--temperature", "0"], "--temperature 0.0: must be a finite number > 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens 0"),
    (["--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_options_are_refused_before_loading(flags, message, capsys):
    assert main(["--checkpoint", "/nonexistent/never-read.safetensors", *flags]) == 2
    assert message in capsys.readouterr().err


def test_greedy_accepts_temperature_zero(tiny_checkpoint, monkeypatch, capsys, restore_torch_state):
    status, out, _ = run_main(["--checkpoint", str(tiny_checkpoint[0]), "--greedy", "--temperature", "0",
                               "--max-new-tokens", "3"], "abc\n", monkeypatch, capsys)
    assert status == 0 and out.startswith("abc") and out.endswith(f"\n{SEPARATOR}\n")


def test_bad_flag_types_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse's own exit: usage and the problem, no traceback
        main(["--top-k", "many"])
    assert exit_info.value.code == 2
    assert "invalid int value: 'many'" in capsys.readouterr().err
