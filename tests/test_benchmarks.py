"""The base-recipe benchmark: its recipes are valid, 'new' is the shipped CPU preset, bad arguments get clear errors."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_new_recipe_is_the_cpu_preset():
    from insideout.gpt.presets import model_config, train_config

    br = _load("base_recipe")
    mc, tc = br.recipe_configs("new")
    assert mc == model_config("cpu") and tc == train_config("cpu")
    old_mc, old_tc = br.recipe_configs("old")
    assert old_mc.position == "learned" and (old_tc.batch_size, old_tc.max_steps) == (8, 520)


def test_shortened_recipe_scales_warmup():
    br = _load("base_recipe")
    _, tc = br.recipe_configs("new", max_steps=10)
    assert tc.max_steps == 10 and 1 <= tc.warmup_steps < 10


@pytest.mark.parametrize("text, match", [("old,bogus", "unknown recipe"), ("", "empty"), ("old,old", "twice")])
def test_parse_recipes_rejects_bad_lists(text, match):
    br = _load("base_recipe")
    with pytest.raises(ValueError, match=match):
        br.parse_recipes(text)


def test_bad_arguments_exit_with_a_message(capsys):
    br = _load("base_recipe")
    assert br.main(["--recipes", "old,turbo"]) == 2
    assert "unknown recipe(s) 'turbo'" in capsys.readouterr().err
    assert br.main(["--max-steps", "1"]) == 2
    assert "--max-steps=1" in capsys.readouterr().err
    assert br.main(["--threads", "0"]) == 2
    assert "--threads=0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown recipe"):
        br.recipe_configs("turbo")
