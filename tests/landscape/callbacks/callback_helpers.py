"""Shared by the callback tests: a tiny classifier, its data, a training loop, RNG snapshots."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape.callbacks import Monitor
from landscape.store import Store


def _data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    return x, x[:, :3].argmax(dim=1)


def _model(seed: int = 0, *, noisy: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    if noisy:  # dropout (consumes RNG in train mode) and batch norm (running statistics)
        return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, monitor: Monitor | None = None, *,
           pass_outputs: bool = True) -> None:
    x, y = _data()
    for step in range(steps):
        model.train()
        optimizer.zero_grad()
        index = torch.randint(0, len(x), (16,))  # consumes the torch RNG: a disturbed RNG changes the run
        outputs = model(x[index])
        loss = F.cross_entropy(outputs, y[index])
        loss.backward()
        optimizer.step()
        if monitor is not None:
            if pass_outputs:
                monitor.step(model, step, optimizer, loss=loss, outputs=outputs, targets=y[index])
            else:
                monitor.step(model, step, optimizer)


def _rng_states() -> tuple:
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone()


def _assert_same_rng(before: tuple, after: tuple) -> None:
    assert before[0] == after[0]
    np.testing.assert_array_equal(before[1], after[1])
    assert torch.equal(before[2], after[2])


def _steps(store: Store, run: str, probe: str) -> list[int]:
    return store.steps(run, probe=probe)

