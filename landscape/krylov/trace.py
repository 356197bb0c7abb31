"""Trace estimators from operator products: exact, Hutchinson, Hutch++ and XTrace.

Hutchinson (1989). For random z with E[z zᵀ] = I,

    E[zᵀ H z] = E[tr(H z zᵀ)] = tr(H E[z zᵀ]) = tr(H),

so the mean of zᵀHz over m independent draws is unbiased. Rademacher z (independent entries ±1) has the
smallest variance among vectors of independent zero-mean unit-variance entries: Var(zᵀHz) = 2 (‖H‖_F² − Σᵢ Hᵢᵢ²), giving an error ~ √2 ‖H‖_F / √m.

Hutch++ (Meyer, Musco, Musco & Woodruff 2021). For any orthonormal Q and P = I − QQᵀ,

    tr(H) = tr(QᵀHQ) + tr(P H P).

The first term is computed exactly; the second is estimated by Hutchinson with test vectors drawn
independently of Q, so the sum is unbiased whatever Q is. With Q = orth(H S) for a random sketch S of s
columns, Q captures the top of the spectrum and ‖P H P‖_F ≈ the Frobenius norm of H without its s
largest eigenvalues: for a positive semi-definite H a relative error ε needs O(1/ε) products instead of
Hutchinson's O(1/ε²).

XTrace (Epperly, Tropp & Webber 2024). The exchangeable form of Hutch++: every one of the m Gaussian
test vectors ωᵢ serves both the low-rank part and the remainder. Estimate i takes Qᵢ, a basis of the
range of H Ω with column i left out, and ωᵢ, which is independent of Qᵢ; uᵢ = (I − QᵢQᵢᵀ) ωᵢ is then a
Gaussian in the (n − m + 1)-dimensional complement of range(Qᵢ), and E[uᵢᵀHuᵢ / ‖uᵢ‖²] = tr(PᵢHPᵢ) /
(n − m + 1). Hence every

    tᵢ = tr(QᵢᵀHQᵢ) + (n − m + 1) · uᵢᵀHuᵢ / ‖uᵢ‖²

is unbiased given Qᵢ, and so is their mean; the spread of the tᵢ is the error estimate. All m
leave-one-out bases come from one QR of H Ω by a rank-one downdate, so XTrace costs 2m products.

References: M. F. Hutchinson (1989), "A stochastic estimator of the trace of the influence matrix for
Laplacian smoothing splines", Commun. Stat. Simul. Comput. 18; R. A. Meyer, C. Musco, C. Musco &
D. P. Woodruff (2021), "Hutch++: Optimal stochastic trace estimation", SOSA; E. N. Epperly, J. A. Tropp
& R. J. Webber (2024), "XTrace: Making the most of every sample in stochastic trace estimation", SIAM J.
Matrix Anal. Appl. 45.

Every estimator keeps its test vectors, sketches and sums in ``krylov_dtype`` (float64 by default, or
float32) on the operator's device, whatever the operator's dtype (:mod:`landscape.krylov._linalg`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from landscape.krylov._linalg import (
    _column_dots,
    _from_signs,
    _gaussian,
    _generator,
    _noise_eps,
    _orthogonalize,
    _product,
    _rademacher,
    _signs,
    _to_numpy,
)
from landscape.krylov._linalg import krylov_dtype as _krylov_dtype
from landscape.krylov.operators import Operator


@dataclass(frozen=True)
class TraceResult:
    """A trace estimate, its standard error (see each estimator) and the operator products spent."""

    value: float
    stderr: float
    n_matvec: int


def exact_trace(op: Operator, *, krylov_dtype: torch.dtype | str | None = None) -> TraceResult:
    """``tr(H) = Σᵢ eᵢᵀ H eᵢ`` from the n unit vectors (n products; exact up to rounding)."""
    dtype = _krylov_dtype(krylov_dtype)
    total, chunk = 0.0, 64
    for start in range(0, op.size, chunk):
        stop = min(op.size, start + chunk)
        units = torch.zeros(op.size, stop - start, dtype=dtype, device=op.device)
        units[torch.arange(start, stop), torch.arange(stop - start)] = 1
        total += float(np.sum(np.diag(_to_numpy(_product(op, units, dtype, units.device)[start:stop]))))
    return TraceResult(value=total, stderr=0.0, n_matvec=op.size)


# The fewest products each estimator takes: Hutchinson needs two samples for its stderr; Hutch++ two
# deflated samples after its s ≥ 1 sketch and HQ products; XTrace two test vectors.
TRACE_MIN_MATVEC: dict[str, int] = {"hutchinson": 2, "hutch++": 4, "xtrace": 4}


def _check_budget(n_matvec: int, name: str) -> None:
    minimum = TRACE_MIN_MATVEC[name]
    if not isinstance(n_matvec, (int, np.integer)) or n_matvec < minimum:
        raise ValueError(f"n_matvec must be an integer ≥ {minimum} for {name}, got {n_matvec}.")


def _times(op: Operator, vectors: torch.Tensor) -> torch.Tensor:
    return _product(op, vectors, vectors.dtype, vectors.device)


def _quadratic_forms(op: Operator, vectors: torch.Tensor) -> np.ndarray:
    """``vᵢᵀ H vᵢ`` for every column."""
    return _column_dots(vectors, _times(op, vectors))


def hutchinson(op: Operator, n_matvec: int, *, seed: int = 0,
               krylov_dtype: torch.dtype | str | None = None) -> TraceResult:
    """Hutchinson's estimator: the mean of ``zᵀHz`` over Rademacher vectors z (unbiased).

    stderr = sample standard deviation of the ``zᵀHz`` / √n_matvec.
    """
    _check_budget(n_matvec, "hutchinson")
    samples = _quadratic_forms(op, _rademacher(op, n_matvec, _generator(seed), _krylov_dtype(krylov_dtype)))
    return TraceResult(float(samples.mean()), float(samples.std(ddof=1) / math.sqrt(n_matvec)), n_matvec)


# Below this many parameters Hutch++ and XTrace multiply all their vectors of a phase in one block (one
# pass over the data); above, in blocks of LEAN_BLOCK columns, holding as few [n, k] matrices as they can.
LEAN_SIZE = 1 << 20
LEAN_BLOCK = 8


def _lean_block(op: Operator, n_matvec: int) -> int:
    return n_matvec if op.size <= LEAN_SIZE else LEAN_BLOCK


def _times_in_blocks(op: Operator, columns: Callable[[int, int], torch.Tensor], k: int, width: int,
                     dtype: torch.dtype) -> torch.Tensor:
    """``H @ V`` for the ``k`` columns ``columns(a, b)`` gives, ``width`` at a time (one block when it covers
    them all), into one [n, k] result: the inputs of a block exist only while it is multiplied."""
    if width >= k:
        return _times(op, columns(0, k))
    out = torch.empty(op.size, k, dtype=dtype, device=op.device)
    for a in range(0, k, width):
        out[:, a:a + width] = _times(op, columns(a, min(k, a + width)))
    return out


def hutch_plus_plus(op: Operator, n_matvec: int, *, seed: int = 0,
                    krylov_dtype: torch.dtype | str | None = None) -> TraceResult:
    """Hutch++ (Meyer, Musco, Musco & Woodruff 2021): deflate the top of the spectrum, then Hutchinson.

    With s = n_matvec // 3 Rademacher sketch vectors S: Q = orth(H S) (s products), the exact part
    ``tr(QᵀHQ)`` (s products), and Hutchinson on the deflated ``(I−QQᵀ) H (I−QQᵀ)`` with the remaining
    n_matvec − 2s Rademacher vectors. Unbiased for any Q. stderr is the Hutchinson standard error of the
    deflated part (sample std / √(n_matvec − 2s)), i.e. conditional on the sketch; it is 0 when the
    deflated part vanishes (rank of H ≤ s: the estimate is then exact).
    """
    _check_budget(n_matvec, "hutch++")
    generator, dtype = _generator(seed), _krylov_dtype(krylov_dtype)
    s = min(n_matvec // 3, op.size)
    rest = n_matvec - 2 * s
    # Memory: on a large model the sketch and Q are the only [n, s] matrices held, and the test vectors
    # stay bytes until their block is multiplied (11M parameters at the default budget: 3 GB each in float64).
    sketch_signs = _signs(op, s, generator)
    tail_signs = _signs(op, rest, generator)
    width = _lean_block(op, n_matvec)
    sketch = _times_in_blocks(op, lambda a, b: _from_signs(sketch_signs[:, a:b], dtype, op.device), s, width, dtype)
    q, _ = torch.linalg.qr(sketch)
    del sketch

    def deflated(a: int, b: int) -> torch.Tensor:
        """Columns a..b of [Q | (I − QQᵀ)·tail]: HQ gives the exact part, the rest Hutchinson's samples."""
        parts = [q[:, a:min(b, s)]] if a < s else []
        if b > s:
            parts.append(_orthogonalize(_from_signs(tail_signs[:, max(a, s) - s:b - s], dtype, op.device), q))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    # one block (one pass over the data) on a small model; blocks of LEAN_BLOCK columns, each alive only
    # while it is multiplied, on a large one
    k = s + rest
    values = np.concatenate([_column_dots(block, _times(op, block))
                             for block in (deflated(a, min(k, a + width)) for a in range(0, k, width))])
    top, samples = float(np.sum(values[:s])), values[s:]
    # rest ≥ n_matvec/3 ≥ 2 (s ≤ n_matvec // 3), so the sample std is defined
    return TraceResult(top + float(samples.mean()), float(samples.std(ddof=1) / math.sqrt(rest)), 2 * s + rest)


