"""Part 1 is pure Python: its notebooks import only the standard library and the course's pure-Python modules."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "manual_calc").glob("*.py"))
ALLOWED_COURSE = {"insideout.manual", "insideout.display"}
NAMES = ["00_introduction", "01_tokenization_embeddings", "02_qkv_projections", "03_attention",
         "04_multi_head_attention", "05_feed_forward", "06_layer_norm", "07_cross_entropy_loss",
         "08_loss_gradient", "09_backpropagation", "10_adamw"]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import inside the package
                found.append("." * node.level + (node.module or ""))
            else:
                found += [node.module] if node.module != "insideout" else [f"insideout.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            found.append("__import__")
    return found


def _allowed(module: str) -> bool:
    top = module.split(".")[0]
    if top == "insideout":
        return any(module == m or module.startswith(m + ".") for m in ALLOWED_COURSE)
    return top in sys.stdlib_module_names


def test_all_chapters_exist():
    assert [p.stem for p in CHAPTERS] == NAMES
    for p in CHAPTERS:
        assert p.with_suffix(".ipynb").exists(), f"{p.name} has no paired notebook"


def test_chapters_import_only_stdlib_and_pure_python_course_modules():
    for path in CHAPTERS:
        bad = [m for m in _imports(path) if not _allowed(m)]
        assert not bad, f"{path.name} imports {bad}; Part 1 may use only the standard library and {ALLOWED_COURSE}"


def test_manual_package_and_display_are_pure_python():
    files = sorted((ROOT / "insideout" / "manual").glob("*.py")) + [ROOT / "insideout" / "display.py"]
    assert len(files) > 2
    for path in files:
        for module in _imports(path):
            if module.startswith("."):
                continue
            top = module.split(".")[0]
            assert top in sys.stdlib_module_names, f"{path.name} imports {module}: only the standard library is allowed"
    assert "__import__" not in sum((_imports(p) for p in files), [])


def test_the_checker_would_catch_a_forbidden_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import numpy as np\nfrom insideout.gpt.model import GPT\nfrom insideout import manual\n")
    assert [m for m in _imports(bad) if not _allowed(m)] == ["numpy", "insideout.gpt.model"]
