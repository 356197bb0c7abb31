"""Continuous power-law fit of a spectrum's tail: maximum-likelihood exponent, xmin by minimum KS distance.

For the tail ``x ≥ xmin`` of size ``n`` of a sample from ``p(x) ∝ x^(−α)``, the maximum-likelihood exponent
is ``α = 1 + n / Σ ln(xᵢ / xmin)`` with standard error ``(α − 1)/√n``; ``xmin`` is the candidate (every
sample value that leaves at least ``min_tail`` points in the tail) whose fit has the smallest
Kolmogorov–Smirnov distance between the tail's empirical CDF and ``F(x) = 1 − (x / xmin)^(1−α)``
(Clauset, Shalizi & Newman 2009).

No Python loop runs per candidate: the exponents of all candidates come from one reversed cumulative sum
of ``ln x``, and KS distances are scored for blocks of candidates in one masked array operation over the
sorted sample. The search prunes: a cheap lower bound of every candidate's distance (the same maximum over
``O(√n)`` points of its tail) is computed at once, and exact distances only for the candidates whose bound
is below the best distance found so far; the minimum is exactly the full scan's.

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
_REFINE_BLOCK = 64  # candidates scored exactly per pass of the pruned search
# The exact distance to a step CDF is max_k |F(x_k) − (k + ½)/m| + 1/(2m): one comparison per point.
_OFFSET = {"two_sided": 0.5, "lower": 0.0}


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


def _exponents(logs: np.ndarray, n_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, tail sizes)`` of the first ``n_candidates`` candidates, from one reversed cumulative sum."""
    n = logs.size
    suffix = np.cumsum(logs[::-1])[::-1]  # suffix[i] = Σ_{j ≥ i} ln x_j
    tail = (n - np.arange(n_candidates)).astype(np.float64)
    excess = suffix[:n_candidates] - tail * logs[:n_candidates]  # Σ ln(x_j / x_i) over the tail
    with np.errstate(divide="ignore", invalid="ignore"):
        alphas = np.where(excess > 0, 1.0 + tail / excess, np.inf)
    return alphas, tail


def _gaps(log_ratio: np.ndarray, alphas: np.ndarray, rank: np.ndarray, inv_size: np.ndarray,
          offset: float) -> np.ndarray:
    """``|F(x) − (rank + offset)/m|`` for rows of candidates (in place over ``log_ratio`` = ln(x/xmin))."""
    gap = log_ratio
    with np.errstate(invalid="ignore", over="ignore"):  # constant tails (alpha = inf) are dropped by the caller
        gap *= (1.0 - alphas)[:, None]
        np.exp(gap, out=gap)
    np.subtract(1.0, gap, out=gap)  # the fitted CDF F(x)
    gap -= (rank + offset) * inv_size
    return np.abs(gap, out=gap)


def _distances(logs: np.ndarray, alphas: np.ndarray, tail: np.ndarray, rows: np.ndarray, offset: float) -> np.ndarray:
    """Exact KS distances of the candidates ``rows`` (sorted), scored together in one pass."""
    cols = np.arange(rows[0], logs.size)
    inv_size = 1.0 / tail[rows][:, None]
    rank = (cols[None, :] - rows[:, None]).astype(np.float64)  # position within each candidate's tail
    gap = _gaps(logs[cols][None, :] - logs[rows][:, None], alphas[rows], rank, inv_size, offset)
    gap[rank < 0] = 0.0  # points below the candidate are not in its tail
    worst = gap.max(axis=1) + offset * inv_size[:, 0]
    return np.where(np.isfinite(alphas[rows]), worst, np.inf)


def _lower_bounds(logs: np.ndarray, alphas: np.ndarray, tail: np.ndarray, offset: float) -> np.ndarray:
    """A lower bound of every candidate's KS distance: the same maximum over a subset of its tail.

    The subset is the first ``s`` points of each tail, every ``s``-th point after them and the last one,
    ``s ≈ √n / 2``: ``O(n^1.5)`` work for all candidates together instead of ``O(n²)``.
    """
    n, n_candidates = logs.size, alphas.size
    stride = max(1, int(math.sqrt(n) / 2))
    ranks = np.union1d(np.arange(stride), np.arange(0, n, stride)).astype(np.int64)
    rank = np.broadcast_to(ranks[None, :], (n_candidates, ranks.size)).astype(np.float64)
    rank = np.concatenate([rank, (tail - 1.0)[:, None]], axis=1)  # and each tail's last point
    inside = rank < tail[:, None]
    index = np.minimum(np.arange(n_candidates)[:, None] + rank.astype(np.int64), n - 1)
    inv_size = 1.0 / tail[:, None]
    gap = _gaps(logs[index] - logs[:n_candidates, None], alphas, rank, inv_size, offset)
    gap[~inside] = 0.0
    bound = gap.max(axis=1) + offset * inv_size[:, 0]
    return np.where(np.isfinite(alphas), bound, np.inf)


