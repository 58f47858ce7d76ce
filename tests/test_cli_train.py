"""`python -m insideout train`: a tiny run, a resumed run that matches a straight one, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import insideout
from insideout.gpt.checkpoint import read_checkpoint

TINY = ["--preset", "cpu", "--context-length", "32", "--d-model", "32", "--n-layer", "1", "--n-head", "2",
        "--batch-size", "2", "--max-steps", "4", "--warmup-steps", "1", "--eval-every", "2", "--eval-batches", "1",
        "--no-progress"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    root = str(Path(insideout.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "insideout", "train", *args], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


def test_train_command_runs_and_resumes_exactly(tmp_path):
    straight = run(*TINY, "--out", "straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert "step     4 |" in straight.stdout and "done: step 4" in straight.stdout
    final = read_checkpoint(tmp_path / "straight" / "checkpoint.safetensors")
    assert final.step == 4 and final.model_config.d_model == 32 and final.meta["train_config"]["batch_size"] == 2

    half = run(*TINY, "--stop-at", "2", "--out", "half", cwd=tmp_path)
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
    bad = run("--preset", "tpu", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown preset 'tpu'" in bad.stderr
    missing = run("--resume", "nowhere.safetensors", cwd=tmp_path)
    assert missing.returncode == 2 and "no checkpoint at nowhere.safetensors" in missing.stderr
    mixed = run("--resume", "x.safetensors", "--lr", "0.1", cwd=tmp_path)
    assert mixed.returncode == 2 and "drop --lr" in mixed.stderr
    data = run(*TINY, "--data", "wikipedia", cwd=tmp_path)
    assert data.returncode == 2 and "unknown data source 'wikipedia'" in data.stderr
    steps = run(*TINY, "--max-steps", "0", cwd=tmp_path)
    assert steps.returncode == 2 and "max_steps=0" in steps.stderr
