"""Preconditioned sharpness: the top eigenvalues of ``P⁻¹H`` for an adaptive optimizer's preconditioner P.

Cohen et al. 2022 ("Adaptive Gradient Methods at the Edge of Stability") find that full-batch Adam drives
``λ_max(P⁻¹H)`` up to the stability threshold of its update, ``(2 + 2β₁)/((1 − β₁)η)`` (38/η at β₁ = 0.9),
and holds it there while the raw ``λ_max(H)`` keeps moving; how P and the thresholds are read from the
optimizer is defined in :mod:`landscape.preconditioner`.

``P⁻¹H`` is not symmetric, but it is similar to ``S = P^{-1/2} H P^{-1/2}`` (same eigenvalues; an
eigenvector u of S gives the eigenvector ``P^{-1/2}u`` of ``P⁻¹H``), so Lanczos runs on S: each product
is one Hessian-vector product of the curvature operator between two diagonal scalings. H is taken over
the parameters the optimizer holds state for (the ones it moves). This module registers no probe; the
``sharpness`` probe stores ``lambda_max_preconditioned`` with its threshold when the checkpoint carries
optimizer state.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape.checkpoints import SavedOptimizer
from landscape.curvature import CurvatureOperator, lanczos
from landscape.data import as_batches
from landscape.distributed import curvature_operator
from landscape.evaluate import LossFn
from landscape.params import preserved
from landscape.preconditioner import OptimizerStateError, Preconditioner, read_preconditioner

__all__ = ["OptimizerStateError", "PreconditionedEigen", "PreconditionedOperator", "preconditioned_eigenvalues"]


class PreconditionedOperator:
    """``S = D H D`` with ``D = P^{-1/2}`` (a flat vector over the operator's parameters): symmetric, with
    the eigenvalues of ``P⁻¹H``. An :class:`landscape.curvature.Operator` for the Krylov kernels."""

    def __init__(self, op: CurvatureOperator, scale: torch.Tensor) -> None:
        if scale.shape != (op.size,):
            raise ValueError(f"scale must be a flat vector of {op.size} entries, got shape {tuple(scale.shape)}.")
        self.op = op
        self.scale = scale.to(op.device, op.dtype)
        self.size, self.dtype, self.device = op.size, op.dtype, op.device

    @property
    def n_hvp(self) -> int:
        return self.op.n_hvp

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.matmat(vector.reshape(-1, 1)).reshape(-1)

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        d = self.scale[:, None]
        return d * self.op.matmat(d * vectors.to(self.device, self.dtype))


@dataclass(frozen=True)
class PreconditionedEigen:
    """Top eigenvalues of ``P⁻¹H`` (descending) and the optimizer's stability threshold.

    ``ratio = values[0] / threshold`` (≥ 1: the adaptive update is linearly unstable, the adaptive edge of
    stability at 1); ``vectors`` (when asked) are unit eigenvectors of ``P⁻¹H`` as named tensors;
    ``residuals`` are the Ritz residuals on the symmetric form; ``lr`` the step size the threshold uses.
    """

    values: np.ndarray
    threshold: float
    ratio: float
    optimizer: str
    lr: float
    residuals: np.ndarray
    n_hvp: int
    vectors: list[dict[str, torch.Tensor]] | None = None


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def preconditioned_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    data: object,
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | SavedOptimizer,
    k: int = 1,
    *,
    optimizer_type: str | None = None,
    param_names: Sequence[str] | None = None,
    bias_correction1: bool = False,
    tol: float = 1e-5,
    max_iter: int | None = None,
    seed: int = 0,
    kind: str = "hessian",
    return_vectors: bool = False,
) -> PreconditionedEigen:
    """The ``k`` largest eigenvalues of ``P⁻¹H``, P the optimizer's current preconditioner, and its threshold.

    ``optimizer``: a live Adam/AdamW/RMSprop/Adagrad, its ``state_dict()`` (``optimizer_type`` names the
    class; inferred from the state entries when None), or a :class:`landscape.checkpoints.SavedOptimizer`.
    ``param_names`` maps a state dict's parameter indices to names (see
    :func:`landscape.preconditioner.read_preconditioner`). H is the Hessian (or ``kind="ggn"``) of the
    sample-weighted mean loss over ``data`` in eval mode; Lanczos stops on Ritz residuals ``≤ tol·|λ|``.
    The model is left as it was. Raises :class:`OptimizerStateError` naming the optimizer when its state
    is empty (before the first step), does not fit the model, or the optimizer is not supported.
    """
    preconditioner = read_preconditioner(model, optimizer, optimizer_type=optimizer_type, param_names=param_names,
                                         bias_correction1=bias_correction1)
    batches = as_batches(data, device=_device_of(model))
    with preserved(model):
        return _eigen(model, loss_fn, batches, preconditioner, k, tol=tol, max_iter=max_iter, seed=seed, kind=kind,
                      return_vectors=return_vectors)


def _eigen(model: nn.Module, loss_fn: LossFn, batches: Any, preconditioner: Preconditioner, k: int, *, tol: float,
           max_iter: int | None, seed: int, kind: str, return_vectors: bool) -> PreconditionedEigen:
    names = list(preconditioner.diagonal)
    with curvature_operator(model, loss_fn, batches, kind=kind, params=names) as op:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= op.size:
            raise ValueError(f"k must be an integer between 1 and {op.size} (the parameters the optimizer moves), "
                             f"got {k!r}.")
        scale = op.from_named(preconditioner.inverse_sqrt())
        pre = PreconditionedOperator(op, scale)
        result = lanczos(pre, int(k), which="LA", tol=tol, max_iter=max_iter, seed=seed,
                         return_vectors=return_vectors)
        if not result.converged:
            warnings.warn(f"Lanczos on P^-1 H stopped after {result.n_steps} steps without reaching tol={tol}.",
                          RuntimeWarning, stacklevel=3)
        order = np.argsort(-result.values, kind="stable")
        vectors = None
        if result.vectors is not None:
            right = pre.scale[:, None] * result.vectors[:, order]
            right = right / right.norm(dim=0, keepdim=True)
            vectors = [op.to_named(right[:, i]) for i in range(right.shape[1])]
        values = result.values[order]
        return PreconditionedEigen(
            values=values, threshold=preconditioner.threshold, ratio=float(values[0]) / preconditioner.threshold,
            optimizer=preconditioner.optimizer, lr=preconditioner.lr, residuals=result.residuals[order],
            n_hvp=op.n_hvp, vectors=vectors,
        )


def stability_scalars(model: nn.Module, loss_fn: LossFn, data: object, optimizer: object,
                      optimizer_type: str | None = None, *, seed: int = 0) -> dict[str, float]:
    """``lambda_max_preconditioned``, ``preconditioned_threshold`` and ``preconditioned_eos_ratio`` (what the
    sharpness probe stores when the checkpoint carries optimizer state)."""
    top = preconditioned_eigenvalues(model, loss_fn, data, optimizer, 1, optimizer_type=optimizer_type,  # type: ignore[arg-type]
                                     tol=1e-4, seed=seed)
    return {"lambda_max_preconditioned": float(top.values[0]), "preconditioned_threshold": float(top.threshold),
            "preconditioned_eos_ratio": float(top.ratio)}
