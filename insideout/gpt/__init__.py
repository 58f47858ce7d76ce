"""Part 2: the GPT, its tokenizer, data, training, generation and interpretability."""

from insideout.gpt.model import GPT, GPTConfig, KVCache

__all__ = ["GPT", "GPTConfig", "KVCache"]
