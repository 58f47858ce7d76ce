"""The course tokenizer (shipped artefact, tiktoken vs pure Python) and the offline GPT-2 priming path."""

import hashlib
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry
from hypothesis import given, settings
from hypothesis import strategies as st

from insideout.gpt import gpt2_ranks
from insideout.gpt.bpe import BPE, ENDOFTEXT, GPT2_SPLIT_PATTERN, train_bpe
from insideout.gpt.corpus import shakespeare_works
from insideout.gpt.tokenizer import (
    COURSE_VOCAB_SIZE,
    GPT2_FIX,
    Tokenizer,
    course_bpe,
    course_ranks_path,
    course_tokenizer,
    gpt2_tokenizer,
)

TOK = course_tokenizer()
PY = course_bpe()


def test_shipped_artefact_has_the_documented_size():
    assert TOK.vocab_size == PY.vocab_size == COURSE_VOCAB_SIZE
    assert TOK.eot_id == COURSE_VOCAB_SIZE - 1 and PY.special_tokens == {ENDOFTEXT: TOK.eot_id}
    lines = course_ranks_path().read_text().splitlines()
    assert len(lines) == COURSE_VOCAB_SIZE - 1  # one line per rank; the special token is not in the file
    readme = (course_ranks_path().parent / "README.md").read_text()
    assert f"{COURSE_VOCAB_SIZE:,}" in readme or str(COURSE_VOCAB_SIZE) in readme
    assert tiktoken.load.load_tiktoken_bpe(str(course_ranks_path())) == PY.ranks  # tiktoken's own reader agrees


def test_shipped_artefact_is_reproduced_by_training():
    trained = train_bpe([w.text for w in shakespeare_works("train")], COURSE_VOCAB_SIZE)
    assert trained == PY, "retraining on the training works no longer reproduces the shipped vocabulary"


def test_encoders_agree_on_the_validation_works():
    text = "\n".join(w.text for w in shakespeare_works("validation"))
    ids = TOK.encode(text)
    assert ids == PY.encode(text)
    assert TOK.decode(ids) == text
    assert len(text) / len(ids) > 2.0  # merges learned on other plays still compress held-out text


def test_encoders_agree_on_every_code_point():
    # the pre-tokenisation regex runs in Python's `regex` module and in tiktoken's Rust engine: their Unicode
    # tables (what counts as a letter or a number) must agree on every character, alone and between letters
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]  # all but the surrogates
    runs = " ".join("".join(chars[i:i + 4]) for i in range(0, len(chars), 4))  # runs of neighbouring characters
    for text in (runs, " ".join(f"a{c}1{c} {c}" for c in chars[::7])):
        ids = TOK.encode(text, disallowed_special=())
        assert ids == PY.encode_ordinary(text)
        assert TOK.decode(ids) == text


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text())
def test_round_trip_and_equal_ids_on_arbitrary_unicode(text):
    ids = TOK.encode(text, disallowed_special=())
    assert ids == PY.encode(text, disallowed_special=())
    assert TOK.decode(ids) == text == PY.decode(ids)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.one_of(st.text(max_size=20), st.just(ENDOFTEXT), st.sampled_from(["<|", "|>", "endoftext"])),
                max_size=8))
def test_special_token_only_when_allowed(pieces):
    text = "".join(pieces)
    n_special = text.count(ENDOFTEXT)
    ids = TOK.encode(text, allowed_special={ENDOFTEXT})
    assert ids == PY.encode(text, allowed_special={ENDOFTEXT}) == TOK.encode(text, allowed_special="all")
    assert ids.count(TOK.eot_id) == n_special
    assert TOK.decode(ids) == text
    plain = TOK.encode(text, disallowed_special=())
    assert plain == PY.encode_ordinary(text) and TOK.eot_id not in plain and TOK.decode(plain) == text
    if n_special:
        with pytest.raises(ValueError, match="special token"):
            TOK.encode(text)
        with pytest.raises(ValueError, match="special token"):
            PY.encode(text)
    else:
        assert TOK.encode(text) == plain


def test_tokenizer_errors():
    with pytest.raises(ValueError, match=rf"outside the .* vocabulary: valid ids are 0\.\.{COURSE_VOCAB_SIZE - 1}"):
        TOK.decode([0, COURSE_VOCAB_SIZE])
    with pytest.raises(ValueError, match="outside"):
        TOK.decode([-1])
    with pytest.raises(ValueError, match="unknown special tokens"):
        TOK.encode("hi", allowed_special={"<|pad|>"})
    with pytest.raises(ValueError, match="pass 'all'"):
        TOK.encode("hi", allowed_special="<|endoftext|>")
    no_eot = tiktoken.Encoding("bytes", pat_str=GPT2_SPLIT_PATTERN,
                               mergeable_ranks={bytes([b]): b for b in range(256)}, special_tokens={})
    with pytest.raises(ValueError, match="no '<\\|endoftext\\|>'"):
        Tokenizer(no_eot)
    assert TOK.token_strings(TOK.encode(" thou art")) == [" thou", " art"]


# --- GPT-2 through tiktoken, offline: the priming code path on a tiny rank file the test writes -----------------

def tiny_gpt2_like_ranks() -> dict[bytes, int]:
    """All 256 bytes in GPT-2's byte order, then a few merges, each one merge of two earlier tokens."""
    ranks = {bytes([b]): i for i, b in enumerate(gpt2_ranks.data_gym_byte_order())}
    for token in [b"he", b"ll", b"hell", b"hello", b" w", b"or", b" wor", b"ld", b" world"]:
        ranks[token] = len(ranks)
    return ranks


