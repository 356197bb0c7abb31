"""Permutation alignment of two networks by weight matching (Ainsworth, Hayase & Srinivasa 2022, "Git
Re-Basin", Sec. 3.2 and Alg. 1).

Permuting the hidden units of a layer — the rows of its weight and bias, the matching entries of the
normalization layer after it and the columns of the next layer's weight — leaves the network's function
unchanged. Weight matching picks, for model B, the permutations ``π`` that maximize the agreement
``Σ_ℓ ⟨W_ℓ^A, π_ℓ W_ℓ^B π_{ℓ−1}ᵀ⟩`` with model A. Over one ``π_ℓ`` with the others fixed this is a linear
assignment problem (``scipy.optimize.linear_sum_assignment`` on the ``n_ℓ × n_ℓ`` matrix of unit
similarities summed over every tensor ``π_ℓ`` touches); the layers are visited in a seeded random order,
sweep after sweep, until a sweep changes nothing (coordinate descent; each accepted change raises the
objective, so it stops).

Supported: chains whose leaf modules, in registration order, are the layers in the order of the forward
pass — ``Linear`` and ``Conv1d/2d/3d`` (``groups=1``), ``BatchNorm``/``LayerNorm`` over the features,
element-wise activations, dropout, pooling and ``Flatten`` (a convolution's channels flattened into a
``Linear`` input, channel-major, as ``nn.Flatten`` of NCHW does). The input and output units are never
permuted. When ``data`` is given the aligned model is checked to compute the same outputs as model B.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from threadpoolctl import threadpool_limits
from torch import nn

from landscape.data import as_batches

__all__ = ["Alignment", "PermutationSpec", "check_same_architecture", "permutation_spec", "permute", "weight_matching"]

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)
_PASS_THROUGH = (
    nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Mish,
    nn.Hardtanh, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Tanhshrink, nn.Softsign, nn.Identity, nn.Flatten,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_AFTER_OUTPUT = (nn.Softmax, nn.LogSoftmax)


@dataclass(frozen=True)
class _Axis:
    key: str
    axis: int
    block: int = 1  # entries per unit along the axis (a flattened convolution channel: its spatial size)


@dataclass
class PermutationSpec:
    """Which tensor axes each hidden-unit permutation acts on: ``groups[layer] = [(key, axis, block)]``."""

    groups: dict[str, list[_Axis]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def axes_of(self, key: str) -> list[tuple[str, _Axis]]:
        return [(group, ax) for group, axes in self.groups.items() for ax in axes if ax.key == key]


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if not list(m.children())]


def _width(module: nn.Module, output: bool) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features if output else module.in_features
    return module.out_channels if output else module.in_channels  # type: ignore[return-value]


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The permutation groups of a chain network (see the module doc); unsupported layers are named."""
    leaves = _leaves(model)
    weight_at = [i for i, (_, m) in enumerate(leaves) if isinstance(m, _WEIGHT_LAYERS)]
    if len(weight_at) < 2:
        raise ValueError("weight matching needs at least two Linear/Conv layers (a hidden layer to permute).")
    spec = PermutationSpec()
    current: tuple[str, int] | None = None  # the permutation group of the features flowing now, and its width
    covered: set[str] = set()
    for i, (name, module) in enumerate(leaves):
        prefix = f"{name}." if name else ""
        own = {f"{prefix}{k}" for k, _ in module.named_parameters(recurse=False)}
        own |= {f"{prefix}{k}" for k, _ in module.named_buffers(recurse=False)}
        covered |= own
        if isinstance(module, _WEIGHT_LAYERS):
            if getattr(module, "groups", 1) != 1:
                raise ValueError(f"weight matching does not support grouped convolutions ({name!r}).")
            if current is not None:
                group, width = current
                fan_in = _width(module, output=False)
                if fan_in == width:
                    spec.groups[group].append(_Axis(prefix + "weight", 1))
                elif isinstance(module, nn.Linear) and fan_in % width == 0:
                    spec.groups[group].append(_Axis(prefix + "weight", 1, fan_in // width))
                else:
                    raise ValueError(f"layer {name!r} takes {fan_in} inputs, which does not match the {width} "
                                     f"units of {group!r} before it.")
            if i == weight_at[-1]:
                current = None
                continue
            axes = [_Axis(prefix + "weight", 0)] + ([_Axis(prefix + "bias", 0)] if module.bias is not None else [])
            spec.groups[name], spec.sizes[name] = axes, _width(module, output=True)
            current = (name, spec.sizes[name])
        elif isinstance(module, _NORMS):
            if current is None:
                continue  # on the (unpermuted) inputs or outputs
            group, width = current
            features = module.num_features if isinstance(module, nn.modules.batchnorm._BatchNorm) else \
                module.normalized_shape[-1] if len(module.normalized_shape) == 1 else -1
            if features != width:
                raise ValueError(f"normalization layer {name!r} does not act on the {width} units of {group!r}.")
            for key in sorted(own):
                if not key.endswith("num_batches_tracked"):
                    spec.groups[group].append(_Axis(key, 0))
        elif isinstance(module, _PASS_THROUGH) or (current is None and isinstance(module, _AFTER_OUTPUT)):
            if own:
                raise ValueError(f"layer {name!r} ({type(module).__name__}) has parameters weight matching does not "
                                 "know how to permute.")
        else:
            raise ValueError(f"weight matching supports chains of Linear/Conv layers with element-wise layers, "
                             f"normalization and pooling between them; {name!r} is a {type(module).__name__}.")
    loose = sorted(set(model.state_dict()) - covered)
    if loose:
        raise ValueError(f"weight matching cannot place the tensors {loose} (not owned by a supported layer).")
    return spec


def check_same_architecture(model_a: nn.Module, model_b: nn.Module) -> None:
    """Raise naming every key only in one model and every shape mismatch between the two state dicts."""
    for label, model in (("model_a", model_a), ("model_b", model_b)):
        if not isinstance(model, nn.Module):
            raise TypeError(f"{label} must be a torch.nn.Module, got {type(model).__name__}.")
    a, b = model_a.state_dict(), model_b.state_dict()
    problems = []
    if only := [k for k in a if k not in b]:
        problems.append(f"only in model_a: {', '.join(only)}")
    if only := [k for k in b if k not in a]:
        problems.append(f"only in model_b: {', '.join(only)}")
    if shapes := [f"{k} ({tuple(a[k].shape)} vs {tuple(b[k].shape)})" for k in a if k in b and a[k].shape != b[k].shape]:
        problems.append(f"shape mismatches: {', '.join(shapes)}")
    if problems:
        raise ValueError(f"model_a and model_b have different architectures ({'; '.join(problems)}).")


def _take(tensor: torch.Tensor, ax: _Axis, perm: torch.Tensor) -> torch.Tensor:
    """``tensor`` with its units along ``ax`` reordered: unit i of the result is unit ``perm[i]``."""
    if ax.block == 1:
        return tensor.index_select(ax.axis, perm)
    shape = tensor.shape
    split = tensor.reshape(*shape[: ax.axis], -1, ax.block, *shape[ax.axis + 1:])
    return split.index_select(ax.axis, perm).reshape(shape)


def _units(tensor: torch.Tensor, ax: _Axis) -> torch.Tensor:
    """The tensor as ``[units, rest]`` along ``ax`` (a unit's block and every other axis flattened)."""
    shape = tensor.shape
    split = tensor.reshape(*shape[: ax.axis], -1, ax.block, *shape[ax.axis + 1:])
    return split.movedim(ax.axis, 0).reshape(split.shape[ax.axis], -1)


def _permuted(state: Mapping[str, torch.Tensor], spec: PermutationSpec, perms: Mapping[str, torch.Tensor],
              skip: str | None = None) -> dict[str, torch.Tensor]:
    out = dict(state)
    for group, axes in spec.groups.items():
        if group == skip:
            continue
        for ax in axes:
            out[ax.key] = _take(out[ax.key], ax, perms[group])
    return out


@dataclass(frozen=True)
class Alignment:
    """Model B with its hidden units permuted to match model A, the permutations (unit i of the aligned
    layer is unit ``permutations[layer][i]`` of B's), the sweeps run and the final matching objective."""

    model: nn.Module
    permutations: dict[str, np.ndarray]
    n_sweeps: int
    objective: float


def permute(model: nn.Module, permutations: Mapping[str, np.ndarray | torch.Tensor],
            spec: PermutationSpec | None = None) -> nn.Module:
    """A copy of ``model`` with each layer's units reordered by ``permutations`` (same function)."""
    spec = spec or permutation_spec(model)
    unknown = sorted(set(permutations) - set(spec.groups))
    if unknown:
        raise ValueError(f"permutations name layers that have no permutable units: {unknown}.")
    perms = {g: torch.as_tensor(np.asarray(permutations.get(g, np.arange(spec.sizes[g]))), dtype=torch.long)
             for g in spec.groups}
    for g, p in perms.items():
        if sorted(p.tolist()) != list(range(spec.sizes[g])):
            raise ValueError(f"permutations[{g!r}] is not a permutation of {spec.sizes[g]} units.")
    state = {k: v.detach() for k, v in model.state_dict().items()}
    out = copy.deepcopy(model)
    out.load_state_dict(_permuted(state, spec, {g: p.to(next(iter(state.values())).device) for g, p in perms.items()}))
    return out


def weight_matching(model_a: nn.Module, model_b: nn.Module, *, max_sweeps: int = 100, seed: int = 0,
                    data: object | None = None) -> Alignment:
    """Permute model B's hidden units to match model A's weights (Git Re-Basin weight matching).

    Coordinate ascent runs from two starts and keeps the better: the identity (the paper's Alg. 1) and a
    greedy pass from the input layer that matches each layer's units by their own incoming weights, given
    the layers before it (on small layers the identity start can stop at a local optimum). Returns the
    aligned copy of B (B is not changed). ``data`` (any accepted data argument): check that the aligned
    copy computes B's outputs on it, which catches a model whose registration order is not its forward order.
    """
    check_same_architecture(model_a, model_b)
    spec = permutation_spec(model_a)
    a = {k: v.detach().to("cpu", torch.float64) for k, v in model_a.state_dict().items() if v.is_floating_point()}
    b = {k: v.detach().to("cpu", torch.float64) for k, v in model_b.state_dict().items() if v.is_floating_point()}
    weights = {k for k, _ in model_a.named_parameters()}  # the matching compares weights, not running statistics
    rng = np.random.default_rng(seed)
    with threadpool_limits(1):
        identity = {g: torch.arange(n) for g, n in spec.sizes.items()}
        greedy = dict(identity)
        for group in spec.groups:  # chain order: every earlier layer is already matched
            greedy[group] = _assign(a, b, spec, greedy, group, weights, incoming_only=True)
        starts = [_ascend(a, b, spec, start, weights, rng, max_sweeps) for start in (identity, greedy)]
    perms, sweeps, objective = max(starts, key=lambda found: found[2])
    aligned = permute(model_b, {g: p.numpy() for g, p in perms.items()}, spec)
    if data is not None:
        _check_function(model_b, aligned, data)
    return Alignment(aligned, {g: p.numpy() for g, p in perms.items()}, sweeps, objective)


def _cost(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], spec: PermutationSpec,
          perms: Mapping[str, torch.Tensor], group: str, weights: set[str], incoming_only: bool) -> np.ndarray:
    """Similarity of A's unit i and B's unit j of ``group``, B's other axes permuted by ``perms``."""
    others = _permuted(b, spec, perms, skip=group)
    axes = [ax for ax in spec.groups[group] if ax.key in weights and (ax.axis == 0 or not incoming_only)]
    return sum(_units(a[ax.key], ax) @ _units(others[ax.key], ax).T for ax in axes).numpy()


def _assign(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], spec: PermutationSpec,
            perms: Mapping[str, torch.Tensor], group: str, weights: set[str], incoming_only: bool = False) -> torch.Tensor:
    _, cols = linear_sum_assignment(_cost(a, b, spec, perms, group, weights, incoming_only), maximize=True)
    return torch.as_tensor(cols, dtype=torch.long)


