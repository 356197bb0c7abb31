"""Stochastic Lanczos quadrature: the spectral density of a symmetric operator from a few chains.

The spectral density of H (eigenpairs λᵢ, uᵢ) is φ(t) = (1/n) Σᵢ δ(t − λᵢ). For a random unit start
vector v with E[v vᵀ] = I/n (a Rademacher vector divided by √n),

    vᵀ δ(t − H) v = Σᵢ (uᵢᵀv)² δ(t − λᵢ),      E[(uᵢᵀv)²] = uᵢᵀ E[v vᵀ] uᵢ = 1/n,

so the measure seen from v is an unbiased sample of φ. Lanczos from v for m steps gives the tridiagonal
T = U diag(θ) Uᵀ, and the m-point Gauss quadrature of that measure has nodes θⱼ and weights U[0, j]²:

    vᵀ f(H) v ≈ Σⱼ U[0, j]² f(θⱼ),

exact for every polynomial f of degree ≤ 2m − 1 (Golub & Meurant). Averaging over the chains gives the
moments tr(f(H))/n with a Monte-Carlo error ~ 1/√n_runs, and the quadrature nodes resolve the edges of
the spectrum first (they are Lanczos Ritz values).

References: G. H. Golub & G. Meurant, *Matrices, Moments and Quadrature with Applications* (2010);
S. Ubaru, J. Chen & Y. Saad (2017), "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature",
SIAM J. Matrix Anal. Appl. 38; B. Ghorbani, S. Krishnan & Y. Xiao (2019), "An investigation into neural
net optimization via Hessian eigenvalue density", ICML.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from landscape.krylov._linalg import (
    _column_dots,
    _generator,
    _noise_eps,
    _product,
    _rademacher,
    _to_numpy,
    state_device,
    symmetric_eigh,
)
from landscape.krylov._linalg import krylov_dtype as _krylov_dtype
from landscape.krylov.operators import Operator


@dataclass(frozen=True)
class Quadrature:
    """Gauss quadrature of the spectral measure seen from each of ``n_runs`` random start vectors.

    ``nodes[r]`` are the Ritz values of chain r, ``weights[r]`` the squared first components of its Ritz
    vectors (each row sums to 1). A chain that found an invariant subspace early is padded with
    zero-weight nodes.
    """

    nodes: np.ndarray
    weights: np.ndarray
    n_matvec: int


def slq(op: Operator, n_runs: int, n_steps: int, *, seed: int = 0, reorthogonalize: bool = True,
        krylov_dtype: torch.dtype | str | None = None, basis_device: torch.device | str | None = None) -> Quadrature:
    """Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; Ghorbani et al. 2019).

    Each chain starts from a normalized Rademacher vector v and runs ``n_steps`` Lanczos steps, giving the
    tridiagonal T; with T = U diag(θ) Uᵀ, the measure Σⱼ U[0,j]² δ(t − θⱼ) approximates
    ``vᵀ δ(t − H) v``, whose expectation is the spectral density (1/n) Σᵢ δ(t − λᵢ). All chains advance
    together: one ``matmat`` of the active chains per step. Full reorthogonalization (default) keeps every
    chain's basis, ``n_runs · n_steps`` vectors of the operator's size; without it only the three-term
    recurrence is used (memory of 2 vectors per chain, spurious copies of outlying Ritz values possible).
    The chains' vectors are kept in ``krylov_dtype`` (float64 by default, or float32) on ``basis_device``
    (default: the operator's device), whatever the operator's dtype and device.
    """
    if not isinstance(n_runs, (int, np.integer)) or n_runs < 1:
        raise ValueError(f"n_runs must be a positive integer, got {n_runs}.")
    if not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps}.")
    n = op.size
    dtype, device = _krylov_dtype(krylov_dtype), state_device(op, basis_device)
    current = _rademacher(op, n_runs, _generator(seed), dtype, device) / math.sqrt(n)
    previous = torch.zeros_like(current)
    history = torch.zeros(n_runs, n_steps, n, dtype=dtype, device=device) if reorthogonalize else None
    alphas = np.zeros((n_runs, n_steps))
    betas = np.zeros((n_runs, n_steps))
    lengths = np.full(n_runs, n_steps)
    active = np.arange(n_runs)
    n_matvec = 0
    scale = 0.0
    for step in range(n_steps):
        every = active.size == n_runs
        idx = torch.from_numpy(active).to(device)
        v = current if every else current[:, idx]
        w = _product(op, v, dtype, device)
        n_matvec += len(active)
        alpha = _column_dots(v, w)
        alphas[active, step] = alpha
        # the three-term recurrence first: it removes the large components along v and its predecessor
        w = w - v * torch.from_numpy(alpha).to(w)
        if step:
            w = w - (previous if every else previous[:, idx]) * torch.from_numpy(betas[active, step - 1]).to(w)
        if history is not None:
            history[idx, step] = v.T
            # [chains, steps so far, n]; a view when every chain is still running
            past = history[:, : step + 1] if every else history[idx, : step + 1]
            before = _column_dots(w, w)
            for _ in range(2):  # one Gram–Schmidt pass, a second only if it cancelled most of the norm
                coeffs = torch.einsum("cjn,nc->cj", past, w)
                w = w - torch.einsum("cjn,cj->nc", past, coeffs)
                after = before - np.sum(_to_numpy(coeffs) ** 2, axis=1)
                if np.all(after >= 0.5 * before):
                    break
                before = _column_dots(w, w)
        if step == n_steps - 1:
            break
        beta = np.sqrt(np.maximum(_column_dots(w, w), 0.0))
        scale = max(scale, float(np.max(np.abs(alpha))), float(np.max(beta)))
        alive = beta > 100 * _noise_eps(op, dtype) * max(scale, 1e-30)
        betas[active, step] = np.where(alive, beta, 0.0)
        lengths[active[~alive]] = step + 1
        if every:
            previous.copy_(v)
            current = w / torch.from_numpy(np.where(alive, beta, 1.0)).to(w)
        else:
            previous[:, idx] = v
            current[:, idx] = w / torch.from_numpy(np.where(alive, beta, 1.0)).to(w)
        active = active[alive]
        if active.size == 0:
            break
    nodes = np.zeros((n_runs, n_steps))
    weights = np.zeros((n_runs, n_steps))
    for run in range(n_runs):
        size = int(lengths[run])
        tri = np.diag(alphas[run, :size]) + np.diag(betas[run, : size - 1], 1) + np.diag(betas[run, : size - 1], -1)
        theta, vecs = symmetric_eigh(tri)
        nodes[run, :size], weights[run, :size] = theta, vecs[0] ** 2
        nodes[run, size:] = theta[0]
    return Quadrature(nodes=nodes, weights=weights, n_matvec=n_matvec)
