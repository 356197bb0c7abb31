"""Small helpers shared by the kernels: seeded random blocks, column-wise dot products, projections,
and single-threaded small dense solves.

Random vectors are drawn on the CPU in float64 from a seeded generator and then moved to the Krylov
state's device and dtype, so a seed gives the same draws on every device and in every precision.

The Krylov state (bases, projected matrices, accumulators) has its own dtype, float64 unless a kernel is
given ``krylov_dtype=torch.float32``, whatever the operator's dtype: the products of a bf16 or fp16 model
then carry its rounding (about its eps, relative), but the orthogonalization and the projections add none
of their own. :func:`_product` moves a block to the operator's device for the product and brings the
result back to the state's device and dtype.

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


KRYLOV_DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}


def krylov_dtype(value: torch.dtype | str | None) -> torch.dtype:
    """The dtype of the Krylov state: None means float64; float32 (or its name) halves its memory."""
    if value is None:
        return torch.float64
    if isinstance(value, str) and value in KRYLOV_DTYPES:
        return KRYLOV_DTYPES[value]
    if value in (torch.float64, torch.float32):
        return value  # type: ignore[return-value]
    raise ValueError(f"krylov_dtype must be torch.float64, torch.float32 or one of {tuple(KRYLOV_DTYPES)}, "
                     f"got {value!r}.")


def state_device(op: Operator, value: torch.device | str | None) -> torch.device:
    """Where a kernel keeps its basis: the operator's device unless ``basis_device`` names another."""
    if value is None:
        return torch.device(op.device)
    try:
        return torch.device(value)
    except (RuntimeError, TypeError):
        raise ValueError(f"basis_device must be a torch device or its name (such as 'cpu'), got {value!r}.") from None


def _product(op: Operator, block: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``H @ block`` with the block moved to the operator's device once and the image brought back."""
    image = op.matmat(block.to(op.device))
    return image.to(device=device, dtype=dtype)


def _noise_eps(op: Operator, dtype: torch.dtype) -> float:
    """The relative rounding of the products as the kernels see them: a half-precision operator
    accumulates in float32 at least (:mod:`landscape.curvature`), so below float32 it counts as float32."""
    working = torch.promote_types(op.dtype, torch.float32) if op.dtype.is_floating_point else dtype
    return max(_eps(working), _eps(dtype))


def _gaussian(op: Operator, k: int, generator: torch.Generator, dtype: torch.dtype | None = None,
              device: torch.device | None = None) -> torch.Tensor:
    draws = torch.randn(op.size, k, generator=generator, dtype=torch.float64)
    return draws.to(device or op.device, dtype or torch.float64)


def _signs(op: Operator, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` Rademacher draws per coordinate as 0/1 bytes (an eighth of the float64 vectors' memory)."""
    return torch.randint(0, 2, (op.size, k), generator=generator, dtype=torch.int8)


def _from_signs(signs: torch.Tensor, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """±1 vectors from :func:`_signs` bytes (any block of their columns), in ``dtype`` on ``device``."""
    return (signs.to(torch.float64) * 2 - 1).to(device, dtype)


def _rademacher(op: Operator, k: int, generator: torch.Generator, dtype: torch.dtype | None = None,
                device: torch.device | None = None) -> torch.Tensor:
    return _from_signs(_signs(op, k, generator), dtype or torch.float64, device or op.device)


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
