"""The diagonal preconditioner of an adaptive optimizer, read from the live optimizer or its saved state.

An adaptive method moves each weight by ``η · m / P``: a (momentum) gradient ``m`` divided element-wise by
a preconditioner ``P`` built from its state. With PyTorch's definitions (``t`` the number of steps taken):

* Adam, AdamW: ``P = √v̂ + ε``, ``v̂ = exp_avg_sq / (1 − β₂ᵗ)`` (``max_exp_avg_sq`` with ``amsgrad``);
* RMSprop: ``P = √v + ε`` with ``v = square_avg`` (``centered``: ``v = square_avg − grad_avg²``);
* Adagrad: ``P = √sum + ε``, step size ``η / (1 + t · lr_decay)`` for the next step.

Near a point the update is gradient descent on ``P^{-1/2} H P^{-1/2}`` (the Hessian seen in the
preconditioned coordinates), so it is linearly stable only while the top eigenvalue of ``P⁻¹H`` stays
below the threshold of the underlying method (Cohen et al. 2022, "Adaptive Gradient Methods at the Edge
of Stability", Sec. 2 and App. A; the momentum thresholds of Cohen et al. 2021, App. B):

* Adam (EMA momentum ``m ← β₁m + (1 − β₁)g``): ``(2 + 2β₁) / ((1 − β₁) η)``, i.e. ``38/η`` at β₁ = 0.9;
* RMSprop: ``2/η`` without momentum; with PyTorch's heavy-ball momentum μ, ``(2 + 2μ)/η``;
* Adagrad: ``2/η`` with the current (decayed) step size.

Cohen et al. also fold Adam's first-moment bias correction ``1 − β₁ᵗ`` into P; it tends to 1 within a
few dozen steps and is applied here only with ``bias_correction1=True``. Parameter groups with another
learning rate than the first group's are folded into P (``P · η₀/η_g``), so one threshold, at the first
group's ``η₀``, holds for all. Weight decay is not part of H: coupled decay adds its coefficient to
every eigenvalue of the Hessian of the regularized loss; decoupled (AdamW) decay scales the threshold by
about ``1 − ηλ``; both are left to the reader.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from landscape.checkpoints import SavedOptimizer

# canonical name -> the state entry that holds the second-moment statistics
KINDS: dict[str, str] = {"Adam": "exp_avg_sq", "AdamW": "exp_avg_sq", "RMSprop": "square_avg", "Adagrad": "sum"}
_ALIASES = {"adam": "Adam", "adamw": "AdamW", "adamw_torch": "AdamW", "adamw_torch_fused": "AdamW",
            "rmsprop": "RMSprop", "adagrad": "Adagrad"}
# Hugging Face keeps these parameters out of weight decay, in the optimizer's second group.
_HF_NO_DECAY = ("bias", "layernorm", "rmsnorm")


class OptimizerStateError(ValueError):
    """The optimizer, or its saved state, cannot give a preconditioner for this model."""


@dataclass(frozen=True)
class Preconditioner:
    """P per parameter (named tensors, shaped like the parameters), the reference step size and threshold.

    ``optimizer`` is the optimizer's class name, ``lr`` the first group's (current) step size η,
    ``threshold`` the stability threshold of ``P⁻¹H`` at that η, ``step`` the steps taken, ``hyper`` the
    hyperparameters the threshold used.
    """

    optimizer: str
    diagonal: dict[str, torch.Tensor]
    lr: float
    threshold: float
    step: int
    hyper: dict[str, float] = field(default_factory=dict)

    def inverse_sqrt(self) -> dict[str, torch.Tensor]:
        """``P^{-1/2}`` per parameter (the scaling that makes ``P^{-1/2} H P^{-1/2}`` symmetric)."""
        return {name: p.rsqrt() for name, p in self.diagonal.items()}


def stability_threshold(optimizer: str, lr: float, *, beta1: float = 0.0, momentum: float = 0.0) -> float:
    """The largest eigenvalue of ``P⁻¹H`` at which the optimizer is still linearly stable (see module doc)."""
    kind = canonical_name(optimizer)
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise OptimizerStateError(f"{kind}'s learning rate must be a positive finite number, got {lr!r}.")
    if kind in ("Adam", "AdamW"):
        if not 0 <= beta1 < 1:
            raise OptimizerStateError(f"{kind}'s beta1 must lie in [0, 1), got {beta1!r}.")
        return (2 + 2 * beta1) / ((1 - beta1) * lr)
    if kind == "RMSprop":
        return (2 + 2 * momentum) / lr
    return 2 / lr


def canonical_name(name: str) -> str:
    """``"Adam"``, ``"AdamW"``, ``"RMSprop"`` or ``"Adagrad"`` for a class or configuration name."""
    if name in KINDS:
        return name
    found = _ALIASES.get(str(name).strip().lower())
    if found is None:
        raise OptimizerStateError(
            f"optimizer {name} is not supported for the preconditioned sharpness; supported: {', '.join(KINDS)}."
        )
    return found


def infer_type(state_dict: Mapping[str, Any]) -> str:
    """The optimizer class a saved state dict comes from, told by the entries of its per-parameter state."""
    keys = {key for entry in state_dict.get("state", {}).values() if isinstance(entry, Mapping) for key in entry}
    groups = state_dict.get("param_groups", [])
    if "exp_avg_sq" in keys and "exp_avg" in keys:
        decoupled = any(isinstance(g, Mapping) and g.get("decoupled_weight_decay") for g in groups)
        return "AdamW" if decoupled else "Adam"
    if "square_avg" in keys:
        return "RMSprop"
    if "sum" in keys:
        return "Adagrad"
    if not keys:
        raise OptimizerStateError("the optimizer state is empty (saved before the first step), so it holds no "
                                  "preconditioner; pass optimizer_type to name the optimizer.")
    raise OptimizerStateError(f"cannot tell the optimizer from its state entries {sorted(keys)}; supported: "
                              f"{', '.join(KINDS)} (pass optimizer_type to name it).")


def transformers_order(model: nn.Module) -> list[str]:
    """The trainable parameter names in the index order of a Hugging Face Trainer's default optimizer.

    The Trainer builds two groups: parameters with weight decay (not a bias, not in a LayerNorm module,
    no ``layernorm``/``rmsnorm``/``norm`` in the name), then all the others, each in ``named_parameters``
    order; a saved state numbers them in that order.
    """
    in_norm: set[str] = set()
    for prefix, module in model.named_modules():
        if isinstance(module, nn.LayerNorm):
            in_norm.update(f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False))

    def decays(name: str) -> bool:
        lowered = name.lower()
        parts = lowered.split(".")
        return (name not in in_norm and not any(p in lowered for p in _HF_NO_DECAY)
                and "norm" not in parts and not any(part.endswith("_norm") for part in parts))

    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    return [n for n in trainable if decays(n)] + [n for n in trainable if not decays(n)]


def named_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with each group's ``param_names`` taken from ``model`` (by identity), so the
    state maps onto a copy of the model (on another device) by name. The state tensors are shared, not copied."""
    names = {id(p): n for n, p in model.named_parameters()}
    saved = optimizer.state_dict()
    for group, live in zip(saved["param_groups"], optimizer.param_groups):
        group["param_names"] = [names.get(id(p)) for p in live["params"]]
    return saved


