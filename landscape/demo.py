"""The demo: train a small MLP on scikit-learn's bundled digits, save checkpoints, analyze them all.

Everything here is importable by string, so the written ``run.toml`` works with ``landscape analyze``:
``landscape.demo:make_model`` and ``landscape.demo:make_data``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

DEMO_PROBE_PARAMS: dict[str, dict[str, object]] = {}
"""Per-probe overrides that keep the demo's analysis within a few minutes on 2 CPU cores."""


def make_model(hidden: int = 64, seed: int = 0) -> nn.Module:
    """An MLP 64 → hidden → hidden → 10 for 8×8 digit images."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10)
    )


def make_data(test_fraction: float = 0.25, seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Digits (1,797 images, 10 classes) scaled to [0, 1], split into train and test with a fixed seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
    n_test = int(round(test_fraction * len(x)))
    test, train = order[:n_test], order[n_test:]
    return {"train": (x[train], y[train]), "test": (x[test], y[test])}


def checkpoint_steps(total: int, count: int) -> list[int]:
    """``count`` distinct steps from 0 to ``total``, spaced roughly logarithmically (early training moves fast)."""
    raw = np.unique(np.round(np.geomspace(1, total + 1, num=count) - 1).astype(int))
    steps = sorted(set(raw.tolist()) | {0, total})
    while len(steps) < count:
        gaps = np.diff(steps)
        i = int(np.argmax(gaps))
        steps.insert(i + 1, steps[i] + int(gaps[i]) // 2)
    return steps[:count] if len(steps) > count else steps


def train(
    folder: Path,
    *,
    steps: int = 600,
    n_checkpoints: int = 10,
    lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
    monitor: object | None = None,
) -> list[Path]:
    """Train with SGD (momentum 0.9) and save ``n_checkpoints`` checkpoints as ``step_XXXXXX.pt``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = make_data(seed=seed)
    x, y = data["train"]
    model = make_model(seed=seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    save_at = set(checkpoint_steps(steps, n_checkpoints))
    generator = torch.Generator().manual_seed(seed)
    per_epoch = math.ceil(len(x) / batch_size)
    order = torch.randperm(len(x), generator=generator)
    saved: list[Path] = []
    for step in range(steps + 1):
        if step in save_at:
            path = folder / f"step_{step:06d}.pt"
            torch.save({"state_dict": model.state_dict(), "step": step, "lr": lr}, path)
            saved.append(path)
        if step == steps:
            break
        if step % per_epoch == 0:
            order = torch.randperm(len(x), generator=generator)
        index = order[(step % per_epoch) * batch_size:(step % per_epoch + 1) * batch_size]
        model.train()
        optimizer.zero_grad()
        outputs = model(x[index])
        loss = loss_fn(outputs, y[index])
        loss.backward()
        if monitor is not None:
            monitor.step(model, step, optimizer=optimizer, loss=loss, outputs=outputs, targets=y[index])
        optimizer.step()
    return saved


#: The demo's factories as ``landscape analyze --config run.toml`` names them, so that re-running the
#: written config finds the demo's results stored for the same inputs.
MODEL_TARGET, DATA_TARGET, LOSS_TARGET = "landscape.demo:make_model", "landscape.demo:make_data", "torch.nn:CrossEntropyLoss"
INPUTS = {"model": {"target": MODEL_TARGET, "kwargs": {}}, "loss": {"target": LOSS_TARGET, "kwargs": {}},
          "data": {"target": DATA_TARGET, "kwargs": {}}}


def write_config(folder: Path, store: Path, checkpoints: Path, lr: float, probe_params: dict[str, dict]) -> Path:
    """A ``run.toml`` that reproduces the demo's analysis with ``landscape analyze --config``."""
    lines = [
        "[run]",
        'name = "digits-mlp"',
        f'store = "{store.name}"',
        f'checkpoints = "{checkpoints.name}"',
        'device = "auto"',
        f"lr = {lr}",
        "",
        "[model]",
        f'factory = "{MODEL_TARGET}"',
        "",
        "[data]",
        f'factory = "{DATA_TARGET}"',
        "",
        "[loss]",
        f'factory = "{LOSS_TARGET}"',
    ]
    for name, params in probe_params.items():
        lines += ["", f"[probes.{name}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in params.items()]
    path = folder / "run.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
