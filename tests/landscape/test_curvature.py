"""The curvature operator and its kernels against exact linear algebra.

Ground truth: the Hessian of the mean loss over all samples (one merged batch) from ``torch.func.hessian``
on tiny float64 models, the GGN from ``torch.func.jacrev`` and the output Hessian, and dense matrices
with known spectra for the estimators. Float64 products agree with the exact matrices to ~1e-15
relative, so operator comparisons use 1e-10 (room for the summation order over unequal batches).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import eigsh
from torch import nn

from landscape.curvature import (
    BACKENDS,
    CurvatureOperator,
    DenseOperator,
    NonFiniteLossError,
    check_mean_loss,
    exact_trace,
    hutch_plus_plus,
    hutchinson,
    lanczos,
    select_parameters,
    slq,
    xtrace,
)
from landscape.data import as_batches
from landscape.evaluate import LossError

OPERATOR_RTOL = 1e-10


# ---------------------------------------------------------------------------------------------- models


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def cnn() -> nn.Module:
    """Conv + BatchNorm (eval mode, non-trivial running statistics) + linear head: 144 parameters."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(27, 3)
    ).double()
    bn = model[1]
    bn.running_mean.uniform_(-0.3, 0.3)
    bn.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return model


def frozen_mlp() -> nn.Module:
    model = mlp()
    model[0].bias.requires_grad_(False)
    return model


def mlp_data(n: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(n, 4, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator)


def cnn_data(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return (torch.randn(n, 1, 5, 5, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (n,), generator=generator))


def unequal(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three batches of sizes 7, 13 and the rest."""
    return [(x[:7], y[:7]), (x[7:20], y[7:20]), (x[20:], y[20:])]


CASES = {"mlp": (mlp, mlp_data), "cnn_bn": (cnn, cnn_data), "frozen": (frozen_mlp, mlp_data)}


def exact_hessian(model: nn.Module, loss_fn, x, y, names=None) -> torch.Tensor:
    """Hessian of loss_fn(model(x), y) over the named trainable parameters (one merged batch)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad and (names is None or n in names)}
    shapes = [p.shape for p in params.values()]
    flat = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def loss_of(v):
        named, offset = {}, 0
        for name, shape in zip(params, shapes):
            count = math.prod(shape)
            named[name] = v[offset : offset + count].view(shape)
            offset += count
        return loss_fn(torch.func.functional_call(model, named, (x,)), y)

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return torch.func.hessian(loss_of)(flat)
    finally:
        for module, mode in modes:
            module.training = mode


def dense(op: CurvatureOperator) -> torch.Tensor:
    return op.matmat(torch.eye(op.size, dtype=op.dtype))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = OPERATOR_RTOL) -> None:
    scale = expected.abs().max().item()
    assert (actual - expected).abs().max().item() <= rtol * scale


# ---------------------------------------------------------------------------------------------- operator


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_matvec_equals_exact_hessian_over_unequal_batches(case: str, backend: str) -> None:
    make_model, make_data = CASES[case]
    model = make_model()
    x, y = make_data()
    loss_fn = nn.CrossEntropyLoss()
    expected = exact_hessian(model, loss_fn, x, y)
    op = CurvatureOperator(model, loss_fn, as_batches(unequal(x, y)), backend=backend)
    assert op.size == expected.shape[0]
    assert_close(dense(op), expected)
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert_close(op.matvec(v), expected @ v)


def test_frozen_parameters_are_excluded() -> None:
    model = frozen_mlp()
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(mlp_data()))
    assert "0.bias" not in op.names
    assert op.size == sum(p.numel() for p in model.parameters()) - 8


@pytest.mark.parametrize("cache_graph", [True, False])
def test_cached_and_fresh_graphs_agree(cache_graph: bool) -> None:
    model = mlp()
    x, y = mlp_data()
    expected = exact_hessian(model, nn.CrossEntropyLoss(), x, y)
    for data in ((x, y), unequal(x, y)):
        op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(data), cache_graph=cache_graph)
        assert_close(dense(op), expected)
        assert_close(dense(op), expected)  # a second pass over a cached graph gives the same matrix


