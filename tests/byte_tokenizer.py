"""A stand-in tokenizer for the data/training tests: one token per UTF-8 byte, end-of-text = 256."""


class ByteTokenizer:
    """Stand-in tokenizer: one token per UTF-8 byte, end-of-text = 256."""

    name, vocab_size, eot_id = "bytes", 257, 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", "replace")
