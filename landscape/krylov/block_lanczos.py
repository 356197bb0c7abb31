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

Cost. Per step: one ``matmat`` of the newest block, the known couplings (the previous block, or the
kept Ritz vectors just after a restart) and the block's own projection subtracted locally, then one
pass of classical Gram–Schmidt against the whole basis whose coefficients also complete that column of
T (a second pass only when the first removed more than 1/√2 of the norm, the Daniel–Gragg–Kaufman–
Stewart criterion). The basis is one preallocated [n, cap] tensor and T one preallocated float64
matrix, so nothing grows or is copied per step. Convergence is checked on T — a dense symmetric solve of
at most ``cap`` rows on one BLAS thread — once the basis holds k vectors and then every
``max(1, m // 16b)`` steps for a basis of m vectors (at most ~6% extra products past the step where
the residuals first met ``tol``), and always before a restart and at the last step.

Memory and precision. The basis holds ``cap`` vectors (``max_basis``, default ``max(3k + 30, 50)``) of
the operator's size in ``krylov_dtype`` (float64 by default, whatever the model's dtype; float32 halves
it): 180 float64 vectors of a 1B-parameter model are 1.4 TB, 50 float32 ones 200 GB. ``basis_device``
keeps the basis elsewhere than the operator (``"cpu"`` for a model that fills its GPU): each step then
moves the newest block to the operator's device for its product and the image back, once, and the
projections run where the basis is.

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

from landscape.krylov._linalg import (
    _gaussian,
    _generator,
    _noise_eps,
    _orthogonalize,
    _product,
    _to_numpy,
    single_threaded,
    state_device,
    symmetric_eigh,
)
from landscape.krylov._linalg import krylov_dtype as _krylov_dtype
from landscape.krylov.operators import Operator

# Classical Gram–Schmidt is repeated when a pass leaves less than this share of the norm ("twice is enough").
_REORTHOGONALIZE_BELOW = 1 / math.sqrt(2)


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


