"""Probability paths from noise to data, their training targets, and the discrete DDPM/DDIM formulas.

Convention (as in Lipman et al.'s flow matching and Meta's ``flow_matching`` library): time runs from ``t = 0``
(pure noise ``x_0 ~ N(0, I)``) to ``t = 1`` (data ``x_1``), and an *affine* path is

    x_t = alpha_t x_1 + sigma_t x_0,        velocity  u_t = d/dt x_t = alpha'_t x_1 + sigma'_t x_0.

* ``LinearPath``: alpha_t = t, sigma_t = 1 - t (the straight line, "conditional optimal transport"); u_t = x_1 - x_0.
* ``GaussianPath``: the variance-preserving path of diffusion models, alpha_t^2 + sigma_t^2 = 1. ``"linear"`` is the
  continuous-time limit of DDPM's linear beta schedule (beta from 0.1 to 20 over diffusion time tau = 1 - t, Song
  et al.'s VP SDE); ``"cosine"`` is Nichol & Dhariwal's, alpha_t = cos(pi/2 (tau + s)/(1 + s)) / cos(pi/2 s/(1+s)).

A model can be trained to predict the velocity u_t, the noise x_0 (``epsilon``) or the data x_1; for an affine path
the three are linear functions of each other given x_t (``to_velocity``), so any of them drives the same samplers.

The discrete formulas of DDPM (``ddpm_alphas_cumprod``) and DDIM (``ddim_step``) are here too, written on
``alpha_bar = alpha^2`` so that they can be compared number for number with ``diffusers``' schedulers.
"""

from __future__ import annotations

import math

import torch

PREDICTIONS = ("velocity", "epsilon", "data")
SCHEDULES = ("linear", "cosine")


