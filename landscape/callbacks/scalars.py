"""The monitor's cheap scalars, measured from what training already has (no extra backward pass).

``read_lr`` reads the optimizer's learning rate; ``logit_scalars`` turns a batch of logits into the
logit norm, the mean top logit, the Softmax Collapse fraction (rows whose softmax in ``sc_dtype`` is
exactly one-hot, i.e. ``Σ exp(z − max z) == 1``) and, with class targets, the accuracy.

A record is measured on the training thread, so it is kept to a few kernels and one transfer: the
measurements put 1-D tensors of sums on a :class:`Gather` (per-tensor norms, logit sums and their row
count — nothing is brought to the host), and :meth:`Gather.floats` fetches them all in one
device-to-host transfer per device and finishes the arithmetic (square roots, means) in Python.

On a fast training loop even that is most of a record's cost: a dozen small kernels, each paying its
launch (and, on a CPU, the caches it cools for the training code that follows). So small logits can be
*kept* instead (``add_logits(..., keep=True)``: a copy of the logits and targets, two kernels) and the
logit sums of many records computed together later, by :func:`gather_floats`, in the same dozen kernels
for all of them, with one transfer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Gather", "gather_floats", "logit_scalars", "read_lr"]

#: Logits of at most this many elements may be kept for later (``add_logits(keep=True)``): their copy is
#: cheap and small, while the kernels that reduce them cost more to launch than to run.
KEEP_LIMIT = 1 << 16
_FOREACH_NORM = getattr(torch, "_foreach_norm", None)
_LOGIT_KEYS = ("logit_norm", "max_logit_mean", "sc_fraction", "train_accuracy")
Finish = Callable[[list[float]], dict[str, float]]


@dataclass
class _KeptLogits:
    """Logits ``[rows, classes]`` and their class targets ``[rows]`` (or None), copied at their step, whose
    sums are computed later together with other records' (:func:`gather_floats`)."""

    logits: torch.Tensor
    targets: torch.Tensor | None
    sc_dtype: torch.dtype

    def group(self) -> tuple:
        """Records whose kept logits share this key are reduced in one stacked computation."""
        return (self.logits.shape, self.logits.dtype, self.logits.device, self.targets is None, self.sc_dtype)


class _Row:
    """Row ``row`` of a ``[records, width]`` table of sums computed for many records at once."""

    __slots__ = ("row", "table")

    def __init__(self, table: torch.Tensor, row: int) -> None:
        self.table, self.row = table, row


Source = torch.Tensor | _Row  # a tensor of 0 or 1 dimensions, or a row of a table


