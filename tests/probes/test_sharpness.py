"""Sharpness measures against closed forms on quadratics (exact Hessians) and brute force in 2-D."""

from __future__ import annotations

import importlib.util
import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

from landscape.data import as_batches
from probes import sharpness
from probes.base import ProbeContext


def half_mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((outputs.squeeze(-1) - targets) ** 2).mean()


def split(x: torch.Tensor, y: torch.Tensor, sizes: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out, start = [], 0
    for size in sizes:
        out.append((x[start : start + size], y[start : start + size]))
        start += size
    assert start == len(x)
    return out


class Quadratic:
    """A linear model with loss ½·mean((Xw − y)²) = ½(w − w*)ᵀH(w − w*), H = XᵀX/N known exactly.

    X = √N·Q·diag(√λ)·Vᵀ with orthonormal Q (N×d) and V (d×d), so XᵀX/N = V diag(λ) Vᵀ; y = X w*.
    Batches have unequal sizes, so the sample weighting over batches is exercised as well.
    """

    def __init__(self, eigenvalues, *, seed=0, diagonal=False, w_star=None, offset=None, sizes=(7, 20, 13)):
        rng = np.random.default_rng(seed)
        lam = np.asarray(eigenvalues, dtype=np.float64)
        d, n = len(lam), sum(sizes)
        q = np.linalg.qr(rng.standard_normal((n, d)))[0]
        v = np.eye(d) if diagonal else np.linalg.qr(rng.standard_normal((d, d)))[0]
        x = math.sqrt(n) * q @ np.diag(np.sqrt(lam)) @ v.T
        self.hessian = v @ np.diag(lam) @ v.T
        self.w_star = rng.standard_normal(d) if w_star is None else np.asarray(w_star, dtype=np.float64)
        self.w = self.w_star + (0.0 if offset is None else np.asarray(offset, dtype=np.float64))
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(x @ self.w_star)
        self.data = split(self.x, self.y, sizes)
        self.model = nn.Linear(d, 1, bias=False).double()
        with torch.no_grad():
            self.model.weight.copy_(torch.from_numpy(self.w)[None])

    @property
    def gradient(self) -> np.ndarray:
        return self.hessian @ (self.w - self.w_star)

    def increase(self, eps: np.ndarray) -> np.ndarray:
        """L(w + ε) − L(w) for a batch of ε (rows), exactly."""
        return eps @ self.gradient + 0.5 * np.einsum("ij,jk,ik->i", eps, self.hessian, eps)


def circle(n: int = 200_001) -> np.ndarray:
    angles = np.linspace(0.0, 2 * np.pi, n)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


# ----------------------------------------------------------------------------------------- worst case


def test_worst_case_at_a_minimum_is_half_rho_squared_lambda_max():
    eigenvalues = [3.0, 1.5, 1.0, 0.5, 0.2]
    problem = Quadratic(eigenvalues)
    rho = 0.05
    value = sharpness.worst_case(problem.model, half_mse, problem.data, rho=rho, steps=40)
    # On a quadratic at its minimum each step is one power iteration (ε ← ρHε/‖Hε‖); the Rayleigh quotient
    # error shrinks as (λ₂/λ₁)^(2k) = 0.5^80 ≈ 1e-24, far below the float64 round-off (~1e-15 relative) of
    # the loss differences, so a 1e-9 relative tolerance is safe.
    assert value == pytest.approx(0.5 * rho**2 * max(eigenvalues), rel=1e-9)


def test_worst_case_away_from_a_minimum_matches_brute_force_on_the_circle():
    problem = Quadratic([2.0, 0.7], offset=[0.03, -0.05], seed=3)
    rho = 0.1
    value = sharpness.worst_case(problem.model, half_mse, problem.data, rho=rho, steps=200)
    # The loss is convex, so its maximum over the disc lies on the circle; a grid of 2e5 angles resolves it
    # to ~(2π/2e5)²·ρ²λ ≈ 1e-11, hence the 1e-8 tolerance.
    brute = problem.increase(rho * circle()).max()
    assert value == pytest.approx(brute, rel=1e-8)


def test_worst_case_adaptive_matches_the_scaled_closed_form():
    curvatures = np.array([1.0, 2.0, 0.5, 3.0])
    w_star = np.array([0.5, -0.1, 2.0, 0.05])
    problem = Quadratic(curvatures, diagonal=True, w_star=w_star)
    rho = 0.05
    for eta in (0.01, 0.0):
        value = sharpness.worst_case(problem.model, half_mse, problem.data, rho=rho, adaptive=True, steps=40,
                                     eta=eta)
        scaled = curvatures * (np.abs(w_star) + eta) ** 2
        # In u = ε/t coordinates this is power iteration on diag(h·t²), whose two largest entries differ by a
        # factor ~8: converged to round-off after 40 steps.
        assert value == pytest.approx(0.5 * rho**2 * scaled.max(), rel=1e-9)


def test_worst_case_includes_the_unperturbed_point():
    problem = Quadratic([1.0, 0.5, 0.25])
    concave = lambda out, y: -half_mse(out, y)  # noqa: E731 - a loss with its maximum at the current weights
    assert sharpness.worst_case(problem.model, concave, problem.data, rho=0.1, steps=5) == 0.0


def test_worst_case_on_a_network_matches_the_trust_region_maximum_of_the_taylor_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    x = torch.randn(30, 3, dtype=torch.float64)
    y = torch.randn(30, dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(vector):
        params, offset = {}, 0
        for name, p in model.named_parameters():
            params[name] = vector[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return half_mse(functional_call(model, params, (x,)), y)

    g = torch.func.grad(loss_of)(flat).numpy()
    h = hessian(loss_of)(flat).numpy()
    lam, vec = np.linalg.eigh(h)
    rho = 1e-3
    # Maximum of gᵀε + ½εᵀHε over ‖ε‖ = ρ: ε = (μI − H)⁻¹g with μ > λ_max chosen so that ‖ε‖ = ρ (bisection).
    coeffs = vec.T @ g
    lo, hi = lam[-1] + 1e-12, lam[-1] + np.linalg.norm(g) / rho + 1.0
    for _ in range(200):
        mu = 0.5 * (lo + hi)
        lo, hi = (mu, hi) if np.linalg.norm(coeffs / (mu - lam)) > rho else (lo, mu)
    eps = vec @ (coeffs / (mu - lam))
    taylor = g @ eps + 0.5 * eps @ h @ eps
    value = sharpness.worst_case(model, half_mse, (x, y), rho=rho, steps=100)
    # The network's loss differs from its second-order model by O(ρ³·|third derivative|) ≈ 1e-9 here,
    # against a value of ~1e-3·‖g‖; 1e-4 relative leaves ample room.
    assert len(names) == 4
    assert value == pytest.approx(taylor, rel=1e-4)


def test_worst_case_does_not_depend_on_batching_and_is_seeded():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 1)).double()
    x, y = torch.randn(24, 4, dtype=torch.float64), torch.randn(24, dtype=torch.float64)
    one = sharpness.worst_case(model, half_mse, (x, y), rho=0.1, steps=5, seed=3)
    many = sharpness.worst_case(model, half_mse, split(x, y, (5, 11, 8)), rho=0.1, steps=5, seed=3)
    # Same ε sequence (same seed) and the same loss up to the summation order of float64 sums.
    assert many == pytest.approx(one, rel=1e-12)
    assert sharpness.worst_case(model, half_mse, (x, y), rho=0.1, steps=5, seed=3) == one


def test_sam_one_step_closed_form():
    problem = Quadratic([2.0, 1.0, 0.3], offset=[0.1, 0.0, -0.2])
    rho, eta = 0.05, 0.01
    g = problem.gradient
    expected = problem.increase((rho * g / np.linalg.norm(g))[None])[0]
    assert sharpness.sam_one_step(problem.model, half_mse, problem.data, rho=rho) == pytest.approx(expected, rel=1e-10)
    t = np.abs(problem.w) + eta
    eps = rho * t**2 * g / np.linalg.norm(t * g)
    adaptive = sharpness.sam_one_step(problem.model, half_mse, problem.data, rho=rho, adaptive=True, eta=eta)
    assert adaptive == pytest.approx(problem.increase(eps[None])[0], rel=1e-10)


def test_m_sharpness_averages_the_per_batch_worst_cases():
    rng = np.random.default_rng(5)
    m, d, w_star = 10, 3, np.array([0.3, -1.0, 0.8])
    spectra = [[2.0, 0.5, 0.1], [1.0, 0.4, 0.3], [4.0, 1.0, 0.2]]
    xs = []
    for lam in spectra:  # each m-sample block has its own exactly known Hessian H_b = X_bᵀX_b/m
        q = np.linalg.qr(rng.standard_normal((m, d)))[0]
        v = np.linalg.qr(rng.standard_normal((d, d)))[0]
        xs.append(math.sqrt(m) * q @ np.diag(np.sqrt(lam)) @ v.T)
    x = torch.from_numpy(np.concatenate(xs))
    y = x @ torch.from_numpy(w_star)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w_star)[None])
    rho = 0.05
    value = sharpness.m_sharpness(model, half_mse, split(x, y, (4, 17, 9)), rho=rho, m=m, steps=60)
    expected = np.mean([0.5 * rho**2 * max(lam) for lam in spectra])
    # Per-block eigen-gaps are ≤ 0.4, so 60 power steps converge to round-off.
    assert value == pytest.approx(expected, rel=1e-9)


