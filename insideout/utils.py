"""Pinned numerics, seeding, determinism, device selection and the cpu/gpu preset switch shared by every chapter.

Pinned numerics. PyTorch's CPU wheel picks its kernels by what the CPU can do: ATen's vectorised kernels (softmax,
LayerNorm, GELU, random numbers, ...) by CPU capability, MKL's matrix multiplies and oneDNN's convolutions by
instruction set. Two machines that pick differently add the same numbers in a different order, and the low bits of
results differ; a training run grows that into a visible difference in its losses. ``pin_numerics()`` (run when
``insideout`` is imported, before the first tensor operation) selects one profile that every x86-64 CPU of the last
decade can run, so the stored outputs re-execute bit for bit on any of them:

* ``ATEN_CPU_CAPABILITY=avx2`` — ATen's AVX2 kernels, also on AVX-512 machines;
* ``MKL_CBWR=AVX2,STRICT`` — MKL's conditional numerical reproducibility: the AVX2 code path, strictly;
* ``ONEDNN_MAX_CPU_ISA=AVX2`` — oneDNN (convolutions) no further than AVX2;
* ``MKL_DYNAMIC=FALSE``, ``OMP_DYNAMIC=FALSE`` — no thread counts adjusted to the machine's load;
* a fixed thread count (``setup()``/``seed_everything()``: 2).

``numeric_profile()`` reports what is in force, including a fingerprint: the bits of a few kernels every chapter
uses, compared with those recorded on the reference machine. ``INSIDEOUT_NUMERICS=native`` opts out (the fastest
kernels of your CPU; results then differ in the last bits from the stored ones).
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import os
import platform
import random
import warnings
from pathlib import Path

PRESETS = ("cpu", "gpu", "gpt2-small")  # the one list of presets (insideout.gpt.presets defines each)
PRESET_ENV = "INSIDEOUT_PRESET"
DEVICE_ENV = "INSIDEOUT_DEVICE"
CACHE_ENV = "INSIDEOUT_CACHE"
NUMERICS_ENV = "INSIDEOUT_NUMERICS"
NUMERICS_MODES = ("pinned", "native")
DEFAULT_THREADS = 2

# The pinned profile: environment variables read by ATen, MKL, oneDNN and OpenMP when they first run.
NUMERIC_PROFILE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
}
# The fingerprint of the pinned profile (see numeric_fingerprint), recorded on the reference machines: an AMD EPYC
# with AVX-512 and one with AVX2 only give the same bits under the pin (torch 2.13.0 CPU wheel, 2 threads).
REFERENCE_FINGERPRINT = {"torch": "2.13.0+cpu", "threads": DEFAULT_THREADS, "fingerprint": "a22dceab366aeacf"}

_PIN_STATE: dict = {"applied": False, "reason": "pin_numerics() has not run", "overridden": {}}


def cpu_name() -> str:
    """The processor's model name from /proc/cpuinfo (Linux), else what ``platform`` knows (for benchmark records)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numerics_mode() -> str:
    """'pinned' (default) or 'native', from $INSIDEOUT_NUMERICS."""
    value = os.environ.get(NUMERICS_ENV, "pinned").strip().lower()
    if value not in NUMERICS_MODES:
        raise ValueError(f"${NUMERICS_ENV}={value!r}: choose one of {', '.join(NUMERICS_MODES)}")
    return value