class Gather:
    """The values of one record, in order: plain floats as they come, device tensors fetched together.

    ``add(key, value)`` takes a float, or a tensor of one element; ``add_part(tensor, finish)`` a 1-D
    tensor (or several 0-d/1-D tensors, read one after another) whose fetched numbers ``finish`` turns into
    named floats; ``add_logits(..., keep=True)`` puts kept logits on it, reduced when it is finished.
    """

    def __init__(self) -> None:
        self._entries: list[tuple[str, float] | tuple[Sequence[Source], Finish] | tuple[_KeptLogits, None]] = []

    def add(self, key: str, value: float | torch.Tensor) -> None:
        if isinstance(value, torch.Tensor):
            tensor = value.detach() if value.requires_grad else value
            self._entries.append(((tensor,), lambda numbers: {key: numbers[0]}))
        else:
            self._entries.append((key, float(value)))

    def add_part(self, part: torch.Tensor | Sequence[torch.Tensor], finish: Finish) -> None:
        self._entries.append(((part,) if isinstance(part, torch.Tensor) else tuple(part), finish))

    def update(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.add(key, value)

    def floats(self) -> dict[str, float]:
        """Every value as a float, the tensors fetched in one transfer per device."""
        return gather_floats([self])[0]


def gather_floats(gathers: Sequence[Gather]) -> list[dict[str, float]]:
    """The floats of many records at once: their kept logits reduced together (one stacked computation per
    shape), then every tensor fetched in one transfer per device (on the CPU, each read as it is)."""
    kept: dict[tuple, list[tuple[list, int]]] = {}
    for gather in gathers:
        for index, (first, _) in enumerate(gather._entries):
            if isinstance(first, _KeptLogits):
                kept.setdefault(first.group(), []).append((gather._entries, index))
    for places in kept.values():
        records = [entries[index][0] for entries, index in places]
        logits = torch.stack([r.logits for r in records])
        targets = None if records[0].targets is None else torch.stack([r.targets for r in records])
        table, finish = _logit_part(logits, targets, records[0].sc_dtype)
        for row, (entries, index) in enumerate(places):
            entries[index] = ((_Row(table, row),), finish)
    fetched = _fetch([source.table if isinstance(source, _Row) else source
                      for gather in gathers for first, _ in gather._entries if not isinstance(first, str)
                      for source in first])
    out = []
    for gather in gathers:
        values: dict[str, float] = {}
        for first, second in gather._entries:
            if isinstance(first, str):
                values[first] = second  # type: ignore[assignment]
                continue
            numbers: list[float] = []
            for source in first:
                if isinstance(source, _Row):
                    numbers += fetched[id(source.table)][source.row]
                else:
                    found = fetched[id(source)]
                    numbers += found if isinstance(found, list) else [found]
            values.update(second(numbers))  # type: ignore[operator]
        out.append(values)
    return out


def _fetch(tensors: list[torch.Tensor]) -> dict[int, Any]:
    """Each distinct tensor's ``tolist()`` (by ``id``): on the CPU each read as it is (nothing to wait for),
    its 0-d tensors (norms, losses) stacked into one read when there are many; on each other device all
    joined and brought over in one transfer."""
    fetched: dict[int, Any] = {}
    by_device: dict[torch.device, dict[int, torch.Tensor]] = {}
    scalars: dict[int, torch.Tensor] = {}
    for key, tensor in {id(tensor): tensor for tensor in tensors}.items():
        if tensor.device.type != "cpu":
            by_device.setdefault(tensor.device, {})[key] = tensor
        elif tensor.dim() == 0:
            scalars[key] = tensor
        else:
            fetched[key] = tensor.tolist()
    if len(scalars) > 8:  # one stacking kernel and one read instead of a read each (stack promotes dtypes)
        fetched.update(zip(scalars, torch.stack(list(scalars.values())).tolist()))
    else:
        fetched.update((key, tensor.item()) for key, tensor in scalars.items())
    for on_device in by_device.values():
        parts = list(on_device.values())
        flat = [part.reshape(-1) for part in parts]
        numbers = (torch.cat(flat) if len(flat) > 1 else flat[0]).tolist()  # cat promotes dtypes
        start = 0
        for part in parts:
            chunk = numbers[start:start + part.numel()]
            start += part.numel()
            if part.dim() == 0:
                fetched[id(part)] = chunk[0]
            elif part.dim() == 2:
                width = part.shape[1]
                fetched[id(part)] = [chunk[i:i + width] for i in range(0, len(chunk), width)]
            else:
                fetched[id(part)] = chunk
    return fetched


def norm_parts(tensors: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[int] | None]:
    """The Euclidean norm of each tensor, without a transfer: one 1-D tensor per device and dtype (on the
    CPU, the 0-d norms themselves, read one by one later), and the tensors' indices in that order (None
    when they are all of one group, in their own order).

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
            if group[0].device.type == "cpu":
                parts.extend(norms)
            else:
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

    gather.add_part(parts, finish)


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


def add_logits(gather: Gather, outputs: torch.Tensor, targets: torch.Tensor | None, sc_dtype: torch.dtype,
               keep: bool = False) -> None:
    """Put the logit scalars of ``logit_scalars`` on ``gather`` as device sums and a row count; rows whose
    target is negative (ignored tokens) are left out by weight, without a transfer. ``keep``: logits of
    at most ``KEEP_LIMIT`` elements are copied (with their targets) and reduced later, with other records'
    (:func:`gather_floats`); larger ones are reduced now either way."""
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
    logits = logits.detach()
    if keep and logits.numel() <= KEEP_LIMIT:  # copies, reduced later with other records'
        gather._entries.append((_KeptLogits(logits.clone(), None if flat is None else flat.clone(), sc_dtype), None))
    else:
        gather.add_part(*_logit_part(logits, flat, sc_dtype))


def _logit_part(logits: torch.Tensor, flat: torch.Tensor | None, sc_dtype: torch.dtype) -> tuple[torch.Tensor, Finish]:
    """The logit sums of ``[..., rows, classes]`` logits (one record, or records stacked on a leading dim)
    as ``[..., width]`` (plus the kept-row count when targets may be ignored), and their finish.

    About ten kernels: on a sub-millisecond training step each torch call counts (a column stack of mixed
    dtypes and a weighted sum cost more than all the rest, so CPU targets are first checked for ignored
    rows, a check without a device sync there; on an accelerator the weights are always used, so nothing
    waits for the device)."""
    with torch.no_grad():
        peak, predicted = logits.max(dim=-1)  # the top logit and the argmax in one kernel
        if logits.dtype == sc_dtype:
            shifted = logits - peak.unsqueeze(-1)
        else:
            cast = logits.to(sc_dtype)
            shifted = cast - cast.amax(dim=-1, keepdim=True)
        collapsed = shifted.exp_().sum(dim=-1) == 1
        wide = logits.dtype in (torch.float32, torch.float64)  # half precision is accumulated in float32
        norm = torch.linalg.vector_norm(logits, dim=-1, dtype=None if wide else torch.float32)
        columns = [norm, peak, collapsed] if flat is None else [norm, peak, collapsed, predicted == flat]
        if flat is None or (flat.device.type == "cpu" and not bool((flat < 0).any())):
            part = torch.stack(columns, dim=-2).sum(dim=-1, dtype=norm.dtype)  # nothing ignored: plain sums
            rows = float(logits.shape[-2])
        else:  # the last column, 1 for a kept sample, weighs every row (itself too: the count)
            kept = flat >= 0
            table = torch.stack([*columns, kept], dim=-2)
            part = (table @ kept.to(table.dtype).unsqueeze(-1)).squeeze(-1)
            rows = None
    width = len(columns)

    def finish(numbers: list[float]) -> dict[str, float]:
        count = rows if rows is not None else numbers[-1]
        if not count:
            return {}
        return dict(zip(_LOGIT_KEYS, (value / count for value in numbers[:width])))

    return part, finish


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
