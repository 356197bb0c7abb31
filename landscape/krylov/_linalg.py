"""Small helpers shared by the kernels: seeded random blocks, column-wise dot products, projections.

Random vectors are drawn on the CPU in float64 from a seeded generator and then moved to the operator's
device and dtype, so a seed gives the same draws on every device and in every precision.
"""

from __future__ import annotations

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
