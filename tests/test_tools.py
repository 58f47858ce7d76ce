"""The build and check tools of `make book` / `make test` (tools/), the toc, and the nbval sanitize patterns."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import browser_check  # noqa: E402
import check_notebooks  # noqa: E402
import run_stages  # noqa: E402
import toc  # noqa: E402

PARTS = ["manual_calc", "transformer", "finetuning", "reasoning", "diffusion"]  # the book order of the parts
PART1 = ["00_introduction", "01_tokenization_embeddings", "02_qkv_projections", "03_attention",
         "04_multi_head_attention", "05_feed_forward", "06_layer_norm", "07_cross_entropy_loss", "08_loss_gradient",
         "09_backpropagation", "10_adamw"]
PART2 = ["00_introduction", "01_tokens_and_positions", "02_attention", "03_multi_head_attention", "04_feed_forward",
         "05_transformer_block", "06_complete_model", "07_training", "08_generation", "09_kv_cache",
         "10_interpretability", "11_breaking_things"]


# --- the table of contents ------------------------------------------------------------------------------------


def test_toc_lists_every_chapter_in_book_order():
    """Parts 1 and 2 are complete; a later part's chapters are listed, in file order, exactly when they exist."""
    chapters = [str(p.relative_to(ROOT)) for p in toc.chapter_stems()]
    on_disk = [f"{d}/{p.stem}" for d in PARTS for p in sorted((ROOT / d).glob("[0-9][0-9]_*.py"))]
    assert chapters == on_disk
    assert chapters[: len(PART1) + len(PART2)] == [f"manual_calc/{c}" for c in PART1] + [
        f"transformer/{c}" for c in PART2
    ]


def test_toc_front_and_back_matter_exist():
    files = toc.toc_files()
    assert files[0] == "book/intro"
    matter = [f for f in files if f.startswith("book/")]
    assert matter == ["book/intro", "book/setup", "book/notation", "book/bibliography"]
    for f in matter:
        assert (ROOT / f"{f}.md").is_file(), f"{f}.md missing"


def test_toc_parts_have_no_placeholders():
    """A part is in the toc only with real chapters: every listed file is an executed notebook pair, and a part
    starts at its introduction (00) with no gap in the numbers."""
    for folder in PARTS:
        listed = [p for p in toc.chapter_stems() if p.parent.name == folder]
        if not listed:
            continue
        numbers = [int(p.name[:2]) for p in listed]
        assert numbers == list(range(len(numbers))), f"{folder}: chapter numbers {numbers} have a gap"
        for stem in listed:
            assert stem.with_suffix(".py").is_file() and stem.with_suffix(".ipynb").is_file(), stem


def test_page_urls_follow_toc():
    assert toc.page_urls()[:2] == ["book/intro.html", "book/setup.html"]
    assert "manual_calc/03_attention.html" in toc.page_urls()


def test_toc_rejects_a_file_without_root(tmp_path):
    bad = tmp_path / "_toc.yml"
    bad.write_text("format: jb-book\nparts: []\n")
    with pytest.raises(ValueError, match="no 'root:' key"):
        toc.toc_files(bad)


# --- stored outputs: one complete, in-order, error-free execution ---------------------------------------------


def executed_notebook(counts, error_at=None):
    """A notebook whose code cells carry the given execution counts (None: not run)."""
    cells = [new_markdown_cell("# Title")]
    for i, count in enumerate(counts):
        cell = new_code_cell(f"x = {i}\nx", execution_count=count)
        if count is not None:
            cell.outputs = [new_output("execute_result", data={"text/plain": str(i)}, execution_count=count)]
        if i == error_at:
            cell.outputs = [new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])]
        cells.append(cell)
    return new_notebook(cells=cells)


def test_complete_execution_passes():
    assert check_notebooks.execution_problems(executed_notebook([1, 2, 3]), "nb") == []


def test_empty_code_cells_are_not_counted():
    nb = executed_notebook([1, 2])
    nb.cells.insert(2, new_code_cell("", execution_count=None))
    assert check_notebooks.execution_problems(nb, "nb") == []


@pytest.mark.parametrize("counts, message", [
    ([None, None], "not executed"),
    ([1, 3, 4], "execution count 3, expected 2"),
    ([2, 3], "execution count 2, expected 1"),
    ([1, 2, None], "execution count None, expected 3"),
    ([1, 1], "execution count 1, expected 2"),
])
def test_partial_or_out_of_order_execution_fails(counts, message):
    problems = check_notebooks.execution_problems(executed_notebook(counts), "nb")
    assert len(problems) == 1 and message in problems[0], problems


def test_stored_error_fails():
    problems = check_notebooks.execution_problems(executed_notebook([1, 2], error_at=1), "nb")
    assert problems == ["nb: code cell 2 stored an error: ZeroDivisionError: division by zero"]


