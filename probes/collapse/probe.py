"""The registered ``collapse`` probe: collapse metrics of the classifier's input features at a checkpoint."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from landscape.features import check_pooling
from landscape.probe import ProbeContext, Result
from probes.collapse.features import _resolve, collect_ncc_counts, collect_stats, find_layer
from probes.collapse.geometry import class_arrays, metrics
from probes.collapse.stats import CollapseError, CollapseStats, absent_classes

CONVENTIONS = {
    "global_mean": "sample mean of all features",
    "nc1": "Tr(Sw pinv(Sb))/C, Sw and Sb with 1/N and 1/C, pinv on the top rank<=C-1 subspace, float64",
    "std": "ddof=1; equiangular over the C(C-1) off-diagonal cosines",
    "nc3": "squared Frobenius norm of W^T/|W|_F - M/|M|_F",
    "nc4": "argmax(W h + b), bias included, vs nearest class mean, both over present classes",
    "ncc": "nearest TRAIN class mean, on test data too; ncc_accuracy = its agreement with the label",
    "prefixes": "test_<key> for test data, <layer>/<key> and <layer>/test_<key> for extra layers",
    "cdnv": "mean over pairs of (V_c+V_c')/(2|mu_c-mu_c'|^2)",
    "absent_classes": "left out of every metric, classifier rows included",
}


class CollapseProbe:
    """Neural-collapse metrics of the classifier's input features (train, and test when given).

    ``layer`` (default: the last ``nn.Linear``) is the classifier; its weight and bias enter the metrics
    when it is an ``nn.Linear``. ``layers`` adds feature-only metrics of other modules' inputs, prefixed
    ``"{layer}/"``. The [C, C] cosine arrays are stored only when C ≤ ``max_classes``. Two forward
    passes per data set: statistics, then nearest-class-mean counts against the train class means.
    ``pooling`` picks the per-sequence feature of sequence models (:mod:`landscape.features`).
    """

    name = "collapse"
    defaults: ClassVar[dict[str, Any]] = {"layer": None, "layers": [], "max_classes": 100, "pooling": "auto"}

    def cost(self, params: dict[str, Any], n_params: int, n_samples: int) -> dict[str, float]:
        """Two forward passes over the train data (statistics, then nearest-class-mean counts), two over test."""
        return {"forward": 4.0}

    def run(self, ctx: ProbeContext, **params: Any) -> Result:
        p = {**self.defaults, **params}
        max_classes = p["max_classes"]
        if isinstance(max_classes, bool) or not isinstance(max_classes, int) or max_classes < 2:
            raise ValueError(f"max_classes must be an integer ≥ 2, got {max_classes!r}.")
        extra_layers = list(p["layers"] or [])
        record = {**p, "conventions": CONVENTIONS}
        problem = _not_classification(ctx)
        if problem is not None:
            return Result.invalid(problem, record)
        main, module = find_layer(ctx.model, p["layer"])
        extra, _ = _resolve(ctx.model, extra_layers)
        extra = [n for n in extra if n != main]
        classifier: tuple[Any, Any] = (None, None)
        if isinstance(module, nn.Linear):
            classifier = (module.weight.detach(), None if module.bias is None else module.bias.detach())
        record.update(resolved_layer=main, resolved_layers=extra, classifier=classifier[0] is not None,
                      bias_used=classifier[1] is not None)
        layers = [main, *extra]
        scalars: dict[str, float] = {}
        arrays: dict[str, np.ndarray] = {}
        try:
            pooling = check_pooling(p["pooling"])
            train = collect_stats(ctx.model, ctx.train, layers, pooling=pooling)
            splits = [("", train)]
            if ctx.test is not None:
                splits.append(("test_", collect_stats(ctx.model, ctx.test, layers, pooling=pooling)))
            for prefix, stats in splits:
                broken = [n for n in layers if not _finite(stats[n])]
                if broken:
                    return Result.invalid(f"the inputs of layer {broken[0]!r} are not finite at step {ctx.step}.",
                                          record)
                # NCC always uses the train class means: on test data it is the nearest-train-mean classifier.
                counts = collect_ncc_counts(ctx.model, ctx.test if prefix else ctx.train, train, {main: classifier},
                                            pooling=pooling)
                for name in layers:
                    weight, bias = classifier if name == main else (None, None)
                    values = metrics(stats[name], weight=weight, bias=bias)
                    n = stats[name].n_samples
                    values["ncc_accuracy"] = counts[name][1] / n
                    if weight is not None:
                        values["nc4_ncc_mismatch"] = counts[name][0] / n
                    head = prefix if name == main else f"{name}/{prefix}"
                    scalars.update({f"{head}{k}": v for k, v in values.items()})
            arrays.update(class_arrays(train[main], classifier[0], max_classes=max_classes))
            arrays["absent_classes"] = np.asarray(
                absent_classes(train[main], _n_classes(train[main], classifier[0])), dtype=np.int64)
        except CollapseError as error:
            return Result.invalid(str(error), record)
        return Result(scalars=scalars, arrays=arrays, params=record)


def _finite(stats: CollapseStats) -> bool:
    if stats.means is None or stats.within is None:
        return True  # no samples: metrics() reports that clearly
    return bool(torch.isfinite(stats.within).all() and torch.isfinite(stats.means).all())


def _n_classes(stats: CollapseStats, weight: Any) -> int:
    return int(weight.shape[0]) if weight is not None else len(stats.counts)


def _not_classification(ctx: ProbeContext) -> str | None:
    for batch in ctx.train:
        y = batch.targets
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            return (f"collapse needs integer class targets; the train targets have dtype {y.dtype}, "
                    "so this is not a classification task.")
    return None


PROBE = CollapseProbe()
