"""Finite differences against the analytic backward pass of the pure-Python GPT."""

from __future__ import annotations

import random

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
    """The chapter's check: the largest entry and a seeded random entry of each tensor, relative error <= 1e-6."""
    params = M.initial_parameters()
    _, grads = M.loss_and_gradients(params)
    rng = random.Random(0)
    for name, value in params.items():
        picks = [M.largest_entry(grads[name]), tuple(rng.randrange(n) for n in M.shape(value))]
        for index in picks:
            fd = M.central_difference(params, name, index)
            an = M.get_entry(grads[name], index)
            if abs(an) > 1e-4:
                assert M.relative_error(fd, an) <= 1e-6, (name, index, fd, an)
            else:
                assert abs(fd - an) <= 1e-9, (name, index, fd, an)


def test_central_difference_restores_parameters():
    params = M.initial_parameters()
    before = M.copy(params)
    M.central_difference(params, "blocks.0.attn.qkv.weight", (3, 7))
    assert params == before


def _indices(value):
    if isinstance(value[0], list):
        return [(i, j) for i in range(len(value)) for j in range(len(value[0]))]
    return [(i,) for i in range(len(value))]