def test_hvp_counter_counts_vectors_and_linear_operator_is_float64() -> None:
    model = mlp()
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(mlp_data()), max_block=3)
    op.matmat(torch.zeros(op.size, 8, dtype=torch.float64))
    assert op.n_hvp == 8
    op.matvec(torch.zeros(op.size, dtype=torch.float64))
    assert op.n_hvp == 9
    linear = op.as_linear_operator()
    out = linear.matvec(np.ones(op.size))
    assert out.dtype == np.float64 and out.shape == (op.size,)
    assert op.n_hvp == 10
    # scipy's ARPACK on our operator finds the same top eigenvalue as the exact Hessian (to its tolerance).
    x, y = mlp_data()
    top = np.linalg.eigvalsh(exact_hessian(model, nn.CrossEntropyLoss(), x, y).numpy())[-1]
    assert eigsh(linear, k=1, which="LA", tol=1e-10)[0][0] == pytest.approx(top, rel=1e-8)


def test_named_and_flat_vectors_round_trip() -> None:
    op = CurvatureOperator(frozen_mlp(), nn.CrossEntropyLoss(), as_batches(mlp_data()))
    flat = torch.arange(op.size, dtype=torch.float64)
    named = op.to_named(flat)
    assert list(named) == ["0.weight", "2.weight", "2.bias"] and named["0.weight"].shape == (8, 4)
    assert torch.equal(op.from_named(named), flat)
    assert torch.equal(op.from_named({"2.bias": named["2.bias"]})[-3:], flat[-3:])
    assert op.from_named({}).abs().sum() == 0


def test_float32_model_gives_float32_products() -> None:
    model = mlp().float()
    x, y = mlp_data()
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches((x.float(), y)))
    assert op.dtype == torch.float32
    assert op.matvec(torch.ones(op.size, dtype=torch.float64)).dtype == torch.float32


def jacobian_and_output_hessian(model, loss_fn, x, y):
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    shapes = [p.shape for p in params.values()]
    flat = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def outputs_of(v):
        named, offset = {}, 0
        for name, shape in zip(params, shapes):
            count = math.prod(shape)
            named[name] = v[offset : offset + count].view(shape)
            offset += count
        return torch.func.functional_call(model, named, (x,))

    model.eval()
    out = outputs_of(flat).detach()
    jac = torch.func.jacrev(outputs_of)(flat).reshape(out.numel(), -1)
    h_out = torch.func.hessian(lambda o: loss_fn(o.view_as(out), y))(out.reshape(-1))
    return jac, h_out.reshape(out.numel(), out.numel())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss_name", ["cross_entropy", "mse"])
def test_ggn_equals_jt_hout_j(backend: str, loss_name: str) -> None:
    model = mlp()
    x, y = mlp_data()
    if loss_name == "mse":
        y = torch.randn(len(x), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        loss_fn = nn.MSELoss()
    else:
        loss_fn = nn.CrossEntropyLoss()
    jac, h_out = jacobian_and_output_hessian(model, loss_fn, x, y)
    expected = jac.T @ h_out @ jac
    op = CurvatureOperator(model, loss_fn, as_batches(unequal(x, y)), kind="ggn", backend=backend)
    got = dense(op)
    assert_close(got, expected)
    # positive semi-definite up to rounding: the losses are convex in the outputs
    assert np.linalg.eigvalsh(got.numpy()).min() > -1e-12


@pytest.mark.parametrize(
    "selector, names",
    [
        (["2.weight"], ["2.weight"]),
        ("0", ["0.weight", "0.bias"]),
        (["0.bias", "2"], ["0.bias", "2.weight", "2.bias"]),
    ],
)
def test_parameter_group_is_the_exact_sub_block(selector, names) -> None:
    model = mlp()
    x, y = mlp_data()
    full = exact_hessian(model, nn.CrossEntropyLoss(), x, y)
    offsets, start = {}, 0
    for name, p in model.named_parameters():
        offsets[name] = range(start, start + p.numel())
        start += p.numel()
    index = torch.tensor([i for name in names for i in offsets[name]])
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(unequal(x, y)), params=selector)
    assert list(op.names) == names
    assert_close(dense(op), full[index][:, index])


