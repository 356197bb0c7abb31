"""Directions in parameter space for loss-landscape slices (Li et al. 2018, "Visualizing the Loss
Landscape of Neural Nets").

A direction is a ``dict[name, Tensor]`` over the trainable parameters, shaped like them. Random
directions are Gaussian draws rescaled to the scale of the weights they move, so a step of 1 along a
direction moves each unit by about its own size:

* ``norm="filter"``: each filter (the slice ``d[i]`` along dim 0 of a weight tensor: an output channel
  of a convolution, a row of a linear layer) is rescaled to the norm of the same filter in the weights,
  ``d[i] ← d[i] · ‖w[i]‖ / ‖d[i]‖``. This removes the scale invariance of ReLU networks from the picture.
* ``norm="layer"``: each tensor as a whole, ``d ← d · ‖w‖ / ‖d‖``.
* ``norm="model"``: the whole vector, ``d ← d · ‖w‖ / ‖d‖`` (norms over the tensors of 2 or more dims).
* ``norm=None``: the raw standard-normal draw.

Tensors of at most one dimension (biases, the affine weights of normalization layers, scalars) are
handled by ``ignore``: ``"biasbn"`` (the default, as in the paper's code) sets their direction to zero,
so the slice never moves them; ``ignore=None`` gives them a copy of the weights instead, again as that
code does (a per-element rescaling would only leave a random sign).

Orthogonalization (Gram–Schmidt) is done *within each normalization unit* (each filter, each tensor, or
the whole vector) and followed by re-normalization of that unit. Because every unit is orthogonal on its
own, the directions are exactly orthogonal overall *and* keep their exact normalization. Two cases are
left as they are and documented: units of a single entry (nothing is orthogonal to a 1-vector except 0)
and the 1-D tensors copied with ``ignore=None`` (identical in every direction by definition).

Draws come from a CPU ``torch.Generator`` seeded with ``seed``, one tensor after another in parameter
order, direction after direction, always in float32, then moved to the parameter's device and dtype: the
same seed gives the same directions on CPU and GPU and for float32 or float64 models, and the first of
``n`` directions does not depend on ``n`` or on ``ignore``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

Named = dict[str, torch.Tensor]

NORMS = ("filter", "layer", "model", None)
IGNORES = ("biasbn", None)
_TINY = 1e-10  # guards divisions by a zero norm (a dead filter keeps a zero direction)
_DEGENERATE = 1e-6  # a unit whose orthogonal remainder is below this fraction of its norm is left as drawn


def _check_choice(value: object, allowed: Sequence[object], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}.")


def _weights(source: nn.Module | Mapping[str, torch.Tensor]) -> Named:
    if isinstance(source, nn.Module):
        return {name: p.detach() for name, p in source.named_parameters() if p.requires_grad}
    if not isinstance(source, Mapping):
        raise TypeError(f"weights must be a model or a dict of named tensors, got {type(source).__name__}.")
    return {name: t.detach() for name, t in source.items()}


def _moves(weight: torch.Tensor) -> bool:
    """Whether a tensor takes part in normalization (2 or more dims); 1-D tensors follow ``ignore``."""
    return weight.dim() > 1


def gaussian_like(weights: Mapping[str, torch.Tensor], generator: torch.Generator) -> Named:
    """A standard-normal draw shaped like ``weights`` (float32 on CPU, then cast and moved)."""
    return {
        name: torch.randn(w.shape, generator=generator, dtype=torch.float32).to(device=w.device, dtype=w.dtype)
        for name, w in weights.items()
    }


def _row_scale(target: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    return (target / (current + _TINY)).to(torch.float64)


def _rows(t: torch.Tensor, norm: str | None) -> torch.Tensor:
    """The normalization units of a ≥2-D tensor as the rows of a matrix (filters, or the whole tensor)."""
    return t.reshape(t.shape[0], -1) if norm == "filter" else t.reshape(1, -1)


def _unit_norms(t: torch.Tensor, norm: str | None) -> torch.Tensor:
    return _rows(t, norm).double().norm(dim=1)


def _global_norm(named: Mapping[str, torch.Tensor], names: Sequence[str]) -> float:
    return math.sqrt(sum(float(named[k].double().pow(2).sum()) for k in names))


def normalize_direction(
    direction: Mapping[str, torch.Tensor],
    weights: nn.Module | Mapping[str, torch.Tensor],
    *,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
) -> Named:
    """Rescale ``direction`` to the scale of ``weights`` (see the module docstring for each ``norm``).

    Returns a new dict; 1-D tensors become zero (``ignore="biasbn"``) or a copy of the weights
    (``ignore=None``). Names of ``weights`` missing from ``direction`` are an error.
    """
    _check_choice(norm, NORMS, "norm")
    _check_choice(ignore, IGNORES, "ignore")
    w_all = _weights(weights)
    missing = [k for k in w_all if k not in direction]
    if missing:
        raise ValueError(f"direction lacks tensor(s) {', '.join(missing[:5])} of the weights it is normalized to.")
    out: Named = {}
    for name, w in w_all.items():
        d = direction[name].to(device=w.device, dtype=w.dtype)
        if not _moves(w):
            out[name] = torch.zeros_like(w) if ignore == "biasbn" else w.clone()
        elif norm in ("filter", "layer"):
            scale = _row_scale(_unit_norms(w, norm), _unit_norms(d, norm))
            out[name] = (_rows(d, norm).double() * scale[:, None]).to(w.dtype).reshape(w.shape)
        else:
            out[name] = d.clone()
    if norm == "model":
        moving = [k for k, w in w_all.items() if _moves(w)]
        factor = _global_norm(w_all, moving) / (_global_norm(out, moving) + _TINY)
        for k in moving:
            out[k] = (out[k].double() * factor).to(out[k].dtype)
    return out


def orthogonalize(
    direction: Mapping[str, torch.Tensor],
    against: Sequence[Mapping[str, torch.Tensor]],
    weights: nn.Module | Mapping[str, torch.Tensor],
    *,
    norm: str | None = "filter",
) -> Named:
    """Gram–Schmidt of ``direction`` against ``against`` within each normalization unit, then re-normalize.

    Each unit (filter, tensor, or the whole vector for ``"model"``/None) keeps the norm it had before,
    which for normalized directions is the norm of the same unit of the weights. ``against`` must be
    mutually orthogonal unit by unit (as directions returned by this function are). 1-D tensors are
    left untouched; units whose remainder is numerically zero (single entries) are left as drawn.
    """
    _check_choice(norm, NORMS, "norm")
    w_all = _weights(weights)
    moving = [k for k, w in w_all.items() if _moves(w)]
    out: Named = {k: direction[k].clone() for k in direction}
    if norm in ("filter", "layer"):
        for k in moving:
            rows = _rows(out[k], norm).double()
            before = rows.norm(dim=1)
            for other in against:
                o = _rows(other[k].to(rows.device), norm).double()
                den = o.pow(2).sum(dim=1)
                coef = torch.where(den > 0, (rows * o).sum(dim=1) / den.clamp_min(1e-300), 0.0)
                rows = rows - coef[:, None] * o
            after = rows.norm(dim=1)
            ok = after > _DEGENERATE * before
            rows = torch.where(ok[:, None], rows * (before / (after + _TINY))[:, None], _rows(out[k], norm).double())
            out[k] = rows.to(out[k].dtype).reshape(out[k].shape)
        return out
    before = _global_norm(out, moving)
    work = {k: out[k].double() for k in moving}
    for other in against:
        o = {k: other[k].to(work[k].device).double() for k in moving}
        den = _global_norm(o, moving) ** 2
        coef = sum(float((work[k] * o[k]).sum()) for k in moving) / den if den > 0 else 0.0
        work = {k: work[k] - coef * o[k] for k in moving}
    after = _global_norm(work, moving)
    if after > _DEGENERATE * before:
        for k in moving:
            out[k] = (work[k] * (before / after)).to(out[k].dtype)
    return out


def random_directions(
    weights: nn.Module | Mapping[str, torch.Tensor],
    n: int = 2,
    *,
    norm: str | None = "filter",
    ignore: str | None = "biasbn",
    seed: int = 0,
    orthogonal: bool = True,
) -> list[Named]:
    """``n`` seeded Gaussian directions normalized to ``weights``; mutually orthogonal when ``orthogonal``.

    ``weights`` is a model (its trainable parameters) or a dict of named tensors. Orthogonalization is
    on by default: it keeps the exact per-unit normalization (see :func:`orthogonalize`) and makes the two
    axes of a plane independent; ``orthogonal=False`` gives the raw directions of the paper's code
    (nearly orthogonal anyway in high dimension, cosine ≈ 1/√P).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer (number of directions), got {n!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}.")
    _check_choice(norm, NORMS, "norm")
    _check_choice(ignore, IGNORES, "ignore")
    w_all = _weights(weights)
    if not w_all:
        raise ValueError("the model has no trainable parameters to draw directions for.")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out: list[Named] = []
    for _ in range(n):
        d = normalize_direction(gaussian_like(w_all, generator), w_all, norm=norm, ignore=ignore)
        if orthogonal and out:
            d = orthogonalize(d, out, w_all, norm=norm)
        out.append(d)
    return out