def test_result_from_another_execution_fails():
    nb = executed_notebook([1, 2])
    nb.cells[2].outputs[0]["execution_count"] = 7
    assert "result from execution 7, not 2" in check_notebooks.execution_problems(nb, "nb")[0]


# --- .py / .ipynb pairs -----------------------------------------------------------------------------------------


def write_pair(folder: Path, name: str = "00_demo") -> tuple[Path, Path]:
    """A chapter pair as `jupytext --set-formats ipynb,py:percent` writes it."""
    nb = executed_notebook([1, 2])
    nb.metadata["jupytext"] = {"formats": "ipynb,py:percent"}
    ipynb, py = folder / f"{name}.ipynb", folder / f"{name}.py"
    nbformat.write(nb, ipynb)
    jupytext.write(nb, py, fmt="py:percent")
    return py, ipynb


def test_pair_in_sync(tmp_path):
    py, ipynb = write_pair(tmp_path)
    assert check_notebooks.pair_problems(py, ipynb) == []


def test_edited_source_is_out_of_sync(tmp_path):
    py, ipynb = write_pair(tmp_path)
    py.write_text(py.read_text().replace("x = 1", "x = 100"))
    problems = check_notebooks.pair_problems(py, ipynb)
    assert len(problems) == 1 and "out of sync" in problems[0] and "make sync" in problems[0]


def test_added_cell_is_out_of_sync(tmp_path):
    py, ipynb = write_pair(tmp_path)
    py.write_text(py.read_text() + "\n# %%\nprint('new')\n")
    assert check_notebooks.pair_problems(py, ipynb)


def test_layout_reports_missing_and_unlisted_files(tmp_path):
    (tmp_path / "manual_calc").mkdir()
    write_pair(tmp_path / "manual_calc", "00_listed")
    write_pair(tmp_path / "manual_calc", "01_unlisted")
    (tmp_path / "manual_calc" / "02_half.py").write_text("# %%\n")
    stems = [tmp_path / "manual_calc" / "00_listed", tmp_path / "manual_calc" / "02_half"]
    problems = check_notebooks.layout_problems(stems, root=tmp_path)
    assert any("02_half.ipynb" in p and "missing" in p for p in problems), problems
    assert sum("01_unlisted" in p and "does not list" in p for p in problems) == 2, problems
    assert not any("00_listed" in p for p in problems), problems