@pytest.fixture
def tiny_targets(tmp_path, monkeypatch):
    """A tiny rank file on disk, the URLs/hashes tiktoken would use for it, and no network at all."""
    ranks = tiny_gpt2_like_ranks()
    source = tmp_path / "tiny.tiktoken"
    BPE(ranks, {}).save(source)
    vocab_bpe, encoder_json = gpt2_ranks.data_gym_files(ranks, {ENDOFTEXT: len(ranks)})
    targets = gpt2_ranks.Targets(
        ranks_url="https://example.invalid/tiny.tiktoken", ranks_sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
        vocab_bpe_url="https://example.invalid/vocab.bpe", vocab_bpe_sha256=hashlib.sha256(vocab_bpe).hexdigest(),
        encoder_json_url="https://example.invalid/encoder.json",
        encoder_json_sha256=hashlib.sha256(encoder_json).hexdigest(), endoftext_id=len(ranks))

    def no_network(path):
        raise ConnectionError(f"test: network disabled ({path})")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))
    return ranks, source, targets


def test_prime_writes_the_cache_entries_tiktoken_reads(tiny_targets, tmp_path, capsys):
    ranks, source, t = tiny_targets
    cache = gpt2_ranks.prime(source=source, targets=t)
    assert cache == tmp_path / "cache"
    names = sorted(p.name for p in cache.iterdir())
    assert names == sorted(hashlib.sha1(u.encode()).hexdigest() for u, _ in t.entries())
    # tiktoken's own loaders find the files offline, by the SHA-1 of the URL, and accept the hashes
    assert tiktoken.load.load_tiktoken_bpe(t.ranks_url, expected_hash=t.ranks_sha256) == ranks
    assert tiktoken.load.data_gym_to_mergeable_bpe_ranks(
        t.vocab_bpe_url, t.encoder_json_url, t.vocab_bpe_sha256, t.encoder_json_sha256) == ranks
    # idempotent: a second run sees a complete cache and writes nothing
    mtimes = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    gpt2_ranks.prime(targets=t)
    assert "already primed" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == mtimes


def test_prime_rejects_a_wrong_file_and_writes_nothing(tiny_targets, tmp_path):
    _, source, t = tiny_targets
    bad = tmp_path / "bad.tiktoken"
    bad.write_bytes(source.read_bytes() + b"IQ== 999\n")
    with pytest.raises(ValueError, match="SHA-256"):
        gpt2_ranks.prime(source=bad, targets=t, verbose=False)
    assert not (tmp_path / "cache").exists()
    assert gpt2_ranks.main(["--from", str(bad)]) == 1  # the command line reports it and fails


def test_prime_without_network_or_file_names_both_fixes(tiny_targets, monkeypatch):
    *_, t = tiny_targets

    def offline(version=gpt2_ranks.WHISPER_VERSION):
        raise ConnectionError("pip download failed: no network")

    monkeypatch.setattr(gpt2_ranks, "download_whisper_ranks", offline)
    with pytest.raises(RuntimeError, match=r"allow pip to reach PyPI.*--from FILE"):
        gpt2_ranks.prime(targets=t, verbose=False)


def test_gpt2_tokenizer_loads_through_get_encoding(tiny_targets, monkeypatch):
    ranks, source, t = tiny_targets
    gpt2_ranks.prime(source=source, targets=t, verbose=False)

    def tiny_gpt2():  # mirrors tiktoken_ext.openai_public.gpt2, with the tiny files' URLs and hashes
        mergeable = tiktoken.load.data_gym_to_mergeable_bpe_ranks(
            t.vocab_bpe_url, t.encoder_json_url, t.vocab_bpe_sha256, t.encoder_json_sha256)
        return {"name": "gpt2", "pat_str": GPT2_SPLIT_PATTERN, "mergeable_ranks": mergeable,
                "special_tokens": {ENDOFTEXT: len(mergeable)}}

    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    monkeypatch.setattr(tiktoken.registry, "ENCODING_CONSTRUCTORS", {"gpt2": tiny_gpt2})
    tok = gpt2_tokenizer()
    assert tok.name == "gpt2" and tok.vocab_size == len(ranks) + 1 and tok.eot_id == len(ranks)
    ids = tok.encode("hello world")
    assert [tok.encoding.decode_single_token_bytes(i) for i in ids] == [b"hello", b" world"]
    assert ids == BPE(ranks, {ENDOFTEXT: len(ranks)}).encode("hello world")


def test_gpt2_tokenizer_error_names_the_fix(tmp_path, monkeypatch):
    def no_network(path):
        raise ConnectionError("test: network disabled")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # forget a GPT-2 loaded earlier in this process
    with pytest.raises(RuntimeError, match=f"`{GPT2_FIX}`") as info:
        gpt2_tokenizer()
    assert GPT2_FIX == "python -m insideout.gpt.gpt2_ranks"
    assert "ConnectionError" in str(info.value)


def test_data_gym_files_need_gpt2_byte_order():
    ranks = {bytes([b]): b for b in range(256)}  # plain byte order is not GPT-2's
    with pytest.raises(ValueError, match="GPT-2's byte order"):
        gpt2_ranks.data_gym_files(ranks, {ENDOFTEXT: 256})


def test_cache_path_is_sha1_of_url():
    path = gpt2_ranks.cache_path(gpt2_ranks.R50K_URL, Path("/c"))
    assert path == Path("/c") / hashlib.sha1(gpt2_ranks.R50K_URL.encode()).hexdigest()
