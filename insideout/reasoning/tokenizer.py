"""Part 4's tokenizer: one token per character of the task's alphabet, plus five special tokens.

The vocabulary is tiny (19 tokens): ``<pad>``, ``<bos>``, ``<eos>``, ``<answer>`` (the end of thinking),
``wait`` (a self-check), the newline that ends every line, ``=``, the two operators and the ten digits. One token per
digit means the model reads and writes every digit on its own: nothing is hidden in a multi-digit token.
A checkpoint stores the tokenizer's ``signature``; loading it with another tokenizer is refused.
"""

from __future__ import annotations

import hashlib

from insideout.reasoning.task import ANSWER, OPS, WAIT

SPECIALS = ("<pad>", "<bos>", "<eos>", ANSWER, WAIT)
CHARS = ("\n", "=", *OPS, *"0123456789")


class CharTokenizer:
    """Characters of the task to ids and back; ``<answer>`` and ``wait`` are single tokens."""

    name = "reasoning-chars"

    def __init__(self) -> None:
        self.vocab: tuple[str, ...] = SPECIALS + CHARS
        self.ids = {s: i for i, s in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id = self.ids["<pad>"], self.ids["<bos>"], self.ids["<eos>"]
        self.answer_id, self.wait_id, self.newline_id = self.ids[ANSWER], self.ids[WAIT], self.ids["\n"]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def signature(self) -> str:
        """12 hex digits identifying the vocabulary (name and every token in order)."""
        return hashlib.sha256((self.name + "\x00" + "\x00".join(self.vocab)).encode()).hexdigest()[:12]

    def encode(self, text: str) -> list[int]:
        """Ids of a text over the task's alphabet; ValueError naming the first character outside it."""
        if not isinstance(text, str):
            raise ValueError(f"encode takes a string, got {type(text).__name__}")
        out, i = [], 0
        while i < len(text):
            for special in (ANSWER, WAIT):
                if text.startswith(special, i):
                    out.append(self.ids[special])
                    i += len(special)
                    break
            else:
                ch = text[i]
                if ch not in self.ids or ch in SPECIALS:
                    raise ValueError(f"character {ch!r} at position {i} of {text!r} is not in the task's alphabet "
                                     f"(digits, {' '.join(OPS)}, =, newline, '{ANSWER}', '{WAIT}')")
                out.append(self.ids[ch])
                i += 1
        return out

    def decode(self, ids, *, keep_special: bool = False) -> str:
        """Text of ids; ``<pad>``, ``<bos>`` and ``<eos>`` are dropped unless ``keep_special``."""
        parts = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id {i} is outside this tokenizer's vocabulary of {self.vocab_size}")
            s = self.vocab[i]
            if s in SPECIALS[:3] and not keep_special:
                continue
            parts.append(s)
        return "".join(parts)