def _ascend(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], spec: PermutationSpec,
            start: Mapping[str, torch.Tensor], weights: set[str], rng: np.random.Generator,
            max_sweeps: int) -> tuple[dict[str, torch.Tensor], int, float]:
    """Coordinate ascent over the layers in random order until a sweep changes nothing."""
    perms = dict(start)
    sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        changed = False
        for group in map(str, rng.permutation(list(spec.groups))):
            cost = _cost(a, b, spec, perms, group, weights, incoming_only=False)
            _, cols = linear_sum_assignment(cost, maximize=True)
            rows = np.arange(len(cols))
            if cost[rows, cols].sum() > cost[rows, perms[group].numpy()].sum() + 1e-12 * np.abs(cost).sum():
                perms[group] = torch.as_tensor(cols, dtype=torch.long)
                changed = True
        if not changed:
            break
    final = _permuted(b, spec, perms)
    return perms, sweeps, float(sum((a[k] * final[k]).sum() for k in weights))


def _check_function(original: nn.Module, aligned: nn.Module, data: object) -> None:
    first = next(original.parameters())
    x, _ = as_batches(data, device=first.device).batches[0]
    modes = [(m, m.training) for m in (*original.modules(), *aligned.modules())]
    original.eval()
    aligned.eval()
    try:
        with torch.no_grad():
            want, got = original(x), aligned(x)
    finally:
        for m, mode in modes:
            m.training = mode
    scale = float(want.abs().max()) + 1e-12
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-5 * scale):
        raise ValueError("the permuted model_b computes other outputs than model_b: its leaf modules are not a chain "
                         "in the order of its forward pass, which weight matching needs.")
