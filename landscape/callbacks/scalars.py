"""The monitor's cheap scalars, measured from what training already has (no extra backward pass).

``read_lr`` reads the optimizer's learning rate; ``logit_scalars`` turns a batch of logits into the
logit norm, the mean top logit, the Softmax Collapse fraction (rows whose softmax in ``sc_dtype`` is
exactly one-hot, i.e. ``Σ exp(z − max z) == 1``) and, with class targets, the accuracy.

On the training thread every device-to-host transfer waits for the device: ``norm_tensor`` and
``logit_tensors`` leave their results on the device (few kernels, no transfer) and ``as_floats`` brings a
whole record over in one transfer per device.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import torch

__all__ = ["as_floats", "logit_scalars", "logit_tensors", "norm_tensor", "read_lr"]

_WIDE = (torch.float32, torch.float64)
_FOREACH_NORM = getattr(torch, "_foreach_norm", None)


def norm_tensor(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Euclidean norm of all tensors together, as a 0-d tensor on the first one's device (no transfer).

    Tensors of one device and dtype are normed in one fused call where torch offers it; half-precision
    ones are accumulated in float32.
    """
    if not tensors:
        raise ValueError("norm_tensor needs at least one tensor.")
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for tensor in tensors:
        detached = tensor.detach()
        groups.setdefault((detached.device, detached.dtype), []).append(detached)
    device = next(iter(groups))[0]
    parts = []
    for (_, dtype), group in groups.items():
        if _FOREACH_NORM is not None and dtype in _WIDE:
            norms = _FOREACH_NORM(group)
        else:
            norms = [torch.linalg.vector_norm(t, dtype=torch.float32 if t.is_floating_point() else None) for t in group]
        parts.append(torch.linalg.vector_norm(torch.stack(norms)).to(device))
    if len(parts) == 1:
        return parts[0]
    wide = functools.reduce(torch.promote_types, [p.dtype for p in parts])
    return torch.linalg.vector_norm(torch.stack([p.to(wide) for p in parts]))


def _total_norm(tensors: Sequence[torch.Tensor]) -> float:
    """Euclidean norm of all tensors together as a float (NaN for none)."""
    return float(norm_tensor(tensors)) if tensors else float("nan")


def as_floats(values: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
    """A record's values as floats, the tensors among them fetched in one transfer per device.

    ``logit_tensors``' row count (``_rows``) is dropped here, with the logit scalars when it is zero.
    """
    out = {k: float(v) for k, v in values.items() if not isinstance(v, torch.Tensor)}
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor):
            by_device.setdefault(value.device, []).append((key, value.detach().reshape(())))
    for items in by_device.values():
        wide = functools.reduce(torch.promote_types, [v.dtype for _, v in items], torch.float32)
        numbers = torch.stack([v.to(wide) for _, v in items]).tolist()
        out.update(zip((k for k, _ in items), numbers))
    if out.pop("_rows", None) == 0:
        for key in _LOGIT_KEYS:
            out.pop(key, None)
    return {k: out[k] for k in values if k in out}


def read_lr(optimizer: object | None) -> float | None:
    """The learning rate of the optimizer's first parameter group (None if there is none)."""
    groups = getattr(optimizer, "param_groups", None)
    if not groups:
        return None
    lr = groups[0].get("lr")
    if isinstance(lr, torch.Tensor):
        lr = float(lr)
    return float(lr) if isinstance(lr, (int, float)) else None


def _class_logits(outputs: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """Logits as [samples, classes] (sequence outputs flattened, ignored targets < 0 dropped), or None."""
    if not isinstance(outputs, torch.Tensor) or outputs.dim() < 2 or not outputs.is_floating_point() or outputs.shape[-1] < 2:
        return None
    logits = outputs.detach().reshape(-1, outputs.shape[-1])
    if targets is None:
        return logits, None
    if not isinstance(targets, torch.Tensor) or targets.is_floating_point() or targets.numel() != logits.shape[0]:
        return logits, None
    flat = targets.detach().reshape(-1).to(logits.device)
    keep = flat >= 0
    if not bool(keep.all()):
        return logits[keep], flat[keep]
    return logits, flat


_LOGIT_KEYS = ("logit_norm", "max_logit_mean", "sc_fraction", "train_accuracy")


def logit_tensors(outputs: torch.Tensor, targets: torch.Tensor | None,
                  sc_dtype: torch.dtype) -> dict[str, torch.Tensor | float]:
    """``logit_scalars`` left on the device as 0-d tensors (plus ``_rows``, the rows they average over, for
    :func:`as_floats`); rows whose target is negative (ignored tokens) are left out by weight, without a
    transfer."""
    if not isinstance(outputs, torch.Tensor) or outputs.dim() < 2 or not outputs.is_floating_point() or outputs.shape[-1] < 2:
        return {}
    logits = outputs.detach().reshape(-1, outputs.shape[-1])
    if logits.shape[0] == 0:
        return {}
    flat = None
    if (isinstance(targets, torch.Tensor) and not targets.is_floating_point() and targets.numel() == logits.shape[0]):
        flat = targets.detach().reshape(-1).to(logits.device)
    cast = logits.to(sc_dtype)
    top = cast.amax(dim=1, keepdim=True)
    collapsed = (cast - top).exp().sum(dim=1) == 1
    peak = top.squeeze(1) if cast.dtype == logits.dtype else logits.amax(dim=1)
    rows = [torch.linalg.vector_norm(logits, dim=1, dtype=torch.float32), peak.float(), collapsed.float()]
    if flat is not None:
        rows.append((logits.argmax(dim=1) == flat).float())
        keep = flat >= 0
        count: torch.Tensor | float = keep.sum()
        means = torch.where(keep, torch.stack(rows), 0.0).sum(dim=1) / keep.sum().clamp(min=1)
    else:
        means, count = torch.stack(rows).mean(dim=1), float(logits.shape[0])
    out: dict[str, torch.Tensor | float] = dict(zip(_LOGIT_KEYS, means.unbind()))
    out["_rows"] = count
    return out


def logit_scalars(outputs: torch.Tensor, targets: torch.Tensor | None, sc_dtype: torch.dtype) -> dict[str, float]:
    """``logit_norm``, ``max_logit_mean``, ``sc_fraction`` and, with class targets, ``train_accuracy``."""
    return as_floats(logit_tensors(outputs, targets, sc_dtype))


def _float_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(resolved, torch.dtype) and resolved.is_floating_point:
            return resolved
    elif isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    raise ValueError(f"sc_dtype must be a floating-point dtype such as 'float32', got {dtype!r}.")

