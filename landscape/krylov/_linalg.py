"""Small helpers shared by the kernels: seeded random blocks, column-wise dot products, projections,
and single-threaded small dense solves.

Random vectors are drawn on the CPU in float64 from a seeded generator and then moved to the operator's
device and dtype, so a seed gives the same draws on every device and in every precision.

Small dense solves (the projected matrices of Lanczos, at most a few hundred rows) run with one BLAS
thread: several OpenBLAS threads on a matrix that small spend their time synchronizing, and on a busy
machine they fight the threads of the operator's products (measured: a 180×180 ``eigh`` took 573 ms
with two threads on a loaded 2-core machine, 6–8 ms with one).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch

from landscape.krylov.operators import Operator


def _generator(seed: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _gaussian(op: Operator, k: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(op.size, k, generator=generator, dtype=torch.float64).to(op.device, op.dtype)


def _rademacher(op: Operator, k: int, generator: torch.Generator) -> torch.Tensor:
    signs = torch.randint(0, 2, (op.size, k), generator=generator, dtype=torch.int8)
    return (signs.to(torch.float64) * 2 - 1).to(op.device, op.dtype)


def _column_dots(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    return (a * b).sum(dim=0).to("cpu", torch.float64).numpy()


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _orthogonalize(block: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Remove the components of ``block`` along an orthonormal ``basis`` (twice: classical GS with
    reorthogonalization keeps the result orthogonal to working precision)."""
    if basis.shape[1] == 0:
        return block
    for _ in range(2):
        block = block - basis @ (basis.T @ block)
    return block


@lru_cache(maxsize=1)
def _blas_controller() -> object:
    # Building a controller inspects every loaded library (about 2 ms), so it is built once; limiting
    # through it then costs microseconds. Same effect as threadpoolctl.threadpool_limits(1, "blas").
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the enclosed small numpy/scipy solves with one BLAS thread (restored on exit)."""
    with _blas_controller().limit(limits=1):  # type: ignore[attr-defined]
        yield


def symmetric_eigh(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and eigenvectors of a small symmetric matrix, on one BLAS thread."""
    with single_threaded():
        return np.linalg.eigh(matrix)
