"""insideout.cache: trained models cached by key, atomically, as safetensors; retrained when missing or stale."""

from __future__ import annotations

import pytest
import torch

from insideout import cache, utils


@pytest.fixture(autouse=True)
def tmp_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(utils.CACHE_ENV, str(tmp_path))
    return tmp_path


def trainer(calls):
    def train():
        calls.append(1)
        torch.manual_seed(0)
        return {"w": torch.randn(3, 2), "steps": torch.tensor([5])}, {"seconds": 1.5, "history": [1.0, 0.5]}
    return train


def test_trains_once_then_loads_the_same_tensors(capsys):
    calls = []
    a = cache.cached("toy", {"lr": 0.1, "steps": 5}, trainer(calls))
    b = cache.cached("toy", {"steps": 5, "lr": 0.1}, trainer(calls))  # same key, other order
    assert calls == [1] and a.trained_now and not b.trained_now
    assert torch.equal(a.tensors["w"], b.tensors["w"]) and b.meta["history"] == [1.0, 0.5]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("training toy (not in the cache)") and out[1].startswith("loaded toy from the cache")


def test_another_key_is_another_file():
    calls = []
    a = cache.cached("toy", {"lr": 0.1}, trainer(calls), log=None)
    b = cache.cached("toy", {"lr": 0.2}, trainer(calls), log=None)
    assert len(calls) == 2 and a.path != b.path


def test_the_callers_random_stream_does_not_depend_on_training():
    torch.manual_seed(7)
    cache.cached("toy", {"x": 1}, trainer([]), log=None)
    after_training = torch.rand(3)
    torch.manual_seed(7)
    cache.cached("toy", {"x": 1}, trainer([]), log=None)
    assert torch.equal(torch.rand(3), after_training)


def test_a_corrupt_file_is_retrained_and_says_why(tmp_cache, capsys):
    path = cache.artifact_path("toy", {"x": 1})
    path.write_bytes(b"not safetensors")
    calls = []
    cache.cached("toy", {"x": 1}, trainer(calls))
    assert calls == [1] and "unusable" in capsys.readouterr().out


def test_non_finite_results_are_refused():
    def bad():
        return {"w": torch.tensor([float("nan")])}, {}
    with pytest.raises(FloatingPointError, match="non-finite values in 'w'"):
        cache.cached("toy", {"x": 2}, bad, log=None)


def test_bad_kind_key_and_metadata_are_clear_errors():
    with pytest.raises(ValueError, match="artifact kind"):
        cache.artifact_path("Bad Kind", {})
    with pytest.raises(ValueError, match="JSON-able"):
        cache.artifact_path("toy", {"f": object()})
    with pytest.raises(TypeError, match="JSON-able"):
        cache.cached("toy", {"x": 3}, lambda: ({"w": torch.zeros(1)}, {"obj": object()}), log=None)
    with pytest.raises(FileNotFoundError):
        cache.load_artifact(cache.artifact_path("toy", {"x": 99}))