# --------------------------------------------------------------------------------------- average case


def test_average_case_is_half_sigma_squared_trace():
    eigenvalues = np.array([3.0, 1.5, 1.0, 0.5, 0.2])
    problem = Quadratic(eigenvalues, offset=[0.2, -0.1, 0.0, 0.3, 0.1])  # off the minimum: antithetic pairs
    sigma, n = 0.01, 2000
    value = sharpness.average_case(problem.model, half_mse, problem.data, sigma=sigma, n_samples=n, seed=1)
    # Each antithetic pair gives exactly ½εᵀHε (the linear term cancels); Var(½εᵀHε) = ½σ⁴ tr(H²), so the
    # mean of n pairs has std σ²·√(tr(H²)/(2n)). Five standard deviations: a false alarm has p < 1e-6.
    std = sigma**2 * math.sqrt(np.sum(eigenvalues**2) / (2 * n))
    assert abs(value - 0.5 * sigma**2 * eigenvalues.sum()) < 5 * std


def test_average_case_filter_scaled_uses_per_filter_noise():
    torch.manual_seed(2)
    model = nn.Linear(4, 3).double()
    x, y = torch.randn(50, 4, dtype=torch.float64), torch.randn(50, 3, dtype=torch.float64)
    loss = lambda out, t: 0.5 * ((out - t) ** 2).mean()  # noqa: E731 - quadratic in the parameters
    params = {k: v.detach() for k, v in model.named_parameters()}
    blocks = hessian(lambda p: loss(functional_call(model, p, (x,)), y))(params)
    names = list(params)
    h = torch.cat([torch.cat([blocks[a][b].reshape(params[a].numel(), params[b].numel()) for b in names], 1)
                   for a in names]).numpy()
    w, b = params["weight"].numpy(), params["bias"].numpy()
    std = np.concatenate([np.repeat(np.linalg.norm(w, axis=1) / math.sqrt(w.shape[1]), w.shape[1]),
                          np.full(b.size, np.linalg.norm(b) / math.sqrt(b.size))])
    sigma, n = 0.05, 1500
    value = sharpness.average_case(model, loss, (x, y), sigma=sigma, n_samples=n, seed=0, filter_scaled=True)
    scaled = (sigma * std)[:, None] * h * (sigma * std)[None, :]  # covariance-weighted Hessian S H S
    # E = ½ tr(SHS), Var of one pair = ½ tr((SHS)²); five standard deviations of the mean of n pairs.
    assert abs(value - 0.5 * np.trace(scaled)) < 5 * math.sqrt(0.5 * np.trace(scaled @ scaled) / n)


