"""Named model and training configurations: 'cpu' (what the book executes), 'gpu' and 'gpt2-small'.

* ``cpu`` — the course model: 4 layers of width 128 with a 384-token context and rotary positions (RoPE), trained
  at its full context on the embedded Shakespeare corpus with the course's BPE, 1040 steps of 4 sequences, in under
  three minutes on two CPU cores. The context is long enough for the generation chapters to add 256 tokens after a
  prompt, and every position they use was trained. ``benchmarks/base_recipe.py`` measures this recipe against the
  one it replaced (learned positions, 520 steps of 8 sequences); chapter 07 shows the result.
* ``gpu`` — the same architecture, larger (6 layers of width 384, 512-token context, dropout 0.2, 12 M parameters)
  and trained for longer (1500 steps of 16 k tokens): minutes on one CUDA GPU; chapters pick it with
  ``INSIDEOUT_PRESET=gpu``.
* ``gpt2-small`` — GPT-2 small's shape (124 M parameters, 1024-token context) on FineWeb's ``sample-10BT`` with the
  GPT-2 encoding, about 0.5 M tokens per step; for ``torchrun`` on GPUs (needs network access for FineWeb).
"""

from __future__ import annotations

from dataclasses import replace

from insideout.gpt.config import TrainConfig
from insideout.gpt.model import GPTConfig
from insideout.utils import PRESETS, get_preset

PRESET_NAMES = PRESETS  # one list: $INSIDEOUT_PRESET, --preset and these functions accept the same names


def _check(preset: str) -> str:
    """The preset's canonical name (stripped, lower case); ValueError naming the choices for an unknown one."""
    if not isinstance(preset, str):
        raise ValueError(f"preset={preset!r}: choose one of {', '.join(PRESET_NAMES)}")
    return get_preset(preset)


def tokenizer_name(preset: str) -> str:
    """Which tokenizer a preset uses: 'course' (trained on the corpus) or 'gpt2'."""
    return "gpt2" if _check(preset) == "gpt2-small" else "course"  # (names of tokenizer.TOKENIZERS)


def model_config(preset: str) -> GPTConfig:
    """The GPTConfig of a preset; the vocabulary size is read from the preset's tokenizer."""
    from insideout.gpt.tokenizer import load_tokenizer

    preset = _check(preset)
    vocab_size = load_tokenizer(tokenizer_name(preset)).vocab_size
    if preset == "cpu":
        return GPTConfig(vocab_size=vocab_size, context_length=384, d_model=128, n_layer=4, n_head=4, dropout=0.0,
                         position="rope")
    if preset == "gpu":
        return GPTConfig(vocab_size=vocab_size, context_length=512, d_model=384, n_layer=6, n_head=6, dropout=0.2,
                         position="rope")
    # GPT-2 small; the vocabulary padded from 50257 to a multiple of 64 for faster matrix multiplies
    return GPTConfig(vocab_size=-(-vocab_size // 64) * 64, context_length=1024, d_model=768, n_layer=12, n_head=12)


def train_config(preset: str, **overrides):
    """The TrainConfig of a preset, with optional field overrides (validated like any TrainConfig)."""
    preset = _check(preset)
    if preset == "cpu":
        # 4 x 384 = 1,536 tokens per step, about 1.6 M tokens (one pass over the training plays) in under 3 minutes;
        # half the batch of the recipe before it, so twice the optimizer steps on the same tokens (chapter 07)
        config = TrainConfig(dataset="shakespeare", tokenizer="course", batch_size=4, grad_accum=1, max_steps=1040,
                             lr=4e-3, min_lr_ratio=0.1, warmup_steps=40, weight_decay=0.1, grad_clip=1.0,
                             eval_every=130, eval_batches=16, seed=0)
    elif preset == "gpu":
        # 32 x 512 = 16,384 tokens per step, 1500 steps = 24.6 M tokens, about 15 passes over the training plays
        # (dropout 0.2 against over-fitting); ~2e15 FLOPs, a few minutes on one recent GPU
        config = TrainConfig(dataset="shakespeare", tokenizer="course", batch_size=32, grad_accum=1, max_steps=1500,
                             lr=1e-3, min_lr_ratio=0.1, warmup_steps=100, weight_decay=0.1, grad_clip=1.0,
                             eval_every=150, eval_batches=8, seed=0)
    else:
        # 16 sequences x 1024 tokens x 32 accumulation steps = 524,288 tokens per step on one GPU; with
        # torchrun the accumulation is divided among the processes (pass --grad-accum 4 on 8 GPUs).
        config = TrainConfig(dataset="fineweb", tokenizer="gpt2", batch_size=16, grad_accum=32, max_steps=19073,
                             lr=6e-4, min_lr_ratio=0.1, warmup_steps=700, weight_decay=0.1, grad_clip=1.0,
                             eval_every=500, eval_batches=20, validation_documents=2000, seed=0, compile=True)
    return replace(config, **overrides) if overrides else config


def checkpoint_path(preset: str):
    """Where the course model of a preset is cached: ``cache_dir()/course-gpt-<preset>.safetensors``."""
    from insideout.utils import cache_dir

    return cache_dir() / f"course-gpt-{_check(preset)}.safetensors"
