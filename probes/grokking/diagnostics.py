"""Grokking diagnostics: Softmax Collapse, logit gaps, NLM and update alignment, feature change.

The definitions (absorption threshold, SC, logit gap, near-SC, NLM cosine, update cosine, feature
change) are written out in :mod:`probes.grokking`; this module computes them from logits, models and
checkpointed weights. Nothing here trains or writes to a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape.batch import Batch
from landscape.data import Batches, as_batches
from landscape.evaluate import LossFn, gradient
from landscape.features import is_decoder, pool_tokens
from landscape.params import preserved, trainable_parameters

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


# -- Softmax Collapse -------------------------------------------------------------------------------
def _as_float_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        key = dtype.removeprefix("torch.")
        if key not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)} (or a torch float dtype), got {dtype!r}.")
        return _DTYPES[key]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a torch floating-point dtype, got {dtype!r}.")
    return dtype


def absorption_threshold(dtype: torch.dtype | str = torch.float32) -> float:
    """``log(2/ε)``: the logit gap beyond which ``1 + e^{-gap}`` rounds to exactly 1 in ``dtype``."""
    return math.log(2.0 / torch.finfo(_as_float_dtype(dtype)).eps)


def _check_logits(logits: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor | None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a 2-D tensor [samples, classes], got {shape}.")
    if logits.shape[1] < 2:
        raise ValueError(f"logits must have at least 2 classes, got {logits.shape[1]}.")
    if targets is None:
        return None
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"targets must be a tensor of class indices, got {type(targets).__name__}.")
    if targets.dim() == 2 and targets.shape == logits.shape:
        targets = targets.argmax(dim=1)  # one-hot targets: their class index
    if targets.dim() != 1 or targets.shape[0] != logits.shape[0] or targets.is_floating_point():
        raise ValueError(
            f"targets must be class indices of shape [{logits.shape[0]}] (or one-hot [{logits.shape[0]}, "
            f"{logits.shape[1]}]), got {targets.dtype} of shape {tuple(targets.shape)}."
        )
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= logits.shape[1]):
        raise ValueError(f"targets must lie in [0, {logits.shape[1] - 1}], got values outside.")
    return targets.to(logits.device, torch.long)


def _collapsed(logits: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-sample SC flag: in ``dtype``, ``Σ exp(x − max x) == 1`` exactly."""
    cast = logits.detach().to(dtype)
    shifted = cast - cast.amax(dim=1, keepdim=True)
    return shifted.exp().sum(dim=1) == 1


def _zero_loss(logits: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-sample flag: cross-entropy computed in ``dtype`` is exactly 0."""
    losses = F.cross_entropy(logits.detach().to(dtype), targets, reduction="none")
    return losses == 0


def logit_gap(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 logit per sample (float64, so the gap itself is not rounded away)."""
    _check_logits(logits)
    top2 = logits.detach().double().topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def softmax_collapse(logits: torch.Tensor, targets: torch.Tensor, *, dtype: torch.dtype | str = torch.float32) -> float:
    """Fraction of samples in Softmax Collapse when the softmax is computed in ``dtype``.

    SC of a sample: logits cast to ``dtype``, row maximum subtracted, and the sum of exponentials equal
    to 1 exactly (every non-maximal term absorbed). ``targets`` are checked but, as in the reference
    measure, do not enter the flag (see :func:`softmax_collapse_report` for the zero-loss count).
    """
    targets = _check_logits(logits, targets)
    if logits.shape[0] == 0:
        raise ValueError("logits hold no samples.")
    return float(_collapsed(logits, _as_float_dtype(dtype)).double().mean())


def softmax_collapse_report(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    dtype: torch.dtype | str = torch.float32,
    margin: float = 3.0,
) -> dict[str, Any]:
    """SC fraction, exactly-zero-loss fraction, logit gaps and the near-SC fraction in ``dtype``.

    Returns ``sc_fraction``, ``zero_loss_fraction`` (cross-entropy in ``dtype`` exactly 0 — a correct
    sample in SC), ``logit_gap`` (numpy [N]), ``logit_gap_mean``, ``near_sc_fraction`` (gap ≥
    ``threshold − margin``), ``threshold`` (:func:`absorption_threshold`) and ``margin``.
    """
    dt = _as_float_dtype(dtype)
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}.")
    targets = _check_logits(logits, targets)
    if logits.shape[0] == 0:
        raise ValueError("logits hold no samples.")
    counts = _CollapseCounts(dt, float(margin))
    counts.add(logits, targets)
    return counts.report()


