"""insideout.training: the shared loop (schedule, parameter groups, batches, accumulation, fit)."""

from __future__ import annotations

import math

import pytest
import torch

from insideout.training import (
    OptimConfig,
    fit,
    forward_backward,
    lr_at,
    make_optimizer,
    parameter_groups,
    split_batch,
)


def regression_loss(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y), {"rows": float(x.shape[0])}


def make_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64) + 0.3
    return x, y


def endless(batch):
    while True:
        yield batch


def test_schedule_warms_up_then_decays_to_the_floor():
    c = OptimConfig(max_steps=100, lr=1e-2, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, c) == pytest.approx(1e-3)
    assert lr_at(9, c) == pytest.approx(1e-2)
    assert lr_at(100, c) == pytest.approx(1e-3)
    assert all(lr_at(s, c) >= lr_at(s + 1, c) for s in range(10, 100))


@pytest.mark.parametrize("field,value", [("lr", float("nan")), ("lr", 0.0), ("grad_clip", float("nan")),
                                         ("weight_decay", float("nan")), ("eps", float("nan")), ("eps", 0.0),
                                         ("beta1", 1.0), ("grad_clip", -1.0), ("max_steps", 0),
                                         ("warmup_steps", 100), ("lr", "0.1"), ("max_steps", 2.5)])
def test_bad_optim_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=rf"OptimConfig\.{field}="):
        OptimConfig(**{field: value})


def test_parameter_groups_decay_matrices_only_and_skip_frozen():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 1))
    model[2].weight.requires_grad_(False)
    decay, no_decay = parameter_groups(model)
    assert decay == ["0.weight"]
    assert no_decay == ["0.bias", "1.weight", "1.bias", "2.bias"]


def test_no_trainable_parameters_is_an_error():
    model = torch.nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        make_optimizer(model, OptimConfig())


def test_split_batch_handles_tensors_tuples_dicts_and_refuses_uneven_splits():
    t = torch.arange(12).view(6, 2)
    assert [c.shape[0] for c in split_batch(t, 3)] == [2, 2, 2]
    a, b = split_batch((t, t * 2), 2)
    assert torch.equal(a[1], t[:3] * 2)
    d = split_batch({"x": t, "name": "keep"}, 2)
    assert d[1]["name"] == "keep" and torch.equal(d[1]["x"], t[3:])
    with pytest.raises(ValueError, match="cannot be split into 4"):
        split_batch(t, 4)


def test_accumulation_equals_the_large_batch_in_float64():
    x, y = make_data(32)
    grads = []
    for micro in (1, 4):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1).double()
        loss, metrics = forward_backward(model, (x, y), regression_loss, micro)
        grads.append((loss.item(), model.weight.grad.clone()))
        assert metrics["rows"] == 32 / micro
    assert grads[0][0] == pytest.approx(grads[1][0], abs=1e-14)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-14, rtol=0)


def test_fit_learns_a_linear_map_and_records_history():
    x, y = make_data()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    config = OptimConfig(max_steps=300, lr=5e-2, warmup_steps=10, weight_decay=0.0)
    evals = []

    def eval_fn(m):
        with torch.no_grad():
            value = torch.nn.functional.mse_loss(m(x), y).item()
        evals.append(value)
        return {"val": value}

    result = fit(model, endless((x, y)), regression_loss, config, eval_fn=eval_fn, eval_every=100)
    assert result.step == 300 and len(result.history["loss"]) == 300
    assert result.history["eval_step"] == [100, 200, 300]
    assert result.history["val"] == evals and evals[-1] < 1e-4
    assert result.history["rows"][0] == 64 and not model.training


def test_fit_is_bit_identical_when_repeated_and_resumable():
    x, y = make_data()
    config = OptimConfig(max_steps=40, lr=1e-2, warmup_steps=5)

    def run(stop):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1).double()
        result = fit(model, endless((x, y)), regression_loss, config, stop_at=stop)
        return model, result

    full, _ = run(40)
    half, res = run(20)
    fit(half, endless((x, y)), regression_loss, config, optimizer=res.optimizer, start_step=20,
        history=res.history)
    assert torch.equal(full.weight, half.weight) and torch.equal(full.bias, half.bias)
    assert len(res.history["loss"]) == 40


def test_fit_stops_or_raises_on_a_non_finite_loss():
    x, y = make_data()
    model = torch.nn.Linear(3, 1).double()

    def exploding(model, batch):
        return model(batch[0]).sum() * float("inf")

    with pytest.raises(FloatingPointError, match="step 1"):
        fit(model, endless((x, y)), exploding, OptimConfig(max_steps=5, warmup_steps=1))
    result = fit(model, endless((x, y)), exploding, OptimConfig(max_steps=5, warmup_steps=1), on_nonfinite="stop")
    assert result.history["diverged_at"] == [1] and result.step == 0


def test_fit_rejects_a_short_stream_and_bad_arguments():
    x, y = make_data()
    model = torch.nn.Linear(3, 1).double()
    with pytest.raises(ValueError, match="ended after 1 steps"):
        fit(model, iter([(x, y)]), regression_loss, OptimConfig(max_steps=3, warmup_steps=1))
    with pytest.raises(ValueError, match="grad_accum"):
        fit(model, endless((x, y)), regression_loss, OptimConfig(max_steps=3, warmup_steps=1), grad_accum=0)
    with pytest.raises(ValueError, match="on_nonfinite"):
        fit(model, endless((x, y)), regression_loss, OptimConfig(max_steps=3, warmup_steps=1), on_nonfinite="x")
    with pytest.raises(ValueError, match="scalar loss"):
        fit(model, endless((x, y)), lambda m, b: m(b[0]), OptimConfig(max_steps=3, warmup_steps=1))
    assert math.isfinite(lr_at(0, OptimConfig()))
