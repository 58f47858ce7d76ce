"""insideout.diffusion.paths and .sampling against Meta's flow_matching and Hugging Face's diffusers (test-time
references only): the same path samples, velocity targets, noise schedules, DDIM/DDPM updates and ODE steps."""

from __future__ import annotations

import itertools

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler
from flow_matching.path import AffineProbPath
from flow_matching.path.scheduler import CondOTScheduler, VPScheduler
from flow_matching.solver import ODESolver

from insideout.diffusion.paths import GaussianPath, LinearPath, ddim_step, ddpm_alphas_cumprod, make_path, ot_pair
from insideout.diffusion.sampling import function_evaluations, guided, solve


def batch(seed: int = 0, shape=(6, 3, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    x1 = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.rand(shape[0], generator=g, dtype=torch.float64) * 0.98 + 0.01
    return x0, x1, t


def test_linear_path_and_velocity_target_equal_flow_matching_condot():
    x0, x1, t = batch()
    ref = AffineProbPath(CondOTScheduler()).sample(x_0=x0, x_1=x1, t=t)
    x_t, u_t = LinearPath().sample(x0, x1, t)
    assert torch.allclose(x_t, ref.x_t, atol=1e-12) and torch.allclose(u_t, ref.dx_t, atol=1e-12)
    assert torch.allclose(LinearPath().target("velocity", x0, x1, t), x1 - x0, atol=1e-12)


def test_gaussian_path_equals_flow_matching_vp_scheduler():
    x0, x1, t = batch(1)
    path, sched = GaussianPath("linear"), VPScheduler()
    ref = AffineProbPath(sched).sample(x_0=x0, x_1=x1, t=t)
    x_t, u_t = path.sample(x0, x1, t)
    assert torch.allclose(x_t, ref.x_t, atol=1e-12) and torch.allclose(u_t, ref.dx_t, atol=1e-10)
    a, s, da, ds = path.coefficients(t)
    out = sched(t)
    for mine, theirs in ((a, out.alpha_t), (s, out.sigma_t), (da, out.d_alpha_t), (ds, out.d_sigma_t)):
        assert torch.allclose(mine, theirs, atol=1e-10, rtol=1e-10)
    assert torch.allclose(a**2 + s**2, torch.ones_like(t), atol=1e-12)  # variance preserving


@pytest.mark.parametrize("name", ["linear", "gaussian-linear"])
def test_conversions_between_predictions_equal_flow_matching(name):
    x0, x1, t = batch(2)
    path = make_path(name)
    ref = AffineProbPath(CondOTScheduler() if name == "linear" else VPScheduler())
    x_t, u_t = path.sample(x0, x1, t)
    tt = t[:, None, None, None]
    assert torch.allclose(path.to_velocity("epsilon", x0, x_t, t), ref.epsilon_to_velocity(x0, x_t, tt), atol=1e-8)
    assert torch.allclose(path.to_velocity("data", x1, x_t, t), ref.target_to_velocity(x1, x_t, tt), atol=1e-8)
    # every prediction maps back to the true velocity, data and noise of the sample
    for kind, output in (("velocity", u_t), ("epsilon", x0), ("data", x1)):
        assert torch.allclose(path.to_velocity(kind, output, x_t, t), u_t, atol=1e-8)
        assert torch.allclose(path.to_data(kind, output, x_t, t), x1, atol=1e-8)
        assert torch.allclose(path.to_epsilon(kind, output, x_t, t), x0, atol=1e-8)


def test_cosine_path_derivatives_by_finite_differences():
    path = GaussianPath("cosine")
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    h = 1e-6
    a, s, da, ds = path.coefficients(t)
    a_p, s_p, _, _ = path.coefficients(t + h)
    a_m, s_m, _, _ = path.coefficients(t - h)
    assert torch.allclose(da, (a_p - a_m) / (2 * h), atol=1e-6)
    assert torch.allclose(ds, (s_p - s_m) / (2 * h), atol=1e-6)
    assert torch.allclose(path.coefficients(torch.ones(1, dtype=torch.float64))[0], torch.ones(1, dtype=torch.float64))


@pytest.mark.parametrize("schedule,theirs", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
def test_ddpm_schedule_equals_diffusers(schedule, theirs):
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule=theirs)
    mine = ddpm_alphas_cumprod(1000, schedule)
    assert torch.allclose(mine.float(), ref.alphas_cumprod, rtol=1e-5, atol=1e-7)


def test_ddpm_add_noise_is_the_gaussian_path_at_alpha_bar():
    ref = DDPMScheduler(num_train_timesteps=1000)
    g = torch.Generator().manual_seed(3)
    x1, noise = torch.randn(4, 3, 4, 4, generator=g), torch.randn(4, 3, 4, 4, generator=g)
    steps = torch.tensor([0, 10, 500, 999])
    abar = ddpm_alphas_cumprod(1000).float()[steps][:, None, None, None]
    mine = abar.sqrt() * x1 + (1 - abar).sqrt() * noise  # x_t = alpha x_1 + sigma x_0
    assert torch.allclose(mine, ref.add_noise(x1, noise, steps), atol=1e-6)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_equals_diffusers(eta):
    ref = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False, set_alpha_to_one=True)
    ref.set_timesteps(10)
    ref.alphas_cumprod = ref.alphas_cumprod.double()  # diffusers keeps its schedule in float32; compare in float64
    ref.final_alpha_cumprod = ref.final_alpha_cumprod.double()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    abar = ref.alphas_cumprod
    for i, t in enumerate(ref.timesteps.tolist()):
        eps = torch.randn(x.shape, generator=g, dtype=torch.float64) * 0.5 + 0.1 * x
        noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
        prev = t - 1000 // 10
        abar_s = abar[prev] if prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
        theirs = ref.step(eps, t, x, eta=eta, variance_noise=noise if eta > 0 else None).prev_sample
        mine = ddim_step(x, eps, abar[t], abar_s, eta=eta, noise=noise)
        assert torch.allclose(mine, theirs, atol=1e-10), (i, (mine - theirs).abs().max())
        x = theirs


def test_ddim_with_eta_one_is_ddpm_ancestral_step():
    ref = DDPMScheduler(num_train_timesteps=1000, clip_sample=False, variance_type="fixed_small")
    ref.set_timesteps(1000)
    ref.alphas_cumprod = ref.alphas_cumprod.double()  # diffusers keeps its schedule in float32; compare in float64
    ref.one = ref.one.double()
    abar = ref.alphas_cumprod
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g)
    for t in (999, 500, 37, 1):
        eps = torch.randn(x.shape, dtype=torch.float64, generator=g)
        noise_g = torch.Generator().manual_seed(t)
        theirs = ref.step(eps, t, x, generator=noise_g).prev_sample
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        mine = ddim_step(x, eps, abar[t], abar[t - 1], eta=1.0, noise=noise)
        assert torch.allclose(mine, theirs, atol=1e-10), (t, (mine - theirs).abs().max())


