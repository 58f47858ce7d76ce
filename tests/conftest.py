"""Shared pytest configuration for the library tests: headless plotting, no hub downloads, repository paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before any test imports matplotlib or datasets: draw without a display, never try to reach a hub.
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_root() -> Path:
    """The repository's root folder (where _toc.yml and the chapter folders are)."""
    return REPO_ROOT


@pytest.fixture
def restore_torch_state():
    """Undo the process-wide torch settings a test changes (thread count, deterministic algorithms, RNG)."""
    import torch

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    rng = torch.get_rng_state()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.set_rng_state(rng)