# -------------------------------------------------------------------------------- gradient, first order


def test_gradient_norm_is_zero_at_a_minimum_and_exact_elsewhere():
    at_min = Quadratic([2.0, 1.0, 0.5])
    # Residuals y − Xw* are float64 round-off (~1e-16), so the gradient is at that level.
    assert sharpness.gradient_norm(at_min.model, half_mse, at_min.data) < 1e-12
    off = Quadratic([2.0, 1.0, 0.5], offset=[0.1, -0.3, 0.2])
    assert sharpness.gradient_norm(off.model, half_mse, off.data) == pytest.approx(
        np.linalg.norm(off.gradient), rel=1e-12)


def test_first_order_flatness_at_a_minimum_is_rho_squared_lambda_max():
    eigenvalues = [3.0, 1.5, 1.0, 0.5, 0.2]
    problem = Quadratic(eigenvalues)
    rho = 0.05
    value = sharpness.first_order_flatness(problem.model, half_mse, problem.data, rho=rho, steps=30)
    # ∇L(θ+ε) = Hε and the ascent direction H·Hε/‖Hε‖ makes this power iteration on H² (ratio 0.25 per step).
    assert value == pytest.approx(rho * rho * max(eigenvalues), rel=1e-9)


def test_first_order_flatness_away_from_a_minimum_matches_brute_force():
    problem = Quadratic([2.0, 0.7], offset=[0.03, -0.05], seed=3)
    rho = 0.1
    value = sharpness.first_order_flatness(problem.model, half_mse, problem.data, rho=rho, steps=200)
    # ‖g + Hε‖ is convex in ε, so its maximum over the disc is on the circle (grid as in the worst-case test).
    norms = np.linalg.norm(problem.gradient + rho * circle() @ problem.hessian, axis=1)
    assert value == pytest.approx(rho * norms.max(), rel=1e-8)


