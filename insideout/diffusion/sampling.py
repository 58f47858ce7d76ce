"""Samplers: ODE solvers for the velocity field, DDIM and DDPM for Gaussian paths, and classifier-free guidance.

All samplers start at ``t = 0`` from standard normal noise and integrate to ``t = 1`` on a uniform time grid.

* ``euler``: x <- x + h v(x, t) (1 function evaluation per step);
* ``midpoint``: x <- x + h v(x + h/2 v(x, t), t + h/2) (2 per step, second order);
* ``heun``: the average of the slopes at both ends, x <- x + h/2 (v(x, t) + v(x + h v(x, t), t + h)) (2 per step);
* ``ddim``: the DDIM update (deterministic, eta = 0) on a Gaussian path, from the model's noise estimate;
* ``ddpm``: the same with eta = 1: DDPM's ancestral sampling, fresh noise at every step (stochastic).

A model's output of any kind (velocity, noise, data) is converted by the path (``paths.AffinePath``), so each
sampler drives any model. ``guided`` wraps a conditional model for classifier-free guidance,
``out = out_uncond + w (out_cond - out_uncond)``: w = 0 ignores the condition, w = 1 is the plain conditional
model, w > 1 pushes further away from the unconditional prediction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from insideout.diffusion.paths import AffinePath, GaussianPath, ddim_step

SOLVERS = ("euler", "midpoint", "heun", "ddim", "ddpm")
EVALS_PER_STEP = {"euler": 1, "midpoint": 2, "heun": 2, "ddim": 1, "ddpm": 1}

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t (B,)) -> output


def check_solver(solver: str, steps: int) -> None:
    """ValueError for an unknown solver or a step count below 1."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}: choose one of {', '.join(SOLVERS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r}: the number of steps must be an integer >= 1")


def check_guidance(guidance: float) -> None:
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not guidance >= 0:
        raise ValueError(f"guidance={guidance!r}: the guidance scale must be a number >= 0 (0: unconditional, "
                         "1: conditional, > 1: guided)")


@torch.no_grad()
def solve(fn: ModelFn, x: torch.Tensor, steps: int, solver: str = "euler", path: AffinePath | None = None,
          prediction: str = "velocity", generator: torch.Generator | None = None, clip: float | None = None,
          trajectory: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
    """Integrate from noise ``x`` at t = 0 to t = 1 in ``steps`` steps; with ``trajectory``, also every x_t.

    ``fn(x_t, t)`` returns the model's output of kind ``prediction`` for the ``path`` (default: the linear path
    and a velocity model). 'ddim' and 'ddpm' need a Gaussian path; 'ddpm' draws its noise from ``generator``.
    ``clip`` clamps DDIM/DDPM's data estimate (images: 1.0).
    """
    check_solver(solver, steps)
    if path is None:
        from insideout.diffusion.paths import LinearPath

        path = LinearPath()
    if solver in ("ddim", "ddpm") and not isinstance(path, GaussianPath):
        raise ValueError(f"solver {solver!r} is a DDIM/DDPM update on a Gaussian path; this path is {path.name!r} "
                         "(use euler, midpoint or heun)")
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    states = [x] if trajectory else []
    b = x.shape[0]

    def velocity(z: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((b,), t, dtype=torch.float32, device=z.device)
        return path.to_velocity(prediction, fn(z, tt), z, tt)

    for i in range(steps):
        t, s = float(grid[i]), float(grid[i + 1])
        h = s - t
        if solver == "euler":
            x = x + h * velocity(x, t)
        elif solver == "midpoint":
            x = x + h * velocity(x + 0.5 * h * velocity(x, t), t + 0.5 * h)
        elif solver == "heun":
            v0 = velocity(x, t)
            x = x + 0.5 * h * (v0 + velocity(x + h * v0, s))
        else:
            tt = torch.full((b,), t, dtype=torch.float32, device=x.device)
            eps = path.to_epsilon(prediction, fn(x, tt), x, tt)
            abar_t = path.alpha_bar(torch.tensor(t, dtype=torch.float64))
            abar_s = path.alpha_bar(torch.tensor(s, dtype=torch.float64))
            eta = 1.0 if solver == "ddpm" else 0.0
            noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) if eta > 0 else None
            x = ddim_step(x, eps, float(abar_t), float(abar_s), eta=eta, noise=noise, clip=clip)
        if trajectory:
            states.append(x)
    return (x, states) if trajectory else x


def guided(model: torch.nn.Module, cond: dict, uncond: dict | None, guidance: float) -> ModelFn:
    """A model function with classifier-free guidance: one batched call on [cond; uncond] inputs per evaluation.

    ``cond``/``uncond`` are the keyword arguments of the model for the condition and for "no condition" (each
    tensor with the batch's rows); with guidance 1 (or no ``uncond``) only the conditional half is computed.
    """
    check_guidance(guidance)
    if guidance == 1 or uncond is None:
        if uncond is None and guidance != 1:
            raise ValueError("guidance != 1 needs the unconditional inputs (uncond)")
        return lambda x, t: model(x, t, **cond)
    if guidance == 0:
        return lambda x, t: model(x, t, **uncond)
    keys = sorted(set(cond) | set(uncond))
    both = {k: _cat(cond.get(k), uncond.get(k)) for k in keys}

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out_c, out_u = model(torch.cat([x, x]), torch.cat([t, t]), **both).chunk(2)
        return out_u + guidance * (out_c - out_u)

    return fn


def _cat(a, b):
    if a is None or b is None:
        raise ValueError("cond and uncond must give the same keyword arguments")
    if a.dim() >= 2 and b.dim() >= 2 and a.shape[1] != b.shape[1]:  # pad sequences (text) to one length
        n = max(a.shape[1], b.shape[1])
        a, b = _pad(a, n), _pad(b, n)
    return torch.cat([a, b])


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    if x.shape[1] == n:
        return x
    pad = torch.zeros((x.shape[0], n - x.shape[1], *x.shape[2:]), dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], dim=1)


def function_evaluations(solver: str, steps: int, guidance: float = 1.0) -> int:
    """Network evaluations per sample: steps x evaluations per step (x2 with guidance other than 0 or 1)."""
    check_solver(solver, steps)
    return steps * EVALS_PER_STEP[solver] * (1 if guidance in (0, 1) else 2)