def cpu_has_avx2() -> bool:
    """Whether this is an x86-64 CPU with AVX2 (the pinned profile needs it)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx2" in line.split()
    except OSError:
        pass
    try:  # macOS on Intel
        import subprocess

        out = subprocess.run(["sysctl", "-n", "machdep.cpu.leaf7_features"], capture_output=True, text=True,
                             timeout=5).stdout
        return "AVX2" in out.upper()
    except (OSError, ValueError):
        return False


def pin_numerics() -> dict:
    """Set the pinned profile's environment variables (before the first tensor op); return what was done.

    Runs once when ``insideout`` is imported. Does nothing with ``INSIDEOUT_NUMERICS=native`` or on a CPU without
    AVX2 (Apple silicon, ARM servers): ``setup()`` then says that the stored outputs may differ in their last bits.
    A variable already set to another value is overridden and reported by ``setup()``.
    """
    try:
        mode = numerics_mode()
    except ValueError as exc:
        _PIN_STATE.update(applied=False, reason=str(exc))
        return dict(_PIN_STATE)
    if mode == "native":
        _PIN_STATE.update(applied=False, reason=f"${NUMERICS_ENV}=native: the CPU's own fastest kernels")
        return dict(_PIN_STATE)
    if not cpu_has_avx2():
        _PIN_STATE.update(applied=False, reason=f"no x86-64 CPU with AVX2 ({platform.machine()}): the pinned "
                                                 "profile does not exist here")
        return dict(_PIN_STATE)
    overridden = {}
    for name, value in NUMERIC_PROFILE_ENV.items():
        old = os.environ.get(name)
        if old is not None and old != value:
            overridden[name] = old
        os.environ[name] = value
    _PIN_STATE.update(applied=True, reason="", overridden=overridden)
    return dict(_PIN_STATE)


def _libgomp():
    """torch's OpenMP runtime (libgomp) if it is loaded, for omp_get/set_dynamic; None otherwise."""
    try:
        import torch

        path = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
        return ctypes.CDLL(str(path), mode=4) if path.is_file() else None  # 4 = RTLD_NOLOAD: only if loaded
    except OSError:
        return None


def fix_threads(threads: int = DEFAULT_THREADS) -> None:
    """Fix torch's CPU thread count and switch off dynamic thread adjustment in OpenMP and MKL."""
    import torch

    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r}: must be a positive integer or None")
    torch.set_num_threads(threads)
    gomp = _libgomp()
    if gomp is not None:
        gomp.omp_set_dynamic(0)
    try:  # MKL is linked into libtorch_cpu; its setter is exported there
        lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
        if lib.is_file():
            ctypes.CDLL(str(lib), mode=4).MKL_Set_Dynamic(0)  # the C interface (the lower-case one takes a pointer)
    except (OSError, AttributeError):
        pass


def fingerprint_parts() -> dict[str, str]:
    """Per kernel, 12 hex digits of a hash over the bits of its result on fixed inputs (see numeric_fingerprint)."""
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(1234)
    f32 = torch.float32  # explicit everywhere: the result must not depend on torch's default dtype

    def bits(t: torch.Tensor) -> str:
        return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()[:12]

    parts = {}
    x = torch.randn(8, 48, 64, generator=g, dtype=f32)  # (batch, seq, d)
    w = torch.randn(192, 64, generator=g, dtype=f32) * 0.1
    parts["randn"] = bits(x)
    ln = F.layer_norm(x, (64,))
    parts["layer_norm"] = bits(ln)
    h = F.linear(ln, w)  # (8, 48, 192)
    parts["linear"] = bits(h)
    parts["gelu"] = bits(F.gelu(h, approximate="tanh"))
    parts["softmax"] = bits(torch.softmax(h, dim=-1))
    parts["bmm"] = bits(torch.bmm(x, x.transpose(1, 2)))
    q, k, v = h.view(8, 48, 3, 4, 16).permute(2, 0, 3, 1, 4)  # each (batch, head, seq, d_head)
    parts["sdpa"] = bits(F.scaled_dot_product_attention(q, k, v, is_causal=True))
    img = torch.randn(8, 16, 24, 24, generator=g, dtype=f32)  # (batch, channels, height, width)
    parts["conv2d"] = bits(F.conv2d(img, torch.randn(32, 16, 3, 3, generator=g, dtype=f32) * 0.1, padding=1))
    parts["sum"] = bits(x.sum(dim=(0, 1)))
    p = torch.nn.Parameter(w.clone())
    opt = torch.optim.AdamW([p], lr=1e-2)
    p.grad = torch.tanh(w)
    opt.step()
    parts["adamw"] = bits(p)
    return parts