def test_execute_runs_a_notebook_in_place(tmp_path):
    """`make execute` / `make book` execution: counts 1..n written atomically, in a fresh kernel."""
    nb = new_notebook(cells=[new_markdown_cell("# T"), new_code_cell("import os\nx = 6 * 7"), new_code_cell(""),
                             new_code_cell("print(x)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    check_notebooks.execute(path, timeout=120)
    done = nbformat.read(path, as_version=4)
    assert check_notebooks.execution_problems(done, "nb") == []
    assert done.cells[3].outputs[0]["text"] == "42\n"
    assert len(done.cells) == 4, "the numeric-profile probe cell is removed again"
    assert done.metadata["insideout"]["numerics"] == {"torch_used": False}


def test_execute_failure_leaves_the_file_untouched(tmp_path):
    nb = new_notebook(cells=[new_code_cell("1 / 0")])
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    before = path.read_text()
    with pytest.raises(Exception, match="ZeroDivisionError"):
        check_notebooks.execute(path, timeout=120)
    assert path.read_text() == before


# --- nbval sanitize patterns -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sanitize():
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((ROOT / "tests" / "nbval_sanitize.cfg").read_text())
    assert len(patterns) >= 5, "the sanitize file's patterns were not parsed"

    def apply(text: str) -> str:
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    return apply


@pytest.mark.parametrize("varying", [
    ("step 100: 12.3 s", "step 100: 9.87 s"),
    ("took 0.8s", "took 1.25s"),
    ("forward 45 ms, backward 120 µs", "forward 51 ms, backward 98 µs"),
    ("11,634 tokens/s", "9,002 tokens/s"),
    ("3.5k tok/s", "4.1k tok/s"),
    ("100%|##########| 50/50 [00:12<00:00,  3.96it/s]", "100%|##########| 50/50 [00:09<00:00,  5.21it/s]"),
    ("train: 100%|###| 20/20 [01:02:03<00:00, 12.01s/it, loss=2.31]",
     "train: 100%|###| 20/20 [00:59:03<00:00, 10.50s/it, loss=2.31]"),
    ("<Foo object at 0x7f3a2c1b9d30>", "<Foo object at 0x7f00aa11bb22>"),
    ("finished 2025-11-30 09:14:03", "finished 2026-01-02 23:59:59"),
    ("/work/main/.venv/lib/python3.11/site-packages/torch/nn/functional.py:12: UserWarning: x",
     "/home/reader/env/lib/python3.11/site-packages/torch/nn/functional.py:12: UserWarning: x"),
])
def test_sanitize_masks_what_must_vary(sanitize, varying):
    first, second = varying
    assert sanitize(first) == sanitize(second), (sanitize(first), sanitize(second))


@pytest.mark.parametrize("deterministic", [
    "loss 2.345678", "val loss 1.9876 nats/token", "parameters: 1,234,567", "d_model 16, 2 heads of 8",
    "10 steps", "KV-cache: 393216 bytes", "tensor([0.1234, 0.5678])", "lr 3.0e-04", "top-5 sampling",
    "100%|##########| 50/50 [00:12<00:00,  3.96it/s, loss=2.31]",
])
def test_sanitize_keeps_deterministic_numbers(sanitize, deterministic):
    kept = sanitize(deterministic)
    for number in re.findall(r"loss=2\.31|2\.345678|1\.9876|1,234,567|393216|0\.1234|3\.0e-04|16|top-5|10 steps",
                             deterministic):
        assert number in kept, (deterministic, kept)


def test_sanitize_changes_a_loss_difference_into_a_failure(sanitize):
    assert sanitize("loss 2.3456 after 1.2 s") != sanitize("loss 2.3457 after 1.2 s")


# --- browser check helpers --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, raw", [
    (r"the score \(q \cdot k\) is", True), (r"display \[x\]", True), ("a $$x$$ b", True),
    ("The answer is $x = 42$.", True), ("$x$", True), ("costs $5 and $6", False), ("plain text", False),
])
def test_raw_tex_detection(text, raw):
    assert bool(browser_check.raw_tex_snippets(text)) is raw


def test_page_problems_reports_untypeset_math_images_and_launch_links():
    state = {"mathCount": 3, "mathjax": True, "untypeset": ["x^2"], "merrors": ["Undefined control sequence"],
             "text": "ok", "images": [{"src": "a.png", "ok": True}, {"src": "b.png", "ok": False}],
             "links": ["https://colab.research.google.com/github/x"]}
    problems = browser_check.page_problems(state, is_notebook=True)
    assert any("1 of 3 math elements not typeset" in p for p in problems)
    assert any("TeX errors" in p for p in problems)
    assert any("image not decoded: b.png" in p for p in problems)
    assert any("mybinder.org" in p for p in problems)
    assert not any("colab" in p for p in problems)
    clean = dict(state, untypeset=[], merrors=[], images=[], links=["https://colab.research.google.com/x",
                                                                    "https://mybinder.org/v2/gh/x"])
    assert browser_check.page_problems(clean, is_notebook=True) == []


def test_screenshot_names():
    assert browser_check.screenshot_name("manual_calc/03_attention.html") == "manual_calc__03_attention.png"


def test_local_server_serves_the_site(tmp_path):
    import urllib.request

    (tmp_path / "index.html").write_text("<p>hello</p>")
    server, base = browser_check.serve(tmp_path)
    try:
        assert base.startswith("http://127.0.0.1:")
        assert urllib.request.urlopen(base + "index.html", timeout=10).read() == b"<p>hello</p>"
    finally:
        server.shutdown()


# --- the stage runner of `make test` ---------------------------------------------------------------------------


def test_stage_runner_times_every_stage(capsys):
    assert run_stages.run(["one", "two"], skip=[], make="true") == 0
    out = capsys.readouterr().out
    assert re.search(r"^one +ok +\d+\.\d$", out, re.M) and re.search(r"^two +ok +\d+\.\d$", out, re.M)
    assert "All stages passed." in out


def test_stage_runner_stops_at_a_failure(capsys):
    assert run_stages.run(["one", "two"], skip=[], make="false") == 1
    out = capsys.readouterr().out
    assert re.search(r"^one +FAILED \(exit 1\)", out, re.M) and re.search(r"^two +not run", out, re.M)
    assert "FAILED at stage one" in out


def test_stage_runner_reports_a_skip_loudly(capsys):
    assert run_stages.run(["one", "two"], skip=["two"], make="true") == 0
    out = capsys.readouterr().out
    assert "SKIPPED: two" in out and "NOT COMPLETE: skipped two" in out


# --- the Makefile ----------------------------------------------------------------------------------------------


def test_make_test_without_chromium_says_how_to_install_or_skip():
    result = subprocess.run(["make", "--no-print-directory", "check-chromium", "CHROMIUM=/nonexistent/chromium"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    assert "apt-get install -y chromium" in result.stderr and "make test SKIP_BROWSER=1" in result.stderr


def test_makefile_exports_the_offline_environment():
    result = subprocess.run(["make", "--no-print-directory", "-pn", "help"], cwd=ROOT, capture_output=True,
                            text=True)
    for line in ("INSIDEOUT_CACHE := " + str(ROOT / ".cache"), "TIKTOKEN_CACHE_DIR := " + str(ROOT / ".cache/tiktoken"),
                 "HF_DATASETS_OFFLINE := 1", "HF_HUB_OFFLINE := 1", "PYTHONHASHSEED := 0"):
        assert re.search(rf"^(export )?{re.escape(line)}$", result.stdout, re.M), line


# --- the site's Sphinx fix (book/_ext) ------------------------------------------------------------------------


def test_repeated_inline_scripts_are_dropped_once_per_page():
    from sphinx.builders.html._assets import _JavaScript

    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import insideout_site

    thebe = 'const THEBE_JS_URL = "x";'
    scripts = [_JavaScript("doctools.js"), _JavaScript(None, body=thebe), _JavaScript("a.js", defer="defer"),
               _JavaScript("", body=thebe), _JavaScript(None, body="let other = 1;")]
    context = {"script_files": scripts}
    insideout_site.dedupe_scripts(None, "page", "page.html", context, None)
    assert [getattr(s, "attributes", {}).get("body") or s.filename for s in context["script_files"]] == [
        "doctools.js", thebe, "a.js", "let other = 1;"]


# --- the site configuration -------------------------------------------------------------------------------------


def test_site_configuration():
    import json

    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["title"] == "Transformers from the Inside Out"
    assert config["execute"]["execute_notebooks"] == "off", "the site shows stored outputs checked by nbval"
    assert config["only_build_toc_files"] is True
    assert {".venv", "_build", ".cache", "node_modules"} <= set(config["exclude_patterns"])
    assert config["repository"] == {"url": "https://github.com/insideout-course/transformers-inside-out",
                                    "branch": "main", "path_to_book": ""}
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert config["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert config["bibtex_bibfiles"] == ["book/references.bib"]
    assert {"dollarmath", "amsmath", "colon_fence"} <= set(config["parse"]["myst_enable_extensions"])
    sphinx = config["sphinx"]["config"]
    assert "nb_custom_formats" not in sphinx, "a .py notebook format would give each page two sources"
    assert sphinx["html_extra_path"] == ["book/_extra"] and "_static" not in sphinx["mathjax_path"]
    assert sphinx["mathjax_path"] == "../mathjax/tex-mml-chtml.js"
    lock = json.loads((ROOT / "package-lock.json").read_text())
    version = lock["packages"]["node_modules/mathjax"]["version"]
    assert version.startswith("3.") and json.loads((ROOT / "package.json").read_text())["dependencies"] == {
        "mathjax": version}, "MathJax must be pinned to one exact 3.x version"


# --- the numerics guard -----------------------------------------------------------------------------------------


def reference_record(**changes):
    from insideout import utils

    record = {"torch_used": True, "torch": utils.REFERENCE_FINGERPRINT["torch"], "mode": "pinned",
              "capability": "AVX2", "mkl_cbwr": "AVX2,STRICT", "onednn_max_cpu_isa": "AVX2", "mkl_dynamic": "FALSE",
              "omp_dynamic": False, "threads": 2, "fingerprint": utils.REFERENCE_FINGERPRINT["fingerprint"],
              "reference": True}
    record.update(changes)
    return record


def test_numerics_guard_accepts_the_reference_profile_and_pure_python():
    nb = executed_notebook([1])
    nb.metadata["insideout"] = {"numerics": reference_record()}
    assert check_notebooks.numerics_problems(nb, "nb") == []
    nb.metadata["insideout"] = {"numerics": {"torch_used": False}}
    assert check_notebooks.numerics_problems(nb, "nb") == []


@pytest.mark.parametrize("changes,message", [
    ({"capability": "AVX512"}, "capability AVX512"),
    ({"threads": 8}, "8 threads"),
    ({"torch": "2.99.0"}, "torch 2.99.0"),
    ({"mkl_cbwr": ""}, "mkl_cbwr unset"),
    ({"fingerprint": "0" * 16, "reference": False}, "fingerprint"),
])
def test_numerics_guard_refuses_another_profile(changes, message):
    nb = executed_notebook([1])
    nb.metadata["insideout"] = {"numerics": reference_record(**changes)}
    problems = check_notebooks.numerics_problems(nb, "nb")
    assert problems and message in problems[0] and "make execute" in problems[0]


def test_numerics_guard_refuses_a_notebook_without_a_record():
    problems = check_notebooks.numerics_problems(executed_notebook([1]), "nb")
    assert problems and "no record of the numeric profile" in problems[0]


def test_execute_named_rejects_what_is_not_a_chapter_pair(tmp_path, capsys):
    """`execute PATH` may run a pair the toc does not list yet, but refuses a path without its .py source."""
    lonely = tmp_path / "07_lonely.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), lonely)
    assert check_notebooks.main(["execute", str(lonely)]) == 1
    assert "not a chapter pair" in capsys.readouterr().err
