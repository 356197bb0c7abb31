"""The Marchenko–Pastur law, its Tracy–Widom edge margin, and a robust fit of a matrix's random bulk.

Convention: ``W`` is ``N × M`` with ``N ≥ M`` (transpose otherwise) and i.i.d. entries of variance ``s²``;
the ESD is the ``M`` eigenvalues of ``WᵀW / N``. As ``N, M → ∞`` with ``y = M / N ≤ 1`` fixed it converges to
the Marchenko–Pastur law with scale ``s²`` and ratio ``y``: support ``[s²(1 − √y)², s²(1 + √y)²]`` and density

    ρ(λ) = √((λ₊ − λ)(λ − λ₋)) / (2π s² y λ).

The largest eigenvalue of a finite pure-noise matrix exceeds ``λ₊`` by Tracy–Widom fluctuations
(Johnstone 2001): ``λ_max(XᵀX) ≈ μ + σ·TW₁`` for standard Gaussian ``X`` of shape ``n × p`` with
``μ = (√(n−1) + √p)²`` and ``σ = (√(n−1) + √p)(1/√(n−1) + 1/√p)^(1/3)``. An eigenvalue is a *spike* when it
lies above ``λ₊`` plus that margin at a chosen confidence level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, stats

# Chiani (2014): TW₁ is well approximated by Gamma(k, θ) − a (matching its mean, variance and skewness).
_TW1_SHAPE, _TW1_SCALE, _TW1_SHIFT = 46.446, 0.186054, 9.84801


def _check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"the Marchenko–Pastur ratio y = M/N must lie in (0, 1], got {ratio}.")
    return ratio


def edges(ratio: float, scale: float = 1.0) -> tuple[float, float]:
    """The bulk's support ``(λ₋, λ₊) = s²(1 ∓ √y)²``."""
    root = math.sqrt(_check_ratio(ratio))
    return scale * (1.0 - root) ** 2, scale * (1.0 + root) ** 2


def pdf(x: np.ndarray | float, ratio: float, scale: float = 1.0) -> np.ndarray:
    """Marchenko–Pastur density at ``x`` (zero outside the support)."""
    lo, hi = edges(ratio)
    u = np.asarray(x, dtype=np.float64) / scale
    inside = (u > lo) & (u < hi)
    safe = np.where(inside, u, 1.0)
    value = np.sqrt(np.clip((hi - safe) * (safe - lo), 0.0, None)) / (2.0 * np.pi * ratio * safe)
    return np.where(inside, value / scale, 0.0)


def _antiderivative(u: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """∫ √((hi − t)(t − lo)) / t dt, the closed form whose differences give the CDF."""
    root = np.sqrt(np.clip((hi - u) * (u - lo), 0.0, None))
    first = np.arcsin(np.clip((2.0 * u - lo - hi) / (hi - lo), -1.0, 1.0))
    geometric = math.sqrt(lo * hi)
    if geometric == 0.0:
        return root + 0.5 * (lo + hi) * first
    second = np.arcsin(np.clip(((lo + hi) * u - 2.0 * lo * hi) / (u * (hi - lo)), -1.0, 1.0))
    return root + 0.5 * (lo + hi) * first - geometric * second


def cdf(x: np.ndarray | float, ratio: float, scale: float = 1.0) -> np.ndarray:
    """Marchenko–Pastur cumulative distribution at ``x`` (closed form, exact to rounding)."""
    lo, hi = edges(ratio)
    u = np.clip(np.asarray(x, dtype=np.float64) / scale, max(lo, 1e-300), hi)
    value = (_antiderivative(u, lo, hi) - _antiderivative(np.asarray(max(lo, 1e-300)), lo, hi)) / (2 * np.pi * ratio)
    value = np.where(np.asarray(x) / scale >= hi, 1.0, value)
    return np.clip(np.where(np.asarray(x) / scale <= lo, 0.0, value), 0.0, 1.0)


@lru_cache(maxsize=256)
def median(ratio: float) -> float:
    """The median of the unit-scale law with ratio ``y`` (root of ``cdf = 1/2``)."""
    lo, hi = edges(ratio)
    return float(optimize.brentq(lambda u: float(cdf(u, ratio)) - 0.5, lo, hi, xtol=1e-14, rtol=1e-14))


@lru_cache(maxsize=1024)
def tracy_widom_quantile(level: float) -> float:
    """The ``level`` quantile of the real (β = 1) Tracy–Widom law, by Chiani's gamma approximation
    (cached: ``scipy.stats`` takes ~0.1 ms a call, and every layer of a model asks for the same few levels)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"tw_level must lie strictly between 0 and 1, got {level}.")
    return float(stats.gamma.ppf(level, _TW1_SHAPE, scale=_TW1_SCALE) - _TW1_SHIFT)


def tracy_widom_margin(n: int, m: int, level: float = 0.99, n_matrices: int = 1) -> float:
    """How far above ``λ₊`` (unit scale, ESD of ``WᵀW/n``) a pure-noise ``λ_max`` reaches at ``level``.

    With ``n_matrices`` independent matrices pooled into one ESD (conv kernel slices) the level applies to
    the largest of them all: each matrix is held to ``level^(1/n_matrices)``.
    """
    n, m = max(int(n), int(m)), min(int(n), int(m))
    per_matrix = float(level) ** (1.0 / max(int(n_matrices), 1))
    rows, cols = math.sqrt(max(n - 1, 1)), math.sqrt(m)
    sigma = (rows + cols) * (1.0 / rows + 1.0 / cols) ** (1.0 / 3.0)
    return max(tracy_widom_quantile(per_matrix), 0.0) * sigma / n


@dataclass(frozen=True)
class Bulk:
    """The random bulk fitted to an ESD: scale ``s²``, its edge ``λ₊``, the spike threshold, the spikes."""

    scale: float
    ratio: float
    edge: float
    threshold: float
    n_spikes: int


def bulk_threshold(scale: float, ratio: float, n: int, m: int, level: float, n_matrices: int = 1) -> tuple[float, float]:
    """``(λ₊, λ₊ + Tracy–Widom margin)`` for a bulk of scale ``s²``."""
    edge = edges(ratio, scale)[1]
    return edge, edge + scale * tracy_widom_margin(n, m, level, n_matrices)


def fit_bulk(evals: np.ndarray, n: int, m: int, *, level: float = 0.99, n_matrices: int = 1,
             max_iter: int = 20) -> Bulk:
    """Fit the MP bulk to an ESD robustly and count the spikes above it.

    The scale is the one whose MP median equals the median of the bulk eigenvalues: the median moves by
    only ``r/(2M)`` in quantile under ``r`` outliers, and eigenvalue rigidity makes it far steadier than a
    moment fit (the mean of λ is ``s²`` only when no spike carries mass). The ``r`` eigenvalues above the
    threshold are then left out and the median matched again, until ``r`` no longer changes.
    """
    values = np.sort(np.asarray(evals, dtype=np.float64))
    ratio = min(n, m) / max(n, m)
    centre = median(ratio)
    spikes, scale, edge, threshold = 0, float("nan"), float("nan"), float("nan")
    for _ in range(max_iter):
        bulk = values[: values.size - spikes]
        if bulk.size == 0:
            break
        scale = float(np.median(bulk)) / centre
        edge, threshold = bulk_threshold(scale, ratio, n, m, level, n_matrices)
        found = int(np.count_nonzero(values > threshold))
        if found == spikes or found >= values.size:
            spikes = found
            break
        spikes = found
    return Bulk(scale=scale, ratio=ratio, edge=edge, threshold=threshold, n_spikes=spikes)
