"""The chat format: three new special tokens, a template, the loss mask, and the vocabulary resize of the model.

A conversation is tokenised as

    <|endoftext|> <|user|> instruction <|assistant|> response <|end|>

``<|endoftext|>`` is the document separator the base model was trained with (here it starts the conversation);
``<|user|>``, ``<|assistant|>`` and ``<|end|>`` (end of turn) are new tokens with ids after the base vocabulary.
Text — the user's and the assistant's — is always encoded with tiktoken's ``encode_ordinary``: a user who types
``<|assistant|>`` gets the characters ``<``, ``|``, ``assistant``, ... never the control token. Only the template
inserts control tokens, by id. The loss mask marks the tokens the model is trained to produce: the response and
the end-of-turn token.

``add_chat_tokens`` grows a GPT's token embedding (and with it the tied LM head) by the new rows, initialised to the
mean of the existing embeddings: the new tokens start with the average token's logit instead of a random one
(Hewitt, 2021), so the resized model's distribution over the old tokens is unchanged and the new tokens start
with a small, average probability.
"""

from __future__ import annotations

from dataclasses import dataclass

import tiktoken
import torch

from insideout.gpt.model import GPT, GPTConfig

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
CHAT_SPECIALS = (USER, ASSISTANT, END)


class ChatTokenizer:
    """The base tokenizer plus the chat tokens; ids of the base vocabulary are unchanged."""

    def __init__(self, base):
        encoding = getattr(base, "encoding", None)
        if encoding is None:
            raise ValueError(f"the chat tokenizer needs a tiktoken-based tokenizer, got {type(base).__name__}")
        clash = sorted(set(CHAT_SPECIALS) & encoding.special_tokens_set)
        if clash:
            raise ValueError(f"tokenizer {base.name!r} already has the chat tokens {clash}: pass the base tokenizer")
        self.base = base
        self.base_vocab_size = base.vocab_size
        specials = dict(encoding._special_tokens)
        for i, token in enumerate(CHAT_SPECIALS):
            specials[token] = base.vocab_size + i
        self.encoding = tiktoken.Encoding(name=f"{encoding.name}-chat", pat_str=encoding._pat_str,
                                          mergeable_ranks=encoding._mergeable_ranks, special_tokens=specials)
        self.name = f"{base.name}-chat"
        self.vocab_size = base.vocab_size + len(CHAT_SPECIALS)
        self.eot_id = base.eot_id
        self.user_id, self.assistant_id, self.end_id = (specials[t] for t in CHAT_SPECIALS)
        self.special_ids = frozenset([self.eot_id, self.user_id, self.assistant_id, self.end_id])

    def __repr__(self) -> str:
        return f"ChatTokenizer(name={self.name!r}, vocab_size={self.vocab_size}, end_id={self.end_id})"

    def encode_text(self, text: str) -> list[int]:
        """Plain text to ids: special-token strings inside it are ordinary characters."""
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are outside the chat vocabulary 0..{self.vocab_size - 1}")
        return self.encoding.decode(ids)

    def token_strings(self, ids) -> list[str]:
        return [self.encoding.decode_single_token_bytes(int(i)).decode("utf-8", errors="replace") for i in ids]

    def prompt(self, instruction: str) -> list[int]:
        """Ids of ``<|endoftext|><|user|>instruction<|assistant|>``: what the model continues."""
        return [self.eot_id, self.user_id, *self.encode_text(instruction), self.assistant_id]

    def conversation(self, instruction: str, response: str) -> tuple[list[int], list[bool]]:
        """(ids, mask) of a whole exchange; mask[i] is True where token i is one the model learns to produce."""
        prompt = self.prompt(instruction)
        answer = [*self.encode_text(response), self.end_id]
        return prompt + answer, [False] * len(prompt) + [True] * len(answer)

    def response_text(self, ids) -> tuple[str, bool]:
        """(text, stopped) of a generated continuation: the text before the first end-of-turn token.

        Other control tokens the model emits are decoded as their strings, so a judge sees them.
        """
        ids = [int(i) for i in ids]
        if self.end_id in ids:
            return self.decode(ids[: ids.index(self.end_id)]), True
        return self.decode(ids), False


@dataclass(frozen=True)
class ChatExample:
    ids: list[int]
    mask: list[bool]


def chat_tokenizer(base=None) -> ChatTokenizer:
    """The chat tokenizer over the course tokenizer (or over ``base``)."""
    if base is None:
        from insideout.gpt.data import load_tokenizer

        base = load_tokenizer("course")
    return ChatTokenizer(base)


def add_chat_tokens(model: GPT, tokenizer: ChatTokenizer) -> GPT:
    """A copy of ``model`` whose vocabulary is the chat tokenizer's: new embedding rows = mean of the old rows.

    Every other tensor is copied unchanged; the LM head stays tied to the (grown) embedding.
    """
    if model.config.vocab_size != tokenizer.base_vocab_size:
        raise ValueError(f"the model has vocab_size={model.config.vocab_size}, the chat tokenizer extends a "
                         f"vocabulary of {tokenizer.base_vocab_size}: pass the base model of that tokenizer")
    if not model.config.tie_weights:
        raise ValueError("add_chat_tokens expects a GPT with a tied LM head (GPTConfig.tie_weights=True)")
    config = GPTConfig.from_dict({**model.config.to_dict(), "vocab_size": tokenizer.vocab_size})
    grown = GPT(config).to(model.tok_emb.weight.device)
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    old = state["tok_emb.weight"]  # (V, d_model)
    new_rows = old.mean(dim=0, keepdim=True).expand(tokenizer.vocab_size - old.shape[0], -1)
    state["tok_emb.weight"] = torch.cat([old, new_rows], dim=0)  # (V + 3, d_model)
    grown.load_state_dict_strict(state)
    return grown.eval()


def check_chat_model(model: GPT, tokenizer: ChatTokenizer, what: str = "model") -> None:
    """ValueError unless the model's vocabulary holds the chat tokens of this tokenizer."""
    vocab = model.config.vocab_size
    if vocab == tokenizer.base_vocab_size:
        raise ValueError(f"the {what} has the base vocabulary ({vocab} tokens) without the chat tokens "
                         f"{', '.join(CHAT_SPECIALS)}: resize it first with add_chat_tokens(model, tokenizer)")
    if vocab != tokenizer.vocab_size:
        raise ValueError(f"the {what} has vocab_size={vocab}, the chat tokenizer {tokenizer.vocab_size}: "
                         f"it was made for another tokenizer")


def pad_batch(sequences: list[list[int]], masks: list[list[bool]] | None = None, pad_id: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad sequences to one length: (ids (B, T), mask (B, T)); the mask is False on padding.

    With ``masks`` the mask is those masks (padded with False); without, True on every real token.
    """
    if not sequences:
        raise ValueError("pad_batch got no sequences")
    T = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.bool)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        row = masks[i] if masks is not None else [True] * len(seq)
        if len(row) != len(seq):
            raise ValueError(f"mask {i} has {len(row)} entries for a sequence of {len(seq)} tokens")
        mask[i, : len(seq)] = torch.tensor(row, dtype=torch.bool)
    return ids, mask
