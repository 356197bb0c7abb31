"""Continuous power-law fit of a spectrum's tail: maximum-likelihood exponent, xmin by minimum KS distance.

For the tail ``x ≥ xmin`` of size ``n`` of a sample from ``p(x) ∝ x^(−α)``, the maximum-likelihood exponent
is ``α = 1 + n / Σ ln(xᵢ / xmin)`` with standard error ``(α − 1)/√n``; ``xmin`` is the candidate (every
sample value that leaves at least ``min_tail`` points in the tail) whose fit has the smallest
Kolmogorov–Smirnov distance between the tail's empirical CDF and ``F(x) = 1 − (x / xmin)^(1−α)``
(Clauset, Shalizi & Newman 2009).

Every candidate is scored at once: the sums ``Σ ln xⱼ`` over each tail come from one reversed cumulative
sum, and the KS distances of a block of candidates are one masked array operation over the sorted sample,
so the cost is ``O(n²)`` arithmetic in a handful of numpy calls and no Python loop runs per candidate.

Two KS conventions: ``"two_sided"`` is the exact supremum distance to the empirical step function (both
sides of each step); ``"lower"`` compares ``F`` with the CDF just below each point only, which is what
WeightWatcher (and the ``powerlaw`` package) minimize. The exact distance is at least ``1/n`` on a tail
of ``n`` points, so it does not reward tiny tails the way the one-sided distance can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

KS_CONVENTIONS = ("two_sided", "lower")
_BLOCK_ELEMENTS = 1 << 22  # candidates × sample points scored per numpy pass (32 MiB in float64)


@dataclass(frozen=True)
class PowerLawFit:
    """A tail fit: exponent, its standard error, ``xmin``, the KS distance and the tail size.

    ``message`` is set (and the numbers are NaN) when no fit was possible, e.g. too few points.
    """

    alpha: float
    stderr: float
    xmin: float
    ks_distance: float
    n_tail: int
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.message is None


def _failed(message: str, n_tail: int = 0) -> PowerLawFit:
    nan = float("nan")
    return PowerLawFit(alpha=nan, stderr=nan, xmin=nan, ks_distance=nan, n_tail=n_tail, message=message)


def _check_ks(ks: str) -> str:
    if ks not in KS_CONVENTIONS:
        raise ValueError(f"ks must be one of {', '.join(map(repr, KS_CONVENTIONS))}, got {ks!r}.")
    return ks


def candidate_scan(values: np.ndarray, *, min_tail: int = 10, ks: str = "two_sided") -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, ks_distances)`` for every candidate ``xmin = values[i]``, ``i = 0 … n − min_tail``.

    ``values`` must be sorted ascending and positive. A candidate whose tail is all one value has no
    finite exponent; its distance is ``inf``.
    """
    _check_ks(ks)
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    n_candidates = n - int(min_tail) + 1
    if n_candidates < 1:
        return np.empty(0), np.empty(0)
    logs = np.log(x)
    suffix = np.cumsum(logs[::-1])[::-1]  # suffix[i] = Σ_{j ≥ i} ln x_j
    idx = np.arange(n_candidates)
    tail = (n - idx).astype(np.float64)
    excess = suffix[:n_candidates] - tail * logs[:n_candidates]  # Σ ln(x_j / x_i) over the tail
    with np.errstate(divide="ignore", invalid="ignore"):
        alphas = np.where(excess > 0, 1.0 + tail / excess, np.inf)
    distances = np.full(n_candidates, np.inf)
    # The exact distance to a step CDF is max_k |F(x_k) − (k + ½)/m| + 1/(2m): one comparison per point.
    offset = 0.5 if ks == "two_sided" else 0.0
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, n_candidates, block):  # blocks of candidates, each scored in one pass
        rows = idx[start : start + block]
        cols = np.arange(rows[0], n)
        inv_size = 1.0 / tail[rows][:, None]
        rank = (cols[None, :] - rows[:, None]).astype(np.float64)  # position within each candidate's tail
        gap = logs[cols][None, :] - logs[rows][:, None]
        with np.errstate(invalid="ignore", over="ignore"):  # constant tails (alpha = inf) are dropped below
            gap *= (1.0 - alphas[rows])[:, None]
            np.exp(gap, out=gap)
        np.subtract(1.0, gap, out=gap)  # the fitted CDF F(x_k)
        gap -= (rank + offset) * inv_size
        np.abs(gap, out=gap)
        gap[rank < 0] = 0.0  # points below the candidate are not in its tail
        worst = gap.max(axis=1) + offset * inv_size[:, 0]
        distances[rows] = np.where(np.isfinite(alphas[rows]), worst, np.inf)
    return alphas, distances


def fit_power_law(values: np.ndarray, *, xmin: float | None = None, min_tail: int = 10,
                  ks: str = "two_sided") -> PowerLawFit:
    """Fit ``p(x) ∝ x^(−α)`` to the tail of ``values`` (non-positive values are ignored).

    ``xmin=None`` searches every candidate; a given ``xmin`` fits the tail ``x ≥ xmin`` only. Fewer than
    ``min_tail`` points in the tail gives a fit with NaN numbers and a message, not a number.
    """
    _check_ks(ks)
    if int(min_tail) < 2:
        raise ValueError(f"min_tail must be at least 2 (a tail of one point has no exponent), got {min_tail}.")
    x = np.asarray(values, dtype=np.float64).ravel()
    x = np.sort(x[np.isfinite(x) & (x > 0)])
    if xmin is not None:
        x = x[x >= float(xmin)]
    if x.size < int(min_tail):
        where = "at or above xmin" if xmin is not None else "positive"
        return _failed(f"too few eigenvalues for a power-law fit ({x.size} {where} < min_tail={int(min_tail)})",
                       n_tail=int(x.size))
    if xmin is not None:
        alphas, distances = candidate_scan(x, min_tail=x.size, ks=ks)
        best = 0
    else:
        alphas, distances = candidate_scan(x, min_tail=int(min_tail), ks=ks)
        if not np.isfinite(distances).any():
            return _failed("the spectrum's tail is constant: no power-law exponent", n_tail=int(x.size))
        best = int(np.argmin(distances))  # ties: the smallest xmin (the longest tail)
    if not np.isfinite(alphas[best]):
        return _failed("the spectrum's tail is constant: no power-law exponent", n_tail=int(x.size - best))
    n_tail = int(x.size - best)
    alpha = float(alphas[best])
    return PowerLawFit(alpha=alpha, stderr=(alpha - 1.0) / math.sqrt(n_tail), xmin=float(x[best]),
                       ks_distance=float(distances[best]), n_tail=n_tail)


def tail_density(x: np.ndarray, fit: PowerLawFit, n_total: int) -> np.ndarray:
    """The fitted power law as a density over the whole sample: ``(n_tail/n_total)(α−1)/xmin·(x/xmin)^(−α)``.

    On a log-log ESD plot this line overlays the histogram of all ``n_total`` eigenvalues above ``xmin``.
    """
    x = np.asarray(x, dtype=np.float64)
    if not fit.ok:
        return np.full(x.shape, np.nan)
    weight = fit.n_tail / max(int(n_total), 1)
    return np.where(x >= fit.xmin, weight * (fit.alpha - 1.0) / fit.xmin * (x / fit.xmin) ** (-fit.alpha), np.nan)