def numeric_fingerprint() -> str:
    """16 hex digits over the bits of kernels every chapter uses, computed on fixed inputs.

    ATen's normal sampler, LayerNorm, a Linear and a batched matmul (MKL), GELU, softmax, causal scaled-dot-product
    attention, a convolution (oneDNN), a reduction and one AdamW step. Equal fingerprints mean these kernels round
    identically; the global RNG is not touched.
    """
    parts = fingerprint_parts()
    return hashlib.sha256("".join(f"{k}={v};" for k, v in parts.items()).encode()).hexdigest()[:16]


def numeric_profile() -> dict:
    """What is in force now: torch version, ATen capability, MKL/oneDNN settings, dynamic threads, threads, bits."""
    import torch

    gomp = _libgomp()
    profile = {
        "torch": torch.__version__,
        "mode": "pinned" if _PIN_STATE["applied"] else "native",
        "capability": torch.backends.cpu.get_cpu_capability(),
        "mkl_cbwr": os.environ.get("MKL_CBWR", ""),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "mkl_dynamic": os.environ.get("MKL_DYNAMIC", ""),
        "omp_dynamic": bool(gomp.omp_get_dynamic()) if gomp is not None else None,
        "threads": torch.get_num_threads(),
        "fingerprint": numeric_fingerprint(),
    }
    profile["reference"] = (profile["fingerprint"] == REFERENCE_FINGERPRINT["fingerprint"]
                            and profile["torch"] == REFERENCE_FINGERPRINT["torch"]
                            and profile["threads"] == REFERENCE_FINGERPRINT["threads"])
    return profile


def profile_problems(profile: dict) -> list[str]:
    """Why a profile is not the reference one (empty if it is)."""
    problems = []
    if profile["torch"] != REFERENCE_FINGERPRINT["torch"]:
        problems.append(f"torch {profile['torch']} (the stored outputs come from {REFERENCE_FINGERPRINT['torch']})")
    if profile["threads"] != REFERENCE_FINGERPRINT["threads"]:
        problems.append(f"{profile['threads']} threads (the stored outputs use {REFERENCE_FINGERPRINT['threads']})")
    expected = {"capability": "AVX2", "mkl_cbwr": NUMERIC_PROFILE_ENV["MKL_CBWR"],
                "onednn_max_cpu_isa": NUMERIC_PROFILE_ENV["ONEDNN_MAX_CPU_ISA"],
                "mkl_dynamic": NUMERIC_PROFILE_ENV["MKL_DYNAMIC"]}
    for key, value in expected.items():
        if profile[key] != value:
            problems.append(f"{key} {profile[key] or 'unset'} (pinned: {value})")
    if profile["omp_dynamic"]:
        problems.append("OpenMP dynamic threads on")
    if not problems and not profile["reference"]:
        problems.append(f"fingerprint {profile['fingerprint']} differs from the reference "
                        f"{REFERENCE_FINGERPRINT['fingerprint']}: these kernels round differently here")
    return problems


def describe_numerics(profile: dict | None = None) -> str:
    """One line for the first cell of a chapter: the profile in force and whether it is the reference one."""
    profile = numeric_profile() if profile is None else profile
    problems = profile_problems(profile)
    head = (f"numerics: {profile['mode']} | ATen {profile['capability']} | MKL_CBWR {profile['mkl_cbwr'] or 'unset'}"
            f" | oneDNN {profile['onednn_max_cpu_isa'] or 'native'} | fingerprint {profile['fingerprint']}")
    return head + (" = reference" if not problems else " (not the reference profile)")


def seed_everything(seed: int = 0, threads: int | None = DEFAULT_THREADS, deterministic: bool = True) -> None:
    """Seed Python and torch, fix the CPU thread count and ask torch for deterministic kernels.

    The thread count is part of determinism: a float reduction split over 2 or 4 threads adds the
    same numbers in a different order, so the low bits of results change with it.
    """
    random.seed(seed)
    try:
        import torch
    except ImportError:  # the pure-Python part of the course needs no torch
        return
    torch.manual_seed(seed)
    if threads is not None:
        fix_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