def candidate_scan(values: np.ndarray, *, min_tail: int = 10, ks: str = "two_sided") -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, ks_distances)`` for every candidate ``xmin = values[i]``, ``i = 0 … n − min_tail``.

    ``values`` must be sorted ascending and positive. A candidate whose tail is all one value has no
    finite exponent; its distance is ``inf``. (This scores all ``O(n²)`` points; the fit itself prunes.)
    """
    _check_ks(ks)
    logs = np.log(np.asarray(values, dtype=np.float64))
    n_candidates = logs.size - int(min_tail) + 1
    if n_candidates < 1:
        return np.empty(0), np.empty(0)
    alphas, tail = _exponents(logs, n_candidates)
    offset = _OFFSET[ks]
    distances = np.full(n_candidates, np.inf)
    block = max(1, _BLOCK_ELEMENTS // max(logs.size, 1))
    for start in range(0, n_candidates, block):  # blocks of candidates, each scored in one pass
        rows = np.arange(start, min(start + block, n_candidates))
        distances[rows] = _distances(logs, alphas, tail, rows, offset)
    return alphas, distances


def best_candidate(values: np.ndarray, *, min_tail: int = 10, ks: str = "two_sided") -> tuple[int, np.ndarray, float]:
    """``(index, alphas, distance)`` of the candidate of least KS distance, exactly as a full scan finds it.

    Branch and bound: every candidate's lower bound (:func:`_lower_bounds`) is computed at once; exact
    distances are then computed for blocks of candidates in order of increasing bound, until the next
    bound exceeds the best exact distance so far. A candidate left out has a bound, hence a distance,
    strictly above the minimum, so the result (ties: the smallest index) equals ``argmin`` of the full scan.
    """
    _check_ks(ks)
    logs = np.log(np.asarray(values, dtype=np.float64))
    n_candidates = logs.size - int(min_tail) + 1
    if n_candidates < 1:
        return -1, np.empty(0), float("inf")
    alphas, tail = _exponents(logs, n_candidates)
    offset = _OFFSET[ks]
    bounds = _lower_bounds(logs, alphas, tail, offset)
    order = np.argsort(bounds, kind="stable")
    best, best_distance = -1, float("inf")
    for start in range(0, n_candidates, _REFINE_BLOCK):
        chunk = order[start : start + _REFINE_BLOCK]
        chunk = np.sort(chunk[bounds[chunk] <= best_distance])
        if chunk.size == 0:
            break
        exact = _distances(logs, alphas, tail, chunk, offset)
        winner = int(np.argmin(exact))
        if exact[winner] < best_distance or (exact[winner] == best_distance and chunk[winner] < best):
            best, best_distance = int(chunk[winner]), float(exact[winner])
    return best, alphas, best_distance


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
    best, alphas, distance = best_candidate(x, min_tail=x.size if xmin is not None else int(min_tail), ks=ks)
    if best < 0 or not np.isfinite(alphas[best]):
        return _failed("the spectrum's tail is constant: no power-law exponent", n_tail=int(x.size - best))
    n_tail = int(x.size - best)
    alpha = float(alphas[best])
    return PowerLawFit(alpha=alpha, stderr=(alpha - 1.0) / math.sqrt(n_tail), xmin=float(x[best]),
                       ks_distance=distance, n_tail=n_tail)


def tail_density(x: np.ndarray, fit: PowerLawFit, n_total: int) -> np.ndarray:
    """The fitted power law as a density over the whole sample: ``(n_tail/n_total)(α−1)/xmin·(x/xmin)^(−α)``.

    On a log-log ESD plot this line overlays the histogram of all ``n_total`` eigenvalues above ``xmin``.
    """
    x = np.asarray(x, dtype=np.float64)
    if not fit.ok:
        return np.full(x.shape, np.nan)
    weight = fit.n_tail / max(int(n_total), 1)
    return np.where(x >= fit.xmin, weight * (fit.alpha - 1.0) / fit.xmin * (x / fit.xmin) ** (-fit.alpha), np.nan)
