"""Show that each variable of the pinned numeric profile does what it claims on this machine.

    python tools/numerics_check.py

For the pinned profile, then for each variable changed away from it (one at a time), a fresh Python process computes
insideout.utils.fingerprint_parts(): the bits of ten kernels on fixed inputs. The table marks every kernel whose
bits differ from the pinned run. A variable whose removal changes nothing on this CPU is also run with a value that
forces another code path, to show that the library reads it at all. Dynamic threading cannot be shown in bits (it
only acts under load), so the script shows the runtime state it sets instead.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from insideout.utils import NUMERIC_PROFILE_ENV, NUMERICS_ENV  # noqa: E402

PROBE = """
import json, os, sys
import torch, insideout
from insideout import utils
utils.fix_threads(int(os.environ.get("PROBE_THREADS", "2")))
gomp = utils._libgomp()
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "parts": utils.fingerprint_parts(),
                  "omp_dynamic_env": os.environ.get("OMP_DYNAMIC"),
                  "omp_dynamic": gomp.omp_get_dynamic() if gomp is not None else None}))
"""

# (label, environment changes relative to the pinned profile; None removes the variable)
VARIANTS = [
    ("pinned profile", {}),
    ("ATEN_CPU_CAPABILITY unset", {"ATEN_CPU_CAPABILITY": None}),
    ("ATEN_CPU_CAPABILITY=default", {"ATEN_CPU_CAPABILITY": "default"}),
    ("MKL_CBWR unset", {"MKL_CBWR": None}),
    ("MKL_CBWR=COMPATIBLE", {"MKL_CBWR": "COMPATIBLE"}),
    ("ONEDNN_MAX_CPU_ISA unset", {"ONEDNN_MAX_CPU_ISA": None}),
    ("ONEDNN_MAX_CPU_ISA=SSE41", {"ONEDNN_MAX_CPU_ISA": "SSE41"}),
    ("1 thread instead of 2", {"PROBE_THREADS": "1"}),
    ("everything native", {NUMERICS_ENV: "native", **{k: None for k in NUMERIC_PROFILE_ENV}}),
]


def probe(changes: dict[str, str | None]) -> dict:
    env = dict(os.environ)
    env.update(NUMERIC_PROFILE_ENV)
    env.pop(NUMERICS_ENV, None)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    if NUMERICS_ENV not in changes:
        # insideout re-pins on import; to see a variable's absence, the pin must leave it alone
        env[NUMERICS_ENV] = "native" if changes else "pinned"
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    flags = ""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    vector = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags.split()]
    print(f"CPU: {model or platform.processor()} ({platform.machine()}), flags: {', '.join(vector) or 'none'}")
    reference = probe({})
    kernels = list(reference["parts"])
    print(f"pinned profile: {NUMERIC_PROFILE_ENV}; ATen capability {reference['capability']}\n")
    width = max(len(label) for label, _ in VARIANTS)
    print(f"{'variant':<{width}}  {'ATen':<8} " + " ".join(f"{k:>10}" for k in kernels))
    for label, changes in VARIANTS:
        result = reference if not changes else probe(changes)
        marks = ["same" if result["parts"][k] == reference["parts"][k] else "DIFFERS" for k in kernels]
        print(f"{label:<{width}}  {result['capability']:<8} " + " ".join(f"{m:>10}" for m in marks))
    on = probe({"OMP_DYNAMIC": "TRUE", NUMERICS_ENV: "native"})
    print(f"\nOMP_DYNAMIC=TRUE in the environment: omp_get_dynamic() = {on['omp_dynamic']} after insideout's "
          f"fix_threads() (pinned run: {reference['omp_dynamic']}); MKL's dynamic mode is switched off the same way "
          "with MKL_Set_Dynamic(0). Their effect, fewer threads under load, changes bits only on a loaded machine.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
