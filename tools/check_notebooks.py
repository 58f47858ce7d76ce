"""Check, list, sync and execute the course's chapter notebooks, in book order (the order of `_toc.yml`).

    python tools/check_notebooks.py check            # every pair in sync, every .ipynb one complete execution
    python tools/check_notebooks.py list             # the chapter .ipynb paths in book order (one per line)
    python tools/check_notebooks.py execute --stale  # execute only notebooks whose outputs are not a complete run
    python tools/check_notebooks.py execute          # re-execute every notebook in place
    python tools/check_notebooks.py sync             # jupytext --sync every pair

A chapter is a jupytext percent-format `NN_name.py` (the source) paired with `NN_name.ipynb` (the executed outputs
the site shows). "One complete, in-order, error-free execution" means: the non-empty code cells carry execution
counts 1, 2, ..., n in order (a fresh kernel, every cell run once, top to bottom), empty code cells carry none, and
no cell holds an error output.

Numerics guard: `execute` records in each notebook's metadata (`insideout.numerics`) the numeric profile its kernel
ran under (torch version, ATen capability, MKL/oneDNN settings, threads, kernel fingerprint; see
insideout/utils.py). `check` refuses a notebook that used PyTorch under any other profile than the pinned reference
one, or that carries no record, because its stored outputs would not re-execute identically on another machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jupytext
import nbformat
from jupytext.compare import NotebookDifference, compare_notebooks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from toc import CHAPTER_DIRS, ROOT, TOC, chapter_stems  # noqa: E402

PAIR_FORMAT = "py:percent"


def rel(path: Path) -> str:
    """Path relative to the repository root when possible (for messages)."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def layout_problems(stems: list[Path], root: Path = ROOT) -> list[str]:
    """Toc chapters missing a file of their pair, and chapter files that the toc does not list."""
    problems = []
    for stem in stems:
        for suffix in (".py", ".ipynb"):
            if not stem.with_suffix(suffix).exists():
                problems.append(f"{rel(stem.with_suffix(suffix))}: listed in _toc.yml but missing "
                                f"(create the pair with `jupytext --set-formats ipynb,py:percent {rel(stem)}.py`)")
    listed = {stem.resolve() for stem in stems}
    for folder in CHAPTER_DIRS:
        for path in sorted((root / folder).glob("*")):
            if path.suffix in (".py", ".ipynb") and path.with_suffix("").resolve() not in listed:
                problems.append(f"{rel(path)}: a chapter file that _toc.yml does not list (add it to the toc, "
                                "or it is neither built nor tested)")
    return problems


def pair_problems(py: Path, ipynb: Path) -> list[str]:
    """Differences between the jupytext source and the notebook (cell types, sources, cell metadata)."""
    try:
        nb_py = jupytext.read(py, fmt=PAIR_FORMAT)
        nb_ipynb = jupytext.read(ipynb)
    except Exception as exc:  # unreadable file: report it like any other problem
        return [f"{rel(py)} / {rel(ipynb)}: cannot be read: {exc}"]
    try:
        compare_notebooks(nb_ipynb, nb_py, fmt=PAIR_FORMAT)
    except NotebookDifference as exc:
        first = str(exc).strip().splitlines()
        detail = "\n    ".join(first[:12])
        return [f"{rel(py)} and {rel(ipynb)} are out of sync (run `make sync`, then `make execute`):\n    {detail}"]
    return []


def execution_problems(nb: nbformat.NotebookNode, name: str) -> list[str]:
    """Why the stored outputs are not one complete, in-order, error-free execution (empty list if they are)."""
    problems = []
    expected = 1
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        count = cell.get("execution_count")
        if not cell.source.strip():
            if count is not None or cell.get("outputs"):
                problems.append(f"{name}: empty code cell {index} has an execution count or outputs")
            continue
        if count is None and expected == 1:
            problems.append(f"{name}: not executed (no execution counts): run `make execute`")
            break
        if count != expected:
            problems.append(f"{name}: code cell {index} has execution count {count}, expected {expected} "
                            "(outputs are not from one complete in-order run: `make execute`)")
            break
        expected += 1
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                problems.append(f"{name}: code cell {index} stored an error: {output.get('ename')}: "
                                f"{output.get('evalue')}")
            if output.get("output_type") == "execute_result" and output.get("execution_count") != count:
                problems.append(f"{name}: code cell {index} has a result from execution "
                                f"{output.get('execution_count')}, not {count}")
    return problems


def numerics_problems(nb: nbformat.NotebookNode, name: str) -> list[str]:
    """Why the recorded numeric profile of a notebook is not the pinned reference one (empty list if it is)."""
    from insideout.utils import profile_problems

    record = nb.metadata.get("insideout", {}).get("numerics")
    if record is None:
        return [f"{name}: no record of the numeric profile it was executed under: run `make execute "
                f"NOTEBOOKS={name}`"]
    if not record.get("torch_used"):
        return []  # pure Python (Part 1): no PyTorch kernel produced its outputs
    try:
        problems = profile_problems(record)
    except KeyError as exc:
        return [f"{name}: incomplete numeric profile record (missing {exc}): run `make execute NOTEBOOKS={name}`"]
    if problems:
        return [f"{name}: executed under another numeric profile than the pinned one ({'; '.join(problems)}): "
                f"re-execute it with `make execute NOTEBOOKS={name}` on an x86-64 machine with AVX2"]
    return []


def notebook_execution_problems(ipynb: Path) -> list[str]:
    """`execution_problems` and `numerics_problems` for a notebook file."""
    nb = nbformat.read(ipynb, as_version=4)
    problems = execution_problems(nb, rel(ipynb))
    return problems or numerics_problems(nb, rel(ipynb))


