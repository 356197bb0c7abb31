"""The monitor's cheap scalars, measured from what training already has (no extra backward pass).

``read_lr`` reads the optimizer's learning rate; ``logit_scalars`` turns a batch of logits into the
logit norm, the mean top logit, the Softmax Collapse fraction (rows whose softmax in ``sc_dtype`` is
exactly one-hot, i.e. ``Σ exp(z − max z) == 1``) and, with class targets, the accuracy.

A record is measured on the training thread, so it is kept to a few kernels and one transfer: the
measurements put 1-D tensors of sums on a :class:`Gather` (per-tensor norms, logit sums and their row
count — nothing is brought to the host), and :meth:`Gather.floats` fetches them all in one
device-to-host transfer per device and finishes the arithmetic (square roots, means) in Python.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["Gather", "logit_scalars", "read_lr"]

_FOREACH_NORM = getattr(torch, "_foreach_norm", None)
_LOGIT_KEYS = ("logit_norm", "max_logit_mean", "sc_fraction", "train_accuracy")
Finish = Callable[[list[float]], dict[str, float]]


class Gather:
    """The values of one record, in order: plain floats as they come, device tensors fetched together.

    ``add(key, value)`` takes a float, or a tensor of one element; ``add_part(tensor, finish)`` a 1-D
    tensor whose fetched numbers ``finish`` turns into named floats.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[str, float] | tuple[torch.Tensor, Finish]] = []

    def add(self, key: str, value: float | torch.Tensor) -> None:
        if isinstance(value, torch.Tensor):
            self._entries.append((value.detach().reshape(1), lambda numbers: {key: numbers[0]}))
        else:
            self._entries.append((key, float(value)))

    def add_part(self, part: torch.Tensor, finish: Finish) -> None:
        self._entries.append((part, finish))

    def update(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.add(key, value)

    def floats(self) -> dict[str, float]:
        """Every value as a float, the tensors fetched in one transfer per device."""
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for first, _ in self._entries:
            if isinstance(first, torch.Tensor):
                by_device.setdefault(first.device, []).append(first)
        fetched: dict[int, list[float]] = {}
        for device, parts in by_device.items():
            if device.type == "cpu":  # nothing to wait for: read each part, no joining kernel
                for part in parts:
                    fetched[id(part)] = part.tolist()
                continue
            numbers = torch.cat(parts).tolist() if len(parts) > 1 else parts[0].tolist()  # cat promotes dtypes
            start = 0
            for part in parts:
                fetched[id(part)] = numbers[start:start + part.numel()]
                start += part.numel()
        out: dict[str, float] = {}
        for first, second in self._entries:
            if isinstance(first, torch.Tensor):
                out.update(second(fetched[id(first)]))  # type: ignore[operator]
            else:
                out[first] = second  # type: ignore[assignment]
        return out


def norm_parts(tensors: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[int] | None]:
    """The Euclidean norm of each tensor, as 1-D tensors (one per device and dtype), without a transfer,
    and the tensors' indices in that order (None when they are all of one group, in their own order).

    Float32/float64 tensors of one device are normed in one fused call where torch offers it; others
    are accumulated in float32.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault((tensor.device, tensor.dtype), []).append(index)
    parts = []
    with torch.no_grad():
        for (_, dtype), indices in groups.items():
            group = list(tensors) if len(groups) == 1 else [tensors[i] for i in indices]
            if _FOREACH_NORM is not None and dtype in (torch.float32, torch.float64):
                norms = _FOREACH_NORM(group)
            else:
                norms = [torch.linalg.vector_norm(t, dtype=torch.float32 if t.is_floating_point() else None)
                         for t in group]
            parts.append(torch.stack(norms) if len(norms) > 1 else norms[0].reshape(1))
    order = None if len(groups) == 1 else [index for indices in groups.values() for index in indices]
    return parts, order


def add_norms(gather: Gather, named: dict[str, Sequence[torch.Tensor]]) -> None:
    """Put the total norm of each named list of tensors on ``gather`` (NaN for an empty list): the
    per-tensor norms of all lists in one fused pass, combined in float64 on the host."""
    flat = [t for tensors in named.values() for t in tensors]
    sizes = [len(tensors) for tensors in named.values()]
    if not flat:
        gather.update({key: float("nan") for key in named})
        return
    parts, order = norm_parts(flat)

    def finish(numbers: list[float]) -> dict[str, float]:
        if order is not None:  # back to the tensors' own order
            by_tensor = [0.0] * len(flat)
            for index, value in zip(order, numbers):
                by_tensor[index] = value
            numbers = by_tensor
        out, start = {}, 0
        for key, size in zip(named, sizes):
            chunk = numbers[start:start + size]
            out[key] = math.sqrt(math.fsum(v * v for v in chunk)) if chunk else float("nan")
            start += size
        return out

    wide = functools.reduce(torch.promote_types, [p.dtype for p in parts])
    part = parts[0] if len(parts) == 1 else torch.cat([p.to(parts[0].device, wide) for p in parts])
    gather.add_part(part, finish)


def _total_norm(tensors: Sequence[torch.Tensor]) -> float:
    """Euclidean norm of all tensors together as a float (NaN for none)."""
    gather = Gather()
    add_norms(gather, {"norm": list(tensors)})
    return gather.floats()["norm"]


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


def add_logits(gather: Gather, outputs: torch.Tensor, targets: torch.Tensor | None, sc_dtype: torch.dtype) -> None:
    """Put the logit scalars of ``logit_scalars`` on ``gather`` as device sums and a row count; rows whose
    target is negative (ignored tokens) are left out by weight, without a transfer. About ten kernels: on a
    sub-millisecond training step each torch call counts (a column stack of mixed dtypes and a weighted
    sum cost more than all the rest, so CPU targets are first checked for ignored rows, a check without
    a device sync there; on an accelerator the weights are always used, so nothing waits for the device)."""
    if not isinstance(outputs, torch.Tensor) or outputs.dim() < 2 or not outputs.is_floating_point() or outputs.shape[-1] < 2:
        return
    logits = outputs if outputs.dim() == 2 else outputs.reshape(-1, outputs.shape[-1])
    if logits.shape[0] == 0:
        return
    flat = None
    if isinstance(targets, torch.Tensor) and not targets.is_floating_point() and targets.numel() == logits.shape[0]:
        flat = targets if targets.dim() == 1 else targets.reshape(-1)
        if flat.device != logits.device:
            flat = flat.to(logits.device)
    with torch.no_grad():
        peak, predicted = logits.max(dim=1)  # the top logit and the argmax in one kernel
        if logits.dtype == sc_dtype:
            shifted = logits - peak.unsqueeze(1)
        else:
            cast = logits.to(sc_dtype)
            shifted = cast - cast.amax(dim=1, keepdim=True)
        collapsed = shifted.exp_().sum(dim=1) == 1
        wide = logits.dtype in (torch.float32, torch.float64)  # half precision is accumulated in float32
        norm = torch.linalg.vector_norm(logits, dim=1, dtype=None if wide else torch.float32)
        columns = [norm, peak, collapsed] if flat is None else [norm, peak, collapsed, predicted == flat]
        if flat is None or (flat.device.type == "cpu" and not bool((flat < 0).any())):
            part = torch.stack(columns).sum(dim=1, dtype=norm.dtype)  # nothing ignored: plain sums
            rows = float(logits.shape[0])
        else:  # the last row, 1 for a kept sample, weighs every row (itself too: the count)
            kept = flat >= 0
            table = torch.stack([*columns, kept])
            part = table @ kept.to(table.dtype)
            rows = None
    width = len(columns)

    def finish(numbers: list[float]) -> dict[str, float]:
        count = rows if rows is not None else numbers[-1]
        if not count:
            return {}
        return dict(zip(_LOGIT_KEYS, (value / count for value in numbers[:width])))

    gather.add_part(part, finish)


def logit_scalars(outputs: torch.Tensor, targets: torch.Tensor | None, sc_dtype: torch.dtype) -> dict[str, float]:
    """``logit_norm``, ``max_logit_mean``, ``sc_fraction`` and, with class targets, ``train_accuracy``."""
    gather = Gather()
    add_logits(gather, outputs, targets, sc_dtype)
    return gather.floats()


def _float_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if isinstance(resolved, torch.dtype) and resolved.is_floating_point:
            return resolved
    elif isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return dtype
    raise ValueError(f"sc_dtype must be a floating-point dtype such as 'float32', got {dtype!r}.")
