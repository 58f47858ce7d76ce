"""Run `make` stages in order, time each, stop at the first failure, and print a summary table.

    python3 tools/run_stages.py install test-ruff test-pytest ... [--skip test-browser]

Standard library only: it runs before the virtual environment exists.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def run(stages: list[str], skip: list[str], make: str) -> int:
    """Run each stage as `make STAGE`; return 0 if all passed, else the failing stage's exit status."""
    results: list[tuple[str, str, float]] = []
    status = 0
    for stage in stages:
        if stage in skip:
            print(f"\n{'!' * 70}\n!!! SKIPPED: {stage} (explicitly requested)\n{'!' * 70}", flush=True)
            results.append((stage, "SKIPPED", 0.0))
            continue
        print(f"\n===== {stage} =====", flush=True)
        start = time.perf_counter()
        code = subprocess.call([make, "--no-print-directory", stage])
        seconds = time.perf_counter() - start
        results.append((stage, "ok" if code == 0 else f"FAILED (exit {code})", seconds))
        if code != 0:
            status = code
            break
    not_run = [s for s in stages if s not in {r[0] for r in results}]
    print("\n===== summary =====")
    print(f"{'stage':<16} {'result':<18} {'seconds':>8}")
    for stage, result, seconds in results:
        print(f"{stage:<16} {result:<18} {seconds:>8.1f}")
    for stage in not_run:
        print(f"{stage:<16} {'not run':<18} {'':>8}")
    print(f"{'total':<16} {'':<18} {sum(r[2] for r in results):>8.1f}")
    skipped = [r[0] for r in results if r[1] == "SKIPPED"]
    if status:
        print(f"\nFAILED at stage {results[-1][0]} (its output is above).")
    elif skipped:
        print(f"\nPassed, but NOT COMPLETE: skipped {', '.join(skipped)}.")
    else:
        print("\nAll stages passed.")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", help="make targets, run in this order")
    parser.add_argument("--skip", action="append", default=[], help="a stage to skip (reported as SKIPPED)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.skip if s not in args.stages]
    if unknown:
        parser.error(f"--skip {unknown[0]!r} is not one of the stages {args.stages}")
    return run(args.stages, args.skip, os.environ.get("MAKE", "make"))


if __name__ == "__main__":
    sys.exit(main())