# Run in the notebook's own kernel after its last cell: what numeric profile produced the outputs.
PROFILE_PROBE = """\
import json as _json, sys as _sys
_record = {"torch_used": "torch" in _sys.modules}
if _record["torch_used"]:
    import insideout.utils as _utils
    _record.update(_utils.numeric_profile())
print("INSIDEOUT-NUMERICS " + _json.dumps(_record))
"""


def _read_probe(cell: nbformat.NotebookNode) -> dict:
    import json

    for output in cell.get("outputs", []):
        for line in output.get("text", "").splitlines():
            if line.startswith("INSIDEOUT-NUMERICS "):
                return json.loads(line.split(" ", 1)[1])
    raise RuntimeError(f"the numeric-profile probe printed nothing readable: {cell.get('outputs')}")


def check(stems: list[Path]) -> list[str]:
    """All problems of the chapter files: layout, pairing, execution."""
    problems = layout_problems(stems)
    for stem in stems:
        py, ipynb = stem.with_suffix(".py"), stem.with_suffix(".ipynb")
        if py.exists() and ipynb.exists():
            problems += pair_problems(py, ipynb)
            problems += notebook_execution_problems(ipynb)
    return problems


def execute(ipynb: Path, timeout: int = 1800) -> float:
    """Execute a notebook in place in a fresh kernel (cwd: repository root), return the seconds it took.

    Raises nbclient's CellExecutionError (the failing cell and its traceback) on an error; the file is then left
    untouched.
    """
    from nbclient import NotebookClient

    nb = nbformat.read(ipynb, as_version=4)
    kernel = nb.metadata.get("kernelspec", {}).get("name", "python3")
    nb.cells.append(nbformat.v4.new_code_cell(PROFILE_PROBE))  # runs last, in the same kernel; removed below
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, record_timing=False,
                            resources={"metadata": {"path": str(ROOT)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nb.metadata.setdefault("insideout", {})["numerics"] = _read_probe(nb.cells.pop())
    problems = execution_problems(nb, rel(ipynb))
    if problems:
        raise RuntimeError("\n".join(problems))
    tmp = ipynb.with_name(f".{ipynb.name}.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, ipynb)  # atomic: never a half-written notebook
    return seconds


def fail(title: str, problems: list[str]) -> int:
    print(f"\n*** {title}: {len(problems)} problem(s)", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toc", type=Path, default=TOC, help="the table of contents (default: _toc.yml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="pairs in sync and stored outputs from one complete execution")
    sub.add_parser("list", help="print the chapter notebooks in book order")
    ex = sub.add_parser("execute", help="execute notebooks in place, in book order")
    ex.add_argument("--stale", action="store_true", help="only those whose outputs are not a complete execution")
    ex.add_argument("notebooks", nargs="*", type=Path, help="only these (default: every chapter)")
    sub.add_parser("sync", help="jupytext --sync every pair")
    args = parser.parse_args(argv)
    stems = chapter_stems(args.toc)

    if args.command == "list":
        for stem in stems:
            print(rel(stem.with_suffix(".ipynb")))
        return 0

    if args.command == "sync":
        problems = layout_problems(stems)
        if problems:
            return fail("cannot sync", problems)
        from jupytext.cli import jupytext as jupytext_cli

        for stem in stems:
            jupytext_cli(["--sync", str(stem.with_suffix(".py"))])
        return 0

    problems = layout_problems(stems)
    for stem in stems:
        if stem.with_suffix(".py").exists() and stem.with_suffix(".ipynb").exists():
            problems += pair_problems(stem.with_suffix(".py"), stem.with_suffix(".ipynb"))
    if args.command == "check":
        for stem in stems:
            if stem.with_suffix(".ipynb").exists():
                problems += notebook_execution_problems(stem.with_suffix(".ipynb"))
        if problems:
            return fail("notebook check failed", problems)
        print(f"notebook check: {len(stems)} chapters, every pair in sync, every notebook one complete "
              "in-order error-free execution")
        return 0

    # execute. Named notebooks: only their own pairs must be in sync, and a chapter pair that the toc does not list
    # yet (a chapter being written) may be executed too; every notebook: the whole layout must be right first.
    wanted = {p.resolve() for p in args.notebooks}
    if wanted:
        todo = [s.with_suffix(".ipynb") for s in stems if s.with_suffix(".ipynb").resolve() in wanted]
        todo += sorted(p for p in map(Path, args.notebooks) if p.resolve() not in {t.resolve() for t in todo})
        problems = []
        for ipynb in todo:
            py = ipynb.with_suffix(".py")
            if ipynb.suffix != ".ipynb" or not py.exists() or not ipynb.exists():
                problems.append(f"{rel(ipynb)}: not a chapter pair (NN_name.py + NN_name.ipynb)")
            else:
                problems += pair_problems(py, ipynb)
    if problems:
        return fail("not executing: fix these first", problems)
    if not wanted:
        todo = [s.with_suffix(".ipynb") for s in stems]
    if args.stale:
        todo = [p for p in todo if notebook_execution_problems(p)]
        if not todo:
            print("execute: every notebook already holds one complete execution")
    total = 0.0
    for ipynb in todo:
        print(f"execute: {rel(ipynb)} ...", flush=True)
        try:
            seconds = execute(ipynb)
        except Exception as exc:
            return fail(f"{rel(ipynb)} failed to execute", [str(exc)])
        total += seconds
        print(f"execute: {rel(ipynb)} done in {seconds:.1f} s", flush=True)
    if todo:
        print(f"execute: {len(todo)} notebook(s) in {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
