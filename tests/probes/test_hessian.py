"""Hessian spectra through the public API and the probe, against the exact Hessian of tiny float64 models.

Ground truth: ``torch.func.hessian`` of the mean loss over all samples merged into one batch (the API
gets the same samples in batches of unequal size), diagonalized with ``numpy.linalg.eigh``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from landscape.curvature import NonFiniteLossError
from landscape.data import DataError, as_batches
from landscape.evaluate import LossError
from probes import hessian
from probes.base import ProbeContext


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def mlp_data(n: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(n, 4, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator)


def unequal(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[:7], y[:7]), (x[7:20], y[7:20]), (x[20:], y[20:])]


def exact_hessian(model: nn.Module, loss_fn, x, y, names=None) -> np.ndarray:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad and (names is None or n in names)}
    shapes = [p.shape for p in params.values()]

    def loss_of(v):
        named, offset = {}, 0
        for name, shape in zip(params, shapes):
            count = math.prod(shape)
            named[name] = v[offset : offset + count].view(shape)
            offset += count
        return loss_fn(torch.func.functional_call(model, named, (x,)), y)

    flat = torch.cat([p.detach().reshape(-1) for p in params.values()])
    return torch.func.hessian(loss_of)(flat).detach().numpy()


@pytest.fixture(scope="module")
def setup():
    model = mlp()
    x, y = mlp_data()
    matrix = exact_hessian(model, nn.CrossEntropyLoss(), x, y)
    return model, x, y, matrix, np.linalg.eigvalsh(matrix)


def state_of(model: nn.Module) -> tuple[dict, dict, dict]:
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {name: m.training for name, m in model.named_modules()},
        {name: p.grad for name, p in model.named_parameters()},
    )


def assert_unchanged(model: nn.Module, before: tuple[dict, dict, dict]) -> None:
    weights, modes, grads = before
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key
    assert {name: m.training for name, m in model.named_modules()} == modes
    for name, p in model.named_parameters():
        assert p.grad is grads[name], name
        assert p.requires_grad


# ---------------------------------------------------------------------------------------------- eigenvalues


def test_top_k_match_eigh_with_vectors(setup) -> None:
    model, x, y, matrix, exact = setup
    result = hessian.eigenvalues(model, nn.CrossEntropyLoss(), unequal(x, y), k=4, tol=1e-10, return_vectors=True)
    # residuals ≤ 1e-10·|λ| put the eigenvalues within ~1e-16 of the exact ones; 1e-8 leaves ample room
    np.testing.assert_allclose(result.values, exact[::-1][:4], rtol=1e-8)
    assert np.all(np.diff(result.values) <= 0)
    assert len(result.vectors) == 4 and list(result.vectors[0]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    for value, vector in zip(result.values, result.vectors):
        flat = torch.cat([t.reshape(-1) for t in vector.values()]).numpy()
        assert np.linalg.norm(matrix @ flat - value * flat) < 1e-8 * exact.max()
    assert result.residuals.shape == (4,) and result.n_hvp > 0


def test_tol_bounds_the_eigenvalues_by_default_and_the_residuals_with_vectors(setup) -> None:
    model, x, y, _, exact = setup
    top = exact[::-1][:3]
    values_only = hessian.eigenvalues(model, nn.CrossEntropyLoss(), unequal(x, y), k=3, tol=1e-3)
    by_residual = hessian.eigenvalues(model, nn.CrossEntropyLoss(), unequal(x, y), k=3, tol=1e-3, criterion="residual")
    # values alone stop on their estimated error: each within tol (relative) of eigh, with fewer products
    assert np.all(np.abs(values_only.values - top) <= 1e-3 * np.abs(top))
    assert values_only.n_hvp < by_residual.n_hvp
    # with vectors, tol bounds the residuals (the vectors' accuracy), as the residual rule does
    with_vectors = hessian.eigenvalues(model, nn.CrossEntropyLoss(), unequal(x, y), k=3, tol=1e-3, return_vectors=True)
    assert with_vectors.n_hvp == by_residual.n_hvp
    assert np.all(with_vectors.residuals <= 1e-3 * np.abs(with_vectors.values))


def test_products_on_small_parts_give_the_same_spectrum(setup) -> None:
    model, x, y, _, exact = setup
    result = hessian.eigenvalues(model, nn.CrossEntropyLoss(), unequal(x, y), k=3, tol=1e-10, max_batch_size=5)
    np.testing.assert_allclose(result.values, exact[::-1][:3], rtol=1e-8)
    whole = hessian.trace(model, nn.CrossEntropyLoss(), (x, y), n_matvec=10, seed=3)
    parts = hessian.trace(model, nn.CrossEntropyLoss(), (x, y), n_matvec=10, seed=3, max_batch_size=7)
    assert parts.value == pytest.approx(whole.value, rel=1e-12)  # the same operator, the same probes


def test_smallest_match_eigh_in_descending_order(setup) -> None:
    model, x, y, _, exact = setup
    result = hessian.eigenvalues(model, nn.CrossEntropyLoss(), unequal(x, y), k=3, tol=1e-10, which="SA")
    np.testing.assert_allclose(result.values, exact[:3][::-1], rtol=1e-8)
    assert result.vectors is None


def test_parameter_group_gives_the_sub_block_spectrum(setup) -> None:
    model, x, y, _, _ = setup
    block = exact_hessian(model, nn.CrossEntropyLoss(), x, y, names={"2.weight", "2.bias"})
    for selector in ("2", ["2.weight", "2.bias"], model[2]):
        result = hessian.eigenvalues(model, nn.CrossEntropyLoss(), (x, y), k=2, tol=1e-10, params=selector)
        np.testing.assert_allclose(result.values, np.linalg.eigvalsh(block)[::-1][:2], rtol=1e-8)


def test_ggn_eigenvalues_equal_those_of_jt_hout_j(setup) -> None:
    model, x, y, _, _ = setup
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    shapes = [(n, p.shape) for n, p in model.named_parameters()]

    def outputs_of(v):
        named, offset = {}, 0
        for name, shape in shapes:
            named[name] = v[offset : offset + math.prod(shape)].view(shape)
            offset += math.prod(shape)
        return torch.func.functional_call(model, named, (x,))

    out = outputs_of(flat).detach()
    jac = torch.func.jacrev(outputs_of)(flat).reshape(out.numel(), -1)
    h_out = torch.func.hessian(lambda o: nn.CrossEntropyLoss()(o.view_as(out), y))(out.reshape(-1))
    ggn = (jac.T @ h_out.reshape(out.numel(), -1) @ jac).numpy()
    result = hessian.eigenvalues(model, nn.CrossEntropyLoss(), unequal(x, y), k=3, tol=1e-10, kind="ggn")
    np.testing.assert_allclose(result.values, np.linalg.eigvalsh(ggn)[::-1][:3], rtol=1e-8)


def test_unconverged_lanczos_warns(setup) -> None:
    model, x, y, _, _ = setup
    with pytest.warns(RuntimeWarning, match="without reaching tol"):
        result = hessian.eigenvalues(model, nn.CrossEntropyLoss(), (x, y), k=3, tol=1e-12, max_iter=2)
    assert result.n_hvp == 2


# ---------------------------------------------------------------------------------------------- trace


def test_trace_is_exact_when_the_budget_covers_the_dimension(setup) -> None:
    model, x, y, matrix, _ = setup
    result = hessian.trace(model, nn.CrossEntropyLoss(), unequal(x, y), n_matvec=200)
    assert result.value == pytest.approx(np.trace(matrix), rel=1e-10)
    assert result.stderr == 0.0 and result.n_hvp == matrix.shape[0]


@pytest.mark.parametrize("method", ["hutch++", "hutchinson", "xtrace"])
def test_trace_estimates_are_within_their_error(setup, method: str) -> None:
    model, x, y, matrix, _ = setup
    result = hessian.trace(model, nn.CrossEntropyLoss(), unequal(x, y), method=method, n_matvec=45, seed=3)
    assert result.n_hvp in (44, 45)  # xtrace spends an even number
    # a single estimate: 4 standard errors (an unbiased estimator fails this with p < 1e-3)
    assert abs(result.value - np.trace(matrix)) < 4 * result.stderr


# ---------------------------------------------------------------------------------------------- density


def test_density_matches_smoothed_exact_spectrum(setup) -> None:
    model, x, y, _, exact = setup
    result = hessian.density(model, nn.CrossEntropyLoss(), unequal(x, y), n_runs=20, n_steps=30, seed=0)
    assert result.nodes.shape == result.weights.shape == (20, 30) and result.n_hvp == 600
    np.testing.assert_allclose(result.weights.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(result.nodes.max(), exact[-1], rtol=1e-8)
    np.testing.assert_allclose(result.nodes.min(), exact[0], rtol=1e-8)
    sigma = 0.05
    grid = result.grid(400, sigma)
    curve = result.curve(grid, sigma)
    # ±5σ margins leave a Gaussian tail mass below 1e-6 outside the grid
    assert np.trapezoid(curve, grid) == pytest.approx(1.0, abs=1e-5)
    expected = np.exp(-0.5 * ((grid[:, None] - exact[None]) / sigma) ** 2).sum(1) / len(exact) / (
        sigma * math.sqrt(2 * math.pi)
    )
    # L1 distance of two unit-mass curves; 20 Rademacher runs on 67 eigenvalues give ~0.05 (measured over
    # seeds: 0.04–0.07), shrinking like 1/√n_runs; 0.15 flags a wrong weighting, not sampling noise
    assert np.trapezoid(np.abs(curve - expected), grid) < 0.15


def test_default_grid_and_sigma_integrate_to_one(setup) -> None:
    model, x, y, _, _ = setup
    result = hessian.density(model, nn.CrossEntropyLoss(), (x, y), n_runs=2, n_steps=10)
    grid = result.grid()
    assert len(grid) == 200
    assert np.trapezoid(result.curve(grid), grid) == pytest.approx(1.0, abs=1e-4)
    assert np.trapezoid(result.curve(), result.grid()) == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------------------------------------- model untouched


@pytest.mark.parametrize("backend", ["landscape", "pyhessian"])
def test_functions_leave_the_model_exactly_as_found(backend: str) -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Dropout(0.2), nn.Linear(6, 3)).double()
    model.train()
    x, y = mlp_data()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = state_of(model)
    hessian.eigenvalues(model, nn.CrossEntropyLoss(), unequal(x, y), k=2, tol=1e-4, backend=backend)
    hessian.trace(model, nn.CrossEntropyLoss(), (x, y), method="hutchinson", n_matvec=10, backend=backend)
    hessian.density(model, nn.CrossEntropyLoss(), (x, y), n_runs=2, n_steps=5, backend=backend)
    assert_unchanged(model, before)


# ---------------------------------------------------------------------------------------------- PyHessian backend


def test_pyhessian_backend_agrees_with_ours(setup) -> None:
    model, x, y, matrix, exact = setup
    loss_fn = nn.CrossEntropyLoss()
    for data in ((x, y), unequal(x, y)):
        theirs = hessian.eigenvalues(model, loss_fn, data, k=3, tol=1e-9, max_iter=1000, backend="pyhessian")
        ours = hessian.eigenvalues(model, loss_fn, data, k=3, tol=1e-9)
        # power iteration normalizes by ‖v‖ + 1e-6 and stops on a relative change: ~1e-5 agreement
        np.testing.assert_allclose(theirs.values, ours.values, rtol=1e-4)
        assert theirs.n_hvp > 0 and np.all(theirs.residuals < 1e-2)
    samples = hessian.trace(model, loss_fn, unequal(x, y), method="hutchinson", n_matvec=60, backend="pyhessian")
    assert samples.n_hvp == 60
    assert abs(samples.value - np.trace(matrix)) < 4 * samples.stderr
    spectrum = hessian.density(model, loss_fn, unequal(x, y), n_runs=2, n_steps=30, backend="pyhessian")
    assert spectrum.n_hvp == 60
    np.testing.assert_allclose(spectrum.weights.sum(axis=1), 1.0, atol=1e-8)
    np.testing.assert_allclose(spectrum.nodes.max(axis=1), exact[-1], rtol=1e-4)


def test_pyhessian_backend_restricts_to_a_group(setup) -> None:
    model, x, y, _, _ = setup
    block = exact_hessian(model, nn.CrossEntropyLoss(), x, y, names={"2.weight", "2.bias"})
    result = hessian.eigenvalues(model, nn.CrossEntropyLoss(), (x, y), k=1, tol=1e-9, max_iter=1000,
                                 params="2", backend="pyhessian")
    assert result.values[0] == pytest.approx(np.linalg.eigvalsh(block)[-1], rel=1e-4)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, d: hessian.eigenvalues(m, nn.CrossEntropyLoss(), d, which="SA", backend="pyhessian"), "which='LA'"),
        (lambda m, d: hessian.eigenvalues(m, nn.CrossEntropyLoss(), d, kind="ggn", backend="pyhessian"), "kind"),
        (lambda m, d: hessian.trace(m, nn.CrossEntropyLoss(), d, backend="pyhessian"), "hutchinson"),
        (lambda m, d: hessian.trace(m, nn.CrossEntropyLoss(), d, backend="other"), "backend"),
    ],
)
def test_pyhessian_backend_limits_are_clear_errors(setup, call, message) -> None:
    model, x, y, _, _ = setup
    with pytest.raises(ValueError, match=message):
        call(model, (x, y))


# ---------------------------------------------------------------------------------------------- bad input


def test_empty_data_is_an_error(setup) -> None:
    model = setup[0]
    with pytest.raises(DataError, match="empty"):
        hessian.eigenvalues(model, nn.CrossEntropyLoss(), (torch.zeros(0, 4, dtype=torch.float64),
                                                            torch.zeros(0, dtype=torch.long)))


@pytest.mark.parametrize("reduction, message", [("none", "scalar"), ("sum", "reduction='mean'")])
def test_non_mean_losses_are_loss_errors(setup, reduction: str, message: str) -> None:
    model, x, y, _, _ = setup
    for fn in (hessian.eigenvalues, hessian.trace, hessian.density):
        with pytest.raises(LossError, match=message):
            fn(model, nn.CrossEntropyLoss(reduction=reduction), (x, y))


def test_k_larger_than_the_parameter_count_is_an_error(setup) -> None:
    model, x, y, _, _ = setup
    with pytest.raises(ValueError, match="k=68 exceeds"):
        hessian.eigenvalues(model, nn.CrossEntropyLoss(), (x, y), k=68)
    with pytest.raises(ValueError, match="k=4 exceeds"):
        hessian.eigenvalues(model, nn.CrossEntropyLoss(), (x, y), k=4, params="2.bias")


def test_model_without_trainable_parameters_is_an_error(setup) -> None:
    _, x, y, _, _ = setup
    model = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        hessian.trace(model, nn.CrossEntropyLoss(), (x, y))


def test_nan_loss_raises_from_the_functions(setup) -> None:
    _, x, y, _, _ = setup
    model = mlp()
    with torch.no_grad():
        model[2].bias[0] = float("inf")
    with pytest.raises(NonFiniteLossError):
        hessian.eigenvalues(model, nn.CrossEntropyLoss(), (x, y))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"method": "power"}, "method"), ({"n_matvec": 2}, "n_matvec"), ({"kind": "fisher"}, "kind")],
)
def test_bad_trace_arguments_are_errors(setup, kwargs, message) -> None:
    model, x, y, _, _ = setup
    with pytest.raises(ValueError, match=message):
        hessian.trace(model, nn.CrossEntropyLoss(), (x, y), **kwargs)


# ---------------------------------------------------------------------------------------------- the probe


def context(model: nn.Module, lr: float | None = None) -> ProbeContext:
    x, y = mlp_data()
    return ProbeContext(model=model, loss_fn=nn.CrossEntropyLoss(), train=as_batches(unequal(x, y)), lr=lr)


def test_probe_stores_the_documented_keys(setup) -> None:
    _, _, _, matrix, exact = setup
    model = mlp()
    before = state_of(model)
    params = {**hessian.PROBE.defaults, "lambda_min": True, "tol": 1e-8}
    result = hessian.PROBE.run(context(model, lr=0.1), **params)
    assert result.valid
    k = params["k"]
    expected_scalars = {"lambda_max", "trace", "trace_stderr", "n_hvp", "lambda_min", "eos_ratio", "peak_memory_mb"}
    assert set(result.scalars) == expected_scalars | {f"lambda_{i}" for i in range(1, k + 1)}
    from landscape.memory import resident_peak_mb

    # the process's peak RSS during the measurement: at least the interpreter with torch, at most the peak so far
    assert 50 < result.scalars["peak_memory_mb"] <= resident_peak_mb()
    assert set(result.arrays) == {"eigenvalues", "residuals", "density_nodes", "density_weights", "density_grid",
                                  "density_curve"}
    assert result.arrays["eigenvalues"].shape == result.arrays["residuals"].shape == (k,)
    shape = (params["n_runs"], params["n_steps"])
    assert result.arrays["density_nodes"].shape == result.arrays["density_weights"].shape == shape
    assert result.arrays["density_grid"].shape == result.arrays["density_curve"].shape == (200,)
    assert result.scalars["lambda_max"] == pytest.approx(exact[-1], rel=1e-8)
    assert result.scalars["lambda_min"] == pytest.approx(exact[0], rel=1e-6)
    assert result.scalars["eos_ratio"] == pytest.approx(exact[-1] * 0.1 / 2, rel=1e-8)
    # 60 products < 67 parameters: a Hutch++ estimate, within 4 of its standard errors
    assert abs(result.scalars["trace"] - np.trace(matrix)) < 4 * result.scalars["trace_stderr"]
    assert result.params == params
    assert_unchanged(model, before)


def test_probe_without_density_or_lr(setup) -> None:
    result = hessian.PROBE.run(context(mlp()), **{**hessian.PROBE.defaults, "density": False, "k": 2})
    assert "eos_ratio" not in result.scalars and "lambda_min" not in result.scalars
    assert set(result.arrays) == {"eigenvalues", "residuals"}
    assert set(result.scalars) == {"lambda_max", "lambda_1", "lambda_2", "trace", "trace_stderr", "n_hvp",
                                   "peak_memory_mb"}


def test_probe_products_on_parts_give_the_same_result(setup) -> None:
    _, _, _, _, exact = setup
    params = {**hessian.PROBE.defaults, "density": False, "k": 2, "tol": 1e-8}
    whole = hessian.PROBE.run(context(mlp()), **params)
    parts = hessian.PROBE.run(context(mlp()), **{**params, "max_batch_size": 3})
    assert parts.scalars["lambda_max"] == pytest.approx(exact[-1], rel=1e-8)
    assert parts.scalars["lambda_max"] == pytest.approx(whole.scalars["lambda_max"], rel=1e-10)
    assert parts.scalars["trace"] == pytest.approx(whole.scalars["trace"], rel=1e-10)
    assert parts.params["max_batch_size"] == 3


def test_probe_returns_invalid_for_a_nan_loss() -> None:
    model = mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = hessian.PROBE.run(context(model), **hessian.PROBE.defaults)
    assert not result.valid and "nan" in result.message
    assert result.params["k"] == hessian.PROBE.defaults["k"]


def test_eigenvalues_with_a_float32_basis_on_the_cpu_match_the_exact_spectrum(setup) -> None:
    """A float32 Krylov state rounds the basis at ~6e-8: the top eigenvalues of a float64 model still
    agree with the exact Hessian's to 1e-5 relative."""
    model, x, y, _, exact = setup
    got = hessian.eigenvalues(model, nn.CrossEntropyLoss(), (x, y), k=2, tol=1e-6, krylov_dtype=torch.float32,
                              basis_device="cpu")
    np.testing.assert_allclose(got.values, exact[::-1][:2], rtol=1e-5)
