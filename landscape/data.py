"""Normalize every accepted data argument into a fixed list of ``(inputs, targets)`` batches.

Probes measure the *same* samples at every checkpoint, so data is materialized once into a
:class:`Batches` object (a re-iterable, sized list of tensor pairs on one device). Accepted:

* one ``(X, y)`` tuple of tensors (or arrays),
* a list/tuple of such tuples (batches may have unequal sizes),
* a ``torch.utils.data.DataLoader`` (or any iterable of ``(X, y)`` pairs),
* an existing :class:`Batches` (moved to the device if needed).

``max_samples`` keeps a seeded random subset of that many samples, chosen over the whole data set, so
the subset is identical from one call (and one checkpoint) to the next.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class DataError(ValueError):
    """The data argument cannot be turned into batches."""


@dataclass(frozen=True)
class Batches:
    """A fixed, re-iterable list of ``(inputs, targets)`` batches on one device."""

    batches: tuple[Batch, ...]

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def n_samples(self) -> int:
        """Total number of samples over all batches."""
        return sum(int(x.shape[0]) for x, _ in self.batches)

    @property
    def device(self) -> torch.device:
        return self.batches[0][0].device

    def to(self, device: torch.device | str) -> Batches:
        """The same batches on ``device`` (self if already there)."""
        device = torch.device(device)
        if all(_same_device(x.device, device) for x, _ in self.batches):
            return self
        return Batches(tuple((x.to(device), y.to(device)) for x, y in self.batches))

    def merged(self) -> Batch:
        """All samples as one ``(X, y)`` batch."""
        xs, ys = zip(*self.batches)
        return torch.cat(xs), torch.cat(ys)

    def rebatched(self, batch_size: int) -> Batches:
        """The same samples in order, cut into batches of ``batch_size`` (last one may be smaller)."""
        if batch_size < 1:
            raise DataError(f"batch_size must be a positive integer, got {batch_size}.")
        x, y = self.merged()
        return Batches(tuple((x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)))


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index == b.index or a.index is None or b.index is None


def _as_tensor(value: object, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise DataError(f"{what} must be a tensor or numpy array, got {type(value).__name__}.")


def _as_pair(item: object, index: int) -> Batch:
    if isinstance(item, dict):
        keys = ("inputs", "targets") if "inputs" in item else ("x", "y")
        if not all(k in item for k in keys):
            raise DataError(f"batch {index} is a dict without 'inputs'/'targets' (or 'x'/'y') keys: {sorted(item)}.")
        item = (item[keys[0]], item[keys[1]])
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError(f"batch {index} must be an (inputs, targets) pair, got {type(item).__name__}.")
    x = _as_tensor(item[0], f"inputs of batch {index}")
    y = _as_tensor(item[1], f"targets of batch {index}")
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"batch {index} has {x.shape[0]} inputs but {y.shape[0]} targets; they must match along dim 0."
        )
    return x, y


def _looks_like_single_pair(data: object) -> bool:
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and isinstance(data[0], (torch.Tensor, np.ndarray))
        and isinstance(data[1], (torch.Tensor, np.ndarray))
    )


def _collect(data: object) -> list[Batch]:
    if isinstance(data, Batches):
        return list(data.batches)
    if _looks_like_single_pair(data):
        return [_as_pair(data, 0)]
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise DataError(
            "data must be an (X, y) tuple, a list of (X, y) batches or a DataLoader, "
            f"got {type(data).__name__}."
        )
    return [_as_pair(item, i) for i, item in enumerate(data)]


def _subset(batches: list[Batch], max_samples: int, seed: int) -> list[Batch]:
    sizes = [int(x.shape[0]) for x, _ in batches]
    total = sum(sizes)
    if max_samples >= total:
        return batches
    generator = np.random.default_rng(seed)
    keep = np.sort(generator.choice(total, size=max_samples, replace=False))
    out: list[Batch] = []
    start = 0
    for (x, y), size in zip(batches, sizes):
        local = keep[(keep >= start) & (keep < start + size)] - start
        if len(local):
            index = torch.as_tensor(local, device=x.device)
            out.append((x.index_select(0, index), y.index_select(0, index)))
        start += size
    return out


def as_batches(
    data: object,
    *,
    device: torch.device | str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    name: str = "data",
) -> Batches:
    """Turn any accepted data argument into :class:`Batches` on ``device``.

    ``max_samples`` keeps a seeded subset (same samples every call); ``batch_size`` re-cuts the kept
    samples into batches of that size. ``name`` is used in error messages ("train data", ...).
    """
    if data is None:
        raise DataError(f"{name} is None; pass an (X, y) tuple, a list of batches or a DataLoader.")
    try:
        batches = _collect(data)
    except DataError as error:
        raise DataError(f"{name}: {error}") from None
    batches = [(x, y) for x, y in batches if x.shape[0] > 0]
    if not batches:
        raise DataError(f"{name} is empty: it holds no samples.")
    if max_samples is not None:
        if max_samples < 1:
            raise DataError(f"max_samples must be a positive integer, got {max_samples}.")
        batches = _subset(batches, int(max_samples), seed)
    result = Batches(tuple(batches))
    if device is not None:
        result = result.to(device)
    if batch_size is not None:
        result = result.rebatched(batch_size)
    return result
