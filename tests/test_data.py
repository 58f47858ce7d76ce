"""The streaming data pipeline: splits, packing, the FineWeb-schema path, determinism and clear errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from byte_tokenizer import ByteTokenizer

from insideout.gpt.corpus import VALIDATION_WORKS, shakespeare_works
from insideout.gpt.data import (
    FINEWEB_COLUMNS,
    BatchStream,
    chars_per_token,
    fixed_batches,
    packed_dataset,
    text_dataset,
)

TOK = ByteTokenizer()
DOCS = ["First document.", "The second one, a little longer.", "Third!", "Fourth and last document here."]


def fineweb_parquet(path, docs=DOCS):
    """A local parquet file with FineWeb's nine columns."""
    n = len(docs)
    table = pa.table({
        "text": docs, "id": [f"<urn:uuid:{i}>" for i in range(n)], "dump": ["CC-MAIN-2024-10"] * n,
        "url": [f"https://example.org/{i}" for i in range(n)], "date": ["2024-02-20T00:00:00Z"] * n,
        "file_path": ["s3://commoncrawl/x.warc.gz"] * n, "language": ["en"] * n,
        "language_score": [0.95] * n, "token_count": [len(d) // 4 for d in docs],
    })
    assert tuple(table.column_names) == FINEWEB_COLUMNS
    pq.write_table(table, path)
    return str(path)


def test_shakespeare_split_by_work_without_leakage():
    train = {r["id"] for r in text_dataset("shakespeare", "train")}
    val = {r["id"] for r in text_dataset("shakespeare", "validation")}
    assert val == set(VALIDATION_WORKS)
    assert not train & val, "a work is in both splits"
    assert train | val == {w.key for w in shakespeare_works()}


def test_packing_separates_documents_with_end_of_text(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    texts = text_dataset(str(path), "train", validation_documents=1)  # holds out DOCS[0]
    seq_len = 8
    blocks = [r["input_ids"] for r in packed_dataset(texts, TOK, seq_len)]
    assert all(len(b) == seq_len + 1 for b in blocks)
    shared = all(a[-1] == b[0] for a, b in zip(blocks[:-1], blocks[1:], strict=True))
    assert shared, "consecutive blocks must share one token"
    stream = blocks[0] + [t for b in blocks[1:] for t in b[1:]]
    expected = []
    for doc in DOCS[1:]:
        expected += TOK.encode(doc) + [TOK.eot_id]
    assert stream == expected[: len(stream)]
    assert len(expected) - len(stream) < seq_len, "more than one block's worth of tokens was dropped"


def test_fineweb_schema_file_goes_through_the_same_path(tmp_path):
    path = fineweb_parquet(tmp_path / "fineweb.parquet")
    val = list(text_dataset(path, "validation", validation_documents=1))
    train = list(text_dataset(path, "train", validation_documents=1))
    assert [r["text"] for r in val] == DOCS[:1]
    assert [r["text"] for r in train] == DOCS[1:]
    assert set(train[0]) == {"text"}, "only the text column should flow downstream"
    blocks = fixed_batches(packed_dataset(text_dataset(path, "train", validation_documents=1), TOK, 6), 2)
    assert blocks[0].shape == (2, 7) and blocks[0].dtype == torch.long
    assert TOK.decode(blocks[0][0].tolist()) == DOCS[1][:7]


def test_batch_stream_is_deterministic_and_resumable():
    blocks = packed_dataset(text_dataset("shakespeare", "validation"), TOK, 64, shuffle_seed=3, buffer_size=64)
    a = BatchStream(blocks, 4)
    first = [next(a) for _ in range(6)]
    b = BatchStream(blocks, 4)
    assert all(torch.equal(x, next(b)) for x in first), "the same seed must give the same batches"
    resumed = BatchStream(blocks, 4, epoch=0, batches=4)
    assert torch.equal(next(resumed), first[4]), "resuming at (epoch 0, 4 batches) must give the 5th batch"
    assert a.state() == {"epoch": 0, "batches": 6}
    other_epoch = BatchStream(blocks, 4, epoch=1)
    assert not torch.equal(next(other_epoch), first[0]), "each epoch must have its own order"
    unshuffled = packed_dataset(text_dataset("shakespeare", "validation"), TOK, 64)
    assert torch.equal(fixed_batches(unshuffled, 4, 2)[1], fixed_batches(unshuffled, 4, 2)[1])


def test_epoch_rollover(tmp_path):
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS * 3))
    blocks = packed_dataset(text_dataset(str(path), "train", validation_documents=1), TOK, 16, shuffle_seed=0)
    n_blocks = sum(1 for _ in blocks)
    stream = BatchStream(blocks, 2)
    for _ in range(n_blocks // 2 + 1):
        next(stream)
    assert stream.state() == {"epoch": 1, "batches": 1}


def test_chars_per_token():
    assert chars_per_token([{"text": "abc"}, {"text": "de"}], TOK) == 1.0
    assert chars_per_token([{"text": "é"}], TOK) == 0.5  # two UTF-8 bytes


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown data source 'wikipedia'.*shakespeare"):
        text_dataset("wikipedia", "train")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        text_dataset(str(tmp_path / "missing.parquet"), "train")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        text_dataset(str(empty), "train")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not a parquet file at all" * 10)
    with pytest.raises(ValueError, match="cannot read data source"):
        text_dataset(str(garbage), "train")
    no_text = tmp_path / "no_text.parquet"
    pq.write_table(pa.table({"body": ["a", "b"]}), no_text)
    with pytest.raises(ValueError, match="no 'text' column"):
        text_dataset(str(no_text), "train")
    with pytest.raises(ValueError, match="split='test'"):
        text_dataset("shakespeare", "test")
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text(json.dumps({"text": "held out"}) + "\n" + json.dumps({"text": "short"}) + "\n")
    stream = BatchStream(packed_dataset(text_dataset(str(tiny), "train", validation_documents=1), TOK, 64), 2,
                         source="tiny")
    with pytest.raises(ValueError, match="tiny holds fewer than batch_size=2 blocks"):
        next(stream)
