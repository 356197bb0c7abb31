"""Basic measurements at a checkpoint: train/test loss and accuracy, parameter norm, gradient norm.

For token-level targets (language models) the accuracy is the token accuracy over the scored tokens and
the perplexity ``exp(loss)`` of the token-weighted mean loss is stored as well.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from landscape.data import as_batches
from landscape.evaluate import Evaluation, LossFn, evaluate, gradient
from landscape.params import preserved, trainable_parameters
from landscape.probe import ProbeContext, Result


def parameter_norm(model: nn.Module) -> float:
    """Euclidean norm of all trainable parameters together."""
    return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in trainable_parameters(model).values()))


def gradient_norm(model: nn.Module, loss_fn: LossFn, data: object) -> float:
    """Norm of the full-data gradient of the sample-weighted mean loss (model left untouched)."""
    batches = as_batches(data, device=_device_of(model))
    with preserved(model):
        grads = gradient(model, loss_fn, batches)
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads.values()))


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _split(prefix: str, result: Evaluation) -> dict[str, float]:
    out = {f"{prefix}_loss": result.loss}
    if result.accuracy is not None:
        out[f"{prefix}_accuracy"] = result.accuracy
    if result.perplexity is not None:
        out[f"{prefix}_perplexity"] = result.perplexity
    return out


class MetricsProbe:
    """Loss, accuracy and norms: cheap, and the baseline every other view is read against."""

    name = "metrics"
    defaults: ClassVar[dict[str, Any]] = {"gradient": True}

    def cost(self, params: dict[str, Any], n_params: int, n_samples: int) -> dict[str, float]:
        """One forward pass over the train (and test) data, one gradient."""
        return {"forward": 2.0, "gradient": 1.0 if {**self.defaults, **params}["gradient"] else 0.0}

    def run(self, ctx: ProbeContext, **params: Any) -> Result:
        scalars: dict[str, float] = {}
        train = evaluate(ctx.model, ctx.loss_fn, ctx.train)
        scalars.update(_split("train", train))
        if ctx.test is not None:
            scalars.update(_split("test", evaluate(ctx.model, ctx.loss_fn, ctx.test)))
        scalars["param_norm"] = parameter_norm(ctx.model)
        if not math.isfinite(train.loss):
            return Result(scalars=scalars, params=dict(params), valid=False,
                          message=f"train loss is {train.loss} at step {ctx.step}")
        if params["gradient"]:
            with preserved(ctx.model):
                grads = gradient(ctx.model, ctx.loss_fn, ctx.train)
            scalars["grad_norm"] = float(np.sqrt(sum(float(g.double().pow(2).sum()) for g in grads.values())))
        return Result(scalars=scalars, params=dict(params))


PROBE = MetricsProbe()
