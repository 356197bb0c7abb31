"""Parameters as named tensors: flat views, in-place perturbation, exact restoration.

A *direction* (or any point offset) in parameter space is a ``dict[name, Tensor]`` keyed like
``model.named_parameters()``; names missing from a direction mean "zero along that tensor".
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

Named = dict[str, torch.Tensor]


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters that require gradients, by name, in registration order."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def parameter_count(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(p.numel() for p in trainable_parameters(model).values())


def flatten(named: Mapping[str, torch.Tensor], names: Sequence[str] | None = None) -> torch.Tensor:
    """Concatenate tensors (in ``names`` order, default: dict order) into one flat vector."""
    keys = list(named) if names is None else list(names)
    return torch.cat([named[k].reshape(-1) for k in keys])


def unflatten(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Named:
    """Split a flat vector into tensors shaped like ``like`` (same order)."""
    total = sum(t.numel() for t in like.values())
    if vector.numel() != total:
        raise ValueError(f"flat vector has {vector.numel()} entries, the parameters have {total}.")
    out: Named = {}
    offset = 0
    for name, ref in like.items():
        n = ref.numel()
        out[name] = vector[offset : offset + n].view_as(ref)
        offset += n
    return out


def snapshot(model: nn.Module) -> Named:
    """Detached copies of every parameter and buffer (the full state, for exact restoration)."""
    return {name: t.detach().clone() for name, t in model.state_dict(keep_vars=True).items() if t is not None}


def restore(model: nn.Module, saved: Mapping[str, torch.Tensor]) -> None:
    """Copy a :func:`snapshot` back into the model, bit for bit."""
    state = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, value in saved.items():
            state[name].copy_(value)


@contextmanager
def preserved(model: nn.Module, *, eval_mode: bool = True) -> Iterator[nn.Module]:
    """Run a probe on ``model`` and leave it exactly as it was.

    Inside, the model is in eval mode (unless ``eval_mode=False``); afterwards every parameter and
    buffer, every module's ``training`` flag, and every parameter's ``.grad`` are as before.
    """
    modes = {module: module.training for module in model.modules()}
    grads = {p: p.grad for p in model.parameters()}
    saved = snapshot(model)
    for p in model.parameters():
        p.grad = None
    if eval_mode:
        model.eval()
    try:
        yield model
    finally:
        restore(model, saved)
        for module, mode in modes.items():
            module.training = mode
        for p, grad in grads.items():
            p.grad = grad


def _check_direction(model_params: Mapping[str, torch.Tensor], direction: Mapping[str, torch.Tensor]) -> None:
    for name, tensor in direction.items():
        if name not in model_params:
            raise KeyError(f"direction has tensor {name!r}, which is not a trainable parameter of the model.")
        if tensor.shape != model_params[name].shape:
            raise ValueError(
                f"direction tensor {name!r} has shape {tuple(tensor.shape)}, "
                f"the parameter has {tuple(model_params[name].shape)}."
            )


@contextmanager
def perturbed(
    model: nn.Module,
    directions: Sequence[Mapping[str, torch.Tensor]] | Mapping[str, torch.Tensor],
    coeffs: Sequence[float] | float,
) -> Iterator[nn.Module]:
    """Move the weights in place to ``θ + Σ coeffs[i]·directions[i]`` and restore them exactly on exit.

    No copy of the model is made: the original values of the touched tensors are saved once and copied
    back, so the restored weights are bit-for-bit the originals.
    """
    if isinstance(directions, Mapping):
        directions, coeffs = [directions], [float(coeffs)]  # type: ignore[arg-type]
    coeffs = [float(c) for c in coeffs]  # type: ignore[union-attr]
    if len(directions) != len(coeffs):
        raise ValueError(f"got {len(directions)} directions but {len(coeffs)} coefficients.")
    params = trainable_parameters(model)
    for direction in directions:
        _check_direction(params, direction)
    touched = sorted({name for d in directions for name in d})
    saved = {name: params[name].detach().clone() for name in touched}
    try:
        with torch.no_grad():
            for direction, c in zip(directions, coeffs):
                if c == 0.0:
                    continue
                for name, tensor in direction.items():
                    params[name].add_(tensor.to(params[name].device, params[name].dtype), alpha=c)
        yield model
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


def set_point(model: nn.Module, origin: Mapping[str, torch.Tensor], directions: Sequence[Mapping[str, torch.Tensor]],
              coeffs: Sequence[float]) -> None:
    """Write ``origin + Σ coeffs[i]·directions[i]`` into the model's parameters (no accumulation drift).

    Used by sweeps that visit many points: each point is computed from the saved origin, so rounding
    errors never accumulate from one grid point to the next.
    """
    params = trainable_parameters(model)
    with torch.no_grad():
        for name, base in origin.items():
            target = params[name]
            target.copy_(base)
            for direction, c in zip(directions, coeffs):
                if c != 0.0 and name in direction:
                    target.add_(direction[name], alpha=float(c))


def dot(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Inner product of two named tensors over their shared names."""
    return float(sum((a[k].double() * b[k].double()).sum() for k in a if k in b))


def norm(a: Mapping[str, torch.Tensor]) -> float:
    """Euclidean norm of a named tensor collection."""
    return dot(a, a) ** 0.5
