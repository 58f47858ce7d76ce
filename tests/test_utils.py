"""insideout.utils: seeding and determinism, the cpu/gpu preset switch, device selection, the cache folder."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from insideout import utils


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Each test starts with none of the course's switches set."""
    for name in (utils.PRESET_ENV, utils.DEVICE_ENV, utils.CACHE_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_accelerator(monkeypatch):
    """Pretend that neither CUDA nor MPS is available, whatever machine the tests run on."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


# --- presets --------------------------------------------------------------------------------------------------


def test_preset_defaults_to_cpu():
    assert utils.get_preset() == "cpu"


def test_preset_from_environment(monkeypatch):
    monkeypatch.setenv(utils.PRESET_ENV, "gpu")
    assert utils.get_preset() == "gpu"


def test_preset_argument_overrides_environment(monkeypatch):
    monkeypatch.setenv(utils.PRESET_ENV, "gpu")
    assert utils.get_preset("cpu") == "cpu"


def test_preset_ignores_case_and_spaces():
    assert utils.get_preset(" GPU ") == "gpu"


def test_unknown_preset_argument_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown preset 'big'.*argument.*cpu, gpu"):
        utils.get_preset("big")


def test_unknown_preset_in_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv(utils.PRESET_ENV, "tpu")
    with pytest.raises(ValueError, match=r"unknown preset 'tpu'.*\$INSIDEOUT_PRESET.*cpu, gpu"):
        utils.get_preset()


# --- devices --------------------------------------------------------------------------------------------------


def test_auto_device_falls_back_to_cpu(no_accelerator):
    assert utils.get_device() == torch.device("cpu")
    assert utils.get_device("auto") == torch.device("cpu")


def test_auto_device_prefers_cuda_then_mps(monkeypatch, no_accelerator):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert utils.get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert utils.get_device() == torch.device("cuda")


def test_device_from_environment(monkeypatch):
    monkeypatch.setenv(utils.DEVICE_ENV, "cpu")
    assert utils.get_device() == torch.device("cpu")


def test_device_argument_overrides_environment(monkeypatch):
    monkeypatch.setenv(utils.DEVICE_ENV, "nonsense")
    assert utils.get_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu", "CPU0", ""])
def test_unknown_device_is_a_value_error(name):
    with pytest.raises(ValueError, match="unknown device"):
        utils.get_device(name)


def test_unknown_device_in_environment_is_a_value_error(monkeypatch):
    monkeypatch.setenv(utils.DEVICE_ENV, "tpu")
    with pytest.raises(ValueError, match=r"unknown device 'tpu'.*auto, cpu, cuda"):
        utils.get_device()


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "mps"])
def test_unavailable_accelerator_is_a_value_error(name, no_accelerator):
    with pytest.raises(ValueError, match=rf"'{name}' requested but .* not available: use cpu or auto"):
        utils.get_device(name)


def test_get_device_prints_when_verbose(capsys, no_accelerator):
    utils.get_device(verbose=True)
    assert capsys.readouterr().out == "device: cpu\n"


# --- seeding and determinism ----------------------------------------------------------------------------------


def test_seed_everything_repeats_python_and_torch_draws(restore_torch_state):
    utils.seed_everything(123)
    first = (random.random(), torch.rand(5))
    utils.seed_everything(123)
    second = (random.random(), torch.rand(5))
    assert first[0] == second[0]
    assert torch.equal(first[1], second[1])
    utils.seed_everything(124)
    assert not torch.equal(torch.rand(5), first[1]), "a different seed must give different draws"


def test_seed_everything_fixes_threads_and_deterministic_algorithms(restore_torch_state):
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(False)
    utils.seed_everything(0)
    assert torch.get_num_threads() == utils.DEFAULT_THREADS == 2
    assert torch.are_deterministic_algorithms_enabled()
    utils.seed_everything(0, threads=1)
    assert torch.get_num_threads() == 1


def test_seed_everything_can_leave_threads_alone(restore_torch_state):
    torch.set_num_threads(1)
    utils.seed_everything(0, threads=None)
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("threads", [0, -2])
def test_seed_everything_rejects_non_positive_threads(threads, restore_torch_state):
    with pytest.raises(ValueError, match=rf"threads={threads}"):
        utils.seed_everything(0, threads=threads)


def test_setup_prints_one_line_and_returns_preset_and_device(capsys, monkeypatch, no_accelerator,
                                                             restore_torch_state):
    monkeypatch.setenv(utils.PRESET_ENV, "gpu")
    preset, device = utils.setup(seed=7)
    assert (preset, device) == ("gpu", torch.device("cpu"))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"torch {torch.__version__} | preset gpu | device cpu | threads 2 | seed 7"
    assert lines[1].startswith("numerics: ") and len(lines) == 2


def test_setup_rejects_a_bad_preset_before_printing(capsys, restore_torch_state):
    with pytest.raises(ValueError, match="unknown preset"):
        utils.setup(preset="huge")
    assert capsys.readouterr().out == ""


# --- cache folder ---------------------------------------------------------------------------------------------


def test_cache_dir_from_environment_is_created(monkeypatch, tmp_path):
    target = tmp_path / "nested" / "cache"
    monkeypatch.setenv(utils.CACHE_ENV, str(target))
    assert utils.cache_dir() == target
    assert target.is_dir()


def test_cache_dir_defaults_to_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert utils.cache_dir() == Path(tmp_path) / ".cache" / "insideout"
    assert utils.cache_dir().is_dir()


def test_within_reads_a_grad_tensor_without_a_warning():
    """A stored output must not hold a warning with the repository's path in it (it differs on every clone)."""
    import warnings

    x = torch.tensor([1e-16, -2e-16], dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert utils.within((x * 1.0).abs().max(), 1e-15) == "<= 1e-15 (float64 rounding)"
    with pytest.raises(AssertionError, match="exceeds the bound"):
        utils.within(x.abs().max() * 1e3, 1e-15)
