"""Checks of model, data and loss that run once per run, before any result is written.

A problem found here (the model cannot take the inputs, the loss is not a finite scalar mean, a class
label outside the model's outputs) would otherwise fail, or silently mislead, every probe at every
checkpoint; here it is one sentence and nothing is stored.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from landscape.batch import Batch
from landscape.data import Batches, DataError
from landscape.evaluate import LossError, LossFn, check_mean_reduction, check_scalar_loss
from landscape.objective import Objective, as_objective, describe_outputs
from landscape.params import preserved

#: Samples of the first batch the preflight forward pass uses.
PREFLIGHT_SAMPLES = 8
_INTEGER = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def first_samples(data: Batches, n: int = PREFLIGHT_SAMPLES) -> Batch:
    """The first ``n`` samples of ``data`` (of its first batch, which may hold fewer)."""
    first = data.batches[0]
    return first.rows(0, min(n, first.n_samples))


def check_class_targets(width: int, data: Batches, name: str, ignore_index: int | None) -> None:
    """Every integer class label of ``data`` lies in ``[0, width)`` (or equals the loss's ``ignore_index``).

    One min/max per batch over all samples: a label beyond the preflight samples is found here, before
    the run, instead of failing every probe at every checkpoint.
    """
    for index, batch in enumerate(data):
        y = batch.targets
        if y.dtype not in _INTEGER or y.dim() != 1 or not y.numel():
            return
        kept = y if ignore_index is None else y[y != ignore_index]
        if not kept.numel():
            continue
        low, high = int(kept.min()), int(kept.max())
        if low < 0 or high >= width:
            bad = low if low < 0 else high
            raise DataError(
                f"{name} batch {index} holds the class label {bad}, but the model has {width} outputs per sample: "
                f"labels must lie in 0..{width - 1}."
            )


def preflight(model: nn.Module, loss_fn: LossFn | str | Objective, train: Batches, test: Batches | None = None) -> None:
    """Fail before any work when model, data and loss do not fit together.

    On the first samples of the train (and test) data: the model runs on the batch; logits are found in
    its outputs (or, with the model's own loss, a loss); the loss is a scalar, finite with the model's
    weights, and — for a loss function of the logits — a mean over the batch (:func:`check_mean_reduction`);
    integer class labels of all samples lie within the model's output width.
    """
    objective = as_objective(loss_fn, model)
    with preserved(model), torch.no_grad():
        model.eval()
        for name, data in (("train data", train), ("test data", test)):
            if data is None:
                continue
            batch = first_samples(data)
            try:
                outputs = objective.forward(model, batch)
            except Exception as error:
                inputs = batch.inputs
                where = (f", inputs of shape {tuple(inputs.shape)}, dtype {inputs.dtype}"
                         if isinstance(inputs, torch.Tensor) else "")
                raise DataError(f"the model cannot process the first {name} samples ({batch.describe()}{where}): "
                                f"{type(error).__name__}: {error}") from None
            try:
                loss = check_scalar_loss(objective.loss(outputs, batch))
            except LossError:
                raise
            except Exception as error:
                raise LossError(f"the loss fails on the model's outputs ({describe_outputs(outputs)}) and the {name} "
                                f"targets {tuple(batch.targets.shape)} (dtype {batch.targets.dtype}): "
                                f"{type(error).__name__}: {error}") from None
            value = float(loss)
            if not math.isfinite(value) and all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise LossError(f"the loss is {value} on the first {batch.n_samples} {name} samples with finite "
                                "weights; check the data for NaN/Inf and the loss function.")
            if objective.uses_model_loss:
                continue
            logits = objective.logits(outputs)
            check_mean_reduction(objective.loss_fn, logits, batch.targets)
            y = batch.targets
            if logits.dim() == 2 and logits.shape[1] >= 2 and y.dim() == 1 and y.dtype in _INTEGER:
                check_class_targets(int(logits.shape[1]), data, name, getattr(objective.loss_fn, "ignore_index", None))
