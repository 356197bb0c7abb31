"""Sample-weighted mean loss and accuracy of a model over fixed batches."""

from __future__ import annotations

import math
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


def _per_group_losses(loss_fn: LossFn, outputs: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """The loss of each sample on its own; of each half when the loss refuses single samples."""
    n = int(outputs.shape[0])
    try:
        return [float(check_scalar_loss(loss_fn(outputs[i : i + 1], targets[i : i + 1]))) for i in range(n)]
    except LossError:
        raise
    except Exception:  # noqa: BLE001 - some losses need more than one sample: compare halves instead
        half = n // 2
        return [float(check_scalar_loss(loss_fn(outputs[:half], targets[:half]))),
                float(check_scalar_loss(loss_fn(outputs[half:], targets[half:])))]


def check_mean_reduction(loss_fn: LossFn, outputs: torch.Tensor, targets: torch.Tensor) -> bool:
    """Check that ``loss_fn`` reduces a batch by a mean; True when confirmed, False when undecidable.

    Definition: a mean-type reduction gives a batch the mean of its samples' losses, or (class weights,
    ``ignore_index``) a weighted mean of them, which lies between their smallest and largest value. A sum
    (``reduction="sum"``) gives their total, far outside that range whenever two samples have a loss. The
    losses are taken on already computed ``outputs`` (no extra forward pass). Raises :class:`LossError`
    when the loss is not a scalar or is not a mean; undecidable (False) with fewer than two samples or
    non-finite values (e.g. diverged weights), so the caller may try again on other outputs.
    """
    whole = float(check_scalar_loss(loss_fn(outputs, targets)))
    if int(outputs.shape[0]) < 2 or not math.isfinite(whole):
        return False
    parts = [v for v in _per_group_losses(loss_fn, outputs, targets) if math.isfinite(v)]
    if not parts:
        return False
    mean, low, high, total = sum(parts) / len(parts), min(parts), max(parts), sum(parts)
    # 1e-4 relative: far above float32 rounding of a mean of a few values, far below a sum's factor of n.
    tol = 1e-4 * max(abs(whole), abs(high), abs(low)) + 1e-7
    if abs(whole - mean) <= tol or low - tol <= whole <= high + tol:
        return True
    hint = " (it is their sum: use reduction='mean')" if abs(whole - total) <= tol * len(parts) else ""
    raise LossError(
        f"loss_fn must return the mean loss over the batch, but on {int(outputs.shape[0])} samples it gives "
        f"{whole:.6g}, outside the range [{low:.6g}, {high:.6g}] of its values on the samples alone{hint}."
    )


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
