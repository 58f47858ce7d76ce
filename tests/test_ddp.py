"""The same training loop under torchrun: 2 CPU processes (gloo) match one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import insideout
from insideout.gpt.corpus import shakespeare_works

WORKER = textwrap.dedent('''
    import json, os, sys
    import torch
    from insideout.gpt.model import GPTConfig
    from insideout.gpt.train import TrainConfig, train

    class ByteTokenizer:
        name, vocab_size, eot_id = "bytes", 257, 256
        def encode(self, text): return list(text.encode("utf-8"))
        def decode(self, ids): return bytes(i for i in ids if i < 256).decode("utf-8", "replace")

    def run(corpus, batch_size, grad_accum):
        model = GPTConfig(vocab_size=257, context_length=32, d_model=32, n_layer=2, n_head=2)
        cfg = TrainConfig(dataset=corpus, validation_documents=2, batch_size=batch_size, grad_accum=grad_accum,
                          max_steps=6, warmup_steps=2, eval_every=3, eval_batches=2, shuffle_buffer=64, seed=0)
        return train(model, cfg, tokenizer=ByteTokenizer(), progress=False, verbose=False)

    if __name__ == "__main__":
        torch.set_num_threads(1)
        corpus, out = sys.argv[1], sys.argv[2]
        result = run(corpus, batch_size=2, grad_accum=2)  # per process: 2 x 2 rows; 2 processes: 8 rows per step
        if int(os.environ["RANK"]) == 0:
            params = {n: p.detach().flatten()[:50].tolist() for n, p in result.model.named_parameters()}
            json.dump({"history": result.history, "world": int(os.environ["WORLD_SIZE"]), "params": params},
                      open(out, "w"))
''')


def test_two_processes_match_one(tmp_path):
    corpus = tmp_path / "plays.jsonl"
    works = shakespeare_works("train")[:10]
    corpus.write_text("".join(json.dumps({"text": w.text[5000:10000]}) + "\n" for w in works))
    script, out = tmp_path / "worker.py", tmp_path / "ddp.json"
    script.write_text(WORKER)
    root = str(Path(insideout.__file__).resolve().parents[1])  # the workers import this very package
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(corpus), str(out)],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    ddp = json.loads(out.read_text())
    assert ddp["world"] == 2

    sys.path.insert(0, str(tmp_path))
    try:
        import worker
    finally:
        sys.path.remove(str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = worker.run(str(corpus), batch_size=8, grad_accum=1)  # one process, the same 8 rows per step
    finally:
        torch.set_num_threads(threads)
    h1, h2 = single.history, ddp["history"]
    assert h2["step"] == h1["step"] == list(range(1, 7))
    assert h2["loss"] == pytest.approx(h1["loss"], abs=2e-6), "train losses differ between 1 and 2 processes"
    assert h2["val_loss"] == pytest.approx(h1["val_loss"], abs=2e-6), "validation losses differ"
    assert h2["grad_norm"] == pytest.approx(h1["grad_norm"], rel=1e-4)
    for name, p in single.model.named_parameters():
        assert p.detach().flatten()[:50].tolist() == pytest.approx(ddp["params"][name], abs=1e-5), name
    assert h1["loss"][-1] < h1["loss"][0], "the run should learn something"