# ------------------------------------------------------------------------------------------- stability


def test_stability_ratios():
    out = sharpness.stability(lambda_max=40.0, trace=300.0, lr=0.1)
    assert out["eos_ratio"] == pytest.approx(2.0)
    assert out["eos_threshold"] == pytest.approx(20.0)
    assert out["sgd_trace_ratio"] == pytest.approx(15.0)
    assert set(out["meaning"]) == {"eos_ratio", "sgd_trace_ratio"}
    only = sharpness.stability(lambda_max=10.0, trace=None, lr=0.2)
    assert only["eos_ratio"] == pytest.approx(1.0) and "sgd_trace_ratio" not in only
    json.dumps(out)


# ------------------------------------------------------------------------------- model left untouched


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_every_function_leaves_the_model_exactly_as_it_was():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 3))
    model.train()
    model[4].eval()  # mixed modes must come back as they were
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    grad_objects = {n: p.grad for n, p in model.named_parameters()}
    before = _state(model)
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    data = [(x[:7], y[:7]), (x[7:], y[7:])]
    ce = nn.functional.cross_entropy
    sharpness.worst_case(model, ce, data, steps=2)
    sharpness.worst_case(model, ce, data, steps=2, adaptive=True)
    sharpness.sam_one_step(model, ce, data)
    sharpness.m_sharpness(model, ce, data, m=8, steps=2)
    sharpness.average_case(model, ce, data, n_samples=2, filter_scaled=True)
    sharpness.gradient_norm(model, ce, data)
    sharpness.first_order_flatness(model, ce, data, steps=2)
    sharpness.PROBE.run(ProbeContext(model=model, loss_fn=ce, train=as_batches(data)), steps=2, n_samples=2, m=8)
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers bit for bit
    assert [m.training for m in model.modules()] == [True, True, True, True, True, False]
    for n, p in model.named_parameters():
        assert p.grad is grad_objects[n] and torch.equal(p.grad, grads[n])


# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, d: sharpness.worst_case(m, half_mse, d, rho=0.0), "rho"),
        (lambda m, d: sharpness.worst_case(m, half_mse, d, rho=-1.0), "rho"),
        (lambda m, d: sharpness.worst_case(m, half_mse, d, steps=0), "steps"),
        (lambda m, d: sharpness.worst_case(m, half_mse, d, adaptive=True, eta=-0.1), "eta"),
        (lambda m, d: sharpness.sam_one_step(m, half_mse, d, rho=float("nan")), "rho"),
        (lambda m, d: sharpness.m_sharpness(m, half_mse, d, m=0), "m must"),
        (lambda m, d: sharpness.average_case(m, half_mse, d, n_samples=0), "n_samples"),
        (lambda m, d: sharpness.average_case(m, half_mse, d, sigma=0.0), "sigma"),
        (lambda m, d: sharpness.first_order_flatness(m, half_mse, d, steps=0), "steps"),
        (lambda m, d: sharpness.first_order_flatness(m, half_mse, d, rho=-0.1), "rho"),
        (lambda m, d: sharpness.stability(1.0, 1.0, lr=0.0), "lr"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, match):
    problem = Quadratic([1.0, 0.5])
    with pytest.raises(ValueError, match=match):
        call(problem.model, problem.data)


def test_model_without_trainable_parameters_is_an_error():
    model = nn.Linear(2, 1).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        sharpness.gradient_norm(model, half_mse, (torch.randn(4, 2), torch.randn(4)))


# --------------------------------------------------------------------------------------------- probe


def _context(problem: Quadratic, lr=None) -> ProbeContext:
    return ProbeContext(model=problem.model, loss_fn=half_mse, train=as_batches(problem.data), lr=lr)


def test_probe_stores_the_documented_keys_and_json_params():
    problem = Quadratic([3.0, 1.5, 1.0, 0.5, 0.2])
    probe = sharpness.PROBE
    result = probe.run(_context(problem), **{**probe.defaults, "steps": 30, "m": 20, "stability": False})
    assert result.valid
    expected = {"worst_case", "worst_case_adaptive", "sam_one_step", "average_case", "gradient_norm",
                "first_order_flatness", "m_sharpness"}
    assert set(result.scalars) == expected
    assert result.scalars["worst_case"] == pytest.approx(0.5 * 0.05**2 * 3.0, rel=1e-9)
    assert result.scalars["first_order_flatness"] == pytest.approx(0.05**2 * 3.0, rel=1e-9)
    json.dumps(result.params)
    assert "worst_case" in result.params["definition"]
    plain = probe.run(_context(problem), **{**probe.defaults, "adaptive": False, "stability": False})
    assert "worst_case_adaptive" not in plain.scalars and "m_sharpness" not in plain.scalars


def test_probe_returns_invalid_for_a_nan_loss():
    problem = Quadratic([1.0, 0.5])
    ctx = ProbeContext(model=problem.model, loss_fn=lambda o, t: half_mse(o, t) * float("nan"),
                       train=as_batches(problem.data))
    result = sharpness.PROBE.run(ctx, **sharpness.PROBE.defaults)
    assert not result.valid and "nan" in result.message


def test_probe_rejects_bad_params():
    problem = Quadratic([1.0, 0.5])
    with pytest.raises(ValueError, match="n_samples"):
        sharpness.PROBE.run(_context(problem), **{**sharpness.PROBE.defaults, "n_samples": 0})


@pytest.mark.skipif(importlib.util.find_spec("probes.hessian") is None, reason="probes.hessian not present")
def test_probe_stability_uses_the_hessian_spectrum():
    eigenvalues = [3.0, 1.5, 1.0, 0.5, 0.2]
    problem = Quadratic(eigenvalues)
    lr = 0.5
    result = sharpness.PROBE.run(_context(problem, lr=lr), **{**sharpness.PROBE.defaults, "stability": True})
    assert result.scalars["lambda_max"] == pytest.approx(3.0, rel=1e-6)
    # d = 5 ≤ the trace estimator's matvec budget, so Hutch++ is exact up to round-off; allow 1e-6.
    assert result.scalars["trace"] == pytest.approx(sum(eigenvalues), rel=1e-6)
    assert result.scalars["eos_ratio"] == pytest.approx(result.scalars["lambda_max"] * lr / 2)
    assert result.scalars["sgd_trace_ratio"] == pytest.approx(result.scalars["trace"] * lr / 2)


def test_probe_without_learning_rate_has_no_stability_keys():
    problem = Quadratic([1.0, 0.5])
    result = sharpness.PROBE.run(_context(problem), **sharpness.PROBE.defaults)
    assert not {"lambda_max", "trace", "eos_ratio", "sgd_trace_ratio"} & set(result.scalars)
