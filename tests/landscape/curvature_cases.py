"""Shared ground truth for the curvature operator and kernel tests (imported by those test files).

Tiny float64 models and data, the exact Hessian of the mean loss over all samples (one merged batch)
from ``torch.func.hessian``, and dense matrices with known spectra. Float64 products agree with the
exact matrices to ~1e-15 relative, so operator comparisons use 1e-10 (room for the summation order
over unequal batches).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from landscape.curvature import CurvatureOperator
from landscape.krylov import DenseOperator

OPERATOR_RTOL = 1e-10


# ---------------------------------------------------------------------------------------------- models


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


def cnn() -> nn.Module:
    """Conv + BatchNorm (eval mode, non-trivial running statistics) + linear head: 144 parameters."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(27, 3)
    ).double()
    bn = model[1]
    bn.running_mean.uniform_(-0.3, 0.3)
    bn.running_var.uniform_(0.5, 2.0)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return model


def frozen_mlp() -> nn.Module:
    model = mlp()
    model[0].bias.requires_grad_(False)
    return model


def mlp_data(n: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(n, 4, generator=generator, dtype=torch.float64), torch.randint(0, 3, (n,), generator=generator)


def cnn_data(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return (torch.randn(n, 1, 5, 5, generator=generator, dtype=torch.float64),
            torch.randint(0, 3, (n,), generator=generator))


def unequal(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three batches of sizes 7, 13 and the rest."""
    return [(x[:7], y[:7]), (x[7:20], y[7:20]), (x[20:], y[20:])]


CASES = {"mlp": (mlp, mlp_data), "cnn_bn": (cnn, cnn_data), "frozen": (frozen_mlp, mlp_data)}


def exact_hessian(model: nn.Module, loss_fn, x, y, names=None) -> torch.Tensor:
    """Hessian of loss_fn(model(x), y) over the named trainable parameters (one merged batch)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad and (names is None or n in names)}
    shapes = [p.shape for p in params.values()]
    flat = torch.cat([p.detach().reshape(-1) for p in params.values()])

    def loss_of(v):
        named, offset = {}, 0
        for name, shape in zip(params, shapes):
            count = math.prod(shape)
            named[name] = v[offset : offset + count].view(shape)
            offset += count
        return loss_fn(torch.func.functional_call(model, named, (x,)), y)

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        return torch.func.hessian(loss_of)(flat)
    finally:
        for module, mode in modes:
            module.training = mode


def dense(op: CurvatureOperator) -> torch.Tensor:
    return op.matmat(torch.eye(op.size, dtype=op.dtype))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = OPERATOR_RTOL) -> None:
    scale = expected.abs().max().item()
    assert (actual - expected).abs().max().item() <= rtol * scale


# ---------------------------------------------------------------------------------------------- dense operators


def spectrum_operator(eigenvalues: np.ndarray, seed: int = 0) -> tuple[DenseOperator, np.ndarray]:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((len(eigenvalues), len(eigenvalues))))
    return DenseOperator(torch.from_numpy((basis * eigenvalues) @ basis.T)), basis


class CountingOperator(DenseOperator):
    def __init__(self, matrix) -> None:
        super().__init__(matrix)
        self.calls = 0

    def matmat(self, vectors):
        self.calls += 1
        return super().matmat(vectors)
