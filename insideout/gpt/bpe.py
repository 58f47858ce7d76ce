"""Byte-level byte-pair encoding (BPE), trained from scratch and applied in pure Python.

BPE (Sennrich et al., 2016) starts from a base vocabulary and repeatedly adds the most frequent adjacent pair of
tokens as a new token. Byte-level BPE (Radford et al., 2019) starts from the 256 byte values, so every string has
an encoding and nothing is ever "unknown". Text is first cut into pre-tokens by GPT-2's regular expression (words
with their leading space, numbers, punctuation runs, whitespace), and merges never cross a pre-token boundary.

The result is a rank table ``{token bytes: id}``: ids 0..255 are the single bytes, then one id per learned token in
the order it was learned, then the special tokens. That is exactly the ``mergeable_ranks`` format of
``tiktoken.Encoding``, so the same table drives the pure-Python encoder here and tiktoken's fast one.
"""

from __future__ import annotations

import base64
import heapq
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import regex

# GPT-2's pre-tokenisation pattern in the form tiktoken uses for "gpt2"/"r50k_base" (possessive quantifiers, same
# pieces as the original pattern). Using the very same string in both encoders keeps their pre-tokens identical.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
ENDOFTEXT = "<|endoftext|>"


@dataclass(frozen=True)
class Merge:
    """One training step: the pair (left, right) became token ``token_id``; it occurred ``count`` times."""

    left: bytes
    right: bytes
    token_id: int
    count: int


def _special_splitter(specials: Iterable[str]) -> regex.Pattern | None:
    """A regex that finds any of the special strings (longest first), or None when there are none."""
    specials = sorted(set(specials), key=lambda s: (-len(s), s))
    return regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None


def pretoken_counts(texts: Iterable[str], pattern: str = GPT2_SPLIT_PATTERN,
                    special_tokens: Iterable[str] = ()) -> Counter[str]:
    """How often each pre-token occurs in the texts; special strings are cut out and never learned."""
    compiled = regex.compile(pattern)
    splitter = _special_splitter(special_tokens)
    counts: Counter[str] = Counter()
    for text in texts:
        for chunk in splitter.split(text) if splitter else (text,):
            counts.update(compiled.findall(chunk))
    return counts


