"""Shared cases for the slice tests (imported by them): tiny models and data, the loss at a point evaluated
the plain way (independent of the slicing engine), and an in-memory ``PartialRows`` that can simulate a
kill after a saved row."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from landscape.data import as_batches
from landscape.evaluate import evaluate
from landscape.params import perturbed

# Two evaluations of the same weights on the same batches run the same kernels, but a grid point is
# written as origin + a·d1 + b·d2 while `perturbed` adds in place from θ: both are the same float32
# operations in the same order, so values agree to rounding of the float64 loss sum (1e-12 relative).
EXACT = {"rtol": 1e-12, "atol": 1e-12}


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
    )


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))


def image_data(n: int = 30, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    return [(x[:17], y[:17]), (x[17:], y[17:])]  # unequal batches: the sample-weighted mean must be exact


def vector_data(n: int = 24, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)
    return [(x[:10], y[:10]), (x[10:], y[10:])]


def with_stats(model: nn.Module) -> nn.Module:
    """Give BatchNorm non-trivial running statistics (as after training)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(7)
    return model


def direct(model: nn.Module, loss_fn, data, dirs, coeffs) -> tuple[float, float | None]:
    """The loss at θ + Σ cₖ·dₖ evaluated the plain way (independent of the slicing engine)."""
    mode = model.training
    model.eval()
    with perturbed(model, dirs, coeffs):
        result = evaluate(model, loss_fn, as_batches(data))
    model.train(mode)
    return result.loss, result.accuracy


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


LOSS = nn.CrossEntropyLoss()


class Killed(Exception):
    pass


class MemoryRows:
    """In-memory PartialRows; ``fail_after`` saves raise (a simulated kill after the row is stored)."""

    def __init__(self) -> None:
        self.rows: dict[int, dict[str, np.ndarray]] = {}
        self.saves = 0
        self.fail_after: int | None = None

    def load(self) -> dict[int, dict[str, np.ndarray]]:
        return {k: {n: a.copy() for n, a in v.items()} for k, v in self.rows.items()}

    def save(self, index: int, arrays: Mapping[str, np.ndarray]) -> None:
        self.rows[index] = {k: np.array(v) for k, v in arrays.items()}
        self.saves += 1
        if self.fail_after is not None and self.saves >= self.fail_after:
            raise Killed
