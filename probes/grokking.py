"""Grokking diagnostics: Softmax Collapse, alignment with naive loss minimization, StableMax and ⊥Grad.

Without regularization a classifier that fits its training set keeps growing its logits. Once the gap
between the top logit and the others exceeds what the floating-point format can resolve next to 1, the
softmax rounds to a one-hot vector: the loss and the gradient of that sample become exactly zero
(*Softmax Collapse*, SC) and learning stalls before the network generalizes. Past the point of
overfitting, the gradient also lines up with the *naive loss minimization* (NLM) direction, which only
scales the logits up; for a positively homogeneous network that direction is the weight vector θ itself.
StableMax (a softmax with linear instead of exponential growth) prevents SC; ⊥Grad removes the
gradient's component along θ. (Prieto et al. 2025, "Grokking at the Edge of Numerical Stability".)

Definitions used here:

* **absorption threshold** of a float format with machine epsilon ε: ``1 + e^{-g}`` rounds to ``1`` once
  ``e^{-g} < ε/2``, i.e. ``g > log(2/ε)`` — 7.62 (float16), 16.64 (float32), 36.74 (float64). With many
  classes near the runner-up the small terms may add up before they meet the 1, so the observed onset of
  SC lies between ``log(2/ε)`` and ``log(2(C-1)/ε)`` (measured with 113 classes: float32 16.7–19.3).
* **SC** of a sample: its logits cast to ``dtype``, the row maximum subtracted, and ``Σ exp(·) == 1``
  exactly (the measure of the reference code). It does not look at the target: a confidently wrong
  sample also collapses (its loss is then large, but its gradient still vanishes through the softmax).
* **logit gap**: top-1 minus top-2 logit of a sample; **near-SC**: gap ≥ threshold − margin (the
  samples at or close to collapse; ``near_sc_fraction ≥ sc_fraction`` up to the spread noted above).
* **NLM cosine**: ``cos(−∇L(θ), θ)`` over all trainable parameters.
* **update cosine**: ``cos(θ_{t+1} − θ_t, θ_t)`` between consecutive checkpoints.
* **feature change** (lazy-vs-rich indicator): ``1 − CKA(Φ_t, Φ_prev)``, the linear centered kernel
  alignment of the last layer's input features on a fixed subset at this and the previous checkpoint.
  Near 0: the representation is frozen (lazy / kernel regime, the head alone moves); large: features
  are being re-learned (rich regime), as during the generalizing phase of grokking.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from landscape.checkpoints import Checkpoint, load_into
from landscape.data import Batches, as_batches
from landscape.evaluate import LossFn, check_scalar_loss, correct_count, evaluate, gradient
from landscape.params import preserved, trainable_parameters
from landscape.probe import ProbeContext, Result

__all__ = [
    "OrthoGrad",
    "absorption_threshold",
    "feature_change",
    "generalization_gap",
    "last_layer_features",
    "linear_cka",
    "logit_gap",
    "logit_statistics",
    "nlm_alignment",
    "nlm_alignment_report",
    "softmax_collapse",
    "softmax_collapse_report",
    "stablemax",
    "stablemax_cross_entropy",
    "update_cosine",
    "weight_norm",
]

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


# -- StableMax ----------------------------------------------------------------------------------------
def _stable_s(x: torch.Tensor) -> torch.Tensor:
    # s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0. Each branch sees a clamped input, so the branch
    # that is not selected stays finite and its (zero) gradient never becomes 0 * inf = NaN.
    positive = x.clamp(min=0) + 1
    negative = 1 / (1 - x.clamp(max=0))
    return torch.where(x >= 0, positive, negative)


def stablemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """StableMax probabilities ``s(x_i) / Σ_j s(x_j)``, with ``s(x) = x + 1`` (x ≥ 0), ``1/(1 − x)`` (x < 0).

    ``s`` grows linearly instead of exponentially, so no finite logit gives a probability of exactly 0
    or 1 at the gaps where the softmax collapses.
    """
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise ValueError("logits must be a floating-point tensor.")
    s = _stable_s(logits)
    return s / s.sum(dim=dim, keepdim=True)


def stablemax_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    reduction: str = "mean",
    *,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Cross-entropy of StableMax probabilities: ``−log s(x_t) + log Σ_j s(x_j)``.

    Computed in float64 by default (as the paper does) and returned in that dtype; gradients flow back
    to ``logits`` in their own dtype. ``reduction``: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
    targets = _check_logits(logits, targets)
    s = _stable_s(logits.to(dtype))
    losses = s.sum(dim=1).log() - s.gather(1, targets[:, None]).squeeze(1).log()
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


# -- ⊥Grad --------------------------------------------------------------------------------------------
class OrthoGrad(torch.optim.Optimizer):
    """⊥Grad: wrap any optimizer so that each step uses gradients orthogonal to the weights.

    Before the wrapped optimizer steps, for every parameter tensor ``w`` with gradient ``g``:
    ``g⊥ = g − (⟨w, g⟩ / (⟨w, w⟩ + eps)) w``, rescaled to ``‖g‖`` (``g⊥ · ‖g‖ / (‖g⊥‖ + eps)``), written
    back into ``.grad``. The wrapped optimizer then steps as usual (its weight decay, momentum and
    learning rate still apply). The projection is computed in at least float32.

    It behaves like the wrapped optimizer: ``param_groups``, ``state``, ``defaults``, ``zero_grad``,
    ``state_dict`` and ``load_state_dict`` pass through, and learning-rate schedulers accept it.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, eps: float = 1e-30) -> None:
        # The base constructor is not called: every piece of optimizer state lives in the wrapped one.
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        if not (eps >= 0):
            raise ValueError(f"eps must be >= 0, got {eps!r}.")
        self.optimizer = optimizer
        self.eps = float(eps)

    # pass-through of the optimizer's state
    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self) -> Any:  # type: ignore[override]
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> dict[str, Any]:  # type: ignore[override]
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict[str, Any]) -> None:
        self.optimizer.defaults = value

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "eps": self.eps}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"OrthoGrad({self.optimizer!r})"

    @torch.no_grad()
    def orthogonalize_(self) -> None:
        """Replace every ``.grad`` by its rescaled component orthogonal to its parameter tensor."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None or p.grad.is_sparse:
                    continue
                work = torch.promote_types(p.dtype, torch.float32)
                w = p.detach().reshape(-1).to(work)
                g = p.grad.reshape(-1).to(work)
                projection = torch.dot(w, g) / (torch.dot(w, w) + self.eps)
                orthogonal = g - projection * w
                orthogonal.mul_(g.norm() / (orthogonal.norm() + self.eps))
                p.grad.copy_(orthogonal.view_as(p.grad))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Evaluate ``closure`` (if given) for fresh gradients, orthogonalize them, step the wrapped optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.orthogonalize_()
        self.optimizer.step()
        return loss


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
    """Inputs to ``layer`` (default: the model's last ``nn.Linear``) over ``data``, as [N, d] (None if absent)."""
    module = _resolve_layer(model, layer)
    if module is None:
        return None
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0].detach().reshape(inputs[0].shape[0], -1))

    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.inference_mode():
            for x, _ in data:
                model(x)
    finally:
        handle.remove()
    return torch.cat(captured) if captured else None


