"""Streaming data: text documents -> token ids -> packed (batch, seq_len + 1) blocks, on Hugging Face ``datasets``.

Every source is an ``IterableDataset`` of records with a ``text`` column, so the embedded Shakespeare corpus, a
local file and FineWeb streamed from the Hub all go through the same code path:

1. ``text_dataset(source, split)`` — the documents. Shakespeare is split by work (no line of a validation play is
   trained on); FineWeb and local files hold out their first ``validation_documents`` documents.
2. ``packed_dataset(texts, tokenizer, seq_len)`` — each document is encoded and followed by the end-of-text token,
   the ids are concatenated and cut into blocks of ``seq_len + 1`` tokens (inputs are ``block[:-1]``, targets
   ``block[1:]``); consecutive blocks share one token so every transition is predicted once. Blocks are shuffled
   with a seeded buffer whose order changes with the epoch.
3. ``BatchStream`` — draws fixed-size batches of blocks epoch after epoch and knows its position, so a checkpoint
   can record where the data stopped and a resumed run continues with exactly the next batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import torch
from datasets import Features, IterableDataset, Value, load_dataset

from insideout.gpt.tokenizer import TOKENIZERS, load_tokenizer  # noqa: F401  (re-exported: the pipeline's names)

SOURCES = ("shakespeare", "fineweb")
FINEWEB_REPO = "HuggingFaceFW/fineweb"
FINEWEB_CONFIG = "sample-10BT"
# The columns of a FineWeb record (Penedo et al., 2024); only ``text`` is used.
FINEWEB_COLUMNS = ("text", "id", "dump", "url", "date", "file_path", "language", "language_score", "token_count")
_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".txt": "text"}


class TokenizerLike(Protocol):
    """What the pipeline needs from a tokenizer (``insideout.gpt.tokenizer.Tokenizer`` has it)."""

    vocab_size: int
    eot_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def encode_document(tokenizer: TokenizerLike, text: str) -> list[int]:
    """Token ids of one document, special-token strings inside it treated as plain text."""
    encoding = getattr(tokenizer, "encoding", None)
    if encoding is not None and hasattr(encoding, "encode_ordinary"):
        return encoding.encode_ordinary(text)  # data may contain "<|endoftext|>" literally: never a special
    return tokenizer.encode(text)


# ---- 1. documents --------------------------------------------------------------------------------------


@lru_cache(maxsize=2)
def _works(split: str) -> dict[str, str]:
    from insideout.gpt.corpus import shakespeare_works

    return {w.key: w.text for w in shakespeare_works(split)}


def _shakespeare_records(keys: list[str], split: str) -> Iterator[dict[str, str]]:
    texts = _works(split)
    for key in keys:
        yield {"text": texts[key], "id": key}


def shakespeare_dataset(split: str) -> IterableDataset:
    """The embedded corpus as a stream of works (one shard per work, so shuffling reorders whole works)."""
    if split not in ("train", "validation"):
        raise ValueError(f"split={split!r}: choose 'train' or 'validation'")
    keys = sorted(_works(split))
    return IterableDataset.from_generator(
        _shakespeare_records,
        features=Features({"text": Value("string"), "id": Value("string")}),
        gen_kwargs={"keys": keys, "split": split},
    )


def _builder(source: str) -> str:
    """The ``datasets`` builder for a source name or local file; clear errors for unknown or missing ones."""
    if source == "fineweb":
        return "fineweb"
    builder = _FILE_BUILDERS.get(Path(source).suffix.lower())
    if builder is None:
        raise ValueError(
            f"unknown data source {source!r}: choose {' or '.join(SOURCES)}, or a local file ending in "
            f"{', '.join(_FILE_BUILDERS)} (FineWeb's schema: a 'text' column per document)"
        )
    if not any(ch in source for ch in "*?[") and not os.path.exists(source):
        raise FileNotFoundError(f"data file {source!r} does not exist: check the path")
    return builder


def _open_stream(source: str, builder: str) -> IterableDataset:
    if builder == "fineweb":
        return load_dataset(FINEWEB_REPO, name=FINEWEB_CONFIG, split="train", streaming=True)
    kwargs = {"sample_by": "document"} if builder == "text" else {}
    return load_dataset(builder, data_files=source, split="train", streaming=True, **kwargs)


def text_dataset(source: str, split: str, *, validation_documents: int = 100) -> IterableDataset:
    """A stream of ``{"text": ...}`` documents for 'train' or 'validation'; errors early on a bad source.

    ``source`` is 'shakespeare' (embedded, split by work), 'fineweb' (streamed from the Hub) or a local
    .parquet/.jsonl/.txt file; for the last two the first ``validation_documents`` documents are held out.
    """
    if split not in ("train", "validation"):
        raise ValueError(f"split={split!r}: choose 'train' or 'validation'")
    if source == "shakespeare":
        return shakespeare_dataset(split)
    if validation_documents < 1:
        raise ValueError(f"validation_documents={validation_documents}: must be >= 1 to hold out a validation set")
    builder = _builder(source)
    local = source != "fineweb"
    try:
        stream = _open_stream(source, builder)
        columns = stream.column_names
        # a local source is read up to one document past the held-out ones: enough to check it can be split
        head = list(stream.take(validation_documents + 1 if local else 1))
    except StopIteration:  # what the json and text builders raise for a file without a single record
        head, columns = [], None
    except Exception as exc:  # pyarrow, json, network and hub errors come in many types
        hint = " (FineWeb is streamed from the Hugging Face Hub: this needs network access)" * (not local)
        raise ValueError(f"cannot read data source {source!r}{hint}: {type(exc).__name__}: {exc}") from exc
    if not head:
        raise ValueError(f"data source {source!r} is empty: it holds no documents; give a file with text in it")
    columns = columns if columns is not None else list(head[0])
    if "text" not in columns:
        raise ValueError(f"data source {source!r} has no 'text' column (columns: {columns})")
    for i, record in enumerate(head):
        _check_text(record["text"], i, source)
    if local and not any(record["text"] for record in head):
        raise ValueError(f"data source {source!r} is empty: its {len(head)} document(s) hold no text")
    if local and len(head) <= validation_documents:
        kind = ("a .txt file is one document: use several (a glob such as 'texts/*.txt'), or a .jsonl file with "
                "one {\"text\": ...} object per line, or " if builder == "text" else "add documents, or ")
        raise ValueError(
            f"data source {source!r} holds {len(head)} document(s), and the first validation_documents="
            f"{validation_documents} are held out for validation, which leaves none to train on: {kind}"
            f"hold out fewer (validation_documents < {len(head)}, the flag --validation-documents)")
    stream = stream.select_columns(["text"])
    if split == "validation":
        return stream.take(validation_documents)
    return stream.skip(validation_documents)


# ---- 2. packing ----------------------------------------------------------------------------------------


def _check_text(text, index: int, source: str) -> None:
    if text is not None and not isinstance(text, str):
        raise ValueError(f"document {index} of data source {source!r} has a 'text' of type {type(text).__name__} "
                         f"({str(text)[:40]!r}): every document's text must be a string")


def _pack(batch: dict[str, list], tokenizer: TokenizerLike, seq_len: int) -> dict[str, list]:
    """Documents -> ids joined by end-of-text -> blocks of seq_len + 1 overlapping by one token."""
    ids: list[int] = []
    for i, text in enumerate(batch["text"]):
        _check_text(text, i, "the stream")
        if text is None:
            continue
        ids.extend(encode_document(tokenizer, text))
        ids.append(tokenizer.eot_id)
    n_blocks = (len(ids) - 1) // seq_len  # the remainder (< seq_len tokens) of this group is dropped
    return {"input_ids": [ids[i * seq_len : i * seq_len + seq_len + 1] for i in range(n_blocks)]}


def packed_dataset(texts: IterableDataset, tokenizer: TokenizerLike, seq_len: int, *, shuffle_seed: int | None = None,
                   buffer_size: int = 1024, group_documents: int = 256) -> IterableDataset:
    """Blocks ``{"input_ids": seq_len + 1 ids}`` from a document stream; shuffled if ``shuffle_seed`` is given.

    Documents are tokenised and packed in groups of ``group_documents``; the tail of a group that does not fill
    a block is dropped (at most one block per group).
    """
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len}: must be a positive integer")
    blocks = texts.select_columns(["text"]).map(
        _pack, batched=True, batch_size=group_documents, remove_columns=["text"],
        fn_kwargs={"tokenizer": tokenizer, "seq_len": seq_len},
        features=Features({"input_ids": [Value("int64")]}),
    )
    if shuffle_seed is not None:
        blocks = blocks.shuffle(seed=shuffle_seed, buffer_size=buffer_size)
    return blocks


def iterate_blocks(blocks: IterableDataset, epoch: int = 0) -> Iterator[list[int]]:
    """The blocks of one epoch, in that epoch's (seeded) order."""
    blocks.set_epoch(epoch)
    for record in blocks:
        yield record["input_ids"]