class AffinePath:
    """x_t = alpha_t x_1 + sigma_t x_0; subclasses define alpha, sigma and their time derivatives."""

    name = "affine"

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(alpha_t, sigma_t, d alpha_t / dt, d sigma_t / dt), each shaped like t."""
        raise NotImplementedError

    def sample(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, u_t) for noise x0, data x1 and times t (B,)."""
        a, s, da, ds = (_expand(v, x1) for v in self.coefficients(t))
        return a * x1 + s * x0, da * x1 + ds * x0

    def target(self, prediction: str, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What a model trained for ``prediction`` should output at x_t."""
        if prediction == "velocity":
            return self.sample(x0, x1, t)[1]
        if prediction == "epsilon":
            return x0
        if prediction == "data":
            return x1
        raise ValueError(f"prediction={prediction!r}: choose one of {', '.join(PREDICTIONS)}")

    def to_velocity(self, prediction: str, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                    ) -> torch.Tensor:
        """The velocity implied by a model's output of kind ``prediction`` at (x_t, t)."""
        a, s, da, ds = (_expand(v, x_t) for v in self.coefficients(t))
        if prediction == "velocity":
            return output
        if prediction == "epsilon":  # x_1 = (x_t - s eps) / a
            return da / a * x_t + (ds - da * s / a) * output
        if prediction == "data":  # x_0 = (x_t - a x1) / s
            return ds / s * x_t + (da - ds * a / s) * output
        raise ValueError(f"prediction={prediction!r}: choose one of {', '.join(PREDICTIONS)}")

    def to_data(self, prediction: str, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The estimate of x_1 implied by a model's output at (x_t, t)."""
        a, s, da, ds = (_expand(v, x_t) for v in self.coefficients(t))
        if prediction == "data":
            return output
        if prediction == "epsilon":
            return (x_t - s * output) / a
        if prediction == "velocity":  # solve x_t = a x1 + s x0, u = da x1 + ds x0 for x1
            return (ds * x_t - s * output) / (ds * a - s * da)
        raise ValueError(f"prediction={prediction!r}: choose one of {', '.join(PREDICTIONS)}")

    def to_epsilon(self, prediction: str, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The estimate of the noise x_0 implied by a model's output at (x_t, t)."""
        if prediction == "epsilon":
            return output
        a, s, _, _ = (_expand(v, x_t) for v in self.coefficients(t))
        x1 = self.to_data(prediction, output, x_t, t)
        return (x_t - a * x1) / s


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim())).to(like.dtype)


class LinearPath(AffinePath):
    """alpha_t = t, sigma_t = 1 - t: straight lines from noise to data, constant velocity x_1 - x_0."""

    name = "linear"

    def coefficients(self, t):
        return t, 1 - t, torch.ones_like(t), -torch.ones_like(t)


class GaussianPath(AffinePath):
    """A variance-preserving path alpha_t^2 + sigma_t^2 = 1, with the 'linear' (VP SDE) or 'cosine' schedule."""

    def __init__(self, schedule: str = "linear", beta_min: float = 0.1, beta_max: float = 20.0,
                 cosine_s: float = 0.008):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if not 0 < beta_min < beta_max:
            raise ValueError(f"need 0 < beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        self.schedule, self.beta_min, self.beta_max, self.cosine_s = schedule, beta_min, beta_max, cosine_s
        self.name = f"gaussian-{schedule}"

    def log_alpha(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log alpha_t, d log alpha_t / dt)."""
        tau = 1 - t
        if self.schedule == "linear":  # alpha_bar = exp(-int_0^tau beta), beta(tau) = bmin + tau (bmax - bmin)
            integral = self.beta_min * tau + 0.5 * (self.beta_max - self.beta_min) * tau**2
            beta = self.beta_min + (self.beta_max - self.beta_min) * tau
            return -0.5 * integral, 0.5 * beta  # d/dt = -d/dtau
        s = self.cosine_s
        phase = 0.5 * math.pi * (tau + s) / (1 + s)
        log_a = torch.log(torch.cos(phase).clamp_min(1e-12)) - math.log(math.cos(0.5 * math.pi * s / (1 + s)))
        return log_a, torch.tan(phase) * 0.5 * math.pi / (1 + s)

    def coefficients(self, t):
        log_a, dlog_a = self.log_alpha(t)
        a = torch.exp(log_a)
        s = torch.sqrt((1 - a**2).clamp_min(1e-20))
        da = a * dlog_a
        ds = -a * da / s
        return a, s, da, ds

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_t^2, the 'cumulative product of alphas' of DDPM at diffusion time 1 - t."""
        return torch.exp(2 * self.log_alpha(t)[0])


def make_path(name: str) -> AffinePath:
    """'linear', 'gaussian-linear' or 'gaussian-cosine'."""
    if name == "linear":
        return LinearPath()
    if name.startswith("gaussian-"):
        return GaussianPath(name.split("-", 1)[1])
    raise ValueError(f"unknown path {name!r}: choose linear, gaussian-linear or gaussian-cosine")


# ---- the discrete formulas of DDPM and DDIM -------------------------------------------------------------------


def ddpm_alphas_cumprod(num_steps: int = 1000, schedule: str = "linear", beta_start: float = 1e-4,
                        beta_end: float = 0.02, max_beta: float = 0.999) -> torch.Tensor:
    """(num_steps,) float64 alpha_bar_k = prod_{i <= k} (1 - beta_i) of DDPM's discrete schedule.

    'linear': beta_i evenly spaced from beta_start to beta_end (Ho et al.); 'cosine': beta_i = 1 - abar(i+1)/abar(i)
    with Nichol & Dhariwal's abar, capped at max_beta.
    """
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r}: must be a positive integer")
    if schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    elif schedule == "cosine":
        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - abar((i + 1) / num_steps) / abar(i / num_steps), max_beta)
                              for i in range(num_steps)], dtype=torch.float64)
    else:
        raise ValueError(f"schedule={schedule!r}: choose one of {', '.join(SCHEDULES)}")
    return torch.cumprod(1 - betas, dim=0)


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, abar_t: float | torch.Tensor, abar_s: float | torch.Tensor,
              eta: float = 0.0, noise: torch.Tensor | None = None, clip: float | None = None) -> torch.Tensor:
    """One DDIM update from noise level abar_t to the less noisy abar_s, given the predicted noise ``eps``.

        x1_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
        sigma  = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)
        x_s    = sqrt(abar_s) x1_hat + sqrt(1 - abar_s - sigma^2) eps + sigma z

    eta = 0 is deterministic DDIM (Song et al.); eta = 1 is DDPM's ancestral sampling with its 'fixed small'
    variance (Ho et al.). ``clip`` clamps x1_hat to [-clip, clip] (images live in [-1, 1]).
    """
    if eta < 0:
        raise ValueError(f"eta={eta}: must be >= 0")
    abar_t = torch.as_tensor(abar_t, dtype=x_t.dtype)
    abar_s = torch.as_tensor(abar_s, dtype=x_t.dtype)
    x1 = (x_t - torch.sqrt(1 - abar_t) * eps) / torch.sqrt(abar_t)
    if clip is not None:
        x1 = x1.clamp(-clip, clip)
    sigma = eta * torch.sqrt((1 - abar_s) / (1 - abar_t)) * torch.sqrt(1 - abar_t / abar_s)
    out = torch.sqrt(abar_s) * x1 + torch.sqrt((1 - abar_s - sigma**2).clamp_min(0)) * eps
    if eta > 0:
        if noise is None:
            raise ValueError("eta > 0 adds noise: pass noise (a tensor shaped like x_t)")
        out = out + sigma * noise
    return out


# ---- couplings -------------------------------------------------------------------------------------------------


def ot_pair(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """x0 reordered so that (x0[i], x1[i]) is the minibatch optimal-transport pairing (squared Euclidean cost).

    Exact assignment by the Hungarian algorithm (scipy's linear_sum_assignment) on the batch: of all B! ways to
    pair the noise with the data, the one with the least total squared distance.
    """
    from scipy.optimize import linear_sum_assignment

    if x0.shape != x1.shape:
        raise ValueError(f"noise {tuple(x0.shape)} and data {tuple(x1.shape)} must have the same shape")
    cost = torch.cdist(x0.flatten(1).double(), x1.flatten(1).double()) ** 2  # (B, B)
    rows, cols = linear_sum_assignment(cost.numpy())
    order = torch.empty(len(cols), dtype=torch.long)
    order[torch.as_tensor(cols)] = torch.as_tensor(rows)
    return x0[order]
