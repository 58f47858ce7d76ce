"""`python -m insideout train`: a tiny run, a resumed run that matches a straight one, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import insideout
from insideout.gpt.checkpoint import read_checkpoint
from insideout.gpt.corpus import shakespeare_works

TINY = ["--preset", "cpu", "--context-length", "32", "--d-model", "32", "--n-layer", "1", "--n-head", "2",
        "--batch-size", "2", "--max-steps", "4", "--warmup-steps", "1", "--eval-every", "2", "--eval-batches", "1",
        "--no-progress"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    root = str(Path(insideout.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "insideout", "train", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


@pytest.fixture()
def corpus(tmp_path):
    """A small local JSON-lines corpus (slices of real plays): the command's --data path, and a fast start."""
    path = tmp_path / "plays.jsonl"
    path.write_text("".join(json.dumps({"text": w.text[5000:8000]}) + "\n" for w in shakespeare_works("train")[:8]))
    return ["--data", str(path), "--validation-documents", "2"]


def test_train_command_runs_and_resumes_exactly(tmp_path, corpus, capsys, monkeypatch):
    from insideout.gpt.train import main

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        assert main([*TINY, *corpus, "--out", "straight"]) == 0  # in-process: the same code without a start-up
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "step     4 |" in out and "done: step 4" in out
    final = read_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")
    assert final.step == 4 and final.model_config.d_model == 32 and final.meta["train_config"]["batch_size"] == 2
    assert final.meta["train_config"]["dataset"].endswith("plays.jsonl")

    half = run(*TINY, *corpus, "--stop-at", "2", "--out", "half", cwd=tmp_path)
    assert half.returncode == 0, half.stderr[-3000:]
    assert read_checkpoint(tmp_path / "half" / "checkpoint.safetensors").step == 2
    resumed = run("--resume", "half", "--no-progress", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = read_checkpoint(tmp_path / "half" / "checkpoint.safetensors")
    assert again.step == 4
    for name, tensor in final.tensors.items():
        if name.startswith(("model.", "optimizer.")):
            assert torch.equal(tensor, again.tensors[name]), f"{name} differs after resuming through the command"


def test_train_command_errors(tmp_path):
    bad = run("--preset", "tpu", cwd=tmp_path)  # through `python -m insideout`: exit status and stderr
    assert bad.returncode == 2 and "unknown preset 'tpu'" in bad.stderr


@pytest.mark.parametrize("args, message", [
    (["--resume", "nowhere.safetensors"], "no checkpoint at nowhere.safetensors"),
    (["--resume", "x.safetensors", "--lr", "0.1"], "drop --lr"),
    ([*TINY, "--data", "wikipedia"], "unknown data source 'wikipedia'"),
    ([*TINY, "--max-steps", "0"], "max_steps=0"),
    ([*TINY, "--data", "missing.parquet"], "data file 'missing.parquet' does not exist"),
])
def test_train_command_error_messages(args, message, capsys, monkeypatch, tmp_path):
    from insideout.gpt.train import main

    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        assert main(args) == 2
    finally:
        torch.set_num_threads(threads)
    assert message in capsys.readouterr().err
