"""Trace estimators (:mod:`landscape.krylov.trace`) on dense matrices with known traces.

Unbiasedness is checked on the mean of a few hundred independent estimates (4 standard errors: a
chance failure has probability < 1e-4), the stated standard errors against the observed spread.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from curvature_cases import CountingOperator, spectrum_operator

from landscape.krylov import DenseOperator, exact_trace, hutch_plus_plus, hutchinson, xtrace


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


def test_hutch_plus_plus_on_a_large_model_multiplies_in_blocks_with_the_same_estimate(monkeypatch) -> None:
    # Above LEAN_SIZE parameters no [n, n_matvec] matrix is formed: the vectors go through in blocks of
    # LEAN_BLOCK columns. The draws and every column's product are the same, so is the estimate (to rounding).
    import landscape.krylov.trace as trace_module

    op, _ = decaying()
    counting = CountingOperator(op.matrix)
    whole = hutch_plus_plus(counting, 60, seed=5)
    assert counting.calls == 2  # the sketch, then HQ with the deflated test vectors: two passes
    monkeypatch.setattr(trace_module, "LEAN_SIZE", 0)
    counting.calls = 0
    blocked = hutch_plus_plus(counting, 60, seed=5)
    block = trace_module.LEAN_BLOCK  # the sketch, then HQ and the tail together, in blocks
    assert counting.calls == math.ceil(20 / block) + math.ceil(40 / block)
    assert blocked.n_matvec == whole.n_matvec == 60
    assert blocked.value == pytest.approx(whole.value, rel=1e-12)
    assert blocked.stderr == pytest.approx(whole.stderr, rel=1e-10)
def test_xtrace_on_a_large_model_multiplies_in_blocks_with_the_same_estimate(monkeypatch) -> None:
    # Above LEAN_SIZE parameters XTrace multiplies Ω and Q in blocks of LEAN_BLOCK columns, draws Ω again
    # after the QR instead of holding it, and never holds HQ: the same draws, the same estimate.
    import landscape.krylov.trace as trace_module

    op, _ = decaying()
    counting = CountingOperator(op.matrix)
    whole = xtrace(counting, 60, seed=3)
    assert counting.calls == 2  # HΩ, then HQ
    monkeypatch.setattr(trace_module, "LEAN_SIZE", 0)
    counting.calls = 0
    blocked = xtrace(counting, 60, seed=3)
    assert counting.calls == 2 * math.ceil(30 / trace_module.LEAN_BLOCK)
    assert blocked.n_matvec == whole.n_matvec == 60
    assert blocked.value == pytest.approx(whole.value, rel=1e-12)
    assert blocked.stderr == pytest.approx(whole.stderr, rel=1e-10)
    low_rank = CountingOperator(torch.diag(torch.tensor([3.0, 2.0, 1.0] + [0.0] * 37, dtype=torch.float64)))
    assert xtrace(low_rank, 20, seed=1).value == pytest.approx(6.0, rel=1e-12)  # rank-deficient Y: exact


