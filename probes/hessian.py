"""Hessian spectra at a checkpoint: extreme eigenvalues, trace and spectral density of the loss Hessian.

All three read the curvature operator of :mod:`landscape.curvature` (the Hessian, or the Gauss–Newton
matrix with ``kind="ggn"``, of the sample-weighted mean loss over ``data``, w.r.t. the trainable
parameters or the group chosen by ``params``):

* :func:`eigenvalues` — Lanczos with full reorthogonalization, stopped on Ritz residuals;
* :func:`trace` — Hutch++ (default), XTrace or Hutchinson, exact when the budget covers the dimension;
* :func:`density` — stochastic Lanczos quadrature, all chains advanced together.

``backend="pyhessian"`` computes the same quantities with the PyHessian package (power iteration,
Hutchinson, and its SLQ method with a working eigen-solver), for comparison. Every function leaves the
model as it found it (weights, buffers, modes, ``.grad``).

The registered probe ``hessian`` stores ``lambda_max``, ``lambda_1..k``, ``trace``, ``trace_stderr``,
``n_hvp`` (and ``lambda_min``, ``eos_ratio`` when asked / when the learning rate is known), and the
arrays ``eigenvalues``, ``residuals``, ``density_nodes``, ``density_weights``, ``density_grid``,
``density_curve``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from landscape.curvature import (
    KINDS,
    TRACE_METHODS,
    TRACE_MIN_MATVEC,
    CurvatureOperator,
    NonFiniteLossError,
    ParamSelector,
    exact_trace,
    lanczos,
    slq,
)
from landscape.data import Batches, as_batches
from landscape.distributed import curvature_operator
from landscape.evaluate import LossFn
from landscape.memory import peak_memory
from landscape.params import preserved, trainable_parameters
from landscape.probe import ProbeContext, Result

__all__ = [
    "PROBE",
    "Eigen",
    "HessianProbe",
    "SpectralDensity",
    "TraceEstimate",
    "density",
    "eigenvalues",
    "trace",
]

BACKENDS = ("landscape", "pyhessian")
WHICH = ("LA", "SA")
# Full reorthogonalization in SLQ keeps n_runs · n_steps vectors; above this many bytes, use the
# three-term recurrence instead.
SLQ_REORTH_BYTES = 1 << 30
# Single-vector Lanczos: fewest products, and on CPU also the least time. Measured on a 137k-parameter
# CNN over 7 batches (top-5, tol 1e-3): block 1: 17 products, block 2: 22, block 3: 24, block 5: 30, and
# the shared forward pass of a block did not make up for the extra products.
EIGEN_BLOCK_SIZE = 1


@dataclass(frozen=True)
class Eigen:
    """Eigenvalues in descending order, their eigenvectors (named tensors) and Ritz residual norms.

    ``residuals[i] = ‖H vᵢ − λᵢ vᵢ‖`` for the unit vector vᵢ; ``n_hvp`` Hessian-vector products spent.
    """

    values: np.ndarray
    vectors: list[dict[str, torch.Tensor]] | None
    residuals: np.ndarray
    n_hvp: int


@dataclass(frozen=True)
class TraceEstimate:
    """A trace estimate, its standard error (0 when exact) and the Hessian-vector products spent."""

    value: float
    stderr: float
    n_hvp: int


@dataclass(frozen=True)
class SpectralDensity:
    """Gauss quadrature nodes and weights of the spectral density, one row per SLQ run.

    The density estimate is φ(t) = (1/n_runs) Σ_r Σ_j weights[r, j] · δ(t − nodes[r, j]); :meth:`curve`
    smooths it with a Gaussian of width σ, giving a curve that integrates to 1.
    """

    nodes: np.ndarray
    weights: np.ndarray
    n_hvp: int

    def span(self) -> tuple[float, float]:
        """Smallest and largest node carrying weight."""
        used = self.nodes[self.weights > 0]
        return float(used.min()), float(used.max())

    def default_sigma(self) -> float:
        """1% of the spectral span (so a 200-point grid resolves each Gaussian with ~2 points per σ)."""
        low, high = self.span()
        width = high - low
        return width / 100 if width > 0 else max(abs(high) * 1e-2, 1e-12)

    def grid(self, n_points: int = 200, sigma: float | None = None) -> np.ndarray:
        """Evenly spaced points from 5σ below the smallest node to 5σ above the largest."""
        if n_points < 2:
            raise ValueError(f"n_points must be at least 2, got {n_points}.")
        sigma = self.default_sigma() if sigma is None else float(sigma)
        low, high = self.span()
        return np.linspace(low - 5 * sigma, high + 5 * sigma, int(n_points))

    def curve(self, grid: np.ndarray | None = None, sigma: float | None = None) -> np.ndarray:
        """The Gaussian-smoothed density on ``grid``: (1/R) Σ_r Σ_j w_rj · N(t; node_rj, σ²).

        Integrates to 1 over the real line (to ~1e-6 over :meth:`grid`, which spans ±5σ beyond the nodes).
        """
        sigma = self.default_sigma() if sigma is None else float(sigma)
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}.")
        grid = self.grid(sigma=sigma) if grid is None else np.asarray(grid, dtype=np.float64)
        nodes = self.nodes.reshape(-1)
        weights = self.weights.reshape(-1) / self.nodes.shape[0]
        z = (grid[:, None] - nodes[None, :]) / sigma
        return (np.exp(-0.5 * z * z) @ weights) / (sigma * math.sqrt(2 * math.pi))


# --------------------------------------------------------------------------------------------------
# Argument checks shared by the public functions
# --------------------------------------------------------------------------------------------------


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def _prepare(model: nn.Module, data: object, kind: str, backend: str, loss_fn: object = None,
             max_batch_size: int | None = None) -> Batches:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "pyhessian" and not callable(loss_fn):
        raise ValueError("backend='pyhessian' needs a loss function of (outputs, targets), not the model's own loss.")
    if backend == "pyhessian" and kind != "hessian":
        raise ValueError("backend='pyhessian' computes the Hessian only; use kind='hessian'.")
    if not trainable_parameters(model):
        raise ValueError("model has no trainable parameters (every parameter has requires_grad=False).")
    batches = as_batches(data, device=_model_device(model))
    if backend == "pyhessian" and batches.structure != "pair":
        raise ValueError(f"backend='pyhessian' takes (inputs, targets) pairs only; these batches are "
                         f"{batches.batches[0].describe()}s; use backend='landscape'.")
    if backend == "pyhessian" and max_batch_size is not None:  # our operator splits its batches itself
        batches = batches.split(max_batch_size)
    return batches


def _check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}.")
    return int(value)


def _check_k(k: object, size: int) -> int:
    k = _check_positive_int(k, "k")
    if k > size:
        raise ValueError(f"k={k} exceeds the number of parameters the Hessian is taken over ({size}).")
    return k


# --------------------------------------------------------------------------------------------------
# Computations on an operator (shared by the functions and the probe)
# --------------------------------------------------------------------------------------------------


def _eigen_on(op: CurvatureOperator, k: int, *, tol: float, max_iter: int | None, return_vectors: bool,
              seed: int, which: str, krylov_dtype: torch.dtype | str | None = None,
              basis_device: torch.device | str | None = None, criterion: str = "residual") -> Eigen:
    k = _check_k(k, op.size)
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}.")
    if max_iter is not None:
        max_iter = _check_positive_int(max_iter, "max_iter")
    if which not in WHICH:
        raise ValueError(f"which must be 'LA' (largest) or 'SA' (smallest), got {which!r}.")
    start = op.n_hvp
    result = lanczos(op, k, which=which, tol=tol, max_iter=max_iter, block_size=EIGEN_BLOCK_SIZE,
                     seed=seed, return_vectors=return_vectors, krylov_dtype=krylov_dtype, basis_device=basis_device,
                     criterion=criterion)
    if not result.converged:
        warnings.warn(
            f"Lanczos stopped after {result.n_steps} steps without reaching tol={tol}: largest relative "
            f"residual {float(np.max(result.residuals / np.maximum(np.abs(result.values), 1e-300))):.2e}.",
            RuntimeWarning, stacklevel=3,
        )
    order = np.argsort(-result.values, kind="stable")
    vectors = None
    if result.vectors is not None:
        vectors = [op.to_named(result.vectors[:, i]) for i in order]
    return Eigen(result.values[order], vectors, result.residuals[order], op.n_hvp - start)


def _trace_on(op: CurvatureOperator, *, method: str, n_matvec: int, seed: int) -> TraceEstimate:
    if method not in (*TRACE_METHODS, "exact"):
        raise ValueError(f"method must be one of {(*TRACE_METHODS, 'exact')}, got {method!r}.")
    n_matvec = _check_positive_int(n_matvec, "n_matvec", TRACE_MIN_MATVEC.get(method, 1))
    start = op.n_hvp
    if method == "exact" or n_matvec >= op.size:
        result = exact_trace(op)
    else:
        result = TRACE_METHODS[method](op, n_matvec, seed=seed)
    return TraceEstimate(result.value, result.stderr, op.n_hvp - start)


def _density_on(op: CurvatureOperator, *, n_runs: int, n_steps: int, seed: int) -> SpectralDensity:
    n_runs = _check_positive_int(n_runs, "n_runs")
    n_steps = _check_positive_int(n_steps, "n_steps")
    itemsize = torch.finfo(op.dtype).bits // 8
    reorthogonalize = n_runs * n_steps * op.size * itemsize <= SLQ_REORTH_BYTES
    start = op.n_hvp
    quadrature = slq(op, n_runs, n_steps, seed=seed, reorthogonalize=reorthogonalize)
    return SpectralDensity(quadrature.nodes, quadrature.weights, op.n_hvp - start)


# --------------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------------


def eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    k: int = 5,
    *,
    tol: float = 1e-5,
    max_iter: int | None = None,
    return_vectors: bool = False,
    seed: int = 0,
    which: str = "LA",
    kind: str = "hessian",
    params: ParamSelector = None,
    backend: str = "landscape",
    krylov_dtype: torch.dtype | str | None = None,
    basis_device: torch.device | str | None = None,
    criterion: str | None = None,
    max_batch_size: int | None = None,
) -> Eigen:
    """The k largest (``which="LA"``) or smallest (``"SA"``, negative curvature) Hessian eigenvalues.

    ``tol`` is the accuracy of what is returned. For eigenvalues alone (the default,
    ``criterion="eigenvalue"``) Lanczos stops when every eigenvalue's estimated relative error is below
    ``tol`` — PyHessian's meaning of ``tol``, reached with the fewest products. With ``return_vectors``
    (default ``criterion="residual"``) it stops when every Ritz residual ‖Hv − λv‖ is below ``tol·|λ|``,
    which the vectors need; the eigenvalues are then accurate to about ``tol²`` (see
    :func:`landscape.curvature.lanczos`). Either rule gives up after ``max_iter`` steps with a
    RuntimeWarning. Values are returned in descending order for both ``which``.

    ``max_batch_size`` (here and in :func:`trace`, :func:`density`) runs every product on parts of at most
    that many samples, for the same result in less memory (see
    :class:`landscape.curvature.CurvatureOperator`). The Lanczos basis is kept in ``krylov_dtype`` (float64
    by default, float32 halves it) on ``basis_device`` (default: the model's; ``"cpu"`` keeps a large
    model's basis off the GPU). ``backend="pyhessian"`` runs PyHessian's power iteration with deflation
    (largest *magnitude*, ``tol`` = its relative change between iterations, ``max_iter`` per eigenvalue,
    default 100); its residuals are then measured with our operator (not counted in ``n_hvp``).
    """
    batches = _prepare(model, data, kind, backend, loss_fn, max_batch_size)
    with preserved(model):
        if backend == "pyhessian":
            return _pyhessian_eigenvalues(model, loss_fn, batches, k, tol=tol, max_iter=max_iter,
                                          return_vectors=return_vectors, seed=seed, which=which, params=params)
        if criterion is None:
            criterion = "residual" if return_vectors else "eigenvalue"
        with curvature_operator(model, loss_fn, batches, kind=kind, params=params,
                                max_batch_size=max_batch_size) as op:
            return _eigen_on(op, k, tol=tol, max_iter=max_iter, return_vectors=return_vectors, seed=seed,
                             which=which, krylov_dtype=krylov_dtype, basis_device=basis_device, criterion=criterion)


def trace(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    *,
    method: str = "hutch++",
    n_matvec: int = 100,
    seed: int = 0,
    kind: str = "hessian",
    params: ParamSelector = None,
    backend: str = "landscape",
    max_batch_size: int | None = None,
) -> TraceEstimate:
    """The Hessian trace from ``n_matvec`` Hessian-vector products.

    ``method``: ``"hutch++"`` (best when the spectrum decays), ``"xtrace"`` (robust on flat and decaying
    spectra), ``"hutchinson"``, or ``"exact"``. When ``n_matvec`` reaches the number of parameters the
    trace is computed exactly from the unit vectors instead (that many products, stderr 0). The standard
    errors are defined in :mod:`landscape.curvature` (Hutch++: of its Hutchinson part, given the sketch).
    ``backend="pyhessian"`` supports ``method="hutchinson"`` only and takes exactly ``n_matvec`` samples.
    """
    batches = _prepare(model, data, kind, backend, loss_fn, max_batch_size)
    with preserved(model):
        if backend == "pyhessian":
            return _pyhessian_trace(model, loss_fn, batches, method=method, n_matvec=n_matvec, seed=seed,
                                    params=params)
        with curvature_operator(model, loss_fn, batches, kind=kind, params=params,
                                max_batch_size=max_batch_size) as op:
            return _trace_on(op, method=method, n_matvec=n_matvec, seed=seed)


def density(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    *,
    n_runs: int = 10,
    n_steps: int = 80,
    seed: int = 0,
    kind: str = "hessian",
    params: ParamSelector = None,
    backend: str = "landscape",
    max_batch_size: int | None = None,
) -> SpectralDensity:
    """The spectral density by stochastic Lanczos quadrature: ``n_runs`` chains of ``n_steps`` steps.

    Costs ``n_runs · n_steps`` Hessian-vector products in ``n_steps`` passes over the data.
    ``backend="pyhessian"`` runs PyHessian's SLQ method (one chain after another, its own products and
    reorthogonalization) but diagonalizes the tridiagonal matrices with ``numpy.linalg.eigh``, since its
    own ``density()`` calls the removed ``torch.eig``.
    """
    batches = _prepare(model, data, kind, backend, loss_fn, max_batch_size)
    with preserved(model):
        if backend == "pyhessian":
            return _pyhessian_density(model, loss_fn, batches, n_runs=n_runs, n_steps=n_steps, seed=seed,
                                      params=params)
        with curvature_operator(model, loss_fn, batches, kind=kind, params=params,
                                max_batch_size=max_batch_size) as op:
            return _density_on(op, n_runs=n_runs, n_steps=n_steps, seed=seed)


# --------------------------------------------------------------------------------------------------
# PyHessian backend (probes/pyhessian_backend.py, imported when asked for)
# --------------------------------------------------------------------------------------------------


def _pyhessian_eigenvalues(*args: Any, **kwargs: Any) -> Eigen:
    from probes.pyhessian_backend import pyhessian_eigenvalues

    return pyhessian_eigenvalues(*args, **kwargs)


def _pyhessian_trace(*args: Any, **kwargs: Any) -> TraceEstimate:
    from probes.pyhessian_backend import pyhessian_trace

    return pyhessian_trace(*args, **kwargs)


def _pyhessian_density(*args: Any, **kwargs: Any) -> SpectralDensity:
    from probes.pyhessian_backend import pyhessian_density

    return pyhessian_density(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------------


class HessianProbe:
    """Top-k eigenvalues, trace and spectral density of the loss Hessian on the training data.

    Params: ``k`` eigenvalues to ``tol`` (relative Ritz residual) in at most ``max_iter`` Lanczos steps;
    ``trace_method`` with ``n_matvec`` products; when ``density``, SLQ with ``n_runs`` chains of
    ``n_steps`` steps; ``lambda_min`` also computes the smallest eigenvalue; ``kind`` "hessian" or "ggn";
    ``params`` a parameter name/prefix or list of them (None: all trainable parameters);
    ``max_batch_size`` runs every product on parts of at most that many samples (the same numbers in less
    memory; not part of the result's identity).
    """

    name = "hessian"
    defaults: ClassVar[dict[str, Any]] = {
        "k": 5,
        "tol": 1e-4,
        "max_iter": None,
        "trace_method": "hutch++",
        "n_matvec": 60,
        "density": True,
        "n_runs": 8,
        "n_steps": 40,
        "lambda_min": False,
        "kind": "hessian",
        "params": None,
        "seed": 0,
        "max_batch_size": None,
    }

    def cost(self, params: dict[str, Any], n_params: int, n_samples: int) -> dict[str, float]:
        """Full-data passes at one checkpoint: Lanczos (typically ~4k+20 products, at most its step cap),
        the trace budget, SLQ's runs × steps, and the loss check's forward pass."""
        p = {**self.defaults, **params}
        k = int(p["k"])
        cap = int(p["max_iter"]) if p["max_iter"] is not None else 20 * k + 200
        eigen = min(n_params, cap, 4 * k + 20)
        hvp = eigen + min(int(p["n_matvec"]), n_params)
        if p["density"]:
            hvp += int(p["n_runs"]) * int(p["n_steps"])
        if p["lambda_min"]:
            hvp += min(n_params, cap, 40)
        return {"forward": 2.0, "hvp": float(hvp)}

    def run(self, ctx: ProbeContext, **params: Any) -> Result:
        settings = {**self.defaults, **params}
        if isinstance(settings["params"], tuple):
            settings["params"] = list(settings["params"])
        model = ctx.model
        with preserved(model), peak_memory(_model_device(model)) as peak:
            try:
                op = curvature_operator(model, ctx.loss_fn, ctx.train.to(_model_device(model)),
                                        kind=settings["kind"], params=settings["params"],
                                        max_batch_size=settings["max_batch_size"])
            except NonFiniteLossError as error:
                return Result.invalid(str(error), settings)
            with op:
                result = self._measure(op, ctx, settings)
        result.scalars["peak_memory_mb"] = peak.mb  # GPU: most allocated; CPU: the process's peak RSS
        return result

    def _measure(self, op: CurvatureOperator, ctx: ProbeContext, settings: dict[str, Any]) -> Result:
        seed = int(settings["seed"])
        stages = ["eigenvalues", "trace"] + (["density"] if settings["density"] else [])
        stages += ["lambda_min"] if settings["lambda_min"] else []
        bar = _progress(ctx.progress, len(stages))
        scalars: dict[str, float] = {}
        arrays: dict[str, np.ndarray] = {}

        eigen = _eigen_on(op, settings["k"], tol=settings["tol"], max_iter=settings["max_iter"],
                          return_vectors=False, seed=seed, which="LA")
        scalars["lambda_max"] = float(eigen.values[0])
        for i, value in enumerate(eigen.values, start=1):
            scalars[f"lambda_{i}"] = float(value)
        arrays["eigenvalues"] = eigen.values
        arrays["residuals"] = eigen.residuals
        _advance(bar, op)

        estimate = _trace_on(op, method=settings["trace_method"], n_matvec=settings["n_matvec"], seed=seed)
        scalars["trace"] = estimate.value
        scalars["trace_stderr"] = estimate.stderr
        _advance(bar, op)

        if settings["density"]:
            spectrum = _density_on(op, n_runs=settings["n_runs"], n_steps=settings["n_steps"], seed=seed)
            grid = spectrum.grid(200)
            arrays["density_nodes"] = spectrum.nodes
            arrays["density_weights"] = spectrum.weights
            arrays["density_grid"] = grid
            arrays["density_curve"] = spectrum.curve(grid)
            _advance(bar, op)

        if settings["lambda_min"]:
            bottom = _eigen_on(op, 1, tol=settings["tol"], max_iter=settings["max_iter"], return_vectors=False,
                               seed=seed, which="SA")
            scalars["lambda_min"] = float(bottom.values[0])
            _advance(bar, op)

        if ctx.lr is not None:
            scalars["eos_ratio"] = scalars["lambda_max"] * float(ctx.lr) / 2
        scalars["n_hvp"] = float(op.n_hvp)
        if bar is not None:
            bar.close()
        result = Result(scalars=scalars, arrays=arrays, params=settings)
        if result.has_nonfinite():
            return Result.invalid("the curvature is not finite at this checkpoint (NaN/Inf in the products).", settings)
        return result


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="hessian", unit="stage", leave=False)


def _advance(bar: Any, op: CurvatureOperator) -> None:
    if bar is not None:
        bar.set_postfix(n_hvp=op.n_hvp)
        bar.update(1)


PROBE = HessianProbe()