def train_bpe(texts: str | Iterable[str], vocab_size: int, special_tokens: Iterable[str] = (ENDOFTEXT,),
              pattern: str = GPT2_SPLIT_PATTERN) -> BPE:
    """Learn a byte-level BPE with ``vocab_size`` ids in all (256 bytes + merges + special tokens).

    Pre-token frequencies are counted once; after each merge only the words that contain the merged pair are
    updated (an index maps every pair to the words holding it), and a heap finds the next most frequent pair.
    Ties go to the pair whose (left bytes, right bytes) sorts first, so training is deterministic.
    """
    specials = list(dict.fromkeys(special_tokens))
    for s in specials:
        if not isinstance(s, str) or not s:
            raise ValueError(f"special token {s!r}: special tokens must be non-empty strings")
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 256 + len(specials):
        raise ValueError(
            f"vocab_size={vocab_size!r} is too small: it must be an integer >= 256 + {len(specials)} "
            f"(every byte value plus the special tokens {specials})"
        )
    if isinstance(texts, str):
        texts = [texts]
    counts = pretoken_counts(texts, pattern, specials)
    if not counts:
        raise ValueError("cannot train a tokenizer on empty text: pass at least one non-empty string")

    n_mergeable = vocab_size - len(specials)
    token_bytes = [bytes([b]) for b in range(256)]  # id -> bytes
    ids_of = {t: i for i, t in enumerate(token_bytes)}  # bytes -> id
    words = [list(w.encode("utf-8")) for w in sorted(counts)]  # each pre-token as a list of token ids
    freqs = [counts[w] for w in sorted(counts)]

    pair_counts: dict[tuple[int, int], int] = {}
    where: dict[tuple[int, int], set[int]] = {}  # pair -> indices of the words that contain it
    for w, (word, f) in enumerate(zip(words, freqs, strict=True)):
        for pair in zip(word, word[1:], strict=False):
            pair_counts[pair] = pair_counts.get(pair, 0) + f
            where.setdefault(pair, set()).add(w)
    heap = [(-c, token_bytes[a], token_bytes[b], a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[Merge] = []
    while len(token_bytes) < n_mergeable:
        while heap:  # pop until an entry is current (counts change, old entries stay behind)
            neg, _, _, a, b = heapq.heappop(heap)
            if pair_counts.get((a, b)) == -neg:
                break
        else:
            raise ValueError(
                f"vocab_size={vocab_size} is too large for this text: no pair of tokens is left to merge after "
                f"{len(token_bytes)} tokens; use at most {len(token_bytes) + len(specials)} or more text"
            )
        new = token_bytes[a] + token_bytes[b]
        new_id = ids_of.get(new)
        if new_id is None:  # a pair can spell a token learned earlier from another split; reuse its id then
            new_id = len(token_bytes)
            token_bytes.append(new)
            ids_of[new] = new_id
        merges.append(Merge(token_bytes[a], token_bytes[b], new_id, -neg))

        changed: dict[tuple[int, int], int] = {}
        for w in where.pop((a, b)):
            word, f = words[w], freqs[w]
            merged, i = [], 0
            while i < len(word):  # replace every non-overlapping (a, b), left to right
                if i + 1 < len(word) and word[i] == a and word[i + 1] == b:
                    merged.append(new_id)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            old_pairs = Counter(zip(word, word[1:], strict=False))
            new_pairs = Counter(zip(merged, merged[1:], strict=False))
            for pair in old_pairs.keys() | new_pairs.keys():
                delta = (new_pairs[pair] - old_pairs[pair]) * f
                if delta:
                    changed[pair] = changed.get(pair, 0) + delta
                if new_pairs[pair] == 0 and pair != (a, b):
                    where[pair].discard(w)
                elif new_pairs[pair]:
                    where.setdefault(pair, set()).add(w)
            words[w] = merged
        for pair, delta in changed.items():
            c = pair_counts.get(pair, 0) + delta
            if c > 0:
                pair_counts[pair] = c
                heapq.heappush(heap, (-c, token_bytes[pair[0]], token_bytes[pair[1]], *pair))
            else:
                pair_counts.pop(pair, None)
                where.pop(pair, None)
        pair_counts.pop((a, b), None)

    ranks = {t: i for i, t in enumerate(token_bytes)}
    special_ids = {s: len(token_bytes) + k for k, s in enumerate(specials)}
    return BPE(ranks, special_ids, pattern, merges=merges)


class BPE:
    """A byte-level BPE tokenizer in pure Python: rank table + special tokens + pre-tokenisation pattern.

    Encoding a pre-token starts from its bytes and repeatedly joins the adjacent pair whose joined bytes have the
    lowest rank (the earliest learned token), leftmost first, until no adjacent pair is a token. This is the rule
    tiktoken applies, so both give identical ids for the same rank table.
    """

    def __init__(self, ranks: Mapping[bytes, int], special_tokens: Mapping[str, int] | None = None,
                 pattern: str = GPT2_SPLIT_PATTERN, merges: list[Merge] | None = None):
        ranks = dict(ranks)
        special_tokens = dict(special_tokens or {})
        n = len(ranks)
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ValueError(f"the rank table lacks {len(missing)} single bytes (e.g. {bytes(missing[:3])!r}): "
                             "a byte-level BPE needs all 256 so that every text can be encoded")
        if sorted(ranks.values()) != list(range(n)):
            raise ValueError(f"ranks must be the ids 0..{n - 1} without gaps or repeats")
        if sorted(special_tokens.values()) != list(range(n, n + len(special_tokens))):
            raise ValueError(f"special token ids must follow the ranks: {n}..{n + len(special_tokens) - 1}, "
                             f"got {sorted(special_tokens.values())}")
        self.ranks = ranks
        self.special_tokens = special_tokens
        self.pattern = pattern
        self.merges = merges  # the training trace, when this tokenizer was trained in this process
        self._decoder = {i: t for t, i in ranks.items()} | {i: s.encode("utf-8") for s, i in special_tokens.items()}
        self._split = regex.compile(pattern)
        self._special_re = _special_splitter(special_tokens)
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.ranks) + len(self.special_tokens)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, BPE) and self.ranks == other.ranks and self.pattern == other.pattern
                and self.special_tokens == other.special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes that one id stands for (special tokens as their UTF-8 string)."""
        self._check_ids([token_id])
        return self._decoder[token_id]

    def bpe(self, piece: bytes) -> list[bytes]:
        """Split one pre-token into tokens: join the lowest-rank adjacent pair until none is a token."""
        if piece in self.ranks:  # the whole pre-token is a token (also tiktoken's first check)
            return [piece]
        parts = [bytes([b]) for b in piece]
        while len(parts) > 1:
            best_rank, best_i = None, -1
            for i in range(len(parts) - 1):
                r = self.ranks.get(parts[i] + parts[i + 1])
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best_i = r, i
            if best_rank is None:
                break
            parts[best_i:best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        return parts

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text with no special-token handling: ``<|endoftext|>`` is just 13 characters here."""
        ids: list[int] = []
        for piece in self._split.findall(text):
            cached = self._cache.get(piece)
            if cached is None:
                cached = [self.ranks[t] for t in self.bpe(piece.encode("utf-8"))]
                if len(self._cache) < 200_000:
                    self._cache[piece] = cached
            ids.extend(cached)
        return ids

    def encode(self, text: str, *, allowed_special: str | Iterable[str] = (),
               disallowed_special: str | Iterable[str] = "all") -> list[int]:
        """Encode text; special strings become special ids only if ``allowed_special`` names them (or is "all").

        A special string that is neither allowed nor excluded from ``disallowed_special`` raises ``ValueError``,
        as in tiktoken, so that text from outside cannot inject an end-of-text marker by accident.
        """
        allowed = self._special_set(allowed_special, "allowed_special")
        disallowed = self._special_set(disallowed_special, "disallowed_special") - allowed
        if disallowed:
            found = regex.search("|".join(regex.escape(s) for s in sorted(disallowed)), text)
            if found:
                raise ValueError(
                    f"text contains the special token {found.group()!r}: pass allowed_special={{{found.group()!r}}} "
                    f"to encode it as its special id, or disallowed_special=() to encode it as ordinary text"
                )
        if not allowed:
            return self.encode_ordinary(text)
        splitter = _special_splitter(allowed)
        ids: list[int] = []
        start = 0
        for m in splitter.finditer(text):
            ids.extend(self.encode_ordinary(text[start:m.start()]))
            ids.append(self.special_tokens[m.group()])
            start = m.end()
        ids.extend(self.encode_ordinary(text[start:]))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = list(ids)
        self._check_ids(ids)
        return b"".join(self._decoder[i] for i in ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Join the tokens' bytes and decode UTF-8 (a sequence cut inside a character gets U+FFFD, as tiktoken)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def truncated(self, vocab_size: int) -> BPE:
        """The tokenizer with only the first merges: BPE is sequential, so a smaller vocabulary is a prefix."""
        n_special = len(self.special_tokens)
        if not 256 + n_special <= vocab_size <= self.vocab_size:
            raise ValueError(f"vocab_size={vocab_size}: choose between {256 + n_special} and {self.vocab_size}")
        n = vocab_size - n_special
        ranks = {t: i for t, i in self.ranks.items() if i < n}
        specials = {s: n + k for k, s in enumerate(sorted(self.special_tokens, key=self.special_tokens.get))}
        return BPE(ranks, specials, self.pattern)

    def to_tiktoken(self, name: str):
        """The same tokenizer as a fast ``tiktoken.Encoding``."""
        import tiktoken

        return tiktoken.Encoding(name=name, pat_str=self.pattern, mergeable_ranks=self.ranks,
                                 special_tokens=self.special_tokens, explicit_n_vocab=self.vocab_size)

    def save(self, path: str | Path) -> None:
        """Write the rank table in tiktoken's format: one ``base64(token bytes) rank`` line per token."""
        lines = [base64.b64encode(t).decode("ascii") + f" {i}\n" for t, i in sorted(self.ranks.items(),
                                                                                     key=lambda kv: kv[1])]
        path = Path(path)
        # a temporary name of our own beside the target, renamed over it (atomic); removed if anything fails
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="ascii", newline="\n") as f:
                f.write("".join(lines))
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | Path, special_tokens: Iterable[str] = (ENDOFTEXT,),
             pattern: str = GPT2_SPLIT_PATTERN) -> BPE:
        """Read a rank file written by :meth:`save`; special tokens get the ids after the ranks, in order."""
        ranks = read_ranks(path)
        return cls(ranks, {s: len(ranks) + k for k, s in enumerate(special_tokens)}, pattern)

    def _special_set(self, value: str | Iterable[str], argument: str) -> set[str]:
        if value == "all":
            return set(self.special_tokens)
        if isinstance(value, str):
            raise ValueError(f"{argument}={value!r}: pass 'all' or a collection of special token strings")
        chosen = set(value)
        unknown = sorted(chosen - set(self.special_tokens))
        if unknown:
            raise ValueError(f"{argument} names unknown special tokens {unknown}; "
                             f"this tokenizer has {sorted(self.special_tokens)}")
        return chosen

    def _check_ids(self, ids: list[int]) -> None:
        bad = [i for i in ids if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the vocabulary: valid ids are 0..{self.vocab_size - 1}")


def parse_ranks(data: str | bytes, source: str = "the rank file") -> dict[bytes, int]:
    """Parse tiktoken's rank format (one ``base64(token bytes) rank`` per line) with a clear error on a bad line."""
    if isinstance(data, bytes):
        try:
            data = data.decode("ascii")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{source} is not a tiktoken rank file: it holds non-ASCII bytes ({exc})") from exc
    ranks: dict[bytes, int] = {}
    for n, line in enumerate(data.splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError as exc:
            raise ValueError(f"{source}:{n}: expected 'base64-token rank', got {line[:60]!r}") from exc
    return ranks


def read_ranks(path: str | Path) -> dict[bytes, int]:
    """Read a tiktoken-format rank file (see ``parse_ranks``)."""
    return parse_ranks(Path(path).read_bytes(), source=str(path))
