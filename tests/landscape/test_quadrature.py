"""Stochastic Lanczos quadrature (:mod:`landscape.krylov.quadrature`) against exact spectra.

Ground truth: the exact Hessian of a tiny float64 MLP (see ``curvature_cases``) and dense matrices with
known spectra; the moments of the averaged quadrature against tr(Hᵖ)/n.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from curvature_cases import CountingOperator, exact_hessian, mlp, mlp_data, spectrum_operator, unequal
from torch import nn

from landscape.curvature import CurvatureOperator
from landscape.data import as_batches
from landscape.krylov import slq


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
