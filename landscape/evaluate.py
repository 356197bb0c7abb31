"""Sample-weighted mean loss and accuracy of a model over fixed batches."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from landscape.data import Batches

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class LossError(ValueError):
    """The loss function does not return what the toolkit needs (a scalar mean)."""


@dataclass(frozen=True)
class Evaluation:
    """Mean loss (sample-weighted over batches), accuracy (None for non-class targets), sample count."""

    loss: float
    accuracy: float | None
    n_samples: int


def check_scalar_loss(loss: torch.Tensor) -> torch.Tensor:
    """Raise :class:`LossError` unless ``loss`` is a 0-dim tensor (a mean over the batch)."""
    if not isinstance(loss, torch.Tensor):
        raise LossError(f"loss_fn must return a tensor, got {type(loss).__name__}.")
    if loss.dim() != 0:
        raise LossError(
            f"loss_fn must return a scalar (the mean over the batch), got a tensor of shape {tuple(loss.shape)}; "
            "use reduction='mean'."
        )
    return loss


def correct_count(outputs: torch.Tensor, targets: torch.Tensor) -> int | None:
    """Number of correct top-1 predictions, or None when the targets are not class indices."""
    if targets.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8) and outputs.dim() == targets.dim() + 1:
        return int((outputs.argmax(dim=-1) == targets).sum())
    return None


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> object:
    """Autocast on CUDA when a low-precision dtype is asked for; fp32 otherwise (CPU autocast is slow)."""
    if dtype is None or device.type != "cuda":
        return nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def evaluate(
    model: nn.Module,
    loss_fn: LossFn,
    data: Batches,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> Evaluation:
    """Mean loss and accuracy over ``data`` under ``torch.inference_mode()``.

    The full-data loss is the sample-weighted mean of the per-batch mean losses, so unequal batch
    sizes give the same value as one big batch.
    """
    total_loss = 0.0
    total_correct = 0
    has_accuracy = True
    n = 0
    with torch.inference_mode(), autocast_context(data.device, autocast_dtype):
        for x, y in data:
            outputs = model(x)
            loss = check_scalar_loss(loss_fn(outputs, y))
            size = int(x.shape[0])
            total_loss += float(loss) * size
            correct = correct_count(outputs, y)
            if correct is None:
                has_accuracy = False
            else:
                total_correct += correct
            n += size
    return Evaluation(loss=total_loss / n, accuracy=total_correct / n if has_accuracy else None, n_samples=n)


def gradient(model: nn.Module, loss_fn: LossFn, data: Batches) -> dict[str, torch.Tensor]:
    """Full-data gradient of the sample-weighted mean loss w.r.t. the trainable parameters.

    Does not touch ``.grad``; returns detached tensors keyed by parameter name.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    n = data.n_samples
    for x, y in data:
        loss = check_scalar_loss(loss_fn(model(x), y))
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        weight = x.shape[0] / n
        for (name, _), g in zip(params.items(), grads):
            if g is not None:
                total[name].add_(g, alpha=weight)
    return total
