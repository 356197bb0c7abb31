"""The ``grokking`` probe: SC, logit gaps, NLM and update alignment, feature change at a checkpoint."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from landscape.checkpoints import Checkpoint, load_into
from landscape.data import Batches, as_batches
from landscape.evaluate import evaluate
from landscape.objective import as_objective
from landscape.params import preserved, trainable_parameters
from landscape.probe import ProbeContext, Result
from probes.grokking.diagnostics import (
    _as_float_dtype,
    _check_logits,
    _CollapseCounts,
    feature_change,
    generalization_gap,
    last_layer_features,
    linear_cka,
    nlm_alignment_report,
    update_cosine,
    weight_norm,
)


# -- the probe ------------------------------------------------------------------------------------------
def _neighbours(checkpoints: list[Checkpoint], step: int) -> tuple[Checkpoint | None, Checkpoint | None]:
    before = [c for c in checkpoints if c.step < step]
    after = [c for c in checkpoints if c.step > step]
    return (max(before) if before else None), (min(after) if after else None)


def _class_targets(data: Batches) -> bool:
    return all(not (b.targets.is_floating_point() or b.targets.is_complex()) for b in data)


def _check_params(params: Mapping[str, Any]) -> None:
    margin = params["near_margin"]
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"near_margin must be a finite number >= 0, got {margin!r}.")
    for key in ("feature_samples", "hist_bins"):
        value = params[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}.")


class GrokkingProbe:
    """SC, logit gaps, NLM alignment, update alignment and feature change: cheap enough for every step.

    Params: ``dtype`` (the softmax dtype whose collapse is measured), ``near_margin`` (logit-gap margin
    below the absorption threshold counted as near-SC), ``feature_samples`` (fixed subset for the
    feature-change CKA), ``feature_layer`` (module name whose input is the feature; None: last Linear),
    ``hist_bins`` (logit-gap histogram over ``[0, 2·threshold]``, larger gaps in the last bin),
    ``nlm`` (compute the NLM cosine; one full-data gradient).
    """

    name = "grokking"
    defaults: ClassVar[dict[str, Any]] = {
        "dtype": "float32",
        "near_margin": 3.0,
        "feature_samples": 512,
        "feature_layer": None,
        "hist_bins": 40,
        "nlm": True,
    }

    def cost(self, params: dict[str, Any], n_params: int, n_samples: int) -> dict[str, float]:
        """A forward pass for the logits, one on the test data, a gradient for the NLM cosine, and two forward
        passes on the feature subset at this and the previous checkpoint."""
        p = {**self.defaults, **params}
        share = min(1.0, int(p["feature_samples"]) / max(n_samples, 1))
        return {"forward": 2.0 + 2 * share, "gradient": 1.0 if p["nlm"] else 0.0}

    def run(self, ctx: ProbeContext, **params: Any) -> Result:
        dtype = _as_float_dtype(params["dtype"])
        _check_params(params)
        model = ctx.model
        if not _class_targets(ctx.train):
            return Result.invalid("the grokking probe needs class-index targets (1-D integer tensors).", params)
        counts = _CollapseCounts(dtype, float(params["near_margin"]))
        objective = as_objective(ctx.loss_fn, model)
        total_loss, weights, correct = 0.0, 0.0, 0
        with torch.inference_mode():
            for batch in ctx.train:
                outputs = objective.forward(model, batch)
                logits = objective.logits(outputs)
                view = objective.class_view(logits, batch.targets)
                if view is None:
                    return Result.invalid(f"the grokking probe needs class logits for the targets, got logits of shape "
                                          f"{tuple(logits.shape)} for targets of shape {tuple(batch.targets.shape)}.",
                                          params)
                weight = objective.weight(batch)
                if weight:
                    total_loss += float(objective.loss(outputs, batch)) * weight
                    weights += weight
                flat_logits, flat = view
                correct += int((flat_logits.argmax(dim=-1) == flat).sum())
                counts.add(flat_logits, _check_logits(flat_logits, flat))
        n = counts.n
        train_loss = total_loss / weights if weights else math.nan
        if not math.isfinite(train_loss):
            return Result.invalid(f"train loss is {train_loss} at step {ctx.step}", params)
        report = counts.report()
        scalars: dict[str, float] = {
            key: report[key]
            for key in ("sc_fraction", "zero_loss_fraction", "near_sc_fraction", "logit_gap_mean", "max_logit_mean", "logit_norm")
        }
        scalars["train_loss"] = train_loss
        scalars["train_accuracy"] = correct / n
        scalars["weight_norm"] = weight_norm(model)
        if ctx.test is not None:
            test = evaluate(model, ctx.loss_fn, ctx.test)
            scalars["test_loss"] = test.loss
            if test.accuracy is not None:
                scalars["test_accuracy"] = test.accuracy
            scalars["generalization_gap"] = generalization_gap(
                {"loss": train_loss, "accuracy": correct / n}, {"loss": test.loss, "accuracy": test.accuracy}
            )
        arrays: dict[str, np.ndarray] = {}
        edges = np.linspace(0.0, 2.0 * report["threshold"], int(params["hist_bins"]) + 1)
        gaps = np.clip(report["logit_gap"], edges[0], edges[-1])
        arrays["logit_gap_hist"] = np.histogram(gaps, bins=edges)[0].astype(np.int64)
        arrays["logit_gap_edges"] = edges
        if params["nlm"]:
            nlm = nlm_alignment_report(model, ctx.loss_fn, ctx.train)
            if math.isfinite(nlm["cosine"]):
                scalars["nlm_cosine"] = nlm["cosine"]
            arrays["tensor_names"] = np.array(list(nlm["per_tensor"]), dtype=str)
            arrays["nlm_cosine_per_tensor"] = np.array(list(nlm["per_tensor"].values()), dtype=np.float64)
        previous, following = _neighbours(list(ctx.checkpoints), ctx.step)
        if following is not None and ctx.load_state is not None:
            with preserved(model):
                load_into(model, ctx.load_state(following), following.path)
                upcoming = {n: p.detach().clone() for n, p in trainable_parameters(model).items()}
            cosine = update_cosine(model, upcoming)
            if math.isfinite(cosine):
                scalars["update_cosine"] = cosine
        if previous is not None and ctx.load_state is not None:
            change = self._feature_change(ctx, previous, params)
            if change is not None:
                scalars.update(change)
        return Result(scalars=scalars, arrays=arrays, params=dict(params))

    @staticmethod
    def _feature_change(ctx: ProbeContext, previous: Checkpoint, params: dict[str, Any]) -> dict[str, float] | None:
        subset = as_batches(ctx.train, max_samples=int(params["feature_samples"]), seed=0)
        now = last_layer_features(ctx.model, subset, params["feature_layer"])
        if now is None:
            return None
        assert ctx.load_state is not None
        state = ctx.load_state(previous)
        with preserved(ctx.model):
            load_into(ctx.model, state, previous.path)
            before = last_layer_features(ctx.model, subset, params["feature_layer"])
        assert before is not None
        out: dict[str, float] = {}
        change = feature_change(now, before)
        if math.isfinite(change):
            out["feature_change"] = change
        if all(b.targets.dim() == 1 for b in subset):  # one class per sample: labels align with the features
            labels = torch.cat([b.targets for b in subset]).to(now.device)
            alignment = linear_cka(now, F.one_hot(labels, num_classes=int(labels.max()) + 1))
            if math.isfinite(alignment):
                out["feature_label_alignment"] = alignment
        return out


PROBE = GrokkingProbe()
