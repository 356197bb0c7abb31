"""The PyHessian package as a backend of :mod:`probes.hessian` (``backend="pyhessian"``), for comparison.

PyHessian's own methods on the same model and batches: power iteration with deflation for the top
eigenvalues, Hutchinson for the trace, and its SLQ chains for the density (diagonalized with
``numpy.linalg.eigh``, since its ``density()`` calls the removed ``torch.eig``). Each function counts
PyHessian's Hessian-vector products and returns the same result types as :mod:`probes.hessian`; the
argument checks shared with our backend are the ones there. Imported only when this backend is asked
for, so the probe does not load PyHessian otherwise.
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape.curvature import CurvatureOperator, ParamSelector, select_parameters
from landscape.data import Batches
from landscape.evaluate import LossFn
from landscape.params import trainable_parameters
from probes.hessian import Eigen, SpectralDensity, TraceEstimate, _check_k, _check_positive_int, _model_device

__all__ = ["pyhessian_density", "pyhessian_eigenvalues", "pyhessian_trace"]


@contextmanager
def _pyhessian(model: nn.Module, loss_fn: LossFn, batches: Batches, params: ParamSelector,
               seed: int) -> Iterator[tuple[Any, list[int]]]:
    """A PyHessian ``hessian`` object over ``batches`` and a counter of its Hessian-vector products.

    Parameters outside the group are frozen for the duration (PyHessian differentiates w.r.t. every
    parameter with ``requires_grad``); the global torch RNG is seeded inside a forked RNG state.
    PyHessian leaves graph-attached gradients behind: they are dropped on exit, and the caller restores
    the original ``.grad`` (:func:`landscape.params.preserved`).
    """
    from pyhessian import hessian as PyHessian  # the package re-exports the class under this name

    selected = select_parameters(model, params)
    outside = [p for name, p in trainable_parameters(model).items() if name not in selected]
    module = sys.modules[PyHessian.__module__]
    original_product = module.hessian_vector_product
    count = [0]

    def counted_product(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return original_product(*args, **kwargs)

    device = _model_device(model)
    devices = [device] if device.type == "cuda" else []
    try:
        for p in outside:
            p.requires_grad_(False)
        module.hessian_vector_product = counted_product
        with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
            # its single-batch mode calls backward(create_graph=True); the cycle is broken below (.grad = None)
            warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")
            torch.manual_seed(seed)
            cuda = device.type == "cuda"
            if len(batches) == 1:
                engine = PyHessian(model, loss_fn, data=tuple(batches.batches[0]), cuda=cuda)
            else:
                engine = PyHessian(model, loss_fn, dataloader=[tuple(b) for b in batches], cuda=cuda)
            loader_product = engine.dataloader_hv_product

            def counted_loader_product(v: Any) -> Any:
                count[0] += 1
                return loader_product(v)

            engine.dataloader_hv_product = counted_loader_product
            yield engine, count
    finally:
        module.hessian_vector_product = original_product
        for p in outside:
            p.requires_grad_(True)
        for p in model.parameters():
            p.grad = None


def pyhessian_eigenvalues(model: nn.Module, loss_fn: LossFn, batches: Batches, k: int, *, tol: float,
                           max_iter: int | None, return_vectors: bool, seed: int, which: str,
                           params: ParamSelector) -> Eigen:
    if which != "LA":
        raise ValueError("backend='pyhessian' finds the largest eigenvalues only (power iteration); use which='LA'.")
    size = sum(p.numel() for p in select_parameters(model, params).values())
    k = _check_k(k, size)
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}.")
    max_iter = 100 if max_iter is None else _check_positive_int(max_iter, "max_iter")
    with _pyhessian(model, loss_fn, batches, params, seed) as (engine, count):
        values, vectors = engine.eigenvalues(maxIter=max_iter, tol=tol, top_n=k)
        n_hvp = count[0]
        flat = torch.stack([torch.cat([t.detach().reshape(-1) for t in vec]) for vec in vectors], dim=1)
    flat = flat / flat.norm(dim=0, keepdim=True)
    values = np.asarray(values, dtype=np.float64)
    with CurvatureOperator(model, loss_fn, batches, params=params) as op:
        flat = flat.to(op.device, op.dtype)
        residuals = (op.matmat(flat) - flat * torch.as_tensor(values).to(flat)).norm(dim=0)
        order = np.argsort(-values, kind="stable")
        named = [op.to_named(flat[:, i]) for i in order] if return_vectors else None
    return Eigen(values[order], named, residuals.to("cpu", torch.float64).numpy()[order], n_hvp)


def pyhessian_trace(model: nn.Module, loss_fn: LossFn, batches: Batches, *, method: str, n_matvec: int,
                     seed: int, params: ParamSelector) -> TraceEstimate:
    if method != "hutchinson":
        raise ValueError(f"backend='pyhessian' estimates the trace with method='hutchinson' only, got {method!r}.")
    n_matvec = _check_positive_int(n_matvec, "n_matvec", 2)
    with _pyhessian(model, loss_fn, batches, params, seed) as (engine, count):
        # tol=-inf: its early-stopping rule never fires, so exactly n_matvec samples are drawn.
        samples = np.asarray(engine.trace(maxIter=n_matvec, tol=-math.inf), dtype=np.float64)
        n_hvp = count[0]
    return TraceEstimate(float(samples.mean()), float(samples.std(ddof=1) / math.sqrt(len(samples))), n_hvp)


def pyhessian_density(model: nn.Module, loss_fn: LossFn, batches: Batches, *, n_runs: int, n_steps: int,
                       seed: int, params: ParamSelector) -> SpectralDensity:
    from pyhessian.utils import group_product, normalization, orthnormal

    n_runs = _check_positive_int(n_runs, "n_runs")
    n_steps = _check_positive_int(n_steps, "n_steps")
    nodes = np.zeros((n_runs, n_steps))
    weights = np.zeros((n_runs, n_steps))
    with _pyhessian(model, loss_fn, batches, params, seed) as (engine, count):
        module = sys.modules[type(engine).__module__]

        def product(v: list[torch.Tensor]) -> list[torch.Tensor]:
            if engine.full_dataset:
                return list(engine.dataloader_hv_product(v)[1])
            return list(module.hessian_vector_product(engine.gradsH, engine.params, v))

        for run in range(n_runs):
            start = [torch.randint_like(p, high=2) * 2 - 1 for p in engine.params]
            tri = _pyhessian_lanczos(product, normalization(start), n_steps, engine.params,
                                     group_product, orthnormal)
            theta, vecs = np.linalg.eigh(tri)
            nodes[run, : len(theta)], weights[run, : len(theta)] = theta, vecs[0] ** 2
            nodes[run, len(theta) :] = theta[0]
        n_hvp = count[0]
    return SpectralDensity(nodes, weights, n_hvp)


def _pyhessian_lanczos(product: Callable[[list[torch.Tensor]], list[torch.Tensor]], v: list[torch.Tensor],
                       n_steps: int, params: Sequence[torch.Tensor], group_product: Callable[..., Any],
                       orthnormal: Callable[..., Any]) -> np.ndarray:
    """PyHessian's SLQ chain: Lanczos on its products, each new vector Gram–Schmidt-orthonormalized
    against all previous ones with its own utilities; returns the tridiagonal matrix."""
    basis = [v]
    alphas: list[float] = []
    betas: list[float] = []
    residual: list[torch.Tensor] = []
    for step in range(n_steps):
        if step > 0:
            beta = float(torch.sqrt(group_product(residual, residual)))
            betas.append(beta)
            if beta == 0.0:
                residual = [torch.randn_like(p) for p in params]
            v = orthnormal(residual, basis)
            basis.append(v)
        image = product(v)
        alpha = float(group_product(image, v))
        alphas.append(alpha)
        residual = [h - alpha * vi for h, vi in zip(image, v)]
        if step > 0:
            residual = [r - betas[-1] * p for r, p in zip(residual, basis[-2])]
    return np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
