"""The from-scratch byte-level BPE trainer and its pure-Python encoder (insideout.gpt.bpe)."""

from collections import Counter

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from insideout.gpt.bpe import BPE, ENDOFTEXT, GPT2_SPLIT_PATTERN, Merge, pretoken_counts, train_bpe


def naive_train(texts, n_merges):
    """Reference trainer: recount every pair from scratch before each merge (slow, obviously right)."""
    counts = Counter()
    for text in texts:
        for chunk in text.split(ENDOFTEXT):
            counts.update(regex.findall(GPT2_SPLIT_PATTERN, chunk))
    words = {w: [bytes([b]) for b in w.encode()] for w in counts}
    merges = []
    for _ in range(n_merges):
        pairs = Counter()
        for w, parts in words.items():
            for pair in zip(parts, parts[1:], strict=False):
                pairs[pair] += counts[w]
        if not pairs:
            break
        (left, right), count = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merges.append((left, right, count))
        for w, parts in words.items():
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == left and parts[i + 1] == right:
                    out.append(left + right)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            words[w] = out
    return merges


def test_merges_on_a_hand_checked_example():
    # "aaabdaaabac" is one pre-token. Pair counts: aa 4, ab 2, others 1 -> merge (a, a).
    # Then (aa, a) and (a, b) both occur twice; the tie goes to the pair whose bytes sort first: (a, b).
    # Then (aa, ab) twice -> "aaab". Then four pairs occur once; (a, c) sorts first.
    bpe = train_bpe("aaabdaaabac", vocab_size=256 + 4 + 1)
    assert bpe.merges == [
        Merge(b"a", b"a", 256, 4),
        Merge(b"a", b"b", 257, 2),
        Merge(b"aa", b"ab", 258, 2),
        Merge(b"a", b"c", 259, 1),
    ]
    assert bpe.special_tokens == {ENDOFTEXT: 260}
    assert bpe.vocab_size == 261
    ids = bpe.encode_ordinary("aaabdaaabac")
    assert [bpe.token_bytes(i) for i in ids] == [b"aaab", b"d", b"aaab", b"ac"]


def test_merges_never_cross_pretoken_boundaries():
    text = "the cat sat on the mat, the end"
    assert list(pretoken_counts([text]).items())[:3] == [("the", 1), (" cat", 1), (" sat", 1)]
    bpe = train_bpe(text, vocab_size=256 + 12 + 1)
    pieces = [p.encode() for p in pretoken_counts([text])]
    for merge in bpe.merges:  # every learned token lies inside one pre-token
        assert any(merge.left + merge.right in p for p in pieces), merge
    assert b" the" in bpe.ranks and b"e " not in bpe.ranks


def test_pretoken_pattern_splits_like_gpt2():
    pieces = regex.findall(GPT2_SPLIT_PATTERN, "Hello world's 2024 cats!!  ok\n")
    assert pieces == ["Hello", " world", "'s", " 2024", " cats", "!!", " ", " ok", "\n"]


def test_fast_trainer_equals_naive_recount_on_corpus_sample():
    from insideout.gpt.corpus import shakespeare_works

    text = shakespeare_works("validation")[0].text[:20_000]
    bpe = train_bpe(text, vocab_size=256 + 150 + 1)
    assert [(m.left, m.right, m.count) for m in bpe.merges] == naive_train([text], 150)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(st.lists(st.text(alphabet="ab c\nd'é", min_size=1, max_size=40), min_size=1, max_size=4),
       st.integers(min_value=1, max_value=25))
def test_fast_trainer_equals_naive_recount_on_random_texts(texts, n_merges):
    reference = naive_train(texts, n_merges)
    possible = len(reference)  # the text may allow fewer merges than asked
    if possible < n_merges:
        with pytest.raises(ValueError, match="too large for this text"):
            train_bpe(texts, vocab_size=256 + n_merges + 1)
    if possible == 0:
        return
    bpe = train_bpe(texts, vocab_size=256 + possible + 1)
    assert [(m.left, m.right, m.count) for m in bpe.merges] == reference