def test_submodule_selects_its_parameters() -> None:
    model = mlp()
    assert list(select_parameters(model, model[2])) == ["2.weight", "2.bias"]


def test_prefix_matches_on_dot_boundary_only() -> None:
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(11)])
    assert list(select_parameters(model, "1")) == ["1.weight", "1.bias"]


@pytest.mark.parametrize(
    "selector, message",
    [
        ("nope", "matches no parameter"),
        (["0.bias"], "only frozen"),
        (nn.Linear(2, 2), "not a submodule"),
        ([], "non-empty list"),
    ],
)
def test_bad_parameter_selection_is_a_clear_error(selector, message) -> None:
    model = frozen_mlp()
    with pytest.raises(ValueError, match=message):
        select_parameters(model, selector)


def test_model_without_trainable_parameters_is_an_error() -> None:
    model = mlp().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        select_parameters(model)


def test_operator_leaves_model_untouched_and_uses_eval_mode() -> None:
    model = cnn()
    model.train()
    model[1].eval()  # a mixed-mode model: every module's flag must come back as it was
    x, y = cnn_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {}
    for name, p in model.named_parameters():
        p.grad = torch.full_like(p, 0.5)
        grads[name] = p.grad
    modes = {name: m.training for name, m in model.named_modules()}
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(unequal(x, y)))
    got = dense(op)
    # the operator is the Hessian of the eval-mode function (BatchNorm on running statistics)
    assert_close(got, exact_hessian(model, nn.CrossEntropyLoss(), x, y))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert {name: m.training for name, m in model.named_modules()} == modes
    for name, p in model.named_parameters():
        assert p.grad is grads[name] and torch.all(p.grad == 0.5)


# ---------------------------------------------------------------------------------------------- loss checks


def test_non_scalar_loss_is_a_loss_error() -> None:
    with pytest.raises(LossError, match="scalar"):
        check_mean_loss(mlp(), nn.CrossEntropyLoss(reduction="none"), as_batches(mlp_data()))


def test_sum_reduced_loss_is_detected() -> None:
    with pytest.raises(LossError, match="reduction='mean'"):
        check_mean_loss(mlp(), nn.CrossEntropyLoss(reduction="sum"), as_batches(mlp_data()))


def test_mean_loss_passes_and_returns_the_sample_weighted_mean() -> None:
    model = mlp()
    x, y = mlp_data()
    with torch.no_grad():
        expected = float(nn.CrossEntropyLoss()(model(x), y))
    assert check_mean_loss(model, nn.CrossEntropyLoss(), as_batches(unequal(x, y))) == pytest.approx(expected, rel=1e-12)


def test_nan_loss_is_a_non_finite_loss_error() -> None:
    model = mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="nan"):
        CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(mlp_data()))


# ---------------------------------------------------------------------------------------------- Lanczos