def test_ot_pairing_is_the_optimal_permutation():
    g = torch.Generator().manual_seed(6)
    x0, x1 = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    paired = ot_pair(x0, x1)
    best = min(((x0[list(p)] - x1) ** 2).sum().item() for p in itertools.permutations(range(6)))
    assert ((paired - x1) ** 2).sum().item() == pytest.approx(best, rel=1e-6)
    assert sorted(paired[:, 0].tolist()) == sorted(x0[:, 0].tolist())  # a permutation of the noise


class Field(torch.nn.Module):
    """A fixed nonlinear velocity field v(x, t) for solver comparisons."""

    def forward(self, x, t):
        return torch.sin(3 * x) * (1 + t[:, None]) - 0.5 * x


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
def test_ode_solvers_equal_flow_matching_ode_solver(solver):
    field = Field()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    steps = 8
    mine = solve(field, x, steps, solver)
    theirs = ODESolver(velocity_model=lambda x, t: field(x, t.expand(x.shape[0]))).sample(
        x_init=x, step_size=1 / steps, method=solver, time_grid=torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(mine, theirs, atol=1e-10)


def test_higher_order_solvers_converge_faster_on_a_fixed_field():
    field = Field()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    exact = solve(field, x, 2000, "midpoint")
    err = {s: (solve(field, x, 10, s) - exact).abs().max().item() for s in ("euler", "midpoint", "heun")}
    assert err["midpoint"] < err["euler"] / 5 and err["heun"] < err["euler"] / 5, err


def test_ddim_solver_on_a_gaussian_path_samples_the_exact_gaussian():
    # data ~ N(m, c^2) per coordinate: the ideal noise predictor is known in closed form
    m, c = 1.5, 0.3
    path = GaussianPath("cosine")

    def eps_star(x, t):
        a, s, _, _ = (v[:, None] for v in path.coefficients(t.double()))
        var = a**2 * c**2 + s**2
        return s * (x - a * m) / var  # E[x0 | x_t] for jointly Gaussian (x0, x_t)

    x = torch.randn(8000, 1, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    out = solve(eps_star, x, 200, "ddim", path=path, prediction="epsilon")
    assert abs(out.mean().item() - m) < 0.01 and abs(out.std().item() - c) < 0.01


def test_guidance_combines_conditional_and_unconditional():
    class Toy(torch.nn.Module):
        def forward(self, x, t, y):
            return x * 0 + y[:, None].to(x.dtype)

    x, t = torch.zeros(3, 2), torch.zeros(3)
    cond, uncond = {"y": torch.full((3,), 2.0)}, {"y": torch.full((3,), 0.5)}
    for w in (0.0, 1.0, 3.0):
        out = guided(Toy(), cond, uncond, w)(x, t)
        assert torch.allclose(out, torch.full_like(out, 0.5 + w * 1.5))
    assert function_evaluations("midpoint", 10, 3.0) == 40 and function_evaluations("euler", 10, 1.0) == 10


@pytest.mark.parametrize("kwargs,match", [
    ({"solver": "rk4"}, "unknown solver"),
    ({"steps": 0}, "steps"),
    ({"solver": "ddim"}, "Gaussian path"),
])
def test_bad_sampler_arguments(kwargs, match):
    args = {"steps": 4, "solver": "euler", **kwargs}
    with pytest.raises(ValueError, match=match):
        solve(Field(), torch.zeros(2, 2), args["steps"], args["solver"])


def test_negative_guidance_is_refused():
    with pytest.raises(ValueError, match="guidance"):
        guided(Field(), {}, {}, -0.5)
    with pytest.raises(ValueError, match="path"):
        make_path("straight")