def test_training_is_deterministic_and_prefix_consistent():
    texts = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer"]
    a = train_bpe(texts, vocab_size=300)
    b = train_bpe(list(reversed(texts)), vocab_size=300)  # text order does not matter: only counts do
    assert a == b and a.merges == b.merges
    small = train_bpe(texts, vocab_size=280)
    assert small == a.truncated(280)
    assert small.special_tokens == {ENDOFTEXT: 279}


def test_all_bytes_in_base_vocabulary_and_special_last():
    bpe = train_bpe("hello hello", vocab_size=258)  # el, he, ll, lo all occur twice: "el" sorts first
    assert all(bpe.ranks[bytes([b])] == b for b in range(256))
    assert bpe.ranks[b"el"] == 256 and bpe.special_tokens == {ENDOFTEXT: 257}
    # a byte never seen in training still encodes (as itself) and round-trips
    text = "zebra \x00\x7f 🦓"
    assert bpe.decode(bpe.encode(text)) == text


def test_special_token_handling():
    bpe = train_bpe("one two three", vocab_size=262)
    eot = bpe.special_tokens[ENDOFTEXT]
    text = f"one{ENDOFTEXT}two"
    with pytest.raises(ValueError, match="special token"):
        bpe.encode(text)  # disallowed by default
    as_special = bpe.encode(text, allowed_special={ENDOFTEXT})
    assert as_special.count(eot) == 1 and bpe.decode(as_special) == text
    assert bpe.encode(text, allowed_special="all") == as_special
    as_text = bpe.encode(text, disallowed_special=())
    assert eot not in as_text and bpe.decode(as_text) == text
    assert bpe.encode_ordinary(text) == as_text
    with pytest.raises(ValueError, match="unknown special"):
        bpe.encode(text, allowed_special={"<|im_start|>"})
    with pytest.raises(ValueError, match="unknown special"):
        bpe.encode(text, disallowed_special={"<|im_start|>"})
    # special strings are cut out of the training text, never learned
    trained = train_bpe([f"ab{ENDOFTEXT}ab"] * 3, vocab_size=258)
    assert trained.merges == [Merge(b"a", b"b", 256, 6)]


def test_errors_are_clear():
    with pytest.raises(ValueError, match=r"vocab_size=256 is too small.*256 \+ 1"):
        train_bpe("some text", vocab_size=256)
    with pytest.raises(ValueError, match="too small"):
        train_bpe("some text", vocab_size=258, special_tokens=["<|a|>", "<|b|>", "<|c|>"])
    for empty in ("", [], ["", ""]):
        with pytest.raises(ValueError, match="empty text"):
            train_bpe(empty, vocab_size=300)
    with pytest.raises(ValueError, match="too large for this text"):
        train_bpe("ab", vocab_size=300)
    with pytest.raises(ValueError, match="non-empty strings"):
        train_bpe("ab", vocab_size=300, special_tokens=[""])
    bpe = train_bpe("ab ab", vocab_size=258)
    for bad in ([258], [-1], [0, 10_000]):
        with pytest.raises(ValueError, match=r"outside the vocabulary: valid ids are 0\.\.257"):
            bpe.decode(bad)
    with pytest.raises(ValueError, match="lacks 1 single bytes"):
        BPE({bytes([b]): b for b in range(255)} | {b"ab": 255}, {})
    with pytest.raises(ValueError, match="between 257 and 258"):
        bpe.truncated(1000)


def test_save_and_load_round_trip(tmp_path):
    bpe = train_bpe(["héllo wörld", "hello world 123"], vocab_size=270)
    path = tmp_path / "ranks.tiktoken"
    bpe.save(path)
    first = path.read_text().splitlines()[0]
    assert first == "AA== 0"  # base64 of byte 0, rank 0: tiktoken's format
    assert BPE.load(path) == bpe
    import tiktoken.load

    assert tiktoken.load.load_tiktoken_bpe(str(path)) == bpe.ranks  # tiktoken reads it too
    path.write_text("not-base64!! x\n")
    with pytest.raises(ValueError, match="expected 'base64-token rank'"):
        BPE.load(path)
