"""Finite differences against the analytic backward pass of the pure-Python GPT."""

from __future__ import annotations

import random

import pytest

from insideout import manual as M

SMALL = {**M.TINY_CONFIG, "d_model": 4, "n_head": 2, "d_ff": 8, "n_layer": 2}


def test_every_entry_of_a_small_two_layer_model():
    """All entries, all tensors, on a 2-layer model with d_model 4 (the code is the same for any size)."""
    params = M.initial_parameters(seed=3, config=SMALL)
    _, grads = M.loss_and_gradients(params)
    assert M.num_parameters(params) == M.num_parameters(grads)
    worst = 0.0
    for name, value in params.items():
        for index in _indices(value):
            fd = M.central_difference(params, name, index)
            an = M.get_entry(grads[name], index)
            # absolute floor: the central difference's rounding error is ~1e-16 / h = 1e-11
            assert abs(fd - an) <= 1e-6 * max(abs(fd), abs(an)) + 1e-9, (name, index, fd, an)
            worst = max(worst, abs(fd - an))
    assert worst < 1e-8


def test_spot_checks_on_the_tiny_model():
    """The chapter's check: the largest and one other seeded entry of every logical tensor (W_Q, b_Q, ... split)."""
    params = M.initial_parameters()
    _, grads = M.loss_and_gradients(params)
    rng = random.Random(0)
    checked = set()
    for logical in M.logical_tensors():
        if logical.symbol == "b_K":  # true gradient exactly 0: checked by test_key_bias_cannot_change_the_loss
            continue
        g = logical.view(grads[logical.param])
        largest = M.largest_entry(g)
        other = largest
        while other == largest:
            other = tuple(rng.randrange(n) for n in logical.shape)
        for index in (largest, other):
            fd = M.central_difference(params, logical.param, logical.param_index(index))
            an = M.get_entry(g, index)
            if an == 0.0:
                assert fd == 0.0, (logical.symbol, index, fd)
            else:
                assert M.relative_error(fd, an) <= 1e-6, (logical.symbol, index, fd, an)
        checked.add(logical.symbol)
    assert {"W_Q", "W_K", "W_V", "b_Q", "b_V"} <= checked and len(checked) == 19


def _with_bias_third(params, part, values):
    new = {name: M.copy(value) for name, value in params.items()}
    d = M.TINY_CONFIG["d_model"]
    new["blocks.0.attn.qkv.bias"][part * d:(part + 1) * d] = values
    return new


def test_key_bias_cannot_change_the_loss():
    """b_K shifts whole score rows, which softmax ignores: any b_K gives the same loss; b_Q and b_V do not."""
    params = M.initial_parameters()
    loss0, grads = M.loss_and_gradients(params)
    rng = random.Random(1)
    change = {part: M.loss_only(_with_bias_third(params, part, [rng.gauss(0, 1) for _ in range(16)])) - loss0
              for part in range(3)}
    assert abs(change[1]) <= 1e-14
    assert abs(change[0]) > 1e-3 and abs(change[2]) > 1e-3, "the same replacement must move the loss via b_Q, b_V"
    assert max(abs(x) for x in grads["blocks.0.attn.qkv.bias"][16:32]) <= 1e-15


def test_logical_tensors_tile_the_stored_parameters():
    for config in (M.TINY_CONFIG, SMALL):
        params = M.initial_parameters(config=config)
        covered = {}
        for logical in M.logical_tensors(config):
            value = params[logical.param]
            part = logical.view(value)
            assert M.shape(part) == logical.shape, logical
            covered[logical.param] = covered.get(logical.param, 0) + logical.shape[0]
            last = tuple(n - 1 for n in logical.shape)
            assert M.get_entry(value, logical.param_index(last)) == M.get_entry(part, last)
        assert covered == {name: len(value) for name, value in params.items()}, "every row exactly once"
    symbols = [t.symbol for t in M.logical_tensors(SMALL)]
    assert "W_Q^0" in symbols and "b_K^1" in symbols and len(symbols) == len(set(symbols))


def test_logical_index_out_of_range_is_refused():
    w_q = next(t for t in M.logical_tensors() if t.symbol == "W_Q")
    with pytest.raises(ValueError, match="outside its shape"):
        w_q.param_index((16, 0))
    with pytest.raises(ValueError, match="outside its shape"):
        w_q.param_index((0,))


def test_within_matches_the_torch_side_helper():
    from insideout.utils import within as torch_side_within

    for value, bound, kind in ((0.0, 1e-15, "float64 rounding"), (3e-16, 1e-15, "x"), (1e-7, 1e-6, "fd")):
        assert M.within(value, bound, kind) == torch_side_within(value, bound, kind)
    for bad in (2e-15, float("nan")):
        with pytest.raises(AssertionError, match="exceeds the bound"):
            M.within(bad, 1e-15)


def test_central_difference_restores_parameters():
    params = M.initial_parameters()
    before = M.copy(params)
    M.central_difference(params, "blocks.0.attn.qkv.weight", (3, 7))
    assert params == before


def _indices(value):
    if isinstance(value[0], list):
        return [(i, j) for i in range(len(value)) for j in range(len(value[0]))]
    return [(i,) for i in range(len(value))]
