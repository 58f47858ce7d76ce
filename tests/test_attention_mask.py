"""Padded batches: GPT.forward(attention_mask=...) gives each left-padded row the logits it gets when run alone."""

import pytest
import torch

from insideout.gpt.model import GPT, GPTConfig

POSITIONS = ("learned", "alibi", "rope", "none")
# float64: rounding only (~1e-15 measured); float32: the padded batch runs matmuls of other shapes, whose rounding
# differs from the single rows' (~3e-6 measured on logits of std ~1)
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}
LENGTHS = (5, 9, 1, 12)


def small_model(position: str, attn_impl: str = "sdpa", dtype=torch.float64, **overrides) -> GPT:
    # init_std 0.3 so attention is far from uniform and a padding token that leaked in would change the logits
    kwargs = dict(vocab_size=61, context_length=24, d_model=24, n_layer=2, n_head=3, position=position,
                  attn_impl=attn_impl, init_std=0.3, **overrides)
    torch.manual_seed(0)
    return GPT(GPTConfig(**kwargs)).to(dtype).eval()


def left_padded(lengths=LENGTHS, vocab: int = 61, pad: int = 7, seed: int = 1):
    """(rows, idx (B, P), mask (B, P)): random rows of the given lengths, left-padded with token `pad`."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(0, vocab, (n,), generator=g) for n in lengths]
    width = max(lengths)
    idx = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, row in enumerate(rows):
        idx[i, width - len(row):] = row
        mask[i, width - len(row):] = True
    return rows, idx, mask


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
@pytest.mark.parametrize("position", POSITIONS)
def test_padded_batch_equals_each_row_alone(position, attn_impl, dtype):
    model = small_model(position, attn_impl, dtype)
    rows, idx, mask = left_padded()
    with torch.no_grad():
        batched = model(idx, attention_mask=mask)[0]  # (B, P, V)
        alone = [model(row[None])[0][0] for row in rows]  # each (len, V)
    width = idx.shape[1]
    err = max((batched[i, width - len(row):] - a).abs().max().item()
              for i, (row, a) in enumerate(zip(rows, alone, strict=True)))
    assert err <= TOL[dtype], f"padded vs alone: max |difference| {err:.3e}"
    assert torch.isfinite(batched).all(), "padding rows must stay finite (no empty softmax rows)"
    assert max(a.std().item() for a in alone) > 0.5, "logits nearly constant: the comparison would be weak"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("position", POSITIONS)
def test_padded_batch_with_the_cache_equals_each_row_alone(position, dtype):
    """Prefill a left-padded batch into the cache, then decode: the mask covers cached and new positions."""
    model = small_model(position, dtype=dtype)
    rows, idx, mask = left_padded()
    new = torch.randint(0, 61, (len(rows), 6), generator=torch.Generator().manual_seed(5))
    err = 0.0
    with torch.no_grad():
        cache = model.new_cache(len(rows))
        model(idx, cache=cache, attention_mask=mask)
        for t in range(new.shape[1]):
            mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=torch.bool)], dim=1)  # (B, cached + 1)
            step = model(new[:, t:t + 1], cache=cache, attention_mask=mask)[0][:, -1]  # (B, V)
            for i, row in enumerate(rows):
                alone = model(torch.cat([row, new[i, :t + 1]])[None])[0][0, -1]
                err = max(err, (step[i] - alone).abs().max().item())
    assert cache.length == idx.shape[1] + new.shape[1]
    assert err <= TOL[dtype], f"cached padded decoding vs alone: max |difference| {err:.3e}"


@pytest.mark.parametrize("position", POSITIONS)
def test_a_mask_that_is_all_true_is_the_unpadded_path(position):
    model = small_model(position)
    _, idx, _ = left_padded(lengths=(12, 12, 12))
    with torch.no_grad():
        plain = model(idx)[0]
        masked = model(idx, attention_mask=torch.ones_like(idx, dtype=torch.bool))[0]
    assert (plain - masked).abs().max().item() <= 1e-12


@pytest.mark.parametrize("position", ["learned", "alibi", "rope"])
def test_without_the_mask_padding_changes_the_logits(position):
    """Negative control: the same padded ids without the mask (pads attended, positions shifted) give other logits."""
    model = small_model(position)
    rows, idx, mask = left_padded()
    with torch.no_grad():
        unmasked = model(idx)[0][1, -1]
        alone = model(rows[1][None])[0][0, -1]
    assert (unmasked - alone).abs().max().item() > 1e-2


def test_pattern_hook_sees_no_weight_on_padding():
    model = small_model("rope")
    _, idx, mask = left_padded()
    seen = {}
    model.blocks[0].attn.hook_pattern.register_forward_hook(lambda m, i, o: seen.__setitem__("p", o))
    with torch.no_grad():
        model(idx, attention_mask=mask)
    pattern = seen["p"]  # (B, H, Tq, Tk)
    real_queries = mask[:, None, :, None]
    pad_keys = ~mask[:, None, None, :]
    assert pattern.masked_select(real_queries & pad_keys).abs().max().item() == 0.0
    assert torch.allclose(pattern.sum(-1), torch.ones_like(pattern.sum(-1)), atol=1e-12)


@pytest.mark.parametrize(
    "mask, words",
    [
        ([[True] * 12] * 4, ["attention_mask must be a tensor"]),
        (torch.ones(4, 11, dtype=torch.bool), ["shape (4, 11)", "expected (4, 12)"]),
        (torch.ones(4, 12), ["must be bool", "float32"]),
        (torch.full((4, 12), 2), ["values other than 0 and 1"]),
    ],
)
def test_bad_masks_are_refused(mask, words):
    model = small_model("learned")
    _, idx, _ = left_padded()
    with pytest.raises(ValueError) as err:
        model(idx, attention_mask=mask)
    for word in words:
        assert word in str(err.value)


def test_an_integer_mask_of_zeros_and_ones_is_accepted():
    model = small_model("alibi")
    _, idx, mask = left_padded()
    with torch.no_grad():
        assert torch.equal(model(idx, attention_mask=mask)[0], model(idx, attention_mask=mask.long())[0])
