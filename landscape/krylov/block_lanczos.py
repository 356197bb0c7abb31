"""Block Lanczos with full reorthogonalization: extreme eigenpairs of a symmetric operator.

From an orthonormal start block V₀ (n×b, Gaussian then QR), step j multiplies the newest block, removes
its components along every block so far and orthonormalizes the rest into V_{j+1}. The columns of
Q = [V₀ … V_j] span the block Krylov space

    K_j(H, V₀) = span{V₀, H V₀, …, H^j V₀},

and with T = QᵀHQ = Y diag(θ) Yᵀ the Ritz pairs (θᵢ, Q yᵢ) are the Rayleigh–Ritz approximations of H's
eigenpairs from that space. The Lanczos relation H Q = Q T + V_{j+1} B E_jᵀ (B the coupling of the last
block to the next, E_j the last b columns of the identity) gives each pair's residual without another
product:

    ‖H Q yᵢ − θᵢ Q yᵢ‖ = ‖B yᵢ,last‖.

Why it converges: the Krylov space holds p(H) V₀ for every polynomial p of degree ≤ j, and Chebyshev
polynomials amplify the ends of the spectrum, so the extreme Ritz values approach the extreme
eigenvalues first, at a rate set by their gap to the rest of the spectrum relative to its width
(Kaniel–Paige–Saad bounds). A residual r bounds the eigenvalue error: some eigenvalue of H lies within
‖r‖ of θ, and within ~‖r‖²/gap once θ is separated from the others by gap. Full reorthogonalization
(forming T from the products instead of the three-term recurrence) keeps Q orthonormal in floating
point, so no spurious copies of converged Ritz values appear; a block of b vectors resolves an
eigenvalue of multiplicity up to b. When the basis reaches its cap it is thick-restarted on the best
Ritz vectors (T becomes diagonal on them).

References: C. Lanczos (1950), J. Res. Nat. Bur. Standards 45; G. H. Golub & R. Underwood (1977), "The
block Lanczos method for computing eigenvalues", Mathematical Software III; K. Wu & H. Simon (2000),
"Thick-restart Lanczos method for large symmetric eigenvalue problems", SIAM J. Matrix Anal. Appl. 22;
B. N. Parlett, *The Symmetric Eigenvalue Problem* (1998).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from landscape.krylov._linalg import _eps, _gaussian, _generator, _orthogonalize, _to_numpy
from landscape.krylov.operators import Operator


@dataclass(frozen=True)
class LanczosResult:
    """Ritz pairs from :func:`lanczos`, ordered by ``which`` (LA: largest first; SA: smallest first).

    ``residuals[i] = ‖H yᵢ − θᵢ yᵢ‖`` for the unit Ritz vector yᵢ (from the Lanczos relation),
    ``n_matvec`` operator-vector products, ``n_steps`` block steps.
    """

    values: np.ndarray
    vectors: torch.Tensor | None
    residuals: np.ndarray
    n_matvec: int
    n_steps: int
    converged: bool


def lanczos(
    op: Operator,
    k: int,
    *,
    which: str = "LA",
    tol: float = 1e-5,
    max_iter: int | None = None,
    block_size: int = 1,
    max_basis: int | None = None,
    seed: int = 0,
    return_vectors: bool = False,
) -> LanczosResult:
    """The k largest (``which="LA"``) or smallest (``"SA"``) eigenvalues of a symmetric operator.

    Block Lanczos (``block_size`` vectors per step, one ``matmat`` each) with full reorthogonalization:
    the basis Q is kept orthonormal and T = QᵀHQ is formed explicitly from the products, so the Ritz
    values are exact Rayleigh–Ritz values of the current subspace. The residual of a Ritz pair
    (θ, Qy) is ``‖B y_last‖``, where B couples the last block to the next (Lanczos relation). Stops when
    every wanted residual is ``≤ tol · max(|θ|, 1e-3 · max|θ_all|)`` (relative accuracy, not demanding
    below-noise accuracy for eigenvalues 1000× smaller than the spectral radius), when the basis spans
    the whole space (exact), or after ``max_iter`` steps. When the basis reaches ``max_basis`` vectors it
    is thick-restarted on the best Ritz vectors. A breakdown (invariant subspace found) continues from
    fresh random directions. Single-vector Lanczos (``block_size=1``) finds one copy of a repeated
    eigenvalue per restart; use a block at least as large as the expected multiplicity.
    """
    n = op.size
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer between 1 and the operator size {n}, got {k}.")
    if which not in ("LA", "SA"):
        raise ValueError(f"which must be 'LA' (largest) or 'SA' (smallest), got {which!r}.")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}.")
    if block_size < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size}.")
    b = min(int(block_size), n)
    basis_cap = min(n, max(max_basis or max(3 * k + 30, 50), k + 2 * b))
    steps_cap = max_iter if max_iter is not None else math.ceil((20 * k + 200) / b)
    if steps_cap < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}.")
    generator = _generator(seed)
    block, _ = torch.linalg.qr(_gaussian(op, b, generator))
    basis = block.new_zeros(n, 0)
    projected = np.zeros((0, 0))
    n_matvec = steps = 0
    while True:
        image = op.matmat(block)
        steps += 1
        n_matvec += block.shape[1]
        cross = _to_numpy(basis.T @ image)
        diag = _to_numpy(block.T @ image)
        projected = np.block([[projected, cross], [cross.T, (diag + diag.T) / 2]])
        basis = torch.cat([basis, block], dim=1)
        image = _orthogonalize(image, basis)
        theta, ritz = np.linalg.eigh(projected)
        scale = float(np.max(np.abs(theta))) if theta.size else 0.0
        nxt, coupling = _next_block(image, basis, b, scale, op, generator)
        order = np.argsort(-theta if which == "LA" else theta, kind="stable")
        wanted = order[: min(k, len(theta))]
        last = ritz[-block.shape[1] :, wanted]
        residuals = np.linalg.norm(coupling @ last, axis=0) if coupling.size else np.zeros(len(wanted))
        floor = 1e-3 * scale
        done = basis.shape[1] >= k and bool(np.all(residuals <= tol * np.maximum(np.abs(theta[wanted]), floor)))
        exhausted = basis.shape[1] >= n or nxt.shape[1] == 0
        if done or exhausted or steps >= steps_cap:
            converged = done or exhausted
            break
        if basis.shape[1] + nxt.shape[1] > basis_cap:
            keep_count = min(max(k, (basis_cap + k) // 2), basis_cap - nxt.shape[1], basis.shape[1])
            keep = order[:keep_count]
            basis = basis @ torch.from_numpy(ritz[:, keep]).to(basis)
            projected = np.diag(theta[keep])
        block = nxt
    vectors = None
    if return_vectors:
        vectors = basis @ torch.from_numpy(ritz[:, wanted]).to(basis)
    return LanczosResult(
        values=theta[wanted].copy(), vectors=vectors, residuals=residuals, n_matvec=n_matvec, n_steps=steps,
        converged=converged,
    )


def _next_block(residual: torch.Tensor, basis: torch.Tensor, b: int, scale: float, op: Operator,
                generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """Orthonormal next block X and coupling B with ``residual = X B`` (rank-revealing).

    Directions whose residual is at rounding level (an invariant subspace was found) are dropped from B
    and replaced by fresh random directions orthogonal to everything so far (coupling 0).
    """
    room = op.size - basis.shape[1]
    width = residual.shape[1]
    if room <= 0:
        return basis.new_zeros(op.size, 0), np.zeros((0, width))
    q, r = torch.linalg.qr(residual)
    u, s, vh = np.linalg.svd(_to_numpy(r))
    threshold = 100 * _eps(op.dtype) * max(scale, 1e-30)
    rank = min(int(np.sum(s > threshold)), room)
    block = q @ torch.from_numpy(u[:, :rank]).to(q)
    coupling = s[:rank, None] * vh[:rank]
    fill = min(b, room) - rank
    if fill > 0:
        fresh = _orthogonalize(_gaussian(op, fill, generator), torch.cat([basis, block], dim=1))
        fresh, _ = torch.linalg.qr(fresh)
        block = torch.cat([block, fresh], dim=1)
        coupling = np.vstack([coupling, np.zeros((fill, width))])
    return block, coupling