def get_preset(preset: str | None = None) -> str:
    """Return the active preset: the argument, else $INSIDEOUT_PRESET, else 'cpu'."""
    value = preset if preset is not None else os.environ.get(PRESET_ENV, "cpu")
    source = "argument" if preset is not None else "$" + PRESET_ENV
    if not isinstance(value, str):
        raise ValueError(f"preset={value!r} (from {source}): choose one of {', '.join(PRESETS)}")
    value = value.strip().lower()
    if value not in PRESETS:
        raise ValueError(
            f"unknown preset {value!r} (from {'argument' if preset is not None else '$' + PRESET_ENV}): "
            f"choose one of {', '.join(PRESETS)}"
        )
    return value


def get_device(device: str | None = None, verbose: bool = False):
    """Pick a torch device: the argument, else $INSIDEOUT_DEVICE, else cuda, then mps, then cpu."""
    import torch

    requested = device if device is not None else os.environ.get(DEVICE_ENV)
    if requested is not None:
        if not isinstance(requested, str):
            requested = str(requested)  # a torch.device
        requested = requested.strip().lower()  # ' CPU' means cpu, as presets are normalised
    if requested is None or requested == "auto":
        if torch.cuda.is_available():
            chosen = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            chosen = "mps"
        else:
            chosen = "cpu"
    else:
        kind, _, index = requested.partition(":")
        if kind not in ("cpu", "cuda", "mps") or (_ and not index.isdigit()):
            raise ValueError(f"unknown device {requested!r}: choose auto, cpu, cuda, cuda:N or mps")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} requested but CUDA is not available: use cpu or auto")
        if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"device {requested!r} requested but MPS is not available: use cpu or auto")
        chosen = requested
    if verbose:
        print(f"device: {chosen}")
    return torch.device(chosen)


def cache_dir() -> Path:
    """Where trained artefacts (checkpoints) are cached: $INSIDEOUT_CACHE, else ~/.cache/insideout."""
    root = os.environ.get(CACHE_ENV)
    path = Path(root) if root else Path.home() / ".cache" / "insideout"
    path.mkdir(parents=True, exist_ok=True)
    return path


def setup(seed: int = 0, preset: str | None = None, device: str | None = None, threads: int | None = DEFAULT_THREADS):
    """First-cell helper for torch chapters: seed, pick preset and device, print them, return (preset, device)."""
    import torch

    chosen_preset = get_preset(preset)
    chosen_device = get_device(device)
    seed_everything(seed, threads=threads)
    print(f"torch {torch.__version__} | preset {chosen_preset} | device {chosen_device} | "
          f"threads {torch.get_num_threads()} | seed {seed}")
    profile = numeric_profile()
    print(describe_numerics(profile))
    problems = profile_problems(profile)
    if _PIN_STATE["overridden"]:
        problems.append("overridden: " + ", ".join(f"{k}={v}" for k, v in _PIN_STATE["overridden"].items()))
    if problems:
        reason = f" ({_PIN_STATE['reason']})" if _PIN_STATE["reason"] else ""
        warnings.warn("the stored outputs of this course were computed under the pinned numeric profile; here "
                      f"{'; '.join(problems)}{reason}. Results may differ from them in their last bits; "
                      "see the setup page, 'On other hardware'.", stacklevel=2)
    return chosen_preset, chosen_device


class DictConfig:
    """Mixin for config dataclasses: plain-dict round trip that names unknown fields instead of a TypeError."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)


def within(value: float, bound: float, kind: str = "float64 rounding") -> str:
    """Assert that a rounding-noise size ``value`` is at most ``bound``; return text that shows only the bound.

    The exact size of rounding noise depends on which kernels and summation orders a machine uses, so a chapter
    prints the bound it satisfies ("<= 1e-15 (float64 rounding)"), never the value; the value appears in the
    assertion message if the bound fails.
    """
    if hasattr(value, "detach"):  # a tensor that requires grad: read its number without autograd's warning
        value = value.detach()
    value = float(value)
    if not value <= bound:  # also catches NaN
        raise AssertionError(f"{value!r} exceeds the bound {bound:.0e} expected of {kind}")
    return f"<= {bound:.0e} ({kind})"  # the same text whether the noise is 0 or just below the bound