# ------------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class _Entry:
    name: str
    state: Mapping[str, Any]
    group: Mapping[str, Any]


def _live_entries(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[_Entry]:
    names = {id(p): n for n, p in model.named_parameters()}
    held = [p for group in optimizer.param_groups for p in group["params"]]
    if held and not any(id(p) in names for p in held):
        raise OptimizerStateError(f"optimizer {type(optimizer).__name__} holds none of this model's parameters "
                                  "(it was built for another model, or for a copy of it).")
    entries = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and id(p) in names:
                entries.append(_Entry(names[id(p)], state, group))
    return entries


def _match_name(name: str, model_names: Sequence[str]) -> str | None:
    if name in model_names:
        return name
    hits = [m for m in model_names if m.endswith("." + name)]
    return hits[0] if len(hits) == 1 else None


def _saved_entries(model: nn.Module, state_dict: Mapping[str, Any], kind: str, layout: str,
                   param_names: Sequence[str] | None) -> list[_Entry]:
    groups = state_dict.get("param_groups")
    states = state_dict.get("state")
    if not isinstance(groups, Sequence) or not isinstance(states, Mapping):
        raise OptimizerStateError(f"the {kind} state dict must hold 'state' and 'param_groups'.")
    indices = [index for group in groups for index in group.get("params", [])]
    all_names = [n for n, _ in model.named_parameters()]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    order: list[str | None]
    if param_names is not None:
        order = list(param_names)
    elif all("param_names" in g for g in groups):
        order = [None if n is None else _match_name(n, all_names) for g in groups for n in g["param_names"]]
    elif layout == "transformers" and len(groups) == 2:
        order = list(transformers_order(model))
    elif len(indices) == len(all_names):
        order = list(all_names)
    elif len(indices) == len(trainable):
        order = list(trainable)
    else:
        raise OptimizerStateError(
            f"the {kind} state covers {len(indices)} parameter tensors but the model has {len(all_names)} "
            f"({len(trainable)} trainable); pass param_names to say which parameter each index is."
        )
    if len(order) != len(indices):
        raise OptimizerStateError(f"the {kind} state covers {len(indices)} parameter tensors but {len(order)} "
                                  "names were given for them.")
    params = dict(model.named_parameters())
    position = {index: i for i, index in enumerate(indices)}
    entries = []
    for group in groups:
        for index in group.get("params", []):
            state = states.get(index, states.get(str(index)))
            name = order[position[index]]
            if name is None or name not in params:
                raise OptimizerStateError(f"the {kind} state's parameter {index} names no parameter of the model.")
            if state:
                entries.append(_Entry(name, state, group))
    return entries


def _group_value(group: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = group.get(key, default)
    return float(value) if isinstance(value, torch.Tensor) and value.numel() == 1 else value


def _step_of(entry: _Entry) -> int:
    step = entry.state.get("step", 0)
    return int(float(step)) if isinstance(step, (torch.Tensor, int, float)) else 0


def _diagonal(kind: str, entry: _Entry, step: int, bias_correction1: bool) -> torch.Tensor:
    state, group = entry.state, entry.group
    eps = float(_group_value(group, "eps", 1e-8))
    if kind in ("Adam", "AdamW"):
        beta1, beta2 = (float(b) for b in _group_value(group, "betas", (0.9, 0.999)))
        second = state["max_exp_avg_sq"] if group.get("amsgrad") and "max_exp_avg_sq" in state else state["exp_avg_sq"]
        p = (second.double() / (1 - beta2**step)).sqrt() + eps
        return p * (1 - beta1**step) if bias_correction1 else p
    if kind == "RMSprop":
        second = state["square_avg"].double()
        if group.get("centered"):
            second = second - state["grad_avg"].double() ** 2
        return second.clamp_min(0).sqrt() + eps
    return state["sum"].double().sqrt() + eps


def _step_size(kind: str, group: Mapping[str, Any], step: int) -> float:
    lr = float(_group_value(group, "lr", 0.0))
    if kind == "Adagrad":
        lr = lr / (1 + step * float(_group_value(group, "lr_decay", 0.0)))
    return lr


def read_preconditioner(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Mapping[str, Any] | SavedOptimizer,
    *,
    optimizer_type: str | None = None,
    param_names: Sequence[str] | None = None,
    bias_correction1: bool = False,
) -> Preconditioner:
    """The optimizer's current preconditioner P over ``model``'s parameters and the stability threshold.

    ``optimizer`` is a live ``torch.optim`` optimizer, its ``state_dict()``, or a :class:`SavedOptimizer`
    read from a checkpoint. A state dict's parameter indices are mapped to the model by the groups'
    ``param_names`` when saved (an optimizer built from ``named_parameters()``), else by ``param_names``,
    else in the order of ``model.parameters()`` (all of them, or the trainable ones, whichever count
    matches; the Hugging Face layout for a ``SavedOptimizer`` from a Trainer folder). Every state tensor
    is checked against its parameter's shape. Parameters without state (never updated) are left out.
    """
    layout, saved_type = "order", None
    if isinstance(optimizer, SavedOptimizer):
        layout, saved_type, optimizer = optimizer.layout, optimizer.type_name, optimizer.state_dict
    if isinstance(optimizer, torch.optim.Optimizer):
        optimizer = _unwrapped(optimizer)
        live_kind = next((k for k in KINDS if type(optimizer).__name__ == k), None)
        live_kind = live_kind or next((k for k in ("AdamW", "Adam", "RMSprop", "Adagrad")
                                       if isinstance(optimizer, getattr(torch.optim, k))), None)
        if live_kind is None:
            raise OptimizerStateError(f"optimizer {type(optimizer).__name__} is not supported for the preconditioned "
                                      f"sharpness; supported: {', '.join(KINDS)}.")
        kind, label = live_kind, type(optimizer).__name__
        entries = _live_entries(model, optimizer)
    elif isinstance(optimizer, Mapping):
        name = optimizer_type or saved_type
        kind = canonical_name(name) if name is not None else infer_type(optimizer)
        label = kind
        entries = _saved_entries(model, optimizer, kind, layout, param_names)
    else:
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or its state dict, got {type(optimizer).__name__}.")
    return _build(model, kind, label, entries, bias_correction1)


def _unwrapped(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The optimizer inside a wrapper (accelerate's ``AcceleratedOptimizer`` keeps it in ``.optimizer``)."""
    supported = tuple(getattr(torch.optim, k) for k in KINDS)
    for _ in range(4):
        if isinstance(optimizer, supported):
            break
        inner = getattr(optimizer, "optimizer", None)
        if not isinstance(inner, torch.optim.Optimizer) or inner is optimizer:
            break
        optimizer = inner
    return optimizer


def _build(model: nn.Module, kind: str, label: str, entries: list[_Entry], bias_correction1: bool) -> Preconditioner:
    statistic = KINDS[kind]
    steps = [_step_of(e) for e in entries]
    if not entries or max(steps) == 0:
        raise OptimizerStateError(f"optimizer {label} has taken no step yet: its state holds no {statistic} "
                                  "statistics, so there is no preconditioner to read.")
    # a parameter that never received a gradient has a state at step 0 (Adagrad) and is not being moved
    entries, steps = [e for e, s in zip(entries, steps) if s > 0], [s for s in steps if s > 0]
    params = dict(model.named_parameters())
    first = entries[0].group
    reference = _step_size(kind, first, steps[0])
    if not reference > 0:
        raise OptimizerStateError(f"optimizer {label}'s first parameter group has learning rate {reference}; "
                                  "the stability threshold needs a positive one.")
    hyper_key = "betas" if kind in ("Adam", "AdamW") else "momentum"
    diagonal: dict[str, torch.Tensor] = {}
    for entry, step in zip(entries, steps):
        if statistic not in entry.state:
            raise OptimizerStateError(f"optimizer {label}'s state for {entry.name!r} has no {statistic!r} entry "
                                      f"(found {sorted(entry.state)}); is it a {kind} state?")
        shape = tuple(entry.state[statistic].shape)
        if shape != tuple(params[entry.name].shape):
            raise OptimizerStateError(
                f"optimizer {label}'s state does not fit the model: {statistic} of {entry.name!r} has shape "
                f"{shape}, the parameter has {tuple(params[entry.name].shape)} (pass param_names to map the "
                "state's indices to parameter names)."
            )
        if _group_value(entry.group, hyper_key) != _group_value(first, hyper_key):
            raise OptimizerStateError(f"optimizer {label}'s parameter groups use different {hyper_key}; one "
                                      "stability threshold needs the same in every group.")
        size = _step_size(kind, entry.group, step)
        p = _diagonal(kind, entry, step, bias_correction1)
        p = p * (reference / size) if size > 0 else torch.full_like(p, math.inf)
        diagonal[entry.name] = p.to(params[entry.name].device, params[entry.name].dtype)
    if kind in ("Adam", "AdamW"):
        beta1 = float(_group_value(first, "betas", (0.9, 0.999))[0])
        hyper = {"beta1": beta1, "beta2": float(_group_value(first, "betas", (0.9, 0.999))[1])}
        threshold = stability_threshold(kind, reference, beta1=beta1)
    elif kind == "RMSprop":
        hyper = {"momentum": float(_group_value(first, "momentum", 0.0)), "alpha": float(_group_value(first, "alpha", 0.99))}
        threshold = stability_threshold(kind, reference, momentum=hyper["momentum"])
    else:
        hyper = {"lr_decay": float(_group_value(first, "lr_decay", 0.0))}
        threshold = stability_threshold(kind, reference)
    return Preconditioner(optimizer=label, diagonal=diagonal, lr=reference, threshold=threshold, step=max(steps),
                          hyper=hyper)