def xtrace(op: Operator, n_matvec: int, *, seed: int = 0,
           krylov_dtype: torch.dtype | str | None = None) -> TraceResult:
    """XTrace (Epperly, Tropp & Webber 2024): the exchangeable version of Hutch++.

    With m = n_matvec // 2 Gaussian test vectors Ω and Y = HΩ = QR, each leave-one-out estimate i uses
    the basis of range(Y without column i), Qᵢ = Q(I − sᵢsᵢᵀ) with sᵢ ∝ R⁻ᵀeᵢ, and the test vector ωᵢ
    (independent of Qᵢ) for the remainder, rescaled to the expected norm of its projection:

        tᵢ = tr(QᵢᵀHQᵢ) + (n − m + 1) · uᵢᵀHuᵢ / ‖uᵢ‖²,   uᵢ = (I − QᵢQᵢᵀ) ωᵢ.

    value = mean tᵢ (2m products: HΩ and HQ); stderr = std(tᵢ) / √m, the paper's error estimate.
    When Y is rank-deficient the range of H is inside range(Q) and the value tr(QᵀHQ) is exact.
    """
    _check_budget(n_matvec, "xtrace")
    generator, dtype = _generator(seed), _krylov_dtype(krylov_dtype)
    n = op.size
    m = min(n_matvec // 2, n)
    width = _lean_block(op, m)
    drawn = generator.get_state()
    omega: torch.Tensor | None = _gaussian(op, m, generator, dtype)
    y = _times_in_blocks(op, lambda a, b: omega[:, a:b], m, width, dtype)
    omega_h_omega = _column_dots(omega, y)
    omega_sq = _column_dots(omega, omega)
    if width < m:  # a large model: Ω is drawn again after the QR rather than held through it
        omega = None
    q, r = torch.linalg.qr(y)
    del y
    if omega is None:
        generator.set_state(drawn)
        omega = _gaussian(op, m, generator, dtype)
    # HQ a block at a time (one block on a small model), reduced at once to QᵀHQ and (HQ)ᵀΩ: on a large
    # model at most two [n, m] matrices are held (Y and Q through the QR, then Q and Ω), not four
    h_parts, t_parts = [], []
    for a in range(0, m, width):
        z = _times(op, q[:, a:a + width])
        h_parts.append(q.T @ z)
        t_parts.append(z.T @ omega)
    del z
    h = _to_numpy(torch.cat(h_parts, dim=1))
    h = (h + h.T) / 2
    r_np = _to_numpy(r)
    singular = np.linalg.svd(r_np, compute_uv=False)
    if m == n or singular[-1] <= 10 * m * _noise_eps(op, dtype) * singular[0]:
        return TraceResult(float(np.trace(h)), 0.0, 2 * m)
    w = _to_numpy(q.T @ omega)  # coordinates of ωᵢ in range(Q)
    t = _to_numpy(torch.cat(t_parts, dim=0))  # column i: (HQ)ᵀωᵢ
    s_dirs = np.linalg.solve(r_np.T, np.eye(m))
    s_dirs /= np.linalg.norm(s_dirs, axis=0, keepdims=True)
    estimates = np.empty(m)
    trace_h = float(np.trace(h))
    for i in range(m):
        s_i, w_i, t_i, r_i = s_dirs[:, i], w[:, i], t[:, i], r_np[:, i]
        c = float(s_i @ w_i)
        hs = h @ s_i
        # u = ω − Q w + c Q s;  H u = y − Z w + c Z s;  every term of uᵀHu reduced to m-dimensional products.
        quad = (
            omega_h_omega[i] - t_i @ w_i + c * (t_i @ s_i)
            - w_i @ r_i + w_i @ h @ w_i - c * (w_i @ hs)
            + c * (s_i @ r_i) - c * (hs @ w_i) + c * c * (s_i @ hs)
        )
        norm_sq = omega_sq[i] - (w_i @ w_i - c * c)
        estimates[i] = trace_h - s_i @ hs + (n - m + 1) * quad / norm_sq
    return TraceResult(float(estimates.mean()), float(estimates.std(ddof=1) / math.sqrt(m)), 2 * m)


TRACE_METHODS: dict[str, Callable[..., TraceResult]] = {
    "hutchinson": hutchinson,
    "hutch++": hutch_plus_plus,
    "xtrace": xtrace,
}