def _eigenvalue_errors(theta: np.ndarray, ritz: np.ndarray, coupling: np.ndarray, last: int, wanted: np.ndarray,
                       residuals: np.ndarray) -> np.ndarray:
    """Estimated errors of the wanted Ritz values: ``min(r, r²/δ)``, δ the distance to the nearest other
    Ritz value less that one's residual (no better than ``r`` where δ does not exceed it)."""
    if len(theta) < 2 or not coupling.size:
        return residuals
    every = np.linalg.norm(coupling @ ritz[last:, :], axis=0)  # the residual of every Ritz pair
    errors = residuals.copy()
    for slot, j in enumerate(wanted):
        distance = np.abs(theta - theta[j]) - every
        distance[j] = np.inf
        gap = float(distance.min())
        if gap > residuals[slot]:
            errors[slot] = residuals[slot] ** 2 / gap
    return errors


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
    krylov_dtype: torch.dtype | str | None = None,
    basis_device: torch.device | str | None = None,
    criterion: str = "residual",
) -> LanczosResult:
    """The k largest (``which="LA"``) or smallest (``"SA"``) eigenvalues of a symmetric operator.

    Block Lanczos (``block_size`` vectors per step, one ``matmat`` each) with full reorthogonalization:
    the basis Q is kept orthonormal and T = QᵀHQ is completed from the reorthogonalization
    coefficients, so the Ritz values are exact Rayleigh–Ritz values of the current subspace. The
    residual of a Ritz pair (θ, Qy) is ``‖B y_last‖``, where B couples the last block to the next
    (Lanczos relation). Stops when every wanted residual is ``≤ tol · max(|θ|, 1e-3 · max|θ_all|)``
    (relative accuracy, not demanding below-noise accuracy for eigenvalues 1000× smaller than the
    spectral radius), when the basis spans the whole space (exact), or after ``max_iter`` steps. When
    the basis reaches ``max_basis`` vectors it is thick-restarted on the best Ritz vectors. A breakdown
    (invariant subspace found) continues from fresh random directions. Single-vector Lanczos
    (``block_size=1``) finds one copy of a repeated eigenvalue per restart; use a block at least as
    large as the expected multiplicity.

    ``criterion="eigenvalue"`` stops instead on the estimated error of the eigenvalues themselves,
    ``min(‖r‖, ‖r‖²/δ) ≤ tol · max(|θ|, floor)``, where δ is θ's distance to the nearest other Ritz value
    less that value's residual (the a-posteriori bound ‖r‖²/gap, with a gap estimate that an
    unconverged neighbour can only shrink): ``tol`` then means what PyHessian's does (a relative
    accuracy of the eigenvalue), and a well separated eigenvalue needs far fewer products — the
    residual criterion delivers eigenvalues accurate to about ``tol²``. ``residuals`` are returned as
    always.

    The basis and the projected matrix are kept in ``krylov_dtype`` (float64 by default, or float32) on
    ``basis_device`` (default: the operator's device), independently of the operator's dtype and device;
    returned vectors are in that dtype, on that device.
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
    if criterion not in ("residual", "eigenvalue"):
        raise ValueError(f"criterion must be 'residual' or 'eigenvalue', got {criterion!r}.")
    b = min(int(block_size), n)
    basis_cap = min(n, max(max_basis or max(3 * k + 30, 50), k + 2 * b))
    steps_cap = max_iter if max_iter is not None else math.ceil((20 * k + 200) / b)
    if steps_cap < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter}.")
    dtype, device = _krylov_dtype(krylov_dtype), state_device(op, basis_device)
    generator = _generator(seed)
    krylov = _Krylov(op, basis_cap, dtype, device)
    first, _ = torch.linalg.qr(_gaussian(op, b, generator, dtype, device))
    krylov.place(first, None)
    steps = n_matvec = last_check = 0
    while True:
        steps += 1
        n_matvec += krylov.width
        residual = krylov.extend()
        size = krylov.size
        nxt, coupling = _next_block(residual, krylov.basis(), b, krylov.scale, op, generator)
        del residual  # the next product runs with no vector of the state alive outside the basis
        exhausted = size >= n or nxt.shape[1] == 0
        restart = size + nxt.shape[1] > basis_cap
        due = size >= k and (restart or steps - last_check >= max(1, size // (16 * b)))
        if due or exhausted or steps >= steps_cap:
            last_check = steps
            theta, ritz = krylov.ritz()
            order = np.argsort(-theta if which == "LA" else theta, kind="stable")
            wanted = order[: min(k, len(theta))]
            last = ritz[size - krylov.width :, wanted]
            residuals = np.linalg.norm(coupling @ last, axis=0) if coupling.size else np.zeros(len(wanted))
            krylov.scale = max(krylov.scale, float(np.max(np.abs(theta))))
            floor = 1e-3 * float(np.max(np.abs(theta)))
            errors = residuals
            if criterion == "eigenvalue":
                errors = _eigenvalue_errors(theta, ritz, coupling, size - krylov.width, wanted, residuals)
            done = size >= k and bool(np.all(errors <= tol * np.maximum(np.abs(theta[wanted]), floor)))
            if done or exhausted or steps >= steps_cap:
                converged = done or exhausted
                break
            if restart:
                keep = order[: min(max(k, (basis_cap + k) // 2), basis_cap - nxt.shape[1], size)]
                width = krylov.width
                krylov.restart(theta, ritz, keep)
                # H (Q y_j) = θ_j Q y_j + X B y_j,last: the new block couples to kept vector j by B y_j,last
                coupling = coupling @ ritz[size - width :, keep]
        krylov.place(nxt, coupling)
        del nxt
    vectors = None
    if return_vectors:
        vectors = krylov.vectors(ritz[:, wanted])
    return LanczosResult(
        values=theta[wanted].copy(), vectors=vectors, residuals=residuals, n_matvec=n_matvec, n_steps=steps,
        converged=converged,
    )


class _Krylov:
    """The preallocated basis and the projected matrix T = QᵀHQ = proj[:size, :size].

    The basis vectors are the rows of ``rows`` (each one contiguous in memory, so the projections are
    matrix–vector products on contiguous rows); Q = rows[:size]ᵀ. The newest block occupies rows
    [start, size); T's entries coupling it to rows [coupled, start) are known before it is multiplied
    (they were set when the block was placed: the coupling B of the Lanczos relation, or after a
    restart the couplings to the kept Ritz vectors).
    """

    def __init__(self, op: Operator, cap: int, dtype: torch.dtype, device: torch.device) -> None:
        self.op = op
        self.rows = torch.empty(cap, op.size, dtype=dtype, device=device)
        self.proj = np.zeros((cap, cap))
        self.start = self.size = self.coupled = 0
        self.width = 0
        self.scale = 0.0

    def basis(self) -> torch.Tensor:
        """Q as an [n, size] view."""
        return self.rows[: self.size].T

    def place(self, block: torch.Tensor, coupling: np.ndarray | None) -> None:
        """Append an orthonormal [n, w] block; ``coupling[i, j]`` = its column i against column j of the
        newest block (or, after :meth:`restart`, against kept Ritz vector j)."""
        width = block.shape[1]
        at = self.size
        self.rows[at : at + width] = block.T
        if coupling is not None:
            lo = at - coupling.shape[1]
            self.proj[at : at + width, lo:at] = coupling
            self.proj[lo:at, at : at + width] = coupling.T
            self.coupled = lo
        self.start, self.size = at, at + width
        self.width = width

    def extend(self) -> torch.Tensor:
        """Multiply the newest block and orthogonalize the image against the basis; returns the residual
        (the part of H·block outside span Q, as [n, w]) and completes T's rows and columns of the block."""
        start, size, lo = self.start, self.size, self.coupled
        block = self.rows[start:size]  # [w, n]
        # [w, n]: one product per row; every update below is in place, so the state holds one image at a time
        image = _product(self.op, block.T, self.rows.dtype, self.rows.device).T.contiguous()
        # the block's own projection (q_j · H q_i), then the known couplings and it removed in one update
        own = _to_numpy(block @ image.T)
        local = self.proj[lo:size, start:size].copy()
        local[start - lo :] = own
        image.addmm_(_tensor(local.T, image), self.rows[lo:size], alpha=-1)
        self.scale = max(self.scale, float(np.abs(local).max()))
        column = np.zeros((size, size - start))
        column[start:] = own
        basis = self.rows[:size]
        before = _squared_norms(image)
        for _ in range(2):  # classical Gram–Schmidt, repeated when a pass cancels most of the norm
            coefficients = basis @ image.T  # [size, w]
            image.addmm_(coefficients.T, basis, alpha=-1)
            removed = _to_numpy(coefficients)
            column += removed
            # Pythagoras: what is left has norm² = before − ‖coefficients‖² (Q orthonormal)
            after = before - np.sum(removed * removed, axis=0)
            if np.all(after >= _REORTHOGONALIZE_BELOW**2 * before):
                break
            before = _squared_norms(image)
        known = self.proj[:size, start:size]
        known += column
        diag = known[start:]
        known[start:] = (diag + diag.T) / 2
        self.proj[start:size, :size] = known.T
        return image.T

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenpairs of T (ascending), from a dense solve on one BLAS thread."""
        return symmetric_eigh(self.proj[: self.size, : self.size])

    def vectors(self, ritz: np.ndarray) -> torch.Tensor:
        """Q · ritz as [n, columns]."""
        return (_tensor(ritz.T, self.rows) @ self.rows[: self.size]).T

    def restart(self, theta: np.ndarray, ritz: np.ndarray, keep: np.ndarray) -> None:
        """Thick restart: the basis becomes the kept Ritz vectors and T their diagonal of Ritz values."""
        count = len(keep)
        self.rows[:count] = _tensor(ritz[:, keep].T, self.rows) @ self.rows[: self.size]
        self.proj[: self.size, : self.size] = 0.0
        self.proj[np.arange(count), np.arange(count)] = theta[keep]
        self.start = self.coupled = 0
        self.size = count


def _squared_norms(rows: torch.Tensor) -> np.ndarray:
    """Each row's squared Euclidean norm, without a temporary the size of ``rows``."""
    return _to_numpy(torch.linalg.vector_norm(rows, dim=1)) ** 2


def _tensor(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(like.device, like.dtype)


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
    threshold = 100 * _noise_eps(op, basis.dtype) * max(scale, 1e-30)
    if width == 1:  # single-vector Lanczos: the QR and SVD below reduce to a norm
        beta = float(residual.norm())
        rank = int(beta > threshold)
        block = residual[:, :rank] / (beta if rank else 1.0)
        coupling = np.full((rank, 1), beta)
    else:
        q, r = torch.linalg.qr(residual)
        with single_threaded():
            u, s, vh = np.linalg.svd(_to_numpy(r))
        rank = min(int(np.sum(s > threshold)), room)
        block = q @ torch.from_numpy(u[:, :rank]).to(q)
        coupling = s[:rank, None] * vh[:rank]
    fill = min(b, room) - rank
    if fill > 0:
        fresh = _gaussian(op, fill, generator, basis.dtype, basis.device)
        fresh = _orthogonalize(fresh, torch.cat([basis, block], dim=1))
        fresh, _ = torch.linalg.qr(fresh)
        block = torch.cat([block, fresh], dim=1)
        coupling = np.vstack([coupling, np.zeros((fill, width))])
    return block, coupling