class BatchStream:
    """Endless (batch_size, seq_len + 1) LongTensors over epochs; ``state()``/``position`` say where it is.

    The last incomplete batch of an epoch is dropped, so every batch has the same shape. Resuming at a saved
    (epoch, batches) position replays that epoch's order and skips the batches already used.
    """

    def __init__(self, blocks: IterableDataset, batch_size: int, *, epoch: int = 0, batches: int = 0,
                 source: str = "data"):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be a positive integer")
        self.blocks, self.batch_size, self.source = blocks, batch_size, source
        self.epoch, self.batches = epoch, batches
        self._iter: Iterator[torch.Tensor] | None = None

    def state(self) -> dict[str, int]:
        """Where the next batch comes from: epoch number and batches already drawn in it."""
        return {"epoch": self.epoch, "batches": self.batches}

    def _epoch_batches(self, epoch: int, skip: int) -> Iterator[torch.Tensor]:
        rows: list[list[int]] = []
        drawn = 0
        for ids in iterate_blocks(self.blocks, epoch):
            rows.append(ids)
            if len(rows) == self.batch_size:
                if drawn >= skip:
                    yield torch.tensor(rows, dtype=torch.long)  # (batch, seq_len + 1)
                drawn += 1
                rows = []

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> torch.Tensor:
        for _attempt in range(2):
            if self._iter is None:
                self._iter = self._epoch_batches(self.epoch, self.batches)
            batch = next(self._iter, None)
            if batch is not None:
                self.batches += 1
                return batch
            had_batches = self.batches > 0
            self._iter, self.epoch, self.batches = None, self.epoch + 1, 0
            if not had_batches:
                break
        raise ValueError(
            f"{self.source} holds fewer than batch_size={self.batch_size} blocks: it cannot fill one batch; "
            f"use more text, a smaller batch or a shorter sequence length"
        )


def fixed_batches(blocks: IterableDataset, batch_size: int, n_batches: int | None = None,
                  source: str = "data") -> list[torch.Tensor]:
    """The first ``n_batches`` full batches of an unshuffled block stream (all of them if None): a fixed set."""
    out: list[torch.Tensor] = []
    rows: list[list[int]] = []
    for ids in iterate_blocks(blocks, 0):
        rows.append(ids)
        if len(rows) == batch_size:
            out.append(torch.tensor(rows, dtype=torch.long))  # (batch, seq_len + 1)
            rows = []
            if n_batches is not None and len(out) == n_batches:
                break
    if not out:
        raise ValueError(f"{source} holds fewer than batch_size={batch_size} blocks: no validation batch can be made")
    return out


def chars_per_token(texts: IterableDataset, tokenizer: TokenizerLike) -> float:
    """Characters per token of a document stream (end-of-text tokens not counted): converts nats/token."""
    chars = tokens = 0
    for record in texts:
        chars += len(record["text"])
        tokens += len(encode_document(tokenizer, record["text"]))
    if tokens == 0:
        raise ValueError("no tokens in the text stream: cannot measure characters per token")
    return chars / tokens

