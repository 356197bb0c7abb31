"""Block Lanczos (:mod:`landscape.krylov.block_lanczos`) against ``numpy.linalg.eigh``.

Ground truth: the exact Hessian of tiny float64 models (see ``curvature_cases``) and dense matrices with
known spectra.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from curvature_cases import CASES, dense, exact_hessian, spectrum_operator, unequal
from torch import nn

from landscape.curvature import CurvatureOperator
from landscape.data import as_batches
from landscape.krylov import lanczos


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
     ({"k": 1, "tol": 0.0}, "tol"), ({"k": 1, "block_size": 0}, "block_size"), ({"k": 1, "max_iter": 0}, "max_iter"),
     ({"k": 1, "criterion": "change"}, "criterion")],
)
def test_lanczos_rejects_bad_arguments(kwargs, message) -> None:
    op, _ = spectrum_operator(np.linspace(0.0, 1.0, 50))
    with pytest.raises(ValueError, match=message):
        lanczos(op, **kwargs)


@pytest.mark.parametrize("tol", [1e-3, 1e-6])
@pytest.mark.parametrize("which", ["LA", "SA"])
def test_the_eigenvalue_criterion_stops_early_and_keeps_its_accuracy(tol: float, which: str) -> None:
    # separated ends over a dense bulk, as a trained network's Hessian: the residual criterion delivers
    # eigenvalues to ~tol², the eigenvalue criterion stops once their estimated error is below tol
    eigenvalues = np.concatenate([[23.0, 20.0, 14.0], np.linspace(-1.5, 6.0, 397)])
    op, _ = spectrum_operator(eigenvalues, seed=2)
    exact = np.sort(eigenvalues)[::-1][:3] if which == "LA" else np.sort(eigenvalues)[:3]
    by_residual = lanczos(op, 3, which=which, tol=tol)
    by_value = lanczos(op, 3, which=which, tol=tol, criterion="eigenvalue")
    assert by_residual.converged and by_value.converged
    assert by_value.n_matvec < by_residual.n_matvec
    order = np.argsort(-by_value.values) if which == "LA" else np.argsort(by_value.values)
    errors = np.abs(by_value.values[order] - exact) / np.abs(exact)
    assert np.all(errors <= tol), errors