def check_directions(
    weights: Mapping[str, torch.Tensor],
    directions: Sequence[Mapping[str, torch.Tensor]],
    *,
    what: str = "directions",
) -> list[Named]:
    """Validate explicit directions against the trainable parameters; return them on their device/dtype.

    A name that is not a trainable parameter, a shape that differs, a non-floating or non-finite tensor,
    or a direction that is zero everywhere is an error naming it. Names left out mean zero.
    """
    if isinstance(directions, Mapping) or not isinstance(directions, Sequence):
        raise ValueError(f"{what} must be a list of dicts of named tensors, got {type(directions).__name__}.")
    out: list[Named] = []
    for index, direction in enumerate(directions):
        label = f"{what}[{index}]"
        if not isinstance(direction, Mapping):
            raise ValueError(f"{label} must be a dict of named tensors, got {type(direction).__name__}.")
        unknown = [k for k in direction if k not in weights]
        if unknown:
            raise ValueError(
                f"{label} has tensor(s) {', '.join(map(repr, unknown[:5]))} that are not trainable parameters "
                f"of the model (expected names like {', '.join(map(repr, list(weights)[:3]))})."
            )
        checked: Named = {}
        for name, tensor in direction.items():
            w = weights[name]
            if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
                raise ValueError(f"{label}[{name!r}] must be a floating-point tensor.")
            if tuple(tensor.shape) != tuple(w.shape):
                raise ValueError(
                    f"{label}[{name!r}] has shape {tuple(tensor.shape)}, the parameter has {tuple(w.shape)}."
                )
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{label}[{name!r}] holds NaN or infinite values.")
            checked[name] = tensor.detach().to(device=w.device, dtype=w.dtype)
        if not any(bool(t.any()) for t in checked.values()):
            raise ValueError(f"{label} is zero everywhere; a slice along it would be a single point.")
        out.append(checked)
    return out


