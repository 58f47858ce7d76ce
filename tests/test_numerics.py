"""The pinned numeric profile (insideout.utils.pin_numerics): active under `make test`, reported by setup()."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from insideout import utils

PROBE = "import torch, insideout, json; from insideout import utils; utils.fix_threads(2); " \
        "print(json.dumps(utils.numeric_profile()))"


def run_probe(env_changes: dict[str, str | None]) -> dict:
    import json

    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_make_exports_the_profile_and_this_process_runs_under_it():
    """Under `make test` every variable is exported, and this pytest process has the reference fingerprint."""
    if not utils.cpu_has_avx2():
        assert utils.numeric_profile()["mode"] == "native"  # nothing to pin on this CPU; setup() warns instead
        return
    for name, value in utils.NUMERIC_PROFILE_ENV.items():
        assert os.environ.get(name) == value, f"{name} is {os.environ.get(name)!r}, pinned {value!r}"
    threads = torch.get_num_threads()
    try:
        utils.fix_threads(2)
        profile = utils.numeric_profile()
    finally:
        torch.set_num_threads(threads)
    assert utils.profile_problems(profile) == [], profile
    assert profile["capability"] == "AVX2" and profile["reference"]


def test_importing_insideout_pins_a_fresh_process_without_any_variable_set():
    profile = run_probe({**{k: None for k in utils.NUMERIC_PROFILE_ENV}, utils.NUMERICS_ENV: None})
    if not utils.cpu_has_avx2():  # ARM, Apple silicon: no profile to pin, reported as such
        assert profile["mode"] == "native" and not profile["reference"]
        return
    assert profile["mode"] == "pinned" and profile["capability"] == "AVX2"
    assert profile["fingerprint"] == utils.REFERENCE_FINGERPRINT["fingerprint"]


def test_native_mode_is_reported_as_not_the_reference():
    profile = run_probe({**{k: None for k in utils.NUMERIC_PROFILE_ENV}, utils.NUMERICS_ENV: "native"})
    assert profile["mode"] == "native"
    assert utils.profile_problems(profile), "native numerics must not pass as the reference profile"


def test_a_foreign_profile_is_named_in_the_problems():
    profile = {"torch": "2.99.0", "mode": "native", "capability": "AVX512", "mkl_cbwr": "", "onednn_max_cpu_isa": "",
               "mkl_dynamic": "", "omp_dynamic": True, "threads": 4, "fingerprint": "0" * 16, "reference": False}
    text = "; ".join(utils.profile_problems(profile))
    for part in ("torch 2.99.0", "4 threads", "capability AVX512", "mkl_cbwr unset", "OpenMP dynamic"):
        assert part in text


def test_setup_warns_when_not_under_the_reference_profile(monkeypatch, capsys, restore_torch_state):
    monkeypatch.setattr(utils, "numeric_profile", lambda: {
        "torch": torch.__version__, "mode": "native", "capability": "DEFAULT", "mkl_cbwr": "",
        "onednn_max_cpu_isa": "", "mkl_dynamic": "", "omp_dynamic": False, "threads": 2,
        "fingerprint": "f" * 16, "reference": False})
    with pytest.warns(UserWarning, match="pinned numeric profile.*capability DEFAULT"):
        utils.setup()
    assert "(not the reference profile)" in capsys.readouterr().out


def test_unknown_numerics_mode_is_refused(monkeypatch):
    monkeypatch.setenv(utils.NUMERICS_ENV, "fast")
    with pytest.raises(ValueError, match=r"INSIDEOUT_NUMERICS='fast'.*pinned, native"):
        utils.numerics_mode()


def test_fix_threads_rejects_nonsense(restore_torch_state):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="threads="):
            utils.fix_threads(bad)
