"""Checks of model, data and loss that run once per run, before any result is written.

A problem found here (the model cannot take the inputs, the loss is not a finite scalar mean, a class
label outside the model's outputs) would otherwise fail, or silently mislead, every probe at every
checkpoint; here it is one sentence and nothing is stored.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from landscape.data import Batches, DataError
from landscape.evaluate import LossError, LossFn, check_mean_reduction, check_scalar_loss
from landscape.params import preserved

#: Samples of the first batch the preflight forward pass uses.
PREFLIGHT_SAMPLES = 8
_INTEGER = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def first_samples(data: Batches, n: int = PREFLIGHT_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` samples of ``data`` (across batches when the first is smaller)."""
    xs, ys, have = [], [], 0
    for x, y in data:
        take = min(n - have, int(x.shape[0]))
        xs.append(x[:take])
        ys.append(y[:take])
        have += take
        if have >= n:
            break
    if len(xs) == 1:
        return xs[0], ys[0]
    try:
        return torch.cat(xs), torch.cat(ys)
    except RuntimeError:  # batches of unequal trailing shapes: the first one alone
        return xs[0], ys[0]


def check_class_targets(width: int, data: Batches, name: str, ignore_index: int | None) -> None:
    """Every integer class label of ``data`` lies in ``[0, width)`` (or equals the loss's ``ignore_index``).

    One min/max per batch over all samples: a label beyond the preflight samples is found here, before
    the run, instead of failing every probe at every checkpoint.
    """
    for index, (_, y) in enumerate(data):
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


def preflight(model: nn.Module, loss_fn: LossFn, train: Batches, test: Batches | None = None) -> None:
    """Fail before any work when model, data and loss do not fit together.

    On the first samples of the train (and test) data: the model runs on the inputs; the loss is a
    scalar, finite with the model's weights, and a mean over the batch (:func:`check_mean_reduction`);
    integer class labels of all samples lie within the model's output width.
    """
    with preserved(model), torch.no_grad():
        model.eval()
        for name, data in (("train data", train), ("test data", test)):
            if data is None:
                continue
            x, y = first_samples(data)
            try:
                outputs = model(x)
            except Exception as error:
                raise DataError(f"the model cannot process the first {name} samples (inputs of shape "
                                f"{tuple(x.shape)}, dtype {x.dtype}): {type(error).__name__}: {error}") from None
            if not isinstance(outputs, torch.Tensor):
                raise DataError(f"the model returns a {type(outputs).__name__} on the {name}, not a tensor of outputs.")
            try:
                loss = check_scalar_loss(loss_fn(outputs, y))
            except LossError:
                raise
            except Exception as error:
                raise LossError(f"the loss fails on the model's outputs {tuple(outputs.shape)} and the {name} targets "
                                f"{tuple(y.shape)} (dtype {y.dtype}): {type(error).__name__}: {error}") from None
            value = float(loss)
            if not math.isfinite(value) and all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise LossError(f"the loss is {value} on the first {int(x.shape[0])} {name} samples with finite "
                                "weights; check the data for NaN/Inf and the loss function.")
            check_mean_reduction(loss_fn, outputs, y)
            if outputs.dim() == 2 and outputs.shape[1] >= 2 and y.dim() == 1 and y.dtype in _INTEGER:
                check_class_targets(int(outputs.shape[1]), data, name, getattr(loss_fn, "ignore_index", None))