def cosine(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Cosine of the angle between two named directions (over their shared names, in float64)."""
    shared = [k for k in a if k in b]
    num = sum(float((a[k].double() * b[k].double()).sum()) for k in shared)
    den = _global_norm(a, list(a)) * _global_norm(b, list(b))
    return num / den if den > 0 else 0.0


def save_directions(path: Path | str, directions: Sequence[Mapping[str, torch.Tensor]],
                    meta: Mapping[str, Any] | None = None) -> Path:
    """Write directions (and JSON-able ``meta``) to a ``.safetensors`` file, so that several checkpoints
    can be sliced along the same plane. No pickle: the file holds tensors and a JSON string only."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for index, direction in enumerate(directions):
        for name, tensor in direction.items():
            tensors[f"{index}/{name}"] = tensor.detach().to("cpu").contiguous()
    info = {"n_directions": len(directions), "meta": dict(meta or {})}
    try:
        header = json.dumps(info)
    except TypeError as error:
        raise ValueError(f"meta must hold JSON-able values only ({error}).") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"landscape.directions": header})
    return path


def load_directions(path: Path | str, *, device: torch.device | str = "cpu") -> tuple[list[Named], dict[str, Any]]:
    """Read directions written by :func:`save_directions`: ``(directions, meta)``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"directions file {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = (handle.metadata() or {}).get("landscape.directions")
            if header is None:
                raise ValueError(f"{path} is a safetensors file but holds no saved directions.")
            info = json.loads(header)
            directions: list[Named] = [{} for _ in range(int(info["n_directions"]))]
            for key in handle.keys():
                index, name = key.split("/", 1)
                directions[int(index)][name] = handle.get_tensor(key).to(device)
    except (OSError, SafetensorError, json.JSONDecodeError, KeyError) as error:
        raise ValueError(f"{path} is not a readable directions file ({error}).") from None
    return directions, dict(info.get("meta", {}))
