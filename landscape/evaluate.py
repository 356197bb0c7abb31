"""Weighted mean loss, accuracy and perplexity of a model over fixed batches, and the full-data gradient.

Every function takes ``loss_fn`` as a loss function, ``"model"`` (the model's own loss) or an
:class:`~landscape.objective.Objective`; the full-data loss is the weighted mean
``Σ_b w_b·L_b / Σ_b w_b`` with ``w_b`` the samples, or the non-ignored tokens, of batch b (see
:mod:`landscape.objective`), so unequal batches give the value of one big batch.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from landscape.data import Batches, as_batches
from landscape.distributed.agreement import local_share
from landscape.distributed.group import all_reduce_named, all_reduce_sum, world_size
from landscape.objective import (
    LossError,
    LossFn,
    Objective,
    OutputError,
    as_objective,
    check_scalar_loss,
)

__all__ = [
    "Evaluation",
    "LossError",
    "LossFn",
    "OutputError",
    "autocast_context",
    "check_scalar_loss",
    "correct_count",
    "evaluate",
    "gradient",
    "total_weight",
]


@dataclass(frozen=True)
class Evaluation:
    """Mean loss (weighted over batches), accuracy (None for non-class targets), sample count.

    For token-level targets ``accuracy`` is the token accuracy, ``perplexity`` is ``exp(loss)`` and
    ``n_tokens`` the number of scored tokens; both are None for sample-level targets.
    """

    loss: float
    accuracy: float | None
    n_samples: int
    perplexity: float | None = None
    n_tokens: int | None = None


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


def _model_device(model: nn.Module) -> torch.device | None:
    first = next(model.parameters(), None)
    return None if first is None else first.device


def total_weight(objective: Objective, data: Batches, *, summed: bool = False) -> float:
    """``Σ_b w_b``: the number of terms the full-data mean runs over (over all ranks when ``summed``, with
    ``data`` this rank's shard); an error when it is 0."""
    total = float(sum(objective.weight(b) for b in data))
    if summed:
        total = float(all_reduce_sum(torch.tensor([total], dtype=torch.float64), "the data's weight")[0])
    if total <= 0:
        raise LossError("no batch has a target to score (every target equals ignore_index); the loss is undefined.")
    return total


def evaluate(
    model: nn.Module,
    loss_fn: LossFn | str | Objective,
    data: object,
    *,
    autocast_dtype: torch.dtype | None = None,
) -> Evaluation:
    """Mean loss and accuracy over ``data`` under ``torch.inference_mode()`` (batches of weight 0 skipped)."""
    objective = as_objective(loss_fn, model)
    data, summed = local_share(data if isinstance(data, Batches) else as_batches(data, device=_model_device(model)))
    total_loss, weights = 0.0, 0.0
    total_correct, counted = 0, 0
    has_accuracy = True
    with torch.inference_mode(), autocast_context(data.device, autocast_dtype):
        for batch in data:
            weight = objective.weight(batch)
            if weight == 0:
                continue
            outputs = objective.forward(model, batch)
            total_loss += float(objective.loss(outputs, batch)) * weight
            weights += weight
            if has_accuracy:
                hits = objective.correct(outputs, batch)
                if hits is None:
                    has_accuracy = False
                else:
                    total_correct += int(hits[0])
                    counted += hits[1]
    n_samples = data.n_samples
    if summed:  # sums over the ranks' shards (one collective)
        sums = torch.tensor([total_loss, weights, total_correct, counted, n_samples, float(has_accuracy)],
                            dtype=torch.float64)
        total_loss, weights, total_correct, counted, n_samples, agreeing = all_reduce_sum(sums, "evaluate").tolist()
        has_accuracy = agreeing == world_size()
        total_correct, counted, n_samples = int(total_correct), int(counted), int(n_samples)
    if weights == 0:
        raise LossError("no batch has a target to score (every target equals ignore_index); the loss is undefined.")
    loss = total_loss / weights
    token_level = objective.token_level(data.batches[0])
    return Evaluation(
        loss=loss,
        accuracy=total_correct / counted if has_accuracy and counted else None,
        n_samples=n_samples,
        perplexity=(math.exp(loss) if loss < 700 else math.inf) if token_level and math.isfinite(loss) else None,
        n_tokens=int(weights) if token_level else None,
    )


def gradient(model: nn.Module, loss_fn: LossFn | str | Objective, data: object) -> dict[str, torch.Tensor]:
    """Full-data gradient of the weighted mean loss w.r.t. the trainable parameters.

    Does not touch ``.grad``; returns detached tensors keyed by parameter name.
    """
    objective = as_objective(loss_fn, model)
    data, summed = local_share(data if isinstance(data, Batches) else as_batches(data, device=_model_device(model)))
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    weights = total_weight(objective, data, summed=summed)
    for batch in data:
        weight = objective.weight(batch)
        if weight == 0:
            continue
        loss = objective.batch_loss(model, batch)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for (name, _), g in zip(params.items(), grads):
            if g is not None:
                total[name].add_(g, alpha=weight / weights)
    if summed:  # the ranks' weighted partial sums add up to the full-data gradient
        all_reduce_named(total, "the full-data gradient")
    return total