def feature_change(features_t: torch.Tensor, features_prev: torch.Tensor) -> float:
    """Lazy-vs-rich indicator ``1 − CKA(Φ_t, Φ_prev)`` (0: features unchanged up to rotation/scale)."""
    return 1.0 - linear_cka(features_t, features_prev)


# -- the probe ------------------------------------------------------------------------------------------
def _neighbours(checkpoints: list[Checkpoint], step: int) -> tuple[Checkpoint | None, Checkpoint | None]:
    before = [c for c in checkpoints if c.step < step]
    after = [c for c in checkpoints if c.step > step]
    return (max(before) if before else None), (min(after) if after else None)


def _class_targets(data: Batches) -> bool:
    return all(not y.is_floating_point() and y.dim() == 1 for _, y in data)


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

    def run(self, ctx: ProbeContext, **params: Any) -> Result:
        dtype = _as_float_dtype(params["dtype"])
        _check_params(params)
        model = ctx.model
        if not _class_targets(ctx.train):
            return Result.invalid("the grokking probe needs class-index targets (1-D integer tensors).", params)
        counts = _CollapseCounts(dtype, float(params["near_margin"]))
        total_loss, correct = 0.0, 0
        with torch.inference_mode():
            for x, y in ctx.train:
                outputs = model(x)
                if outputs.dim() != 2:
                    return Result.invalid(f"the grokking probe needs [batch, classes] logits, got {tuple(outputs.shape)}.", params)
                total_loss += float(check_scalar_loss(ctx.loss_fn(outputs, y))) * int(x.shape[0])
                correct += correct_count(outputs, y) or 0
                counts.add(outputs, _check_logits(outputs, y))
        n = counts.n
        train_loss = total_loss / n
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
        labels = torch.cat([y for _, y in subset]).to(now.device)
        alignment = linear_cka(now, F.one_hot(labels, num_classes=int(labels.max()) + 1))
        if math.isfinite(alignment):
            out["feature_label_alignment"] = alignment
        return out


PROBE = GrokkingProbe()