def spectrum_operator(eigenvalues: np.ndarray, seed: int = 0) -> tuple[DenseOperator, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    return DenseOperator(torch.from_numpy((basis * eigenvalues) @ basis.T)), basis


@pytest.mark.parametrize("which", ["LA", "SA"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_lanczos_matches_eigh_of_the_exact_hessian(case: str, which: str) -> None:
    make_model, make_data = CASES[case]
    model = make_model()
    x, y = make_data()
    exact = np.linalg.eigvalsh(exact_hessian(model, nn.CrossEntropyLoss(), x, y).numpy())
    op = CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(unequal(x, y)))
    result = lanczos(op, 4, which=which, tol=1e-10, return_vectors=True)
    expected = exact[::-1][:4] if which == "LA" else exact[:4]
    # residual ≤ 1e-10·|λ| bounds the eigenvalue error by ~residual²/gap: far below 1e-8 relative.
    np.testing.assert_allclose(result.values, expected, rtol=1e-8, atol=1e-8 * abs(exact).max())
    assert result.converged
    # reported residuals are the true ‖Hv − θv‖ of the returned unit vectors
    vectors = result.vectors
    true_residuals = (dense(op) @ vectors - vectors * torch.from_numpy(result.values)).norm(dim=0).numpy()
    np.testing.assert_allclose(torch.linalg.norm(vectors, dim=0).numpy(), 1.0, atol=1e-12)
    assert np.all(np.abs(true_residuals - result.residuals) <= 1e-9 * abs(exact).max())


@pytest.mark.parametrize("block_size", [1, 3])
@pytest.mark.parametrize("max_basis", [None, 16])
def test_lanczos_blocks_and_restarts_on_a_known_spectrum(block_size: int, max_basis: int | None) -> None:
    eigenvalues = np.concatenate([[10.0, 8.0, 7.5, 7.0], np.linspace(-2.0, 5.0, 196)])
    op, _ = spectrum_operator(eigenvalues)
    result = lanczos(op, 4, tol=1e-9, block_size=block_size, max_basis=max_basis, max_iter=2000)
    assert result.converged
    np.testing.assert_allclose(result.values, [10.0, 8.0, 7.5, 7.0], rtol=1e-10)
    assert result.n_matvec == op.n_hvp
    bottom = lanczos(op, 2, which="SA", tol=1e-9, block_size=block_size, max_basis=max_basis, max_iter=2000)
    np.testing.assert_allclose(bottom.values, [-2.0, eigenvalues[4 + 1]], rtol=1e-9)


def test_block_lanczos_finds_a_repeated_eigenvalue() -> None:
    eigenvalues = np.concatenate([[5.0, 5.0, 5.0], np.linspace(0.0, 1.0, 57)])
    op, _ = spectrum_operator(eigenvalues, seed=4)
    result = lanczos(op, 3, tol=1e-10, block_size=3)
    np.testing.assert_allclose(result.values, [5.0, 5.0, 5.0], rtol=1e-10)


def test_lanczos_on_a_low_rank_operator_continues_after_breakdown() -> None:
    # rank 3: the Krylov space of one vector is invariant after 4 steps; zeros must still be found.
    eigenvalues = np.concatenate([[3.0, 2.0, 1.0], np.zeros(27)])
    op, _ = spectrum_operator(eigenvalues, seed=5)
    result = lanczos(op, 5, tol=1e-10)
    np.testing.assert_allclose(result.values, [3.0, 2.0, 1.0, 0.0, 0.0], atol=1e-10)


def test_lanczos_reports_non_convergence_at_max_iter() -> None:
    op, _ = spectrum_operator(np.linspace(1.0, 1.001, 300))
    result = lanczos(op, 5, tol=1e-14, max_iter=3)
    assert not result.converged and result.n_steps == 3 and result.n_matvec == 3


def test_lanczos_is_reproducible_for_a_seed() -> None:
    op, _ = spectrum_operator(np.linspace(0.0, 1.0, 50))
    a = lanczos(op, 3, tol=1e-3, seed=7)
    b = lanczos(op, 3, tol=1e-3, seed=7)
    assert np.array_equal(a.values, b.values) and a.n_matvec == b.n_matvec


@pytest.mark.parametrize(
    "kwargs, message",
    [({"k": 0}, "k must be"), ({"k": 51}, "k must be"), ({"k": 1, "which": "LM"}, "which"),
     ({"k": 1, "tol": 0.0}, "tol"), ({"k": 1, "block_size": 0}, "block_size"), ({"k": 1, "max_iter": 0}, "max_iter")],
)
def test_lanczos_rejects_bad_arguments(kwargs, message) -> None:
    op, _ = spectrum_operator(np.linspace(0.0, 1.0, 50))
    with pytest.raises(ValueError, match=message):
        lanczos(op, **kwargs)


# ---------------------------------------------------------------------------------------------- trace


def decaying(n: int = 80, seed: int = 0) -> tuple[DenseOperator, float]:
    """Eigenvalues 1/i² with random signs on a few: a decaying spectrum (Hutch++'s good case)."""
    values = 1.0 / np.arange(1, n + 1) ** 2
    values[[3, 10, 30]] *= -1
    op, _ = spectrum_operator(values, seed)
    return op, float(values.sum())


def test_exact_trace() -> None:
    op, value = decaying()
    result = exact_trace(op)
    assert result.value == pytest.approx(value, rel=1e-12) and result.stderr == 0 and result.n_matvec == op.size


def test_hutchinson_is_unbiased_with_a_correct_stderr() -> None:
    op, value = decaying()
    runs = np.array([[r.value, r.stderr] for r in (hutchinson(op, 20, seed=s) for s in range(300))])
    # the mean of 300 independent estimates lies within 4 standard errors of the truth (p < 1e-4 to fail)
    spread = runs[:, 0].std(ddof=1) / math.sqrt(len(runs))
    assert abs(runs[:, 0].mean() - value) < 4 * spread
    # the reported stderr matches the observed spread of single estimates within 20%
    assert runs[:, 1].mean() == pytest.approx(runs[:, 0].std(), rel=0.2)
    assert hutchinson(op, 20).n_matvec == 20


def test_hutch_plus_plus_is_unbiased_within_its_stated_error_and_beats_hutchinson() -> None:
    op, value = decaying()
    runs = [hutch_plus_plus(op, 30, seed=s) for s in range(300)]
    estimates = np.array([r.value for r in runs])
    errors = estimates - value
    z = errors / np.array([r.stderr for r in runs])
    assert abs(errors.mean()) < 4 * estimates.std(ddof=1) / math.sqrt(len(runs))
    # stderr is conditional on the sketch: z ~ t(9); |z| < 2 has probability ≈ 0.92; allow sampling noise
    assert np.mean(np.abs(z) < 2) > 0.85
    hutch_errors = np.array([hutchinson(op, 30, seed=s).value - value for s in range(300)])
    # on a 1/i² spectrum deflating the top 10 directions removes most of the variance
    assert np.sqrt(np.mean(errors**2)) < np.sqrt(np.mean(hutch_errors**2)) / 3
    assert runs[0].n_matvec == 30


def test_hutch_plus_plus_takes_two_passes_over_the_data() -> None:
    """The sketch needs one pass; HQ and the deflated test vectors share the second (each pass over a
    CurvatureOperator rebuilds every batch's gradient graph). The estimate is the textbook one."""
    op, _ = decaying()
    counting = CountingOperator(op.matrix)
    result = hutch_plus_plus(counting, 30, seed=4)
    assert counting.calls == 2 and counting.n_hvp == 30 == result.n_matvec
    # reference: the same Rademacher draws (sketch first, then the test vectors), every product separate
    generator = torch.Generator().manual_seed(4)
    sketch, tail = (torch.randint(0, 2, (op.size, k), generator=generator, dtype=torch.int8).double() * 2 - 1
                    for k in (10, 10))
    h = op.matrix
    q, _ = torch.linalg.qr(h @ sketch)
    g = tail - q @ (q.T @ tail)
    g = g - q @ (q.T @ g)
    samples = torch.einsum("ni,nm,mi->i", g, h, g)
    expected = torch.trace(q.T @ h @ q) + samples.mean()
    # float64 products of an 80×80 matrix with entries ≤ 1: agreement to rounding (~1e-15 of |tr| ≈ 1.6)
    assert result.value == pytest.approx(float(expected), abs=1e-12)
    assert result.stderr == pytest.approx(float(samples.std() / math.sqrt(10)), rel=1e-10)


@pytest.mark.parametrize("estimator", [hutch_plus_plus, xtrace])
def test_low_rank_trace_is_exact(estimator) -> None:
    values = np.concatenate([[4.0, -2.0, 1.5, 0.5], np.zeros(56)])
    op, _ = spectrum_operator(values, seed=3)
    result = estimator(op, 24, seed=1)
    assert result.value == pytest.approx(values.sum(), abs=1e-10)
    assert result.stderr == pytest.approx(0.0, abs=1e-10)


def test_xtrace_is_unbiased_within_its_stated_error() -> None:
    op, value = decaying()
    runs = [xtrace(op, 30, seed=s) for s in range(200)]
    estimates = np.array([r.value for r in runs])
    assert abs(estimates.mean() - value) < 4 * estimates.std(ddof=1) / math.sqrt(len(runs))
    # the stated error (std of the leave-one-out estimates / √m) is of the order of the real spread
    assert 0.5 < np.mean([r.stderr for r in runs]) / estimates.std() < 2.0


@pytest.mark.parametrize("estimator, minimum", [(hutchinson, 2), (hutch_plus_plus, 4), (xtrace, 4)])
def test_trace_estimators_reject_too_small_budgets(estimator, minimum) -> None:
    op, _ = decaying()
    with pytest.raises(ValueError, match="n_matvec"):
        estimator(op, minimum - 1)


# ---------------------------------------------------------------------------------------------- SLQ


class CountingOperator(DenseOperator):
    def __init__(self, matrix) -> None:
        super().__init__(matrix)
        self.calls = 0

    def matmat(self, vectors):
        self.calls += 1
        return super().matmat(vectors)


def test_slq_weights_sum_to_one_and_extreme_nodes_are_extreme_eigenvalues() -> None:
    model = mlp()
    x, y = mlp_data()
    exact = np.linalg.eigvalsh(exact_hessian(model, nn.CrossEntropyLoss(), x, y).numpy())
    op = CountingOperator(CurvatureOperator(model, nn.CrossEntropyLoss(), as_batches(unequal(x, y))).matmat(
        torch.eye(67, dtype=torch.float64)))
    quadrature = slq(op, n_runs=5, n_steps=30, seed=0)
    assert quadrature.nodes.shape == quadrature.weights.shape == (5, 30)
    np.testing.assert_allclose(quadrature.weights.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(quadrature.weights >= 0)
    # 30 Lanczos steps resolve the outermost Ritz values of a 67-dimensional operator to rounding
    np.testing.assert_allclose(quadrature.nodes.max(axis=1), exact[-1], rtol=1e-8)
    np.testing.assert_allclose(quadrature.nodes.min(axis=1), exact[0], rtol=1e-8)
    # all chains advance together: one product call per step, n_runs vectors each
    assert op.calls == 30 and quadrature.n_matvec == op.n_hvp == 150


def test_slq_past_the_dimension_is_exact_and_padded() -> None:
    values = np.linspace(-1.0, 2.0, 12)
    op, basis = spectrum_operator(values)
    quadrature = slq(op, n_runs=3, n_steps=20, seed=1)
    np.testing.assert_allclose(quadrature.weights.sum(axis=1), 1.0, atol=1e-12)
    for run in range(3):
        used = quadrature.weights[run] > 1e-14
        np.testing.assert_allclose(np.sort(quadrature.nodes[run][used]), values, atol=1e-10)
    assert quadrature.n_matvec <= 3 * 13


def test_slq_weights_estimate_the_spectral_measure() -> None:
    """E[weight on λᵢ] = 1/n for Rademacher starts: averaged moments match tr(Hᵖ)/n."""
    values = np.linspace(0.0, 1.0, 40) ** 2
    op, _ = spectrum_operator(values, seed=6)
    quadrature = slq(op, n_runs=400, n_steps=6, seed=0)
    for power in (1, 2, 3):
        moment = np.mean(np.sum(quadrature.weights * quadrature.nodes**power, axis=1))
        # Gauss quadrature with 6 nodes is exact for degree ≤ 11; the rest is Monte-Carlo error, ~2% here
        assert moment == pytest.approx(np.mean(values**power), rel=0.06)


def test_slq_without_reorthogonalization_keeps_the_extremes() -> None:
    values = np.linspace(-1.0, 3.0, 100)
    op, _ = spectrum_operator(values)
    quadrature = slq(op, n_runs=2, n_steps=25, seed=0, reorthogonalize=False)
    np.testing.assert_allclose(quadrature.weights.sum(axis=1), 1.0, atol=1e-10)
    np.testing.assert_allclose(quadrature.nodes.max(axis=1), 3.0, rtol=1e-3)