class _CollapseCounts:
    """Accumulates the SC statistics batch by batch (no need to hold every logit at once)."""

    def __init__(self, dtype: torch.dtype, margin: float) -> None:
        self.dtype = dtype
        self.margin = margin
        self.threshold = absorption_threshold(dtype)
        self.n = 0
        self.sc = 0
        self.zero = 0
        self.max_logit_sum = 0.0
        self.norm_sum = 0.0
        self.gaps: list[np.ndarray] = []

    def add(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.n += int(logits.shape[0])
        self.sc += int(_collapsed(logits, self.dtype).sum())
        self.zero += int(_zero_loss(logits, targets, self.dtype).sum())
        wide = logits.detach().double()
        self.max_logit_sum += float(wide.amax(dim=1).sum())
        self.norm_sum += float(wide.norm(dim=1).sum())
        self.gaps.append(logit_gap(logits).cpu().numpy())

    def report(self) -> dict[str, Any]:
        gaps = np.concatenate(self.gaps)
        return {
            "sc_fraction": self.sc / self.n,
            "zero_loss_fraction": self.zero / self.n,
            "logit_gap": gaps,
            "logit_gap_mean": float(gaps.mean()),
            "near_sc_fraction": float(np.mean(gaps >= self.threshold - self.margin)),
            "threshold": self.threshold,
            "margin": self.margin,
            "max_logit_mean": self.max_logit_sum / self.n,
            "logit_norm": self.norm_sum / self.n,
        }


def logit_statistics(logits: torch.Tensor) -> dict[str, float]:
    """``max_logit_mean`` (mean over samples of the largest logit) and ``logit_norm`` (mean ‖logits‖₂)."""
    _check_logits(logits)
    wide = logits.detach().double()
    return {"max_logit_mean": float(wide.amax(dim=1).mean()), "logit_norm": float(wide.norm(dim=1).mean())}


# -- naive loss minimization and trajectory quantities -------------------------------------------------
def _cosine(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor]) -> float:
    dot = aa = bb = 0.0
    for x, y in zip(a, b):
        x, y = x.detach().double().reshape(-1), y.detach().double().reshape(-1)
        dot += float(torch.dot(x, y))
        aa += float(torch.dot(x, x))
        bb += float(torch.dot(y, y))
    if aa == 0.0 or bb == 0.0:
        return float("nan")
    return dot / math.sqrt(aa * bb)


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def nlm_alignment_report(model: nn.Module, loss_fn: LossFn, data: object) -> dict[str, Any]:
    """Cosine between the negative full-data gradient and the NLM direction θ, overall and per tensor.

    Returns ``cosine`` (over all trainable parameters together), ``per_tensor`` ({name: cosine}),
    ``grad_norm`` and ``weight_norm``. A cosine is NaN where the gradient or the weights are exactly 0
    (e.g. every sample in SC gives a zero gradient). The model is left untouched.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    batches = as_batches(data, device=_device_of(model))
    params = trainable_parameters(model)
    if not params:
        raise ValueError("model has no trainable parameters.")
    with preserved(model):
        grads = gradient(model, loss_fn, batches)
        weights = {name: p.detach().clone() for name, p in params.items()}
    names = list(params)
    descent = [-grads[name] for name in names]
    return {
        "cosine": _cosine(descent, [weights[n] for n in names]),
        "per_tensor": {n: _cosine([-grads[n]], [weights[n]]) for n in names},
        "grad_norm": math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads.values())),
        "weight_norm": math.sqrt(sum(float(w.double().pow(2).sum()) for w in weights.values())),
    }


def nlm_alignment(model: nn.Module, loss_fn: LossFn, data: object) -> float:
    """``cos(−∇L(θ), θ)`` over all trainable parameters (1: the gradient only scales the weights up)."""
    return float(nlm_alignment_report(model, loss_fn, data)["cosine"])


def _named_weights(value: object, what: str) -> dict[str, torch.Tensor]:
    if isinstance(value, nn.Module):
        return {n: p.detach() for n, p in trainable_parameters(value).items()}
    if isinstance(value, torch.Tensor):
        return {"": value.detach()}
    if isinstance(value, Mapping) and all(isinstance(v, torch.Tensor) for v in value.values()):
        return {str(k): v.detach() for k, v in value.items()}
    raise TypeError(f"{what} must be a model, a tensor or a dict of tensors, got {type(value).__name__}.")


def update_cosine(theta_t: object, theta_next: object) -> float:
    """``cos(θ_{t+1} − θ_t, θ_t)`` over the tensors both hold (by name); NaN if either vector is 0.

    Each argument is a model (its trainable parameters), a flat tensor, or a dict of named tensors.
    Near 1: the update mostly scales the weights up (the NLM direction).
    """
    a = _named_weights(theta_t, "theta_t")
    b = _named_weights(theta_next, "theta_next")
    shared = [n for n in a if n in b]
    if not shared:
        raise ValueError("theta_t and theta_next share no tensor names.")
    for n in shared:
        if a[n].shape != b[n].shape:
            raise ValueError(f"tensor {n!r} has shape {tuple(a[n].shape)} in theta_t but {tuple(b[n].shape)} in theta_next.")
    steps = [b[n].to(a[n].device).double() - a[n].double() for n in shared]
    return _cosine(steps, [a[n] for n in shared])


def weight_norm(model: nn.Module) -> float:
    """Euclidean norm of all trainable parameters together."""
    return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in trainable_parameters(model).values()))


def generalization_gap(train: Mapping[str, float], test: Mapping[str, float]) -> float:
    """``train_accuracy − test_accuracy`` when both have accuracies, else ``test_loss − train_loss``."""
    if train.get("accuracy") is not None and test.get("accuracy") is not None:
        return float(train["accuracy"]) - float(test["accuracy"])
    return float(test["loss"]) - float(train["loss"])


# -- lazy-vs-rich: feature change ---------------------------------------------------------------------
def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centered kernel alignment ``‖Ycᵀ Xc‖²_F / (‖Xcᵀ Xc‖_F ‖Ycᵀ Yc‖_F)`` of two [n, ·] matrices.

    1 for representations equal up to rotation and isotropic scaling, 0 for orthogonal ones; NaN when
    either is constant over the samples. Computed in float64.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must be 2-D with the same number of rows, got {tuple(x.shape)} and {tuple(y.shape)}.")
    xc = x.detach().double() - x.detach().double().mean(dim=0)
    yc = y.detach().double().to(xc.device) - y.detach().double().to(xc.device).mean(dim=0)
    cross = (yc.T @ xc).pow(2).sum()
    denom = torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc)
    if float(denom) == 0.0:
        return float("nan")
    return float(cross / denom)


def _last_linear(model: nn.Module) -> tuple[str, nn.Module] | None:
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    return found


def _resolve_layer(model: nn.Module, layer: str | nn.Module | None) -> nn.Module | None:
    if layer is None:
        last = _last_linear(model)
        return None if last is None else last[1]
    if isinstance(layer, nn.Module):
        return layer
    modules = dict(model.named_modules())
    if layer not in modules:
        raise ValueError(f"feature layer {layer!r} is not a submodule of the model; known: {', '.join(n for n in modules if n)}.")
    return modules[layer]


def last_layer_features(model: nn.Module, data: Batches, layer: str | nn.Module | None = None) -> torch.Tensor | None:
    """Inputs to ``layer`` (default: the model's last ``nn.Linear``) over ``data``, as [N, d] (None if absent);
    token vectors ``[B, T, d]`` are pooled to one per sequence (``"auto"``, see :mod:`landscape.features`)."""
    module = _resolve_layer(model, layer)
    if module is None:
        return None
    captured: list[torch.Tensor] = []
    decoder = is_decoder(model)
    current: list[Batch] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        value = inputs[0].detach()
        if value.dim() == 3:  # sequence models: one vector per sequence (landscape.features)
            value = pool_tokens(value, current[-1], "auto", decoder=decoder)
        captured.append(value.reshape(value.shape[0], -1))

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.inference_mode():
            for batch in data:
                current.append(batch)
                batch.feed(model)
    finally:
        handle.remove()
    return torch.cat(captured) if captured else None


def feature_change(features_t: torch.Tensor, features_prev: torch.Tensor) -> float:
    """Lazy-vs-rich indicator ``1 − CKA(Φ_t, Φ_prev)`` (0: features unchanged up to rotation/scale)."""
    return 1.0 - linear_cka(features_t, features_prev)
