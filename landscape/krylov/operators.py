"""The interface the kernels read, and an explicit matrix that satisfies it.

A kernel sees a symmetric n×n matrix H only through block products ``H @ V`` (``matmat``, V of shape
[n, k]): one call per block, so an operator that pays one pass over its data per call (the curvature
operator of :mod:`landscape.curvature`) pays it once for k vectors. ``size``, ``dtype`` and ``device``
say where the vectors live.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class Operator(Protocol):
    """What the kernels need: a symmetric n×n operator applied to blocks of column vectors."""

    size: int
    dtype: torch.dtype
    device: torch.device

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor: ...


class DenseOperator:
    """An explicit symmetric matrix as an :class:`Operator` (reference computations and tests)."""

    def __init__(self, matrix: torch.Tensor | np.ndarray) -> None:
        matrix = torch.as_tensor(matrix)
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"matrix must be square, got shape {tuple(matrix.shape)}.")
        self.matrix = matrix
        self.size = int(matrix.shape[0])
        self.dtype = matrix.dtype
        self.device = matrix.device
        self.n_hvp = 0

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.matmat(vector.reshape(-1, 1)).reshape(-1)

    def matmat(self, vectors: torch.Tensor) -> torch.Tensor:
        self.n_hvp += int(vectors.shape[1])
        return self.matrix @ vectors.to(self.device, self.dtype)
